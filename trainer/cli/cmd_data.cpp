// `shoestring data prepare | inspect | train-tokenizer`: the data pipeline's commands. They call
// data/ only; bad input throws data::DataError, which main() turns into one line and exit code 2.
#include <unistd.h>

#include <boost/program_options.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

#include "data/data_error.h"
#include "data/inspect.h"
#include "data/loader.h"
#include "data/prepare.h"
#include "data/text_input.h"
#include "data/tokenizer.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/config_options.h"
#include "trainer/config_loader.h"
#include "trainer/progress.h"
#include "trainer/train.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace shoestring::cli {

namespace {

bool want_bar(const std::string& mode) { return mode == "on" || (mode == "auto" && isatty(STDERR_FILENO)); }

// "[#########.....] 61% | 48.2 MB/s | 47.9 Mtok/s | ETA 3s" on stderr, redrawn in place.
void draw_bar(uint64_t done, uint64_t total, uint64_t tokens, double seconds) {
  const double rate = seconds > 0 ? double(done) / seconds : 0, tok_rate = seconds > 0 ? double(tokens) / seconds : 0;
  char line[160];
  if (total > 0) {
    const double f = std::min(1.0, double(done) / double(total));
    std::string bar(size_t(30 * f), '#');
    bar.append(30 - bar.size(), '.');
    std::snprintf(line, sizeof line, "\r[%s] %3.0f%% | %.1f MB/s | %.2f Mtok/s | ETA %s   ", bar.c_str(), 100 * f,
                  rate / 1e6, tok_rate / 1e6, format_duration(rate > 0 ? double(total - std::min(done, total)) / rate : 0).c_str());
  } else {
    std::snprintf(line, sizeof line, "\r%.1f MB read | %.1f MB/s | %.2f Mtok/s   ", double(done) / 1e6, rate / 1e6, tok_rate / 1e6);
  }
  std::fputs(line, stderr);
  std::fflush(stderr);
}

int data_prepare(const Args& args) {
  po::options_description opts(
      "shoestring data prepare INPUT... -o OUT.h5 [options]\n\n"
      "Tokenize text files, directories of them, JSONL, or - (stdin) into an HDF5 token dataset");
  data::PrepareOptions p;
  std::string progress = "auto", json;
  int64_t chunk = int64_t(p.writer.chunk_tokens), shard = 0;
  bool no_shuffle = false;
  opts.add_options()("help,h", "show this help")
      ("input", po::value(&p.inputs)->composing(), "input files, directories or - (positional)")
      ("output,o", po::value(&p.output), "output dataset file (with --shard-tokens: OUT-00000.h5, ...)")
      ("tokenizer,t", po::value(&p.tokenizer)->default_value("byte"), "byte, or a SentencePiece .model file")
      ("format", po::value(&p.input.format)->default_value("auto"), "auto (.jsonl/.json are JSONL), text or jsonl")
      ("text-field", po::value(&p.input.text_field)->default_value("text"), "JSONL: the field holding the text")
      ("split", po::value(&p.input.split)->default_value("file"),
       "text: documents are whole files (file), paragraphs (blank-line), or separated by a line equal to STR (line=STR)")
      ("shard-tokens", po::value(&shard)->default_value(0), "start a new shard file after this many tokens; 0 = one file")
      ("chunk-tokens", po::value(&chunk)->default_value(chunk), "HDF5 chunk size in tokens")
      ("deflate", po::value(&p.writer.deflate_level)->default_value(p.writer.deflate_level), "deflate level 0-9 (0: no compression)")
      ("no-shuffle", po::bool_switch(&no_shuffle), "no byte shuffle before deflate")
      ("threads", po::value(&p.threads)->default_value(0), "tokenizer threads; 0 = all cores")
      ("progress", po::value(&progress)->default_value("auto"), "progress bar on stderr: auto (terminal only), on, off")
      ("json", po::value(&json), "also write the summary as JSON to this file");
  po::positional_options_description pos;
  pos.add("input", -1);
  po::variables_map vm;
  if (const auto rc = parse_command_line(opts, args, vm, &pos)) return *rc;
  const std::string problem = p.inputs.empty()   ? "need at least one INPUT (file, directory or -)"
                              : p.output.empty() ? "need -o OUT, the dataset file to write"
                              : chunk <= 0 || uint64_t(chunk) > data::kMaxChunkTokens
                                  ? "--chunk-tokens must be 1.." + std::to_string(data::kMaxChunkTokens) + ", got " +
                                        std::to_string(chunk)
                              : p.threads < 0 || p.threads > 1024
                                  ? "--threads must be 0 (all cores) to 1024, got " + std::to_string(p.threads)
                              : progress != "auto" && progress != "on" && progress != "off"
                                  ? "--progress must be auto, on or off, got '" + progress + "'"
                              : shard < 0        ? "--shard-tokens must be >= 0, got " + std::to_string(shard)
                              : p.writer.deflate_level < 0 || p.writer.deflate_level > 9
                                  ? "--deflate must be 0-9, got " + std::to_string(p.writer.deflate_level)
                                                 : unwritable_output(vm, "--json", json);
  if (!problem.empty()) {
    std::cerr << "shoestring data prepare: " << problem << " (see --help)\n";
    return 2;
  }
  p.writer.chunk_tokens = uint64_t(chunk);
  p.writer.shuffle = !no_shuffle;
  p.writer.created_by = version_text().substr(0, version_text().find('\n'));
  p.shard_tokens = uint64_t(shard);
  const bool bar = want_bar(progress);
  const data::PrepareStats s = data::prepare_dataset(p, bar ? data::PrepareProgress(draw_bar) : data::PrepareProgress());
  if (bar) std::fputs("\n", stderr);
  char line[512];
  std::snprintf(line, sizeof line,
                "wrote %s%s: %llu documents, %llu tokens from %.2f MB of text in %.2f s (%.1f MB/s, %.2f Mtok/s), %.2f MB on disk",
                s.outputs.front().c_str(), s.outputs.size() > 1 ? (" ... (" + std::to_string(s.outputs.size()) + " shards)").c_str() : "",
                static_cast<unsigned long long>(s.documents), static_cast<unsigned long long>(s.tokens), double(s.bytes_in) / 1e6,
                s.seconds, double(s.bytes_in) / 1e6 / s.seconds, double(s.tokens) / 1e6 / s.seconds, double(s.bytes_out) / 1e6);
  std::cout << line << "\n";
  if (!json.empty()) {
    std::snprintf(line, sizeof line,
                  "{\"prepare\":\"%s\",\"files\":%zu,\"documents\":%llu,\"tokens\":%llu,\"bytes_in\":%llu,\"bytes_out\":%llu,"
                  "\"seconds\":%.4f,\"threads\":%d}",
                  p.output.c_str(), s.outputs.size(), static_cast<unsigned long long>(s.documents),
                  static_cast<unsigned long long>(s.tokens), static_cast<unsigned long long>(s.bytes_in),
                  static_cast<unsigned long long>(s.bytes_out), s.seconds, p.threads);
    write_output(json, std::string(line) + "\n", "JSON summary");
  }
  return 0;
}

int data_inspect(const Args& args) {
  po::options_description opts("shoestring data inspect FILE [options]\n\n"
                               "Counts, tokenizer, sources, document lengths, the first tokens as text, and an integrity "
                               "check of every chunk (HDF5 datasets and llm.c .bin shards)");
  std::string file;
  data::InspectOptions o;
  bool no_verify = false;
  int64_t first_tokens = int64_t(o.first_tokens);
  opts.add_options()("help,h", "show this help")
      ("file", po::value(&file), "dataset file (positional)")
      ("tokens", po::value(&first_tokens)->default_value(first_tokens), "how many tokens to decode")
      ("tokenizer", po::value(&o.tokenizer), "SentencePiece model to decode a sentencepiece dataset with")
      ("no-verify", po::bool_switch(&no_verify), "skip reading every chunk");
  po::positional_options_description pos;
  pos.add("file", 1);
  po::variables_map vm;
  if (const auto rc = parse_command_line(opts, args, vm, &pos)) return *rc;
  if (file.empty()) {
    std::cerr << "shoestring data inspect: need a FILE (see --help)\n";
    return 2;
  }
  if (first_tokens < 0) {
    std::cerr << "shoestring data inspect: --tokens must be >= 0, got " << first_tokens << "\n";
    return 2;
  }
  o.first_tokens = size_t(first_tokens);
  o.verify = !no_verify;
  std::cout << data::inspect_file(file, o);
  return 0;
}

int data_train_tokenizer(const Args& args) {
  po::options_description opts("shoestring data train-tokenizer INPUT... -o PREFIX [options]\n\n"
                               "Train a SentencePiece model (PREFIX.model, PREFIX.vocab) on text; each line is a sentence");
  std::vector<std::string> inputs;
  data::SentencePieceTrainOptions t;
  data::InputOptions in;
  bool force = false;
  opts.add_options()("help,h", "show this help")
      ("input", po::value(&inputs)->composing(), "input files, directories or - (positional)")
      ("output,o", po::value(&t.model_prefix), "model prefix: writes PREFIX.model and PREFIX.vocab")
      ("vocab-size", po::value(&t.vocab_size)->default_value(t.vocab_size), "vocabulary size")
      ("model-type", po::value(&t.model_type)->default_value(t.model_type), "bpe or unigram")
      ("format", po::value(&in.format)->default_value("auto"), "auto, text or jsonl")
      ("text-field", po::value(&in.text_field)->default_value("text"), "JSONL: the field holding the text")
      ("max-sentences", po::value(&t.max_sentences)->default_value(t.max_sentences), "lines sampled for training")
      ("threads", po::value(&t.threads)->default_value(0), "0 = all cores")
      ("force", po::bool_switch(&force), "replace an existing PREFIX.model / PREFIX.vocab");
  po::positional_options_description pos;
  pos.add("input", -1);
  po::variables_map vm;
  if (const auto rc = parse_command_line(opts, args, vm, &pos)) return *rc;
  const auto usage_error = [](const std::string& what) {
    std::cerr << "shoestring data train-tokenizer: " << what << " (see --help)\n";
    return 2;
  };
  if (inputs.empty()) return usage_error("need INPUT... (files, directories or -)");
  if (t.model_prefix.empty()) return usage_error("need -o PREFIX");
  if (t.vocab_size <= 0) return usage_error("--vocab-size must be > 0, got " + std::to_string(t.vocab_size));
  if (t.max_sentences <= 0) return usage_error("--max-sentences must be > 0, got " + std::to_string(t.max_sentences));
  if (t.threads < 0 || t.threads > 1024)
    return usage_error("--threads must be 0 (all cores) to 1024, got " + std::to_string(t.threads));
  // Before minutes of reading and training: the folder must exist, and a model another dataset
  // was prepared with is not replaced unless asked.
  const fs::path prefix(t.model_prefix);
  if (!prefix.parent_path().empty() && !fs::is_directory(prefix.parent_path()))
    return usage_error("-o " + t.model_prefix + ": folder " + prefix.parent_path().string() + " does not exist");
  for (const char* ext : {".model", ".vocab"})
    if (!force && fs::exists(t.model_prefix + ext))
      return usage_error("-o " + t.model_prefix + ": " + t.model_prefix + ext + " exists; pass --force to replace it");
  if (!data::have_sentencepiece()) throw data::DataError("train-tokenizer: this build has no SentencePiece (install libsentencepiece-dev and reconfigure)");
  // Reservoir sample of the lines (Vitter's algorithm R) with a fixed seed: bounded memory on any
  // corpus, and the same model from the same input.
  std::vector<std::string> lines;
  std::mt19937_64 rng(1234);
  uint64_t seen = 0;
  data::DocumentReader reader(data::expand_inputs(inputs), in);
  std::string doc;
  size_t file = 0;
  while (reader.next(doc, file)) {
    size_t start = 0;
    while (start < doc.size()) {
      size_t end = doc.find('\n', start);
      if (end == std::string::npos) end = doc.size();
      if (end > start) {
        std::string line = doc.substr(start, end - start);
        if (lines.size() < size_t(t.max_sentences)) lines.push_back(std::move(line));
        else if (const uint64_t j = rng() % (seen + 1); j < lines.size()) lines[j] = std::move(line);
        ++seen;
      }
      start = end + 1;
    }
  }
  data::train_sentencepiece(lines, t);
  const auto tok = data::make_tokenizer(t.model_prefix + ".model");
  std::cout << "wrote " << t.model_prefix << ".model: " << data::describe(tok->identity()) << ", trained on "
            << lines.size() << " of " << seen << " lines\n";
  return 0;
}

// Loader-only throughput: the real loader (files, windows, prefetch thread) with no model, to
// compare with the training step's demand (bench train's tokens_per_s).
int data_bench(const Args& args) {
  po::options_description opts("shoestring data bench --config FILE [--set k=v ...] [--batches N]\n\n"
                               "Tokens per second the loader delivers for this config's data, with no model");
  ConfigOptions cfg_opts;
  int64_t batches = 2000;
  std::string json;
  opts.add_options()("help,h", "show this help")
      ("batches", po::value(&batches)->default_value(batches), "micro-batches to time")
      ("json", po::value(&json), "also write the result to this file");
  add_config_options(opts, cfg_opts);
  po::variables_map vm;
  if (const auto rc = parse_command_line(opts, args, vm)) return *rc;
  if (cfg_opts.files.empty() || batches <= 0) {
    std::cerr << "shoestring data bench: need --config FILE and --batches > 0\n";
    return 2;
  }
  // Checked before the run: a result that cannot be written must not be lost after it.
  const std::string bad_json = unwritable_output(vm, "--json", json);
  if (!bad_json.empty()) {
    std::cerr << "shoestring data bench: " << bad_json << "\n";
    return 2;
  }
  const Config cfg = load_config(cfg_opts.files, cfg_opts.sets);
  const data::Datasets ds = data::open_datasets(dataset_options(cfg));
  data::LoaderOptions lo{cfg.train.micro_batch_size, cfg.train.seq_len};
  lo.prefetch = size_t(cfg.data.prefetch);
  lo.seed = uint64_t(cfg.train.seed);
  data::Loader loader(ds.train, lo);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < batches; ++i) loader.next();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double tokens = double(batches * cfg.train.micro_batch_size * cfg.train.seq_len);
  char line[512];
  std::snprintf(line, sizeof line,
                "{\"bench\":\"data\",\"config\":\"%s\",\"source\":\"%s\",\"prefetch\":%lld,\"batches\":%lld,"
                "\"tokens_per_batch\":%lld,\"seconds\":%.6f,\"tokens_per_s\":%.0f,\"wait_s\":%.6f}",
                cfg.name.c_str(), cfg.data.source.c_str(), static_cast<long long>(cfg.data.prefetch),
                static_cast<long long>(batches), static_cast<long long>(cfg.train.micro_batch_size * cfg.train.seq_len), s,
                tokens / s, loader.wait_seconds());
  std::cout << line << "\n";
  if (!json.empty()) write_output(json, std::string(line) + "\n", "data bench result");
  return 0;
}

}  // namespace

int cmd_data(const Args& args) {
  const std::string usage =
      "usage: shoestring data <prepare|inspect|train-tokenizer|bench> [options]   (each has --help)\n";
  if (const auto rc = usage_exit(args, usage.c_str())) return *rc;
  const Args rest(args.begin() + 1, args.end());
  if (args[0] == "prepare") return data_prepare(rest);
  if (args[0] == "inspect") return data_inspect(rest);
  if (args[0] == "train-tokenizer") return data_train_tokenizer(rest);
  if (args[0] == "bench") return data_bench(rest);
  std::cerr << "shoestring data: unknown command '" << args[0] << "'\n" << usage;
  return 2;
}

}  // namespace shoestring::cli

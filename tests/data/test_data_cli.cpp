// End to end through the real executable: `data prepare` on a small text, `train` on it with a
// validation loss, `data inspect` on the result, and the exit code 2 + one line for bad input.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <utility>
#include <vector>

#include "data_test_util.h"
#include "tests/run_cli.h"

namespace fs = std::filesystem;

namespace {

using Result = shoestring::testing::CliResult;

Result run(const std::string& args) { return shoestring::testing::run_shoestring(args); }

std::vector<std::string> lines_of(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

std::string small_corpus() {
  std::string text;
  const char* sayings[] = {"A journey of a thousand miles begins with a single step.",
                           "Whoever said money can't buy happiness didn't know where to shop.",
                           "Grüße aus Köln: the best-laid plans of mice and men often go awry.",
                           "You will be given a holiday, and you will be happy."};
  for (int i = 0; i < 400; ++i) text += std::string(sayings[i % 4]) + " (" + std::to_string(i) + ")\n%\n";
  return text + "The last fortune has no trailing newline.";
}

TEST(DataCli, PrepareTrainInspect) {
  const fs::path dir = shoestring::data::dtest::temp_dir("cli");
  shoestring::data::dtest::write_text(dir / "corpus.txt", small_corpus());
  const std::string data = (dir / "corpus.h5").string();
  const Result p = run("data prepare " + (dir / "corpus.txt").string() + " -o " + data + " --split line=% --progress off");
  ASSERT_EQ(p.code, 0) << p.output;
  EXPECT_NE(p.output.find("wrote " + data + ": 401 documents"), std::string::npos) << p.output;

  const fs::path run_dir = dir / "run";
  const Result t = run("train --config configs/tiny.yaml --set data.source=hdf5 --set data.path=" + data +
                       " --set data.tokenizer=byte --set model.vocab_size=257 --set train.steps=3 --set train.threads=1"
                       " --set data.val_fraction=0.1 --set data.eval_interval=2 --set data.eval_batches=2"
                       " --set log.progress=off --set log.run_dir=" + run_dir.string());
  ASSERT_EQ(t.code, 0) << t.output;
  EXPECT_NE(t.output.find("data     hdf5 tokens [0, "), std::string::npos) << t.output;
  const auto metrics = lines_of(run_dir / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 3u);
  EXPECT_EQ(metrics[0].find("val_loss"), std::string::npos);
  EXPECT_NE(metrics[1].find("\"val_loss\":"), std::string::npos) << metrics[1];  // step 2: the interval
  EXPECT_NE(metrics[2].find("\"val_loss\":"), std::string::npos) << metrics[2];  // step 3: the last step
  EXPECT_NE(t.output.find("val_loss"), std::string::npos) << "progress line shows the validation loss";

  const Result i = run("data inspect " + data + " --tokens 60");
  ASSERT_EQ(i.code, 0) << i.output;
  for (const char* want : {"format      shoestring-tokens v2", "tokenizer   byte (vocab 257), end-of-document id 256",
                           "documents   401", "corpus.txt", "document lengths (tokens)",
                           "first 60 tokens, decoded:\n    A journey of a thousand miles begins with a single step.",
                           "integrity   OK"})
    EXPECT_NE(i.output.find(want), std::string::npos) << "missing: " << want << "\n" << i.output;

  // stdin gives the same tokens (the document split is the same).
  const std::string from_stdin = (dir / "stdin.h5").string();
  const Result s = run("data prepare - -o " + from_stdin + " --split line=% --progress off < " + (dir / "corpus.txt").string());
  ASSERT_EQ(s.code, 0) << s.output;
  EXPECT_NE(s.output.find("401 documents"), std::string::npos) << s.output;
  fs::remove_all(dir);
}

TEST(DataCli, BadInputExitsTwoWithOneLine) {
  const fs::path dir = shoestring::data::dtest::temp_dir("cli_bad");
  shoestring::data::dtest::write_text(dir / "text.txt", small_corpus());
  const std::string missing = (dir / "missing.h5").string();
  const Result a = run("data inspect " + missing);
  EXPECT_EQ(a.code, 2);
  EXPECT_EQ(a.output, "data error: " + missing + ": no such file\n");

  const std::string train = "train --config configs/tiny.yaml --set train.steps=1 --set log.progress=off --set data.source=hdf5"
                            " --set log.run_dir=" + (dir / "run").string() + " --set data.path=";
  const Result b = run(train + (dir / "text.txt").string() + " --set model.vocab_size=257");
  EXPECT_EQ(b.code, 2);
  EXPECT_NE(b.output.find("data error: " + (dir / "text.txt").string() + ": not an HDF5 file"), std::string::npos) << b.output;
  EXPECT_EQ(std::count(b.output.begin(), b.output.end(), '\n'), 1) << b.output;

  ASSERT_EQ(run("data prepare " + (dir / "text.txt").string() + " -o " + (dir / "d.h5").string() + " --progress off").code, 0);
  const Result c = run(train + (dir / "d.h5").string() + " --set model.vocab_size=200");
  EXPECT_EQ(c.code, 2);
  EXPECT_NE(c.output.find("tokenizer vocabulary 257 exceeds model.vocab_size 200"), std::string::npos) << c.output;

  const Result d = run("data prepare " + (dir / "nothing.txt").string() + " -o " + (dir / "x.h5").string());
  EXPECT_EQ(d.code, 2);
  EXPECT_NE(d.output.find("nothing.txt: no such file or directory"), std::string::npos) << d.output;
  EXPECT_EQ(run("data").code, 2);
  EXPECT_EQ(run("data frobnicate").code, 2);
  EXPECT_EQ(run("data prepare --help").code, 0);

  // data bench --json that cannot be written is refused before the run, not lost after it.
  const std::string bench = "data bench --config configs/tiny.yaml --set data.source=synthetic --batches 2 --json ";
  const Result jn = run(bench + (dir / "no" / "b.json").string());
  EXPECT_EQ(jn.code, 2);
  EXPECT_EQ(jn.output, "shoestring data bench: --json " + (dir / "no" / "b.json").string() + ": folder " +
                          (dir / "no").string() + " does not exist\n");
  const Result jd = run(bench + dir.string());
  EXPECT_EQ(jd.code, 2);
  EXPECT_EQ(jd.output, "shoestring data bench: --json " + dir.string() + ": is a directory, expected a file name\n");
  EXPECT_EQ(run(bench + "''").output, "shoestring data bench: --json: expected a file name, got an empty one\n");
  // The same for data prepare's --json, and for the other output flags, which share the check.
  EXPECT_EQ(run("data prepare " + (dir / "text.txt").string() + " -o " + (dir / "z.h5").string() + " --json ''").output,
            "shoestring data prepare: --json: expected a file name, got an empty one (see --help)\n");
  EXPECT_FALSE(fs::exists(dir / "z.h5"));
  ASSERT_EQ(run(bench + (dir / "b.json").string()).code, 0);
  EXPECT_EQ(std::ifstream(dir / "b.json").get(), '{');

  // Each usage mistake is named, not a list of every rule.
  const Result e = run("data prepare " + (dir / "text.txt").string() + " -o " + (dir / "y.h5").string() + " --deflate 12");
  EXPECT_EQ(e.code, 2);
  EXPECT_EQ(e.output, "shoestring data prepare: --deflate must be 0-9, got 12 (see --help)\n");

  // -o naming an input would replace the text being read: refused, the text kept.
  const std::string text = (dir / "text.txt").string();
  const Result f = run("data prepare " + text + " -o " + text + " --progress off");
  EXPECT_EQ(f.code, 2) << f.output;
  EXPECT_NE(f.output.find(text + ": is also an input file"), std::string::npos) << f.output;
  EXPECT_EQ(std::ifstream(text).get(), 'A') << "the input text was overwritten";

  // Binary files: refused when named, skipped (with a line saying so) inside a directory.
  const Result g = run("data prepare " + (dir / "d.h5").string() + " -o " + (dir / "z.h5").string() + " --progress off");
  EXPECT_EQ(g.code, 2);
  EXPECT_NE(g.output.find("d.h5: not text"), std::string::npos) << g.output;
  fs::create_directories(dir / "mixed");
  fs::copy_file(dir / "text.txt", dir / "mixed" / "a.txt");
  fs::copy_file(dir / "d.h5", dir / "mixed" / "b.h5");
  const Result h = run("data prepare " + (dir / "mixed").string() + " -o " + (dir / "m.h5").string() + " --progress off");
  EXPECT_EQ(h.code, 0) << h.output;
  EXPECT_NE(h.output.find("skipping " + (dir / "mixed" / "b.h5").string() + ": not text"), std::string::npos) << h.output;
  EXPECT_NE(h.output.find("1 documents"), std::string::npos) << h.output;

  // SentencePiece's own complaint, in our terms (only where this build has SentencePiece).
  const Result t = run("data train-tokenizer " + text + " -o " + (dir / "tok").string() + " --vocab-size 10");
  EXPECT_EQ(t.code, 2) << t.output;
  if (t.output.find("no SentencePiece") == std::string::npos)
    EXPECT_NE(t.output.find("--vocab-size 10 is too small for this text: it needs at least "), std::string::npos)
        << t.output;

  // Options named one by one, checked before any reading; no existing model replaced unasked.
  const std::string ds = (dir / "d.h5").string(), tok = (dir / "tok").string();
  shoestring::data::dtest::write_text(dir / "tok.model", "earlier model");
  shoestring::data::dtest::write_text(dir / "junk.bin", "not a shard at all");
  for (const auto& [args, line] : std::vector<std::pair<std::string, std::string>>{
           {"data inspect " + ds + " --tokens -5", "shoestring data inspect: --tokens must be >= 0, got -5"},
           {"data inspect " + ds + " --tokenizer " + tok + ".model",
            "data error: " + tok + ".model: not used: " + ds + " is byte-tokenized and decodes without a model (drop --tokenizer)"},
           {"data train-tokenizer " + text + " -o " + tok + " --max-sentences 0",
            "shoestring data train-tokenizer: --max-sentences must be > 0, got 0 (see --help)"},
           {"data train-tokenizer " + text + " -o " + tok + "2 --threads -1",
            "shoestring data train-tokenizer: --threads must be 0 (all cores) to 1024, got -1 (see --help)"},
           {"data train-tokenizer " + text + " -o " + tok,
            "shoestring data train-tokenizer: -o " + tok + ": " + tok + ".model exists; pass --force to replace it (see --help)"},
           {"data train-tokenizer " + text + " -o " + (dir / "no" / "tok").string(),
            "shoestring data train-tokenizer: -o " + (dir / "no" / "tok").string() + ": folder " + (dir / "no").string() +
                " does not exist (see --help)"},
           {"data prepare " + text + " -o " + (dir / "p.h5").string() + " --threads -1",
            "shoestring data prepare: --threads must be 0 (all cores) to 1024, got -1 (see --help)"},
           {"data prepare " + text + " -o " + (dir / "p.h5").string() + " --threads 100000",
            "shoestring data prepare: --threads must be 0 (all cores) to 1024, got 100000 (see --help)"},
           {"data prepare " + text + " -o " + (dir / "p.h5").string() + " --progress maybe",
            "shoestring data prepare: --progress must be auto, on or off, got 'maybe' (see --help)"},
           {"data prepare " + text + " -o " + (dir / "p.h5").string() + " --chunk-tokens 99999999999",
            "shoestring data prepare: --chunk-tokens must be 1..67108864, got 99999999999 (see --help)"},
           {"data prepare " + text + " -o " + (dir / "p.h5").string() + " --json " + dir.string(),
            "shoestring data prepare: --json " + dir.string() + ": is a directory, expected a file name (see --help)"},
       }) {
    const Result r = run(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.output;
    EXPECT_EQ(r.output, line + "\n") << args;
  }
  EXPECT_EQ(lines_of(dir / "tok.model"), std::vector<std::string>{"earlier model"});
  EXPECT_FALSE(fs::exists(dir / "p.h5"));
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << "left " << e.path();
  // A file named .bin is judged as the llm.c shard it claims to be, not as a failed HDF5 file.
  const Result j = run("data inspect " + (dir / "junk.bin").string());
  EXPECT_EQ(j.code, 2) << j.output;
  EXPECT_EQ(j.output.find("not an HDF5 file"), std::string::npos) << j.output;
  EXPECT_NE(j.output.find("junk.bin"), std::string::npos) << j.output;
  fs::remove_all(dir);
}

}  // namespace

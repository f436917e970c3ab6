#include "data/inspect.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "data/data_error.h"
#include "data/llmc_bin.h"
#include "data/token_dataset.h"

namespace shoestring::data {

namespace {

std::string with_commas(uint64_t v) {
  std::string s = std::to_string(v);
  for (int i = int(s.size()) - 3; i > 0; i -= 3) s.insert(size_t(i), ",");
  return s;
}

std::string human_bytes(double b) {
  const char* unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  for (; b >= 1024 && u < 4; ++u) b /= 1024;
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", b, unit[u]);
  return buf;
}

// Control characters escaped so the sample prints as one readable block.
std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n') out += "\n    ";
    else if (c == '\t') out += "\\t";
    else if (c < 32 || c == 127) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else out += char(c);
  }
  return out;
}

bool is_llmc(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  int32_t magic = 0;
  in.read(reinterpret_cast<char*>(&magic), 4);
  return in.gcount() == 4 && magic == kLlmcMagic;
}

std::string inspect_llmc(const std::string& path, const InspectOptions& o) {
  const auto f = LlmcBinFile::open(path);  // checks magic, version and size
  std::ostringstream s;
  s << "file        " << path << "\n"
    << "format      llm.c token shard, version " << kLlmcVersion << " (uint16 ids, no document index)\n"
    << "tokens      " << with_commas(f->num_tokens()) << "\n";
  std::vector<uint32_t> ids(std::min<uint64_t>(o.first_tokens, f->num_tokens()));
  f->read(0, ids.size(), ids.data());
  s << "first " << ids.size() << " ids:";
  for (uint32_t id : ids) s << " " << id;
  s << "\nintegrity   OK: header magic, version and size agree (llm.c shards carry no checksums)\n";
  return s.str();
}

}  // namespace

std::string inspect_file(const std::string& path, const InspectOptions& o) {
  if (std::filesystem::is_regular_file(path) && is_llmc(path)) return inspect_llmc(path, o);
  // A .bin name says the user expects an llm.c shard: say that it is not one (LlmcBinFile names
  // what is wrong with its header) rather than "not an HDF5 file".
  if (std::filesystem::path(path).extension() == ".bin" && std::filesystem::is_regular_file(path))
    return inspect_llmc(path, o);
  const auto ds = TokenDataset::open(path);
  const DatasetInfo& i = ds->info();
  std::ostringstream s;
  const uint64_t file_bytes = std::filesystem::file_size(path);
  s << "file        " << path << " (" << human_bytes(double(file_bytes)) << ")\n"
    << "format      shoestring-tokens v" << i.format_version << ", created by " << i.created_by;
  if (i.shard_count > 1) s << ", shard " << i.shard_index + 1 << " of " << i.shard_count;
  s << "\ntokenizer   " << describe(i.tokenizer) << ", end-of-document id " << i.eod_id << "\n"
    << "tokens      " << with_commas(i.num_tokens) << " (uint" << i.token_bits << ")";
  if (i.num_tokens > 0) {
    char buf[64];
    std::snprintf(buf, sizeof buf, ", %.2f bits/token on disk", 8.0 * double(file_bytes) / double(i.num_tokens));
    s << buf;
  }
  s << "\nstorage     ";
  if (i.chunk_tokens) s << "chunks of " << with_commas(i.chunk_tokens) << " tokens, ";
  s << "filters " << i.filters << "\n";

  const std::vector<uint64_t> off = ds->doc_offsets();
  std::vector<uint64_t> len;
  for (size_t d = 1; d < off.size(); ++d) len.push_back(off[d] - off[d - 1]);
  s << "documents   " << with_commas(i.num_documents);
  if (!len.empty()) {
    std::vector<uint64_t> sorted = len;
    std::sort(sorted.begin(), sorted.end());
    s << "; tokens per document (with its end token): min " << sorted.front() << ", median " << sorted[sorted.size() / 2]
      << ", mean " << (i.num_tokens / len.size()) << ", max " << sorted.back();
  }
  s << "\n";
  uint64_t src_bytes = 0;
  for (const auto& f : i.sources) src_bytes += f.bytes;
  s << "sources     " << i.sources.size() << " file(s), " << human_bytes(double(src_bytes)) << "\n";
  for (const auto& f : i.sources)
    s << "  " << f.path << "  " << with_commas(f.bytes) << " bytes, " << with_commas(f.documents) << " docs, sha256 "
      << (f.sha256.empty() ? "(unknown)" : f.sha256.substr(0, 16)) << "\n";

  // Histogram of document lengths in powers of two, with a bar scaled to the largest bucket.
  if (!len.empty()) {
    std::vector<uint64_t> hist(64, 0);
    for (uint64_t l : len) ++hist[size_t(std::bit_width(l) - 1)];
    const uint64_t peak = *std::max_element(hist.begin(), hist.end());
    s << "document lengths (tokens)\n";
    const size_t first = size_t(std::find_if(hist.begin(), hist.end(), [](uint64_t h) { return h > 0; }) - hist.begin());
    const size_t last = hist.size() - size_t(std::find_if(hist.rbegin(), hist.rend(), [](uint64_t h) { return h > 0; }) - hist.rbegin());
    for (size_t b = first; b < last; ++b) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "  [%7llu, %7llu) %9s  ", 1ull << b, 1ull << (b + 1), with_commas(hist[b]).c_str());
      s << buf << std::string(size_t(40.0 * double(hist[b]) / double(peak) + 0.5), '#') << "\n";
    }
  }

  std::vector<uint32_t> first(std::min<uint64_t>(o.first_tokens, i.num_tokens));
  ds->read(0, first.size(), first.data());
  std::unique_ptr<Tokenizer> tok;
  if (i.tokenizer.kind == "byte" && !o.tokenizer.empty())
    throw data_error(o.tokenizer, "not used: " + path + " is byte-tokenized and decodes without a model (drop --tokenizer)");
  if (i.tokenizer.kind == "byte") tok = std::make_unique<ByteTokenizer>();
  else if (!o.tokenizer.empty()) tok = make_tokenizer(o.tokenizer);
  if (tok && !(tok->identity() == i.tokenizer)) {
    // Without --tokenizer the byte tokenizer was chosen from the dataset's own header: the header is
    // what is wrong, so the message names the dataset.
    if (o.tokenizer.empty())
      throw data_error(path, "the header says tokenizer " + describe(i.tokenizer) + ", but the byte tokenizer is " +
                                 describe(tok->identity()) + " (a corrupt or forged header)");
    throw data_error(o.tokenizer, "is " + describe(tok->identity()) + ", not the dataset's " + describe(i.tokenizer));
  }
  s << "first " << first.size() << " tokens";
  if (tok) {
    s << ", decoded:\n    " << printable(tok->decode(first.data(), first.size())) << "\n";
  } else {
    s << " (ids; pass --tokenizer MODEL to decode):\n   ";
    for (uint32_t id : first) s << " " << id;
    s << "\n";
  }
  if (o.verify) {
    const uint64_t chunks = ds->verify(o.progress);
    s << "integrity   OK: " << with_commas(chunks) << " chunk(s) read with checksums, every id below "
      << i.tokenizer.vocab_size << ", every document ends with id " << i.eod_id << "\n";
  }
  return s.str();
}

}  // namespace shoestring::data

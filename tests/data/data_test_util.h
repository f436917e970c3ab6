#pragma once
// Helpers shared by the data tests: a fresh temporary folder and small datasets written in-test.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/token_dataset.h"

namespace shoestring::data::dtest {

inline std::filesystem::path temp_dir(const std::string& name) {
  const auto d = std::filesystem::temp_directory_path() / ("shoestring_data_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

inline void write_text(const std::filesystem::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
}

// A byte-tokenized dataset of `docs` (each followed by the end-of-document id 256).
inline void write_byte_dataset(const std::string& path, const std::vector<std::string>& docs, uint64_t chunk = 64) {
  WriterOptions o;
  o.chunk_tokens = chunk;
  TokenDatasetWriter w(path, ByteTokenizer().identity(), ByteTokenizer::kEod, o);
  for (const auto& d : docs) {
    std::vector<uint32_t> ids(d.begin(), d.end());
    for (auto& x : ids) x &= 0xFF;
    w.append_document(ids.data(), ids.size());
  }
  w.add_source({"test", 0, "", docs.size()});
  w.close();
}

// A dataset whose token i is i % modulus (so any window's content tells where it came from).
inline void write_counting_dataset(const std::string& path, uint64_t n, uint32_t vocab = 65536) {
  WriterOptions o;
  o.chunk_tokens = 256;
  TokenDatasetWriter w(path, {"test", vocab, ""}, vocab - 1, o);
  std::vector<uint32_t> ids(n - 1);
  for (uint64_t i = 0; i + 1 < n; ++i) ids[i] = uint32_t(i % (vocab - 1));
  w.append_document(ids.data(), ids.size());
  w.close();
}

}  // namespace shoestring::data::dtest

#pragma once
// `shoestring data inspect FILE`: what a dataset holds -- counts, tokenizer, storage, sources, the
// document-length histogram, the first tokens decoded back to text -- and an integrity check that
// reads every chunk. Also understands llm.c .bin shards (header, counts, first ids).
#include <cstdint>
#include <functional>
#include <string>

namespace shoestring::data {

struct InspectOptions {
  size_t first_tokens = 200;  // decoded at the start of the report
  bool verify = true;         // read and check every chunk
  std::string tokenizer;      // SentencePiece model to decode with (byte datasets need none)
  std::function<void(uint64_t, uint64_t)> progress;  // chunks done / total during verify
};

// The report as text; throws DataError when the file is unreadable or fails the integrity check.
std::string inspect_file(const std::string& path, const InspectOptions& opts = {});

}  // namespace shoestring::data

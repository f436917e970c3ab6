#pragma once
// A token stream: one or more files (HDF5 datasets or llm.c .bin shards) read as if concatenated,
// or a contiguous slice of another stream (the validation split). The loader sees only this.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "data/tokenizer.h"

namespace shoestring::data {

class TokenSource {
 public:
  virtual ~TokenSource() = default;
  virtual uint64_t num_tokens() const = 0;
  // Tokens [offset, offset + n); throws DataError (naming the file and position) on bad data.
  // Safe to call from several threads at once.
  virtual void read(uint64_t offset, size_t n, uint32_t* out) const = 0;
  // The tokenizer the ids belong to; kind "unknown" for llm.c shards, which do not record it.
  virtual TokenizerIdentity tokenizer() const = 0;
  virtual std::string describe() const = 0;
  // The document [begin, end) holding token `offset` (< num_tokens()), or nullopt when the files
  // record no documents (llm.c shards). A file's start and end are document boundaries.
  virtual std::optional<std::pair<uint64_t, uint64_t>> document_at(uint64_t offset) const {
    (void)offset;
    return std::nullopt;
  }
};

// Files named by `specs`: each is a path, or a pattern with * ? [ ] expanded in sorted order.
// A pattern that matches nothing or a missing file is a DataError.
std::vector<std::string> expand_paths(const std::vector<std::string>& specs);

// format: "hdf5" (Shoestring token datasets, which must all share one tokenizer) or "llmc".
std::shared_ptr<TokenSource> open_token_files(const std::vector<std::string>& specs, const std::string& format);

// Tokens [begin, end) of `base` as a stream of its own.
std::shared_ptr<TokenSource> slice_tokens(std::shared_ptr<const TokenSource> base, uint64_t begin, uint64_t end);

}  // namespace shoestring::data

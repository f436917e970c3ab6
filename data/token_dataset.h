#pragma once
// The HDF5 token dataset: one file (or one shard of several) holding
//   /tokens       1-D uint16 (vocabulary <= 65536) or uint32 token ids, chunked, byte-shuffled,
//                 deflate-compressed, Fletcher-32 checksummed per chunk (a corrupt chunk is
//                 found on read, never trained on)
//   /doc_offsets  1-D uint64, documents + 1 entries: document d is tokens [off[d], off[d+1]),
//                 its last token the end-of-document id
//   /sources/{path,sha256} strings, /sources/{bytes,documents} uint64: the input files
// and root attributes: format = "shoestring-tokens", format_version, tokenizer_kind,
// tokenizer_vocab_size, tokenizer_model_sha256, eod_id, num_tokens, num_documents,
// shard_index, shard_count, created_by. Layout and the measured chunk/compression choice:
// docs/data.md.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace shoestring::data {

// 2: HDF5 1.10 file format with checksummed metadata (superblock v3, v2 object headers);
// format 1 files (superblock v0) are refused with a request to prepare them again.
inline constexpr int kFormatVersion = 2;

struct SourceFile {
  std::string path;     // as given on the command line ("-" for stdin)
  uint64_t bytes = 0;
  std::string sha256;
  uint64_t documents = 0;
};

struct DatasetInfo {
  std::string path;
  int format_version = 0;
  TokenizerIdentity tokenizer;
  uint32_t eod_id = 0;
  int token_bits = 16;  // 16 or 32
  uint64_t num_tokens = 0, num_documents = 0;
  uint64_t chunk_tokens = 0;  // 0: contiguous
  std::string filters;        // e.g. "shuffle+deflate(1)+fletcher32"
  int64_t shard_index = 0, shard_count = 1;
  std::string created_by;
  std::vector<SourceFile> sources;
};

// The largest chunk the writer accepts: 2^26 tokens (256 MiB as uint32). libhdf5 refuses chunks of
// 4 GiB or more, and the writer buffers up to two chunks in memory.
constexpr uint64_t kMaxChunkTokens = uint64_t(1) << 26;

struct WriterOptions {
  uint64_t chunk_tokens = 1 << 16;  // measured: docs/data.md; 1..kMaxChunkTokens
  int deflate_level = 1;            // 0: no compression
  bool shuffle = true;              // byte shuffle before deflate
  std::string created_by = "shoestring";
};

// Streams documents into a new dataset file. The file is written under a temporary name and
// renamed into place by close(), so a killed `data prepare` never leaves a half file behind.
class TokenDatasetWriter {
 public:
  TokenDatasetWriter(const std::string& path, const TokenizerIdentity& tokenizer, uint32_t eod_id,
                     const WriterOptions& opts = {});
  ~TokenDatasetWriter();
  TokenDatasetWriter(const TokenDatasetWriter&) = delete;
  TokenDatasetWriter& operator=(const TokenDatasetWriter&) = delete;

  // Appends one document's ids followed by the end-of-document id.
  void append_document(const uint32_t* ids, size_t n);
  void add_source(const SourceFile& s);
  void set_shard(int64_t index, int64_t count);
  uint64_t num_tokens() const { return written_ + buffer_size(); }
  uint64_t num_documents() const { return offsets_.size() - 1; }
  void close();

 private:
  size_t buffer_size() const;
  void flush(bool all);
  void create_tokens();  // /tokens, from the constructor
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_, tmp_;
  uint64_t written_ = 0;
  std::vector<uint64_t> offsets_{0};
  bool closed_ = false;
};

class RawFile;  // the reader's checks of the file's bytes before libhdf5 parses them

// A dataset opened for reading; every problem is a DataError naming the file.
class TokenDataset {
 public:
  static std::shared_ptr<TokenDataset> open(const std::string& path);
  // From bytes in memory (HDF5 core driver); `name` is used in messages. For the fuzz target.
  static std::shared_ptr<TokenDataset> open_image(const void* bytes, size_t n, const std::string& name);
  ~TokenDataset();

  const DatasetInfo& info() const { return info_; }
  // Tokens [offset, offset + n) into out; a failed read (corrupt chunk) throws with the position.
  void read(uint64_t offset, size_t n, uint32_t* out) const;
  std::vector<uint64_t> doc_offsets() const;
  // Reads every chunk (checking its Fletcher-32 checksum) and every id against the vocabulary,
  // and the document offsets against the token count. Throws DataError on the first problem;
  // returns the number of chunks checked. `progress(done, total)` is called per chunk.
  uint64_t verify(const std::function<void(uint64_t, uint64_t)>& progress = {}) const;

 private:
  TokenDataset() = default;
  void load(int64_t file_id, RawFile& raw);
  struct Impl;
  std::unique_ptr<Impl> impl_;
  DatasetInfo info_;
};

}  // namespace shoestring::data

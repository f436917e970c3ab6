#pragma once
// llm.c's token shards (github.com/karpathy/llm.c, dev/data/data_common.py): a 1024-byte header of
// 256 little-endian int32 -- [0] magic 20240520, [1] version 1, [2] token count -- followed by that
// many uint16 token ids (GPT-2's 50257-token vocabulary in llm.c's own data). Reading them lets
// users train on shards they already made.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace shoestring::data {

inline constexpr int32_t kLlmcMagic = 20240520;
inline constexpr int32_t kLlmcVersion = 1;
inline constexpr size_t kLlmcHeaderBytes = 1024;

class LlmcBinFile {
 public:
  // Checks the header against the file size; throws DataError naming the file and the problem.
  static std::shared_ptr<LlmcBinFile> open(const std::string& path);
  // Parses an in-memory image (the fuzz target); `name` is used in messages.
  static std::shared_ptr<LlmcBinFile> from_bytes(std::vector<uint8_t> bytes, const std::string& name);
  ~LlmcBinFile();

  const std::string& path() const { return path_; }
  uint64_t num_tokens() const { return num_tokens_; }
  // Tokens [offset, offset + n) widened to uint32. Thread-safe (pread).
  void read(uint64_t offset, size_t n, uint32_t* out) const;

 private:
  LlmcBinFile() = default;
  std::string path_;
  uint64_t num_tokens_ = 0;
  int fd_ = -1;
  std::vector<uint8_t> image_;  // from_bytes only
};

// Checks a header (1024 bytes) and the total file size; returns the token count or throws.
uint64_t parse_llmc_header(const uint8_t* header, size_t header_bytes, uint64_t file_bytes, const std::string& name);

// Writes a shard in llm.c's format (tests, and `data prepare --format llmc` later).
void write_llmc_bin(const std::string& path, const std::vector<uint16_t>& tokens);

}  // namespace shoestring::data

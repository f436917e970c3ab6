#pragma once
// SHA-256 (FIPS 180-4), used to name a tokenizer model and every source file of a dataset by
// content: a dataset records the hash of the model that made it, and the loader refuses a config
// whose tokenizer hashes differently. Self-contained so data/ needs no crypto library.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace shoestring::data {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  std::string hex();  // finishes the hash; 64 lowercase hex digits

 private:
  void block(const uint8_t* p);
  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buf_{};
  uint64_t bytes_ = 0;
  size_t fill_ = 0;
};

std::string sha256_hex(std::string_view bytes);
// Hash of a file's content, read in 1 MiB pieces; throws DataError when it cannot be read.
std::string sha256_file(const std::string& path, uint64_t* size = nullptr);

}  // namespace shoestring::data

#include "data/llmc_bin.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

#include "data/data_error.h"

namespace shoestring::data {

namespace {

int32_t le32(const uint8_t* p) {
  return int32_t(uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
}

}  // namespace

uint64_t parse_llmc_header(const uint8_t* h, size_t header_bytes, uint64_t file_bytes, const std::string& name) {
  if (header_bytes < kLlmcHeaderBytes)
    throw data_error(name, "too short for an llm.c .bin header (" + std::to_string(header_bytes) + " of 1024 bytes)");
  const int32_t magic = le32(h), version = le32(h + 4), count = le32(h + 8);
  if (magic != kLlmcMagic)
    throw data_error(name, "not an llm.c token file: magic " + std::to_string(magic) + ", expected " +
                               std::to_string(kLlmcMagic) + (magic == 20240801 ? " (that is llm.c's model file magic)" : ""));
  if (version != kLlmcVersion)
    throw data_error(name, "llm.c token file version " + std::to_string(version) + " is not supported (only version 1: uint16 tokens)");
  if (count < 0) throw data_error(name, "header gives a negative token count (" + std::to_string(count) + ")");
  const uint64_t expected = kLlmcHeaderBytes + 2 * uint64_t(count);
  if (file_bytes != expected)
    throw data_error(name, "header says " + std::to_string(count) + " tokens (" + std::to_string(expected) +
                               " bytes) but the file has " + std::to_string(file_bytes) + " bytes (truncated?)");
  return uint64_t(count);
}

std::shared_ptr<LlmcBinFile> LlmcBinFile::open(const std::string& path) {
  std::shared_ptr<LlmcBinFile> f(new LlmcBinFile);
  f->path_ = path;
  f->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f->fd_ < 0) throw data_error(path, errno == ENOENT ? "no such file" : "cannot open: " + std::string(std::strerror(errno)));
  struct stat st {};
  if (::fstat(f->fd_, &st) != 0 || !S_ISREG(st.st_mode)) throw data_error(path, "not a regular file");
  uint8_t header[kLlmcHeaderBytes] = {};
  const ssize_t got = ::pread(f->fd_, header, sizeof header, 0);
  f->num_tokens_ = parse_llmc_header(header, got < 0 ? 0 : size_t(got), uint64_t(st.st_size), path);
  return f;
}

std::shared_ptr<LlmcBinFile> LlmcBinFile::from_bytes(std::vector<uint8_t> bytes, const std::string& name) {
  std::shared_ptr<LlmcBinFile> f(new LlmcBinFile);
  f->path_ = name;
  f->num_tokens_ = parse_llmc_header(bytes.data(), bytes.size(), bytes.size(), name);
  f->image_ = std::move(bytes);
  return f;
}

LlmcBinFile::~LlmcBinFile() {
  if (fd_ >= 0) ::close(fd_);
}

void LlmcBinFile::read(uint64_t offset, size_t n, uint32_t* out) const {
  if (n == 0) return;  // `out` may be null (found by fuzz_llmc_bin)
  if (offset > num_tokens_ || n > num_tokens_ - offset)
    throw data_error(path_, "read of tokens [" + std::to_string(offset) + ", " + std::to_string(offset + n) +
                                ") is past the end (" + std::to_string(num_tokens_) + " tokens)");
  // Read the little-endian uint16 ids into the upper half of `out`, then widen in place from the
  // front (each 4-byte slot k is written after bytes 2k..2k+1 of the packed run were consumed).
  auto* bytes = reinterpret_cast<uint8_t*>(out) + 2 * n;
  const uint64_t pos = kLlmcHeaderBytes + 2 * offset;
  if (!image_.empty()) {
    std::memcpy(bytes, image_.data() + pos, 2 * n);
  } else {
    size_t done = 0;
    while (done < 2 * n) {
      const ssize_t r = ::pread(fd_, bytes + done, 2 * n - done, off_t(pos + done));
      if (r <= 0)
        throw data_error(path_, "read failed at token " + std::to_string(offset + done / 2) + " (file changed or I/O error)");
      done += size_t(r);
    }
  }
  for (size_t k = 0; k < n; ++k) out[k] = uint32_t(bytes[2 * k]) | uint32_t(bytes[2 * k + 1]) << 8;
}

void write_llmc_bin(const std::string& path, const std::vector<uint16_t>& tokens) {
  std::vector<int32_t> header(256, 0);
  header[0] = kLlmcMagic;
  header[1] = kLlmcVersion;
  header[2] = int32_t(tokens.size());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(header.data()), 1024);
  out.write(reinterpret_cast<const char*>(tokens.data()), std::streamsize(2 * tokens.size()));
  if (!out) throw data_error(path, "write failed");
}

}  // namespace shoestring::data

// llm.c .bin shards: read what the test writes; clear errors on a wrong magic, version or size.
#include <gtest/gtest.h>

#include <fstream>

#include "data/data_error.h"
#include "data/llmc_bin.h"
#include "data/token_source.h"
#include "data_test_util.h"

using namespace shoestring::data;

namespace {

std::string error_of(const std::string& path) {
  try {
    LlmcBinFile::open(path);
  } catch (const DataError& e) {
    return e.what();
  }
  return "(no error)";
}

void patch_int(const std::string& path, size_t index, int32_t v) {
  std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
  f.seekp(std::streamoff(index * 4));
  f.write(reinterpret_cast<const char*>(&v), 4);
}

TEST(LlmcBin, ReadsTokensAcrossShards) {
  const auto dir = dtest::temp_dir("llmc");
  std::vector<uint16_t> a(1000), b(37);
  for (size_t i = 0; i < a.size(); ++i) a[i] = uint16_t(i * 61 % 50257);
  for (size_t i = 0; i < b.size(); ++i) b[i] = uint16_t(65535 - i);
  write_llmc_bin((dir / "s_000.bin").string(), a);
  write_llmc_bin((dir / "s_001.bin").string(), b);
  const auto f = LlmcBinFile::open((dir / "s_000.bin").string());
  EXPECT_EQ(f->num_tokens(), 1000u);
  std::vector<uint32_t> out(7);
  f->read(993, 7, out.data());
  for (size_t k = 0; k < 7; ++k) EXPECT_EQ(out[k], a[993 + k]);
  // A pattern reads both shards in sorted order as one stream, across the boundary.
  const auto stream = open_token_files({(dir / "s_*.bin").string()}, "llmc");
  EXPECT_EQ(stream->num_tokens(), 1037u);
  std::vector<uint32_t> span(10);
  stream->read(995, 10, span.data());
  for (size_t k = 0; k < 10; ++k) EXPECT_EQ(span[k], k < 5 ? a[995 + k] : b[k - 5]);
  std::filesystem::remove_all(dir);
}

TEST(LlmcBin, WrongMagicVersionOrSizeAreClearErrors) {
  const auto dir = dtest::temp_dir("llmc_bad");
  const std::string p = (dir / "x.bin").string();
  write_llmc_bin(p, std::vector<uint16_t>(100, 7));
  patch_int(p, 0, 20240801);
  EXPECT_EQ(error_of(p), p + ": not an llm.c token file: magic 20240801, expected 20240520 (that is llm.c's model file magic)");
  patch_int(p, 0, kLlmcMagic);
  patch_int(p, 1, 2);
  EXPECT_EQ(error_of(p), p + ": llm.c token file version 2 is not supported (only version 1: uint16 tokens)");
  patch_int(p, 1, 1);
  patch_int(p, 2, 101);
  EXPECT_EQ(error_of(p), p + ": header says 101 tokens (1226 bytes) but the file has 1224 bytes (truncated?)");
  patch_int(p, 2, 100);
  EXPECT_EQ(error_of(p), "(no error)");
  dtest::write_text(dir / "short.bin", "tiny");
  EXPECT_NE(error_of((dir / "short.bin").string()).find("too short for an llm.c .bin header"), std::string::npos);
  EXPECT_EQ(error_of((dir / "missing.bin").string()), (dir / "missing.bin").string() + ": no such file");
  std::filesystem::remove_all(dir);
}

}  // namespace

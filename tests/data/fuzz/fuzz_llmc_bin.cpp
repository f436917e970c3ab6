// libFuzzer target: the llm.c .bin reader on arbitrary bytes: a DataError or a readable shard.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "data/data_error.h"
#include "data/llmc_bin.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shoestring::data;
  try {
    const auto f = LlmcBinFile::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz.bin");
    std::vector<uint32_t> out(f->num_tokens());
    f->read(0, out.size(), out.data());
    if (f->num_tokens() > 2) f->read(1, f->num_tokens() - 2, out.data());
  } catch (const DataError&) {
  }
  return 0;
}

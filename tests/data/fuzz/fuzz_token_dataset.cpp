// libFuzzer target: the HDF5 token dataset reader on arbitrary bytes. Any input must end in a
// DataError or a successfully checked dataset -- never a crash, a hang or a sanitizer report.
#include <cstddef>
#include <cstdint>

#include "data/data_error.h"
#include "data/token_dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shoestring::data;
  if (size > (1 << 20)) return 0;
  try {
    const auto ds = TokenDataset::open_image(data, size, "fuzz.h5");
    // Bound the work per input: a forged header may claim billions of tokens.
    if (ds->info().num_tokens > (1u << 22) || ds->info().chunk_tokens > (1u << 22)) return 0;
    ds->verify();
  } catch (const DataError&) {
  }
  return 0;
}

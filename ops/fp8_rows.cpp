#include "ops/fp8_rows.h"

#include <ATen/ATen.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "ops/fp8_format.h"
#include "ops/shape_str.h"

namespace shoestring::ops {

at::Tensor pack_fp8_rows(const at::Tensor& rows_in) {
  if (!rows_in.defined() || rows_in.dim() != 2)
    throw std::invalid_argument("pack_fp8_rows: expected 2-D rows, got " +
                                (rows_in.defined() ? shape_str(rows_in) : std::string("an undefined tensor")));
  const at::Tensor rows = rows_in.detach();
  const int64_t n = rows.size(0), d = rows.size(1);
  if (n == 0) return at::empty({0, fp8_row_bytes(d)}, rows.options().dtype(at::kByte));
  const Fp8Tensor q = rows.is_cuda() ? quantize_1x128_cuda(rows) : quantize_1x128(rows);
  // [n, KB] fp32 viewed as [n, 4 KB] bytes: the scales travel bit for bit.
  return at::cat({q.data.view(at::kByte), q.scale.view(at::kByte)}, 1);
}

namespace {

// The CPU form of the ATen expression below, in one pass: decode(code) * scale in fp32, the same
// product, through the 256-entry decode table (ATen converts float8 one element at a time).
at::Tensor unpack_cpu(const at::Tensor& packed, int64_t d, int64_t kb) {
  const int64_t n = packed.size(0), width = packed.size(1);
  at::Tensor out = at::empty({n, d}, at::kFloat);
  const auto* p = static_cast<const std::uint8_t*>(packed.data_ptr());
  const float* table = e4m3_decode_table();
  float* o = out.data_ptr<float>();
  std::vector<float> scale(static_cast<size_t>(kb));
  for (int64_t r = 0; r < n; ++r) {
    const std::uint8_t* row = p + r * width;
    std::memcpy(scale.data(), row + d, scale.size() * sizeof(float));  // unaligned in the row
    for (int64_t c = 0; c < d; ++c) o[r * d + c] = table[row[c]] * scale[static_cast<size_t>(c / kFp8Block)];
  }
  return out;
}

}  // namespace

at::Tensor unpack_fp8_rows(const at::Tensor& packed, int64_t d, at::ScalarType dtype) {
  const int64_t kb = ceil_div(d, kFp8Block);
  if (!packed.defined() || packed.dim() != 2 || packed.scalar_type() != at::kByte || packed.size(1) != fp8_row_bytes(d))
    throw std::invalid_argument("unpack_fp8_rows: expected uint8 [n, " + std::to_string(fp8_row_bytes(d)) +
                                "] (width " + std::to_string(d) + "), got " +
                                (packed.defined() ? shape_str(packed) : std::string("an undefined tensor")));
  const int64_t n = packed.size(0);
  if (packed.is_cpu()) return unpack_cpu(packed.contiguous(), d, kb).to(dtype);
  const at::Tensor codes = packed.narrow(1, 0, d).view(at::kFloat8_e4m3fn).to(at::kFloat);
  // The scales sit at byte offset d of each row: copied out to fresh (aligned) storage, then read
  // as fp32 [n, kb]. Not .contiguous(): with one row the slice already counts as contiguous and
  // would keep its unaligned offset d, which a float view refuses.
  const at::Tensor scale = packed.narrow(1, d, 4 * kb).clone(at::MemoryFormat::Contiguous).view(at::kFloat);
  const at::Tensor per_element =
      scale.unsqueeze(2).expand({n, kb, kFp8Block}).reshape({n, kb * kFp8Block}).narrow(1, 0, d);
  return (codes * per_element).to(dtype);
}

}  // namespace shoestring::ops

// CPU reference of the block-scaled GEMM (see fp8_gemm.h for the formula and why it promotes).
#include "ops/fp8_gemm.h"
#include "ops/shape_str.h"

#include <ATen/ATen.h>

#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace shoestring::ops {

namespace {

// Unscaled decoded values of a code tensor on the CPU, contiguous float (exact: every E4M3 value
// is a float).
at::Tensor decode_all(const at::Tensor& data) { return decode_codes(data.to(at::kCPU)); }

// One output row range of C = A . B^T for a single (2-D) B, with promotion every 128 of K; over K
// blocks [kb0, kb1) only when given (a k-grouped GEMM's group), else all of them.
void gemm_rows(const float* a, const float* sa, const float* b, const float* sb, int64_t b_block_rows,
               int64_t m0, int64_t m1, int64_t N, int64_t K, float* c, int64_t kb0 = 0, int64_t kb1 = -1) {
  const int64_t KB = ceil_div(K, kFp8Block);
  if (kb1 < 0) kb1 = KB;
  for (int64_t m = m0; m < m1; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      float acc = 0.0f;  // the FP32 accumulator on the "CUDA cores"
      for (int64_t kb = kb0; kb < kb1; ++kb) {
        const int64_t k0 = kb * kFp8Block, k1 = std::min(K, k0 + kFp8Block);
        float partial = 0.0f;  // the tensor core's per-block partial sum (here: full float)
        for (int64_t k = k0; k < k1; ++k) partial += a[m * K + k] * b[n * K + k];
        acc += partial * (sa[m * KB + kb] * sb[(n / b_block_rows) * KB + kb]);
      }
      c[m * N + n] = acc;
    }
  }
}

void check_pair(const Fp8Tensor& a, const Fp8Tensor& b, const char* what, int64_t b_dim) {
  check_fp8_tensor(a, what);
  check_fp8_tensor(b, what);
  const std::string w(what);
  if (a.block_rows != 1 || a.data.dim() != 2)
    throw std::invalid_argument(w + ": A must be a 2-D 1x128-scaled tensor, got data " + shape_str(a.data) +
                                " with block_rows " + std::to_string(a.block_rows));
  if (b.data.dim() != b_dim)
    throw std::invalid_argument(w + ": B must be " + std::to_string(b_dim) + "-D, got " + shape_str(b.data));
  if (a.cols() != b.cols())
    throw std::invalid_argument(w + ": K mismatch, A is " + shape_str(a.data) + " and B is " + shape_str(b.data));
}

}  // namespace

at::Tensor fp8_gemm_reference(const Fp8Tensor& a, const Fp8Tensor& b) {
  check_pair(a, b, "fp8_gemm_reference", 2);
  const int64_t M = a.rows(), N = b.rows(), K = a.cols();
  const at::Tensor ad = decode_all(a.data), bd = decode_all(b.data);
  const at::Tensor sa = a.scale.to(at::kCPU).contiguous(), sb = b.scale.to(at::kCPU).contiguous();
  at::Tensor c = at::zeros({M, N}, at::kFloat);
  gemm_rows(ad.data_ptr<float>(), sa.data_ptr<float>(), bd.data_ptr<float>(), sb.data_ptr<float>(), b.block_rows, 0, M, N, K,
            c.data_ptr<float>());
  return c;
}

void check_grouped_layout(const at::Tensor& group_of_row, int64_t num_groups, int64_t M) {
  if (group_of_row.scalar_type() != at::kInt || group_of_row.dim() != 1 || group_of_row.size(0) != M)
    throw std::invalid_argument("grouped GEMM: group_of_row must be int32 [" + std::to_string(M) + "], got " +
                                std::string(c10::toString(group_of_row.scalar_type())) + " " + shape_str(group_of_row));
  if (M % kFp8Block != 0)
    throw std::invalid_argument("grouped GEMM: M = " + std::to_string(M) +
                                " must be a multiple of 128 (each group padded to 128 rows)");
  const at::Tensor g = group_of_row.to(at::kCPU).contiguous();
  const int32_t* p = g.data_ptr<int32_t>();
  for (int64_t t = 0; t < M / kFp8Block; ++t) {
    int32_t tile_group = -1;
    for (int64_t r = t * kFp8Block; r < (t + 1) * kFp8Block; ++r) {
      if (p[r] < -1 || p[r] >= num_groups)
        throw std::invalid_argument("grouped GEMM: row " + std::to_string(r) + " has group " + std::to_string(p[r]) +
                                    ", outside [-1, " + std::to_string(num_groups) + ")");
      if (p[r] == -1) continue;
      if (tile_group != -1 && tile_group != p[r])
        throw std::invalid_argument("grouped GEMM: 128-row tile " + std::to_string(t) + " mixes groups " +
                                    std::to_string(tile_group) + " and " + std::to_string(p[r]) +
                                    " (pad every group to a multiple of 128 rows)");
      tile_group = p[r];
    }
  }
}

at::Tensor make_contiguous_group_layout(const std::vector<int64_t>& rows_per_group) {
  int64_t M = 0;
  for (int64_t r : rows_per_group) M += ceil_div(r, kFp8Block) * kFp8Block;
  at::Tensor g = at::full({M}, -1, at::kInt);
  int32_t* p = g.data_ptr<int32_t>();
  int64_t off = 0;
  for (size_t i = 0; i < rows_per_group.size(); ++i) {
    for (int64_t r = 0; r < rows_per_group[i]; ++r) p[off + r] = static_cast<int32_t>(i);
    off += ceil_div(rows_per_group[i], kFp8Block) * kFp8Block;
  }
  return g;
}

at::Tensor fp8_grouped_gemm_reference(const Fp8Tensor& a, const Fp8Tensor& b, const at::Tensor& group_of_row) {
  check_pair(a, b, "fp8_grouped_gemm_reference", 3);
  if (b.block_rows != kFp8Block)
    throw std::invalid_argument("fp8_grouped_gemm_reference: B must carry 128x128 scales");
  const int64_t M = a.rows(), G = b.data.size(0), N = b.rows(), K = a.cols();
  check_grouped_layout(group_of_row, G, M);
  const at::Tensor ad = decode_all(a.data), bd = decode_all(b.data);
  const at::Tensor sa = a.scale.to(at::kCPU).contiguous(), sb = b.scale.to(at::kCPU).contiguous();
  const at::Tensor g = group_of_row.to(at::kCPU).contiguous();
  const int64_t sb_stride = sb.size(1) * sb.size(2);
  at::Tensor c = at::zeros({M, N}, at::kFloat);
  for (int64_t m = 0; m < M; ++m) {
    const int32_t grp = g.data_ptr<int32_t>()[m];
    if (grp < 0) continue;  // padding row: output stays 0
    gemm_rows(ad.data_ptr<float>(), sa.data_ptr<float>(), bd.data_ptr<float>() + grp * N * K, sb.data_ptr<float>() + grp * sb_stride,
              kFp8Block, m, m + 1, N, K, c.data_ptr<float>());
  }
  return c;
}

void check_k_groups(const char* what, const std::vector<int64_t>& k_rows, int64_t K) {
  int64_t total = 0;
  for (size_t g = 0; g < k_rows.size(); ++g) {
    if (k_rows[g] < 0 || k_rows[g] % kFp8Block != 0)
      throw std::invalid_argument(std::string(what) + ": group " + std::to_string(g) + " has " +
                                  std::to_string(k_rows[g]) + " K rows, expected a multiple of 128 (pad each group)");
    total += k_rows[g];
  }
  if (total != K)
    throw std::invalid_argument(std::string(what) + ": the groups' K rows add up to " + std::to_string(total) +
                                ", but the operands have K = " + std::to_string(K));
}

at::Tensor fp8_k_grouped_gemm_reference(const Fp8Tensor& a, const Fp8Tensor& b, const std::vector<int64_t>& k_rows) {
  const char* what = "fp8_k_grouped_gemm_reference";
  check_pair(a, b, what, 2);
  if (b.block_rows != 1) throw std::invalid_argument(std::string(what) + ": B must carry 1x128 scales");
  const int64_t M = a.rows(), N = b.rows(), K = a.cols();
  check_k_groups(what, k_rows, K);
  const at::Tensor ad = decode_all(a.data), bd = decode_all(b.data);
  const at::Tensor sa = a.scale.to(at::kCPU).contiguous(), sb = b.scale.to(at::kCPU).contiguous();
  at::Tensor c = at::zeros({int64_t(k_rows.size()), M, N}, at::kFloat);
  int64_t kb0 = 0;
  for (size_t g = 0; g < k_rows.size(); ++g) {
    const int64_t kb1 = kb0 + k_rows[g] / kFp8Block;
    gemm_rows(ad.data_ptr<float>(), sa.data_ptr<float>(), bd.data_ptr<float>(), sb.data_ptr<float>(), 1, 0, M, N, K,
              c.data_ptr<float>() + int64_t(g) * M * N, kb0, kb1);
    kb0 = kb1;
  }
  return c;
}

#ifndef SHOESTRING_WITH_CUDA
at::Tensor fp8_gemm_cuda(const Fp8Tensor&, const Fp8Tensor&, Fp8GemmKernel) {
  throw std::runtime_error("fp8_gemm_cuda: this binary was built without CUDA (SHOESTRING_CUDA=OFF)");
}
at::Tensor fp8_grouped_gemm_cuda(const Fp8Tensor&, const Fp8Tensor&, const at::Tensor&, Fp8GemmKernel) {
  throw std::runtime_error("fp8_grouped_gemm_cuda: this binary was built without CUDA (SHOESTRING_CUDA=OFF)");
}
at::Tensor fp8_k_grouped_gemm_cuda(const Fp8Tensor&, const Fp8Tensor&, const std::vector<int64_t>&, Fp8GemmKernel) {
  throw std::runtime_error("fp8_k_grouped_gemm_cuda: this binary was built without CUDA (SHOESTRING_CUDA=OFF)");
}
#endif

}  // namespace shoestring::ops

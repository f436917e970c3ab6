// cuBLASLt / cuBLAS baselines (see fp8_blas_baseline.h).
//
// Row-major C[M,N] = A[M,K] . B[N,K]^T is column-major C^T[N,M] = B . A^T, so in cuBLAS terms
// "A" = our weight B (K x N column-major, op T), "B" = our activation A (K x M column-major, op N),
// m = N, n = M, k = K: the "TN" layout FP8 cuBLASLt requires. Scale layouts (cuBLAS docs, "1D/2D
// block scaling factors layout"):
//   BLK128x128 on cuBLAS's A: K-block index fastest, leading dimension rounded up to a multiple of 4:
//     [ceil(N/128)][roundup(KB, 4)]  (our [NB][KB] padded with zeros on the right)
//   VEC128 on cuBLAS's B: the outer dimension (our M) fastest: [KB][M] (our [M][KB] transposed).
#include "ops/fp8_blas_baseline.h"

#include <ATen/ATen.h>
#include <cublasLt.h>
#include <cublas_v2.h>

#include <mutex>
#include <sstream>

#include "ops/fp8_cuda_common.cuh"

namespace shoestring::ops {

namespace {

void check_blas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string(what) + ": cuBLAS status " + std::to_string(static_cast<int>(s)));
}

cublasLtHandle_t lt_handle() {
  static cublasLtHandle_t h = [] {
    cublasLtHandle_t x = nullptr;
    check_blas(cublasLtCreate(&x), "cublasLtCreate");
    return x;
  }();
  return h;
}

cublasHandle_t blas_handle() {
  static cublasHandle_t h = [] {
    cublasHandle_t x = nullptr;
    check_blas(cublasCreate(&x), "cublasCreate");
    return x;
  }();
  return h;
}

constexpr size_t kWorkspaceBytes = 32u << 20;

}  // namespace

struct CublasLtFp8Gemm::Impl {
  int64_t M = 0, N = 0, K = 0;
  at::ScalarType out_dtype = at::kFloat;
  at::Tensor a_data, b_data, a_scale_lt, b_scale_lt, workspace;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulHeuristicResult_t heur{};
  ~Impl() {
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

CublasLtFp8Gemm::CublasLtFp8Gemm(const Fp8Tensor& a, const Fp8Tensor& b, at::ScalarType out_dtype)
    : impl_(std::make_unique<Impl>()) {
  const char* what = "CublasLtFp8Gemm";
  check_fp8_tensor(a, what);
  check_fp8_tensor(b, what);
  cuda_detail::require_cuda(a.data, what, "A");
  cuda_detail::require_cuda(b.data, what, "B");
  if (a.block_rows != 1 || b.block_rows != kFp8Block || a.data.dim() != 2 || b.data.dim() != 2)
    throw std::invalid_argument("CublasLtFp8Gemm: needs A 2-D 1x128 and B 2-D 128x128");
  if (a.cols() != b.cols() || a.cols() % kFp8Block != 0)
    throw std::invalid_argument("CublasLtFp8Gemm: K must match and be a multiple of 128");
  if (out_dtype != at::kFloat && out_dtype != at::kBFloat16)
    throw std::invalid_argument("CublasLtFp8Gemm: out_dtype must be float32 or bfloat16");
  Impl& s = *impl_;
  s.M = a.rows(), s.N = b.rows(), s.K = a.cols();
  s.out_dtype = out_dtype;
  s.a_data = a.data;
  s.b_data = b.data;
  const int64_t KB = s.K / kFp8Block, KB4 = ceil_div(KB, 4) * 4;
  s.b_scale_lt = at::constant_pad_nd(b.scale, {0, KB4 - KB}).contiguous();  // [NB][KB4]
  s.a_scale_lt = a.scale.t().contiguous();                                  // [KB][M]
  s.workspace = at::empty({static_cast<int64_t>(kWorkspaceBytes)}, a.data.options().dtype(at::kByte));

  check_blas(cublasLtMatmulDescCreate(&s.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  const cublasOperation_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
  check_blas(cublasLtMatmulDescSetAttribute(s.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof op_t), "TRANSA");
  check_blas(cublasLtMatmulDescSetAttribute(s.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof op_n), "TRANSB");
  const cublasLtMatmulMatrixScale_t mode_a = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
  const cublasLtMatmulMatrixScale_t mode_b = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  check_blas(cublasLtMatmulDescSetAttribute(s.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode_a, sizeof mode_a),
             "A_SCALE_MODE");
  check_blas(cublasLtMatmulDescSetAttribute(s.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode_b, sizeof mode_b),
             "B_SCALE_MODE");
  const void* pa = s.b_scale_lt.data_ptr();
  const void* pb = s.a_scale_lt.data_ptr();
  check_blas(cublasLtMatmulDescSetAttribute(s.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &pa, sizeof pa),
             "A_SCALE_POINTER");
  check_blas(cublasLtMatmulDescSetAttribute(s.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &pb, sizeof pb),
             "B_SCALE_POINTER");
  const cudaDataType_t ct = out_dtype == at::kFloat ? CUDA_R_32F : CUDA_R_16BF;
  check_blas(cublasLtMatrixLayoutCreate(&s.la, CUDA_R_8F_E4M3, s.K, s.N, s.K), "layout A");
  check_blas(cublasLtMatrixLayoutCreate(&s.lb, CUDA_R_8F_E4M3, s.K, s.M, s.K), "layout B");
  check_blas(cublasLtMatrixLayoutCreate(&s.lc, ct, s.N, s.M, s.N), "layout C");
  cublasLtMatmulPreference_t pref = nullptr;
  check_blas(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
  const size_t ws = kWorkspaceBytes;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  int found = 0;
  const cublasStatus_t hs =
      cublasLtMatmulAlgoGetHeuristic(lt_handle(), s.desc, s.la, s.lb, s.lc, s.lc, pref, 1, &s.heur, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (hs != CUBLAS_STATUS_SUCCESS || found == 0) {
    std::ostringstream os;
    os << "CublasLtFp8Gemm: cuBLASLt has no algorithm for block-scaled FP8 (VEC128 x BLK128x128) with M=" << s.M
       << " N=" << s.N << " K=" << s.K << " out=" << c10::toString(out_dtype) << " (status "
       << static_cast<int>(hs) << "; needs CUDA >= 12.9 and a Hopper GPU)";
    throw std::runtime_error(os.str());
  }
}

CublasLtFp8Gemm::~CublasLtFp8Gemm() = default;

at::Tensor CublasLtFp8Gemm::run(at::Tensor out) {
  Impl& s = *impl_;
  if (!out.defined()) out = at::empty({s.M, s.N}, s.a_data.options().dtype(s.out_dtype));
  const float alpha = 1.0f, beta = 0.0f;
  check_blas(cublasLtMatmul(lt_handle(), s.desc, &alpha, s.b_data.data_ptr(), s.la, s.a_data.data_ptr(), s.lb,
                            &beta, out.data_ptr(), s.lc, out.data_ptr(), s.lc, &s.heur.algo, s.workspace.data_ptr(),
                            kWorkspaceBytes, cuda_detail::current_stream()),
             "cublasLtMatmul (block-scaled FP8)");
  return out;
}

at::Tensor fp8_gemm_cublaslt(const Fp8Tensor& a, const Fp8Tensor& b, at::ScalarType out_dtype) {
  CublasLtFp8Gemm g(a, b, out_dtype);
  return g.run();
}

at::Tensor bf16_gemm_cublas(const at::Tensor& a, const at::Tensor& b, at::Tensor out) {
  cuda_detail::require_cuda(a, "bf16_gemm_cublas", "A");
  cuda_detail::require_cuda(b, "bf16_gemm_cublas", "B");
  if (a.scalar_type() != at::kBFloat16 || b.scalar_type() != at::kBFloat16 || a.dim() != 2 || b.dim() != 2 ||
      a.size(1) != b.size(1) || !a.is_contiguous() || !b.is_contiguous())
    throw std::invalid_argument("bf16_gemm_cublas: needs contiguous bf16 A [M,K] and B [N,K]");
  const int64_t M = a.size(0), N = b.size(0), K = a.size(1);
  if (!out.defined()) out = at::empty({M, N}, a.options());
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  check_blas(cublasSetStream(blas_handle(), cuda_detail::current_stream()), "cublasSetStream");
  const float alpha = 1.0f, beta = 0.0f;
  check_blas(cublasGemmEx(blas_handle(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(M),
                          static_cast<int>(K), &alpha, b.data_ptr(), CUDA_R_16BF, static_cast<int>(K), a.data_ptr(),
                          CUDA_R_16BF, static_cast<int>(K), &beta, out.data_ptr(), CUDA_R_16BF, static_cast<int>(N),
                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
             "cublasGemmEx (bf16)");
  return out;
}

}  // namespace shoestring::ops

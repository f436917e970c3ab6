// Our block-scaled FP8 GEMM kernels (C = A . B^T, both K-contiguous, float32 C), dense and grouped
// ("contiguous" M-grouped layout), chosen by choose_fp8_gemm_config: the two below, and on Hopper
// kWgmmaTma (fp8_gemm_wgmma.cu) and its persistent candidates (fp8_gemm_wgmma_persistent.cu). The
// host side (validate, choose, launch) for all of them is here.
//
//  kSimt  CUDA cores. Decodes E4M3 to float in shared memory and accumulates each 128-long K block
//         with explicitly rounded multiply/add (__fmul_rn/__fadd_rn: no FMA contraction) in the same
//         order as the CPU reference, then promotes exactly as the reference does. Bit-identical to
//         fp8_gemm_reference by construction; slow. It is the GPU-side oracle and the sm_80 path.
//
//  kMma   Tensor cores, mma.sync.m16n8k32 e4m3 x e4m3 -> f32 (sm_89+). A block computes a BM x 128
//         tile of C (BN = 128 = one weight scale block, so the weight scale is uniform per block);
//         8 warps as 2 (M) x 4 (N). K advances one scale block (128) per step through a 2-stage
//         cp.async pipeline. Within the block the partial sums live in the MMA accumulators (the
//         tensor core's own accumulation, limited precision on Hopper); after each 128-K block they
//         are promoted into separate FP32 registers with the two scales, DeepSeek-V3 §3.3.2.
//         Shared-memory rows are padded to 144 bytes so the 8 rows x 4 words of a fragment load hit
//         32 distinct banks. The choice on Ada (sm_89); on an H100 it reached 117-149 TFLOPS at
//         M = 4096 against the WGMMA kernel's 542-864 (docs/fp8.md).
#include <ATen/ATen.h>

#include <cstdlib>
#include <sstream>

#include "ops/fp8_cuda_common.cuh"
#include "ops/fp8_gemm.h"
#include "ops/fp8_gemm_common.cuh"
#include "ops/shape_str.h"

namespace shoestring::ops {

namespace {

using cuda_detail::check_cuda;
using cuda_detail::current_stream;
using namespace gemm_detail;

// ---------------------------------------------------------------------------------------------------
// kSimt: 64 x 64 tile, 256 threads as 16 x 16, each thread a 4 x 4 micro-tile; K in halves of 64.
__global__ void __launch_bounds__(256) fp8_gemm_simt_kernel(GemmArgs p) {
  __shared__ float As[64][64 + 4];  // [k][m]
  __shared__ float Bs[64][64 + 4];  // [k][n]
  const int m0 = blockIdx.y * 64, n0 = blockIdx.x * 64;
  const int grp = tile_group(p, m0, 64);
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const KSpan ks = k_span(p);
  float acc[4][4] = {};
  if (grp >= 0) {
    const std::uint8_t* B = p.b + grp * p.b_group_stride;
    const float* SB = p.sb + grp * p.sb_group_stride;
    for (int kb = ks.begin; kb < ks.end; ++kb) {
      float part[4][4] = {};
      for (int half = 0; half < 2; ++half) {
        const int k0 = kb * 128 + half * 64;
        for (int i = threadIdx.x; i < 64 * 64; i += 256) {
          const int r = i / 64, kk = i % 64, k = k0 + kk;
          As[kk][r] = (m0 + r < p.M && k < p.K) ? decode_e4m3(p.a[int64_t(m0 + r) * p.K + k]) : 0.0f;
          Bs[kk][r] = (n0 + r < p.N && k < p.K) ? decode_e4m3(B[int64_t(n0 + r) * p.K + k]) : 0.0f;
        }
        __syncthreads();
        for (int kk = 0; kk < 64; ++kk) {
          float av[4], bv[4];
#pragma unroll
          for (int i = 0; i < 4; ++i) av[i] = As[kk][ty * 4 + i], bv[i] = Bs[kk][tx * 4 + i];
#pragma unroll
          for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) part[i][j] = __fadd_rn(part[i][j], __fmul_rn(av[i], bv[j]));
        }
        __syncthreads();
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int m = m0 + ty * 4 + i;
        const float sa = m < p.M ? p.sa[int64_t(m) * p.KB + kb] : 0.0f;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int n = n0 + tx * 4 + j;
          const float sb = n < p.N ? SB[int64_t(n / p.b_block_rows) * p.KB + kb] : 0.0f;
          acc[i][j] = __fadd_rn(acc[i][j], __fmul_rn(part[i][j], __fmul_rn(sa, sb)));
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int m = m0 + ty * 4 + i;
    if (m >= p.M) continue;
    const bool live = row_live(p, m);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int n = n0 + tx * 4 + j;
      if (n < p.N) ks.c[int64_t(m) * p.N + n] = live ? acc[i][j] : 0.0f;
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// kMma: BM x 128 tile, 8 warps as 2 x 4, warp tile (BM/2) x 32, 2-stage cp.async over 128-K blocks.
constexpr int kRowBytes = 144;  // 128 + 16 bytes of padding (bank-conflict-free fragment loads)

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 890
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(valid ? 16 : 0));
}
#endif

template <int BM>
__global__ void __launch_bounds__(256) fp8_gemm_mma_kernel(GemmArgs p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  constexpr int MT = BM / 32;  // m16 tiles per warp (warp covers BM/2 rows)
  constexpr int NT = 4;        // n8 tiles per warp (warp covers 32 columns)
  extern __shared__ __align__(16) std::uint8_t smem[];
  std::uint8_t* As[2] = {smem, smem + (BM + 128) * kRowBytes};
  std::uint8_t* Bs[2] = {smem + BM * kRowBytes, smem + (BM + 128) * kRowBytes + BM * kRowBytes};

  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * 128;
  const int grp = tile_group(p, m0, BM);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = warp / 4, wn = warp % 4, g = lane / 4, t = lane % 4;
  const KSpan span = k_span(p);
  float acc[MT][NT][4] = {};

  if (grp >= 0 && span.begin < span.end) {
    const std::uint8_t* B = p.b + grp * p.b_group_stride;
    const float* SB = p.sb + grp * p.sb_group_stride;
    auto load_stage = [&](int stage, int kb) {
      const int k0 = kb * 128;
      for (int c = tid; c < BM * 8; c += 256) {
        const int r = c / 8, ch = c % 8, m = m0 + r;
        cp_async16(As[stage] + r * kRowBytes + ch * 16, p.a + int64_t(m < p.M ? m : p.M - 1) * p.K + k0 + ch * 16,
                   m < p.M);
      }
      for (int c = tid; c < 128 * 8; c += 256) {
        const int r = c / 8, ch = c % 8, n = n0 + r;
        cp_async16(Bs[stage] + r * kRowBytes + ch * 16, B + int64_t(n < p.N ? n : p.N - 1) * p.K + k0 + ch * 16,
                   n < p.N);
      }
      asm volatile("cp.async.commit_group;\n" ::);
    };

    load_stage(0, span.begin);
    for (int kb = span.begin; kb < span.end; ++kb) {
      const int st = (kb - span.begin) & 1;
      if (kb + 1 < span.end) {
        load_stage(st ^ 1, kb + 1);
        asm volatile("cp.async.wait_group 1;\n" ::);
      } else {
        asm volatile("cp.async.wait_group 0;\n" ::);
      }
      __syncthreads();

      float part[MT][NT][4] = {};
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) {
        const int k0 = ks * 32 + t * 4;
        std::uint32_t af[MT][4], bf[NT][2];
#pragma unroll
        for (int i = 0; i < MT; ++i) {
          const std::uint8_t* base = As[st] + (wm * (BM / 2) + i * 16 + g) * kRowBytes + k0;
          af[i][0] = *reinterpret_cast<const std::uint32_t*>(base);
          af[i][1] = *reinterpret_cast<const std::uint32_t*>(base + 8 * kRowBytes);
          af[i][2] = *reinterpret_cast<const std::uint32_t*>(base + 16);
          af[i][3] = *reinterpret_cast<const std::uint32_t*>(base + 8 * kRowBytes + 16);
        }
#pragma unroll
        for (int j = 0; j < NT; ++j) {
          const std::uint8_t* base = Bs[st] + (wn * 32 + j * 8 + g) * kRowBytes + k0;
          bf[j][0] = *reinterpret_cast<const std::uint32_t*>(base);
          bf[j][1] = *reinterpret_cast<const std::uint32_t*>(base + 16);
        }
#pragma unroll
        for (int i = 0; i < MT; ++i)
#pragma unroll
          for (int j = 0; j < NT; ++j)
            asm volatile(
                "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                "{%0,%1,%2,%3};\n"
                : "+f"(part[i][j][0]), "+f"(part[i][j][1]), "+f"(part[i][j][2]), "+f"(part[i][j][3])
                : "r"(af[i][0]), "r"(af[i][1]), "r"(af[i][2]), "r"(af[i][3]), "r"(bf[j][0]), "r"(bf[j][1]));
      }

      // Promotion (DeepSeek-V3 §3.3.2): acc += partial * scale_a[row] * scale_b[col block].
      float sb[NT][2];
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int n = n0 + wn * 32 + j * 8 + t * 2 + e;
          sb[j][e] = n < p.N ? SB[int64_t(n / p.b_block_rows) * p.KB + kb] : 0.0f;
        }
#pragma unroll
      for (int i = 0; i < MT; ++i) {
        const int r_lo = m0 + wm * (BM / 2) + i * 16 + g, r_hi = r_lo + 8;
        const float sa_lo = r_lo < p.M ? p.sa[int64_t(r_lo) * p.KB + kb] : 0.0f;
        const float sa_hi = r_hi < p.M ? p.sa[int64_t(r_hi) * p.KB + kb] : 0.0f;
#pragma unroll
        for (int j = 0; j < NT; ++j) {
          acc[i][j][0] += part[i][j][0] * (sa_lo * sb[j][0]);
          acc[i][j][1] += part[i][j][1] * (sa_lo * sb[j][1]);
          acc[i][j][2] += part[i][j][2] * (sa_hi * sb[j][0]);
          acc[i][j][3] += part[i][j][3] * (sa_hi * sb[j][1]);
        }
      }
      __syncthreads();  // this stage is overwritten by the load issued in the next iteration
    }
  }

#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int m = m0 + wm * (BM / 2) + i * 16 + g + h * 8;
      if (m >= p.M) continue;
      const bool live = row_live(p, m);
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int n = n0 + wn * 32 + j * 8 + t * 2 + e;
          if (n < p.N) span.c[int64_t(m) * p.N + n] = live ? acc[i][j][h * 2 + e] : 0.0f;
        }
    }
#else
  __trap();  // the host never launches this below sm_89 (choose_fp8_gemm_config)
#endif
}

// ---------------------------------------------------------------------------------------------------
// Host side: validate -> choose config -> launch.

// Three attribute queries, not cudaGetDeviceProperties: this runs on every launch (twice on the
// split-K path), and the full property query is far slower.
Fp8DeviceInfo device_info(int device) {
  int major = 0, minor = 0, sms = 0;
  check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute");
  check_cuda(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute");
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  return {major * 10 + minor, sms};
}

void validate(const Fp8Tensor& a, const Fp8Tensor& b, const char* what, int64_t b_dim) {
  check_fp8_tensor(a, what);
  check_fp8_tensor(b, what);
  for (const at::Tensor* t : {&a.data, &a.scale, &b.data, &b.scale}) cuda_detail::require_cuda(*t, what, "operand");
  const std::string w(what);
  if (a.block_rows != 1 || a.data.dim() != 2)
    throw std::invalid_argument(w + ": A must be 2-D with 1x128 scales, got " + shape_str(a.data));
  if (b.data.dim() != b_dim)
    throw std::invalid_argument(w + ": B must be " + std::to_string(b_dim) + "-D, got " + shape_str(b.data));
  if (a.cols() != b.cols())
    throw std::invalid_argument(w + ": K mismatch, A " + shape_str(a.data) + " vs B " + shape_str(b.data));
  if (a.cols() % kFp8Block != 0)
    throw std::invalid_argument(w + ": K = " + std::to_string(a.cols()) +
                                " must be a multiple of 128 on the GPU (pad K; the CPU reference accepts any K)");
  for (const at::Tensor* t : {&a.data, &b.data})
    if (reinterpret_cast<std::uintptr_t>(t->data_ptr()) % 16 != 0)
      throw std::invalid_argument(w + ": operand data must be 16-byte aligned (cp.async)");
  if (a.rows() > INT32_MAX || b.rows() > INT32_MAX || a.cols() > INT32_MAX)
    throw std::invalid_argument(w + ": dimensions must fit in int32");
}

// Thread blocks of a persistent launch: one per SM (the WGMMA kernel's shared memory allows one),
// or SHOESTRING_FP8_GEMM_BLOCKS when set (tests use a few, so that every block walks many tiles).
int persistent_blocks(const Fp8DeviceInfo& info) {
  const char* v = std::getenv("SHOESTRING_FP8_GEMM_BLOCKS");
  const int n = v != nullptr ? std::atoi(v) : 0;
  return n > 0 ? n : info.num_sms;
}

// k_rows: null, or the k-grouped layout (fp8_k_grouped_gemm_cuda): C is then [G, M, N].
at::Tensor launch(const Fp8Tensor& a, const Fp8Tensor& b, const at::Tensor& group_of_row, Fp8GemmKernel kernel,
                  const char* what, const std::vector<int64_t>* k_rows = nullptr) {
  const int64_t M = a.rows(), N = b.rows(), K = a.cols();
  const int64_t G = k_rows != nullptr ? int64_t(k_rows->size()) : 1;
  at::Tensor c = k_rows != nullptr ? at::empty({G, M, N}, a.data.options().dtype(at::kFloat))
                                   : at::empty({M, N}, a.data.options().dtype(at::kFloat));
  if (M == 0 || N == 0 || G == 0) return c;
  if (K == 0) return c.zero_();  // an empty sum (a weight gradient over zero tokens)
  if (kernel == Fp8GemmKernel::kAuto) kernel = fp8_gemm_kernel_from_env();
  at::Tensor k_block_begin;  // [G + 1] int32 on the device: each group's first K block
  if (k_rows != nullptr) {
    // Staged in pinned memory so the upload is truly asynchronous (a pageable source can make the
    // host wait for the stream); the caching host allocator keeps the block until the copy is done.
    at::Tensor host = at::empty({G + 1}, at::TensorOptions().dtype(at::kInt).pinned_memory(true));
    int32_t* begin = host.data_ptr<int32_t>();
    begin[0] = 0;
    for (int64_t g = 0; g < G; ++g) begin[g + 1] = begin[g] + static_cast<int32_t>((*k_rows)[size_t(g)] / kFp8Block);
    k_block_begin = host.to(a.data.device(), /*non_blocking=*/true);
  }
  // k-grouped: G times the blocks of one [M, N] tile grid fill the GPU (the 64- or 128-row choice).
  const Fp8DeviceInfo info = device_info(a.data.get_device());
  const Fp8GemmConfig cfg = choose_fp8_gemm_config(M * G, N, K, info, kernel);
  if (cfg.k_splits > 1 && k_rows == nullptr && !group_of_row.defined()) {
    // Split-K as a k-grouped GEMM of the same operands, then the partials summed in a fixed order.
    const int64_t kb = K / kFp8Block, splits = cfg.k_splits;
    std::vector<int64_t> spans;
    for (int64_t s = 0; s < splits; ++s) spans.push_back((kb / splits + (s < kb % splits ? 1 : 0)) * kFp8Block);
    return at::sum(launch(a, b, group_of_row, cfg.kernel, what, &spans), 0);
  }
  GemmArgs p{};
  p.a = static_cast<const std::uint8_t*>(a.data.data_ptr());
  p.sa = a.scale.data_ptr<float>();
  p.b = static_cast<const std::uint8_t*>(b.data.data_ptr());
  p.sb = b.scale.data_ptr<float>();
  p.c = c.data_ptr<float>();
  p.M = static_cast<int>(M), p.N = static_cast<int>(N), p.K = static_cast<int>(K);
  p.KB = static_cast<int>(K / kFp8Block);
  p.b_block_rows = static_cast<int>(b.block_rows);
  p.group_of_row = group_of_row.defined() ? group_of_row.data_ptr<int>() : nullptr;
  p.b_group_stride = b.data.dim() == 3 ? N * K : 0;
  p.sb_group_stride = b.data.dim() == 3 ? b.scale.size(1) * b.scale.size(2) : 0;
  p.k_block_begin = k_block_begin.defined() ? k_block_begin.data_ptr<int>() : nullptr;
  p.c_group_stride = M * N;
  p.tile_band = cfg.tile_band;
  const cudaStream_t stream = current_stream();
  const dim3 grid(static_cast<unsigned>(ceil_div(N, cfg.block_n)), static_cast<unsigned>(ceil_div(M, cfg.block_m)),
                  static_cast<unsigned>(G));
  const int64_t b_groups = b.data.dim() == 3 ? b.data.size(0) : 1;
  if (cfg.kernel == Fp8GemmKernel::kWgmmaTma) {
    launch_fp8_gemm_wgmma_tma(p, b_groups, int(G), stream);
  } else if (cfg.persistent) {
    launch_fp8_gemm_wgmma_persistent(p, b_groups, int(G), cfg, persistent_blocks(info), stream);
  } else if (cfg.kernel == Fp8GemmKernel::kSimt) {
    fp8_gemm_simt_kernel<<<grid, 256, 0, stream>>>(p);
  } else {
    auto run = [&](auto kernel_fn, int bm) {
      const int smem = 2 * (bm + 128) * kRowBytes;
      check_cuda(cudaFuncSetAttribute(kernel_fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem),
                 "cudaFuncSetAttribute(fp8_gemm_mma_kernel)");
      kernel_fn<<<grid, 256, smem, stream>>>(p);
    };
    if (cfg.block_m == 128) run(fp8_gemm_mma_kernel<128>, 128);
    else run(fp8_gemm_mma_kernel<64>, 64);
  }
  check_cuda(cudaGetLastError(), what);
  return c;
}

}  // namespace

at::Tensor fp8_gemm_cuda(const Fp8Tensor& a, const Fp8Tensor& b, Fp8GemmKernel kernel) {
  validate(a, b, "fp8_gemm_cuda", 2);
  return launch(a, b, at::Tensor(), kernel, "fp8_gemm_cuda");
}

at::Tensor fp8_grouped_gemm_cuda(const Fp8Tensor& a, const Fp8Tensor& b, const at::Tensor& group_of_row,
                                 Fp8GemmKernel kernel) {
  validate(a, b, "fp8_grouped_gemm_cuda", 3);
  if (b.block_rows != kFp8Block) throw std::invalid_argument("fp8_grouped_gemm_cuda: B must carry 128x128 scales");
  cuda_detail::require_cuda(group_of_row, "fp8_grouped_gemm_cuda", "group_of_row");
  // Shapes only: checking the contents (check_grouped_layout) would cost a device-to-host copy per
  // call; the MoE layer builds the layout with make_contiguous_group_layout, and tests check it.
  if (group_of_row.scalar_type() != at::kInt || group_of_row.dim() != 1 || group_of_row.size(0) != a.rows() ||
      !group_of_row.is_contiguous())
    throw std::invalid_argument("fp8_grouped_gemm_cuda: group_of_row must be contiguous int32 [" +
                                std::to_string(a.rows()) + "], got " + shape_str(group_of_row));
  if (a.rows() % kFp8Block != 0)
    throw std::invalid_argument("fp8_grouped_gemm_cuda: M = " + std::to_string(a.rows()) +
                                " must be a multiple of 128 (each group padded to 128 rows)");
  return launch(a, b, group_of_row, kernel, "fp8_grouped_gemm_cuda");
}

at::Tensor fp8_k_grouped_gemm_cuda(const Fp8Tensor& a, const Fp8Tensor& b, const std::vector<int64_t>& k_rows,
                                   Fp8GemmKernel kernel) {
  const char* what = "fp8_k_grouped_gemm_cuda";
  validate(a, b, what, 2);
  if (b.block_rows != 1) throw std::invalid_argument(std::string(what) + ": B must carry 1x128 scales");
  check_k_groups(what, k_rows, a.cols());
  if (k_rows.size() > 65535) throw std::invalid_argument(std::string(what) + ": at most 65535 groups (grid z)");
  return launch(a, b, at::Tensor(), kernel, what, &k_rows);
}

}  // namespace shoestring::ops

// The expert layout's row kernels on CUDA (ops/moe_permute.h): the gather that permutes tokens into
// expert order, the gate-weighted sum that brings expert outputs back to their tokens, and its
// backward. They replace ATen's index_select / index_add, whose CUDA index_add sums a token's rows
// with atomics, in whatever order the blocks arrive: not reproducible from run to run. Here one
// block owns one output row and adds its sources in ascending order, so results are the same every
// run and bit-identical to the CPU row kernels (trainer/model/moe_rows.cpp): the same op-math type
// (float for bfloat16 and half), products and sums rounded separately (__fmul_rn / __fadd_rn,
// which nvcc never fuses into an FMA, as the CPU code is compiled with -ffp-contract=off), and the
// same rounding of the result (ties to even; NaN as c10 writes it).
#include <ATen/ATen.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "ops/fp8_cuda_common.cuh"
#include "ops/moe_permute.h"

namespace shoestring::ops {

namespace {

using cuda_detail::check_cuda;
using cuda_detail::current_stream;

// Element types as their bits, with loads to and stores from the op-math type.
struct F32 {
  using raw = float;
  using acc = float;
  __device__ static float load(float v) { return v; }
  __device__ static float store(float v) { return v; }
  __device__ static float mul(float a, float b) { return __fmul_rn(a, b); }
  __device__ static float add(float a, float b) { return __fadd_rn(a, b); }
};
struct F64 {
  using raw = double;
  using acc = double;
  __device__ static double load(double v) { return v; }
  __device__ static double store(double v) { return v; }
  __device__ static double mul(double a, double b) { return __dmul_rn(a, b); }
  __device__ static double add(double a, double b) { return __dadd_rn(a, b); }
};
struct BF16 : F32 {
  using raw = uint16_t;
  __device__ static float load(uint16_t v) { return __uint_as_float(uint32_t(v) << 16); }
  // Ties to even on the bits, NaN as 0x7FC0: c10::BFloat16's rounding, not cuda_bf16's (0x7FFF).
  __device__ static uint16_t store(float f) {
    const uint32_t u = __float_as_uint(f);
    return f != f ? uint16_t(0x7FC0) : uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
  }
};
struct F16 : F32 {
  using raw = uint16_t;
  __device__ static float load(uint16_t v) { return __half2float(__ushort_as_half(v)); }
  // Ties to even; NaN as c10's fp16_ieee_from_fp32_value writes it (sign kept, 0x7E00).
  __device__ static uint16_t store(float f) {
    if (f != f) return uint16_t((__float_as_uint(f) >> 16) & 0x8000u) | uint16_t(0x7E00);
    return __half_as_ushort(__float2half_rn(f));
  }
};

// V consecutive elements moved as one load/store when the row allows it (vec): 16 bytes.
template <typename E, int V>
struct alignas(sizeof(typename E::raw) * V) Pack {
  typename E::raw v[V];
};

constexpr int kThreads = 128;

// Threads per block for rows of `units` vectors: whole warps, at most kThreads.
unsigned threads_for(int64_t units) {
  const int64_t warps = (units + 31) / 32;
  return static_cast<unsigned>(warps >= kThreads / 32 ? kThreads : (warps < 1 ? 32 : warps * 32));
}

// out[r] = src[index[r]]: one block per output row, copying 16-byte units when every row starts
// 16-byte aligned, else 4- or 1-byte units.
template <typename U>
__global__ void gather_kernel(const U* __restrict__ src, const int64_t* __restrict__ index, U* __restrict__ out,
                              int64_t units) {
  const int64_t r = blockIdx.x;
  const U* from = src + index[r] * units;
  U* to = out + r * units;
  for (int64_t c = threadIdx.x; c < units; c += blockDim.x) to[c] = from[c];
}

// out[o] = sum over j in [ptr[o], ptr[o+1]) of w[members[j]] * src[members[j]] (w null: 1),
// ascending j, V elements per thread per step.
template <typename E, int V>
__global__ void sum_kernel(const typename E::raw* __restrict__ src, const typename E::raw* __restrict__ w,
                           const int64_t* __restrict__ ptr, const int64_t* __restrict__ members,
                           typename E::raw* __restrict__ out, int64_t d) {
  using P = Pack<E, V>;
  const int64_t o = blockIdx.x, first = ptr[o], last = ptr[o + 1];
  for (int64_t c = int64_t(threadIdx.x) * V; c < d; c += int64_t(blockDim.x) * V) {
    typename E::acc acc[V];
#pragma unroll
    for (int v = 0; v < V; ++v) acc[v] = 0;
    for (int64_t j = first; j < last; ++j) {
      const int64_t i = members[j];
      const P x = *reinterpret_cast<const P*>(src + i * d + c);
      if (w != nullptr) {
        const typename E::acc g = E::load(w[i]);
#pragma unroll
        for (int v = 0; v < V; ++v) acc[v] = E::add(acc[v], E::mul(g, E::load(x.v[v])));
      } else {
#pragma unroll
        for (int v = 0; v < V; ++v) acc[v] = E::add(acc[v], E::load(x.v[v]));
      }
    }
    P y;
#pragma unroll
    for (int v = 0; v < V; ++v) y.v[v] = E::store(acc[v]);
    *reinterpret_cast<P*>(out + o * d + c) = y;
  }
}

// grad_src[i] = w[i] * grad[row_of[i]] and grad_w[i] = <src[i], grad[row_of[i]]>: one block per
// source row; the dot product is reduced over the block in a fixed tree, so it is the same every
// run (but not the CPU's sequential order).
template <typename E, int V>
__global__ void sum_backward_kernel(const typename E::raw* __restrict__ grad, const typename E::raw* __restrict__ src,
                                    const typename E::raw* __restrict__ w, const int64_t* __restrict__ row_of,
                                    typename E::raw* __restrict__ grad_src, typename E::raw* __restrict__ grad_w,
                                    int64_t d) {
  using P = Pack<E, V>;
  using acc_t = typename E::acc;
  const int64_t i = blockIdx.x;
  const typename E::raw* g = grad + row_of[i] * d;
  const acc_t wi = E::load(w[i]);
  acc_t dot = 0;
  for (int64_t c = int64_t(threadIdx.x) * V; c < d; c += int64_t(blockDim.x) * V) {
    const P gv = *reinterpret_cast<const P*>(g + c);
    const P sv = *reinterpret_cast<const P*>(src + i * d + c);
    P y;
#pragma unroll
    for (int v = 0; v < V; ++v) {
      const acc_t gx = E::load(gv.v[v]);
      y.v[v] = E::store(E::mul(wi, gx));
      dot = E::add(dot, E::mul(E::load(sv.v[v]), gx));
    }
    *reinterpret_cast<P*>(grad_src + i * d + c) = y;
  }
  __shared__ acc_t partial[kThreads / 32];
  for (int off = 16; off > 0; off /= 2) dot = E::add(dot, __shfl_down_sync(0xffffffffu, dot, off));
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = dot;
  __syncthreads();
  if (threadIdx.x == 0) {
    acc_t total = 0;
    for (unsigned k = 0; k < blockDim.x / 32; ++k) total = E::add(total, partial[k]);
    grad_w[i] = E::store(total);
  }
}

void require_index(const at::Tensor& idx, const at::Tensor& src, const char* what, const char* name) {
  if (!idx.defined() || idx.device() != src.device() || idx.scalar_type() != at::kLong || idx.dim() != 1 ||
      !idx.is_contiguous())
    throw std::invalid_argument(std::string(what) + ": " + name + " must be a contiguous 1-D int64 tensor on " +
                                src.device().str());
}

void require_rows(const at::Tensor& t, const char* what, const char* name) {
  cuda_detail::require_cuda(t, what, name);
  if (t.dim() != 2) throw std::invalid_argument(std::string(what) + ": " + name + " must be 2-D");
}

bool aligned16(const at::Tensor& t) { return reinterpret_cast<std::uintptr_t>(t.data_ptr()) % 16 == 0; }

// Calls f(E{}, V) for src's dtype, with V = elements per 16 bytes when every row of every tensor
// starts 16-byte aligned, else 1.
template <typename F>
void dispatch(const at::Tensor& src, bool all_aligned, const char* what, F&& f) {
  const int64_t d = src.size(1), per16 = 16 / src.element_size();
  const bool vec = all_aligned && d % per16 == 0;
  switch (src.scalar_type()) {
    case at::kFloat: return vec ? f(F32{}, std::integral_constant<int, 4>{}) : f(F32{}, std::integral_constant<int, 1>{});
    case at::kDouble: return vec ? f(F64{}, std::integral_constant<int, 2>{}) : f(F64{}, std::integral_constant<int, 1>{});
    case at::kBFloat16: return vec ? f(BF16{}, std::integral_constant<int, 8>{}) : f(BF16{}, std::integral_constant<int, 1>{});
    case at::kHalf: return vec ? f(F16{}, std::integral_constant<int, 8>{}) : f(F16{}, std::integral_constant<int, 1>{});
    default:
      throw std::invalid_argument(std::string(what) + ": expected float, double, bfloat16 or half, got " +
                                  std::string(c10::toString(src.scalar_type())));
  }
}

template <typename E>
const typename E::raw* cptr(const at::Tensor& t) {
  return t.defined() ? reinterpret_cast<const typename E::raw*>(t.const_data_ptr()) : nullptr;
}
template <typename E>
typename E::raw* mptr(at::Tensor& t) {
  return reinterpret_cast<typename E::raw*>(t.data_ptr());
}

}  // namespace

at::Tensor gather_rows_cuda(const at::Tensor& src_in, const at::Tensor& index) {
  const char* what = "gather_rows_cuda";
  require_rows(src_in, what, "src");
  require_index(index, src_in, what, "index");
  const at::Tensor src = src_in.contiguous();
  at::Tensor out = at::empty({index.numel(), src.size(1)}, src.options());
  const int64_t row_bytes = src.size(1) * src.element_size();
  if (out.numel() == 0) return out;
  const auto rows = static_cast<unsigned>(index.numel());
  const auto launch = [&](auto unit) {
    using U = decltype(unit);
    const int64_t units = row_bytes / int64_t(sizeof(U));
    gather_kernel<U><<<rows, threads_for(units), 0, current_stream()>>>(
        static_cast<const U*>(src.const_data_ptr()), index.const_data_ptr<int64_t>(), static_cast<U*>(out.data_ptr()),
        units);
  };
  const bool al = aligned16(src) && aligned16(out);
  if (al && row_bytes % 16 == 0) launch(uint4{});
  else if (al && row_bytes % 4 == 0) launch(uint32_t{});
  else launch(uint8_t{});
  check_cuda(cudaGetLastError(), "gather_rows_cuda launch");
  return out;
}

at::Tensor sum_rows_cuda(const at::Tensor& src_in, const at::Tensor& w_in, const at::Tensor& ptr,
                         const at::Tensor& members) {
  const char* what = "sum_rows_cuda";
  require_rows(src_in, what, "src");
  require_index(ptr, src_in, what, "ptr");
  require_index(members, src_in, what, "members");
  const at::Tensor src = src_in.contiguous();
  const at::Tensor w = w_in.defined() ? w_in.to(src.scalar_type()).contiguous() : w_in;
  if (w.defined() && (w.device() != src.device() || w.numel() != src.size(0)))
    throw std::invalid_argument(std::string(what) + ": w must hold one weight per row of src, on its device");
  if (members.numel() != src.size(0) || ptr.numel() < 1)
    throw std::invalid_argument(std::string(what) + ": members must list every row of src once, ptr must be outputs+1");
  const int64_t outputs = ptr.numel() - 1, d = src.size(1);
  at::Tensor out = at::empty({outputs, d}, src.options());
  if (out.numel() == 0) return out;
  dispatch(src, aligned16(src) && aligned16(out), what, [&](auto e, auto vc) {
    using E = decltype(e);
    constexpr int V = decltype(vc)::value;
    sum_kernel<E, V><<<static_cast<unsigned>(outputs), threads_for(d / V), 0, current_stream()>>>(
        cptr<E>(src), cptr<E>(w), ptr.const_data_ptr<int64_t>(), members.const_data_ptr<int64_t>(), mptr<E>(out), d);
  });
  check_cuda(cudaGetLastError(), "sum_rows_cuda launch");
  return out;
}

std::pair<at::Tensor, at::Tensor> sum_rows_backward_cuda(const at::Tensor& grad_in, const at::Tensor& src_in,
                                                         const at::Tensor& w_in, const at::Tensor& row_of) {
  const char* what = "sum_rows_backward_cuda";
  require_rows(grad_in, what, "grad");
  require_rows(src_in, what, "src");
  require_index(row_of, src_in, what, "row_of");
  if (grad_in.scalar_type() != src_in.scalar_type() || grad_in.size(1) != src_in.size(1) ||
      row_of.numel() != src_in.size(0))
    throw std::invalid_argument(std::string(what) + ": grad and src must share dtype and width, row_of one per src row");
  const at::Tensor grad = grad_in.contiguous(), src = src_in.contiguous();
  const at::Tensor w = w_in.to(src.scalar_type()).contiguous();
  at::Tensor grad_src = at::empty_like(src), grad_w = at::empty({src.size(0)}, src.options());
  if (src.size(0) == 0) return {grad_src, grad_w};
  const int64_t d = src.size(1);
  dispatch(src, aligned16(src) && aligned16(grad) && aligned16(grad_src), what, [&](auto e, auto vc) {
    using E = decltype(e);
    constexpr int V = decltype(vc)::value;
    sum_backward_kernel<E, V><<<static_cast<unsigned>(src.size(0)), threads_for(d / V), 0, current_stream()>>>(
        cptr<E>(grad), cptr<E>(src), cptr<E>(w), row_of.const_data_ptr<int64_t>(), mptr<E>(grad_src), mptr<E>(grad_w),
        d);
  });
  check_cuda(cudaGetLastError(), "sum_rows_backward_cuda launch");
  return {grad_src, grad_w};
}

}  // namespace shoestring::ops

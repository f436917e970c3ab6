#include "trainer/model/moe_rows.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/custom_class.h>

#include "ops/moe_permute.h"

#include <bit>
#include <cstdint>
#include <cstring>

namespace shoestring {

namespace {

using parallel::BufferPool;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Holds what autograd contexts need beside tensors (saved_data takes IValues only).
struct PoolHolder : torch::CustomClassHolder {
  explicit PoolHolder(std::shared_ptr<BufferPool> p) : pool(std::move(p)) {}
  std::shared_ptr<BufferPool> pool;
};

c10::IValue hold(const std::shared_ptr<BufferPool>& pool) {
  return c10::IValue::make_capsule(c10::make_intrusive<PoolHolder>(pool));
}
std::shared_ptr<BufferPool> held(AutogradContext* ctx) {
  return c10::static_intrusive_pointer_cast<PoolHolder>(ctx->saved_data["pool"].toCapsule())->pool;
}

// The rows these kernels read are scattered (a token's experts lie in different slices), so the
// hardware prefetcher, which follows one row, does not find the next: ask for it while this one
// is processed (bench moe, 2 ranks, bfloat16: the single-process layout 16.4 -> 13.0 ms;
// docs/parallelism.md).
inline void prefetch_row(const void* row, size_t bytes) {
  const char* p = static_cast<const char*>(row);
  for (size_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off);
}

// out[i] = src[index[i]] (rows), into a pooled buffer.
at::Tensor copy_rows(const at::Tensor& src, const at::Tensor& index, BufferPool& pool) {
  const at::Tensor s = src.contiguous();
  const int64_t rows = index.numel(), d = s.size(1);
  if (!s.is_cpu()) return ops::gather_rows_cuda(s, index.to(s.device()));
  at::Tensor out = pool.get({rows, d}, s.options());
  const int64_t* idx = index.data_ptr<int64_t>();
  const size_t row_bytes = size_t(d) * s.element_size();
  const auto* from = static_cast<const char*>(s.const_data_ptr());
  auto* to = static_cast<char*>(out.data_ptr());
  at::parallel_for(0, rows, 256, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      if (i + 1 < e) prefetch_row(from + size_t(idx[i + 1]) * row_bytes, row_bytes);
      std::memcpy(to + size_t(i) * row_bytes, from + size_t(idx[i]) * row_bytes, row_bytes);
    }
  });
  return out;
}

// Element loads and stores in the op-math type. bfloat16 goes through its bits (the upper half of
// a float; stores round to nearest even, NaN kept quiet, as c10::BFloat16 does) so that the row
// loops below are plain integer and float arithmetic GCC vectorises; c10's conversions are calls
// it does not.
template <class T>
struct Elem {
  using acc = at::opmath_type<T>;
  using raw = T;
  static acc load(raw v) { return acc(v); }
  static raw store(acc v) { return raw(v); }
};
template <>
struct Elem<at::BFloat16> {
  using acc = float;
  using raw = uint16_t;
  static float load(uint16_t v) { return std::bit_cast<float>(uint32_t(v) << 16); }
  static uint16_t store(float f) {
    const uint32_t u = std::bit_cast<uint32_t>(f);
    const uint16_t rounded = uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
    return f != f ? uint16_t(0x7FC0) : rounded;
  }
};

// out[o] = sum over the source rows i of o (ascending) of w[i] * src[i] (w undefined: 1), summed
// in the op-math type (float for bfloat16). Outputs without sources are 0. Each element is summed
// in the same order whatever the vector width, so results do not depend on the CPU.
template <class T>
void add_rows_cpu(const at::Tensor& s, const at::Tensor& w, const RowMap& map, at::Tensor& out) {
  using E = Elem<T>;
  using acc_t = typename E::acc;
  using raw_t = typename E::raw;
  const int64_t outputs = map.outputs(), d = s.size(1);
  const int64_t *ptr = map.ptr.data_ptr<int64_t>(), *members = map.members.data_ptr<int64_t>();
  const auto* from = reinterpret_cast<const raw_t*>(s.const_data_ptr<T>());
  const auto* weights = w.defined() ? reinterpret_cast<const raw_t*>(w.const_data_ptr<T>()) : nullptr;
  auto* to = reinterpret_cast<raw_t*>(out.data_ptr<T>());
  at::parallel_for(0, outputs, 64, [&](int64_t b, int64_t e) {
    std::vector<acc_t> buf(static_cast<size_t>(d));
    acc_t* __restrict acc = buf.data();
    for (int64_t o = b; o < e; ++o) {
      for (int64_t c = 0; c < d; ++c) acc[c] = acc_t(0);
      for (int64_t j = ptr[o]; j < ptr[o + 1]; ++j) {
        const int64_t i = members[j];
        if (j + 1 < ptr[e]) prefetch_row(from + members[j + 1] * d, size_t(d) * sizeof(raw_t));
        const raw_t* __restrict row = from + i * d;
        if (weights) {
          const acc_t g = E::load(weights[i]);
          for (int64_t c = 0; c < d; ++c) acc[c] += g * E::load(row[c]);
        } else {
          for (int64_t c = 0; c < d; ++c) acc[c] += E::load(row[c]);
        }
      }
      raw_t* __restrict dst = to + o * d;
      for (int64_t c = 0; c < d; ++c) dst[c] = E::store(acc[c]);
    }
  });
}

at::Tensor add_rows(const at::Tensor& src, const at::Tensor& w, const RowMap& map, BufferPool& pool) {
  const at::Tensor s = src.contiguous();
  const int64_t outputs = map.outputs(), d = s.size(1);
  if (!s.is_cpu()) return ops::sum_rows_cuda(s, w, map.ptr.to(s.device()), map.members.to(s.device()));
  at::Tensor out = pool.get({outputs, d}, s.options());
  const at::Tensor wc = w.defined() ? w.contiguous() : w;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, s.scalar_type(), "sum_rows",
                                  [&] { add_rows_cpu<scalar_t>(s, wc, map, out); });
  return out;
}

// Backward of the weighted sum: grad_src[i] = w[i] * grad[row_of[i]], grad_w[i] = <src[i], grad[row_of[i]]>.
template <class T>
void add_rows_backward_cpu(const at::Tensor& g, const at::Tensor& s, const at::Tensor& w, const RowMap& map,
                           at::Tensor& grad_src, at::Tensor& grad_w) {
  using E = Elem<T>;
  using acc_t = typename E::acc;
  using raw_t = typename E::raw;
  const int64_t rows = s.size(0), d = s.size(1);
  const int64_t* row_of = map.row_of.data_ptr<int64_t>();
  const auto* gp = reinterpret_cast<const raw_t*>(g.const_data_ptr<T>());
  const auto* sp = reinterpret_cast<const raw_t*>(s.const_data_ptr<T>());
  const auto* wp = reinterpret_cast<const raw_t*>(w.const_data_ptr<T>());
  auto* gs = reinterpret_cast<raw_t*>(grad_src.data_ptr<T>());
  auto* gw = reinterpret_cast<raw_t*>(grad_w.data_ptr<T>());
  at::parallel_for(0, rows, 64, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      if (i + 1 < e) prefetch_row(gp + row_of[i + 1] * d, size_t(d) * sizeof(raw_t));
      const raw_t* __restrict gr = gp + row_of[i] * d;
      const raw_t* __restrict sr = sp + i * d;
      raw_t* __restrict out = gs + i * d;
      const acc_t wi = E::load(wp[i]);
      for (int64_t c = 0; c < d; ++c) out[c] = E::store(wi * E::load(gr[c]));
      // The dot product stays a sequential sum: vectorising it would reassociate it.
      acc_t dot = 0;
      for (int64_t c = 0; c < d; ++c) dot += E::load(sr[c]) * E::load(gr[c]);
      gw[i] = E::store(dot);
    }
  });
}

std::pair<at::Tensor, at::Tensor> add_rows_backward(const at::Tensor& grad, const at::Tensor& src, const at::Tensor& w,
                                                    const RowMap& map, BufferPool& pool) {
  const at::Tensor g = grad.contiguous(), s = src.contiguous(), wc = w.contiguous();
  if (!g.is_cpu()) return ops::sum_rows_backward_cuda(g, s, wc, map.row_of.to(g.device()));
  at::Tensor grad_src = pool.get({s.size(0), s.size(1)}, s.options());
  at::Tensor grad_w = at::empty({s.size(0)}, wc.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, s.scalar_type(), "add_rows_backward",
                                  [&] { add_rows_backward_cpu<scalar_t>(g, s, wc, map, grad_src, grad_w); });
  return {grad_src, grad_w};
}

void save_map(AutogradContext* ctx, const RowMap& map, const std::shared_ptr<BufferPool>& pool) {
  ctx->saved_data["row_of"] = map.row_of;
  ctx->saved_data["ptr"] = map.ptr;
  ctx->saved_data["members"] = map.members;
  ctx->saved_data["pool"] = hold(pool);
}
RowMap saved_map(AutogradContext* ctx) {
  return {ctx->saved_data["row_of"].toTensor(), ctx->saved_data["ptr"].toTensor(),
          ctx->saved_data["members"].toTensor()};
}

// rows = src[map.row_of] (one row per source row of the map); backward sums them back.
struct GatherRows : torch::autograd::Function<GatherRows> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& src, const RowMap& map,
                            const std::shared_ptr<BufferPool>& pool) {
    save_map(ctx, map, pool);
    return copy_rows(src, map.row_of, *pool);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const RowMap map = saved_map(ctx);
    return {add_rows(grads[0], at::Tensor(), map, *held(ctx)), at::Tensor(), at::Tensor()};
  }
};

// out[o] = sum of w[i] * src[i] over the source rows i of o; backward gathers.
struct WeightedSum : torch::autograd::Function<WeightedSum> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& src, const at::Tensor& w, const RowMap& map,
                            const std::shared_ptr<BufferPool>& pool) {
    save_map(ctx, map, pool);
    ctx->save_for_backward({src, w});
    return add_rows(src, w, map, *pool);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto [grad_src, grad_w] = add_rows_backward(grads[0], saved[0], saved[1], saved_map(ctx), *held(ctx));
    return {grad_src, grad_w, at::Tensor(), at::Tensor()};
  }
};

// out[o] = sum of src[i] over the source rows i of o; backward gathers.
struct SumRows : torch::autograd::Function<SumRows> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& src, const RowMap& map,
                            const std::shared_ptr<BufferPool>& pool) {
    save_map(ctx, map, pool);
    return add_rows(src, at::Tensor(), map, *pool);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const RowMap map = saved_map(ctx);
    return {copy_rows(grads[0], map.row_of, *held(ctx)), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor gather_rows(const at::Tensor& src, const RowMap& map, const std::shared_ptr<parallel::BufferPool>& pool) {
  return GatherRows::apply(src, map, pool);
}
at::Tensor weighted_sum_rows(const at::Tensor& src, const at::Tensor& w, const RowMap& map,
                             const std::shared_ptr<parallel::BufferPool>& pool) {
  return WeightedSum::apply(src, w, map, pool);
}
at::Tensor sum_rows(const at::Tensor& src, const RowMap& map, const std::shared_ptr<parallel::BufferPool>& pool) {
  return SumRows::apply(src, map, pool);
}

}  // namespace shoestring

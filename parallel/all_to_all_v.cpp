#include "parallel/all_to_all_v.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/custom_class.h>

#include <numeric>
#include <stdexcept>
#include <string>

namespace shoestring::parallel {

namespace {

at::Tensor receive_buffer(const at::Tensor& x, const std::vector<int64_t>& recv, BufferPool* pool) {
  std::vector<int64_t> shape = x.sizes().vec();
  shape[0] = std::accumulate(recv.begin(), recv.end(), int64_t(0));
  return pool ? pool->get(shape, x.options()) : at::empty(shape, x.options());
}

at::Tensor exchange(const at::Tensor& x, ProcessGroup& g, const std::vector<int64_t>& send,
                    const std::vector<int64_t>& recv, BufferPool* pool) {
  at::Tensor out = receive_buffer(x, recv, pool);
  g.all_to_all(out, x.contiguous(), recv, send)->wait();
  return out;
}

// Holds the group in the autograd context (saved_data takes IValues only).
struct GroupHolder : torch::CustomClassHolder {
  GroupHolder(GroupPtr g, std::shared_ptr<BufferPool> p) : group(std::move(g)), pool(std::move(p)) {}
  GroupPtr group;
  std::shared_ptr<BufferPool> pool;
};

// An exchange started from x: its receive buffer and Work. Not a tensor argument of the autograd
// function, so that autograd does not take `out` for one of its inputs.
struct Started {
  at::Tensor out;
  WorkPtr work;
  RowDecoder decode;  // empty: out is the result
};

struct AllToAllV : torch::autograd::Function<AllToAllV> {
  // Forward only waits for the exchange already started from x, so that it can run between
  // all_to_all_v_start and wait.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const GroupPtr& group,
                            const std::vector<int64_t>& send, const std::vector<int64_t>& recv,
                            const std::shared_ptr<BufferPool>& pool, const Started& started) {
    ctx->saved_data["group"] = c10::IValue::make_capsule(c10::make_intrusive<GroupHolder>(group, pool));
    ctx->saved_data["send"] = send;
    ctx->saved_data["recv"] = recv;
    ctx->saved_data["shape"] = x.sizes().vec();
    ctx->saved_data["dtype"] = x.scalar_type();
    ctx->saved_data["device"] = x.device();
    started.work->wait();
    return started.decode ? started.decode(started.out) : started.out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto holder = c10::static_intrusive_pointer_cast<GroupHolder>(ctx->saved_data["group"].toCapsule());
    const std::vector<int64_t> send = ctx->saved_data["send"].toIntVector();
    const std::vector<int64_t> recv = ctx->saved_data["recv"].toIntVector();
    at::Tensor g = grads[0];
    if (!g.defined()) {  // an unused output still takes part: the peers are exchanging too
      std::vector<int64_t> shape = ctx->saved_data["shape"].toIntVector();
      shape[0] = std::accumulate(recv.begin(), recv.end(), int64_t(0));  // our output's rows
      g = at::zeros(shape, at::TensorOptions()
                               .dtype(ctx->saved_data["dtype"].toScalarType())
                               .device(ctx->saved_data["device"].toDevice()));
    }
    return {exchange(g, *holder->group, recv, send, holder->pool.get()), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

}  // namespace

AllToAllVInFlight all_to_all_v_start(const at::Tensor& x, const GroupPtr& group,
                                     const std::vector<int64_t>& send_counts, const std::vector<int64_t>& recv_counts,
                                     const std::shared_ptr<BufferPool>& pool) {
  return all_to_all_v_start_encoded(x, x, RowDecoder(), group, send_counts, recv_counts, pool);
}

AllToAllVInFlight all_to_all_v_start_encoded(const at::Tensor& x, const at::Tensor& payload, RowDecoder decode,
                                             const GroupPtr& group, const std::vector<int64_t>& send_counts,
                                             const std::vector<int64_t>& recv_counts,
                                             const std::shared_ptr<BufferPool>& pool) {
  if (int(send_counts.size()) != group->size() || int(recv_counts.size()) != group->size())
    throw std::invalid_argument("all_to_all_v: counts must have one entry per member of group " + group->name());
  if (std::accumulate(send_counts.begin(), send_counts.end(), int64_t(0)) != x.size(0))
    throw std::invalid_argument("all_to_all_v: send counts do not add up to the rows of x");
  if (payload.size(0) != x.size(0))
    throw std::invalid_argument("all_to_all_v: the payload has " + std::to_string(payload.size(0)) +
                                " rows for the " + std::to_string(x.size(0)) + " rows of x");
  AllToAllVInFlight f;
  f.grad_ = at::GradMode::is_enabled();
  f.x_ = x;
  f.sent_ = payload.detach().contiguous();
  const at::Tensor& sent = f.sent_;
  {
    // Made as inside an autograd forward (grad mode off), since the autograd node returns it.
    at::NoGradGuard no_grad;
    f.out_ = receive_buffer(sent, recv_counts, pool.get());
  }
  f.group_ = group;
  f.send_ = send_counts;
  f.recv_ = recv_counts;
  f.pool_ = pool;
  f.decode_ = std::move(decode);
  f.work_ = group->all_to_all(f.out_, sent, recv_counts, send_counts);
  f.work_->start();  // travels while the caller computes (the MoE split forward's shared experts)
  return f;
}

at::Tensor AllToAllVInFlight::wait() {
  if (!work_) throw std::logic_error("AllToAllVInFlight::wait: no exchange in flight (waited twice?)");
  const at::AutoGradMode mode(grad_);
  const WorkPtr work = std::move(work_);
  at::Tensor out = AllToAllV::apply(x_, group_, send_, recv_, pool_, Started{out_, work, std::move(decode_)});
  x_ = out_ = sent_ = at::Tensor();
  decode_ = RowDecoder();
  return out;
}

bool AllToAllVInFlight::done() const { return !work_ || work_->done(); }

at::Tensor all_to_all_v(const at::Tensor& x, const GroupPtr& group, const std::vector<int64_t>& send_counts,
                        const std::vector<int64_t>& recv_counts, const std::shared_ptr<BufferPool>& pool) {
  return all_to_all_v_start(x, group, send_counts, recv_counts, pool).wait();
}

std::vector<int64_t> exchange_counts(ProcessGroup& group, const std::vector<int64_t>& send_counts,
                                     const at::Device& device) {
  const std::vector<int64_t> ones(size_t(group.size()), 1);
  const at::Tensor in = at::tensor(send_counts, at::kLong).to(device);
  const at::Tensor out = at::empty({group.size()}, in.options());
  group.all_to_all(out, in, ones, ones)->wait();
  const at::Tensor host = out.cpu();
  return {host.data_ptr<int64_t>(), host.data_ptr<int64_t>() + host.numel()};
}

}  // namespace shoestring::parallel

#include "parallel/local_group.h"

#include <ATen/ATen.h>

#include <deque>
#include <map>
#include <stdexcept>

#include "parallel/comm_thread.h"

namespace shoestring::parallel {

namespace {

class LocalWork final : public Work {
 public:
  LocalWork(std::string what, bool done) : what_(std::move(what)), at_(steady_seconds()), done_(done) {}
  void wait() override {
    if (!done_)
      throw std::logic_error(what_ + ": waits for a matching send/recv on the same group that was never issued");
  }
  bool done() override { return done_; }
  double issued_at() const override { return at_; }
  double started_at() const override { return at_; }
  void finish() { done_ = true; }

 private:
  std::string what_;
  double at_;
  bool done_;
};

class LocalGroup final : public ProcessGroup {
 public:
  explicit LocalGroup(std::string name) : ProcessGroup(std::move(name), 0, {0}) {}

  std::string backend() const override { return "local"; }

  WorkPtr all_reduce(const at::Tensor& t, ReduceOp) override {
    check("all_reduce", t);
    return done();
  }
  WorkPtr reduce_scatter(const at::Tensor& out, const at::Tensor& in, ReduceOp) override {
    check("reduce_scatter", out);
    check("reduce_scatter", in);
    same_size("reduce_scatter", out, in);
    if (out.data_ptr() != in.data_ptr()) out.view(-1).copy_(in.view(-1));
    return done();
  }
  WorkPtr all_gather(const at::Tensor& out, const at::Tensor& in) override {
    check("all_gather", out);
    check("all_gather", in);
    same_size("all_gather", out, in);
    if (out.data_ptr() != in.data_ptr()) out.view(-1).copy_(in.view(-1));
    return done();
  }
  WorkPtr broadcast(const at::Tensor& t, int root) override {
    check("broadcast", t);
    if (root != 0) fail("broadcast", "root " + std::to_string(root) + " is not a member (size 1)");
    return done();
  }
  WorkPtr all_to_all(const at::Tensor& out, const at::Tensor& in, const std::vector<int64_t>& recv_counts,
                     const std::vector<int64_t>& send_counts) override {
    check("all_to_all", out);
    check("all_to_all", in);
    if (recv_counts.size() != 1 || send_counts.size() != 1 || recv_counts[0] != send_counts[0] ||
        send_counts[0] != in.size(0) || recv_counts[0] != out.size(0))
      fail("all_to_all", "a group of one sends all of in's rows to itself: counts must be {in.size(0)}");
    same_size("all_to_all", out, in);
    if (out.data_ptr() != in.data_ptr()) out.copy_(in);
    return done();
  }
  WorkPtr send(const at::Tensor& t, int peer, int tag) override {
    check("send", t);
    if (peer != 0) fail("send", "peer " + std::to_string(peer) + " is not a member (size 1)");
    auto& recvs = recvs_[tag];
    if (!recvs.empty()) {
      auto [dst, work] = recvs.front();
      recvs.pop_front();
      same_size("send", dst, t);
      dst.copy_(t);
      work->finish();
      return done();
    }
    auto work = std::make_shared<LocalWork>("send on group " + name(), false);
    sends_[tag].emplace_back(t, work);
    return work;
  }
  WorkPtr recv(const at::Tensor& t, int peer, int tag) override {
    check("recv", t);
    if (peer != 0) fail("recv", "peer " + std::to_string(peer) + " is not a member (size 1)");
    auto& sends = sends_[tag];
    if (!sends.empty()) {
      auto [src, work] = sends.front();
      sends.pop_front();
      same_size("recv", t, src);
      t.copy_(src);
      work->finish();
      return done();
    }
    auto work = std::make_shared<LocalWork>("recv on group " + name(), false);
    recvs_[tag].emplace_back(t, work);
    return work;
  }
  WorkPtr barrier() override { return done(); }
  std::shared_ptr<ProcessGroup> split(int color, int, const std::string& name) override {
    if (color < 0) return nullptr;
    return std::make_shared<LocalGroup>(name);
  }

 private:
  static WorkPtr done() { return std::make_shared<LocalWork>("", true); }
  [[noreturn]] void fail(const char* op, const std::string& why) const {
    throw std::invalid_argument(std::string(op) + " on group " + name() + ": " + why);
  }
  void check(const char* op, const at::Tensor& t) const {
    if (!t.defined()) fail(op, "tensor is undefined");
    if (!t.is_contiguous()) fail(op, "tensor is not contiguous");
  }
  void same_size(const char* op, const at::Tensor& a, const at::Tensor& b) const {
    if (a.numel() != b.numel() || a.scalar_type() != b.scalar_type())
      fail(op, "out and in must have the same size and dtype in a group of one");
  }

  // Unmatched sends and receives to self, per tag, in call order.
  using Pending = std::deque<std::pair<at::Tensor, std::shared_ptr<LocalWork>>>;
  std::map<int, Pending> sends_, recvs_;
};

}  // namespace

GroupPtr make_local_group(const std::string& name) { return std::make_shared<LocalGroup>(name); }

}  // namespace shoestring::parallel

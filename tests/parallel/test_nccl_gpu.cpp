// The NCCL backend on one GPU (label gpu): a 1-rank communicator, bootstrapped by a stand-in
// 1-rank group, so this test needs neither MPI nor the local backend. Every collective is checked
// against a reference computed here; references are written for n ranks (member r contributes
// base + r) even though one GPU only ever runs n = 1. Also: stream ordering, non-blocking wait,
// tensor lifetime, split, and the timeout path (in a death-test child process). Also bench comm
// --backend nccl as one process (the local world group bootstraps it, still no MPI): ours and the
// raw NCCL calls both timed.
// Without a GPU everything skips with cuda_status()'s reason, except the check that
// make_nccl_group then throws that reason.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <regex>
#include <sstream>
#include <thread>

#include "ops/cuda_runtime.h"
#include "tests/gpu_skip.h"
#include "parallel/comm_bench.h"
#include "parallel/nccl_group.h"
#include "parallel/process_group.h"
#include "tests/parallel/split_backward_check.h"

#ifdef SHOESTRING_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

namespace {

using namespace shoestring;
using namespace shoestring::parallel;

// --- a 1-rank bootstrap: make_nccl_group only needs its broadcast, a no-op for one member ---

class DoneWork final : public Work {
 public:
  void wait() override {}
  bool done() override { return true; }
  double issued_at() const override { return 0; }
  double started_at() const override { return 0; }
};

class OneRank final : public ProcessGroup {
 public:
  OneRank(std::string name, int world_rank) : ProcessGroup(std::move(name), 0, {world_rank}) {}
  std::string backend() const override { return "local"; }
  WorkPtr all_reduce(const at::Tensor&, ReduceOp) override { return done(); }
  WorkPtr reduce_scatter(const at::Tensor&, const at::Tensor&, ReduceOp) override { return done(); }
  WorkPtr all_gather(const at::Tensor&, const at::Tensor&) override { return done(); }
  WorkPtr broadcast(const at::Tensor&, int) override { return done(); }
  WorkPtr all_to_all(const at::Tensor&, const at::Tensor&, const std::vector<int64_t>&,
                     const std::vector<int64_t>&) override {
    return done();
  }
  WorkPtr send(const at::Tensor&, int, int) override { return done(); }
  WorkPtr recv(const at::Tensor&, int, int) override { return done(); }
  WorkPtr barrier() override { return done(); }
  GroupPtr split(int, int, const std::string& name) override { return std::make_shared<OneRank>(name, world_ranks()[0]); }

 private:
  static WorkPtr done() { return std::make_shared<DoneWork>(); }
};

TEST(NcclNoGpu, MakeThrowsTheReason) {
  if (ops::cuda_status().available) GTEST_SKIP() << "a GPU is present: the NcclGpu tests cover it";
  OneRank boot("solo", 0);
  try {
    make_nccl_group(boot, 0, CommOptions{});
    FAIL() << "make_nccl_group succeeded without a GPU";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("make_nccl_group"), std::string::npos) << e.what();
  }
}

// dlopen + dlsym of every entry point works without a GPU, so this runs everywhere.
TEST(NcclLibrary, LoadsOrSaysWhy) {
  const std::string info = nccl_library_info();
  std::cout << info << "\n";
  const bool loaded = info.rfind("NCCL 2.", 0) == 0;
  const bool explained = info.find("tried:") != std::string::npos || info.find("built without") != std::string::npos ||
                         info.find("no symbol") != std::string::npos;
  EXPECT_TRUE(loaded || explained) << info;
}

// bench comm --backend nccl as one process (no MPI: the local world group bootstraps NCCL): every
// line holds our time and the raw NCCL call's, both measured.
TEST(NcclBenchComm, RawNcclBaselineOnEveryLine) {
  SHOESTRING_SKIP_WITHOUT_GPU();
  if (const std::string info = nccl_library_info(); info.find("built without") != std::string::npos) GTEST_SKIP() << info;
  CommBenchOptions o;
  o.backend = "nccl";
  o.min_bytes = 64 << 10;
  o.max_bytes = 256 << 10;  // two sizes, x4 apart
  o.iters = 3;
  o.warmup = 1;
  o.rounds = 2;
  std::ostringstream out;
  std::string error;
  ASSERT_EQ(run_comm_bench(World{}, o, out, error), 0) << error;
  const std::regex op_field("\"op\":\"([a-z_]+)\""), number_field("\"(time_us|raw_time_us|ratio)\":([-+0-9.eE]+)");
  std::istringstream lines(out.str());
  std::vector<std::string> ops;
  for (std::string line; std::getline(lines, line);) {
    SCOPED_TRACE(line);
    std::smatch op;
    ASSERT_TRUE(std::regex_search(line, op, op_field));
    ops.push_back(op[1]);
    EXPECT_EQ(line.find("null"), std::string::npos);
    EXPECT_NE(line.find("\"ranks\":1,"), std::string::npos);
    int found = 0;
    for (auto it = std::sregex_iterator(line.begin(), line.end(), number_field); it != std::sregex_iterator(); ++it, ++found) {
      const double v = std::stod((*it)[2]);
      EXPECT_TRUE(std::isfinite(v) && v > 0) << (*it)[1] << " = " << v;
    }
    EXPECT_EQ(found, 3);
  }
  const std::vector<std::string> expected = {"all_reduce", "all_reduce", "reduce_scatter", "reduce_scatter", "all_gather",
                                             "all_gather", "broadcast",  "broadcast",      "all_to_all",     "all_to_all"};
  EXPECT_EQ(ops, expected);
}

#ifdef SHOESTRING_WITH_CUDA

constexpr int kWorldRank = 5;  // the bootstrap's global rank: shows up in world_ranks and messages

class NcclGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    SHOESTRING_SKIP_WITHOUT_GPU();
    const std::string info = nccl_library_info();
    if (info.find("built without") != std::string::npos) GTEST_SKIP() << info;
    std::cout << info << "\n";
    g = make_nccl_group(boot, 0, CommOptions{});
    // The first op of a communicator sets up connections and loads kernels (slow, host side):
    // done here so the timing tests below measure only what they mean to.
    g->all_reduce(cuda(at::ones({1})))->wait();
    sync();
  }

  static at::Tensor cuda(const at::Tensor& t) { return t.to(at::Device(at::kCUDA, 0)); }
  // Member r's contribution: small integers, exact in every supported dtype (uint8 included).
  static at::Tensor pattern(int64_t n, at::ScalarType dt, int r) { return (at::arange(n, at::kLong) % 7 + r).to(dt); }
  static bool equal(const at::Tensor& gpu, const at::Tensor& ref) { return at::equal(gpu.cpu(), ref); }
  static void sync() { ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess); }

  OneRank boot{"solo", kWorldRank};
  GroupPtr g;
};

// Host callback: stalls the stream it is queued on without a kernel of our own.
void CUDART_CB sleep_ms(void* ms) { std::this_thread::sleep_for(std::chrono::milliseconds(reinterpret_cast<intptr_t>(ms))); }
void stall_current_stream(int ms) {
  ASSERT_EQ(cudaLaunchHostFunc(c10::cuda::getCurrentCUDAStream(0).stream(), sleep_ms,
                               reinterpret_cast<void*>(intptr_t(ms))),
            cudaSuccess);
}

// Not cuda(cpu tensor) after a stall: a pageable host-to-device copy synchronises the stream,
// so the host would sit out the stall before issuing the op under test.
const at::TensorOptions kOnGpu = at::TensorOptions().dtype(at::kFloat).device(at::kCUDA, 0);

const at::ScalarType kDtypes[] = {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf, at::kLong, at::kInt, at::kByte};

TEST_F(NcclGpu, GroupMetadata) {
  EXPECT_EQ(g->backend(), "nccl");
  EXPECT_EQ(g->name(), "solo");
  EXPECT_EQ(g->rank(), 0);
  EXPECT_EQ(g->size(), 1);
  EXPECT_EQ(g->world_ranks(), std::vector<int>{kWorldRank});
}

TEST_F(NcclGpu, AllReduceEveryDtypeAndOp) {
  const int n = g->size(), r = g->rank();
  for (at::ScalarType dt : kDtypes) {
    SCOPED_TRACE(c10::toString(dt));
    const at::Tensor base = pattern(37, at::kLong, 0);
    const struct {
      ReduceOp op;
      at::Tensor ref;
    } cases[] = {{ReduceOp::Sum, base * n + n * (n - 1) / 2}, {ReduceOp::Max, base + (n - 1)}, {ReduceOp::Min, base}};
    for (const auto& c : cases) {
      at::Tensor t = cuda(pattern(37, dt, r));
      g->all_reduce(t, c.op)->wait();
      EXPECT_TRUE(equal(t, c.ref.to(dt))) << "op " << int(c.op);
    }
  }
}

TEST_F(NcclGpu, ReduceScatterOutOfPlaceAndInPlace) {
  const int n = g->size(), r = g->rank();
  const int64_t k = 12;
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16, at::kInt}) {
    SCOPED_TRACE(c10::toString(dt));
    const at::Tensor ref = (pattern(n * k, at::kLong, 0).narrow(0, r * k, k) * n + n * (n - 1) / 2).to(dt);
    at::Tensor in = cuda(pattern(n * k, dt, r)), out = cuda(at::zeros({k}, dt));
    g->reduce_scatter(out, in)->wait();
    EXPECT_TRUE(equal(out, ref));
    at::Tensor buf = cuda(pattern(n * k, dt, r));
    g->reduce_scatter(buf.narrow(0, r * k, k), buf)->wait();  // NCCL's in-place form
    EXPECT_TRUE(equal(buf.narrow(0, r * k, k), ref));
  }
}

TEST_F(NcclGpu, AllGatherOutOfPlaceAndInPlace) {
  const int n = g->size(), r = g->rank();
  const int64_t k = 9;
  at::Tensor ref = at::empty({n * k}, at::kHalf);
  for (int m = 0; m < n; ++m) ref.narrow(0, m * k, k).copy_(pattern(k, at::kHalf, m));
  at::Tensor out = cuda(at::zeros({n * k}, at::kHalf));
  g->all_gather(out, cuda(pattern(k, at::kHalf, r)))->wait();
  EXPECT_TRUE(equal(out, ref));
  at::Tensor buf = cuda(at::zeros({n * k}, at::kHalf));
  buf.narrow(0, r * k, k).copy_(cuda(pattern(k, at::kHalf, r)));
  g->all_gather(buf, buf.narrow(0, r * k, k))->wait();
  EXPECT_TRUE(equal(buf, ref));
}

TEST_F(NcclGpu, Broadcast) {
  at::Tensor t = cuda(g->rank() == 0 ? pattern(33, at::kDouble, 0) : at::zeros({33}, at::kDouble));
  g->broadcast(t, 0)->wait();
  EXPECT_TRUE(equal(t, pattern(33, at::kDouble, 0)));
}

TEST_F(NcclGpu, AllToAllWithCounts) {
  // One member: every row goes to itself, through ncclGroupStart + ncclSend/ncclRecv to self.
  const at::Tensor in = at::arange(5 * 3, at::kFloat).view({5, 3});
  at::Tensor out = cuda(at::zeros({5, 3}));
  g->all_to_all(out, cuda(in), {5}, {5})->wait();
  EXPECT_TRUE(equal(out, in));
  at::Tensor none = cuda(at::zeros({0, 3}));
  g->all_to_all(none, cuda(at::zeros({0, 3})), {0}, {0})->wait();  // nothing to move
  sync();
}

TEST_F(NcclGpu, ZeroSizeTensorsAndBarrier) {
  at::Tensor e = cuda(at::zeros({0}, at::kInt));
  g->all_reduce(e)->wait();
  g->all_gather(e, e)->wait();
  g->broadcast(e, 0)->wait();
  WorkPtr b = g->barrier();
  b->wait();
  EXPECT_TRUE(b->done());  // barrier's wait blocks the host until it finished
}

TEST_F(NcclGpu, RejectsBadArgumentsNamingOpAndGroup) {
  auto expect_invalid = [](auto&& call, const std::string& op, const std::string& detail) {
    try {
      call();
      ADD_FAILURE() << op << ": no exception";
    } catch (const std::invalid_argument& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("nccl " + op + " on group solo"), std::string::npos) << msg;
      EXPECT_NE(msg.find(detail), std::string::npos) << msg;
    }
  };
  at::Tensor ok = cuda(at::zeros({4, 4}));
  expect_invalid([&] { g->all_reduce(at::zeros({4})); }, "all_reduce", "must be a CUDA tensor");
  expect_invalid([&] { g->all_reduce(ok.t()); }, "all_reduce", "contiguous");
  expect_invalid([&] { g->all_reduce(cuda(at::zeros({4}, at::kBool))); }, "all_reduce", "dtype");
  expect_invalid([&] { g->reduce_scatter(cuda(at::zeros({3})), ok); }, "reduce_scatter", "elements");
  expect_invalid([&] { g->all_gather(ok, cuda(at::zeros({4}, at::kInt))); }, "all_gather", "dtype");
  expect_invalid([&] { g->broadcast(ok, 1); }, "broadcast", "not a member");
  expect_invalid([&] { g->send(ok, 0); }, "send", "itself");
  expect_invalid([&] { g->recv(ok, 2); }, "recv", "not a member");
  expect_invalid([&] { g->all_to_all(ok, ok.clone(), {3}, {4}); }, "all_to_all", "recv_counts sum");
  expect_invalid([&] { g->all_to_all(ok, ok, {4}, {4}); }, "all_to_all", "overlap");
}

TEST_F(NcclGpu, CollectiveRunsAfterTheCallersQueuedWork) {
  // The fill is queued behind a 200 ms stall on the caller's stream; a comm stream that did not
  // wait for the caller would gather the zeros.
  at::Tensor in = cuda(at::zeros({1000})), out = cuda(at::zeros({1000}));
  sync();
  stall_current_stream(200);
  in.fill_(7);
  g->all_gather(out, in)->wait();
  EXPECT_TRUE(equal(out, at::full({1000}, 7.0f)));
}

TEST_F(NcclGpu, WaitOrdersTheCurrentStreamWithoutBlockingTheHost) {
  at::Tensor in = cuda(at::zeros({1000})), out = cuda(at::zeros({1000}));
  // Create the other stream and load the add kernel before the stall: with CUDA's lazy module
  // loading, a kernel's first launch during the stall waits for it (seen on an H100: the second
  // done() below then read true), which would test the loader, not wait().
  const c10::cuda::CUDAStream other = c10::cuda::getStreamFromPool(false, 0);
  {
    const c10::cuda::CUDAStreamGuard guard(other);
    out.add_(0);
  }
  in.fill_(0);
  sync();
  stall_current_stream(300);
  in.fill_(7);
  WorkPtr w = g->all_gather(out, in);
  EXPECT_FALSE(w->done());  // the op is behind the stall
  // Wait from another stream: its later work must see the gathered 7s, not the zeros.
  {
    const c10::cuda::CUDAStreamGuard guard(other);
    const auto t0 = std::chrono::steady_clock::now();
    w->wait();
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(waited, 0.1) << "wait() blocked the host";
    out.add_(1);
  }
  EXPECT_FALSE(w->done());
  sync();
  EXPECT_TRUE(w->done());
  EXPECT_TRUE(equal(out, at::full({1000}, 8.0f)));
}

TEST_F(NcclGpu, StartTimeIsWhenTheGpuReachedTheOp) {
  at::Tensor t = cuda(at::ones({16}));
  sync();
  stall_current_stream(250);
  WorkPtr w = g->all_reduce(t);
  EXPECT_GT(w->issued_at(), 0);
  sync();
  ASSERT_TRUE(w->done());
  EXPECT_GT(w->started_at(), w->issued_at() + 0.2);  // the stall delayed the start
  EXPECT_LT(w->started_at(), w->issued_at() + 5);
}

TEST_F(NcclGpu, SplitBackwardOfAnAllToAllVWaitsOnTheDeviceQueue) {
  shoestring::testing::expect_split_backward_order(g, kOnGpu);
}

TEST_F(NcclGpu, ExchangeWaitsRunTheWaitFillerWhileTheGradientsTravel) {
  shoestring::testing::expect_filled_waits(g, kOnGpu);
}

TEST_F(NcclGpu, TensorsLiveUntilTheOpFinished) {
  sync();
  stall_current_stream(200);
  const void* first = nullptr;
  WorkPtr w;
  {
    at::Tensor tmp = at::ones({1 << 20}, kOnGpu);  // a fill kernel: queued, the host goes on
    first = tmp.data_ptr();
    w = g->all_reduce(tmp);
  }  // dropped by the caller while the op is still queued
  at::Tensor next = at::empty({1 << 20}, kOnGpu);
  EXPECT_NE(next.data_ptr(), first) << "the allocator reused memory NCCL had not finished with";
  sync();
}

TEST_F(NcclGpu, SplitWithNcclCommSplitAndWithUniqueIds) {
  for (bool by_id : {false, true}) {
    SCOPED_TRACE(by_id ? "unique id" : "ncclCommSplit");
    nccl_testing::force_split_by_unique_id(by_id);
    GroupPtr sub = g->split(3, 0, "sub");
    nccl_testing::force_split_by_unique_id(false);
    EXPECT_EQ(sub->backend(), "nccl");
    EXPECT_EQ(sub->name(), "sub");
    EXPECT_EQ(sub->size(), 1);
    EXPECT_EQ(sub->world_ranks(), std::vector<int>{kWorldRank});
    at::Tensor t = cuda(pattern(10, at::kFloat, 0));
    sub->all_reduce(t)->wait();
    EXPECT_TRUE(equal(t, pattern(10, at::kFloat, 0)));
    // A negative color takes part in the split (it is collective) and joins no group, as under
    // MPI: the pipeline's shared-gradient sub-groups pass -1 on the ranks outside them.
    nccl_testing::force_split_by_unique_id(by_id);
    GroupPtr none = g->split(-1, 0, "none");
    nccl_testing::force_split_by_unique_id(false);
    EXPECT_EQ(none, nullptr);
  }
}

TEST_F(NcclGpu, FinishedOpsDoNotTripAShortTimeout) {
  GroupPtr quick = make_nccl_group(boot, 0, CommOptions{1.0});
  for (int i = 0; i < 20; ++i) quick->all_reduce(cuda(at::ones({64})))->wait();
  sync();
  std::this_thread::sleep_for(std::chrono::milliseconds(1300));  // the watchdog would have fired by now
  SUCCEED();
}

TEST_F(NcclGpu, TimeoutEndsTheProcessWithOneClearLine) {
  // A fresh child process (threadsafe style re-executes the binary): CUDA does not survive fork.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        GroupPtr slow = make_nccl_group(boot, 0, CommOptions{0.2});
        at::Tensor t = cuda(at::ones({8}));
        stall_current_stream(5000);  // the op cannot start for 5 s
        slow->all_reduce(t);
        std::this_thread::sleep_for(std::chrono::seconds(20));
      },
      ::testing::ExitedWithCode(kTimeoutExitCode),
      "\\[rank 5\\] comm timeout: all_reduce #1 on group solo \\(world ranks 5\\) did not finish in 0\\.2 s \\(nccl\\)");
}

#else  // !SHOESTRING_WITH_CUDA

TEST(NcclGpu, AllSkipped) { GTEST_SKIP() << ops::cuda_status().reason; }

#endif

}  // namespace

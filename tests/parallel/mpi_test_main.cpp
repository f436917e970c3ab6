// main() of the MPI tests: every rank runs every test. Rank 0 prints the usual GoogleTest output;
// the other ranks print only their failures, prefixed with their rank. Each rank exits non-zero
// when any rank failed, so mpirun's exit code reflects them all.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdio>

#include "parallel/world.h"
#include "tests/parallel/mpi_test_env.h"

namespace shoestring::testing {

namespace {

parallel::GroupPtr g_world;
parallel::World g_mpi_world;

class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?", r.line_number(),
                 r.summary());
  }

 private:
  int rank_;
};

}  // namespace

parallel::GroupPtr test_world() { return g_world; }
const parallel::World& test_mpi_world() { return g_mpi_world; }

}  // namespace shoestring::testing

int main(int argc, char** argv) {
  using namespace shoestring;
  ::testing::InitGoogleTest(&argc, argv);
  const parallel::World world = shoestring::testing::g_mpi_world = parallel::init_world(&argc, &argv);
  shoestring::testing::g_world = parallel::make_world_group(world, parallel::CommOptions{.timeout_s = 60});
  if (world.rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new shoestring::testing::FailurePrinter(world.rank));
  }
  int failed = RUN_ALL_TESTS() != 0;
  at::Tensor verdict = at::full({1}, failed, at::kInt);
  shoestring::testing::g_world->all_reduce(verdict, parallel::ReduceOp::Max)->wait();
  failed = verdict.item<int>();
  shoestring::testing::g_world.reset();
  parallel::finalize_world(world);
  return failed;
}

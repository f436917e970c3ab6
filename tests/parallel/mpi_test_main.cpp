// main() of the MPI tests: every rank runs every test. Rank 0 prints the usual GoogleTest output;
// the other ranks print only their failures, prefixed with their rank. Each rank exits non-zero
// when any rank failed, so mpirun's exit code reflects them all.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <unistd.h>

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

std::filesystem::path shared_temp_dir(const std::string& prefix) {
  const std::string mine = (std::filesystem::temp_directory_path() / (prefix + "_" + std::to_string(::getpid()))).string();
  at::Tensor len = at::full({1}, int64_t(mine.size()), at::kLong);
  g_world->broadcast(len, 0)->wait();
  at::Tensor bytes = at::zeros({len.item<int64_t>()}, at::kByte);
  std::copy(mine.begin(), mine.end(), bytes.data_ptr<uint8_t>());
  g_world->broadcast(bytes, 0)->wait();
  const std::filesystem::path d(
      std::string(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), size_t(bytes.numel())));
  if (g_mpi_world.rank == 0) std::filesystem::remove_all(d);
  g_world->barrier()->wait();
  return d;
}

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

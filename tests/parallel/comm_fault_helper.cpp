// Misbehaving ranks for test_comm_faults (run under mpirun with 3 ranks, timeout 2 s):
//   hang     -- rank 1 sleeps instead of joining the second all_reduce
//   hang:OP  -- the same with OP (all_reduce, all_gather or broadcast) as the collective it skips
//               (run with SHOESTRING_MPI_RING_MIN_BYTES=1: a stuck point-to-point collective)
//   exit     -- rank 1 exits (no MPI_Finalize) while the others wait in an all_reduce
//   mismatch -- rank 1 all-reduces on another group while the others all-reduce on the world
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "parallel/process_group.h"

int main(int argc, char** argv) {
  using namespace shoestring::parallel;
  const std::string mode = argc > 1 ? argv[1] : "";
  const World world = init_world(&argc, &argv);
  const double timeout = mode == "exit" ? 60 : 2;
  GroupPtr g = make_world_group(world, CommOptions{.timeout_s = timeout});
  GroupPtr other = g->split(0, g->rank(), "other");
  at::Tensor t = at::ones({1000});
  g->all_reduce(t)->wait();  // collective #2 on the world (the split was #1): everyone
  const std::string op = mode.rfind("hang:", 0) == 0 ? mode.substr(5) : "all_reduce";
  if (g->rank() == 1) {
    if (mode.rfind("hang", 0) == 0) std::this_thread::sleep_for(std::chrono::hours(1));
    if (mode == "exit") std::_Exit(7);
    if (mode == "mismatch") other->all_reduce(t)->wait();
  }
  // #3
  if (op == "all_gather") g->all_gather(at::zeros({1000 * g->size()}), t)->wait();
  else if (op == "broadcast") g->broadcast(t, 1)->wait();  // from the hung rank: 0 and 2 wait on it
  else g->all_reduce(t)->wait();
  std::printf("rank %d: finished\n", g->rank());
  g.reset();
  other.reset();
  finalize_world(world);
  return 0;
}

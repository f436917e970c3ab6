#include "trainer/distributed.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "trainer/config_loader.h"

namespace shoestring {

parallel::MeshShape mesh_shape(const Config& cfg, int world_size) {
  const auto& p = cfg.parallel;
  parallel::MeshShape s;
  s.pp = int(p.pp);
  s.ep = int(p.ep);
  if (p.dp > 0) {
    s.dp = int(p.dp);
  } else if (world_size % s.pp != 0) {
    throw ConfigError("parallel.pp=" + std::to_string(p.pp) + " must divide the " + std::to_string(world_size) +
                      " ranks started (parallel.dp = ranks / pp)");
  } else {
    s.dp = world_size / s.pp;
  }
  if (s.world_size() != world_size)
    throw ConfigError("parallel.dp=" + std::to_string(s.dp) + " x parallel.pp=" + std::to_string(s.pp) + " needs " +
                      std::to_string(s.world_size()) + " ranks, mpirun started " + std::to_string(world_size));
  if (const std::string bad = parallel::check_mesh(s, world_size); !bad.empty())
    throw ConfigError("parallel: " + bad);
  return s;
}

int64_t accumulation_steps(const TrainConfig& t, int dp) {
  if (t.global_batch == 0) return t.grad_accum;
  const int64_t per_step = t.micro_batch_size * dp;
  if (t.global_batch % per_step != 0)
    throw ConfigError("train.global_batch=" + std::to_string(t.global_batch) + " must be a multiple of " +
                      "train.micro_batch_size x data-parallel ranks = " + std::to_string(per_step));
  return t.global_batch / per_step;
}

int64_t accumulation_steps(const Config& c, int dp) {
  const int64_t m = c.parallel.microbatches;
  if (m == 0) return accumulation_steps(c.train, dp);
  if (c.train.grad_accum != 1)
    throw ConfigError("parallel.microbatches=" + std::to_string(m) + " and train.grad_accum=" +
                      std::to_string(c.train.grad_accum) + " both set the accumulation steps; set one");
  if (c.train.global_batch > 0 && accumulation_steps(c.train, dp) != m)
    throw ConfigError("parallel.microbatches=" + std::to_string(m) + " disagrees with train.global_batch=" +
                      std::to_string(c.train.global_batch) + " (= " + std::to_string(accumulation_steps(c.train, dp)) +
                      " micro-batches of " + std::to_string(c.train.micro_batch_size) + " x dp " + std::to_string(dp) +
                      "); set one of them");
  return m;
}

std::string broadcast_string(parallel::ProcessGroup& g, const std::string& s, int root) {
  if (g.size() == 1) return s;
  at::Tensor len = at::full({1}, int64_t(s.size()), at::kLong);
  g.broadcast(len, root)->wait();
  at::Tensor bytes = at::zeros({len.item<int64_t>()}, at::kByte);
  if (g.rank() == root) std::copy(s.begin(), s.end(), bytes.data_ptr<uint8_t>());
  g.broadcast(bytes, root)->wait();
  return std::string(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), size_t(bytes.numel()));
}

std::vector<std::string> all_gather_strings(parallel::ProcessGroup& g, const std::string& s) {
  const int n = g.size();
  at::Tensor len = at::zeros({n}, at::kLong);
  len[g.rank()] = int64_t(s.size());
  g.all_reduce(len)->wait();
  const int64_t longest = std::max<int64_t>(1, len.max().item<int64_t>());
  at::Tensor mine = at::zeros({longest}, at::kByte);
  std::memcpy(mine.data_ptr<uint8_t>(), s.data(), s.size());
  at::Tensor all = at::empty({n * longest}, at::kByte);
  g.all_gather(all, mine)->wait();
  std::vector<std::string> out;
  for (int r = 0; r < n; ++r)
    out.emplace_back(reinterpret_cast<const char*>(all.data_ptr<uint8_t>()) + r * longest, size_t(len[r].item<int64_t>()));
  return out;
}

void all_reduce_sum(parallel::ProcessGroup& g, std::vector<double>& values) {
  if (g.size() == 1 || values.empty()) return;
  at::Tensor t = at::tensor(values, at::kDouble);
  g.all_reduce(t)->wait();
  std::copy(t.data_ptr<double>(), t.data_ptr<double>() + t.numel(), values.begin());
}

bool maybe_inject_fault(int rank, int64_t step) {
  const char* spec = std::getenv("SHOESTRING_FAULT");
  if (spec == nullptr) return false;
  long r = -1, s = -1;
  char mode[16] = {};
  if (std::sscanf(spec, "rank=%ld,step=%ld,mode=%15s", &r, &s, mode) != 3 || r != rank) return false;
  // mode=nan:K poisons K consecutive steps from S (the train.nonfinite_max tests need a run of them).
  long k = 1;
  if (std::sscanf(mode, "nan:%ld", &k) == 1) mode[3] = '\0';
  if (step < s || step >= s + (std::string(mode) == "nan" ? k : 1)) return false;
  std::fprintf(stderr, "[rank %d] SHOESTRING_FAULT: injecting '%s' in step %lld\n", rank, mode, static_cast<long long>(step));
  std::fflush(stderr);
  if (std::string(mode) == "sigterm") {  // as a scheduler's preemption notice would
    std::raise(SIGTERM);
    return false;
  }
  if (std::string(mode) == "nan") return true;
  if (std::string(mode) == "hang")
    for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
  _exit(17);
}

}  // namespace shoestring

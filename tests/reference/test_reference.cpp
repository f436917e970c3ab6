// The C++ model against the PyTorch reference (tests/reference/model_ref.py), written separately
// from the papers: same weights, same batch, fp32; the losses and every parameter's gradient must
// agree to 1e-5 relative to the tensor's scale, and every MoE layer must route exactly the same
// tokens to each expert.
//
// The test writes each case's resolved config, every parameter and buffer and a batch in the plain
// format of tests/reference/tensor_io.py, runs tests/reference/run_reference.py on them (one Python
// process for all cases, with the environment file that launch/setup writes beside the torch it
// unpacks, so Python's torch is the same build as our LibTorch), and reads the results back. Without
// a Python that can import torch it skips, saying why.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "tests/reference/tensor_exchange.h"
#include "trainer/config_loader.h"
#include "trainer/model/transformer.h"

using namespace shoestring;
using namespace shoestring::testing;
namespace fs = std::filesystem;

namespace {

// Tolerances, in one place. The measure is max|ours - ref| / max|ref| per tensor (relative to the
// tensor's scale, so that tiny entries of a gradient are not held to a relative bound that fp32
// cannot meet). Both sides compute in fp32 with different operation orders (fused SDPA against
// an explicit softmax, the expert-sorted layout against dense masked experts, complex against
// real rotary); run_reference.py measures the fp32 reference against its own fp64 run at about
// 1e-6 (stat.fp32_vs_fp64, printed below), so 1e-5 is ten times the rounding noise of fp32 and
// far below any modelling error (a wrong scale, mask, gate or missing term moves results by
// 1e-3 or more).
constexpr double kLossTol = 1e-5;
constexpr double kGradTol = 1e-5;
// Router biases: random, about the size of the spread of the affinities (~0.05 at init), so the
// bias changes which experts are selected.
constexpr double kBiasStd = 0.02;

struct Case {
  std::string name;
  std::string config;  // relative to the source tree
  std::vector<std::string> sets;
};

// The shipped tiny configs, plus variants that reach the options they leave off: query
// compression, a group limit that actually excludes a group, MTP depth 2, route_scale, a balance
// weight large enough that its gradient is visible at 1e-5, tied embeddings, one kv head.
const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      {"tiny_moe", "configs/tiny-moe.yaml", {"train.mtp_lambda=0.3", "train.balance_alpha=1e-4"}},
      {"tiny_moe_variant",
       "configs/tiny-moe.yaml",
       {"model.q_lora_rank=24", "model.n_limited_groups=1", "model.mtp_depth=2", "model.route_scale=2.5",
        "model.n_shared_experts=2", "train.mtp_lambda=0.3", "train.balance_alpha=0.01"}},
      {"tiny", "configs/tiny.yaml", {}},
      {"tiny_tied", "configs/tiny.yaml", {"model.tie_embeddings=true", "model.n_kv_heads=1"}},
  };
  return all;
}

double rel_err(const at::Tensor& ours, const at::Tensor& ref) {
  const at::Tensor a = ours.to(at::kDouble), b = ref.to(at::kDouble);
  const double scale = b.numel() ? b.abs().max().item<double>() : 0.0;
  const double diff = b.numel() ? (a - b).abs().max().item<double>() : 0.0;
  return scale > 0 ? diff / scale : diff;
}

std::string as_list(const at::Tensor& t) {
  std::string out;
  const at::Tensor c = t.to(at::kLong).contiguous();
  for (int64_t v : std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()))
    out += (out.empty() ? "[" : ", ") + std::to_string(v);
  return out + "]";
}

fs::path exchange_dir() { return fs::temp_directory_path() / ("shoestring-reference-" + std::to_string(::getpid())); }

struct CaseResult {
  at::Tensor tokens, targets;
  model::LossBreakdown ours;
  std::map<std::string, at::Tensor> grads;  // by parameter name; zeros where unused
};

// Shared by all tests: every case is written, one Python process computes them all.
struct Suite {
  std::string skip, error, python_log;
  fs::path dir;
  std::map<std::string, CaseResult> results;
};

void write_case(const Case& c, const fs::path& dir, CaseResult& r) {
  std::vector<std::string> sets = c.sets;
  sets.push_back("train.threads=1");
  const Config cfg = load_config({SHOESTRING_SOURCE_DIR "/" + c.config}, sets);
  at::manual_seed(uint64_t(cfg.train.seed));
  model::Transformer net(cfg.model, at::kFloat);
  {
    at::NoGradGuard no_grad;
    for (auto& router : net->routers()) router->bias.copy_(at::randn(router->bias.sizes()) * kBiasStd);
  }
  const at::Tensor seqs = at::randint(cfg.model.vocab_size, {cfg.train.micro_batch_size, cfg.train.seq_len + 1},
                                      at::TensorOptions().dtype(at::kLong));
  r.tokens = seqs.narrow(1, 0, cfg.train.seq_len).contiguous();
  r.targets = seqs.narrow(1, 1, cfg.train.seq_len).contiguous();

  fs::create_directories(dir);
  std::ofstream(dir / "config.yaml") << to_yaml(cfg);
  {
    TensorWriter w(dir);
    for (const auto& p : net->named_parameters()) w.add("param." + p.key(), p.value());
    for (const auto& b : net->named_buffers()) w.add("buffer." + b.key(), b.value());
    w.add("input.tokens", r.tokens);
    w.add("input.targets", r.targets);
  }

  r.ours = net->losses(r.tokens, r.targets, {cfg.train.mtp_lambda, cfg.train.balance_alpha});
  r.ours.total.backward();
  for (const auto& p : net->named_parameters())
    r.grads[p.key()] = p.value().grad().defined() ? p.value().grad().clone() : at::zeros_like(p.value());
}

Suite run_suite() {
  Suite s;
  at::set_num_threads(1);
  s.dir = exchange_dir();
  fs::remove_all(s.dir);
  try {
    for (const auto& c : cases()) write_case(c, s.dir / c.name, s.results[c.name]);
  } catch (const std::exception& e) {
    s.error = std::string("writing the cases: ") + e.what();
    return s;
  }

  PythonRun py;
  try {
    py = run_python("run_reference.py", shell_quoted(s.dir.string()));
  } catch (const std::exception& e) {
    s.error = e.what();
    return s;
  }
  const std::string& env = py.env;
  const int rc = py.rc;
  s.python_log = py.log;
  const std::string last = line_starting(s.python_log, "python3 cannot import torch");
  // No torch is a reason to skip only where setup did not promise one: with its environment file
  // present, a Python that cannot import torch is a broken setup and fails the test.
  if ((rc == 3 || rc == 127) && env.empty()) {
    const std::string why = python_setup_reason();
    s.skip = (rc == 127 ? "no python3 on PATH" : last) + "; " +
             (why.empty() ? "launch/setup provides torch, or set SHOESTRING_PYTHON_ENV to a file that does" : why);
  }
  else if (rc != 0)
    s.error = "run_reference.py failed (exit " + std::to_string(rc) + ", env " + (env.empty() ? "none" : env) +
              "):\n" + s.python_log;
  return s;
}

const Suite& suite() {
  static const Suite s = run_suite();
  return s;
}

void check_case(const std::string& name) {
  const Suite& s = suite();
  if (!s.skip.empty()) GTEST_SKIP() << s.skip;
  ASSERT_TRUE(s.error.empty()) << s.error;
  const CaseResult& r = s.results.at(name);
  const auto ref = read_tensor_folder(s.dir / name / "out");
  std::cout << "  reference: " << line_starting(s.python_log, name + ":") << "\n";

  // Routing first: a different expert choice would explain every later difference.
  size_t layers = 0;
  for (; ref.count("load." + std::to_string(layers)); ++layers) {
    ASSERT_LT(layers, r.ours.moe.size());
    EXPECT_TRUE(at::equal(r.ours.moe[layers].load, ref.at("load." + std::to_string(layers))))
        << "MoE layer " << layers << " routes differently: tokens per expert, ours "
        << as_list(r.ours.moe[layers].load) << ", reference " << as_list(ref.at("load." + std::to_string(layers)))
        << " (smallest selection margin "
        << ref.at("stat.min_route_margin").item<double>() << ")";
  }
  EXPECT_EQ(layers, r.ours.moe.size());

  const std::vector<std::pair<std::string, at::Tensor>> losses = {
      {"total", r.ours.total}, {"main", r.ours.main}, {"mtp", r.ours.mtp}, {"balance", r.ours.balance}};
  for (const auto& [part, ours] : losses) {
    ASSERT_EQ(ours.defined(), ref.count("loss." + part) == 1) << "loss." << part << " exists on one side only";
    if (!ours.defined()) continue;
    const double ref_value = ref.at("loss." + part).item<double>();
    EXPECT_LE(std::abs(ours.item<double>() - ref_value), kLossTol * std::abs(ref_value))
        << "loss." << part << ": ours " << ours.item<double>() << " reference " << ref_value;
  }

  double worst = 0;
  std::string worst_name;
  for (const auto& [param, grad] : r.grads) {
    ASSERT_TRUE(ref.count("grad." + param)) << "no reference gradient for " << param;
    const at::Tensor& g = ref.at("grad." + param);
    ASSERT_EQ(grad.sizes(), g.sizes()) << param;
    const double e = rel_err(grad, g);
    EXPECT_LE(e, kGradTol) << "gradient of " << param << ": max |ours - ref| / max |ref| = " << e;
    if (e >= worst) worst = e, worst_name = param;
  }
  std::cout << "  " << name << ": " << r.grads.size() << " gradients, worst relative error " << worst << " ("
            << worst_name << "); tolerance " << kGradTol << "\n";
}

// The exchange folder is removed after a passing run and kept for a look after a failing one.
class KeepOnFailure : public ::testing::Environment {
  void TearDown() override {
    const fs::path dir = exchange_dir();
    if (!fs::exists(dir)) return;
    if (::testing::UnitTest::GetInstance()->Passed()) fs::remove_all(dir);
    else std::cout << "kept the exchanged tensors in " << dir.string() << "\n";
  }
};
[[maybe_unused]] ::testing::Environment* const keep_on_failure = ::testing::AddGlobalTestEnvironment(new KeepOnFailure);

}  // namespace

TEST(PyTorchReference, TinyMoe) { check_case("tiny_moe"); }
TEST(PyTorchReference, TinyMoeQueryLoraGroupLimitMtp2) { check_case("tiny_moe_variant"); }
TEST(PyTorchReference, TinyDense) { check_case("tiny"); }
TEST(PyTorchReference, TinyDenseTiedOneKvHead) { check_case("tiny_tied"); }

#include "trainer/checkpoint/resume.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>

namespace fs = std::filesystem;

namespace shoestring::ckpt {

namespace {

std::string shape_text(const std::vector<int64_t>& s) {
  std::string t = "[";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

std::string first_problem(const std::vector<std::string>& problems) {
  std::string s = problems.front();
  if (problems.size() > 1) s += " (and " + std::to_string(problems.size() - 1) + " more problems)";
  return s;
}

}  // namespace

std::string choose_checkpoint(const std::string& spec, const std::string& root, std::vector<std::string>& warnings,
                              const Verifier& verifier, int64_t max_step) {
  const Verifier check = verifier ? verifier : Verifier([](const std::string& dir) { return verify(dir); });
  if (spec != "auto") {
    if (!fs::is_directory(spec)) throw CheckpointError(spec + ": no such checkpoint directory");
    const auto problems = check(spec);
    if (!problems.empty()) throw CheckpointError(first_problem(problems));
    return spec;
  }
  auto found = step_dirs(root);
  if (max_step >= 0)
    found.erase(std::remove_if(found.begin(), found.end(), [&](const auto& f) { return f.first > max_step; }),
                found.end());
  for (const auto& [step, dir] : found) {
    const auto problems = check(dir.string());
    if (problems.empty()) return dir.string();
    warnings.push_back("warning: checkpoint " + dir.string() + " is unusable: " + first_problem(problems) +
                       "; falling back to the previous one");
  }
  if (!found.empty())
    throw CheckpointError(root + ": none of its " + std::to_string(found.size()) + " checkpoints is valid");
  return "";
}

CheckpointReader::CheckpointReader(const std::string& dir) : dir_(dir), manifest_(read_manifest(dir)), files_(dir) {}

void CheckpointReader::read(const std::string& name, const std::vector<int64_t>& shape, int64_t offset, at::Tensor out) {
  const TensorEntry* t = manifest_.find(name);
  if (!t) throw CheckpointError(dir_ + ": holds no tensor " + name + " (saved from another model?)");
  if (t->shape != shape)
    throw CheckpointError(dir_ + ": tensor " + name + " has shape " + shape_text(t->shape) + ", this model needs " +
                          shape_text(shape));
  const int64_t n = out.numel(), end = offset + n;
  at::Tensor host = at::empty({n}, out.options().device(at::kCPU));
  int64_t covered = 0;
  for (const auto& p : t->pieces) {
    const int64_t lo = std::max(offset, p.offset), hi = std::min(end, p.offset + p.numel);
    if (lo >= hi) continue;
    files_.read(p.file, p.dataset, p.numel, lo - p.offset, host.narrow(0, lo - offset, hi - lo));
    covered += hi - lo;
  }
  if (covered != n)
    throw CheckpointError(dir_ + ": tensor " + name + ": its pieces do not cover elements [" + std::to_string(offset) +
                          ", " + std::to_string(end) + ")");
  out.copy_(host);
}

}  // namespace shoestring::ckpt

#include "trainer/metrics.h"

#include <cstdio>
#include <stdexcept>

namespace shoestring {

std::string to_json(const StepRecord& r) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "{\"step\":%lld,\"loss\":%.17g,\"lr\":%.17g,\"grad_norm\":%.17g,\"tokens_per_s\":%.6g,"
                "\"elapsed_s\":%.6g}",
                static_cast<long long>(r.step), r.loss, r.lr, r.grad_norm, r.tokens_per_s, r.elapsed_s);
  return buf;
}

MetricsWriter::MetricsWriter(const std::string& path) : out_(path, std::ios::trunc), path_(path) {
  if (!out_) throw std::runtime_error(path + ": cannot open metrics file for writing");
}

void MetricsWriter::write(const StepRecord& r) {
  out_ << to_json(r) << '\n';
  out_.flush();  // a killed run keeps every step it finished
  if (!out_) throw std::runtime_error(path_ + ": write failed (disk full?)");
}

}  // namespace shoestring

#pragma once
// One record per optimizer step, written as a JSON line to metrics.jsonl; the progress display
// and the log read the same record.
#include <cstdint>
#include <fstream>
#include <string>

namespace shoestring {

struct StepRecord {
  int64_t step = 0;        // 1-based optimizer step just completed
  double loss = 0;         // mean over the step's micro-batches
  double lr = 0;           // learning rate used by this step
  double grad_norm = 0;    // global gradient norm before clipping
  double tokens_per_s = 0;
  double elapsed_s = 0;    // since the first step started
};

// {"step":1,"loss":5.5451...,...}: floats with 17 significant digits, so two runs can be
// compared bit for bit from their files.
std::string to_json(const StepRecord& r);

class MetricsWriter {
 public:
  explicit MetricsWriter(const std::string& path);
  void write(const StepRecord& r);

 private:
  std::ofstream out_;
  std::string path_;
};

}  // namespace shoestring

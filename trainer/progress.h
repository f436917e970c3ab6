#pragma once
// What a person watching sees: a progress bar on a terminal, a plain line every N steps otherwise
// (CI, Slurm logs). Both also go to the run's train.log as plain lines.
#include <cstdint>
#include <fstream>
#include <string>

#include "trainer/metrics.h"

namespace shoestring {

class Progress {
 public:
  // bar: draw a bar on stdout (else plain lines every `every` steps). echo = false writes only the
  // log file (ranks other than 0 keep their own log and stay quiet).
  Progress(int64_t total_steps, int64_t every, bool bar, const std::string& log_path, bool echo = true);
  void update(const StepRecord& r);
  void message(const std::string& line);  // stdout and train.log
  void finish();

 private:
  std::string plain_line(const StepRecord& r) const;
  int64_t total_, every_;
  bool bar_, echo_;
  std::ofstream log_;
  double last_val_ = 0;  // the bar keeps showing the latest validation loss
  bool have_val_ = false;
};

// "1m05s", "3h02m", "12s"
std::string format_duration(double seconds);

}  // namespace shoestring

#include "trainer/progress.h"

#include <cstdio>
#include <iostream>

namespace shoestring {

std::string format_duration(double s) {
  char buf[32];
  const auto t = static_cast<long long>(s + 0.5);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", t / 3600, (t % 3600) / 60);
  else if (t >= 60) std::snprintf(buf, sizeof buf, "%lldm%02llds", t / 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%llds", t);
  return buf;
}

Progress::Progress(int64_t total_steps, int64_t every, bool bar, const std::string& log_path, bool echo)
    : total_(total_steps), every_(every), bar_(bar && echo), echo_(echo), log_(log_path, std::ios::app) {}

std::string Progress::plain_line(const StepRecord& r) const {
  char buf[256];
  std::snprintf(buf, sizeof buf, "step %lld/%lld | loss %.4f | lr %.3e | grad_norm %.3f | %.0f tok/s | %s",
                static_cast<long long>(r.step), static_cast<long long>(total_), r.loss, r.lr, r.grad_norm,
                r.tokens_per_s, format_duration(r.elapsed_s).c_str());
  std::string line = buf;
  if (r.has_val) {
    std::snprintf(buf, sizeof buf, " | val_loss %.4f", r.val_loss);
    line += buf;
  }
  return line;
}

void Progress::update(const StepRecord& r) {
  const bool periodic = r.step % every_ == 0 || r.step == total_ || r.step == 1 || r.has_val;
  if (periodic) log_ << plain_line(r) << '\n' << std::flush;
  if (!echo_) return;
  if (!bar_) {
    if (periodic) std::cout << plain_line(r) << '\n' << std::flush;
    return;
  }
  const int width = 30;
  const int filled = int(width * r.step / total_);
  const double eta = r.elapsed_s / double(r.step) * double(total_ - r.step);
  std::string bar(size_t(filled), '#');
  bar.append(size_t(width - filled), '.');
  if (r.has_val) last_val_ = r.val_loss, have_val_ = true;
  char val[32] = "";
  if (have_val_) std::snprintf(val, sizeof val, " | val %.4f", last_val_);
  std::printf("\r[%s] %lld/%lld loss %.4f%s | %.0f tok/s | ETA %s   ", bar.c_str(),
              static_cast<long long>(r.step), static_cast<long long>(total_), r.loss, val, r.tokens_per_s,
              format_duration(eta).c_str());
  std::fflush(stdout);
}

void Progress::message(const std::string& line) {
  if (bar_) std::printf("\r\033[K");
  if (echo_) std::cout << line << '\n' << std::flush;
  log_ << line << '\n' << std::flush;
}

void Progress::finish() {
  if (bar_) std::printf("\n");
  std::fflush(stdout);
}

}  // namespace shoestring

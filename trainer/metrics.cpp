#include "trainer/metrics.h"

#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace shoestring {

namespace {

// 17 significant digits; a non-finite value (a skipped step's loss) as null, since JSON has no nan.
std::string num(double x) {
  if (!std::isfinite(x)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}

}  // namespace

std::string to_json(const StepRecord& r) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "{\"step\":%lld,\"loss\":%s,\"lr\":%.17g,\"grad_norm\":%s,\"tokens_per_s\":%.6g,"
                "\"elapsed_s\":%.6g}",
                static_cast<long long>(r.step), num(r.loss).c_str(), r.lr, num(r.grad_norm).c_str(), r.tokens_per_s,
                r.elapsed_s);
  std::string out = buf;
  out.pop_back();  // reopen the object for the optional fields
  if (r.skipped) out += ",\"skipped\":true";
  if (r.skipped_steps > 0) out += ",\"skipped_steps\":" + std::to_string(r.skipped_steps);
  if (r.rolled_back_to >= 0) out += ",\"rolled_back_to\":" + std::to_string(r.rolled_back_to);
  if (r.has_moe) {
    std::snprintf(buf, sizeof buf, ",\"expert_imbalance\":%.17g,\"router_bias_norm\":%.17g,\"balance_loss\":%.17g,\"dropped_tokens\":%lld,\"expert_imbalance_layers\":[",
                  r.expert_imbalance, r.router_bias_norm, r.balance_loss, static_cast<long long>(r.dropped_tokens));
    out += buf;
    for (size_t i = 0; i < r.expert_imbalance_layers.size(); ++i) {
      std::snprintf(buf, sizeof buf, "%s%.17g", i ? "," : "", r.expert_imbalance_layers[i]);
      out += buf;
    }
    out += "]";
  }
  if (r.has_ep) {
    std::snprintf(buf, sizeof buf,
                  ",\"ep_rows_sent\":%lld,\"ep_rows_received\":%lld,\"ep_bytes_sent\":%lld,\"ep_bytes_received\":%lld",
                  static_cast<long long>(r.ep_rows_sent), static_cast<long long>(r.ep_rows_received),
                  static_cast<long long>(r.ep_bytes_sent), static_cast<long long>(r.ep_bytes_received));
    out += buf;
  }
  if (r.has_mtp) {
    out += ",\"mtp_loss\":" + num(r.mtp_loss);
  }
  if (r.has_val) {
    std::snprintf(buf, sizeof buf, ",\"val_loss\":%.17g", r.val_loss);
    out += buf;
  }
  return out + "}";
}

MetricsWriter::MetricsWriter(const std::string& path, bool append)
    : out_(path, append ? std::ios::app : std::ios::trunc), path_(path) {
  if (!out_) throw std::runtime_error(path + ": cannot open metrics file for writing");
}

void MetricsWriter::write(const StepRecord& r) {
  out_ << to_json(r) << '\n';
  out_.flush();  // a killed run keeps every step it finished
  if (!out_) throw std::runtime_error(path_ + ": write failed (disk full?)");
}

}  // namespace shoestring

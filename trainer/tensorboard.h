#pragma once
// TensorBoard event files beside metrics.jsonl (docs/tensorboard.md): the same per-step record as
// scalars, so `tensorboard --logdir runs/` shows every run. The file format is written by hand (no
// protobuf library): a TFRecord stream of tensorboard.Event messages.
//
// TFRecord framing, per record: uint64 length (little endian), masked CRC32C of those 8 bytes, the
// data, masked CRC32C of the data; masked(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8.
// Field numbers from tensorboard/compat/proto/event.proto and summary.proto:
//   Event { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5;
//           SessionLog session_log = 7; }
//   Summary { repeated Value value = 1; }   Value { string tag = 1; float simple_value = 2; }
//   SessionLog { SessionStatus status = 1; }  (START = 1)
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "trainer/metrics.h"

namespace shoestring {

// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), continuing from `crc` (0 to start).
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);
uint32_t masked_crc32c(const void* data, size_t n);

// One TFRecord: the framing above around `data`.
std::string tfrecord(const std::string& data);

using Scalars = std::vector<std::pair<std::string, float>>;

// The serialised Events this writer emits.
std::string file_version_event(double wall_time);                                 // step 0, "brain.Event:2"
std::string scalars_event(double wall_time, int64_t step, const Scalars& values);  // summary of simple_values
std::string session_start_event(double wall_time, int64_t step);                  // session_log { status: START }

// The tags and values of one step, the fields metrics.jsonl holds (optional ones when present):
// loss, lr, grad_norm, tokens_per_s; val_loss; mtp_loss; balance_loss, expert_imbalance,
// expert_imbalance/layer_N (N = the MoE layer's index among MoE layers, from 0), router_bias_norm,
// dropped_tokens; ep_rows_sent, ep_rows_received, ep_bytes_sent, ep_bytes_received; skipped_steps.
Scalars tensorboard_scalars(const StepRecord& r);

// Cuts every events.out.tfevents.* file in `dir` before its first record whose step is after
// `last_step`, or that is incomplete or fails its CRC (a run killed mid-write). A resumed run calls
// it so that the steps it repeats are not shown twice (the analogue of metrics.jsonl's truncation).
// Returns the number of files cut.
int truncate_event_files(const std::string& dir, int64_t last_step);

class TensorBoardWriter {
 public:
  // Creates `dir` and a new file dir/events.out.tfevents.<unix seconds>.<hostname> (a suffix .N
  // when that name exists) starting with the file_version event. resumed_from >= 0: a resumed
  // run; older files are first truncated after that step, and a SessionLog START event at step
  // resumed_from + 1 tells a TensorBoard that had already loaded the cut steps to drop them.
  explicit TensorBoardWriter(const std::string& dir, int64_t resumed_from = -1);
  void write(const StepRecord& r);  // one Event, flushed: a killed run keeps every step it finished
  const std::string& path() const { return path_; }

 private:
  void append(const std::string& event);
  std::ofstream out_;
  std::string path_;
};

}  // namespace shoestring

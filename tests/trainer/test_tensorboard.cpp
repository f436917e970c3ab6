// TensorBoard event files (trainer/tensorboard.h). The reader here is written separately from the
// writer, from the format: TFRecord framing with both masked CRC32Cs checked, then the protobuf
// wire format of Event / Summary.Value decoded field by field. A bit-wise CRC (no table) checks the
// writer's table-driven one. tests/reference/check_tensorboard.py checks a real run's file with
// Python's own reader (and TensorBoard's, where it is installed).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>

#include "trainer/tensorboard.h"

using namespace shoestring;
namespace fs = std::filesystem;

namespace {

// CRC32C bit by bit, the definition: reflected polynomial 0x82F63B78, initial and final ~0.
uint32_t crc32c_bitwise(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : s) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
  }
  return ~c;
}
uint32_t mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

struct Event {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;
  std::vector<std::pair<std::string, float>> values;  // summary { value { tag simple_value } }
  int session_status = -1;                            // session_log { status }, -1 if absent
};

struct Reader {
  const std::string& s;
  size_t i = 0;
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      if (i >= s.size() || shift > 63) throw std::runtime_error("bad varint");
      const auto b = static_cast<uint8_t>(s[i++]);
      v |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
  }
  std::string bytes(size_t n) {
    if (n > s.size() - i) throw std::runtime_error("field past the end");
    std::string out = s.substr(i, n);
    i += n;
    return out;
  }
  std::string delimited() { return bytes(varint()); }
  bool done() const { return i == s.size(); }
};

Event parse_event(const std::string& data) {
  Event e;
  Reader r{data};
  while (!r.done()) {
    const uint64_t key = r.varint();
    const uint64_t field = key >> 3, wire = key & 7;
    if (field == 1 && wire == 1) {
      const std::string b = r.bytes(8);
      std::memcpy(&e.wall_time, b.data(), 8);
    } else if (field == 2 && wire == 0) {
      e.step = static_cast<int64_t>(r.varint());
    } else if (field == 3 && wire == 2) {
      e.file_version = r.delimited();
    } else if (field == 5 && wire == 2) {
      const std::string summary = r.delimited();
      Reader sr{summary};
      while (!sr.done()) {
        if (sr.varint() != ((1 << 3) | 2)) throw std::runtime_error("Summary: expected field 1 (value)");
        const std::string value = sr.delimited();
        Reader vr{value};
        std::string tag;
        std::optional<float> x;
        while (!vr.done()) {
          const uint64_t k = vr.varint();
          if (k == ((1 << 3) | 2)) {
            tag = vr.delimited();
          } else if (k == ((2 << 3) | 5)) {
            const std::string b = vr.bytes(4);
            float f;
            std::memcpy(&f, b.data(), 4);
            x = f;
          } else {
            throw std::runtime_error("Summary.Value: unexpected key " + std::to_string(k));
          }
        }
        if (!x) throw std::runtime_error("Summary.Value without simple_value");
        e.values.emplace_back(tag, *x);
      }
    } else if (field == 7 && wire == 2) {
      const std::string log = r.delimited();
      Reader lr{log};
      if (lr.varint() != ((1 << 3) | 0)) throw std::runtime_error("SessionLog: expected field 1 (status)");
      e.session_status = static_cast<int>(lr.varint());
    } else {
      throw std::runtime_error("Event: unexpected key " + std::to_string(key));
    }
  }
  return e;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Framing: uint64 length, masked CRC of the length bytes, data, masked CRC of the data. Throws on
// any CRC mismatch or a truncated record.
std::vector<Event> read_events(const std::string& file) {
  std::vector<Event> out;
  size_t i = 0;
  auto u32 = [&](size_t at) {
    uint32_t v;
    std::memcpy(&v, file.data() + at, 4);
    return v;
  };
  while (i < file.size()) {
    if (file.size() - i < 12) throw std::runtime_error("truncated header");
    uint64_t n;
    std::memcpy(&n, file.data() + i, 8);
    if (u32(i + 8) != mask(crc32c_bitwise(file.substr(i, 8)))) throw std::runtime_error("length CRC mismatch");
    if (n > file.size() - i - 16) throw std::runtime_error("truncated record");
    const std::string data = file.substr(i + 12, n);
    if (u32(i + 12 + n) != mask(crc32c_bitwise(data))) throw std::runtime_error("data CRC mismatch");
    out.push_back(parse_event(data));
    i += 16 + n;
  }
  return out;
}

fs::path fresh_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("shoestring_test_tensorboard_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  return d;
}

StepRecord record(int64_t step) {
  StepRecord r;
  r.step = step;
  r.loss = 5.5 - 0.1 * step;
  r.lr = 1e-3 * step;
  r.grad_norm = 0.75;
  r.tokens_per_s = 12345.5;
  return r;
}

std::vector<fs::path> event_files(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir)) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

TEST(TensorBoard, Crc32cKnownVectors) {
  // RFC 3720 (iSCSI) appendix B.4 and the usual check value.
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  const std::string zeros(32, '\0'), ones(32, '\xFF');
  EXPECT_EQ(crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones.data(), 32), 0x62A8AB43u);
  std::string inc(32, 0);
  for (int k = 0; k < 32; ++k) inc[k] = static_cast<char>(k);
  EXPECT_EQ(crc32c(inc.data(), 32), 0x46DD794Eu);
  EXPECT_EQ(crc32c("", 0), 0u);
  // Continuing a CRC over a split buffer gives the CRC of the whole.
  EXPECT_EQ(crc32c("56789", 5, crc32c("1234", 4)), 0xE3069283u);
  // Table-driven against bit-wise on a longer text.
  const std::string text = "The quick brown fox jumps over the lazy dog, 1234567890 times.";
  EXPECT_EQ(crc32c(text.data(), text.size()), crc32c_bitwise(text));
  EXPECT_EQ(masked_crc32c(text.data(), text.size()), mask(crc32c_bitwise(text)));
}

TEST(TensorBoard, WrittenFileParsesBack) {
  const fs::path dir = fresh_dir("parse");
  std::string path;
  {
    TensorBoardWriter w(dir.string());
    path = w.path();
    w.write(record(1));
    StepRecord r = record(2);
    r.has_val = true;
    r.val_loss = 4.25;
    r.has_mtp = true;
    r.mtp_loss = 6.5;
    r.has_moe = true;
    r.expert_imbalance_layers = {1.5, 2.5};
    r.expert_imbalance = 2.0;
    r.router_bias_norm = 0.125;
    r.balance_loss = 0.0625;
    r.dropped_tokens = 7;
    r.skipped_steps = 1;
    r.loss = std::nan("");
    w.write(r);
  }
  EXPECT_EQ(fs::path(path).parent_path(), dir);
  EXPECT_EQ(fs::path(path).filename().string().rfind("events.out.tfevents.", 0), 0u) << path;
  const std::vector<Event> ev = read_events(read_file(path));
  ASSERT_EQ(ev.size(), 3u);
  EXPECT_EQ(ev[0].file_version, "brain.Event:2");
  EXPECT_EQ(ev[0].step, 0);
  EXPECT_GT(ev[0].wall_time, 1.7e9);  // seconds since 1970, after 2023
  EXPECT_GE(ev[1].wall_time, ev[0].wall_time);

  EXPECT_EQ(ev[1].step, 1);
  std::map<std::string, float> v1(ev[1].values.begin(), ev[1].values.end());
  EXPECT_EQ(v1.size(), 4u);
  EXPECT_EQ(v1["loss"], static_cast<float>(5.5 - 0.1));
  EXPECT_EQ(v1["lr"], 1e-3f);
  EXPECT_EQ(v1["grad_norm"], 0.75f);
  EXPECT_EQ(v1["tokens_per_s"], 12345.5f);

  EXPECT_EQ(ev[2].step, 2);
  std::map<std::string, float> v2(ev[2].values.begin(), ev[2].values.end());
  EXPECT_TRUE(std::isnan(v2["loss"]));
  EXPECT_EQ(v2["val_loss"], 4.25f);
  EXPECT_EQ(v2["mtp_loss"], 6.5f);
  EXPECT_EQ(v2["expert_imbalance"], 2.0f);
  EXPECT_EQ(v2["expert_imbalance/layer_0"], 1.5f);
  EXPECT_EQ(v2["expert_imbalance/layer_1"], 2.5f);
  EXPECT_EQ(v2["router_bias_norm"], 0.125f);
  EXPECT_EQ(v2["balance_loss"], 0.0625f);
  EXPECT_EQ(v2["dropped_tokens"], 7.0f);
  EXPECT_EQ(v2["skipped_steps"], 1.0f);
  EXPECT_EQ(v2.size(), 13u);
  fs::remove_all(dir);
}

TEST(TensorBoard, CorruptedByteIsDetected) {
  const fs::path dir = fresh_dir("corrupt");
  std::string path;
  {
    TensorBoardWriter w(dir.string());
    path = w.path();
    w.write(record(1));
  }
  const std::string good = read_file(path);
  ASSERT_NO_THROW(read_events(good));
  // Flip one bit in every byte position in turn: each must fail a CRC (or the framing).
  int undetected = 0;
  for (size_t k = 0; k < good.size(); ++k) {
    std::string bad = good;
    bad[k] = static_cast<char>(bad[k] ^ 0x10);
    try {
      read_events(bad);
      ++undetected;
    } catch (const std::runtime_error&) {
    }
  }
  EXPECT_EQ(undetected, 0);
  fs::remove_all(dir);
}

TEST(TensorBoard, ResumeCutsLaterStepsAndMarksTheRestart) {
  const fs::path dir = fresh_dir("resume");
  {
    TensorBoardWriter w(dir.string());
    for (int s = 1; s <= 5; ++s) w.write(record(s));
  }
  // A run killed mid-write leaves a torn record after step 5: appended by hand.
  {
    const auto files = event_files(dir);
    ASSERT_EQ(files.size(), 1u);
    std::ofstream(files[0], std::ios::binary | std::ios::app) << tfrecord(scalars_event(0, 6, {{"loss", 1}})).substr(0, 20);
    EXPECT_THROW(read_events(read_file(files[0].string())), std::runtime_error);
  }
  // Resumed from a checkpoint at step 3: steps 4, 5 and the torn record go from the old file.
  std::string second;
  {
    TensorBoardWriter w(dir.string(), 3);
    second = w.path();
    w.write(record(4));
  }
  const auto files = event_files(dir);
  ASSERT_EQ(files.size(), 2u);
  const fs::path first = files[0] == fs::path(second) ? files[1] : files[0];
  const std::vector<Event> old = read_events(read_file(first.string()));
  ASSERT_EQ(old.size(), 4u);  // file_version + steps 1..3
  EXPECT_EQ(old.back().step, 3);
  const std::vector<Event> now = read_events(read_file(second));
  ASSERT_EQ(now.size(), 3u);
  EXPECT_EQ(now[0].file_version, "brain.Event:2");
  EXPECT_EQ(now[1].session_status, 1);  // START
  EXPECT_EQ(now[1].step, 4);
  EXPECT_EQ(now[2].step, 4);
  EXPECT_EQ(now[2].values.size(), 4u);
  fs::remove_all(dir);
}

TEST(TensorBoard, TruncateKeepsFilesWithNothingLater) {
  const fs::path dir = fresh_dir("keep");
  std::string path;
  {
    TensorBoardWriter w(dir.string());
    path = w.path();
    for (int s = 1; s <= 3; ++s) w.write(record(s));
  }
  const auto size = fs::file_size(path);
  EXPECT_EQ(truncate_event_files(dir.string(), 3), 0);
  EXPECT_EQ(fs::file_size(path), size);
  EXPECT_EQ(truncate_event_files(dir.string(), 1), 1);
  EXPECT_EQ(read_events(read_file(path)).size(), 2u);
  EXPECT_EQ(truncate_event_files((dir / "missing").string(), 1), 0);
  fs::remove_all(dir);
}

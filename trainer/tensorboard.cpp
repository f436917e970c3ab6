#include "trainer/tensorboard.h"

#include <unistd.h>

#include <array>
#include <bit>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace shoestring {

namespace fs = std::filesystem;

static_assert(std::endian::native == std::endian::little, "the record and protobuf fixed-width fields are little-endian");

namespace {

// The byte-at-a-time table of the reflected CRC: entry b is the CRC of the single byte b.
std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t c = b;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[b] = c;
  }
  return t;
}

// --- protobuf wire format (https://protobuf.dev/programming-guides/encoding/) ---------------
enum Wire : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void put_key(std::string& out, uint32_t field, Wire wire) { put_varint(out, (field << 3) | wire); }
template <class T>
void put_fixed(std::string& out, uint32_t field, T v) {
  put_key(out, field, sizeof(T) == 8 ? kFixed64 : kFixed32);
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}
void put_bytes(std::string& out, uint32_t field, const std::string& bytes) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out += bytes;
}

// Event.wall_time and Event.step, the fields every event starts with.
std::string event_head(double wall_time, int64_t step) {
  std::string e;
  put_fixed(e, 1, wall_time);
  put_key(e, 2, kVarint);
  put_varint(e, static_cast<uint64_t>(step));  // int64: negative values as 10-byte two's complement
  return e;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

uint64_t read_le64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
uint32_t read_le32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

bool read_varint(const std::string& s, size_t& i, uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64 && i < s.size(); shift += 7) {
    const auto b = static_cast<uint8_t>(s[i++]);
    v |= static_cast<uint64_t>(b & 0x7F) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

// Event.step of a serialised Event (0 when absent, as proto3 reads it); false if malformed.
bool event_step(const std::string& e, int64_t& step) {
  step = 0;
  size_t i = 0;
  while (i < e.size()) {
    uint64_t key, v;
    if (!read_varint(e, i, key)) return false;
    switch (key & 7) {
      case kVarint:
        if (!read_varint(e, i, v)) return false;
        if ((key >> 3) == 2) step = static_cast<int64_t>(v);
        break;
      case kFixed64: i += 8; break;
      case kFixed32: i += 4; break;
      case kLengthDelimited:
        if (!read_varint(e, i, v) || v > e.size() - i) return false;
        i += v;
        break;
      default: return false;
    }
  }
  return i == e.size();
}

// Byte offset in `path` of the first record to drop (the file size when none).
uintmax_t cut_point(const fs::path& path, int64_t last_step) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path.string() + ": cannot open event file to truncate it");
  const uintmax_t size = fs::file_size(path);
  uintmax_t offset = 0;
  char head[12], tail[4];
  std::string data;
  while (in.read(head, 12)) {
    const uint64_t n = read_le64(head);
    if (read_le32(head + 8) != masked_crc32c(head, 8)) break;
    if (n > size - offset - 12) break;  // incomplete record
    data.resize(n);
    if (!in.read(data.data(), static_cast<std::streamsize>(n)) || !in.read(tail, 4)) break;
    if (read_le32(tail) != masked_crc32c(data.data(), n)) break;
    int64_t step;
    if (!event_step(data, step) || step > last_step) break;
    offset += 12 + n + 4;
  }
  return offset;
}

}  // namespace

uint32_t crc32c(const void* data, size_t n, uint32_t crc) {
  static const std::array<uint32_t, 256> table = make_crc_table();
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

uint32_t masked_crc32c(const void* data, size_t n) {
  const uint32_t crc = crc32c(data, n);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string tfrecord(const std::string& data) {
  std::string r;
  r.reserve(data.size() + 16);
  const uint64_t n = data.size();
  char b[8];
  std::memcpy(b, &n, 8);
  r.append(b, 8);
  const uint32_t len_crc = masked_crc32c(b, 8);
  std::memcpy(b, &len_crc, 4);
  r.append(b, 4);
  r += data;
  const uint32_t data_crc = masked_crc32c(data.data(), data.size());
  std::memcpy(b, &data_crc, 4);
  r.append(b, 4);
  return r;
}

std::string file_version_event(double wall_time) {
  std::string e = event_head(wall_time, 0);
  put_bytes(e, 3, "brain.Event:2");  // version 2: readers purge on SessionLog START, not on step order
  return e;
}

std::string scalars_event(double wall_time, int64_t step, const Scalars& values) {
  std::string summary;
  for (const auto& [tag, x] : values) {
    std::string value;
    put_bytes(value, 1, tag);
    put_fixed(value, 2, x);
    put_bytes(summary, 1, value);
  }
  std::string e = event_head(wall_time, step);
  put_bytes(e, 5, summary);
  return e;
}

std::string session_start_event(double wall_time, int64_t step) {
  std::string log;
  put_key(log, 1, kVarint);
  put_varint(log, 1);  // SessionLog.START
  std::string e = event_head(wall_time, step);
  put_bytes(e, 7, log);
  return e;
}

Scalars tensorboard_scalars(const StepRecord& r) {
  auto f = [](double x) { return static_cast<float>(x); };
  Scalars s = {{"loss", f(r.loss)}, {"lr", f(r.lr)}, {"grad_norm", f(r.grad_norm)}, {"tokens_per_s", f(r.tokens_per_s)}};
  if (r.has_val) s.emplace_back("val_loss", f(r.val_loss));
  if (r.has_mtp) s.emplace_back("mtp_loss", f(r.mtp_loss));
  if (r.has_moe) {
    s.emplace_back("balance_loss", f(r.balance_loss));
    s.emplace_back("expert_imbalance", f(r.expert_imbalance));
    for (size_t i = 0; i < r.expert_imbalance_layers.size(); ++i)
      s.emplace_back("expert_imbalance/layer_" + std::to_string(i), f(r.expert_imbalance_layers[i]));
    s.emplace_back("router_bias_norm", f(r.router_bias_norm));
    s.emplace_back("dropped_tokens", f(static_cast<double>(r.dropped_tokens)));
  }
  if (r.has_ep) {
    s.emplace_back("ep_rows_sent", f(static_cast<double>(r.ep_rows_sent)));
    s.emplace_back("ep_rows_received", f(static_cast<double>(r.ep_rows_received)));
    s.emplace_back("ep_bytes_sent", f(static_cast<double>(r.ep_bytes_sent)));
    s.emplace_back("ep_bytes_received", f(static_cast<double>(r.ep_bytes_received)));
  }
  if (r.skipped_steps > 0) s.emplace_back("skipped_steps", f(static_cast<double>(r.skipped_steps)));
  return s;
}

int truncate_event_files(const std::string& dir, int64_t last_step) {
  int cut = 0;
  if (!fs::is_directory(dir)) return 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (!entry.is_regular_file() || entry.path().filename().string().rfind("events.out.tfevents.", 0) != 0) continue;
    const uintmax_t offset = cut_point(entry.path(), last_step);
    if (offset == entry.file_size()) continue;
    fs::resize_file(entry.path(), offset);
    ++cut;
  }
  return cut;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir, int64_t resumed_from) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error(dir + ": cannot create the TensorBoard directory: " + ec.message());
  if (resumed_from >= 0) truncate_event_files(dir, resumed_from);
  char host[256] = "localhost";
  gethostname(host, sizeof host - 1);
  const double t = now_s();
  const std::string base =
      (fs::path(dir) / ("events.out.tfevents." + std::to_string(static_cast<int64_t>(t)) + "." + host)).string();
  path_ = base;
  for (int k = 1; fs::exists(path_); ++k) path_ = base + "." + std::to_string(k);
  out_.open(path_, std::ios::binary | std::ios::trunc);
  if (!out_) throw std::runtime_error(path_ + ": cannot open TensorBoard event file for writing");
  append(file_version_event(t));
  if (resumed_from >= 0) append(session_start_event(t, resumed_from + 1));
}

void TensorBoardWriter::write(const StepRecord& r) { append(scalars_event(now_s(), r.step, tensorboard_scalars(r))); }

void TensorBoardWriter::append(const std::string& event) {
  const std::string rec = tfrecord(event);
  out_.write(rec.data(), static_cast<std::streamsize>(rec.size()));
  out_.flush();
  if (!out_) throw std::runtime_error(path_ + ": write failed (disk full?)");
}

}  // namespace shoestring

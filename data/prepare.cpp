#include "data/prepare.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include "data/data_error.h"
#include "data/hdf5_handles.h"
#include "data/sha256.h"

namespace fs = std::filesystem;

namespace shoestring::data {

namespace {

// Documents tokenized together; 8 MiB of text keeps every core busy and memory small.
constexpr size_t kBatchBytes = size_t(8) << 20;

struct Batch {
  std::vector<std::string> docs;
  std::vector<size_t> file_of;
  std::vector<std::vector<uint32_t>> ids;
};

void tokenize_parallel(const Tokenizer& tok, Batch& b, int threads) {
  b.ids.assign(b.docs.size(), {});
  std::atomic<size_t> next{0};
  std::exception_ptr err;
  std::mutex err_mu;
  auto work = [&] {
    try {
      for (size_t i; (i = next.fetch_add(1)) < b.docs.size();) tok.encode(b.docs[i], b.ids[i]);
    } catch (...) {
      std::lock_guard<std::mutex> lock(err_mu);
      err = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (err) std::rethrow_exception(err);
}

// Hashes of the regular input files, computed up front (in parallel) so that every shard can list
// its sources complete; stdin is hashed as it streams.
std::vector<SourceFile> hash_sources(const std::vector<std::string>& files, int threads) {
  std::vector<SourceFile> out(files.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < files.size();) {
      out[i].path = files[i];
      if (files[i] != "-") out[i].sha256 = sha256_file(files[i], &out[i].bytes);
    }
  };
  std::vector<std::future<void>> pool;
  for (int t = 0; t < threads; ++t) pool.push_back(std::async(std::launch::async, work));
  for (auto& f : pool) f.get();
  return out;
}

void set_shard_count(const std::string& path, int64_t count) {
  h5::QuietErrors quiet;
  h5::Id f = h5::file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
  h5::Id a = h5::attr(f.ok() ? H5Aopen(f, "shard_count", H5P_DEFAULT) : -1);
  if (!a.ok() || H5Awrite(a, H5T_NATIVE_INT64, &count) < 0) throw data_error(path, "cannot record the shard count");
}

}  // namespace

std::string shard_path(const std::string& output, uint64_t index) {
  const fs::path p(output);
  char num[16];
  std::snprintf(num, sizeof num, "-%05llu", static_cast<unsigned long long>(index));
  return (p.parent_path() / (p.stem().string() + num + p.extension().string())).string();
}

PrepareStats prepare_dataset(const PrepareOptions& o, const PrepareProgress& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  const int threads = o.threads > 0 ? o.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  const auto tok = make_tokenizer(o.tokenizer);
  const std::vector<std::string> files = expand_inputs(o.inputs);
  std::vector<SourceFile> sources = hash_sources(files, threads);
  uint64_t total_bytes = 0;  // stays 0 (unknown: no ETA) when stdin is among the inputs
  for (const auto& s : sources) total_bytes += s.bytes;
  if (std::find(files.begin(), files.end(), "-") != files.end()) total_bytes = 0;

  // Writing over an input would destroy the text being read (the writer renames over it): each
  // output is checked against the inputs' identities, taken once, before anything is read.
  std::set<std::pair<dev_t, ino_t>> input_ids;
  for (const auto& f : files) {
    struct stat st{};
    if (f != "-" && ::stat(f.c_str(), &st) == 0) input_ids.emplace(st.st_dev, st.st_ino);
  }
  const auto refuse_input = [&](const std::string& path) {
    struct stat st{};
    if (::stat(path.c_str(), &st) == 0 && input_ids.count({st.st_dev, st.st_ino}))
      throw data_error(path, "is also an input file; write the dataset elsewhere (-o)");
  };
  refuse_input(o.shard_tokens ? shard_path(o.output, 0) : o.output);

  DocumentReader reader(files, o.input);
  PrepareStats stats;
  // A run that fails after some shards were closed must not leave them behind: each looks like a
  // complete dataset (shard_count is set only at the end), so training on OUT-*.h5 would silently
  // use part of the data. Declared before `writer` and `writing`, so it runs after both are done.
  // (Only files this run finished: an unfinished shard is still under its temporary name.)
  struct RemoveShardsOnError {
    std::vector<std::string> closed;
    bool done = false;
    ~RemoveShardsOnError() {
      if (done) return;
      for (const auto& p : closed) std::remove(p.c_str());
    }
  } cleanup;
  std::unique_ptr<TokenDatasetWriter> writer;
  std::vector<uint64_t> docs_in_shard(files.size(), 0);
  auto open_shard = [&] {
    const std::string path = o.shard_tokens ? shard_path(o.output, stats.outputs.size()) : o.output;
    refuse_input(path);
    writer = std::make_unique<TokenDatasetWriter>(path, tok->identity(), tok->eod_id(), o.writer);
    writer->set_shard(int64_t(stats.outputs.size()), 1);
    stats.outputs.push_back(path);
    std::fill(docs_in_shard.begin(), docs_in_shard.end(), 0);
  };
  auto close_shard = [&] {
    for (size_t i = 0; i < files.size(); ++i)
      if (docs_in_shard[i] > 0) writer->add_source({sources[i].path, sources[i].bytes, sources[i].sha256, docs_in_shard[i]});
    writer->close();
    writer.reset();
    cleanup.closed.push_back(stats.outputs.back());
  };
  auto write_batch = [&](Batch b) {
    for (size_t d = 0; d < b.ids.size(); ++d) {
      if (!writer) open_shard();
      writer->append_document(b.ids[d].data(), b.ids[d].size());
      ++docs_in_shard[b.file_of[d]];
      ++stats.documents;
      stats.tokens += b.ids[d].size() + 1;
      if (o.shard_tokens && writer->num_tokens() >= o.shard_tokens) close_shard();
    }
  };

  // Read batch k+1 and tokenize it while batch k is compressed and written.
  std::future<void> writing;
  uint64_t tokens_done = 0;  // counted here: stats belong to the writing thread until it is joined
  for (bool more = true; more;) {
    Batch b;
    size_t bytes = 0, file = 0;
    for (std::string doc; bytes < kBatchBytes && (more = reader.next(doc, file));) {
      bytes += doc.size();
      b.docs.push_back(std::move(doc));
      b.file_of.push_back(file);
    }
    tokenize_parallel(*tok, b, threads);
    b.docs.clear();
    for (const auto& ids : b.ids) tokens_done += ids.size() + 1;
    if (writing.valid()) writing.get();
    writing = std::async(std::launch::async, write_batch, std::move(b));
    if (progress)
      progress(reader.bytes_read(), total_bytes, tokens_done,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  if (writing.valid()) writing.get();
  for (size_t i = 0; i < files.size(); ++i)
    if (files[i] == "-") sources[i].sha256 = reader.stdin_sha256(), sources[i].bytes = reader.stdin_bytes();
  if (stats.documents == 0) throw DataError("data prepare: the input holds no text (" + std::to_string(files.size()) + " file(s))");
  if (writer) close_shard();
  if (stats.outputs.size() > 1)
    for (const auto& p : stats.outputs) set_shard_count(p, int64_t(stats.outputs.size()));
  cleanup.done = true;
  stats.bytes_in = reader.bytes_read();
  for (const auto& p : stats.outputs) stats.bytes_out += fs::file_size(p);
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return stats;
}

}  // namespace shoestring::data

// Writing the HDF5 token dataset (layout in token_dataset.h).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "data/data_error.h"
#include "data/hdf5_handles.h"
#include "data/token_dataset.h"

namespace shoestring::data {

namespace {

// Strings are fixed-length (null-padded) rather than HDF5 variable-length: variable-length data
// lives in HDF5's global heap, whose reader hangs on some corrupt files (found by
// fuzz_token_dataset in libhdf5 1.10), and the reader refuses them.
h5::Id string_type(size_t size) {
  h5::Id t = h5::type(H5Tcopy(H5T_C_S1));
  H5Tset_size(t, std::max<size_t>(1, size));
  H5Tset_strpad(t, H5T_STR_NULLPAD);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return t;
}

void write_string_attr(hid_t obj, const char* name, const std::string& value) {
  h5::Id t = string_type(value.size());
  h5::Id sp = h5::space(H5Screate(H5S_SCALAR));
  h5::Id a = h5::attr(H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT));
  const std::string padded = value.empty() ? std::string(1, '\0') : value;
  if (!a.ok() || H5Awrite(a, t, padded.data()) < 0) throw DataError(std::string("cannot write attribute ") + name);
}

void write_int_attr(hid_t obj, const char* name, int64_t value) {
  h5::Id sp = h5::space(H5Screate(H5S_SCALAR));
  h5::Id a = h5::attr(H5Acreate2(obj, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT));
  if (!a.ok() || H5Awrite(a, H5T_NATIVE_INT64, &value) < 0) throw DataError(std::string("cannot write attribute ") + name);
}

void write_u64_dataset(hid_t loc, const char* name, const std::vector<uint64_t>& v) {
  const hsize_t n = v.size();
  h5::Id sp = h5::space(H5Screate_simple(1, &n, nullptr));
  h5::Id d = h5::dataset(H5Dcreate2(loc, name, H5T_STD_U64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (!d.ok() || (n > 0 && H5Dwrite(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0))
    throw DataError(std::string("cannot write dataset ") + name);
}

void write_string_dataset(hid_t loc, const char* name, const std::vector<std::string>& v) {
  const hsize_t n = v.size();
  size_t width = 1;
  for (const auto& s : v) width = std::max(width, s.size());
  std::string buf(v.size() * width, '\0');
  for (size_t i = 0; i < v.size(); ++i) buf.replace(i * width, v[i].size(), v[i]);
  h5::Id t = string_type(width);
  h5::Id sp = h5::space(H5Screate_simple(1, &n, nullptr));
  h5::Id d = h5::dataset(H5Dcreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (!d.ok() || (n > 0 && H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) < 0))
    throw DataError(std::string("cannot write dataset ") + name);
}

}  // namespace

struct TokenDatasetWriter::Impl {
  h5::Id file, tokens;
  TokenizerIdentity tokenizer;
  uint32_t eod = 0;
  bool wide = false;  // uint32 on disk
  WriterOptions opts;
  std::vector<uint32_t> buffer;
  std::vector<uint16_t> narrow;
  std::vector<SourceFile> sources;
  int64_t shard_index = 0, shard_count = 1;
};

TokenDatasetWriter::TokenDatasetWriter(const std::string& path, const TokenizerIdentity& tokenizer, uint32_t eod_id,
                                       const WriterOptions& opts)
    : impl_(std::make_unique<Impl>()), path_(path), tmp_(path + ".tmp-" + std::to_string(::getpid())) {
  h5::QuietErrors quiet;
  auto& m = *impl_;
  m.tokenizer = tokenizer;
  m.eod = eod_id;
  m.wide = tokenizer.vocab_size > 65536;
  m.opts = opts;
  if (opts.chunk_tokens == 0 || opts.chunk_tokens > kMaxChunkTokens)
    throw data_error(path, "chunk size must be 1.." + std::to_string(kMaxChunkTokens) + " tokens, got " +
                               std::to_string(opts.chunk_tokens));
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  m.file = h5::file(H5Fcreate(tmp_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, h5::checksummed_format()));
  if (!m.file.ok()) throw data_error(path, "cannot create the dataset file (directory missing or not writable?)");
  // The destructor does not run when the constructor throws: remove the temporary file here.
  try {
    create_tokens();
  } catch (...) {
    impl_.reset();  // closes the HDF5 file before removing it
    std::remove(tmp_.c_str());
    throw;
  }
}

void TokenDatasetWriter::create_tokens() {
  auto& m = *impl_;
  const WriterOptions& opts = m.opts;
  const std::string& path = path_;
  const hsize_t zero = 0, unlimited = H5S_UNLIMITED, chunk = opts.chunk_tokens;
  h5::Id sp = h5::space(H5Screate_simple(1, &zero, &unlimited));
  h5::Id dcpl = h5::plist(H5Pcreate(H5P_DATASET_CREATE));
  H5Pset_chunk(dcpl, 1, &chunk);
  // Filter order matters: shuffle groups the (mostly zero) high bytes of the ids so deflate finds
  // them; the checksum is computed last, on the bytes as stored.
  if (opts.deflate_level > 0) {
    if (opts.shuffle) H5Pset_shuffle(dcpl);
    H5Pset_deflate(dcpl, unsigned(opts.deflate_level));
  }
  H5Pset_fletcher32(dcpl);
  m.tokens = h5::dataset(H5Dcreate2(m.file, "tokens", m.wide ? H5T_STD_U32LE : H5T_STD_U16LE, sp, H5P_DEFAULT,
                                    dcpl, H5P_DEFAULT));
  if (!m.tokens.ok()) throw data_error(path, "cannot create /tokens: " + h5::last_error());
  m.buffer.reserve(opts.chunk_tokens * 2);
}

TokenDatasetWriter::~TokenDatasetWriter() {
  if (!closed_) {
    impl_.reset();  // closes the HDF5 file before removing it
    std::remove(tmp_.c_str());
  }
}

size_t TokenDatasetWriter::buffer_size() const { return impl_->buffer.size(); }

void TokenDatasetWriter::append_document(const uint32_t* ids, size_t n) {
  auto& m = *impl_;
  for (size_t i = 0; i < n; ++i)
    if (int64_t(ids[i]) >= m.tokenizer.vocab_size)
      throw data_error(path_, "token id " + std::to_string(ids[i]) + " is outside the vocabulary (" +
                                  std::to_string(m.tokenizer.vocab_size) + ")");
  m.buffer.insert(m.buffer.end(), ids, ids + n);
  m.buffer.push_back(m.eod);
  offsets_.push_back(num_tokens());
  if (m.buffer.size() >= m.opts.chunk_tokens) flush(false);
}

void TokenDatasetWriter::flush(bool all) {
  auto& m = *impl_;
  // Whole chunks only (until close), so no chunk is written twice.
  const size_t n = all ? m.buffer.size() : m.buffer.size() / m.opts.chunk_tokens * m.opts.chunk_tokens;
  if (n == 0) return;
  h5::QuietErrors quiet;
  const hsize_t start = written_, count = n, size = written_ + n;
  if (H5Dset_extent(m.tokens, &size) < 0) throw data_error(path_, "cannot extend /tokens: " + h5::last_error());
  h5::Id fs = h5::space(H5Dget_space(m.tokens));
  H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, nullptr, &count, nullptr);
  h5::Id ms = h5::space(H5Screate_simple(1, &count, nullptr));
  herr_t rc;
  if (m.wide) {
    rc = H5Dwrite(m.tokens, H5T_NATIVE_UINT32, ms, fs, H5P_DEFAULT, m.buffer.data());
  } else {
    m.narrow.assign(m.buffer.begin(), m.buffer.begin() + std::ptrdiff_t(n));
    rc = H5Dwrite(m.tokens, H5T_NATIVE_UINT16, ms, fs, H5P_DEFAULT, m.narrow.data());
  }
  if (rc < 0) throw data_error(path_, "write failed (disk full?): " + h5::last_error());
  written_ += n;
  m.buffer.erase(m.buffer.begin(), m.buffer.begin() + std::ptrdiff_t(n));
}

void TokenDatasetWriter::add_source(const SourceFile& s) { impl_->sources.push_back(s); }

void TokenDatasetWriter::set_shard(int64_t index, int64_t count) {
  impl_->shard_index = index;
  impl_->shard_count = count;
}

void TokenDatasetWriter::close() {
  if (closed_) return;
  flush(true);
  h5::QuietErrors quiet;
  auto& m = *impl_;
  write_u64_dataset(m.file, "doc_offsets", offsets_);
  h5::Id g = h5::group(H5Gcreate2(m.file, "sources", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  std::vector<std::string> paths, hashes;
  std::vector<uint64_t> bytes, docs;
  for (const auto& s : m.sources) {
    paths.push_back(s.path);
    hashes.push_back(s.sha256);
    bytes.push_back(s.bytes);
    docs.push_back(s.documents);
  }
  write_string_dataset(g, "path", paths);
  write_string_dataset(g, "sha256", hashes);
  write_u64_dataset(g, "bytes", bytes);
  write_u64_dataset(g, "documents", docs);
  write_string_attr(m.file, "format", "shoestring-tokens");
  write_int_attr(m.file, "format_version", kFormatVersion);
  write_string_attr(m.file, "tokenizer_kind", m.tokenizer.kind);
  write_int_attr(m.file, "tokenizer_vocab_size", m.tokenizer.vocab_size);
  write_string_attr(m.file, "tokenizer_model_sha256", m.tokenizer.model_sha256);
  write_int_attr(m.file, "eod_id", m.eod);
  write_int_attr(m.file, "num_tokens", int64_t(written_));
  write_int_attr(m.file, "num_documents", int64_t(num_documents()));
  write_int_attr(m.file, "shard_index", m.shard_index);
  write_int_attr(m.file, "shard_count", m.shard_count);
  write_string_attr(m.file, "created_by", m.opts.created_by);
  m.tokens.reset();
  g.reset();
  if (H5Fclose(m.file.release()) < 0) throw data_error(path_, "closing the file failed (disk full?)");
  std::error_code ec;
  std::filesystem::rename(tmp_, path_, ec);
  if (ec) throw data_error(path_, "cannot move the finished file into place: " + ec.message());
  closed_ = true;
}

}  // namespace shoestring::data

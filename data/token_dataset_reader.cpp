// Reading and checking the HDF5 token dataset (layout in token_dataset.h). Every way a file can
// be wrong ends in a DataError naming the file; nothing here trusts the file's contents.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "data/data_error.h"
#include "data/hdf5_handles.h"
#include "data/token_dataset.h"

namespace shoestring::data {

namespace h5 {

std::string last_error() {
  std::string msg;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD,
           [](unsigned n, const H5E_error2_t* e, void* out) -> herr_t {
             if (n == 0 && e->desc) *static_cast<std::string*>(out) = e->desc;
             return 0;
           },
           &msg);
  return msg;
}

void skip_exit_cleanup() {
  static const bool once = (H5dont_atexit(), true);
  (void)once;
}

Id checksummed_format() {
  Id fapl = plist(H5Pcreate(H5P_FILE_ACCESS));
  H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110);
  return fapl;
}

}  // namespace h5

struct TokenDataset::Impl {
  h5::Id file, tokens;
};

namespace {

bool has_attr(hid_t obj, const char* name) { return H5Aexists(obj, name) > 0; }

// A fixed-length string type of the file's width and character set, for reading into memory;
// variable-length strings are refused (see string_type in token_dataset_writer.cpp).
h5::Id fixed_string_type(hid_t file_type, const std::string& what, const std::string& path) {
  if (H5Tget_class(file_type) != H5T_STRING) throw data_error(path, what + " is not a string");
  if (H5Tis_variable_str(file_type)) throw data_error(path, what + " is a variable-length string, which this format does not use");
  const size_t width = H5Tget_size(file_type);
  if (width == 0 || width > (size_t(1) << 16)) throw data_error(path, what + " has an implausible width");
  h5::Id mt = h5::type(H5Tcopy(H5T_C_S1));
  H5Tset_size(mt, width);
  H5Tset_strpad(mt, H5T_STR_NULLPAD);
  H5Tset_cset(mt, H5Tget_cset(file_type));  // HDF5 converts neither way between ASCII and UTF-8
  return mt;
}

std::string until_nul(const char* p, size_t n) { return std::string(p, std::find(p, p + n, '\0')); }

std::string string_attr(hid_t obj, const char* name, const std::string& path) {
  const std::string what = std::string("attribute '") + name + "'";
  if (!has_attr(obj, name)) throw data_error(path, what + " is missing");
  h5::Id a = h5::attr(H5Aopen(obj, name, H5P_DEFAULT));
  h5::Id t = h5::type(H5Aget_type(a));
  h5::Id mt = fixed_string_type(t, what, path);
  h5::Id sp = h5::space(H5Aget_space(a));
  if (H5Sget_simple_extent_npoints(sp) != 1) throw data_error(path, what + " has an unexpected shape");
  std::string buf(H5Tget_size(mt), '\0');
  if (H5Aread(a, mt, buf.data()) < 0) throw data_error(path, "cannot read " + what);
  return until_nul(buf.data(), buf.size());
}

int64_t int_attr(hid_t obj, const char* name, const std::string& path) {
  if (!has_attr(obj, name)) throw data_error(path, std::string("attribute '") + name + "' is missing");
  h5::Id a = h5::attr(H5Aopen(obj, name, H5P_DEFAULT));
  h5::Id t = h5::type(H5Aget_type(a));
  h5::Id sp = h5::space(H5Aget_space(a));
  int64_t v = 0;
  if (H5Tget_class(t) != H5T_INTEGER || H5Sget_simple_extent_npoints(sp) != 1 || H5Aread(a, H5T_NATIVE_INT64, &v) < 0)
    throw data_error(path, std::string("attribute '") + name + "' is not an integer");
  return v;
}

// Length of a 1-D dataset, or a DataError.
hsize_t length_1d(hid_t d, const char* name, const std::string& path) {
  h5::Id sp = h5::space(H5Dget_space(d));
  hsize_t n = 0;
  if (H5Sget_simple_extent_ndims(sp) != 1 || H5Sget_simple_extent_dims(sp, &n, nullptr) < 0)
    throw data_error(path, std::string("/") + name + " is not one-dimensional");
  return n;
}

template <class T>
std::vector<T> read_all(hid_t loc, const char* name, hid_t mem_type, const std::string& path) {
  h5::Id d = h5::dataset(H5Dopen2(loc, name, H5P_DEFAULT));
  if (!d.ok()) throw data_error(path, std::string(name) + " is not a dataset");
  h5::Id t = h5::type(H5Dget_type(d));
  if (H5Tget_class(t) != H5Tget_class(mem_type)) throw data_error(path, std::string("dataset ") + name + " has the wrong type");
  const hsize_t n = length_1d(d, name, path);
  // Written contiguous and unfiltered: storage smaller than the shape claims means a forged or
  // truncated header, caught before allocating for it.
  if (H5Dget_storage_size(d) < n * sizeof(T)) throw data_error(path, std::string("dataset ") + name + " is truncated");
  std::vector<T> v(n);
  if (!v.empty() && H5Dread(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0)
    throw data_error(path, std::string("cannot read ") + name + ": " + h5::last_error());
  return v;
}

std::vector<std::string> read_strings(hid_t loc, const char* name, const std::string& path) {
  const std::string what = std::string("dataset sources/") + name;
  h5::Id d = h5::dataset(H5Dopen2(loc, name, H5P_DEFAULT));
  if (!d.ok()) throw data_error(path, what + " is not a dataset");
  h5::Id t = h5::type(H5Dget_type(d));
  h5::Id mt = fixed_string_type(t, what, path);
  const size_t width = H5Tget_size(mt), n = length_1d(d, name, path);
  if (n > (size_t(1) << 24) || n * width > (size_t(1) << 28) || H5Dget_storage_size(d) < n * width)
    throw data_error(path, what + " is truncated or implausibly large");
  std::string buf(n * width, '\0');
  if (n > 0 && H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) < 0) throw data_error(path, "cannot read " + what);
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) out.push_back(until_nul(buf.data() + i * width, width));
  return out;
}

constexpr const char* kNotHdf5 =
    "not an HDF5 file (use data.source: llmc for llm.c .bin shards; make datasets with `shoestring data prepare`)";

// Why a path cannot be opened at all, before looking at its contents.
void check_is_file(const std::string& path) {
  if (!std::filesystem::exists(path)) throw data_error(path, "no such file");
  if (std::filesystem::is_directory(path)) throw data_error(path, "is a directory, not a dataset file");
  if (!std::filesystem::is_regular_file(path)) throw data_error(path, "is not a regular file");
}

}  // namespace

// The file's bytes as stored, read without libhdf5. libhdf5 1.10.8 verifies the checksums of the
// superblock v2/v3 and of v2 object headers ("OHDR") before parsing them, but parses the older,
// unchecksummed v1 object headers as they come, and its parser of those overflows the heap on
// some corrupt ones (tests/data/fuzz/libhdf5_findings/). So before libhdf5 touches an object we
// check here that the superblock is v2 or later and that the object's header starts with "OHDR".
class RawFile {
 public:
  RawFile(const std::string& name, const std::string& path) : name_(name), in_(path, std::ios::binary) {}
  RawFile(const std::string& name, const void* bytes, size_t n)
      : name_(name), image_(static_cast<const unsigned char*>(bytes)), image_size_(n) {}

  // Signature at offset 0 (no user block), superblock version, and the headers it points at.
  void check_superblock() {
    unsigned char sb[12 + 4 * 8] = {};
    if (!read(0, sb, 12) || std::memcmp(sb, "\x89HDF\r\n\x1a\n", 8) != 0) throw data_error(name_, kNotHdf5);
    const int version = sb[8];
    if (version < 2)
      throw data_error(name_, "an HDF5 file without metadata checksums (superblock version " + std::to_string(version) +
                                  "; Shoestring dataset format 1 or another program's file): re-run `shoestring data "
                                  "prepare` to rebuild it in format " + std::to_string(kFormatVersion));
    if (version > 3) throw data_error(name_, "HDF5 superblock version " + std::to_string(version) + " is not supported");
    offset_size_ = sb[9];
    if (offset_size_ != 2 && offset_size_ != 4 && offset_size_ != 8) throw data_error(name_, "corrupt HDF5 superblock");
    if (!read(0, sb, 12 + 4 * offset_size_)) throw data_error(name_, "truncated HDF5 superblock");
    base_ = address(sb + 12);
    const uint64_t extension = address(sb + 12 + offset_size_), root = address(sb + 12 + 3 * offset_size_);
    if (base_ == undefined()) throw data_error(name_, "corrupt HDF5 superblock");
    if (extension != undefined()) check_header(extension, "the HDF5 superblock extension");
    check_header(root, "the root group");
  }

  // The object that `name` in group `loc` links to must be a checksummed object header in this file.
  void check_link(hid_t loc, const char* name, const std::string& what) {
    H5L_info_t li{};
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0 || H5Lget_info(loc, name, &li, H5P_DEFAULT) < 0)
      throw data_error(name_, what + " is missing");
    if (li.type != H5L_TYPE_HARD) throw data_error(name_, what + " is a soft or external link, not an object of this file");
    check_header(li.u.address, what);
    // libhdf5 verifies the header's checksum here, so a damaged one is reported as such.
    H5O_info_t oi{};
    if (H5Oget_info_by_name2(loc, name, &oi, H5O_INFO_BASIC, H5P_DEFAULT) < 0)
      throw data_error(name_, what + " is corrupt: " + h5::last_error());
  }

 private:
  void check_header(uint64_t addr, const std::string& what) {
    char sig[4] = {};
    if (addr == undefined() || addr > ~uint64_t(0) - base_ || !read(base_ + addr, sig, 4) ||
        std::memcmp(sig, "OHDR", 4) != 0)
      throw data_error(name_, what + " has no checksummed (version 2) object header: a corrupt file, or not one "
                                     "written by `shoestring data prepare` (prepare it again)");
  }
  bool read(uint64_t offset, void* out, size_t n) {
    if (image_) {
      if (offset > image_size_ || n > image_size_ - offset) return false;
      std::memcpy(out, image_ + offset, n);
      return true;
    }
    in_.clear();  // a read past the end set failbit; the next one may still succeed
    if (!in_.is_open() || offset > uint64_t(std::numeric_limits<std::streamoff>::max())) return false;
    in_.seekg(std::streamoff(offset));
    in_.read(static_cast<char*>(out), std::streamsize(n));
    return in_.gcount() == std::streamsize(n);
  }
  uint64_t address(const unsigned char* p) const {
    uint64_t a = 0;
    for (int k = offset_size_ - 1; k >= 0; --k) a = a << 8 | p[k];
    return a;
  }
  uint64_t undefined() const { return offset_size_ == 8 ? ~uint64_t(0) : (uint64_t(1) << (8 * offset_size_)) - 1; }

  std::string name_;
  std::ifstream in_;
  const unsigned char* image_ = nullptr;
  size_t image_size_ = 0;
  int offset_size_ = 8;
  uint64_t base_ = 0;
};

TokenDataset::~TokenDataset() = default;

std::shared_ptr<TokenDataset> TokenDataset::open(const std::string& path) {
  h5::QuietErrors quiet;
  std::shared_ptr<TokenDataset> ds(new TokenDataset);
  ds->info_.path = path;
  check_is_file(path);
  RawFile raw(path, path);
  raw.check_superblock();
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) throw data_error(path, "truncated or corrupt HDF5 file (prepare it again)");
  ds->load(f, raw);
  return ds;
}

std::shared_ptr<TokenDataset> TokenDataset::open_image(const void* bytes, size_t n, const std::string& name) {
  h5::QuietErrors quiet;
  std::shared_ptr<TokenDataset> ds(new TokenDataset);
  ds->info_.path = name;
  if (n == 0) throw data_error(name, "empty file");
  RawFile raw(name, bytes, n);
  raw.check_superblock();
  h5::Id fapl = h5::plist(H5Pcreate(H5P_FILE_ACCESS));
  H5Pset_fapl_core(fapl, 1 << 16, 0);
  if (H5Pset_file_image(fapl, const_cast<void*>(bytes), n) < 0) throw data_error(name, "cannot take the file image");
  const hid_t f = H5Fopen(name.c_str(), H5F_ACC_RDONLY, fapl);
  if (f < 0) throw data_error(name, "truncated or corrupt HDF5 file");
  ds->load(f, raw);
  return ds;
}

void TokenDataset::load(int64_t file_id, RawFile& raw) {
  impl_ = std::make_unique<Impl>();
  impl_->file = h5::file(file_id);
  const hid_t f = impl_->file;
  auto& i = info_;
  const std::string& path = i.path;
  if (!has_attr(f, "format") || string_attr(f, "format", path) != "shoestring-tokens")
    throw data_error(path, "an HDF5 file but not a Shoestring token dataset (no format = shoestring-tokens)");
  i.format_version = int(int_attr(f, "format_version", path));
  if (i.format_version < 1 || i.format_version > kFormatVersion)
    throw data_error(path, "format version " + std::to_string(i.format_version) + " is not supported (this build reads 1.." +
                               std::to_string(kFormatVersion) + ")");
  i.tokenizer.kind = string_attr(f, "tokenizer_kind", path);
  i.tokenizer.vocab_size = int_attr(f, "tokenizer_vocab_size", path);
  i.tokenizer.model_sha256 = string_attr(f, "tokenizer_model_sha256", path);
  const int64_t eod = int_attr(f, "eod_id", path);
  const int64_t ntok = int_attr(f, "num_tokens", path), ndoc = int_attr(f, "num_documents", path);
  i.shard_index = int_attr(f, "shard_index", path);
  i.shard_count = int_attr(f, "shard_count", path);
  i.created_by = has_attr(f, "created_by") ? string_attr(f, "created_by", path) : "";
  if (i.tokenizer.vocab_size <= 0 || i.tokenizer.vocab_size > (int64_t(1) << 32) || eod < 0 ||
      eod >= i.tokenizer.vocab_size || ntok < 0 || ndoc < 0 || i.shard_count < 1 || i.shard_index < 0 ||
      i.shard_index >= i.shard_count)
    throw data_error(path, "inconsistent header attributes (vocabulary, eod id, counts or shard numbers)");
  i.eod_id = uint32_t(eod);
  i.num_tokens = uint64_t(ntok);
  i.num_documents = uint64_t(ndoc);

  // A 16 MiB chunk cache (HDF5's default is 1 MiB): a decompressed chunk serves every window that
  // falls in it while it stays cached, and the validation windows are read in order.
  h5::Id dapl = h5::plist(H5Pcreate(H5P_DATASET_ACCESS));
  H5Pset_chunk_cache(dapl, 1031, size_t(16) << 20, 1.0);
  raw.check_link(f, "tokens", "dataset /tokens");
  impl_->tokens = h5::dataset(H5Dopen2(f, "tokens", dapl));
  if (!impl_->tokens.ok()) throw data_error(path, "/tokens is not a dataset");
  h5::Id t = h5::type(H5Dget_type(impl_->tokens));
  const size_t width = H5Tget_size(t);
  if (H5Tget_class(t) != H5T_INTEGER || H5Tget_sign(t) != H5T_SGN_NONE || (width != 2 && width != 4))
    throw data_error(path, "/tokens must hold uint16 or uint32 ids");
  i.token_bits = int(width * 8);
  if (width == 2 && i.tokenizer.vocab_size > 65536) throw data_error(path, "/tokens is uint16 but the vocabulary exceeds 65536");
  if (length_1d(impl_->tokens, "tokens", path) != i.num_tokens)
    throw data_error(path, "/tokens holds " + std::to_string(length_1d(impl_->tokens, "tokens", path)) +
                               " ids but the header says " + std::to_string(i.num_tokens));
  h5::Id dcpl = h5::plist(H5Dget_create_plist(impl_->tokens));
  if (H5Pget_layout(dcpl) == H5D_CHUNKED) {
    hsize_t chunk = 0;
    H5Pget_chunk(dcpl, 1, &chunk);
    i.chunk_tokens = chunk;
    for (int k = 0, nf = H5Pget_nfilters(dcpl); k < nf; ++k) {
      unsigned flags = 0, cd[4] = {};
      size_t ncd = 4;
      char name[64] = {};
      const H5Z_filter_t id = H5Pget_filter2(dcpl, unsigned(k), &flags, &ncd, cd, sizeof name, name, nullptr);
      if (!i.filters.empty()) i.filters += "+";
      i.filters += id == H5Z_FILTER_DEFLATE ? "deflate(" + std::to_string(cd[0]) + ")"
                   : id == H5Z_FILTER_SHUFFLE ? std::string("shuffle")
                   : id == H5Z_FILTER_FLETCHER32 ? std::string("fletcher32") : std::string(name);
    }
  }
  if (i.filters.empty()) i.filters = "none";

  raw.check_link(f, "doc_offsets", "dataset /doc_offsets");
  const std::vector<uint64_t> off = read_all<uint64_t>(f, "doc_offsets", H5T_NATIVE_UINT64, path);
  if (off.size() != i.num_documents + 1 || off.front() != 0 || off.back() != i.num_tokens)
    throw data_error(path, "/doc_offsets does not match the token and document counts");
  // Every document holds at least its end-of-document id, so the offsets strictly increase. Checked
  // here, not only in verify(): `data inspect` computes document lengths and the validation split
  // searches the offsets before (or without) a verify.
  for (size_t d = 1; d < off.size(); ++d)
    if (off[d] <= off[d - 1]) throw data_error(path, "/doc_offsets is not increasing at document " + std::to_string(d));
  raw.check_link(f, "sources", "group /sources");
  h5::Id g = h5::group(H5Gopen2(f, "sources", H5P_DEFAULT));
  if (!g.ok()) throw data_error(path, "/sources is not a group");
  for (const char* name : {"path", "sha256", "bytes", "documents"})
    raw.check_link(g, name, std::string("dataset /sources/") + name);
  const auto paths = read_strings(g, "path", path), hashes = read_strings(g, "sha256", path);
  const auto bytes = read_all<uint64_t>(g, "bytes", H5T_NATIVE_UINT64, path);
  const auto docs = read_all<uint64_t>(g, "documents", H5T_NATIVE_UINT64, path);
  if (hashes.size() != paths.size() || bytes.size() != paths.size() || docs.size() != paths.size())
    throw data_error(path, "/sources lists have different lengths");
  for (size_t k = 0; k < paths.size(); ++k) i.sources.push_back({paths[k], bytes[k], hashes[k], docs[k]});
}

void TokenDataset::read(uint64_t offset, size_t n, uint32_t* out) const {
  if (n == 0) return;
  if (offset > info_.num_tokens || n > info_.num_tokens - offset)
    throw data_error(info_.path, "read of tokens [" + std::to_string(offset) + ", " + std::to_string(offset + n) +
                                     ") is past the end (" + std::to_string(info_.num_tokens) + " tokens)");
  h5::QuietErrors quiet;
  const hsize_t start = offset, count = n;
  h5::Id fs = h5::space(H5Dget_space(impl_->tokens));
  h5::Id ms = h5::space(H5Screate_simple(1, &count, nullptr));
  if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, nullptr, &count, nullptr) < 0 ||
      H5Dread(impl_->tokens, H5T_NATIVE_UINT32, ms, fs, H5P_DEFAULT, out) < 0)
    throw data_error(info_.path, "corrupt data in tokens [" + std::to_string(offset) + ", " + std::to_string(offset + n) +
                                     "): " + h5::last_error() + "; stopping rather than training on it");
}

// Read again rather than kept (8 bytes a document, for every open shard); load() checked the
// object's header before libhdf5 first parsed it.
std::vector<uint64_t> TokenDataset::doc_offsets() const {
  h5::QuietErrors quiet;
  return read_all<uint64_t>(impl_->file, "doc_offsets", H5T_NATIVE_UINT64, info_.path);
}

uint64_t TokenDataset::verify(const std::function<void(uint64_t, uint64_t)>& progress) const {
  const uint64_t step = info_.chunk_tokens > 0 ? info_.chunk_tokens : (uint64_t(1) << 20);
  const uint64_t chunks = (info_.num_tokens + step - 1) / step;
  const std::vector<uint64_t> off = doc_offsets();
  for (size_t d = 1; d < off.size(); ++d)
    if (off[d] <= off[d - 1]) throw data_error(info_.path, "/doc_offsets is not increasing at document " + std::to_string(d));
  std::vector<uint32_t> buf(step);
  size_t next_end = 1;  // index into off of the next document end to check
  for (uint64_t c = 0; c < chunks; ++c) {
    const uint64_t begin = c * step, n = std::min(step, info_.num_tokens - begin);
    read(begin, n, buf.data());
    for (uint64_t k = 0; k < n; ++k)
      if (int64_t(buf[k]) >= info_.tokenizer.vocab_size)
        throw data_error(info_.path, "token " + std::to_string(begin + k) + " has id " + std::to_string(buf[k]) +
                                         ", outside the vocabulary (" + std::to_string(info_.tokenizer.vocab_size) + ")");
    for (; next_end < off.size() && off[next_end] <= begin + n; ++next_end)
      if (buf[off[next_end] - 1 - begin] != info_.eod_id)
        throw data_error(info_.path, "document " + std::to_string(next_end - 1) + " does not end with the end-of-document id");
    if (progress) progress(c + 1, chunks);
  }
  return chunks;
}

}  // namespace shoestring::data

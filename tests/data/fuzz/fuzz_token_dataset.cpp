// libFuzzer target: the HDF5 token dataset reader. Any input must end in a DataError or a dataset
// that keeps the reader's promises -- never a crash, a hang or a sanitizer report.
// The first byte picks the mode:
//   'S'  structured: the rest is decoded into a dataset's objects (attribute values and types,
//        /tokens' type, shape, chunking, filters and ids, /doc_offsets, /sources), which libhdf5
//        writes as a valid file, so the fuzzer exercises our checks rather than libhdf5's
//        checksum failures (the rare, invalid choices take the high values of each input byte,
//        so an exhausted input decodes to a valid dataset);
//   'P'  the same, then (offset, byte) patches from the rest of the input applied to the image;
//   else raw: the whole input is the file image.
#include <fuzzer/FuzzedDataProvider.h>

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "data/data_error.h"
#include "data/hdf5_handles.h"
#include "data/token_dataset.h"

namespace {

using namespace shoestring::data;
namespace h5 = shoestring::data::h5;

// An integer type for a dataset or attribute: mostly the one the format uses, sometimes another.
hid_t pick_type(FuzzedDataProvider& in, hid_t usual) {
  const hid_t others[] = {H5T_STD_U8LE, H5T_STD_U16LE, H5T_STD_U32LE, H5T_STD_I32LE, H5T_STD_U64LE,
                          H5T_STD_I64BE, H5T_IEEE_F32LE};
  return in.ConsumeIntegralInRange<int>(0, 7) < 6 ? usual : others[in.ConsumeIntegralInRange<size_t>(0, 6)];
}

bool write_ints(hid_t loc, const char* name, hid_t type, const std::vector<uint64_t>& v, FuzzedDataProvider& in) {
  const hsize_t n = v.size();
  const int rank = in.ConsumeIntegralInRange<int>(0, 15) == 15 ? 2 : 1;
  const hsize_t dims[2] = {rank == 2 ? 1 : n, n};
  h5::Id sp = h5::space(H5Screate_simple(rank, rank == 2 ? dims : &n, nullptr));
  h5::Id dcpl = h5::plist(H5Pcreate(H5P_DATASET_CREATE));
  if (n > 0 && in.ConsumeBool()) {  // chunked, with some of the filters the writer uses
    const hsize_t chunk[2] = {1, in.ConsumeIntegralInRange<hsize_t>(1, n + 8)};
    H5Pset_chunk(dcpl, rank, rank == 2 ? chunk : chunk + 1);
    const unsigned filters = in.ConsumeIntegralInRange<int>(0, 7);
    if (filters & 1) H5Pset_shuffle(dcpl);
    if (filters & 2) H5Pset_deflate(dcpl, 1);
    if (filters & 4) H5Pset_fletcher32(dcpl);
  }
  h5::Id d = h5::dataset(H5Dcreate2(loc, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT));
  return d.ok() && (n == 0 || H5Dwrite(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) >= 0);
}

bool write_strings(hid_t loc, const char* name, const std::vector<std::string>& v, FuzzedDataProvider& in) {
  const hsize_t n = v.size();
  h5::Id sp = h5::space(H5Screate_simple(1, &n, nullptr));
  h5::Id t = h5::type(H5Tcopy(H5T_C_S1));
  if (in.ConsumeIntegralInRange<int>(0, 7) == 7) {  // variable-length: the reader must refuse it
    H5Tset_size(t, H5T_VARIABLE);
    std::vector<const char*> p;
    for (const auto& s : v) p.push_back(s.c_str());
    h5::Id d = h5::dataset(H5Dcreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    return d.ok() && (n == 0 || H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, p.data()) >= 0);
  }
  size_t width = in.ConsumeIntegralInRange<size_t>(1, 80);
  H5Tset_size(t, width);
  H5Tset_strpad(t, H5T_STR_NULLPAD);
  if (in.ConsumeBool()) H5Tset_cset(t, H5T_CSET_UTF8);
  std::string buf(v.size() * width, '\0');
  for (size_t i = 0; i < v.size(); ++i) buf.replace(i * width, std::min(width, v[i].size()), v[i].substr(0, width));
  h5::Id d = h5::dataset(H5Dcreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  return d.ok() && (n == 0 || H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) >= 0);
}

void string_attr(hid_t obj, const char* name, const std::string& value, FuzzedDataProvider& in) {
  h5::Id t = h5::type(H5Tcopy(H5T_C_S1));
  h5::Id sp = h5::space(H5Screate(H5S_SCALAR));
  switch (in.ConsumeIntegralInRange<int>(0, 15)) {
    case 13: return;  // missing
    case 14: {        // an integer where a string belongs
      const int64_t v = in.ConsumeIntegral<int64_t>();
      h5::Id a = h5::attr(H5Acreate2(obj, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT));
      H5Awrite(a, H5T_NATIVE_INT64, &v);
      return;
    }
    case 15: {  // variable-length
      H5Tset_size(t, H5T_VARIABLE);
      const char* p = value.c_str();
      h5::Id a = h5::attr(H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT));
      H5Awrite(a, t, &p);
      return;
    }
    default: {
      const std::string padded = value.empty() ? std::string(1, '\0') : value;
      H5Tset_size(t, padded.size());
      H5Tset_strpad(t, in.ConsumeBool() ? H5T_STR_NULLPAD : H5T_STR_NULLTERM);
      H5Tset_cset(t, in.ConsumeBool() ? H5T_CSET_UTF8 : H5T_CSET_ASCII);
      h5::Id a = h5::attr(H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT));
      H5Awrite(a, t, padded.data());
    }
  }
}

void int_attr(hid_t obj, const char* name, int64_t value, FuzzedDataProvider& in) {
  const int how = in.ConsumeIntegralInRange<int>(0, 15);
  if (how == 13) return;  // missing
  if (how == 14) {        // a string where an integer belongs
    string_attr(obj, name, std::to_string(value), in);
    return;
  }
  const hsize_t two = 2;
  h5::Id sp = h5::space(how == 15 ? H5Screate_simple(1, &two, nullptr) : H5Screate(H5S_SCALAR));
  const int64_t v[2] = {value, value};
  h5::Id a = h5::attr(H5Acreate2(obj, name, pick_type(in, H5T_STD_I64LE), sp, H5P_DEFAULT, H5P_DEFAULT));
  H5Awrite(a, H5T_NATIVE_INT64, v);
}

// A value that is usually the right one, sometimes anything.
int64_t mostly(FuzzedDataProvider& in, int64_t right) {
  return in.ConsumeIntegralInRange<int>(0, 7) == 7 ? in.ConsumeIntegral<int64_t>() : right;
}

// Decodes the input into a dataset file at `path` (false when libhdf5 refused to write the
// combination, e.g. a chunk larger than a fixed-size dataset allows). A real file, closed, rather
// than H5Fget_file_image of an open one: that image's superblock still says "open for writing",
// and libhdf5 refuses to open it.
bool write_structured(FuzzedDataProvider& in, const std::string& path) {
  h5::QuietErrors quiet;
  h5::Id f = h5::file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, h5::checksummed_format()));
  if (!f.ok()) return false;
  const int64_t vocab = in.ConsumeBool() ? in.ConsumeIntegralInRange<int64_t>(-2, 70000) : 257;
  const int64_t eod = mostly(in, vocab - 1);
  // Documents: lengths from the input, ids mostly inside the vocabulary, each ending with eod.
  std::vector<uint64_t> tokens, offsets{0};
  const size_t docs = in.ConsumeIntegralInRange<size_t>(0, 12);
  for (size_t d = 0; d < docs; ++d) {
    const size_t len = in.ConsumeIntegralInRange<size_t>(0, 300);
    for (size_t k = 0; k < len; ++k) tokens.push_back(uint64_t(mostly(in, in.ConsumeIntegralInRange<int64_t>(0, 300))));
    tokens.push_back(uint64_t(eod));
    offsets.push_back(tokens.size());
  }
  for (int k = in.ConsumeIntegralInRange<int>(0, 3); k > 0 && !offsets.empty(); --k)  // damage the offsets
    offsets[in.ConsumeIntegralInRange<size_t>(0, offsets.size() - 1)] = uint64_t(mostly(in, 0));
  const int shape = in.ConsumeIntegralInRange<int>(0, 15);  // /tokens as a group, a soft link, or missing
  if (shape == 13) {
    h5::Id g = h5::group(H5Gcreate2(f, "tokens", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  } else if (shape == 14) {
    H5Lcreate_soft("doc_offsets", f, "tokens", H5P_DEFAULT, H5P_DEFAULT);
  } else if (shape != 15) {
    if (!write_ints(f, "tokens", pick_type(in, vocab > 65536 ? H5T_STD_U32LE : H5T_STD_U16LE), tokens, in)) return false;
  }
  if (in.ConsumeIntegralInRange<int>(0, 15) != 15 && !write_ints(f, "doc_offsets", pick_type(in, H5T_STD_U64LE), offsets, in))
    return false;
  if (in.ConsumeIntegralInRange<int>(0, 15) != 15) {
    h5::Id g = h5::group(H5Gcreate2(f, "sources", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    auto count = [&] { return in.ConsumeIntegralInRange<size_t>(0, 3); };
    std::vector<std::string> paths(count()), hashes(count());
    for (auto& s : paths) s = in.ConsumeRandomLengthString(40);
    for (auto& s : hashes) s = in.ConsumeRandomLengthString(70);
    std::vector<uint64_t> bytes(count()), ndocs(count());
    for (auto& v : bytes) v = in.ConsumeIntegral<uint64_t>();
    for (auto& v : ndocs) v = in.ConsumeIntegral<uint64_t>();
    if (!write_strings(g, "path", paths, in) || !write_strings(g, "sha256", hashes, in) ||
        !write_ints(g, "bytes", pick_type(in, H5T_STD_U64LE), bytes, in) ||
        !write_ints(g, "documents", pick_type(in, H5T_STD_U64LE), ndocs, in))
      return false;
  }
  string_attr(f, "format", in.ConsumeIntegralInRange<int>(0, 15) == 15 ? in.ConsumeRandomLengthString(20) : "shoestring-tokens", in);
  int_attr(f, "format_version", mostly(in, kFormatVersion), in);
  string_attr(f, "tokenizer_kind", in.ConsumeBool() ? in.ConsumeRandomLengthString(20) : "byte", in);
  int_attr(f, "tokenizer_vocab_size", vocab, in);
  string_attr(f, "tokenizer_model_sha256", in.ConsumeRandomLengthString(70), in);
  int_attr(f, "eod_id", eod, in);
  int_attr(f, "num_tokens", mostly(in, int64_t(tokens.size())), in);
  int_attr(f, "num_documents", mostly(in, int64_t(docs)), in);
  int_attr(f, "shard_index", mostly(in, 0), in);
  int_attr(f, "shard_count", mostly(in, 1), in);
  if (in.ConsumeBool()) string_attr(f, "created_by", in.ConsumeRandomLengthString(30), in);
  return H5Fclose(f.release()) >= 0;
}

std::vector<uint8_t> structured_image(FuzzedDataProvider& in) {
  static const std::string path = std::string(access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") +
                                  "/shoestring-fuzz-" + std::to_string(getpid()) + ".h5";
  std::vector<uint8_t> image;
  if (write_structured(in, path)) {
    std::ifstream file(path, std::ios::binary);
    image.assign(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
  }
  std::remove(path.c_str());
  return image;
}

// What a dataset that passed verify() promises the loader; a broken promise is a bug in our checks.
void check_promises(const TokenDataset& ds) {
  const DatasetInfo& i = ds.info();
  const std::vector<uint64_t> off = ds.doc_offsets();
  if (off.size() != i.num_documents + 1 || off.front() != 0 || off.back() != i.num_tokens) __builtin_trap();
  std::vector<uint32_t> ids(i.num_tokens);
  ds.read(0, ids.size(), ids.data());
  for (const uint32_t id : ids)
    if (int64_t(id) >= i.tokenizer.vocab_size) __builtin_trap();
  for (size_t d = 1; d < off.size(); ++d)
    if (off[d] <= off[d - 1] || ids[off[d] - 1] != i.eod_id) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1 << 20)) return 0;
  std::vector<uint8_t> image;
  if (size > 0 && (data[0] == 'S' || data[0] == 'P')) {
    FuzzedDataProvider in(data + 1, size - 1);
    image = structured_image(in);
    if (image.empty()) return 0;
    while (data[0] == 'P' && in.remaining_bytes() >= 5) {
      const size_t at = in.ConsumeIntegral<uint32_t>() % image.size();
      image[at] = in.ConsumeIntegral<uint8_t>();
    }
  } else {
    image.assign(data, data + size);
  }
  try {
    const auto ds = TokenDataset::open_image(image.data(), image.size(), "fuzz.h5");
    // Bound the work per input: a forged header may claim billions of tokens.
    if (ds->info().num_tokens > (1u << 22) || ds->info().chunk_tokens > (1u << 22)) return 0;
    ds->verify();
    check_promises(*ds);
  } catch (const DataError&) {
  }
  return 0;
}

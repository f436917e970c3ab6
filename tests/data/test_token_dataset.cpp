// The HDF5 token dataset: what is written is read back, ids pick uint16 or uint32 by vocabulary,
// `data prepare` is independent of the thread count, and every kind of bad file is a one-line
// DataError naming the file.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <fstream>

#include "data/data_error.h"
#include "data/inspect.h"
#include "data/prepare.h"
#include "data/token_dataset.h"
#include "data_test_util.h"

using namespace shoestring::data;
namespace fs = std::filesystem;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const DataError& e) {
    return e.what();
  }
  return "(no error)";
}

std::vector<uint32_t> read_all(const TokenDataset& d) {
  std::vector<uint32_t> v(d.info().num_tokens);
  d.read(0, v.size(), v.data());
  return v;
}

TEST(TokenDataset, WritesAndReadsBackDocumentsAndMetadata) {
  const auto dir = dtest::temp_dir("roundtrip");
  const std::string path = (dir / "d.h5").string();
  dtest::write_byte_dataset(path, {"hello", "", "world!"}, 4);
  const auto d = TokenDataset::open(path);
  const DatasetInfo& i = d->info();
  EXPECT_EQ(i.num_tokens, 14u);  // 5 + 1, 0 + 1, 6 + 1
  EXPECT_EQ(i.num_documents, 3u);
  EXPECT_EQ(i.token_bits, 16);
  EXPECT_EQ(i.tokenizer, ByteTokenizer().identity());
  EXPECT_EQ(i.chunk_tokens, 4u);
  EXPECT_EQ(i.filters, "shuffle+deflate(1)+fletcher32");
  EXPECT_EQ(d->doc_offsets(), (std::vector<uint64_t>{0, 6, 7, 14}));
  const auto ids = read_all(*d);
  EXPECT_EQ(ByteTokenizer().decode(ids.data(), ids.size()), "hello<|eod|><|eod|>world!<|eod|>");
  std::vector<uint32_t> mid(3);
  d->read(5, 3, mid.data());  // across chunk boundaries
  EXPECT_EQ(mid, (std::vector<uint32_t>{256, 256, 'w'}));
  EXPECT_EQ(d->verify(), 4u);
  ASSERT_EQ(i.sources.size(), 1u);
  EXPECT_EQ(i.sources[0].documents, 3u);
  EXPECT_NE(error_of([&] { d->read(10, 5, mid.data()); }).find("past the end"), std::string::npos);
  fs::remove_all(dir);
}

TEST(TokenDataset, LargeVocabulariesAreStoredAsUint32) {
  const auto dir = dtest::temp_dir("wide");
  const std::string path = (dir / "w.h5").string();
  TokenDatasetWriter w(path, {"test", 100000, ""}, 99999);
  const std::vector<uint32_t> ids = {0, 65535, 65536, 99998};
  w.append_document(ids.data(), ids.size());
  EXPECT_THROW(w.append_document(std::vector<uint32_t>{100000}.data(), 1), DataError);
  w.close();
  const auto d = TokenDataset::open(path);
  EXPECT_EQ(d->info().token_bits, 32);
  EXPECT_EQ(read_all(*d), (std::vector<uint32_t>{0, 65535, 65536, 99998, 99999}));
  fs::remove_all(dir);
}

TEST(TokenDataset, BadFilesGiveOneLineErrorsNamingTheFile) {
  const auto dir = dtest::temp_dir("bad");
  const std::string good = (dir / "good.h5").string();
  std::vector<std::string> docs;
  for (int i = 0; i < 200; ++i) docs.push_back("document number " + std::to_string(i) + " with some text in it");
  dtest::write_byte_dataset(good, docs, 512);

  EXPECT_EQ(error_of([&] { TokenDataset::open((dir / "none.h5").string()); }), (dir / "none.h5").string() + ": no such file");
  dtest::write_text(dir / "text.h5", "just text");
  EXPECT_NE(error_of([&] { TokenDataset::open((dir / "text.h5").string()); }).find("text.h5: not an HDF5 file"), std::string::npos);

  std::ifstream in(good, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  dtest::write_text(dir / "trunc.h5", bytes.substr(0, bytes.size() / 2));
  EXPECT_NE(error_of([&] { TokenDataset::open((dir / "trunc.h5").string()); }).find("trunc.h5: truncated or corrupt HDF5"),
            std::string::npos);

  // Flip bytes inside the compressed token chunks: open works (metadata intact), reading the
  // damaged chunk fails its checksum and says where.
  haddr_t addr = 0;
  hsize_t chunk_bytes = 0;
  {
    const hid_t f = H5Fopen(good.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), d = H5Dopen2(f, "tokens", H5P_DEFAULT);
    hsize_t offset = 0;
    unsigned mask = 0;
    const hid_t space = H5Dget_space(d);
    ASSERT_GE(H5Dget_chunk_info(d, space, 1, &offset, &mask, &addr, &chunk_bytes), 0);
    H5Sclose(space);
    H5Dclose(d);
    H5Fclose(f);
  }
  std::string damaged = bytes;
  for (size_t k = size_t(addr) + chunk_bytes / 2; k < size_t(addr) + chunk_bytes / 2 + 8; ++k) damaged[k] = char(damaged[k] ^ 0x5A);
  dtest::write_text(dir / "corrupt.h5", damaged);
  const std::string err = error_of([&] {
    const auto d = TokenDataset::open((dir / "corrupt.h5").string());
    d->verify();
  });
  EXPECT_NE(err.find("corrupt.h5: corrupt data in tokens [512, 1024)"), std::string::npos) << err;
  EXPECT_EQ(err.find('\n'), std::string::npos) << "one line: " << err;

  // A valid HDF5 file in the checksummed format that is not ours.
  const hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110);
  H5Fclose(H5Fcreate((dir / "other.h5").string().c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl));
  H5Pclose(fapl);
  EXPECT_NE(error_of([&] { TokenDataset::open((dir / "other.h5").string()); }).find("other.h5: an HDF5 file but not a Shoestring token dataset"),
            std::string::npos);
  fs::remove_all(dir);
}

// Format 2 keeps libhdf5's parsers away from unchecksummed metadata: the superblock must be v2+
// (older files, including format 1 datasets, are refused with a request to prepare them again),
// every object the reader opens must have a v2 ("OHDR") header, and damaged metadata fails
// libhdf5's checksum -- each a one-line error naming the file.
TEST(TokenDataset, OnlyChecksummedMetadataReachesLibhdf5) {
  const auto dir = dtest::temp_dir("checksummed");
  const std::string good = (dir / "good.h5").string();
  dtest::write_byte_dataset(good, {"one document", "and another"}, 8);
  std::ifstream in(good, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GE(bytes.size(), 48u);
  EXPECT_EQ(bytes[8], 3) << "superblock version";

  auto one_line = [](const std::string& e) { return e.find('\n') == std::string::npos && e != "(no error)"; };
  const std::string rerun = "re-run `shoestring data prepare`";
  const std::string old_path = (dir / "old.h5").string();
  H5Fclose(H5Fcreate(old_path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));  // superblock v0
  std::string err = error_of([&] { TokenDataset::open(old_path); });
  EXPECT_NE(err.find("old.h5: an HDF5 file without metadata checksums (superblock version 0"), std::string::npos) << err;
  EXPECT_NE(err.find(rerun), std::string::npos) << err;

  // The inputs on which libhdf5 1.10.8 itself overflowed the heap or hung: refused up front.
  for (const auto& e : fs::directory_iterator(SHOESTRING_SOURCE_DIR "/tests/data/fuzz/libhdf5_findings")) {
    err = error_of([&] { TokenDataset::open(e.path().string()); });
    EXPECT_TRUE(one_line(err) && err.find(rerun) != std::string::npos) << e.path() << ": " << err;
  }

  // The object /tokens links to, its header signature damaged: refused before libhdf5 parses it.
  H5L_info_t link{};
  {
    const hid_t f = H5Fopen(good.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    ASSERT_GE(H5Lget_info(f, "tokens", &link, H5P_DEFAULT), 0);
    H5Fclose(f);
  }
  ASSERT_EQ(bytes.substr(link.u.address, 4), "OHDR");
  std::string damaged = bytes;
  damaged[link.u.address + 1] = 'X';
  dtest::write_text(dir / "header.h5", damaged);
  err = error_of([&] { TokenDataset::open((dir / "header.h5").string()); });
  EXPECT_NE(err.find("header.h5: dataset /tokens has no checksummed (version 2) object header"), std::string::npos) << err;

  // One byte of /tokens' header changed after its signature: libhdf5's checksum catches it.
  damaged = bytes;
  damaged[link.u.address + 12] = char(damaged[link.u.address + 12] ^ 0x10);
  dtest::write_text(dir / "metadata.h5", damaged);
  err = error_of([&] { TokenDataset::open((dir / "metadata.h5").string()); });
  EXPECT_TRUE(one_line(err)) << err;
  EXPECT_NE(err.find("metadata.h5: dataset /tokens is corrupt: incorrect metadata checksum"), std::string::npos) << err;
  fs::remove_all(dir);
}

TEST(Prepare, OutputDoesNotDependOnThreadsAndShardsSplitTheStream) {
  const auto dir = dtest::temp_dir("prepare");
  std::string text;
  for (int i = 0; i < 3000; ++i) text += "fortune " + std::to_string(i) + ": Grüße\n%\n";
  dtest::write_text(dir / "a.txt", text);
  dtest::write_text(dir / "b.txt", "last one, no newline");
  PrepareOptions o;
  o.inputs = {(dir / "a.txt").string(), (dir / "b.txt").string()};
  o.input.split = "line=%";
  o.writer.chunk_tokens = 1024;
  std::vector<std::vector<uint32_t>> outs;
  for (int threads : {1, 2}) {
    o.threads = threads;
    o.output = (dir / ("t" + std::to_string(threads) + ".h5")).string();
    const PrepareStats s = prepare_dataset(o);
    EXPECT_EQ(s.documents, 3001u);
    const auto d = TokenDataset::open(o.output);
    EXPECT_EQ(d->info().num_tokens, s.tokens);
    ASSERT_EQ(d->info().sources.size(), 2u);
    EXPECT_EQ(d->info().sources[0].bytes, text.size());
    EXPECT_EQ(d->info().sources[0].sha256.size(), 64u);
    EXPECT_EQ(d->info().sources[1].documents, 1u);
    d->verify();
    outs.push_back(read_all(*d));
  }
  EXPECT_EQ(outs[0], outs[1]);

  o.output = (dir / "sharded.h5").string();
  o.shard_tokens = 20000;
  const PrepareStats s = prepare_dataset(o);
  ASSERT_GT(s.outputs.size(), 1u);
  EXPECT_EQ(s.outputs[0], (dir / "sharded-00000.h5").string());
  std::vector<uint32_t> joined;
  for (size_t k = 0; k < s.outputs.size(); ++k) {
    const auto d = TokenDataset::open(s.outputs[k]);
    EXPECT_EQ(d->info().shard_index, int64_t(k));
    EXPECT_EQ(d->info().shard_count, int64_t(s.outputs.size()));
    const auto ids = read_all(*d);
    joined.insert(joined.end(), ids.begin(), ids.end());
  }
  EXPECT_EQ(joined, outs[0]);
  EXPECT_FALSE(fs::exists(dir / "sharded.h5"));

  o.inputs = {(dir / "empty.txt").string()};
  dtest::write_text(dir / "empty.txt", "");
  o.output = (dir / "e.h5").string();
  EXPECT_NE(error_of([&] { prepare_dataset(o); }).find("holds no text"), std::string::npos);
  EXPECT_FALSE(fs::exists(o.output));
  fs::remove_all(dir);
}

// A header whose values are each well-formed but wrong together: found at open (or by inspect),
// as one line naming the dataset, never a crash or a training run on it.
TEST(TokenDataset, InconsistentHeadersAreRefusedNamingTheDataset) {
  const auto dir = dtest::temp_dir("inconsistent");
  const std::string dup = (dir / "dup.h5").string(), vocab = (dir / "vocab.h5").string();
  dtest::write_byte_dataset(dup, {"one", "two", "three"}, 8);
  fs::copy_file(dup, vocab);
  {  // /doc_offsets {0, 4, 4, 14}: document 2 has no tokens, not even its end id
    const hid_t f = H5Fopen(dup.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), d = H5Dopen2(f, "doc_offsets", H5P_DEFAULT);
    const uint64_t off[4] = {0, 4, 4, 14};
    ASSERT_GE(H5Dwrite(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, off), 0);
    H5Dclose(d);
    H5Fclose(f);
  }
  std::string err = error_of([&] { TokenDataset::open(dup); });
  EXPECT_EQ(err, dup + ": /doc_offsets is not increasing at document 2");
  // inspect computed document lengths from these offsets before verifying them (and aborted).
  err = error_of([&] { inspect_file(dup, InspectOptions{}); });
  EXPECT_EQ(err, dup + ": /doc_offsets is not increasing at document 2");

  {  // a byte dataset claiming 300 ids
    const hid_t f = H5Fopen(vocab.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), a = H5Aopen(f, "tokenizer_vocab_size", H5P_DEFAULT);
    const int64_t v = 300;
    ASSERT_GE(H5Awrite(a, H5T_NATIVE_INT64, &v), 0);
    H5Aclose(a);
    H5Fclose(f);
  }
  err = error_of([&] { inspect_file(vocab, InspectOptions{}); });
  EXPECT_EQ(err.rfind(vocab + ": ", 0), 0u) << "names the dataset: " << err;
  EXPECT_NE(err.find("byte (vocab 300)"), std::string::npos) << err;
  fs::remove_all(dir);
}

// Failed writes leave nothing behind: not the temporary file, not the shards already finished
// (each of which would look like a complete dataset of its own).
TEST(Prepare, FailuresLeaveNoFiles) {
  const auto dir = dtest::temp_dir("prepare_fail");
  WriterOptions big;
  big.chunk_tokens = kMaxChunkTokens + 1;
  const std::string out = (dir / "x.h5").string();
  EXPECT_NE(error_of([&] { TokenDatasetWriter(out, ByteTokenizer().identity(), ByteTokenizer::kEod, big); })
                .find("x.h5: chunk size must be 1.."),
            std::string::npos);
  EXPECT_TRUE(fs::is_empty(dir)) << "left " << fs::directory_iterator(dir)->path();

  // More than one 8 MiB batch of good JSONL, then a bad line: shards of the first batch were
  // written before the error.
  const fs::path in = dir / "in.jsonl";
  {
    std::ofstream f(in);
    for (int i = 0; i < 300000; ++i) f << "{\"text\": \"document " << i << " with some words to fill it up\"}\n";
    f << "{\"text\": broken\n";
  }
  PrepareOptions o;
  o.inputs = {in.string()};
  o.output = (dir / "sh.h5").string();
  o.shard_tokens = 1000000;
  int batches = 0;
  EXPECT_NE(error_of([&] { prepare_dataset(o, [&](uint64_t, uint64_t, uint64_t, double) { ++batches; }); })
                .find("in.jsonl:300001"),
            std::string::npos);
  EXPECT_GE(batches, 1) << "the bad line must come after the first batch, so that shards were written";
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path() != in) left.push_back(e.path().filename().string());
  EXPECT_TRUE(left.empty()) << "left " << left.size() << " file(s), e.g. " << (left.empty() ? "" : left[0]);
  fs::remove_all(dir);
}

}  // namespace

// Tokenizers round-trip text exactly, including the inputs that usually break them; SHA-256 and the
// JSONL field reader against known answers.
#include <gtest/gtest.h>

#include "data/data_error.h"
#include "data/sha256.h"
#include "data/text_input.h"
#include "data/tokenizer.h"
#include "data_test_util.h"

using namespace shoestring::data;

namespace {

std::vector<std::string> tricky_texts() {
  return {"",
          "plain ascii",
          "\n\n\nempty lines\n\n",
          "no trailing newline",
          "Grüße, 日本語, emoji 🦀🎉, combining é, RTL שלום",
          std::string(100000, 'x') + "\n" + std::string(5000, ' ') + "very long line",
          std::string("nul\0inside", 10),
          "tabs\tand\r\nwindows line ends\r\n",
          "\xff\xfe invalid UTF-8 \xc3"};
}

TEST(ByteTokenizer, RoundTripsAnyBytes) {
  const ByteTokenizer t;
  for (const auto& text : tricky_texts()) {
    std::vector<uint32_t> ids;
    t.encode(text, ids);
    ASSERT_EQ(ids.size(), text.size());
    EXPECT_EQ(t.decode(ids.data(), ids.size()), text);
  }
  const uint32_t eod[] = {'a', ByteTokenizer::kEod, 'b'};
  EXPECT_EQ(t.decode(eod, 3), "a<|eod|>b");
  EXPECT_EQ(t.identity(), (TokenizerIdentity{"byte", 257, ""}));
}

TEST(SentencePiece, TrainsAndRoundTripsTrickyText) {
  if (!have_sentencepiece()) GTEST_SKIP() << "built without SentencePiece";
  const auto dir = dtest::temp_dir("spm");
  std::vector<std::string> lines;
  const char* words[] = {"the",    "quick",  "brown",   "fox",    "jumps",  "over",    "lazy",    "dog",
                         "Grüße",  "日本語", "river",   "seven",  "silver", "whisper", "garden",  "engine",
                         "market", "candle", "thunder", "orbit",  "paper",  "violet",  "harbour", "lantern"};
  for (size_t i = 0; i < 3000; ++i)
    lines.push_back(std::string(words[i * 7 % 24]) + " " + words[(i * 13 + 3) % 24] + ", " + words[(i * 5 + 1) % 24] +
                    " " + std::to_string(i) + std::string(i % 5, ' ') + words[i / 24 % 24] + ".");
  for (const char* type : {"bpe", "unigram"}) {
    SentencePieceTrainOptions o;
    o.model_prefix = (dir / type).string();
    o.vocab_size = 320;  // >= 256 byte-fallback pieces + the characters seen
    o.model_type = type;
    o.threads = 2;
    train_sentencepiece(lines, o);
    const auto t = make_tokenizer(o.model_prefix + ".model");
    EXPECT_EQ(t->vocab_size(), 320);
    EXPECT_EQ(t->identity().kind, "sentencepiece");
    EXPECT_EQ(t->identity().model_sha256.size(), 64u);
    for (const auto& text : tricky_texts()) {
      if (text.find('\0') != std::string::npos || text.find('\xff') != std::string::npos) continue;  // SentencePiece reads C strings / UTF-8
      std::vector<uint32_t> ids;
      t->encode(text, ids);
      EXPECT_EQ(t->decode(ids.data(), ids.size()), text) << type << ": " << text.substr(0, 40);
      if (text.size() > 1000) {
        EXPECT_LT(ids.size(), text.size()) << "long text should compress";
      }
    }
  }
  std::filesystem::remove_all(dir);
}

TEST(Tokenizer, ClearErrors) {
  EXPECT_THROW(make_tokenizer("/no/such/model.model"), DataError);
  const auto dir = dtest::temp_dir("badspm");
  dtest::write_text(dir / "bad.model", "not a model");
  if (have_sentencepiece()) {
    try {
      make_tokenizer((dir / "bad.model").string());
      FAIL();
    } catch (const DataError& e) {
      EXPECT_NE(std::string(e.what()).find("bad.model: not a valid SentencePiece model"), std::string::npos) << e.what();
    }
  }
  std::filesystem::remove_all(dir);
}

TEST(Sha256, KnownAnswers) {  // FIPS 180-4 examples
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  Sha256 h;  // the same bytes fed in odd pieces
  const std::string a(1000, 'a');
  for (size_t i = 0; i < a.size(); i += 37) h.update(a.data() + i, std::min<size_t>(37, a.size() - i));
  EXPECT_EQ(h.hex(), sha256_hex(a));
}

TEST(JsonField, DecodesEscapesAndSkipsOtherFields) {
  EXPECT_EQ(json_string_field(R"({"id": 3, "meta": {"a": [1, "}"]}, "text": "a\nb \"q\" \u00e9 \ud83e\udd80"})", "text"),
            "a\nb \"q\" \xc3\xa9 \xf0\x9f\xa6\x80");
  EXPECT_EQ(json_string_field(R"({"body":"x","text":""})", "text"), "");
  EXPECT_THROW(json_string_field("[1,2]", "text"), std::invalid_argument);
  EXPECT_THROW(json_string_field(R"({"body": "x"})", "text"), std::invalid_argument);
  EXPECT_THROW(json_string_field(R"({"text": 5})", "text"), std::invalid_argument);
  EXPECT_THROW(json_string_field(R"({"text": "open)", "text"), std::invalid_argument);
}

TEST(DocumentReader, SplitModesKeepTheTextExact) {
  const auto dir = dtest::temp_dir("reader");
  dtest::write_text(dir / "a.txt", "one\n%\ntwo\nlines\n%\n%\nthree");
  dtest::write_text(dir / "b.jsonl", "{\"text\": \"j1\"}\n\n{\"text\": \"j2\\n\"}\n");
  auto read_all = [&](const std::vector<std::string>& files, InputOptions o) {
    DocumentReader r(files, o);
    std::vector<std::string> docs;
    std::string d;
    size_t f = 0;
    while (r.next(d, f)) docs.push_back(d);
    return docs;
  };
  const std::string a = (dir / "a.txt").string(), b = (dir / "b.jsonl").string();
  EXPECT_EQ(read_all({a}, {}), std::vector<std::string>{"one\n%\ntwo\nlines\n%\n%\nthree"});
  InputOptions pct;
  pct.split = "line=%";
  EXPECT_EQ(read_all({a, b}, pct), (std::vector<std::string>{"one\n", "two\nlines\n", "three", "j1", "j2\n"}));
  dtest::write_text(dir / "c.txt", "p1\nstill p1\n\n\np2\n");
  InputOptions para;
  para.split = "blank-line";
  EXPECT_EQ(read_all({(dir / "c.txt").string()}, para), (std::vector<std::string>{"p1\nstill p1\n", "p2\n"}));
  dtest::write_text(dir / "bad.jsonl", "{\"text\": \"ok\"}\nnot json\n");
  try {
    read_all({(dir / "bad.jsonl").string()}, {});
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl:2: not a JSON object"), std::string::npos) << e.what();
  }
  EXPECT_THROW(expand_inputs({(dir / "missing.txt").string()}), DataError);
  const auto files = expand_inputs({dir.string()});
  EXPECT_EQ(files.size(), 4u);
  EXPECT_TRUE(std::is_sorted(files.begin(), files.end()));
  std::filesystem::remove_all(dir);
}

}  // namespace

#pragma once
// Tokenizers: text -> token ids -> text. Two kinds:
//  - byte: ids 0..255 are the bytes of the UTF-8 text, 256 is the end-of-document token; no model
//    file, vocabulary 257. Every byte string round-trips exactly.
//  - sentencepiece: a SentencePiece model file (BPE or unigram); its </s> piece ends documents.
// A dataset records its tokenizer's identity (kind, vocabulary, SHA-256 of the model file) so the
// loader can refuse a config that would read the ids with a different vocabulary.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace shoestring::data {

struct TokenizerIdentity {
  std::string kind;          // "byte" | "sentencepiece"
  int64_t vocab_size = 0;
  std::string model_sha256;  // empty for byte
  bool operator==(const TokenizerIdentity&) const = default;
};
std::string describe(const TokenizerIdentity& t);  // "byte (vocab 257)", "sentencepiece (vocab 8000, model 3fa2...)"

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Appends the ids of `text` (no end-of-document token) to `out`. Thread-safe (const).
  virtual void encode(std::string_view text, std::vector<uint32_t>& out) const = 0;
  // The text of `ids`; the end-of-document token is shown as "<|eod|>" (kEodText).
  virtual std::string decode(const uint32_t* ids, size_t n) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual uint32_t eod_id() const = 0;
  virtual TokenizerIdentity identity() const = 0;
};

inline constexpr std::string_view kEodText = "<|eod|>";

class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr uint32_t kEod = 256;
  void encode(std::string_view text, std::vector<uint32_t>& out) const override;
  std::string decode(const uint32_t* ids, size_t n) const override;
  int64_t vocab_size() const override { return 257; }
  uint32_t eod_id() const override { return kEod; }
  TokenizerIdentity identity() const override { return {"byte", 257, ""}; }
};

// "byte" or the path of a SentencePiece .model file; throws DataError for a missing or invalid
// model, or when this build has no SentencePiece.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec);

// Whether this build links SentencePiece (the sentencepiece tokenizer and train-tokenizer).
bool have_sentencepiece();

struct SentencePieceTrainOptions {
  std::string model_prefix;      // writes PREFIX.model and PREFIX.vocab
  int64_t vocab_size = 8000;
  std::string model_type = "bpe";  // bpe | unigram
  int threads = 0;               // 0: all cores
  int64_t max_sentences = 2000000;  // sampled from the input when it holds more
};
// Trains a SentencePiece model on `sentences` (one training sentence per entry). Normalisation
// is the identity and unknown characters fall back to bytes, so encode/decode round-trips any
// UTF-8 text exactly (the default NFKC would silently rewrite the user's text).
void train_sentencepiece(const std::vector<std::string>& sentences, const SentencePieceTrainOptions& opts);

}  // namespace shoestring::data

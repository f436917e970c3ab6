// The SentencePiece tokenizer and trainer. Compiled with SHOESTRING_HAVE_SENTENCEPIECE when
// pkg-config finds sentencepiece.pc; otherwise the functions below say what is missing.
#include <algorithm>
#include <cstdio>
#include <thread>
#include <unordered_map>

#include "data/data_error.h"
#include "data/sha256.h"
#include "data/tokenizer.h"

#ifdef SHOESTRING_HAVE_SENTENCEPIECE
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#endif

namespace shoestring::data {

#ifdef SHOESTRING_HAVE_SENTENCEPIECE

namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) : path_(path) {
    const auto st = sp_.Load(path);
    if (!st.ok()) throw data_error(path, "not a valid SentencePiece model: " + st.ToString());
    if (sp_.eos_id() < 0)
      throw data_error(path, "SentencePiece model has no </s> piece, which Shoestring uses to end documents");
    id_ = {"sentencepiece", sp_.GetPieceSize(), sha256_file(path)};
  }
  void encode(std::string_view text, std::vector<uint32_t>& out) const override {
    std::vector<int> ids;
    const auto st = sp_.Encode(absl::string_view(text.data(), text.size()), &ids);
    if (!st.ok()) throw data_error(path_, "SentencePiece encode failed: " + st.ToString());
    out.insert(out.end(), ids.begin(), ids.end());
  }
  std::string decode(const uint32_t* ids, size_t n) const override {
    // Decode runs between end-of-document tokens, which SentencePiece would drop silently.
    std::string text;
    std::vector<int> run;
    auto flush = [&] {
      std::string piece;
      if (!run.empty() && !sp_.Decode(run, &piece).ok()) piece = "<|undecodable|>";
      text += piece;
      run.clear();
    };
    for (size_t i = 0; i < n; ++i) {
      if (ids[i] == eod_id()) {
        flush();
        text += kEodText;
      } else if (int64_t(ids[i]) >= id_.vocab_size) {
        flush();
        text += "<|" + std::to_string(ids[i]) + "|>";
      } else {
        run.push_back(int(ids[i]));
      }
    }
    flush();
    return text;
  }
  int64_t vocab_size() const override { return id_.vocab_size; }
  uint32_t eod_id() const override { return uint32_t(sp_.eos_id()); }
  TokenizerIdentity identity() const override { return id_; }

 private:
  std::string path_;
  sentencepiece::SentencePieceProcessor sp_;
  TokenizerIdentity id_;
};

class VectorIterator final : public sentencepiece::SentenceIterator {
 public:
  explicit VectorIterator(const std::vector<std::string>& v) : v_(v) {}
  bool done() const override { return i_ >= v_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return v_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& v_;
  size_t i_ = 0;
};

}  // namespace

bool have_sentencepiece() { return true; }

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::string& path) {
  return std::make_unique<SentencePieceTokenizer>(path);
}

void train_sentencepiece(const std::vector<std::string>& sentences, const SentencePieceTrainOptions& o) {
  if (o.model_type != "bpe" && o.model_type != "unigram")
    throw DataError("train-tokenizer: model type must be bpe or unigram, got '" + o.model_type + "'");
  if (sentences.empty()) throw DataError("train-tokenizer: the input holds no text");
  const int threads = o.threads > 0 ? o.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  const std::unordered_map<std::string, std::string> args = {
      {"model_prefix", o.model_prefix},
      {"vocab_size", std::to_string(o.vocab_size)},
      {"model_type", o.model_type},
      {"num_threads", std::to_string(threads)},
      {"input_sentence_size", std::to_string(o.max_sentences)},
      {"shuffle_input_sentence", "true"},
      // Exact round trips: no NFKC rewriting, no whitespace squeezing, bytes for unseen characters.
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "false"},
      {"byte_fallback", "true"},
      {"character_coverage", "0.9995"},
      {"split_digits", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"max_sentence_length", "16384"},
      {"minloglevel", "2"},
  };
  VectorIterator it(sentences);
  const auto st = sentencepiece::SentencePieceTrainer::Train(args, &it);
  if (!st.ok()) {
    // The commonest failure, said in our terms: SentencePiece's text names its own source line and a
    // --character_coverage option that `data train-tokenizer` does not have.
    const std::string what = st.ToString();
    const size_t at = what.find("Vocabulary size is smaller than required_chars. ");
    long long asked = 0, needed = 0;
    if (at != std::string::npos &&
        std::sscanf(what.c_str() + at + 48, "%lld vs %lld", &asked, &needed) == 2)
      throw DataError("train-tokenizer: --vocab-size " + std::to_string(asked) + " is too small for this text: it needs at least " +
                      std::to_string(needed) + " (its characters, the 256 byte-fallback pieces and the special tokens)");
    throw DataError("train-tokenizer: SentencePiece training failed: " + what);
  }
}

#else  // no SentencePiece in this build

bool have_sentencepiece() { return false; }

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::string& path) {
  throw data_error(path, "this build has no SentencePiece (install libsentencepiece-dev and reconfigure); use data.tokenizer: byte");
}

void train_sentencepiece(const std::vector<std::string>&, const SentencePieceTrainOptions&) {
  throw DataError("train-tokenizer: this build has no SentencePiece (install libsentencepiece-dev and reconfigure)");
}

#endif

}  // namespace shoestring::data

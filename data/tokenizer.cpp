#include "data/tokenizer.h"

#include <filesystem>

#include "data/data_error.h"

namespace shoestring::data {

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::string& path);  // sentencepiece_tokenizer.cpp

std::string describe(const TokenizerIdentity& t) {
  std::string s = t.kind + " (vocab " + std::to_string(t.vocab_size);
  if (!t.model_sha256.empty()) s += ", model sha256 " + t.model_sha256.substr(0, 12);
  return s + ")";
}

void ByteTokenizer::encode(std::string_view text, std::vector<uint32_t>& out) const {
  const size_t base = out.size();
  out.resize(base + text.size());
  for (size_t i = 0; i < text.size(); ++i) out[base + i] = static_cast<unsigned char>(text[i]);
}

std::string ByteTokenizer::decode(const uint32_t* ids, size_t n) const {
  std::string s;
  s.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (ids[i] < 256) s += char(ids[i]);
    else if (ids[i] == kEod) s += kEodText;
    else s += "<|" + std::to_string(ids[i]) + "|>";  // out of range: shown, never hidden
  }
  return s;
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec) {
  if (spec == "byte") return std::make_unique<ByteTokenizer>();
  if (!std::filesystem::exists(spec))
    throw data_error(spec, "no such tokenizer model (data.tokenizer is 'byte' or the path of a SentencePiece .model file)");
  return make_sentencepiece_tokenizer(spec);
}

}  // namespace shoestring::data

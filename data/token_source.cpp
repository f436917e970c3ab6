#include "data/token_source.h"

#include <glob.h>

#include <algorithm>
#include <filesystem>
#include <functional>

#include "data/data_error.h"
#include "data/llmc_bin.h"
#include "data/token_dataset.h"

namespace shoestring::data {

namespace {

// Concatenation of files; `starts[i]` is the global offset of file i's first token.
class FileStream final : public TokenSource {
 public:
  using Reader = std::function<void(uint64_t, size_t, uint32_t*)>;
  using Documents = std::function<std::vector<uint64_t>()>;  // the file's document offsets
  void add(const std::string& path, uint64_t n, Reader r, Documents docs = {}) {
    starts_.push_back(total_);
    paths_.push_back(path);
    readers_.push_back(std::move(r));
    documents_.push_back(std::move(docs));
    total_ += n;
  }
  uint64_t num_tokens() const override { return total_; }
  void read(uint64_t offset, size_t n, uint32_t* out) const override {
    if (offset > total_ || n > total_ - offset)
      throw DataError("token stream: read of [" + std::to_string(offset) + ", " + std::to_string(offset + n) +
                      ") is past the end (" + std::to_string(total_) + " tokens)");
    // The file holding `offset`, then as many following files as the range spans.
    size_t f = size_t(std::upper_bound(starts_.begin(), starts_.end(), offset) - starts_.begin()) - 1;
    while (n > 0) {
      const uint64_t end = f + 1 < starts_.size() ? starts_[f + 1] : total_;
      const size_t take = size_t(std::min<uint64_t>(n, end - offset));
      readers_[f](offset - starts_[f], take, out);
      out += take, offset += take, n -= take, ++f;
    }
  }
  TokenizerIdentity tokenizer() const override { return tokenizer_; }
  std::optional<std::pair<uint64_t, uint64_t>> document_at(uint64_t offset) const override {
    if (offset >= total_) return std::nullopt;
    const size_t f = size_t(std::upper_bound(starts_.begin(), starts_.end(), offset) - starts_.begin()) - 1;
    if (!documents_[f]) return std::nullopt;
    // Read once, when the validation split is made. The reader checks only that the offsets span
    // the file (verify() that they increase), so a bad file is refused here too.
    const std::vector<uint64_t> off = documents_[f]();
    const uint64_t local = offset - starts_[f];
    const auto it = std::upper_bound(off.begin(), off.end(), local);
    if (it == off.begin() || it == off.end() || *(it - 1) > local)
      throw data_error(paths_[f], "/doc_offsets is not increasing (run `shoestring data inspect` on it)");
    return std::make_pair(starts_[f] + *(it - 1), starts_[f] + *it);
  }
  std::string describe() const override {
    std::string s = paths_.size() == 1 ? paths_[0] : std::to_string(paths_.size()) + " files (" + paths_[0] + ", ...)";
    return s + ", " + std::to_string(total_) + " tokens";
  }
  TokenizerIdentity tokenizer_{"unknown", 0, ""};

 private:
  std::vector<uint64_t> starts_;
  std::vector<std::string> paths_;
  std::vector<Reader> readers_;
  std::vector<Documents> documents_;
  uint64_t total_ = 0;
};

class Slice final : public TokenSource {
 public:
  Slice(std::shared_ptr<const TokenSource> base, uint64_t begin, uint64_t end)
      : base_(std::move(base)), begin_(begin), end_(end) {}
  uint64_t num_tokens() const override { return end_ - begin_; }
  void read(uint64_t offset, size_t n, uint32_t* out) const override {
    if (offset > num_tokens() || n > num_tokens() - offset) throw DataError("token slice: read past the end");
    base_->read(begin_ + offset, n, out);
  }
  TokenizerIdentity tokenizer() const override { return base_->tokenizer(); }
  std::string describe() const override {
    return "tokens [" + std::to_string(begin_) + ", " + std::to_string(end_) + ") of " + base_->describe();
  }

 private:
  std::shared_ptr<const TokenSource> base_;
  uint64_t begin_, end_;
};

}  // namespace

std::vector<std::string> expand_paths(const std::vector<std::string>& specs) {
  std::vector<std::string> out;
  for (const auto& spec : specs) {
    if (spec.find_first_of("*?[") == std::string::npos) {
      if (!std::filesystem::exists(spec)) throw data_error(spec, "no such file");
      out.push_back(spec);
      continue;
    }
    glob_t g{};
    const int rc = ::glob(spec.c_str(), 0, nullptr, &g);
    std::vector<std::string> found(g.gl_pathv, g.gl_pathv + g.gl_pathc);
    globfree(&g);
    if (rc != 0 || found.empty()) throw data_error(spec, "the pattern matches no file");
    std::sort(found.begin(), found.end());  // shard order must not depend on the directory listing
    out.insert(out.end(), found.begin(), found.end());
  }
  if (out.empty()) throw DataError("data.path: no dataset files given");
  return out;
}

std::shared_ptr<TokenSource> open_token_files(const std::vector<std::string>& specs, const std::string& format) {
  auto stream = std::make_shared<FileStream>();
  for (const auto& path : expand_paths(specs)) {
    if (format == "llmc") {
      auto f = LlmcBinFile::open(path);
      stream->add(path, f->num_tokens(), [f](uint64_t o, size_t n, uint32_t* out) { f->read(o, n, out); });
    } else if (format == "hdf5") {
      auto d = TokenDataset::open(path);
      const auto& id = d->info().tokenizer;
      if (stream->tokenizer_.kind == "unknown") stream->tokenizer_ = id;
      else if (!(stream->tokenizer_ == id))
        throw data_error(path, "tokenizer " + describe(id) + " differs from the other files' " + describe(stream->tokenizer_));
      stream->add(path, d->info().num_tokens, [d](uint64_t o, size_t n, uint32_t* out) { d->read(o, n, out); },
                  [d] { return d->doc_offsets(); });
    } else {
      throw DataError("data.source: unknown file format '" + format + "'");
    }
  }
  return stream;
}

std::shared_ptr<TokenSource> slice_tokens(std::shared_ptr<const TokenSource> base, uint64_t begin, uint64_t end) {
  if (begin > end || end > base->num_tokens()) throw DataError("token slice [" + std::to_string(begin) + ", " + std::to_string(end) + ") is out of range");
  return std::make_shared<Slice>(std::move(base), begin, end);
}

}  // namespace shoestring::data

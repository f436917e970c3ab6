#pragma once
// Reading the user's text for `data prepare` and `data train-tokenizer`: plain text files,
// directories of them (recursively, in sorted order, hidden files skipped), JSONL with a text
// field, or "-" for stdin, cut into documents.
#include <cstdint>
#include <istream>
#include <memory>
#include <string>
#include <vector>

#include "data/sha256.h"

namespace shoestring::data {

struct InputOptions {
  std::string format = "auto";      // auto (.jsonl/.json -> jsonl, else text) | text | jsonl
  std::string text_field = "text";  // jsonl: the field holding each document's text
  // text: how a file is cut into documents: "file" (the whole file), "blank-line" (paragraphs),
  // or "line=STR" (a line equal to STR separates documents, e.g. line=% for fortune files).
  std::string split = "file";
};

// Files named by the arguments: files as given, directories expanded, "-" kept for stdin.
// A missing path is a DataError.
std::vector<std::string> expand_inputs(const std::vector<std::string>& args);

// Streams documents in input order. Empty documents are skipped.
class DocumentReader {
 public:
  DocumentReader(std::vector<std::string> files, InputOptions opts);
  ~DocumentReader();
  // The next document; false after the last. `file_index` says which input it came from.
  bool next(std::string& doc, size_t& file_index);
  uint64_t bytes_read() const { return bytes_read_; }
  const std::vector<std::string>& files() const { return files_; }
  // The hash and size of the raw bytes read from stdin (complete once next() returned false).
  std::string stdin_sha256() { return stdin_hash_.hex(); }
  uint64_t stdin_bytes() const { return stdin_bytes_; }

 private:
  bool next_line(std::string& line);  // one line with its '\n' (none at a file's end); false at EOF
  bool open_next();
  bool is_jsonl(const std::string& path) const;
  std::vector<std::string> files_;
  InputOptions opts_;
  size_t current_ = 0;  // index of the open file + 1 (0: none opened yet)
  std::unique_ptr<std::istream> owned_;
  std::istream* in_ = nullptr;
  uint64_t bytes_read_ = 0, line_no_ = 0;
  Sha256 stdin_hash_;
  uint64_t stdin_bytes_ = 0;
};

// The string value of `field` in a one-line JSON object, with escapes decoded (\uXXXX to UTF-8).
// Throws std::invalid_argument with the reason when the line is not such an object.
std::string json_string_field(const std::string& line, const std::string& field);

}  // namespace shoestring::data

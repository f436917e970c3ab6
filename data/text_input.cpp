#include "data/text_input.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <stdexcept>

#include "data/data_error.h"

namespace fs = std::filesystem;

namespace shoestring::data {

namespace {

// Why a file is not text we read, or "": a NUL byte in its first 8 KiB (an image, an archive, a
// dataset we wrote), or UTF-16's byte-order mark (its ASCII letters are NUL-padded too).
std::string not_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char buf[8192];
  in.read(buf, sizeof buf);
  const std::streamsize n = in.gcount();
  if (n >= 2 && ((buf[0] == '\xFF' && buf[1] == '\xFE') || (buf[0] == '\xFE' && buf[1] == '\xFF')))
    return "UTF-16 text; convert it to UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)";
  if (std::find(buf, buf + n, '\0') != buf + n) return "not text (a NUL byte in its first 8 KiB)";
  return "";
}

}  // namespace

std::vector<std::string> expand_inputs(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  for (const auto& a : args) {
    if (a == "-") {
      out.push_back(a);
    } else if (fs::is_directory(a)) {
      std::vector<std::string> found;
      for (auto it = fs::recursive_directory_iterator(a, fs::directory_options::follow_directory_symlink);
           it != fs::recursive_directory_iterator(); ++it) {
        const std::string name = it->path().filename().string();
        if (!name.empty() && name[0] == '.') {
          if (it->is_directory()) it.disable_recursion_pending();
          continue;
        }
        if (!it->is_regular_file()) continue;
        // A directory of text may hold the odd image or an earlier dataset: skipped, and said so.
        if (const std::string why = not_text(it->path().string()); !why.empty()) {
          std::cerr << "skipping " << it->path().string() << ": " << why << "\n";
          continue;
        }
        found.push_back(it->path().string());
      }
      std::sort(found.begin(), found.end());  // the dataset must not depend on directory order
      if (found.empty()) throw data_error(a, "directory holds no text files");
      out.insert(out.end(), found.begin(), found.end());
    } else if (fs::is_regular_file(a)) {
      if (const std::string why = not_text(a); !why.empty()) throw data_error(a, why);
      out.push_back(a);
    } else {
      throw data_error(a, fs::exists(a) ? "not a regular file or directory" : "no such file or directory");
    }
  }
  if (out.empty()) throw DataError("no input files given");
  return out;
}

DocumentReader::DocumentReader(std::vector<std::string> files, InputOptions opts)
    : files_(std::move(files)), opts_(std::move(opts)) {
  if (opts_.format != "auto" && opts_.format != "text" && opts_.format != "jsonl")
    throw DataError("--format must be auto, text or jsonl, got '" + opts_.format + "'");
  if (opts_.split != "file" && opts_.split != "blank-line" && opts_.split.rfind("line=", 0) != 0)
    throw DataError("--split must be file, blank-line or line=STR, got '" + opts_.split + "'");
}

DocumentReader::~DocumentReader() = default;

bool DocumentReader::is_jsonl(const std::string& path) const {
  if (opts_.format != "auto") return opts_.format == "jsonl";
  const std::string ext = fs::path(path).extension().string();
  return ext == ".jsonl" || ext == ".json";
}

bool DocumentReader::open_next() {
  if (current_ >= files_.size()) return false;
  const std::string& path = files_[current_++];
  line_no_ = 0;
  if (path == "-") {
    owned_.reset();
    in_ = &std::cin;
  } else {
    owned_ = std::make_unique<std::ifstream>(path, std::ios::binary);
    if (!*owned_) throw data_error(path, "cannot open for reading");
    in_ = owned_.get();
  }
  return true;
}

bool DocumentReader::next_line(std::string& line) {
  line.clear();
  if (!in_ || !std::getline(*in_, line)) return false;
  ++line_no_;
  if (!in_->eof()) line += '\n';  // getline stopped at a newline, which is part of the text
  bytes_read_ += line.size();
  if (in_ == &std::cin) {
    stdin_hash_.update(line.data(), line.size());
    stdin_bytes_ += line.size();
  }
  return true;
}

bool DocumentReader::next(std::string& doc, size_t& file_index) {
  doc.clear();
  std::string line;
  for (;;) {
    if (!in_ && !open_next()) return false;
    const std::string& path = files_[current_ - 1];
    file_index = current_ - 1;
    const bool jsonl = is_jsonl(path);
    while (next_line(line)) {
      if (jsonl) {
        if (line.find_first_not_of(" \t\r\n") == std::string::npos) continue;
        try {
          doc = json_string_field(line, opts_.text_field);
        } catch (const std::invalid_argument& e) {
          throw data_error(path + ":" + std::to_string(line_no_), e.what());
        }
        if (!doc.empty()) return true;
        continue;
      }
      if (opts_.split == "file") {
        doc += line;
        continue;
      }
      std::string bare = line;
      if (!bare.empty() && bare.back() == '\n') bare.pop_back();
      if (!bare.empty() && bare.back() == '\r') bare.pop_back();
      const bool separator = opts_.split == "blank-line" ? bare.find_first_not_of(" \t") == std::string::npos
                                                         : bare == opts_.split.substr(5);
      if (!separator) {
        doc += line;
        continue;
      }
      if (!doc.empty()) return true;
    }
    if (in_ != &std::cin && in_ && in_->bad()) throw data_error(path, "read error");
    in_ = nullptr;  // end of this file: a document never spans two files
    if (!doc.empty()) return true;
  }
}

namespace {

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

// A JSON string starting at s[i] == '"'; leaves i after the closing quote.
std::string parse_string(const std::string& s, size_t& i) {
  std::string out;
  auto hex4 = [&](size_t at) {
    if (at + 4 > s.size()) throw std::invalid_argument("truncated \\u escape");
    uint32_t v = 0;
    for (size_t k = at; k < at + 4; ++k) {
      const char c = s[k];
      v = v * 16 + uint32_t(c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                            : c >= 'A' && c <= 'F' ? c - 'A' + 10 : throw std::invalid_argument("bad \\u escape"));
    }
    return v;
  };
  for (++i; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '"') {
      ++i;
      return out;
    }
    if (c != '\\') {
      out += c;
      continue;
    }
    if (++i >= s.size()) break;
    switch (s[i]) {
      case '"': out += '"'; break;
      case '\\': out += '\\'; break;
      case '/': out += '/'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'u': {
        uint32_t cp = hex4(i + 1);
        i += 4;
        if (cp >= 0xD800 && cp < 0xDC00 && i + 6 < s.size() && s[i + 1] == '\\' && s[i + 2] == 'u') {
          const uint32_t lo = hex4(i + 3);
          if (lo >= 0xDC00 && lo < 0xE000) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            i += 6;
          }
        }
        append_utf8(out, cp);
        break;
      }
      default: throw std::invalid_argument(std::string("bad escape \\") + s[i]);
    }
  }
  throw std::invalid_argument("unterminated string");
}

// Skips one JSON value of any kind starting at s[i] (the values of other fields).
void skip_value(const std::string& s, size_t& i) {
  if (i >= s.size()) throw std::invalid_argument("missing value");
  if (s[i] == '"') {
    parse_string(s, i);
    return;
  }
  int depth = 0;
  for (; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '"') {
      parse_string(s, i);
      --i;
    } else if (c == '{' || c == '[') {
      ++depth;
    } else if (c == '}' || c == ']') {
      if (depth == 0) return;
      if (--depth == 0) {
        ++i;
        return;
      }
    } else if (c == ',' && depth == 0) {
      return;
    }
  }
}

void skip_ws(const std::string& s, size_t& i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n')) ++i;
}

}  // namespace

std::string json_string_field(const std::string& line, const std::string& field) {
  size_t i = 0;
  skip_ws(line, i);
  if (i >= line.size() || line[i] != '{') throw std::invalid_argument("not a JSON object");
  ++i;
  for (;;) {
    skip_ws(line, i);
    if (i < line.size() && line[i] == '}') break;
    if (i >= line.size() || line[i] != '"') throw std::invalid_argument("expected a field name");
    const std::string key = parse_string(line, i);
    skip_ws(line, i);
    if (i >= line.size() || line[i] != ':') throw std::invalid_argument("expected ':' after \"" + key + "\"");
    ++i;
    skip_ws(line, i);
    if (key == field) {
      if (i >= line.size() || line[i] != '"') throw std::invalid_argument("field \"" + field + "\" is not a string");
      return parse_string(line, i);
    }
    skip_value(line, i);
    skip_ws(line, i);
    if (i < line.size() && line[i] == ',') ++i;
    else break;
  }
  throw std::invalid_argument("no field \"" + field + "\" (set --text-field)");
}

}  // namespace shoestring::data

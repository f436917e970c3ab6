#pragma once
// The C++ side of the tensor exchange with the Python checks in this folder (tensor_io.py holds
// the format: NAME.bin raw little-endian C order + index.txt), and how those checks are started:
// with the environment file that launch/setup writes beside the torch it unpacks, so Python's
// torch is the same build as our LibTorch. Needs SHOESTRING_TORCH_SITE (tests/reference/CMakeLists.txt).
#include <ATen/ATen.h>
#include <sys/wait.h>

#include <bit>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>

namespace shoestring::testing {

static_assert(std::endian::native == std::endian::little, "the exchange format is little-endian");

inline const char* exchange_dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kLong: return "int64";
    default: throw std::runtime_error("tensor exchange: unsupported dtype");
  }
}

// One folder in the tensor_io.py format, written when the writer goes out of scope.
class TensorWriter {
 public:
  explicit TensorWriter(std::filesystem::path dir) : dir_(std::move(dir)) {
    std::filesystem::create_directories(dir_);
    index_ << "# name dtype shape (shoestring tensor exchange, tests/reference/tensor_io.py)\n";
  }
  void add(const std::string& name, const at::Tensor& t) {
    const at::Tensor c = t.detach().cpu().contiguous();
    std::string shape;
    for (int64_t s : c.sizes()) {
      if (!shape.empty()) shape += 'x';
      shape += std::to_string(s);
    }
    index_ << name << ' ' << exchange_dtype_name(c.scalar_type()) << ' ' << (shape.empty() ? "scalar" : shape) << '\n';
    std::ofstream(dir_ / (name + ".bin"), std::ios::binary)
        .write(static_cast<const char*>(c.data_ptr()), std::streamsize(c.nbytes()));
  }
  ~TensorWriter() { std::ofstream(dir_ / "index.txt") << index_.str(); }

 private:
  std::filesystem::path dir_;
  std::ostringstream index_;
};

inline std::map<std::string, at::Tensor> read_tensor_folder(const std::filesystem::path& dir) {
  std::map<std::string, at::Tensor> out;
  std::ifstream index(dir / "index.txt");
  if (!index) throw std::runtime_error((dir / "index.txt").string() + ": missing");
  for (std::string line; std::getline(index, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string name, dtype, shape;
    fields >> name >> dtype >> shape;
    std::vector<int64_t> sizes;
    if (shape != "scalar") {
      std::istringstream dims(shape);
      for (std::string d; std::getline(dims, d, 'x');) sizes.push_back(std::stoll(d));
    }
    const at::ScalarType t = dtype == "float32" ? at::kFloat : dtype == "float64" ? at::kDouble : at::kLong;
    at::Tensor v = at::empty(sizes, at::TensorOptions().dtype(t));
    std::ifstream(dir / (name + ".bin"), std::ios::binary)
        .read(static_cast<char*>(v.data_ptr()), std::streamsize(v.nbytes()));
    out[name] = v;
  }
  return out;
}

inline std::string shell_quoted(const std::string& s) {
  if (s.find('\'') != std::string::npos) throw std::runtime_error("path with a quote: " + s);
  return "'" + s + "'";
}

// The environment file of the torch that our LibTorch came from (launch/setup writes it into the
// folder it unpacked the wheel into; CMake passes that folder), or SHOESTRING_PYTHON_ENV. Empty
// when there is none: plain python3 is tried.
inline std::string python_env_file() {
  if (const char* e = std::getenv("SHOESTRING_PYTHON_ENV"); e && *e) return e;
  const std::filesystem::path env = std::filesystem::path(SHOESTRING_TORCH_SITE) / "env.sh";
  return std::filesystem::exists(env) ? env.string() : "";
}

// Why launch/setup wrote no env.sh (its python-unusable.txt), if it said.
inline std::string python_setup_reason() {
  std::ifstream in(std::filesystem::path(SHOESTRING_TORCH_SITE) / "python-unusable.txt");
  std::string line;
  std::getline(in, line);
  return line.empty() ? "" : "launch/setup: " + line;
}

inline std::string line_starting(const std::string& text, const std::string& prefix) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(prefix, 0) == 0) return line;
  return "";
}

struct PythonRun {
  int rc = -1;      // the script's exit status; 127: no python
  std::string env;  // the environment file used, empty for none
  std::string log;  // stdout and stderr together
};

// Runs tests/reference/SCRIPT ARGS (already quoted) with python_env_file() sourced first.
inline PythonRun run_python(const std::string& script, const std::string& args) {
  PythonRun r;
  r.env = python_env_file();
  const std::string cmd = (r.env.empty() ? "" : ". " + shell_quoted(r.env) + " && ") +
                          "\"${SHOESTRING_PYTHON:-python3}\" " +
                          shell_quoted(SHOESTRING_SOURCE_DIR "/tests/reference/" + script) + " " + args + " 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (!pipe) throw std::runtime_error("cannot start: " + cmd);
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) r.log.append(buf, n);
  const int status = ::pclose(pipe);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace shoestring::testing

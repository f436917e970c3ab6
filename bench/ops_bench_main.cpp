// shoestring_ops_bench: `shoestring bench fp8` without the rest of the tree, for GPU bring-up on a
// machine with only LibTorch and CUDA. Usage: shoestring_ops_bench [--quick] [--shape M,N,K ...] [--json FILE]
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "ops/fp8_bench.h"

int main(int argc, char** argv) {
  shoestring::ops::Fp8BenchOptions opt;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      opt.quick = true;
    } else if (a == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else if (a == "--no-check") {
      opt.check = false;
    } else if (a == "--shape" && i + 1 < argc) {
      try {
        opt.shapes.push_back(shoestring::ops::parse_gemm_shape(argv[++i]));
      } catch (const std::invalid_argument& e) {
        std::cerr << argv[0] << ": --shape " << e.what() << "\n";
        return 2;
      }
    } else {
      std::cerr << "usage: " << argv[0] << " [--quick] [--no-check] [--shape M,N,K ...] [--json FILE]\n";
      return 2;
    }
  }
  std::ostringstream json;
  std::string error;
  const int rc = shoestring::ops::run_fp8_bench(opt, json, std::cout, error);
  if (rc != 0) {
    std::cerr << "shoestring_ops_bench: " << error << "\n";
    return rc;
  }
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    if (!f) {
      std::cerr << "shoestring_ops_bench: cannot write " << json_path << "\n";
      return 1;
    }
    f << json.str();
  } else {
    std::cout << json.str();
  }
  return 0;
}

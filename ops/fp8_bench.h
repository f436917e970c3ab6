#pragma once
// `shoestring bench fp8`: TFLOPS of our block-scaled FP8 GEMM, cuBLASLt's block-scaled FP8 GEMM and
// cuBLAS BF16 on DeepSeek-V3's layer shapes, and GB/s of the quantization kernels against a plain
// device-to-device copy, all measured in the same run with CUDA events (DeepGEMM's benchmark
// convention: the baseline is always measured next to the kernel, never quoted).
#include <array>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace shoestring::ops {

struct Fp8BenchOptions {
  bool quick = false;   // fewer shapes and repetitions (smoke test of the bench itself)
  int warmup = 5;       // untimed launches per measurement
  int repeats = 20;     // timed launches per measurement (the mean is reported)
  int rounds = 3;       // GEMM rows: each contender timed this often, interleaved; its best round is kept
  bool check = true;    // compare each GEMM with our SIMT kernel on the same inputs (calc_diff)
  // Dense GEMM shapes {M, N, K} to run instead of the default set; when given, the grouped GEMMs
  // and the quantizers are skipped (one kernel to profile, e.g. under ncu).
  std::vector<std::array<int64_t, 3>> shapes;
};

// "M,N,K" (three positive integers) -> {M, N, K}; throws std::invalid_argument naming the text.
std::array<int64_t, 3> parse_gemm_shape(const std::string& text);

// Prints a table to `table_out` and writes one JSON object to `json_out`. Returns 0 on success,
// non-zero with the reason in `error` when it cannot run (no GPU, built without CUDA).
int run_fp8_bench(const Fp8BenchOptions& options, std::ostream& json_out, std::ostream& table_out,
                  std::string& error);

}  // namespace shoestring::ops

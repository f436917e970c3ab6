// `shoestring bench fp8` (see fp8_bench.h). Every number comes from CUDA events around `repeats`
// back-to-back launches on the current stream after `warmup` untimed ones; TFLOPS = 2MNK / time.
// A GEMM row's contenders are timed in `rounds` interleaved rounds, each keeping its best (best_ms).
#include "ops/fp8_bench.h"

#include <sstream>
#include <stdexcept>

#include "ops/cuda_runtime.h"

#ifdef SHOESTRING_WITH_CUDA
#include <ATen/ATen.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <sstream>
#include <vector>

#include "ops/calc_diff.h"
#include "ops/fp8_blas_baseline.h"
#include "ops/fp8_cuda_common.cuh"
#include "ops/fp8_gemm.h"
#include "ops/moe_permute.h"
#endif

namespace shoestring::ops {

std::array<int64_t, 3> parse_gemm_shape(const std::string& text) {
  std::array<int64_t, 3> shape{};
  std::istringstream in(text);
  char comma1 = 0, comma2 = 0;
  if (!(in >> shape[0] >> comma1 >> shape[1] >> comma2 >> shape[2]) || comma1 != ',' || comma2 != ',' ||
      !(in >> std::ws).eof() || shape[0] <= 0 || shape[1] <= 0 || shape[2] <= 0)
    throw std::invalid_argument("GEMM shape '" + text + "': expected M,N,K, three positive integers (e.g. 4096,7168,16384)");
  return shape;
}

#ifndef SHOESTRING_WITH_CUDA
int run_fp8_bench(const Fp8BenchOptions&, std::ostream&, std::ostream&, std::string& error) {
  error = "bench fp8 needs a GPU: " + cuda_status().reason;
  return 2;
}
#else

namespace {

double time_ms(const std::function<void()>& f, int warmup, int repeats) {
  for (int i = 0; i < warmup; ++i) f();
  cudaEvent_t t0, t1;
  cudaEventCreate(&t0);
  cudaEventCreate(&t1);
  const cudaStream_t s = cuda_detail::current_stream();
  cudaEventRecord(t0, s);
  for (int i = 0; i < repeats; ++i) f();
  cudaEventRecord(t1, s);
  cudaEventSynchronize(t1);
  float ms = 0.0f;
  cudaEventElapsedTime(&ms, t0, t1);
  cudaEventDestroy(t0);
  cudaEventDestroy(t1);
  cuda_detail::check_cuda(cudaGetLastError(), "bench");
  return ms / repeats;
}

// Times each contender `rounds` times, interleaved (every contender once per round), and keeps each
// one's best round: whatever drifts during a run (clocks, temperature) then reaches every contender
// alike. On an H100 (2026-11-27) one kernel on one shape read 25% apart in two runs (timed first in
// one, after another kernel in the other), the cause not isolated.
std::vector<double> best_ms(const std::vector<std::function<void()>>& contenders, int warmup, int repeats, int rounds) {
  std::vector<double> best(contenders.size(), 1e300);
  for (int r = 0; r < rounds; ++r)
    for (size_t i = 0; i < contenders.size(); ++i)
      best[i] = std::min(best[i], time_ms(contenders[i], r == 0 ? warmup : 1, repeats));
  return best;
}

std::string num(double v, int prec = 3) {
  if (!(v == v)) return "null";  // NaN: not measured
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}
std::string sci(double v) {
  if (!(v == v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3e", v);
  return buf;
}

struct GemmRow {
  std::string name;
  int64_t groups, M, N, K;
  std::string config;
  double ours_tflops, lt_tflops, bf16_tflops, diff_vs_lt;
  std::string lt_note;
  std::vector<std::pair<std::string, double>> others;  // our other tensor-core kernels on this device
};

std::string others_text(const GemmRow& r) {
  std::string t;
  for (const auto& [name, tf] : r.others) {
    t += "; " + name + " " + num(tf, 1);
    if (r.lt_tflops == r.lt_tflops) t += " (" + num(tf / r.lt_tflops, 2) + "x Lt)";
  }
  return t;
}
std::string others_json(const GemmRow& r) {
  std::string t;
  for (const auto& [name, tf] : r.others) t += (t.empty() ? "\"" : ", \"") + name + "\": " + num(tf);
  return t;
}

struct QuantRow {
  std::string name;
  int64_t M, K;
  double gbps, copy_gbps;
};

}  // namespace

int run_fp8_bench(const Fp8BenchOptions& opt, std::ostream& json_out, std::ostream& table_out, std::string& error) {
  if (!cuda_status().available) {
    error = "bench fp8 needs a GPU: " + cuda_status().reason;
    return 2;
  }
  try {
    cudaDeviceProp prop{};
    cuda_detail::check_cuda(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    const int warm = opt.quick ? 2 : opt.warmup, reps = opt.quick ? 5 : opt.repeats, rounds = opt.quick ? 1 : opt.rounds;
    const auto dev = at::TensorOptions().device(at::kCUDA, 0);
    at::manual_seed(0);
    const Fp8DeviceInfo info{prop.major * 10 + prop.minor, prop.multiProcessorCount};
    // Our other tensor-core kernels this device runs, timed beside the one auto picks for each row
    // (row_others).
    std::vector<Fp8GemmKernel> others;
    // Not when SHOESTRING_FP8_GEMM_KERNEL names ours: then that kernel alone is compared.
    const Fp8GemmKernel ours = fp8_gemm_kernel_from_env();
    // SHOESTRING_FP8_BENCH_KERNELS (names, comma-separated) limits them (bench/gpu/run.sh leaves out
    // candidates whose tests failed).
    const char* listed = std::getenv("SHOESTRING_FP8_BENCH_KERNELS");
    for (Fp8GemmKernel k : kAllFp8GemmKernels) {
      if (ours != Fp8GemmKernel::kAuto) break;
      if (k == Fp8GemmKernel::kAuto || k == Fp8GemmKernel::kSimt) continue;  // tensor-core kernels only
      if ((k == Fp8GemmKernel::kMma && info.sm < 89) || (is_wgmma_kernel(k) && info.sm != 90)) continue;
      if (listed != nullptr && !fp8_gemm_kernel_listed(listed, k)) continue;
      others.push_back(k);
    }
    const auto row_others = [&](const Fp8GemmConfig& ours_cfg) {
      std::vector<Fp8GemmKernel> r;
      for (Fp8GemmKernel k : others)
        if (k != ours_cfg.kernel) r.push_back(k);
      return r;
    };

    // DeepSeek-V3 dense-layer GEMM shapes (N x K) as in DeepGEMM's benchmark, M = tokens.
    std::vector<std::pair<int64_t, int64_t>> nk{{2112, 7168}, {24576, 1536}, {7168, 16384}, {4096, 7168}, {7168, 2048}};
    if (opt.quick) nk.resize(2);
    std::vector<std::array<int64_t, 3>> dense = opt.shapes;
    if (dense.empty())
      for (int64_t M : {128, 4096})
        for (auto [N, K] : nk) dense.push_back({M, N, K});
    std::vector<GemmRow> gemms;
    for (const auto& [M, N, K] : dense) {
      const at::Tensor x = at::randn({M, K}, dev).to(at::kBFloat16), w = (at::randn({N, K}, dev) * 0.02).to(at::kBFloat16);
      const Fp8Tensor qa = quantize_1x128_cuda(x), qb = quantize_128x128_cuda(w);
      const double flop = 2.0 * M * N * K;
      const Fp8GemmConfig cfg = choose_fp8_gemm_config(M, N, K, info, ours);
      const std::vector<Fp8GemmKernel> rk = row_others(cfg);
      GemmRow row{"dense", 1, M, N, K, cfg.describe(),
                  0, NAN, NAN, NAN, "", {}};
      at::Tensor c_ours;
      std::vector<std::function<void()>> fs{[&] { c_ours = fp8_gemm_cuda(qa, qb); }};
      for (Fp8GemmKernel k : rk) fs.emplace_back([&, k] { fp8_gemm_cuda(qa, qb, k); });
      std::unique_ptr<CublasLtFp8Gemm> lt;
      at::Tensor c_lt;
      try {
        lt = std::make_unique<CublasLtFp8Gemm>(qa, qb, at::kFloat);
        c_lt = at::empty({M, N}, dev.dtype(at::kFloat));
        row.lt_note = "fp32 out";
      } catch (const std::exception&) {
        try {
          lt = std::make_unique<CublasLtFp8Gemm>(qa, qb, at::kBFloat16);
          c_lt = at::empty({M, N}, dev.dtype(at::kBFloat16));
          row.lt_note = "bf16 out (no fp32-out algorithm)";
        } catch (const std::exception& e2) {
          row.lt_note = e2.what();
        }
      }
      if (lt) fs.emplace_back([&] { lt->run(c_lt); });
      at::Tensor c_bf16 = at::empty({M, N}, dev.dtype(at::kBFloat16));
      fs.emplace_back([&] { bf16_gemm_cublas(x, w, c_bf16); });
      const std::vector<double> ms = best_ms(fs, warm, reps, rounds);
      const auto tflops = [&](double t) { return flop / (t * 1e-3) / 1e12; };
      row.ours_tflops = tflops(ms[0]);
      for (size_t i = 0; i < rk.size(); ++i) row.others.emplace_back(fp8_gemm_kernel_name(rk[i]), tflops(ms[1 + i]));
      if (lt) {
        row.lt_tflops = tflops(ms[1 + rk.size()]);
        if (opt.check) row.diff_vs_lt = calc_diff(c_ours, c_lt.to(at::kFloat));
      }
      row.bf16_tflops = tflops(ms.back());
      gemms.push_back(row);
    }

    // With --shape: those dense GEMMs alone.
    std::vector<QuantRow> quants;
    std::vector<QuantRow> row_kernels;  // copy_gbps holds ATen's rate for the same movement
    if (opt.shapes.empty()) {
      // Grouped experts (contiguous layout): DeepSeek-V3 routed-expert GEMMs on 4 local experts
      // (DeepGEMM's m-grouped benchmark shapes). Baseline: cuBLAS BF16 on the same total M (one weight).
      const int64_t rows_per_group = opt.quick ? 1024 : 4096;
      for (auto [N, K] : std::vector<std::pair<int64_t, int64_t>>{{4096, 7168}, {7168, 2048}}) {
        const int64_t G = 4;
        const at::Tensor groups = make_contiguous_group_layout(std::vector<int64_t>(G, rows_per_group)).to(dev.device());
        const int64_t M = groups.size(0);
        const at::Tensor x = at::randn({M, K}, dev).to(at::kBFloat16), w = (at::randn({G, N, K}, dev) * 0.02).to(at::kBFloat16);
        const Fp8Tensor qa = quantize_1x128_cuda(x), qb = quantize_128x128_cuda(w);
        const double flop = 2.0 * M * N * K;
        const Fp8GemmConfig cfg = choose_fp8_gemm_config(M, N, K, info, ours);
        const std::vector<Fp8GemmKernel> rk = row_others(cfg);
        GemmRow row{"grouped", G, M, N, K, cfg.describe(),
                    0, NAN, NAN, NAN, "no grouped cuBLASLt baseline; bf16 column is a dense GEMM of the same size", {}};
        const at::Tensor w0 = w[0].contiguous();
        at::Tensor c_bf16 = at::empty({M, N}, dev.dtype(at::kBFloat16));
        std::vector<std::function<void()>> fs{[&] { fp8_grouped_gemm_cuda(qa, qb, groups); }};
        for (Fp8GemmKernel k : rk) fs.emplace_back([&, k] { fp8_grouped_gemm_cuda(qa, qb, groups, k); });
        fs.emplace_back([&] { bf16_gemm_cublas(x, w0, c_bf16); });
        const std::vector<double> ms = best_ms(fs, warm, reps, rounds);
        const auto tflops = [&](double t) { return flop / (t * 1e-3) / 1e12; };
        row.ours_tflops = tflops(ms[0]);
        for (size_t i = 0; i < rk.size(); ++i) row.others.emplace_back(fp8_gemm_kernel_name(rk[i]), tflops(ms[1 + i]));
        row.bf16_tflops = tflops(ms.back());
        gemms.push_back(row);
      }

      // The grouped Wgrad (k-grouped: dW[g] = dY_g^T . X_g, K = each expert's tokens) for the same
      // experts. Beside ours: the per-expert loop of our dense kernel it replaced (contiguous operands,
      // no copies timed), and cuBLAS BF16 over the same per-expert loop.
      for (auto [N, K] : std::vector<std::pair<int64_t, int64_t>>{{4096, 7168}, {7168, 2048}}) {
        const int64_t G = 4, T = rows_per_group * G;
        const std::vector<int64_t> k_rows(size_t(G), rows_per_group);
        const at::Tensor dyt = at::randn({N, T}, dev).to(at::kBFloat16), xt = at::randn({K, T}, dev).to(at::kBFloat16);
        const Fp8Tensor qa = quantize_1x128_cuda(dyt), qb = quantize_1x128_cuda(xt);
        std::vector<Fp8Tensor> qa_g, qb_g;
        std::vector<at::Tensor> dyt_g, xt_g, c_g;
        for (int64_t g = 0; g < G; ++g) {
          dyt_g.push_back(dyt.narrow(1, g * rows_per_group, rows_per_group).contiguous());
          xt_g.push_back(xt.narrow(1, g * rows_per_group, rows_per_group).contiguous());
          qa_g.push_back(quantize_1x128_cuda(dyt_g.back()));
          qb_g.push_back(quantize_1x128_cuda(xt_g.back()));
          c_g.push_back(at::empty({N, K}, dev.dtype(at::kBFloat16)));
        }
        const double flop = 2.0 * N * K * T;
        // The config the launcher picks: it sizes tiles for all G groups' blocks (fp8_k_grouped_gemm_cuda).
        const Fp8GemmConfig cfg = choose_fp8_gemm_config(N * G, K, T, info, ours);
        const std::vector<Fp8GemmKernel> rk = row_others(cfg);
        GemmRow row{"kgrouped", G, N, K, T, cfg.describe(),
                    0, NAN, NAN, NAN, "no grouped cuBLASLt baseline; bf16 column is cuBLAS BF16 once per expert", {}};
        std::vector<std::function<void()>> fs{
            [&] { fp8_k_grouped_gemm_cuda(qa, qb, k_rows); },
            [&] { for (int64_t g = 0; g < G; ++g) fp8_gemm_cuda(qa_g[size_t(g)], qb_g[size_t(g)]); }};
        for (Fp8GemmKernel k : rk) fs.emplace_back([&, k] { fp8_k_grouped_gemm_cuda(qa, qb, k_rows, k); });
        fs.emplace_back([&] {
          for (int64_t g = 0; g < G; ++g) bf16_gemm_cublas(dyt_g[size_t(g)], xt_g[size_t(g)], c_g[size_t(g)]);
        });
        const std::vector<double> ms = best_ms(fs, warm, reps, rounds);
        const auto tflops = [&](double t) { return flop / (t * 1e-3) / 1e12; };
        row.ours_tflops = tflops(ms[0]);
        row.others.emplace_back("per-expert loop", tflops(ms[1]));
        for (size_t i = 0; i < rk.size(); ++i) row.others.emplace_back(fp8_gemm_kernel_name(rk[i]), tflops(ms[2 + i]));
        row.bf16_tflops = tflops(ms.back());
        gemms.push_back(row);
      }

      // Quantization bandwidth: bytes read + written per second, against a device-to-device copy of the
      // same bf16 input (read + write of 2 bytes per element).
      {
        const int64_t M = 4096, K = 7168;
        const at::Tensor x = at::randn({M, K}, dev).to(at::kBFloat16);
        at::Tensor y = at::empty_like(x);
        const double copy_bytes = 2.0 * x.nbytes();
        const double copy_gbps =
            copy_bytes / (time_ms([&] {
                            cudaMemcpyAsync(y.data_ptr(), x.data_ptr(), x.nbytes(), cudaMemcpyDeviceToDevice,
                                            cuda_detail::current_stream());
                          }, warm, reps) * 1e-3) / 1e9;
        const double q_bytes = x.nbytes() + double(M * K) + 4.0 * M * ceil_div(K, 128);
        const double b_bytes = x.nbytes() + double(M * K) + 4.0 * ceil_div(M, 128) * ceil_div(K, 128);
        quants.push_back({"1x128", M, K, q_bytes / (time_ms([&] { quantize_1x128_cuda(x); }, warm, reps) * 1e-3) / 1e9, copy_gbps});
        quants.push_back({"1x128 transposed", M, K,
                          (x.nbytes() + double(M * K) + 4.0 * K * ceil_div(M, 128)) /
                              (time_ms([&] { quantize_1x128_transposed_cuda(x); }, warm, reps) * 1e-3) / 1e9,
                          copy_gbps});
        quants.push_back({"128x128", M, K, b_bytes / (time_ms([&] { quantize_128x128_cuda(x); }, warm, reps) * 1e-3) / 1e9, copy_gbps});
        quants.push_back({"128x128 transposed", M, K,
                          b_bytes / (time_ms([&] { quantize_128x128_transposed_cuda(x); }, warm, reps) * 1e-3) / 1e9,
                          copy_gbps});
        // The SwiGLU output of an expert MLP (DeepSeek-V3's moe_intermediate_size 2048) quantized for
        // the down projection: fused (reads h1 and h3) and as ATen then our quantizer would do it
        // (silu and the product written and read back). Both rates count the fused op's bytes, so
        // their ratio is the speed-up.
        const int64_t H = 2048;
        const at::Tensor h1 = at::randn({M, H}, dev).to(at::kBFloat16), h3 = at::randn({M, H}, dev).to(at::kBFloat16);
        const double s_bytes = 2.0 * h1.nbytes() + double(M * H) + 4.0 * M * ceil_div(H, 128);
        quants.push_back({"swiglu 1x128 fused", M, H,
                          s_bytes / (time_ms([&] { quantize_swiglu_1x128_cuda(h1, h3); }, warm, reps) * 1e-3) / 1e9,
                          copy_gbps});
        quants.push_back({"swiglu 1x128 unfused", M, H,
                          s_bytes / (time_ms([&] { quantize_1x128_cuda(at::silu(h1) * h3); }, warm, reps) * 1e-3) / 1e9,
                          copy_gbps});
      }

      // The expert layout's row kernels (moe_permute.cu) beside ATen's index_select and
      // mul + index_add doing the same movement: 4096 tokens of DeepSeek-V3's hidden size 7168 in
      // bf16, each sent to 8 of 256 experts. Both columns count the same bytes (rows read + written),
      // so their ratio is the speed-up.
      {
        const int64_t T = opt.quick ? 1024 : 4096, D = 7168, E = 256, k = 8;
        const Permutation perm = plan_permutation(std::get<1>(at::rand({T, E}, dev).topk(k, -1)), E);
        const int64_t R = perm.source_token.numel();
        const RowMap map = make_row_map(perm.source_token_host, T, dev.device());
        const at::Tensor x = at::randn({T, D}, dev).to(at::kBFloat16), rows = at::randn({R, D}, dev).to(at::kBFloat16);
        const at::Tensor w = at::rand({R}, dev).to(at::kBFloat16);
        const double g_bytes = 2.0 * double(rows.nbytes()), u_bytes = double(rows.nbytes() + x.nbytes());
        const double aten_gather =
            g_bytes / (time_ms([&] { x.index_select(0, perm.source_token); }, warm, reps) * 1e-3) / 1e9;
        const double aten_sum = u_bytes / (time_ms([&] {
                                             at::zeros_like(x).index_add_(0, perm.source_token, rows * w.unsqueeze(1));
                                           }, warm, reps) * 1e-3) / 1e9;
        row_kernels.push_back({"gather (permute)", R, D,
                               g_bytes / (time_ms([&] { gather_rows_cuda(x, perm.source_token); }, warm, reps) * 1e-3) / 1e9,
                               aten_gather});
        row_kernels.push_back({"weighted sum (unpermute)", R, D,
                               u_bytes / (time_ms([&] { sum_rows_cuda(rows, w, map.ptr, map.members); }, warm, reps) * 1e-3) / 1e9,
                               aten_sum});
      }
    }

    // Table.
    char line[1024];
    table_out << "FP8 bench on " << prop.name << " (sm_" << prop.major << prop.minor << ", " << prop.multiProcessorCount
              << " SMs), warmup " << warm << ", repeats " << reps << ", GEMMs best of " << rounds << " interleaved rounds\n";
    std::snprintf(line, sizeof line, "%-8s %3s %6s %6s %6s | %9s %9s %9s | %7s %7s | %-10s %s\n", "kind", "G", "M", "N",
                  "K", "ours TF", "cuBLASLt", "bf16 TF", "vs Lt", "vs bf16", "diff vs Lt", "our config");
    table_out << line;
    for (const GemmRow& r : gemms) {
      std::snprintf(line, sizeof line, "%-8s %3lld %6lld %6lld %6lld | %9.1f %9s %9.1f | %7s %7.2f | %-10s %s%s%s%s\n",
                    r.name.c_str(), (long long)r.groups, (long long)r.M, (long long)r.N, (long long)r.K, r.ours_tflops,
                    num(r.lt_tflops, 1).c_str(), r.bf16_tflops,
                    (r.lt_tflops == r.lt_tflops ? num(r.ours_tflops / r.lt_tflops, 2) + "x" : std::string("-")).c_str(),
                    r.ours_tflops / r.bf16_tflops, sci(r.diff_vs_lt).c_str(), r.config.c_str(),
                    r.lt_note.empty() ? "" : "; ", r.lt_note.c_str(), others_text(r).c_str());
      table_out << line;
    }
    for (const QuantRow& q : quants) {
      std::snprintf(line, sizeof line, "quantize %-20s %6lld x %6lld: %8.1f GB/s (copy %8.1f GB/s, %5.1f%%)\n",
                    q.name.c_str(), (long long)q.M, (long long)q.K, q.gbps, q.copy_gbps, 100.0 * q.gbps / q.copy_gbps);
      table_out << line;
    }
    for (const QuantRow& q : row_kernels) {
      std::snprintf(line, sizeof line, "moe rows %-24s %6lld x %6lld: %8.1f GB/s (ATen %8.1f GB/s, %5.2fx)\n",
                    q.name.c_str(), (long long)q.M, (long long)q.K, q.gbps, q.copy_gbps, q.gbps / q.copy_gbps);
      table_out << line;
    }

    // JSON.
    std::ostringstream js;
    js << "{\"device\": \"" << prop.name << "\", \"sm\": " << prop.major * 10 + prop.minor << ", \"warmup\": " << warm
       << ", \"repeats\": " << reps << ", \"rounds\": " << rounds << ", \"gemm\": [";
    for (size_t i = 0; i < gemms.size(); ++i) {
      const GemmRow& r = gemms[i];
      std::string note = r.lt_note;
      for (char& ch : note)
        if (ch == '"' || ch == '\\' || ch == '\n') ch = ' ';
      js << (i ? ", " : "") << "{\"kind\": \"" << r.name << "\", \"groups\": " << r.groups << ", \"M\": " << r.M
         << ", \"N\": " << r.N << ", \"K\": " << r.K << ", \"config\": \"" << r.config
         << "\", \"ours_tflops\": " << num(r.ours_tflops) << ", \"other_kernels_tflops\": {" << others_json(r) << "}" << ", \"cublaslt_fp8_tflops\": " << num(r.lt_tflops)
         << ", \"cublas_bf16_tflops\": " << num(r.bf16_tflops) << ", \"calc_diff_vs_cublaslt\": " << sci(r.diff_vs_lt)
         << ", \"note\": \"" << note << "\"}";
    }
    js << "], \"quantize\": [";
    for (size_t i = 0; i < quants.size(); ++i) {
      const QuantRow& q = quants[i];
      js << (i ? ", " : "") << "{\"kind\": \"" << q.name << "\", \"M\": " << q.M << ", \"K\": " << q.K
         << ", \"gbps\": " << num(q.gbps, 1) << ", \"copy_gbps\": " << num(q.copy_gbps, 1) << "}";
    }
    js << "], \"moe_rows\": [";
    for (size_t i = 0; i < row_kernels.size(); ++i) {
      const QuantRow& q = row_kernels[i];
      js << (i ? ", " : "") << "{\"kind\": \"" << q.name << "\", \"rows\": " << q.M << ", \"d\": " << q.K
         << ", \"gbps\": " << num(q.gbps, 1) << ", \"aten_gbps\": " << num(q.copy_gbps, 1) << "}";
    }
    js << "]}\n";
    json_out << js.str();
    return 0;
  } catch (const std::exception& e) {
    error = std::string("bench fp8 failed: ") + e.what();
    return 1;
  }
}

#endif

}  // namespace shoestring::ops

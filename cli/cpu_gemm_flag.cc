#include "cli/cpu_gemm_flag.h"

#include <optional>
#include <stdexcept>
#include <string>

#include "quant/weight_matrix.h"

namespace hearth::cli {

void add_cpu_gemm_option(cxxopts::Options& opts) {
  opts.add_options()("cpu-gemm",
                     "multiply float weights (FP8, BF16, F16, F32) by many tokens with hearth's kernels (results never "
                     "depend on the batch) or with oneDNN's sgemm from 16 tokens on (FP8 prefill ~1.5x faster, "
                     "results equal to rounding), or BF16 weights against bf16 activations on AVX512_BF16 "
                     "(llama.cpp's numerics for BF16 tensors): kernels, onednn or bf16",
                     cxxopts::value<std::string>()->default_value("kernels"), "GEMM");
}

void apply_cpu_gemm_flag(const cxxopts::ParseResult& args) {
  const std::string v = args["cpu-gemm"].as<std::string>();
  const std::optional<CpuGemm> g = parse_cpu_gemm(v);
  if (!g) throw std::invalid_argument("--cpu-gemm: unknown choice '" + v + "' (expected kernels, onednn or bf16)");
  set_cpu_gemm(*g);
}

}  // namespace hearth::cli

// How cuda::matmul (quant/cuda/kernels.h) multiplies many activation rows at once: with
// hearth's own fp32 kernels, or by dequantizing the weight to bf16 and calling cuBLAS.
//
// Plain C++ (no CUDA types, no CUDA library): the engine's options and the CLI name the
// policy in every build; only a build with the CUDA backend can run the cuBLAS one.
#pragma once
#include <cstdint>
#include <optional>
#include <string_view>

namespace hearth::cuda {

enum class GemmPolicy {
  // hearth's kernels for every n (GEMV, then the fp32 tiled kernel from 25 rows on).
  kKernels,
  // From GemmOptions::min_rows activation rows on: the weight is dequantized (row tiles of
  // at most scratch_bytes) to bf16, the activations rounded to bf16, and cuBLAS multiplies
  // them on the tensor cores with fp32 accumulation and fp32 output. Below min_rows, the
  // kernels. Results differ from kKernels by the bf16 rounding of both operands.
  kCublasBf16,
};

struct GemmOptions {
  GemmPolicy policy = GemmPolicy::kKernels;
  // Activation rows from which kCublasBf16 takes cuBLAS (>= 1). Dequantizing the weight
  // costs about one extra pass over rows x cols x 4 bytes; from a few dozen rows on the
  // tensor cores win that back many times over the fp32 kernel.
  int64_t min_rows = 32;
  // Bound of each bf16 scratch buffer (the weight's row tile; the activation rows'
  // chunk): 64 MiB holds an 8192 x 4096 tile.
  int64_t scratch_bytes = int64_t(64) << 20;
};

// "kernels" or "cublas-bf16": the spelling of --cuda-gemm.
inline const char* gemm_policy_name(GemmPolicy p) {
  return p == GemmPolicy::kCublasBf16 ? "cublas-bf16" : "kernels";
}
inline std::optional<GemmPolicy> parse_gemm_policy(std::string_view s) {
  if (s == "kernels") return GemmPolicy::kKernels;
  if (s == "cublas-bf16") return GemmPolicy::kCublasBf16;
  return std::nullopt;
}

}  // namespace hearth::cuda

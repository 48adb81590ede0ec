// --cpu-gemm kernels|onednn, shared by the commands that run the model on the CPU
// (generate, chat, bench, prove, serve, perplexity, kld): how float weights (F32, BF16,
// F16, the FP8 of a Hugging Face checkpoint) are multiplied by many tokens at once
// (quant/weight_matrix.h, CpuGemm). Block formats (GGUF quants) are not affected.
#pragma once
#include <cxxopts.hpp>

namespace hearth::cli {

void add_cpu_gemm_option(cxxopts::Options& opts);
// Sets the process-wide choice from --cpu-gemm (kernels when absent). Throws
// std::invalid_argument naming the flag for any other value.
void apply_cpu_gemm_flag(const cxxopts::ParseResult& args);

}  // namespace hearth::cli

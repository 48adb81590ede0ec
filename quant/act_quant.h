// Internal to quant/: the activation quantizers behind quantize_row_q8_0 and
// quantize_row_q8_k (quant/block_formats.h), per instruction set. A decode step quantizes
// the input of every matrix product once per thread, and the scalar code (a double
// multiply and a rounding call per value) took 10.7 µs per 2048 values for Q8_0 and 6.4
// for Q8_K on this Zen 3: a few percent of a step. The AVX2 versions write the scalar
// versions' bytes exactly (the same double arithmetic, rounding and clamping, NaN and
// infinity included), so no result depends on which one a CPU runs.
#pragma once
#include <cstdint>

#include "quant/block_formats.h"

namespace hearth::act_quant {

void q8_0_scalar(const float* in, BlockQ8_0* out, int64_t n);
void q8_k_scalar(const float* in, BlockQ8_K* out, int64_t n);
// CPUs with AVX2 only. n a multiple of the block (the callers check).
void q8_0_avx2(const float* in, BlockQ8_0* out, int64_t n);
void q8_k_avx2(const float* in, BlockQ8_K* out, int64_t n);

}  // namespace hearth::act_quant

// Internal to quant/: the AVX-512 kernels of the transposed product (absorbed MLA's
// y += x^T W, quant/weight_matrix.cc's matmul_t_accumulate_rows). Reached through that
// function, which checks that the CPU has AVX-512 F/BW/VL/DQ; they fault without it.
#pragma once
#include <cstdint>

#include "quant/block_formats.h"

namespace hearth::transposed_avx512 {

// For t < n and each column c of whole blocks [b0, b1):
//   y[t * ldy + c] += x[t * ldx + k] * W_k[c] for k = 0 .. m-1 in that order,
// where W_k is weight row k, whose blocks start at rows[k] (m is 1 to 4). Each value is
// decoded and each product added exactly as the scalar path does: the same bits.
void add_scaled_q4_k_blocks(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t n,
                            const BlockQ4_K* const* rows, int m, int64_t b0, int64_t b1);
void add_scaled_q8_0_blocks(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t n,
                            const BlockQ8_0* const* rows, int m, int64_t b0, int64_t b1);

}  // namespace hearth::transposed_avx512

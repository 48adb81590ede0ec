// Internal to quant/: the K-quant routines (quant/kquants.cc) that the BlockFormat
// table (quant/block_formats.cc) points at. Use them through block_format().
#pragma once
#include <cstdint>

namespace hearth::kquants {

[[noreturn]] void throw_partial_blocks(int64_t n, int64_t block, const char* format);

// Throws std::invalid_argument unless n is a non-negative multiple of block. Inline: every
// row's dot product checks its length, and as a call the check took about 1 % of a Q4_K
// decode step (perf); inlined, the division by a constant block folds to a mask.
inline void require_whole_blocks(int64_t n, int64_t block, const char* format) {
  if (n < 0 || n % block != 0) [[unlikely]]
    throw_partial_blocks(n, block, format);
}

void dequantize_q2_k(const void* blocks, float* out, int64_t n);
void dequantize_q3_k(const void* blocks, float* out, int64_t n);
void dequantize_q4_k(const void* blocks, float* out, int64_t n);
void dequantize_q5_k(const void* blocks, float* out, int64_t n);
void dequantize_q6_k(const void* blocks, float* out, int64_t n);

void quantize_q2_k(const float* in, void* blocks, int64_t n, const float* importance);
void quantize_q3_k(const float* in, void* blocks, int64_t n, const float* importance);
void quantize_q4_k(const float* in, void* blocks, int64_t n, const float* importance);
void quantize_q5_k(const float* in, void* blocks, int64_t n, const float* importance);
void quantize_q6_k(const float* in, void* blocks, int64_t n, const float* importance);

// Weights against Q8_K activations.
float vec_dot_q2_k(const void* w, const void* a, int64_t n);
float vec_dot_q3_k(const void* w, const void* a, int64_t n);
float vec_dot_q4_k(const void* w, const void* a, int64_t n);
float vec_dot_q5_k(const void* w, const void* a, int64_t n);
float vec_dot_q6_k(const void* w, const void* a, int64_t n);

}  // namespace hearth::kquants

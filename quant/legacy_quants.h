// Internal to quant/: the 32-value formats Q4_1, Q5_0 and Q5_1 (quant/legacy_quants.cc)
// that the BlockFormat table (quant/block_formats.cc) points at. Use them through
// block_format(). Layouts: quant/block_formats.h.
#pragma once
#include <cstdint>

namespace hearth::legacy_quants {

void dequantize_q4_1(const void* blocks, float* out, int64_t n);
void dequantize_q5_0(const void* blocks, float* out, int64_t n);
void dequantize_q5_1(const void* blocks, float* out, int64_t n);

void quantize_q4_1(const float* in, void* blocks, int64_t n, const float* importance);
void quantize_q5_0(const float* in, void* blocks, int64_t n, const float* importance);
void quantize_q5_1(const float* in, void* blocks, int64_t n, const float* importance);

// Weights against Q8_0 activations.
float vec_dot_q4_1(const void* w, const void* a, int64_t n);
float vec_dot_q5_0(const void* w, const void* a, int64_t n);
float vec_dot_q5_1(const void* w, const void* a, int64_t n);

}  // namespace hearth::legacy_quants

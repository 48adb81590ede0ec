// Internal to quant/: IQ4_NL and IQ4_XS (quant/iq4.cc), the formats whose 4-bit indices
// pick from the fixed non-linear grid kIq4nlValues, that the BlockFormat table
// (quant/block_formats.cc) points at. Use them through block_format(). Layouts:
// quant/block_formats.h.
#pragma once
#include <cstdint>

namespace hearth::iq4 {

void dequantize_iq4_nl(const void* blocks, float* out, int64_t n);
void dequantize_iq4_xs(const void* blocks, float* out, int64_t n);

void quantize_iq4_nl(const float* in, void* blocks, int64_t n, const float* importance);
void quantize_iq4_xs(const float* in, void* blocks, int64_t n, const float* importance);

float vec_dot_iq4_nl(const void* w, const void* a, int64_t n);  // activations Q8_0
float vec_dot_iq4_xs(const void* w, const void* a, int64_t n);  // activations Q8_K

}  // namespace hearth::iq4

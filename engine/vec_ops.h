// The float vector loops of attention (scores against cached keys, weighted sums of
// values or latents), with AVX2 kernels picked at run time next to their scalar
// references. Attention runs them once per (query, head, picked position), so on a long
// context they are the bulk of its arithmetic.
#pragma once
#include <cstdint>

#include "quant/weight_matrix.h"  // KernelIsa

namespace hearth {

// sum_i a[i] * b[i]. The AVX2 kernel keeps four 8-lane FMA accumulators, so its result
// differs from the scalar reference's sequential sum by rounding only.
float dot_f32(const float* a, const float* b, int64_t n, KernelIsa isa = KernelIsa::kAuto);

// y[i] += a * x[i]: multiply, then add, on every path (no FMA), so the AVX2 kernel's
// result is bit-identical to the scalar reference's.
void axpy_f32(float a, const float* x, float* y, int64_t n, KernelIsa isa = KernelIsa::kAuto);

}  // namespace hearth

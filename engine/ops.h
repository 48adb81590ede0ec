// Small building blocks of the forward pass, on float32 rows.
#pragma once
#include <cmath>
#include <cstdint>

#include "offload/thread_pool.h"
#include "quant/weight_matrix.h"

namespace hearth {

// y[n][w.rows] = x[n][w.cols] * W^T, rows split across the pool.
void linear(ThreadPool& pool, const WeightMatrix& w, const float* x, int64_t n, float* y);

// out = x * rsqrt(mean(x^2) + eps) * weight (out may alias x).
void rms_norm(const float* x, const float* weight, int64_t dim, double eps, float* out);
// out = (x - mean) * rsqrt(var + eps) * weight + bias (out may alias x).
void layer_norm(const float* x, const float* weight, const float* bias, int64_t dim, double eps, float* out);

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

// In-place normalized Walsh-Hadamard transform (Sylvester order) of n = 2^k values,
// scaled by n^-0.5 so it is orthonormal.
void hadamard_transform(float* x, int64_t n);

// Quantizes one block to FP8 e4m3 with a power-of-two scale 2^ceil(log2(amax / 448))
// (amax floored at 1e-4), as V3.2's indexer does: x ~= q * scale. Returns the scale.
float quantize_fp8_block_pow2(const float* x, int64_t n, uint8_t* q);

}  // namespace hearth

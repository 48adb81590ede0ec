// The float vector loops of attention (scores against cached keys, weighted sums of
// values or latents), with AVX2 kernels picked at run time next to their scalar
// references. Attention runs them once per (query, head, picked position), so on a long
// context they are the bulk of its arithmetic.
#pragma once
#include <cstdint>

#include "quant/weight_matrix.h"  // KernelIsa

namespace hearth {

// Asks for the cache lines of [p, p + n) ahead of use: for rows gathered from the KV cache,
// whose positions lie at a stride (or in an order) the hardware prefetcher does not follow.
inline void prefetch_bytes(const void* p, int64_t n) {
  const auto* b = static_cast<const char*>(p);
  const auto first = reinterpret_cast<uintptr_t>(b) & ~uintptr_t(63);
  for (uintptr_t a = first; a < reinterpret_cast<uintptr_t>(b + n); a += 64) __builtin_prefetch(reinterpret_cast<const void*>(a));
}

// sum_i a[i] * b[i]. The AVX2 kernel keeps four 8-lane FMA accumulators, so its result
// differs from the scalar reference's sequential sum by rounding only.
float dot_f32(const float* a, const float* b, int64_t n, KernelIsa isa = KernelIsa::kAuto);

// y[i] += a * x[i]: multiply, then add, on every path (no FMA), so the AVX2 kernel's
// result is bit-identical to the scalar reference's.
void axpy_f32(float a, const float* x, float* y, int64_t n, KernelIsa isa = KernelIsa::kAuto);

// The blocked forms attention's position loops use: several queries (heads) against
// several cached rows, so each loaded row chunk serves several heads and each query chunk
// several rows (a plain dot product loads two operands per FMA, which caps it at half the
// FMA rate).

// out[i * ldo + j] = sum_d q[i * ldq + d] * rows[j][d] for i < nq, j < nrows. Each pair's
// sum is one 8-lane FMA chain over d, then a fixed lane sum, then the d % 8 tail in order
// (fused), whatever tile the pair falls in: so a score never depends on how many heads or
// rows were computed with it (batched and one-at-a-time runs agree to the bit), and the
// scalar reference, which adds lane by lane in the same order, gives the same bits. It
// differs from dot_f32 by rounding only.
void dot_rows_f32(const float* q, int64_t ldq, int64_t nq, const float* const* rows, int64_t nrows, int64_t dim,
                  float* out, int64_t ldo, KernelIsa isa = KernelIsa::kAuto);

// out[i * ldo + d] += p[i * ldp + j] * rows[j][d], for j = 0, 1, .. nrows - 1 in that
// order, i < nq, d < dim: multiply, then add, element by element, so the result is
// bit-identical to nrows axpy_f32 calls in row order (and to the scalar reference).
void weighted_rows_f32(const float* p, int64_t ldp, int64_t nq, const float* const* rows, int64_t nrows,
                       int64_t dim, float* out, int64_t ldo, KernelIsa isa = KernelIsa::kAuto);

// s[i] = exp(s[i] - m) for i < n, and the sum of the results: softmax's exponentials
// (m the row's maximum, so every argument is <= 0). exp is computed as 2^k * p(r) with
// x = k ln 2 + r, |r| <= ln 2 / 2 (Cody-Waite in two steps) and p the degree-7 Taylor
// polynomial in fused multiply-adds: relative error under 1e-7 of std::exp; 0 for
// arguments below -87 (and -inf). The sum is taken in double in 16 lanes (element i in
// lane i % 16, in order) that are then added in a fixed tree. Every path runs the same
// steps, so the AVX2 kernel gives the scalar reference's bits: an element's value never
// depends on its position in a vector or on the instruction set. A softmax row of 2048
// took 1.1 ns an element with AVX2 against 4.0 with std::exp and one running double sum
// (one Zen 5 core, a throwaway driver).
double exp_shifted_f32(float* s, int64_t n, float m, KernelIsa isa = KernelIsa::kAuto);

// The first index of the largest of x[0, n), NaN skipped; -1 when n is 0 or every
// element is NaN or -inf. A maximum does not depend on the order it is taken in, so every
// path gives the same index. The AVX2 kernel takes the maximum in vectors, then finds the
// first element equal to it: 8-10 us per 129280-logit row where one scalar loop carrying
// the best index took 97 (the sampler's greedy pick, one Zen 5 core).
int64_t argmax_f32(const float* x, int64_t n, KernelIsa isa = KernelIsa::kAuto);

// out[i] = fp8_e4m3(codes[i]) * scale for i < n: one block of an FP8 cache entry decoded
// (KvCache with KvCacheType::kFp8). Every product is exact (a code has 4 significant bits
// and scale is a power of two), so the AVX2 kernel, which widens the codes through F16,
// gives the scalar reference's bits for every code but the two NaNs (0x7f, 0xff), which
// it reads as +-480 and the quantizer never writes.
void decode_fp8_block(const uint8_t* codes, int64_t n, float scale, float* out, KernelIsa isa = KernelIsa::kAuto);

}  // namespace hearth

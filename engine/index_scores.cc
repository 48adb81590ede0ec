#include "engine/index_scores.h"

#include <immintrin.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "quant/numbers.h"

namespace hearth {

namespace {

constexpr int64_t kMaxDim = 512;

// The reference: one position at a time.
void index_scores_scalar(const float* q, const float* w, int64_t heads, int64_t dim, const uint8_t* const* keys,
                         const float* key_scales, int64_t n, float* out) {
  const float* lut = fp8_e4m3_table();
  float k[kMaxDim];
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t d = 0; d < dim; ++d) k[d] = lut[keys[i][d]];
    float total = 0.0f;
    for (int64_t h = 0; h < heads; ++h) {
      const float* qh = q + h * dim;
      float dot = 0.0f;
      for (int64_t d = 0; d < dim; ++d) dot += qh[d] * k[d];
      total += w[h] * std::max(dot, 0.0f);
    }
    out[i] = total * key_scales[i];
  }
}

// Eight positions per pass: their keys transposed to [dim][8] floats, then per head a
// running sum per lane. Each head's sum is a chain of dependent adds (3-4 cycles each),
// so kHeadBlock heads are interleaved to keep both add pipes busy (four left them half
// idle); each head's sum is still its own, added to the total in head order.
// max(0, dot) with 0 first returns dot for NaN and -0.0 for -0.0, as std::max(dot, 0.0f)
// does.
template <int kHeads>
__attribute__((target("avx2"))) inline void add_head_block(const float* q, const float* w, int64_t dim,
                                                           const float (*kt)[8], __m256& total) {
  const __m256 zero = _mm256_setzero_ps();
  __m256 acc[kHeads];
  for (int j = 0; j < kHeads; ++j) acc[j] = zero;
  for (int64_t d = 0; d < dim; ++d) {
    const __m256 k = _mm256_load_ps(kt[d]);
#pragma GCC unroll 8
    for (int j = 0; j < kHeads; ++j) acc[j] = _mm256_add_ps(acc[j], _mm256_mul_ps(_mm256_set1_ps(q[j * dim + d]), k));
  }
  for (int j = 0; j < kHeads; ++j)
    total = _mm256_add_ps(total, _mm256_mul_ps(_mm256_set1_ps(w[j]), _mm256_max_ps(zero, acc[j])));
}

__attribute__((target("avx2"))) void index_scores_avx2(const float* q, const float* w, int64_t heads, int64_t dim,
                                                        const uint8_t* const* keys, const float* key_scales,
                                                        int64_t n, float* out) {
  constexpr int kHeadBlock = 8;
  const float* lut = fp8_e4m3_table();
  alignas(32) float kt[kMaxDim][8];
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int64_t d = 0; d < dim; ++d)
      for (int j = 0; j < 8; ++j) kt[d][j] = lut[keys[i + j][d]];
    __m256 total = _mm256_setzero_ps();
    int64_t h = 0;
    for (; h + kHeadBlock <= heads; h += kHeadBlock) add_head_block<kHeadBlock>(q + h * dim, w + h, dim, kt, total);
    for (; h < heads; ++h) add_head_block<1>(q + h * dim, w + h, dim, kt, total);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(total, _mm256_loadu_ps(key_scales + i)));
  }
  if (i < n) index_scores_scalar(q, w, heads, dim, keys + i, key_scales + i, n - i, out + i);
}

}  // namespace

void index_scores(const float* q, const float* w, int64_t heads, int64_t dim, const uint8_t* const* keys,
                  const float* key_scales, int64_t n, float* out, KernelIsa isa) {
  if (dim <= 0 || dim > kMaxDim) throw std::invalid_argument("index_scores: index_head_dim must be in 1.." + std::to_string(kMaxDim));
  if (isa == KernelIsa::kAuto) isa = best_isa();
  if (isa == KernelIsa::kAvx2) index_scores_avx2(q, w, heads, dim, keys, key_scales, n, out);
  else index_scores_scalar(q, w, heads, dim, keys, key_scales, n, out);
}

}  // namespace hearth

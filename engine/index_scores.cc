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

// kt[d][j] = the FP8 code keys[j][d] decoded, for eight positions j and every d < dim:
// the same floats as the lookup table gives (NaN codes included), so the scores' bits do
// not change. Sixteen dimensions at a time: the 8 x 16 code bytes are transposed with
// byte/word/dword unpacks, each code is rebuilt as the half-precision number with the same
// sign, exponent and mantissa bits (an e4m3 value times 2^-8, exact, subnormals included:
// half has the wider exponent), widened by vcvtph2ps and multiplied back by 2^8 (exact).
// A scalar decode of 1024 codes per pass cost a fifth of the scoring time.
__attribute__((target("avx2,f16c"))) void decode_keys8(const uint8_t* const* keys, int64_t dim, float (*kt)[8]) {
  const __m256i low7 = _mm256_set1_epi16(0x7f), sign = _mm256_set1_epi16(0x80), nan_h = _mm256_set1_epi16(0x7e00);
  const __m256 two8 = _mm256_set1_ps(256.0f);
  int64_t d = 0;
  for (; d + 16 <= dim; d += 16) {
    __m128i r[8];
    for (int j = 0; j < 8; ++j) r[j] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(keys[j] + d));
    // bytes -> pairs of positions, then quads, then all eight: t2[k] holds dims d+2k and
    // d+2k+1, eight positions each.
    __m128i t0[8], t1[8], t2[8];
    for (int j = 0; j < 4; ++j) {
      t0[2 * j] = _mm_unpacklo_epi8(r[2 * j], r[2 * j + 1]);
      t0[2 * j + 1] = _mm_unpackhi_epi8(r[2 * j], r[2 * j + 1]);
    }
    for (int j = 0; j < 2; ++j)
      for (int h = 0; h < 2; ++h) {
        t1[4 * j + 2 * h] = _mm_unpacklo_epi16(t0[4 * j + h], t0[4 * j + 2 + h]);
        t1[4 * j + 2 * h + 1] = _mm_unpackhi_epi16(t0[4 * j + h], t0[4 * j + 2 + h]);
      }
    for (int k = 0; k < 4; ++k) {
      t2[2 * k] = _mm_unpacklo_epi32(t1[k], t1[4 + k]);
      t2[2 * k + 1] = _mm_unpackhi_epi32(t1[k], t1[4 + k]);
    }
    for (int k = 0; k < 8; ++k) {
      const __m256i c = _mm256_cvtepu8_epi16(t2[k]);
      const __m256i mag = _mm256_and_si256(c, low7);
      __m256i h = _mm256_or_si256(_mm256_slli_epi16(mag, 7), _mm256_slli_epi16(_mm256_and_si256(c, sign), 8));
      h = _mm256_blendv_epi8(h, nan_h, _mm256_cmpeq_epi16(mag, low7));
      _mm256_store_ps(kt[d + 2 * k], _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), two8));
      _mm256_store_ps(kt[d + 2 * k + 1], _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), two8));
    }
  }
  const float* lut = fp8_e4m3_table();
  for (; d < dim; ++d)
    for (int j = 0; j < 8; ++j) kt[d][j] = lut[keys[j][d]];
}

__attribute__((target("avx2"))) void index_scores_avx2(const float* q, const float* w, int64_t heads, int64_t dim,
                                                        const uint8_t* const* keys, const float* key_scales,
                                                        int64_t n, float* out) {
  constexpr int kHeadBlock = 8;
  alignas(32) float kt[kMaxDim][8];
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    decode_keys8(keys + i, dim, kt);
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
  if (has_avx2(resolve_isa(isa))) index_scores_avx2(q, w, heads, dim, keys, key_scales, n, out);
  else index_scores_scalar(q, w, heads, dim, keys, key_scales, n, out);
}

}  // namespace hearth

#include "engine/index_scores.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
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
      for (int64_t d = 0; d < dim; ++d) dot = std::fma(qh[d], k[d], dot);
      total = std::fma(w[h], std::max(dot, 0.0f), total);
    }
    out[i] = total * key_scales[i];
  }
}

// kVecs x 8 positions per pass (one per lane), their keys transposed to [dim][kVecs * 8]
// floats. Per head, a running sum per lane takes one fused multiply-add per dimension, and
// one more adds the head's weighted sum to the total in head order: the reference's
// std::fma calls, one for one, so the bits are the same (and, every operation spelled out,
// no compiler contraction can change them). A tile of kHeads heads x kVecs vectors loads
// kVecs keys and kHeads broadcast queries per dimension for kHeads * kVecs FMAs. With 4 x 2
// that is 6 loads per 8 FMAs, and the FMA pipes set the pace; 8 heads x 1 vector loads 9
// per 8 and waited on the loads (a throwaway driver, two threads scoring a 16K cache's
// keys: 4 x 2 took 0.26-0.34 us per position, 8 x 1 0.37-0.40, 6 x 2 0.28-0.31, 4 x 3
// 0.32-0.36).
// max(0, dot) with 0 first returns dot for NaN and -0.0 for -0.0, as std::max(dot, 0.0f)
// does.
template <int kHeads, int kVecs>
__attribute__((target("avx2,fma"))) inline void add_head_block(const float* q, const float* w, int64_t dim,
                                                               const float* kt, __m256* total) {
  constexpr int kLanes = 8 * kVecs;
  const __m256 zero = _mm256_setzero_ps();
  __m256 acc[kHeads][kVecs];
  for (int j = 0; j < kHeads; ++j)
    for (int v = 0; v < kVecs; ++v) acc[j][v] = zero;
  for (int64_t d = 0; d < dim; ++d) {
    __m256 k[kVecs];
    for (int v = 0; v < kVecs; ++v) k[v] = _mm256_load_ps(kt + d * kLanes + 8 * v);
#pragma GCC unroll 8
    for (int j = 0; j < kHeads; ++j) {
      const __m256 qj = _mm256_set1_ps(q[j * dim + d]);
      for (int v = 0; v < kVecs; ++v) acc[j][v] = _mm256_fmadd_ps(qj, k[v], acc[j][v]);
    }
  }
  for (int j = 0; j < kHeads; ++j) {
    const __m256 wj = _mm256_set1_ps(w[j]);
    for (int v = 0; v < kVecs; ++v) total[v] = _mm256_fmadd_ps(wj, _mm256_max_ps(zero, acc[j][v]), total[v]);
  }
}

// kt[d * ld + j] = the FP8 code keys[j][d] decoded, for eight positions j and every d < dim:
// the same floats as the lookup table gives (NaN codes included), so the scores' bits do
// not change. Sixteen dimensions at a time: the 8 x 16 code bytes are transposed with
// byte/word/dword unpacks, each code is rebuilt as the half-precision number with the same
// sign, exponent and mantissa bits (an e4m3 value times 2^-8, exact, subnormals included:
// half has the wider exponent), widened by vcvtph2ps and multiplied back by 2^8 (exact).
// A scalar decode of 1024 codes per pass cost a fifth of the scoring time.
__attribute__((target("avx2,f16c"))) void decode_keys8(const uint8_t* const* keys, int64_t dim, float* kt, int64_t ld) {
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
      _mm256_store_ps(kt + (d + 2 * k) * ld, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), two8));
      _mm256_store_ps(kt + (d + 2 * k + 1) * ld, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), two8));
    }
  }
  const float* lut = fp8_e4m3_table();
  for (; d < dim; ++d)
    for (int j = 0; j < 8; ++j) kt[d * ld + j] = lut[keys[j][d]];
}

// kVecs x 8 positions: keys decoded, then the heads in tiles of four (and one at a time
// for the rest).
template <int kVecs>
__attribute__((target("avx2,fma"))) inline void score_positions(const float* q, const float* w, int64_t heads,
                                                                int64_t dim, const uint8_t* const* keys,
                                                                const float* key_scales, float* out, float* kt) {
  constexpr int kHeadBlock = 4;
  for (int v = 0; v < kVecs; ++v) decode_keys8(keys + 8 * v, dim, kt + 8 * v, 8 * kVecs);
  __m256 total[kVecs];
  for (int v = 0; v < kVecs; ++v) total[v] = _mm256_setzero_ps();
  int64_t h = 0;
  for (; h + kHeadBlock <= heads; h += kHeadBlock) add_head_block<kHeadBlock, kVecs>(q + h * dim, w + h, dim, kt, total);
  for (; h < heads; ++h) add_head_block<1, kVecs>(q + h * dim, w + h, dim, kt, total);
  for (int v = 0; v < kVecs; ++v)
    _mm256_storeu_ps(out + 8 * v, _mm256_mul_ps(total[v], _mm256_loadu_ps(key_scales + 8 * v)));
}

__attribute__((target("avx2,fma"))) void index_scores_avx2(const float* q, const float* w, int64_t heads,
                                                            int64_t dim, const uint8_t* const* keys,
                                                            const float* key_scales, int64_t n, float* out) {
  alignas(32) float kt[kMaxDim * 16];
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) score_positions<2>(q, w, heads, dim, keys + i, key_scales + i, out + i, kt);
  for (; i + 8 <= n; i += 8) score_positions<1>(q, w, heads, dim, keys + i, key_scales + i, out + i, kt);
  if (i < n) {  // the last 1-7 positions: a full pass with the last key repeated, the extra lanes dropped
    const uint8_t* tail_keys[8];
    float tail_scales[8], tail_out[8];
    for (int j = 0; j < 8; ++j) {
      const int64_t from = std::min(i + j, n - 1);
      tail_keys[j] = keys[from];
      tail_scales[j] = key_scales[from];
    }
    score_positions<1>(q, w, heads, dim, tail_keys, tail_scales, tail_out, kt);
    std::copy_n(tail_out, n - i, out + i);
  }
}

}  // namespace

void index_scores(const float* q, const float* w, int64_t heads, int64_t dim, const uint8_t* const* keys,
                  const float* key_scales, int64_t n, float* out, KernelIsa isa) {
  if (dim <= 0 || dim > kMaxDim) throw std::invalid_argument("index_scores: index_head_dim must be in 1.." + std::to_string(kMaxDim));
  if (has_avx2(resolve_isa(isa))) index_scores_avx2(q, w, heads, dim, keys, key_scales, n, out);
  else index_scores_scalar(q, w, heads, dim, keys, key_scales, n, out);
}

}  // namespace hearth

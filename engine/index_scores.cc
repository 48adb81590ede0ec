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
void index_scores_scalar(const float* q, const float* w, int64_t heads, int64_t dim, const uint8_t* codes, int64_t ld,
                         const float* key_scales, int64_t n, float* out) {
  const float* lut = fp8_e4m3_table();
  float k[kMaxDim];
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t d = 0; d < dim; ++d) k[d] = lut[codes[d * ld + i]];
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

// kVecs x 8 positions per pass (one per lane), their keys decoded to [dim][kVecs * 8]
// floats. Per head, a running sum per lane takes one fused multiply-add per dimension, and
// one more adds the head's weighted sum to the total in head order: the reference's
// std::fma calls, one for one, so the bits are the same (and, every operation spelled out,
// no compiler contraction can change them). A tile of kHeads heads x kVecs vectors loads
// kVecs keys and kHeads broadcast queries per dimension for kHeads * kVecs FMAs. With 4 x 2
// that is 6 loads per 8 FMAs, and the FMA pipes set the pace; 8 heads x 1 vector loads 9
// per 8 and waited on the loads (a throwaway driver, two threads scoring a 16K cache's
// keys: 4 x 2 took 0.24-0.34 us per position, 8 x 1 0.36-0.40, 6 x 2 0.28-0.31, 4 x 3
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

// The float of each of eight or sixteen FP8 codes, exactly as the lookup table gives it
// (NaN codes included), so the scores' bits do not change: each code is rebuilt as the
// half-precision number with the same sign, exponent and mantissa bits (an e4m3 value
// times 2^-8, exact, subnormals included: half has the wider exponent), widened by
// vcvtph2ps and multiplied back by 2^8 (exact).
__attribute__((target("avx2,f16c"))) inline __m256i fp8_to_half16(__m256i c) {  // c: 16 codes as u16
  const __m256i low7 = _mm256_set1_epi16(0x7f), sign = _mm256_set1_epi16(0x80), nan_h = _mm256_set1_epi16(0x7e00);
  const __m256i mag = _mm256_and_si256(c, low7);
  const __m256i h = _mm256_or_si256(_mm256_slli_epi16(mag, 7), _mm256_slli_epi16(_mm256_and_si256(c, sign), 8));
  return _mm256_blendv_epi8(h, nan_h, _mm256_cmpeq_epi16(mag, low7));
}

// kt[d * 8 * kVecs + j] = the float of codes[d * ld + j], j < 8 * kVecs: the page keeps
// each dimension's codes of consecutive positions in a row, so a dimension's codes are one
// load.
template <int kVecs>
__attribute__((target("avx2,f16c"))) void decode_keys(const uint8_t* codes, int64_t ld, int64_t dim, float* kt) {
  const __m256 two8 = _mm256_set1_ps(256.0f);
  for (int64_t d = 0; d < dim; ++d) {
    const uint8_t* row = codes + d * ld;
    float* out = kt + d * 8 * kVecs;
    if constexpr (kVecs == 2) {
      const __m256i h = fp8_to_half16(_mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row))));
      _mm256_store_ps(out, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), two8));
      _mm256_store_ps(out + 8, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), two8));
    } else {
      static_assert(kVecs == 1);
      const __m256i h = fp8_to_half16(_mm256_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row))));
      _mm256_store_ps(out, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), two8));
    }
  }
}

// kVecs x 8 positions: keys decoded, then the heads in tiles of four (and one at a time
// for the rest).
template <int kVecs>
__attribute__((target("avx2,fma,f16c"))) inline void score_positions(const float* q, const float* w, int64_t heads,
                                                                     int64_t dim, const uint8_t* codes, int64_t ld,
                                                                     const float* key_scales, float* out, float* kt) {
  constexpr int kHeadBlock = 4;
  decode_keys<kVecs>(codes, ld, dim, kt);
  __m256 total[kVecs];
  for (int v = 0; v < kVecs; ++v) total[v] = _mm256_setzero_ps();
  int64_t h = 0;
  for (; h + kHeadBlock <= heads; h += kHeadBlock) add_head_block<kHeadBlock, kVecs>(q + h * dim, w + h, dim, kt, total);
  for (; h < heads; ++h) add_head_block<1, kVecs>(q + h * dim, w + h, dim, kt, total);
  for (int v = 0; v < kVecs; ++v)
    _mm256_storeu_ps(out + 8 * v, _mm256_mul_ps(total[v], _mm256_loadu_ps(key_scales + 8 * v)));
}

__attribute__((target("avx2,fma,f16c"))) void index_scores_avx2(const float* q, const float* w, int64_t heads,
                                                                 int64_t dim, const uint8_t* codes, int64_t ld,
                                                                 const float* key_scales, int64_t n, float* out) {
  alignas(32) float kt[kMaxDim * 16];
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) score_positions<2>(q, w, heads, dim, codes + i, ld, key_scales + i, out + i, kt);
  for (; i + 8 <= n; i += 8) score_positions<1>(q, w, heads, dim, codes + i, ld, key_scales + i, out + i, kt);
  if (i < n) {  // the last 1-7 positions: a full pass with the last key repeated, the extra lanes dropped
    const int64_t m = n - i;
    uint8_t tail_codes[kMaxDim * 8];
    float tail_scales[8], tail_out[8];
    for (int64_t d = 0; d < dim; ++d)
      for (int64_t j = 0; j < 8; ++j) tail_codes[d * 8 + j] = codes[d * ld + i + std::min(j, m - 1)];
    for (int64_t j = 0; j < 8; ++j) tail_scales[j] = key_scales[i + std::min(j, m - 1)];
    score_positions<1>(q, w, heads, dim, tail_codes, 8, tail_scales, tail_out, kt);
    std::copy_n(tail_out, m, out + i);
  }
}

// The AVX-512 kernel: the same per-lane operations as the AVX2 one with sixteen positions
// to a register, so two registers score 32 positions per pass and each fused
// multiply-add instruction does twice the work (Skylake-SP and later run two 512-bit FMAs
// a cycle where they have two FMA units). Fewer than 16 positions left go to the AVX2
// kernel, whose lanes compute the same bits.
#define HEARTH_INDEX_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl")))

template <int kHeads, int kVecs>
HEARTH_INDEX_AVX512 inline void add_head_block_512(const float* q, const float* w, int64_t dim, const float* kt,
                                                   __m512* total) {
  constexpr int kLanes = 16 * kVecs;
  const __m512 zero = _mm512_setzero_ps();
  __m512 acc[kHeads][kVecs];
  for (int j = 0; j < kHeads; ++j)
    for (int v = 0; v < kVecs; ++v) acc[j][v] = zero;
  for (int64_t d = 0; d < dim; ++d) {
    __m512 k[kVecs];
    for (int v = 0; v < kVecs; ++v) k[v] = _mm512_load_ps(kt + d * kLanes + 16 * v);
#pragma GCC unroll 8
    for (int j = 0; j < kHeads; ++j) {
      const __m512 qj = _mm512_set1_ps(q[j * dim + d]);
      for (int v = 0; v < kVecs; ++v) acc[j][v] = _mm512_fmadd_ps(qj, k[v], acc[j][v]);
    }
  }
  for (int j = 0; j < kHeads; ++j) {
    const __m512 wj = _mm512_set1_ps(w[j]);
    for (int v = 0; v < kVecs; ++v) total[v] = _mm512_fmadd_ps(wj, _mm512_max_ps(zero, acc[j][v]), total[v]);
  }
}

// fp8_to_half16 for 32 codes.
HEARTH_INDEX_AVX512 inline __m512i fp8_to_half32(__m512i c) {
  const __m512i low7 = _mm512_set1_epi16(0x7f), sign = _mm512_set1_epi16(0x80), nan_h = _mm512_set1_epi16(0x7e00);
  const __m512i mag = _mm512_and_si512(c, low7);
  const __m512i h = _mm512_or_si512(_mm512_slli_epi16(mag, 7), _mm512_slli_epi16(_mm512_and_si512(c, sign), 8));
  return _mm512_mask_mov_epi16(h, _mm512_cmpeq_epi16_mask(mag, low7), nan_h);
}

// decode_keys with sixteen lanes to a vector: kt[d * 16 * kVecs + j] = the float of
// codes[d * ld + j], j < 16 * kVecs.
template <int kVecs>
HEARTH_INDEX_AVX512 void decode_keys_512(const uint8_t* codes, int64_t ld, int64_t dim, float* kt) {
  const __m512 two8 = _mm512_set1_ps(256.0f);
  for (int64_t d = 0; d < dim; ++d) {
    const uint8_t* row = codes + d * ld;
    float* out = kt + d * 16 * kVecs;
    if constexpr (kVecs == 2) {
      const __m512i h = fp8_to_half32(_mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row))));
      _mm512_store_ps(out, _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), two8));
      _mm512_store_ps(out + 16, _mm512_mul_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1)), two8));
    } else {
      static_assert(kVecs == 1);
      const __m512i h = fp8_to_half32(_mm512_cvtepu8_epi16(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row)))));
      _mm512_store_ps(out, _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), two8));
    }
  }
}

template <int kVecs>
HEARTH_INDEX_AVX512 inline void score_positions_512(const float* q, const float* w, int64_t heads, int64_t dim,
                                                    const uint8_t* codes, int64_t ld, const float* key_scales,
                                                    float* out, float* kt) {
  constexpr int kHeadBlock = 4;
  decode_keys_512<kVecs>(codes, ld, dim, kt);
  __m512 total[kVecs];
  for (int v = 0; v < kVecs; ++v) total[v] = _mm512_setzero_ps();
  int64_t h = 0;
  for (; h + kHeadBlock <= heads; h += kHeadBlock) add_head_block_512<kHeadBlock, kVecs>(q + h * dim, w + h, dim, kt, total);
  for (; h < heads; ++h) add_head_block_512<1, kVecs>(q + h * dim, w + h, dim, kt, total);
  for (int v = 0; v < kVecs; ++v)
    _mm512_storeu_ps(out + 16 * v, _mm512_mul_ps(total[v], _mm512_loadu_ps(key_scales + 16 * v)));
}

HEARTH_INDEX_AVX512 void index_scores_avx512(const float* q, const float* w, int64_t heads, int64_t dim,
                                             const uint8_t* codes, int64_t ld, const float* key_scales, int64_t n,
                                             float* out) {
  alignas(64) float kt[kMaxDim * 32];
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) score_positions_512<2>(q, w, heads, dim, codes + i, ld, key_scales + i, out + i, kt);
  for (; i + 16 <= n; i += 16) score_positions_512<1>(q, w, heads, dim, codes + i, ld, key_scales + i, out + i, kt);
  if (i < n) index_scores_avx2(q, w, heads, dim, codes + i, ld, key_scales + i, n - i, out + i);
}


}  // namespace

void index_scores(const float* q, const float* w, int64_t heads, int64_t dim, const uint8_t* codes, int64_t ld,
                  const float* key_scales, int64_t n, float* out, KernelIsa isa) {
  if (dim <= 0 || dim > kMaxDim) throw std::invalid_argument("index_scores: index_head_dim must be in 1.." + std::to_string(kMaxDim));
  if (n > ld) throw std::invalid_argument("index_scores: " + std::to_string(n) + " positions in rows of " + std::to_string(ld));
  const KernelIsa use = resolve_isa(isa);
  if (has_avx512(use)) index_scores_avx512(q, w, heads, dim, codes, ld, key_scales, n, out);
  else if (has_avx2(use)) index_scores_avx2(q, w, heads, dim, codes, ld, key_scales, n, out);
  else index_scores_scalar(q, w, heads, dim, codes, ld, key_scales, n, out);
}

namespace {

// Whether position a ranks before position b: the higher score, or the earlier position
// on equal scores.
struct Better {
  const float* score;
  bool operator()(int32_t a, int32_t b) const {
    return score[a] > score[b] || (score[a] == score[b] && a < b);
  }
};

}  // namespace

void keep_best_positions(const float* score, int64_t topk, int64_t begin, int64_t end, std::vector<int32_t>& kept) {
  for (int64_t p = begin; p < end; ++p) kept.push_back(int32_t(p));
  if (int64_t(kept.size()) > 2 * topk) {
    std::nth_element(kept.begin(), kept.begin() + (topk - 1), kept.end(), Better{score});
    kept.resize(static_cast<size_t>(topk));
  }
}

std::vector<int32_t> best_positions(const float* score, int64_t topk, std::vector<int32_t> candidates) {
  if (int64_t(candidates.size()) > topk) {
    std::nth_element(candidates.begin(), candidates.begin() + (topk - 1), candidates.end(), Better{score});
    candidates.resize(static_cast<size_t>(topk));
  }
  std::sort(candidates.begin(), candidates.end());
  return candidates;
}

}  // namespace hearth

#include "engine/index_scores.h"

#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

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
      int64_t d = 0;
      for (; d + 2 <= dim; d += 2) {  // pairs, the odd dimension first (index_scores.h)
        dot = std::fma(qh[d + 1], k[d + 1], dot);
        dot = std::fma(qh[d], k[d], dot);
      }
      if (d < dim) dot = std::fma(qh[d], k[d], dot);
      total = std::fma(w[h], std::max(dot, 0.0f), total);
    }
    out[i] = total * key_scales[i];
  }
}

// One dimension d of a tile of kHeads heads x kVecs vectors of positions: a fused
// multiply-add per lane into each head's running sums.
template <int kHeads, int kVecs>
__attribute__((target("avx2,fma"), always_inline)) inline void fma_dimension(const float* q, int64_t dim,
                                                                              const float* kt, int64_t d,
                                                                              __m256 (&acc)[kHeads][kVecs]) {
  constexpr int kLanes = 8 * kVecs;
  __m256 k[kVecs];
  for (int v = 0; v < kVecs; ++v) k[v] = _mm256_load_ps(kt + d * kLanes + 8 * v);
#pragma GCC unroll 8
  for (int j = 0; j < kHeads; ++j) {
    const __m256 qj = _mm256_set1_ps(q[j * dim + d]);
    for (int v = 0; v < kVecs; ++v) acc[j][v] = _mm256_fmadd_ps(qj, k[v], acc[j][v]);
  }
}

// kVecs x 8 positions per pass (one per lane), their keys decoded to [dim][kVecs * 8]
// floats. Per head, a running sum per lane takes one fused multiply-add per dimension, in
// the reference's order, and one more adds the head's weighted sum to the total in head
// order: the reference's std::fma calls, one for one, so the bits are the same (and,
// every operation spelled out, no compiler contraction can change them). A tile of kHeads
// heads x kVecs vectors loads kVecs keys and kHeads broadcast queries per dimension for
// kHeads * kVecs FMAs. With 4 x 2 that is 6 loads per 8 FMAs, and the FMA pipes set the
// pace; 8 heads x 1 vector loads 9 per 8 and waited on the loads (a throwaway driver, two
// threads scoring a 16K cache's keys: 4 x 2 took 0.24-0.34 us per position, 8 x 1
// 0.36-0.40, 6 x 2 0.28-0.31, 4 x 3 0.32-0.36).
// max(0, dot) with 0 first returns dot for NaN and -0.0 for -0.0, as std::max(dot, 0.0f)
// does.
template <int kHeads, int kVecs>
__attribute__((target("avx2,fma"))) inline void add_head_block(const float* q, const float* w, int64_t dim,
                                                               const float* kt, __m256* total) {
  const __m256 zero = _mm256_setzero_ps();
  __m256 acc[kHeads][kVecs];
  for (int j = 0; j < kHeads; ++j)
    for (int v = 0; v < kVecs; ++v) acc[j][v] = zero;
  int64_t d = 0;
  for (; d + 2 <= dim; d += 2) {
    fma_dimension<kHeads, kVecs>(q, dim, kt, d + 1, acc);
    fma_dimension<kHeads, kVecs>(q, dim, kt, d, acc);
  }
  if (d < dim) fma_dimension<kHeads, kVecs>(q, dim, kt, d, acc);
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
// to a register, so four registers score a 64-position page per pass and each fused
// multiply-add instruction does twice the work (Skylake-SP and later run two 512-bit FMAs
// a cycle where they have two FMA units). A tile of 4 heads x 4 vectors loads 4 keys and
// 4 queries per 16 FMAs: one thread scoring a 16K cache (64 heads of 128, a throwaway
// driver on a Zen 5 EPYC at 3.3 GHz) ran 99-101 G lane-FMAs/s, 93 % of the core's two
// 512-bit FMAs a cycle, against 87-89 with 4 x 2 and 93-95 with 8 x 2. Passes of 32 and
// 16 positions take what is left, and fewer than 16 positions go to the AVX2 kernel,
// whose lanes compute the same bits.
#define HEARTH_INDEX_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl")))

// fma_dimension with sixteen lanes to a vector. Every loop over the tile is unrolled:
// with four vectors GCC otherwise kept the 16 accumulators in memory, and the kernel ran
// at a quarter of its rate.
template <int kHeads, int kVecs>
HEARTH_INDEX_AVX512 __attribute__((always_inline)) inline void fma_dimension_512(const float* q, int64_t dim,
                                                                                 const float* kt, int64_t d,
                                                                                 __m512 (&acc)[kHeads][kVecs]) {
  constexpr int kLanes = 16 * kVecs;
  __m512 k[kVecs];
#pragma GCC unroll 16
  for (int v = 0; v < kVecs; ++v) k[v] = _mm512_load_ps(kt + d * kLanes + 16 * v);
#pragma GCC unroll 16
  for (int j = 0; j < kHeads; ++j) {
    const __m512 qj = _mm512_set1_ps(q[j * dim + d]);
#pragma GCC unroll 16
    for (int v = 0; v < kVecs; ++v) acc[j][v] = _mm512_fmadd_ps(qj, k[v], acc[j][v]);
  }
}

// A head block's running sums set to zero, and its last step: total[v] += w[j] *
// max(0, acc[j][v]), head by head (shared by the FMA and BF16 kernels).
template <int kHeads, int kVecs>
HEARTH_INDEX_AVX512 __attribute__((always_inline)) inline void zero_heads_512(__m512 (&acc)[kHeads][kVecs]) {
#pragma GCC unroll 16
  for (int j = 0; j < kHeads; ++j)
#pragma GCC unroll 16
    for (int v = 0; v < kVecs; ++v) acc[j][v] = _mm512_setzero_ps();
}

template <int kHeads, int kVecs>
HEARTH_INDEX_AVX512 __attribute__((always_inline)) inline void add_weighted_heads_512(
    const __m512 (&acc)[kHeads][kVecs], const float* w, __m512* total) {
  const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 16
  for (int j = 0; j < kHeads; ++j) {
    const __m512 wj = _mm512_set1_ps(w[j]);
#pragma GCC unroll 16
    for (int v = 0; v < kVecs; ++v) total[v] = _mm512_fmadd_ps(wj, _mm512_max_ps(zero, acc[j][v]), total[v]);
  }
}

template <int kHeads, int kVecs>
HEARTH_INDEX_AVX512 inline void add_head_block_512(const float* q, const float* w, int64_t dim, const float* kt,
                                                   __m512* total) {
  __m512 acc[kHeads][kVecs];
  zero_heads_512<kHeads, kVecs>(acc);
  int64_t d = 0;
  for (; d + 2 <= dim; d += 2) {
    fma_dimension_512<kHeads, kVecs>(q, dim, kt, d + 1, acc);
    fma_dimension_512<kHeads, kVecs>(q, dim, kt, d, acc);
  }
  if (d < dim) fma_dimension_512<kHeads, kVecs>(q, dim, kt, d, acc);
  add_weighted_heads_512<kHeads, kVecs>(acc, w, total);
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
    if constexpr (kVecs % 2 == 0) {  // 32 codes a load
      for (int p = 0; p < kVecs / 2; ++p) {
        const __m512i h =
            fp8_to_half32(_mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 32 * p))));
        _mm512_store_ps(out + 32 * p, _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), two8));
        _mm512_store_ps(out + 32 * p + 16, _mm512_mul_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1)), two8));
      }
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
  alignas(64) float kt[kMaxDim * 64];
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) score_positions_512<4>(q, w, heads, dim, codes + i, ld, key_scales + i, out + i, kt);
  for (; i + 32 <= n; i += 32) score_positions_512<2>(q, w, heads, dim, codes + i, ld, key_scales + i, out + i, kt);
  for (; i + 16 <= n; i += 16) score_positions_512<1>(q, w, heads, dim, codes + i, ld, key_scales + i, out + i, kt);
  if (i < n) index_scores_avx2(q, w, heads, dim, codes + i, ld, key_scales + i, n - i, out + i);
}

// ---- AVX512_BF16: two dimensions a lane per instruction ------------------------------
//
// vdpbf16ps adds to each float lane the products of two bf16 pairs, the odd one first,
// each sum exactly rounded: the reference's two fused multiply-adds per pair of
// dimensions, for sixteen positions in one instruction where the FMA kernel needs two.
// Its inputs are exact: the FP8 keys and queries are bf16 values, and a product of two
// bf16 values is exact in float. It flushes denormal inputs and results to zero, which
// never applies here: the keys are multiples of 2^-9, and index_query_pairs takes no
// query value below 2^-110 but zero, so every product and partial sum is a multiple of
// 2^-126 (a query's last mantissa bit times the keys' 2^-9) or zero: never a denormal.
// Scoring a 16K cache's 64 heads of 128 on one thread of a Zen 5 EPYC (a throwaway
// driver), a 4 x 4 tile ran 146 G multiply-adds/s against 100 for the FMA kernel's.
#define HEARTH_INDEX_BF16 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512bf16")))

// Each lane's two floats (bf16 values) as one bf16 pair: even's in the low half, odd's in
// the high half.
HEARTH_INDEX_BF16 inline __m512i bf16_pairs(__m512 even, __m512 odd) {
  return _mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(odd), _mm512_set1_epi32(int(0xffff0000u))),
                         _mm512_srli_epi32(_mm512_castps_si512(even), 16));
}

// kt[p * 16 * kVecs + j] = the bf16 keys of position j in dimensions 2p (low half) and
// 2p + 1 (high half), j < 16 * kVecs: the floats decode_keys_512 gives, whose low 16 bits
// are zero, cut to their high halves.
template <int kVecs>
HEARTH_INDEX_BF16 void decode_key_pairs(const uint8_t* codes, int64_t ld, int64_t dim, uint32_t* kt) {
  const __m512 two8 = _mm512_set1_ps(256.0f);
  for (int64_t d = 0; d < dim; d += 2) {
    uint32_t* out = kt + (d / 2) * 16 * kVecs;
    if constexpr (kVecs % 2 == 0) {  // 32 codes a load
      for (int p = 0; p < kVecs / 2; ++p) {
        __m512 f[2][2];  // [dimension d + e][16 positions]
        for (int e = 0; e < 2; ++e) {
          const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + (d + e) * ld + 32 * p));
          const __m512i h = fp8_to_half32(_mm512_cvtepu8_epi16(c));
          f[e][0] = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), two8);
          f[e][1] = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1)), two8);
        }
        _mm512_store_si512(out + 32 * p, bf16_pairs(f[0][0], f[1][0]));
        _mm512_store_si512(out + 32 * p + 16, bf16_pairs(f[0][1], f[1][1]));
      }
    } else {
      static_assert(kVecs == 1);
      __m512 f[2];
      for (int e = 0; e < 2; ++e) {
        const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + (d + e) * ld));
        const __m512i h = fp8_to_half32(_mm512_cvtepu8_epi16(_mm256_castsi128_si256(c)));
        f[e] = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), two8);
      }
      _mm512_store_si512(out, bf16_pairs(f[0], f[1]));
    }
  }
}

// add_head_block_512 with a pair of dimensions per instruction: q2 holds the heads'
// pairs (index_query_pairs), `pairs` of them per head.
// Not inlined: inside its caller GCC kept two of the four key vectors on the stack and
// reloaded them for every head, and the kernel ran at 0.65x the rate it has on its own.
template <int kHeads, int kVecs>
HEARTH_INDEX_BF16 __attribute__((noinline)) void add_head_block_bf16(const uint32_t* q2, const float* w, int64_t pairs,
                                                                    const uint32_t* kt, __m512* total) {
  __m512 acc[kHeads][kVecs];
  zero_heads_512<kHeads, kVecs>(acc);
  for (int64_t p = 0; p < pairs; ++p) {
    // The keys as integer vectors, cast at each use: an array of __m512bh made GCC keep
    // them on the stack and reload them for every head.
    __m512i k[kVecs];
#pragma GCC unroll 16
    for (int v = 0; v < kVecs; ++v) k[v] = _mm512_load_si512(kt + p * 16 * kVecs + 16 * v);
#pragma GCC unroll 16
    for (int j = 0; j < kHeads; ++j) {
      const __m512bh qj = (__m512bh)_mm512_set1_epi32(int(q2[j * pairs + p]));
#pragma GCC unroll 16
      for (int v = 0; v < kVecs; ++v) acc[j][v] = _mm512_dpbf16_ps(acc[j][v], (__m512bh)k[v], qj);
    }
  }
  add_weighted_heads_512<kHeads, kVecs>(acc, w, total);
}

template <int kVecs>
HEARTH_INDEX_BF16 inline void score_positions_bf16(const uint32_t* q2, const float* w, int64_t heads, int64_t dim,
                                                   const uint8_t* codes, int64_t ld, const float* key_scales,
                                                   float* out, uint32_t* kt) {
  constexpr int kHeadBlock = 4;
  const int64_t pairs = dim / 2;
  decode_key_pairs<kVecs>(codes, ld, dim, kt);
  __m512 total[kVecs];
  for (int v = 0; v < kVecs; ++v) total[v] = _mm512_setzero_ps();
  int64_t h = 0;
  for (; h + kHeadBlock <= heads; h += kHeadBlock)
    add_head_block_bf16<kHeadBlock, kVecs>(q2 + h * pairs, w + h, pairs, kt, total);
  for (; h < heads; ++h) add_head_block_bf16<1, kVecs>(q2 + h * pairs, w + h, pairs, kt, total);
  for (int v = 0; v < kVecs; ++v)
    _mm512_storeu_ps(out + 16 * v, _mm512_mul_ps(total[v], _mm512_loadu_ps(key_scales + 16 * v)));
}

// dim even. Fewer than 16 positions left go to the AVX2 kernel, whose lanes compute the
// same bits.
HEARTH_INDEX_BF16 void index_scores_avx512bf16(const float* q, const uint32_t* q2, const float* w, int64_t heads,
                                               int64_t dim, const uint8_t* codes, int64_t ld, const float* key_scales,
                                               int64_t n, float* out) {
  alignas(64) uint32_t kt[kMaxDim / 2 * 64];
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) score_positions_bf16<4>(q2, w, heads, dim, codes + i, ld, key_scales + i, out + i, kt);
  for (; i + 32 <= n; i += 32) score_positions_bf16<2>(q2, w, heads, dim, codes + i, ld, key_scales + i, out + i, kt);
  for (; i + 16 <= n; i += 16) score_positions_bf16<1>(q2, w, heads, dim, codes + i, ld, key_scales + i, out + i, kt);
  if (i < n) index_scores_avx2(q, w, heads, dim, codes + i, ld, key_scales + i, n - i, out + i);
}

}  // namespace

bool index_query_pairs(const float* q, int64_t heads, int64_t dim, uint32_t* pairs) {
  if (dim % 2 != 0) return false;
  // A value the BF16 kernel cannot take as it is: bits below bf16's, or a magnitude
  // under 2^-110 but not zero (the kernel's products could then be denormals, which
  // vdpbf16ps flushes and the reference keeps).
  auto unfit = [](uint32_t bits) {
    const uint32_t mag = bits & 0x7fffffffu;
    return (bits & 0xffffu) != 0 || (mag != 0 && mag < 0x08800000u);  // 0x08800000: 2^-110
  };
  bool fit = true;
  for (int64_t i = 0; i < heads * dim; i += 2) {
    uint32_t even, odd;
    std::memcpy(&even, q + i, sizeof even);
    std::memcpy(&odd, q + i + 1, sizeof odd);
    fit &= !unfit(even) && !unfit(odd);
    pairs[i / 2] = (odd & 0xffff0000u) | (even >> 16);
  }
  return fit;
}

void index_scores(const float* q, const float* w, int64_t heads, int64_t dim, const uint8_t* codes, int64_t ld,
                  const float* key_scales, int64_t n, float* out, KernelIsa isa, const uint32_t* q_pairs) {
  if (dim <= 0 || dim > kMaxDim) throw std::invalid_argument("index_scores: index_head_dim must be in 1.." + std::to_string(kMaxDim));
  if (n > ld) throw std::invalid_argument("index_scores: " + std::to_string(n) + " positions in rows of " + std::to_string(ld));
  const KernelIsa use = resolve_isa(isa);
  if (has_bf16(use) && q_pairs) return index_scores_avx512bf16(q, q_pairs, w, heads, dim, codes, ld, key_scales, n, out);
  if (has_avx512(use)) index_scores_avx512(q, w, heads, dim, codes, ld, key_scales, n, out);
  else if (has_avx2(use)) index_scores_avx2(q, w, heads, dim, codes, ld, key_scales, n, out);
  else index_scores_scalar(q, w, heads, dim, codes, ld, key_scales, n, out);
}

PositionRank position_rank(float score, int32_t position) {
  uint32_t u;
  std::memcpy(&u, &score, sizeof u);
  if (u == 0x80000000u) u = 0;  // -0 ties with +0
  // Negative floats reversed below the positive ones: unsigned order is float order.
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (PositionRank(u) << 32) | PositionRank(~uint32_t(position));
}

void keep_best_positions(const float* score, int64_t topk, int64_t begin, int64_t end, std::vector<PositionRank>& kept,
                         PositionRank& floor) {
  for (int64_t p = begin; p < end; ++p)
    if (const PositionRank r = position_rank(score[p], int32_t(p)); r > floor) kept.push_back(r);
  if (int64_t(kept.size()) > 2 * topk) {
    std::nth_element(kept.begin(), kept.begin() + (topk - 1), kept.end(), std::greater<PositionRank>());
    kept.resize(static_cast<size_t>(topk));
    floor = kept.back();  // the topk-th best: every other kept one ranks above it
  }
}

std::vector<int32_t> best_positions(int64_t topk, std::vector<PositionRank> candidates) {
  if (int64_t(candidates.size()) > topk) {
    std::nth_element(candidates.begin(), candidates.begin() + (topk - 1), candidates.end(), std::greater<PositionRank>());
    candidates.resize(static_cast<size_t>(topk));
  }
  int32_t last = -1;
  for (const PositionRank r : candidates) last = std::max(last, ranked_position(r));
  std::vector<uint64_t> marks(static_cast<size_t>(last / 64 + 1), 0);
  for (const PositionRank r : candidates) {
    const int32_t p = ranked_position(r);
    marks[size_t(p / 64)] |= uint64_t(1) << (p % 64);
  }
  std::vector<int32_t> picked;
  picked.reserve(candidates.size());
  for (size_t w = 0; w < marks.size(); ++w)
    for (uint64_t m = marks[w]; m != 0; m &= m - 1) picked.push_back(int32_t(w * 64 + size_t(std::countr_zero(m))));
  return picked;
}

}  // namespace hearth

// The AVX2 (+ FMA + F16C) dot product of eight interleaved Q4_K rows against 1..4 Q8_K
// activation rows (quant/interleaved.h has the layout and the formula).
//
// Per super-block the 64 scales and 64 mins are unpacked once for all eight rows; per
// sub-block four 32-byte loads split into low and high nibbles give eight registers of
// levels, each holding four values of every row (row r in 32-bit lane r). A broadcast
// activation quad times one of them (vpmaddubsw) leaves row r's two pair sums in lane r,
// so the eight rows' results build up in their own lanes and nothing is summed across
// lanes. Every integer step is exact (bounds at each), and the float steps are the
// scalar reference's, lane by lane, so the result is its floats bit for bit.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/avx2_blocks.h"
#include "quant/interleaved.h"
#include "quant/interleaved_kernels.h"

namespace hearth::interleaved_avx2 {

namespace {

using avx2::load128;
using avx2::load256;

// As quant/dot_kernels.inc: the hardware prefetcher alone keeps too few lines in flight
// for a kernel that does this much work per line, so each super-block prefetches the
// lines 4 KB ahead of it (past the group's end too: a prefetch never faults).
constexpr int64_t kPrefetchBytes = 4096;

HEARTH_AVX2 inline void prefetch_block(const BlockQ4_Kx8* b) {
  const char* p = reinterpret_cast<const char*>(b) + kPrefetchBytes;
  for (size_t off = 0; off < sizeof(BlockQ4_Kx8); off += 64) _mm_prefetch(p + off, _MM_HINT_T0);
}

// Four activation bytes in every 32-bit lane.
HEARTH_AVX2 inline __m256i broadcast4(const int8_t* a) {
  int32_t v;
  std::memcpy(&v, a, 4);
  return _mm256_set1_epi32(v);
}

// Lane r = the byte's value in both 16-bit halves, from bytes 0..7 of v (one per row).
HEARTH_AVX2 inline __m256i rows_in_both_halves(__m128i v) {
  const __m256i w = _mm256_cvtepu8_epi32(v);
  return _mm256_or_si256(w, _mm256_slli_epi32(w, 16));
}

// The super-block's scales and mins, unpacked from the 96 bytes once for all rows.
//   scale[s]: lane r holds sc[s][r] in both int16 halves, for one vpmaddwd against the
//             two pair sums each lane of a sub-block's int16 total holds.
//   min_pair[k]: lane r holds m[2k][r] (low half) and m[2k + 1][r] (high half), for one
//             vpmaddwd against the activations' sums of sub-blocks 2k and 2k + 1.
struct ScalesMins {
  __m256i scale[8];
  __m256i min_pair[4];
};

HEARTH_AVX2 inline void unpack_scales_mins(const uint8_t scales[96], ScalesMins& u) {
  const __m256i low4 = _mm256_set1_epi8(15), bits45 = _mm256_set1_epi8(0x30);
  const __m256i s = load256(scales), m = load256(scales + 32), h = load256(scales + 64);
  // Byte j = 8s + r of each: sub-block s (lo) or s + 4 (hi) of row r. The low nibbles come
  // from the nibbles of s / m; the top two bits from bit pairs 0, 2 (scales) and 4, 6
  // (mins) of h, moved to bits 4..5. The shifts work on 16-bit words, so bits cross from
  // one byte into its neighbour: the masks drop them.
  const __m256i sc_lo = _mm256_or_si256(_mm256_and_si256(s, low4), _mm256_and_si256(_mm256_slli_epi16(h, 4), bits45));
  const __m256i sc_hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(s, 4), low4),
                                        _mm256_and_si256(_mm256_slli_epi16(h, 2), bits45));
  const __m256i m_lo = _mm256_or_si256(_mm256_and_si256(m, low4), _mm256_and_si256(h, bits45));
  const __m256i m_hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(m, 4), low4),
                                       _mm256_and_si256(_mm256_srli_epi16(h, 2), bits45));
  // Each 128-bit half holds two sub-blocks (8 bytes each).
  const __m128i sc_halves[4] = {_mm256_castsi256_si128(sc_lo), _mm256_extracti128_si256(sc_lo, 1),
                                _mm256_castsi256_si128(sc_hi), _mm256_extracti128_si256(sc_hi, 1)};
  for (int k = 0; k < 4; ++k) {
    u.scale[2 * k] = rows_in_both_halves(sc_halves[k]);
    u.scale[2 * k + 1] = rows_in_both_halves(_mm_unpackhi_epi64(sc_halves[k], sc_halves[k]));
  }
  // Interleave the two sub-blocks of each 128-bit half byte by byte (m[2k][r], m[2k+1][r]
  // adjacent), then widen to int16.
  const __m256i pairs = _mm256_setr_epi8(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15,  //
                                         0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
  const __m256i pm_lo = _mm256_shuffle_epi8(m_lo, pairs), pm_hi = _mm256_shuffle_epi8(m_hi, pairs);
  u.min_pair[0] = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(pm_lo));
  u.min_pair[1] = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(pm_lo, 1));
  u.min_pair[2] = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(pm_hi));
  u.min_pair[3] = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(pm_hi, 1));
}

// Lane r = imin of row r = sum_s m[s][r] * (bsums[2s] + bsums[2s + 1]). The per-sub-block
// sums fit int16 (|.| <= 32 * 128), so one vphaddw makes them: words 0..3 of the low half
// are sub-blocks 0..3, of the high half 4..7, i.e. 32-bit elements 0, 1, 4, 5 hold the
// pairs (0, 1), (2, 3), (4, 5), (6, 7). Products: 63 * 4096 per term, exact in int32.
HEARTH_AVX2 inline __m256i min_sums(const int16_t bsums[16], const ScalesMins& u) {
  const __m256i b = load256(bsums);
  const __m256i sub = _mm256_hadd_epi16(b, b);
  __m256i sum = _mm256_madd_epi16(u.min_pair[0], _mm256_permutevar8x32_epi32(sub, _mm256_set1_epi32(0)));
  sum = _mm256_add_epi32(sum, _mm256_madd_epi16(u.min_pair[1], _mm256_permutevar8x32_epi32(sub, _mm256_set1_epi32(1))));
  sum = _mm256_add_epi32(sum, _mm256_madd_epi16(u.min_pair[2], _mm256_permutevar8x32_epi32(sub, _mm256_set1_epi32(4))));
  sum = _mm256_add_epi32(sum, _mm256_madd_epi16(u.min_pair[3], _mm256_permutevar8x32_epi32(sub, _mm256_set1_epi32(5))));
  return sum;
}

template <int T>
HEARTH_AVX2 void dot_x8(const BlockQ4_Kx8* x, const BlockQ8_K* const y[T], int64_t nb, float* out) {
  const __m256i low4 = _mm256_set1_epi8(15);
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t ib = 0; ib < nb; ++ib) {
    prefetch_block(x + ib);
    const BlockQ4_Kx8& b = x[ib];
    ScalesMins u;
    unpack_scales_mins(b.scales, u);
    __m256i isum[T];
    for (int t = 0; t < T; ++t) isum[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int s = 0; s < 8; ++s) {
      // Register k < 4: values 4k .. 4k + 3 of sub-block s of every row; k >= 4: values
      // 16 + 4(k - 4) .. (the high nibbles of the same bytes).
      __m256i q[8];
#pragma GCC unroll 4
      for (int p = 0; p < 4; ++p) {
        const __m256i bytes = load256(b.qs + 128 * s + 32 * p);
        q[p] = _mm256_and_si256(bytes, low4);
        q[p + 4] = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4);
      }
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        // Levels <= 15 times int8: vpmaddubsw pairs within +-2 * 15 * 128 = 3840 (no
        // saturation), eight of them within +-30720, still int16. Then the sub-block's
        // scale (<= 63) by vpmaddwd: lane r = sc[s][r] * (row r's 32 products).
        const int8_t* a = y[t][ib].qs + 32 * s;
        __m256i part = _mm256_maddubs_epi16(q[0], broadcast4(a));
#pragma GCC unroll 8
        for (int k = 1; k < 8; ++k) part = _mm256_add_epi16(part, _mm256_maddubs_epi16(q[k], broadcast4(a + 4 * k)));
        isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(part, u.scale[s]));
      }
    }
    // The f16 factors converted exactly, times a.d with one rounding each (vmulps, as
    // the reference's float product), then the reference's two fused steps.
    const __m256 d = _mm256_cvtph_ps(load128(b.d));
    const __m256 dmin = _mm256_cvtph_ps(load128(b.dmin));
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const BlockQ8_K& a = y[t][ib];
      const __m256 ad = _mm256_set1_ps(a.d);
      const __m256i imin = min_sums(a.bsums, u);
      acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(d, ad), _mm256_cvtepi32_ps(isum[t]), acc[t]);
      acc[t] = _mm256_fnmadd_ps(_mm256_mul_ps(dmin, ad), _mm256_cvtepi32_ps(imin), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) _mm256_storeu_ps(out + kInterleavedRows * t, acc[t]);
}

template <int T>
HEARTH_AVX2 void dot_x8_tokens(const void* group, const void* const* act, int64_t n, float* out) {
  const BlockQ8_K* y[T];
  for (int t = 0; t < T; ++t) y[t] = static_cast<const BlockQ8_K*>(act[t]);
  dot_x8<T>(static_cast<const BlockQ4_Kx8*>(group), y, n / kQK_K, out);
}

}  // namespace

void vec_dot_q4_k_x8(const void* group, const void* const* act, int tokens, int64_t n, float* out) {
  check_x8_call(tokens, n);
  switch (tokens) {
    case 1: return dot_x8_tokens<1>(group, act, n, out);
    case 2: return dot_x8_tokens<2>(group, act, n, out);
    case 3: return dot_x8_tokens<3>(group, act, n, out);
    default: return dot_x8_tokens<4>(group, act, n, out);
  }
}

}  // namespace hearth::interleaved_avx2

// The AVX-512 (F + BW) dot product of two interleaved Q4_K groups (sixteen rows) against
// 1..4 Q8_K activation rows (quant/interleaved.h has the layout and the formula).
//
// The AVX2 kernel's scheme, twice as wide: each 512-bit register holds one group in its
// low half and the other in its high half, so lane r < 8 is row r of the first group and
// lane 8 + r row r of the second. The activations are the same for both groups, so a
// broadcast quad still multiplies every lane. Why it pays: without VNNI the int8 product
// is vpmaddubsw + vpaddw + vpmaddwd, and on AVX-512 cores the 512-bit forms of these run
// on two ports where the 256-bit ones run on two or three, so one instruction does twice
// the work for about the same issue cost (bench/dot_bench's "x16" rows).
//
// Every integer step is the AVX2 kernel's (the same bounds), and the float steps are the
// scalar reference's, lane by lane, so the result is its floats bit for bit.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/avx2_blocks.h"
#include "quant/interleaved.h"
#include "quant/interleaved_kernels.h"

namespace hearth::interleaved_avx512 {

#define HEARTH_AVX512BW __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")))

namespace {

using avx2::load256;

// As the AVX2 kernel: 4 KB ahead of the block being read, for both groups.
constexpr int64_t kPrefetchBytes = 4096;

HEARTH_AVX512BW inline void prefetch_block(const BlockQ4_Kx8* b) {
  const char* p = reinterpret_cast<const char*>(b) + kPrefetchBytes;
  for (size_t off = 0; off < sizeof(BlockQ4_Kx8); off += 64) _mm_prefetch(p + off, _MM_HINT_T0);
}

// 32 bytes of the first group in the low half, the same 32 bytes of the second above.
HEARTH_AVX512BW inline __m512i load_pair(const void* lo, const void* hi) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(load256(lo)), load256(hi), 1);
}

// Four activation bytes in every 32-bit lane.
HEARTH_AVX512BW inline __m512i broadcast4(const int8_t* a) {
  int32_t v;
  std::memcpy(&v, a, 4);
  return _mm512_set1_epi32(v);
}

// The two groups' scales and mins, unpacked once per super-block (the AVX2 kernel's
// ScalesMins, with lanes 8..15 for the second group).
struct ScalesMins {
  __m512i scale[8];
  __m512i min_pair[4];
};

HEARTH_AVX512BW inline void unpack_scales_mins(const uint8_t* scales0, const uint8_t* scales1, ScalesMins& u) {
  const __m512i low4 = _mm512_set1_epi8(15), bits45 = _mm512_set1_epi8(0x30);
  const __m512i s = load_pair(scales0, scales1), m = load_pair(scales0 + 32, scales1 + 32);
  const __m512i h = load_pair(scales0 + 64, scales1 + 64);
  // Per half exactly the AVX2 kernel's bytes: byte 8s + r of each half is sub-block s
  // (lo) or s + 4 (hi) of row r of that half's group.
  const __m512i sc_lo = _mm512_or_si512(_mm512_and_si512(s, low4), _mm512_and_si512(_mm512_slli_epi16(h, 4), bits45));
  const __m512i sc_hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(s, 4), low4),
                                        _mm512_and_si512(_mm512_slli_epi16(h, 2), bits45));
  const __m512i m_lo = _mm512_or_si512(_mm512_and_si512(m, low4), _mm512_and_si512(h, bits45));
  const __m512i m_hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(m, 4), low4),
                                       _mm512_and_si512(_mm512_srli_epi16(h, 2), bits45));
  // Scales: qword k of a half is sub-block k's eight rows. Putting qwords (k, 4 + k) side
  // by side gives, in one 128-bit lane, sub-block k of both groups, which vpmovzxbd widens
  // to lanes 0..15; the scale then goes into both int16 halves of its lane.
  const __m512i by_sub = _mm512_setr_epi64(0, 4, 1, 5, 2, 6, 3, 7);
  const __m512i lo_pairs = _mm512_permutexvar_epi64(by_sub, sc_lo), hi_pairs = _mm512_permutexvar_epi64(by_sub, sc_hi);
  const __m128i sub[8] = {_mm512_castsi512_si128(lo_pairs),       _mm512_extracti32x4_epi32(lo_pairs, 1),
                          _mm512_extracti32x4_epi32(lo_pairs, 2), _mm512_extracti32x4_epi32(lo_pairs, 3),
                          _mm512_castsi512_si128(hi_pairs),       _mm512_extracti32x4_epi32(hi_pairs, 1),
                          _mm512_extracti32x4_epi32(hi_pairs, 2), _mm512_extracti32x4_epi32(hi_pairs, 3)};
  for (int k = 0; k < 8; ++k) {
    const __m512i w = _mm512_cvtepu8_epi32(sub[k]);
    u.scale[k] = _mm512_or_si512(w, _mm512_slli_epi32(w, 16));
  }
  // Mins: each 128-bit lane holds two sub-blocks of one group; interleaving them byte by
  // byte (as the AVX2 kernel) puts m[2k][r], m[2k + 1][r] side by side. Lanes 0 and 2
  // (or 1 and 3) are then the same sub-blocks of the two groups, widened to int16.
  const __m512i pairs = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15));
  const __m512i pm_lo = _mm512_shuffle_epi8(m_lo, pairs), pm_hi = _mm512_shuffle_epi8(m_hi, pairs);
  u.min_pair[0] = _mm512_cvtepu8_epi16(_mm512_castsi512_si256(_mm512_shuffle_i64x2(pm_lo, pm_lo, 0x08)));  // lanes 0, 2
  u.min_pair[1] = _mm512_cvtepu8_epi16(_mm512_castsi512_si256(_mm512_shuffle_i64x2(pm_lo, pm_lo, 0x0d)));  // lanes 1, 3
  u.min_pair[2] = _mm512_cvtepu8_epi16(_mm512_castsi512_si256(_mm512_shuffle_i64x2(pm_hi, pm_hi, 0x08)));
  u.min_pair[3] = _mm512_cvtepu8_epi16(_mm512_castsi512_si256(_mm512_shuffle_i64x2(pm_hi, pm_hi, 0x0d)));
}

// Lane r = imin of that lane's row (the AVX2 kernel's min_sums): the activations' sums of
// sub-block pairs, broadcast to every lane, times the pairs of mins.
HEARTH_AVX512BW inline __m512i min_sums(const int16_t bsums[16], const ScalesMins& u) {
  const __m256i b = load256(bsums);
  // Words 0..3 of the low half: sub-blocks 0..3; of the high half: 4..7. So 32-bit
  // elements 0, 1, 4, 5 hold the pairs (0, 1), (2, 3), (4, 5), (6, 7).
  const __m512i sub = _mm512_castsi256_si512(_mm256_hadd_epi16(b, b));
  __m512i sum = _mm512_madd_epi16(u.min_pair[0], _mm512_permutexvar_epi32(_mm512_set1_epi32(0), sub));
  sum = _mm512_add_epi32(sum, _mm512_madd_epi16(u.min_pair[1], _mm512_permutexvar_epi32(_mm512_set1_epi32(1), sub)));
  sum = _mm512_add_epi32(sum, _mm512_madd_epi16(u.min_pair[2], _mm512_permutexvar_epi32(_mm512_set1_epi32(4), sub)));
  sum = _mm512_add_epi32(sum, _mm512_madd_epi16(u.min_pair[3], _mm512_permutexvar_epi32(_mm512_set1_epi32(5), sub)));
  return sum;
}

// Sixteen f16 factors (eight of each group) as floats, exactly.
HEARTH_AVX512BW inline __m512 factors(const uint16_t* f0, const uint16_t* f1) {
  const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(f0));
  const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(f1));
  return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1));
}

template <int T>
HEARTH_AVX512BW void dot_x16(const BlockQ4_Kx8* x0, const BlockQ4_Kx8* x1, const BlockQ8_K* const y[T], int64_t nb,
                             float* out) {
  const __m512i low4 = _mm512_set1_epi8(15);
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t ib = 0; ib < nb; ++ib) {
    prefetch_block(x0 + ib);
    prefetch_block(x1 + ib);
    const BlockQ4_Kx8& b0 = x0[ib];
    const BlockQ4_Kx8& b1 = x1[ib];
    ScalesMins u;
    unpack_scales_mins(b0.scales, b1.scales, u);
    __m512i isum[T];
    for (int t = 0; t < T; ++t) isum[t] = _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int s = 0; s < 8; ++s) {
      // As the AVX2 kernel: register k < 4 holds values 4k .. 4k + 3 of sub-block s of
      // every row (both groups), k >= 4 the high nibbles of the same bytes.
      __m512i q[8];
#pragma GCC unroll 4
      for (int p = 0; p < 4; ++p) {
        const __m512i bytes = load_pair(b0.qs + 128 * s + 32 * p, b1.qs + 128 * s + 32 * p);
        q[p] = _mm512_and_si512(bytes, low4);
        q[p + 4] = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), low4);
      }
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        // Bounds as the AVX2 kernel: pairs within +-3840, eight of them within +-30720.
        const int8_t* a = y[t][ib].qs + 32 * s;
        __m512i part = _mm512_maddubs_epi16(q[0], broadcast4(a));
#pragma GCC unroll 8
        for (int k = 1; k < 8; ++k) part = _mm512_add_epi16(part, _mm512_maddubs_epi16(q[k], broadcast4(a + 4 * k)));
        isum[t] = _mm512_add_epi32(isum[t], _mm512_madd_epi16(part, u.scale[s]));
      }
    }
    // The reference's float steps: the factor times a.d rounded once (vmulps), then the
    // two fused steps.
    const __m512 d = factors(b0.d, b1.d);
    const __m512 dmin = factors(b0.dmin, b1.dmin);
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const BlockQ8_K& a = y[t][ib];
      const __m512 ad = _mm512_set1_ps(a.d);
      const __m512i imin = min_sums(a.bsums, u);
      acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(d, ad), _mm512_cvtepi32_ps(isum[t]), acc[t]);
      acc[t] = _mm512_fnmadd_ps(_mm512_mul_ps(dmin, ad), _mm512_cvtepi32_ps(imin), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) _mm512_storeu_ps(out + 2 * kInterleavedRows * t, acc[t]);
}

template <int T>
HEARTH_AVX512BW void dot_x16_tokens(const void* group0, const void* group1, const void* const* act, int64_t n,
                                    float* out) {
  const BlockQ8_K* y[T];
  for (int t = 0; t < T; ++t) y[t] = static_cast<const BlockQ8_K*>(act[t]);
  dot_x16<T>(static_cast<const BlockQ4_Kx8*>(group0), static_cast<const BlockQ4_Kx8*>(group1), y, n / kQK_K, out);
}

}  // namespace

void vec_dot_q4_k_x16(const void* group0, const void* group1, const void* const* act, int tokens, int64_t n,
                      float* out) {
  interleaved_avx2::check_x8_call(tokens, n);
  switch (tokens) {
    case 1: return dot_x16_tokens<1>(group0, group1, act, n, out);
    case 2: return dot_x16_tokens<2>(group0, group1, act, n, out);
    case 3: return dot_x16_tokens<3>(group0, group1, act, n, out);
    default: return dot_x16_tokens<4>(group0, group1, act, n, out);
  }
}

}  // namespace hearth::interleaved_avx512

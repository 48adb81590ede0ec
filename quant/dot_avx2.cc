// AVX2 + FMA + F16C dot products of the block formats against their activation formats.
// The scalar references are the vec_dot routines in quant/block_formats.cc,
// quant/kquants.cc, quant/legacy_quants.cc and quant/iq4.cc; layouts are documented in
// quant/block_formats.h.
//
// Scheme, as in ggml: weight levels are unpacked to unsigned bytes (0..63) and multiplied
// with the signed int8 activations by vpmaddubsw (pairs summed into int16), then by the
// sub-block scales with vpmaddwd (into int32). Every intermediate is bounded well inside
// its type (noted at each kernel), so the integer sums are exact for any levels and any
// int8 activations. Offsets of signed levels (Q4_0's 8, Q5_0's 16, Q3_K's 4, Q6_K's 32),
// the K-quant mins and the Q4_1/Q5_1 offsets are applied through activation sums. The
// IQ4 levels (signed table values) take the activations' signs instead, so that |y| is
// the unsigned operand. A super-block's int32 lanes are
// converted to float and accumulated with its float factor by FMA; the only differences
// from the scalar code are float rounding and summation order.
#include "quant/dot_avx2.h"

#include <immintrin.h>

#include <cstring>

#include "quant/block_formats.h"
#include "quant/kquants.h"
#include "quant/avx2_blocks.h"

namespace hearth::dot_avx2 {

namespace {

using kquants::require_whole_blocks;
using namespace avx2;

// ---- Q8_0 · Q8_0 ---------------------------------------------------------------
// Both operands may be -128, so no vpmaddubsw sign trick: sign-extend to int16 and
// vpmaddwd (pairs <= 2 * 128 * 128, exact in int32).

HEARTH_AVX2 inline __m256i dot_q8_32(const int8_t* x, const int8_t* y) {
  const __m256i x0 = _mm256_cvtepi8_epi16(load128(x));
  const __m256i x1 = _mm256_cvtepi8_epi16(load128(x + 16));
  const __m256i y0 = _mm256_cvtepi8_epi16(load128(y));
  const __m256i y1 = _mm256_cvtepi8_epi16(load128(y + 16));
  return _mm256_add_epi32(_mm256_madd_epi16(x0, y0), _mm256_madd_epi16(x1, y1));
}

// The 32 nibbles of a 16-byte group in value order: byte j's low nibble is value j, its
// high nibble value j + 16 (so the low lane holds values 0..15, the high lane 16..31).
HEARTH_AVX2 inline __m256i nibbles32(const uint8_t* qs) {
  const __m128i packed = load128(qs);
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), _mm256_set1_epi8(15));
}

// ---- Q4_0 · Q8_0 ---------------------------------------------------------------
// Nibbles 0..15 against int8: vpmaddubsw pairs <= 2 * 15 * 128; the offset 8 comes off
// as 8 * (pair sums of y), so each int16 is sum (q - 8) y over a pair, |.| <= 2048.

HEARTH_AVX2 inline __m256i dot_q4_32(const uint8_t* qs, const int8_t* y) {
  const __m256i q = nibbles32(qs);
  const __m256i yv = load256(y);
  const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(q, yv),
                                     _mm256_maddubs_epi16(_mm256_set1_epi8(8), yv));
  return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

// The 32-value formats with one scale d per block: BlockDot gives the block's integer
// sum of level times activation quant spread over eight int32 lanes.
template <class Block, __m256i (*BlockDot)(const Block&, const int8_t*)>
HEARTH_AVX2 inline float dot_32_blocks(const Block* x, const BlockQ8_0* y, int64_t nb) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t ib = 0;
  for (; ib + 2 <= nb; ib += 2) {
    const __m256 d0 = _mm256_set1_ps(half(x[ib].d) * half(y[ib].d));
    const __m256 d1 = _mm256_set1_ps(half(x[ib + 1].d) * half(y[ib + 1].d));
    const __m256i s0 = BlockDot(x[ib], y[ib].qs);
    const __m256i s1 = BlockDot(x[ib + 1], y[ib + 1].qs);
    acc0 = _mm256_fmadd_ps(d0, _mm256_cvtepi32_ps(s0), acc0);
    acc1 = _mm256_fmadd_ps(d1, _mm256_cvtepi32_ps(s1), acc1);
  }
  if (ib < nb) {
    const __m256 d0 = _mm256_set1_ps(half(x[ib].d) * half(y[ib].d));
    const __m256i s0 = BlockDot(x[ib], y[ib].qs);
    acc0 = _mm256_fmadd_ps(d0, _mm256_cvtepi32_ps(s0), acc0);
  }
  return hsum(_mm256_add_ps(acc0, acc1));
}

HEARTH_AVX2 inline __m256i dot_q8_0_block(const BlockQ8_0& b, const int8_t* y) { return dot_q8_32(b.qs, y); }
HEARTH_AVX2 inline __m256i dot_q4_0_block(const BlockQ4_0& b, const int8_t* y) { return dot_q4_32(b.qs, y); }

// ---- Q4_1, Q5_0, Q5_1 and IQ4_NL · Q8_0 ------------------------------------------------

// 16 in byte i where bit i of the little-endian 32-bit word at qh is set, else 0 (the
// fifth bits of Q5_0 / Q5_1 in value order).
HEARTH_AVX2 inline __m256i fifth_bits(const uint8_t* qh) {
  uint32_t h;
  std::memcpy(&h, qh, 4);
  // Byte i of the result looks at byte i / 8 of h (vpshufb works within 128-bit lanes,
  // and both lanes hold all of h), then at bit i % 8 of it.
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(int(h)),
      _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
  const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201ULL));
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
  return _mm256_and_si256(set, _mm256_set1_epi8(16));
}

// Unsigned levels 0..31 against int8 activations: vpmaddubsw pairs <= 2 * 31 * 128 =
// 7936, then pair sums to int32.
HEARTH_AVX2 inline __m256i dot_levels(__m256i q, __m256i yv) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(q, yv), _mm256_set1_epi16(1));
}

// Q5_0: levels q - 16 with q = nibble + fifth bit; the offset comes off as 16 * (pair
// sums of y), so each int16 is sum (q - 16) y over a pair, |.| <= 4096.
HEARTH_AVX2 inline __m256i dot_q5_0_block(const BlockQ5_0& b, const int8_t* y) {
  const __m256i q = _mm256_or_si256(nibbles32(b.qs), fifth_bits(b.qh));
  const __m256i yv = load256(y);
  const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(q, yv), _mm256_maddubs_epi16(_mm256_set1_epi8(16), yv));
  return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

// IQ4_NL: the levels (-127..113) looked up by vpshufb. Signed times signed: the sign of
// y moves onto the level, so vpmaddubsw multiplies |y| (<= 128, fits the unsigned
// operand even for y = -128) by a level of magnitude <= 127: pairs <= 2 * 128 * 127 =
// 32512, inside int16.
HEARTH_AVX2 inline __m256i iq4_levels(const uint8_t* qs) {
  const __m256i table = _mm256_broadcastsi128_si256(load128(kIq4nlValues));
  return _mm256_shuffle_epi8(table, nibbles32(qs));
}
HEARTH_AVX2 inline __m256i dot_signed_levels16(__m256i v, __m256i yv) {
  return _mm256_maddubs_epi16(_mm256_abs_epi8(yv), _mm256_sign_epi8(v, yv));
}
HEARTH_AVX2 inline __m256i dot_iq4_nl_block(const BlockIQ4_NL& b, const int8_t* y) {
  return _mm256_madd_epi16(dot_signed_levels16(iq4_levels(b.qs), load256(y)), _mm256_set1_epi16(1));
}

// Q4_1 / Q5_1: sum (d q + m) (dy y) = d dy (sum q y) + m dy (sum y); sum y comes from
// vpmaddubsw with ones (pairs <= 256).
template <class Block, bool kFifthBit>
HEARTH_AVX2 inline void dot_affine_block(const Block& x, const BlockQ8_0& y, __m256& acc_d, __m256& acc_m) {
  __m256i q = nibbles32(x.qs);
  if constexpr (kFifthBit) q = _mm256_or_si256(q, fifth_bits(x.qh));
  const __m256i yv = load256(y.qs);
  const __m256i qy = dot_levels(q, yv);
  const __m256i sy = dot_levels(_mm256_set1_epi8(1), yv);
  const float dy = half(y.d);
  acc_d = _mm256_fmadd_ps(_mm256_set1_ps(half(x.d) * dy), _mm256_cvtepi32_ps(qy), acc_d);
  acc_m = _mm256_fmadd_ps(_mm256_set1_ps(half(x.m) * dy), _mm256_cvtepi32_ps(sy), acc_m);
}

template <class Block, bool kFifthBit>
HEARTH_AVX2 inline float dot_affine_blocks(const Block* x, const BlockQ8_0* y, int64_t nb) {
  // Two blocks per step into separate accumulators: the FMA chains do not wait on
  // each other.
  __m256 d0 = _mm256_setzero_ps(), m0 = _mm256_setzero_ps(), d1 = _mm256_setzero_ps(), m1 = _mm256_setzero_ps();
  int64_t ib = 0;
  for (; ib + 2 <= nb; ib += 2) {
    dot_affine_block<Block, kFifthBit>(x[ib], y[ib], d0, m0);
    dot_affine_block<Block, kFifthBit>(x[ib + 1], y[ib + 1], d1, m1);
  }
  if (ib < nb) dot_affine_block<Block, kFifthBit>(x[ib], y[ib], d0, m0);
  return hsum(_mm256_add_ps(_mm256_add_ps(d0, m0), _mm256_add_ps(d1, m1)));
}

// ---- K-quant scales ----------------------------------------------------------------

// Q3_K: the sixteen scales, 32 already subtracted, as int8. Low nibbles: bytes 0..7 (low
// halves for scales 0..7, high halves for 8..15); top 2 bits: bit pair j / 4 of byte
// 8 + j % 4.
HEARTH_AVX2 inline __m128i unpack_q3_scales(const uint8_t s[kKScaleBytes]) {
  uint32_t a[3];
  std::memcpy(a, s, sizeof a);
  const uint32_t w0 = (a[0] & 0x0f0f0f0fu) | ((a[2] << 4) & 0x30303030u);
  const uint32_t w1 = (a[1] & 0x0f0f0f0fu) | ((a[2] << 2) & 0x30303030u);
  const uint32_t w2 = ((a[0] >> 4) & 0x0f0f0f0fu) | (a[2] & 0x30303030u);
  const uint32_t w3 = ((a[1] >> 4) & 0x0f0f0f0fu) | ((a[2] >> 2) & 0x30303030u);
  return _mm_sub_epi8(_mm_setr_epi32(int(w0), int(w1), int(w2), int(w3)), _mm_set1_epi8(32));
}

// ---- Q4_K and Q5_K · Q8_K ------------------------------------------------------
// Levels <= 31: vpmaddubsw pairs <= 2 * 31 * 128 = 7936; times scales <= 63 in vpmaddwd;
// a super-block's total <= 256 * 31 * 128 * 63 < 2^26. Mins: bsums (|.| <= 2048) times
// mins <= 63 in vpmaddwd.

template <bool kFifthBit, class Block>
HEARTH_AVX2 inline float dot_scale_min(const Block* x, const BlockQ8_K* y, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t ib = 0; ib < nb; ++ib) {
    const Block& b = x[ib];
    const BlockQ8_K& a = y[ib];
    uint64_t sc, m;
    unpack_scale_min(b.scales, sc, m);
    const __m256i scales =
        _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(int64_t(sc))));
    const __m128i m8 = _mm_cvtsi64_si128(int64_t(m));
    const __m256i mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));  // m0 m0 m1 m1 ...
    const __m256i summ = _mm256_madd_epi16(load256(a.bsums), mins);
    __m256i qh = _mm256_setzero_si256();
    if constexpr (kFifthBit) qh = load256(b.qh);
    __m256i sum0 = _mm256_setzero_si256(), sum1 = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
      __m256i lo, hi;
      scale_min_levels<kFifthBit>(b.qs, qh, c, lo, hi);
      const __m256i p0 = _mm256_maddubs_epi16(lo, load256(a.qs + 64 * c));
      const __m256i p1 = _mm256_maddubs_epi16(hi, load256(a.qs + 64 * c + 32));
      sum0 = _mm256_add_epi32(sum0, _mm256_madd_epi16(p0, _mm256_shuffle_epi8(scales, word_mask(2 * c))));
      sum1 = _mm256_add_epi32(sum1, _mm256_madd_epi16(p1, _mm256_shuffle_epi8(scales, word_mask(2 * c + 1))));
    }
    const float d = a.d * half(b.d);
    const float dmin = a.d * half(b.dmin);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_add_epi32(sum0, sum1)), acc);
    acc = _mm256_fnmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(summ), acc);
  }
  return hsum(acc);
}

}  // namespace

// ---- entry points ----------------------------------------------------------------

HEARTH_AVX2 float vec_dot_q8_0(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, kQK8_0, "q8_0");
  return dot_32_blocks<BlockQ8_0, dot_q8_0_block>(static_cast<const BlockQ8_0*>(w),
                                                 static_cast<const BlockQ8_0*>(a), n / kQK8_0);
}

HEARTH_AVX2 float vec_dot_q4_0(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, kQK4_0, "q4_0");
  return dot_32_blocks<BlockQ4_0, dot_q4_0_block>(static_cast<const BlockQ4_0*>(w),
                                                 static_cast<const BlockQ8_0*>(a), n / kQK4_0);
}

HEARTH_AVX2 float vec_dot_q4_1(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, kQK4_1, "q4_1");
  return dot_affine_blocks<BlockQ4_1, false>(static_cast<const BlockQ4_1*>(w),
                                             static_cast<const BlockQ8_0*>(a), n / kQK4_1);
}

HEARTH_AVX2 float vec_dot_q5_0(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, kQK5_0, "q5_0");
  return dot_32_blocks<BlockQ5_0, dot_q5_0_block>(static_cast<const BlockQ5_0*>(w),
                                                  static_cast<const BlockQ8_0*>(a), n / kQK5_0);
}

HEARTH_AVX2 float vec_dot_q5_1(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, kQK5_1, "q5_1");
  return dot_affine_blocks<BlockQ5_1, true>(static_cast<const BlockQ5_1*>(w),
                                            static_cast<const BlockQ8_0*>(a), n / kQK5_1);
}

HEARTH_AVX2 float vec_dot_iq4_nl(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, kQK4_NL, "iq4_nl");
  return dot_32_blocks<BlockIQ4_NL, dot_iq4_nl_block>(static_cast<const BlockIQ4_NL*>(w),
                                                      static_cast<const BlockQ8_0*>(a), n / kQK4_NL);
}

// IQ4_XS: per 32-value sub-block the IQ4_NL product (int16 pairs <= 32512) times its
// signed 6-bit scale (-32..31) in vpmaddwd; a super-block's total <= 256 * 127 * 128 *
// 32 < 2^28.
HEARTH_AVX2 float vec_dot_iq4_xs(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, kQK_K, "iq4_xs");
  const BlockIQ4_XS* x = static_cast<const BlockIQ4_XS*>(w);
  const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
    const BlockIQ4_XS& b = x[ib];
    uint32_t low;
    std::memcpy(&low, b.scales_l, 4);
    __m256i sum0 = _mm256_setzero_si256(), sum1 = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int j = 0; j < kQK_K / 32; j += 2) {
      // Scales j and j + 1: nibbles j, j + 1 of scales_l (low, high of byte j / 2), top
      // bits 2j.. of scales_h.
      const int s0 = int(((low >> (4 * j)) & 15) | (((b.scales_h >> (2 * j)) & 3) << 4)) - 32;
      const int s1 = int(((low >> (4 * j + 4)) & 15) | (((b.scales_h >> (2 * j + 2)) & 3) << 4)) - 32;
      const __m256i p0 = dot_signed_levels16(iq4_levels(b.qs + 16 * j), load256(y[ib].qs + 32 * j));
      const __m256i p1 = dot_signed_levels16(iq4_levels(b.qs + 16 * j + 16), load256(y[ib].qs + 32 * j + 32));
      sum0 = _mm256_add_epi32(sum0, _mm256_madd_epi16(p0, _mm256_set1_epi16(short(s0))));
      sum1 = _mm256_add_epi32(sum1, _mm256_madd_epi16(p1, _mm256_set1_epi16(short(s1))));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(y[ib].d * half(b.d)), _mm256_cvtepi32_ps(_mm256_add_epi32(sum0, sum1)), acc);
  }
  return hsum(acc);
}

HEARTH_AVX2 float vec_dot_q4_k(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, kQK_K, "q4_K");
  return dot_scale_min<false>(static_cast<const BlockQ4_K*>(w),
                              static_cast<const BlockQ8_K*>(a), n / kQK_K);
}

HEARTH_AVX2 float vec_dot_q5_k(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, kQK_K, "q5_K");
  return dot_scale_min<true>(static_cast<const BlockQ5_K*>(w),
                             static_cast<const BlockQ8_K*>(a), n / kQK_K);
}

// Q6_K: levels 0..63 (the offset 32 comes off below): vpmaddubsw pairs <= 2 * 63 * 128 =
// 16128; signed scales |.| <= 128 in vpmaddwd; a super-block's total <= 256 * 63 * 128 *
// 128 < 2^29. The offset: 32 * sum_j scale_j * bsums_j.
HEARTH_AVX2 float vec_dot_q6_k(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, kQK_K, "q6_K");
  const BlockQ6_K* x = static_cast<const BlockQ6_K*>(w);
  const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
    const BlockQ6_K& b = x[ib];
    const BlockQ8_K& q8 = y[ib];
    const __m256i scales16 = _mm256_cvtepi8_epi16(load128(b.scales));
    const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(load256(q8.bsums), scales16), 5);
    __m256i sum0 = _mm256_setzero_si256(), sum1 = _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int c = 0; c < 2; ++c) {
      const __m256i sc = chunk_scales(scales16, c);
      __m256i q[4];
      q6_levels(b.ql, b.qh, c, q);
      const __m256i q0 = q[0], q1 = q[1], q2 = q[2], q3 = q[3];
      const int8_t* a8 = q8.qs + 128 * c;
      const __m256i p0 = _mm256_maddubs_epi16(q0, load256(a8));
      const __m256i p1 = _mm256_maddubs_epi16(q1, load256(a8 + 32));
      const __m256i p2 = _mm256_maddubs_epi16(q2, load256(a8 + 64));
      const __m256i p3 = _mm256_maddubs_epi16(q3, load256(a8 + 96));
      sum0 = _mm256_add_epi32(sum0, _mm256_madd_epi16(p0, _mm256_shuffle_epi8(sc, word_pair_mask(0))));
      sum1 = _mm256_add_epi32(sum1, _mm256_madd_epi16(p1, _mm256_shuffle_epi8(sc, word_pair_mask(2))));
      sum0 = _mm256_add_epi32(sum0, _mm256_madd_epi16(p2, _mm256_shuffle_epi8(sc, word_pair_mask(4))));
      sum1 = _mm256_add_epi32(sum1, _mm256_madd_epi16(p3, _mm256_shuffle_epi8(sc, word_pair_mask(6))));
    }
    const __m256i sumi = _mm256_sub_epi32(_mm256_add_epi32(sum0, sum1), offset);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(q8.d * half(b.d)), _mm256_cvtepi32_ps(sumi), acc);
  }
  return hsum(acc);
}

// Q3_K: levels u + 4h in 0..7 (the offset 4 comes off below): vpmaddubsw pairs <= 1792;
// scales -32..31. The offset: 4 * sum_j scale_j * bsums_j.
HEARTH_AVX2 float vec_dot_q3_k(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, kQK_K, "q3_K");
  const BlockQ3_K* x = static_cast<const BlockQ3_K*>(w);
  const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
  const __m256i low2 = _mm256_set1_epi8(3), bit2 = _mm256_set1_epi8(4);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
    const BlockQ3_K& b = x[ib];
    const BlockQ8_K& q8 = y[ib];
    const __m256i scales16 = _mm256_cvtepi8_epi16(unpack_q3_scales(b.scales));
    const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(load256(q8.bsums), scales16), 2);
    const __m256i hm = load256(b.hmask);
    __m256i sum0 = _mm256_setzero_si256(), sum1 = _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int c = 0; c < 2; ++c) {
      const __m256i sc = chunk_scales(scales16, c);
      const __m256i qs = load256(b.qs + 32 * c);
      const int8_t* a8 = q8.qs + 128 * c;
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g) {
        const __m256i u = _mm256_and_si256(_mm256_srli_epi16(qs, 2 * g), low2);
        const __m256i h = _mm256_and_si256(move_bit(hm, 4 * c + g, 2), bit2);
        const __m256i p = _mm256_maddubs_epi16(_mm256_or_si256(u, h), load256(a8 + 32 * g));
        const __m256i s = _mm256_madd_epi16(p, _mm256_shuffle_epi8(sc, word_pair_mask(2 * g)));
        if (g & 1) sum1 = _mm256_add_epi32(sum1, s);
        else sum0 = _mm256_add_epi32(sum0, s);
      }
    }
    const __m256i sumi = _mm256_sub_epi32(_mm256_add_epi32(sum0, sum1), offset);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(q8.d * half(b.d)), _mm256_cvtepi32_ps(sumi), acc);
  }
  return hsum(acc);
}

// Q2_K: levels 0..3, scales and mins 0..15 (nibbles of scales[j]).
HEARTH_AVX2 float vec_dot_q2_k(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, kQK_K, "q2_K");
  const BlockQ2_K* x = static_cast<const BlockQ2_K*>(w);
  const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
  const __m128i low4 = _mm_set1_epi8(15);
  const __m256i low2 = _mm256_set1_epi8(3);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
    const BlockQ2_K& b = x[ib];
    const BlockQ8_K& q8 = y[ib];
    const __m128i s = load128(b.scales);
    const __m256i scales16 = _mm256_cvtepu8_epi16(_mm_and_si128(s, low4));
    const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s, 4), low4));
    const __m256i summ = _mm256_madd_epi16(load256(q8.bsums), mins16);
    __m256i sum0 = _mm256_setzero_si256(), sum1 = _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int c = 0; c < 2; ++c) {
      const __m256i sc = chunk_scales(scales16, c);
      const __m256i qs = load256(b.qs + 32 * c);
      const int8_t* a8 = q8.qs + 128 * c;
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g) {
        const __m256i u = _mm256_and_si256(_mm256_srli_epi16(qs, 2 * g), low2);
        const __m256i p = _mm256_maddubs_epi16(u, load256(a8 + 32 * g));
        const __m256i t = _mm256_madd_epi16(p, _mm256_shuffle_epi8(sc, word_pair_mask(2 * g)));
        if (g & 1) sum1 = _mm256_add_epi32(sum1, t);
        else sum0 = _mm256_add_epi32(sum0, t);
      }
    }
    const float d = q8.d * half(b.d);
    const float dmin = q8.d * half(b.dmin);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_add_epi32(sum0, sum1)), acc);
    acc = _mm256_fnmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(summ), acc);
  }
  return hsum(acc);
}

}  // namespace hearth::dot_avx2

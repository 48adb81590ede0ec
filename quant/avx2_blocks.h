// Internal to quant/: small AVX2 building blocks shared by the dot-product kernels
// (quant/dot_avx2.cc: one activation row; quant/dot_tiles.cc: several at once).
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/block_formats.h"

namespace hearth::avx2 {

#define HEARTH_AVX2 __attribute__((target("avx2,fma,f16c")))

HEARTH_AVX2 inline float half(uint16_t h) { return _cvtsh_ss(h); }

HEARTH_AVX2 inline __m256i load256(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}
HEARTH_AVX2 inline __m128i load128(const void* p) {
  return _mm_loadu_si128(static_cast<const __m128i*>(p));
}

HEARTH_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// vpshufb mask that broadcasts 16-bit word k of each 128-bit lane across that lane.
HEARTH_AVX2 inline __m256i word_mask(int k) { return _mm256_set1_epi16(short(0x0202 * k + 0x0100)); }
// vpshufb mask that broadcasts word k across the low lane and word k + 1 across the high
// lane (for 16-value sub-blocks: a 32-byte vpmaddubsw result holds two of them).
HEARTH_AVX2 inline __m256i word_pair_mask(int k) {
  return _mm256_set_m128i(_mm_set1_epi16(short(0x0202 * (k + 1) + 0x0100)),
                          _mm_set1_epi16(short(0x0202 * k + 0x0100)));
}

// Sixteen int16 scales (one per 16-value sub-block, sub-blocks 8c..8c+7 of chunk c)
// broadcast so that vpshufb with word_pair_mask(2g) yields those of sub-blocks 8c + 2g
// (low lane) and 8c + 2g + 1 (high lane).
HEARTH_AVX2 inline __m256i chunk_scales(__m256i scales16, int c) {
  const __m128i half8 = c == 0 ? _mm256_castsi256_si128(scales16) : _mm256_extracti128_si256(scales16, 1);
  return _mm256_broadcastsi128_si256(half8);
}

// Moves bit `from` of every byte of v to bit `to` (other bits: garbage, mask afterwards).
HEARTH_AVX2 inline __m256i move_bit(__m256i v, int from, int to) {
  if (from > to) return _mm256_srli_epi16(v, from - to);
  if (from < to) return _mm256_slli_epi16(v, to - from);
  return v;
}

// Q4_K / Q5_K: the eight 6-bit scales and eight 6-bit mins as bytes (scale j / min j in
// byte j). Bytes 0..3 hold scales 0..3 (low 6 bits) and bytes 4..7 mins 0..3; bytes
// 8..11 the low nibbles of scales / mins 4..7; bits 6..7 of bytes 0..7 their top bits.
inline void unpack_scale_min(const uint8_t s[kKScaleBytes], uint64_t& sc, uint64_t& m) {
  uint32_t a[3];
  std::memcpy(a, s, sizeof a);
  const uint32_t sc_lo = a[0] & 0x3f3f3f3fu;
  const uint32_t m_lo = a[1] & 0x3f3f3f3fu;
  const uint32_t sc_hi = (a[2] & 0x0f0f0f0fu) | ((a[0] >> 2) & 0x30303030u);
  const uint32_t m_hi = ((a[2] >> 4) & 0x0f0f0f0fu) | ((a[1] >> 2) & 0x30303030u);
  sc = sc_lo | uint64_t(sc_hi) << 32;
  m = m_lo | uint64_t(m_hi) << 32;
}


// Q4_K / Q5_K: the 64 levels of chunk c (values 64c .. 64c + 63) as bytes, low nibbles
// (values 64c .. +31) in lo and high nibbles (64c + 32 .. +63) in hi, with the fifth bit
// from qh (bits 2c and 2c + 1 of each byte) when kFifthBit.
template <bool kFifthBit>
HEARTH_AVX2 inline void scale_min_levels(const uint8_t* qs, __m256i qh, int c, __m256i& lo, __m256i& hi) {
  const __m256i low4 = _mm256_set1_epi8(15);
  const __m256i q = load256(qs + 32 * c);
  lo = _mm256_and_si256(q, low4);
  hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
  if constexpr (kFifthBit) {
    const __m256i bit4 = _mm256_set1_epi8(16);
    lo = _mm256_or_si256(lo, _mm256_and_si256(move_bit(qh, 2 * c, 4), bit4));
    hi = _mm256_or_si256(hi, _mm256_and_si256(move_bit(qh, 2 * c + 1, 4), bit4));
  }
}

// Q6_K: the 128 levels (0..63, offset 32 not yet taken off) of half c of a block, as four
// 32-byte groups: q[g] holds values 128c + 32g .. + 31.
HEARTH_AVX2 inline void q6_levels(const uint8_t* ql, const uint8_t* qh_bytes, int c, __m256i q[4]) {
  const __m256i low4 = _mm256_set1_epi8(15), bits45 = _mm256_set1_epi8(0x30);
  const __m256i ql0 = load256(ql + 64 * c), ql1 = load256(ql + 64 * c + 32);
  const __m256i qh = load256(qh_bytes + 32 * c);
  q[0] = _mm256_or_si256(_mm256_and_si256(ql0, low4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), bits45));
  q[1] = _mm256_or_si256(_mm256_and_si256(ql1, low4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), bits45));
  q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4), _mm256_and_si256(qh, bits45));
  q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
                         _mm256_and_si256(_mm256_srli_epi16(qh, 2), bits45));
}

}  // namespace hearth::avx2

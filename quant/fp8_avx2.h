// FP8 e4m3 codes widened to float with AVX2 + F16C, for every kernel that reads them
// (FP8 weights in quant/weight_matrix.cc, FP8 KV cache entries in engine/vec_ops.cc).
//
// The floats are the codes' values times 2^-8: with a code in the high byte of a 16-bit
// lane, an arithmetic shift right by one puts exponent and mantissa where fp16 has them
// (the exponent biases are 7 and 15) and copies the sign into bit 14, which the mask
// clears. vcvtph2ps then handles subnormal codes like the rest; building float bits
// directly would make float denormals there, and multiplying those costs a microcode
// assist per vector on some cores. The NaN codes (0x7f, 0xff) come out as +-480 * 2^-8.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace hearth {

// Eight codes at p.
__attribute__((target("avx2,f16c"))) inline __m256 fp8x8_times_2m8(const uint8_t* p) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  const __m128i h = _mm_srai_epi16(_mm_unpacklo_epi8(_mm_setzero_si128(), b), 1);
  return _mm256_cvtph_ps(_mm_and_si128(h, _mm_set1_epi16(int16_t(0xbfff))));
}

// Sixteen codes at p, widened once: codes 0-7 into lo, 8-15 into hi.
__attribute__((target("avx2,f16c"))) inline void fp8x16_times_2m8(const uint8_t* p, __m256& lo, __m256& hi) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i z = _mm_setzero_si128(), mask = _mm_set1_epi16(int16_t(0xbfff));
  lo = _mm256_cvtph_ps(_mm_and_si128(_mm_srai_epi16(_mm_unpacklo_epi8(z, b), 1), mask));
  hi = _mm256_cvtph_ps(_mm_and_si128(_mm_srai_epi16(_mm_unpackhi_epi8(z, b), 1), mask));
}

}  // namespace hearth

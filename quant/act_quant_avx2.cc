// AVX2 activation quantizers (quant/act_quant.h). Each mirrors its scalar version in
// quant/block_formats.cc step for step: the block's largest magnitude (NaN ignored), the
// scale computed in double by the same scalar code, then every value multiplied by the
// inverse scale in double (four per vector, widened exactly from float), rounded the
// same way, clamped to the same range (Q8_0 -127..127, Q8_K -128..127), with a NaN
// product giving what the scalar code gives.
// Compiled without FMA: a fused multiply would skip the product's rounding that the
// scalar code does before it rounds to an integer. Q8_0's f16 scale is converted by F16C.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/act_quant.h"
#include "quant/numbers.h"

namespace hearth::act_quant {

namespace {

#define HEARTH_AVX2_ONLY __attribute__((target("avx2,f16c")))

// |x| with NaN lanes zeroed (so max ignores them, as the scalar loops do).
HEARTH_AVX2_ONLY inline __m256 abs_no_nan(__m256 x) {
  const __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
  return _mm256_and_ps(a, _mm256_cmp_ps(x, x, _CMP_ORD_Q));
}

HEARTH_AVX2_ONLY inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

// The largest |x[i]| of n (a multiple of 8) floats, NaN ignored; 0 when there is none.
HEARTH_AVX2_ONLY inline float max_abs(const float* x, int n) {
  __m256 m = _mm256_setzero_ps();
  for (int i = 0; i < n; i += 8) m = _mm256_max_ps(m, abs_no_nan(_mm256_loadu_ps(x + i)));
  return hmax(m);
}

// Rounds v to an integer the way the scalar code does, clamped to [kLow, 127]; lanes whose
// v is NaN become `nan_value`. kTiesAway: std::round (halves away from zero), else
// round-to-nearest-even (scale_search::round_int).
template <bool kTiesAway, int kLow>
HEARTH_AVX2_ONLY inline __m128i levels4(__m256d v, __m256d nan_value) {
  __m256d r;
  if constexpr (kTiesAway) {
    // t + sign(v) where the dropped fraction is at least one half: v - t is exact.
    const __m256d t = _mm256_round_pd(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256d frac = _mm256_andnot_pd(_mm256_set1_pd(-0.0), _mm256_sub_pd(v, t));
    const __m256d up = _mm256_cmp_pd(frac, _mm256_set1_pd(0.5), _CMP_GE_OQ);
    const __m256d one = _mm256_or_pd(_mm256_set1_pd(1.0), _mm256_and_pd(v, _mm256_set1_pd(-0.0)));
    r = _mm256_add_pd(t, _mm256_and_pd(up, one));
  } else {
    r = _mm256_round_pd(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  r = _mm256_min_pd(_mm256_max_pd(r, _mm256_set1_pd(double(kLow))), _mm256_set1_pd(127.0));
  r = _mm256_blendv_pd(r, nan_value, _mm256_cmp_pd(v, v, _CMP_UNORD_Q));
  return _mm256_cvttpd_epi32(r);
}

// 8 floats times inv (in double) to 8 int8 levels at out.
template <bool kTiesAway, int kLow>
HEARTH_AVX2_ONLY inline void levels8(const float* x, __m256d inv, __m256d nan_value, int8_t* out) {
  const __m256 xf = _mm256_loadu_ps(x);
  const __m128i lo = levels4<kTiesAway, kLow>(_mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(xf)), inv), nan_value);
  const __m128i hi = levels4<kTiesAway, kLow>(_mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(xf, 1)), inv), nan_value);
  const __m128i w = _mm_packs_epi32(lo, hi);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm_packs_epi16(w, w));
}

// scale_search::f16_saturating with the conversion in hardware: the same clamp and float
// rounding, then vcvtps2ph to nearest even, which is what f32_to_f16 computes (d is
// never NaN here: the largest magnitude ignores NaN).
HEARTH_AVX2_ONLY inline uint16_t f16_saturating(double d) {
  constexpr double kMaxHalf = 65504.0;
  return uint16_t(_cvtss_sh(float(std::clamp(d, -kMaxHalf, kMaxHalf)), _MM_FROUND_TO_NEAREST_INT));
}

}  // namespace

HEARTH_AVX2_ONLY void q8_0_avx2(const float* in, BlockQ8_0* out, int64_t n) {
  for (int64_t ib = 0; ib < n / kQK8_0; ++ib) {
    const float* x = in + ib * kQK8_0;
    BlockQ8_0& b = out[ib];
    // As store_q8_0 with ties away: d = amax / 127 saturated to f16, levels under the
    // stored d, in -127..127. A NaN product (a NaN or infinite value times 0) gives -127.
    b.d = f16_saturating(double(max_abs(x, kQK8_0)) / 127.0);
    const double stored = f16_to_f32(b.d);
    const __m256d inv = _mm256_set1_pd(stored != 0 ? 1 / stored : 0);
    for (int j = 0; j < kQK8_0; j += 8) levels8<true, -127>(x + j, inv, _mm256_set1_pd(-127.0), b.qs + j);
  }
}

HEARTH_AVX2_ONLY void q8_k_avx2(const float* in, BlockQ8_K* out, int64_t n) {
  for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
    const float* x = in + ib * kQK_K;
    BlockQ8_K& b = out[ib];
    std::memset(&b, 0, sizeof b);
    const float amax = max_abs(x, kQK_K);
    if (amax == 0) continue;
    // The first value of largest magnitude, as the scalar loop's strict > keeps it.
    int first = 0;
    const __m256 target = _mm256_set1_ps(amax);
    for (int i = 0; i < kQK_K; i += 8) {
      const int hit = _mm256_movemask_ps(_mm256_cmp_ps(abs_no_nan(_mm256_loadu_ps(x + i)), target, _CMP_EQ_OQ));
      if (hit) {
        first = i + __builtin_ctz(unsigned(hit));
        break;
      }
    }
    const double inv = -127.0 / double(x[first]);
    // round_int gives 0 for NaN.
    for (int j = 0; j < kQK_K; j += 8) levels8<false, -128>(x + j, _mm256_set1_pd(inv), _mm256_setzero_pd(), b.qs + j);
    b.d = float(1 / inv);
    for (int j = 0; j < kQK_K / 16; ++j) {
      int sum = 0;
      for (int i = 0; i < 16; ++i) sum += b.qs[16 * j + i];
      b.bsums[j] = int16_t(sum);
    }
  }
}

}  // namespace hearth::act_quant

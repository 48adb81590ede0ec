// The Q6_K_R16 kernel (quant/interleaved.h) with AVX-512 VNNI: a unit's sixteen rows in
// the sixteen lanes of 512-bit registers.
//
// Per super-block and pair of sub-blocks (2h, 2h + 1): for each p < 4, one load of low
// bits and one of high bits give four values of both sub-blocks for every row; the 6-bit
// levels are put together in bytes (nibble | high bits << 4) and one vpdpbusd per
// sub-block and token adds level times activation over four values into each row's lane.
// Each token's per-sub-block sums start at -32 * bsum (the levels' offset), so after the
// four p they hold sum (q - 32) * a exactly; one vpmulld by the sub-block's scales and an
// add take them into the row's super-block total. Every integer is exact, so the kernel
// and the scalar reference give the same floats.
//
// Unlike the other weight kernels it asks for no lines ahead: a unit is one ascending
// stream, which the hardware prefetcher follows alone. With 53 prefetches per block 4 KB
// ahead, one Zen 4 thread read a 110 MB matrix at 17.4-18.4 GB/s for one token and
// 15.2-15.5 for two; without them 25.9-27.6 and 20.6-21.9 (plain Q6_K: 15.5-24.5 and
// 11.9-12.8; a throwaway driver, alternated).
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/interleaved.h"
#include "quant/interleaved_kernels.h"

namespace hearth::interleaved_q6_vnni {

#define HEARTH_Q6_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

namespace {

// The 512-bit operations the kernel is written in.
struct Wide {
  using I = __m512i;
  using F = __m512;
  HEARTH_Q6_TARGET static I load(const uint8_t* p) { return _mm512_loadu_si512(p); }
  HEARTH_Q6_TARGET static I set1(int32_t v) { return _mm512_set1_epi32(v); }
  HEARTH_Q6_TARGET static I bytes(int8_t v) { return _mm512_set1_epi8(v); }
  HEARTH_Q6_TARGET static I and_(I a, I b) { return _mm512_and_si512(a, b); }
  HEARTH_Q6_TARGET static I shl16(I a, int n) { return _mm512_slli_epi16(a, unsigned(n)); }
  HEARTH_Q6_TARGET static I shr16(I a, int n) { return _mm512_srli_epi16(a, unsigned(n)); }
  // (a & mask) | b, for b with no bits where mask has them: vpternlogd 0xEC.
  HEARTH_Q6_TARGET static I select_low(I a, I b, I mask) { return _mm512_ternarylogic_epi32(a, b, mask, 0xEC); }
  HEARTH_Q6_TARGET static I dpbusd(I acc, I u8, I s8) { return _mm512_dpbusd_epi32(acc, u8, s8); }
  HEARTH_Q6_TARGET static I add(I a, I b) { return _mm512_add_epi32(a, b); }
  HEARTH_Q6_TARGET static I mullo(I a, I b) { return _mm512_mullo_epi32(a, b); }
  // Sixteen int8 scales (one per row), widened.
  HEARTH_Q6_TARGET static I scales(const uint8_t* p) {
    return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  HEARTH_Q6_TARGET static F factors(const uint16_t* d) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(d)));
  }
  HEARTH_Q6_TARGET static F zero_f() { return _mm512_setzero_ps(); }
  HEARTH_Q6_TARGET static I zero_i() { return _mm512_setzero_si512(); }
  // acc + (d * ad rounded) * float(isum), fused: the reference's two steps.
  HEARTH_Q6_TARGET static F step(F acc, F d, float ad, I isum) {
    return _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(ad)), _mm512_cvtepi32_ps(isum), acc);
  }
  HEARTH_Q6_TARGET static void store(float* out, F v) { _mm512_storeu_ps(out, v); }
};

template <class V>
HEARTH_Q6_TARGET inline typename V::I broadcast4(const int8_t* a) {
  int32_t v;
  std::memcpy(&v, a, 4);
  return V::set1(v);
}

// out[t * 16 + k] = row k of the unit . y[t], for T tokens.
template <class V, int T>
HEARTH_Q6_TARGET void dot_rows(const BlockQ6_Kx16* unit, const BlockQ8_K* const* y, int64_t nb, float* out) {
  using I = typename V::I;
  const I low4 = V::bytes(15), bits45 = V::bytes(0x30);
  typename V::F acc[T];
  for (int t = 0; t < T; ++t) acc[t] = V::zero_f();
  for (int64_t ib = 0; ib < nb; ++ib) {
    const BlockQ6_Kx16& b = unit[ib];
    I isum[T];
    for (int t = 0; t < T; ++t) isum[t] = V::zero_i();
#pragma GCC unroll 8
    for (int h = 0; h < 8; ++h) {  // sub-blocks s0 = 2h (low nibbles) and s0 + 1 (high)
      const int s0 = 2 * h;
      I sum0[T], sum1[T];
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        sum0[t] = V::set1(-32 * int32_t(y[t][ib].bsums[s0]));
        sum1[t] = V::set1(-32 * int32_t(y[t][ib].bsums[s0 + 1]));
      }
#pragma GCC unroll 4
      for (int p = 0; p < 4; ++p) {
        // The header's offsets for sub-blocks s0, s0 + 1 (u = h / 2, s0 % 4 = 2 (h % 2)).
        const int64_t low = h % 2 == 0 ? 832 * (h / 2) + 64 + 128 * p : 832 * (h / 2) + 576 + 64 * p;
        const I lo = V::load(b.q + low);
        const I hi = V::load(b.q + 832 * (h / 2) + 128 + 128 * p);
        // Sub-block s's high bits sit at 2 (s % 4): s0 % 4 is 0 for even h, 2 for odd h.
        const I hi0 = V::and_(h % 2 == 0 ? V::shl16(hi, 4) : hi, bits45);
        const I hi1 = V::and_(h % 2 == 0 ? V::shl16(hi, 2) : V::shr16(hi, 2), bits45);
        const I q0 = V::select_low(lo, hi0, low4);
        const I q1 = V::select_low(V::shr16(lo, 4), hi1, low4);
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
          const int8_t* a = y[t][ib].qs + 16 * s0 + 4 * p;
          sum0[t] = V::dpbusd(sum0[t], q0, broadcast4<V>(a));
          sum1[t] = V::dpbusd(sum1[t], q1, broadcast4<V>(a + 16));
        }
      }
      const I sc0 = V::scales(b.q + 832 * (h / 2) + 16 * (s0 % 4));
      const I sc1 = V::scales(b.q + 832 * (h / 2) + 16 * (s0 % 4) + 16);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) isum[t] = V::add(isum[t], V::add(V::mullo(sum0[t], sc0), V::mullo(sum1[t], sc1)));
    }
    const typename V::F d = V::factors(b.d);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[t] = V::step(acc[t], d, y[t][ib].d, isum[t]);
  }
  for (int t = 0; t < T; ++t) V::store(out + kQ6UnitRows * t, acc[t]);
}

}  // namespace

void vec_dot_q6_k_x16(const void* unit, const void* const* act, int tokens, int64_t n, float* out) {
  check_call(tokens, n);
  const auto* x = static_cast<const BlockQ6_Kx16*>(unit);
  const BlockQ8_K* y[kMaxX16Tokens];
  for (int t = 0; t < tokens; ++t) y[t] = static_cast<const BlockQ8_K*>(act[t]);
  const int64_t nb = n / kQK_K;
  switch (tokens) {
    case 1: return dot_rows<Wide, 1>(x, y, nb, out);
    case 2: return dot_rows<Wide, 2>(x, y, nb, out);
    case 3: return dot_rows<Wide, 3>(x, y, nb, out);
    case 4: return dot_rows<Wide, 4>(x, y, nb, out);
    case 5: return dot_rows<Wide, 5>(x, y, nb, out);
    default: return dot_rows<Wide, 6>(x, y, nb, out);
  }
}

}  // namespace hearth::interleaved_q6_vnni

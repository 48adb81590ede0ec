// The AVX-512 F/BW dot products (quant/dot_simd.h) for CPUs that have AVX-512 but not
// VNNI (Skylake-SP and Cascade Lake without it enabled): Q8_0's one-row kernel and tiles,
// 512 bits wide. Every other format runs its AVX2 kernel at this level.
//
// Why Q8_0 and why 512 bits: its tiles (prefill, batched decode) spend per weight block
// and token a sign flip, vpmaddubsw, vpmaddwd, a conversion and an FMA, all on the two
// ports that take 256-bit integer multiplies on these cores; in 512-bit form the same
// five instructions do two blocks. The AVX2 kernels keep each 32-value block in one
// register and alternate the blocks between two accumulators (block ib to accumulator
// ib & 1); here block ib is the low half of a register and block ib + 1 the high half,
// so the low half accumulates exactly what the AVX2 kernel's first accumulator does and
// the high half its second. Each lane's integer sum is the same four byte products, and
// the float steps are the same operations in the same order, so the results are the AVX2
// kernels' floats bit for bit (tests/quant/dot_vnni_test.cc checks it).
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/avx2_blocks.h"
#include "quant/block_formats.h"
#include "quant/dot_simd.h"
#include "quant/kquants.h"

namespace hearth::dot_avx512 {

#define HEARTH_AVX512BW __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")))

namespace {

using avx2::hsum;
using avx2::load256;
using kquants::require_whole_blocks;

// As quant/dot_kernels.inc: each step prefetches the weight lines 4 KB ahead.
constexpr int64_t kPrefetchBytes = 4096;

HEARTH_AVX512BW inline void prefetch_pair(const BlockQ8_0* b) {
  const char* p = reinterpret_cast<const char*>(b) + kPrefetchBytes;
  for (size_t off = 0; off < 2 * sizeof(BlockQ8_0); off += 64) _mm_prefetch(p + off, _MM_HINT_T0);
}

// Block b's 32 quants in the low half, block b + 1's in the high half.
HEARTH_AVX512BW inline __m512i quants_pair(const BlockQ8_0* b) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(load256(b[0].qs)), load256(b[1].qs), 1);
}

// The f16 factors of blocks b and b + 1 as floats (exact), the first in lanes 0..7 and
// the second in lanes 8..15. The factor is read by a vector load of eight bytes (the
// factor and the first quants after it), as quant/dot_kernels.inc's scale_product does.
HEARTH_AVX512BW inline __m512 factor_pair(const BlockQ8_0* b) {
  const __m128 d0 = _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(&b[0].d)));
  const __m128 d1 = _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(&b[1].d)));
  const __m512i halves = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  return _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(_mm_unpacklo_ps(d0, d1)));
}

// Lane j: sum over bytes 4j..4j+3 of x * y, by the AVX2 kernels' sign trick (|x| times y
// with x's sign): AVX-512 has no vpsignb, so y is negated under the mask of x's sign bits
// instead. Where x is 0, y keeps its sign, which changes nothing: |x| is 0. -128 wraps to
// itself either way; pairs stay within 2 * 128 * 127 in int16.
HEARTH_AVX512BW inline __m512i dot_q8_signed(__m512i x_abs, __mmask64 x_neg, __m512i y) {
  const __m512i y_signed = _mm512_mask_sub_epi8(y, x_neg, _mm512_setzero_si512(), y);
  return _mm512_madd_epi16(_mm512_maddubs_epi16(x_abs, y_signed), _mm512_set1_epi16(1));
}

// The 256-bit step for a last, unpaired block: the AVX2 kernel's, on the low half.
HEARTH_AVX512BW inline __m256 last_block(const BlockQ8_0& x, const BlockQ8_0& y, __m256 acc) {
  const float d = _cvtsh_ss(x.d) * _cvtsh_ss(y.d);
  const __m256i xv = load256(x.qs), yv = load256(y.qs);
  const __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(xv), _mm256_sign_epi8(yv, xv)),
                                      _mm256_set1_epi16(1));
  return _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc);
}

// The AVX2 kernels' final sum: their two accumulators added, then across the lanes.
HEARTH_AVX512BW inline float finish(__m512 acc) {
  return hsum(_mm256_add_ps(_mm512_castps512_ps256(acc), _mm512_extractf32x8_ps(acc, 1)));
}

// M weight rows against N tokens: out[r * N + t], each the AVX2 one-row kernel's float.
template <int M, int N>
HEARTH_AVX512BW void rows_q8_0(const void* const* w, const void* const* a, int64_t n, float* out) {
  require_whole_blocks(n, kQK8_0, "q8_0");
  const BlockQ8_0* x[M];
  for (int r = 0; r < M; ++r) x[r] = static_cast<const BlockQ8_0*>(w[r]);
  const BlockQ8_0* y[N];
  for (int t = 0; t < N; ++t) y[t] = static_cast<const BlockQ8_0*>(a[t]);
  __m512 acc[M][N];
  for (int r = 0; r < M; ++r)
    for (int t = 0; t < N; ++t) acc[r][t] = _mm512_setzero_ps();
  const int64_t nb = n / kQK8_0;
  int64_t ib = 0;
  for (; ib + 2 <= nb; ib += 2) {
    __m512i xa[M];
    __mmask64 xn[M];
    __m512 dx[M];
    for (int r = 0; r < M; ++r) {
      prefetch_pair(x[r] + ib);
      const __m512i xs = quants_pair(x[r] + ib);
      xa[r] = _mm512_abs_epi8(xs);
      xn[r] = _mm512_movepi8_mask(xs);
      dx[r] = factor_pair(x[r] + ib);
    }
#pragma GCC unroll 4
    for (int t = 0; t < N; ++t) {
      const __m512i yv = quants_pair(y[t] + ib);
      const __m512 dy = factor_pair(y[t] + ib);
      for (int r = 0; r < M; ++r) {
        // dx * dy rounded once per lane, as the AVX2 kernel's float product.
        const __m512i s = dot_q8_signed(xa[r], xn[r], yv);
        acc[r][t] = _mm512_fmadd_ps(_mm512_mul_ps(dx[r], dy), _mm512_cvtepi32_ps(s), acc[r][t]);
      }
    }
  }
  if (ib < nb)  // the last block of an odd count: the AVX2 kernel's first accumulator
    for (int r = 0; r < M; ++r)
      for (int t = 0; t < N; ++t)
        acc[r][t] = _mm512_insertf32x8(acc[r][t], last_block(x[r][ib], y[t][ib], _mm512_castps512_ps256(acc[r][t])), 0);
  for (int r = 0; r < M; ++r)
    for (int t = 0; t < N; ++t) out[r * N + t] = finish(acc[r][t]);
}

HEARTH_AVX512BW float vec_dot_q8_0_512(const void* w, const void* a, int64_t n) {
  float out;
  rows_q8_0<1, 1>(&w, &a, n, &out);
  return out;
}

template <int N>
HEARTH_AVX512BW void tile_q8_0(const void* w, const void* const* a, int64_t n, float* out) {
  rows_q8_0<1, N>(&w, a, n, out);
}

HEARTH_AVX512BW void dot2x4_q8_0(const void* w0, const void* w1, const void* const* a, int64_t n, float* out) {
  const void* w[2] = {w0, w1};
  rows_q8_0<2, 4>(w, a, n, out);
}

}  // namespace

VecDotFn row_kernel(GgmlType type) { return type == GgmlType::Q8_0 ? vec_dot_q8_0_512 : dot_avx2::row_kernel(type); }

VecDot4Fn tile_kernel(GgmlType type, int tokens) {
  if (type != GgmlType::Q8_0) return dot_avx2::tile_kernel(type, tokens);
  switch (tokens) {
    case 2: return tile_q8_0<2>;
    case 3: return tile_q8_0<3>;
    case 4: return tile_q8_0<4>;
    default: return nullptr;
  }
}

VecDot2x4Fn tile2x4_kernel(GgmlType type) { return type == GgmlType::Q8_0 ? dot2x4_q8_0 : nullptr; }

}  // namespace hearth::dot_avx512

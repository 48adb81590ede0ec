// AVX2 tile dot products (quant/dot_tiles.h). Each kernel mirrors its one-row
// counterpart in quant/dot_avx2.cc step for step on the float side (same factors, same
// accumulator per block, same final sum) and differs only in how the exact integer sums
// are gathered: the weight unpacking is shared by the tile's tokens.
#include "quant/dot_tiles.h"

#include "quant/avx2_blocks.h"
#include "quant/kquants.h"

namespace hearth {

namespace {

using kquants::require_whole_blocks;
using namespace avx2;

constexpr int kRows = 4;

// ---- Q8_0 · Q8_0: block ib goes to accumulator ib & 1, as in dot_32_blocks ----------

// M weight rows against N tokens: out[r * N + t]. Sign-extending the blocks to 16 bits is
// half of the integer work, for weights and activations alike, so each weight block is
// extended once for the N tokens and each token's block once for the M rows.
template <int M, int N>
HEARTH_AVX2 void rows_q8_0(const void* const* w, const void* const* a, int64_t n, float* out) {
  require_whole_blocks(n, kQK8_0, "q8_0");
  const BlockQ8_0* x[M];
  for (int r = 0; r < M; ++r) x[r] = static_cast<const BlockQ8_0*>(w[r]);
  const BlockQ8_0* y[N];
  for (int t = 0; t < N; ++t) y[t] = static_cast<const BlockQ8_0*>(a[t]);
  __m256 acc[M][N][2];
  for (int r = 0; r < M; ++r)
    for (int t = 0; t < N; ++t) acc[r][t][0] = acc[r][t][1] = _mm256_setzero_ps();
  const int64_t nb = n / kQK8_0;
  for (int64_t ib = 0; ib < nb; ++ib) {
    __m256i x0[M], x1[M];
    float dx[M];
    for (int r = 0; r < M; ++r) {
      x0[r] = _mm256_cvtepi8_epi16(load128(x[r][ib].qs));
      x1[r] = _mm256_cvtepi8_epi16(load128(x[r][ib].qs + 16));
      dx[r] = half(x[r][ib].d);
    }
    const int k = int(ib & 1);
#pragma GCC unroll 4
    for (int t = 0; t < N; ++t) {
      const __m256i y0 = _mm256_cvtepi8_epi16(load128(y[t][ib].qs));
      const __m256i y1 = _mm256_cvtepi8_epi16(load128(y[t][ib].qs + 16));
      const float dy = half(y[t][ib].d);
      for (int r = 0; r < M; ++r) {
        const __m256i s = _mm256_add_epi32(_mm256_madd_epi16(x0[r], y0), _mm256_madd_epi16(x1[r], y1));
        acc[r][t][k] = _mm256_fmadd_ps(_mm256_set1_ps(dx[r] * dy), _mm256_cvtepi32_ps(s), acc[r][t][k]);
      }
    }
  }
  for (int r = 0; r < M; ++r)
    for (int t = 0; t < N; ++t) out[r * N + t] = hsum(_mm256_add_ps(acc[r][t][0], acc[r][t][1]));
}

template <int N>
HEARTH_AVX2 void tile_q8_0(const void* w, const void* const* a, int64_t n, float* out) {
  rows_q8_0<1, N>(&w, a, n, out);
}

// Two weight rows against the same four tokens (each token's blocks extended once for both).
HEARTH_AVX2 void dot2x4_q8_0(const void* w0, const void* w1, const void* const* a, int64_t n, float* out) {
  const void* w[2] = {w0, w1};
  rows_q8_0<2, kRows>(w, a, n, out);
}

// ---- Q4_K and Q5_K · Q8_K (as dot_scale_min) ------------------------------------

template <int N, bool kFifthBit, class Block>
HEARTH_AVX2 void tile_scale_min(const void* w, const void* const* a, int64_t n, float* out) {
  require_whole_blocks(n, kQK_K, kFifthBit ? "q5_K" : "q4_K");
  const auto* x = static_cast<const Block*>(w);
  const BlockQ8_K* y[N];
  for (int t = 0; t < N; ++t) y[t] = static_cast<const BlockQ8_K*>(a[t]);
  __m256 acc[N];
  for (int t = 0; t < N; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
    const Block& b = x[ib];
    uint64_t sc, m;
    unpack_scale_min(b.scales, sc, m);
    const __m256i scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(int64_t(sc))));
    const __m128i m8 = _mm_cvtsi64_si128(int64_t(m));
    const __m256i mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
    __m256i qh = _mm256_setzero_si256();
    if constexpr (kFifthBit) qh = load256(b.qh);
    __m256i sum[N];
    for (int t = 0; t < N; ++t) sum[t] = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      __m256i lo, hi;
      scale_min_levels<kFifthBit>(b.qs, qh, c, lo, hi);
      const __m256i sc_lo = _mm256_shuffle_epi8(scales, word_mask(2 * c));
      const __m256i sc_hi = _mm256_shuffle_epi8(scales, word_mask(2 * c + 1));
#pragma GCC unroll 4
      for (int t = 0; t < N; ++t) {
        const __m256i p0 = _mm256_maddubs_epi16(lo, load256(y[t][ib].qs + 64 * c));
        const __m256i p1 = _mm256_maddubs_epi16(hi, load256(y[t][ib].qs + 64 * c + 32));
        sum[t] = _mm256_add_epi32(sum[t], _mm256_add_epi32(_mm256_madd_epi16(p0, sc_lo), _mm256_madd_epi16(p1, sc_hi)));
      }
    }
    const float bd = half(b.d), bmin = half(b.dmin);
#pragma GCC unroll 4
    for (int t = 0; t < N; ++t) {
      const __m256i summ = _mm256_madd_epi16(load256(y[t][ib].bsums), mins);
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(y[t][ib].d * bd), _mm256_cvtepi32_ps(sum[t]), acc[t]);
      acc[t] = _mm256_fnmadd_ps(_mm256_set1_ps(y[t][ib].d * bmin), _mm256_cvtepi32_ps(summ), acc[t]);
    }
  }
  for (int t = 0; t < N; ++t) out[t] = hsum(acc[t]);
}

// ---- Q6_K · Q8_K (as vec_dot_q6_k) ----------------------------------------------

template <int N>
HEARTH_AVX2 void tile_q6_k(const void* w, const void* const* a, int64_t n, float* out) {
  require_whole_blocks(n, kQK_K, "q6_K");
  const auto* x = static_cast<const BlockQ6_K*>(w);
  const BlockQ8_K* y[N];
  for (int t = 0; t < N; ++t) y[t] = static_cast<const BlockQ8_K*>(a[t]);
  __m256 acc[N];
  for (int t = 0; t < N; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
    const BlockQ6_K& b = x[ib];
    const __m256i scales16 = _mm256_cvtepi8_epi16(load128(b.scales));
    __m256i sum[N];
    for (int t = 0; t < N; ++t) sum[t] = _mm256_setzero_si256();
    for (int c = 0; c < 2; ++c) {
      const __m256i sc = chunk_scales(scales16, c);
      __m256i q[4];
      q6_levels(b.ql, b.qh, c, q);
      const __m256i s[4] = {
          _mm256_shuffle_epi8(sc, word_pair_mask(0)), _mm256_shuffle_epi8(sc, word_pair_mask(2)),
          _mm256_shuffle_epi8(sc, word_pair_mask(4)), _mm256_shuffle_epi8(sc, word_pair_mask(6))};
#pragma GCC unroll 4
      for (int t = 0; t < N; ++t) {
        const int8_t* a8 = y[t][ib].qs + 128 * c;
        __m256i part = _mm256_madd_epi16(_mm256_maddubs_epi16(q[0], load256(a8)), s[0]);
        part = _mm256_add_epi32(part, _mm256_madd_epi16(_mm256_maddubs_epi16(q[1], load256(a8 + 32)), s[1]));
        part = _mm256_add_epi32(part, _mm256_madd_epi16(_mm256_maddubs_epi16(q[2], load256(a8 + 64)), s[2]));
        part = _mm256_add_epi32(part, _mm256_madd_epi16(_mm256_maddubs_epi16(q[3], load256(a8 + 96)), s[3]));
        sum[t] = _mm256_add_epi32(sum[t], part);
      }
    }
    const float bd = half(b.d);
#pragma GCC unroll 4
    for (int t = 0; t < N; ++t) {
      const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(load256(y[t][ib].bsums), scales16), 5);
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(y[t][ib].d * bd), _mm256_cvtepi32_ps(_mm256_sub_epi32(sum[t], offset)),
                               acc[t]);
    }
  }
  for (int t = 0; t < N; ++t) out[t] = hsum(acc[t]);
}

template <int N>
VecDot4Fn tile_kernel(GgmlType type) {
  switch (type) {
    case GgmlType::Q8_0: return tile_q8_0<N>;
    case GgmlType::Q4_K: return tile_scale_min<N, false, BlockQ4_K>;
    case GgmlType::Q5_K: return tile_scale_min<N, true, BlockQ5_K>;
    case GgmlType::Q6_K: return tile_q6_k<N>;
    default: return nullptr;
  }
}

}  // namespace

VecDot2x4Fn vec_dot2x4_kernel(const BlockFormat& f, KernelIsa isa) {
  if (isa == KernelIsa::kScalar || best_isa() != KernelIsa::kAvx2) return nullptr;
  return f.type == GgmlType::Q8_0 ? dot2x4_q8_0 : nullptr;
}

VecDot4Fn vec_dot4_kernel(const BlockFormat& f, KernelIsa isa) { return vec_dot_tile_kernel(f, 4, isa); }

VecDot4Fn vec_dot_tile_kernel(const BlockFormat& f, int tokens, KernelIsa isa) {
  if (isa == KernelIsa::kScalar || best_isa() != KernelIsa::kAvx2) return nullptr;
  switch (tokens) {
    case 2: return tile_kernel<2>(f.type);
    case 3: return tile_kernel<3>(f.type);
    case 4: return tile_kernel<4>(f.type);
    default: return nullptr;
  }
}

}  // namespace hearth

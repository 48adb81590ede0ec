// The transposed product of absorbed MLA (y += x^T W over a band of weight rows) for Q4_K
// and Q8_0 weights on AVX-512: each block is decoded into registers and added straight
// into every activation row's output, with no staging buffer.
//
// Why: absorbed attention folds each head's queries into latent space through the key
// rows of kv_b, a transposed product. Through decode_block and add_scaled_rows (AVX2, a
// block decoded to memory and read back per activation row) a Q4_K kv_b ran at 2.3 GB/s
// on one Zen 5 core (bench/dot_bench, "transposed product"), which made the bench preset's
// attention cost twice its bytes at Q4_K.
//
// The bits: every value is decoded with the steps decode_q4_k_avx2 / decode_q8_0_avx2 take
// (Q4_K: d * scale as a float, times the level, minus dmin * min; Q8_0: level times d), and
// added as add_scaled_rows does (x times value, then added, rows in order). The file is
// compiled with -ffp-contract=off, so no multiply and add are fused. The results are the
// scalar path's floats bit for bit (tests/quant/weight_matrix_prepared_test.cc).
#include <immintrin.h>

#include <cstdint>
#include <type_traits>

#include "quant/avx2_blocks.h"
#include "quant/block_formats.h"
#include "quant/transposed_kernels.h"

namespace hearth::transposed_avx512 {

namespace {

#define HEARTH_T512 __attribute__((target("avx2,f16c,avx512f,avx512bw,avx512vl,avx512dq")))

// One Q4_K block b (256 columns) of M weight rows into the n activation rows' outputs.
template <int M>
HEARTH_T512 inline void q4_k_block(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t n,
                                   const BlockQ4_K* const* rows, int64_t b) {
  // Row k's sub-block j: step[k][j] = d * scale j and step[k][8 + j] = dmin * min j, each
  // one rounded float product as decode_q4_k_avx2 computes them.
  alignas(64) float step[M][16];
  for (int k = 0; k < M; ++k) {
    const BlockQ4_K& blk = rows[k][b];
    uint64_t sc, mn;
    avx2::unpack_scale_min(blk.scales, sc, mn);
    const __m512 levels = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_set_epi64x(int64_t(mn), int64_t(sc))));
    const __m512 d = _mm512_insertf32x8(_mm512_set1_ps(_cvtsh_ss(blk.d)), _mm256_set1_ps(_cvtsh_ss(blk.dmin)), 1);
    _mm512_store_ps(step[k], _mm512_mul_ps(d, levels));
  }
  float* yb = y + b * kQK_K;
  const __m512i low4 = _mm512_set1_epi32(15);
  // Sub-blocks 2p and 2p + 1 (columns 64p .. 64p + 63) are the low and high nibbles of
  // qs[32p .. 32p + 31]; h takes sixteen of those bytes at a time.
  for (int p = 0; p < 4; ++p) {
    __m512 sl[M], ol[M], sh[M], oh[M];
#pragma GCC unroll 4
    for (int k = 0; k < M; ++k) {
      sl[k] = _mm512_set1_ps(step[k][2 * p]);
      ol[k] = _mm512_set1_ps(step[k][8 + 2 * p]);
      sh[k] = _mm512_set1_ps(step[k][2 * p + 1]);
      oh[k] = _mm512_set1_ps(step[k][8 + 2 * p + 1]);
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      __m512 lo[M], hi[M];
#pragma GCC unroll 4
      for (int k = 0; k < M; ++k) {
        const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[k][b].qs + 32 * p + 16 * h)));
        lo[k] = _mm512_sub_ps(_mm512_mul_ps(sl[k], _mm512_cvtepi32_ps(_mm512_and_si512(q, low4))), ol[k]);
        hi[k] = _mm512_sub_ps(_mm512_mul_ps(sh[k], _mm512_cvtepi32_ps(_mm512_srli_epi32(q, 4))), oh[k]);
      }
      for (int64_t t = 0; t < n; ++t) {
        float* yl = yb + t * ldy + 64 * p + 16 * h;
        const float* xt = x + t * ldx;
        __m512 al = _mm512_loadu_ps(yl), ah = _mm512_loadu_ps(yl + 32);
#pragma GCC unroll 4
        for (int k = 0; k < M; ++k) {
          const __m512 xk = _mm512_set1_ps(xt[k]);
          al = _mm512_add_ps(al, _mm512_mul_ps(xk, lo[k]));
          ah = _mm512_add_ps(ah, _mm512_mul_ps(xk, hi[k]));
        }
        _mm512_storeu_ps(yl, al);
        _mm512_storeu_ps(yl + 32, ah);
      }
    }
  }
}

// One Q8_0 block b (32 columns) of M weight rows.
template <int M>
HEARTH_T512 inline void q8_0_block(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t n,
                                   const BlockQ8_0* const* rows, int64_t b) {
  __m512 d[M];
#pragma GCC unroll 4
  for (int k = 0; k < M; ++k) d[k] = _mm512_set1_ps(_cvtsh_ss(rows[k][b].d));
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    __m512 v[M];
#pragma GCC unroll 4
    for (int k = 0; k < M; ++k) {
      const __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[k][b].qs + 16 * h)));
      v[k] = _mm512_mul_ps(_mm512_cvtepi32_ps(q), d[k]);
    }
    for (int64_t t = 0; t < n; ++t) {
      float* yt = y + t * ldy + b * kQK8_0 + 16 * h;
      const float* xt = x + t * ldx;
      __m512 acc = _mm512_loadu_ps(yt);
#pragma GCC unroll 4
      for (int k = 0; k < M; ++k) acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_set1_ps(xt[k]), v[k]));
      _mm512_storeu_ps(yt, acc);
    }
  }
}

// Whole blocks [b0, b1) of M rows, one block at a time.
template <class Block, int M>
HEARTH_T512 void blocks(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t n, const Block* const* rows,
                        int64_t b0, int64_t b1) {
  for (int64_t b = b0; b < b1; ++b) {
    if constexpr (std::is_same_v<Block, BlockQ4_K>) q4_k_block<M>(y, ldy, x, ldx, n, rows, b);
    else q8_0_block<M>(y, ldy, x, ldx, n, rows, b);
  }
}

template <class Block>
void blocks_of_rows(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t n, const Block* const* rows, int m,
                    int64_t b0, int64_t b1) {
  switch (m) {
    case 4: return blocks<Block, 4>(y, ldy, x, ldx, n, rows, b0, b1);
    case 3: return blocks<Block, 3>(y, ldy, x, ldx, n, rows, b0, b1);
    case 2: return blocks<Block, 2>(y, ldy, x, ldx, n, rows, b0, b1);
    default: return blocks<Block, 1>(y, ldy, x, ldx, n, rows, b0, b1);
  }
}

}  // namespace

void add_scaled_q4_k_blocks(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t n,
                            const BlockQ4_K* const* rows, int m, int64_t b0, int64_t b1) {
  blocks_of_rows(y, ldy, x, ldx, n, rows, m, b0, b1);
}

void add_scaled_q8_0_blocks(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t n,
                            const BlockQ8_0* const* rows, int m, int64_t b0, int64_t b1) {
  blocks_of_rows(y, ldy, x, ldx, n, rows, m, b0, b1);
}

}  // namespace hearth::transposed_avx512

#include "engine/vec_ops.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "quant/fp8_avx2.h"
#include "quant/numbers.h"

namespace hearth {

namespace {

float dot_scalar(const float* a, const float* b, int64_t n) {
  float acc = 0.0f;
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

void axpy_scalar(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// The sum of v's lanes: (l0+l4, l1+l5, l2+l6, l3+l7), then (x0+x2, x1+x3), then y0+y1.
__attribute__((target("avx2,fma"))) inline float hsum8(__m256 v) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}

__attribute__((target("avx2,fma"))) float dot_avx2(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float acc = hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  for (; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

__attribute__((target("avx2"))) void axpy_avx2(float a, const float* x, float* y, int64_t n) {
  const __m256 av = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_mul_ps(av, _mm256_loadu_ps(x + i))));
  for (; i < n; ++i) y[i] += a * x[i];
}

// ---- blocked dot products: queries x rows -------------------------------------------

// The scalar reference of dot_rows_f32's pair sum, lane by lane as the AVX2 kernel adds:
// lane l sums the products at d = l, l + 8, l + 16, ... (fused multiply-adds), the lanes
// are added as the kernel's horizontal sum does, then the tail in order.
float pair_dot_scalar(const float* a, const float* b, int64_t dim) {
  float lane[8] = {};
  int64_t d = 0;
  for (; d + 8 <= dim; d += 8)
    for (int l = 0; l < 8; ++l) lane[l] = std::fma(a[d + l], b[d + l], lane[l]);
  // hsum8: (l0+l4, l1+l5, l2+l6, l3+l7), then (x0+x2, x1+x3), then y0+y1
  const float x0 = lane[0] + lane[4], x1 = lane[1] + lane[5], x2 = lane[2] + lane[6], x3 = lane[3] + lane[7];
  float acc = (x0 + x2) + (x1 + x3);
  for (; d < dim; ++d) acc = std::fma(a[d], b[d], acc);
  return acc;
}

void dot_rows_scalar(const float* q, int64_t ldq, int64_t nq, const float* const* rows, int64_t nrows, int64_t dim,
                     float* out, int64_t ldo) {
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < nrows; ++j) out[i * ldo + j] = pair_dot_scalar(q + i * ldq, rows[j], dim);
}

// The tail after the 8-wide part, in order and fused, as pair_dot_scalar adds it (an
// explicit fma: whether the compiler would contract a * b + acc must not decide the bits).
__attribute__((target("avx2,fma"))) inline float dot_tail(float acc, const float* a, const float* b, int64_t d,
                                                         int64_t dim) {
  for (; d < dim; ++d) acc = std::fma(a[d], b[d], acc);
  return acc;
}

// NQ queries x NR rows: NQ * NR accumulators, NQ + NR loads per NQ * NR FMAs.
template <int NQ, int NR>
__attribute__((target("avx2,fma"))) inline void dot_tile(const float* q, int64_t ldq, const float* const* rows,
                                                        int64_t dim, float* out, int64_t ldo) {
  __m256 acc[NQ][NR];
  for (int i = 0; i < NQ; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  int64_t d = 0;
  for (; d + 8 <= dim; d += 8) {
    __m256 r[NR];
    for (int j = 0; j < NR; ++j) r[j] = _mm256_loadu_ps(rows[j] + d);
    for (int i = 0; i < NQ; ++i) {
      const __m256 qv = _mm256_loadu_ps(q + i * ldq + d);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(qv, r[j], acc[i][j]);
    }
  }
  for (int i = 0; i < NQ; ++i)
    for (int j = 0; j < NR; ++j) out[i * ldo + j] = dot_tail(hsum8(acc[i][j]), q + i * ldq, rows[j], d, dim);
}

__attribute__((target("avx2,fma"))) void dot_rows_avx2(const float* q, int64_t ldq, int64_t nq, const float* const* rows,
                                                       int64_t nrows, int64_t dim, float* out, int64_t ldo) {
  // 4 queries x 2 rows: 8 independent FMA chains (enough to cover the FMA latency at two
  // per cycle) for 6 loads. Every block of four queries takes a row pair while it is in
  // L1, so each row comes from memory once for all the queries (up to 8 queries, 16 KB
  // of 512-float latents, stay in L1 beside it). The rows are gathered from the KV cache
  // in no order a prefetcher can guess, so the next pair is asked for ahead.
  const int64_t nq4 = nq / 4 * 4;
  if (nq4 > 0) {
    int64_t j = 0;
    for (; j + 2 <= nrows; j += 2) {
      for (int64_t k = j + 2; k < std::min(j + 4, nrows); ++k) prefetch_bytes(rows[k], dim * int64_t(sizeof(float)));
      for (int64_t i = 0; i < nq4; i += 4) dot_tile<4, 2>(q + i * ldq, ldq, rows + j, dim, out + i * ldo + j, ldo);
    }
    for (; j < nrows; ++j)
      for (int64_t i = 0; i < nq4; i += 4) dot_tile<4, 1>(q + i * ldq, ldq, rows + j, dim, out + i * ldo + j, ldo);
  }
  int64_t i = nq4;
  for (; i < nq; ++i) {
    int64_t j = 0;
    for (; j + 8 <= nrows; j += 8) dot_tile<1, 8>(q + i * ldq, ldq, rows + j, dim, out + i * ldo + j, ldo);
    for (; j < nrows; ++j) dot_tile<1, 1>(q + i * ldq, ldq, rows + j, dim, out + i * ldo + j, ldo);
  }
}

// ---- blocked weighted sums -----------------------------------------------------------

void weighted_rows_scalar(const float* p, int64_t ldp, int64_t nq, const float* const* rows, int64_t nrows,
                          int64_t dim, float* out, int64_t ldo) {
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < nrows; ++j) axpy_scalar(p[i * ldp + j], rows[j], out + i * ldo, dim);
}

// NQ queries x NV vectors of 8 columns held in registers across all rows: per row NV
// loads and NQ broadcasts for NQ * NV multiply-adds; each element still gets its
// products added in row order, one rounding for the product and one for the sum.
template <int NQ, int NV>
__attribute__((target("avx2"))) inline void weighted_tile(const float* p, int64_t ldp, const float* const* rows,
                                                         int64_t nrows, int64_t d, float* out, int64_t ldo) {
  __m256 acc[NQ][NV];
  for (int i = 0; i < NQ; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_loadu_ps(out + i * ldo + d + 8 * v);
  for (int64_t j = 0; j < nrows; ++j) {
    __m256 r[NV];
    for (int v = 0; v < NV; ++v) r[v] = _mm256_loadu_ps(rows[j] + d + 8 * v);
    for (int i = 0; i < NQ; ++i) {
      const __m256 pv = _mm256_set1_ps(p[i * ldp + j]);
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_add_ps(acc[i][v], _mm256_mul_ps(pv, r[v]));
    }
  }
  for (int i = 0; i < NQ; ++i)
    for (int v = 0; v < NV; ++v) _mm256_storeu_ps(out + i * ldo + d + 8 * v, acc[i][v]);
}

// The rows go in blocks of kRowBlock (64 KB of 512-float latents), each block swept once
// per column chunk while it sits in L2: sweeping all rows per chunk would touch each
// (scattered) row once per 16 columns from L3. Within a block, every element adds its
// products in row order.
constexpr int64_t kRowBlock = 32;

template <int NQ>
__attribute__((target("avx2"))) void weighted_block(const float* pb, int64_t ldp, const float* const* rb, int64_t nb,
                                                   int64_t dim, float* out, int64_t ldo) {
  int64_t d = 0;
  for (; d + 16 <= dim; d += 16) weighted_tile<NQ, 2>(pb, ldp, rb, nb, d, out, ldo);
  for (; d + 8 <= dim; d += 8) weighted_tile<NQ, 1>(pb, ldp, rb, nb, d, out, ldo);
  if (d < dim)
    for (int i = 0; i < NQ; ++i)
      for (int64_t j = 0; j < nb; ++j) {
        const float a = pb[i * ldp + j];
        for (int64_t e = d; e < dim; ++e) out[i * ldo + e] += a * rb[j][e];
      }
}

// The blocks are taken in row order, and every block of four queries sweeps a row block
// while it is in L2, so each row comes from memory once for all the queries. The next
// row block (gathered from the KV cache in no order a prefetcher can guess) is asked for
// while this one is computed.
__attribute__((target("avx2"))) void weighted_rows_avx2(const float* p, int64_t ldp, int64_t nq, const float* const* rows,
                                                        int64_t nrows, int64_t dim, float* out, int64_t ldo) {
  for (int64_t j0 = 0; j0 < nrows; j0 += kRowBlock) {
    const int64_t nb = std::min(kRowBlock, nrows - j0);
    for (int64_t k = j0 + kRowBlock; k < std::min(j0 + 2 * kRowBlock, nrows); ++k)
      prefetch_bytes(rows[k], dim * int64_t(sizeof(float)));
    int64_t i = 0;
    for (; i + 4 <= nq; i += 4) weighted_block<4>(p + i * ldp + j0, ldp, rows + j0, nb, dim, out + i * ldo, ldo);
    for (; i < nq; ++i) weighted_block<1>(p + i * ldp + j0, ldp, rows + j0, nb, dim, out + i * ldo, ldo);
  }
}

bool use_avx2(KernelIsa isa) { return has_avx2(resolve_isa(isa)); }
bool use_avx512(KernelIsa isa) { return has_avx512(resolve_isa(isa)); }

// ---- AVX-512: the same sums, two 8-lane chains to a register -----------------------
//
// A 512-bit register holds two queries' 8-float chunks side by side (query 2k in the
// low half, 2k + 1 in the high half), and each cached row's chunk is broadcast to both
// halves, so every half runs exactly the AVX2 kernel's 8-lane FMA chain and the halves'
// horizontal sums (hsum8 each) give the same bits as dot_rows_avx2 and the scalar
// reference. Each FMA does twice the work, and no shuffle sits in the loop: the query
// pairs are interleaved once per call ([pair][d / 8][16]), the rows come with a
// broadcasting load.
#define HEARTH_VEC_AVX512 __attribute__((target("avx2,fma,avx512f,avx512dq,avx512vl")))

// NP query pairs x NR rows over the 8-wide part of dim: NP + NR loads per NP * NR FMAs.
// With pf, the tile also asks for the rows at pf[0..NR) (the next rows the caller will
// take), one line per row every two steps: dim floats are then all asked for by the
// tile's end, spread over its FMAs. Asking for them all before the tile, as the AVX2
// kernel does, issued more requests at once than the core keeps in flight.
template <int NP, int NR>
HEARTH_VEC_AVX512 inline void dot_tile_512(const float* qp, int64_t pair_stride, const float* q, int64_t ldq,
                                           int64_t nq_left, const float* const* rows, int64_t dim, float* out,
                                           int64_t ldo, const float* const* pf = nullptr) {
  __m512 acc[NP][NR];
#pragma GCC unroll 8
  for (int i = 0; i < NP; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  const int64_t d8 = dim / 8 * 8;
  for (int64_t d = 0; d < d8; d += 8) {
    if (pf && d % 16 == 0)
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) _mm_prefetch(reinterpret_cast<const char*>(pf[j] + d), _MM_HINT_T0);
    __m512 r[NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) r[j] = _mm512_broadcast_f32x8(_mm256_loadu_ps(rows[j] + d));
#pragma GCC unroll 8
    for (int i = 0; i < NP; ++i) {
      const __m512 qv = _mm512_loadu_ps(qp + i * pair_stride + 2 * d);
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_fmadd_ps(qv, r[j], acc[i][j]);
    }
  }
  if (pf) {  // the lines the steps did not reach: past d8, and a misaligned row's last
    const int64_t asked = (d8 + 15) / 16 * 16;
    for (int j = 0; j < NR; ++j) {
      prefetch_bytes(pf[j] + asked, (dim - asked) * int64_t(sizeof(float)));
      _mm_prefetch(reinterpret_cast<const char*>(pf[j] + dim - 1), _MM_HINT_T0);
    }
  }
  for (int i = 0; i < NP; ++i)
    for (int j = 0; j < NR; ++j) {
      const int64_t qi = 2 * i;
      out[qi * ldo + j] = dot_tail(hsum8(_mm512_castps512_ps256(acc[i][j])), q + qi * ldq, rows[j], d8, dim);
      if (qi + 1 < nq_left)
        out[(qi + 1) * ldo + j] =
            dot_tail(hsum8(_mm512_extractf32x8_ps(acc[i][j], 1)), q + (qi + 1) * ldq, rows[j], d8, dim);
    }
}

HEARTH_VEC_AVX512 void dot_rows_avx512(const float* q, int64_t ldq, int64_t nq, const float* const* rows,
                                       int64_t nrows, int64_t dim, float* out, int64_t ldo) {
  const int64_t d8 = dim / 8 * 8;
  if (nq < 2 || d8 == 0) {  // nothing to pair: the AVX2 kernel, the same bits
    dot_rows_avx2(q, ldq, nq, rows, nrows, dim, out, ldo);
    return;
  }
  // The query pairs interleaved: pair k's chunk c at qp[k * 2 * d8 + 16 c], query 2k's 8
  // floats then query 2k + 1's (zeros past the last query).
  const int64_t pairs = (nq + 1) / 2, pair_stride = 2 * d8;
  thread_local std::vector<float> qp;
  qp.resize(size_t(pairs * pair_stride));
  for (int64_t k = 0; k < pairs; ++k)
    for (int64_t d = 0; d < d8; d += 8)
      for (int h = 0; h < 2; ++h) {
        float* dst = qp.data() + k * pair_stride + 2 * d + 8 * h;
        const int64_t qi = 2 * k + h;
        if (qi < nq) std::copy_n(q + qi * ldq + d, 8, dst);
        else std::fill_n(dst, 8, 0.0f);
      }
  // Rows in groups of six, each group taken by all the query pairs while it is in L1:
  // four pairs x six rows a tile (24 independent FMA chains for 10 loads, 31 of the 32
  // registers), then two pairs and one; the last rows go by four, two and one. The first
  // tile of a group asks for the next group's rows (dot_tile_512's pf). Against tiles of
  // two pairs x four rows with the next rows asked for in one burst, scoring entries of
  // 576 floats for 16 heads on one Zen 5 core took 28-30 against 37-39 us for 240 entries
  // in cache, and 300-334 against 400-453 us for 1024 entries picked from a 16K cache and
  // not in cache (throwaway drivers).
  constexpr int kGroup = 6;
  auto tiles = [&]<int NR>(int64_t j, const float* const* pf) {
    int64_t k = 0;
    if constexpr (NR > 1)
      for (; k + 4 <= pairs; k += 4, pf = nullptr)
        dot_tile_512<4, NR>(qp.data() + k * pair_stride, pair_stride, q + 2 * k * ldq, ldq, nq - 2 * k, rows + j, dim,
                            out + 2 * k * ldo + j, ldo, pf);
    for (; k + 2 <= pairs; k += 2, pf = nullptr)
      dot_tile_512<2, NR>(qp.data() + k * pair_stride, pair_stride, q + 2 * k * ldq, ldq, nq - 2 * k, rows + j, dim,
                          out + 2 * k * ldo + j, ldo, pf);
    if (k < pairs)
      dot_tile_512<1, NR>(qp.data() + k * pair_stride, pair_stride, q + 2 * k * ldq, ldq, nq - 2 * k, rows + j, dim,
                          out + 2 * k * ldo + j, ldo, pf);
  };
  int64_t j = 0;
  for (; j + kGroup <= nrows; j += kGroup) {
    // The next group's rows (the last rows, repeated, past the end: asked for twice).
    const float* next[kGroup];
    for (int r = 0; r < kGroup; ++r) next[r] = rows[std::min(j + kGroup + r, nrows - 1)];
    tiles.template operator()<kGroup>(j, next);
  }
  // The last rows (up to five) by four, two and one.
  if (j + 4 <= nrows) tiles.template operator()<4>(j, nullptr), j += 4;
  if (j + 2 <= nrows) tiles.template operator()<2>(j, nullptr), j += 2;
  if (j < nrows) tiles.template operator()<1>(j, nullptr);
}

// weighted_tile with 16 columns to a vector: the same multiply, then add, per element.
// Every loop over the tile is unrolled: left to itself GCC ran the 4 x 2 tile at 15
// multiply-adds a cycle where unrolled it ran 20.
template <int NQ, int NV>
HEARTH_VEC_AVX512 inline void weighted_tile_512(const float* p, int64_t ldp, const float* const* rows, int64_t nrows,
                                                int64_t d, float* out, int64_t ldo, const float* const* pf,
                                                int64_t npf) {
  __m512 acc[NQ][NV];
#pragma GCC unroll 8
  for (int i = 0; i < NQ; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_loadu_ps(out + i * ldo + d + 16 * v);
  for (int64_t j = 0; j < nrows; ++j) {
    __m512 r[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) r[v] = _mm512_loadu_ps(rows[j] + d + 16 * v);
    if (j < npf)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) _mm_prefetch(reinterpret_cast<const char*>(pf[j] + d + 16 * v), _MM_HINT_T0);
#pragma GCC unroll 8
    for (int i = 0; i < NQ; ++i) {
      const __m512 pv = _mm512_set1_ps(p[i * ldp + j]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_add_ps(acc[i][v], _mm512_mul_ps(pv, r[v]));
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < NQ; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(out + i * ldo + d + 16 * v, acc[i][v]);
}

// NQ queries over a block of rows: 48 columns a tile for eight queries (24 sums, 3
// loads and 8 broadcasts per 24 multiply-adds), else 32; then 16, 8 and one at a time.
// With npf > 0, each 512-bit tile asks for its columns of rows pf[0, npf) (the next
// block's) as it goes, a line per row and vector.
template <int NQ>
HEARTH_VEC_AVX512 void weighted_block_512(const float* pb, int64_t ldp, const float* const* rb, int64_t nb,
                                          int64_t dim, float* out, int64_t ldo, const float* const* pf, int64_t npf) {
  int64_t d = 0;
  if constexpr (NQ == 8)
    for (; d + 48 <= dim; d += 48) weighted_tile_512<NQ, 3>(pb, ldp, rb, nb, d, out, ldo, pf, npf);
  for (; d + 32 <= dim; d += 32) weighted_tile_512<NQ, 2>(pb, ldp, rb, nb, d, out, ldo, pf, npf);
  for (; d + 16 <= dim; d += 16) weighted_tile_512<NQ, 1>(pb, ldp, rb, nb, d, out, ldo, pf, npf);
  for (int64_t j = 0; j < npf; ++j) prefetch_bytes(pf[j] + d, (dim - d) * int64_t(sizeof(float)));
  for (; d + 8 <= dim; d += 8) weighted_tile<NQ, 1>(pb, ldp, rb, nb, d, out, ldo);
  if (d < dim)
    for (int i = 0; i < NQ; ++i)
      for (int64_t j = 0; j < nb; ++j) {
        const float a = pb[i * ldp + j];
        for (int64_t e = d; e < dim; ++e) out[i * ldo + e] += a * rb[j][e];
      }
}

// weighted_rows_avx2's blocks and order, with the 512-bit tiles, eight queries at a time
// where there are eight; the first queries' tiles of a block ask for the next block's
// rows as they go (asked for all at once before each block, they took 15 % of the time
// of rows in cache). Against four queries at a time and that burst, the weighted sums
// of 240 entries' 512 floats for 16 heads took 25-28 against 37-38 us on one Zen 5 core
// in cache, and over 2048 entries picked from a 16K cache (256 columns, not in cache)
// 330-343 against 418-470 us (throwaway drivers).
HEARTH_VEC_AVX512 void weighted_rows_avx512(const float* p, int64_t ldp, int64_t nq, const float* const* rows,
                                            int64_t nrows, int64_t dim, float* out, int64_t ldo) {
  for (int64_t j0 = 0; j0 < nrows; j0 += kRowBlock) {
    const int64_t nb = std::min(kRowBlock, nrows - j0);
    int64_t npf = std::clamp<int64_t>(nrows - j0 - kRowBlock, 0, kRowBlock);
    const float* const* pf = rows + std::min(j0 + kRowBlock, nrows);
    int64_t i = 0;
    for (; i + 8 <= nq; i += 8, npf = 0)
      weighted_block_512<8>(p + i * ldp + j0, ldp, rows + j0, nb, dim, out + i * ldo, ldo, pf, npf);
    for (; i + 4 <= nq; i += 4, npf = 0)
      weighted_block_512<4>(p + i * ldp + j0, ldp, rows + j0, nb, dim, out + i * ldo, ldo, pf, npf);
    for (; i < nq; ++i, npf = 0)
      weighted_block_512<1>(p + i * ldp + j0, ldp, rows + j0, nb, dim, out + i * ldo, ldo, pf, npf);
  }
}

// ---- softmax's exponentials ------------------------------------------------------

// exp(x) = 2^k * p(r): k = nearest(x * log2 e), r = x - k ln 2 in two FMAs (ln 2's high
// part has trailing zero bits, so k * kLn2Hi is exact for |k| < 2^9), p = Taylor to r^7.
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693145751953125f;
constexpr float kLn2Lo = 1.42860682030941723212e-6f;
constexpr float kExpLow = -87.0f;  // below: 0 (2^k stays a normal float down to k = -126)
constexpr float kTaylor[8] = {1.0f, 1.0f, 1.0f / 2, 1.0f / 6, 1.0f / 24, 1.0f / 120, 1.0f / 720, 1.0f / 5040};

float exp_poly_scalar(float x) {
  if (!(x >= kExpLow)) return 0.0f;  // also -inf and NaN's comparisons
  x = std::min(x, 0.0f);             // softmax's arguments are <= 0; a larger one is clamped
  const float k = std::nearbyint(x * kLog2e);
  const float r = std::fma(k, -kLn2Lo, std::fma(k, -kLn2Hi, x));
  float p = kTaylor[7];
  for (int i = 6; i >= 0; --i) p = std::fma(p, r, kTaylor[i]);
  float scale;
  const int32_t bits = (int32_t(k) + 127) << 23;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// The 16 lane sums added in the fixed tree the kernels use: (l, l+8), then (l, l+4),
// (l, l+2), (l, l+1).
double lane_tree_sum(const double lanes[16]) {
  double a[8], b[4];
  for (int l = 0; l < 8; ++l) a[l] = lanes[l] + lanes[l + 8];
  for (int l = 0; l < 4; ++l) b[l] = a[l] + a[l + 4];
  return (b[0] + b[2]) + (b[1] + b[3]);
}

double exp_shifted_scalar(float* s, int64_t n, float m) {
  double lanes[16] = {};
  for (int64_t i = 0; i < n; ++i) {
    s[i] = exp_poly_scalar(s[i] - m);
    lanes[i % 16] += double(s[i]);
  }
  return lane_tree_sum(lanes);
}

__attribute__((target("avx2,fma"))) inline __m256 exp_poly_avx2(__m256 x) {
  const __m256 low = _mm256_set1_ps(kExpLow);
  const __m256 live = _mm256_cmp_ps(x, low, _CMP_GE_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, low), _mm256_setzero_ps());
  const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fmadd_ps(k, _mm256_set1_ps(-kLn2Hi), x);
  r = _mm256_fmadd_ps(k, _mm256_set1_ps(-kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kTaylor[7]);
  for (int i = 6; i >= 0; --i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kTaylor[i]));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(bits)), live);
}

// 16 elements per step (two registers), so the lanes are the scalar reference's.
__attribute__((target("avx2,fma"))) double exp_shifted_avx2(float* s, int64_t n, float m) {
  const __m256 mv = _mm256_set1_ps(m);
  __m256d acc[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
  for (int64_t i = 0; i < n; i += 16) {
    alignas(32) float buf[16];
    const int64_t len = std::min<int64_t>(16, n - i);
    const float* src = s + i;
    if (len < 16) {  // the tail through the same steps; lanes past n add +0
      std::fill_n(buf, 16, -INFINITY);
      std::copy_n(s + i, len, buf);
      src = buf;
    }
    const __m256 e0 = exp_poly_avx2(_mm256_sub_ps(_mm256_loadu_ps(src), mv));
    const __m256 e1 = exp_poly_avx2(_mm256_sub_ps(_mm256_loadu_ps(src + 8), mv));
    if (len < 16) {
      _mm256_store_ps(buf, e0);
      _mm256_store_ps(buf + 8, e1);
      std::copy_n(buf, len, s + i);
    } else {
      _mm256_storeu_ps(s + i, e0);
      _mm256_storeu_ps(s + i + 8, e1);
    }
    acc[0] = _mm256_add_pd(acc[0], _mm256_cvtps_pd(_mm256_castps256_ps128(e0)));
    acc[1] = _mm256_add_pd(acc[1], _mm256_cvtps_pd(_mm256_extractf128_ps(e0, 1)));
    acc[2] = _mm256_add_pd(acc[2], _mm256_cvtps_pd(_mm256_castps256_ps128(e1)));
    acc[3] = _mm256_add_pd(acc[3], _mm256_cvtps_pd(_mm256_extractf128_ps(e1, 1)));
  }
  alignas(32) double lanes[16];
  for (int j = 0; j < 4; ++j) _mm256_store_pd(lanes + 4 * j, acc[j]);
  return lane_tree_sum(lanes);
}

// ---- FP8 cache blocks -----------------------------------------------------------

void decode_fp8_scalar(const uint8_t* codes, int64_t n, float scale, float* out) {
  const float* lut = fp8_e4m3_table();
  for (int64_t i = 0; i < n; ++i) out[i] = lut[codes[i]] * scale;
}

// The codes widened through F16 (quant/fp8_avx2.h, their values times 2^-8), times 256
// and then the scale, each product exact: the scale is not folded into one factor, which
// could overflow where the result does not.
__attribute__((target("avx2,f16c"))) void decode_fp8_avx2(const uint8_t* codes, int64_t n, float scale, float* out) {
  const __m256 up = _mm256_set1_ps(256.0f), sv = _mm256_set1_ps(scale);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256 lo, hi;
    fp8x16_times_2m8(codes + i, lo, hi);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(lo, up), sv));
    _mm256_storeu_ps(out + i + 8, _mm256_mul_ps(_mm256_mul_ps(hi, up), sv));
  }
  if (i < n) decode_fp8_scalar(codes + i, n - i, scale, out + i);
}

int64_t argmax_scalar(const float* x, int64_t n) {
  int64_t best = -1;
  float m = -INFINITY;
  for (int64_t i = 0; i < n; ++i)
    if (x[i] > m) {  // false for NaN; a tie keeps the first
      m = x[i];
      best = i;
    }
  return best;
}

// vmaxps(v, m) gives m where v is NaN, so NaN never enters a lane.
__attribute__((target("avx2"))) int64_t argmax_avx2(const float* x, int64_t n) {
  __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    m0 = _mm256_max_ps(_mm256_loadu_ps(x + i), m0);
    m1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), m1);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_max_ps(m0, m1));
  float m = -INFINITY;
  for (const float v : lanes) m = v > m ? v : m;
  for (int64_t j = i; j < n; ++j) m = x[j] > m ? x[j] : m;
  if (!(m > -INFINITY)) return -1;
  const __m256 mv = _mm256_set1_ps(m);
  for (i = 0; i + 8 <= n; i += 8)
    if (const int hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), mv, _CMP_EQ_OQ)))
      return i + __builtin_ctz(unsigned(hit));
  for (; i < n; ++i)
    if (x[i] == m) return i;
  return -1;  // not reached: m is one of the elements
}

}  // namespace

int64_t argmax_f32(const float* x, int64_t n, KernelIsa isa) {
  return use_avx2(isa) ? argmax_avx2(x, n) : argmax_scalar(x, n);
}

float dot_f32(const float* a, const float* b, int64_t n, KernelIsa isa) {
  return use_avx2(isa) ? dot_avx2(a, b, n) : dot_scalar(a, b, n);
}

void axpy_f32(float a, const float* x, float* y, int64_t n, KernelIsa isa) {
  if (use_avx2(isa)) axpy_avx2(a, x, y, n);
  else axpy_scalar(a, x, y, n);
}

void dot_rows_f32(const float* q, int64_t ldq, int64_t nq, const float* const* rows, int64_t nrows, int64_t dim,
                  float* out, int64_t ldo, KernelIsa isa) {
  if (use_avx512(isa)) dot_rows_avx512(q, ldq, nq, rows, nrows, dim, out, ldo);
  else if (use_avx2(isa)) dot_rows_avx2(q, ldq, nq, rows, nrows, dim, out, ldo);
  else dot_rows_scalar(q, ldq, nq, rows, nrows, dim, out, ldo);
}

void weighted_rows_f32(const float* p, int64_t ldp, int64_t nq, const float* const* rows, int64_t nrows,
                       int64_t dim, float* out, int64_t ldo, KernelIsa isa) {
  if (use_avx512(isa)) weighted_rows_avx512(p, ldp, nq, rows, nrows, dim, out, ldo);
  else if (use_avx2(isa)) weighted_rows_avx2(p, ldp, nq, rows, nrows, dim, out, ldo);
  else weighted_rows_scalar(p, ldp, nq, rows, nrows, dim, out, ldo);
}

double exp_shifted_f32(float* s, int64_t n, float m, KernelIsa isa) {
  // No 512-bit kernel: it took 0.9 against 1.1 ns per score, a few tenths of a percent of
  // a long prefill.
  if (use_avx2(isa)) return exp_shifted_avx2(s, n, m);
  return exp_shifted_scalar(s, n, m);
}

void decode_fp8_block(const uint8_t* codes, int64_t n, float scale, float* out, KernelIsa isa) {
  if (use_avx2(isa)) decode_fp8_avx2(codes, n, scale, out);
  else decode_fp8_scalar(codes, n, scale, out);
}

}  // namespace hearth

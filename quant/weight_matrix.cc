#include "quant/weight_matrix.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "quant/avx2_blocks.h"
#include "quant/bf16_dot.h"
#include "quant/fp8_avx2.h"
#include "quant/block_formats.h"
#include "quant/dot_tiles.h"
#include "quant/interleaved.h"
#include "quant/numbers.h"
#include "quant/onednn_gemm.h"
#include "quant/transposed_kernels.h"

namespace hearth {

namespace {

constexpr int64_t kChunk = 128;  // columns decoded at a time (= the FP8 scale block)
static_assert(kChunk % 8 == 0, "chunks are whole 8-column vectors");

inline float block_scale(const WeightMatrix& w, int64_t r, int64_t c) {
  if (w.dtype != DType::F8_E4M3 || !w.scale) return 1.0f;
  return w.scale[(r / w.block) * w.scale_cols() + c / w.block];
}

// Length of the chunk that starts at column c and ends at most at `end`: chunks stop at
// every multiple of kChunk and, for block-scaled FP8, at every scale-block edge, so one
// scale covers a whole chunk whatever the block size (checkpoints use 128).
inline int64_t chunk_len(const WeightMatrix& w, int64_t c, int64_t end) {
  int64_t len = std::min(kChunk - c % kChunk, end - c);
  if (w.dtype == DType::F8_E4M3 && w.scale) len = std::min(len, w.block - c % w.block);
  return len;
}

// ---- scalar reference -------------------------------------------------------

void decode_scalar(const WeightMatrix& w, int64_t r, int64_t c0, int64_t len, float* out) {
  const int64_t base = r * w.cols + c0;
  switch (w.dtype) {
    case DType::F32:
      std::memcpy(out, static_cast<const float*>(w.data) + base, size_t(len) * 4);
      break;
    case DType::BF16: {
      const uint16_t* p = static_cast<const uint16_t*>(w.data) + base;
      for (int64_t i = 0; i < len; ++i) out[i] = bf16_to_f32(p[i]);
      break;
    }
    case DType::F16: {
      const uint16_t* p = static_cast<const uint16_t*>(w.data) + base;
      for (int64_t i = 0; i < len; ++i) out[i] = f16_to_f32(p[i]);
      break;
    }
    case DType::F8_E4M3: {
      const uint8_t* p = static_cast<const uint8_t*>(w.data) + base;
      const float* lut = fp8_e4m3_table();
      for (int64_t i = 0; i < len; ++i) out[i] = lut[p[i]];
      break;
    }
    default: break;  // block formats decode whole blocks (see below), never through here
  }
}

void matmul_rows_scalar(const WeightMatrix& w, const float* x, int64_t ldx, int64_t n, float* y,
                        int64_t ldy, int64_t r0, int64_t r1) {
  float buf[kChunk];
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t t = 0; t < n; ++t) y[t * ldy + r] = 0.0f;
    for (int64_t c0 = 0, len = 0; c0 < w.cols; c0 += len) {
      len = chunk_len(w, c0, w.cols);
      decode_scalar(w, r, c0, len, buf);
      const float s = block_scale(w, r, c0);
      for (int64_t t = 0; t < n; ++t) {
        const float* xt = x + t * ldx + c0;
        float acc = 0.0f;
        for (int64_t i = 0; i < len; ++i) acc += buf[i] * xt[i];
        y[t * ldy + r] += acc * s;
      }
    }
  }
}

void matmul_t_scalar(const WeightMatrix& w, int64_t row0, int64_t nrows, const float* x, float* y,
                     int64_t c0, int64_t c1) {
  float buf[kChunk];
  for (int64_t i = 0; i < nrows; ++i) {
    const int64_t r = row0 + i;
    for (int64_t c = c0; c < c1;) {
      // Chunks never straddle a scale block.
      const int64_t len = chunk_len(w, c, c1);
      decode_scalar(w, r, c, len, buf);
      const float xs = x[i] * block_scale(w, r, c);
      for (int64_t j = 0; j < len; ++j) y[c + j] += xs * buf[j];
      c += len;
    }
  }
}

// ---- AVX2 + FMA + F16C --------------------------------------------------------

#define HEARTH_AVX2 __attribute__((target("avx2,fma,f16c")))

// Decodes 8 weights at p + i to floats. FP8 gives its value times 2^-8
// (quant/fp8_avx2.h); the kernels undo that on partial sums, see simd_unscale.
HEARTH_AVX2 inline __m256 load8(DType dt, const void* p, int64_t i) {
  switch (dt) {
    case DType::F32: return _mm256_loadu_ps(static_cast<const float*>(p) + i);
    case DType::BF16: {
      __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i));
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    case DType::F16: {
      __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i));
      return _mm256_cvtph_ps(h);
    }
    case DType::F8_E4M3: return fp8x8_times_2m8(static_cast<const uint8_t*>(p) + i);
    default: break;  // block formats: not decoded 8 at a time
  }
  return _mm256_setzero_ps();
}

// load8 for 16 FP8 codes at p + i: the same floats, with the widening done once.
HEARTH_AVX2 inline void load16_fp8(const void* p, int64_t i, __m256& lo, __m256& hi) {
  fp8x16_times_2m8(static_cast<const uint8_t*>(p) + i, lo, hi);
}

HEARTH_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// load8 yields FP8 values times 2^-8; this undoes that. It is applied to the partial sum
// (or to x * scale) rather than folded into the scale, so that a huge block scale
// (> FLT_MAX / 256) cannot overflow where the true product does not.
inline float simd_unscale(const WeightMatrix& w) { return w.dtype == DType::F8_E4M3 ? 256.0f : 1.0f; }

// Weights are prefetched this many bytes ahead of the chunk being dotted, as the block
// kernels do (quant/dot_kernels.inc). A long single stream gains nothing measurable from
// it, but a decode step is hundreds of short ones (a MoE work item is 128 KB to 2 MB of an
// expert; it was 128 KB when this was measured), and there the whole FP8 model decoded
// 15-25 % faster with it.
constexpr int64_t kFloatPrefetchBytes = 4096;

// The float kernels' product of rows [r, r + R) with activation rows [t, t + T): each
// weight vector is widened once for the T tokens and each activation vector loaded once
// for the R rows, with R T independent FMA chains. Per (row, token) the operations never
// change: one 8-lane accumulator over the columns in steps of 8, per chunk (a 128 x 128
// FP8 scale block, else the whole row); a scalar sum of the chunk's last len % 8 columns;
// the chunk's scale applied lane by lane to the accumulator (and to the scalar) into the
// row's 8-lane total; the horizontal sum of that total plus the scalars' at the end. So a
// token's result is the same bits whatever R and T it went through, alone or in a batch.
// One accumulator per pair, the scale applied to vectors and one horizontal sum per row
// keep the loop at FMAs and loads: decode uses R = 4, T = 1 and batches R = 2, T = 4, whose
// 8 chains fill both FMA pipes from 8 loads per 16 FMAs, in 14 of the 16 ymm registers.
// The dtype is a template parameter so widening 8 weights is branch-free.
// What the float tiles (dot_tile_avx2, dot_tile4_512) share: rows r .. r + R-1 of w, their
// chunks (a 128 x 128 FP8 scale block, else the whole row), the weights' loads and each
// chunk's scalar tail, so that both tiles take the same steps for a (row, token).
template <DType D, int R>
struct FloatTileRows {
  static constexpr int64_t kElem = D == DType::F32 ? 4 : D == DType::F8_E4M3 ? 1 : 2;
  const WeightMatrix& w;
  const int64_t r;
  const bool scaled = D == DType::F8_E4M3 && w.scale;
  const float unscale = simd_unscale(w);
  const int64_t chunk = scaled ? w.block : w.cols;
  const char* row[R];
  const float* scale[R];

  FloatTileRows(const WeightMatrix& w_, int64_t r_) : w(w_), r(r_) {
    for (int k = 0; k < R; ++k) {
      row[k] = static_cast<const char*>(w.data) + (r + k) * w.cols * kElem;
      scale[k] = scaled ? w.scale + ((r + k) / w.block) * w.scale_cols() : nullptr;
    }
  }
  // One prefetch per 64 bytes of each row (past a row's end too: rows are contiguous, and
  // a prefetch never faults).
  HEARTH_AVX2 void prefetch(int64_t c) const {
    if ((c * kElem & 63) < 16 * kElem)
      for (int k = 0; k < R; ++k) _mm_prefetch(row[k] + c * kElem + kFloatPrefetchBytes, _MM_HINT_T0);
  }
  // Weights c .. c + 15 of row k.
  HEARTH_AVX2 void load16(int k, int64_t c, __m256& lo, __m256& hi) const {
    if constexpr (D == DType::F8_E4M3) {
      load16_fp8(row[k], c, lo, hi);
    } else {
      lo = load8(D, row[k], c);
      hi = load8(D, row[k], c + 8);
    }
  }
  float chunk_scale(int k, int64_t block_col) const { return scaled ? scale[k][block_col] : 1.0f; }
  // Row k's columns [c, c + n) (the chunk's last n < 8) as floats, in the vectors' units.
  void decode_tail(int k, int64_t c, int64_t n, float* tail) const {
    decode_scalar(w, r + k, c, n, tail);
    if (D == DType::F8_E4M3)
      for (int64_t j = 0; j < n; ++j) tail[j] *= 1.0f / 256.0f;
  }
  // The tail's part of a token's sum: (sum * unscale) * s, as the vectors' (see simd_unscale).
  float tail_sum(const float* tail, const float* xt, int64_t n, float s) const {
    float sc = 0.0f;
    for (int64_t j = 0; j < n; ++j) sc += tail[j] * xt[j];
    return (sc * unscale) * s;
  }
};

template <DType D, int R, int T>
HEARTH_AVX2 void dot_tile_avx2(const WeightMatrix& w, const float* x, int64_t ldx, float* y, int64_t ldy, int64_t r) {
  const FloatTileRows<D, R> rows(w, r);
  const __m256 unscale = _mm256_set1_ps(rows.unscale);
  __m256 total[R][T];
  float tails[R][T];
  for (int k = 0; k < R; ++k)
    for (int t = 0; t < T; ++t) {
      total[k][t] = _mm256_setzero_ps();
      tails[k][t] = 0.0f;
    }
  for (int64_t c0 = 0, block_col = 0; c0 < w.cols; c0 += rows.chunk, ++block_col) {
    const int64_t len = std::min(rows.chunk, w.cols - c0), vec = len & ~int64_t(7);
    __m256 acc[R][T];
    for (int k = 0; k < R; ++k)
      for (int t = 0; t < T; ++t) acc[k][t] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= vec; i += 16) {
      rows.prefetch(c0 + i);
      __m256 w0[R], w1[R];
      for (int k = 0; k < R; ++k) rows.load16(k, c0 + i, w0[k], w1[k]);
      for (int t = 0; t < T; ++t) {
        const float* xt = x + t * ldx + c0 + i;
        const __m256 x0 = _mm256_loadu_ps(xt), x1 = _mm256_loadu_ps(xt + 8);
        for (int k = 0; k < R; ++k) acc[k][t] = _mm256_fmadd_ps(w1[k], x1, _mm256_fmadd_ps(w0[k], x0, acc[k][t]));
      }
    }
    for (; i < vec; i += 8) {
      __m256 w0[R];
      for (int k = 0; k < R; ++k) w0[k] = load8(D, rows.row[k], c0 + i);
      for (int t = 0; t < T; ++t) {
        const __m256 x0 = _mm256_loadu_ps(x + t * ldx + c0 + i);
        for (int k = 0; k < R; ++k) acc[k][t] = _mm256_fmadd_ps(w0[k], x0, acc[k][t]);
      }
    }
    for (int k = 0; k < R; ++k) {
      float tail[8];
      if (i < len) rows.decode_tail(k, c0 + i, len - i, tail);
      const float s = rows.chunk_scale(k, block_col);
      const __m256 sv = _mm256_set1_ps(s);
      for (int t = 0; t < T; ++t) {
        // (sum * unscale) * s, as the scalar tail: a huge block scale cannot overflow where
        // the true product does not (see simd_unscale).
        total[k][t] = _mm256_fmadd_ps(_mm256_mul_ps(acc[k][t], unscale), sv, total[k][t]);
        if (i < len) tails[k][t] += rows.tail_sum(tail, x + t * ldx + c0 + i, len - i, s);
      }
    }
  }
  for (int k = 0; k < R; ++k)
    for (int t = 0; t < T; ++t) y[t * ldy + r + k] = hsum(total[k][t]) + tails[k][t];
}

#define HEARTH_AVX512F __attribute__((target("avx2,fma,f16c,avx512f,avx512dq,avx512vl,avx512bw")))

// Eight floats at a (low half) and at a + ld (high half); v in both halves.
HEARTH_AVX512F inline __m512 token_pair(const float* a, int64_t ld) {
  return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(a)), _mm256_loadu_ps(a + ld), 1);
}
HEARTH_AVX512F inline __m512 both_halves(__m256 v) { return _mm512_insertf32x8(_mm512_castps256_ps512(v), v, 1); }

// dot_tile_avx2<D, R, 4> on 512-bit registers: tokens 2p and 2p + 1 share a register, one
// in each 256-bit half, and the weights' eight lanes go to both halves. Each half does
// exactly the AVX2 tile's steps for its token (the same FMAs in the same order per lane,
// the same scale and tail steps, the same horizontal sum), so every (row, token) gets the
// same bits as through the AVX2 tiles or the one-token kernel. Four rows by four tokens
// take 16 FMAs of 512 bits per 16 columns where the AVX2 tile took 16 of 256 bits for two
// rows: float-weight prefill is bound by the FMAs.
template <DType D, int R>
HEARTH_AVX512F void dot_tile4_512(const WeightMatrix& w, const float* x, int64_t ldx, float* y, int64_t ldy, int64_t r) {
  constexpr int T = 4, P = 2;
  const FloatTileRows<D, R> rows(w, r);
  const __m512 unscale = _mm512_set1_ps(rows.unscale);
  __m512 total[R][P];
  float tails[R][T] = {};
  for (int k = 0; k < R; ++k)
    for (int p = 0; p < P; ++p) total[k][p] = _mm512_setzero_ps();
  for (int64_t c0 = 0, block_col = 0; c0 < w.cols; c0 += rows.chunk, ++block_col) {
    const int64_t len = std::min(rows.chunk, w.cols - c0), vec = len & ~int64_t(7);
    __m512 acc[R][P];
    for (int k = 0; k < R; ++k)
      for (int p = 0; p < P; ++p) acc[k][p] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= vec; i += 16) {
      rows.prefetch(c0 + i);
      __m512 w0[R], w1[R];
      for (int k = 0; k < R; ++k) {
        __m256 lo, hi;
        rows.load16(k, c0 + i, lo, hi);
        w0[k] = both_halves(lo);
        w1[k] = both_halves(hi);
      }
      for (int p = 0; p < P; ++p) {
        const __m512 x0 = token_pair(x + 2 * p * ldx + c0 + i, ldx), x1 = token_pair(x + 2 * p * ldx + c0 + i + 8, ldx);
        for (int k = 0; k < R; ++k) acc[k][p] = _mm512_fmadd_ps(w1[k], x1, _mm512_fmadd_ps(w0[k], x0, acc[k][p]));
      }
    }
    for (; i < vec; i += 8) {
      __m512 w0[R];
      for (int k = 0; k < R; ++k) w0[k] = both_halves(load8(D, rows.row[k], c0 + i));
      for (int p = 0; p < P; ++p) {
        const __m512 x0 = token_pair(x + 2 * p * ldx + c0 + i, ldx);
        for (int k = 0; k < R; ++k) acc[k][p] = _mm512_fmadd_ps(w0[k], x0, acc[k][p]);
      }
    }
    for (int k = 0; k < R; ++k) {
      float tail[8];
      if (i < len) rows.decode_tail(k, c0 + i, len - i, tail);
      const float s = rows.chunk_scale(k, block_col);
      const __m512 sv = _mm512_set1_ps(s);
      for (int p = 0; p < P; ++p) total[k][p] = _mm512_fmadd_ps(_mm512_mul_ps(acc[k][p], unscale), sv, total[k][p]);
      if (i < len)
        for (int t = 0; t < T; ++t) tails[k][t] += rows.tail_sum(tail, x + t * ldx + c0 + i, len - i, s);
    }
  }
  for (int k = 0; k < R; ++k)
    for (int p = 0; p < P; ++p) {
      alignas(64) float v[16];
      _mm512_store_ps(v, total[k][p]);
      y[2 * p * ldy + r + k] = hsum(_mm256_load_ps(v)) + tails[k][2 * p];
      y[(2 * p + 1) * ldy + r + k] = hsum(_mm256_load_ps(v + 8)) + tails[k][2 * p + 1];
    }
}

// dot_tile_avx2 with R rows (1 or 2) and n - t < 4 tokens left over.
template <DType D, int R>
HEARTH_AVX2 void dot_tile_avx2_tokens(const WeightMatrix& w, const float* x, int64_t ldx, float* y, int64_t ldy,
                                      int64_t r, int64_t tokens) {
  switch (tokens) {
    case 3: return dot_tile_avx2<D, R, 3>(w, x, ldx, y, ldy, r);
    case 2: return dot_tile_avx2<D, R, 2>(w, x, ldx, y, ldy, r);
    case 1: return dot_tile_avx2<D, R, 1>(w, x, ldx, y, ldy, r);
    default: return;
  }
}

// Rows [r0, r1) times n activation rows through dot_tile_avx2: one token four rows at a
// time; more tokens two rows by four tokens at a time.
template <DType D>
HEARTH_AVX2 void matmul_rows_float_avx2(const WeightMatrix& w, const float* x, int64_t ldx, int64_t n, float* y,
                                        int64_t ldy, int64_t r0, int64_t r1, bool avx512) {
  if (n == 1) {
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) dot_tile_avx2<D, 4, 1>(w, x, ldx, y, ldy, r);
    for (; r < r1; ++r) dot_tile_avx2<D, 1, 1>(w, x, ldx, y, ldy, r);
    return;
  }
  // Blocks of rows small enough to stay in L2 while every group of four tokens passes over
  // them: the weights are then read from memory once, and the four tokens' activations come
  // from L1 or L2 (a row of 7168 floats is 28 KB), where a token-group-outer order would
  // stream all n activation rows from L3 once per weight row.
  const int64_t row_bytes = w.cols * int64_t(dtype_size(D));
  const int64_t block = std::max<int64_t>(2, (int64_t(256) << 10) / std::max<int64_t>(1, row_bytes));
  for (int64_t b0 = r0; b0 < r1; b0 += block) {
    const int64_t b1 = std::min(r1, b0 + block);
    int64_t t = 0;
    for (; t + 4 <= n; t += 4) {
      int64_t r = b0;
      if (avx512)
        for (; r + 4 <= b1; r += 4) dot_tile4_512<D, 4>(w, x + t * ldx, ldx, y + t * ldy, ldy, r);
      for (; r + 2 <= b1; r += 2) dot_tile_avx2<D, 2, 4>(w, x + t * ldx, ldx, y + t * ldy, ldy, r);
      if (r < b1) dot_tile_avx2<D, 1, 4>(w, x + t * ldx, ldx, y + t * ldy, ldy, r);
    }
    if (t == n) continue;
    int64_t r = b0;
    for (; r + 2 <= b1; r += 2) dot_tile_avx2_tokens<D, 2>(w, x + t * ldx, ldx, y + t * ldy, ldy, r, n - t);
    if (r < b1) dot_tile_avx2_tokens<D, 1>(w, x + t * ldx, ldx, y + t * ldy, ldy, r, n - t);
  }
}

// avx512: the CPU has AVX-512 F/DQ/VL/BW (four-token tiles on 512 bits, the same bits).
HEARTH_AVX2 void matmul_rows_avx2(const WeightMatrix& w, const float* x, int64_t ldx, int64_t n,
                                  float* y, int64_t ldy, int64_t r0, int64_t r1, bool avx512) {
  switch (w.dtype) {
    case DType::F32: return matmul_rows_float_avx2<DType::F32>(w, x, ldx, n, y, ldy, r0, r1, avx512);
    case DType::BF16: return matmul_rows_float_avx2<DType::BF16>(w, x, ldx, n, y, ldy, r0, r1, avx512);
    case DType::F16: return matmul_rows_float_avx2<DType::F16>(w, x, ldx, n, y, ldy, r0, r1, avx512);
    case DType::F8_E4M3: return matmul_rows_float_avx2<DType::F8_E4M3>(w, x, ldx, n, y, ldy, r0, r1, avx512);
    default: break;  // block formats have their own kernels (matmul_rows_blocks)
  }
}

// Rows [r0, r1) of w decoded to float, row i at out + i * ld: exactly what dequantize_row
// gives (the decode is exact and the block scale is applied with one multiply), 8 values
// per instruction, so a many-token product pays little for turning weights into floats.
HEARTH_AVX2 void decode_rows_avx2(const WeightMatrix& w, int64_t r0, int64_t r1, float* out, int64_t ld) {
  const int64_t elem = int64_t(dtype_size(w.dtype));
  const __m256 unscale = _mm256_set1_ps(simd_unscale(w));
  for (int64_t r = r0; r < r1; ++r, out += ld) {
    const char* row = static_cast<const char*>(w.data) + r * w.cols * elem;
    for (int64_t c0 = 0, len = 0; c0 < w.cols; c0 += len) {
      len = chunk_len(w, c0, w.cols);
      const float s = block_scale(w, r, c0);
      const __m256 sv = _mm256_set1_ps(s);
      int64_t i = 0;
      for (; i + 8 <= len; i += 8) {
        __m256 v = _mm256_mul_ps(load8(w.dtype, row, c0 + i), unscale);  // exact: a power of two
        if (s != 1.0f) v = _mm256_mul_ps(v, sv);
        _mm256_storeu_ps(out + c0 + i, v);
      }
      if (i < len) {
        decode_scalar(w, r, c0 + i, len - i, out + c0 + i);
        if (s != 1.0f)
          for (int64_t j = i; j < len; ++j) out[c0 + j] *= s;
      }
    }
  }
}

// matmul_rows for float weights and many tokens: oneDNN's sgemm on panels of 64 weight rows
// decoded to float (F32 rows are used in place). Narrower panels starve sgemm's blocking
// (at 7168 columns, 9-row panels ran at half the rate of 64-row ones); wider ones only
// grow the scratch (64 x 7168 floats is 1.8 MB).
void matmul_rows_onednn(const WeightMatrix& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy,
                        int64_t r0, int64_t r1) {
  if (w.dtype == DType::F32) {
    onednn_gemm_xwt(n, r1 - r0, w.cols, x, ldx, static_cast<const float*>(w.data) + r0 * w.cols, w.cols, y + r0,
                    ldy);
    return;
  }
  constexpr int64_t panel = 64;
  static thread_local std::vector<float> buf;
  if (buf.size() < size_t(panel * w.cols)) buf.resize(size_t(panel * w.cols));
  for (int64_t p0 = r0; p0 < r1; p0 += panel) {
    const int64_t p1 = std::min(r1, p0 + panel);
    decode_rows_avx2(w, p0, p1, buf.data(), w.cols);
    onednn_gemm_xwt(n, p1 - p0, w.cols, x, ldx, buf.data(), w.cols, y + p0, ldy);
  }
}

// BF16 weights under CpuGemm::kBf16 at the AVX512_BF16 level: the activations rounded to
// bf16 once per call, then vdpbf16ps (quant/bf16_dot.h), as llama.cpp dots BF16 tensors.
void matmul_rows_bf16(const WeightMatrix& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy,
                      int64_t r0, int64_t r1) {
  const int64_t ld = bf16dot::padded(w.cols);
  static thread_local std::vector<uint16_t> xb;
  if (xb.size() < size_t(n * ld)) xb.resize(size_t(n * ld));
  for (int64_t t = 0; t < n; ++t) bf16dot::round_activations(x + t * ldx, w.cols, xb.data() + t * ld);
  bf16dot::matmul_rows_avx512bf16(static_cast<const uint16_t*>(w.data), w.cols, xb.data(), n, y, ldy, r0, r1);
}

HEARTH_AVX2 void matmul_t_avx2(const WeightMatrix& w, int64_t row0, int64_t nrows, const float* x,
                               float* y, int64_t c0, int64_t c1) {
  const int64_t elem = int64_t(dtype_size(w.dtype));
  for (int64_t i = 0; i < nrows; ++i) {
    const int64_t r = row0 + i;
    const char* row = static_cast<const char*>(w.data) + r * w.cols * elem;
    for (int64_t c = c0; c < c1;) {
      const int64_t len = chunk_len(w, c, c1);
      const float xs = x[i] * block_scale(w, r, c);
      const float xs_simd = xs * simd_unscale(w);
      const __m256 xv = _mm256_set1_ps(xs_simd);
      int64_t j = 0;
      // xs * 256 overflows only for |xs| > FLT_MAX / 256; such a chunk goes the scalar way.
      if (!std::isinf(xs_simd) || std::isinf(xs))
        for (; j + 8 <= len; j += 8)
          _mm256_storeu_ps(y + c + j, _mm256_fmadd_ps(xv, load8(w.dtype, row, c + j), _mm256_loadu_ps(y + c + j)));
      for (; j < len; j += 8) {
        float tail[8];
        const int64_t m = std::min<int64_t>(8, len - j);
        decode_scalar(w, r, c + j, m, tail);
        for (int64_t k = 0; k < m; ++k) y[c + j + k] += xs * tail[k];
      }
      c += len;
    }
  }
}

// ---- ggml block formats ---------------------------------------------------------
// Weights are dotted in their own format against activations quantized (once per call)
// to the format's vec_dot_type, with the format's integer dot product; decoding for the
// transposed product and dequantize_row goes block by block through the format's exact
// dequantize_row.

const char* block_row(const WeightMatrix& w, const BlockFormat& f, int64_t r) {
  return static_cast<const char*>(w.data) + r * f.row_bytes(w.cols);
}

// The ggml format whose blocks make up w's rows: its own, or Q4_K / Q6_K for Q4_K_R8 /
// Q6_K_R16.
const BlockFormat& plain_format(DType t) {
  if (t == DType::Q4_K_R8) return block_format(GgmlType::Q4_K);
  if (t == DType::Q6_K_R16) return block_format(GgmlType::Q6_K);
  return *block_format_of(t);
}

// One block of an interleaved matrix's row, taken back out of its group.
union GatheredBlock {
  BlockQ4_K q4;
  BlockQ6_K q6;
};

// Block b of row r in its plain format's bytes: in place, or, for an interleaved matrix,
// gathered from the row's group into tmp.
const char* row_block(const WeightMatrix& w, const BlockFormat& f, int64_t r, int64_t b, GatheredBlock& tmp) {
  const int64_t nb = w.cols / kQK_K;
  switch (w.dtype) {
    case DType::Q4_K_R8: {
      const auto* group = static_cast<const BlockQ4_Kx8*>(w.data) + (r / kInterleavedRows) * nb;
      deinterleave_q4_k_x8(group + b, 1, int(r % kInterleavedRows), &tmp.q4);
      return reinterpret_cast<const char*>(&tmp.q4);
    }
    case DType::Q6_K_R16: {
      const auto* unit = static_cast<const BlockQ6_Kx16*>(w.data) + (r / kQ6UnitRows) * nb;
      deinterleave_q6_k_x16(unit + b, 1, int(r % kQ6UnitRows), &tmp.q6);
      return reinterpret_cast<const char*>(&tmp.q6);
    }
    default: return block_row(w, f, r) + b * f.block_bytes;
  }
}

// Per-thread scratch that only grows (a call never needs more than one at a time).
template <class T>
T* scratch(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// Tokens per block of a many-token product: about 128 KB of quantized activations, which
// stay in L2 while every weight row (or group of rows) passes over them, instead of the
// whole batch coming from L3 again for each row. A multiple of 4, the tiles' width.
int64_t token_block(int64_t act_row) {
  return std::max<int64_t>(4, ((int64_t(128) << 10) / std::max<int64_t>(1, act_row)) / 4 * 4);
}

// Calls fn(q, pick, n, y) once per token_block of the n activation rows (row t at
// q + act_row * (pick ? pick[t] : t), its outputs at y + t * ldy), each call's pointers
// moved to its block's first token.
template <class Fn>
void for_token_blocks(const char* q, int64_t act_row, const int32_t* pick, int64_t n, float* y, int64_t ldy, Fn&& fn) {
  const int64_t block = token_block(act_row);
  for (int64_t t0 = 0; t0 < n; t0 += block)
    fn(pick ? q : q + t0 * act_row, pick ? pick + t0 : nullptr, std::min(block, n - t0), y + t0 * ldy);
}

// Rows of at most this many values go kDotRows per call through a rows kernel: for
// them the call and the token's loads cost about what the row does. Longer rows stay one
// per call, a single stream each, as decode's weights from DRAM read best.
constexpr int64_t kShortRowValues = 512;

// y[r] = row r . a for r in [r0, r1), the first row at `row`: short rows kDotRows per
// call where f has a rows kernel (the same bits as the one-row kernel), else a row per call.
void dot_rows_one_token(const BlockFormat& f, KernelIsa isa, const char* row, int64_t stride, const char* a,
                        int64_t cols, float* y, int64_t r0, int64_t r1) {
  if (const VecDotRowsFn rows = cols <= kShortRowValues ? vec_dot_rows_kernel(f, isa) : nullptr)
    for (; r0 + kDotRows <= r1; r0 += kDotRows, row += kDotRows * stride) rows(row, stride, a, cols, y + r0);
  const VecDotFn dot = vec_dot_kernel(f, isa);
  for (; r0 < r1; ++r0, row += stride) y[r0] = dot(row, a, cols);
}

// dot_rows_tiled for one block of n tokens: y[t * ldy + r] = row r . activation row
// (pick ? pick[t] : t), for r in [r0, r1): each weight row is read once for all n rows,
// four at a time through the format's tile kernel where it has one (bit-identical to the
// one-row kernel), a last two or three through the tile for that many, a last one alone.
// Where the format has a two-row tile, weight rows go in pairs through it. Every kernel
// is the one of f for isa.
void dot_rows_tiled_block(const WeightMatrix& w, const BlockFormat& f, KernelIsa isa, const char* q, int64_t act_row,
                          const int32_t* pick, int64_t n, float* y, int64_t ldy, int64_t r0, int64_t r1) {
  const int64_t stride = f.row_bytes(w.cols);
  const char* row = block_row(w, f, r0);
  auto act = [&](int64_t t) { return q + (pick ? pick[t] : t) * act_row; };
  if (n == 1) return dot_rows_one_token(f, isa, row, stride, act(0), w.cols, y, r0, r1);
  const VecDotFn dot = vec_dot_kernel(f, isa);
  const VecDot4Fn dot4 = vec_dot_tile_kernel(f, 4, isa);
  // Tokens [t, n) of weight row r, after its whole four-token tiles (all of them where
  // the format has no tile).
  const int64_t rest = dot4 ? n % 4 : n;
  const VecDot4Fn dot_rest = dot4 ? vec_dot_tile_kernel(f, int(rest), isa) : nullptr;
  auto finish_row = [&](const char* wr, int64_t r, int64_t t) {
    if (dot_rest) {
      const void* a[3] = {act(t), act(t + 1), rest > 2 ? act(t + 2) : nullptr};
      float out[3];
      dot_rest(wr, a, w.cols, out);
      for (int64_t k = 0; k < rest; ++k) y[(t + k) * ldy + r] = out[k];
      return;
    }
    for (; t < n; ++t) y[t * ldy + r] = dot(wr, act(t), w.cols);
  };
  const VecDot2x4Fn dot2x4 = n >= 4 ? vec_dot2x4_kernel(f, isa) : nullptr;
  if (dot2x4)
    for (; r0 + 2 <= r1; r0 += 2, row += 2 * stride) {
      int64_t t = 0;
      for (; t + 4 <= n; t += 4) {
        const void* a[4] = {act(t), act(t + 1), act(t + 2), act(t + 3)};
        float out[8];
        dot2x4(row, row + stride, a, w.cols, out);
        for (int k = 0; k < 4; ++k) {
          y[(t + k) * ldy + r0] = out[k];
          y[(t + k) * ldy + r0 + 1] = out[4 + k];
        }
      }
      finish_row(row, r0, t);
      finish_row(row + stride, r0 + 1, t);
    }
  for (int64_t r = r0; r < r1; ++r, row += stride) {
    int64_t t = 0;
    if (dot4)
      for (; t + 4 <= n; t += 4) {
        const void* a[4] = {act(t), act(t + 1), act(t + 2), act(t + 3)};
        float out[4];
        dot4(row, a, w.cols, out);
        for (int k = 0; k < 4; ++k) y[(t + k) * ldy + r] = out[k];
      }
    finish_row(row, r, t);
  }
}

// Rows [r0, r1) of a block-format weight times n activation rows quantized beforehand
// (row t at q + act_row * (pick ? pick[t] : t)), one token_block at a time. Which block
// a token falls in changes none of its bits (the tiles give the one-row kernel's).
void dot_rows_tiled(const WeightMatrix& w, const BlockFormat& f, KernelIsa isa, const char* q, int64_t act_row,
                    const int32_t* pick, int64_t n, float* y, int64_t ldy, int64_t r0, int64_t r1) {
  for_token_blocks(q, act_row, pick, n, y, ldy, [&](const char* qb, const int32_t* pb, int64_t nb, float* yb) {
    dot_rows_tiled_block(w, f, isa, qb, act_row, pb, nb, yb, ldy, r0, r1);
  });
}

// The calls of an interleaved kernel over one unit of rows (unit_row0 .. + width - 1) and
// the n_b tokens of a block, `step` tokens per call: kernel(a, tokens, out) writes
// out[k * width + i] for token k and the unit's row i; rows [first, last) of those are
// kept in yb.
template <class Kernel>
void unit_calls(const char* qb, const int32_t* pb, int64_t act_row, int64_t n_b, int64_t step, int64_t unit_row0,
                int64_t width, int64_t first, int64_t last, float* yb, int64_t ldy, Kernel&& kernel) {
  for (int64_t t = 0; t < n_b; t += step) {
    const int tokens = int(std::min<int64_t>(step, n_b - t));
    const void* a[kMaxX16Tokens];
    for (int k = 0; k < tokens; ++k) a[k] = qb + (pb ? pb[t + k] : t + k) * act_row;
    float out[kMaxX16Tokens * 2 * kInterleavedRows];
    kernel(a, tokens, out);
    for (int k = 0; k < tokens; ++k)
      for (int64_t r = first; r < last; ++r) yb[(t + k) * ldy + r] = out[k * width + (r - unit_row0)];
  }
}

// dot_rows_tiled for Q4_K_R8: each group of eight rows that meets [r0, r1) against up to
// four tokens per kernel call (the weights are unpacked once for all of them); rows of a
// group outside the range are computed and dropped. Where the CPU has AVX-512, two groups
// go through one call of the sixteen-row kernel, with up to six tokens. A token's results
// are the same bits whichever tokens and groups share its call.
void dot_rows_interleaved(const WeightMatrix& w, KernelIsa isa, const char* q, int64_t act_row, const int32_t* pick,
                          int64_t n, float* y, int64_t ldy, int64_t r0, int64_t r1) {
  constexpr int64_t kRows = kInterleavedRows;
  const VecDotX8Fn dot = vec_dot_q4_k_x8_kernel(isa);
  // One token (decode) stays on the eight-row kernel (at the VNNI level its VNNI twin,
  // +10 % tg32 on a Zen 5 EPYC): there the weights stream from DRAM, and the sixteen-row
  // kernel, 1.4-1.9x faster from cache, made tg32 12 % slower on the AVX-512 Xeon and
  // 15 % slower with VNNI on the Zen 5, whose one thread read 2048-column rows at
  // 0.6-0.8x the eight-row kernel's rate from DRAM (two groups are two streams;
  // docs/performance.md).
  const VecDotX16Fn dot16 = n >= 2 ? vec_dot_q4_k_x16_kernel(isa) : nullptr;
  const int64_t nb = w.cols / kQK_K;
  const auto* groups = static_cast<const BlockQ4_Kx8*>(w.data);
  const int64_t g_end = (r1 + kRows - 1) / kRows;
  // Token blocks as dot_rows_tiled; a group's weights (8 rows) stay in L1 across a block.
  for_token_blocks(q, act_row, pick, n, y, ldy, [&](const char* qb, const int32_t* pb, int64_t n_b, float* yb) {
    for (int64_t g = r0 / kRows; g < g_end;) {
      const int64_t span = dot16 && g + 1 < g_end ? 2 : 1;  // groups in this call
      const int64_t first = std::max(r0, g * kRows), last = std::min(r1, (g + span) * kRows);
      const int64_t step = span == 2 ? kMaxX16Tokens : 4;  // tokens per call
      unit_calls(qb, pb, act_row, n_b, step, g * kRows, span * kRows, first, last, yb, ldy,
                 [&](const void* const* a, int tokens, float* out) {
                   if (span == 2)
                     dot16(groups + g * nb, groups + (g + 1) * nb, a, tokens, w.cols, out);
                   else
                     dot(groups + g * nb, a, tokens, w.cols, out);
                 });
      g += span;
    }
  });
}

// dot_rows_tiled for Q6_K_R16: each unit of sixteen rows that meets [r0, r1) against up
// to six tokens per kernel call (three on AVX2), one token (decode) as many. A unit is
// one stream of bytes, so decode's one-token calls read DRAM as fast as plain Q6_K's
// rows. Rows of a unit outside the range are computed and dropped; a token's results are
// the same bits whichever tokens share its call.
void dot_rows_q6_units(const WeightMatrix& w, KernelIsa isa, const char* q, int64_t act_row, const int32_t* pick,
                       int64_t n, float* y, int64_t ldy, int64_t r0, int64_t r1) {
  constexpr int64_t kRows = kQ6UnitRows;
  const VecDotQ6Fn dot = vec_dot_q6_k_x16_kernel(isa);
  const int64_t step = q6_k_x16_tokens_per_call(isa);
  const int64_t unit_blocks = w.cols / kQK_K;
  const auto* units = static_cast<const BlockQ6_Kx16*>(w.data);
  const int64_t u_end = (r1 + kRows - 1) / kRows;
  for_token_blocks(q, act_row, pick, n, y, ldy, [&](const char* qb, const int32_t* pb, int64_t n_b, float* yb) {
    for (int64_t u = r0 / kRows; u < u_end; ++u) {
      const int64_t first = std::max(r0, u * kRows), last = std::min(r1, (u + 1) * kRows);
      unit_calls(qb, pb, act_row, n_b, step, u * kRows, kRows, first, last, yb, ldy,
                 [&](const void* const* a, int tokens, float* out) {
                   dot(units + u * unit_blocks, a, tokens, w.cols, out);
                 });
    }
  });
}

// The activation format w's dot products take.
const BlockFormat& activation_format(DType weight) { return block_format(plain_format(weight).vec_dot_type); }

void matmul_rows_blocks(const WeightMatrix& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy,
                        int64_t r0, int64_t r1, KernelIsa isa) {
  if (r0 >= r1 || n <= 0) return;
  const BlockFormat& f = plain_format(w.dtype);
  const BlockFormat& act = activation_format(w.dtype);
  const int64_t act_row = act.row_bytes(w.cols);
  static thread_local std::vector<uint64_t> buf;  // 8-byte aligned for the float d of Q8_K
  auto* q = reinterpret_cast<char*>(scratch(buf, size_t((n * act_row + 7) / 8)));
  for (int64_t t = 0; t < n; ++t) act.quantize_row(x + t * ldx, q + t * act_row, w.cols, nullptr);
  if (w.dtype == DType::Q4_K_R8) return dot_rows_interleaved(w, isa, q, act_row, nullptr, n, y, ldy, r0, r1);
  if (w.dtype == DType::Q6_K_R16) return dot_rows_q6_units(w, isa, q, act_row, nullptr, n, y, ldy, r0, r1);
  dot_rows_tiled(w, f, isa, q, act_row, nullptr, n, y, ldy, r0, r1);
}

// The same dot products on rows quantized beforehand (ActivationRows), picked by index.
void matmul_rows_prequantized(const WeightMatrix& w, const char* q, int64_t act_row, const int32_t* pick,
                              int64_t n, float* y, int64_t ldy, int64_t r0, int64_t r1, KernelIsa isa) {
  if (r0 >= r1 || n <= 0) return;
  if (w.dtype == DType::Q4_K_R8) return dot_rows_interleaved(w, isa, q, act_row, pick, n, y, ldy, r0, r1);
  if (w.dtype == DType::Q6_K_R16) return dot_rows_q6_units(w, isa, q, act_row, pick, n, y, ldy, r0, r1);
  dot_rows_tiled(w, *block_format_of(w.dtype), isa, q, act_row, pick, n, y, ldy, r0, r1);
}

// Calls fn(c, values, len) for consecutive pieces covering [c0, c1) of row r, decoding
// each whole block that overlaps the range and passing only the part inside it.
template <class Fn>
void for_each_block_piece(const WeightMatrix& w, int64_t r, int64_t c0, int64_t c1, Fn&& fn) {
  const BlockFormat& f = plain_format(w.dtype);
  const int64_t be = f.block_elems;
  alignas(32) float tmp[kQK_K];
  GatheredBlock gathered;
  for (int64_t b = c0 / be; b * be < c1; ++b) {
    f.dequantize_row(row_block(w, f, r, b, gathered), tmp, be);
    const int64_t lo = std::max(c0, b * be), hi = std::min(c1, (b + 1) * be);
    fn(lo, tmp + (lo - b * be), hi - lo);
  }
}

// Q8_0, Q4_K and Q6_K blocks decoded with AVX2 to exactly the values their scalar
// dequantizers give: int8 -> float is exact and d * q (Q8_0), step * q - offset (Q4_K),
// step * (q - 32) (Q6_K)
// are single roundings done the same way (no FMA here, so no contraction either).
#define HEARTH_AVX2_NOFMA __attribute__((target("avx2")))

HEARTH_AVX2_NOFMA void decode_q8_0_avx2(const BlockQ8_0& b, float* out) {
  const __m256 d = _mm256_set1_ps(f16_to_f32(b.d));
  for (int i = 0; i < kQK8_0; i += 8) {
    const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b.qs + i));
    _mm256_store_ps(out + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d));
  }
}

HEARTH_AVX2_NOFMA void decode_q4_k_avx2(const BlockQ4_K& b, float* out) {
  const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
  uint8_t sc[8], m[8];
  for (int j = 0; j < 4; ++j) {  // the 6-bit scales and mins, as kquants.cc unpacks them
    sc[j] = b.scales[j] & 63;
    m[j] = b.scales[j + 4] & 63;
    sc[j + 4] = uint8_t((b.scales[j + 8] & 15) | ((b.scales[j] >> 6) << 4));
    m[j + 4] = uint8_t((b.scales[j + 8] >> 4) | ((b.scales[j + 4] >> 6) << 4));
  }
  // Sub-block j (values 32j .. 32j + 31) is the low (even j) or high (odd j) nibbles of
  // qs[32 (j / 2) .. + 31].
  for (int j = 0; j < 8; ++j) {
    const __m256 step = _mm256_set1_ps(d * float(sc[j])), offset = _mm256_set1_ps(dmin * float(m[j]));
    const uint8_t* qs = b.qs + 32 * (j / 2);
    const int shift = 4 * (j % 2);
    for (int i = 0; i < 32; i += 8) {
      __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs + i));
      q = _mm_and_si128(_mm_srli_epi16(q, shift), _mm_set1_epi8(15));
      const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q));
      _mm256_store_ps(out + 32 * j + i, _mm256_sub_ps(_mm256_mul_ps(step, v), offset));
    }
  }
}

// Q6_K: levels (6 bits: a nibble of ql and two bits of qh, minus 32) in the order the
// scalar dequantizer writes them, each 16-value sub-block times d * scale, one multiply.
HEARTH_AVX2_NOFMA void decode_q6_k_avx2(const BlockQ6_K& b, float* out) {
  const float d = f16_to_f32(b.d);
  alignas(32) uint8_t lv[4][32];
  for (int c = 0; c < 2; ++c) {  // values 128c .. 128c + 127
    __m256i q[4];
    avx2::q6_levels(b.ql, b.qh, c, q);
    for (int g = 0; g < 4; ++g) _mm256_store_si256(reinterpret_cast<__m256i*>(lv[g]), q[g]);
    for (int g = 0; g < 4; ++g)
      for (int s8 = 0; s8 < 32; s8 += 8) {
        const int i = 128 * c + 32 * g + s8;
        const __m256 step = _mm256_set1_ps(d * float(b.scales[i / 16]));
        const __m128i q8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(lv[g] + s8));
        const __m256i v = _mm256_sub_epi32(_mm256_cvtepu8_epi32(q8), _mm256_set1_epi32(32));
        _mm256_store_ps(out + i, _mm256_mul_ps(step, _mm256_cvtepi32_ps(v)));
      }
  }
}

// Decodes block b of row r (be values) into out (32-byte aligned).
inline void decode_block(const WeightMatrix& w, const BlockFormat& f, const char* blk, float* out, bool avx2) {
  if (avx2 && w.dtype == DType::Q8_0) return decode_q8_0_avx2(*reinterpret_cast<const BlockQ8_0*>(blk), out);
  if (avx2 && (w.dtype == DType::Q4_K || w.dtype == DType::Q4_K_R8)) return decode_q4_k_avx2(*reinterpret_cast<const BlockQ4_K*>(blk), out);
  if (avx2 && (w.dtype == DType::Q6_K || w.dtype == DType::Q6_K_R16))
    return decode_q6_k_avx2(*reinterpret_cast<const BlockQ6_K*>(blk), out);
  f.dequantize_row(blk, out, f.block_elems);
}

// y[j] += x[k] * v[k][j] for k = 0..m-1 in that order, j < len: each element gets the
// same multiply-then-add steps as the scalar loop (no FMA), so the result is bit-identical
// to it; the m weight rows share one load and store of y.
HEARTH_AVX2_NOFMA void add_scaled_rows_avx2(float* y, const float* x, const float* const* v, int m, int64_t len) {
  int64_t j = 0;
  for (; j + 8 <= len; j += 8) {
    __m256 acc = _mm256_loadu_ps(y + j);
    for (int k = 0; k < m; ++k) acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(x[k]), _mm256_loadu_ps(v[k] + j)));
    _mm256_storeu_ps(y + j, acc);
  }
  for (; j < len; ++j)
    for (int k = 0; k < m; ++k) y[j] += x[k] * v[k][j];
}

void add_scaled_rows_scalar(float* y, const float* x, const float* const* v, int m, int64_t len) {
  for (int k = 0; k < m; ++k)
    for (int64_t j = 0; j < len; ++j) y[j] += x[k] * v[k][j];
}

// The one-row Q8_0 case of the above without the staging buffer (absorbed MLA decode):
// whole blocks b of m rows, each value decoded as decode_q8_0_avx2 does (int8 to float,
// times d) and added to y in row order, so the result is the same to the bit.
#define HEARTH_AVX2_F16C_NOFMA __attribute__((target("avx2,f16c")))

template <int M>
HEARTH_AVX2_F16C_NOFMA inline void add_scaled_q8_0_blocks(float* y, const float* x, const BlockQ8_0* const* rows, int64_t b) {
  __m256 d[M], xv[M];
  for (int k = 0; k < M; ++k) {
    d[k] = _mm256_set1_ps(_cvtsh_ss(rows[k][b].d));
    xv[k] = _mm256_set1_ps(x[k]);
  }
#pragma GCC unroll 4
  for (int j = 0; j < kQK8_0; j += 8) {
    __m256 acc = _mm256_loadu_ps(y + j);
    for (int k = 0; k < M; ++k) {
      const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(rows[k][b].qs + j));
      const __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d[k]);
      acc = _mm256_add_ps(acc, _mm256_mul_ps(xv[k], v));
    }
    _mm256_storeu_ps(y + j, acc);
  }
}

HEARTH_AVX2_F16C_NOFMA void add_scaled_q8_0_blocks_avx2(float* y, const float* x, const BlockQ8_0* const* rows, int m,
                                                   int64_t b0, int64_t b1) {
  for (int64_t b = b0; b < b1; ++b) switch (m) {
      case 4: add_scaled_q8_0_blocks<4>(y + b * kQK8_0, x, rows, b); break;
      case 3: add_scaled_q8_0_blocks<3>(y + b * kQK8_0, x, rows, b); break;
      case 2: add_scaled_q8_0_blocks<2>(y + b * kQK8_0, x, rows, b); break;
      default: add_scaled_q8_0_blocks<1>(y + b * kQK8_0, x, rows, b); break;
    }
}

void matmul_t_blocks_rows(const WeightMatrix& w, int64_t row0, int64_t nrows, const float* x, int64_t ldx,
                          int64_t n, float* y, int64_t ldy, int64_t c0, int64_t c1, KernelIsa isa) {
  const BlockFormat& f = plain_format(w.dtype);
  const int64_t be = f.block_elems, stride = f.row_bytes(w.cols);
  const bool avx2 = has_avx2(resolve_isa(isa));
  // Whole blocks go straight from the weights into y: Q4_K and Q8_0 on AVX-512 for any
  // number of activation rows (quant/transposed_avx512.cc), Q8_0 on AVX2 for one.
  const bool fused512 = has_avx512(resolve_isa(isa)) && (w.dtype == DType::Q4_K || w.dtype == DType::Q8_0);
  const bool fused_q8_0 = !fused512 && avx2 && n == 1 && w.dtype == DType::Q8_0;
  // Up to four weight rows at a time: their blocks are decoded once and each y element
  // takes their products in row order, exactly as row after row would.
  constexpr int kGroup = 4;
  alignas(32) float tmp[kGroup][kQK_K];
  for (int64_t i = 0; i < nrows; i += kGroup) {
    const int m = int(std::min<int64_t>(kGroup, nrows - i));
    const char* rows[kGroup];
    for (int k = 0; k < m; ++k) rows[k] = block_row(w, f, row0 + i) + k * stride;
    auto decode_and_add = [&](int64_t b) {
      const int64_t lo = std::max(c0, b * be), hi = std::min(c1, (b + 1) * be);
      for (int k = 0; k < m; ++k) {
        GatheredBlock gathered;
        decode_block(w, f, row_block(w, f, row0 + i + k, b, gathered), tmp[k], avx2);
      }
      const float* v[kGroup];
      for (int k = 0; k < m; ++k) v[k] = tmp[k] + (lo - b * be);
      for (int64_t t = 0; t < n; ++t) {
        float xs[kGroup];
        for (int k = 0; k < m; ++k) xs[k] = x[t * ldx + i + k];
        float* yt = y + t * ldy + lo;
        if (avx2) add_scaled_rows_avx2(yt, xs, v, m, hi - lo);
        else add_scaled_rows_scalar(yt, xs, v, m, hi - lo);
      }
    };
    int64_t b = c0 / be;
    if (fused_q8_0 || fused512) {  // the whole blocks inside [c0, c1) in one call; partial ones below
      const int64_t first = (c0 + be - 1) / be, last = c1 / be;
      // The rows two groups ahead (contiguous after these; past the end is harmless, a
      // prefetch never faults). With the hardware prefetcher alone this loop waited on
      // DRAM: one token's kv_b key bands of the bench preset (12 layers, 13.4 MB) took
      // 1.9-2.0 ms on two threads, 1.1-1.3 ms with this; from L3 they take about 1.0.
      const char* ahead = rows[0] + 2 * kGroup * stride + first * f.block_bytes;
      for (int64_t off = 0; off < kGroup * stride; off += 64) _mm_prefetch(ahead + off, _MM_HINT_T0);
      if (first < last) {
        for (; b < first; ++b) decode_and_add(b);
        if (fused512 && w.dtype == DType::Q4_K)
          transposed_avx512::add_scaled_q4_k_blocks(y, ldy, x + i, ldx, n, reinterpret_cast<const BlockQ4_K* const*>(rows),
                                                    m, first, last);
        else if (fused512)
          transposed_avx512::add_scaled_q8_0_blocks(y, ldy, x + i, ldx, n, reinterpret_cast<const BlockQ8_0* const*>(rows),
                                                    m, first, last);
        else
          add_scaled_q8_0_blocks_avx2(y, x + i, reinterpret_cast<const BlockQ8_0* const*>(rows), m, first, last);
        b = last;
      }
    }
    for (; b * be < c1; ++b) decode_and_add(b);
  }
}

}  // namespace

int64_t WeightMatrix::bytes() const { return rows * row_bytes(dtype, cols); }

KernelIsa cpu_isa() {
  // __builtin_cpu_supports also checks that the OS saves the AVX / AVX-512 registers.
  static const KernelIsa isa = [] {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") || !__builtin_cpu_supports("f16c"))
      return KernelIsa::kScalar;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
      if (!__builtin_cpu_supports("avx512vnni")) return KernelIsa::kAvx512;
      return __builtin_cpu_supports("avx512bf16") ? KernelIsa::kAvx512Bf16 : KernelIsa::kAvx512Vnni;
    }
    return KernelIsa::kAvx2;
  }();
  return isa;
}

namespace {
std::atomic<int> g_isa_cap{int(KernelIsa::kAuto)};
}  // namespace

KernelIsa best_isa() {
  const int cap = g_isa_cap.load(std::memory_order_relaxed);
  return KernelIsa(std::min(int(cpu_isa()), cap));
}

KernelIsa limit_isa(KernelIsa most) {
  g_isa_cap.store(int(most), std::memory_order_relaxed);
  return best_isa();
}

std::optional<KernelIsa> parse_isa(const std::string& name) {
  for (KernelIsa isa : {KernelIsa::kScalar, KernelIsa::kAvx2, KernelIsa::kAvx512, KernelIsa::kAvx512Vnni,
                        KernelIsa::kAvx512Bf16, KernelIsa::kAuto})
    if (name == isa_name(isa)) return isa;
  return std::nullopt;
}

KernelIsa resolve_isa(KernelIsa requested) {
  const KernelIsa best = best_isa();
  if (requested == KernelIsa::kAuto) return best;
  return int(requested) < int(best) ? requested : best;
}

const char* isa_name(KernelIsa isa) {
  switch (isa) {
    case KernelIsa::kScalar: return "scalar";
    case KernelIsa::kAvx2: return "avx2";
    case KernelIsa::kAvx512: return "avx512";
    case KernelIsa::kAvx512Vnni: return "avx512vnni";
    case KernelIsa::kAvx512Bf16: return "avx512bf16";
    case KernelIsa::kAuto: return "auto";
  }
  return "?";
}

void matmul_rows(const WeightMatrix& w, const float* x, int64_t ldx, int64_t n, float* y,
                 int64_t ldy, int64_t r0, int64_t r1, KernelIsa isa) {
  if (is_block_dtype(w.dtype)) return matmul_rows_blocks(w, x, ldx, n, y, ldy, r0, r1, isa);
  if (!has_avx2(resolve_isa(isa))) return matmul_rows_scalar(w, x, ldx, n, y, ldy, r0, r1);
  if (n >= kOnednnMinRows && cpu_gemm() == CpuGemm::kOnednn) return matmul_rows_onednn(w, x, ldx, n, y, ldy, r0, r1);
  if (w.dtype == DType::BF16 && cpu_gemm() == CpuGemm::kBf16 && has_bf16(resolve_isa(isa)))
    return matmul_rows_bf16(w, x, ldx, n, y, ldy, r0, r1);
  matmul_rows_avx2(w, x, ldx, n, y, ldy, r0, r1, has_avx512(resolve_isa(isa)));
}

namespace {
std::atomic<CpuGemm> g_cpu_gemm{CpuGemm::kKernels};
}  // namespace

CpuGemm set_cpu_gemm(CpuGemm g) { return g_cpu_gemm.exchange(g); }
CpuGemm cpu_gemm() { return g_cpu_gemm.load(std::memory_order_relaxed); }
const char* cpu_gemm_name(CpuGemm g) {
  return g == CpuGemm::kOnednn ? "onednn" : g == CpuGemm::kBf16 ? "bf16" : "kernels";
}
std::optional<CpuGemm> parse_cpu_gemm(const std::string& name) {
  if (name == "kernels") return CpuGemm::kKernels;
  if (name == "onednn") return CpuGemm::kOnednn;
  if (name == "bf16") return CpuGemm::kBf16;
  return std::nullopt;
}

void decode_rows(const WeightMatrix& w, int64_t r0, int64_t r1, float* out, int64_t ld, KernelIsa isa) {
  if (r0 < 0 || r1 > w.rows || r0 > r1) throw std::invalid_argument("decode_rows: rows out of range");
  if (!is_block_dtype(w.dtype) && has_avx2(resolve_isa(isa))) return decode_rows_avx2(w, r0, r1, out, ld);
  for (int64_t r = r0; r < r1; ++r) dequantize_row(w, r, 0, w.cols, out + (r - r0) * ld);
}

void matmul_t_accumulate_rows(const WeightMatrix& w, int64_t row0, int64_t nrows, const float* x, int64_t ldx,
                              int64_t n, float* y, int64_t ldy, int64_t c0, int64_t c1, KernelIsa isa) {
  if (is_block_dtype(w.dtype)) return matmul_t_blocks_rows(w, row0, nrows, x, ldx, n, y, ldy, c0, c1, isa);
  for (int64_t t = 0; t < n; ++t) matmul_t_accumulate(w, row0, nrows, x + t * ldx, y + t * ldy, c0, c1, isa);
}

WeightMatrix row_slice(const WeightMatrix& w, int64_t r0, int64_t r1) {
  if (r0 < 0 || r1 < r0 || r1 > w.rows) throw std::invalid_argument("row_slice: rows out of range");
  if (const int64_t unit = interleaved_unit_rows(w.dtype); r0 % unit != 0 || r1 % unit != 0)
    throw std::invalid_argument("row_slice: " + std::string(dtype_name(w.dtype)) +
                                " rows must start and end on a group of " + std::to_string(unit));
  WeightMatrix s = w;
  s.rows = r1 - r0;
  s.data = static_cast<const char*>(w.data) + r0 * row_bytes(w.dtype, w.cols);
  if (w.dtype == DType::F8_E4M3 && w.scale) {
    if (r0 % w.block != 0) throw std::invalid_argument("row_slice: FP8 rows must start on a scale block");
    s.scale = w.scale + (r0 / w.block) * w.scale_cols();
  }
  return s;
}

void matmul_t_accumulate(const WeightMatrix& w, int64_t row0, int64_t nrows, const float* x,
                         float* y, int64_t c0, int64_t c1, KernelIsa isa) {
  if (is_block_dtype(w.dtype)) return matmul_t_blocks_rows(w, row0, nrows, x, 0, 1, y, 0, c0, c1, isa);
  if (has_avx2(resolve_isa(isa))) matmul_t_avx2(w, row0, nrows, x, y, c0, c1);
  else matmul_t_scalar(w, row0, nrows, x, y, c0, c1);
}

void ActivationRows::prepare(DType weight, const float* x, int64_t ldx, int64_t n, int64_t cols) {
  n_ = n;
  cols_ = cols;
  x_ = x;
  ldx_ = ldx;
  if (!is_block_dtype(weight)) {
    act_ = -1;
    row_bytes_ = 0;
    return;
  }
  const BlockFormat& act = activation_format(weight);
  act_ = int(act.type);
  row_bytes_ = act.row_bytes(cols);
  auto* q = reinterpret_cast<char*>(scratch(q_, size_t((n * row_bytes_ + 7) / 8)));
  for (int64_t t = 0; t < n; ++t) act.quantize_row(x + t * ldx, q + t * row_bytes_, cols, nullptr);
}

bool ActivationRows::fits(const WeightMatrix& w) const {
  if (w.cols != cols_) return false;
  if (!is_block_dtype(w.dtype)) return act_ < 0;
  return act_ == int(activation_format(w.dtype).type);
}

void matmul_rows(const WeightMatrix& w, const ActivationRows& a, const int32_t* pick, int64_t n, float* y,
                 int64_t ldy, int64_t r0, int64_t r1, KernelIsa isa) {
  if (!a.fits(w))
    throw std::invalid_argument("matmul_rows: activations prepared for another format or width than the " +
                                std::string(dtype_name(w.dtype)) + " weight");
  if (a.act_ >= 0)
    return matmul_rows_prequantized(w, reinterpret_cast<const char*>(a.q_.data()), a.row_bytes_, pick, n, y, ldy,
                                    r0, r1, isa);
  if (!pick) return matmul_rows(w, a.x_, a.ldx_, n, y, ldy, r0, r1, isa);
  static thread_local std::vector<float> rows;  // float weights: gather the picked rows
  float* g = scratch(rows, size_t(n * a.cols_));
  for (int64_t t = 0; t < n; ++t) std::memcpy(g + t * a.cols_, a.x_ + pick[t] * a.ldx_, size_t(a.cols_) * sizeof(float));
  matmul_rows(w, g, a.cols_, n, y, ldy, r0, r1, isa);
}

void dequantize_row(const WeightMatrix& w, int64_t r, int64_t c0, int64_t c1, float* out) {
  if (is_block_dtype(w.dtype)) {
    for_each_block_piece(w, r, c0, c1, [&](int64_t c, const float* v, int64_t len) {
      std::memcpy(out + (c - c0), v, size_t(len) * sizeof(float));
    });
    return;
  }
  for (int64_t c = c0; c < c1;) {
    const int64_t len = chunk_len(w, c, c1);
    decode_scalar(w, r, c, len, out + (c - c0));
    const float s = block_scale(w, r, c);
    if (s != 1.0f)
      for (int64_t j = 0; j < len; ++j) out[c - c0 + j] *= s;
    c += len;
  }
}

}  // namespace hearth

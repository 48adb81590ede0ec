#include "quant/bf16_dot.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/numbers.h"

namespace hearth::bf16dot {

namespace {

// A float flushed to a zero of its sign where it is a denormal, as vdpbf16ps treats its
// inputs and its results.
inline float flush(float f) { return std::fpclassify(f) == FP_SUBNORMAL ? std::copysign(0.0f, f) : f; }

// The 16 lanes' sum, lane i added to lane i + half for half = 8, 4, 2, 1: the reference's
// order, and the kernel's (which stores its lanes and calls this).
inline float add_lanes(float (&lane)[16]) {
  for (int half = 8; half >= 1; half /= 2)
    for (int l = 0; l < half; ++l) lane[l] += lane[l + half];
  return lane[0];
}

}  // namespace

void round_activations(const float* x, int64_t n, uint16_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = f32_to_bf16(x[i]);
  std::fill(out + n, out + padded(n), uint16_t(0));
}

float dot_reference(const uint16_t* w, const uint16_t* x, int64_t n) {
  float lane[16] = {};
  for (int64_t c = 0; c < padded(n); c += 32)
    for (int l = 0; l < 16; ++l)
      for (int64_t i : {c + 2 * l + 1, c + 2 * l}) {  // the odd column first
        const float wi = i < n ? flush(bf16_to_f32(w[i])) : 0.0f;
        lane[l] = flush(std::fma(flush(bf16_to_f32(x[i])), wi, lane[l]));
      }
  return add_lanes(lane);
}

namespace {

#define HEARTH_BF16 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

// The lanes added as dot_reference adds them (through memory: once per row and token,
// and GCC 12's 512-to-256-bit intrinsics trip -Wuninitialized, GCC bug 105593).
HEARTH_BF16 inline float sum_lanes(__m512 v) {
  alignas(64) float lane[16];
  _mm512_store_ps(lane, v);
  return add_lanes(lane);
}

// R weight rows x T tokens: each chunk of 32 columns loads R + T vectors for R * T
// vdpbf16ps. The weights' last chunk is loaded under a mask (the activations are padded).
template <int R, int T>
HEARTH_BF16 void tile(const uint16_t* w, int64_t cols, const uint16_t* x, int64_t ldx, float* y, int64_t ldy) {
  __m512 acc[R][T];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  // Whole chunks with plain loads, then the last partial one under a mask.
  const int64_t whole = cols / 32 * 32;
  for (int64_t c = 0; c < cols; c += 32) {
    const __mmask32 m = c < whole ? ~__mmask32(0) : (__mmask32(1) << (cols - c)) - 1;
    __m512i wv[R], xv[T];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
      wv[r] = c < whole ? _mm512_loadu_si512(w + r * cols + c) : _mm512_maskz_loadu_epi16(m, w + r * cols + c);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) xv[t] = _mm512_loadu_si512(x + t * ldx + c);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], (__m512bh)xv[t], (__m512bh)wv[r]);
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) y[t * ldy + r] = sum_lanes(acc[r][t]);
}

template <int R>
HEARTH_BF16 void tile_tokens(const uint16_t* w, int64_t cols, const uint16_t* x, int64_t ldx, int64_t tokens, float* y,
                             int64_t ldy) {
  switch (tokens) {
    case 4: return tile<R, 4>(w, cols, x, ldx, y, ldy);
    case 3: return tile<R, 3>(w, cols, x, ldx, y, ldy);
    case 2: return tile<R, 2>(w, cols, x, ldx, y, ldy);
    default: return tile<R, 1>(w, cols, x, ldx, y, ldy);
  }
}

}  // namespace

HEARTH_BF16 void matmul_rows_avx512bf16(const uint16_t* w, int64_t cols, const uint16_t* x, int64_t tokens, float* y,
                                        int64_t ldy, int64_t r0, int64_t r1) {
  const int64_t ldx = padded(cols);
  // Rows x tokens tiles of 8 x 1 (decode) or 4 x 4: vdpbf16ps takes several cycles to
  // give its sum, so a tile needs at least eight independent accumulators to keep the
  // unit busy. Each block of rows takes every token while it is in L1/L2, so the weights
  // stream from memory once per call whatever the token count.
  const int64_t rb = tokens == 1 ? 8 : 4;
  for (int64_t b0 = r0; b0 < r1; b0 += rb) {
    const int64_t b1 = std::min(r1, b0 + rb);
    for (int64_t t = 0; t < tokens; t += 4) {
      const int64_t nt = std::min<int64_t>(4, tokens - t);
      const uint16_t* xt = x + t * ldx;
      float* yt = y + t * ldy;
      int64_t r = b0;
      if (b1 - r == 8 && nt == 1) tile<8, 1>(w + r * cols, cols, xt, ldx, yt + r, ldy), r += 8;
      if (b1 - r == 4 && nt > 1) tile_tokens<4>(w + r * cols, cols, xt, ldx, nt, yt + r, ldy), r += 4;
      for (; r + 2 <= b1; r += 2) tile_tokens<2>(w + r * cols, cols, xt, ldx, nt, yt + r, ldy);
      for (; r < b1; ++r) tile_tokens<1>(w + r * cols, cols, xt, ldx, nt, yt + r, ldy);
    }
  }
}

}  // namespace hearth::bf16dot

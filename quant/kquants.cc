// The K-quant weight formats Q2_K..Q6_K: bit packing, dequantization, quantization and
// the scalar dot products against Q8_K activations. Layouts: quant/block_formats.h.
//
// Dequantization performs ggml's float operations in ggml's order (sub-block factor
// first, e.g. (d * sc) * q - (dmin * m)), so it reproduces ggml's floats exactly.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/block_formats.h"
#include "quant/kquants.h"
#include "quant/numbers.h"
#include "quant/scale_search.h"

namespace hearth::kquants {

namespace {

using scale_search::AffineSearch;
using scale_search::f16_saturating;
using scale_search::round_int;

// ---- bit packing -----------------------------------------------------------------

// Q4_K / Q5_K: eight 6-bit scales and mins in 12 bytes. Bytes 0..3 carry scales 0..3 in
// their low 6 bits, bytes 4..7 mins 0..3; bytes 8..11 carry the low nibbles of scale and
// min 4..7; the top 2 bits of bytes 0..3 and 4..7 carry the high bits of scale and min
// 4..7.
void unpack_scale_min(const uint8_t s[kKScaleBytes], uint8_t sc[8], uint8_t m[8]) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = s[j] & 63;
    m[j] = s[j + 4] & 63;
    sc[j + 4] = uint8_t((s[j + 8] & 15) | ((s[j] >> 6) << 4));
    m[j + 4] = uint8_t((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
  }
}

void pack_scale_min(const uint8_t sc[8], const uint8_t m[8], uint8_t s[kKScaleBytes]) {
  for (int j = 0; j < 4; ++j) {
    s[j] = uint8_t((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = uint8_t((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    s[j + 8] = uint8_t((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
  }
}

// Q3_K: sixteen 6-bit scales (stored +32) in 12 bytes: low nibbles in bytes 0..7 (scales
// 0..7 low halves, 8..15 high halves), top 2 bits in bytes 8..11 (byte 8 + j % 4, bit
// pair j / 4).
int q3_scale(const uint8_t s[kKScaleBytes], int j) {
  const int low = j < 8 ? (s[j] & 15) : (s[j - 8] >> 4);
  const int high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (low | (high << 4)) - 32;
}

void pack_q3_scales(const int8_t ls[16], uint8_t s[kKScaleBytes]) {
  std::memset(s, 0, kKScaleBytes);
  for (int j = 0; j < 16; ++j) {
    const int v = ls[j] + 32;  // 0..63
    if (j < 8) s[j] |= uint8_t(v & 15);
    else s[j - 8] |= uint8_t((v & 15) << 4);
    s[8 + j % 4] |= uint8_t((v >> 4) << (2 * (j / 4)));
  }
}

// 2-bit fields of 256 values: value 128c + 32g + l at bits 2g of byte 32c + l.
void unpack_2bit(const uint8_t qs[kQK_K / 4], uint8_t q[kQK_K]) {
  for (int i = 0; i < kQK_K; ++i) q[i] = (qs[32 * (i / 128) + i % 32] >> (2 * ((i / 32) % 4))) & 3;
}
void pack_2bit(const uint8_t q[kQK_K], uint8_t qs[kQK_K / 4]) {
  std::memset(qs, 0, kQK_K / 4);
  for (int i = 0; i < kQK_K; ++i)
    qs[32 * (i / 128) + i % 32] |= uint8_t((q[i] & 3) << (2 * ((i / 32) % 4)));
}

// 4-bit fields of 256 values: value 64c + 32h + l in nibble h of byte 32c + l.
void unpack_nibbles(const uint8_t qs[kQK_K / 2], uint8_t q[kQK_K]) {
  for (int i = 0; i < kQK_K; ++i) q[i] = (qs[32 * (i / 64) + i % 32] >> (4 * ((i / 32) % 2))) & 15;
}
void pack_nibbles(const uint8_t q[kQK_K], uint8_t qs[kQK_K / 2]) {
  std::memset(qs, 0, kQK_K / 2);
  for (int i = 0; i < kQK_K; ++i)
    qs[32 * (i / 64) + i % 32] |= uint8_t((q[i] & 15) << (4 * ((i / 32) % 2)));
}

// Levels of each format, as the integers the scales multiply.
void levels(const BlockQ2_K& b, int q[kQK_K]) {
  uint8_t u[kQK_K];
  unpack_2bit(b.qs, u);
  for (int i = 0; i < kQK_K; ++i) q[i] = u[i];
}
void levels(const BlockQ3_K& b, int q[kQK_K]) {  // -4..3
  uint8_t u[kQK_K];
  unpack_2bit(b.qs, u);
  for (int i = 0; i < kQK_K; ++i) q[i] = u[i] + 4 * ((b.hmask[i % 32] >> (i / 32)) & 1) - 4;
}
void levels(const BlockQ4_K& b, int q[kQK_K]) {
  uint8_t u[kQK_K];
  unpack_nibbles(b.qs, u);
  for (int i = 0; i < kQK_K; ++i) q[i] = u[i];
}
void levels(const BlockQ5_K& b, int q[kQK_K]) {
  uint8_t u[kQK_K];
  unpack_nibbles(b.qs, u);
  for (int i = 0; i < kQK_K; ++i) q[i] = u[i] + 16 * ((b.qh[i % 32] >> (i / 32)) & 1);
}
void levels(const BlockQ6_K& b, int q[kQK_K]) {  // -32..31
  for (int i = 0; i < kQK_K; ++i) {
    const int c = i / 128, g = (i / 32) % 4, l = i % 32;
    const int low = (b.ql[64 * c + 32 * (g & 1) + l] >> (4 * (g >> 1))) & 15;
    const int high = (b.qh[32 * c + l] >> (2 * g)) & 3;
    q[i] = (low | (high << 4)) - 32;
  }
}

void store_q3_levels(const int8_t q[kQK_K], BlockQ3_K& b) {  // q in -4..3
  uint8_t u[kQK_K];
  std::memset(b.hmask, 0, sizeof b.hmask);
  for (int i = 0; i < kQK_K; ++i) {
    const int v = q[i] + 4;
    u[i] = uint8_t(v & 3);
    if (v & 4) b.hmask[i % 32] |= uint8_t(1 << (i / 32));
  }
  pack_2bit(u, b.qs);
}
void store_q5_levels(const uint8_t q[kQK_K], BlockQ5_K& b) {  // q in 0..31
  std::memset(b.qh, 0, sizeof b.qh);
  for (int i = 0; i < kQK_K; ++i)
    if (q[i] & 16) b.qh[i % 32] |= uint8_t(1 << (i / 32));
  pack_nibbles(q, b.qs);
}
void store_q6_levels(const int8_t q[kQK_K], BlockQ6_K& b) {  // q in -32..31
  std::memset(b.ql, 0, sizeof b.ql);
  std::memset(b.qh, 0, sizeof b.qh);
  for (int i = 0; i < kQK_K; ++i) {
    const int c = i / 128, g = (i / 32) % 4, l = i % 32;
    const int v = q[i] + 32;
    b.ql[64 * c + 32 * (g & 1) + l] |= uint8_t((v & 15) << (4 * (g >> 1)));
    b.qh[32 * c + l] |= uint8_t((v >> 4) << (2 * g));
  }
}

// ---- shared quantization steps -----------------------------------------------------

double sum_squares(const float* x, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += double(x[i]) * x[i];
  return s;
}

double max_abs(const float* x, int n) {
  double m = 0;
  for (int i = 0; i < n; ++i) m = std::max(m, std::fabs(double(x[i])));
  return m;
}

// Weights for the searches over one sub-block of `len` values starting at x (importance
// points at the matching entries): with importance, imp * sqrt(sigma2 + x^2), as ggml
// weighs imatrix data; without, the format's own default. Only ratios matter, so every
// weight of a super-block is divided by the same norm (its largest magnitude), which
// keeps them finite for any finite input.
enum class Plain { kSquare, kAbs, kRmsPlusAbs };
void sub_block_weights(const float* x, int len, const float* importance, double sigma2, Plain plain,
                       double norm, float* w) {
  const double inv = norm > 0 ? 1 / norm : 0;
  if (importance) {
    for (int i = 0; i < len; ++i)
      w[i] = float(importance[i] * (std::sqrt(sigma2 + double(x[i]) * x[i]) * inv));
    return;
  }
  const double rms = plain == Plain::kRmsPlusAbs ? std::sqrt(sum_squares(x, len) / len) : 0;
  for (int i = 0; i < len; ++i) {
    const double a = std::fabs(double(x[i])) * inv;
    switch (plain) {
      case Plain::kSquare: w[i] = float(a * a); break;
      case Plain::kAbs: w[i] = float(a); break;
      case Plain::kRmsPlusAbs: w[i] = float(rms * inv + a); break;
    }
  }
}

// Quantizes non-negative sub-block factors (scales or mins) v[0..n) to levels 0..nmax
// under one f16 super-block factor, which it returns (stored form). With weights the
// factor comes from a weighted search; without, the largest value maps to nmax.
uint16_t quantize_factors(const double* v, int n, int nmax, const float* weights, uint8_t* lv) {
  double d = 0;
  if (weights) {
    float vf[16];
    for (int i = 0; i < n; ++i) vf[i] = float(std::max(v[i], 0.0));
    d = scale_search::fit_positive(n, nmax, vf, weights, lv);
  } else {
    double max = 0;
    for (int i = 0; i < n; ++i) max = std::max(max, v[i]);
    d = max / nmax;
  }
  const uint16_t h = f16_saturating(d);
  const double stored = f16_to_f32(h);
  for (int i = 0; i < n; ++i) lv[i] = stored > 0 ? uint8_t(std::clamp(round_int(v[i] / stored), 0, nmax)) : 0;
  return h;
}

// Levels 0..nmax for x ~ step * q - offset (step == 0: level 0).
void affine_levels(const float* x, int len, double step, double offset, int nmax, uint8_t* q) {
  for (int i = 0; i < len; ++i)
    q[i] = step != 0 ? uint8_t(std::clamp(round_int((x[i] + offset) / step), 0, nmax)) : 0;
}

// Q4_K / Q5_K: eight sub-blocks of 32, each x ~ scale * q - min with q in 0..nmax; the
// scales and mins go to 6 bits under the f16 d / dmin. Writes the final levels to L.
void quantize_scale_min_block(const float* x, const float* importance, int nmax,
                              const AffineSearch& plain_search, uint16_t& d, uint16_t& dmin,
                              uint8_t packed[kKScaleBytes], uint8_t L[kQK_K]) {
  constexpr int kSub = 32, kNum = kQK_K / kSub;
  const AffineSearch weighted_search{-0.9, 0.05, 36, false};
  const double sigma2 = 2 * sum_squares(x, kQK_K) / kQK_K;
  const double norm = max_abs(x, kQK_K);
  double scales[kNum], mins[kNum];
  float sw[kNum];
  for (int j = 0; j < kNum; ++j) {
    float w[kSub];
    sub_block_weights(x + kSub * j, kSub, importance ? importance + kSub * j : nullptr, sigma2,
                      Plain::kRmsPlusAbs, norm, w);
    sw[j] = 0;
    for (float v : w) sw[j] += v;
    scales[j] = scale_search::fit_affine(kSub, nmax, x + kSub * j, w, L + kSub * j, &mins[j],
                                         importance ? weighted_search : plain_search);
  }
  uint8_t ls[kNum], lm[kNum];
  d = quantize_factors(scales, kNum, 63, importance ? sw : nullptr, ls);
  dmin = quantize_factors(mins, kNum, 63, importance ? sw : nullptr, lm);
  pack_scale_min(ls, lm, packed);
  const double df = f16_to_f32(d), mf = f16_to_f32(dmin);
  for (int j = 0; j < kNum; ++j)
    affine_levels(x + kSub * j, kSub, df * ls[j], mf * lm[j], nmax, L + kSub * j);
}

// Q3_K / Q6_K: sixteen sub-blocks of 16, x ~ scale * q with q in [-nmax, nmax); the
// signed sub-block scales go to integers in [-smax, smax) under the f16 d. With
// importance_as_is the importance itself weighs the sub-block fits and the super-block
// scale stays the plain one (ggml's Q6_K); otherwise importance goes through
// sub_block_weights and also weighs the fit of the super-block scale (ggml's Q3_K).
void quantize_signed_block(const float* x, const float* importance, int nmax, int smax,
                           Plain plain, bool importance_as_is, uint16_t& d, int8_t ls[16],
                           int8_t L[kQK_K]) {
  constexpr int kSub = 16, kNum = kQK_K / kSub;
  const double sigma2 = 2 * sum_squares(x, kQK_K) / kQK_K;
  const double norm = max_abs(x, kQK_K);
  float scales[kNum], sw[kNum];
  for (int j = 0; j < kNum; ++j) {
    float w[kSub];
    if (importance && importance_as_is) {
      std::copy(importance + kSub * j, importance + kSub * (j + 1), w);
    } else {
      sub_block_weights(x + kSub * j, kSub, importance ? importance + kSub * j : nullptr, sigma2,
                        plain, norm, w);
    }
    sw[j] = 0;
    for (float v : w) sw[j] += v;
    scales[j] = float(scale_search::fit_signed(kSub, nmax, x + kSub * j, w, L + kSub * j, true));
  }
  double dd;
  if (importance && !importance_as_is) {
    int8_t lv[kNum];
    dd = scale_search::fit_signed(kNum, smax, scales, sw, lv, true);
  } else {
    double amax = 0, max = 0;
    for (float s : scales) {
      if (std::fabs(s) > amax) {
        amax = std::fabs(s);
        max = s;
      }
    }
    dd = amax < scale_search::kTinyGroup ? 0 : max / -smax;
  }
  d = f16_saturating(dd);
  const double df = f16_to_f32(d);
  for (int j = 0; j < kNum; ++j) {
    ls[j] = df != 0 ? int8_t(std::clamp(round_int(scales[j] / df), -smax, smax - 1)) : 0;
    const double step = df * ls[j];
    for (int i = 0; i < kSub; ++i)
      L[kSub * j + i] =
          step != 0 ? int8_t(std::clamp(round_int(x[kSub * j + i] / step), -nmax, nmax - 1)) : 0;
  }
}

template <class Block>
const Block* blocks_of(const void* p) {
  return static_cast<const Block*>(p);
}

}  // namespace

// ---- Q2_K ------------------------------------------------------------------------

void dequantize_q2_k(const void* blocks, float* out, int64_t n) {
  require_whole_blocks(n, kQK_K, "q2_K");
  const BlockQ2_K* b = blocks_of<BlockQ2_K>(blocks);
  for (int64_t ib = 0; ib < n / kQK_K; ++ib, out += kQK_K) {
    const float d = f16_to_f32(b[ib].d), dmin = f16_to_f32(b[ib].dmin);
    int q[kQK_K];
    levels(b[ib], q);
    for (int j = 0; j < 16; ++j) {
      const float step = d * float(b[ib].scales[j] & 15);
      const float offset = dmin * float(b[ib].scales[j] >> 4);
      for (int i = 16 * j; i < 16 * (j + 1); ++i) out[i] = step * float(q[i]) - offset;
    }
  }
}

void quantize_q2_k(const float* in, void* blocks, int64_t n, const float* importance) {
  require_whole_blocks(n, kQK_K, "q2_K");
  BlockQ2_K* out = static_cast<BlockQ2_K*>(blocks);
  const AffineSearch plain_search{-0.5, 0.1, 15, true};
  const AffineSearch weighted_search{-0.9, 0.05, 36, false};
  for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
    const float* x = in + ib * kQK_K;
    const float* imp = importance ? importance + ib * kQK_K : nullptr;
    const double sigma2 = sum_squares(x, kQK_K) / kQK_K;
    const double norm = max_abs(x, kQK_K);
    double scales[16], mins[16];
    float sw[16];
    uint8_t L[kQK_K];
    for (int j = 0; j < 16; ++j) {
      float w[16];
      sub_block_weights(x + 16 * j, 16, imp ? imp + 16 * j : nullptr, sigma2, Plain::kAbs, norm, w);
      sw[j] = 0;
      for (float v : w) sw[j] += v;
      scales[j] = scale_search::fit_affine(16, 3, x + 16 * j, w, L + 16 * j, &mins[j],
                                           imp ? weighted_search : plain_search);
    }
    uint8_t ls[16], lm[16];
    BlockQ2_K& b = out[ib];
    b.d = quantize_factors(scales, 16, 15, imp ? sw : nullptr, ls);
    b.dmin = quantize_factors(mins, 16, 15, imp ? sw : nullptr, lm);
    const double df = f16_to_f32(b.d), mf = f16_to_f32(b.dmin);
    for (int j = 0; j < 16; ++j) {
      b.scales[j] = uint8_t(ls[j] | (lm[j] << 4));
      affine_levels(x + 16 * j, 16, df * ls[j], mf * lm[j], 3, L + 16 * j);
    }
    pack_2bit(L, b.qs);
  }
}

float vec_dot_q2_k(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, kQK_K, "q2_K");
  const BlockQ2_K* x = blocks_of<BlockQ2_K>(w);
  const BlockQ8_K* y = blocks_of<BlockQ8_K>(a);
  float acc = 0;
  for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
    int q[kQK_K];
    levels(x[ib], q);
    int32_t sum_q = 0, sum_m = 0;
    for (int j = 0; j < 16; ++j) {
      int32_t s = 0;
      for (int i = 16 * j; i < 16 * (j + 1); ++i) s += q[i] * y[ib].qs[i];
      sum_q += (x[ib].scales[j] & 15) * s;
      sum_m += (x[ib].scales[j] >> 4) * int32_t(y[ib].bsums[j]);
    }
    const float d = y[ib].d * f16_to_f32(x[ib].d);
    const float dmin = y[ib].d * f16_to_f32(x[ib].dmin);
    acc += d * float(sum_q) - dmin * float(sum_m);
  }
  return acc;
}

// ---- Q3_K ------------------------------------------------------------------------

void dequantize_q3_k(const void* blocks, float* out, int64_t n) {
  require_whole_blocks(n, kQK_K, "q3_K");
  const BlockQ3_K* b = blocks_of<BlockQ3_K>(blocks);
  for (int64_t ib = 0; ib < n / kQK_K; ++ib, out += kQK_K) {
    const float d = f16_to_f32(b[ib].d);
    int q[kQK_K];
    levels(b[ib], q);
    for (int j = 0; j < 16; ++j) {
      const float step = d * float(q3_scale(b[ib].scales, j));
      for (int i = 16 * j; i < 16 * (j + 1); ++i) out[i] = step * float(q[i]);
    }
  }
}

void quantize_q3_k(const float* in, void* blocks, int64_t n, const float* importance) {
  require_whole_blocks(n, kQK_K, "q3_K");
  BlockQ3_K* out = static_cast<BlockQ3_K*>(blocks);
  for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
    int8_t ls[16], L[kQK_K];
    quantize_signed_block(in + ib * kQK_K, importance ? importance + ib * kQK_K : nullptr, 4, 32,
                          Plain::kSquare, /*importance_as_is=*/false, out[ib].d, ls, L);
    pack_q3_scales(ls, out[ib].scales);
    store_q3_levels(L, out[ib]);
  }
}

float vec_dot_q3_k(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, kQK_K, "q3_K");
  const BlockQ3_K* x = blocks_of<BlockQ3_K>(w);
  const BlockQ8_K* y = blocks_of<BlockQ8_K>(a);
  float acc = 0;
  for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
    int q[kQK_K];
    levels(x[ib], q);
    int32_t sum = 0;
    for (int j = 0; j < 16; ++j) {
      int32_t s = 0;
      for (int i = 16 * j; i < 16 * (j + 1); ++i) s += q[i] * y[ib].qs[i];
      sum += q3_scale(x[ib].scales, j) * s;
    }
    acc += (y[ib].d * f16_to_f32(x[ib].d)) * float(sum);
  }
  return acc;
}

// ---- Q4_K and Q5_K ---------------------------------------------------------------

namespace {

template <class Block>
void dequantize_scale_min(const Block* b, float* out, int64_t nblocks) {
  for (int64_t ib = 0; ib < nblocks; ++ib, out += kQK_K) {
    const float d = f16_to_f32(b[ib].d), dmin = f16_to_f32(b[ib].dmin);
    uint8_t sc[8], m[8];
    unpack_scale_min(b[ib].scales, sc, m);
    int q[kQK_K];
    levels(b[ib], q);
    for (int j = 0; j < 8; ++j) {
      const float step = d * float(sc[j]), offset = dmin * float(m[j]);
      for (int i = 32 * j; i < 32 * (j + 1); ++i) out[i] = step * float(q[i]) - offset;
    }
  }
}

template <class Block>
float vec_dot_scale_min(const Block* x, const BlockQ8_K* y, int64_t nblocks) {
  float acc = 0;
  for (int64_t ib = 0; ib < nblocks; ++ib) {
    uint8_t sc[8], m[8];
    unpack_scale_min(x[ib].scales, sc, m);
    int q[kQK_K];
    levels(x[ib], q);
    int32_t sum_q = 0, sum_m = 0;
    for (int j = 0; j < 8; ++j) {
      int32_t s = 0;
      for (int i = 32 * j; i < 32 * (j + 1); ++i) s += q[i] * y[ib].qs[i];
      sum_q += sc[j] * s;
      sum_m += m[j] * (int32_t(y[ib].bsums[2 * j]) + y[ib].bsums[2 * j + 1]);
    }
    const float d = y[ib].d * f16_to_f32(x[ib].d);
    const float dmin = y[ib].d * f16_to_f32(x[ib].dmin);
    acc += d * float(sum_q) - dmin * float(sum_m);
  }
  return acc;
}

}  // namespace

void dequantize_q4_k(const void* blocks, float* out, int64_t n) {
  require_whole_blocks(n, kQK_K, "q4_K");
  dequantize_scale_min(blocks_of<BlockQ4_K>(blocks), out, n / kQK_K);
}

void quantize_q4_k(const float* in, void* blocks, int64_t n, const float* importance) {
  require_whole_blocks(n, kQK_K, "q4_K");
  BlockQ4_K* out = static_cast<BlockQ4_K*>(blocks);
  for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
    uint8_t L[kQK_K];
    quantize_scale_min_block(in + ib * kQK_K, importance ? importance + ib * kQK_K : nullptr, 15,
                             AffineSearch{-1.0, 0.1, 20, false}, out[ib].d, out[ib].dmin,
                             out[ib].scales, L);
    pack_nibbles(L, out[ib].qs);
  }
}

float vec_dot_q4_k(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, kQK_K, "q4_K");
  return vec_dot_scale_min(blocks_of<BlockQ4_K>(w), blocks_of<BlockQ8_K>(a), n / kQK_K);
}

void dequantize_q5_k(const void* blocks, float* out, int64_t n) {
  require_whole_blocks(n, kQK_K, "q5_K");
  dequantize_scale_min(blocks_of<BlockQ5_K>(blocks), out, n / kQK_K);
}

void quantize_q5_k(const float* in, void* blocks, int64_t n, const float* importance) {
  require_whole_blocks(n, kQK_K, "q5_K");
  BlockQ5_K* out = static_cast<BlockQ5_K*>(blocks);
  for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
    uint8_t L[kQK_K];
    quantize_scale_min_block(in + ib * kQK_K, importance ? importance + ib * kQK_K : nullptr, 31,
                             AffineSearch{-0.5, 0.1, 15, false}, out[ib].d, out[ib].dmin,
                             out[ib].scales, L);
    store_q5_levels(L, out[ib]);
  }
}

float vec_dot_q5_k(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, kQK_K, "q5_K");
  return vec_dot_scale_min(blocks_of<BlockQ5_K>(w), blocks_of<BlockQ8_K>(a), n / kQK_K);
}

// ---- Q6_K ------------------------------------------------------------------------

void dequantize_q6_k(const void* blocks, float* out, int64_t n) {
  require_whole_blocks(n, kQK_K, "q6_K");
  const BlockQ6_K* b = blocks_of<BlockQ6_K>(blocks);
  for (int64_t ib = 0; ib < n / kQK_K; ++ib, out += kQK_K) {
    const float d = f16_to_f32(b[ib].d);
    int q[kQK_K];
    levels(b[ib], q);
    for (int j = 0; j < 16; ++j) {
      const float step = d * float(b[ib].scales[j]);
      for (int i = 16 * j; i < 16 * (j + 1); ++i) out[i] = step * float(q[i]);
    }
  }
}

void quantize_q6_k(const float* in, void* blocks, int64_t n, const float* importance) {
  require_whole_blocks(n, kQK_K, "q6_K");
  BlockQ6_K* out = static_cast<BlockQ6_K*>(blocks);
  for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
    int8_t L[kQK_K];
    quantize_signed_block(in + ib * kQK_K, importance ? importance + ib * kQK_K : nullptr, 32, 128,
                          Plain::kSquare, /*importance_as_is=*/true, out[ib].d, out[ib].scales, L);
    store_q6_levels(L, out[ib]);
  }
}

float vec_dot_q6_k(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, kQK_K, "q6_K");
  const BlockQ6_K* x = blocks_of<BlockQ6_K>(w);
  const BlockQ8_K* y = blocks_of<BlockQ8_K>(a);
  float acc = 0;
  for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
    int q[kQK_K];
    levels(x[ib], q);
    int32_t sum = 0;
    for (int j = 0; j < 16; ++j) {
      int32_t s = 0;
      for (int i = 16 * j; i < 16 * (j + 1); ++i) s += q[i] * y[ib].qs[i];
      sum += x[ib].scales[j] * s;
    }
    acc += (y[ib].d * f16_to_f32(x[ib].d)) * float(sum);
  }
  return acc;
}

}  // namespace hearth::kquants

// IQ4_NL (blocks of 32, one f16 scale) and IQ4_XS (super-blocks of 256: one f16 scale
// times a signed 6-bit scale per 32 values): every value is a scale times one of the 16
// non-linear levels kIq4nlValues, picked by a 4-bit index. Layouts:
// quant/block_formats.h.
//
// Quantization follows ggml's method for these formats: per 32 values, weights x^2 (or,
// with importance, imp * sqrt(sigma2 + x^2)), a start with the value of largest magnitude
// on the end level, the weighted least-squares scale of that assignment, then 15 more
// candidate scales around the end level, keeping the best; IQ4_XS then puts the eight
// sub-block scales on a 6-bit grid under one f16 factor. Unlike ggml, the final indices
// are chosen under the stored (f16-rounded) scale, and the sums run in double.
#include "quant/iq4.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "quant/block_formats.h"
#include "quant/candidate_lanes.h"
#include "quant/kquants.h"
#include "quant/numbers.h"
#include "quant/scale_search.h"

namespace hearth::iq4 {

namespace {

using kquants::require_whole_blocks;
using scale_search::f16_saturating;
using scale_search::round_int;

constexpr int kSub = 32;            // values per IQ4_NL block / IQ4_XS sub-block
constexpr int kSubs = kQK_K / kSub;  // sub-blocks per IQ4_XS super-block
constexpr int kTries = 7;           // candidate scales on each side of the end level

// Midpoints between neighbouring levels (exact in double).
constexpr auto kMidpoints = [] {
  std::array<double, 15> m{};
  for (int k = 0; k < 15; ++k) m[size_t(k)] = 0.5 * (kIq4nlValues[k] + kIq4nlValues[k + 1]);
  return m;
}();

// Index of the level nearest to v, ties to the larger level (as in ggml): the number of
// midpoints at or below v, counted without branches (this runs 17 times per value).
int nearest_level(double v) {
  if (v != v) return 8;  // NaN: the level nearest zero
  int idx = 0;
  for (double m : kMidpoints) idx += v >= m;
  return idx;
}

// Index i of one 32-value group in the nibbles qs[16]: value j and j + 16 share byte j.
int index_at(const uint8_t* qs, int i) { return i < 16 ? qs[i] & 15 : qs[i - 16] >> 4; }

void pack_indices(const uint8_t idx[kSub], uint8_t* qs) {
  for (int j = 0; j < kSub / 2; ++j) qs[j] = uint8_t(idx[j] | (idx[j + kSub / 2] << 4));
}

// The best scale for x[0..32) under weights w (ggml's search, see the top); 0 for a (near)
// zero group. The 16 candidates (the start, then the 15 around the end level) go four at a
// time (quant/candidate_lanes.h), their levels found by the same midpoint count as
// nearest_level, and are compared in order.
__attribute__((target_clones("avx2", "default")))
double fit_group(const float* x, const double* w) {
  using candidate_lanes::LaneBits;
  using candidate_lanes::Lanes;
  using candidate_lanes::splat;
  using candidate_lanes::splat_bits;
  constexpr int kLanes = candidate_lanes::kLanes;
  double amax = 0, max = 0;
  for (int i = 0; i < kSub; ++i) {
    if (std::fabs(double(x[i])) > amax) {
      amax = std::fabs(double(x[i]));
      max = x[i];
    }
  }
  if (amax < scale_search::kTinyGroup) return 0;
  constexpr int kCandidates = 2 * kTries + 2;
  static_assert(kCandidates % kLanes == 0, "whole batches of candidates");
  double inv[kCandidates];
  inv[0] = -double(kIq4nlValues[0]) / max;  // the largest value on level +127 (clamped to 113)
  for (int t = -kTries; t <= kTries; ++t) inv[1 + t + kTries] = (t + kIq4nlValues[0]) / max;  // near level -127
  double best_d = 0, best = 0;
  for (int c0 = 0; c0 < kCandidates; c0 += kLanes) {
    const Lanes scale = {inv[c0], inv[c0 + 1], inv[c0 + 2], inv[c0 + 3]};
    Lanes sxl = splat(0.0), sll = splat(0.0);
    for (int i = 0; i < kSub; ++i) {
      // sum w x l and sum w l^2 of the levels each lane's inverse scale picks.
      const Lanes v = scale * splat(x[i]);
      LaneBits idx = splat_bits(0);
      for (double m : kMidpoints) idx -= v >= splat(m);  // a true comparison is -1
      idx = v == v ? idx : splat_bits(8);                 // NaN: the level nearest zero
      const Lanes l = {double(kIq4nlValues[idx[0]]), double(kIq4nlValues[idx[1]]), double(kIq4nlValues[idx[2]]),
                       double(kIq4nlValues[idx[3]])};
      sxl += splat(w[i] * x[i]) * l;
      sll += splat(w[i]) * l * l;
    }
    for (int j = 0; j < kLanes; ++j) {
      if (c0 + j == 0) {
        best_d = sll[0] > 0 ? sxl[0] / sll[0] : 0;
        best = best_d * sxl[0];
        continue;
      }
      // A candidate must win by more than rounding: on exact ties (e.g. a constant group,
      // which both ends of the grid fit) every group of a row then keeps the same end, and
      // IQ4_XS's shared 6-bit scale grid stays exact for them.
      if (sll[j] > 0 && sxl[j] * sxl[j] > best * sll[j] * (1 + 1e-9)) {
        best_d = sxl[j] / sll[j];
        best = best_d * sxl[j];
      }
    }
  }
  return best_d;
}

// Indices of x[0..32) under the scale `step` (all the level nearest zero when step is 0).
void indices_for(const float* x, double step, uint8_t idx[kSub]) {
  const double inv = step != 0 ? 1 / step : 0;
  for (int i = 0; i < kSub; ++i) idx[i] = uint8_t(nearest_level(x[i] * inv));
}

// Weights of the values of one group: x^2, or importance * sqrt(sigma2 + x^2), divided by
// the largest magnitude `norm` of the (super-)block (only ratios matter; this keeps them
// finite for any finite input).
// A group whose weights are all zero (e.g. importance zero for all its columns) is
// weighed uniformly instead.
void group_weights(const float* x, const float* importance, double sigma2, double norm, double* w) {
  const double inv = norm > 0 ? 1 / norm : 0;
  double total = 0;
  for (int i = 0; i < kSub; ++i) {
    const double a = double(x[i]) * inv;
    w[i] = importance ? importance[i] * std::sqrt(sigma2 * inv * inv + a * a) : a * a;
    total += w[i];
  }
  if (!(total > 0)) std::fill(w, w + kSub, 1.0);
}

// 2 * mean square and largest magnitude of n values (ggml's sigma2 for these formats).
void stats(const float* x, int n, double& sigma2, double& amax) {
  sigma2 = amax = 0;
  for (int i = 0; i < n; ++i) {
    sigma2 += double(x[i]) * x[i];
    amax = std::max(amax, std::fabs(double(x[i])));
  }
  sigma2 = 2 * sigma2 / n;
}

// 6-bit scale of sub-block j of an IQ4_XS block, 32 subtracted (-32..31).
int xs_scale(const BlockIQ4_XS& b, int j) {
  const int low = (b.scales_l[j / 2] >> (4 * (j % 2))) & 15;
  const int high = (b.scales_h >> (2 * j)) & 3;
  return (low | (high << 4)) - 32;
}

}  // namespace

// ---- IQ4_NL ----------------------------------------------------------------------

void dequantize_iq4_nl(const void* blocks, float* out, int64_t n) {
  require_whole_blocks(n, kQK4_NL, "iq4_nl");
  const BlockIQ4_NL* b = static_cast<const BlockIQ4_NL*>(blocks);
  for (int64_t ib = 0; ib < n / kQK4_NL; ++ib, out += kQK4_NL) {
    const float d = f16_to_f32(b[ib].d);
    for (int i = 0; i < kQK4_NL; ++i) out[i] = d * float(kIq4nlValues[index_at(b[ib].qs, i)]);
  }
}

void quantize_iq4_nl(const float* in, void* blocks, int64_t n, const float* importance) {
  require_whole_blocks(n, kQK4_NL, "iq4_nl");
  BlockIQ4_NL* out = static_cast<BlockIQ4_NL*>(blocks);
  for (int64_t ib = 0; ib < n / kQK4_NL; ++ib) {
    const float* x = in + ib * kQK4_NL;
    double sigma2, amax, w[kSub];
    stats(x, kSub, sigma2, amax);
    group_weights(x, importance ? importance + ib * kQK4_NL : nullptr, sigma2, amax, w);
    out[ib].d = f16_saturating(fit_group(x, w));
    uint8_t idx[kSub];
    indices_for(x, f16_to_f32(out[ib].d), idx);
    pack_indices(idx, out[ib].qs);
  }
}

float vec_dot_iq4_nl(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, kQK4_NL, "iq4_nl");
  const BlockIQ4_NL* x = static_cast<const BlockIQ4_NL*>(w);
  const BlockQ8_0* y = static_cast<const BlockQ8_0*>(a);
  float acc = 0;
  for (int64_t ib = 0; ib < n / kQK4_NL; ++ib) {
    int32_t sum = 0;
    for (int i = 0; i < kQK4_NL; ++i) sum += kIq4nlValues[index_at(x[ib].qs, i)] * int32_t(y[ib].qs[i]);
    acc += float(sum) * (f16_to_f32(x[ib].d) * f16_to_f32(y[ib].d));
  }
  return acc;
}

// ---- IQ4_XS ----------------------------------------------------------------------

void dequantize_iq4_xs(const void* blocks, float* out, int64_t n) {
  require_whole_blocks(n, kQK_K, "iq4_xs");
  const BlockIQ4_XS* b = static_cast<const BlockIQ4_XS*>(blocks);
  for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
    const float d = f16_to_f32(b[ib].d);
    for (int j = 0; j < kSubs; ++j, out += kSub) {
      const float step = d * float(xs_scale(b[ib], j));
      for (int i = 0; i < kSub; ++i) out[i] = step * float(kIq4nlValues[index_at(b[ib].qs + 16 * j, i)]);
    }
  }
}

void quantize_iq4_xs(const float* in, void* blocks, int64_t n, const float* importance) {
  require_whole_blocks(n, kQK_K, "iq4_xs");
  BlockIQ4_XS* out = static_cast<BlockIQ4_XS*>(blocks);
  for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
    const float* x = in + ib * kQK_K;
    const float* imp = importance ? importance + ib * kQK_K : nullptr;
    double sigma2, amax;
    stats(x, kQK_K, sigma2, amax);
    double scales[kSubs], max_scale = 0;
    for (int j = 0; j < kSubs; ++j) {
      double w[kSub];
      group_weights(x + kSub * j, imp ? imp + kSub * j : nullptr, sigma2, amax, w);
      scales[j] = fit_group(x + kSub * j, w);
      if (std::fabs(scales[j]) > std::fabs(max_scale)) max_scale = scales[j];
    }
    // The sub-block scale of largest magnitude goes to -32, the end with the extra step.
    BlockIQ4_XS& b = out[ib];
    b.d = f16_saturating(-max_scale / 32);
    const double d = f16_to_f32(b.d);
    b.scales_h = 0;
    std::memset(b.scales_l, 0, sizeof b.scales_l);
    for (int j = 0; j < kSubs; ++j) {
      const int l = d != 0 ? std::clamp(round_int(scales[j] / d), -32, 31) : 0;
      uint8_t idx[kSub];
      indices_for(x + kSub * j, d * l, idx);
      pack_indices(idx, b.qs + 16 * j);
      const int stored = l + 32;
      b.scales_l[j / 2] |= uint8_t((stored & 15) << (4 * (j % 2)));
      b.scales_h |= uint16_t((stored >> 4) << (2 * j));
    }
  }
}

float vec_dot_iq4_xs(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, kQK_K, "iq4_xs");
  const BlockIQ4_XS* x = static_cast<const BlockIQ4_XS*>(w);
  const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
  float acc = 0;
  for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
    int32_t sum = 0;
    for (int j = 0; j < kSubs; ++j) {
      int32_t s = 0;
      for (int i = 0; i < kSub; ++i)
        s += kIq4nlValues[index_at(x[ib].qs + 16 * j, i)] * int32_t(y[ib].qs[kSub * j + i]);
      sum += xs_scale(x[ib], j) * s;
    }
    acc += (y[ib].d * f16_to_f32(x[ib].d)) * float(sum);
  }
  return acc;
}

}  // namespace hearth::iq4

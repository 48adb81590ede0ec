#include "quant/scale_search.h"

#include <algorithm>
#include <array>
#include <cassert>
#include <cmath>

#include "quant/candidate_lanes.h"
#include "quant/numbers.h"

namespace hearth::scale_search {

namespace {

constexpr int kMaxGroup = 256;  // the largest group any format searches

// Sum of w * (x - scale * q)^2 (or |x - scale * q| when abs_error) for an affine fit.
template <class Level>
double affine_error(int n, const float* x, const float* w, const Level* q, double scale,
                    double offset, bool abs_error) {
  double e = 0;
  for (int i = 0; i < n; ++i) {
    const double diff = scale * q[i] + offset - x[i];
    e += w[i] * (abs_error ? std::fabs(diff) : diff * diff);
  }
  return e;
}

// Coordinate descent for a pure-scale fit x ~ s * q: with sums sxl = sum w x q and
// sll = sum w q^2, the weighted error is sum w x^2 - sxl^2 / sll, so a level change that
// raises sxl^2 / sll is an improvement. Levels stay in [lo, hi].
template <class Level>
void refine_levels(int n, int lo, int hi, const float* x, const float* w, Level* q, double& sxl,
                   double& sll) {
  for (int sweep = 0; sweep < 5; ++sweep) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      if (w[i] <= 0) continue;
      // The best level for value i under the scale fitted to all the others.
      const double wx = double(w[i]) * x[i];
      const double oxl = sxl - wx * q[i], oll = sll - double(w[i]) * q[i] * q[i];
      if (oxl == 0 || oll <= 0) continue;
      const int l = std::clamp(round_int(x[i] * oll / oxl), lo, hi);
      if (l == q[i]) continue;
      const double nxl = sxl + wx * (l - q[i]);
      const double nll = sll + double(w[i]) * (double(l) * l - double(q[i]) * q[i]);
      if (nll > 0 && nxl * nxl * sll > sxl * sxl * nll) {
        q[i] = Level(l);
        sxl = nxl;
        sll = nll;
        ++changed;
      }
    }
    if (!changed) break;
  }
}

// fit_signed and fit_affine try their candidate scales four at a time
// (quant/candidate_lanes.h).
using candidate_lanes::LaneBits;
using candidate_lanes::Lanes;
using candidate_lanes::splat;
constexpr int kBatch = candidate_lanes::kLanes;

// std::clamp(round_int(v), lo, hi) per lane, as a double: adding and subtracting 1.5 * 2^52
// rounds to the nearest integer (ties to even) as round_int does; values too large for
// that, or beyond round_int's saturation at +-2^30, land beyond lo or hi either way; NaN
// gives 0 as round_int does (0 is in [lo, hi] for every caller); adding +0 turns a -0 into
// round_int's +0.
inline Lanes clamped_levels(Lanes v, double lo, double hi) {
  const Lanes magic = splat(6755399441055744.0), zero = splat(0.0);
  Lanes r = (v + magic) - magic;
  r = r == r ? r : zero;
  r = r < splat(lo) ? splat(lo) : r;
  r = r > splat(hi) ? splat(hi) : r;
  return r + zero;
}

// |v| per lane, as std::fabs: the sign bit cleared.
inline Lanes abs_lanes(Lanes v) {
  return reinterpret_cast<Lanes>(reinterpret_cast<LaneBits>(v) & ~reinterpret_cast<LaneBits>(splat(-0.0)));
}

bool all_zero(int n, const float* w) {
  return std::all_of(w, w + n, [](float v) { return !(v > 0); });
}

const float* ones() {
  static const std::array<float, kMaxGroup> v = [] {
    std::array<float, kMaxGroup> a;
    a.fill(1.0f);
    return a;
  }();
  return v.data();
}

}  // namespace

int round_int(double v) {
  if (!(v == v)) return 0;
  constexpr double kLimit = 1073741824.0;  // 2^30
  if (v >= kLimit) return 1 << 30;
  if (v <= -kLimit) return -(1 << 30);
  // Adding 1.5 * 2^52 leaves no fraction bits, so the FPU's default round-to-nearest-even
  // does the rounding.
  constexpr double kMagic = 6755399441055744.0;
  return int((v + kMagic) - kMagic);
}

uint16_t f16_saturating(double d) {
  constexpr double kMaxHalf = 65504.0;
  return f32_to_f16(float(std::clamp(d, -kMaxHalf, kMaxHalf)));
}

__attribute__((target_clones("avx2", "default")))
double fit_signed(int n, int nmax, const float* x, const float* w, int8_t* q, bool refine) {
  assert(n <= kMaxGroup && nmax >= 1 && nmax <= 128);
  if (all_zero(n, w)) w = ones();
  double amax = 0, max = 0;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(double(x[i])) > amax) {
      amax = std::fabs(double(x[i]));
      max = x[i];
    }
  }
  std::fill(q, q + n, int8_t(0));
  if (amax < kTinyGroup) return 0;

  // The 19 candidate scales, four at a time (see Lanes), compared in order. A short last
  // batch repeats its first candidate in the unused lanes, which are ignored.
  std::array<Lanes, kMaxGroup> cand;  // cand[i][j]: candidate j's level for value i
  double best_xl = 0, best_ll = 0;
  for (int k0 = -9; k0 <= 9; k0 += kBatch) {
    const int count = std::min(kBatch, 10 - k0);
    Lanes inv;
    for (int j = 0; j < kBatch; ++j) inv[j] = -(nmax + 0.1 * (k0 + (j < count ? j : 0))) / max;
    Lanes sxl = splat(0.0), sll = splat(0.0);
    for (int i = 0; i < n; ++i) {
      const double wi = w[i], xi = x[i];
      const Lanes l = clamped_levels(inv * splat(xi), -nmax, nmax - 1);
      cand[size_t(i)] = l;
      sxl += splat(wi * xi) * l;
      sll += splat(wi) * l * l;
    }
    for (int j = 0; j < count; ++j)
      if (sll[j] > 0 && (best_ll == 0 || sxl[j] * sxl[j] * best_ll > best_xl * best_xl * sll[j])) {
        for (int i = 0; i < n; ++i) q[i] = int8_t(cand[size_t(i)][j]);
        best_xl = sxl[j];
        best_ll = sll[j];
      }
  }
  if (best_ll == 0) return 0;  // every weighted value rounds to level 0
  if (refine) refine_levels(n, -nmax, nmax - 1, x, w, q, best_xl, best_ll);
  return best_xl / best_ll;
}

__attribute__((target_clones("avx2", "default")))
double fit_affine(int n, int nmax, const float* x, const float* w, uint8_t* q, double* min,
                  const AffineSearch& search) {
  assert(n <= kMaxGroup && nmax >= 1 && nmax <= 255);
  if (all_zero(n, w)) w = ones();
  double lo = x[0], hi = x[0], sw = 0, swx = 0;
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, double(x[i]));
    hi = std::max(hi, double(x[i]));
    sw += w[i];
    swx += double(w[i]) * x[i];
  }
  if (!search.free_offset) lo = std::min(lo, 0.0);  // the offset is never positive
  std::fill(q, q + n, uint8_t(0));
  if (!(hi - lo >= kTinyGroup)) {  // constant group (non-positive unless free_offset), or nothing at all
    *min = -lo;
    return 0;
  }

  // First candidate: the plain min/max grid.
  double scale = (hi - lo) / nmax, offset = lo;
  for (int i = 0; i < n; ++i) q[i] = uint8_t(std::clamp(round_int((x[i] - lo) / scale), 0, nmax));
  double best = affine_error(n, x, w, q, scale, offset, search.abs_error);

  // The other candidates four at a time (see Lanes), then fitted and compared in order.
  std::array<Lanes, kMaxGroup> cand;  // cand[i][j]: candidate j's level for value i
  for (int step0 = 0; step0 <= search.nstep; step0 += kBatch) {
    const int count = std::min(kBatch, search.nstep + 1 - step0);
    Lanes inv;
    for (int j = 0; j < kBatch; ++j)
      inv[j] = (nmax + search.rmin + search.rdelta * (step0 + (j < count ? j : 0))) / (hi - lo);
    Lanes sl = splat(0.0), sll = splat(0.0), sxl = splat(0.0);
    for (int i = 0; i < n; ++i) {
      const double wi = w[i], xi = x[i];
      const Lanes l = clamped_levels(inv * splat(xi - lo), 0, nmax);
      cand[size_t(i)] = l;
      sl += splat(wi) * l;
      sll += splat(wi) * l * l;
      sxl += splat(wi * xi) * l;
    }
    // Weighted least squares for x ~ s * l + o, with o clamped to <= 0; lanes whose
    // system is singular are skipped.
    Lanes fit_s = splat(0.0), fit_o = splat(0.0);
    bool solved[kBatch] = {};
    for (int j = 0; j < count; ++j) {
      const double det = sw * sll[j] - sl[j] * sl[j];
      if (!(det > 0)) continue;
      double s = (sw * sxl[j] - swx * sl[j]) / det;
      double o = (sll[j] * swx - sl[j] * sxl[j]) / det;
      if (o > 0 && !search.free_offset) {
        o = 0;
        s = sxl[j] / sll[j];
      }
      fit_s[j] = s;
      fit_o[j] = o;
      solved[j] = true;
    }
    // affine_error of every lane's candidate, as above lane by lane.
    Lanes e = splat(0.0);
    for (int i = 0; i < n; ++i) {
      const Lanes diff = fit_s * cand[size_t(i)] + fit_o - splat(x[i]);
      e += splat(w[i]) * (search.abs_error ? abs_lanes(diff) : diff * diff);
    }
    for (int j = 0; j < count; ++j)
      if (solved[j] && e[j] < best) {
        best = e[j];
        scale = fit_s[j];
        offset = fit_o[j];
        for (int i = 0; i < n; ++i) q[i] = uint8_t(cand[size_t(i)][j]);
      }
  }
  *min = -offset;
  return scale;
}

double fit_positive(int n, int nmax, const float* x, const float* w, uint8_t* q) {
  assert(n <= kMaxGroup && nmax >= 1 && nmax <= 255);
  if (all_zero(n, w)) w = ones();
  double max = 0;
  for (int i = 0; i < n; ++i) max = std::max(max, double(x[i]));
  std::fill(q, q + n, uint8_t(0));
  if (max < kTinyGroup) return 0;

  auto level = [&](double inv, int i) { return std::clamp(round_int(inv * x[i]), 0, nmax); };
  double best_inv = nmax / max, best = -1;
  for (int k = -4; k <= 4; ++k) {
    const double inv = (nmax + 0.1 * k) / max;
    double e = 0;
    for (int i = 0; i < n; ++i) {
      const double diff = x[i] - level(inv, i) / inv;
      e += w[i] * diff * diff;
    }
    if (best < 0 || e < best) {
      best = e;
      best_inv = inv;
    }
  }
  double sxl = 0, sll = 0;
  for (int i = 0; i < n; ++i) {
    const int l = level(best_inv, i);
    q[i] = uint8_t(l);
    sxl += double(w[i]) * x[i] * l;
    sll += double(w[i]) * l * l;
  }
  if (!(sll > 0)) return 1 / best_inv;
  refine_levels(n, 0, nmax, x, w, q, sxl, sll);
  return sxl / sll;
}

}  // namespace hearth::scale_search

// The scale searches behind the block quantizers (quant/block_formats.*): given a group
// of values and per-value weights, choose integer levels and the scale (and min) that
// make the weighted squared error small. Internal to quant/; the searches follow the
// ideas of ggml's reference quantizers (a grid of candidate scales, each refined by
// weighted least squares, then coordinate descent on single levels), so the quality is
// comparable, but no bit-for-bit agreement with ggml is attempted.
#pragma once
#include <cstdint>

namespace hearth::scale_search {

// Groups whose largest magnitude is below this quantize to all-zero levels.
inline constexpr double kTinyGroup = 1e-30;

// Nearest integer (ties to even), saturating at +-2^30; NaN gives 0.
int round_int(double v);

// d as an f16 bit pattern, clamped to the largest finite half (+-65504) instead of
// overflowing to infinity.
uint16_t f16_saturating(double d);

// x ~ scale * q with integer q in [-nmax, nmax - 1]. Tries the candidate scales
// -max / (nmax + k / 10) for k in -9..9 (max: the value of largest magnitude, so it maps
// to the wider negative end), solves each for its least-squares scale, keeps the best,
// then (refine) moves single levels while that lowers the weighted error. w must be
// non-null, w[i] >= 0. Writes q (signed levels) and returns the scale; 0 and all-zero
// levels when the group is (near) zero.
double fit_signed(int n, int nmax, const float* x, const float* w, int8_t* q, bool refine);

// x ~ scale * q - min with q in [0, nmax], min >= 0 (the offset never goes above zero,
// so groups of positive values keep min 0) unless free_offset.
struct AffineSearch {
  double rmin = -1.0;   // first candidate: iscale = (nmax + rmin) / (max - min)
  double rdelta = 0.1;  // step between candidates
  int nstep = 20;       // candidates after the first: rmin + rdelta * 0..nstep
  bool abs_error = false;  // weigh |error| instead of error^2 when comparing candidates
  // Let the offset take either sign (min may be negative): for formats that store it as
  // a signed f16 (Q4_1, Q5_1) rather than as a non-negative level (the K-quants).
  bool free_offset = false;
};
// Returns the scale, writes q and *min.
double fit_affine(int n, int nmax, const float* x, const float* w, uint8_t* q, double* min,
                  const AffineSearch& search);

// x[i] >= 0 ~ scale * q with q in [0, nmax]: quantizes a super-block's sub-block scales
// (or mins) under weights. Returns the scale, writes q.
double fit_positive(int n, int nmax, const float* x, const float* w, uint8_t* q);

}  // namespace hearth::scale_search

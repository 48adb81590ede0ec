#include "engine/rope.h"

#include <algorithm>
#include <cmath>

namespace hearth {

namespace {

// The rotary dimension at which a frequency completes `rotations` turns over the
// original context (YaRN's correction range).
double correction_dim(double rotations, double dim, double base, double max_pos) {
  return dim * std::log(max_pos / (rotations * 2.0 * M_PI)) / (2.0 * std::log(base));
}

double yarn_mscale(double factor, double mscale) {
  return factor <= 1.0 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

}  // namespace

Rope::Rope(const ModelConfig& c) : dim_(c.qk_rope_head_dim), mscale_(1.0f) {
  const int64_t half = dim_ / 2;
  inv_freq_.resize(static_cast<size_t>(half));
  // Frequencies are computed in float32, as the reference does.
  for (int64_t i = 0; i < half; ++i)
    inv_freq_[size_t(i)] = 1.0f / std::pow(float(c.rope_theta), float(2 * i) / float(dim_));
  const RopeScaling& y = c.rope_scaling;
  if (y.yarn && y.factor > 1.0) {
    const double base = c.rope_theta, orig = double(y.original_max_position_embeddings);
    double low = std::floor(correction_dim(y.beta_fast, double(dim_), base, orig));
    double high = std::ceil(correction_dim(y.beta_slow, double(dim_), base, orig));
    low = std::max(low, 0.0);
    high = std::min(high, double(dim_ - 1));
    if (low == high) high += 0.001;
    for (int64_t i = 0; i < half; ++i) {
      // ramp = 0 below `low` (high frequencies: extrapolate, keep), 1 above `high`
      // (low frequencies: interpolate, divide by factor).
      const float ramp = std::clamp(float((double(i) - low) / (high - low)), 0.0f, 1.0f);
      const float smooth = 1.0f - ramp;
      const float f = inv_freq_[size_t(i)];
      inv_freq_[size_t(i)] = f / float(y.factor) * (1.0f - smooth) + f * smooth;
    }
    mscale_ = float(yarn_mscale(y.factor, y.mscale) / yarn_mscale(y.factor, y.mscale_all_dim));
  }
}

void Rope::angles(int64_t pos, float* cos_out, float* sin_out) const {
  for (size_t i = 0; i < inv_freq_.size(); ++i) {
    const float a = float(pos) * inv_freq_[i];
    cos_out[i] = float(std::cos(double(a))) * mscale_;
    sin_out[i] = float(std::sin(double(a))) * mscale_;
  }
}

void Rope::apply_interleaved(float* x, int64_t pos) const {
  float cs[kMaxRopeFreqs], sn[kMaxRopeFreqs];
  angles(pos, cs, sn);
  apply_interleaved(x, cs, sn);
}

void Rope::apply_halves(float* x, int64_t pos) const {
  float cs[kMaxRopeFreqs], sn[kMaxRopeFreqs];
  angles(pos, cs, sn);
  apply_halves(x, cs, sn);
}

void Rope::apply_interleaved(float* x, const float* cs, const float* sn) const {
  for (int64_t i = 0; i < dim_ / 2; ++i) {
    const float a = x[2 * i], b = x[2 * i + 1];
    x[2 * i] = a * cs[i] - b * sn[i];
    x[2 * i + 1] = a * sn[i] + b * cs[i];
  }
}

void Rope::apply_halves(float* x, const float* cs, const float* sn) const {
  const int64_t h = dim_ / 2;
  for (int64_t i = 0; i < h; ++i) {
    const float a = x[i], b = x[i + h];
    x[i] = a * cs[i] - b * sn[i];
    x[i + h] = a * sn[i] + b * cs[i];
  }
}

}  // namespace hearth

// Internal to quant/: the per-value weights the 32-value block quantizers (Q8_0, Q4_0,
// Q4_1, Q5_0, Q5_1) give their scale searches when importance data is supplied.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

namespace hearth::scale_search {

// Importance weights as ggml weighs imatrix data, imp * sqrt(sigma2 + x^2) with sigma2
// the row's mean square, divided by the row's largest magnitude (only ratios matter; this
// keeps them finite for any finite input).
struct RowWeights {
  double sigma2 = 0, inv_norm = 0;
  RowWeights(const float* in, int64_t n) {
    double amax = 0;
    for (int64_t i = 0; i < n; ++i) {
      sigma2 += double(in[i]) * in[i];
      amax = std::max(amax, std::fabs(double(in[i])));
    }
    sigma2 = n ? sigma2 / double(n) : 0;
    inv_norm = amax > 0 ? 1 / amax : 0;
  }
  void block(const float* x, const float* importance, int len, float* w) const {
    for (int i = 0; i < len; ++i)
      w[i] = float(importance[i] * (std::sqrt(sigma2 + double(x[i]) * x[i]) * inv_norm));
  }
};

}  // namespace hearth::scale_search

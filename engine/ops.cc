#include "engine/ops.h"

#include <algorithm>
#include <cmath>

#include "quant/numbers.h"

namespace hearth {

void linear(ThreadPool& pool, const WeightMatrix& w, const float* x, int64_t n, float* y) {
  // Grain keeps each thread's rows within whole 128-row scale blocks where possible.
  const int64_t grain = w.rows >= 128 * pool.size() ? 128 : 8;
  pool.parallel_for(w.rows, [&](int64_t r0, int64_t r1) { matmul_rows(w, x, w.cols, n, y, w.rows, r0, r1); }, grain);
}

void rms_norm(const float* x, const float* weight, int64_t dim, double eps, float* out) {
  float ss = 0.0f;
  for (int64_t i = 0; i < dim; ++i) ss += x[i] * x[i];
  const float r = 1.0f / std::sqrt(ss / float(dim) + float(eps));
  for (int64_t i = 0; i < dim; ++i) out[i] = x[i] * r * weight[i];
}

void layer_norm(const float* x, const float* weight, const float* bias, int64_t dim, double eps, float* out) {
  float mean = 0.0f;
  for (int64_t i = 0; i < dim; ++i) mean += x[i];
  mean /= float(dim);
  float var = 0.0f;
  for (int64_t i = 0; i < dim; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= float(dim);
  const float r = 1.0f / std::sqrt(var + float(eps));
  for (int64_t i = 0; i < dim; ++i) out[i] = (x[i] - mean) * r * weight[i] + bias[i];
}

void hadamard_transform(float* x, int64_t n) {
  for (int64_t h = 1; h < n; h *= 2)
    for (int64_t i = 0; i < n; i += 2 * h)
      for (int64_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
  const float s = 1.0f / std::sqrt(float(n));
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

float quantize_fp8_block_pow2(const float* x, int64_t n, uint8_t* q) {
  float amax = 1e-4f;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float scale = std::exp2(std::ceil(std::log2(amax / kFp8E4M3Max)));
  const float inv = 1.0f / scale;  // exact: scale is a power of two
  for (int64_t i = 0; i < n; ++i) q[i] = f32_to_fp8_e4m3(x[i] * inv);
  return scale;
}

}  // namespace hearth

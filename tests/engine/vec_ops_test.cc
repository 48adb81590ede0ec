// Attention's vector loops (engine/vec_ops.h): AVX2 against the scalar references and a
// double-precision sum.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "engine/vec_ops.h"

namespace engine_vec_ops_suite {

using namespace hearth;

TEST_CASE("vec ops: dot_f32 matches a double sum on every path and length") {
  std::mt19937 rng(41);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (int64_t n : {0, 1, 7, 8, 31, 32, 33, 64, 512, 1000}) {
    CAPTURE(n);
    std::vector<float> a(static_cast<size_t>(n)), b(static_cast<size_t>(n));
    for (float& v : a) v = g(rng);
    for (float& v : b) v = g(rng);
    double ref = 0, mag = 0;
    for (int64_t i = 0; i < n; ++i) {
      ref += double(a[size_t(i)]) * b[size_t(i)];
      mag += std::fabs(double(a[size_t(i)]) * b[size_t(i)]);
    }
    for (KernelIsa isa : {KernelIsa::kScalar, KernelIsa::kAuto}) {
      const float got = dot_f32(a.data(), b.data(), n, isa);
      CHECK(std::fabs(double(got) - ref) <= 1e-6 * mag + 1e-30);
    }
  }
}

TEST_CASE("vec ops: axpy_f32 AVX2 equals the scalar reference bit for bit") {
  std::mt19937 rng(42);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (int64_t n : {1, 8, 13, 128, 515}) {
    CAPTURE(n);
    std::vector<float> x(static_cast<size_t>(n)), y(static_cast<size_t>(n));
    for (float& v : x) v = g(rng);
    for (float& v : y) v = g(rng);
    std::vector<float> ys = y, ya = y;
    const float a = g(rng);
    axpy_f32(a, x.data(), ys.data(), n, KernelIsa::kScalar);
    axpy_f32(a, x.data(), ya.data(), n, KernelIsa::kAuto);
    CHECK(std::memcmp(ys.data(), ya.data(), ys.size() * sizeof(float)) == 0);
    for (int64_t i = 0; i < n; ++i) CHECK(ys[size_t(i)] == y[size_t(i)] + a * x[size_t(i)]);
  }
}

}  // namespace engine_vec_ops_suite

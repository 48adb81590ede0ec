// BF16 weights on AVX512_BF16 (quant/bf16_dot.h): the kernel against its scalar reference
// bit for bit on random and adversarial rows, the reference against a double-precision
// dot product, the activations' rounding, and matmul_rows taking the kernel at its level.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <tuple>
#include <vector>

#include "quant/bf16_dot.h"
#include "quant/numbers.h"
#include "quant/weight_matrix.h"
#include "support/cpu_gemm_scope.h"

namespace quant_bf16_dot_suite {

using namespace hearth;
using namespace hearth::bf16dot;

namespace {

bool cpu_has_bf16() {
  if (has_bf16(cpu_isa())) return true;
  MESSAGE("CPU lacks AVX512_BF16: the BF16 weight kernel is not tested");
  return false;
}

// rows x cols bf16 weights and tokens x padded(cols) activations from `pick`.
struct Case {
  int64_t rows, cols, tokens;
  std::vector<uint16_t> w, x;
};

template <class Pick>
Case make_case(int64_t rows, int64_t cols, int64_t tokens, Pick&& pick) {
  Case c{rows, cols, tokens, std::vector<uint16_t>(size_t(rows * cols)), std::vector<uint16_t>(size_t(tokens * padded(cols)), 0)};
  for (uint16_t& v : c.w) v = pick();
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t i = 0; i < cols; ++i) c.x[size_t(t * padded(cols) + i)] = pick();
  return c;
}

// The kernel's results over all rows and tokens of c that differ from the reference's.
int mismatches(const Case& c) {
  std::vector<float> y(size_t(c.tokens * c.rows), -1.0f);
  matmul_rows_avx512bf16(c.w.data(), c.cols, c.x.data(), c.tokens, y.data(), c.rows, 0, c.rows);
  int bad = 0;
  for (int64_t t = 0; t < c.tokens; ++t)
    for (int64_t r = 0; r < c.rows; ++r) {
      const float want = dot_reference(c.w.data() + r * c.cols, c.x.data() + t * padded(c.cols), c.cols);
      const float got = y[size_t(t * c.rows + r)];
      // NaN results need only both be NaN (which payload an operation keeps is not part of
      // the order being checked); everything else, the same bits.
      if (std::isnan(want) && std::isnan(got)) continue;
      bad += std::bit_cast<uint32_t>(want) != std::bit_cast<uint32_t>(got);
    }
  return bad;
}

}  // namespace

TEST_CASE("bf16 dot: the AVX512_BF16 kernel gives the reference's bits on random and adversarial rows") {
  if (!cpu_has_bf16()) return;
  std::mt19937 rng(71);
  std::normal_distribution<float> g(0.0f, 1.0f);
  // Rows that end on a whole chunk and ones that do not (the masked tail); one to six
  // tokens (tiles of one to four, then the rest); odd row counts (the one-row tiles).
  const std::vector<std::tuple<int64_t, int64_t, int64_t>> shapes = {
      {9, 64, 1}, {7, 100, 2}, {5, 33, 3}, {6, 512, 4}, {3, 7, 5}, {11, 256, 6}, {4, 1, 1}};
  auto gaussian = [&] { return f32_to_bf16(g(rng)); };
  // Every bit pattern: denormals (flushed), infinities, NaNs, both zeros.
  auto any_bits = [&] { return uint16_t(rng()); };
  // Magnitudes from 2^-90 to 2^90 with random signs: products below float's normal range
  // (flushed as results) and sums that cancel.
  auto wide = [&] { return f32_to_bf16(std::ldexp(1.0f + float(rng() % 128) / 128.0f, int(rng() % 181) - 90) * (rng() % 2 ? 1.0f : -1.0f)); };
  // Large values whose sums overflow to infinity, and zeros of both signs.
  auto edges = [&] {
    const uint16_t v[] = {0x7f7f, 0xff7f, 0x0000, 0x8000, 0x0001, 0x8001, 0x3f80, 0xbf80};
    return v[rng() % 8];
  };
  for (auto [rows, cols, tokens] : shapes) {
    CAPTURE(rows);
    CAPTURE(cols);
    CAPTURE(tokens);
    CHECK(mismatches(make_case(rows, cols, tokens, gaussian)) == 0);
    CHECK(mismatches(make_case(rows, cols, tokens, wide)) == 0);
    CHECK(mismatches(make_case(rows, cols, tokens, edges)) == 0);
    CHECK(mismatches(make_case(rows, cols, tokens, any_bits)) == 0);
  }
}

TEST_CASE("bf16 dot: the reference is the dot product to float rounding, denormals flushed") {
  std::mt19937 rng(72);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (int64_t n : {1, 31, 32, 200, 4096}) {
    CAPTURE(n);
    std::vector<uint16_t> w(static_cast<size_t>(n)), x(static_cast<size_t>(padded(n)), 0);
    for (auto& v : w) v = f32_to_bf16(g(rng));
    for (int64_t i = 0; i < n; ++i) x[size_t(i)] = f32_to_bf16(g(rng));
    double want = 0, mag = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double p = double(bf16_to_f32(w[size_t(i)])) * bf16_to_f32(x[size_t(i)]);
      want += p;
      mag += std::fabs(p);
    }
    CHECK(std::fabs(double(dot_reference(w.data(), x.data(), n)) - want) <= 1e-6 * mag);
  }
  // A denormal input counts as zero, and so does a product that lands below float's
  // normal range: 2^-70 * 2^-70 alone sums to +0, where an exact sum would be 2^-140.
  const uint16_t tiny = f32_to_bf16(0x1p-70f), denormal = 0x0040;  // 2^-127: a bf16 denormal
  std::vector<uint16_t> w = {tiny, f32_to_bf16(1.0f)}, x(32, 0);
  x[0] = tiny;
  CHECK(std::bit_cast<uint32_t>(dot_reference(w.data(), x.data(), 1)) == 0u);
  x[0] = 0;
  x[1] = denormal;
  CHECK(dot_reference(w.data(), x.data(), 2) == 0.0f);
}

TEST_CASE("bf16 dot: activations round to the nearest bf16, ties to even, zeros after the row") {
  const float x[] = {1.0f, 1.0f + 0x1p-8f, 1.0f + 0x1p-7f + 0x1p-8f, -2.5f, 1.0f + 0x1p-8f + 0x1p-20f};
  uint16_t out[32];
  std::memset(out, 0xff, sizeof out);
  round_activations(x, 5, out);
  CHECK(out[0] == 0x3f80);
  CHECK(out[1] == 0x3f80);  // halfway: to even
  CHECK(out[2] == 0x3f82);  // halfway: to even, upwards
  CHECK(out[3] == 0xc020);
  CHECK(out[4] == 0x3f81);  // above halfway
  int nonzero = 0;
  for (int i = 5; i < 32; ++i) nonzero += out[i] != 0;
  CHECK(nonzero == 0);
  const float nan = std::nanf("");
  round_activations(&nan, 1, out);
  CHECK(std::isnan(bf16_to_f32(out[0])));
}

TEST_CASE("bf16 dot: --cpu-gemm bf16 runs BF16 weights on the kernel at the avx512bf16 level, float below it") {
  if (!cpu_has_bf16()) return;
  hearth::testing::CpuGemmScope bf16(CpuGemm::kBf16);
  std::mt19937 rng(73);
  std::normal_distribution<float> g(0.0f, 1.0f);
  const int64_t rows = 13, cols = 300, tokens = 6;
  std::vector<uint16_t> wb(size_t(rows * cols));
  for (auto& v : wb) v = f32_to_bf16(g(rng));
  std::vector<float> x(size_t(tokens * cols));
  for (auto& v : x) v = g(rng);
  WeightMatrix w;
  w.dtype = DType::BF16;
  w.rows = rows;
  w.cols = cols;
  w.data = wb.data();
  std::vector<float> y(size_t(tokens * rows)), y_avx2(size_t(tokens * rows)), y_kernels(size_t(tokens * rows));
  matmul_rows(w, x.data(), cols, tokens, y.data(), rows, 0, rows, KernelIsa::kAvx512Bf16);
  matmul_rows(w, x.data(), cols, tokens, y_avx2.data(), rows, 0, rows, KernelIsa::kAvx512Vnni);
  {
    hearth::testing::CpuGemmScope kernels(CpuGemm::kKernels);  // the default: float activations
    matmul_rows(w, x.data(), cols, tokens, y_kernels.data(), rows, 0, rows, KernelIsa::kAvx512Bf16);
  }
  CHECK(y_kernels == y_avx2);
  // A token alone gives its bits in the batch.
  std::vector<float> one(static_cast<size_t>(rows));
  matmul_rows(w, x.data() + 5 * cols, cols, 1, one.data(), rows, 0, rows, KernelIsa::kAvx512Bf16);
  CHECK(std::memcmp(one.data(), y.data() + 5 * rows, one.size() * sizeof(float)) == 0);
  std::vector<uint16_t> xb(size_t(padded(cols)));
  int bad = 0;
  double worst = 0;
  for (int64_t t = 0; t < tokens; ++t) {
    round_activations(x.data() + t * cols, cols, xb.data());
    for (int64_t r = 0; r < rows; ++r) {
      const float want = dot_reference(wb.data() + r * cols, xb.data(), cols);
      bad += std::bit_cast<uint32_t>(want) != std::bit_cast<uint32_t>(y[size_t(t * rows + r)]);
      double mag = 0;
      for (int64_t c = 0; c < cols; ++c) mag += std::fabs(double(bf16_to_f32(wb[size_t(r * cols + c)])) * x[size_t(t * cols + c)]);
      worst = std::max(worst, std::fabs(double(y[size_t(t * rows + r)]) - y_avx2[size_t(t * rows + r)]) / mag);
    }
  }
  CHECK(bad == 0);
  // Below the level the activations stay floats: the two differ by the activations'
  // rounding to bf16 only (at most 2^-9 of each product, relative to the sum of their
  // magnitudes), and they do differ.
  CHECK(worst <= 0x1p-9);
  CHECK(worst > 0);
}

}  // namespace quant_bf16_dot_suite

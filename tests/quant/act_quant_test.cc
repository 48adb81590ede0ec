// The activation quantizers (quant/act_quant.h): the AVX2 versions against the scalar
// references, byte for byte, on random rows and on rows built to hit every special path
// (exact rounding ties, NaN, infinities, signed zeros, subnormals, the largest floats, two
// values of equal magnitude and opposite sign).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "quant/act_quant.h"
#include "quant/block_formats.h"
#include "quant/weight_matrix.h"

namespace quant_act_quant_suite {

using namespace hearth;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// Rows of n values: random ones at several scales, then the special ones.
std::vector<std::vector<float>> rows(int64_t n) {
  std::vector<std::vector<float>> out;
  std::mt19937 rng(41);
  // Q8_0's f16 scale (amax / 127) is subnormal below about 6e-5 * 127 and clamped above
  // 65504 * 127: scales on both sides of those edges.
  for (double scale : {1e-30, 5e-8, 1e-6, 3e-5, 2e-3, 1.0, 37.0, 3e6, 1e7, 1e30}) {
    std::normal_distribution<float> g(0.0f, float(scale));
    for (int r = 0; r < 8; ++r) {
      std::vector<float> x(static_cast<size_t>(n));
      for (float& v : x) v = g(rng);
      out.push_back(x);
    }
  }
  // Exact ties. Q8_0: 15.875 = 127 / 8 makes the stored d 1/8 exactly, so (k + 0.5) / 8
  // lands on k + 0.5. Q8_K: 31.75 = 127 / 4 first makes the multiplier -4 exactly.
  for (float top : {15.875f, 31.75f, -31.75f}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      x[size_t(i)] = i % 32 == 0 ? top : float((int(i % 253) - 126) + 0.5) / (std::fabs(top) == 15.875f ? 8.0f : 4.0f);
    out.push_back(x);
  }
  std::vector<float> special(static_cast<size_t>(n));
  const float values[] = {0.0f, -0.0f, kNaN, kInf, -kInf, 1e-40f, -1e-45f, 3.4e38f, -3.4e38f, 5.0f, -5.0f, 0.5f};
  for (int64_t i = 0; i < n; ++i) special[size_t(i)] = values[size_t(i * 7 % 12)];
  out.push_back(special);
  std::vector<float> zeros(size_t(n), 0.0f), nans(size_t(n), kNaN), neg_zero(size_t(n), -0.0f);
  out.push_back(zeros);
  out.push_back(nans);
  out.push_back(neg_zero);
  // Equal magnitudes of both signs: the first of them decides Q8_K's sign.
  std::vector<float> both(size_t(n), 1.0f);
  for (int64_t i = 0; i < n; i += 32) {
    both[size_t(i + 3)] = -6.0f;
    both[size_t(i + 7)] = 6.0f;
  }
  out.push_back(both);
  // One NaN or infinity in an otherwise ordinary block.
  for (float odd : {kNaN, kInf, -kInf}) {
    std::vector<float> x = out[10];
    for (int64_t i = 5; i < n; i += 97) x[size_t(i)] = odd;
    out.push_back(x);
  }
  return out;
}

template <class Block>
bool same_bytes(const std::vector<Block>& a, const std::vector<Block>& b) {
  return std::memcmp(a.data(), b.data(), a.size() * sizeof(Block)) == 0;
}

}  // namespace

TEST_CASE("activation quantizers: AVX2 writes the scalar reference's bytes for Q8_0 and Q8_K") {
  if (!has_avx2(cpu_isa())) {
    MESSAGE("CPU lacks AVX2: the AVX2 activation quantizers are not tested");
    return;
  }
  const int64_t n = 2048;
  int row = 0, differ_0 = 0, differ_k = 0;
  for (const std::vector<float>& x : rows(n)) {
    INFO("row " << row++);
    std::vector<BlockQ8_0> s0(n / 32), v0(n / 32), d0(n / 32);
    act_quant::q8_0_scalar(x.data(), s0.data(), n);
    act_quant::q8_0_avx2(x.data(), v0.data(), n);
    quantize_row_q8_0(x.data(), d0.data(), n);  // the dispatcher
    differ_0 += !same_bytes(s0, v0);
    CHECK(same_bytes(s0, d0));
    std::vector<BlockQ8_K> sk(n / 256), vk(n / 256), dk(n / 256);
    act_quant::q8_k_scalar(x.data(), sk.data(), n);
    act_quant::q8_k_avx2(x.data(), vk.data(), n);
    quantize_row_q8_k(x.data(), dk.data(), n);
    differ_k += !same_bytes(sk, vk);
    CHECK(same_bytes(sk, dk));
  }
  CHECK(differ_0 == 0);
  CHECK(differ_k == 0);
}

TEST_CASE("activation quantizers: the special rows take the paths they are built for") {
  // Checks on the scalar reference itself, so that the comparison above covers them.
  const int64_t n = 256;
  std::vector<float> tie(size_t(n), 0.0f);
  tie[0] = 15.875f;  // d = 1/8 exactly
  tie[1] = 2.5f / 8;
  tie[2] = -2.5f / 8;
  tie[3] = 3.5f / 8;
  std::vector<BlockQ8_0> q0(n / 32);
  act_quant::q8_0_scalar(tie.data(), q0.data(), n);
  CHECK(q0[0].qs[0] == 127);
  CHECK(q0[0].qs[1] == 3);  // 2.5 rounds away from zero
  CHECK(q0[0].qs[2] == -3);
  CHECK(q0[0].qs[3] == 4);
  std::vector<float> tie_k(size_t(n), 0.0f);
  tie_k[0] = 31.75f;  // multiplier -4 exactly
  tie_k[1] = 2.5f / 4;
  tie_k[2] = 3.5f / 4;
  tie_k[3] = kNaN;
  std::vector<BlockQ8_K> qk(1);
  act_quant::q8_k_scalar(tie_k.data(), qk.data(), n);
  CHECK(qk[0].d == -0.25f);
  CHECK(qk[0].qs[0] == -127);
  CHECK(qk[0].qs[1] == -2);  // -2.5 rounds to even
  CHECK(qk[0].qs[2] == -4);  // -3.5 rounds to even
  CHECK(qk[0].qs[3] == 0);   // NaN
  std::vector<float> both(size_t(n), 1.0f);
  both[3] = -6.0f;
  both[7] = 6.0f;
  act_quant::q8_k_scalar(both.data(), qk.data(), n);
  CHECK(qk[0].qs[3] == -127);  // the first of the two (-6) is the one that maps to -127
  CHECK(qk[0].qs[7] == 127);
  CHECK(qk[0].d == float(6.0 / 127.0));
}

TEST_CASE("activation quantizers: Q8_0 levels stay in -127..127, the range the Q8_0 weight kernel takes") {
  // The Q8_0 dot product's sign trick (quant/dot_kernels.inc) is exact only for activations
  // above -128. Every special row: a saturated scale (values past 65504 * 127), subnormal
  // scales, NaN and infinities; a NaN level is -127.
  const int64_t n = 2048;
  int reaching = 0;
  for (const std::vector<float>& x : rows(n)) {
    std::vector<BlockQ8_0> q(n / 32);
    act_quant::q8_0_scalar(x.data(), q.data(), n);
    int8_t lowest = 0;
    for (const BlockQ8_0& b : q)
      for (int8_t v : b.qs) lowest = std::min(lowest, v);
    CHECK(lowest >= -127);
    reaching += lowest == -127;
  }
  CHECK(reaching > 10);  // the clamp is met, not only the usual range
  std::vector<float> nans(32, kNaN), huge(32, -3.0e38f);
  huge[0] = 1.0f;  // d saturates at 65504: -3e38 / 65504 clamps
  BlockQ8_0 b;
  act_quant::q8_0_scalar(nans.data(), &b, 32);
  CHECK(b.qs[0] == -127);
  act_quant::q8_0_scalar(huge.data(), &b, 32);
  CHECK(b.qs[1] == -127);
  CHECK(b.qs[0] == 0);
}

}  // namespace quant_act_quant_suite

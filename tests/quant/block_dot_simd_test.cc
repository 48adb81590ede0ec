// The AVX2 dot products (BlockFormat::vec_dot_avx2, quant/dot_avx2.cc) against the
// scalar references (BlockFormat::vec_dot). Their integer sums are exact, so they may
// differ only by float rounding and summation order: |simd - scalar| is held to 1e-5 of
// the sum of the magnitudes of the terms (plus a tiny absolute slack for underflow).
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

#include "quant/block_formats.h"
#include "quant/numbers.h"
#include "quant/weight_matrix.h"
#include "support/block_rows.h"

namespace quant_block_dot_simd_suite {

using namespace hearth;
using namespace hearth::testing;

namespace {

bool have_avx2() { return has_avx2(best_isa()); }

std::vector<double> dequantize(const BlockFormat& f, const uint8_t* blocks, int64_t n) {
  std::vector<float> y(static_cast<size_t>(n));
  f.dequantize_row(blocks, y.data(), n);
  return {y.begin(), y.end()};
}

// sum_i |a_i| * (|level part of w_i| + |min part of w_i|): dequantizing with dmin zeroed
// gives the level parts, with d zeroed the min parts.
double magnitude(const BlockFormat& f, const std::vector<uint8_t>& w, const std::vector<uint8_t>& a,
                 int64_t n) {
  const auto av = dequantize(block_format(f.vec_dot_type), a.data(), n);
  const Factors fa = factors(f.type);
  auto with_zeroed = [&](int off) {
    std::vector<uint8_t> c = w;
    if (off >= 0)
      for (int64_t ib = 0; ib < n / f.block_elems; ++ib) put_half(c.data() + ib * f.block_bytes + off, 0);
    return dequantize(f, c.data(), n);
  };
  const auto levels = with_zeroed(fa.dmin), mins = with_zeroed(fa.d);
  double mag = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double mpart = fa.dmin >= 0 ? std::fabs(mins[size_t(i)]) : 0.0;
    mag += std::fabs(av[size_t(i)]) * (std::fabs(levels[size_t(i)]) + mpart);
  }
  return mag;
}

// Checks the AVX2 kernel against the scalar one on one row pair; returns whether they agree.
bool agrees(const BlockFormat& f, const std::vector<uint8_t>& w, const std::vector<uint8_t>& a,
            int64_t n) {
  const float ref = f.vec_dot(w.data(), a.data(), n);
  const float got = f.vec_dot_avx2(w.data(), a.data(), n);
  const double mag = magnitude(f, w, a, n);
  const double tol = 1e-5 * mag + 1e-30;
  const bool ok = std::isfinite(ref) && std::fabs(double(got) - double(ref)) <= tol;
  if (!ok) {
    CAPTURE(f.name);
    CAPTURE(n);
    CAPTURE(ref);
    CAPTURE(got);
    CAPTURE(mag);
    FAIL_CHECK("simd and scalar dot products differ");
  }
  return ok;
}

#define SKIP_WITHOUT_AVX2()                                   \
  if (!have_avx2()) {                                          \
    MESSAGE("CPU lacks AVX2/FMA/F16C: AVX2 kernels not tested"); \
    return;                                                    \
  }

}  // namespace

TEST_CASE("block dot simd: kernel table and selection") {
  for (const BlockFormat& f : block_formats()) {
    CAPTURE(f.name);
    bool expect_simd = false;
    for (GgmlType t : kSimdFormats) expect_simd |= t == f.type;
    CHECK((f.vec_dot_avx2 != nullptr) == expect_simd);
    CHECK((vec_dot_kernel(f, KernelIsa::kScalar) == f.vec_dot));
    const VecDotFn avx2 = have_avx2() && expect_simd ? f.vec_dot_avx2 : f.vec_dot;
    CHECK((vec_dot_kernel(f, KernelIsa::kAvx2) == avx2));
    // kAuto is the best the CPU has; dot_vnni_test checks the AVX-512 side.
    CHECK((vec_dot_kernel(f) == vec_dot_kernel(f, best_isa())));
  }
}

TEST_CASE("block dot simd: rows that are not whole blocks throw") {
  SKIP_WITHOUT_AVX2();
  std::vector<uint8_t> buf(4096, 0);
  for (GgmlType t : kSimdFormats) {
    const BlockFormat& f = block_format(t);
    CAPTURE(f.name);
    CHECK_THROWS_AS(f.vec_dot_avx2(buf.data(), buf.data(), f.block_elems + 1), std::invalid_argument);
    CHECK_THROWS_AS(f.vec_dot_avx2(buf.data(), buf.data(), -f.block_elems), std::invalid_argument);
    CHECK(f.vec_dot_avx2(buf.data(), buf.data(), 0) == 0.0f);
  }
}

TEST_CASE("block dot simd: random rows of 1 2 7 and 33 blocks match the scalar reference") {
  SKIP_WITHOUT_AVX2();
  std::mt19937 rng(11);
  for (GgmlType t : kSimdFormats) {
    const BlockFormat& f = block_format(t);
    CAPTURE(f.name);
    for (int nblocks : {1, 2, 7, 33}) {
      const int64_t n = nblocks * f.block_elems;
      int failures = 0;
      for (int rep = 0; rep < 20; ++rep) {
        const auto w = weight_row(f, nblocks, rng);
        const auto a = act_row(f, n, rng);
        failures += !agrees(f, w, a, n);
      }
      CHECK(failures == 0);
    }
  }
}

TEST_CASE("block dot simd: quantized gaussian rows match the scalar reference") {
  SKIP_WITHOUT_AVX2();
  std::mt19937 rng(5);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  for (GgmlType t : kSimdFormats) {
    const BlockFormat& f = block_format(t);
    const BlockFormat& act = block_format(f.vec_dot_type);
    CAPTURE(f.name);
    const int64_t n = 33 * kQK_K;
    std::vector<float> x(static_cast<size_t>(n)), y(static_cast<size_t>(n));
    for (float& v : x) v = gauss(rng);
    for (float& v : y) v = std::fabs(gauss(rng)) + 0.25f;  // one-signed: the mins matter
    std::vector<uint8_t> w(size_t(f.row_bytes(n))), a(size_t(act.row_bytes(n)));
    f.quantize_row(x.data(), w.data(), n, nullptr);
    act.quantize_row(y.data(), a.data(), n, nullptr);
    CHECK(agrees(f, w, a, n));
  }
}

TEST_CASE("block dot simd: small integer rows give the exact same float") {
  // Unit scales and activations in -3..3 keep every partial sum an integer below 2^24,
  // so both kernels must produce the exact value.
  SKIP_WITHOUT_AVX2();
  std::mt19937 rng(3);
  for (GgmlType t : kSimdFormats) {
    const BlockFormat& f = block_format(t);
    CAPTURE(f.name);
    for (int nblocks : {1, 2}) {
      const int64_t n = nblocks * f.block_elems;
      for (int rep = 0; rep < 10; ++rep) {
        const auto w = weight_row(f, nblocks, rng, -1, 0x3C00);  // d = dmin = 1
        auto a = act_row(f, n, rng, 0, 1.0f);
        // Quants in -3..3 (and the Q8_K sums to match).
        if (f.vec_dot_type == GgmlType::Q8_0) {
          auto* blk = reinterpret_cast<BlockQ8_0*>(a.data());
          for (int64_t ib = 0; ib < n / kQK8_0; ++ib)
            for (int8_t& v : blk[ib].qs) v = int8_t(int(rng() % 7) - 3);
        } else {
          auto* blk = reinterpret_cast<BlockQ8_K*>(a.data());
          for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
            for (int8_t& v : blk[ib].qs) v = int8_t(int(rng() % 7) - 3);
            for (int j = 0; j < 16; ++j) {
              int s = 0;
              for (int i = 0; i < 16; ++i) s += blk[ib].qs[16 * j + i];
              blk[ib].bsums[j] = int16_t(s);
            }
          }
        }
        CHECK(f.vec_dot_avx2(w.data(), a.data(), n) == f.vec_dot(w.data(), a.data(), n));
      }
    }
  }
}

TEST_CASE("block dot simd: adversarial blocks match the scalar reference") {
  SKIP_WITHOUT_AVX2();
  std::mt19937 rng(17);
  for (GgmlType t : kSimdFormats) {
    const BlockFormat& f = block_format(t);
    CAPTURE(f.name);
    int failures = 0;
    const int cases = for_each_adversarial_row(f, rng, [&](const auto& w, const auto& a, int64_t n) {
      failures += !agrees(f, w, a, n);
    });
    CHECK(cases > 0);
    CHECK(failures == 0);
  }
}

TEST_CASE("block dot simd: all-zero rows give zero and extreme quants give the exact sum") {
  SKIP_WITHOUT_AVX2();
  std::mt19937 rng(1);
  for (GgmlType t : kSimdFormats) {
    const BlockFormat& f = block_format(t);
    CAPTURE(f.name);
    const int64_t n = 2 * f.block_elems;
    const auto wz = weight_row(f, 2, rng, 0x00, 0x0000);
    const auto az = act_row(f, n, rng, 0, 0.0f);
    CHECK(f.vec_dot_avx2(wz.data(), az.data(), n) == 0.0f);
  }
  // Q8_0 at the ends of its sign trick: weights -128 (|x| = 128 as an unsigned byte)
  // against activations -127 and 127, 32 * 128 * 127 per block, each vpmaddubsw pair at
  // 2 * 128 * 127, next to int16's limit.
  const BlockFormat& q8 = block_format(GgmlType::Q8_0);
  const auto w = weight_row(q8, 3, rng, 0x80, 0x3C00);
  for (int quant : {-127, 127}) {
    CAPTURE(quant);
    const auto a = act_row(q8, 3 * kQK8_0, rng, quant, 1.0f);
    const float want = -3.0f * 32 * 128 * float(quant);
    CHECK(q8.vec_dot(w.data(), a.data(), 3 * kQK8_0) == want);
    CHECK(q8.vec_dot_avx2(w.data(), a.data(), 3 * kQK8_0) == want);
  }
}

TEST_CASE("block dot simd: the new formats' extreme levels against -128 activations give the exact sum") {
  // Unit scales, every level at an end and every activation quant -128: the integer
  // sums worked out by hand, exact in float, from both kernels.
  SKIP_WITHOUT_AVX2();
  std::mt19937 rng(2);
  struct Case {
    GgmlType type;
    int fill;              // every weight byte (levels, fifth bits, IQ4_XS scales)
    double per_block;      // the expected sum of one block
  };
  const Case cases[] = {
      {GgmlType::Q4_1, 0xFF, 32.0 * (15 + 1) * -128},       // (1 * 15 + 1) * -128, 32 values
      {GgmlType::Q5_1, 0xFF, 32.0 * (31 + 1) * -128},       // level 31 plus m = 1
      {GgmlType::Q5_0, 0xFF, 32.0 * (31 - 16) * -128},      // level 31 - 16
      {GgmlType::Q5_0, 0x00, 32.0 * (0 - 16) * -128},       // level 0 - 16
      {GgmlType::IQ4_NL, 0x00, 32.0 * -127 * -128},         // index 0: level -127
      {GgmlType::IQ4_NL, 0xFF, 32.0 * 113 * -128},          // index 15: level 113
      {GgmlType::IQ4_XS, 0x00, 256.0 * -32 * -127 * -128},  // stored scale 0: -32
  };
  for (const Case& c : cases) {
    const BlockFormat& f = block_format(c.type);
    CAPTURE(f.name);
    CAPTURE(c.fill);
    const int nblocks = 3;
    const int64_t n = nblocks * f.block_elems;
    const auto w = weight_row(f, nblocks, rng, c.fill, 0x3C00);  // d = m = 1
    const auto a = act_row(f, n, rng, -128, 1.0f);
    CHECK(double(f.vec_dot(w.data(), a.data(), n)) == nblocks * c.per_block);
    CHECK(double(f.vec_dot_avx2(w.data(), a.data(), n)) == nblocks * c.per_block);
  }
}

}  // namespace quant_block_dot_simd_suite

// Attention's vector loops (engine/vec_ops.h): AVX2 against the scalar references and a
// double-precision sum.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <utility>
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

namespace {

struct RowSet {
  int64_t n = 0, dim = 0;
  std::vector<float> data;
  std::vector<const float*> ptrs;
};

// n rows of dim gaussian values, each at its own offset in one buffer (not a matrix: the
// kernels take a pointer per row, as attention's picked positions are scattered).
RowSet make_rows(int64_t n, int64_t dim, std::mt19937& rng) {
  std::normal_distribution<float> g(0.0f, 1.0f);
  RowSet r{n, dim, std::vector<float>(static_cast<size_t>(n * (dim + 3))), {}};
  for (float& v : r.data) v = g(rng);
  for (int64_t j = 0; j < n; ++j) r.ptrs.push_back(r.data.data() + (n - 1 - j) * (dim + 3) + 1);
  return r;
}

}  // namespace

// The SIMD paths this CPU can run, each capping the kernels it reaches (kAvx512 also
// takes the AVX2 kernel where a call has nothing to pair).
std::vector<KernelIsa> simd_paths() {
  std::vector<KernelIsa> paths;
  if (has_avx2(best_isa())) paths.push_back(KernelIsa::kAvx2);
  if (has_avx512(best_isa())) paths.push_back(KernelIsa::kAvx512);
  else MESSAGE("CPU lacks AVX-512: the AVX-512 attention kernels are not tested");
  return paths;
}

TEST_CASE("vec ops: dot_rows_f32 equals its scalar reference and a double sum whatever the tiling") {
  if (!has_avx2(best_isa())) {
    MESSAGE("CPU lacks AVX2: only the scalar dot_rows_f32 is tested");
  }
  std::mt19937 rng(43);
  // Head dims with and without a remainder of 8 (the tail) and the latent-plus-rope 576;
  // query and row counts that fill the 4 x 2 (AVX2) and 4-pair, 2-pair and 1-pair x
  // 6-row (AVX-512) tiles, leave an odd query, a pair or a row remainder, or take a
  // query alone.
  for (int64_t dim : {1, 7, 8, 36, 64, 100, 512, 576}) {
    for (auto [nq, nrows] : {std::pair<int64_t, int64_t>{1, 1}, {4, 2}, {5, 17}, {9, 3}, {3, 8}, {16, 9}, {2, 4}, {7, 13},
                             {8, 12}, {10, 6}, {17, 20}, {5, 7}}) {
      CAPTURE(dim);
      CAPTURE(nq);
      CAPTURE(nrows);
      const RowSet q = make_rows(nq, dim, rng), rows = make_rows(nrows, dim, rng);
      // The queries as a strided matrix (stride dim + 5) as attention passes its heads.
      const int64_t ldq = dim + 5, ldo = nrows + 2;
      std::vector<float> qm(static_cast<size_t>(nq * ldq), 0.0f);
      for (int64_t i = 0; i < nq; ++i) std::memcpy(qm.data() + i * ldq, q.ptrs[size_t(i)], size_t(dim) * sizeof(float));
      std::vector<float> ref(static_cast<size_t>(nq * ldo), -1.0f), got = ref;
      dot_rows_f32(qm.data(), ldq, nq, rows.ptrs.data(), nrows, dim, ref.data(), ldo, KernelIsa::kScalar);
      for (KernelIsa isa : simd_paths()) {
        const std::string isa_label = isa_name(isa);
        CAPTURE(isa_label);
        std::vector<float> simd = ref;
        std::fill(simd.begin(), simd.end(), -1.0f);
        dot_rows_f32(qm.data(), ldq, nq, rows.ptrs.data(), nrows, dim, simd.data(), ldo, isa);
        CHECK(std::memcmp(ref.data(), simd.data(), ref.size() * sizeof(float)) == 0);
      }
      dot_rows_f32(qm.data(), ldq, nq, rows.ptrs.data(), nrows, dim, got.data(), ldo, KernelIsa::kAuto);
      CHECK(std::memcmp(ref.data(), got.data(), ref.size() * sizeof(float)) == 0);
      for (int64_t i = 0; i < nq; ++i)
        for (int64_t j = 0; j < nrows; ++j) {
          double exact = 0, mag = 0;
          for (int64_t d = 0; d < dim; ++d) {
            const double p = double(qm[size_t(i * ldq + d)]) * rows.ptrs[size_t(j)][d];
            exact += p;
            mag += std::fabs(p);
          }
          CHECK(std::fabs(double(got[size_t(i * ldo + j)]) - exact) <= 1e-6 * mag + 1e-30);
          // The same pair alone: a 1 x 1 call gives the same bits as inside any tile.
          float alone = 0.0f;
          dot_rows_f32(qm.data() + i * ldq, ldq, 1, rows.ptrs.data() + j, 1, dim, &alone, 1, KernelIsa::kAuto);
          CHECK(std::memcmp(&alone, &got[size_t(i * ldo + j)], sizeof(float)) == 0);
        }
    }
  }
}

TEST_CASE("vec ops: weighted_rows_f32 equals axpy_f32 calls in row order bit for bit") {
  std::mt19937 rng(44);
  std::normal_distribution<float> g(0.0f, 1.0f);
  // Widths that fill 48- (eight queries), 32- and 16-column (AVX-512) or 16- and
  // 8-column (AVX2) tiles, and leave remainders of each; query counts that fill blocks of
  // eight, four and one; row counts past a block of 32 (whose tiles ask for the next
  // block's rows).
  for (int64_t dim : {1, 8, 13, 16, 24, 40, 48, 57, 104, 512}) {
    for (auto [nq, nrows] : {std::pair<int64_t, int64_t>{1, 1}, {4, 5}, {6, 9}, {3, 2}, {16, 40}, {8, 70}, {13, 33}}) {
      CAPTURE(dim);
      CAPTURE(nq);
      CAPTURE(nrows);
      const RowSet rows = make_rows(nrows, dim, rng);
      const int64_t ldp = nrows + 1, ldo = dim + 3;
      std::vector<float> p(static_cast<size_t>(nq * ldp)), start(static_cast<size_t>(nq * ldo));
      for (float& v : p) v = g(rng);
      for (float& v : start) v = g(rng);
      std::vector<float> ref = start;
      for (int64_t i = 0; i < nq; ++i)
        for (int64_t j = 0; j < nrows; ++j)
          axpy_f32(p[size_t(i * ldp + j)], rows.ptrs[size_t(j)], ref.data() + i * ldo, dim, KernelIsa::kScalar);
      std::vector<KernelIsa> paths = simd_paths();
      paths.push_back(KernelIsa::kScalar);
      for (KernelIsa isa : paths) {
        const std::string isa_label = isa_name(isa);
        CAPTURE(isa_label);
        std::vector<float> got = start;
        weighted_rows_f32(p.data(), ldp, nq, rows.ptrs.data(), nrows, dim, got.data(), ldo, isa);
        CHECK(std::memcmp(ref.data(), got.data(), ref.size() * sizeof(float)) == 0);
      }
    }
  }
}

TEST_CASE("vec ops: exp_shifted_f32 gives the scalar reference's bits on every path, within 1.5e-7 of exp") {
  // Accuracy of the scalar reference over a dense grid of softmax's arguments (<= 0).
  double worst = 0;
  for (int i = 0; i <= 870000; ++i) {
    const float x = -float(i) * 1e-4f;
    float v = x;
    exp_shifted_f32(&v, 1, 0.0f, KernelIsa::kScalar);
    const double ref = std::exp(double(x));
    worst = std::max(worst, std::fabs(double(v) - ref) / ref);
  }
  CAPTURE(worst);
  CHECK(worst <= 1.5e-7);  // measured: 7.7e-8
  {
    float v[4] = {0.0f, -87.5f, -INFINITY, -1000.0f};
    const double sum = exp_shifted_f32(v, 4, 0.0f, KernelIsa::kScalar);
    CHECK(v[0] == 1.0f);  // exp(0) exactly
    CHECK(v[1] == 0.0f);  // below -87: 0, as are -inf and anything further down
    CHECK(v[2] == 0.0f);
    CHECK(v[3] == 0.0f);
    CHECK(sum == 1.0);
  }
  // Every SIMD path against the scalar reference, bit for bit: values and sum, for lengths
  // around the 16-lane steps, shifts by a row maximum, and -inf / tiny / zero arguments.
  std::mt19937 rng(57);
  std::uniform_real_distribution<float> u(-100.0f, 5.0f);
  const std::vector<KernelIsa> paths = simd_paths();
  int compared = 0;
  for (int64_t n : {0, 1, 5, 15, 16, 17, 31, 33, 100, 2048}) {
    for (int rep = 0; rep < 4; ++rep) {
      std::vector<float> x(static_cast<size_t>(n));
      for (float& v : x) v = u(rng);
      if (n > 3) {
        x[1] = -INFINITY;
        x[2] = -86.99f;
        x[3] = 0.0f;
      }
      float m = -INFINITY;
      for (float v : x) m = std::max(m, v);
      if (n == 0) m = 0.0f;
      std::vector<float> ref = x;
      const double ref_sum = exp_shifted_f32(ref.data(), n, m, KernelIsa::kScalar);
      for (KernelIsa isa : paths) {
        CAPTURE(n);
        CAPTURE(int(isa));
        std::vector<float> got = x;
        const double sum = exp_shifted_f32(got.data(), n, m, isa);
        CHECK(std::memcmp(got.data(), ref.data(), got.size() * sizeof(float)) == 0);
        CHECK(std::memcmp(&sum, &ref_sum, sizeof sum) == 0);
        ++compared;
      }
    }
  }
  if (!paths.empty()) CHECK(compared == 40 * int(paths.size()));
}

TEST_CASE("vec ops: argmax_f32 is the first largest element on every path, NaN skipped") {
  // An independent reference: std::max_element over the non-NaN elements (the first of
  // equal largest ones).
  auto reference = [](const std::vector<float>& x) -> int64_t {
    int64_t best = -1;
    for (size_t i = 0; i < x.size(); ++i)
      if (!std::isnan(x[i]) && x[i] != -INFINITY && (best < 0 || x[i] > x[size_t(best)])) best = int64_t(i);
    return best;
  };
  std::mt19937 rng(17);
  std::uniform_int_distribution<int> level(-3, 3);  // few distinct values: many ties
  int compared = 0;
  for (int64_t n : {0, 1, 7, 8, 9, 15, 16, 17, 33, 1000, 129280}) {
    for (int rep = 0; rep < 6; ++rep) {
      std::vector<float> x(static_cast<size_t>(n));
      for (float& v : x) v = float(level(rng));
      if (rep == 1)
        for (size_t i = 0; i < x.size(); i += 3) x[i] = NAN;  // NaN among the candidates
      if (rep == 2) std::fill(x.begin(), x.end(), NAN);     // nothing to pick
      if (rep == 3) std::fill(x.begin(), x.end(), -INFINITY);
      if (rep == 4 && n > 2) x[size_t(n - 1)] = INFINITY;  // in the scalar tail or the last vector
      if (rep == 5 && n > 0) x[size_t(n / 2)] = 100.0f;
      const int64_t want = reference(x);
      for (KernelIsa isa : {KernelIsa::kScalar, KernelIsa::kAuto}) {
        CAPTURE(n);
        CAPTURE(rep);
        CAPTURE(int(isa));
        CHECK(argmax_f32(x.data(), n, isa) == want);
        ++compared;
      }
    }
  }
  CHECK(compared == 11 * 6 * 2);
}

}  // namespace engine_vec_ops_suite

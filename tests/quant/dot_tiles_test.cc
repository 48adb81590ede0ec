// The tile kernels (quant/dot_tiles.h) against the one-row AVX2 kernels, which
// block_dot_simd_test checks against the scalar references. A tile must give every row
// the very same float, bit for bit, so batched matmuls never change a token's result.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "quant/block_formats.h"
#include "quant/dot_tiles.h"
#include "quant/weight_matrix.h"
#include "support/block_rows.h"

namespace quant_dot_tiles_suite {

using namespace hearth;
using namespace hearth::testing;

namespace {

// Runs the tile on w against four activation rows and compares each output's bits with
// the one-row kernel's; returns the number of rows that differ.
int tile_mismatches(const BlockFormat& f, const std::vector<uint8_t>& w, const ActRows4& a,
                    int64_t n) {
  const void* rows[4] = {a[0].data(), a[1].data(), a[2].data(), a[3].data()};
  int bad = 0;
  // The four-token tile, and the two- and three-token ones on the first rows.
  for (int tokens = 2; tokens <= 4; ++tokens) {
    const VecDot4Fn tile = vec_dot_tile_kernel(f, tokens);
    float out[4];
    tile(w.data(), rows, n, out);
    for (int t = 0; t < tokens; ++t) {
      const float one = f.vec_dot_avx2(w.data(), a[t].data(), n);
      if (float_bits(one) != float_bits(out[t])) {
        CAPTURE(f.name);
        CAPTURE(n);
        CAPTURE(tokens);
        CAPTURE(t);
        CAPTURE(one);
        CAPTURE(out[t]);
        FAIL_CHECK("tile and one-row kernel differ");
        ++bad;
      }
    }
  }
  return bad;
}

}  // namespace

TEST_CASE("dot tiles: kernel table") {
  for (const BlockFormat& f : block_formats()) {
    CAPTURE(f.name);
    CHECK((vec_dot4_kernel(f, KernelIsa::kScalar) == nullptr));
    bool tiled = false;
    for (GgmlType t : kTiledFormats) tiled |= f.type == t;
    const bool expect = tiled && has_avx2(best_isa());
    CHECK((vec_dot4_kernel(f) != nullptr) == expect);
    CHECK((vec_dot4_kernel(f) == vec_dot_tile_kernel(f, 4)));
    CHECK((vec_dot_tile_kernel(f, 2) != nullptr) == expect);
    CHECK((vec_dot_tile_kernel(f, 3) != nullptr) == expect);
    CHECK((vec_dot_tile_kernel(f, 1) == nullptr));
    CHECK((vec_dot_tile_kernel(f, 5) == nullptr));
  }
}

TEST_CASE("dot tiles: four-row kernels equal the one-row kernel bit for bit") {
  if (!has_avx2(best_isa())) {
    MESSAGE("CPU lacks AVX2/FMA/F16C: tile kernels not tested");
    return;
  }
  std::mt19937 rng(23);
  const int fills[] = {0x00, 0xFF, 0x80, 0x7F, 0x55, -1};
  const int halves[] = {0x7BFF, 0xFBFF, 0x0001, 0x03FF, 0x3C00, 0x8000, -1};
  for (GgmlType t : kTiledFormats) {
    const BlockFormat& f = block_format(t);
    CAPTURE(f.name);
    int bad = 0, cases = 0;
    for (int nblocks : {1, 2, 3, 8}) {
      const int64_t n = nblocks * f.block_elems;
      // Random blocks, several activation rows of random quants and scales.
      for (int rep = 0; rep < 20; ++rep) {
        const auto w = weight_row(f, nblocks, rng);
        const ActRows4 a = random_act_rows(f, n, rng);
        bad += tile_mismatches(f, w, a, n);
        ++cases;
      }
      // Adversarial weights against a mix of extreme, zero and random activations.
      for (int fill : fills)
        for (int half : halves) {
          const auto w = weight_row(f, nblocks, rng, fill, half);
          const ActRows4 a = extreme_act_rows(f, n, rng);
          bad += tile_mismatches(f, w, a, n);
          ++cases;
        }
    }
    CHECK(cases > 100);
    CHECK(bad == 0);
  }
}

TEST_CASE("dot tiles: two-by-four kernels equal the one-row kernel bit for bit") {
  if (!has_avx2(best_isa())) {
    MESSAGE("CPU lacks AVX2/FMA/F16C: tile kernels not tested");
    return;
  }
  for (const BlockFormat& f : block_formats())
    CHECK((vec_dot2x4_kernel(f) != nullptr) == (f.type == GgmlType::Q8_0));
  const BlockFormat& f = block_format(GgmlType::Q8_0);
  const VecDot2x4Fn dot2x4 = vec_dot2x4_kernel(f);
  REQUIRE((dot2x4 != nullptr));
  std::mt19937 rng(29);
  const int fills[] = {0x00, 0xFF, 0x80, 0x7F, -1};
  const int halves[] = {0x7BFF, 0xFBFF, 0x0001, 0x3C00, -1};
  int bad = 0, cases = 0;
  for (int nblocks : {1, 2, 3, 8})
    for (int fill : fills)
      for (int half : halves) {
        const int64_t n = nblocks * f.block_elems;
        // Row 0 adversarial (or random), row 1 random: the two rows must not leak into each other.
        const std::vector<uint8_t> w[2] = {weight_row(f, nblocks, rng, fill, half), weight_row(f, nblocks, rng)};
        const ActRows4 a = extreme_act_rows(f, n, rng);
        const void* rows[4] = {a[0].data(), a[1].data(), a[2].data(), a[3].data()};
        float out[8];
        dot2x4(w[0].data(), w[1].data(), rows, n, out);
        for (int k = 0; k < 2; ++k)
          for (int t = 0; t < 4; ++t) {
            const float one = f.vec_dot_avx2(w[k].data(), a[t].data(), n);
            if (float_bits(one) != float_bits(out[k * 4 + t])) {
              CAPTURE(n);
              CAPTURE(k);
              CAPTURE(t);
              FAIL_CHECK("two-by-four tile and one-row kernel differ");
              ++bad;
            }
          }
        ++cases;
      }
  CHECK(cases == 100);
  CHECK(bad == 0);
}

TEST_CASE("dot tiles: eight-row one-token kernels equal the one-row kernel bit for bit") {
  for (const BlockFormat& f : block_formats())
    CHECK((vec_dot_rows_kernel(f) != nullptr) == (f.type == GgmlType::Q8_0 && has_avx512(best_isa())));
  if (!has_avx512(best_isa())) {
    MESSAGE("CPU lacks AVX-512: the rows kernels are not tested");
    return;
  }
  const BlockFormat& f = block_format(GgmlType::Q8_0);
  // Both AVX-512 levels the CPU has: F/BW, and VNNI where present.
  std::vector<KernelIsa> isas = {KernelIsa::kAvx512};
  if (has_vnni(best_isa())) isas.push_back(KernelIsa::kAvx512Vnni);
  std::mt19937 rng(31);
  const int fills[] = {0x00, 0xFF, 0x80, 0x7F, -1};
  const int halves[] = {0x7BFF, 0xFBFF, 0x0001, 0x3C00, -1};
  int bad = 0, cases = 0;
  for (KernelIsa isa : isas) {
    CAPTURE(isa_name(isa));
    const VecDotRowsFn rows = vec_dot_rows_kernel(f, isa);
    REQUIRE((rows != nullptr));
    for (int nblocks : {1, 2, 3, 4, 5, 8})
      for (int fill : fills)
        for (int half : halves) {
          const int64_t n = nblocks * f.block_elems, row_bytes = f.row_bytes(n);
          // Eight rows at a stride with a gap after each (the kernel must step by the
          // stride, not the row's size); row k is adversarial where k is even.
          const int64_t stride = row_bytes + 40;
          std::vector<uint8_t> w(size_t(kDotRows * stride), 0xA5);
          for (int k = 0; k < kDotRows; ++k) {
            const std::vector<uint8_t> row = k % 2 == 0 ? weight_row(f, nblocks, rng, fill, half) : weight_row(f, nblocks, rng);
            std::memcpy(w.data() + k * stride, row.data(), row.size());
          }
          const ActRows4 a = extreme_act_rows(f, n, rng);
          for (int t = 0; t < 4; ++t) {
            float out[kDotRows];
            rows(w.data(), stride, a[t].data(), n, out);
            for (int k = 0; k < kDotRows; ++k) {
              const float one = f.vec_dot_avx2(w.data() + k * stride, a[t].data(), n);
              if (float_bits(one) != float_bits(out[k])) {
                CAPTURE(n);
                CAPTURE(k);
                CAPTURE(t);
                CAPTURE(one);
                CAPTURE(out[k]);
                FAIL_CHECK("rows kernel and one-row kernel differ");
                ++bad;
              }
            }
            ++cases;
          }
        }
  }
  CHECK(cases >= 600);
  CHECK(bad == 0);
}

TEST_CASE("dot tiles: one token against short Q8_0 rows, eight per call, equals a row at a time") {
  // 128 columns (absorbed attention's k_b rows): matmul_rows takes them eight at a time
  // through the rows kernel where the CPU has one, and the rows left over one at a time.
  std::mt19937 rng(37);
  std::normal_distribution<float> g(0.0f, 1.0f);
  const BlockFormat& f = block_format(GgmlType::Q8_0);
  for (int64_t cols : {int64_t(128), int64_t(96), int64_t(512)}) {
    CAPTURE(cols);
    const int64_t rows = 29;
    std::vector<float> wf(static_cast<size_t>(rows * cols)), x(static_cast<size_t>(cols));
    for (float& v : wf) v = g(rng);
    for (float& v : x) v = g(rng);
    std::vector<uint8_t> wq(size_t(rows * f.row_bytes(cols)));
    for (int64_t r = 0; r < rows; ++r)
      f.quantize_row(wf.data() + r * cols, wq.data() + r * f.row_bytes(cols), cols, nullptr);
    const WeightMatrix w{DType::Q8_0, rows, cols, wq.data()};
    std::vector<uint8_t> xq(size_t(f.row_bytes(cols)));
    f.quantize_row(x.data(), xq.data(), cols, nullptr);
    for (int64_t r0 : {int64_t(0), int64_t(3)}) {
      CAPTURE(r0);
      std::vector<float> y(size_t(rows), -1.0f);
      matmul_rows(w, x.data(), cols, 1, y.data(), rows, r0, rows);
      for (int64_t r = 0; r < rows; ++r) {
        CAPTURE(r);
        if (r < r0) {
          CHECK(y[size_t(r)] == -1.0f);  // outside the range: untouched
          continue;
        }
        const float one = vec_dot_kernel(f)(wq.data() + r * f.row_bytes(cols), xq.data(), cols);
        CHECK(float_bits(one) == float_bits(y[size_t(r)]));
      }
    }
  }
}

TEST_CASE("dot tiles: matmul_rows over many tokens equals one token at a time bit for bit") {
  // Formats with and without a tile kernel; n covers whole tiles, remainders of 1 to 3
  // tokens and n < 4, and 243 tokens: more than one block of tokens that share L2 (240 at
  // these 512 columns for Q8_0 activations, 224 for Q8_K's), the last block ending in a
  // remainder.
  const DType types[] = {DType::Q8_0, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::Q4_0, DType::Q3_K};
  std::mt19937 rng(5);
  std::normal_distribution<float> g(0.0f, 1.0f);
  const int64_t rows = 6, cols = 512;
  for (DType dt : types) {
    const BlockFormat& f = *block_format_of(dt);
    CAPTURE(f.name);
    std::vector<float> wf(size_t(rows * cols));
    for (float& v : wf) v = g(rng);
    std::vector<uint8_t> wq(size_t(rows * f.row_bytes(cols)));
    for (int64_t r = 0; r < rows; ++r)
      f.quantize_row(wf.data() + r * cols, wq.data() + r * f.row_bytes(cols), cols, nullptr);
    const WeightMatrix w{dt, rows, cols, wq.data()};
    for (int64_t n : {2, 3, 4, 5, 6, 7, 9, 243}) {
      CAPTURE(n);
      std::vector<float> x(size_t(n * cols));
      for (float& v : x) v = g(rng);
      std::vector<float> batched(size_t(n * rows)), single(size_t(n * rows));
      matmul_rows(w, x.data(), cols, n, batched.data(), rows, 0, rows);
      for (int64_t t = 0; t < n; ++t) matmul_rows(w, x.data() + t * cols, cols, 1, single.data() + t * rows, rows, 0, rows);
      CHECK(std::memcmp(batched.data(), single.data(), batched.size() * sizeof(float)) == 0);
      // An odd row range (weight rows in pairs, then one left over) gives the same values.
      std::vector<float> part(size_t(n * rows), 0.0f);
      matmul_rows(w, x.data(), cols, n, part.data(), rows, 1, rows);
      for (int64_t t = 0; t < n; ++t)
        CHECK(std::memcmp(part.data() + t * rows + 1, batched.data() + t * rows + 1, (rows - 1) * sizeof(float)) == 0);

      // The same through prepared activation rows, picked out of order.
      ActivationRows prepared;
      prepared.prepare(dt, x.data(), cols, n, cols);
      std::vector<int32_t> pick(static_cast<size_t>(n));
      for (int64_t t = 0; t < n; ++t) pick[size_t(t)] = int32_t(n - 1 - t);
      std::vector<float> picked(size_t(n * rows));
      matmul_rows(w, prepared, pick.data(), n, picked.data(), rows, 0, rows);
      for (int64_t t = 0; t < n; ++t)
        CHECK(std::memcmp(picked.data() + t * rows, single.data() + (n - 1 - t) * rows, size_t(rows) * sizeof(float)) == 0);
    }
  }
}

}  // namespace quant_dot_tiles_suite

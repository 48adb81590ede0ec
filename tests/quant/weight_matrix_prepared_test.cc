// The entry points that share work across calls: ActivationRows + matmul_rows (rows
// quantized once, picked by index) must give exactly what matmul_rows gives on the float
// rows; matmul_t_accumulate_rows exactly what one matmul_t_accumulate per row gives;
// row_slice exactly the rows of the full matrix.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <utility>
#include <vector>

#include "quant/block_formats.h"
#include "quant/numbers.h"
#include "quant/weight_matrix.h"

namespace quant_weight_matrix_prepared_suite {

using namespace hearth;

namespace {

constexpr DType kTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::F8_E4M3, DType::Q8_0,
                            DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,    DType::IQ4_NL,
                            DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K,    DType::Q6_K, DType::IQ4_XS};

struct Weight {
  std::vector<uint64_t> storage;  // 8-byte aligned
  std::vector<float> scales;      // F8_E4M3 block scales
  WeightMatrix w;
};

Weight make(DType dt, int64_t rows, int64_t cols, std::mt19937& rng) {
  Weight out;
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> src(static_cast<size_t>(cols));
  const int64_t rb = is_block_dtype(dt) ? row_bytes(dt, cols) : cols * int64_t(dtype_size(dt));
  out.storage.assign(size_t((rows * rb + 7) / 8), 0);
  auto* bytes = reinterpret_cast<uint8_t*>(out.storage.data());
  for (int64_t r = 0; r < rows; ++r) {
    for (float& v : src) v = g(rng) * 0.5f + (r % 3 == 0 ? 0.2f : 0.0f);
    uint8_t* row = bytes + r * rb;
    if (is_block_dtype(dt)) {
      block_format_of(dt)->quantize_row(src.data(), row, cols, nullptr);
      continue;
    }
    for (int64_t c = 0; c < cols; ++c) {
      const float v = src[size_t(c)];
      switch (dt) {
        case DType::F32: std::memcpy(row + 4 * c, &v, 4); break;
        case DType::F16: { const uint16_t h = f32_to_f16(v); std::memcpy(row + 2 * c, &h, 2); break; }
        case DType::BF16: { const uint16_t h = f32_to_bf16(v); std::memcpy(row + 2 * c, &h, 2); break; }
        default: row[c] = f32_to_fp8_e4m3(v * 50.0f); break;
      }
    }
  }
  out.w.dtype = dt;
  out.w.rows = rows;
  out.w.cols = cols;
  out.w.data = out.storage.data();
  if (dt == DType::F8_E4M3) {
    out.w.block = 128;
    out.scales.resize(size_t(((rows + 127) / 128) * ((cols + 127) / 128)));
    for (float& s : out.scales) s = 0.01f + 0.02f * std::uniform_real_distribution<float>(0, 1)(rng);
    out.w.scale = out.scales.data();
  }
  return out;
}

int64_t cols_for(DType dt) { return is_block_dtype(dt) && dtype_block_elems(dt) == kQK_K ? 2 * kQK_K : 320; }

}  // namespace

TEST_CASE("weight matrix prepared: ActivationRows matmul equals matmul_rows on the picked float rows") {
  std::mt19937 rng(11);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (DType dt : kTypes) {
    CAPTURE(dtype_name(dt));
    const int64_t rows = 19, cols = cols_for(dt), T = 5;
    const Weight wt = make(dt, rows, cols, rng);
    std::vector<float> x(static_cast<size_t>(T * cols));
    for (float& v : x) v = g(rng);
    ActivationRows a;
    a.prepare(dt, x.data(), cols, T, cols);
    CHECK(a.fits(wt.w));
    CHECK(a.rows() == T);
    const std::vector<int32_t> pick = {4, 0, 2};
    for (KernelIsa isa : {KernelIsa::kScalar, KernelIsa::kAvx2}) {
      for (int64_t n : {int64_t(1), int64_t(3)}) {
        CAPTURE(n);
        // The reference: the picked rows gathered, then the float entry point.
        std::vector<float> xg(static_cast<size_t>(n * cols));
        for (int64_t t = 0; t < n; ++t) std::copy_n(x.data() + pick[size_t(t)] * cols, cols, xg.data() + t * cols);
        const int64_t ldy = rows + 2, r0 = 3, r1 = 17;
        std::vector<float> want(static_cast<size_t>(n * ldy), -7.0f), got = want, got_all = want, want_all = want;
        matmul_rows(wt.w, xg.data(), cols, n, want.data(), ldy, r0, r1, isa);
        matmul_rows(wt.w, a, pick.data(), n, got.data(), ldy, r0, r1, isa);
        CHECK(got == want);  // bit-identical, untouched entries included
        // pick == nullptr: the first n rows.
        matmul_rows(wt.w, x.data(), cols, n, want_all.data(), ldy, 0, rows, isa);
        matmul_rows(wt.w, a, nullptr, n, got_all.data(), ldy, 0, rows, isa);
        CHECK(got_all == want_all);
      }
    }
  }
}

TEST_CASE("weight matrix prepared: rows prepared for another format or width are refused") {
  std::mt19937 rng(12);
  const Weight q8 = make(DType::Q8_0, 4, 512, rng), q4k = make(DType::Q4_K, 4, 512, rng),
               q6k = make(DType::Q6_K, 4, 512, rng), f32 = make(DType::F32, 4, 512, rng);
  std::vector<float> x(512, 0.5f), y(8);
  ActivationRows a;
  a.prepare(DType::Q4_K, x.data(), 512, 1, 512);
  CHECK(a.fits(q6k.w));  // both take Q8_K activations
  CHECK(!a.fits(q8.w));
  CHECK(!a.fits(f32.w));
  CHECK_THROWS_AS(matmul_rows(q8.w, a, nullptr, 1, y.data(), 4, 0, 4), std::invalid_argument);
  a.prepare(DType::Q8_0, x.data(), 256, 1, 256);
  CHECK(!a.fits(q8.w));  // width differs
  a.prepare(DType::F32, x.data(), 512, 1, 512);
  CHECK(a.fits(f32.w));
  CHECK(!a.fits(q4k.w));
}

TEST_CASE("weight matrix prepared: matmul_t_accumulate_rows equals one matmul_t_accumulate per row") {
  std::mt19937 rng(13);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (DType dt : kTypes) {
    CAPTURE(dtype_name(dt));
    const int64_t rows = 7, cols = cols_for(dt), n = 3, ldx = 9, ldy = cols + 5;
    const Weight wt = make(dt, rows, cols, rng);
    std::vector<float> x(static_cast<size_t>(n * ldx)), y0(static_cast<size_t>(n * ldy));
    for (float& v : x) v = g(rng);
    for (float& v : y0) v = g(rng);
    for (KernelIsa isa : {KernelIsa::kScalar, KernelIsa::kAvx2}) {
      for (auto [c0, c1] : {std::pair<int64_t, int64_t>{0, cols}, {5, cols - 33}}) {
        std::vector<float> want = y0, got = y0;
        for (int64_t t = 0; t < n; ++t) matmul_t_accumulate(wt.w, 1, 5, x.data() + t * ldx, want.data() + t * ldy, c0, c1, isa);
        matmul_t_accumulate_rows(wt.w, 1, 5, x.data(), ldx, n, got.data(), ldy, c0, c1, isa);
        CHECK(got == want);
      }
    }
  }
}

TEST_CASE("weight matrix prepared: the AVX2 and AVX-512 transposed products decode blocks exactly as the scalar one") {
  std::mt19937 rng(14);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<KernelIsa> isas{KernelIsa::kAvx2};
  if (has_avx512(best_isa())) isas.push_back(KernelIsa::kAvx512);
  else MESSAGE("no AVX-512 on this CPU: the AVX-512 transposed kernels are not compared here");
  for (DType dt : {DType::Q8_0, DType::Q4_K, DType::Q6_K}) {
    CAPTURE(dtype_name(dt));
    const int64_t rows = 7, cols = 3 * kQK_K, ldx = rows + 2, ldy = cols + 3;
    const Weight wt = make(dt, rows, cols, rng);
    std::vector<float> x(static_cast<size_t>(3 * ldx));
    for (float& v : x) v = g(rng);
    // One to three activation rows (one: the fused AVX2 Q8_0 path), rows in groups of
    // four and a remainder of three, whole column ranges and partial ones around whole
    // blocks (the AVX-512 kernels take the whole blocks, the decode path the rest).
    for (KernelIsa isa : isas)
      for (int64_t n : {1, 2, 3})
        for (auto [c0, c1] : {std::pair<int64_t, int64_t>{0, cols}, {40, cols - 70}, {kQK_K, 2 * kQK_K}}) {
          CAPTURE(isa_name(isa));
          CAPTURE(n);
          CAPTURE(c0);
          CAPTURE(c1);
          std::vector<float> ys(static_cast<size_t>(3 * ldy));
          for (float& v : ys) v = g(rng);
          std::vector<float> y0 = ys, ya = ys;
          matmul_t_accumulate_rows(wt.w, 0, rows, x.data(), ldx, n, ys.data(), ldy, c0, c1, KernelIsa::kScalar);
          matmul_t_accumulate_rows(wt.w, 0, rows, x.data(), ldx, n, ya.data(), ldy, c0, c1, isa);
          CHECK(ys == ya);  // outside [c0, c1) and past row n, untouched in both
          for (size_t i = 0; i < ys.size(); ++i) {
            const int64_t t = int64_t(i) / ldy, c = int64_t(i) % ldy;
            if (t >= n || c < c0 || c >= c1) CHECK(ys[i] == y0[i]);
          }
          // And each sum against a double-precision reference of the decoded weights.
          std::vector<float> dec(static_cast<size_t>(cols));
          for (int64_t t = 0; t < n; ++t)
            for (int64_t c = c0; c < c1; ++c) {
              double ref = y0[size_t(t * ldy + c)];
              for (int64_t r = 0; r < rows; ++r) {
                dequantize_row(wt.w, r, c, c + 1, dec.data());
                ref += double(x[size_t(t * ldx + r)]) * dec[0];
              }
              CHECK(std::fabs(double(ya[size_t(t * ldy + c)]) - ref) <= 1e-4 * (1 + std::fabs(ref)));
            }
        }
  }
}

TEST_CASE("weight matrix prepared: row_slice is those rows of the matrix") {
  std::mt19937 rng(15);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (DType dt : kTypes) {
    CAPTURE(dtype_name(dt));
    const int64_t rows = 300, cols = cols_for(dt);
    const Weight wt = make(dt, rows, cols, rng);
    std::vector<float> x(static_cast<size_t>(cols));
    for (float& v : x) v = g(rng);
    std::vector<float> full(static_cast<size_t>(rows)), part(static_cast<size_t>(rows));
    matmul_rows(wt.w, x.data(), cols, 1, full.data(), rows, 0, rows);
    const WeightMatrix s = row_slice(wt.w, 128, 260);
    CHECK(s.rows == 132);
    matmul_rows(s, x.data(), cols, 1, part.data(), rows, 0, s.rows);
    int differ = 0;
    for (int64_t r = 0; r < s.rows; ++r) differ += part[size_t(r)] != full[size_t(128 + r)];
    CHECK(differ == 0);
  }
  const Weight f8 = make(DType::F8_E4M3, 300, 320, rng);
  CHECK_THROWS_AS(row_slice(f8.w, 5, 20), std::invalid_argument);
  CHECK_THROWS_AS(row_slice(f8.w, 0, 301), std::invalid_argument);
}

}  // namespace quant_weight_matrix_prepared_suite

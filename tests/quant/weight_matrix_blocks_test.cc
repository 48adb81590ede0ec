// WeightMatrix kernels on ggml block formats (DType::Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL,
// Q2_K..Q6_K, IQ4_XS):
// matmul_rows against a double-precision product of the dequantized weights and the
// quantized-then-dequantized activations (so only float rounding and summation order
// differ), the scalar and AVX2 paths against each other, and matmul_t_accumulate and
// dequantize_row exactly against the format's own dequantizer, on column ranges that
// start and end inside blocks.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

#include "quant/block_formats.h"
#include "quant/weight_matrix.h"

namespace quant_weight_matrix_blocks_suite {

using namespace hearth;

namespace {

constexpr DType kBlockTypes[] = {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0,   DType::Q5_1,
                                 DType::IQ4_NL, DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K,
                                 DType::Q6_K, DType::IQ4_XS};

struct BlockWeight {
  DType dtype;
  int64_t rows, cols;
  std::vector<uint64_t> storage;  // 8-byte aligned blocks
  std::vector<float> deq;         // rows * cols, the format's own dequantization

  WeightMatrix view() const {
    WeightMatrix w;
    w.dtype = dtype;
    w.rows = rows;
    w.cols = cols;
    w.data = storage.data();
    return w;
  }
};

BlockWeight make_weight(DType dt, int64_t rows, int64_t cols, std::mt19937& rng) {
  const BlockFormat& f = *block_format_of(dt);
  BlockWeight w{dt, rows, cols, {}, {}};
  const int64_t rb = row_bytes(dt, cols);
  w.storage.assign(size_t((rows * rb + 7) / 8), 0);
  w.deq.resize(size_t(rows * cols));
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> src(static_cast<size_t>(cols));
  auto* bytes = reinterpret_cast<uint8_t*>(w.storage.data());
  for (int64_t r = 0; r < rows; ++r) {
    const float offset = (r % 3 == 0) ? 0.3f : 0.0f;  // some rows one-signed-ish: the mins matter
    for (float& v : src) v = g(rng) * (0.5f + float(r % 5) * 0.25f) + offset;
    f.quantize_row(src.data(), bytes + r * rb, cols, nullptr);
    f.dequantize_row(bytes + r * rb, w.deq.data() + r * cols, cols);
  }
  return w;
}

int64_t cols_for(DType dt) { return dtype_block_elems(dt) == kQK_K ? 3 * kQK_K : 7 * kQK8_0; }

}  // namespace

TEST_CASE("weight matrix blocks: dtype geometry agrees with the block format table") {
  for (DType t : kBlockTypes) {
    CAPTURE(dtype_name(t));
    const BlockFormat* f = block_format_of(t);
    REQUIRE(f != nullptr);
    CHECK(is_block_dtype(t));
    CHECK(dtype_block_elems(t) == f->block_elems);
    CHECK(dtype_block_bytes(t) == f->block_bytes);
    CHECK(dtype_of(f->type) == t);
    CHECK(row_bytes(t, 2 * f->block_elems) == 2 * f->block_bytes);
    CHECK_THROWS_AS(row_bytes(t, f->block_elems + 1), std::invalid_argument);
    CHECK_THROWS_AS((void)dtype_size(t), std::invalid_argument);
    CHECK(find_dtype(f->name) == t);  // ggml's spelling, e.g. "q4_K"
    CHECK(!parse_dtype(dtype_name(t)));  // not a safetensors dtype
    WeightMatrix w;
    w.dtype = t;
    w.rows = 3;
    w.cols = 4 * f->block_elems;
    CHECK(w.bytes() == 12 * f->block_bytes);
  }
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3}) {
    CHECK(!is_block_dtype(t));
    CHECK(row_bytes(t, 10) == 10 * int64_t(dtype_size(t)));
  }
  CHECK(block_format_of(DType::F8_E4M3) == nullptr);
  CHECK(!dtype_of(GgmlType::Q8_K));
  CHECK(find_dtype("bf16") == DType::BF16);
  CHECK(!find_dtype("q8_k"));
}

TEST_CASE("weight matrix blocks: matmul_rows matches the double reference for n 1 3 17") {
  std::mt19937 rng(42);
  for (DType dt : kBlockTypes) {
    const BlockFormat& f = *block_format_of(dt);
    const BlockFormat& act = block_format(f.vec_dot_type);
    const int64_t rows = 13, cols = cols_for(dt);
    const BlockWeight bw = make_weight(dt, rows, cols, rng);
    const WeightMatrix w = bw.view();
    for (int64_t n : {1, 3, 17}) {
      CAPTURE(dtype_name(dt));
      CAPTURE(n);
      const int64_t ldx = cols + 5, ldy = rows + 2;
      std::normal_distribution<float> g(0.0f, 1.0f);
      std::vector<float> x(size_t(n * ldx));
      for (float& v : x) v = g(rng);
      // The activations as the kernel sees them: quantized to the format's vec_dot_type.
      std::vector<uint64_t> qa(size_t(act.row_bytes(cols) / 8 + 8));
      std::vector<float> xa(size_t(n * cols));
      for (int64_t t = 0; t < n; ++t) {
        act.quantize_row(x.data() + t * ldx, qa.data(), cols, nullptr);
        act.dequantize_row(qa.data(), xa.data() + t * cols, cols);
      }
      std::vector<double> ref(size_t(n * rows)), mag(size_t(n * rows));
      for (int64_t t = 0; t < n; ++t)
        for (int64_t r = 0; r < rows; ++r) {
          double s = 0, m = 0;
          for (int64_t c = 0; c < cols; ++c) {
            const double p = double(bw.deq[size_t(r * cols + c)]) * double(xa[size_t(t * cols + c)]);
            s += p;
            m += std::fabs(p);
          }
          ref[size_t(t * rows + r)] = s;
          mag[size_t(t * rows + r)] = m;
        }
      const int64_t r0 = 2, r1 = rows - 1;  // a sub-range: rows outside stay untouched
      std::vector<float> got[2];
      int isa_i = 0;
      for (KernelIsa isa : {KernelIsa::kScalar, KernelIsa::kAvx2}) {
        std::vector<float>& y = got[isa_i++];
        y.assign(size_t(n * ldy), -7.0f);
        matmul_rows(w, x.data(), ldx, n, y.data(), ldy, r0, r1, isa);
        int bad = 0, untouched_bad = 0;
        for (int64_t t = 0; t < n; ++t)
          for (int64_t r = 0; r < ldy; ++r) {
            const float v = y[size_t(t * ldy + r)];
            if (r < r0 || r >= r1) {
              untouched_bad += v != -7.0f;
              continue;
            }
            const double tol = 2e-6 * mag[size_t(t * rows + r)] + 1e-6;
            bad += !(std::fabs(double(v) - ref[size_t(t * rows + r)]) <= tol);
          }
        CHECK(bad == 0);
        CHECK(untouched_bad == 0);
      }
      int disagree = 0;
      for (int64_t t = 0; t < n; ++t)
        for (int64_t r = r0; r < r1; ++r) {
          const size_t i = size_t(t * ldy + r);
          disagree += !(std::fabs(double(got[0][i]) - double(got[1][i])) <= 2e-6 * mag[size_t(t * rows + r)] + 1e-6);
        }
      CHECK(disagree == 0);
    }
  }
}

TEST_CASE("weight matrix blocks: matmul_rows with kScalar uses the scalar dot product") {
  std::mt19937 rng(3);
  for (DType dt : kBlockTypes) {
    CAPTURE(dtype_name(dt));
    const BlockFormat& f = *block_format_of(dt);
    const BlockFormat& act = block_format(f.vec_dot_type);
    const int64_t rows = 5, cols = cols_for(dt);
    const BlockWeight bw = make_weight(dt, rows, cols, rng);
    std::vector<float> x(static_cast<size_t>(cols));
    std::normal_distribution<float> g(0.0f, 1.0f);
    for (float& v : x) v = g(rng);
    std::vector<uint64_t> qa(size_t(act.row_bytes(cols) / 8 + 8));
    act.quantize_row(x.data(), qa.data(), cols, nullptr);
    for (KernelIsa isa : {KernelIsa::kScalar, KernelIsa::kAuto}) {
      const VecDotFn dot = vec_dot_kernel(f, isa);
      std::vector<float> y(static_cast<size_t>(rows));
      matmul_rows(bw.view(), x.data(), cols, 1, y.data(), rows, 0, rows, isa);
      const auto* bytes = reinterpret_cast<const uint8_t*>(bw.storage.data());
      int differ = 0;
      for (int64_t r = 0; r < rows; ++r) differ += y[size_t(r)] != dot(bytes + r * f.row_bytes(cols), qa.data(), cols);
      CHECK(differ == 0);  // bit for bit: the same kernel on the same quantized activations
    }
  }
}

TEST_CASE("weight matrix blocks: matmul_t_accumulate and dequantize_row are exact on unaligned ranges") {
  std::mt19937 rng(7);
  for (DType dt : kBlockTypes) {
    CAPTURE(dtype_name(dt));
    const int64_t rows = 6, cols = cols_for(dt), be = dtype_block_elems(dt);
    const BlockWeight bw = make_weight(dt, rows, cols, rng);
    const WeightMatrix w = bw.view();
    struct Range {
      int64_t c0, c1;
    };
    const Range ranges[] = {{0, cols}, {5, cols - 7}, {be + 3, be + 9}, {be - 1, be + 1},
                            {cols - 1, cols}, {0, be}, {be, 2 * be}, {3, 3}};
    std::normal_distribution<float> g(0.0f, 1.0f);
    for (const Range& rg : ranges) {
      CAPTURE(rg.c0);
      CAPTURE(rg.c1);
      // dequantize_row: exactly the format's values.
      for (int64_t r = 0; r < rows; ++r) {
        std::vector<float> out(size_t(rg.c1 - rg.c0 + 2), 99.0f);
        dequantize_row(w, r, rg.c0, rg.c1, out.data());
        int differ = 0;
        for (int64_t c = rg.c0; c < rg.c1; ++c) differ += out[size_t(c - rg.c0)] != bw.deq[size_t(r * cols + c)];
        CHECK(differ == 0);
        CHECK(out[size_t(rg.c1 - rg.c0)] == 99.0f);  // nothing written past the range
      }
      // matmul_t_accumulate over rows [1, rows - 1): y[c] += x[i] * W(1 + i, c), rows in order.
      const int64_t row0 = 1, nrows = rows - 2;
      std::vector<float> x(static_cast<size_t>(nrows)), y0(static_cast<size_t>(cols));
      for (float& v : x) v = g(rng);
      for (float& v : y0) v = g(rng);
      std::vector<float> want = y0;
      for (int64_t i = 0; i < nrows; ++i)
        for (int64_t c = rg.c0; c < rg.c1; ++c) {
          const float p = x[size_t(i)] * bw.deq[size_t((row0 + i) * cols + c)];
          want[size_t(c)] = want[size_t(c)] + p;
        }
      for (KernelIsa isa : {KernelIsa::kScalar, KernelIsa::kAvx2}) {
        std::vector<float> y = y0;
        matmul_t_accumulate(w, row0, nrows, x.data(), y.data(), rg.c0, rg.c1, isa);
        int differ = 0;
        for (int64_t c = 0; c < cols; ++c) differ += y[size_t(c)] != want[size_t(c)];
        CHECK(differ == 0);
      }
    }
  }
}

}  // namespace quant_weight_matrix_blocks_suite

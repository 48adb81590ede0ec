// cuda::matmul and cuda::dequantize (quant/cuda/kernels.h) on every weight format, against
// the CPU's own decoding (dequantize_row, itself tested against ggml's arithmetic):
// - dequantize must give the CPU's floats bit for bit;
// - matmul must match a double-precision dot product of the CPU-dequantized row with the
//   activations within 3e-5 of the sum of |products| (float accumulation in another order).
//
// Weights: rows of gaussian values quantized by the CPU quantizers, plus adversarial rows
// (all-zero bytes, every byte 0xff or 0x80 under the largest finite f16 factors, random bytes
// under random finite factors; for the float formats: extreme finite values, every FP8 code).
// Shapes: a wide matrix (more than one unrolled step of the GEMV loop, with a tail), and
// tall ones whose row counts make the GEMV take 1 or 4 rows per warp and 4 or 8 warps per
// row on a 132-SM GPU (H100, H200).
// Activation rows n = 1, 3, 8 (GEMV), 12 (two GEMV passes), 40 and 70 (tiled kernel), with
// strides whose padding holds NaN (read by mistake, it would poison the result) and output
// strides whose padding must come back untouched. The wide matrix also runs from a
// misaligned address (byte-load paths), and the float formats with rows that are not whole
// groups of 8 and FP8 scale blocks of 12 (value-by-value path).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "quant/block_formats.h"
#include "quant/numbers.h"
#include "quant/weight_matrix.h"
#include "support/block_rows.h"
#include "support/cuda.h"
#include "support/cuda_weights.h"
#if HEARTH_HAVE_CUDA
#include "quant/cuda/kernels.h"
#endif

namespace cuda_matmul_suite {

using namespace hearth;
using hearth::testing::cuda_device_or_skip;
using hearth::testing::DeviceWeight;
using hearth::testing::HostWeight;

namespace {

constexpr DType kFloatTypes[] = {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3};
constexpr DType kLegacyTypes[] = {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::IQ4_NL};
constexpr DType kKQuantTypes[] = {DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::IQ4_XS};


#if HEARTH_HAVE_CUDA  // the helpers below serve the CUDA checks only

float uniform(std::mt19937& rng) { return std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng); }

// One row of a float format: kind 0 zeros, 1 extreme finite values, 2-3 random codes,
// otherwise gaussian values.
void float_row(DType t, int kind, int64_t cols, std::mt19937& rng, uint8_t* out) {
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (int64_t c = 0; c < cols; ++c) {
    const bool neg = c % 2 == 1;
    float v = 0.0f;
    if (kind == 1) v = neg ? -1e30f : 1e30f;
    else if (kind == 2 || kind == 3) v = std::ldexp(uniform(rng), int(rng() % 121) - 60);
    else if (kind > 3) v = g(rng);
    switch (t) {
      case DType::F32: std::memcpy(out + 4 * c, &v, 4); break;
      case DType::F16: {
        uint16_t h = f32_to_f16(v);
        if (kind == 1) h = neg ? 0xfbff : 0x7bff;                     // +-65504
        if (kind == 2 || kind == 3) h = uint16_t(rng() & 0xfbffu);      // any finite half, subnormals too
        std::memcpy(out + 2 * c, &h, 2);
        break;
      }
      case DType::BF16: {
        const uint16_t h = f32_to_bf16(v);
        std::memcpy(out + 2 * c, &h, 2);
        break;
      }
      case DType::F8_E4M3: {
        uint8_t q = f32_to_fp8_e4m3(v * 100.0f);
        if (kind == 1) q = neg ? 0xfe : 0x7e;  // +-448
        if (kind == 2 || kind == 3) {
          q = uint8_t((c * 37 + kind) % 256);  // every code
          if ((q & 0x7f) == 0x7f) q = 0;       // but the NaN codes
        }
        out[c] = q;
        break;
      }
      default: FAIL("not a float format");
    }
  }
}

// rows x cols of format t; rows >= `quantized` beyond the adversarial ones hold random
// block bytes (cheaper to make than quantized rows for the tall shapes).
HostWeight make_weight(DType t, int64_t rows, int64_t cols, std::mt19937& rng, int64_t quantized, int64_t block = 128) {
  HostWeight w;
  w.dtype = t;
  w.rows = rows;
  w.cols = cols;
  w.block = block;
  const int64_t rb = w.row_bytes();
  w.bytes.assign(size_t(rows * rb), 0);
  std::normal_distribution<float> g(0.0f, 1.0f);
  if (!is_block_dtype(t)) {
    for (int64_t r = 0; r < rows; ++r) float_row(t, int(std::min<int64_t>(r, 4)), cols, rng, w.bytes.data() + r * rb);
    if (t == DType::F8_E4M3) {
      const int64_t count = ((rows + block - 1) / block) * ((cols + block - 1) / block);
      for (int64_t i = 0; i < count; ++i)
        w.scale.push_back(std::ldexp(0.5f + 0.5f * std::fabs(uniform(rng)), int(rng() % 17) - 12));
    }
    return w;
  }
  const BlockFormat& f = *block_format_of(t);
  const int nblocks = int(cols / f.block_elems);
  std::vector<float> src(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* dst = w.bytes.data() + r * rb;
    std::vector<uint8_t> b;
    if (r == 0) continue;                                                    // all-zero bytes
    if (r == 1) b = testing::weight_row(f, nblocks, rng, 0xff, 0x7bff);      // extremes
    else if (r == 2) b = testing::weight_row(f, nblocks, rng, 0x80, 0x7bff);
    else if (r == 3 || r >= quantized) b = testing::weight_row(f, nblocks, rng);  // random bytes, finite factors
    if (!b.empty()) {
      std::memcpy(dst, b.data(), size_t(rb));
      continue;
    }
    const float offset = r % 3 == 0 ? 0.3f : 0.0f;  // one-signed-ish rows: the mins matter
    for (float& v : src) v = g(rng) * (0.5f + float(r % 5) * 0.25f) + offset;
    f.quantize_row(src.data(), dst, cols, nullptr);
  }
  return w;
}


// cuda::matmul of w with n activation rows (row stride cols + x_pad, NaN padding) into
// rows of stride rows + 3, against the double-precision reference.
void check_matmul(Device& dev, const HostWeight& w, const std::vector<float>& deq, const DeviceWeight& dw, int64_t n,
                  int64_t x_pad, std::mt19937& rng) {
  CAPTURE(n);
  CAPTURE(x_pad);
  const int64_t ldx = w.cols + x_pad, ldy = w.rows + 3;
  const float kSentinel = -7.25f;
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> x(size_t(n * ldx), std::numeric_limits<float>::quiet_NaN());
  for (int64_t t = 0; t < n; ++t)
    for (int64_t c = 0; c < w.cols; ++c) x[size_t(t * ldx + c)] = g(rng);
  DeviceBuffer dx = testing::upload(dev, x);
  DeviceBuffer dy = testing::upload(dev, std::vector<float>(size_t(n * ldy), kSentinel));
  testing::run_on(dev, [&](void* s) { cuda::matmul(dw.view, dx.as<float>(), ldx, n, dy.as<float>(), ldy, s); });
  const std::vector<float> y = testing::download<float>(dev, dy.get(), n * ldy);
  int bad = 0;
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t r = 0; r < ldy; ++r) {
      const float got = y[size_t(t * ldy + r)];
      if (r >= w.rows) {
        if (got != kSentinel && bad++ < 5) FAIL_CHECK("row ", r, " of output ", t, " (stride padding) was written: ", got);
        continue;
      }
      double ref = 0, mag = 0;
      for (int64_t c = 0; c < w.cols; ++c) {
        const double p = double(deq[size_t(r * w.cols + c)]) * double(x[size_t(t * ldx + c)]);
        ref += p;
        mag += std::fabs(p);
      }
      if (!(std::fabs(double(got) - ref) <= 3e-5 * mag) && bad++ < 5)
        FAIL_CHECK("y[", t, "][", r, "] = ", got, ", reference ", ref, " (sum |products| ", mag, ")");
    }
  }
  CHECK(bad == 0);
}

void check_dequantize(Device& dev, const HostWeight& w, const std::vector<float>& deq, const DeviceWeight& dw) {
  DeviceBuffer out = testing::upload(dev, std::vector<float>(size_t(w.rows * w.cols + 1), -3.5f));
  testing::run_on(dev, [&](void* s) { cuda::dequantize(dw.view, out.as<float>(), s); });
  const std::vector<float> got = testing::download<float>(dev, out.get(), w.rows * w.cols + 1);
  int bad = 0;
  for (size_t i = 0; i < deq.size(); ++i) {
    if (std::memcmp(&got[i], &deq[i], 4) != 0 && bad++ < 5)
      FAIL_CHECK("value ", i, " (row ", int64_t(i) / w.cols, "): ", got[i], " on the device, ", deq[i], " on the CPU");
  }
  CHECK(bad == 0);
  CHECK(got.back() == -3.5f);  // nothing written past the end
}

// Columns of the wide shape: more than 8192 (one unrolled GEMV step of 8 warps), not a
// multiple of it.
int64_t wide_cols(DType t) {
  const int64_t b = dtype_block_elems(t);
  if (b == kQK_K) return 33 * kQK_K;   // 8448
  if (b == 32) return 265 * 32;        // 8480
  return 8456;                         // a multiple of 8, not of 32
}

void check_format(Device& dev, DType t) {
  CAPTURE(dtype_name(t));
  std::mt19937 rng(1234 + int(t));
  {
    const HostWeight w = make_weight(t, 67, wide_cols(t), rng, 67);
    const std::vector<float> deq = w.dequantized();
    for (int64_t offset : {0, 1}) {
      CAPTURE(offset);
      const DeviceWeight dw(dev, w, offset);
      check_dequantize(dev, w, deq, dw);
      for (int64_t n : {1, 3, 8, 12, 40}) check_matmul(dev, w, deq, dw, n, n % 2 ? 5 : 0, rng);
    }
  }
  // On a 132-SM GPU: one row per warp, 4 warps per row; 4 rows per warp (the last group
  // short), 8 warps per row; 4 rows per warp, 4 warps per row.
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1100, 512}, {2203, 2304}, {4301, 512}}) {
    CAPTURE(rows);
    const HostWeight w = make_weight(t, rows, cols, rng, 64);
    const std::vector<float> deq = w.dequantized();
    const DeviceWeight dw(dev, w, 0);
    check_dequantize(dev, w, deq, dw);
    for (int64_t n : {1, 8, 70}) check_matmul(dev, w, deq, dw, n, 4, rng);
  }
}

#endif  // HEARTH_HAVE_CUDA

}  // namespace

TEST_CASE("cuda matmul float formats match the CPU") {
  auto dev = cuda_device_or_skip();
  if (!dev) return;
#if HEARTH_HAVE_CUDA
  for (DType t : kFloatTypes) check_format(*dev, t);
  // Rows that are not whole groups of 8, and FP8 scale blocks of 12: the value-by-value path.
  for (DType t : kFloatTypes) {
    CAPTURE(dtype_name(t));
    std::mt19937 rng(99 + int(t));
    const HostWeight w = make_weight(t, 30, 100, rng, 30, /*block=*/12);
    const std::vector<float> deq = w.dequantized();
    for (int64_t offset : {0, 3}) {
      const DeviceWeight dw(*dev, w, offset);
      check_dequantize(*dev, w, deq, dw);
      for (int64_t n : {1, 3, 20}) check_matmul(*dev, w, deq, dw, n, 1, rng);
    }
  }
#endif
}

TEST_CASE("cuda matmul 32-value block formats match the CPU") {
  auto dev = cuda_device_or_skip();
  if (!dev) return;
#if HEARTH_HAVE_CUDA
  for (DType t : kLegacyTypes) check_format(*dev, t);
#endif
}

TEST_CASE("cuda matmul K-quant formats match the CPU") {
  auto dev = cuda_device_or_skip();
  if (!dev) return;
#if HEARTH_HAVE_CUDA
  for (DType t : kKQuantTypes) check_format(*dev, t);
#endif
}

// Argument checks happen on the host before anything is enqueued, so they run on any
// machine whose build has the CUDA backend.
TEST_CASE("cuda matmul rejects bad arguments with the reason") {
#if HEARTH_HAVE_CUDA
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::Q8_0, DType::Q4_0, DType::Q4_1,
                  DType::Q5_0, DType::Q5_1, DType::IQ4_NL, DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K,
                  DType::Q6_K, DType::IQ4_XS})
    CHECK(cuda::matmul_supports(t));
  std::vector<float> host(4096);
  WeightMatrix w;
  w.dtype = DType::F32;
  w.rows = 4;
  w.cols = 64;
  w.data = host.data();
  float* p = host.data();
  auto message = [](auto f) -> std::string {
    try {
      f();
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "<no exception>";
  };
  CHECK(message([&] { cuda::matmul(w, p, 64, -1, p, 4, nullptr); }).find("negative") != std::string::npos);
  CHECK(message([&] { cuda::matmul(w, p, 63, 2, p, 4, nullptr); }).find("ldx 63 < cols 64") != std::string::npos);
  CHECK(message([&] { cuda::matmul(w, p, 64, 2, p, 3, nullptr); }).find("ldy 3 < rows 4") != std::string::npos);
  CHECK(message([&] { cuda::matmul(w, nullptr, 64, 1, p, 4, nullptr); }).find("null") != std::string::npos);
  WeightMatrix q = w;
  q.dtype = DType::Q4_K;
  q.cols = 100;  // not whole 256-value blocks
  CHECK(message([&] { cuda::matmul(q, p, 100, 1, p, 4, nullptr); }) != "<no exception>");
  CHECK(message([&] { cuda::dequantize(q, p, nullptr); }) != "<no exception>");
  WeightMatrix f8 = w;
  f8.dtype = DType::F8_E4M3;
  f8.scale = p;
  f8.block = 0;
  CHECK(message([&] { cuda::matmul(f8, p, 64, 1, p, 4, nullptr); }).find("scale block") != std::string::npos);
  // Nothing to do: no launch, no error (even without a GPU).
  cuda::matmul(w, p, 64, 0, p, 4, nullptr);
#else
  MESSAGE("skipped: no GPU");
  std::fprintf(stderr, "skipped: no GPU\n");
#endif
}

}  // namespace cuda_matmul_suite

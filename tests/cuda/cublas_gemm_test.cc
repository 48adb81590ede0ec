// cuda::matmul's cuBLAS path (GemmPolicy::kCublasBf16, quant/cuda/gemm_policy.h) and the
// bf16 dequantizer it feeds (cuda::dequantize_bf16), against scalar host references built
// from the CPU's own decoders (dequantize_row):
// - dequantize_bf16 must give f32_to_bf16 of the CPU's floats bit for bit, in rows of a
//   padded stride whose padding stays untouched;
// - matmul must match two double-precision references (see check_gemm for the bounds):
//   the product of the bf16-rounded operands, tightly (only fp32 accumulation differs: a
//   single misdecoded weight shows), and the exact product, within bf16 rounding.
// Formats Q8_0, Q4_K, Q6_K, BF16 (in place and, misaligned, decoded), F32 with rows that
// are not whole groups of 8, and FP8 with 128 x 128 block scales (and 12 x 12 blocks, the
// value-by-value decoder). n = 16, 64, 200 activation rows with odd strides (NaN in the
// activations' padding, a sentinel in the output's), each with the default scratch and
// with scratch small enough to split the weight into row tiles (whole FP8 scale blocks)
// and the activations into chunks.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "quant/block_formats.h"
#include "quant/cuda/gemm_policy.h"
#include "quant/numbers.h"
#include "quant/weight_matrix.h"
#include "support/cuda.h"
#include "support/cuda_weights.h"
#if HEARTH_HAVE_CUDA
#include "quant/cuda/kernels.h"
#endif

namespace cuda_cublas_gemm_suite {

using namespace hearth;
using hearth::testing::cuda_device_or_skip;
using hearth::testing::DeviceWeight;
using hearth::testing::HostWeight;

TEST_CASE("cuda gemm policy names parse back") {
  for (cuda::GemmPolicy p : {cuda::GemmPolicy::kKernels, cuda::GemmPolicy::kCublasBf16})
    CHECK(cuda::parse_gemm_policy(cuda::gemm_policy_name(p)) == p);
  CHECK(!cuda::parse_gemm_policy("cublas"));
  CHECK(!cuda::parse_gemm_policy(""));
  // The kernels stay the default: their results do not depend on how many rows a step batches.
  CHECK(cuda::GemmOptions{}.policy == cuda::GemmPolicy::kKernels);
}

#if HEARTH_HAVE_CUDA

namespace {

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

float bf16_round(float v) { return bf16_to_f32(f32_to_bf16(v)); }

// A weight in its stored layout on the host, from gaussian values (block formats through
// the CPU quantizer; FP8 with random power-of-two-ish block scales).
HostWeight gaussian_weight(DType t, int64_t rows, int64_t cols, int64_t block, std::mt19937& rng) {
  HostWeight w;
  w.dtype = t;
  w.rows = rows;
  w.cols = cols;
  w.block = block;
  const int64_t rb = row_bytes(t, cols);
  w.bytes.assign(size_t(rows * rb), 0);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> src(static_cast<size_t>(cols));
  for (int64_t i = 0; i < rows; ++i) {
    const float offset = i % 3 == 0 ? 0.3f : 0.0f;  // some one-signed-ish rows: the mins matter
    for (float& v : src) v = g(rng) * (0.5f + float(i % 5) * 0.25f) + offset;
    uint8_t* dst = w.bytes.data() + i * rb;
    switch (t) {
      case DType::F32: std::memcpy(dst, src.data(), size_t(rb)); break;
      case DType::BF16:
        for (int64_t k = 0; k < cols; ++k) {
          const uint16_t h = f32_to_bf16(src[size_t(k)]);
          std::memcpy(dst + 2 * k, &h, 2);
        }
        break;
      case DType::F8_E4M3:
        for (int64_t k = 0; k < cols; ++k) dst[k] = f32_to_fp8_e4m3(src[size_t(k)] * 64.0f);
        break;
      default: block_format_of(t)->quantize_row(src.data(), dst, cols, nullptr); break;
    }
  }
  if (t == DType::F8_E4M3) {
    const int64_t count = ((rows + block - 1) / block) * ((cols + block - 1) / block);
    std::uniform_real_distribution<float> u(0.5f, 1.0f);
    for (int64_t i = 0; i < count; ++i) w.scale.push_back(std::ldexp(u(rng), -6 - int(rng() % 3)));
  }
  return w;
}

void check_dequantize_bf16(Device& dev, const HostWeight& w, const std::vector<float>& deq, const DeviceWeight& dw) {
  const int64_t ldo = round_up(w.cols, 8) + 8;
  const uint16_t kSentinel = 0xbeef;
  DeviceBuffer out = testing::upload(dev, std::vector<uint16_t>(size_t(w.rows * ldo), kSentinel));
  testing::run_on(dev, [&](void* s) { cuda::dequantize_bf16(dw.view, out.get(), ldo, s); });
  const std::vector<uint16_t> got = testing::download<uint16_t>(dev, out.get(), w.rows * ldo);
  int bad = 0;
  for (int64_t r = 0; r < w.rows; ++r)
    for (int64_t c = 0; c < ldo; ++c) {
      const uint16_t want = c < w.cols ? f32_to_bf16(deq[size_t(r * w.cols + c)]) : kSentinel;
      const uint16_t g = got[size_t(r * ldo + c)];
      if (g != want && bad++ < 5) FAIL_CHECK("row ", r, " col ", c, ": bf16 bits ", g, ", want ", want);
    }
  CHECK(bad == 0);
}

// The cuBLAS path against the references, for n activation rows of stride cols + 3 (NaN
// padding) into outputs of stride rows + 5 (sentinel padding).
//
// Bounds. bf16 keeps 8 significant bits, so rounding (to nearest even) changes a value by
// a relative 2^-8 at most; a product of two rounded operands is then off by at most
// (2 * 2^-8 + 2^-16) |x_c| |w_c| ~ 2^-7 |x_c| |w_c|, and the product itself is exact in
// fp32 (8 + 8 significant bits). The fp32 accumulation of cols terms adds at most about
// cols * 2^-24 of sum |products| (2^-23 where tensor cores truncate): 6e-5 for 512 columns.
// - exact operands: |y - sum bf16(x_c) bf16(w_c)| <= 2e-4 * sum |bf16(x_c) bf16(w_c)|
//   (the accumulation bound with margin; one wrong weight among 512 is ~2e-3 of the sum);
// - true product:   |y - sum x_c w_c| <= c * 2^-8 * sum |x_c| |w_c| with c = 2.5 (the 2^-7
//   above plus the accumulation, with margin).
void check_gemm(Device& dev, const HostWeight& w, const std::vector<float>& deq, const DeviceWeight& dw, int64_t n,
                const std::vector<cuda::GemmOptions>& settings, std::mt19937& rng) {
  CAPTURE(n);
  const int64_t ldx = w.cols + 3, ldy = w.rows + 5;
  const float kSentinel = -7.25f;
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> x(size_t(n * ldx), std::numeric_limits<float>::quiet_NaN());
  for (int64_t t = 0; t < n; ++t)
    for (int64_t c = 0; c < w.cols; ++c) x[size_t(t * ldx + c)] = g(rng) * (t % 4 == 0 ? 30.0f : 1.0f);
  // The references, once for every setting.
  std::vector<double> exact(size_t(n * w.rows)), exact_mag(exact.size()), rounded(exact.size()), rounded_mag(exact.size());
  std::vector<float> wb(deq.size());
  for (size_t i = 0; i < deq.size(); ++i) wb[i] = bf16_round(deq[i]);
  std::vector<float> xb(static_cast<size_t>(w.cols));
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x.data() + t * ldx;
    for (int64_t c = 0; c < w.cols; ++c) xb[size_t(c)] = bf16_round(xt[c]);
    for (int64_t r = 0; r < w.rows; ++r) {
      double e = 0, em = 0, b = 0, bm = 0;
      for (int64_t c = 0; c < w.cols; ++c) {
        const double p = double(deq[size_t(r * w.cols + c)]) * double(xt[c]);
        const double q = double(wb[size_t(r * w.cols + c)]) * double(xb[size_t(c)]);
        e += p, em += std::fabs(p), b += q, bm += std::fabs(q);
      }
      const size_t i = size_t(t * w.rows + r);
      exact[i] = e, exact_mag[i] = em, rounded[i] = b, rounded_mag[i] = bm;
    }
  }
  DeviceBuffer dx = testing::upload(dev, x);
  for (const cuda::GemmOptions& o : settings) {
    CAPTURE(o.scratch_bytes);
    DeviceBuffer dy = testing::upload(dev, std::vector<float>(size_t(n * ldy), kSentinel));
    const int64_t calls = cuda::cublas_gemm_calls();
    testing::run_on(dev, [&](void* s) { cuda::matmul(dw.view, dx.as<float>(), ldx, n, dy.as<float>(), ldy, s, o); });
    CHECK(cuda::cublas_gemm_calls() == calls + 1);  // the cuBLAS path ran, once
    const std::vector<float> y = testing::download<float>(dev, dy.get(), n * ldy);
    int bad = 0;
    double worst_rounded = 0, worst_exact = 0;  // error / magnitude, for the log
    for (int64_t t = 0; t < n; ++t)
      for (int64_t r = 0; r < ldy; ++r) {
        const float got = y[size_t(t * ldy + r)];
        if (r >= w.rows) {
          if (got != kSentinel && bad++ < 5) FAIL_CHECK("output ", t, " padding row ", r, " was written: ", got);
          continue;
        }
        const size_t i = size_t(t * w.rows + r);
        const double er = std::fabs(double(got) - rounded[i]), ee = std::fabs(double(got) - exact[i]);
        if (rounded_mag[i] > 0) worst_rounded = std::max(worst_rounded, er / rounded_mag[i]);
        if (exact_mag[i] > 0) worst_exact = std::max(worst_exact, ee / exact_mag[i]);
        if (!(er <= 2e-4 * rounded_mag[i]) && bad++ < 5)
          FAIL_CHECK("y[", t, "][", r, "] = ", got, ", bf16-operand reference ", rounded[i], " (sum |products| ",
                     rounded_mag[i], ")");
        if (!(ee <= 2.5 * std::ldexp(1.0, -8) * exact_mag[i]) && bad++ < 5)
          FAIL_CHECK("y[", t, "][", r, "] = ", got, ", exact reference ", exact[i], " (sum |products| ", exact_mag[i],
                     ")");
      }
    MESSAGE(dtype_name(w.dtype) << " n=" << n << " scratch=" << o.scratch_bytes << ": worst error / sum|products| "
                                << worst_rounded << " (bf16 operands), " << worst_exact << " (exact)");
    CHECK(bad == 0);
  }
}

struct Shape {
  DType dtype;
  int64_t rows, cols, block, offset;
};

void check_shape(Device& dev, const Shape& sh) {
  CAPTURE(dtype_name(sh.dtype));
  CAPTURE(sh.cols);
  CAPTURE(sh.block);
  CAPTURE(sh.offset);
  std::mt19937 rng(777 + int(sh.dtype) + int(sh.cols));
  const HostWeight w = gaussian_weight(sh.dtype, sh.rows, sh.cols, sh.block, rng);
  const std::vector<float> deq = w.dequantized();
  const DeviceWeight dw(dev, w, sh.offset);
  check_dequantize_bf16(dev, w, deq, dw);
  cuda::GemmOptions whole;
  whole.policy = cuda::GemmPolicy::kCublasBf16;
  whole.min_rows = 16;
  // Scratch for 64 rows of bf16: weight tiles of 64 rows (FP8: one 128-row scale block),
  // activation chunks of 64 rows.
  cuda::GemmOptions tiled = whole;
  tiled.scratch_bytes = 64 * round_up(sh.cols, 8) * 2;
  for (int64_t n : {16, 64, 200}) check_gemm(dev, w, deq, dw, n, {whole, tiled}, rng);
  // Below min_rows: the kernels (checked in matmul_test.cc), not cuBLAS.
  DeviceBuffer dx = testing::upload(dev, std::vector<float>(size_t(8 * sh.cols), 1.0f));
  DeviceBuffer dy = testing::upload(dev, std::vector<float>(size_t(8 * sh.rows), 0.0f));
  const int64_t calls = cuda::cublas_gemm_calls();
  testing::run_on(dev, [&](void* s) { cuda::matmul(dw.view, dx.as<float>(), sh.cols, 8, dy.as<float>(), sh.rows, s, whole); });
  CHECK(cuda::cublas_gemm_calls() == calls);
}

}  // namespace

#endif  // HEARTH_HAVE_CUDA

TEST_CASE("cuda cublas bf16 gemm on block formats matches the host reference") {
  auto dev = cuda_device_or_skip();
  if (!dev) return;
#if HEARTH_HAVE_CUDA
  for (DType t : {DType::Q8_0, DType::Q4_K, DType::Q6_K}) check_shape(*dev, {t, 300, 512, 128, 0});
  check_shape(*dev, {DType::Q6_K, 300, 512, 128, 1});  // misaligned block data: byte loads
#endif
}

TEST_CASE("cuda cublas bf16 gemm on float formats matches the host reference") {
  auto dev = cuda_device_or_skip();
  if (!dev) return;
#if HEARTH_HAVE_CUDA
  check_shape(*dev, {DType::BF16, 300, 512, 128, 0});     // the weight used in place
  check_shape(*dev, {DType::BF16, 300, 100, 128, 2});     // not 16-byte aligned: decoded
  check_shape(*dev, {DType::F32, 300, 100, 128, 0});      // rows not whole groups of 8
  check_shape(*dev, {DType::F8_E4M3, 300, 512, 128, 0});  // 128 x 128 block scales
  check_shape(*dev, {DType::F8_E4M3, 300, 100, 12, 0});   // 12 x 12 blocks: value by value
#endif
}

// Checked on the host before anything is enqueued: runs in every build with CUDA.
TEST_CASE("cuda dequantize_bf16 rejects a bad output stride with the reason") {
#if HEARTH_HAVE_CUDA
  std::vector<float> host(1024);
  WeightMatrix w;
  w.dtype = DType::F32;
  w.rows = 4;
  w.cols = 64;
  w.data = host.data();
  auto message = [&](int64_t ldo) -> std::string {
    try {
      cuda::dequantize_bf16(w, host.data(), ldo, nullptr);
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "<no exception>";
  };
  CHECK(message(60).find("ldo 60") != std::string::npos);  // < cols
  CHECK(message(68).find("ldo 68") != std::string::npos);  // not a multiple of 8
#else
  MESSAGE("skipped: no GPU");
  std::fprintf(stderr, "skipped: no GPU\n");
#endif
}

}  // namespace cuda_cublas_gemm_suite

// WeightMatrix kernels (quant/weight_matrix.h): the scalar and AVX2 implementations of
// matmul_rows, matmul_t_accumulate and dequantize_row, each checked against a plain
// double-precision product of the dequantized weights computed here.
//
// The dequantized value of an element is its scalar decode (f16_to_f32, bf16_to_f32,
// fp8_e4m3_to_f32 -- tested on their own in numbers_test.cc) times its block scale.
//
// FP8 data never contains the NaN codes 0x7f / 0xff: the AVX2 path decodes FP8 through
// an fp16 bit shift that turns those codes into the finite value 480 instead of NaN, so
// the kernels are only defined for finite codes (checkpoints hold no NaN weights).
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "quant/numbers.h"
#include "quant/onednn_gemm.h"
#include "quant/weight_matrix.h"
#include "support/cpu_gemm_scope.h"

namespace quant_weight_matrix_suite {

using namespace hearth;
using hearth::testing::CpuGemmScope;

namespace {

// A weight in checkpoint layout plus its dequantized reference values.
struct TestWeight {
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0, block = 128;
  bool scaled = true;               // F8_E4M3 only: pass block scales (else scale == nullptr)
  std::vector<uint32_t> storage;    // raw bytes, 4-byte aligned
  std::vector<float> scales;        // [ceil(rows / block)][ceil(cols / block)]
  std::vector<double> deq;          // rows * cols reference values

  int64_t scale_rows() const { return (rows + block - 1) / block; }
  int64_t scale_cols() const { return (cols + block - 1) / block; }
  float& scale(int64_t r, int64_t c) { return scales[size_t((r / block) * scale_cols() + c / block)]; }

  void resize() {
    storage.assign(size_t((rows * cols * int64_t(dtype_size(dtype)) + 3) / 4), 0u);
    if (dtype == DType::F8_E4M3) scales.assign(size_t(scale_rows() * scale_cols()), 1.0f);
  }
  void set_code(int64_t r, int64_t c, uint32_t code) {
    auto* base = reinterpret_cast<unsigned char*>(storage.data());
    const size_t i = size_t(r * cols + c);
    switch (dtype) {
      case DType::F32: std::memcpy(base + 4 * i, &code, 4); break;
      case DType::F16:
      case DType::BF16: { const uint16_t h = uint16_t(code); std::memcpy(base + 2 * i, &h, 2); break; }
      case DType::F8_E4M3: base[i] = uint8_t(code); break;
      default: FAIL("element formats only (block formats: weight_matrix_blocks_test.cc)");
    }
  }
  uint32_t code(int64_t r, int64_t c) const {
    const auto* base = reinterpret_cast<const unsigned char*>(storage.data());
    const size_t i = size_t(r * cols + c);
    uint32_t v = 0;
    switch (dtype) {
      case DType::F32: std::memcpy(&v, base + 4 * i, 4); break;
      case DType::F16:
      case DType::BF16: { uint16_t h; std::memcpy(&h, base + 2 * i, 2); v = h; break; }
      case DType::F8_E4M3: v = base[i]; break;
      default: FAIL("element formats only");
    }
    return v;
  }
  // Recomputes deq from the stored codes and scales.
  void finalize() {
    deq.assign(size_t(rows * cols), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const uint32_t v = code(r, c);
        double d = 0;
        switch (dtype) {
          case DType::F32: d = std::bit_cast<float>(v); break;
          case DType::F16: d = f16_to_f32(uint16_t(v)); break;
          case DType::BF16: d = bf16_to_f32(uint16_t(v)); break;
          case DType::F8_E4M3:
            d = double(fp8_e4m3_to_f32(uint8_t(v))) * (scaled ? double(scale(r, c)) : 1.0);
            break;
          default: FAIL("element formats only");
        }
        deq[size_t(r * cols + c)] = d;
      }
  }
  WeightMatrix view() const {
    WeightMatrix w;
    w.dtype = dtype;
    w.rows = rows;
    w.cols = cols;
    w.data = storage.data();
    w.scale = dtype == DType::F8_E4M3 && scaled ? scales.data() : nullptr;
    w.block = block;
    return w;
  }
  std::string name() const {
    std::ostringstream s;
    s << dtype_name(dtype) << " " << rows << "x" << cols;
    if (dtype == DType::F8_E4M3) s << (scaled ? " block " + std::to_string(block) : " unscaled");
    return s.str();
  }
};

uint8_t random_fp8(std::mt19937& rng) {
  for (;;) {  // any finite code; never 0x7f / 0xff (see the file comment)
    const uint8_t v = uint8_t(rng() & 0xff);
    if ((v & 0x7f) != 0x7f) return v;
  }
}

TestWeight make_random(DType dt, int64_t rows, int64_t cols, uint32_t seed, int64_t block = 128,
                       bool scaled = true) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  TestWeight w;
  w.dtype = dt;
  w.rows = rows;
  w.cols = cols;
  w.block = block;
  w.scaled = scaled;
  w.resize();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const float f = u(rng);
      switch (dt) {
        case DType::F32: w.set_code(r, c, std::bit_cast<uint32_t>(f)); break;
        case DType::F16: w.set_code(r, c, f32_to_f16(f)); break;
        case DType::BF16: w.set_code(r, c, f32_to_bf16(f)); break;
        case DType::F8_E4M3: w.set_code(r, c, random_fp8(rng)); break;
        default: FAIL("element formats only");
      }
    }
  std::uniform_real_distribution<float> e(-10.0f, 1.0f);
  for (float& s : w.scales) s = std::exp2(e(rng)) * (0.5f + 0.5f * (u(rng) + 1.0f) / 2.0f);
  w.finalize();
  return w;
}

struct Tolerance {
  double rel = 1e-5;     // of sum |terms|: above float's worst-case bound for 128-term sums
  double abs = 1e-42;    // a few hundred float denormal steps, for denormal scales
};

bool close(double got, double ref, double mag, Tolerance tol) {
  return std::fabs(got - ref) <= tol.rel * mag + tol.abs;
}

std::vector<KernelIsa> isas_to_test() {
  std::vector<KernelIsa> v{KernelIsa::kScalar};
  if (has_avx2(best_isa())) v.push_back(KernelIsa::kAvx2);
  if (has_avx512(best_isa())) v.push_back(KernelIsa::kAvx512);
  if (has_vnni(best_isa())) v.push_back(KernelIsa::kAvx512Vnni);
  if (has_bf16(best_isa())) v.push_back(KernelIsa::kAvx512Bf16);
  return v;
}

// matmul_rows over rows [r0, r1) with padded strides; checks every output against the
// reference, that scalar and AVX2 agree, and that nothing outside the band is written.
void check_matmul_rows(const TestWeight& tw, int64_t n, int64_t r0, int64_t r1, Tolerance tol = {}) {
  const WeightMatrix w = tw.view();
  const int64_t ldx = tw.cols + 3, ldy = tw.rows + 5;
  std::mt19937 rng(uint32_t(n * 7919 + tw.rows * 31 + tw.cols));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  // Padding is NaN: a kernel that reads past cols poisons its output.
  std::vector<float> x(size_t(n * ldx), std::numeric_limits<float>::quiet_NaN());
  for (int64_t t = 0; t < n; ++t)
    for (int64_t c = 0; c < tw.cols; ++c) x[size_t(t * ldx + c)] = u(rng);

  std::vector<double> ref(size_t(n * tw.rows)), mag(size_t(n * tw.rows));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = r0; r < r1; ++r) {
      double s = 0, m = 0;
      for (int64_t c = 0; c < tw.cols; ++c) {
        const double p = double(x[size_t(t * ldx + c)]) * tw.deq[size_t(r * tw.cols + c)];
        s += p;
        m += std::fabs(p);
      }
      ref[size_t(t * tw.rows + r)] = s;
      mag[size_t(t * tw.rows + r)] = m;
    }

  const float sentinel = -12345.5f;
  std::vector<std::vector<float>> results;
  for (KernelIsa isa : isas_to_test()) {
    std::vector<float> y(size_t(n * ldy), sentinel);
    matmul_rows(w, x.data(), ldx, n, y.data(), ldy, r0, r1, isa);
    int bad = 0;
    for (int64_t t = 0; t < n; ++t)
      for (int64_t r = 0; r < ldy; ++r) {
        const float got = y[size_t(t * ldy + r)];
        if (r < r0 || r >= r1) {
          if (!(got == sentinel) && bad++ < 5)
            FAIL_CHECK(tw.name() << " " << isa_name(isa) << " n=" << n << ": wrote outside rows at t=" << t << " r=" << r);
          continue;
        }
        const double want = ref[size_t(t * tw.rows + r)], m = mag[size_t(t * tw.rows + r)];
        if (!close(got, want, m, tol) && bad++ < 5)
          FAIL_CHECK(tw.name() << " " << isa_name(isa) << " n=" << n << " t=" << t << " r=" << r << ": got " << got
                               << " want " << want << " (sum|terms| " << m << ")");
      }
    CHECK_MESSAGE(bad == 0, tw.name() << " " << isa_name(isa) << " n=" << n << ": " << bad << " bad outputs");
    results.push_back(std::move(y));
  }
  if (results.size() == 2) {
    int bad = 0;
    for (int64_t t = 0; t < n; ++t)
      for (int64_t r = r0; r < r1; ++r) {
        const size_t i = size_t(t * ldy + r);
        if (!close(results[0][i], results[1][i], mag[size_t(t * tw.rows + r)], {2 * tol.rel, 2 * tol.abs}))
          ++bad;
      }
    CHECK_MESSAGE(bad == 0, tw.name() << " n=" << n << ": scalar and avx2 disagree on " << bad << " outputs");
  }
}

// matmul_t_accumulate over rows [row0, row0 + nrows) and columns [c0, c1) into a y that
// already holds values; columns outside [c0, c1) must stay untouched.
void check_matmul_t(const TestWeight& tw, int64_t row0, int64_t nrows, int64_t c0, int64_t c1,
                    Tolerance tol = {}) {
  const WeightMatrix w = tw.view();
  std::mt19937 rng(uint32_t(row0 * 131 + nrows * 17 + c0 * 3 + c1));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(nrows)), y0(static_cast<size_t>(tw.cols));
  for (float& v : x) v = u(rng);
  for (float& v : y0) v = u(rng);
  std::vector<double> ref(size_t(tw.cols)), mag(size_t(tw.cols));
  for (int64_t c = c0; c < c1; ++c) {
    double s = y0[size_t(c)], m = std::fabs(double(y0[size_t(c)]));
    for (int64_t i = 0; i < nrows; ++i) {
      const double p = double(x[size_t(i)]) * tw.deq[size_t((row0 + i) * tw.cols + c)];
      s += p;
      m += std::fabs(p);
    }
    ref[size_t(c)] = s;
    mag[size_t(c)] = m;
  }
  std::vector<std::vector<float>> results;
  for (KernelIsa isa : isas_to_test()) {
    std::vector<float> y = y0;
    matmul_t_accumulate(w, row0, nrows, x.data(), y.data(), c0, c1, isa);
    int bad = 0;
    for (int64_t c = 0; c < tw.cols; ++c) {
      const float got = y[size_t(c)];
      const bool ok = (c < c0 || c >= c1) ? std::bit_cast<uint32_t>(got) == std::bit_cast<uint32_t>(y0[size_t(c)])
                                          : close(got, ref[size_t(c)], mag[size_t(c)], tol);
      if (!ok && bad++ < 5)
        FAIL_CHECK(tw.name() << " " << isa_name(isa) << " rows [" << row0 << "," << row0 + nrows << ") cols [" << c0
                             << "," << c1 << ") c=" << c << ": got " << got << " want "
                             << ((c < c0 || c >= c1) ? double(y0[size_t(c)]) : ref[size_t(c)]));
    }
    CHECK_MESSAGE(bad == 0, tw.name() << " " << isa_name(isa) << " matmul_t cols [" << c0 << "," << c1 << "): " << bad
                                      << " bad");
    results.push_back(std::move(y));
  }
  if (results.size() == 2) {
    int bad = 0;
    for (int64_t c = c0; c < c1; ++c)
      if (!close(results[0][size_t(c)], results[1][size_t(c)], mag[size_t(c)], {2 * tol.rel, 2 * tol.abs})) ++bad;
    CHECK_MESSAGE(bad == 0, tw.name() << " matmul_t: scalar and avx2 disagree on " << bad << " columns");
  }
}

// dequantize_row is exact: one float rounding of code value * scale.
void check_dequantize(const TestWeight& tw, int64_t r, int64_t c0, int64_t c1) {
  const WeightMatrix w = tw.view();
  const float sentinel = 777.25f;
  std::vector<float> out(size_t(c1 - c0 + 4), sentinel);
  dequantize_row(w, r, c0, c1, out.data());
  int bad = 0;
  for (int64_t c = c0; c < c1; ++c) {
    const float want = float(tw.deq[size_t(r * tw.cols + c)]);
    if (std::bit_cast<uint32_t>(out[size_t(c - c0)]) != std::bit_cast<uint32_t>(want) && bad++ < 5)
      FAIL_CHECK(tw.name() << " dequantize r=" << r << " c=" << c << ": got " << out[size_t(c - c0)] << " want " << want);
  }
  for (size_t i = size_t(c1 - c0); i < out.size(); ++i)
    if (out[i] != sentinel) ++bad;
  CHECK_MESSAGE(bad == 0, tw.name() << " dequantize r=" << r << " [" << c0 << "," << c1 << ")");
}

// Column ranges worth testing for a given width: whole, ragged both ends, ranges that
// cross a 128 boundary, a 2-wide range straddling one, a single column, an empty range.
std::vector<std::pair<int64_t, int64_t>> column_ranges(int64_t cols) {
  std::vector<std::pair<int64_t, int64_t>> v{{0, cols}, {cols / 2, cols / 2}, {cols - 1, cols}};
  if (cols > 8) v.push_back({5, cols - 3});
  if (cols > 130) v.push_back({120, std::min<int64_t>(cols, 260)});
  if (cols >= 129) v.push_back({127, 129});
  if (cols > 256) v.push_back({129, 256 + 9 <= cols ? 265 : cols});
  return v;
}

// Row bands: all rows, one row, and a band crossing the 128-row scale-block edge.
std::vector<std::pair<int64_t, int64_t>> row_bands(int64_t rows) {
  std::vector<std::pair<int64_t, int64_t>> v{{0, rows}, {rows / 2, 1}};
  if (rows > 130) v.push_back({125, 6});
  return v;
}

void check_all_kernels(const TestWeight& tw, Tolerance tol = {}) {
  for (int64_t n : {1, 3, 17}) {
    check_matmul_rows(tw, n, 0, tw.rows, tol);
    if (tw.rows >= 4) check_matmul_rows(tw, n, tw.rows / 3, tw.rows - tw.rows / 4, tol);
  }
  for (auto [row0, nrows] : row_bands(tw.rows))
    for (auto [c0, c1] : column_ranges(tw.cols)) check_matmul_t(tw, row0, nrows, c0, c1, tol);
  for (int64_t r = 0; r < tw.rows; r += std::max<int64_t>(1, tw.rows / 9))
    for (auto [c0, c1] : column_ranges(tw.cols)) check_dequantize(tw, r, c0, c1);
  check_dequantize(tw, tw.rows - 1, 0, tw.cols);
}

const int64_t kShapes[][2] = {{576, 200}, {7, 13}, {130, 257}, {2, 384}, {5, 1}, {1, 136}};

// 2 x 3 scale blocks, the last row and column ragged. Block (br, bc):
//   (0,0) all zeros (+0 and -0 codes)        (0,1) all +-448            (0,2) subnormal codes only
//   (1,0) random codes, denormal scale        (1,1) +-448, denormal scale (1,2) subnormals, huge scale
TestWeight make_adversarial_fp8() {
  std::mt19937 rng(99);
  TestWeight tw;
  tw.dtype = DType::F8_E4M3;
  tw.rows = 200;
  tw.cols = 300;
  tw.resize();
  const float denormal = 1e-40f, tiny_denormal = 7 * std::numeric_limits<float>::denorm_min();
  REQUIRE(std::fpclassify(denormal) == FP_SUBNORMAL);
  const float huge = 4e36f;  // > FLT_MAX / 256: a kernel folding 2^8 into the scale overflows
  const float block_scales[2][3] = {{1.0f, 1.0f, 0.75f}, {denormal, tiny_denormal, huge}};
  for (int br = 0; br < 2; ++br)
    for (int bc = 0; bc < 3; ++bc) tw.scales[size_t(br * 3 + bc)] = block_scales[br][bc];
  for (int64_t r = 0; r < tw.rows; ++r)
    for (int64_t c = 0; c < tw.cols; ++c) {
      const int kind = int(r / 128) * 3 + int(c / 128);
      const uint8_t sign = (rng() & 1) ? 0x80 : 0x00;
      uint8_t code = 0;
      switch (kind) {
        case 0: code = sign; break;
        case 1: case 4: code = uint8_t(sign | 0x7e); break;
        case 2: case 5: code = uint8_t(sign | (1 + rng() % 7)); break;
        case 3: code = random_fp8(rng); break;
      }
      tw.set_code(r, c, code);
    }
  tw.finalize();
  return tw;
}

// The oneDNN path of matmul_rows (CpuGemm::kOnednn) over the same checks as the kernels:
// the double reference, scalar agreement, rows outside the band untouched. 70 tokens and
// 576 rows also take more than one 64-row panel and a partial one.
void check_onednn_matmul(const TestWeight& tw) {
  CpuGemmScope onednn(CpuGemm::kOnednn);
  for (int64_t n : {kOnednnMinRows, int64_t(70)}) {
    check_matmul_rows(tw, n, 0, tw.rows);
    if (tw.rows >= 4) check_matmul_rows(tw, n, tw.rows / 3, tw.rows - tw.rows / 4);
  }
}

// decode_rows gives dequantize_row's floats bit for bit, into rows of stride ld, and
// leaves the padding between them alone.
void check_decode_rows(const TestWeight& tw) {
  const WeightMatrix w = tw.view();
  const int64_t ld = tw.cols + 5;
  const float sentinel = -777.25f;
  std::vector<float> want(size_t(tw.cols));
  for (KernelIsa isa : isas_to_test()) {
    std::vector<float> got(size_t(tw.rows * ld), sentinel);
    decode_rows(w, 0, tw.rows, got.data(), ld, isa);
    int bad = 0;
    for (int64_t r = 0; r < tw.rows; ++r) {
      dequantize_row(w, r, 0, tw.cols, want.data());
      for (int64_t c = 0; c < ld; ++c) {
        const float g = got[size_t(r * ld + c)];
        const bool ok = c < tw.cols ? std::bit_cast<uint32_t>(g) == std::bit_cast<uint32_t>(want[size_t(c)])
                                    : g == sentinel;
        if (!ok && bad++ < 5) FAIL_CHECK(tw.name() << " " << isa_name(isa) << " decode_rows r=" << r << " c=" << c);
      }
    }
    CHECK_MESSAGE(bad == 0, tw.name() << " " << isa_name(isa) << " decode_rows: " << bad << " bad values");
  }
}

}  // namespace

TEST_CASE("weight_matrix: best_isa and kAuto") {
  const KernelIsa best = best_isa();
  CHECK(best != KernelIsa::kAuto);
  if (best == KernelIsa::kScalar) MESSAGE("CPU lacks AVX2/FMA/F16C: AVX2 comparisons are skipped");
  // kAuto gives exactly what the resolved ISA gives.
  const TestWeight tw = make_random(DType::BF16, 9, 200, 5);
  std::vector<float> x(200), a(9), b(9);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 7) - 3.0f;
  matmul_rows(tw.view(), x.data(), 200, 1, a.data(), 9, 0, 9, KernelIsa::kAuto);
  matmul_rows(tw.view(), x.data(), 200, 1, b.data(), 9, 0, 9, best);
  for (int i = 0; i < 9; ++i) CHECK(std::bit_cast<uint32_t>(a[size_t(i)]) == std::bit_cast<uint32_t>(b[size_t(i)]));
}

TEST_CASE("weight_matrix: F32 kernels vs double reference") {
  for (const auto& s : kShapes) check_all_kernels(make_random(DType::F32, s[0], s[1], 11));
}

TEST_CASE("weight_matrix: F16 kernels vs double reference") {
  for (const auto& s : kShapes) check_all_kernels(make_random(DType::F16, s[0], s[1], 12));
}

TEST_CASE("weight_matrix: BF16 kernels vs double reference") {
  for (const auto& s : kShapes) check_all_kernels(make_random(DType::BF16, s[0], s[1], 13));
}

TEST_CASE("weight_matrix: F8_E4M3 with 128x128 block scales vs double reference") {
  for (const auto& s : kShapes) check_all_kernels(make_random(DType::F8_E4M3, s[0], s[1], 14));
}

TEST_CASE("weight_matrix: F8_E4M3 without scales means scale 1") {
  check_all_kernels(make_random(DType::F8_E4M3, 7, 13, 15, 128, false));
  check_all_kernels(make_random(DType::F8_E4M3, 130, 257, 16, 128, false));
}

TEST_CASE("weight_matrix: F8_E4M3 with block sizes other than 128") {
  // The kernels work in 128-column chunks; each chunk must still see one scale.
  check_all_kernels(make_random(DType::F8_E4M3, 150, 300, 17, 64));
  check_all_kernels(make_random(DType::F8_E4M3, 70, 450, 18, 200));
  check_all_kernels(make_random(DType::F8_E4M3, 40, 100, 19, 24));
  check_all_kernels(make_random(DType::F8_E4M3, 260, 600, 20, 256));
}

TEST_CASE("weight_matrix: F8_E4M3 adversarial blocks") {
  const TestWeight tw = make_adversarial_fp8();
  check_all_kernels(tw);

  // Zero blocks contribute exactly zero: a matrix of only block (0,0) gives exact zeros.
  TestWeight zeros = make_random(DType::F8_E4M3, 3, 128, 21);
  for (int64_t r = 0; r < 3; ++r)
    for (int64_t c = 0; c < 128; ++c) zeros.set_code(r, c, (c & 1) ? 0x80 : 0x00);
  zeros.finalize();
  std::vector<float> x(128, 1.0f), y(3, 5.0f);
  for (KernelIsa isa : isas_to_test()) {
    matmul_rows(zeros.view(), x.data(), 128, 1, y.data(), 3, 0, 3, isa);
    for (float v : y) CHECK(v == 0.0f);
  }

  // All +-448 with unit inputs: the sums are exact in float, so every ISA must be exact.
  TestWeight big = make_random(DType::F8_E4M3, 4, 256, 22);
  for (float& s : big.scales) s = 1.0f;
  for (int64_t r = 0; r < 4; ++r)
    for (int64_t c = 0; c < 256; ++c) big.set_code(r, c, (c < 3 * r) ? 0xfe : 0x7e);
  big.finalize();
  for (KernelIsa isa : isas_to_test()) {
    for (int64_t n : {1, 3}) {
      std::vector<float> xs(size_t(256 * n), 1.0f), ys(size_t(4 * n));
      matmul_rows(big.view(), xs.data(), 256, n, ys.data(), 4, 0, 4, isa);
      for (int64_t t = 0; t < n; ++t)
        for (int64_t r = 0; r < 4; ++r) CHECK(ys[size_t(t * 4 + r)] == 448.0f * float(256 - 6 * r));
    }
  }
}

TEST_CASE("weight_matrix: float weights through oneDNN's sgemm vs double reference") {
  CHECK(cpu_gemm() == CpuGemm::kKernels);  // the default: batch-independent results
  for (DType dt : {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3})
    for (const auto& s : kShapes) check_onednn_matmul(make_random(dt, s[0], s[1], 31 + uint32_t(dt)));
  check_onednn_matmul(make_random(DType::F8_E4M3, 7, 13, 35, 128, false));
  check_onednn_matmul(make_random(DType::F8_E4M3, 150, 300, 36, 64));
  check_onednn_matmul(make_adversarial_fp8());
  CHECK(cpu_gemm() == CpuGemm::kKernels);  // the scopes put it back
}

TEST_CASE("weight_matrix: onednn_gemm_xwt against a double product with strides") {
  const int64_t n = 21, rows = 37, k = 150, ldx = k + 3, ldw = k + 7, ldy = rows + 4;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> x(size_t(n * ldx), std::numeric_limits<float>::quiet_NaN());
  std::vector<float> w(size_t(rows * ldw), std::numeric_limits<float>::quiet_NaN());
  for (int64_t t = 0; t < n; ++t)
    for (int64_t c = 0; c < k; ++c) x[size_t(t * ldx + c)] = u(rng);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < k; ++c) w[size_t(r * ldw + c)] = u(rng);
  const float sentinel = 3.5f;
  std::vector<float> y(size_t(n * ldy), sentinel);
  onednn_gemm_xwt(n, rows, k, x.data(), ldx, w.data(), ldw, y.data(), ldy);
  int bad = 0;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = 0; r < ldy; ++r) {
      const float got = y[size_t(t * ldy + r)];
      if (r >= rows) {
        bad += got != sentinel;
        continue;
      }
      double want = 0, mag = 0;
      for (int64_t c = 0; c < k; ++c) {
        want += double(x[size_t(t * ldx + c)]) * w[size_t(r * ldw + c)];
        mag += std::fabs(double(x[size_t(t * ldx + c)]) * w[size_t(r * ldw + c)]);
      }
      bad += !(std::fabs(got - want) <= 1e-5 * mag);
    }
  CHECK(bad == 0);
  CHECK(onednn_version().rfind("oneDNN ", 0) == 0);
}

TEST_CASE("weight_matrix: decode_rows is dequantize_row for every float format") {
  for (DType dt : {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3}) check_decode_rows(make_random(dt, 130, 257, 41));
  check_decode_rows(make_random(DType::F8_E4M3, 40, 100, 42, 24));
  check_decode_rows(make_random(DType::F8_E4M3, 7, 13, 43, 128, false));
  check_decode_rows(make_adversarial_fp8());
  const TestWeight tw = make_random(DType::BF16, 4, 16, 44);
  std::vector<float> out(64);
  CHECK_THROWS_AS(decode_rows(tw.view(), 2, 5, out.data(), 16), std::invalid_argument);
}

TEST_CASE("weight_matrix: CpuGemm kernels keep a token's float result independent of the batch") {
  // The property --cpu-gemm kernels promises (and oneDNN does not): each row of a 43-token
  // product is bit for bit the one-token product of that row.
  // 71 rows: the one-token kernel's four-row groups and three single rows, the batch
  // kernel's two-row pairs and one single row, its four-token groups and three tokens left
  // over; also rows [3, 68), which start the pairs on an odd row. FP8 also with 200-column
  // scale blocks, which its chunk walk must follow, and without scales.
  CpuGemmScope kernels(CpuGemm::kKernels);
  std::vector<TestWeight> weights;
  for (DType dt : {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3}) weights.push_back(make_random(dt, 71, 300, 51));
  weights.push_back(make_random(DType::F8_E4M3, 71, 450, 53, 200));
  weights.push_back(make_random(DType::F8_E4M3, 71, 300, 54, 128, false));
  // Longer rows: whole rows of 1100 columns (F32, BF16) and FP8 scale blocks of 600, each
  // ending in a tail of fewer than 8 columns.
  weights.push_back(make_random(DType::F32, 71, 1100, 55));
  weights.push_back(make_random(DType::BF16, 71, 1100, 56));
  weights.push_back(make_random(DType::F8_E4M3, 71, 1300, 57, 600));
  for (const TestWeight& tw : weights) {
    const int64_t n = 43;
    std::mt19937 rng(52);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> x(size_t(n * tw.cols));
    for (float& v : x) v = u(rng);
    for (const auto& [r0, r1] : {std::pair<int64_t, int64_t>{0, tw.rows}, {3, 68}}) {
      CAPTURE(r0);
      std::vector<float> all(size_t(n * tw.rows)), one(size_t(tw.rows));
      matmul_rows(tw.view(), x.data(), tw.cols, n, all.data(), tw.rows, r0, r1);
      int differ = 0;
      for (int64_t t = 0; t < n; ++t) {
        matmul_rows(tw.view(), x.data() + t * tw.cols, tw.cols, 1, one.data(), tw.rows, r0, r1);
        differ += std::memcmp(one.data() + r0, all.data() + t * tw.rows + r0, size_t(r1 - r0) * sizeof(float)) != 0;
      }
      CHECK_MESSAGE(differ == 0, tw.name() << ": " << differ << " tokens differ from their one-token product");
    }
  }
  CHECK(parse_cpu_gemm("onednn") == CpuGemm::kOnednn);
  CHECK(parse_cpu_gemm("kernels") == CpuGemm::kKernels);
  CHECK_FALSE(parse_cpu_gemm("blas").has_value());
  CHECK(std::string(cpu_gemm_name(CpuGemm::kOnednn)) == "onednn");
  CHECK(parse_cpu_gemm("bf16") == CpuGemm::kBf16);
  CHECK(std::string(cpu_gemm_name(CpuGemm::kBf16)) == "bf16");
}

}  // namespace quant_weight_matrix_suite

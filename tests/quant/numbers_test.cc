// Scalar number-format conversions (quant/numbers.h) against references written here
// from the format definitions, and against the compiler's _Float16 where it exists.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "quant/numbers.h"

namespace quant_numbers_suite {

using namespace hearth;

namespace {

// 2^e by repeated multiplication: no ldexp, so no shared code with the library.
double pow2(int e) {
  double r = 1.0;
  for (; e > 0; --e) r *= 2.0;
  for (; e < 0; ++e) r *= 0.5;
  return r;
}

// OCP e4m3fn straight from the spec: bias 7, S.1111.111 is NaN, no infinities.
double fp8_reference(uint8_t v) {
  const int s = v >> 7, e = (v >> 3) & 0xf, m = v & 0x7;
  if (e == 0xf && m == 0x7) return std::numeric_limits<double>::quiet_NaN();
  const double mag = e == 0 ? (m / 8.0) * pow2(-6) : (1.0 + m / 8.0) * pow2(e - 7);
  return s ? -mag : mag;
}

bool is_fp8_nan(uint8_t v) { return (v & 0x7f) == 0x7f; }

// Nearest e4m3 code to f by exhaustive search (ties to the even code, saturating at
// +-448): the definition of round-to-nearest-even, with no arithmetic tricks.
uint8_t fp8_nearest(float f) {
  const double a = std::fabs(double(f));
  const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  if (a >= 448.0) return uint8_t(sign | 0x7e);
  uint8_t best = 0;
  double best_d = std::numeric_limits<double>::infinity();
  for (int c = 0; c <= 0x7e; ++c) {
    const double d = std::fabs(fp8_reference(uint8_t(c)) - a);
    if (d < best_d || (d == best_d && (c & 1) == 0)) {
      best = uint8_t(c);
      best_d = d;
    }
  }
  return uint8_t(sign | best);
}

// IEEE binary16 from its definition.
double f16_reference(uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  double mag;
  if (e == 0x1f) mag = m ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else if (e == 0) mag = (m / 1024.0) * pow2(-14);
  else mag = (1.0 + m / 1024.0) * pow2(e - 15);
  return s ? -mag : mag;
}

bool same_bits(float a, float b) { return std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b); }

}  // namespace

// ---- FP8 e4m3fn ---------------------------------------------------------------

TEST_CASE("fp8 e4m3fn: known values") {
  CHECK(fp8_e4m3_to_f32(0x7e) == 448.0f);
  CHECK(fp8_e4m3_to_f32(0xfe) == -448.0f);
  CHECK(fp8_e4m3_to_f32(0x08) == 0.015625f);            // 2^-6, smallest normal
  CHECK(fp8_e4m3_to_f32(0x07) == 0.013671875f);         // 7 * 2^-9, largest subnormal
  CHECK(fp8_e4m3_to_f32(0x01) == 0.001953125f);         // 2^-9, smallest subnormal
  CHECK(fp8_e4m3_to_f32(0x38) == 1.0f);
  CHECK(fp8_e4m3_to_f32(0xb8) == -1.0f);
  CHECK(fp8_e4m3_to_f32(0x40) == 2.0f);
  CHECK(fp8_e4m3_to_f32(0x3c) == 1.5f);
  CHECK(fp8_e4m3_to_f32(0x77) == 240.0f);               // 1.875 * 2^7
  CHECK(fp8_e4m3_to_f32(0x78) == 256.0f);
  CHECK(same_bits(fp8_e4m3_to_f32(0x00), 0.0f));
  CHECK(same_bits(fp8_e4m3_to_f32(0x80), -0.0f));
  CHECK(std::isnan(fp8_e4m3_to_f32(0x7f)));
  CHECK(std::isnan(fp8_e4m3_to_f32(0xff)));
}

TEST_CASE("fp8 e4m3fn: all 256 codes decode as the spec formula and the table agrees") {
  const float* table = fp8_e4m3_table();
  int nans = 0;
  for (int c = 0; c < 256; ++c) {
    CAPTURE(c);
    const double ref = fp8_reference(uint8_t(c));
    const float got = fp8_e4m3_to_f32(uint8_t(c));
    if (std::isnan(ref)) {
      ++nans;
      CHECK(std::isnan(got));
      CHECK(std::isnan(table[c]));
      continue;
    }
    CHECK(double(got) == ref);
    CHECK(std::signbit(got) == bool(c & 0x80));
    CHECK(same_bits(table[c], got));
  }
  CHECK(nans == 2);
}

TEST_CASE("fp8 e4m3fn: encode round-trips every finite code") {
  for (int c = 0; c < 256; ++c) {
    if (is_fp8_nan(uint8_t(c))) continue;
    CAPTURE(c);
    CHECK(int(f32_to_fp8_e4m3(fp8_e4m3_to_f32(uint8_t(c)))) == c);
  }
  CHECK(is_fp8_nan(f32_to_fp8_e4m3(std::numeric_limits<float>::quiet_NaN())));
  CHECK(is_fp8_nan(f32_to_fp8_e4m3(-std::numeric_limits<float>::quiet_NaN())));
}

TEST_CASE("fp8 e4m3fn: round to nearest even at every midpoint") {
  // Midpoints of adjacent finite codes are exact floats (4-bit significands). The
  // winner is the code whose last bit is 0; one float step either side picks the
  // nearer neighbour. Covers subnormal/normal and every exponent boundary.
  int even_low = 0, even_high = 0;
  for (int c = 0; c < 0x7e; ++c) {
    for (uint8_t sign : {uint8_t(0x00), uint8_t(0x80)}) {
      const uint8_t lo = uint8_t(sign | c), hi = uint8_t(sign | (c + 1));
      const float vlo = fp8_e4m3_to_f32(lo), vhi = fp8_e4m3_to_f32(hi);
      const float mid = float((double(vlo) + double(vhi)) / 2.0);
      CAPTURE(c);
      CAPTURE(int(sign));
      REQUIRE(double(mid) == (double(vlo) + double(vhi)) / 2.0);
      const uint8_t even = (c & 1) == 0 ? lo : hi;
      (even == lo ? even_low : even_high)++;
      CHECK(int(f32_to_fp8_e4m3(mid)) == int(even));
      const float toward_lo = std::nextafter(mid, vlo), toward_hi = std::nextafter(mid, vhi);
      CHECK(int(f32_to_fp8_e4m3(toward_lo)) == int(lo));
      CHECK(int(f32_to_fp8_e4m3(toward_hi)) == int(hi));
    }
  }
  CHECK(even_low > 0);  // both kinds of tie were exercised
  CHECK(even_high > 0);
  // Spot checks by hand: 1.0625 lies between 1.0 (0x38) and 1.125 (0x39) -> 0x38;
  // 1.1875 between 1.125 (0x39) and 1.25 (0x3a) -> 0x3a.
  CHECK(int(f32_to_fp8_e4m3(1.0625f)) == 0x38);
  CHECK(int(f32_to_fp8_e4m3(1.1875f)) == 0x3a);
  CHECK(int(f32_to_fp8_e4m3(-1.1875f)) == 0xba);
  // 432 = midpoint of 416 (0x7d) and 448 (0x7e) -> 0x7e (even); 400 between 384 (0x7c) and 416 -> 0x7c.
  CHECK(int(f32_to_fp8_e4m3(432.0f)) == 0x7e);
  CHECK(int(f32_to_fp8_e4m3(400.0f)) == 0x7c);
}

TEST_CASE("fp8 e4m3fn: saturation and subnormals and signed zero") {
  const float inf = std::numeric_limits<float>::infinity();
  for (float f : {448.0f, 449.0f, 464.0f, 479.0f, 480.0f, 500.0f, 1e9f, 3.4e38f, inf}) {
    CAPTURE(f);
    CHECK(int(f32_to_fp8_e4m3(f)) == 0x7e);
    CHECK(int(f32_to_fp8_e4m3(-f)) == 0xfe);
  }
  // Subnormals are multiples of 2^-9.
  const float q = 0.001953125f;  // 2^-9
  CHECK(int(f32_to_fp8_e4m3(q)) == 0x01);
  CHECK(int(f32_to_fp8_e4m3(3 * q)) == 0x03);
  CHECK(int(f32_to_fp8_e4m3(-5 * q)) == 0x85);
  CHECK(int(f32_to_fp8_e4m3(0.5f * q)) == 0x00);    // tie between 0 and 2^-9 -> 0 (even)
  CHECK(int(f32_to_fp8_e4m3(-0.5f * q)) == 0x80);
  CHECK(int(f32_to_fp8_e4m3(0.51f * q)) == 0x01);
  CHECK(int(f32_to_fp8_e4m3(1.5f * q)) == 0x02);    // tie 1|2 -> 2
  CHECK(int(f32_to_fp8_e4m3(2.5f * q)) == 0x02);    // tie 2|3 -> 2
  CHECK(int(f32_to_fp8_e4m3(7.5f * q)) == 0x08);    // tie 7|8 (largest subnormal|smallest normal)
  CHECK(int(f32_to_fp8_e4m3(7.49f * q)) == 0x07);
  CHECK(int(f32_to_fp8_e4m3(1e-30f)) == 0x00);
  CHECK(int(f32_to_fp8_e4m3(-1e-30f)) == 0x80);
  CHECK(int(f32_to_fp8_e4m3(std::numeric_limits<float>::denorm_min())) == 0x00);
  CHECK(int(f32_to_fp8_e4m3(0.0f)) == 0x00);
  CHECK(int(f32_to_fp8_e4m3(-0.0f)) == 0x80);
  CHECK(same_bits(fp8_e4m3_to_f32(f32_to_fp8_e4m3(-0.0f)), -0.0f));
}

TEST_CASE("fp8 e4m3fn: encode of random floats equals exhaustive nearest search") {
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> log2mag(-14.0f, 9.5f);  // ~6e-5 .. ~724 (past 448)
  std::uniform_int_distribution<uint32_t> bits(0, 0xffffffffu);
  for (int i = 0; i < 20000; ++i) {
    float f = std::exp2(log2mag(rng));
    if (i & 1) f = -f;
    CAPTURE(f);
    CHECK(int(f32_to_fp8_e4m3(f)) == int(fp8_nearest(f)));
  }
  for (int i = 0; i < 5000; ++i) {  // arbitrary bit patterns (NaNs excluded)
    const float f = std::bit_cast<float>(bits(rng));
    if (std::isnan(f)) continue;
    CAPTURE(f);
    CHECK(int(f32_to_fp8_e4m3(f)) == int(fp8_nearest(f)));
  }
}

// ---- F16 ------------------------------------------------------------------------

TEST_CASE("f16: all 65536 codes decode as the IEEE formula and round-trip") {
  for (uint32_t h = 0; h < 65536; ++h) {
    const double ref = f16_reference(uint16_t(h));
    const float got = f16_to_f32(uint16_t(h));
    if (std::isnan(ref)) {
      if (!std::isnan(got)) FAIL_CHECK("code " << h << " should decode to NaN");
      const uint16_t back = f32_to_f16(got);
      if ((back & 0x7c00u) != 0x7c00u || (back & 0x3ffu) == 0 || (back & 0x8000u) != (h & 0x8000u))
        FAIL_CHECK("code " << h << ": NaN must encode to a NaN of the same sign, got " << back);
      continue;
    }
    if (double(got) != ref || std::signbit(got) != bool(h & 0x8000))
      FAIL_CHECK("decode " << h << ": got " << got << " want " << ref);
    if (f32_to_f16(got) != h) FAIL_CHECK("round trip " << h << " -> " << f32_to_f16(got));
  }
}

TEST_CASE("f16: known values and overflow and round to nearest even at midpoints") {
  CHECK(f32_to_f16(1.0f) == 0x3c00);
  CHECK(f32_to_f16(-2.0f) == 0xc000);
  CHECK(f32_to_f16(65504.0f) == 0x7bff);
  CHECK(f32_to_f16(65519.99f) == 0x7bff);
  CHECK(f32_to_f16(65520.0f) == 0x7c00);   // midpoint 65504|65536 -> even -> inf
  CHECK(f32_to_f16(-1e9f) == 0xfc00);
  CHECK(f32_to_f16(std::numeric_limits<float>::infinity()) == 0x7c00);
  CHECK(f32_to_f16(5.9604645e-8f) == 0x0001);  // 2^-24
  CHECK(f32_to_f16(2.98023224e-8f) == 0x0000); // 2^-25: tie 0|1 -> 0
  CHECK(f32_to_f16(-0.0f) == 0x8000);
  CHECK(f16_to_f32(0x3555) == 0.333251953125f);
  CHECK(f16_to_f32(0x0400) == 6.103515625e-05f);
  CHECK(std::isnan(f16_to_f32(0x7e00)));
  CHECK(std::isnan(f16_to_f32(0xfc01)));
  CHECK(std::isnan(f16_to_f32(f32_to_f16(std::numeric_limits<float>::quiet_NaN()))));

  // Every pair of adjacent finite codes: the midpoint (exact in float) goes to the
  // even code, one float ulp either side to the nearer code.
  for (uint32_t h = 0; h < 0x7bff; ++h) {
    for (uint32_t sign : {0u, 0x8000u}) {
      const uint16_t lo = uint16_t(sign | h), hi = uint16_t(sign | (h + 1));
      const float vlo = f16_to_f32(lo), vhi = f16_to_f32(hi);
      const float mid = float((double(vlo) + double(vhi)) / 2.0);
      const uint16_t even = (h & 1) == 0 ? lo : hi;
      if (f32_to_f16(mid) != even) FAIL_CHECK("tie " << lo << "|" << hi << " -> " << f32_to_f16(mid));
      if (f32_to_f16(std::nextafter(mid, vlo)) != lo) FAIL_CHECK("below tie " << lo);
      if (f32_to_f16(std::nextafter(mid, vhi)) != hi) FAIL_CHECK("above tie " << hi);
    }
  }
}

#if defined(__FLT16_MANT_DIG__)
TEST_CASE("f16: agrees with the compiler's _Float16") {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float lib = f16_to_f32(uint16_t(h));
    const float cc = float(std::bit_cast<_Float16>(uint16_t(h)));
    if (std::isnan(cc) ? !std::isnan(lib) : !same_bits(lib, cc)) FAIL_CHECK("decode " << h);
  }
  auto check = [](float f) {
    const uint16_t cc = std::bit_cast<uint16_t>(_Float16(f));
    const uint16_t lib = f32_to_f16(f);
    if (std::isnan(f)) {
      if ((lib & 0x7c00u) != 0x7c00u || (lib & 0x3ffu) == 0) FAIL_CHECK("NaN " << f);
    } else if (lib != cc) {
      FAIL_CHECK("encode " << f << " (bits " << std::bit_cast<uint32_t>(f) << "): lib " << lib << " _Float16 " << cc);
    }
  };
  // A stride through every float bit pattern (both signs, subnormals, NaN, inf) ...
  for (uint64_t u = 0; u <= 0xffffffffull; u += 4093) check(std::bit_cast<float>(uint32_t(u)));
  // ... and every pattern of the 13 mantissa bits a normal f16 drops (ties included),
  // under an even and an odd kept mantissa, for exponents that give f16 subnormals,
  // the smallest and largest normal binades, and 1.0.
  for (uint32_t e : {103u, 110u, 112u, 113u, 127u, 142u}) {
    for (uint32_t kept : {0x2aau, 0x155u}) {
      for (uint32_t m = 0; m < (1u << 13); ++m) {
        const uint32_t u = (e << 23) | (kept << 13) | m;
        check(std::bit_cast<float>(u));
        check(std::bit_cast<float>(u | 0x80000000u));
      }
    }
  }
}
#else
TEST_CASE("f16: compiler _Float16 comparison") { MESSAGE("_Float16 not available; skipped"); }
#endif

// ---- BF16 -----------------------------------------------------------------------

TEST_CASE("bf16: all codes round-trip and known values and NaN stays NaN") {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_to_f32(uint16_t(h));
    if (std::bit_cast<uint32_t>(f) != h << 16) FAIL_CHECK("decode " << h);
    const bool nan = (h & 0x7f80u) == 0x7f80u && (h & 0x7fu) != 0;
    if (nan) {
      if (!std::isnan(bf16_to_f32(f32_to_bf16(f)))) FAIL_CHECK("NaN " << h);
    } else if (f32_to_bf16(f) != h) {
      FAIL_CHECK("round trip " << h << " -> " << f32_to_bf16(f));
    }
  }
  CHECK(bf16_to_f32(0x3f80) == 1.0f);
  CHECK(bf16_to_f32(0xc040) == -3.0f);
  CHECK(bf16_to_f32(0x7f80) == std::numeric_limits<float>::infinity());
  CHECK(f32_to_bf16(1.0f) == 0x3f80);
  CHECK(f32_to_bf16(-0.0f) == 0x8000);
  CHECK(f32_to_bf16(3.4e38f) == 0x7f80);  // rounds past the largest bf16 to inf
  // A signalling NaN whose payload lives only in the low 16 bits must not become inf.
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(std::bit_cast<float>(0x7f800001u)))));
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(std::bit_cast<float>(0xff800001u)))));
  CHECK((f32_to_bf16(std::bit_cast<float>(0xff800001u)) & 0x8000) == 0x8000);
}

TEST_CASE("bf16: round to nearest even at every midpoint") {
  // Midpoint between codes h and h+1 is the float (h << 16) | 0x8000.
  for (uint32_t h = 0; h < 0x7f80; ++h) {  // every finite non-negative code (0x7f7f -> inf is RNE too)
    for (uint32_t sign : {0u, 0x8000u}) {
      const uint32_t code = sign | h;
      const uint32_t mid = (code << 16) | 0x8000u;
      const uint16_t even = uint16_t((h & 1) == 0 ? code : code + 1);
      if (f32_to_bf16(std::bit_cast<float>(mid)) != even) FAIL_CHECK("tie above " << code);
      if (f32_to_bf16(std::bit_cast<float>(mid - 1)) != code) FAIL_CHECK("below tie " << code);
      if (f32_to_bf16(std::bit_cast<float>(mid + 1)) != code + 1) FAIL_CHECK("above tie " << code);
    }
  }
  CHECK(f32_to_bf16(1.00390625f) == 0x3f80);   // 1 + 2^-8: tie 0x3f80|0x3f81 -> 0x3f80
  CHECK(f32_to_bf16(1.01171875f) == 0x3f82);   // 1 + 3*2^-8: tie 0x3f81|0x3f82 -> 0x3f82
}

TEST_CASE("fp8: the bit-arithmetic encoder is bit-identical to the reference") {
  // (Checked exhaustively over all 2^32 floats once; here a sweep plus the edges.)
  int mismatches = 0;
  auto check = [&](float f) {
    if (hearth::f32_to_fp8_e4m3(f) != hearth::f32_to_fp8_e4m3_reference(f) && ++mismatches < 10)
      MESSAGE("mismatch at ", f);
  };
  for (uint64_t u = 0; u < (uint64_t(1) << 32); u += 40009) check(std::bit_cast<float>(uint32_t(u)));
  for (int code = 0; code < 256; ++code) {  // every value, its neighbours and the midpoints
    const float v = hearth::fp8_e4m3_to_f32(uint8_t(code));
    if (std::isnan(v)) continue;
    check(v);
    check(std::nextafter(v, 1e9f));
    check(std::nextafter(v, -1e9f));
    const float w = hearth::fp8_e4m3_to_f32(uint8_t(code + 1));
    if ((code & 0x7f) < 0x7e) check(0.5f * (v + w));
  }
  for (float f : {0.0f, -0.0f, 448.0f, 464.0f, 480.0f, 1e30f, -1e30f, INFINITY, -INFINITY, NAN, 0.015625f,
                  0.0146484375f, 0.0009765625f, 0.001953125f, 1e-40f})
    check(f);
  CHECK(mismatches == 0);
}

}  // namespace quant_numbers_suite

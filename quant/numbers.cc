#include "quant/numbers.h"

#include <array>
#include <limits>

namespace hearth {

uint16_t f32_to_f16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const float a = std::fabs(f);
  if (std::isnan(f)) return uint16_t(sign | 0x7e00u);
  if (a >= 65520.0f) return uint16_t(sign | 0x7c00u);  // rounds past the largest finite half
  if (a < std::ldexp(1.0f, -14)) {
    // Subnormal half: value = m * 2^-24; nearbyint rounds half to even.
    return uint16_t(sign | uint16_t(std::nearbyint(a * 16777216.0f)));
  }
  int e;
  const float m = std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  uint32_t mant = uint32_t(std::nearbyint(std::ldexp(m, 11)));  // 11 significant bits
  int exp = e - 1 + 15;
  if (mant == 2048) { mant = 1024; ++exp; }
  if (exp >= 31) return uint16_t(sign | 0x7c00u);
  return uint16_t(sign | uint16_t(exp << 10) | uint16_t(mant & 0x3ffu));
}

float fp8_e4m3_to_f32(uint8_t v) {
  const bool neg = v & 0x80u;
  const int exp = (v >> 3) & 0xf;
  const int man = v & 0x7;
  float r;
  if (exp == 0xf && man == 0x7) return std::numeric_limits<float>::quiet_NaN();
  if (exp == 0) r = std::ldexp(float(man), -9);  // subnormal: m/8 * 2^-6
  else r = std::ldexp(float(8 + man), exp - 10);  // (1 + m/8) * 2^(e-7)
  return neg ? -r : r;
}

uint8_t f32_to_fp8_e4m3_reference(float f) {
  if (std::isnan(f)) return 0x7f;
  const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  float a = std::fabs(f);
  if (a >= kFp8E4M3Max) return uint8_t(sign | 0x7e);  // saturate to 448
  if (a < std::ldexp(1.0f, -6)) {
    // Subnormal range: multiples of 2^-9; nearbyint rounds half to even.
    const int m = int(std::nearbyint(a * 512.0f));  // m == 8 is the smallest normal, encoded alike
    return uint8_t(sign | m);
  }
  int e;
  const float m = std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  int mant = int(std::nearbyint(std::ldexp(m, 4)));  // 4 significant bits: 8..16
  int exp = e - 1 + 7;
  if (mant == 16) { mant = 8; ++exp; }
  const uint8_t code = uint8_t((exp << 3) | (mant & 0x7));
  return uint8_t(sign | (code > 0x7e ? 0x7e : code));
}

uint8_t f32_to_fp8_e4m3(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  const uint8_t sign = uint8_t((u >> 24) & 0x80u);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return 0x7f;                  // NaN
  if (u >= 0x43e00000u) return uint8_t(sign | 0x7e);  // >= 448: saturate
  if (u < 0x3c800000u) {                              // < 2^-6: subnormal, multiples of 2^-9
    // Adding 2^14 puts the 2^-9 place at the mantissa's last bit; the FPU rounds to even.
    const float t = std::bit_cast<float>(u) + 16384.0f;
    return uint8_t(sign | (std::bit_cast<uint32_t>(t) - 0x46800000u));
  }
  u += 0x7ffffu + ((u >> 20) & 1u);  // round the 23-bit mantissa to 3 bits, ties to even
  const uint32_t code = (u >> 20) - (120u << 3);  // rebias the exponent 127 -> 7
  return uint8_t(sign | (code > 0x7eu ? 0x7eu : code));
}

const float* fp8_e4m3_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[i] = fp8_e4m3_to_f32(uint8_t(i));
    return t;
  }();
  return table.data();
}

}  // namespace hearth

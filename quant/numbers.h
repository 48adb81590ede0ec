// Scalar conversions between the storage number formats and float.
// These are the reference definitions; SIMD kernels are tested against them.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace hearth {

inline float bf16_to_f32(uint16_t h) { return std::bit_cast<float>(uint32_t(h) << 16); }

// Round-to-nearest-even; NaN stays a (quiet) NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

// Exact for every half value: normal ones by moving the fields (rebias the exponent by
// 127 - 15), subnormal ones as man * 2^-24 (one exact multiply), inf kept, NaN made quiet.
// Inline and branch-light: the block dequantizers call it once per block.
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp - 1u < 30u) return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (man << 13));
  if (exp == 0) return std::bit_cast<float>(std::bit_cast<uint32_t>(float(man) * 0x1p-24f) | sign);
  return std::bit_cast<float>(sign | (man ? 0x7fc00000u : 0x7f800000u));
}
uint16_t f32_to_f16(float f);  // round-to-nearest-even, overflow to inf

// FP8 e4m3fn (OCP "E4M3FN"): 1 sign, 4 exponent (bias 7), 3 mantissa bits,
// no infinities, S.1111.111 is NaN, largest finite value 448.
inline constexpr float kFp8E4M3Max = 448.0f;
float fp8_e4m3_to_f32(uint8_t v);
// Round-to-nearest-even, saturating to +-448 (NaN maps to NaN). Bit arithmetic, fast
// enough for bulk quantization; f32_to_fp8_e4m3_reference is the readable definition it
// is tested against.
uint8_t f32_to_fp8_e4m3(float f);
uint8_t f32_to_fp8_e4m3_reference(float f);

// All 256 e4m3 values decoded, for table-driven kernels.
const float* fp8_e4m3_table();

}  // namespace hearth

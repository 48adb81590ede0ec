// ggml's block formats (the tensor types of GGUF files), byte for byte as ggml lays them
// out, with one descriptor per format: its name and ggml type id, its block geometry, and
// the scalar reference routines (dequantize, quantize, dot product) every faster kernel
// is tested against.
//
// A row of n values is n / block_elems consecutive blocks. Every scale stored as a
// 16-bit field is an IEEE binary16 bit pattern (quant/numbers.h converts it); all
// multi-byte fields are little-endian, as in GGUF files.
//
// The K-quants group 256 values into a super-block with one or two f16 factors that
// scale small integer per-sub-block scales (and mins):
//   Q2_K: value = d * (sc & 15) * q - dmin * (sc >> 4),   q in 0..3,   16 sub-blocks of 16
//   Q3_K: value = d * (sc - 32) * (q - 4),                q in 0..7,   16 sub-blocks of 16
//   Q4_K: value = d * sc * q - dmin * m,                  q in 0..15,   8 sub-blocks of 32
//   Q5_K: value = d * sc * q - dmin * m,                  q in 0..31,   8 sub-blocks of 32
//   Q6_K: value = d * sc * (q - 32),  sc a signed byte,   q in 0..63,  16 sub-blocks of 16
// IQ4_XS has the same geometry as the 32-value sub-blocks of Q4_K but signed 6-bit
// scales and non-linear levels:
//   IQ4_XS: value = d * (sc - 32) * kIq4nlValues[q],     q in 0..15,   8 sub-blocks of 32
// Q8_K (float d, bytes, per-16 sums) is the activation format the K-quant and IQ4_XS dot
// products take.
//
// The 32-value formats have one f16 scale per block (and Q4_1/Q5_1 an f16 offset m):
//   Q8_0: value = d * q,                        q in -128..127
//   Q4_0: value = d * (q - 8),                  q in 0..15
//   Q4_1: value = d * q + m,                    q in 0..15
//   Q5_0: value = d * (q - 16),                 q in 0..31
//   Q5_1: value = d * q + m,                    q in 0..31
//   IQ4_NL: value = d * kIq4nlValues[q],        q in 0..15
// Their dot products all take Q8_0 activations (ggml gives Q4_1/Q5_1 Q8_1, which carries
// d * sum(qs) as a second f16; hearth sums the int8 quants inside the dot product
// instead, exactly, so one activation format serves every 32-value format).
#pragma once
#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "quant/dtype.h"
#include "quant/weight_matrix.h"  // KernelIsa

namespace hearth {

static_assert(std::endian::native == std::endian::little,
              "block formats are read in place and GGUF is little-endian");

inline constexpr int kQK8_0 = 32;   // values per Q8_0 block
inline constexpr int kQK4_0 = 32;   // values per Q4_0 block
inline constexpr int kQK4_1 = 32;   // ... Q4_1
inline constexpr int kQK5_0 = 32;   // ... Q5_0
inline constexpr int kQK5_1 = 32;   // ... Q5_1
inline constexpr int kQK4_NL = 32;  // ... IQ4_NL
inline constexpr int kQK_K = 256;   // values per K-quant super-block
inline constexpr int kKScaleBytes = 12;  // packed 6-bit scales of Q3_K, Q4_K, Q5_K

// value = d * qs[i]
struct BlockQ8_0 {
  uint16_t d;  // f16
  int8_t qs[kQK8_0];
};

// value = d * (nibble - 8); byte j holds value j in its low nibble and value j + 16 in
// its high nibble.
struct BlockQ4_0 {
  uint16_t d;  // f16
  uint8_t qs[kQK4_0 / 2];
};

// value = d * nibble + m; nibbles packed as in Q4_0.
struct BlockQ4_1 {
  uint16_t d;  // f16
  uint16_t m;  // f16
  uint8_t qs[kQK4_1 / 2];
};

// value = d * (q - 16) with the 5-bit q of value i: its low 4 bits packed as Q4_0's
// nibbles, its fifth bit bit i of qh read as a little-endian 32-bit word.
struct BlockQ5_0 {
  uint16_t d;  // f16
  uint8_t qh[4];
  uint8_t qs[kQK5_0 / 2];
};

// value = d * q + m, q as in Q5_0.
struct BlockQ5_1 {
  uint16_t d;  // f16
  uint16_t m;  // f16
  uint8_t qh[4];
  uint8_t qs[kQK5_1 / 2];
};

// The 16 levels of IQ4_NL and IQ4_XS (ggml's kvalues_iq4nl), a non-linear grid denser
// near zero, where most weights are.
inline constexpr int8_t kIq4nlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                            1,    13,   25,  38,  53,  69,  89,  113};

// value = d * kIq4nlValues[nibble]; nibbles packed as in Q4_0.
struct BlockIQ4_NL {
  uint16_t d;  // f16
  uint8_t qs[kQK4_NL / 2];
};

// scales[j]: low nibble = scale, high nibble = min of sub-block j (16 values each).
// qs: 2-bit quants; values 128c + 32g + l sit in qs[32c + l] at bits 2g..2g+1.
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];
  uint8_t qs[kQK_K / 4];
  uint16_t d;     // f16, multiplies the 4-bit scales
  uint16_t dmin;  // f16, multiplies the 4-bit mins
};

// hmask: bit i / 32 of hmask[i % 32] is the high (third) bit of value i's quant.
// qs: low 2 bits, packed as in Q2_K. scales: sixteen 6-bit scales, stored with 32 added:
// the low 4 bits of scale j are the low nibble of scales[j] (j < 8) or the high nibble
// of scales[j - 8], its top 2 bits are bits 2(j/4)..2(j/4)+1 of scales[8 + j % 4].
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];
  uint8_t qs[kQK_K / 4];
  uint8_t scales[kKScaleBytes];
  uint16_t d;  // f16
};

// scales: eight 6-bit scales and eight 6-bit mins. For j < 4: scale j = scales[j] & 63,
// min j = scales[j + 4] & 63. For j >= 4: low 4 bits from the nibbles of scales[j + 4]
// (scale low, min high), top 2 bits from bits 6..7 of scales[j - 4] (scale) and
// scales[j] (min).
// qs: values 64c + l (l < 32) in the low nibble of qs[32c + l], 64c + 32 + l in the high.
struct BlockQ4_K {
  uint16_t d;     // f16, multiplies the 6-bit scales
  uint16_t dmin;  // f16, multiplies the 6-bit mins
  uint8_t scales[kKScaleBytes];
  uint8_t qs[kQK_K / 2];
};

// As Q4_K, plus a fifth bit: bit 2c (value 64c + l) or 2c + 1 (value 64c + 32 + l) of
// qh[l].
struct BlockQ5_K {
  uint16_t d;     // f16
  uint16_t dmin;  // f16
  uint8_t scales[kKScaleBytes];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};

// Value 128c + 32g + l (g < 4, l < 32): low 4 bits in ql[64c + 32(g & 1) + l] (low nibble
// for g < 2, high nibble for g >= 2), top 2 bits at bits 2g..2g+1 of qh[32c + l].
// scales[i / 16] is the signed scale of value i.
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;  // f16
};

// Eight sub-blocks of 32, each packed as an IQ4_NL block without its own d (qs[16j ..
// 16j + 15] holds sub-block j). Sub-block j's 6-bit scale (stored + 32): low 4 bits in
// nibble j % 2 of scales_l[j / 2], top 2 bits at bits 2j..2j+1 of scales_h.
struct BlockIQ4_XS {
  uint16_t d;  // f16
  uint16_t scales_h;
  uint8_t scales_l[kQK_K / 64];
  uint8_t qs[kQK_K / 2];
};

// Activations for the K-quant dot products: value = d * qs[i]; bsums[j] is the sum of
// qs[16j .. 16j + 15] (lets the dot products apply the mins without touching qs).
struct BlockQ8_K {
  float d;
  int8_t qs[kQK_K];
  int16_t bsums[kQK_K / 16];
};

static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockIQ4_NL) == 18);
static_assert(sizeof(BlockIQ4_XS) == 136);
static_assert(sizeof(BlockQ2_K) == 84);
static_assert(sizeof(BlockQ3_K) == 110);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockQ8_K) == 292);

// ggml's type ids (ggml.h), as stored in GGUF tensor infos.
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ4_NL = 20,
  IQ4_XS = 23,
  BF16 = 30,
};

// Every routine takes n, the number of values in the row, and throws
// std::invalid_argument unless n is a non-negative multiple of the format's block_elems.
//
// out[0..n) = the values the blocks encode.
using DequantizeRowFn = void (*)(const void* blocks, float* out, int64_t n);
// Encodes in[0..n) into n / block_elems blocks. importance (nullable, n entries, >= 0)
// weighs each value's squared error in the scale search, e.g. an imatrix's mean squared
// activation per column; formats without a search (floats, Q8_0, Q8_K) ignore it.
using QuantizeRowFn = void (*)(const float* in, void* blocks, int64_t n, const float* importance);
// sum_i w[i] * a[i] over one row of weights and one row of activations already in the
// format's vec_dot_type.
using VecDotFn = float (*)(const void* w_blocks, const void* act_blocks, int64_t n);

struct BlockFormat {
  GgmlType type;
  std::string_view name;  // ggml's name: "f32", "q8_0", "q4_K", ...
  int64_t block_elems;    // values per block (1 for the float formats)
  int64_t block_bytes;    // bytes per block
  DequantizeRowFn dequantize_row;
  QuantizeRowFn quantize_row;
  GgmlType vec_dot_type;  // the format vec_dot wants its activations in
  VecDotFn vec_dot;
  // The same dot product with AVX2 + FMA + F16C (quant/dot_simd.h), nullptr where there
  // is none. Exact integer sums like vec_dot; only float rounding and summation order
  // differ. Faults on a CPU without those extensions: prefer vec_dot_kernel(). (The
  // AVX-512 VNNI kernels, which give the same floats, exist for the same formats.)
  VecDotFn vec_dot_avx2;

  uint32_t ggml_id() const { return uint32_t(type); }
  // Bytes of a row of n values; std::invalid_argument unless n is a multiple of
  // block_elems.
  int64_t row_bytes(int64_t n) const;
};

// Every supported format, in ggml id order.
std::span<const BlockFormat> block_formats();
// By ggml name, ignoring ASCII case ("q4_K", "Q4_K"); nullptr when unknown.
const BlockFormat* find_block_format(std::string_view name);
// By ggml type id; nullptr when hearth does not support it.
const BlockFormat* find_block_format_by_id(uint32_t ggml_id);
// The descriptor of a supported type (every GgmlType enumerator has one).
const BlockFormat& block_format(GgmlType type);
inline int64_t row_bytes(GgmlType type, int64_t n) { return block_format(type).row_bytes(n); }

// The two vocabularies: the descriptor of a DType (nullptr for F8_E4M3, which ggml does
// not have), and the DType of a ggml type (nullopt for Q8_K, an activation-only format).
const BlockFormat* block_format_of(DType t);
std::optional<DType> dtype_of(GgmlType type);

// The dot-product kernel of f to use for isa, which resolve_isa() caps at what the CPU
// has (so asking for AVX-512 on an older CPU falls back rather than faulting): the AVX-512
// VNNI kernel for kAvx512Vnni, vec_dot_avx2 for kAvx2, the scalar vec_dot where f has no
// SIMD kernel or for kScalar.
VecDotFn vec_dot_kernel(const BlockFormat& f, KernelIsa isa = KernelIsa::kAuto);

// Activation quantizers: what the table's Q8_K entry and its Q8_0 entry without
// importance do. Q8_0: d = amax / 127 stored as f16, levels round(x / d) (ties away from
// zero) under the stored d, so they may differ from ggml's by one where the f16 rounding
// of d moves a value across a midpoint; clamped to -127..127, NaN to -127 (the Q8_0
// weight kernels take activations in that range, quant/dot_kernels.inc; only a subnormal
// or saturated d or a NaN could reach -128). Q8_K: float d = -max / 127 with max the
// value of largest magnitude, levels round-to-nearest-even, bsums filled in.
void quantize_row_q8_0(const float* in, BlockQ8_0* out, int64_t n);
void quantize_row_q8_k(const float* in, BlockQ8_K* out, int64_t n);

}  // namespace hearth

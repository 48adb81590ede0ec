// Q4_K with eight rows interleaved (DType::Q4_K_R8): a layout hearth builds in memory at
// load (`--interleave`) so that one pass over a group's bytes computes eight rows' dot
// products. It is never written to a file: GGUF has no such type.
//
// Why: a Q4_K row's dot product spends most of its instructions unpacking scales and
// nibbles and summing lanes horizontally, so on AVX2 a core computes it slower than DRAM
// delivers the bytes (about 20 GB/s per core from L2 on this project's machines). With
// eight rows side by side, each 256-bit register holds four values of each of the eight
// rows: one broadcast activation quad multiplies all eight, the eight rows' sub-block
// scales and mins are unpacked together, and each row's result ends in its own lane, so
// no horizontal sums are left.
//
// A group is rows 8g .. 8g + 7 of a Q4_K matrix; its super-block b (values 256b ..
// 256b + 255 of each row) is one BlockQ4_Kx8 of the same 8 * 144 bytes as the eight
// BlockQ4_K it replaces, and the blocks of a group follow each other. Within it, with
// sc[s][r] and m[s][r] the 6-bit scale and min of sub-block s (values 32s .. 32s + 31)
// of row r, and j = 8s + r:
//   d[r], dmin[r]      row r's f16 factors, as in its BlockQ4_K
//   scales[j]          (sc[s][r] & 15) | (sc[s + 4][r] & 15) << 4          for s < 4
//   scales[32 + j]     (m[s][r] & 15)  | (m[s + 4][r] & 15) << 4           for s < 4
//   scales[64 + j]     sc[s][r] >> 4 | (sc[s + 4][r] >> 4) << 2 | (m[s][r] >> 4) << 4 |
//                      (m[s + 4][r] >> 4) << 6                              for s < 4
//   qs[128 s + 32 p + 4 r + i]  (q[r][32 s + 4 p + i]) | (q[r][32 s + 4 (p + 4) + i]) << 4
//                      for p < 4, i < 4, q the 4-bit levels
// So one 32-byte load of qs gives, in its low nibbles, values 4p .. 4p + 3 of sub-block s
// for every row (row r in bytes 4r .. 4r + 3) and, in its high nibbles, values 4p + 16 ..
// 4p + 19.
//
// The dot product (activations Q8_K, as plain Q4_K's) computes for each row and
// super-block the exact integer sums isum = sum_s sc[s][r] * sum_i q * a and imin =
// sum_s m[s][r] * (bsums[2s] + bsums[2s + 1]), then
//   acc[r] = fma(d[r] * a.d, float(isum), acc[r]);  acc[r] = fma(-(dmin[r] * a.d), float(imin), acc[r])
// in super-block order, acc starting at 0. The scalar reference and the AVX2 kernel do
// exactly these float steps, so they agree bit for bit, for any number of tokens. The
// result differs from plain Q4_K's vec_dot only by float rounding (that one sums lanes
// in another order).
#pragma once
#include <cstdint>

#include "quant/block_formats.h"
#include "quant/weight_matrix.h"  // KernelIsa

namespace hearth {

inline constexpr int kInterleavedRows = 8;

struct BlockQ4_Kx8 {
  uint16_t d[kInterleavedRows];     // f16
  uint16_t dmin[kInterleavedRows];  // f16
  uint8_t scales[96];
  uint8_t qs[kInterleavedRows * kQK_K / 2];
};
static_assert(sizeof(BlockQ4_Kx8) == kInterleavedRows * sizeof(BlockQ4_K), "the same bytes as eight Q4_K blocks");

// Eight Q4_K rows of nb blocks each (rows[r] the blocks of row r) into nb interleaved
// blocks.
void interleave_q4_k_x8(const BlockQ4_K* const rows[kInterleavedRows], int64_t nb, BlockQ4_Kx8* out);
// Row r (0..7) of a group of nb interleaved blocks back into nb Q4_K blocks: the exact
// inverse of interleave_q4_k_x8.
void deinterleave_q4_k_x8(const BlockQ4_Kx8* group, int64_t nb, int r, BlockQ4_K* out);

// out[t * 8 + r] = row r of the group (n values, n a multiple of 256) . act[t], for r in
// 0..7 and t < tokens (1..4); act[t] is a Q8_K row of n values as quantize_row_q8_k
// writes it (bsums filled). Each out is the same bits whatever `tokens` is. Both
// kernels throw std::invalid_argument unless n is a non-negative multiple of 256 and
// tokens is 1..4.
using VecDotX8Fn = void (*)(const void* group, const void* const* act, int tokens, int64_t n, float* out);

// The scalar reference of the formula above.
void vec_dot_q4_k_x8_scalar(const void* group, const void* const* act, int tokens, int64_t n, float* out);
// The kernel for isa (resolve_isa caps it at the CPU): AVX2 for kAvx2 and kAvx512, its
// VNNI twin for kAvx512Vnni (the same floats), the scalar reference for kScalar.
VecDotX8Fn vec_dot_q4_k_x8_kernel(KernelIsa isa = KernelIsa::kAuto);

// Two groups in one pass: out[t * 16 + r] = row r of group0 . act[t] and out[t * 16 + 8
// + r] = row r of group1 . act[t], for r in 0..7 and t < tokens (1..kMaxX16Tokens), each
// the same bits as the eight-row kernels give (so which rows and tokens share a call
// never changes a result). The arguments are checked as theirs.
inline constexpr int kMaxX16Tokens = 6;
using VecDotX16Fn = void (*)(const void* group0, const void* group1, const void* const* act, int tokens, int64_t n,
                             float* out);
// The AVX-512 F/BW kernel for kAvx512, its VNNI twin for kAvx512Vnni (the same floats),
// nullptr below (isa resolved): then callers take the groups one at a time.
VecDotX16Fn vec_dot_q4_k_x16_kernel(KernelIsa isa = KernelIsa::kAuto);

// ---- Q6_K_R16: Q6_K with sixteen rows interleaved (DType::Q6_K_R16) ---------------------
//
// The same idea for Q6_K, built at load where the CPU has AVX2 (kernels for AVX2, AVX-512
// F/BW and AVX-512 VNNI; the scalar reference alone would be slower than plain Q6_K). Plain Q6_K's tile multiplies
// int8 pairs (vpmaddubsw) and then applies each sub-block's scale (vpmaddwd) for every
// 32 values of one row; here one vpdpbusd multiplies four values of each of sixteen rows,
// and a sub-block's scale is applied once per 16 values of all of them. A MoE's down
// projections in a Q4_K_M file are Q6_K in every third layer, and a Q6_K file is Q6_K
// throughout.
//
// A unit is rows 16u .. 16u + 15 of a Q6_K matrix; its super-block b (values 256b ..
// 256b + 255 of each row) is one BlockQ6_Kx16 of the same 16 * 210 bytes as the sixteen
// BlockQ6_K it replaces, and the blocks of a unit follow each other. With q[r][v] the
// 6-bit level (0..63, the value being q - 32) of value v (0..255) of row r (0..15),
// sc[s][r] the int8 scale of sub-block s (values 16s .. 16s + 15), and for v = 16s +
// 4p + i (p, i < 4), u = s / 4 and j = 4r + i:
//   d[r]                   row r's f16 factor, as in its BlockQ6_K
//   q[832 u + 16 (s % 4) + r]          sc[s][r] (int8)
//   low bits: bits 0..3 of q[r][v], in the low nibble for even s, the high for odd s, of
//     q[832 u + 64 + 128 p + j]        for s % 4 < 2
//     q[832 u + 576 + 64 p + j]        for s % 4 >= 2
//   high bits: bits 4..5 of q[r][v], at bits 2 (s % 4) and 2 (s % 4) + 1 of
//     q[832 u + 128 + 128 p + j]
// So one 64-byte load of low bits gives values 4p .. 4p + 3 of two sub-blocks for every
// row (row r in bytes 4r .. 4r + 3), and one of high bits those of four sub-blocks. The
// kernel takes sub-blocks in pairs (0, 1), (2, 3), ... and values 4p .. in order, and the
// order above is the order it first reads the bytes in: one ascending stream. That is
// what the hardware prefetcher follows: with the low bits, the high bits or the scales in
// regions of their own, or two groups of eight rows read side by side, one Zen 4 thread
// read the rows from DRAM at 7-10 GB/s, against about 20 for plain Q6_K's and this order.
//
// The dot product (activations Q8_K, as plain Q6_K's) computes for each row and
// super-block the exact integer isum = sum_s sc[s][r] * (sum_{v in s} q[r][v] * a[v] -
// 32 * bsums[s]), sum_s sc[s][r] * sum_{v in s} (q[r][v] - 32) * a[v] for activations
// quantize_row_q8_k wrote, then acc[r] = fma(d[r] * a.d, float(isum), acc[r]) in
// super-block order from 0. The scalar reference and the kernel do exactly these steps,
// so they agree bit for bit, for any number of tokens; the result differs from plain
// Q6_K's only by float rounding.

inline constexpr int kQ6UnitRows = 16;

struct BlockQ6_Kx16 {
  uint16_t d[kQ6UnitRows];  // f16
  uint8_t q[4 * 832];       // four chunks of 64 scale bytes and 768 bytes of levels
};
static_assert(sizeof(BlockQ6_Kx16) == kQ6UnitRows * sizeof(BlockQ6_K), "the same bytes as sixteen Q6_K blocks");

// Sixteen Q6_K rows of nb blocks each into a unit of nb interleaved blocks (out must not
// overlap the rows), and row r (0..15) back out: the exact inverse (Q6_K's bytes hold
// nothing but the levels, scales and factor).
void interleave_q6_k_x16(const BlockQ6_K* const rows[kQ6UnitRows], int64_t nb, BlockQ6_Kx16* out);
void deinterleave_q6_k_x16(const BlockQ6_Kx16* unit, int64_t nb, int r, BlockQ6_K* out);

// out[t * 16 + r] = row r of the unit (n values, n a multiple of 256) . act[t], for r in
// 0..15 and t < tokens (1..kMaxX16Tokens), act[t] a Q8_K row; each out the same bits
// whatever `tokens` is. std::invalid_argument unless n is a non-negative multiple of 256
// and tokens is in range.
using VecDotQ6Fn = void (*)(const void* unit, const void* const* act, int tokens, int64_t n, float* out);
// The scalar reference of the formula above.
void vec_dot_q6_k_x16_scalar(const void* unit, const void* const* act, int tokens, int64_t n, float* out);
// The kernel for isa: AVX-512 VNNI's at kAvx512Vnni and above, AVX-512 F/BW's at
// kAvx512, AVX2's at kAvx2 (the same floats; resolve_isa caps isa at the CPU), else the
// scalar reference.
VecDotQ6Fn vec_dot_q6_k_x16_kernel(KernelIsa isa = KernelIsa::kAuto);
// How many tokens a call of that kernel should take at most: kMaxX16Tokens, but 3 for the
// AVX2 one, whose sixteen rows take two registers per value: with six tokens its sums
// spill (one Zen 4 core, 2048 x 1024, 64 tokens: 37.8 GMAC/s at six per call, 53.6 at
// three, 49.9 at four, against 38.8-39.2 for plain Q6_K's AVX2 tiles).
int q6_k_x16_tokens_per_call(KernelIsa isa = KernelIsa::kAuto);

}  // namespace hearth

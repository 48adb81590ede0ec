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

}  // namespace hearth

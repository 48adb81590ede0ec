// Internal to quant/: the SIMD dot products, one set per instruction set, all compiled
// from the same bodies (quant/dot_kernels.inc):
//   dot_avx2        AVX2 + FMA + F16C                      (quant/dot_avx2.cc)
//   dot_avx512vnni  the same plus AVX-512 F/BW/VL/VNNI     (quant/dot_avx512vnni.cc)
//   dot_avx512      AVX-512 F/BW/VL/DQ without VNNI: Q8_0 in 512-bit registers, every
//                   other format its AVX2 kernel                (quant/dot_avx512.cc)
//   dot_avx512vnni_wide  the VNNI level's picks: Q8_0 as dot_avx512 with vpdpbusd,
//                   every other format dot_avx512vnni's    (quant/dot_avx512vnni_wide.cc)
// Use them through vec_dot_kernel() / vec_dot_tile_kernel(), which pick by KernelIsa;
// calling one on a CPU without its extensions faults.
//
// Each computes what the format's scalar vec_dot computes: the integer sums (levels
// times activation quants times small per-sub-block scales) are exact, for every level
// and every int8 activation including -128 (Q8_0 weights: activations -127..127, what
// quantize_row_q8_0 writes); only the float part (the per-block factors
// applied and the blocks summed) runs in a different order. The two sets give the same
// floats, bit for bit (quant/dot_kernels.inc says why). The K-quant kernels, like
// ggml's and like the scalar Q4_K/Q5_K/Q2_K references, take the activations' bsums as
// given (quantize_row_q8_k fills them) and use them for mins and level offsets; the
// Q4_1/Q5_1 kernels, like their scalar references, sum the Q8_0 quants themselves for
// the offset m.
#pragma once
#include <cstdint>

#include "quant/block_formats.h"
#include "quant/dot_tiles.h"

// What each instruction set's namespace declares.
#define HEARTH_DOT_SIMD_KERNELS                                                            \
  float vec_dot_q8_0(const void* w, const void* a, int64_t n);   /* activations Q8_0 */ \
  float vec_dot_q4_0(const void* w, const void* a, int64_t n);   /* activations Q8_0 */ \
  float vec_dot_q4_1(const void* w, const void* a, int64_t n);   /* activations Q8_0 */ \
  float vec_dot_q5_0(const void* w, const void* a, int64_t n);   /* activations Q8_0 */ \
  float vec_dot_q5_1(const void* w, const void* a, int64_t n);   /* activations Q8_0 */ \
  float vec_dot_iq4_nl(const void* w, const void* a, int64_t n); /* activations Q8_0 */ \
  float vec_dot_iq4_xs(const void* w, const void* a, int64_t n); /* activations Q8_K */ \
  float vec_dot_q2_k(const void* w, const void* a, int64_t n);   /* activations Q8_K */ \
  float vec_dot_q3_k(const void* w, const void* a, int64_t n);                          \
  float vec_dot_q4_k(const void* w, const void* a, int64_t n);                          \
  float vec_dot_q5_k(const void* w, const void* a, int64_t n);                          \
  float vec_dot_q6_k(const void* w, const void* a, int64_t n);                          \
  /* The one-row kernel of a format, nullptr where it has none. */                      \
  VecDotFn row_kernel(GgmlType type);                                                   \
  /* The tile for 2, 3 or 4 tokens (quant/dot_tiles.h): Q8_0, Q4_K, Q5_K and Q6_K. */  \
  VecDot4Fn tile_kernel(GgmlType type, int tokens);                                     \
  /* Two weight rows by four tokens: Q8_0. */                                           \
  VecDot2x4Fn tile2x4_kernel(GgmlType type);

namespace hearth::dot_avx2 {
HEARTH_DOT_SIMD_KERNELS
}  // namespace hearth::dot_avx2

namespace hearth::dot_avx512vnni {
HEARTH_DOT_SIMD_KERNELS
}  // namespace hearth::dot_avx512vnni

namespace hearth::dot_avx512 {
VecDotFn row_kernel(GgmlType type);               // never nullptr where dot_avx2's is not
VecDot4Fn tile_kernel(GgmlType type, int tokens);  // likewise
VecDot2x4Fn tile2x4_kernel(GgmlType type);        // Q8_0
VecDotRowsFn rows_kernel(GgmlType type);          // Q8_0
}  // namespace hearth::dot_avx512

// The same 512-bit Q8_0 kernels with VNNI (quant/dot_avx512vnni_wide.cc); every other
// format: dot_avx512vnni's.
namespace hearth::dot_avx512vnni_wide {
VecDotFn row_kernel(GgmlType type);               // never nullptr where dot_avx512vnni's is not
VecDot4Fn tile_kernel(GgmlType type, int tokens);  // likewise
VecDot2x4Fn tile2x4_kernel(GgmlType type);        // Q8_0
VecDotRowsFn rows_kernel(GgmlType type);          // Q8_0
}  // namespace hearth::dot_avx512vnni_wide

// Dot products of one weight row against four activation rows at once: the tile that
// batched matmuls (prefill, batched decode, a MoE expert's tokens) are built from.
//
// A weight block is loaded and unpacked once and multiplied with four activation blocks,
// so the unpacking (nibbles, fifth/high bits, sub-block scales) is paid once per four
// tokens instead of once per token. Each out[t] is bit-identical to what the one-row
// kernel (vec_dot_kernel) gives for a[t]: the integer sums are exact whatever their order,
// and the float steps (block factors, FMA accumulation, the final horizontal sum) run in
// exactly the same order per row. So a token's result never depends on which other
// tokens share its tile: batched runs give the same tokens as one-at-a-time runs.
#pragma once
#include <cstdint>

#include "quant/block_formats.h"
#include "quant/weight_matrix.h"

namespace hearth {

// out[t] = sum_i w[i] * a[t][i] for t in 0..3 (a: four rows in the format's vec_dot_type).
using VecDot4Fn = void (*)(const void* w_blocks, const void* const* act_blocks, int64_t n, float* out);

// The four-row kernel of f for isa, nullptr where f has none (callers then use the
// one-row kernel per row). AVX2 kernels exist for Q8_0, Q4_K, Q5_K and Q6_K.
VecDot4Fn vec_dot4_kernel(const BlockFormat& f, KernelIsa isa = KernelIsa::kAuto);

// The same tile for `tokens` activation rows (2, 3 or 4; a and out hold that many), with
// the same bit-for-bit guarantee; nullptr where vec_dot4_kernel is or for other counts.
// Batched decode gives most experts only one to three tokens: these share the weight
// unpacking among them.
VecDot4Fn vec_dot_tile_kernel(const BlockFormat& f, int tokens, KernelIsa isa = KernelIsa::kAuto);

// out[k * 4 + t] = sum_i w_k[i] * a[t][i] for weight rows k in 0..1 and t in 0..3: two
// weight rows against the same four activation rows, each out bit-identical to the
// one-row kernel's. Where unpacking the weights is cheap (Q8_0: a sign extension) the
// activation side is most of a tile's work, and this pays it once per two rows.
using VecDot2x4Fn = void (*)(const void* w0_blocks, const void* w1_blocks, const void* const* act_blocks, int64_t n,
                             float* out);

// The two-by-four kernel of f for isa, nullptr where f has none (callers then use the
// four-row kernel per weight row). AVX2: Q8_0.
VecDot2x4Fn vec_dot2x4_kernel(const BlockFormat& f, KernelIsa isa = KernelIsa::kAuto);

// out[k] = sum_i w_k[i] * a[i] for the kDotRows weight rows w_k at w_blocks + k * stride
// bytes: one token against several rows, each out bit-identical to the one-row kernel's.
// For short rows, where a call per row costs about what the row does.
inline constexpr int kDotRows = 8;
using VecDotRowsFn = void (*)(const void* w_blocks, int64_t stride, const void* act_blocks, int64_t n, float* out);

// The rows kernel of f for isa, nullptr where f has none (callers then use the one-row
// kernel per row). AVX-512 (F/BW and VNNI): Q8_0.
VecDotRowsFn vec_dot_rows_kernel(const BlockFormat& f, KernelIsa isa = KernelIsa::kAuto);

}  // namespace hearth

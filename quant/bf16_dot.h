// BF16 weight rows against activations rounded to bf16, on AVX512_BF16's vdpbf16ps: the
// kernel matmul_rows runs for BF16 weights under --cpu-gemm bf16 at KernelIsa::kAvx512Bf16
// (as llama.cpp dots its BF16 tensors against bf16 activations), and the scalar reference
// that gives its bits.
//
// The order is vdpbf16ps's: 16 float lanes, lane l of a 32-column chunk adds the product
// of columns 2l + 1 and then of 2l, each sum rounded once (a product of two bf16 values
// is exact in float), with denormal inputs and results flushed to zero of their sign;
// then the lanes are added 16 -> 8 -> 4 -> 2 -> 1 (lane i with lane i + half). Against
// float activations the rounding to bf16 costs up to 2^-9 of each activation.
#pragma once
#include <cstdint>

namespace hearth::bf16dot {

// Columns a kernel call reads from each activation row: cols rounded up to 32.
inline int64_t padded(int64_t cols) { return (cols + 31) / 32 * 32; }

// x[0, n) rounded to bf16 (nearest even, NaN kept NaN) into out[0, padded(n)), zeros
// after n.
void round_activations(const float* x, int64_t n, uint16_t* out);

// The reference: the kernel's result for one weight row w[0, n) and one activation row x
// (padded(n) values, zero past n).
float dot_reference(const uint16_t* w, const uint16_t* x, int64_t n);

// y[t * ldy + r] = dot of weight row r (at w + r * cols) with activation row t (at
// x + t * padded(cols)), for r in [r0, r1) and t < tokens; each the reference's bits.
// Needs a CPU with AVX512_BF16 (KernelIsa::kAvx512Bf16).
void matmul_rows_avx512bf16(const uint16_t* w, int64_t cols, const uint16_t* x, int64_t tokens, float* y, int64_t ldy,
                            int64_t r0, int64_t r1);

}  // namespace hearth::bf16dot

// Internal to quant/: the AVX2 + FMA + F16C dot products (quant/dot_avx2.cc) that the
// BlockFormat table points at as vec_dot_avx2. Use them through block_format() /
// vec_dot_kernel(); calling one on a CPU without AVX2, FMA and F16C faults.
//
// Each computes what the format's scalar vec_dot computes: the integer sums (levels
// times activation quants times small per-sub-block scales) are exact, for every level
// and every int8 activation including -128; only the float part (the per-block factors
// applied and the blocks summed) runs in a different order. The K-quant kernels, like
// ggml's and like the scalar Q4_K/Q5_K/Q2_K references, take the activations' bsums as
// given (quantize_row_q8_k fills them) and use them for mins and level offsets; the
// Q4_1/Q5_1 kernels, like their scalar references, sum the Q8_0 quants themselves for
// the offset m.
#pragma once
#include <cstdint>

namespace hearth::dot_avx2 {

float vec_dot_q8_0(const void* w, const void* a, int64_t n);  // activations Q8_0
float vec_dot_q4_0(const void* w, const void* a, int64_t n);  // activations Q8_0
float vec_dot_q4_1(const void* w, const void* a, int64_t n);  // activations Q8_0
float vec_dot_q5_0(const void* w, const void* a, int64_t n);  // activations Q8_0
float vec_dot_q5_1(const void* w, const void* a, int64_t n);  // activations Q8_0
float vec_dot_iq4_nl(const void* w, const void* a, int64_t n);  // activations Q8_0
float vec_dot_iq4_xs(const void* w, const void* a, int64_t n);  // activations Q8_K
float vec_dot_q2_k(const void* w, const void* a, int64_t n);  // activations Q8_K ...
float vec_dot_q3_k(const void* w, const void* a, int64_t n);
float vec_dot_q4_k(const void* w, const void* a, int64_t n);
float vec_dot_q5_k(const void* w, const void* a, int64_t n);
float vec_dot_q6_k(const void* w, const void* a, int64_t n);

}  // namespace hearth::dot_avx2

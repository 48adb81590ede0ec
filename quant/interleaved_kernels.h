// Internal to quant/: what quant/interleaved.cc and quant/interleaved_avx2.cc share. Use
// the kernels through vec_dot_q4_k_x8_kernel() and vec_dot_q4_k_x16_kernel()
// (quant/interleaved.h), which check that the CPU has the instructions.
#pragma once
#include <cstdint>

namespace hearth::interleaved_avx2 {

// The AVX2 (+ FMA + F16C) eight-row kernel; faults on a CPU without those extensions.
void vec_dot_q4_k_x8(const void* group, const void* const* act, int tokens, int64_t n, float* out);
// Throws std::invalid_argument unless n is a multiple of 256 and tokens is 1..max_tokens
// (4 for the eight-row kernels, kMaxX16Tokens for the sixteen-row ones): every kernel
// checks its arguments with the same words.
void check_x8_call(int tokens, int64_t n, int max_tokens = 4);

}  // namespace hearth::interleaved_avx2

namespace hearth::interleaved_vnni256 {

// The eight-row kernel with VNNI on 256-bit registers (the same floats); faults on a CPU
// without AVX-512 VL/VNNI.
void vec_dot_q4_k_x8(const void* group, const void* const* act, int tokens, int64_t n, float* out);

}  // namespace hearth::interleaved_vnni256

namespace hearth::interleaved_avx512 {

// The AVX-512 F/BW sixteen-row kernel (two groups); faults on a CPU without them.
void vec_dot_q4_k_x16(const void* group0, const void* group1, const void* const* act, int tokens, int64_t n,
                      float* out);

}  // namespace hearth::interleaved_avx512

namespace hearth::interleaved_avx512vnni {

// The same with VNNI; faults on a CPU without AVX-512 F/BW/VNNI.
void vec_dot_q4_k_x16(const void* group0, const void* group1, const void* const* act, int tokens, int64_t n,
                      float* out);

}  // namespace hearth::interleaved_avx512vnni

namespace hearth::interleaved_q6_vnni {

// The Q6_K_R16 kernel (quant/interleaved_q6_vnni.cc); faults on a CPU without AVX-512
// F/BW/VL/VNNI.
void vec_dot_q6_k_x16(const void* unit, const void* const* act, int tokens, int64_t n, float* out);

}  // namespace hearth::interleaved_q6_vnni

namespace hearth::interleaved_q6 {

// Throws std::invalid_argument unless n is a multiple of 256 and tokens is 1..kMaxX16Tokens
// (quant/interleaved_q6.cc: every Q6_K_R16 kernel and the reference check with the same
// words).
void check_call(int tokens, int64_t n);

}  // namespace hearth::interleaved_q6

namespace hearth::interleaved_q6_avx512 {

// The same kernel without VNNI (quant/interleaved_q6_avx512.cc); faults on a CPU without
// AVX-512 F/BW/VL.
void vec_dot_q6_k_x16(const void* unit, const void* const* act, int tokens, int64_t n, float* out);

}  // namespace hearth::interleaved_q6_avx512

namespace hearth::interleaved_q6_avx2 {

// The same kernel on AVX2 (quant/interleaved_q6_avx2.cc); faults on a CPU without AVX2,
// FMA and F16C.
void vec_dot_q6_k_x16(const void* unit, const void* const* act, int tokens, int64_t n, float* out);

}  // namespace hearth::interleaved_q6_avx2

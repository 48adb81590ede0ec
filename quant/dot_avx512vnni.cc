// The AVX-512 VNNI dot products (quant/dot_simd.h): the bodies of quant/dot_kernels.inc
// with vpdpbusd / vpdpwssd fusing the int8 and int16 multiply-adds. They stay 256 bits
// wide (AVX-512 VL): the fused instructions are the gain, and ymm registers keep
// older Xeons off their lower AVX-512 clock. Q8_0 is the exception: at the VNNI level
// it takes the 512-bit kernels of quant/dot_avx512vnni_wide.cc (1.6x these tiles on a
// Zen 5 EPYC), and Q4_K_R8 its sixteen-row kernel (quant/interleaved_avx512vnni.cc).
#include <immintrin.h>

#include <cstring>

#include "quant/avx2_blocks.h"
#include "quant/block_formats.h"
#include "quant/dot_simd.h"
#include "quant/kquants.h"

namespace hearth::dot_avx512vnni {

#define HEARTH_DOT_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define HEARTH_DOT_VNNI 1
#define HEARTH_DPBUSD _mm256_dpbusd_epi32
#define HEARTH_DPWSSD _mm256_dpwssd_epi32
#include "quant/dot_kernels.inc"

}  // namespace hearth::dot_avx512vnni

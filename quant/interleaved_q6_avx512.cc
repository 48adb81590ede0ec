// The Q6_K_R16 kernel (quant/interleaved_q6_x16.inc) for AVX-512 CPUs without VNNI
// (Skylake-SP and Cascade Lake Xeons): each vpdpbusd of the VNNI kernel becomes
// vpmaddubsw, vpmaddwd by ones and vpaddd, with the same integer sums, so the same floats.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/interleaved.h"
#include "quant/interleaved_kernels.h"

namespace hearth::interleaved_q6_avx512 {

#define HEARTH_Q6_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")))
#define HEARTH_Q6_VNNI 0
#define HEARTH_Q6_AVX2 0
#include "quant/interleaved_q6_x16.inc"

}  // namespace hearth::interleaved_q6_avx512

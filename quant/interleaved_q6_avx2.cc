// The Q6_K_R16 kernel (quant/interleaved_q6_x16.inc) for AVX2 CPUs: the F/BW kernel's
// steps on pairs of 256-bit registers, the same integer sums, so the same floats.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/interleaved.h"
#include "quant/interleaved_kernels.h"

namespace hearth::interleaved_q6_avx2 {

#define HEARTH_Q6_TARGET __attribute__((target("avx2,fma,f16c")))
#define HEARTH_Q6_VNNI 0
#define HEARTH_Q6_AVX2 1
#include "quant/interleaved_q6_x16.inc"

}  // namespace hearth::interleaved_q6_avx2

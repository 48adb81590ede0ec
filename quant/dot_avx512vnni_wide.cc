// Q8_0's 512-bit kernels with VNNI (quant/dot_q8_0_512.inc): vpdpbusd where the F/BW
// level has vpmaddubsw + vpmaddwd. quant/dot_avx512vnni.cc keeps its kernels 256 bits
// wide, but Q8_0's tiles (prefill, batched decode) are bound by the int8 multiplies, and
// on Zen 4/5 a 512-bit instruction does two blocks for the issue cost of one, so at the
// VNNI level Q8_0 takes these and every other format keeps dot_avx512vnni's. The floats
// are the AVX2 kernels' bit for bit, as at the F/BW level.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/avx2_blocks.h"
#include "quant/block_formats.h"
#include "quant/dot_simd.h"
#include "quant/kquants.h"

namespace hearth::dot_avx512vnni_wide {

#define HEARTH_Q8_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#define HEARTH_Q8_VNNI 1
#define HEARTH_Q8_FALLBACK dot_avx512vnni
#include "quant/dot_q8_0_512.inc"

}  // namespace hearth::dot_avx512vnni_wide

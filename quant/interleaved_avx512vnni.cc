// The sixteen-row Q4_K_R8 kernel with AVX-512 VNNI (quant/interleaved_x16.inc): per
// sub-block and token, eight vpdpbusd and two vpdpwssd do what eight vpmaddubsw, seven
// vpaddw, one vpmaddwd and one vpaddd do without VNNI. Decode's one-token calls are
// arithmetic-bound on cores whose memory keeps up, so the fewer instructions pay there.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/avx2_blocks.h"
#include "quant/interleaved.h"
#include "quant/interleaved_kernels.h"

namespace hearth::interleaved_avx512vnni {

#define HEARTH_X16_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#define HEARTH_X16_VNNI 1
#include "quant/interleaved_x16.inc"

}  // namespace hearth::interleaved_avx512vnni

// The eight-row Q4_K_R8 kernel with VNNI on 256-bit registers (quant/interleaved_x8.inc):
// per sub-block and token, eight vpdpbusd and two vpdpwssd do what eight vpmaddubsw,
// seven vpaddw, one vpmaddwd and one vpaddd do in AVX2. Decode's one-token calls take it
// at the VNNI level: a call reads one group, one stream (the sixteen-row kernel's two
// streams read DRAM slower there), and the fewer instructions leave more of each core's
// time for the loads.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/avx2_blocks.h"
#include "quant/interleaved.h"
#include "quant/interleaved_kernels.h"

namespace hearth::interleaved_vnni256 {

#define HEARTH_X8_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define HEARTH_X8_VNNI 1
#include "quant/interleaved_x8.inc"

}  // namespace hearth::interleaved_vnni256

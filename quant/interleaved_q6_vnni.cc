// The Q6_K_R16 kernel (quant/interleaved.h) with AVX-512 VNNI: a unit's sixteen rows in
// the sixteen lanes of 512-bit registers. Its body is quant/interleaved_q6_x16.inc,
// shared with the AVX-512 F/BW twin (quant/interleaved_q6_avx512.cc).
//
// Per super-block and pair of sub-blocks (2h, 2h + 1): for each p < 4, one load of low
// bits and one of high bits give four values of both sub-blocks for every row; the 6-bit
// levels are put together in bytes (nibble | high bits << 4) and one vpdpbusd per
// sub-block and token adds level times activation over four values into each row's lane.
// Each token's per-sub-block sums start at -32 * bsum (the levels' offset), so after the
// four p they hold sum (q - 32) * a exactly; one vpmulld by the sub-block's scales and an
// add take them into the row's super-block total. Every integer is exact, so the kernel
// and the scalar reference give the same floats.
//
// Unlike the other weight kernels it asks for no lines ahead: a unit is one ascending
// stream, which the hardware prefetcher follows alone. With 53 prefetches per block 4 KB
// ahead, one Zen 4 thread read a 110 MB matrix at 17.4-18.4 GB/s for one token and
// 15.2-15.5 for two; without them 25.9-27.6 and 20.6-21.9 (plain Q6_K: 15.5-24.5 and
// 11.9-12.8; a throwaway driver, alternated).
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/interleaved.h"
#include "quant/interleaved_kernels.h"

namespace hearth::interleaved_q6_vnni {

#define HEARTH_Q6_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#define HEARTH_Q6_VNNI 1
#define HEARTH_Q6_AVX2 0
#include "quant/interleaved_q6_x16.inc"

}  // namespace hearth::interleaved_q6_vnni

// The AVX-512 (F + BW) dot product of two interleaved Q4_K groups (sixteen rows) against
// 1..4 Q8_K activation rows (quant/interleaved.h has the layout and the formula).
//
// The AVX2 kernel's scheme, twice as wide: each 512-bit register holds one group in its
// low half and the other in its high half, so lane r < 8 is row r of the first group and
// lane 8 + r row r of the second. The activations are the same for both groups, so a
// broadcast quad still multiplies every lane. Why it pays: without VNNI the int8 product
// is vpmaddubsw + vpaddw + vpmaddwd, and on AVX-512 cores the 512-bit forms of these run
// on two ports where the 256-bit ones run on two or three, so one instruction does twice
// the work for about the same issue cost (bench/dot_bench's "x16" rows).
//
// Every integer step is the AVX2 kernel's (the same bounds), and the float steps are the
// scalar reference's, lane by lane, so the result is its floats bit for bit.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/avx2_blocks.h"
#include "quant/interleaved.h"
#include "quant/interleaved_kernels.h"

namespace hearth::interleaved_avx512 {

#define HEARTH_X16_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")))
#define HEARTH_X16_VNNI 0
#include "quant/interleaved_x16.inc"

}  // namespace hearth::interleaved_avx512

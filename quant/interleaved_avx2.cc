// The AVX2 (+ FMA + F16C) dot product of eight interleaved Q4_K rows against 1..4 Q8_K
// activation rows (quant/interleaved.h has the layout and the formula).
//
// Per super-block the 64 scales and 64 mins are unpacked once for all eight rows; per
// sub-block four 32-byte loads split into low and high nibbles give eight registers of
// levels, each holding four values of every row (row r in 32-bit lane r). A broadcast
// activation quad times one of them (vpmaddubsw) leaves row r's two pair sums in lane r,
// so the eight rows' results build up in their own lanes and nothing is summed across
// lanes. Every integer step is exact (bounds at each), and the float steps are the
// scalar reference's, lane by lane, so the result is its floats bit for bit.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/avx2_blocks.h"
#include "quant/interleaved.h"
#include "quant/interleaved_kernels.h"

namespace hearth::interleaved_avx2 {

#define HEARTH_X8_TARGET HEARTH_AVX2
#define HEARTH_X8_VNNI 0
#include "quant/interleaved_x8.inc"
}  // namespace hearth::interleaved_avx2

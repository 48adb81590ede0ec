// The AVX-512 F/BW dot products (quant/dot_simd.h) for CPUs that have AVX-512 but not
// VNNI (Skylake-SP and Cascade Lake without it enabled): Q8_0's one-row kernel and tiles,
// 512 bits wide. Every other format runs its AVX2 kernel at this level. The body is
// quant/dot_q8_0_512.inc, which quant/dot_avx512vnni_wide.cc compiles again with VNNI.
//
// Why Q8_0 and why 512 bits: its tiles (prefill, batched decode) spend per weight block
// and token a sign flip, vpmaddubsw, vpmaddwd, a conversion and an FMA, all on the two
// ports that take 256-bit integer multiplies on these cores; in 512-bit form the same
// five instructions do two blocks. The AVX2 kernels keep each 32-value block in one
// register and alternate the blocks between two accumulators (block ib to accumulator
// ib & 1); here block ib is the low half of a register and block ib + 1 the high half,
// so the low half accumulates exactly what the AVX2 kernel's first accumulator does and
// the high half its second. Each lane's integer sum is the same four byte products, and
// the float steps are the same operations in the same order, so the results are the AVX2
// kernels' floats bit for bit (tests/quant/dot_vnni_test.cc checks it).
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/avx2_blocks.h"
#include "quant/block_formats.h"
#include "quant/dot_simd.h"
#include "quant/kquants.h"

namespace hearth::dot_avx512 {

#define HEARTH_Q8_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")))
#define HEARTH_Q8_VNNI 0
#define HEARTH_Q8_FALLBACK dot_avx2
#include "quant/dot_q8_0_512.inc"
}  // namespace hearth::dot_avx512

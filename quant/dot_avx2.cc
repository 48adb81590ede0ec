// The AVX2 + FMA + F16C dot products (quant/dot_simd.h). The bodies are in
// quant/dot_kernels.inc; the scalar references are the vec_dot routines in
// quant/block_formats.cc, quant/kquants.cc, quant/legacy_quants.cc and quant/iq4.cc, and
// the layouts are documented in quant/block_formats.h.
#include <immintrin.h>

#include <cstring>

#include "quant/avx2_blocks.h"
#include "quant/block_formats.h"
#include "quant/dot_simd.h"
#include "quant/kquants.h"

namespace hearth::dot_avx2 {

#define HEARTH_DOT_TARGET HEARTH_AVX2
#include "quant/dot_kernels.inc"

}  // namespace hearth::dot_avx2

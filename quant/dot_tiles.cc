// Which tile kernel (quant/dot_tiles.h) a call gets: the tiles themselves are compiled
// per instruction set from quant/dot_kernels.inc (quant/dot_simd.h).
#include "quant/dot_tiles.h"

#include "quant/dot_simd.h"

namespace hearth {

VecDot2x4Fn vec_dot2x4_kernel(const BlockFormat& f, KernelIsa isa) {
  switch (resolve_isa(isa)) {
    case KernelIsa::kAvx512Bf16:  // no BF16 flavour: VNNI's
    case KernelIsa::kAvx512Vnni: return dot_avx512vnni_wide::tile2x4_kernel(f.type);
    case KernelIsa::kAvx512: return dot_avx512::tile2x4_kernel(f.type);
    case KernelIsa::kAvx2: return dot_avx2::tile2x4_kernel(f.type);
    default: return nullptr;
  }
}

VecDotRowsFn vec_dot_rows_kernel(const BlockFormat& f, KernelIsa isa) {
  switch (resolve_isa(isa)) {
    case KernelIsa::kAvx512Bf16:
    case KernelIsa::kAvx512Vnni: return dot_avx512vnni_wide::rows_kernel(f.type);
    case KernelIsa::kAvx512: return dot_avx512::rows_kernel(f.type);
    default: return nullptr;
  }
}

VecDot4Fn vec_dot4_kernel(const BlockFormat& f, KernelIsa isa) { return vec_dot_tile_kernel(f, 4, isa); }

VecDot4Fn vec_dot_tile_kernel(const BlockFormat& f, int tokens, KernelIsa isa) {
  switch (resolve_isa(isa)) {
    case KernelIsa::kAvx512Bf16:
    case KernelIsa::kAvx512Vnni: return dot_avx512vnni_wide::tile_kernel(f.type, tokens);
    case KernelIsa::kAvx512: return dot_avx512::tile_kernel(f.type, tokens);
    case KernelIsa::kAvx2: return dot_avx2::tile_kernel(f.type, tokens);
    default: return nullptr;
  }
}

}  // namespace hearth

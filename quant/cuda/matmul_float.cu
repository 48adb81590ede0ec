// matmul and dequantize (quant/cuda/matmul_kernels.cuh) for the element (F32, F16, BF16, FP8 e4m3) formats.
#include "quant/cuda/launch.h"

namespace hearth::cuda {

namespace {

template <class Op>
bool with_format(DType t, Op op) {
  switch (t) {
    case DType::F32: op(blocks::F32{}); return true;
    case DType::F16: op(blocks::F16{}); return true;
    case DType::BF16: op(blocks::BF16{}); return true;
    case DType::F8_E4M3: op(blocks::F8E4M3{}); return true;
    default: return false;
  }
}

}  // namespace

bool matmul_float(DType t, const MatmulArgs& a, cudaStream_t s) {
  return with_format(t, [&](auto f) { run_matmul<decltype(f)>(a, s); });
}

bool dequantize_float(DType t, const MatmulArgs& a, float* out, cudaStream_t s) {
  return with_format(t, [&](auto f) { run_dequantize<decltype(f)>(a, out, a.cols, s); });
}

bool dequantize_bf16_float(DType t, const MatmulArgs& a, __nv_bfloat16* out, int64_t ldo, cudaStream_t s) {
  return with_format(t, [&](auto f) { run_dequantize<decltype(f)>(a, out, ldo, s); });
}

}  // namespace hearth::cuda

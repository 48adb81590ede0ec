// matmul and dequantize (quant/cuda/matmul_kernels.cuh) for the 32-value (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL) formats.
#include "quant/cuda/launch.h"

namespace hearth::cuda {

namespace {

template <class Op>
bool with_format(DType t, Op op) {
  switch (t) {
    case DType::Q8_0: op(blocks::Q8_0{}); return true;
    case DType::Q4_0: op(blocks::Q4_0{}); return true;
    case DType::Q4_1: op(blocks::Q4_1{}); return true;
    case DType::Q5_0: op(blocks::Q5_0{}); return true;
    case DType::Q5_1: op(blocks::Q5_1{}); return true;
    case DType::IQ4_NL: op(blocks::IQ4_NL{}); return true;
    default: return false;
  }
}

}  // namespace

bool matmul_legacy(DType t, const MatmulArgs& a, cudaStream_t s) {
  return with_format(t, [&](auto f) { run_matmul<decltype(f)>(a, s); });
}

bool dequantize_legacy(DType t, const MatmulArgs& a, float* out, cudaStream_t s) {
  return with_format(t, [&](auto f) { run_dequantize<decltype(f)>(a, out, a.cols, s); });
}

bool dequantize_bf16_legacy(DType t, const MatmulArgs& a, __nv_bfloat16* out, int64_t ldo, cudaStream_t s) {
  return with_format(t, [&](auto f) { run_dequantize<decltype(f)>(a, out, ldo, s); });
}

}  // namespace hearth::cuda

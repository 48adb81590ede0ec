// matmul and dequantize (quant/cuda/matmul_kernels.cuh) for the 256-value (Q2_K..Q6_K, IQ4_XS) formats.
#include "quant/cuda/launch.h"

namespace hearth::cuda {

namespace {

template <class Op>
bool with_format(DType t, Op op) {
  switch (t) {
    case DType::Q2_K: op(blocks::Q2_K{}); return true;
    case DType::Q3_K: op(blocks::Q3_K{}); return true;
    case DType::Q4_K: op(blocks::Q4_K{}); return true;
    case DType::Q5_K: op(blocks::Q5_K{}); return true;
    case DType::Q6_K: op(blocks::Q6_K{}); return true;
    case DType::IQ4_XS: op(blocks::IQ4_XS{}); return true;
    default: return false;
  }
}

}  // namespace

bool matmul_kquants(DType t, const MatmulArgs& a, cudaStream_t s) {
  return with_format(t, [&](auto f) { run_matmul<decltype(f)>(a, s); });
}

bool dequantize_kquants(DType t, const MatmulArgs& a, float* out, cudaStream_t s) {
  return with_format(t, [&](auto f) { run_dequantize<decltype(f)>(a, out, a.cols, s); });
}

bool dequantize_bf16_kquants(DType t, const MatmulArgs& a, __nv_bfloat16* out, int64_t ldo, cudaStream_t s) {
  return with_format(t, [&](auto f) { run_dequantize<decltype(f)>(a, out, ldo, s); });
}

}  // namespace hearth::cuda

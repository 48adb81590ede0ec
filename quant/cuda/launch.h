// Internal to quant/cuda: the per-family entry points that instantiate the kernels of
// matmul_kernels.cuh (one .cu per family, so a parallel build compiles them side by side).
// Each returns false when the dtype is not one of its family's.
#pragma once
#include <cuda_runtime.h>

#include "quant/cuda/matmul_kernels.cuh"
#include "quant/dtype.h"

namespace hearth::cuda {

bool matmul_float(DType t, const MatmulArgs& a, cudaStream_t s);    // F32, F16, BF16, F8_E4M3
bool matmul_legacy(DType t, const MatmulArgs& a, cudaStream_t s);   // Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL
bool matmul_kquants(DType t, const MatmulArgs& a, cudaStream_t s);  // Q2_K .. Q6_K, IQ4_XS

bool dequantize_float(DType t, const MatmulArgs& a, float* out, cudaStream_t s);
bool dequantize_legacy(DType t, const MatmulArgs& a, float* out, cudaStream_t s);
bool dequantize_kquants(DType t, const MatmulArgs& a, float* out, cudaStream_t s);

}  // namespace hearth::cuda

// Internal to quant/cuda: the per-family entry points that instantiate the kernels of
// matmul_kernels.cuh (one .cu per family, so a parallel build compiles them side by side).
// Each returns false when the dtype is not one of its family's. Also the cuBLAS path.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "quant/cuda/gemm_policy.h"
#include "quant/cuda/matmul_kernels.cuh"
#include "quant/dtype.h"

namespace hearth::cuda {

bool matmul_float(DType t, const MatmulArgs& a, cudaStream_t s);    // F32, F16, BF16, F8_E4M3
bool matmul_legacy(DType t, const MatmulArgs& a, cudaStream_t s);   // Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL
bool matmul_kquants(DType t, const MatmulArgs& a, cudaStream_t s);  // Q2_K .. Q6_K, IQ4_XS

bool dequantize_float(DType t, const MatmulArgs& a, float* out, cudaStream_t s);
bool dequantize_legacy(DType t, const MatmulArgs& a, float* out, cudaStream_t s);
bool dequantize_kquants(DType t, const MatmulArgs& a, float* out, cudaStream_t s);

// Rows to out + r * ldo as bf16 (ldo % 8 == 0, out 16-byte aligned).
bool dequantize_bf16_float(DType t, const MatmulArgs& a, __nv_bfloat16* out, int64_t ldo, cudaStream_t s);
bool dequantize_bf16_legacy(DType t, const MatmulArgs& a, __nv_bfloat16* out, int64_t ldo, cudaStream_t s);
bool dequantize_bf16_kquants(DType t, const MatmulArgs& a, __nv_bfloat16* out, int64_t ldo, cudaStream_t s);

// The cuBLAS path of cuda::matmul (gemm_cublas.cu): a.x .. a.ldy set, a.n >= 1.
void matmul_cublas_bf16(DType t, const MatmulArgs& a, const GemmOptions& gemm, cudaStream_t s);

}  // namespace hearth::cuda

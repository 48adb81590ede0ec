// CUDA kernels for the block formats and the element-wise steps of the forward pass.
//
// Declared without CUDA types so host code (.cc) can call them; defined in quant/cuda/*.cu,
// compiled only when the build has a CUDA toolkit (HEARTH_HAVE_CUDA). Every pointer is
// device memory; `stream` is a cudaStream_t (as void*); every call only enqueues work.
// Weights use the CPU's vocabulary: a WeightMatrix whose data (and FP8 block scales) live
// in device memory, laid out exactly as on the host (ggml blocks, FP8 + scales, ...), so
// uploading a weight is one byte copy.
//
// Each kernel has a scalar host reference it is tested against (tests/cuda/).
#pragma once
#include <cstdint>

#include "quant/cuda/gemm_policy.h"
#include "quant/weight_matrix.h"

namespace hearth::cuda {

// Whether cuda_matmul takes weights of this format.
bool matmul_supports(DType t);

// y[t * ldy + r] = sum_c x[t * ldx + c] * W(r, c)  for r in [0, w.rows), t in [0, n).
// Activations stay float (no activation quantization), so results differ from the CPU's
// int8 dot products only by float rounding. Throws std::invalid_argument naming the
// format when it is not supported.
void matmul(const WeightMatrix& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy, void* stream);
// The same under a GEMM policy (quant/cuda/gemm_policy.h); the overload above is
// GemmOptions{} (the kernels). The cuBLAS path uses one cuBLAS handle per thread and
// device (made at its first use, bound to `stream` for each call) and takes its bf16
// scratch and cuBLAS's workspace from the device's stream-ordered pool (cudaMallocAsync
// on `stream`; the pool's release threshold is raised to 256 MiB, so that memory stays
// mapped between calls). CUDA and cuBLAS failures throw std::runtime_error naming the step.
void matmul(const WeightMatrix& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy, void* stream,
            const GemmOptions& gemm);
// How many cuda::matmul calls took the cuBLAS path so far (all threads): lets tests and
// benchmarks see which path ran.
int64_t cublas_gemm_calls();

// out[r] = dequantized row r of w (float, [rows][cols]): to build float/bf16 copies of
// small weights on the device (e.g. kv_b for absorbed attention).
void dequantize(const WeightMatrix& w, float* out, void* stream);
// The same rounded to bf16 (round to nearest even, as f32_to_bf16 in quant/numbers.h):
// row r at out_bf16 + r * ldo (2-byte elements), ldo >= cols and a multiple of 8, out_bf16
// 16-byte aligned. What the cuBLAS path multiplies.
void dequantize_bf16(const WeightMatrix& w, void* out_bf16, int64_t ldo, void* stream);

// out[r] = x[r] * rsqrt(mean(x[r]^2) + eps) * weight, rows of `dim` (out may alias x).
void rms_norm(const float* x, int64_t ldx, const float* weight, int64_t rows, int64_t dim, float eps, float* out,
              int64_t ldo, void* stream);
// out[i] = silu(gate[i]) * up[i]
void silu_mul(const float* gate, const float* up, int64_t n, float* out, void* stream);
// y[i] += x[i]
void add(float* y, const float* x, int64_t n, void* stream);
// dst row i = src row idx[i] (rows of `cols` floats; idx in device memory)
void gather_rows(const float* src, int64_t ld_src, const int32_t* idx, int64_t n, int64_t cols, float* dst,
                 int64_t ld_dst, void* stream);
// dst row idx[i] += weight[i] * src row i, for i in [0, n), in order (deterministic: one
// thread block per destination column range, rows applied in index order).
void scatter_add_rows(const float* src, int64_t ld_src, const int32_t* idx, const float* weight, int64_t n,
                      int64_t cols, float* dst, int64_t ld_dst, void* stream);

}  // namespace hearth::cuda

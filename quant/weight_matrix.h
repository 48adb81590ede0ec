// A 2-D weight as it lies in the checkpoint, and the kernels that use it in place.
//
// Weights are never expanded into a second full-size float copy: each kernel decodes
// one 128-column chunk of a row at a time into registers/stack and multiplies it with
// every activation row that needs it, so a weight tile is read once per call however
// many tokens are in the batch.
//
// ggml block formats (DType::Q8_0, Q4_0, Q2_K..Q6_K) are used in place too: matmul_rows
// quantizes each activation row once per call to the format's activation type (Q8_0 or
// Q8_K) and takes the format's integer dot product (AVX2 where the CPU has it, the
// scalar reference for KernelIsa::kScalar); matmul_t_accumulate and dequantize_row decode
// the whole blocks that overlap the column range with the format's exact dequantizer, so
// ranges need not be aligned to blocks. Such a matrix's cols is a multiple of the block.
#pragma once
#include <cstdint>

#include "quant/dtype.h"

namespace hearth {

struct WeightMatrix {
  DType dtype = DType::F32;
  int64_t rows = 0;  // output features
  int64_t cols = 0;  // input features (row-major: element (r, c) at r * cols + c)
  const void* data = nullptr;
  // F8_E4M3 only: block scales ("weight_scale_inv" in HF checkpoints), row-major
  // [ceil(rows / block)][ceil(cols / block)]; the real value is fp8 * scale.
  const float* scale = nullptr;
  int64_t block = 128;

  int64_t scale_cols() const { return (cols + block - 1) / block; }
  // Bytes of the data (rows * row_bytes(dtype, cols)); FP8 block scales not included.
  int64_t bytes() const;
};

// Which implementation a kernel call uses. kAuto picks the best the CPU supports.
enum class KernelIsa { kScalar, kAvx2, kAuto };
KernelIsa best_isa();  // what kAuto resolves to on this CPU

// y[t * ldy + r] = sum_c x[t * ldx + c] * W(r, c)  for r in [r0, r1), t in [0, n).
void matmul_rows(const WeightMatrix& w, const float* x, int64_t ldx, int64_t n, float* y,
                 int64_t ldy, int64_t r0, int64_t r1, KernelIsa isa = KernelIsa::kAuto);

// y[c] += sum_{i < nrows} x[i] * W(row0 + i, c)  for c in [c0, c1): a transposed
// product over a band of rows (used by absorbed MLA to fold kv_b into the query).
void matmul_t_accumulate(const WeightMatrix& w, int64_t row0, int64_t nrows, const float* x,
                         float* y, int64_t c0, int64_t c1, KernelIsa isa = KernelIsa::kAuto);

// Decodes row r, columns [c0, c1), to float (scales applied).
void dequantize_row(const WeightMatrix& w, int64_t r, int64_t c0, int64_t c1, float* out);

}  // namespace hearth

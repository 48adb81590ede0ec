// A 2-D weight as it lies in the checkpoint, and the kernels that use it in place.
//
// Weights are never expanded into a second full-size float copy: each kernel decodes
// one 128-column chunk of a row at a time into registers/stack and multiplies it with
// every activation row that needs it, so a weight tile is read once per call however
// many tokens are in the batch.
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

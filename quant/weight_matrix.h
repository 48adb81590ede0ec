// A 2-D weight as it lies in the checkpoint, and the kernels that use it in place.
//
// Weights are never expanded into a second full-size float copy: each kernel decodes
// one 128-column chunk of a row at a time into registers/stack and multiplies it with
// every activation row that needs it, so a weight tile is read once per call however
// many tokens are in the batch.
//
// ggml block formats (DType::Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K..Q6_K, IQ4_XS)
// are used in place too: matmul_rows quantizes each activation row once per call to the
// format's activation type (Q8_0 or Q8_K) and takes the format's integer dot product
// (AVX2 where the CPU has it, the
// scalar reference for KernelIsa::kScalar); matmul_t_accumulate and dequantize_row decode
// the whole blocks that overlap the column range with the format's exact dequantizer, so
// ranges need not be aligned to blocks. Such a matrix's cols is a multiple of the block.
#pragma once
#include <cstdint>

#include <optional>
#include <string>
#include <vector>

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

// Which implementation a kernel call uses, in order of what the CPU must have. kAuto
// picks the best the CPU supports. kAvx512 is AVX2 + FMA + F16C plus AVX-512 F, BW, VL
// and DQ (Skylake-SP and later Xeons); kAvx512Vnni adds VNNI (Ice Lake and later Xeons,
// Zen 4 and later); kAvx512Bf16 adds AVX512_BF16's vdpbf16ps on top of VNNI (Cooper Lake,
// Sapphire Rapids and later Xeons, Zen 4 and later). Kernels that have no flavour for a
// level run the one below it.
enum class KernelIsa { kScalar, kAvx2, kAvx512, kAvx512Vnni, kAvx512Bf16, kAuto };
KernelIsa cpu_isa();   // the best this CPU supports
KernelIsa best_isa();  // what kAuto resolves to: cpu_isa(), or lower after limit_isa()
// Caps every later kernel choice of the process at `most` (kAuto: no cap), so a user can
// time or check one instruction set against another (hearth bench --isa). Returns what
// kAuto now resolves to.
KernelIsa limit_isa(KernelIsa most);
// The instruction set named `name` ("auto", "scalar", "avx2", "avx512", "avx512vnni",
// "avx512bf16"); nullopt for anything else.
std::optional<KernelIsa> parse_isa(const std::string& name);
// What a request runs as: kAuto becomes best_isa(), and a request above it is capped
// there, so no caller can reach instructions the CPU lacks.
KernelIsa resolve_isa(KernelIsa requested);
// Whether isa (resolved) runs the AVX2 kernels or ones built on them.
inline bool has_avx2(KernelIsa resolved) {
  return resolved >= KernelIsa::kAvx2 && resolved != KernelIsa::kAuto;
}
// Whether isa (resolved) may run 512-bit AVX-512 F/BW kernels.
inline bool has_avx512(KernelIsa resolved) {
  return resolved >= KernelIsa::kAvx512 && resolved != KernelIsa::kAuto;
}
// Whether isa (resolved) may run the VNNI kernels.
inline bool has_vnni(KernelIsa resolved) {
  return resolved >= KernelIsa::kAvx512Vnni && resolved != KernelIsa::kAuto;
}
// Whether isa (resolved) may run the AVX512_BF16 kernels.
inline bool has_bf16(KernelIsa resolved) { return resolved == KernelIsa::kAvx512Bf16; }
const char* isa_name(KernelIsa isa);  // "scalar", "avx2", "avx512", "avx512vnni", "avx512bf16", "auto"

// y[t * ldy + r] = sum_c x[t * ldx + c] * W(r, c)  for r in [r0, r1), t in [0, n).
// Under CpuGemm::kOnednn, float weights (F32, BF16, F16, FP8) with n >= kOnednnMinRows go
// through oneDNN's sgemm on rows decoded to float (quant/onednn_gemm.h) unless isa is
// kScalar. Block formats always use their own integer kernels. Under CpuGemm::kBf16, BF16
// weights at kAvx512Bf16 meet activations rounded to bf16 (quant/bf16_dot.h).
void matmul_rows(const WeightMatrix& w, const float* x, int64_t ldx, int64_t n, float* y,
                 int64_t ldy, int64_t r0, int64_t r1, KernelIsa isa = KernelIsa::kAuto);

// How matmul_rows multiplies float weights (F32, BF16, F16, FP8) by many activation rows,
// a process-wide choice (`--cpu-gemm`):
enum class CpuGemm {
  // hearth's kernels for every row count: each row's result is bit-identical whatever
  // rows share the call, so batching and prompt chunking never change a logit.
  kKernels,
  // From kOnednnMinRows rows on, oneDNN's sgemm on weight rows decoded to float: 2-4x the
  // kernels' rate at 64-512 rows (bench/dot_bench's float table), but its summation
  // order is not the one-row kernel's, so results depend on the batch to rounding.
  kOnednn,
  // BF16 weights, every row count, against activations rounded to bf16 through
  // AVX512_BF16's vdpbf16ps (quant/bf16_dot.h), as llama.cpp multiplies BF16 tensors:
  // twice the multiply-adds per instruction, at up to 2^-9 of each activation. Each row's
  // result is still independent of the batch. Other weights, and CPUs without the
  // instructions (or --isa below avx512bf16), as kKernels.
  kBf16,
};
constexpr int64_t kOnednnMinRows = 16;  // below, decoding the panel costs more than it saves
CpuGemm set_cpu_gemm(CpuGemm g);  // returns the previous choice; kKernels at start
CpuGemm cpu_gemm();
const char* cpu_gemm_name(CpuGemm g);  // "kernels", "onednn", "bf16"
std::optional<CpuGemm> parse_cpu_gemm(const std::string& name);

// Rows [r0, r1) decoded to float, row r at out + (r - r0) * ld: what dequantize_row gives
// for each whole row (AVX2 for float formats unless isa is kScalar).
void decode_rows(const WeightMatrix& w, int64_t r0, int64_t r1, float* out, int64_t ld,
                 KernelIsa isa = KernelIsa::kAuto);

// y[c] += sum_{i < nrows} x[i] * W(row0 + i, c)  for c in [c0, c1): a transposed
// product over a band of rows (used by absorbed MLA to fold kv_b into the query).
void matmul_t_accumulate(const WeightMatrix& w, int64_t row0, int64_t nrows, const float* x,
                         float* y, int64_t c0, int64_t c1, KernelIsa isa = KernelIsa::kAuto);

// Decodes row r, columns [c0, c1), to float (scales applied).
void dequantize_row(const WeightMatrix& w, int64_t r, int64_t c0, int64_t c1, float* out);

}  // namespace hearth

namespace hearth {

// Activation rows prepared once for many matmuls: for weights in a block format, the rows
// quantized to the format's activation type (what matmul_rows does inside every call);
// for float weights, the float rows themselves (kept by pointer: they must outlive this).
// A MoE layer prepares its tokens once and every expert, on every thread, reads them.
// Reusing one object across steps reuses its buffer (no allocation once it has grown).
class ActivationRows {
 public:
  // n rows of `cols` values, row t at x + t * ldx, for weights of dtype `weight`.
  void prepare(DType weight, const float* x, int64_t ldx, int64_t n, int64_t cols);
  // Whether these rows can feed w: same width and the same activation format.
  bool fits(const WeightMatrix& w) const;
  int64_t rows() const { return n_; }
  int64_t cols() const { return cols_; }

 private:
  friend void matmul_rows(const WeightMatrix&, const ActivationRows&, const int32_t*, int64_t, float*, int64_t,
                          int64_t, int64_t, KernelIsa);
  int act_ = -1;  // GgmlType of the quantized rows; -1: float rows
  int64_t n_ = 0, cols_ = 0, ldx_ = 0, row_bytes_ = 0;
  const float* x_ = nullptr;
  std::vector<uint64_t> q_;  // 8-byte aligned (Q8_K starts with a float)
};

// For t in [0, n): y[t * ldy + c] += sum_{i < nrows} x[t * ldx + i] * W(row0 + i, c), c in
// [c0, c1): matmul_t_accumulate for n rows at once, each weight row decoded once for all
// of them (absorbed MLA folds one head's kv_b band into every query of a step). Each y row
// gets exactly what matmul_t_accumulate gives it.
void matmul_t_accumulate_rows(const WeightMatrix& w, int64_t row0, int64_t nrows, const float* x, int64_t ldx,
                              int64_t n, float* y, int64_t ldy, int64_t c0, int64_t c1,
                              KernelIsa isa = KernelIsa::kAuto);

// Rows [r0, r1) of w as a matrix of their own (same data, no copy). For FP8 with block
// scales r0 must be a multiple of the block (std::invalid_argument otherwise).
WeightMatrix row_slice(const WeightMatrix& w, int64_t r0, int64_t r1);

// y[t * ldy + r] = W(r, :) . a's row pick[t]  for r in [r0, r1), t in [0, n); pick ==
// nullptr means rows 0..n-1. Gives exactly what matmul_rows gives on those float rows.
// std::invalid_argument unless a.fits(w).
void matmul_rows(const WeightMatrix& w, const ActivationRows& a, const int32_t* pick, int64_t n, float* y,
                 int64_t ldy, int64_t r0, int64_t r1, KernelIsa isa = KernelIsa::kAuto);

}  // namespace hearth

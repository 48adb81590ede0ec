// cuda::matmul, cuda::dequantize(_bf16) and cuda::matmul_supports (quant/cuda/kernels.h):
// argument checks, the GEMM policy, the warps-per-row choice, and dispatch to the format
// families and the cuBLAS path (launch.h).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "quant/cuda/kernels.h"
#include "quant/cuda/launch.h"

namespace hearth::cuda {

namespace {

std::string name_of(DType t) { return std::string(dtype_name(t)); }

// The launch arguments of w, after checking what the host can check.
MatmulArgs weight_args(const WeightMatrix& w, const char* op) {
  if (!matmul_supports(w.dtype)) throw std::invalid_argument(std::string(op) + ": unsupported weight format " + name_of(w.dtype));
  if (w.rows < 0 || w.cols < 0)
    throw std::invalid_argument(std::string(op) + ": negative shape " + std::to_string(w.rows) + "x" + std::to_string(w.cols));
  MatmulArgs a;
  a.rows = w.rows;
  a.cols = w.cols;
  a.row_bytes = row_bytes(w.dtype, w.cols);  // throws unless cols is whole blocks
  a.w = static_cast<const uint8_t*>(w.data);
  if (!a.w && w.rows > 0 && w.cols > 0) throw std::invalid_argument(std::string(op) + ": " + name_of(w.dtype) + " weight without data");
  if (w.dtype == DType::F8_E4M3 && w.scale) {
    if (w.block <= 0) throw std::invalid_argument(std::string(op) + ": FP8 scale block " + std::to_string(w.block));
    a.scale = w.scale;
    a.block = w.block;
    a.scale_cols = w.scale_cols();
  }
  return a;
}

int multiprocessors() {
  // Asked once per device: a matmul is called per layer and step, and the runtime's
  // attribute query is not free everywhere (virtual machines).
  static std::atomic<int> cached[64] = {};
  int device = 0;
  check(cudaGetDevice(&device), "querying the current device");
  if (device < 0 || device >= 64) device = 63;  // any value is a valid (if less tuned) answer
  int sms = cached[device].load(std::memory_order_relaxed);
  if (sms == 0) {
    check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "querying the multiprocessor count");
    cached[device].store(sms, std::memory_order_relaxed);
  }
  return sms;
}

// The GEMV's shape of work: kGemvRowsPerWarp weight rows per warp when the matrix has rows
// enough to keep ~32 warps per SM busy that way (fewer activation loads), else one; then
// enough warps per row (splitting the columns) to reach those 32 warps per SM.
void choose_gemv_shape(int64_t rows, MatmulArgs& a) {
  const int64_t wanted = int64_t(multiprocessors()) * 32;
  a.rows_per_warp = rows * kGemvWarps / kGemvRowsPerWarp >= wanted ? kGemvRowsPerWarp : 1;
  const int64_t row_groups = (rows + a.rows_per_warp - 1) / a.rows_per_warp;
  int wpr = 1;
  while (wpr < kGemvWarps && row_groups * wpr < wanted) wpr *= 2;
  a.warps_per_row = wpr;
}

}  // namespace

bool matmul_supports(DType t) {
  switch (t) {
    case DType::F32:
    case DType::F16:
    case DType::BF16:
    case DType::F8_E4M3:
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::IQ4_NL:
    case DType::Q2_K:
    case DType::Q3_K:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
    case DType::IQ4_XS: return true;
    case DType::Q4_K_R8:
    case DType::Q6_K_R16: return false;  // CPU layouts: their rows are spread over groups of eight
  }
  return false;
}

void matmul(const WeightMatrix& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy, void* stream) {
  matmul(w, x, ldx, n, y, ldy, stream, GemmOptions{});
}

void matmul(const WeightMatrix& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy, void* stream,
            const GemmOptions& gemm) {
  MatmulArgs a = weight_args(w, "cuda::matmul");
  if (n < 0) throw std::invalid_argument("cuda::matmul: negative row count " + std::to_string(n));
  if (n == 0 || w.rows == 0) return;
  if (!x || !y) throw std::invalid_argument("cuda::matmul: null activation or output pointer");
  if (n > 1 && ldx < w.cols)
    throw std::invalid_argument("cuda::matmul: ldx " + std::to_string(ldx) + " < cols " + std::to_string(w.cols));
  if (n > 1 && ldy < w.rows)
    throw std::invalid_argument("cuda::matmul: ldy " + std::to_string(ldy) + " < rows " + std::to_string(w.rows));
  a.x = x;
  a.ldx = ldx;
  a.n = n;
  a.y = y;
  a.ldy = ldy;
  const auto s = static_cast<cudaStream_t>(stream);
  if (gemm.policy == GemmPolicy::kCublasBf16 && n >= std::max<int64_t>(1, gemm.min_rows) && w.cols > 0) {
    matmul_cublas_bf16(w.dtype, a, gemm, s);
    return;
  }
  choose_gemv_shape(w.rows, a);
  if (!matmul_float(w.dtype, a, s) && !matmul_legacy(w.dtype, a, s) && !matmul_kquants(w.dtype, a, s))
    throw std::invalid_argument("cuda::matmul: no kernel for " + name_of(w.dtype));
}

void dequantize(const WeightMatrix& w, float* out, void* stream) {
  const MatmulArgs a = weight_args(w, "cuda::dequantize");
  if (w.rows == 0 || w.cols == 0) return;
  if (!out) throw std::invalid_argument("cuda::dequantize: null output pointer");
  const auto s = static_cast<cudaStream_t>(stream);
  if (!dequantize_float(w.dtype, a, out, s) && !dequantize_legacy(w.dtype, a, out, s) &&
      !dequantize_kquants(w.dtype, a, out, s))
    throw std::invalid_argument("cuda::dequantize: no kernel for " + name_of(w.dtype));
}

void dequantize_bf16(const WeightMatrix& w, void* out_bf16, int64_t ldo, void* stream) {
  const MatmulArgs a = weight_args(w, "cuda::dequantize_bf16");
  if (w.rows == 0 || w.cols == 0) return;
  if (!out_bf16) throw std::invalid_argument("cuda::dequantize_bf16: null output pointer");
  if (ldo < w.cols || ldo % 8 != 0)
    throw std::invalid_argument("cuda::dequantize_bf16: ldo " + std::to_string(ldo) + " is not a multiple of 8 >= cols " +
                                std::to_string(w.cols));
  if (reinterpret_cast<uintptr_t>(out_bf16) % 16 != 0)
    throw std::invalid_argument("cuda::dequantize_bf16: output not 16-byte aligned");
  auto* out = static_cast<__nv_bfloat16*>(out_bf16);
  const auto s = static_cast<cudaStream_t>(stream);
  if (!dequantize_bf16_float(w.dtype, a, out, ldo, s) && !dequantize_bf16_legacy(w.dtype, a, out, ldo, s) &&
      !dequantize_bf16_kquants(w.dtype, a, out, ldo, s))
    throw std::invalid_argument("cuda::dequantize_bf16: no kernel for " + name_of(w.dtype));
}

}  // namespace hearth::cuda

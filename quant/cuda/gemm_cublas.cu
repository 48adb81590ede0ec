// The cuBLAS path of cuda::matmul (GemmPolicy::kCublasBf16, quant/cuda/gemm_policy.h).
//
// y[t][r] = sum_c x[t][c] W(r, c) as one bf16 GEMM per (activation chunk, weight row tile):
// 1. the activation rows, float with stride ldx, are rounded to bf16 into a packed scratch
//    (row stride cols rounded up to 8, so every row starts 16-byte aligned);
// 2. the weight's rows [r0, r0 + tile) are decoded by the same decoders as the kernels
//    (blocks.cuh, through run_dequantize) and rounded to bf16 into a second scratch; a BF16
//    weight (16-byte aligned, no scales) is used in place;
// 3. cublasGemmEx multiplies them, fp32 accumulation, fp32 output straight into y.
// When the activations take more than one chunk, the weight is decoded again for each
// chunk (a chunk is at least scratch_bytes / (2 cols) rows, so the GEMMs dominate).
// Both scratches are bounded by GemmOptions::scratch_bytes; they and cuBLAS's workspace
// are taken from the device's stream-ordered pool (cudaMallocAsync) and given back on the
// same stream, so calls on several streams never share one (the handle, one per thread and
// device, is bound to the call's stream and workspace for the call only).
//
// cuBLAS is column-major: y (row t at y + t * ldy) is the rows x n column-major matrix C with
// ldc = ldy; the bf16 weight tile (row r at wb + r * ldw) is the cols x tile column-major
// matrix A, used transposed; the bf16 activations are the cols x n matrix B. C = A^T B.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "quant/cuda/launch.h"

namespace hearth::cuda {

namespace {

std::atomic<int64_t> g_cublas_calls{0};

void check_cublas(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuBLAS error while ") + what + ": " + cublasGetStatusString(st));
}

// The calling thread's cuBLAS handles, one per device, made at first use and destroyed when
// the thread ends (for the main thread: before the CUDA runtime's own exit handlers run).
class ThreadHandles {
 public:
  ThreadHandles() = default;
  ThreadHandles(const ThreadHandles&) = delete;
  ThreadHandles& operator=(const ThreadHandles&) = delete;
  ~ThreadHandles() {
    int current = -1;
    const bool known = cudaGetDevice(&current) == cudaSuccess;
    for (auto& [device, h] : handles_) {
      // Nothing to report to at thread exit: a failure here leaves the handle to the driver.
      if (cudaSetDevice(device) == cudaSuccess) (void)cublasDestroy(h);
    }
    if (known) (void)cudaSetDevice(current);
  }

  cublasHandle_t get(int device) {
    for (auto& [d, h] : handles_)
      if (d == device) return h;
    cublasHandle_t h = nullptr;
    check_cublas(cublasCreate(&h), "creating a cuBLAS handle");
    handles_.emplace_back(device, h);
    return h;
  }

 private:
  std::vector<std::pair<int, cublasHandle_t>> handles_;
};

cublasHandle_t handle_for(int device) {
  thread_local ThreadHandles handles;
  return handles.get(device);
}

// The stream-ordered pool gives memory back to the driver at every synchronization unless
// it keeps at least this much: enough for the scratch of a call (two 64 MiB buffers and
// the cuBLAS workspace), so steps that synchronize between matmuls do not remap it.
constexpr uint64_t kPoolKeepBytes = uint64_t(256) << 20;
// cuBLAS's workspace per call (what it allocates by default on Hopper).
constexpr int64_t kCublasWorkspaceBytes = int64_t(32) << 20;

void keep_pool_memory(int device) {
  static std::atomic<uint64_t> done_mask{0};  // devices 0..63 done
  const uint64_t bit = device >= 0 && device < 64 ? uint64_t(1) << device : 0;
  if (bit && (done_mask.load(std::memory_order_relaxed) & bit)) return;
  cudaMemPool_t pool = nullptr;
  check(cudaDeviceGetDefaultMemPool(&pool, device), "querying the device's default memory pool");
  uint64_t keep = 0;
  check(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep), "reading the pool's release threshold");
  if (keep < kPoolKeepBytes) {
    keep = kPoolKeepBytes;
    check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep), "setting the pool's release threshold");
  }
  done_mask.fetch_or(bit, std::memory_order_relaxed);
}

// The handle bound to a call's stream and workspace; unbound (the legacy default stream,
// cuBLAS's own workspace) when the call ends, so the handle never refers to a stream that
// its owner may destroy or to the call's freed workspace.
class BoundHandle {
 public:
  BoundHandle(cublasHandle_t h, cudaStream_t s, void* workspace, int64_t workspace_bytes) : h_(h) {
    check_cublas(cublasSetStream(h, s), "binding the cuBLAS handle to the stream");
    check_cublas(cublasSetWorkspace(h, workspace, size_t(workspace_bytes)), "giving cuBLAS its workspace");
  }
  BoundHandle(const BoundHandle&) = delete;
  BoundHandle& operator=(const BoundHandle&) = delete;
  ~BoundHandle() { (void)cublasSetStream(h_, nullptr); }
  cublasHandle_t get() const { return h_; }

 private:
  cublasHandle_t h_;
};

// Device memory from the stream-ordered pool, freed on the same stream (after the work
// enqueued before it) when it goes out of scope, also when a later step throws.
class StreamScratch {
 public:
  StreamScratch(int64_t bytes, cudaStream_t s, const char* what) : s_(s) {
    if (bytes > 0) check(cudaMallocAsync(&p_, size_t(bytes), s), what);
  }
  StreamScratch(const StreamScratch&) = delete;
  StreamScratch& operator=(const StreamScratch&) = delete;
  ~StreamScratch() {
    if (p_) (void)cudaFreeAsync(p_, s_);  // a failure here is the context's, and reported by its next call
  }
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
  cudaStream_t s_;
};

// out[t * ldo + c] = bf16(x[t * ldx + c]) for t < n, c < cols.
__global__ void activations_to_bf16(const float* x, int64_t ldx, int64_t n, int64_t cols, __nv_bfloat16* out,
                                    int64_t ldo) {
  const int64_t total = n * cols;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / cols, c = e % cols;
    out[t * ldo + c] = __float2bfloat16_rn(x[t * ldx + c]);
  }
}

void dequantize_rows_bf16(DType t, const MatmulArgs& a, __nv_bfloat16* out, int64_t ldo, cudaStream_t s) {
  if (!dequantize_bf16_float(t, a, out, ldo, s) && !dequantize_bf16_legacy(t, a, out, ldo, s) &&
      !dequantize_bf16_kquants(t, a, out, ldo, s))
    throw std::invalid_argument(std::string("cuda::matmul: no bf16 decoder for ") + std::string(dtype_name(t)));
}

// Rows [r0, r0 + rows) of the weight of a (r0 a multiple of the FP8 scale block).
MatmulArgs weight_rows(const MatmulArgs& a, int64_t r0, int64_t rows) {
  MatmulArgs part = a;
  part.w = a.w + r0 * a.row_bytes;
  part.rows = rows;
  if (a.scale) part.scale = a.scale + (r0 / a.block) * a.scale_cols;
  return part;
}

int as_int(int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX)
    throw std::invalid_argument(std::string("cuda::matmul (cuBLAS): ") + what + " " + std::to_string(v) +
                                " does not fit cuBLAS's int");
  return int(v);
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

}  // namespace

int64_t cublas_gemm_calls() { return g_cublas_calls.load(std::memory_order_relaxed); }

void matmul_cublas_bf16(DType t, const MatmulArgs& a, const GemmOptions& gemm, cudaStream_t s) {
  const int64_t ld = round_up(a.cols, 8);  // bf16 row stride of both scratches (16-byte rows)
  const int64_t budget = std::max<int64_t>(gemm.scratch_bytes, 2 * ld);
  // A BF16 weight already is the matrix cuBLAS wants (row stride cols); FP8 block scales
  // would have to be applied, so FP8 is decoded like the block formats.
  const bool in_place = t == DType::BF16 && !a.scale && reinterpret_cast<uintptr_t>(a.w) % 16 == 0;
  int64_t tile = std::min(a.rows, std::max<int64_t>(1, budget / (2 * ld)));
  if (a.scale && tile < a.rows) tile = std::max<int64_t>(a.block, tile / a.block * a.block);  // whole scale blocks
  if (in_place) tile = a.rows;
  const int64_t chunk = std::min(a.n, std::max<int64_t>(1, budget / (2 * ld)));
  as_int(a.cols, "cols");
  as_int(ld, "row stride");
  as_int(tile, "row tile");
  as_int(chunk, "activation chunk");

  int device = 0;
  check(cudaGetDevice(&device), "querying the current device for cuBLAS");
  keep_pool_memory(device);
  StreamScratch xb(chunk * ld * 2, s, "allocating the bf16 activations for cuBLAS");
  StreamScratch wb(in_place ? 0 : tile * ld * 2, s, "allocating the bf16 weight tile for cuBLAS");
  StreamScratch ws(kCublasWorkspaceBytes, s, "allocating the cuBLAS workspace");
  const BoundHandle bound(handle_for(device), s, ws.as<void>(), kCublasWorkspaceBytes);
  cublasHandle_t h = bound.get();
  const float alpha = 1.0f, beta = 0.0f;
  constexpr int kThreads = 256;
  for (int64_t t0 = 0; t0 < a.n; t0 += chunk) {
    const int64_t nt = std::min(chunk, a.n - t0);
    activations_to_bf16<<<grid_1d(nt * a.cols, kThreads), kThreads, 0, s>>>(a.x + t0 * a.ldx, a.ldx, nt, a.cols,
                                                                           xb.as<__nv_bfloat16>(), ld);
    check_launch("launching activations_to_bf16");
    for (int64_t r0 = 0; r0 < a.rows; r0 += tile) {
      const int64_t nr = std::min(tile, a.rows - r0);
      const void* w = a.w;
      int64_t ldw = a.cols;
      if (!in_place) {
        dequantize_rows_bf16(t, weight_rows(a, r0, nr), wb.as<__nv_bfloat16>(), ld, s);
        w = wb.as<__nv_bfloat16>();
        ldw = ld;
      }
      // One output row (nt == 1): cuBLAS still wants ldc >= m, and ldy may be anything then.
      const int64_t ldc = nt == 1 ? std::max(a.ldy, nr) : a.ldy;
      check_cublas(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, int(nr), int(nt), int(a.cols), &alpha, w, CUDA_R_16BF,
                                as_int(ldw, "weight row stride"), xb.as<__nv_bfloat16>(), CUDA_R_16BF, int(ld), &beta,
                                a.y + t0 * a.ldy + r0, CUDA_R_32F, as_int(ldc, "ldc"), CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT),
                   "running cublasGemmEx (bf16 x bf16 -> f32)");
    }
  }
  g_cublas_calls.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace hearth::cuda

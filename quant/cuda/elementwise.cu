// The element-wise and row-moving kernels of quant/cuda/kernels.h: rms_norm, silu_mul, add,
// gather_rows, scatter_add_rows.
//
// add, gather_rows and scatter_add_rows round every operation explicitly (__fadd_rn,
// __fmul_rn: never fused into an FMA), so they give exactly what the plain C++ loops give;
// rms_norm and silu_mul differ from the CPU only in the order of the sum of squares and in
// expf's last bits.
#include <stdexcept>
#include <string>

#include "quant/cuda/check.h"
#include "quant/cuda/kernels.h"
#include "quant/cuda/matmul_kernels.cuh"  // grid_1d, warp_sum

namespace hearth::cuda {

namespace {

constexpr int kThreads = 256;

// Sum over the block (fixed order: deterministic); every thread gets the result.
__device__ float block_sum(float v) {
  __shared__ float warp_sums[kThreads / 32];
  __shared__ float total;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  v = warp_sum(v);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0.0f;
    for (int i = 0; i < int(blockDim.x >> 5); ++i) s += warp_sums[i];
    total = s;
  }
  __syncthreads();
  return total;
}

__global__ void __launch_bounds__(kThreads)
    rms_norm_kernel(const float* x, int64_t ldx, const float* weight, int64_t dim, float eps, float* out, int64_t ldo) {
  const int64_t r = blockIdx.x;
  const float* xr = x + r * ldx;
  float* o = out + r * ldo;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss = fmaf(xr[i], xr[i], ss);
  ss = block_sum(ss);
  const float scale = 1.0f / sqrtf(ss / float(dim) + eps);
  // Each thread rewrites only the elements it read: out may alias x.
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) o[i] = __fmul_rn(__fmul_rn(xr[i], scale), weight[i]);
}

__global__ void silu_mul_kernel(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    out[i] = (g / (1.0f + expf(-g))) * up[i];
  }
}

__global__ void add_kernel(float* y, const float* x, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = __fadd_rn(y[i], x[i]);
}

__global__ void gather_rows_kernel(const float* src, int64_t ld_src, const int32_t* idx, int64_t n, int64_t cols,
                                   float* dst, int64_t ld_dst) {
  const int64_t total = n * cols;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / cols, c = e % cols;
    dst[i * ld_dst + c] = src[int64_t(idx[i]) * ld_src + c];
  }
}

// One thread per column walks the rows in index order, so repeated destinations get
// their contributions in that order.
__global__ void scatter_add_rows_kernel(const float* src, int64_t ld_src, const int32_t* idx, const float* weight,
                                        int64_t n, int64_t cols, float* dst, int64_t ld_dst) {
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < cols; c += int64_t(gridDim.x) * blockDim.x) {
    for (int64_t i = 0; i < n; ++i) {
      const float w = weight ? weight[i] : 1.0f;
      float* d = dst + int64_t(idx[i]) * ld_dst + c;
      *d = __fadd_rn(*d, __fmul_rn(w, src[i * ld_src + c]));
    }
  }
}

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

}  // namespace

void rms_norm(const float* x, int64_t ldx, const float* weight, int64_t rows, int64_t dim, float eps, float* out,
              int64_t ldo, void* stream) {
  require(rows >= 0 && dim >= 0, "cuda::rms_norm: negative shape");
  if (rows == 0 || dim == 0) return;
  require(x && weight && out, "cuda::rms_norm: null pointer");
  require(rows == 1 || (ldx >= dim && ldo >= dim), "cuda::rms_norm: row stride below dim " + std::to_string(dim));
  require(rows <= 0x7fffffff, "cuda::rms_norm: too many rows");
  rms_norm_kernel<<<unsigned(rows), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(x, ldx, weight, dim, eps, out, ldo);
  check_launch("launching rms_norm");
}

void silu_mul(const float* gate, const float* up, int64_t n, float* out, void* stream) {
  require(n >= 0, "cuda::silu_mul: negative length");
  if (n == 0) return;
  require(gate && up && out, "cuda::silu_mul: null pointer");
  silu_mul_kernel<<<grid_1d(n, kThreads), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(gate, up, n, out);
  check_launch("launching silu_mul");
}

void add(float* y, const float* x, int64_t n, void* stream) {
  require(n >= 0, "cuda::add: negative length");
  if (n == 0) return;
  require(x && y, "cuda::add: null pointer");
  add_kernel<<<grid_1d(n, kThreads), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(y, x, n);
  check_launch("launching add");
}

void gather_rows(const float* src, int64_t ld_src, const int32_t* idx, int64_t n, int64_t cols, float* dst,
                 int64_t ld_dst, void* stream) {
  require(n >= 0 && cols >= 0, "cuda::gather_rows: negative shape");
  if (n == 0 || cols == 0) return;
  require(src && idx && dst, "cuda::gather_rows: null pointer");
  require(n == 1 || ld_dst >= cols, "cuda::gather_rows: ld_dst below cols " + std::to_string(cols));
  gather_rows_kernel<<<grid_1d(n * cols, kThreads), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      src, ld_src, idx, n, cols, dst, ld_dst);
  check_launch("launching gather_rows");
}

void scatter_add_rows(const float* src, int64_t ld_src, const int32_t* idx, const float* weight, int64_t n,
                      int64_t cols, float* dst, int64_t ld_dst, void* stream) {
  require(n >= 0 && cols >= 0, "cuda::scatter_add_rows: negative shape");
  if (n == 0 || cols == 0) return;
  require(src && idx && dst, "cuda::scatter_add_rows: null pointer");
  require(n == 1 || ld_src >= cols, "cuda::scatter_add_rows: ld_src below cols " + std::to_string(cols));
  scatter_add_rows_kernel<<<grid_1d(cols, kThreads), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      src, ld_src, idx, weight, n, cols, dst, ld_dst);
  check_launch("launching scatter_add_rows");
}

}  // namespace hearth::cuda

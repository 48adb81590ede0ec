// Internal to quant/cuda: the matmul and dequantize kernels, templated on a format of
// quant/cuda/blocks.cuh, and the host code that picks one and launches it. Each
// matmul_<family>.cu instantiates them for its formats (launch.h); matmul.cu validates
// the arguments and dispatches by DType.
//
// Kernels:
// - gemv_groups<F, A, NT, R>: few activation rows (NT <= 8). A warp takes R weight rows
//   (R = 4 for matrices with rows enough, so each activation value loaded serves 4 rows),
//   and one or more warps share them (warps_per_row, chosen so that a small matrix still
//   fills the GPU); lane i of a warp decodes groups of 8 values i, i + 32, ... (kGemvUnroll
//   of them per step when R = 1), so a warp streams consecutive bytes of each row, and
//   every decoded group is dotted with all NT activation rows. Warp-shuffle sums, then
//   the row's warps are added in a fixed order: results are deterministic.
// - gemm_tiled<F>: many activation rows. A 64 x 64 tile of outputs per block: each step
//   decodes 64 weight rows x 32 columns and loads 64 activation rows x 32 columns into
//   shared memory, then each thread accumulates 4 x 4 outputs. The weight is read once per
//   64 activation rows.
// - gemv_elements<F, NT>: float formats whose rows are not whole groups of 8 (odd cols,
//   FP8 scale blocks not a multiple of 8) or whose data is misaligned: one value per lane,
//   byte loads. A fallback that tests reach; checkpoints never need it.
// - dequantize_groups / dequantize_elements: the same decoders writing floats, or bf16 for
//   the cuBLAS path (gemm_cublas.cu).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "quant/cuda/blocks.cuh"
#include "quant/cuda/check.h"

namespace hearth::cuda {

struct MatmulArgs {
  const uint8_t* w = nullptr;
  int64_t row_bytes = 0, rows = 0, cols = 0;
  const float* scale = nullptr;  // FP8 block scales (nullptr: none)
  int64_t scale_cols = 0, block = 128;
  const float* x = nullptr;
  int64_t ldx = 0, n = 0;
  float* y = nullptr;
  int64_t ldy = 0;
  int warps_per_row = 1;  // 1, 2, 4 or 8 warps share a weight row
  int rows_per_warp = 1;  // 1 or kGemvRowsPerWarp weight rows per warp (gemv_groups, aligned data)
};

constexpr int kGemvThreads = 256;
constexpr int kGemvWarps = kGemvThreads / 32;
constexpr int kGemvUnroll = 4;
constexpr int kGemvMaxRows = 8;        // activation rows per gemv launch
constexpr int kGemvRowsPerWarp = 4;    // the R of gemv_groups for large matrices
// From here on the tiled kernel (aligned data only). Below, ceil(n / 8) GEMV passes are
// faster: on an H200, 8192 x 8192, two passes (n = 16) took 260-340 us, the tiled kernel
// 475-590 us for any n up to 64.
constexpr int64_t kTiledMinRows = 25;
constexpr int kTile = 64, kTileK = 32, kTileThreads = 256;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// x[0..8) = p[0..8); p 16-byte aligned when vec4.
__device__ __forceinline__ void load8(const float* p, bool vec4, float x[8]) {
  if (vec4) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(p)), b = __ldg(reinterpret_cast<const float4*>(p + 4));
    x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
  } else {
#pragma unroll
    for (int m = 0; m < 8; ++m) x[m] = __ldg(p + m);
  }
}

__device__ __forceinline__ float dot8(const float v[8], const float x[8]) {
  float d = v[0] * x[0];
#pragma unroll
  for (int m = 1; m < 8; ++m) d = fmaf(v[m], x[m], d);
  return d;
}

// Adds the partial sums of the warps that share a row (fixed order) and stores y; every
// thread of the block must call it. Warp `warp` holds rows r0 .. r0 + R - 1.
template <int R, int NT>
__device__ __forceinline__ void gemv_store(const MatmulArgs& a, float (&acc)[R][NT], int64_t r0, int warp, int lane,
                                           int part, float (*partial)[R][NT]) {
#pragma unroll
  for (int i = 0; i < R; ++i)
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[i][t] = warp_sum(acc[i][t]);
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
      for (int t = 0; t < NT; ++t) partial[warp][i][t] = acc[i][t];
  }
  __syncthreads();
  const int i = lane / NT, t = lane % NT;  // lane -> (row, activation row) of the output
  if (part == 0 && lane < R * NT && t < a.n && r0 + i < a.rows) {
    float s = 0.0f;
    for (int p = 0; p < a.warps_per_row; ++p) s += partial[warp + p][i][t];
    a.y[int64_t(t) * a.ldy + r0 + i] = s;
  }
}

// R weight rows per warp (R > 1 loads each activation value once for R rows: for large
// matrices the activations' L1 traffic, rows x cols x n floats at R = 1, is what limits).
template <class F, int A, int NT, int R>
__global__ void __launch_bounds__(kGemvThreads) gemv_groups(MatmulArgs a) {
  constexpr int U = R == 1 ? kGemvUnroll : 1;  // groups per lane per step (loads in flight)
  __shared__ float partial[kGemvWarps][R][NT];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wpr = a.warps_per_row;
  const int64_t r0 = (int64_t(blockIdx.x) * (kGemvWarps / wpr) + warp / wpr) * R;
  const int part = warp % wpr;
  const bool x_vec4 = (reinterpret_cast<uintptr_t>(a.x) % 16 == 0) && (a.ldx % 4 == 0);
  constexpr int kGroupsPerBlock = F::kQK / 8;
  float acc[R][NT];
#pragma unroll
  for (int i = 0; i < R; ++i)
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[i][t] = 0.0f;
  if (r0 < a.rows) {
    const uint8_t* row[R];
    const float* srow[R];
#pragma unroll
    for (int i = 0; i < R; ++i) {
      const bool ok = r0 + i < a.rows;
      row[i] = ok ? a.w + (r0 + i) * a.row_bytes : nullptr;
      srow[i] = (ok && a.scale) ? a.scale + ((r0 + i) / a.block) * a.scale_cols : nullptr;
    }
    const int64_t groups = a.cols / 8, stride = int64_t(32) * wpr;
    for (int64_t g0 = int64_t(part) * 32 + lane; g0 < groups; g0 += stride * U) {
      float v[U][R][8];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t g = g0 + u * stride;
#pragma unroll
        for (int i = 0; i < R; ++i) {
          if (g < groups && row[i]) {
            F::template decode8<A>(row[i] + (g / kGroupsPerBlock) * F::kBytes, int(g % kGroupsPerBlock), v[u][i]);
            if (srow[i]) {
              const float s = __ldg(srow[i] + (8 * g) / a.block);
#pragma unroll
              for (int m = 0; m < 8; ++m) v[u][i][m] *= s;
            }
          } else {
#pragma unroll
            for (int m = 0; m < 8; ++m) v[u][i][m] = 0.0f;
          }
        }
      }
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        if (t < a.n) {
          const float* xt = a.x + t * a.ldx;
#pragma unroll
          for (int u = 0; u < U; ++u) {
            const int64_t g = g0 + u * stride;
            if (g < groups) {
              float xv[8];
              load8(xt + 8 * g, x_vec4, xv);
#pragma unroll
              for (int i = 0; i < R; ++i) acc[i][t] += dot8(v[u][i], xv);
            }
          }
        }
      }
    }
  }
  gemv_store<R, NT>(a, acc, r0, warp, lane, part, partial);
}

template <class F, int NT>
__global__ void __launch_bounds__(kGemvThreads) gemv_elements(MatmulArgs a) {
  __shared__ float partial[kGemvWarps][1][NT];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wpr = a.warps_per_row;
  const int64_t r = int64_t(blockIdx.x) * (kGemvWarps / wpr) + warp / wpr;
  const int part = warp % wpr;
  float acc[1][NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[0][t] = 0.0f;
  if (r < a.rows) {
    const uint8_t* row = a.w + r * a.row_bytes;
    const float* srow = a.scale ? a.scale + (r / a.block) * a.scale_cols : nullptr;
    const int64_t stride = int64_t(32) * wpr;
#pragma unroll 4
    for (int64_t c = int64_t(part) * 32 + lane; c < a.cols; c += stride) {
      float w = F::decode1(row, c);
      if (srow) w *= __ldg(srow + c / a.block);
#pragma unroll
      for (int t = 0; t < NT; ++t)
        if (t < a.n) acc[0][t] = fmaf(w, __ldg(a.x + t * a.ldx + c), acc[0][t]);
    }
  }
  gemv_store<1, NT>(a, acc, r, warp, lane, part, partial);
}

template <class F>
__global__ void __launch_bounds__(kTileThreads) gemm_tiled(MatmulArgs a) {
  // [k][row] and [k][token]; the +1 makes the transposed stores conflict-free.
  __shared__ float ws[kTileK][kTile + 1];
  __shared__ float xs[kTileK][kTile + 1];
  constexpr int kGroupsPerBlock = F::kQK / 8;
  const int tid = threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.x) * kTile, t0 = int64_t(blockIdx.y) * kTile;
  // Loading role: weight row / activation row `lr` of the tile, group `lg` of the step.
  const int lr = tid >> 2, lg = tid & 3;
  const int64_t wr = r0 + lr, xr = t0 + lr;
  const bool w_ok = wr < a.rows, x_ok = xr < a.n;
  const uint8_t* wrow = a.w + (w_ok ? wr : 0) * a.row_bytes;
  const float* srow = (a.scale && w_ok) ? a.scale + (wr / a.block) * a.scale_cols : nullptr;
  const float* xrow = a.x + (x_ok ? xr : 0) * a.ldx;
  // Computing role: rows tr + 16 i, tokens tt + 16 j.
  const int tr = tid & 15, tt = tid >> 4;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
  const int64_t groups = a.cols / 8;
  for (int64_t k0 = 0; k0 < a.cols; k0 += kTileK) {
    const int64_t g = k0 / 8 + lg;
    float v[8], xv[8];
    if (w_ok && g < groups) {
      F::template decode8<F::kAlign>(wrow + (g / kGroupsPerBlock) * F::kBytes, int(g % kGroupsPerBlock), v);
      if (srow) {
        const float s = __ldg(srow + (8 * g) / a.block);
#pragma unroll
        for (int m = 0; m < 8; ++m) v[m] *= s;
      }
    } else {
#pragma unroll
      for (int m = 0; m < 8; ++m) v[m] = 0.0f;
    }
    if (x_ok && g < groups) {
#pragma unroll
      for (int m = 0; m < 8; ++m) xv[m] = __ldg(xrow + 8 * g + m);
    } else {
#pragma unroll
      for (int m = 0; m < 8; ++m) xv[m] = 0.0f;
    }
#pragma unroll
    for (int m = 0; m < 8; ++m) {
      ws[8 * lg + m][lr] = v[m];
      xs[8 * lg + m][lr] = xv[m];
    }
    __syncthreads();
#pragma unroll 8
    for (int k = 0; k < kTileK; ++k) {
      float wv[4], tv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) wv[i] = ws[k][tr + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) tv[j] = xs[k][tt + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(wv[i], tv[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t r = r0 + tr + 16 * i;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t t = t0 + tt + 16 * j;
      if (r < a.rows && t < a.n) a.y[t * a.ldy + r] = acc[i][j];
    }
  }
}

// Decoded values stored as float (exactly) or as bf16 (rounded to nearest even).
__device__ __forceinline__ void store_value(float* o, float v) { *o = v; }
__device__ __forceinline__ void store_value(__nv_bfloat16* o, float v) { *o = __float2bfloat16_rn(v); }
__device__ __forceinline__ void store8(float* o, const float v[8]) {
#pragma unroll
  for (int m = 0; m < 8; ++m) o[m] = v[m];
}
// o 16-byte aligned (the host guarantees it for bf16 output: ldo % 8 == 0): one store.
__device__ __forceinline__ void store8(__nv_bfloat16* o, const float v[8]) {
  alignas(16) __nv_bfloat162 h[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
  *reinterpret_cast<uint4*>(o) = *reinterpret_cast<const uint4*>(h);
}

// Row r of the weight to out + r * ldo.
template <class F, int A, class Out>
__global__ void dequantize_groups(MatmulArgs a, Out* out, int64_t ldo) {
  constexpr int kGroupsPerBlock = F::kQK / 8;
  const int64_t groups = a.cols / 8, total = a.rows * groups;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / groups, g = e % groups;
    float v[8];
    F::template decode8<A>(a.w + r * a.row_bytes + (g / kGroupsPerBlock) * F::kBytes, int(g % kGroupsPerBlock), v);
    if (a.scale) {
      const float s = __ldg(a.scale + (r / a.block) * a.scale_cols + (8 * g) / a.block);
#pragma unroll
      for (int m = 0; m < 8; ++m) v[m] = __fmul_rn(v[m], s);
    }
    store8(out + r * ldo + 8 * g, v);
  }
}

template <class F, class Out>
__global__ void dequantize_elements(MatmulArgs a, Out* out, int64_t ldo) {
  const int64_t total = a.rows * a.cols;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / a.cols, c = e % a.cols;
    float v = F::decode1(a.w + r * a.row_bytes, c);
    if (a.scale) v = __fmul_rn(v, __ldg(a.scale + (r / a.block) * a.scale_cols + c / a.block));
    store_value(out + r * ldo + c, v);
  }
}

// ---- host side ----------------------------------------------------------------------------

// How a weight is read: whole groups of 8 with the format's wide loads, the same with byte
// loads (misaligned block data), or value by value (float formats only).
enum class Path { kGroups, kGroupsUnaligned, kElements };

template <class F>
Path choose_path(const MatmulArgs& a) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(a.w);
  const bool aligned = addr % F::kAlign == 0;
  if constexpr (F::kElement) {
    // A row is whole groups (and keeps the alignment) only when 8 divides cols; the FP8
    // block scale must not change inside a group.
    if (a.cols % 8 != 0 || (a.scale && a.block % 8 != 0) || !aligned) return Path::kElements;
    return Path::kGroups;
  } else {
    return aligned ? Path::kGroups : Path::kGroupsUnaligned;
  }
}

inline unsigned grid_1d(int64_t total, int threads) {
  const int64_t blocks = (total + threads - 1) / threads;
  return unsigned(std::clamp<int64_t>(blocks, 1, 65536));  // grid-stride loops cover the rest
}

// rows_per_warp (R) must be the kernel's R: 1 for gemv_elements and the unaligned path.
template <class Kernel>
void launch_gemv(Kernel kernel, const MatmulArgs& a, int rows_per_warp, cudaStream_t s, const char* what) {
  MatmulArgs args = a;
  args.rows_per_warp = rows_per_warp;
  const int64_t rows_per_block = int64_t(kGemvWarps / a.warps_per_row) * rows_per_warp;
  const int64_t blocks = (a.rows + rows_per_block - 1) / rows_per_block;
  if (blocks > 0x7fffffff) throw std::invalid_argument("cuda::matmul: too many rows for one launch");
  kernel<<<unsigned(blocks), kGemvThreads, 0, s>>>(args);
  check_launch(what);
}

template <class F, int R>
void gemv_aligned(const MatmulArgs& a, cudaStream_t s) {
  const char* what = "launching gemv";
  if (a.n == 1) launch_gemv(gemv_groups<F, F::kAlign, 1, R>, a, R, s, what);
  else if (a.n == 2) launch_gemv(gemv_groups<F, F::kAlign, 2, R>, a, R, s, what);
  else if (a.n <= 4) launch_gemv(gemv_groups<F, F::kAlign, 4, R>, a, R, s, what);
  else launch_gemv(gemv_groups<F, F::kAlign, kGemvMaxRows, R>, a, R, s, what);
}

// One gemv launch over a.n <= kGemvMaxRows activation rows; a.rows_per_warp is the R the
// host chose for the aligned path.
template <class F>
void gemv_once(const MatmulArgs& a, Path path, cudaStream_t s) {
  if constexpr (F::kElement) {
    if (path == Path::kElements) {
      if (a.n == 1) launch_gemv(gemv_elements<F, 1>, a, 1, s, "launching gemv_elements");
      else launch_gemv(gemv_elements<F, kGemvMaxRows>, a, 1, s, "launching gemv_elements");
      return;
    }
  } else {
    if (path == Path::kGroupsUnaligned) {
      if (a.n == 1) launch_gemv(gemv_groups<F, 1, 1, 1>, a, 1, s, "launching gemv (unaligned)");
      else launch_gemv(gemv_groups<F, 1, kGemvMaxRows, 1>, a, 1, s, "launching gemv (unaligned)");
      return;
    }
  }
  if (a.rows_per_warp == kGemvRowsPerWarp) gemv_aligned<F, kGemvRowsPerWarp>(a, s);
  else gemv_aligned<F, 1>(a, s);
}

template <class F>
void run_matmul(const MatmulArgs& a, cudaStream_t s) {
  const Path path = choose_path<F>(a);
  if (path == Path::kGroups && a.n >= kTiledMinRows) {
    constexpr int64_t kMaxTokenTiles = 65535;  // gridDim.y limit
    for (int64_t t0 = 0; t0 < a.n; t0 += kMaxTokenTiles * kTile) {
      MatmulArgs part = a;
      part.x = a.x + t0 * a.ldx;
      part.y = a.y + t0 * a.ldy;
      part.n = std::min<int64_t>(a.n - t0, kMaxTokenTiles * kTile);
      const int64_t row_tiles = (a.rows + kTile - 1) / kTile;
      if (row_tiles > 0x7fffffff) throw std::invalid_argument("cuda::matmul: too many rows for one launch");
      const dim3 grid(unsigned(row_tiles), unsigned((part.n + kTile - 1) / kTile));
      gemm_tiled<F><<<grid, kTileThreads, 0, s>>>(part);
      check_launch("launching gemm_tiled");
    }
    return;
  }
  for (int64_t t0 = 0; t0 < a.n; t0 += kGemvMaxRows) {
    MatmulArgs part = a;
    part.x = a.x + t0 * a.ldx;
    part.y = a.y + t0 * a.ldy;
    part.n = std::min<int64_t>(a.n - t0, kGemvMaxRows);
    gemv_once<F>(part, path, s);
  }
}

// Out is float or __nv_bfloat16; row r goes to out + r * ldo.
template <class F, class Out>
void run_dequantize(const MatmulArgs& a, Out* out, int64_t ldo, cudaStream_t s) {
  const Path path = choose_path<F>(a);
  constexpr int kThreads = 256;
  if (path == Path::kElements) {
    if constexpr (F::kElement) {
      dequantize_elements<F, Out><<<grid_1d(a.rows * a.cols, kThreads), kThreads, 0, s>>>(a, out, ldo);
    }
  } else {
    const unsigned grid = grid_1d(a.rows * (a.cols / 8), kThreads);
    if (path == Path::kGroups) dequantize_groups<F, F::kAlign, Out><<<grid, kThreads, 0, s>>>(a, out, ldo);
    else if constexpr (!F::kElement) dequantize_groups<F, 1, Out><<<grid, kThreads, 0, s>>>(a, out, ldo);
  }
  check_launch("launching dequantize");
}

}  // namespace hearth::cuda

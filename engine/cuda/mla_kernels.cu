// MLA attention and the lightning indexer on device KV pages (engine/cuda/mla_kernels.h).
//
// Where the CPU's result is bit-exact by construction (the indexer's rope, Hadamard
// transform, LayerNorm, FP8 quantization and scores) the kernels spell every float
// operation out with __fmul_rn / __fadd_rn / __fsub_rn so nvcc cannot fuse them into FMAs,
// or with __fmaf_rn where the CPU fuses them (the scores' products), and keep the CPU's
// order of operations. Attention itself (softmax, weighted sums) only
// has to agree up to rounding and is written for parallelism.
#include <cuda_runtime.h>

#include <cmath>
#include <cub/block/block_scan.cuh>
#include <stdexcept>
#include <string>

#include "engine/cuda/cuda_check.cuh"
#include "engine/cuda/mla_kernels.h"

namespace hearth::cuda_mla {

namespace {

constexpr int kWarp = 32;
constexpr unsigned kFull = 0xffffffffu;

// The cache entry of (row's sequence, pos) for `layer`.
__device__ __forceinline__ uint8_t* token_entry(const KvPages& kv, const StepTables& st, int64_t row, int64_t layer,
                                                int64_t pos) {
  const int64_t page = st.tables[st.row_table[row] + pos / kv.page_tokens];
  return kv.base + page * kv.page_bytes + (layer * kv.page_tokens + pos % kv.page_tokens) * kv.token_bytes;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = kWarp / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

// Block-wide sum / max (blockDim.x a multiple of 32, at most 1024); `red` holds 32 floats
// of shared memory. Every thread gets the result. Safe to call repeatedly.
__device__ float block_sum(float v, float* red) {
  v = warp_sum(v);
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, nw = blockDim.x / kWarp;
  __syncthreads();  // an earlier call may still be reading red[0]
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float t = lane < nw ? red[lane] : 0.0f;
    t = warp_sum(t);
    if (lane == 0) red[0] = t;
  }
  __syncthreads();
  return red[0];
}
__device__ float block_max(float v, float* red) {
  v = warp_max(v);
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, nw = blockDim.x / kWarp;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float t = lane < nw ? red[lane] : -INFINITY;
    t = warp_max(t);
    if (lane == 0) red[0] = t;
  }
  __syncthreads();
  return red[0];
}

// FP8 e4m3fn decode (quant/numbers.cc fp8_e4m3_to_f32): exact.
__device__ __forceinline__ float fp8_decode(uint32_t v) {
  const int exp = int(v >> 3) & 0xf, man = int(v) & 0x7;
  if (exp == 0xf && man == 0x7) return __int_as_float(0x7fc00000);
  const float r = exp == 0 ? ldexpf(float(man), -9) : ldexpf(float(8 + man), exp - 10);
  return (v & 0x80u) ? -r : r;
}

// FP8 e4m3fn encode, round to nearest even, saturating to +-448, NaN to 0x7f: the bit
// arithmetic of quant/numbers.cc f32_to_fp8_e4m3. The subnormal range (multiples of 2^-9)
// rounds a * 512 to the nearest even integer, which is what the CPU's add-2^14 trick does,
// and stays right even if the build flushes float subnormals to zero.
__device__ __forceinline__ uint8_t fp8_encode(float f) {
  uint32_t u = __float_as_uint(f);
  const uint32_t sign = (u >> 24) & 0x80u;
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return 0x7f;
  if (u >= 0x43e00000u) return uint8_t(sign | 0x7eu);
  if (u < 0x3c800000u) return uint8_t(sign | uint32_t(__float2int_rn(__fmul_rn(__uint_as_float(u), 512.0f))));
  u += 0x7ffffu + ((u >> 20) & 1u);
  const uint32_t code = (u >> 20) - (120u << 3);
  return uint8_t(sign | (code > 0x7eu ? 0x7eu : code));
}

// 2^ceil(log2(amax / 448)), as quantize_fp8_block_pow2 computes it with log2f: the
// logarithm is taken in double and rounded to float (the correctly rounded log2f), and
// the power of two is formed exactly.
__device__ __forceinline__ float pow2_scale(float amax) {
  const float ratio = __fdiv_rn(amax, 448.0f);
  const float l = float(log2(double(ratio)));
  const float c = ceilf(l);
  if (!isfinite(c)) return exp2f(c);
  return ldexpf(1.0f, int(c));
}

// Rotates x[i], x[i + rope/2] (rope "halves") for i = threadIdx.x < rope/2 with the row's
// cos/sin; a*cos - b*sin and a*sin + b*cos as Rope::apply_halves computes them.
__device__ __forceinline__ void rope_halves_shared(float* x, int64_t rope, const float* cs) {
  const int64_t half = rope / 2;
  const int64_t i = threadIdx.x;
  if (i < half) {
    const float a = x[i], b = x[i + half], c = cs[2 * i], s = cs[2 * i + 1];
    x[i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    x[i + half] = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
  }
  __syncthreads();
}

// The butterflies of hadamard_transform (engine/ops.cc) on x[0, n) in shared memory, one
// pair per thread per stage (blockDim.x == n); the scaling is left to the caller.
__device__ __forceinline__ void hadamard_shared(float* x, int64_t n) {
  const int64_t t = threadIdx.x;
  for (int64_t h = 1; h < n; h *= 2) {
    if (t < n / 2) {
      const int64_t i = (t / h) * 2 * h + t % h;
      const float a = x[i], b = x[i + h];
      x[i] = __fadd_rn(a, b);
      x[i + h] = __fsub_rn(a, b);
    }
    __syncthreads();
  }
}

// ---------------------------------------------------------------------------------------
// mla_cache_write: one block per row.
__global__ void mla_cache_write_kernel(KvPages kv, StepTables st, int64_t layer, MlaShape s, float* q,
                                       const float* kva, const float* kv_norm, float eps) {
  __shared__ float red[32];
  const int64_t r = blockIdx.x;
  const int64_t pos = st.row_pos[r];
  const float* cs = st.rope_cs + r * s.rope;
  const int64_t half = s.rope / 2, qk = s.nope + s.rope;

  // The query's rope parts, every head: adjacent pairs (Rope::apply_interleaved).
  float* qr = q + r * s.heads * qk;
  for (int64_t i = threadIdx.x; i < s.heads * half; i += blockDim.x) {
    const int64_t h = i / half, k = i % half;
    float* p = qr + h * qk + s.nope + 2 * k;
    const float a = p[0], b = p[1], c = cs[2 * k], sn = cs[2 * k + 1];
    p[0] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, sn));
    p[1] = __fadd_rn(__fmul_rn(a, sn), __fmul_rn(b, c));
  }

  // The latent, RMS-normalized into the cache (x * r * weight, as rms_norm).
  const float* row = kva + r * (s.kv_rank + s.rope);
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < s.kv_rank; c += blockDim.x) ss += row[c] * row[c];
  ss = block_sum(ss, red);
  const float inv = 1.0f / sqrtf(ss / float(s.kv_rank) + eps);
  uint8_t* entry = token_entry(kv, st, r, layer, pos);
  float* lat = reinterpret_cast<float*>(entry + kv.latent_off);
  for (int64_t c = threadIdx.x; c < s.kv_rank; c += blockDim.x) lat[c] = __fmul_rn(__fmul_rn(row[c], inv), kv_norm[c]);

  // The shared rope key, rotated into the cache.
  float* kpe = reinterpret_cast<float*>(entry + kv.rope_off);
  for (int64_t k = threadIdx.x; k < half; k += blockDim.x) {
    const float a = row[s.kv_rank + 2 * k], b = row[s.kv_rank + 2 * k + 1], c = cs[2 * k], sn = cs[2 * k + 1];
    kpe[2 * k] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, sn));
    kpe[2 * k + 1] = __fadd_rn(__fmul_rn(a, sn), __fmul_rn(b, c));
  }
}

// ---------------------------------------------------------------------------------------
// indexer_queries: one block of `dim` threads per (row, head).
__global__ void indexer_queries_kernel(float* q, float* w, int64_t heads, int64_t dim, int64_t rope,
                                       const float* rope_cs, float head_scale, float hadamard_scale) {
  extern __shared__ float x[];  // [dim]
  __shared__ float red[32];
  const int64_t idx = blockIdx.x, r = idx / heads;
  const int64_t t = threadIdx.x;
  float* v = q + idx * dim;
  x[t] = v[t];
  __syncthreads();
  rope_halves_shared(x, rope, rope_cs + r * rope);
  hadamard_shared(x, dim);
  const float val = __fmul_rn(x[t], hadamard_scale);
  const float amax = fmaxf(block_max(fabsf(val), red), 1e-4f);
  const float scale = pow2_scale(amax);
  const float inv = __fdiv_rn(1.0f, scale);
  v[t] = fp8_decode(fp8_encode(__fmul_rn(val, inv)));
  if (t == 0) w[idx] = __fmul_rn(__fmul_rn(w[idx], head_scale), scale);
}

// ---------------------------------------------------------------------------------------
// indexer_keys: one block of `dim` threads per row.
__global__ void indexer_keys_kernel(KvPages kv, StepTables st, int64_t layer, const float* k, int64_t dim,
                                    int64_t rope, const float* norm_w, const float* norm_b, float eps,
                                    float hadamard_scale) {
  extern __shared__ float x[];  // [dim]
  __shared__ float red[32];
  __shared__ float stats[2];
  const int64_t r = blockIdx.x, t = threadIdx.x;
  x[t] = k[r * dim + t];
  __syncthreads();
  if (t == 0) {
    // layer_norm's sums, sequential as on the CPU (dim is small).
    float mean = 0.0f;
    for (int64_t i = 0; i < dim; ++i) mean = __fadd_rn(mean, x[i]);
    mean = __fdiv_rn(mean, float(dim));
    float var = 0.0f;
    for (int64_t i = 0; i < dim; ++i) {
      const float d = __fsub_rn(x[i], mean);
      var = __fadd_rn(var, __fmul_rn(d, d));
    }
    var = __fdiv_rn(var, float(dim));
    stats[0] = mean;
    stats[1] = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(var, eps)));
  }
  __syncthreads();
  x[t] = __fadd_rn(__fmul_rn(__fmul_rn(__fsub_rn(x[t], stats[0]), stats[1]), norm_w[t]), norm_b[t]);
  __syncthreads();
  rope_halves_shared(x, rope, st.rope_cs + r * rope);
  hadamard_shared(x, dim);
  const float val = __fmul_rn(x[t], hadamard_scale);
  const float amax = fmaxf(block_max(fabsf(val), red), 1e-4f);
  const float scale = pow2_scale(amax);
  const float inv = __fdiv_rn(1.0f, scale);
  uint8_t* entry = token_entry(kv, st, r, layer, st.row_pos[r]);
  entry[kv.ikey_off + t] = fp8_encode(__fmul_rn(val, inv));
  if (t == 0) *reinterpret_cast<float*>(entry + kv.iscale_off) = scale;
}

// ---------------------------------------------------------------------------------------
// index_scores: blocks of kScoreThreads positions (x) per row of the group (y); one
// thread per position, the CPU's scalar loop order (engine/index_scores.cc).
constexpr int kScoreThreads = 256;

__global__ void index_scores_kernel(KvPages kv, StepTables st, int64_t layer, int64_t row0, const float* q,
                                    const float* w, int64_t heads, int64_t dim, int64_t topk, float* scores,
                                    int64_t ld) {
  extern __shared__ float sh[];  // q [heads][dim], w [heads], lut [256]
  float* qs = sh;
  float* ws = qs + heads * dim;
  float* lut = ws + heads;
  const int64_t g = blockIdx.y, r = row0 + g;
  const int64_t n = int64_t(st.row_pos[r]) + 1;
  const int64_t s0 = int64_t(blockIdx.x) * kScoreThreads;
  if (n <= topk || s0 >= n) return;  // the same for the whole block
  for (int64_t i = threadIdx.x; i < heads * dim; i += blockDim.x) qs[i] = q[r * heads * dim + i];
  for (int64_t i = threadIdx.x; i < heads; i += blockDim.x) ws[i] = w[r * heads + i];
  for (int64_t i = threadIdx.x; i < 256; i += blockDim.x) lut[i] = fp8_decode(uint32_t(i));
  __syncthreads();
  const int64_t s = s0 + threadIdx.x;
  if (s >= n) return;
  const uint8_t* entry = token_entry(kv, st, r, layer, s);
  const uint32_t* key = reinterpret_cast<const uint32_t*>(entry + kv.ikey_off);  // 4-byte aligned (checked on the host)
  const float key_scale = *reinterpret_cast<const float*>(entry + kv.iscale_off);
  float total = 0.0f;
  for (int64_t h = 0; h < heads; ++h) {
    const float* qh = qs + h * dim;
    float dot = 0.0f;
    for (int64_t d4 = 0; d4 < dim / 4; ++d4) {
      const uint32_t k4 = key[d4];
      // Pairs of dimensions, the odd one first (engine/index_scores.h).
      dot = __fmaf_rn(qh[4 * d4 + 1], lut[(k4 >> 8) & 0xffu], dot);
      dot = __fmaf_rn(qh[4 * d4 + 0], lut[k4 & 0xffu], dot);
      dot = __fmaf_rn(qh[4 * d4 + 3], lut[k4 >> 24], dot);
      dot = __fmaf_rn(qh[4 * d4 + 2], lut[(k4 >> 16) & 0xffu], dot);
    }
    total = __fmaf_rn(ws[h], dot < 0.0f ? 0.0f : dot, total);  // std::fma(w, std::max(dot, 0.0f), total)
  }
  scores[g * ld + s] = __fmul_rn(total, key_scale);
}

// ---------------------------------------------------------------------------------------
// select_topk: one block per row. Radix select finds the topk-th largest score (as an
// order-preserving 32-bit key, 8 bits per pass), then one ordered pass over the positions
// keeps those above it and the earliest of those equal to it, writing them in order.
constexpr int kSelectThreads = 512;

__device__ __forceinline__ uint32_t order_key(float f) {
  uint32_t u = __float_as_uint(f);
  if (u == 0x80000000u) u = 0;  // -0 ties with +0, as float comparison has it
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__global__ void select_topk_kernel(const float* scores, int64_t ld, const int32_t* row_pos, int64_t topk,
                                   int32_t* picked) {
  using Scan = cub::BlockScan<int, kSelectThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ int hist[256];
  __shared__ uint32_t sh_prefix, sh_mask;
  __shared__ int64_t sh_need;
  const int64_t g = blockIdx.x;
  const int64_t n = int64_t(row_pos[g]) + 1;
  if (n <= topk) return;
  const float* sc = scores + g * ld;
  int32_t* out = picked + g * topk;
  if (threadIdx.x == 0) {
    sh_prefix = 0;
    sh_mask = 0;
    sh_need = topk;
  }
  __syncthreads();
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    const uint32_t prefix = sh_prefix, mask = sh_mask;
    for (int64_t s = threadIdx.x; s < n; s += blockDim.x) {
      const uint32_t key = order_key(sc[s]);
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 0xffu], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      // The digit of the need-th largest key among those matching the prefix so far.
      int64_t above = 0;
      int digit = 0;
      for (int b = 255; b >= 0; --b) {
        if (above + hist[b] >= sh_need) {
          digit = b;
          break;
        }
        above += hist[b];
      }
      sh_prefix = prefix | (uint32_t(digit) << shift);
      sh_mask = mask | (0xffu << shift);
      sh_need -= above;
    }
    __syncthreads();
  }
  const uint32_t threshold = sh_prefix;
  const int64_t need_equal = sh_need;  // >= 1: how many of the keys equal to the threshold are kept
  int64_t base_out = 0, base_equal = 0;
  for (int64_t c0 = 0; c0 < n; c0 += blockDim.x) {
    const int64_t s = c0 + threadIdx.x;
    const uint32_t key = s < n ? order_key(sc[s]) : 0u;
    const int above = s < n && key > threshold;
    const int equal = s < n && key == threshold;
    int equal_rank = 0, equal_total = 0;
    Scan(scan_tmp).ExclusiveSum(equal, equal_rank, equal_total);
    __syncthreads();
    const int keep = above || (equal && base_equal + equal_rank < need_equal);
    int slot = 0, kept = 0;
    Scan(scan_tmp).ExclusiveSum(keep, slot, kept);
    __syncthreads();
    if (keep) out[base_out + slot] = int32_t(s);
    base_out += kept;
    base_equal += equal_total;
  }
}

// ---------------------------------------------------------------------------------------
// absorbed_attention: one block per (row, group of `hg` heads); the group's heads share
// every latent read. Keys go in tiles of kTile: scores (a warp per key), an online softmax
// per head (running max and sum, a warp per head), then the weighted latent sum.
constexpr int kAttnThreads = 256;
constexpr int kTile = 64;
constexpr int kMaxGroup = 8;

struct AttnSmem {  // float offsets into the dynamic shared memory
  int64_t qn, qp, ql, acc, sc, mx, ls, fac, ptr, floats;
};

__host__ __device__ inline AttnSmem attn_smem(const MlaShape& s, int64_t hg) {
  AttnSmem m{};
  m.qn = 0;
  m.qp = m.qn + hg * s.nope;
  m.ql = m.qp + hg * s.rope;
  m.acc = m.ql + hg * s.kv_rank;
  m.sc = m.acc + hg * s.kv_rank;
  m.mx = m.sc + hg * kTile;
  m.ls = m.mx + hg;
  m.fac = m.ls + hg;
  m.ptr = (m.fac + hg + 1) / 2 * 2;  // 8-byte aligned: kTile pointers follow
  m.floats = m.ptr + 2 * kTile;
  return m;
}

__global__ void absorbed_attention_kernel(KvPages kv, StepTables st, int64_t layer, int64_t row0, MlaShape s,
                                          int64_t hg, const float* q, const float* kv_b, const int32_t* picked,
                                          int64_t topk, float scale, float* out) {
  extern __shared__ float sm[];
  const AttnSmem L = attn_smem(s, hg);
  float* qn = sm + L.qn;
  float* qp = sm + L.qp;
  float* ql = sm + L.ql;
  float* acc = sm + L.acc;
  float* sc = sm + L.sc;
  float* mx = sm + L.mx;
  float* ls = sm + L.ls;
  float* fac = sm + L.fac;
  const float** kp = reinterpret_cast<const float**>(sm + L.ptr);

  const int64_t g_row = blockIdx.x, r = row0 + g_row, h0 = int64_t(blockIdx.y) * hg;
  const int64_t pos = st.row_pos[r], n = pos + 1;
  const bool every = picked == nullptr || n <= topk;
  const int64_t nk = every ? n : topk;
  const int32_t* list = every ? nullptr : picked + g_row * topk;
  const int64_t qk = s.nope + s.rope, stride = s.nope + s.v, R = s.kv_rank;
  const int64_t rope_rel = (kv.rope_off - kv.latent_off) / int64_t(sizeof(float));
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, nwarps = blockDim.x / kWarp;

  for (int64_t i = threadIdx.x; i < hg * qk; i += blockDim.x) {
    const int64_t g = i / qk, d = i % qk;
    const float v = q[(r * s.heads + h0 + g) * qk + d];
    if (d < s.nope) qn[g * s.nope + d] = v;
    else qp[g * s.rope + d - s.nope] = v;
  }
  if (threadIdx.x < hg) {
    mx[threadIdx.x] = -INFINITY;
    ls[threadIdx.x] = 0.0f;
  }
  __syncthreads();
  // q_lat[g][c] = sum_i q_nope[g][i] * kv_b[(h * stride + i)][c]: W_uk(h)^T q_nope.
  for (int64_t i = threadIdx.x; i < hg * R; i += blockDim.x) {
    const int64_t g = i / R, c = i % R;
    const float* wcol = kv_b + (h0 + g) * stride * R + c;
    float sum = 0.0f;
    for (int64_t t = 0; t < s.nope; ++t) sum += qn[g * s.nope + t] * wcol[t * R];
    ql[i] = sum;
    acc[i] = 0.0f;
  }
  __syncthreads();

  for (int64_t j0 = 0; j0 < nk; j0 += kTile) {
    const int64_t tl = nk - j0 < kTile ? nk - j0 : kTile;
    for (int64_t jj = threadIdx.x; jj < tl; jj += blockDim.x) {
      const int64_t p = every ? j0 + jj : int64_t(list[j0 + jj]);
      kp[jj] = reinterpret_cast<const float*>(token_entry(kv, st, r, layer, p) + kv.latent_off);
    }
    __syncthreads();
    // Scores: a warp per key, every head of the group at once.
    for (int64_t jj = warp; jj < tl; jj += nwarps) {
      const float* lat = kp[jj];
      const float* kpe = lat + rope_rel;
      float part[kMaxGroup];
#pragma unroll
      for (int g = 0; g < kMaxGroup; ++g) part[g] = 0.0f;
      for (int64_t c = lane; c < R; c += kWarp) {
        const float v = lat[c];
#pragma unroll
        for (int g = 0; g < kMaxGroup; ++g)
          if (g < hg) part[g] += ql[g * R + c] * v;
      }
      for (int64_t c = lane; c < s.rope; c += kWarp) {
        const float v = kpe[c];
#pragma unroll
        for (int g = 0; g < kMaxGroup; ++g)
          if (g < hg) part[g] += qp[g * s.rope + c] * v;
      }
#pragma unroll
      for (int g = 0; g < kMaxGroup; ++g) {
        if (g < hg) {
          const float d = warp_sum(part[g]);
          if (lane == 0) sc[g * kTile + jj] = d * scale;
        }
      }
    }
    __syncthreads();
    // Online softmax: a warp per head rescales what came before to the new running max.
    for (int64_t g = warp; g < hg; g += nwarps) {
      float m = -INFINITY;
      for (int64_t jj = lane; jj < tl; jj += kWarp) m = fmaxf(m, sc[g * kTile + jj]);
      m = warp_max(m);
      const float m_old = mx[g], m_new = fmaxf(m_old, m);
      const float f = m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
      float sum = 0.0f;
      for (int64_t jj = lane; jj < tl; jj += kWarp) {
        const float p = expf(sc[g * kTile + jj] - m_new);
        sc[g * kTile + jj] = p;
        sum += p;
      }
      sum = warp_sum(sum);
      if (lane == 0) {
        ls[g] = ls[g] * f + sum;
        mx[g] = m_new;
        fac[g] = f;
      }
    }
    __syncthreads();
    // acc[g][c] = acc[g][c] * f_g + sum_j p_gj latent_j[c]: each latent value read once.
    for (int64_t c = threadIdx.x; c < R; c += blockDim.x) {
      float a[kMaxGroup];
#pragma unroll
      for (int g = 0; g < kMaxGroup; ++g) a[g] = g < hg ? acc[g * R + c] * fac[g] : 0.0f;
      for (int64_t jj = 0; jj < tl; ++jj) {
        const float v = kp[jj][c];
#pragma unroll
        for (int g = 0; g < kMaxGroup; ++g)
          if (g < hg) a[g] += sc[g * kTile + jj] * v;
      }
#pragma unroll
      for (int g = 0; g < kMaxGroup; ++g)
        if (g < hg) acc[g * R + c] = a[g];
    }
    __syncthreads();
  }
  // o_lat = acc / sum p; out = W_uv(h) o_lat, a warp per output value.
  for (int64_t i = threadIdx.x; i < hg * R; i += blockDim.x) acc[i] = acc[i] / ls[i / R];
  __syncthreads();
  for (int64_t o = warp; o < hg * s.v; o += nwarps) {
    const int64_t g = o / s.v, v = o % s.v;
    const float* wrow = kv_b + ((h0 + g) * stride + s.nope + v) * R;
    float sum = 0.0f;
    for (int64_t c = lane; c < R; c += kWarp) sum += wrow[c] * acc[g * R + c];
    sum = warp_sum(sum);
    if (lane == 0) out[(r * s.heads + h0 + g) * s.v + v] = sum;
  }
}

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

}  // namespace

void mla_cache_write(const KvPages& kv, const StepTables& st, int64_t layer, int64_t rows, const MlaShape& s, float* q,
                     const float* kva, const float* kv_norm, float eps, void* stream) {
  if (rows <= 0) return;
  require(s.rope % 2 == 0, "mla_cache_write: qk_rope_head_dim must be even");
  mla_cache_write_kernel<<<unsigned(rows), 256, 0, as_stream(stream)>>>(kv, st, layer, s, q, kva, kv_norm, eps);
  check_launch("mla_cache_write kernel");
}

void indexer_queries(float* q, float* w, int64_t rows, int64_t heads, int64_t dim, int64_t rope, const float* rope_cs,
                     float head_scale, void* stream) {
  if (rows <= 0 || heads <= 0) return;
  require(dim >= 32 && dim <= 1024 && (dim & (dim - 1)) == 0,
          "indexer_queries: index_head_dim must be a power of two in 32..1024, got " + std::to_string(dim));
  require(rope <= dim && rope % 2 == 0, "indexer_queries: the rope dim must be even and at most index_head_dim");
  const float hadamard_scale = 1.0f / std::sqrt(float(dim));  // as hadamard_transform
  indexer_queries_kernel<<<unsigned(rows * heads), unsigned(dim), size_t(dim) * sizeof(float), as_stream(stream)>>>(
      q, w, heads, dim, rope, rope_cs, head_scale, hadamard_scale);
  check_launch("indexer_queries kernel");
}

void indexer_keys(const KvPages& kv, const StepTables& st, int64_t layer, int64_t rows, const float* k, int64_t dim,
                  int64_t rope, const float* norm_w, const float* norm_b, float eps, void* stream) {
  if (rows <= 0) return;
  require(dim >= 32 && dim <= 1024 && (dim & (dim - 1)) == 0,
          "indexer_keys: index_head_dim must be a power of two in 32..1024, got " + std::to_string(dim));
  require(rope <= dim && rope % 2 == 0, "indexer_keys: the rope dim must be even and at most index_head_dim");
  const float hadamard_scale = 1.0f / std::sqrt(float(dim));
  indexer_keys_kernel<<<unsigned(rows), unsigned(dim), size_t(dim) * sizeof(float), as_stream(stream)>>>(
      kv, st, layer, k, dim, rope, norm_w, norm_b, eps, hadamard_scale);
  check_launch("indexer_keys kernel");
}

void index_scores(const KvPages& kv, const StepTables& st, int64_t layer, int64_t row0, int64_t rows, int64_t max_n,
                  const float* q, const float* w, int64_t heads, int64_t dim, int64_t topk, float* scores, int64_t ld,
                  void* stream) {
  if (rows <= 0 || max_n <= topk) return;
  require(max_n <= ld, "index_scores: the score rows are shorter than the positions");
  require(rows <= 65535, "index_scores: at most 65535 rows per call");
  require(dim % 4 == 0 && kv.ikey_off % 4 == 0, "index_scores: index keys must be 4-byte aligned");
  const size_t smem = size_t(heads * dim + heads + 256) * sizeof(float);
  require(smem <= 48 * 1024, "index_scores: index_n_heads * index_head_dim is too large for one block's queries");
  const dim3 grid(unsigned((max_n + kScoreThreads - 1) / kScoreThreads), unsigned(rows));
  index_scores_kernel<<<grid, kScoreThreads, smem, as_stream(stream)>>>(kv, st, layer, row0, q, w, heads, dim, topk,
                                                                       scores, ld);
  check_launch("index_scores kernel");
}

void select_topk(const float* scores, int64_t ld, const int32_t* row_pos, int64_t rows, int64_t topk, int32_t* picked,
                 void* stream) {
  if (rows <= 0) return;
  require(topk >= 1, "select_topk: index_topk must be positive");
  select_topk_kernel<<<unsigned(rows), kSelectThreads, 0, as_stream(stream)>>>(scores, ld, row_pos, topk, picked);
  check_launch("select_topk kernel");
}

void absorbed_attention(const KvPages& kv, const StepTables& st, int64_t layer, int64_t row0, int64_t rows,
                        const MlaShape& s, const float* q, const float* kv_b, const int32_t* picked, int64_t topk,
                        float scale, float* out, int sm_count, void* stream) {
  if (rows <= 0) return;
  require(kv.latent_off % 4 == 0 && kv.rope_off % 4 == 0 && kv.token_bytes % 8 == 0,
          "absorbed_attention: cache entries must be float aligned");
  // Heads per block: as many as share memory allows (fewer latent reads), but enough
  // blocks to fill the GPU when there are few rows (decode).
  int64_t hg = kMaxGroup;
  while (hg > 1 && (s.heads % hg != 0 || size_t(attn_smem(s, hg).floats) * 4 > 48 * 1024 ||
                    rows * (s.heads / hg) < 2 * int64_t(sm_count)))
    hg /= 2;
  const size_t smem = size_t(attn_smem(s, hg).floats) * sizeof(float);
  require(smem <= 48 * 1024, "absorbed_attention: kv_lora_rank is too large for one block");
  const dim3 grid(unsigned(rows), unsigned(s.heads / hg));
  absorbed_attention_kernel<<<grid, kAttnThreads, smem, as_stream(stream)>>>(kv, st, layer, row0, s, hg, q, kv_b,
                                                                            picked, topk, scale, out);
  check_launch("absorbed_attention kernel");
}

}  // namespace hearth::cuda_mla

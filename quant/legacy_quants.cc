// Q4_1, Q5_0 and Q5_1: ggml's other 32-value formats (llama.cpp falls back to them for
// tensors whose rows are not whole K-quant super-blocks, e.g. DeepSeek's attn_k_b).
// Layouts: quant/block_formats.h.
//
// Dequantization performs ggml's float operations in ggml's order (level times d, then
// plus m), so it reproduces ggml's floats exactly. The dot products take Q8_0
// activations; the offset m of Q4_1/Q5_1 multiplies the activations' plain sum, which
// they compute from the int8 quants (exact) instead of reading it from a Q8_1 block.
#include "quant/legacy_quants.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/block_formats.h"
#include "quant/kquants.h"
#include "quant/numbers.h"
#include "quant/row_weights.h"
#include "quant/scale_search.h"

namespace hearth::legacy_quants {

namespace {

using kquants::require_whole_blocks;
using scale_search::f16_saturating;
using scale_search::round_int;
using scale_search::RowWeights;

constexpr int kBlock = 32, kHalf = kBlock / 2;

// ---- bit packing -----------------------------------------------------------------

// Levels 0..15 (0..31 with qh) of the values of one block: value j and value j + 16 share
// byte j of qs (low and high nibble); the fifth bit of value i is bit i of qh.
void unpack_levels(const uint8_t qs[kHalf], const uint8_t* qh, int q[kBlock]) {
  uint32_t h = 0;
  if (qh) std::memcpy(&h, qh, 4);
  for (int j = 0; j < kHalf; ++j) {
    q[j] = (qs[j] & 15) | int(((h >> j) & 1) << 4);
    q[j + kHalf] = (qs[j] >> 4) | int(((h >> (j + kHalf)) & 1) << 4);
  }
}

void pack_levels(const uint8_t q[kBlock], uint8_t qs[kHalf], uint8_t* qh) {
  uint32_t h = 0;
  for (int j = 0; j < kHalf; ++j) qs[j] = uint8_t((q[j] & 15) | ((q[j + kHalf] & 15) << 4));
  for (int i = 0; i < kBlock; ++i) h |= uint32_t((q[i] >> 4) & 1) << i;
  if (qh) std::memcpy(qh, &h, 4);
}

// ---- quantization ------------------------------------------------------------------

// Q4_1 / Q5_1: x ~ d * q + m with q in 0..nmax and m of either sign. The scale search
// (a grid of candidate scales around the min/max one, each refined by weighted least
// squares) weighs by importance when given, else uniformly (plain squared error); its
// first candidate is ggml's reference min/max grid, so the result is never worse than
// that before the f16 rounding of d and m. The levels are then chosen under the stored
// d and m.
void quantize_affine_block(const float* x, const float* w, int nmax, uint16_t& d, uint16_t& m, uint8_t q[kBlock]) {
  static const float kOnes[kBlock] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                      1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  // The candidate grids of ggml's K-quant searches: the finer one under importance (as
  // ggml's imatrix Q4_1/Q5_1), the coarser one (21 candidates, half the time) without.
  const scale_search::AffineSearch plain{-1.0, 0.1, 20, false, /*free_offset=*/true};
  const scale_search::AffineSearch weighted{-0.9, 0.05, 36, false, /*free_offset=*/true};
  double min = 0;
  const double scale = scale_search::fit_affine(kBlock, nmax, x, w ? w : kOnes, q, &min, w ? weighted : plain);
  d = f16_saturating(scale);
  m = f16_saturating(-min);
  const double df = f16_to_f32(d), mf = f16_to_f32(m);
  for (int i = 0; i < kBlock; ++i)
    q[i] = df != 0 ? uint8_t(std::clamp(round_int((x[i] - mf) / df), 0, nmax)) : 0;
}

template <class Block, bool kFifthBit>
void quantize_affine(const float* in, void* blocks, int64_t n, const float* importance, const char* name) {
  require_whole_blocks(n, kBlock, name);
  Block* out = static_cast<Block*>(blocks);
  const RowWeights weights(in, importance ? n : 0);
  for (int64_t ib = 0; ib < n / kBlock; ++ib) {
    const float* x = in + ib * kBlock;
    float w[kBlock];
    if (importance) weights.block(x, importance + ib * kBlock, kBlock, w);
    uint8_t q[kBlock];
    quantize_affine_block(x, importance ? w : nullptr, kFifthBit ? 31 : 15, out[ib].d, out[ib].m, q);
    if constexpr (kFifthBit) pack_levels(q, out[ib].qs, out[ib].qh);
    else pack_levels(q, out[ib].qs, nullptr);
  }
}

// ---- dot products --------------------------------------------------------------------

// sum_i (d q_i + m) (dy y_i) = d dy sum q y + m dy sum y.
template <class Block, bool kFifthBit>
float vec_dot_affine(const void* w, const void* a, int64_t n, const char* name) {
  require_whole_blocks(n, kBlock, name);
  const Block* x = static_cast<const Block*>(w);
  const BlockQ8_0* y = static_cast<const BlockQ8_0*>(a);
  float acc = 0;
  for (int64_t ib = 0; ib < n / kBlock; ++ib) {
    int q[kBlock];
    if constexpr (kFifthBit) unpack_levels(x[ib].qs, x[ib].qh, q);
    else unpack_levels(x[ib].qs, nullptr, q);
    int32_t sum_qy = 0, sum_y = 0;
    for (int i = 0; i < kBlock; ++i) {
      sum_qy += q[i] * int32_t(y[ib].qs[i]);
      sum_y += y[ib].qs[i];
    }
    const float dy = f16_to_f32(y[ib].d);
    acc += float(sum_qy) * (f16_to_f32(x[ib].d) * dy) + float(sum_y) * (f16_to_f32(x[ib].m) * dy);
  }
  return acc;
}

template <class Block, bool kFifthBit>
void dequantize_affine(const void* blocks, float* out, int64_t n, const char* name) {
  require_whole_blocks(n, kBlock, name);
  const Block* b = static_cast<const Block*>(blocks);
  for (int64_t ib = 0; ib < n / kBlock; ++ib, out += kBlock) {
    const float d = f16_to_f32(b[ib].d), m = f16_to_f32(b[ib].m);
    int q[kBlock];
    if constexpr (kFifthBit) unpack_levels(b[ib].qs, b[ib].qh, q);
    else unpack_levels(b[ib].qs, nullptr, q);
    for (int i = 0; i < kBlock; ++i) out[i] = float(q[i]) * d + m;
  }
}

}  // namespace

// ---- Q4_1 ------------------------------------------------------------------------

void dequantize_q4_1(const void* blocks, float* out, int64_t n) {
  dequantize_affine<BlockQ4_1, false>(blocks, out, n, "q4_1");
}
void quantize_q4_1(const float* in, void* blocks, int64_t n, const float* importance) {
  quantize_affine<BlockQ4_1, false>(in, blocks, n, importance, "q4_1");
}
float vec_dot_q4_1(const void* w, const void* a, int64_t n) {
  return vec_dot_affine<BlockQ4_1, false>(w, a, n, "q4_1");
}

// ---- Q5_1 ------------------------------------------------------------------------

void dequantize_q5_1(const void* blocks, float* out, int64_t n) {
  dequantize_affine<BlockQ5_1, true>(blocks, out, n, "q5_1");
}
void quantize_q5_1(const float* in, void* blocks, int64_t n, const float* importance) {
  quantize_affine<BlockQ5_1, true>(in, blocks, n, importance, "q5_1");
}
float vec_dot_q5_1(const void* w, const void* a, int64_t n) {
  return vec_dot_affine<BlockQ5_1, true>(w, a, n, "q5_1");
}

// ---- Q5_0 ------------------------------------------------------------------------

void dequantize_q5_0(const void* blocks, float* out, int64_t n) {
  require_whole_blocks(n, kBlock, "q5_0");
  const BlockQ5_0* b = static_cast<const BlockQ5_0*>(blocks);
  for (int64_t ib = 0; ib < n / kBlock; ++ib, out += kBlock) {
    const float d = f16_to_f32(b[ib].d);
    int q[kBlock];
    unpack_levels(b[ib].qs, b[ib].qh, q);
    for (int i = 0; i < kBlock; ++i) out[i] = float(q[i] - 16) * d;
  }
}

// As Q4_0 (quant/block_formats.cc) with levels -16..15: without importance ggml's
// reference scale, the value of largest magnitude at level -16 (the end with the extra
// step); with importance the weighted search. Levels under the stored d.
void quantize_q5_0(const float* in, void* blocks, int64_t n, const float* importance) {
  require_whole_blocks(n, kBlock, "q5_0");
  BlockQ5_0* out = static_cast<BlockQ5_0*>(blocks);
  const RowWeights weights(in, importance ? n : 0);
  for (int64_t ib = 0; ib < n / kBlock; ++ib) {
    const float* x = in + ib * kBlock;
    double d;
    if (importance) {
      float w[kBlock];
      weights.block(x, importance + ib * kBlock, kBlock, w);
      int8_t q[kBlock];
      d = scale_search::fit_signed(kBlock, 16, x, w, q, /*refine=*/true);
    } else {
      double amax = 0, max = 0;
      for (int i = 0; i < kBlock; ++i) {
        if (std::fabs(double(x[i])) > amax) {
          amax = std::fabs(double(x[i]));
          max = x[i];
        }
      }
      d = max / -16.0;
    }
    out[ib].d = f16_saturating(d);
    const double stored = f16_to_f32(out[ib].d);
    const double inv = stored != 0 ? 1 / stored : 0;
    uint8_t q[kBlock];
    for (int i = 0; i < kBlock; ++i) q[i] = uint8_t(std::clamp(round_int(x[i] * inv) + 16, 0, 31));
    pack_levels(q, out[ib].qs, out[ib].qh);
  }
}

float vec_dot_q5_0(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, kBlock, "q5_0");
  const BlockQ5_0* x = static_cast<const BlockQ5_0*>(w);
  const BlockQ8_0* y = static_cast<const BlockQ8_0*>(a);
  float acc = 0;
  for (int64_t ib = 0; ib < n / kBlock; ++ib) {
    int q[kBlock];
    unpack_levels(x[ib].qs, x[ib].qh, q);
    int32_t sum = 0;
    for (int i = 0; i < kBlock; ++i) sum += (q[i] - 16) * int32_t(y[ib].qs[i]);
    acc += float(sum) * (f16_to_f32(x[ib].d) * f16_to_f32(y[ib].d));
  }
  return acc;
}

}  // namespace hearth::legacy_quants

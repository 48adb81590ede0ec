// The BlockFormat table, the float formats, Q8_0, Q4_0 and the Q8_K activations. The
// K-quant weight formats live in quant/kquants.cc, Q4_1/Q5_0/Q5_1 in
// quant/legacy_quants.cc, IQ4_NL/IQ4_XS in quant/iq4.cc.
#include "quant/block_formats.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "quant/act_quant.h"
#include "quant/dot_simd.h"
#include "quant/iq4.h"
#include "quant/kquants.h"
#include "quant/legacy_quants.h"
#include "quant/numbers.h"
#include "quant/row_weights.h"
#include "quant/scale_search.h"

namespace hearth {

namespace kquants {

void throw_partial_blocks(int64_t n, int64_t block, const char* format) {
  throw std::invalid_argument(std::string(format) + ": row length " + std::to_string(n) +
                              " is not a multiple of the block size " + std::to_string(block));
}

}  // namespace kquants

namespace {

using kquants::require_whole_blocks;
using scale_search::RowWeights;
using scale_search::f16_saturating;
using scale_search::round_int;

// ---- float formats -------------------------------------------------------------
// One value per "block"; importance is meaningless here and ignored.

void dequantize_f32(const void* b, float* out, int64_t n) {
  require_whole_blocks(n, 1, "f32");
  std::memcpy(out, b, size_t(n) * sizeof(float));
}
void quantize_f32(const float* in, void* b, int64_t n, const float*) {
  require_whole_blocks(n, 1, "f32");
  std::memcpy(b, in, size_t(n) * sizeof(float));
}
float vec_dot_f32(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, 1, "f32");
  const float* x = static_cast<const float*>(w);
  const float* y = static_cast<const float*>(a);
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += double(x[i]) * y[i];
  return float(acc);
}

template <float (*Decode)(uint16_t), uint16_t (*Encode)(float)>
struct Half {
  static void dequantize(const void* b, float* out, int64_t n) {
    require_whole_blocks(n, 1, "16-bit float");
    const uint16_t* p = static_cast<const uint16_t*>(b);
    for (int64_t i = 0; i < n; ++i) out[i] = Decode(p[i]);
  }
  static void quantize(const float* in, void* b, int64_t n, const float*) {
    require_whole_blocks(n, 1, "16-bit float");
    uint16_t* p = static_cast<uint16_t*>(b);
    for (int64_t i = 0; i < n; ++i) p[i] = Encode(in[i]);
  }
  static float vec_dot(const void* w, const void* a, int64_t n) {
    require_whole_blocks(n, 1, "16-bit float");
    const uint16_t* x = static_cast<const uint16_t*>(w);
    const uint16_t* y = static_cast<const uint16_t*>(a);
    double acc = 0;
    for (int64_t i = 0; i < n; ++i) acc += double(Decode(x[i])) * Decode(y[i]);
    return float(acc);
  }
};
using F16 = Half<f16_to_f32, f32_to_f16>;
using BF16 = Half<bf16_to_f32, f32_to_bf16>;

// ---- Q8_0 ----------------------------------------------------------------------

void dequantize_q8_0(const void* blocks, float* out, int64_t n) {
  require_whole_blocks(n, kQK8_0, "q8_0");
  const BlockQ8_0* b = static_cast<const BlockQ8_0*>(blocks);
  for (int64_t ib = 0; ib < n / kQK8_0; ++ib, out += kQK8_0) {
    const float d = f16_to_f32(b[ib].d);
    for (int i = 0; i < kQK8_0; ++i) out[i] = float(b[ib].qs[i]) * d;
  }
}

// Stores scale d (saturated to f16) and the levels round(x / d) under the stored value,
// so the f16 rounding of d does not leak into the levels' choice more than necessary.
// ties_away (quantize_row_q8_0, the activations): halves away from zero, levels in
// -127..127 and NaN to -127; otherwise nearest even, -128..127.
void store_q8_0(const float* x, double d, BlockQ8_0& out, bool ties_away) {
  out.d = f16_saturating(d);
  const double stored = f16_to_f32(out.d);
  const double inv = stored != 0 ? 1 / stored : 0;
  for (int i = 0; i < kQK8_0; ++i) {
    const double v = x[i] * inv;
    if (ties_away) out.qs[i] = int8_t(std::isnan(v) ? -127 : std::clamp(std::round(v), -127.0, 127.0));
    else out.qs[i] = int8_t(std::clamp(round_int(v), -128, 127));
  }
}

void quantize_q8_0(const float* in, void* blocks, int64_t n, const float* importance) {
  require_whole_blocks(n, kQK8_0, "q8_0");
  BlockQ8_0* out = static_cast<BlockQ8_0*>(blocks);
  if (!importance) return quantize_row_q8_0(in, out, n);
  const RowWeights weights(in, n);
  for (int64_t ib = 0; ib < n / kQK8_0; ++ib) {
    const float* x = in + ib * kQK8_0;
    float w[kQK8_0];
    weights.block(x, importance + ib * kQK8_0, kQK8_0, w);
    int8_t q[kQK8_0];
    const double d = scale_search::fit_signed(kQK8_0, 128, x, w, q, /*refine=*/true);
    store_q8_0(x, d, out[ib], /*ties_away=*/false);
  }
}

float vec_dot_q8_0(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, kQK8_0, "q8_0");
  const BlockQ8_0* x = static_cast<const BlockQ8_0*>(w);
  const BlockQ8_0* y = static_cast<const BlockQ8_0*>(a);
  float acc = 0;
  for (int64_t ib = 0; ib < n / kQK8_0; ++ib) {
    int32_t sum = 0;
    for (int i = 0; i < kQK8_0; ++i) sum += int32_t(x[ib].qs[i]) * y[ib].qs[i];
    acc += float(sum) * (f16_to_f32(x[ib].d) * f16_to_f32(y[ib].d));
  }
  return acc;
}

// ---- Q4_0 ----------------------------------------------------------------------

// Value i of a Q4_0 block sits in byte i % 16, low nibble for i < 16, high nibble above.
void dequantize_q4_0(const void* blocks, float* out, int64_t n) {
  require_whole_blocks(n, kQK4_0, "q4_0");
  const BlockQ4_0* b = static_cast<const BlockQ4_0*>(blocks);
  constexpr int kHalf = kQK4_0 / 2;
  for (int64_t ib = 0; ib < n / kQK4_0; ++ib, out += kQK4_0) {
    const float d = f16_to_f32(b[ib].d);
    for (int j = 0; j < kHalf; ++j) {
      out[j] = float((b[ib].qs[j] & 0xf) - 8) * d;
      out[j + kHalf] = float((b[ib].qs[j] >> 4) - 8) * d;
    }
  }
}

void store_q4_0(const float* x, double d, BlockQ4_0& out) {
  out.d = f16_saturating(d);
  const double stored = f16_to_f32(out.d);
  const double inv = stored != 0 ? 1 / stored : 0;
  uint8_t l[kQK4_0];
  for (int i = 0; i < kQK4_0; ++i) l[i] = uint8_t(std::clamp(round_int(x[i] * inv) + 8, 0, 15));
  for (int j = 0; j < kQK4_0 / 2; ++j) out.qs[j] = uint8_t(l[j] | (l[j + kQK4_0 / 2] << 4));
}

void quantize_q4_0(const float* in, void* blocks, int64_t n, const float* importance) {
  require_whole_blocks(n, kQK4_0, "q4_0");
  BlockQ4_0* out = static_cast<BlockQ4_0*>(blocks);
  const RowWeights weights(in, importance ? n : 0);
  for (int64_t ib = 0; ib < n / kQK4_0; ++ib) {
    const float* x = in + ib * kQK4_0;
    double d;
    if (importance) {
      float w[kQK4_0];
      weights.block(x, importance + ib * kQK4_0, kQK4_0, w);
      int8_t q[kQK4_0];
      d = scale_search::fit_signed(kQK4_0, 8, x, w, q, /*refine=*/true);
    } else {
      // The value of largest magnitude goes to level -8, the end with the extra step.
      double amax = 0, max = 0;
      for (int i = 0; i < kQK4_0; ++i) {
        if (std::fabs(double(x[i])) > amax) {
          amax = std::fabs(double(x[i]));
          max = x[i];
        }
      }
      d = max / -8.0;
    }
    store_q4_0(x, d, out[ib]);
  }
}

float vec_dot_q4_0(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, kQK4_0, "q4_0");
  const BlockQ4_0* x = static_cast<const BlockQ4_0*>(w);
  const BlockQ8_0* y = static_cast<const BlockQ8_0*>(a);
  constexpr int kHalf = kQK4_0 / 2;
  float acc = 0;
  for (int64_t ib = 0; ib < n / kQK4_0; ++ib) {
    int32_t sum = 0;
    for (int j = 0; j < kHalf; ++j) {
      sum += ((x[ib].qs[j] & 0xf) - 8) * int32_t(y[ib].qs[j]);
      sum += ((x[ib].qs[j] >> 4) - 8) * int32_t(y[ib].qs[j + kHalf]);
    }
    acc += float(sum) * (f16_to_f32(x[ib].d) * f16_to_f32(y[ib].d));
  }
  return acc;
}

// ---- Q8_K ----------------------------------------------------------------------

void dequantize_q8_k(const void* blocks, float* out, int64_t n) {
  require_whole_blocks(n, kQK_K, "q8_K");
  const BlockQ8_K* b = static_cast<const BlockQ8_K*>(blocks);
  for (int64_t ib = 0; ib < n / kQK_K; ++ib, out += kQK_K)
    for (int i = 0; i < kQK_K; ++i) out[i] = b[ib].d * float(b[ib].qs[i]);
}

void quantize_q8_k(const float* in, void* blocks, int64_t n, const float*) {
  quantize_row_q8_k(in, static_cast<BlockQ8_K*>(blocks), n);
}

float vec_dot_q8_k(const void* w, const void* a, int64_t n) {
  require_whole_blocks(n, kQK_K, "q8_K");
  const BlockQ8_K* x = static_cast<const BlockQ8_K*>(w);
  const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
  float acc = 0;
  for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
    int32_t sum = 0;
    for (int i = 0; i < kQK_K; ++i) sum += int32_t(x[ib].qs[i]) * y[ib].qs[i];
    acc += float(sum) * (x[ib].d * y[ib].d);
  }
  return acc;
}

// ---- the table -------------------------------------------------------------------

constexpr BlockFormat kFormats[] = {
    {GgmlType::F32, "f32", 1, 4, dequantize_f32, quantize_f32, GgmlType::F32, vec_dot_f32,
     nullptr},
    {GgmlType::F16, "f16", 1, 2, F16::dequantize, F16::quantize, GgmlType::F16, F16::vec_dot,
     nullptr},
    {GgmlType::Q4_0, "q4_0", kQK4_0, sizeof(BlockQ4_0), dequantize_q4_0, quantize_q4_0,
     GgmlType::Q8_0, vec_dot_q4_0, dot_avx2::vec_dot_q4_0},
    {GgmlType::Q4_1, "q4_1", kQK4_1, sizeof(BlockQ4_1), legacy_quants::dequantize_q4_1,
     legacy_quants::quantize_q4_1, GgmlType::Q8_0, legacy_quants::vec_dot_q4_1, dot_avx2::vec_dot_q4_1},
    {GgmlType::Q5_0, "q5_0", kQK5_0, sizeof(BlockQ5_0), legacy_quants::dequantize_q5_0,
     legacy_quants::quantize_q5_0, GgmlType::Q8_0, legacy_quants::vec_dot_q5_0, dot_avx2::vec_dot_q5_0},
    {GgmlType::Q5_1, "q5_1", kQK5_1, sizeof(BlockQ5_1), legacy_quants::dequantize_q5_1,
     legacy_quants::quantize_q5_1, GgmlType::Q8_0, legacy_quants::vec_dot_q5_1, dot_avx2::vec_dot_q5_1},
    {GgmlType::Q8_0, "q8_0", kQK8_0, sizeof(BlockQ8_0), dequantize_q8_0, quantize_q8_0,
     GgmlType::Q8_0, vec_dot_q8_0, dot_avx2::vec_dot_q8_0},
    {GgmlType::Q2_K, "q2_K", kQK_K, sizeof(BlockQ2_K), kquants::dequantize_q2_k,
     kquants::quantize_q2_k, GgmlType::Q8_K, kquants::vec_dot_q2_k, dot_avx2::vec_dot_q2_k},
    {GgmlType::Q3_K, "q3_K", kQK_K, sizeof(BlockQ3_K), kquants::dequantize_q3_k,
     kquants::quantize_q3_k, GgmlType::Q8_K, kquants::vec_dot_q3_k, dot_avx2::vec_dot_q3_k},
    {GgmlType::Q4_K, "q4_K", kQK_K, sizeof(BlockQ4_K), kquants::dequantize_q4_k,
     kquants::quantize_q4_k, GgmlType::Q8_K, kquants::vec_dot_q4_k, dot_avx2::vec_dot_q4_k},
    {GgmlType::Q5_K, "q5_K", kQK_K, sizeof(BlockQ5_K), kquants::dequantize_q5_k,
     kquants::quantize_q5_k, GgmlType::Q8_K, kquants::vec_dot_q5_k, dot_avx2::vec_dot_q5_k},
    {GgmlType::Q6_K, "q6_K", kQK_K, sizeof(BlockQ6_K), kquants::dequantize_q6_k,
     kquants::quantize_q6_k, GgmlType::Q8_K, kquants::vec_dot_q6_k, dot_avx2::vec_dot_q6_k},
    {GgmlType::Q8_K, "q8_K", kQK_K, sizeof(BlockQ8_K), dequantize_q8_k, quantize_q8_k,
     GgmlType::Q8_K, vec_dot_q8_k, nullptr},
    {GgmlType::IQ4_NL, "iq4_nl", kQK4_NL, sizeof(BlockIQ4_NL), iq4::dequantize_iq4_nl, iq4::quantize_iq4_nl,
     GgmlType::Q8_0, iq4::vec_dot_iq4_nl, dot_avx2::vec_dot_iq4_nl},
    {GgmlType::IQ4_XS, "iq4_xs", kQK_K, sizeof(BlockIQ4_XS), iq4::dequantize_iq4_xs, iq4::quantize_iq4_xs,
     GgmlType::Q8_K, iq4::vec_dot_iq4_xs, dot_avx2::vec_dot_iq4_xs},
    {GgmlType::BF16, "bf16", 1, 2, BF16::dequantize, BF16::quantize, GgmlType::BF16,
     BF16::vec_dot, nullptr},
};

}  // namespace

int64_t BlockFormat::row_bytes(int64_t n) const {
  kquants::require_whole_blocks(n, block_elems, std::string(name).c_str());
  return n / block_elems * block_bytes;
}

std::span<const BlockFormat> block_formats() { return kFormats; }

const BlockFormat* find_block_format(std::string_view name) {
  for (const BlockFormat& f : kFormats)
    if (same_ignoring_case(f.name, name)) return &f;
  return nullptr;
}

const BlockFormat* find_block_format_by_id(uint32_t ggml_id) {
  for (const BlockFormat& f : kFormats)
    if (f.ggml_id() == ggml_id) return &f;
  return nullptr;
}

const BlockFormat& block_format(GgmlType type) {
  const BlockFormat* f = find_block_format_by_id(uint32_t(type));
  if (!f) throw std::invalid_argument("unknown ggml type id " + std::to_string(uint32_t(type)));
  return *f;
}

namespace {

// Which ggml type each hearth dtype is (FP8 with separate block scales has none).
constexpr std::pair<DType, GgmlType> kDTypeToGgml[] = {
    {DType::F32, GgmlType::F32},   {DType::F16, GgmlType::F16},   {DType::BF16, GgmlType::BF16},
    {DType::Q8_0, GgmlType::Q8_0}, {DType::Q4_0, GgmlType::Q4_0}, {DType::Q2_K, GgmlType::Q2_K},
    {DType::Q3_K, GgmlType::Q3_K}, {DType::Q4_K, GgmlType::Q4_K}, {DType::Q5_K, GgmlType::Q5_K},
    {DType::Q6_K, GgmlType::Q6_K}, {DType::Q4_1, GgmlType::Q4_1}, {DType::Q5_0, GgmlType::Q5_0},
    {DType::Q5_1, GgmlType::Q5_1}, {DType::IQ4_NL, GgmlType::IQ4_NL}, {DType::IQ4_XS, GgmlType::IQ4_XS},
};

}  // namespace

const BlockFormat* block_format_of(DType t) {
  for (const auto& [d, g] : kDTypeToGgml)
    if (d == t) return &block_format(g);
  return nullptr;
}

std::optional<DType> dtype_of(GgmlType type) {
  for (const auto& [d, g] : kDTypeToGgml)
    if (g == type) return d;
  return std::nullopt;
}

VecDotFn vec_dot_kernel(const BlockFormat& f, KernelIsa isa) {
  VecDotFn simd = nullptr;
  switch (resolve_isa(isa)) {
    case KernelIsa::kAvx512Bf16:  // no BF16 flavour: VNNI's
    case KernelIsa::kAvx512Vnni: simd = dot_avx512vnni_wide::row_kernel(f.type); break;
    case KernelIsa::kAvx512: simd = dot_avx512::row_kernel(f.type); break;
    case KernelIsa::kAvx2: simd = dot_avx2::row_kernel(f.type); break;
    default: break;
  }
  return simd ? simd : f.vec_dot;
}

namespace act_quant {

void q8_0_scalar(const float* in, BlockQ8_0* out, int64_t n) {
  for (int64_t ib = 0; ib < n / kQK8_0; ++ib) {
    const float* x = in + ib * kQK8_0;
    double amax = 0;
    for (int i = 0; i < kQK8_0; ++i) amax = std::max(amax, std::fabs(double(x[i])));
    store_q8_0(x, amax / 127.0, out[ib], /*ties_away=*/true);
  }
}

void q8_k_scalar(const float* in, BlockQ8_K* out, int64_t n) {
  for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
    const float* x = in + ib * kQK_K;
    BlockQ8_K& b = out[ib];
    double amax = 0, max = 0;
    for (int i = 0; i < kQK_K; ++i) {
      if (std::fabs(double(x[i])) > amax) {
        amax = std::fabs(double(x[i]));
        max = x[i];
      }
    }
    std::memset(&b, 0, sizeof b);
    if (amax == 0) continue;
    // The value of largest magnitude maps to -127; d is kept in float, so no rounding of
    // the scale to worry about.
    const double inv = -127.0 / max;
    for (int i = 0; i < kQK_K; ++i) b.qs[i] = int8_t(std::clamp(round_int(inv * x[i]), -128, 127));
    b.d = float(1 / inv);
    for (int j = 0; j < kQK_K / 16; ++j) {
      int sum = 0;
      for (int i = 0; i < 16; ++i) sum += b.qs[16 * j + i];
      b.bsums[j] = int16_t(sum);
    }
  }
}

}  // namespace act_quant

void quantize_row_q8_0(const float* in, BlockQ8_0* out, int64_t n) {
  require_whole_blocks(n, kQK8_0, "q8_0");
  if (has_avx2(resolve_isa(KernelIsa::kAuto))) act_quant::q8_0_avx2(in, out, n);
  else act_quant::q8_0_scalar(in, out, n);
}

void quantize_row_q8_k(const float* in, BlockQ8_K* out, int64_t n) {
  require_whole_blocks(n, kQK_K, "q8_K");
  if (has_avx2(resolve_isa(KernelIsa::kAuto))) act_quant::q8_k_avx2(in, out, n);
  else act_quant::q8_k_scalar(in, out, n);
}

}  // namespace hearth

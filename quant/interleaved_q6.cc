// Q6_K with sixteen rows interleaved (quant/interleaved.h, "Q6_K_R16"): building the
// layout, taking a row back out of it, the scalar reference of its dot product, and the
// kernel choice. Compiled with -ffp-contract=off (quant/CMakeLists.txt): the reference's
// d * a.d must stay a rounded product, as the kernels' vmulps is.
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "quant/interleaved.h"
#include "quant/interleaved_kernels.h"
#include "quant/kquants.h"
#include "quant/numbers.h"

namespace hearth {

namespace {

constexpr int kSubBlocks = kQK_K / 16;

// Where value v of row r (0..15) sits: the byte of its low bits and their nibble shift,
// the byte of its high bits and their bit shift (the header's formulas).
struct LevelAt {
  int ql, ql_shift, qh, qh_shift;
};
constexpr LevelAt x16_level(int r, int v) {
  const int s = v / 16, p = (v % 16) / 4, j = 4 * r + v % 4, u = s / 4;
  const int low = s % 4 < 2 ? 832 * u + 64 + 128 * p + j : 832 * u + 576 + 64 * p + j;
  return {low, 4 * (s % 2), 832 * u + 128 + 128 * p + j, 2 * (s % 4)};
}
constexpr int x16_scale(int r, int s) { return 832 * (s / 4) + 16 * (s % 4) + r; }

inline int level(const BlockQ6_Kx16& b, int r, int v) {
  const LevelAt at = x16_level(r, v);
  return ((b.q[at.ql] >> at.ql_shift) & 15) | ((b.q[at.qh] >> at.qh_shift) & 3) << 4;
}
inline int scale(const BlockQ6_Kx16& b, int r, int s) { return int8_t(b.q[x16_scale(r, s)]); }

// Q6_K's own packing (ggml's): in each half c of 128 values, value 128c + l + 32j (l <
// 32, j < 4) has its low bits in ql[64c + l + 32 (j % 2)] (the low nibble for j < 2, the
// high for j >= 2) and its high bits at bits 2j, 2j + 1 of qh[32c + l].
struct PlainAt {
  int ql, ql_shift, qh, qh_shift;
};
constexpr PlainAt plain_level(int v) {
  const int c = v / 128, l = v % 32, j = (v % 128) / 32;
  return {64 * c + l + 32 * (j % 2), 4 * (j / 2), 32 * c + l, 2 * j};
}

void check_q6_call(int tokens, int64_t n) {
  kquants::require_whole_blocks(n, kQK_K, "q6_K_r16");
  if (tokens < 1 || tokens > kMaxX16Tokens)
    throw std::invalid_argument("q6_K_r16: the dot product takes 1 to " + std::to_string(kMaxX16Tokens) +
                                " tokens, not " + std::to_string(tokens));
}

// The 256 levels of a Q6_K block in value order (plain_level for every v, a pass per
// half the compiler vectorizes).
void plain_levels(const BlockQ6_K& b, uint8_t q[kQK_K]) {
  for (int c = 0; c < 2; ++c) {
    const uint8_t* ql = b.ql + 64 * c;
    const uint8_t* qh = b.qh + 32 * c;
    uint8_t* y = q + 128 * c;
    for (int l = 0; l < 32; ++l) {
      y[l] = uint8_t((ql[l] & 15) | (qh[l] & 3) << 4);
      y[l + 32] = uint8_t((ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4);
      y[l + 64] = uint8_t((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4);
      y[l + 96] = uint8_t((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4);
    }
  }
}

}  // namespace

void interleaved_q6::check_call(int tokens, int64_t n) { check_q6_call(tokens, n); }

void interleave_q6_k_x16(const BlockQ6_K* const rows[kQ6UnitRows], int64_t nb, BlockQ6_Kx16* out) {
  constexpr uint32_t kLow = 0x0F0F0F0Fu, kTop = 0x03030303u;
  for (int64_t ib = 0; ib < nb; ++ib) {
    BlockQ6_Kx16& o = out[ib];
    for (int r = 0; r < kQ6UnitRows; ++r) {
      const BlockQ6_K& b = rows[r][ib];
      o.d[r] = b.d;
      for (int s = 0; s < kSubBlocks; ++s) o.q[x16_scale(r, s)] = uint8_t(b.scales[s]);
      uint8_t q[kQK_K];
      plain_levels(b, q);
      // Four values of each of sub-blocks 4u .. 4u + 3 at a time, as 32-bit words: the
      // header's three bytes per value, for values 4p .. 4p + 3 (bytes 4r .. 4r + 3). A
      // byte at a time this ran at about 0.1 GB/s on a load's two threads.
      for (int u = 0; u < 4; ++u)
        for (int p = 0; p < 4; ++p) {
          uint32_t lv[4];
          for (int k = 0; k < 4; ++k) std::memcpy(&lv[k], q + 16 * (4 * u + k) + 4 * p, 4);
          const uint32_t low01 = (lv[0] & kLow) | (lv[1] & kLow) << 4;
          const uint32_t low23 = (lv[2] & kLow) | (lv[3] & kLow) << 4;
          const uint32_t high = ((lv[0] >> 4) & kTop) | ((lv[1] >> 4) & kTop) << 2 | ((lv[2] >> 4) & kTop) << 4 |
                                ((lv[3] >> 4) & kTop) << 6;
          std::memcpy(o.q + 832 * u + 64 + 128 * p + 4 * r, &low01, 4);
          std::memcpy(o.q + 832 * u + 576 + 64 * p + 4 * r, &low23, 4);
          std::memcpy(o.q + 832 * u + 128 + 128 * p + 4 * r, &high, 4);
        }
    }
  }
}

void deinterleave_q6_k_x16(const BlockQ6_Kx16* unit, int64_t nb, int r, BlockQ6_K* out) {
  for (int64_t ib = 0; ib < nb; ++ib) {
    const BlockQ6_Kx16& b = unit[ib];
    BlockQ6_K o;
    std::memset(&o, 0, sizeof o);
    o.d = b.d[r];
    for (int s = 0; s < kSubBlocks; ++s) o.scales[s] = int8_t(scale(b, r, s));
    for (int v = 0; v < kQK_K; ++v) {
      const int q = level(b, r, v);
      const PlainAt to = plain_level(v);
      o.ql[to.ql] = uint8_t(o.ql[to.ql] | (q & 15) << to.ql_shift);
      o.qh[to.qh] = uint8_t(o.qh[to.qh] | (q >> 4) << to.qh_shift);
    }
    out[ib] = o;
  }
}

void vec_dot_q6_k_x16_scalar(const void* unit, const void* const* act, int tokens, int64_t n, float* out) {
  check_q6_call(tokens, n);
  const auto* x = static_cast<const BlockQ6_Kx16*>(unit);
  for (int t = 0; t < tokens; ++t) {
    const auto* y = static_cast<const BlockQ8_K*>(act[t]);
    float acc[kQ6UnitRows] = {};
    for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
      const BlockQ6_Kx16& b = x[ib];
      const BlockQ8_K& a = y[ib];
      for (int r = 0; r < kQ6UnitRows; ++r) {
        int32_t isum = 0;
        for (int s = 0; s < kSubBlocks; ++s) {
          // sum (q - 32) a, the offset through the activations' sum (as the kernel and
          // plain Q6_K's take it).
          int32_t sum = -32 * int32_t(a.bsums[s]);
          for (int v = 16 * s; v < 16 * (s + 1); ++v) sum += level(b, r, v) * a.qs[v];
          isum += scale(b, r, s) * sum;
        }
        acc[r] = std::fma(f16_to_f32(b.d[r]) * a.d, float(isum), acc[r]);
      }
    }
    std::memcpy(out + kQ6UnitRows * t, acc, sizeof acc);
  }
}

VecDotQ6Fn vec_dot_q6_k_x16_kernel(KernelIsa isa) {
  const KernelIsa resolved = resolve_isa(isa);
  if (has_vnni(resolved)) return interleaved_q6_vnni::vec_dot_q6_k_x16;
  if (has_avx512(resolved)) return interleaved_q6_avx512::vec_dot_q6_k_x16;
  return has_avx2(resolved) ? interleaved_q6_avx2::vec_dot_q6_k_x16 : vec_dot_q6_k_x16_scalar;
}

int q6_k_x16_tokens_per_call(KernelIsa isa) {
  const KernelIsa resolved = resolve_isa(isa);
  return has_avx2(resolved) && !has_avx512(resolved) ? 3 : kMaxX16Tokens;
}

}  // namespace hearth

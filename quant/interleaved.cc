// Q4_K with eight rows interleaved (quant/interleaved.h): building the layout, taking a
// row back out of it, the scalar reference of its dot product, and the kernel choice.
// Compiled with -ffp-contract=off (quant/CMakeLists.txt): the reference's d * a.d must
// stay a rounded product, as the AVX2 kernel's vmulps is, or the two would not agree bit
// for bit.
#include "quant/interleaved.h"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "quant/avx2_blocks.h"  // unpack_scale_min (plain C++, no AVX2 needed)
#include "quant/interleaved_kernels.h"
#include "quant/kquants.h"
#include "quant/numbers.h"

namespace hearth {

namespace {

constexpr int kSubBlocks = kQK_K / 32;

// Where value v (0..255) of row r sits in an interleaved block: byte qs[index], nibble
// `high`. Sub-block s = v / 32, and within it w = v % 32 = 4p + i (p < 4) in the low
// nibbles or 16 + 4p + i in the high nibbles of the 32 bytes at 128s + 32p.
struct NibbleAt {
  int index;
  int high;
};
constexpr NibbleAt x8_nibble(int r, int v) {
  const int s = v / 32, w = v % 32;
  return {128 * s + 32 * ((w / 4) % 4) + 4 * r + w % 4, w / 16};
}

inline int nibble(const uint8_t* qs, NibbleAt at) { return (qs[at.index] >> (4 * at.high)) & 15; }

// The 6-bit scale and min of sub-block s of row r in an interleaved block (the header's
// three formulas read backwards).
inline void x8_scale_min(const BlockQ4_Kx8& b, int s, int r, int& sc, int& m) {
  const int j = 8 * (s % 4) + r;
  const int shift = s < 4 ? 0 : 4;  // sub-blocks 4..7 take the high nibbles
  const int hi = b.scales[64 + j] >> (s < 4 ? 0 : 2);
  sc = ((b.scales[j] >> shift) & 15) | (hi & 3) << 4;
  m = ((b.scales[32 + j] >> shift) & 15) | ((hi >> 4) & 3) << 4;
}

}  // namespace

void interleaved_avx2::check_x8_call(int tokens, int64_t n, int max_tokens) {
  kquants::require_whole_blocks(n, kQK_K, "q4_K_r8");
  if (tokens < 1 || tokens > max_tokens)
    throw std::invalid_argument("q4_K_r8: the dot product takes 1 to " + std::to_string(max_tokens) + " tokens, not " +
                                std::to_string(tokens));
}

void interleave_q4_k_x8(const BlockQ4_K* const rows[kInterleavedRows], int64_t nb, BlockQ4_Kx8* out) {
  for (int64_t ib = 0; ib < nb; ++ib) {
    BlockQ4_Kx8& o = out[ib];
    for (int r = 0; r < kInterleavedRows; ++r) {
      const BlockQ4_K& b = rows[r][ib];
      o.d[r] = b.d;
      o.dmin[r] = b.dmin;
      uint64_t sc64, m64;
      avx2::unpack_scale_min(b.scales, sc64, m64);
      auto sc = [&](int s) { return int(sc64 >> (8 * s)) & 63; };
      auto m = [&](int s) { return int(m64 >> (8 * s)) & 63; };
      for (int s = 0; s < 4; ++s) {
        const int j = 8 * s + r;
        o.scales[j] = uint8_t((sc(s) & 15) | (sc(s + 4) & 15) << 4);
        o.scales[32 + j] = uint8_t((m(s) & 15) | (m(s + 4) & 15) << 4);
        o.scales[64 + j] = uint8_t(sc(s) >> 4 | (sc(s + 4) >> 4) << 2 | (m(s) >> 4) << 4 | (m(s + 4) >> 4) << 6);
      }
      // Sub-block s is nibble h = s % 2 of Q4_K's bytes 32c .. 32c + 31 (c = s / 2);
      // interleaved, its values w and 16 + w (w < 16) share a byte, and bytes w = 4p ..
      // 4p + 3 go to qs[128 s + 32 p + 4 r ..]. Eight bytes at a time in 64-bit words: a
      // load interleaves whole models, and byte by byte this ran at 0.3 GB/s per thread.
      constexpr uint64_t kLow = 0x0F0F0F0F0F0F0F0FULL;
      for (int s = 0; s < kSubBlocks; ++s) {
        const uint8_t* src = b.qs + 32 * (s / 2);
        const int h = 4 * (s % 2);
        for (int half = 0; half < 2; ++half) {  // values w = 8 half .. 8 half + 7
          uint64_t lo, hi;
          std::memcpy(&lo, src + 8 * half, 8);
          std::memcpy(&hi, src + 16 + 8 * half, 8);
          const uint64_t v = ((lo >> h) & kLow) | (((hi >> h) & kLow) << 4);
          std::memcpy(o.qs + 128 * s + 32 * (2 * half) + 4 * r, &v, 4);
          std::memcpy(o.qs + 128 * s + 32 * (2 * half + 1) + 4 * r, reinterpret_cast<const uint8_t*>(&v) + 4, 4);
        }
      }
    }
  }
}

void deinterleave_q4_k_x8(const BlockQ4_Kx8* group, int64_t nb, int r, BlockQ4_K* out) {
  for (int64_t ib = 0; ib < nb; ++ib) {
    const BlockQ4_Kx8& b = group[ib];
    BlockQ4_K& o = out[ib];
    o.d = b.d[r];
    o.dmin = b.dmin[r];
    // Q4_K's 12 bytes hold exactly the 96 bits of the eight 6-bit scales and mins (the
    // packing quant/block_formats.h describes), so packing what was unpacked gives the
    // original bytes back.
    int sc[kSubBlocks], m[kSubBlocks];
    for (int s = 0; s < kSubBlocks; ++s) x8_scale_min(b, s, r, sc[s], m[s]);
    for (int j = 0; j < 4; ++j) {
      o.scales[j] = uint8_t(sc[j] | (sc[j + 4] >> 4) << 6);
      o.scales[j + 4] = uint8_t(m[j] | (m[j + 4] >> 4) << 6);
      o.scales[j + 8] = uint8_t((sc[j + 4] & 15) | (m[j + 4] & 15) << 4);
    }
    // The byte-wise inverse of interleave_q4_k_x8's.
    std::memset(o.qs, 0, sizeof o.qs);
    for (int s = 0; s < kSubBlocks; ++s) {
      uint8_t* dst = o.qs + 32 * (s / 2);
      const int h = 4 * (s % 2);
      for (int w = 0; w < 16; ++w) {
        const uint8_t byte = b.qs[128 * s + 32 * (w / 4) + 4 * r + w % 4];
        dst[w] = uint8_t(dst[w] | (byte & 15) << h);
        dst[16 + w] = uint8_t(dst[16 + w] | (byte >> 4) << h);
      }
    }
  }
}

void vec_dot_q4_k_x8_scalar(const void* group, const void* const* act, int tokens, int64_t n, float* out) {
  interleaved_avx2::check_x8_call(tokens, n);
  const auto* x = static_cast<const BlockQ4_Kx8*>(group);
  for (int t = 0; t < tokens; ++t) {
    const auto* y = static_cast<const BlockQ8_K*>(act[t]);
    float acc[kInterleavedRows] = {};
    for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
      const BlockQ4_Kx8& b = x[ib];
      const BlockQ8_K& a = y[ib];
      for (int r = 0; r < kInterleavedRows; ++r) {
        int32_t isum = 0, imin = 0;
        for (int s = 0; s < kSubBlocks; ++s) {
          int sc, m;
          x8_scale_min(b, s, r, sc, m);
          int32_t sum = 0;
          for (int v = 32 * s; v < 32 * (s + 1); ++v) sum += nibble(b.qs, x8_nibble(r, v)) * a.qs[v];
          isum += sc * sum;
          imin += m * (int32_t(a.bsums[2 * s]) + a.bsums[2 * s + 1]);
        }
        // The header's two float steps, in this order; the AVX2 kernel does the same
        // with vmulps and vfmadd / vfnmadd (fnmadd negates the product exactly, as the
        // unary minus here does).
        acc[r] = std::fma(f16_to_f32(b.d[r]) * a.d, float(isum), acc[r]);
        acc[r] = std::fma(-(f16_to_f32(b.dmin[r]) * a.d), float(imin), acc[r]);
      }
    }
    std::memcpy(out + kInterleavedRows * t, acc, sizeof acc);
  }
}

VecDotX8Fn vec_dot_q4_k_x8_kernel(KernelIsa isa) {
  const KernelIsa resolved = resolve_isa(isa);
  if (has_vnni(resolved)) return interleaved_vnni256::vec_dot_q4_k_x8;
  return has_avx2(resolved) ? interleaved_avx2::vec_dot_q4_k_x8 : vec_dot_q4_k_x8_scalar;
}

VecDotX16Fn vec_dot_q4_k_x16_kernel(KernelIsa isa) {
  const KernelIsa resolved = resolve_isa(isa);
  if (has_vnni(resolved)) return interleaved_avx512vnni::vec_dot_q4_k_x16;
  return has_avx512(resolved) ? interleaved_avx512::vec_dot_q4_k_x16 : nullptr;
}

}  // namespace hearth

// Test helpers: rows of weight blocks and of activation blocks in any ggml format, with
// chosen or random quant bytes and f16 factors, for kernel-against-reference tests.
#pragma once
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "quant/block_formats.h"
#include "quant/numbers.h"

namespace hearth::testing {

// Byte offsets of a weight block's f16 factors: [0] multiplies the levels, [1] (or -1)
// the mins (Q4_1/Q5_1: the offset m).
struct Factors {
  int d, dmin;
};
inline Factors factors(GgmlType t) {
  switch (t) {
    case GgmlType::Q8_0: return {int(offsetof(BlockQ8_0, d)), -1};
    case GgmlType::Q4_0: return {int(offsetof(BlockQ4_0, d)), -1};
    case GgmlType::Q4_1: return {int(offsetof(BlockQ4_1, d)), int(offsetof(BlockQ4_1, m))};
    case GgmlType::Q5_0: return {int(offsetof(BlockQ5_0, d)), -1};
    case GgmlType::Q5_1: return {int(offsetof(BlockQ5_1, d)), int(offsetof(BlockQ5_1, m))};
    case GgmlType::IQ4_NL: return {int(offsetof(BlockIQ4_NL, d)), -1};
    case GgmlType::IQ4_XS: return {int(offsetof(BlockIQ4_XS, d)), -1};
    case GgmlType::Q2_K: return {int(offsetof(BlockQ2_K, d)), int(offsetof(BlockQ2_K, dmin))};
    case GgmlType::Q3_K: return {int(offsetof(BlockQ3_K, d)), -1};
    case GgmlType::Q4_K: return {int(offsetof(BlockQ4_K, d)), int(offsetof(BlockQ4_K, dmin))};
    case GgmlType::Q5_K: return {int(offsetof(BlockQ5_K, d)), int(offsetof(BlockQ5_K, dmin))};
    case GgmlType::Q6_K: return {int(offsetof(BlockQ6_K, d)), -1};
    default: return {-1, -1};
  }
}

inline void put_half(uint8_t* p, uint16_t h) { std::memcpy(p, &h, 2); }

// The formats that have SIMD dot products (quant/dot_simd.h), and those of them that have
// tile kernels (quant/dot_tiles.h).
inline constexpr GgmlType kSimdFormats[] = {GgmlType::Q8_0, GgmlType::Q4_0,   GgmlType::Q4_1, GgmlType::Q5_0,
                                            GgmlType::Q5_1, GgmlType::IQ4_NL, GgmlType::Q2_K, GgmlType::Q3_K,
                                            GgmlType::Q4_K, GgmlType::Q5_K,   GgmlType::Q6_K, GgmlType::IQ4_XS};
inline constexpr GgmlType kTiledFormats[] = {GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

// A float's bits, for checks that two kernels agree exactly.
inline uint32_t float_bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  return b;
}

inline uint16_t finite_half(std::mt19937& rng) {
  uint16_t h = uint16_t(rng());
  if (((h >> 10) & 31) == 31) h = uint16_t(h & ~0x4000);
  return h;
}

// A row of nblocks weight blocks: quant bytes from `fill` (random where fill < 0), every
// f16 factor from `half` (random finite where half < 0).
inline std::vector<uint8_t> weight_row(const BlockFormat& f, int nblocks, std::mt19937& rng, int fill = -1,
                                int half = -1) {
  std::vector<uint8_t> b(size_t(nblocks * f.block_bytes));
  for (uint8_t& v : b) v = fill < 0 ? uint8_t(rng()) : uint8_t(fill);
  const Factors fa = factors(f.type);
  for (int ib = 0; ib < nblocks; ++ib) {
    uint8_t* blk = b.data() + ib * f.block_bytes;
    for (int off : {fa.d, fa.dmin})
      if (off >= 0) put_half(blk + off, half < 0 ? finite_half(rng) : uint16_t(half));
  }
  return b;
}

// The lowest activation quant f's kernels take: -127 for Q8_0 weights (their sign trick,
// quant/dot_kernels.inc; quantize_row_q8_0 writes -127..127), -128 for the others.
inline int lowest_act_quant(const BlockFormat& f) { return f.type == GgmlType::Q8_0 ? -127 : -128; }

// Activations in f's vec_dot_type: quants from `quant` (random in lowest_act_quant(f)..127
// where quant == kRandom), scales from `scale` (random where NaN); Q8_K bsums filled in.
inline constexpr int kRandom = 1000;
inline std::vector<uint8_t> act_row(const BlockFormat& f, int64_t n, std::mt19937& rng, int quant = kRandom,
                             float scale = NAN) {
  const BlockFormat& act = block_format(f.vec_dot_type);
  std::vector<uint8_t> b(size_t(act.row_bytes(n)));
  const int lowest = lowest_act_quant(f);
  auto q = [&] { return int8_t(quant == kRandom ? lowest + int(rng() % unsigned(128 - lowest)) : quant); };
  if (act.type == GgmlType::Q8_0) {
    auto* blk = reinterpret_cast<BlockQ8_0*>(b.data());
    for (int64_t ib = 0; ib < n / kQK8_0; ++ib) {
      blk[ib].d = std::isnan(scale) ? finite_half(rng) : f32_to_f16(scale);
      for (int8_t& v : blk[ib].qs) v = q();
    }
  } else {
    REQUIRE(act.type == GgmlType::Q8_K);
    auto* blk = reinterpret_cast<BlockQ8_K*>(b.data());
    for (int64_t ib = 0; ib < n / kQK_K; ++ib) {
      blk[ib].d = std::isnan(scale)
                      ? float(std::ldexp(double(rng() % 2000) - 1000.0, int(rng() % 40) - 30))
                      : scale;
      for (int8_t& v : blk[ib].qs) v = q();
      for (int j = 0; j < kQK_K / 16; ++j) {
        int s = 0;
        for (int i = 0; i < 16; ++i) s += blk[ib].qs[16 * j + i];
        blk[ib].bsums[j] = int16_t(s);
      }
    }
  }
  return b;
}

// Activation rows for tile tests, as a tile takes them (up to four): the ends of the
// quant range with extreme scales, zero, and random.
using ActRows4 = std::array<std::vector<uint8_t>, 4>;
inline ActRows4 extreme_act_rows(const BlockFormat& f, int64_t n, std::mt19937& rng) {
  return {act_row(f, n, rng, lowest_act_quant(f), 3.0e4f), act_row(f, n, rng, 127, 1e-7f), act_row(f, n, rng, 0, 1.0f),
          act_row(f, n, rng)};
}
inline ActRows4 random_act_rows(const BlockFormat& f, int64_t n, std::mt19937& rng) {
  return {act_row(f, n, rng), act_row(f, n, rng), act_row(f, n, rng), act_row(f, n, rng)};
}

// Calls fn(w, a, n) for rows of 1 and 3 blocks of f over every combination of adversarial
// weight blocks and activations: quant bytes zero, all bits set, sign bits only, all but
// the sign, alternating bits, random; f16 factors largest finite (both signs), smallest and
// largest subnormal, smallest normal, one, negative zero, random; activation quants at the
// ends, zero, random; activation scales large, tiny, subnormal (in Q8_K; Q8_0's go
// through f16), negative, random. Returns the number of calls.
template <class Fn>
int for_each_adversarial_row(const BlockFormat& f, std::mt19937& rng, Fn&& fn) {
  const int fills[] = {0x00, 0xFF, 0x80, 0x7F, 0x55, 0xAA, -1};
  const int halves[] = {0x7BFF, 0xFBFF, 0x0001, 0x03FF, 0x0400, 0x3C00, 0x8000, -1};
  const int quants[] = {127, -127, lowest_act_quant(f), 0, kRandom};
  const float scales[] = {1.0f, 3.0e4f, 1e-7f, 1e-40f, -2.5f, NAN};
  int calls = 0;
  for (int nblocks : {1, 3}) {
    const int64_t n = nblocks * f.block_elems;
    for (int fill : fills)
      for (int half : halves)
        for (int quant : quants)
          for (float scale : scales) {
            const std::vector<uint8_t> w = weight_row(f, nblocks, rng, fill, half);
            const std::vector<uint8_t> a = act_row(f, n, rng, quant, scale);
            fn(w, a, n);
            ++calls;
          }
  }
  return calls;
}

}  // namespace hearth::testing

// Q6_K with sixteen rows interleaved (quant/interleaved.h, Q6_K_R16): the layout against
// the header's formulas and back, the scalar reference against a double-precision dot
// product from Q6_K's documented layout and against plain Q6_K's kernel, and the SIMD
// kernels (AVX2, AVX-512 F/BW and VNNI) against the scalar reference bit for bit, on
// random and adversarial blocks and for every token count.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "quant/block_formats.h"
#include "quant/interleaved.h"
#include "quant/numbers.h"
#include "quant/weight_matrix.h"
#include "support/block_rows.h"

namespace quant_interleaved_q6_suite {

using namespace hearth;
using namespace hearth::testing;

namespace {

constexpr int kRows = kQ6UnitRows;

// Q6_K by ggml's layout (quant/block_formats.h), independent of the library: the 6-bit
// level of value v. In each half c of 128 values, value 128c + 32j + l (j < 4, l < 32)
// has its low four bits in ql[64c + 32 (j % 2) + l] (low nibble for j < 2, high for
// j >= 2) and its top two at bits 2j of qh[32c + l].
int q6_level(const BlockQ6_K& b, int v) {
  const int c = v / 128, j = (v % 128) / 32, l = v % 32;
  const int low = (b.ql[64 * c + 32 * (j % 2) + l] >> (4 * (j / 2))) & 15;
  const int high = (b.qh[32 * c + l] >> (2 * j)) & 3;
  return low | high << 4;
}

// The level of value v of row r (0..15) of an interleaved block, and the scale of its
// sub-block s, by the header's formulas.
int x16_level(const BlockQ6_Kx16& b, int r, int v) {
  const int s = v / 16, p = (v % 16) / 4, i = v % 4, u = s / 4, j = 4 * r + i;
  const int low_at = s % 4 < 2 ? 832 * u + 64 + 128 * p + j : 832 * u + 576 + 64 * p + j;
  const int high_at = 832 * u + 128 + 128 * p + j;
  return ((b.q[low_at] >> (4 * (s % 2))) & 15) | ((b.q[high_at] >> (2 * (s % 4))) & 3) << 4;
}
int x16_scale(const BlockQ6_Kx16& b, int r, int s) { return int8_t(b.q[832 * (s / 4) + 16 * (s % 4) + r]); }

// Sixteen Q6_K rows and their unit (nb interleaved blocks).
struct Group {
  int64_t nb = 0;
  std::vector<BlockQ6_K> rows[kRows];
  std::vector<BlockQ6_Kx16> x16;

  void interleave() {
    const BlockQ6_K* ptrs[kRows];
    for (int r = 0; r < kRows; ++r) ptrs[r] = rows[r].data();
    x16.assign(size_t(nb), BlockQ6_Kx16{});
    interleave_q6_k_x16(ptrs, nb, x16.data());
  }
};

// A unit whose row r is the Q6_K bytes `bytes(r)` (each nb * 210 bytes).
template <class Bytes>
Group group_of(int64_t nb, Bytes&& bytes) {
  Group g;
  g.nb = nb;
  for (int r = 0; r < kRows; ++r) {
    const std::vector<uint8_t> b = bytes(r);
    REQUIRE(b.size() == size_t(nb) * sizeof(BlockQ6_K));
    g.rows[r].resize(size_t(nb));
    std::memcpy(g.rows[r].data(), b.data(), b.size());
  }
  g.interleave();
  return g;
}

const BlockFormat& q6() { return block_format(GgmlType::Q6_K); }

Group random_group(int64_t nb, std::mt19937& rng) {
  return group_of(nb, [&](int) { return weight_row(q6(), int(nb), rng); });
}

std::vector<uint8_t> quantized_activations(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = gauss(rng);
  std::vector<uint8_t> a(size_t(row_bytes(GgmlType::Q8_K, n)));
  quantize_row_q8_k(x.data(), reinterpret_cast<BlockQ8_K*>(a.data()), n);
  return a;
}

// Runs a kernel on a unit against `tokens` activation rows: out[16t + r].
std::vector<float> run(VecDotQ6Fn fn, const Group& g, const std::vector<std::vector<uint8_t>>& acts, int tokens) {
  const void* a[kMaxX16Tokens] = {};
  for (int t = 0; t < tokens; ++t) a[t] = acts[size_t(t)].data();
  std::vector<float> out(size_t(kRows * tokens), -1.0f);
  fn(g.x16.data(), a, tokens, g.nb * kQK_K, out.data());
  return out;
}

// The kernels under test: the levels of {kAvx2, kAvx512, kAvx512Vnni} the CPU has (a
// MESSAGE names those it lacks).
std::vector<KernelIsa> kernel_levels() {
  std::vector<KernelIsa> levels;
  for (KernelIsa level : {KernelIsa::kAvx2, KernelIsa::kAvx512, KernelIsa::kAvx512Vnni}) {
    if (cpu_isa() >= level) {
      levels.push_back(level);
      continue;
    }
    const std::string why = std::string("CPU lacks ") + isa_name(level) + ": its Q6_K_R16 kernel is not tested";
    MESSAGE(why);
  }
  return levels;
}

// Where the kernel of `level` and the reference differ for tokens 1..kMaxX16Tokens: the
// number of calls whose floats differ in any bit.
int mismatches(KernelIsa level, const Group& g, const std::vector<std::vector<uint8_t>>& acts) {
  const VecDotQ6Fn kernel = vec_dot_q6_k_x16_kernel(level);
  REQUIRE((kernel != vec_dot_q6_k_x16_scalar));  // not capped away by limit_isa()
  int bad = 0;
  for (int tokens = 1; tokens <= kMaxX16Tokens; ++tokens) {
    const std::vector<float> want = run(vec_dot_q6_k_x16_scalar, g, acts, tokens);
    const std::vector<float> got = run(kernel, g, acts, tokens);
    if (std::memcmp(want.data(), got.data(), want.size() * sizeof(float)) != 0) {
      for (size_t i = 0; i < want.size(); ++i)
        if (float_bits(want[i]) != float_bits(got[i])) {
          CAPTURE(g.nb);
          CAPTURE(tokens);
          CAPTURE(i);
          CAPTURE(want[i]);
          CAPTURE(got[i]);
          FAIL_CHECK("the Q6_K_R16 kernel and the scalar reference differ");
          break;
        }
      ++bad;
    }
  }
  return bad;
}

}  // namespace

TEST_CASE("interleaved q6_K_r16: the layout follows the header and deinterleaving gives back each row byte for byte") {
  std::mt19937 rng(91);
  for (int64_t nb : {1, 3}) {
    const Group g = random_group(nb, rng);
    for (int r = 0; r < kRows; ++r) {
      CAPTURE(r);
      for (int64_t ib = 0; ib < nb; ++ib) {
        const BlockQ6_K& b = g.rows[r][size_t(ib)];
        const BlockQ6_Kx16& x = g.x16[size_t(ib)];
        CHECK(x.d[r] == b.d);
        int bad = 0;
        for (int s = 0; s < 16; ++s) bad += x16_scale(x, r, s) != b.scales[s];
        for (int v = 0; v < kQK_K; ++v) bad += x16_level(x, r, v) != q6_level(b, v);
        CHECK(bad == 0);
      }
      std::vector<BlockQ6_K> back(static_cast<size_t>(nb));
      deinterleave_q6_k_x16(g.x16.data(), nb, r, back.data());
      CHECK(std::memcmp(back.data(), g.rows[r].data(), size_t(nb) * sizeof(BlockQ6_K)) == 0);
    }
  }
}

TEST_CASE("interleaved q6_K_r16: the scalar reference agrees with a double-precision sum and with plain Q6_K") {
  std::mt19937 rng(92);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  for (int64_t nb : {1, 4, 28}) {
    const int64_t n = nb * kQK_K;
    CAPTURE(n);
    for (int kind = 0; kind < 2; ++kind) {
      CAPTURE(kind);  // 0: rows quantized from Gaussian values, 1: random bytes
      const Group g = group_of(nb, [&](int) {
        if (kind == 1) return weight_row(q6(), int(nb), rng);
        std::vector<float> x(static_cast<size_t>(n));
        for (float& v : x) v = gauss(rng);
        std::vector<uint8_t> b(size_t(q6().row_bytes(n)));
        q6().quantize_row(x.data(), b.data(), n, nullptr);
        return b;
      });
      const std::vector<uint8_t> act = quantized_activations(n, rng);
      const auto* a = reinterpret_cast<const BlockQ8_K*>(act.data());
      const std::vector<float> out = run(vec_dot_q6_k_x16_scalar, g, {act}, 1);
      for (int r = 0; r < kRows; ++r) {
        CAPTURE(r);
        // sum_v d sc (q - 32) * a.d a.qs, in double, from the plain block's bytes.
        double dot = 0, magnitude = 0;
        for (int64_t ib = 0; ib < nb; ++ib) {
          const BlockQ6_K& b = g.rows[r][size_t(ib)];
          for (int v = 0; v < kQK_K; ++v) {
            const double term = double(f16_to_f32(b.d)) * b.scales[v / 16] * (q6_level(b, v) - 32) *
                                double(a[ib].d) * a[ib].qs[v];
            dot += term;
            magnitude += std::fabs(term);
          }
        }
        const float plain = q6().vec_dot(g.rows[r].data(), act.data(), n);
        CHECK(magnitude > 0);  // not vacuous
        CHECK(std::fabs(double(out[size_t(r)]) - dot) <= 1e-5 * magnitude);
        CHECK(std::fabs(double(out[size_t(r)]) - double(plain)) <= 1e-5 * magnitude);
      }
    }
  }
}

TEST_CASE("interleaved q6_K_r16: the SIMD kernels give the scalar reference's floats bit for bit") {
  for (KernelIsa level : kernel_levels()) {
    const std::string level_name = isa_name(level);
    CAPTURE(level_name);
    std::mt19937 rng(93);
    const BlockFormat& f = q6();
    int bad = 0, cases = 0;
    // Random groups against quantized and random activations, several lengths.
    for (int64_t nb : {1, 2, 8}) {
      for (int rep = 0; rep < 8; ++rep) {
        const int64_t n = nb * kQK_K;
        const Group g = random_group(nb, rng);
        std::vector<std::vector<uint8_t>> acts;
        for (int t = 0; t < kMaxX16Tokens; ++t)
          acts.push_back(t % 2 == 0 ? quantized_activations(n, rng) : act_row(f, n, rng));
        bad += mismatches(level, g, acts);
        ++cases;
      }
    }
    // Adversarial weights: quant bytes zero, all set (levels 63, scales -1), sign bits
    // (scales -128), all but the sign (levels 63 with scales 127), alternating, random;
    // f16 factors largest finite of both signs, subnormal, one, negative zero, random.
    // Rows alike, or mixed (row r takes the next fill and factor). Activations: quants
    // -128, 127, zero and random with large, tiny, subnormal and negative scales.
    const int fills[] = {0x00, 0xFF, 0x80, 0x7F, 0x55, -1};
    const int halves[] = {0x7BFF, 0xFBFF, 0x0001, 0x3C00, 0x8000, -1};
    for (int64_t nb : {1, 3}) {
      const int64_t n = nb * kQK_K;
      std::vector<std::vector<uint8_t>> acts = {act_row(f, n, rng, -128, 3.0e4f), act_row(f, n, rng, 127, 1e-7f),
                                                act_row(f, n, rng, 0, 1.0f),      act_row(f, n, rng, kRandom, 1e-40f),
                                                act_row(f, n, rng, -128, -2.5f),  act_row(f, n, rng)};
      for (int mixed = 0; mixed < 2; ++mixed)
        for (int fi = 0; fi < 6; ++fi)
          for (int hi = 0; hi < 6; ++hi) {
            const Group g = group_of(nb, [&](int r) {
              const int k = mixed ? (fi + r) % 6 : fi, h = mixed ? (hi + r) % 6 : hi;
              return weight_row(f, int(nb), rng, fills[k], halves[h]);
            });
            bad += mismatches(level, g, acts);
            ++cases;
          }
    }
    CHECK(cases == 24 + 144);
    CHECK(bad == 0);
    // A known answer through the kernel: every byte 0x7F, d 1, activations all 127 with
    // d 1. Scales are 127; in each half of a block, values 32j .. 32j + 31 take low bits 15
    // (j < 2, low nibbles) or 7 (high nibbles) and high bits 3 (j < 3) or 1 (bits 6, 7 of
    // 0x7F): levels 63, 63, 55, 23, values 31, 31, 23, -9. Per block 2 * 32 * 76 * 127 * 127
    // (exact in a float, as is twice that).
    const Group g = group_of(2, [&](int) { return weight_row(f, 2, rng, 0x7F, 0x3C00); });
    const std::vector<std::vector<uint8_t>> ones = {act_row(f, 2 * kQK_K, rng, 127, 1.0f)};
    const float want = 2.0f * (2 * 32 * 76 * 127 * 127);
    const std::vector<float> got = run(vec_dot_q6_k_x16_kernel(level), g, ones, 1);
    for (int r = 0; r < kRows; ++r) CHECK(got[size_t(r)] == want);
  }
}

TEST_CASE("interleaved q6_K_r16: kernel choice, argument checks, and a token's result alone or in company") {
  CHECK((vec_dot_q6_k_x16_kernel(KernelIsa::kScalar) == vec_dot_q6_k_x16_scalar));
  CHECK((vec_dot_q6_k_x16_kernel(KernelIsa::kAvx2) != vec_dot_q6_k_x16_scalar) == has_avx2(best_isa()));
  CHECK((vec_dot_q6_k_x16_kernel() != vec_dot_q6_k_x16_scalar) == has_avx2(best_isa()));
  // Each level has its own kernel; AVX2's takes three tokens per call, the others six.
  if (has_avx512(best_isa()))
    CHECK((vec_dot_q6_k_x16_kernel(KernelIsa::kAvx512) != vec_dot_q6_k_x16_kernel(KernelIsa::kAvx2)));
  if (has_vnni(best_isa()))
    CHECK((vec_dot_q6_k_x16_kernel(KernelIsa::kAvx512Vnni) != vec_dot_q6_k_x16_kernel(KernelIsa::kAvx512)));
  CHECK(q6_k_x16_tokens_per_call(KernelIsa::kScalar) == kMaxX16Tokens);
  if (has_avx2(best_isa())) CHECK(q6_k_x16_tokens_per_call(KernelIsa::kAvx2) == 3);
  if (has_avx512(best_isa())) CHECK(q6_k_x16_tokens_per_call(KernelIsa::kAvx512) == kMaxX16Tokens);
  std::mt19937 rng(94);
  const Group g = random_group(2, rng);
  const int64_t n = 2 * kQK_K;
  std::vector<std::vector<uint8_t>> acts;
  for (int t = 0; t < kMaxX16Tokens; ++t) acts.push_back(quantized_activations(n, rng));
  const void* a[kMaxX16Tokens + 1];
  for (int t = 0; t <= kMaxX16Tokens; ++t) a[t] = acts[size_t(t % kMaxX16Tokens)].data();
  float out[(kMaxX16Tokens + 1) * kRows];
  for (VecDotQ6Fn fn : {vec_dot_q6_k_x16_scalar, vec_dot_q6_k_x16_kernel()}) {
    const bool scalar = fn == vec_dot_q6_k_x16_scalar;
    CAPTURE(scalar);
    CHECK_THROWS_AS(fn(g.x16.data(), a, 1, 100, out), std::invalid_argument);
    CHECK_THROWS_AS(fn(g.x16.data(), a, 1, kQK_K + 32, out), std::invalid_argument);
    CHECK_THROWS_AS(fn(g.x16.data(), a, 0, kQK_K, out), std::invalid_argument);
    CHECK_THROWS_AS(fn(g.x16.data(), a, kMaxX16Tokens + 1, kQK_K, out), std::invalid_argument);
    // Each token alone gives the bits it gets among kMaxX16Tokens.
    const std::vector<float> all = run(fn, g, acts, kMaxX16Tokens);
    for (int t = 0; t < kMaxX16Tokens; ++t) {
      CAPTURE(t);
      const std::vector<float> alone = run(fn, g, {acts[size_t(t)]}, 1);
      CHECK(std::memcmp(alone.data(), all.data() + kRows * t, sizeof(float) * kRows) == 0);
    }
  }
}

}  // namespace quant_interleaved_q6_suite

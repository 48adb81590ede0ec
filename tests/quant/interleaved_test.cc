// Q4_K with eight rows interleaved (quant/interleaved.h): the layout against the header's
// formulas and back, the scalar reference against a hand-computed answer and against
// plain Q4_K's dot product, and the AVX2 kernel against the scalar reference bit for bit
// on random and adversarial blocks.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "quant/block_formats.h"
#include "quant/interleaved.h"
#include "quant/numbers.h"
#include "quant/weight_matrix.h"
#include "support/block_rows.h"

namespace quant_interleaved_suite {

using namespace hearth;
using namespace hearth::testing;

namespace {

constexpr int kRows = kInterleavedRows;

// Eight Q4_K rows of nb blocks each, kept as separate vectors (as a matrix's rows are
// separate memory), and their interleaved group.
struct Group {
  int64_t nb = 0;
  std::vector<BlockQ4_K> rows[kRows];
  std::vector<BlockQ4_Kx8> x8;

  void interleave() {
    const BlockQ4_K* ptrs[kRows];
    for (int r = 0; r < kRows; ++r) ptrs[r] = rows[r].data();
    x8.assign(size_t(nb), BlockQ4_Kx8{});
    interleave_q4_k_x8(ptrs, nb, x8.data());
  }
};

// A group whose row r is the Q4_K bytes `bytes(r)` (each nb * 144 bytes).
template <class Bytes>
Group group_of(int64_t nb, Bytes&& bytes) {
  Group g;
  g.nb = nb;
  for (int r = 0; r < kRows; ++r) {
    const std::vector<uint8_t> b = bytes(r);
    REQUIRE(b.size() == size_t(nb) * sizeof(BlockQ4_K));
    g.rows[r].resize(size_t(nb));
    std::memcpy(g.rows[r].data(), b.data(), b.size());
  }
  g.interleave();
  return g;
}

Group random_group(int64_t nb, std::mt19937& rng) {
  const BlockFormat& f = block_format(GgmlType::Q4_K);
  return group_of(nb, [&](int) { return weight_row(f, int(nb), rng); });
}

// ---- Q4_K by its documented layout (quant/block_formats.h), independent of the library.

// The 6-bit scale and min of sub-block j.
void q4_k_scale_min(const BlockQ4_K& b, int j, int& sc, int& m) {
  if (j < 4) {
    sc = b.scales[j] & 63;
    m = b.scales[j + 4] & 63;
  } else {
    sc = (b.scales[j + 4] & 15) | (b.scales[j - 4] >> 6) << 4;
    m = (b.scales[j + 4] >> 4) | (b.scales[j] >> 6) << 4;
  }
}
int q4_k_level(const BlockQ4_K& b, int i) { return (b.qs[32 * (i / 64) + i % 32] >> (4 * ((i / 32) % 2))) & 15; }

void q4_k_pack(const int sc[8], const int m[8], const int q[kQK_K], BlockQ4_K& b) {
  for (int j = 0; j < 4; ++j) {
    b.scales[j] = uint8_t(sc[j] | (sc[j + 4] >> 4) << 6);
    b.scales[j + 4] = uint8_t(m[j] | (m[j + 4] >> 4) << 6);
    b.scales[j + 8] = uint8_t((sc[j + 4] & 15) | (m[j + 4] & 15) << 4);
  }
  std::memset(b.qs, 0, sizeof b.qs);
  for (int i = 0; i < kQK_K; ++i) b.qs[32 * (i / 64) + i % 32] |= uint8_t(q[i] << (4 * ((i / 32) % 2)));
}

// sum_i w_i a_i in double from the layouts' definitions (value = d sc q - dmin m, times
// a.d a.qs), and the sum of the terms' magnitudes (|d sc q| + |dmin m|) |a| that bounds
// any float evaluation's rounding.
struct Exact {
  double dot = 0, magnitude = 0;
};
Exact exact_dot(const BlockQ4_K* w, const BlockQ8_K* a, int64_t nb) {
  Exact e;
  for (int64_t ib = 0; ib < nb; ++ib) {
    const double d = f16_to_f32(w[ib].d), dmin = f16_to_f32(w[ib].dmin);
    for (int i = 0; i < kQK_K; ++i) {
      int sc, m;
      q4_k_scale_min(w[ib], i / 32, sc, m);
      const double x = double(a[ib].d) * a[ib].qs[i];
      const double step = d * sc * q4_k_level(w[ib], i), offset = dmin * m;
      e.dot += (step - offset) * x;
      e.magnitude += (std::fabs(step) + std::fabs(offset)) * std::fabs(x);
    }
  }
  return e;
}

BlockQ8_K* q8k(std::vector<uint8_t>& bytes) { return reinterpret_cast<BlockQ8_K*>(bytes.data()); }

std::vector<uint8_t> quantized_activations(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = gauss(rng);
  std::vector<uint8_t> a(size_t(row_bytes(GgmlType::Q8_K, n)));
  quantize_row_q8_k(x.data(), q8k(a), n);
  return a;
}

// Runs fn on a group against `tokens` activation rows: out[8t + r].
std::vector<float> run(VecDotX8Fn fn, const Group& g, const std::vector<std::vector<uint8_t>>& acts, int tokens) {
  const void* a[4] = {};
  for (int t = 0; t < tokens; ++t) a[t] = acts[size_t(t)].data();
  std::vector<float> out(size_t(kRows * tokens), -1.0f);
  fn(g.x8.data(), a, tokens, g.nb * kQK_K, out.data());
  return out;
}

// Whether this CPU runs `level` (the levels are ordered, each including the ones below);
// where it does not, a MESSAGE says which kernel goes untested.
bool cpu_runs(KernelIsa level, const char* kernel) {
  if (cpu_isa() >= level) return true;
  const std::string why = std::string("CPU lacks ") + isa_name(level) + ": the " + kernel + " is not tested";
  MESSAGE(why);
  return false;
}

// The eight-row kernel of `level` (kAvx2, or kAvx512Vnni for its VNNI twin), or nullptr
// (with a MESSAGE) where the CPU lacks that level.
VecDotX8Fn avx2_kernel(KernelIsa level = KernelIsa::kAvx2) {
  if (!cpu_runs(level, "eight-row kernel")) return nullptr;
  const VecDotX8Fn fn = vec_dot_q4_k_x8_kernel(level);
  // A test that left limit_isa() lowered would make this the scalar reference, and the
  // comparisons below vacuous.
  REQUIRE_MESSAGE((fn != vec_dot_q4_k_x8_scalar), "the AVX2 kernel is capped away (limit_isa)");
  return fn;
}

// Compares the AVX2 kernel with the scalar reference for tokens 1..4 (the first `tokens`
// of acts); returns the number of calls whose floats differ in any bit.
int avx2_mismatches(VecDotX8Fn avx2, const Group& g, const std::vector<std::vector<uint8_t>>& acts) {
  int bad = 0;
  for (int tokens = 1; tokens <= 4; ++tokens) {
    const std::vector<float> want = run(vec_dot_q4_k_x8_scalar, g, acts, tokens);
    const std::vector<float> got = run(avx2, g, acts, tokens);
    if (std::memcmp(want.data(), got.data(), want.size() * sizeof(float)) != 0) {
      for (size_t i = 0; i < want.size(); ++i)
        if (float_bits(want[i]) != float_bits(got[i])) {
          CAPTURE(g.nb);
          CAPTURE(tokens);
          CAPTURE(i);
          CAPTURE(want[i]);
          CAPTURE(got[i]);
          FAIL_CHECK("AVX2 and scalar x8 kernels differ");
          break;
        }
      ++bad;
    }
  }
  return bad;
}

}  // namespace

TEST_CASE("interleaved q4_K_r8: deinterleaving gives back each row byte for byte") {
  std::mt19937 rng(71);
  for (int64_t nb : {1, 3, 8}) {
    CAPTURE(nb);
    const Group g = random_group(nb, rng);
    for (int r = 0; r < kRows; ++r) {
      CAPTURE(r);
      std::vector<BlockQ4_K> back(static_cast<size_t>(nb));
      deinterleave_q4_k_x8(g.x8.data(), nb, r, back.data());
      CHECK(std::memcmp(back.data(), g.rows[r].data(), size_t(nb) * sizeof(BlockQ4_K)) == 0);
    }
  }
}

TEST_CASE("interleaved q4_K_r8: a hand-built block has the header's bytes and the known dot product") {
  // Every row, sub-block and value different, scales and mins over the whole 6-bit range
  // (so that their top bits are exercised), factors exact in f16.
  int sc[kRows][8], m[kRows][8], q[kRows][kQK_K];
  Group g;
  g.nb = 1;
  for (int r = 0; r < kRows; ++r) {
    for (int s = 0; s < 8; ++s) {
      sc[r][s] = (7 * s + 5 * r + 1) % 64;
      m[r][s] = (11 * s + 3 * r + 40) % 64;
    }
    for (int i = 0; i < kQK_K; ++i) q[r][i] = (3 * r + i / 4 + 5 * (i % 4) + i / 64) % 16;
    BlockQ4_K b{};
    b.d = f32_to_f16(0.5f + 0.125f * float(r));
    b.dmin = f32_to_f16(0.0625f * float(r + 1));
    q4_k_pack(sc[r], m[r], q[r], b);
    g.rows[r].assign(1, b);
  }
  sc[3][7] = 63;  // the largest values too
  m[5][0] = 63;
  q4_k_pack(sc[3], m[3], q[3], g.rows[3][0]);
  q4_k_pack(sc[5], m[5], q[5], g.rows[5][0]);
  g.interleave();

  // The test's own packing against the library's reading of Q4_K.
  for (int r = 0; r < kRows; ++r) {
    float deq[kQK_K];
    block_format(GgmlType::Q4_K).dequantize_row(&g.rows[r][0], deq, kQK_K);
    const double d = 0.5 + 0.125 * r, dmin = 0.0625 * (r + 1);
    for (int i = 0; i < kQK_K; ++i) REQUIRE(deq[i] == doctest::Approx(d * sc[r][i / 32] * q[r][i] - dmin * m[r][i / 32]));
  }

  // The interleaved bytes, from the header's formulas.
  BlockQ4_Kx8 want{};
  for (int r = 0; r < kRows; ++r) {
    want.d[r] = g.rows[r][0].d;
    want.dmin[r] = g.rows[r][0].dmin;
    for (int s = 0; s < 4; ++s) {
      const int j = 8 * s + r;
      want.scales[j] = uint8_t((sc[r][s] & 15) | (sc[r][s + 4] & 15) << 4);
      want.scales[32 + j] = uint8_t((m[r][s] & 15) | (m[r][s + 4] & 15) << 4);
      want.scales[64 + j] =
          uint8_t(sc[r][s] >> 4 | (sc[r][s + 4] >> 4) << 2 | (m[r][s] >> 4) << 4 | (m[r][s + 4] >> 4) << 6);
    }
    for (int s = 0; s < 8; ++s)
      for (int p = 0; p < 4; ++p)
        for (int i = 0; i < 4; ++i)
          want.qs[128 * s + 32 * p + 4 * r + i] =
              uint8_t(q[r][32 * s + 4 * p + i] | q[r][32 * s + 4 * (p + 4) + i] << 4);
  }
  CHECK(std::memcmp(&want, &g.x8[0], sizeof want) == 0);

  // Activations: every level from -128 to 127 somewhere.
  std::vector<uint8_t> abytes(sizeof(BlockQ8_K));
  BlockQ8_K& a = *q8k(abytes);
  a.d = 0.01f;
  for (int i = 0; i < kQK_K; ++i) a.qs[i] = int8_t((i * 37) % 256 - 128);
  for (int j = 0; j < 16; ++j) {
    int s = 0;
    for (int i = 0; i < 16; ++i) s += a.qs[16 * j + i];
    a.bsums[j] = int16_t(s);
  }
  const std::vector<float> out = run(vec_dot_q4_k_x8_scalar, g, {abytes}, 1);
  for (int r = 0; r < kRows; ++r) {
    CAPTURE(r);
    double dot = 0, magnitude = 0;
    const double d = 0.5 + 0.125 * r, dmin = 0.0625 * (r + 1);
    for (int i = 0; i < kQK_K; ++i) {
      const double w = d * sc[r][i / 32] * q[r][i] - dmin * m[r][i / 32];
      const double x = double(a.d) * a.qs[i];
      dot += w * x;
      magnitude += std::fabs(w * x);
    }
    CHECK(std::fabs(double(out[size_t(r)]) - dot) <= 1e-6 * magnitude);
  }
}

TEST_CASE("interleaved q4_K_r8: the scalar reference agrees with plain Q4_K's dot product") {
  std::mt19937 rng(72);
  const BlockFormat& f = block_format(GgmlType::Q4_K);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  for (int64_t nb : {1, 4, 28}) {
    const int64_t n = nb * kQK_K;
    CAPTURE(n);
    for (int kind = 0; kind < 2; ++kind) {
      CAPTURE(kind);  // 0: rows quantized from Gaussian values, 1: random bytes
      const Group g = group_of(nb, [&](int) {
        if (kind == 1) return weight_row(f, int(nb), rng);
        std::vector<float> x(static_cast<size_t>(n));
        for (float& v : x) v = gauss(rng);
        std::vector<uint8_t> b(size_t(f.row_bytes(n)));
        f.quantize_row(x.data(), b.data(), n, nullptr);
        return b;
      });
      std::vector<uint8_t> act = quantized_activations(n, rng);
      const std::vector<float> out = run(vec_dot_q4_k_x8_scalar, g, {act}, 1);
      for (int r = 0; r < kRows; ++r) {
        CAPTURE(r);
        const Exact e = exact_dot(g.rows[r].data(), q8k(act), nb);
        const float plain = f.vec_dot(g.rows[r].data(), act.data(), n);
        CHECK(std::fabs(double(out[size_t(r)]) - double(plain)) <= 1e-5 * e.magnitude);
        CHECK(std::fabs(double(out[size_t(r)]) - e.dot) <= 1e-5 * e.magnitude);
        // The reference is not vacuous: the products do not all vanish.
        CHECK(e.magnitude > 0);
      }
    }
  }
}

// Calls mismatches(group, acts) on random and adversarial groups, each with four
// activation rows, and checks that no call's floats differ from the scalar reference's;
// known(group, acts) returns the first token's eight results for the top-magnitude group,
// whose answer is computed here. The AVX2 and AVX-512 kernels share it.
template <class Mismatches, class Known>
void sweep_against_scalar(std::mt19937& rng, Mismatches&& mismatches, Known&& known) {
  const BlockFormat& f = block_format(GgmlType::Q4_K);
  int bad = 0, cases = 0;

  // Random blocks (random levels, scales, mins and finite f16 factors) against quantized
  // and random activations, several lengths.
  for (int64_t nb : {1, 2, 8}) {
    for (int rep = 0; rep < 12; ++rep) {
      const Group g = random_group(nb, rng);
      const int64_t n = nb * kQK_K;
      std::vector<std::vector<uint8_t>> acts = {quantized_activations(n, rng), act_row(f, n, rng),
                                                act_row(f, n, rng), quantized_activations(n, rng)};
      bad += mismatches(g, acts);
      ++cases;
    }
  }

  // Adversarial weights: quant bytes zero, all set (levels 15, every scale and min 63),
  // sign bits, alternating, random; f16 factors largest finite of both signs, smallest
  // and largest subnormal, smallest normal, one, zero of both signs, random. Every row
  // alike, and mixed rows (row r takes the next fill and factor). Activations: quants
  // -128, 127, -127, zero, random, each with large, tiny, subnormal, negative and random
  // scales, four per call.
  const int fills[] = {0x00, 0xFF, 0x80, 0x7F, 0x55, 0xAA, -1};
  const int halves[] = {0x7BFF, 0xFBFF, 0x0001, 0x03FF, 0x8001, 0x0400, 0x3C00, 0x0000, 0x8000, -1};
  const int quants[] = {-128, 127, -127, 0, kRandom};
  const float scales[] = {3.0e4f, 1e-7f, 1e-40f, -2.5f, NAN, 1.0f};
  for (int64_t nb : {1, 8}) {
    const int64_t n = nb * kQK_K;
    std::vector<std::vector<uint8_t>> all_acts;
    for (int quant : quants)
      for (float scale : scales) all_acts.push_back(act_row(f, n, rng, quant, scale));
    constexpr int kFills = int(std::size(fills)), kHalves = int(std::size(halves));
    for (int fi = 0; fi < kFills; ++fi)
      for (int hi = 0; hi < kHalves; ++hi)
        for (bool mixed : {false, true}) {
          const Group g = group_of(nb, [&](int r) {
            const int k = mixed ? r : 0;
            return weight_row(f, int(nb), rng, fills[(fi + k) % kFills], halves[(hi + k) % kHalves]);
          });
          // n = 2048: a few activation sets per group (the scalar reference is slow);
          // n = 256: all of them.
          const size_t step = nb == 1 ? 4 : 12;
          for (size_t first = (nb == 1 ? 0 : size_t(fi + hi) % 4); first + 4 <= all_acts.size(); first += step) {
            const std::vector<std::vector<uint8_t>> acts(all_acts.begin() + long(first),
                                                         all_acts.begin() + long(first + 4));
            bad += mismatches(g, acts);
            ++cases;
          }
        }
    // The largest magnitudes in every integer step: levels 15, scales and mins 63,
    // activations all -128 or all 127.
    const Group top = group_of(nb, [&](int) { return weight_row(f, int(nb), rng, 0xFF, 0x3C00); });
    const std::vector<std::vector<uint8_t>> extremes = {act_row(f, n, rng, -128, 1.0f), act_row(f, n, rng, 127, 1.0f),
                                                        act_row(f, n, rng, -128, -3.0e4f),
                                                        act_row(f, n, rng, 127, 1e-40f)};
    bad += mismatches(top, extremes);
    ++cases;
    // ... where the answer is known: every value is 63 * 15 - 63 = 882 and every
    // activation -128, so each row's dot product is -882 * 128 * n (exact in float).
    const std::vector<float> out = known(top, extremes);
    for (int r = 0; r < kRows; ++r) CHECK(out[size_t(r)] == float(-882.0 * 128.0 * double(n)));
  }
  CHECK(cases > 300);
  CHECK(bad == 0);
}

// The sixteen-row kernel of `level` (kAvx512: F/BW; kAvx512Vnni: with VNNI), or nullptr
// (with a MESSAGE) where the CPU lacks that level.
VecDotX16Fn avx512_kernel(KernelIsa level = KernelIsa::kAvx512) {
  if (!cpu_runs(level, "sixteen-row kernel")) return nullptr;
  const VecDotX16Fn fn = vec_dot_q4_k_x16_kernel(level);
  REQUIRE_MESSAGE((fn != nullptr), "the AVX-512 kernel is capped away (limit_isa)");
  return fn;
}

// Runs the sixteen-row kernel on groups g0 and g1 against `tokens` activation rows:
// out[16t + r], r < 8 from g0.
std::vector<float> run16(VecDotX16Fn fn, const Group& g0, const Group& g1, const std::vector<std::vector<uint8_t>>& acts,
                         int tokens) {
  const void* a[kMaxX16Tokens] = {};
  for (int t = 0; t < tokens; ++t) a[t] = acts[size_t(t)].data();
  std::vector<float> out(size_t(2 * kRows * tokens), -1.0f);
  fn(g0.x8.data(), g1.x8.data(), a, tokens, g0.nb * kQK_K, out.data());
  return out;
}

// The sixteen-row kernel on (g0, g1) against the scalar reference on each, tokens
// 1..kMaxX16Tokens (acts[t % acts.size()] for token t; the reference takes them one at
// a time, as its result for a token does not depend on the others); the number of calls
// whose floats differ in any bit.
int x16_mismatches(VecDotX16Fn fn, const Group& g0, const Group& g1, const std::vector<std::vector<uint8_t>>& acts) {
  std::vector<std::vector<uint8_t>> cycled;
  for (int t = 0; t < kMaxX16Tokens; ++t) cycled.push_back(acts[size_t(t) % acts.size()]);
  std::vector<float> want0, want1;
  for (int t = 0; t < kMaxX16Tokens; ++t) {
    const std::vector<float> w0 = run(vec_dot_q4_k_x8_scalar, g0, {cycled[size_t(t)]}, 1);
    const std::vector<float> w1 = run(vec_dot_q4_k_x8_scalar, g1, {cycled[size_t(t)]}, 1);
    want0.insert(want0.end(), w0.begin(), w0.end());
    want1.insert(want1.end(), w1.begin(), w1.end());
  }
  int bad = 0;
  for (int tokens = 1; tokens <= kMaxX16Tokens; ++tokens) {
    const std::vector<float> got = run16(fn, g0, g1, cycled, tokens);
    bool same = true;
    for (int t = 0; t < tokens; ++t)
      for (int r = 0; r < kRows; ++r) {
        const size_t i = size_t(kRows * t + r);
        const float w0 = want0[i], w1 = want1[i];
        const float o0 = got[size_t(2 * kRows * t + r)], o1 = got[size_t(2 * kRows * t + kRows + r)];
        if (float_bits(w0) != float_bits(o0) || float_bits(w1) != float_bits(o1)) {
          if (same) {
            CAPTURE(g0.nb);
            CAPTURE(tokens);
            CAPTURE(t);
            CAPTURE(r);
            CAPTURE(w0);
            CAPTURE(o0);
            CAPTURE(w1);
            CAPTURE(o1);
            FAIL_CHECK("AVX-512 x16 and scalar x8 kernels differ");
          }
          same = false;
        }
      }
    if (!same) ++bad;
  }
  return bad;
}

TEST_CASE("interleaved q4_K_r8: the AVX2 kernel and its VNNI twin give the scalar reference's floats bit for bit") {
  for (KernelIsa level : {KernelIsa::kAvx2, KernelIsa::kAvx512Vnni}) {
    const std::string level_name = isa_name(level);
    CAPTURE(level_name);
    const VecDotX8Fn avx2 = avx2_kernel(level);
    if (!avx2) continue;
    std::mt19937 rng(73);
    sweep_against_scalar(
        rng, [&](const Group& g, const std::vector<std::vector<uint8_t>>& acts) { return avx2_mismatches(avx2, g, acts); },
        [&](const Group& g, const std::vector<std::vector<uint8_t>>& acts) { return run(avx2, g, acts, 1); });
  }
}

TEST_CASE("interleaved q4_K_r8: the AVX-512 kernels (F/BW and VNNI) give the scalar reference's floats for both groups") {
  for (KernelIsa level : {KernelIsa::kAvx512, KernelIsa::kAvx512Vnni}) {
    const std::string level_name = isa_name(level);
    CAPTURE(level_name);
    const VecDotX16Fn avx512 = avx512_kernel(level);
    if (!avx512) continue;
    std::mt19937 rng(76);
    // Each group goes in both halves: paired with a random group of its length, once as
    // the first and once as the second, so both halves see every adversarial group.
    auto partner = [&](const Group& g) { return random_group(g.nb, rng); };
    sweep_against_scalar(
        rng,
        [&](const Group& g, const std::vector<std::vector<uint8_t>>& acts) {
          const Group other = partner(g);
          return x16_mismatches(avx512, g, other, acts) + x16_mismatches(avx512, other, g, acts);
        },
        [&](const Group& g, const std::vector<std::vector<uint8_t>>& acts) {
          const Group other = partner(g);
          const std::vector<float> first = run16(avx512, g, other, acts, 1);
          const std::vector<float> second = run16(avx512, other, g, acts, 1);
          // Row r of g in the low half of the first call and the high half of the second.
          for (int r = 0; r < kRows; ++r) CHECK(float_bits(first[size_t(r)]) == float_bits(second[size_t(kRows + r)]));
          return std::vector<float>(first.begin(), first.begin() + kRows);
        });
  }
}

TEST_CASE("interleaved q4_K_r8: a token's result does not depend on the other tokens in the call") {
  std::mt19937 rng(74);
  const BlockFormat& f = block_format(GgmlType::Q4_K);
  std::vector<VecDotX8Fn> kernels = {vec_dot_q4_k_x8_scalar};
  if (const VecDotX8Fn avx2 = avx2_kernel()) kernels.push_back(avx2);
  if (const VecDotX8Fn vnni = avx2_kernel(KernelIsa::kAvx512Vnni)) kernels.push_back(vnni);
  for (VecDotX8Fn fn : kernels) {
    const bool scalar = fn == vec_dot_q4_k_x8_scalar;
    CAPTURE(scalar);
    for (int64_t nb : {1, 3}) {
      const int64_t n = nb * kQK_K;
      const Group g = random_group(nb, rng);
      const std::vector<std::vector<uint8_t>> acts = {quantized_activations(n, rng), act_row(f, n, rng),
                                                      act_row(f, n, rng, -128, 3.0e4f), quantized_activations(n, rng)};
      const std::vector<float> four = run(fn, g, acts, 4);
      for (int t = 0; t < 4; ++t) {
        CAPTURE(t);
        const std::vector<float> alone = run(fn, g, {acts[size_t(t)]}, 1);
        CHECK(std::memcmp(alone.data(), four.data() + kRows * t, sizeof(float) * kRows) == 0);
      }
      for (int tokens = 2; tokens <= 3; ++tokens) {
        const std::vector<float> some = run(fn, g, acts, tokens);
        CHECK(std::memcmp(some.data(), four.data(), some.size() * sizeof(float)) == 0);
      }
    }
  }
}

TEST_CASE("interleaved q4_K_r8: kernel choice, partial blocks and token counts") {
  CHECK((vec_dot_q4_k_x8_kernel(KernelIsa::kScalar) == vec_dot_q4_k_x8_scalar));
  CHECK((vec_dot_q4_k_x8_kernel() != vec_dot_q4_k_x8_scalar) == has_avx2(best_isa()));
  // The sixteen-row kernel only where AVX-512 F/BW is allowed; never for AVX2 or scalar.
  CHECK((vec_dot_q4_k_x16_kernel(KernelIsa::kScalar) == nullptr));
  CHECK((vec_dot_q4_k_x16_kernel(KernelIsa::kAvx2) == nullptr));
  CHECK((vec_dot_q4_k_x16_kernel() != nullptr) == has_avx512(best_isa()));
  CHECK((vec_dot_q4_k_x16_kernel(KernelIsa::kAvx512Vnni) != nullptr) == has_avx512(best_isa()));
  // With VNNI, the VNNI level has its own kernels; the levels below never take them.
  if (has_vnni(best_isa())) {
    CHECK((vec_dot_q4_k_x8_kernel(KernelIsa::kAvx512Vnni) != vec_dot_q4_k_x8_kernel(KernelIsa::kAvx512)));
    CHECK((vec_dot_q4_k_x16_kernel(KernelIsa::kAvx512Vnni) != vec_dot_q4_k_x16_kernel(KernelIsa::kAvx512)));
  }
  std::mt19937 rng(75);
  const Group g = random_group(2, rng);
  const std::vector<uint8_t> act = quantized_activations(2 * kQK_K, rng);
  const void* a[5] = {act.data(), act.data(), act.data(), act.data(), act.data()};
  float out[5 * kRows];
  for (VecDotX8Fn fn : {vec_dot_q4_k_x8_scalar, vec_dot_q4_k_x8_kernel()}) {
    const bool scalar = fn == vec_dot_q4_k_x8_scalar;
    CAPTURE(scalar);
    CHECK_THROWS_AS(fn(g.x8.data(), a, 1, 100, out), std::invalid_argument);
    CHECK_THROWS_AS(fn(g.x8.data(), a, 1, kQK_K + 32, out), std::invalid_argument);
    CHECK_THROWS_AS(fn(g.x8.data(), a, 1, -kQK_K, out), std::invalid_argument);
    CHECK_THROWS_AS(fn(g.x8.data(), a, 0, kQK_K, out), std::invalid_argument);
    CHECK_THROWS_AS(fn(g.x8.data(), a, 5, kQK_K, out), std::invalid_argument);
    CHECK_THROWS_AS(fn(g.x8.data(), a, -1, kQK_K, out), std::invalid_argument);
    CHECK_NOTHROW(fn(g.x8.data(), a, 4, 2 * kQK_K, out));
  }
  if (const VecDotX16Fn fn = vec_dot_q4_k_x16_kernel()) {
    const void* a7[kMaxX16Tokens + 1];
    for (const void*& p : a7) p = act.data();
    float out16[(kMaxX16Tokens + 1) * 2 * kRows];
    CHECK_THROWS_AS(fn(g.x8.data(), g.x8.data(), a7, 1, kQK_K + 32, out16), std::invalid_argument);
    CHECK_THROWS_AS(fn(g.x8.data(), g.x8.data(), a7, 0, kQK_K, out16), std::invalid_argument);
    CHECK_THROWS_AS(fn(g.x8.data(), g.x8.data(), a7, kMaxX16Tokens + 1, kQK_K, out16), std::invalid_argument);
    CHECK_NOTHROW(fn(g.x8.data(), g.x8.data(), a7, kMaxX16Tokens, 2 * kQK_K, out16));
  }
}

}  // namespace quant_interleaved_suite

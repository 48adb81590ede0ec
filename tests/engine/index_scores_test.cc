// The indexer's scoring kernels (engine/index_scores.h): AVX2, AVX-512 and AVX512_BF16
// against the scalar reference (identical bits, so the picked positions never depend on
// the CPU), and the reference against a double-precision evaluation of the formula.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "engine/index_scores.h"
#include "quant/numbers.h"

namespace engine_index_scores_suite {

using namespace hearth;

namespace {

struct Case {
  int64_t heads, dim, n;
  std::vector<float> q, w, scales;
  std::vector<std::vector<uint8_t>> keys;  // [position][dim]
  // The keys as a KvCache page lays them out: code d of position i at codes[d * ld + i],
  // with rows longer than n (a page's other positions) holding codes no score may read.
  int64_t ld = 0;
  std::vector<uint8_t> codes;
  void lay_out() {
    ld = n + 5;
    codes.assign(size_t(dim * ld), 0x7f);  // NaN: a score that read one would be NaN
    for (int64_t i = 0; i < n; ++i)
      for (int64_t d = 0; d < dim; ++d) codes[size_t(d * ld + i)] = keys[size_t(i)][size_t(d)];
  }
};

Case make_case(int64_t heads, int64_t dim, int64_t n, std::mt19937& rng) {
  Case c{heads, dim, n, {}, {}, {}, {}, 0, {}};
  const float* lut = fp8_e4m3_table();
  c.q.resize(size_t(heads * dim));
  // Queries hold FP8 values (as the indexer rounds them), NaN codes left out.
  for (float& v : c.q) {
    uint8_t code;
    do code = uint8_t(rng()); while ((code & 0x7f) == 0x7f);
    v = lut[code];
  }
  std::normal_distribution<float> g(0.0f, 1.0f);
  c.w.resize(size_t(heads));
  for (float& v : c.w) v = g(rng);
  c.keys.resize(size_t(n));
  c.scales.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    c.keys[size_t(i)].resize(size_t(dim));
    for (uint8_t& b : c.keys[size_t(i)]) {
      do b = uint8_t(rng()); while ((b & 0x7f) == 0x7f);
    }
    c.scales[size_t(i)] = std::ldexp(1.0f, int(rng() % 20) - 10);
  }
  c.lay_out();
  return c;
}

}  // namespace

// The SIMD kernels this CPU can run: AVX2 (8 or 16 positions a pass), AVX-512 and
// AVX512_BF16 (16, 32 or 64 a pass, the rest through the AVX2 kernel).
// q's pairs for the BF16 kernel (index_query_pairs) where isa runs it, none otherwise. A
// query the kernel cannot take must be an odd dim: these tests' FP8 queries always fit.
std::vector<uint32_t> pairs_for(KernelIsa isa, const std::vector<float>& q, int64_t heads, int64_t dim) {
  std::vector<uint32_t> pairs(q.size() / 2 + 1);
  if (!has_bf16(isa)) return {};
  const bool fit = index_query_pairs(q.data(), heads, dim, pairs.data());
  CHECK(fit == (dim % 2 == 0));
  return fit ? pairs : std::vector<uint32_t>{};
}

std::vector<std::pair<KernelIsa, int64_t>> simd_kernels() {  // (kernel, positions in its widest pass)
  std::vector<std::pair<KernelIsa, int64_t>> kernels;
  if (has_avx2(best_isa())) kernels.emplace_back(KernelIsa::kAvx2, 16);
  if (has_avx512(best_isa())) kernels.emplace_back(KernelIsa::kAvx512, 64);
  if (has_bf16(best_isa())) kernels.emplace_back(KernelIsa::kAvx512Bf16, 64);
  if (!has_avx512(best_isa())) MESSAGE("CPU lacks AVX-512: the AVX-512 indexer kernel is not tested");
  if (!has_bf16(best_isa())) MESSAGE("CPU lacks AVX512_BF16: the BF16 indexer kernel is not tested");
  return kernels;
}

TEST_CASE("index scores: the AVX2 and AVX-512 kernels equal the scalar reference bit for bit") {
  std::mt19937 rng(31);
  // Head counts with and without a remainder of the four-head tiles (and fewer heads
  // than one tile); position counts that end in a 64-, 32-, 16- or 8-position pass or a
  // partial one (the tail: 1 to 7 positions, alone or after full passes); V3.2's 64 x 128
  // (a 64-position page, and one followed by every narrower pass). Odd head dims leave a
  // last dimension out of the pairs (the BF16 kernel hands those to the FMA kernels).
  for (auto [isa, widest] : simd_kernels()) {
    const std::string isa_label = isa_name(isa);
    CAPTURE(isa_label);
    for (auto [heads, dim, n] : {std::tuple<int64_t, int64_t, int64_t>{64, 128, 37}, {5, 64, 8}, {3, 32, 5}, {7, 128, 100},
                                 {13, 64, 24}, {9, 32, 17}, {6, 64, 48}, {64, 128, 61}, {4, 16, 128},
                                 {64, 128, 64}, {64, 128, 123}, {5, 7, 40}, {4, 1, 20}, {8, 33, 70}}) {
      CAPTURE(heads);
      CAPTURE(n);
      Case c = make_case(heads, dim, n, rng);
      std::vector<float> ref(static_cast<size_t>(n)), got(static_cast<size_t>(n));
      index_scores(c.q.data(), c.w.data(), heads, dim, c.codes.data(), c.ld, c.scales.data(), n, ref.data(), KernelIsa::kScalar);
      const std::vector<uint32_t> pairs = pairs_for(isa, c.q, heads, dim);
      index_scores(c.q.data(), c.w.data(), heads, dim, c.codes.data(), c.ld, c.scales.data(), n, got.data(), isa,
                   pairs.empty() ? nullptr : pairs.data());
      CHECK(std::memcmp(ref.data(), got.data(), ref.size() * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("index scores: the SIMD kernels decode every FP8 code as the scalar reference does") {
  // A kernel decodes one dimension of its pass's positions at a time, one position per
  // lane. Position i's code in dimension d is (i + i / W + 16 d) mod 256, W the widest
  // pass: over 16 such passes every lane meets all 256 codes (subnormals, both zeros, the
  // largest values, both NaN codes) once head dims reach 16, and so does every lane of
  // the 16-position windows. The whole range goes through the widest passes; windows of
  // 32 and 16 through the AVX-512 kernel's narrower passes, of 8 through the eight-position pass,
  // and of 5 through the tail (the last key repeated).
  std::mt19937 rng(47);
  for (auto [isa, widest] : simd_kernels()) {
    const std::string isa_label = isa_name(isa);
    CAPTURE(isa_label);
    for (int64_t dim : {16, 40, 128, 24}) {
      CAPTURE(dim);
      const int64_t n = widest * 16 + 3;
      Case c = make_case(4, dim, n, rng);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t d = 0; d < dim; ++d) c.keys[size_t(i)][size_t(d)] = uint8_t(i + i / widest + 16 * d);
      c.lay_out();
      const std::vector<uint32_t> pairs = pairs_for(isa, c.q, 4, dim);
      auto check_window = [&, isa = isa](int64_t first, int64_t m) {
        CAPTURE(first);
        CAPTURE(m);
        std::vector<float> ref(static_cast<size_t>(m)), got(static_cast<size_t>(m));
        const uint8_t* codes = c.codes.data() + first;
        index_scores(c.q.data(), c.w.data(), 4, dim, codes, c.ld, c.scales.data() + first, m, ref.data(), KernelIsa::kScalar);
        index_scores(c.q.data(), c.w.data(), 4, dim, codes, c.ld, c.scales.data() + first, m, got.data(), isa,
                     pairs.empty() ? nullptr : pairs.data());
        CHECK(std::memcmp(ref.data(), got.data(), ref.size() * sizeof(float)) == 0);
        return got;
      };
      const std::vector<float> all = check_window(0, n);
      for (int64_t first = 0; widest > 32 && first + 32 <= n; first += 32) check_window(first, 32);
      for (int64_t first = 0; first + 16 <= n; first += 16) {
        if (widest > 16) check_window(first, 16);
        check_window(first, 8);
        check_window(first + 8, 5);
      }
      // Keys holding a NaN code score NaN; the others are finite.
      int nan_scores = 0;
      for (float v : all) nan_scores += std::isnan(v);
      CHECK(nan_scores > 0);
      CHECK(nan_scores < n);
    }
  }
}

TEST_CASE("index scores: the BF16 kernel's query pairs, and values bf16 cannot hold") {
  std::mt19937 rng(61);
  Case c = make_case(9, 128, 150, rng);
  std::vector<uint32_t> pairs(c.q.size() / 2);
  REQUIRE(index_query_pairs(c.q.data(), c.heads, c.dim, pairs.data()));
  // Pair p of head h: q[h][2p]'s bf16 in the low half, q[h][2p + 1]'s in the high half.
  int wrong = 0;
  for (size_t i = 0; i < pairs.size(); ++i) {
    const float lo = std::bit_cast<float>(uint32_t(pairs[i] << 16)), hi = std::bit_cast<float>(pairs[i] & 0xffff0000u);
    wrong += std::bit_cast<uint32_t>(lo) != std::bit_cast<uint32_t>(c.q[2 * i]) ||
             std::bit_cast<uint32_t>(hi) != std::bit_cast<uint32_t>(c.q[2 * i + 1]);
  }
  CHECK(wrong == 0);
  std::vector<float> ref(static_cast<size_t>(c.n)), got(static_cast<size_t>(c.n));
  auto same_as_reference = [&](KernelIsa isa, const uint32_t* q_pairs) {
    index_scores(c.q.data(), c.w.data(), c.heads, c.dim, c.codes.data(), c.ld, c.scales.data(), c.n, ref.data(),
                 KernelIsa::kScalar);
    index_scores(c.q.data(), c.w.data(), c.heads, c.dim, c.codes.data(), c.ld, c.scales.data(), c.n, got.data(), isa,
                 q_pairs);
    return std::memcmp(ref.data(), got.data(), ref.size() * sizeof(float)) == 0;
  };
  CHECK(same_as_reference(KernelIsa::kAuto, pairs.data()));
  CHECK(same_as_reference(KernelIsa::kAuto, nullptr));
  // A query value with bits below bf16's: no pairs, and the scores come from the FMA
  // kernels, still the reference's bits.
  c.q[77] = std::nextafter(c.q[77], 1e9f);
  CHECK_FALSE(index_query_pairs(c.q.data(), c.heads, c.dim, pairs.data()));
  CHECK(same_as_reference(KernelIsa::kAuto, nullptr));
  CHECK_FALSE(index_query_pairs(c.q.data(), 1, 7, pairs.data()));  // an odd dim has no pairs
  // A bf16 value so small that the kernel's products could be denormals (which it would
  // flush): no pairs either.
  c.q[77] = 0x1p-120f;
  CHECK_FALSE(index_query_pairs(c.q.data(), c.heads, c.dim, pairs.data()));
  CHECK(same_as_reference(KernelIsa::kAuto, nullptr));
  c.q[77] = 0x1p-110f;  // the smallest magnitude it takes
  CHECK(index_query_pairs(c.q.data(), c.heads, c.dim, pairs.data()));
  CHECK(same_as_reference(KernelIsa::kAuto, pairs.data()));
}

TEST_CASE("index scores: the reference computes the DSA formula") {
  std::mt19937 rng(32);
  const float* lut = fp8_e4m3_table();
  Case c = make_case(6, 64, 20, rng);
  std::vector<float> got(static_cast<size_t>(c.n));
  index_scores(c.q.data(), c.w.data(), c.heads, c.dim, c.codes.data(), c.ld, c.scales.data(), c.n, got.data());
  for (int64_t i = 0; i < c.n; ++i) {
    double total = 0, mag = 0;
    for (int64_t h = 0; h < c.heads; ++h) {
      double dot = 0, dmag = 0;
      for (int64_t d = 0; d < c.dim; ++d) {
        const double p = double(c.q[size_t(h * c.dim + d)]) * lut[c.keys[size_t(i)][size_t(d)]];
        dot += p;
        dmag += std::fabs(p);
      }
      total += c.w[size_t(h)] * std::max(dot, 0.0);
      mag += std::fabs(c.w[size_t(h)]) * dmag;
    }
    total *= c.scales[size_t(i)];
    mag *= c.scales[size_t(i)];
    CHECK(std::fabs(double(got[size_t(i)]) - total) <= 1e-5 * mag + 1e-30);
  }
}

TEST_CASE("index scores: a head dimension over 512, or more positions than a row holds, is refused") {
  float q = 0, w = 0, s[2] = {1, 1}, out[2] = {0, 0};
  const uint8_t codes[2] = {0, 0};
  CHECK_THROWS_AS(index_scores(&q, &w, 1, 513, codes, 1, s, 1, out), std::invalid_argument);
  CHECK_THROWS_AS(index_scores(&q, &w, 1, 1, codes, 1, s, 2, out), std::invalid_argument);
}

TEST_CASE("index scores: position ranks order as scores do, then earlier positions") {
  // Scores in increasing order, each pair's rank compared with float comparison's verdict.
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> order = {-inf, -3e38f, -1.0f, -0x1p-149f, -0.0f, 0.0f, 0x1p-149f, 1.0f, 3e38f, inf};
  for (size_t i = 0; i < order.size(); ++i)
    for (size_t j = 0; j < order.size(); ++j) {
      CAPTURE(order[i]);
      CAPTURE(order[j]);
      // Higher score first; equal ones (the two zeros, or a score with itself) by position.
      CHECK((position_rank(order[i], 7) > position_rank(order[j], 9)) == (order[i] >= order[j]));
      CHECK((position_rank(order[i], 9) > position_rank(order[j], 7)) == (order[i] > order[j]));
    }
  // NaN ranks by its bits: a positive one above +inf, a negative one below -inf.
  CHECK(position_rank(std::numeric_limits<float>::quiet_NaN(), 5) > position_rank(inf, 1));
  CHECK(position_rank(-std::numeric_limits<float>::quiet_NaN(), 1) < position_rank(-inf, 5));
  for (int32_t p : {0, 1, 1 << 20, INT32_MAX}) CHECK(ranked_position(position_rank(-2.5f, p)) == p);
}

TEST_CASE("index scores: positions picked part by part are the topk of a full sort") {
  // Scores from a small set of values, so that many positions tie and the earlier one must
  // win (-0 and +0 among them, which tie); parts of every size (a chunk at a time, as
  // threads take them) in shuffled order.
  std::mt19937 rng(53);
  for (auto [n, topk] : {std::pair<int64_t, int64_t>{5000, 100}, {3000, 2048}, {700, 8}, {64, 63}, {10, 10}}) {
    CAPTURE(n);
    CAPTURE(topk);
    std::vector<float> score(static_cast<size_t>(n));
    for (float& v : score) v = float(int(rng() % 37) - 18) * 0.25f * (rng() % 2 ? 1.0f : -1.0f);
    // The reference: every position sorted by score (higher first), then by position.
    std::vector<int32_t> order(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) order[size_t(i)] = int32_t(i);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return score[size_t(a)] > score[size_t(b)]; });
    std::vector<int32_t> want(order.begin(), order.begin() + std::min(n, topk));
    std::sort(want.begin(), want.end());
    for (int64_t chunk : {int64_t(1), int64_t(7), int64_t(64), int64_t(512), n}) {
      CAPTURE(chunk);
      std::vector<std::pair<int64_t, int64_t>> chunks;
      for (int64_t b = 0; b < n; b += chunk) chunks.emplace_back(b, std::min(n, b + chunk));
      std::shuffle(chunks.begin(), chunks.end(), rng);
      for (int parts : {1, 2, 3}) {
        std::vector<std::vector<PositionRank>> kept(static_cast<size_t>(parts));
        std::vector<PositionRank> floors(static_cast<size_t>(parts), 0);
        for (size_t i = 0; i < chunks.size(); ++i) {
          std::vector<PositionRank>& k = kept[i % size_t(parts)];
          const PositionRank before = floors[i % size_t(parts)];
          keep_best_positions(score.data(), topk, chunks[i].first, chunks[i].second, k, floors[i % size_t(parts)]);
          CHECK(int64_t(k.size()) <= 2 * topk + chunk);
          CHECK(floors[i % size_t(parts)] >= before);  // the floor only rises
          const PositionRank floor = floors[i % size_t(parts)];
          CHECK(std::all_of(k.begin(), k.end(), [&](PositionRank r) { return r >= floor; }));
        }
        std::vector<PositionRank> candidates;
        for (const auto& k : kept) candidates.insert(candidates.end(), k.begin(), k.end());
        CHECK(best_positions(topk, candidates) == want);
      }
    }
  }
}

}  // namespace engine_index_scores_suite

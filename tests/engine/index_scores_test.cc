// The indexer's scoring kernels (engine/index_scores.h): AVX2 and AVX-512 against the scalar
// reference (identical bits, so the picked positions never depend on the CPU), and the
// reference against a double-precision evaluation of the formula.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
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

// The SIMD kernels this CPU can run: AVX2 (8 or 16 positions a pass) and AVX-512 (16 or
// 32 a pass, the rest through the AVX2 kernel).
std::vector<std::pair<KernelIsa, int64_t>> simd_kernels() {  // (kernel, positions in its widest pass)
  std::vector<std::pair<KernelIsa, int64_t>> kernels;
  if (has_avx2(best_isa())) kernels.emplace_back(KernelIsa::kAvx2, 16);
  if (has_avx512(best_isa())) kernels.emplace_back(KernelIsa::kAvx512, 32);
  if (!has_avx512(best_isa())) MESSAGE("CPU lacks AVX-512: the AVX-512 indexer kernel is not tested");
  return kernels;
}

TEST_CASE("index scores: the AVX2 and AVX-512 kernels equal the scalar reference bit for bit") {
  std::mt19937 rng(31);
  // Head counts with and without a remainder of the four-head tiles (and fewer heads
  // than one tile); position counts that end in a 32-, 16- or 8-position pass or a partial
  // one (the tail: 1 to 7 positions, alone or after full passes); V3.2's 64 x 128.
  for (auto [isa, widest] : simd_kernels()) {
    const std::string isa_label = isa_name(isa);
    CAPTURE(isa_label);
    for (auto [heads, dim, n] : {std::tuple<int64_t, int64_t, int64_t>{64, 128, 37}, {5, 64, 8}, {3, 32, 5}, {7, 128, 100},
                                 {13, 64, 24}, {9, 32, 17}, {6, 64, 48}, {64, 128, 61}, {4, 16, 128}}) {
      CAPTURE(heads);
      CAPTURE(n);
      Case c = make_case(heads, dim, n, rng);
      std::vector<float> ref(static_cast<size_t>(n)), got(static_cast<size_t>(n));
      index_scores(c.q.data(), c.w.data(), heads, dim, c.codes.data(), c.ld, c.scales.data(), n, ref.data(), KernelIsa::kScalar);
      index_scores(c.q.data(), c.w.data(), heads, dim, c.codes.data(), c.ld, c.scales.data(), n, got.data(), isa);
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
  // 16 through the AVX-512 kernel's narrower pass, of 8 through the eight-position pass,
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
      auto check_window = [&, isa = isa](int64_t first, int64_t m) {
        CAPTURE(first);
        CAPTURE(m);
        std::vector<float> ref(static_cast<size_t>(m)), got(static_cast<size_t>(m));
        const uint8_t* codes = c.codes.data() + first;
        index_scores(c.q.data(), c.w.data(), 4, dim, codes, c.ld, c.scales.data() + first, m, ref.data(), KernelIsa::kScalar);
        index_scores(c.q.data(), c.w.data(), 4, dim, codes, c.ld, c.scales.data() + first, m, got.data(), isa);
        CHECK(std::memcmp(ref.data(), got.data(), ref.size() * sizeof(float)) == 0);
        return got;
      };
      const std::vector<float> all = check_window(0, n);
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

TEST_CASE("index scores: positions picked part by part are the topk of a full sort") {
  // Scores from a small set of values, so that many positions tie and the earlier one must
  // win; parts of every size (a chunk at a time, as threads take them) in shuffled order.
  std::mt19937 rng(53);
  for (auto [n, topk] : {std::pair<int64_t, int64_t>{5000, 100}, {3000, 2048}, {700, 8}, {64, 63}, {10, 10}}) {
    CAPTURE(n);
    CAPTURE(topk);
    std::vector<float> score(static_cast<size_t>(n));
    for (float& v : score) v = float(int(rng() % 37) - 18) * 0.25f;
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
        std::vector<std::vector<int32_t>> kept(static_cast<size_t>(parts));
        for (size_t i = 0; i < chunks.size(); ++i) {
          std::vector<int32_t>& k = kept[i % size_t(parts)];
          keep_best_positions(score.data(), topk, chunks[i].first, chunks[i].second, k);
          CHECK(int64_t(k.size()) <= 2 * topk + chunk);
        }
        std::vector<int32_t> candidates;
        for (const auto& k : kept) candidates.insert(candidates.end(), k.begin(), k.end());
        CHECK(best_positions(score.data(), topk, candidates) == want);
      }
    }
  }
}

}  // namespace engine_index_scores_suite

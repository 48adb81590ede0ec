// The sampler: each filter keeps exactly the tokens it should, seeds reproduce, padding
// ids are never candidates.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <stdexcept>
#include <vector>

#include "engine/sampler.h"

namespace engine_sampler_suite {

using hearth::Sampler;
using hearth::SamplingParams;

namespace {

// Logits whose softmax (temperature 1) is exactly `probs` (up to float rounding).
std::vector<float> logits_of(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(p > 0 ? float(std::log(p)) : -std::numeric_limits<float>::infinity());
  return l;
}

// Which ids appear over many draws, each draw from a fresh sampler with its own seed.
std::set<int32_t> support(const SamplingParams& base, const std::vector<float>& logits, int64_t candidates, int draws = 400) {
  std::set<int32_t> seen;
  for (int s = 0; s < draws; ++s) {
    SamplingParams p = base;
    p.seed = uint64_t(s) * 7919 + 1;
    Sampler sm(p, candidates);
    seen.insert(sm.sample(logits));
  }
  return seen;
}

SamplingParams params(double temperature, double top_p, int64_t top_k = 0, double min_p = 0) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_p = top_p;
  p.top_k = top_k;
  p.min_p = min_p;
  return p;
}

}  // namespace

TEST_CASE("sampler: greedy is the argmax and ties go to the lower id") {
  const std::vector<float> l = {0.5f, 3.0f, -1.0f, 2.9f, 3.0f};
  Sampler s(params(0, 0.95), 5);
  for (int i = 0; i < 10; ++i) CHECK(s.sample(l) == 1);
  Sampler k1(params(1.0, 1.0, 1), 5);  // top-k 1 is greedy too
  CHECK(k1.sample(l) == 1);
}

TEST_CASE("sampler: top-p keeps exactly the smallest most-probable set with mass >= p") {
  // Probabilities 0.4, 0.1, 0.3, 0.15, 0.05 (ids shuffled so order is not the id order).
  const std::vector<float> l = logits_of({0.4, 0.1, 0.3, 0.15, 0.05});
  CHECK(support(params(1, 0.35), l, 5) == std::set<int32_t>{0});              // 0.4 >= 0.35
  CHECK(support(params(1, 0.65), l, 5) == std::set<int32_t>{0, 2});           // 0.7
  CHECK(support(params(1, 0.72), l, 5) == std::set<int32_t>{0, 2, 3});        // 0.85
  CHECK(support(params(1, 0.9), l, 5) == std::set<int32_t>{0, 1, 2, 3});      // 0.95
  CHECK(support(params(1, 0.97), l, 5) == std::set<int32_t>{0, 1, 2, 3, 4});  // 1.0
  CHECK(support(params(1, 1.0), l, 5) == std::set<int32_t>{0, 1, 2, 3, 4});
}

TEST_CASE("sampler: top-p over a large vocabulary of ties") {
  // 1000 equally likely tokens and 1000 negligible ones: top-p 0.4995 keeps 500 of the first.
  std::vector<float> l(2000, -30.0f);
  for (int i = 0; i < 1000; ++i) l[size_t(i)] = 0.0f;
  const std::set<int32_t> seen = support(params(1, 0.4995), l, 2000, 3000);
  CHECK(seen.size() > 480);
  for (int32_t id : seen) CHECK(id < 500);  // equal weights: ties go to the lower ids
}

TEST_CASE("sampler: top-k and top-p cut inside one weight bucket over a large vocabulary") {
  // 60 heavy tokens (logit 0, weight 1, one bucket, so the cut falls among ties and goes
  // by id) scattered over 3000 ids, the other 2940 at logit -3 (weight e^-3, another
  // bucket): total mass 60 + 2940 e^-3 = 206.4.
  std::vector<float> l(3000, -3.0f);
  std::vector<int32_t> heavy;
  for (int j = 0; j < 60; ++j) {
    heavy.push_back(50 * j + 7);
    l[size_t(50 * j + 7)] = 0.0f;
  }
  auto first_heavy = [&](int k) { return std::set<int32_t>(heavy.begin(), heavy.begin() + k); };
  auto within = [](const std::set<int32_t>& seen, const std::set<int32_t>& allowed) {
    return std::includes(allowed.begin(), allowed.end(), seen.begin(), seen.end());
  };
  // top-p 0.2: the target 41.3 needs 42 heavy tokens (the ones with the lowest ids).
  std::set<int32_t> seen = support(params(1, 0.2), l, 3000, 2000);
  CHECK(within(seen, first_heavy(42)));
  CHECK(seen.size() >= 40);
  // top-k 45: the 45 heavy tokens with the lowest ids.
  seen = support(params(1, 1.0, 45), l, 3000, 2000);
  CHECK(within(seen, first_heavy(45)));
  CHECK(seen.size() >= 43);
  // top-k 100 keeps the 60 heavy and the 40 lightest-id others (mass 61.99); top-p 0.5 of
  // that, 31.0, needs 31 heavy tokens.
  seen = support(params(1, 0.5, 100), l, 3000, 2000);
  CHECK(within(seen, first_heavy(31)));
  CHECK(seen.size() >= 29);
  // top-k 70 reaches into the light bucket: its 10 lowest ids come with the heavy ones.
  std::set<int32_t> allowed = first_heavy(60);
  for (int32_t i = 0, added = 0; added < 10; ++i)
    if (l[size_t(i)] < 0) {
      allowed.insert(i);
      ++added;
    }
  seen = support(params(1, 1.0, 70), l, 3000, 3000);
  CHECK(within(seen, allowed));
  CHECK(seen.size() >= 60);
  // Tokens just below the cut bucket (logit -0.01, weight 0.990: the next bucket down)
  // are dropped with it: 20 heavy at even ids below 40, 20 near at odd ids, 500 light
  // after them; mass 20 + 19.8 + 24.9 = 64.7, and top-p 0.25 needs 17 heavy tokens.
  std::vector<float> m(540, -3.0f);
  for (int i = 0; i < 40; ++i) m[size_t(i)] = i % 2 == 0 ? 0.0f : -0.01f;
  std::set<int32_t> heavy17;
  for (int32_t i = 0; i < 34; i += 2) heavy17.insert(i);
  seen = support(params(1, 0.25), m, 540, 1500);
  CHECK(within(seen, heavy17));
  CHECK(seen.size() >= 15);
}

TEST_CASE("sampler: top-k and min-p") {
  const std::vector<float> l = logits_of({0.4, 0.1, 0.3, 0.15, 0.05});
  CHECK(support(params(1, 1.0, 2), l, 5) == std::set<int32_t>{0, 2});
  CHECK(support(params(1, 1.0, 3), l, 5) == std::set<int32_t>{0, 2, 3});
  CHECK(support(params(1, 1.0, 100), l, 5) == std::set<int32_t>{0, 1, 2, 3, 4});
  // min-p 0.3: keep p >= 0.12 (0.3 x 0.4).
  CHECK(support(params(1, 1.0, 0, 0.3), l, 5) == std::set<int32_t>{0, 2, 3});
  CHECK(support(params(1, 1.0, 0, 0.8), l, 5) == std::set<int32_t>{0});
  // Combined: top-k 3 then top-p 0.8 of {0.4, 0.3, 0.15} (renormalized 0.47, 0.35, 0.18).
  CHECK(support(params(1, 0.8, 3), l, 5) == std::set<int32_t>{0, 2});
}

TEST_CASE("sampler: frequencies follow the probabilities") {
  const std::vector<float> l = logits_of({0.5, 0.25, 0.25});
  Sampler s(params(1, 1.0), 3);
  int counts[3] = {0, 0, 0};
  for (int i = 0; i < 20000; ++i) ++counts[s.sample(l)];
  CHECK(counts[0] == doctest::Approx(10000).epsilon(0.05));
  CHECK(counts[1] == doctest::Approx(5000).epsilon(0.08));
  CHECK(counts[2] == doctest::Approx(5000).epsilon(0.08));
}

TEST_CASE("sampler: the same seed gives the same sequence and another seed another one") {
  std::vector<float> l(300);
  for (size_t i = 0; i < l.size(); ++i) l[i] = float(std::sin(double(i)) * 2);
  auto run = [&](uint64_t seed) {
    SamplingParams p = params(1.0, 0.95);
    p.seed = seed;
    Sampler s(p, 300);
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(s.sample(l));
    return out;
  };
  CHECK(run(42) == run(42));
  CHECK(run(42) != run(43));
  // reseed restarts the sequence.
  SamplingParams p = params(1.0, 0.95);
  p.seed = 42;
  Sampler s(p, 300);
  const int32_t first = s.sample(l);
  s.sample(l);
  s.reseed(42);
  CHECK(s.sample(l) == first);
}

TEST_CASE("sampler: padding ids at or above the tokenizer size are never sampled") {
  std::vector<float> l(16, 0.0f);
  for (size_t i = 10; i < 16; ++i) l[i] = 1e30f;  // padding rows with enormous logits
  l[3] = 1.0f;
  CHECK(Sampler(params(0, 0.95), 10).sample(l) == 3);
  const std::set<int32_t> seen = support(params(1.0, 1.0), l, 10, 600);
  CHECK(seen.size() == 10);
  for (int32_t id : seen) CHECK(id < 10);
  l[10] = std::numeric_limits<float>::infinity();
  for (int32_t id : support(params(2.0, 0.5, 4, 0.1), l, 10)) CHECK(id < 10);
}

TEST_CASE("sampler: temperature toward 0 becomes greedy and a large one flattens") {
  const std::vector<float> l = {1.0f, 1.5f, 1.4f, -2.0f};
  CHECK(support(params(1e-4, 1.0), l, 4) == std::set<int32_t>{1});
  CHECK(support(params(1e-30, 1.0), l, 4) == std::set<int32_t>{1});
  CHECK(support(params(100.0, 1.0), l, 4) == std::set<int32_t>{0, 1, 2, 3});
}

TEST_CASE("sampler: NaN and -inf logits are never candidates and bad parameters are refused") {
  const float nan = std::numeric_limits<float>::quiet_NaN(), ninf = -std::numeric_limits<float>::infinity();
  const std::vector<float> l = {nan, 0.0f, ninf, 0.0f};
  CHECK(support(params(1, 1.0), l, 4) == std::set<int32_t>{1, 3});
  CHECK(Sampler(params(0, 1.0), 4).sample(l) == 1);
  const std::vector<float> none = {nan, ninf};
  CHECK_THROWS_AS(Sampler(params(1, 1.0), 2).sample(none), std::runtime_error);
  CHECK_THROWS_AS(Sampler(params(-1, 0.9), 4), std::invalid_argument);
  CHECK_THROWS_AS(Sampler(params(1, 0.0), 4), std::invalid_argument);
  CHECK_THROWS_AS(Sampler(params(1, 1.5), 4), std::invalid_argument);
  CHECK_THROWS_AS(Sampler(params(1, 0.9, -1), 4), std::invalid_argument);
  CHECK_THROWS_AS(Sampler(params(1, 0.9, 0, 2.0), 4), std::invalid_argument);
  CHECK_THROWS_AS(Sampler(params(std::nan(""), 0.9), 4), std::invalid_argument);
  CHECK_THROWS_AS(Sampler(params(1, 0.9), 0), std::invalid_argument);
}

}  // namespace engine_sampler_suite

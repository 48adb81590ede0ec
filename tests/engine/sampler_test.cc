// The sampler: each filter keeps exactly the tokens it should, seeds reproduce, padding
// ids are never candidates.
#include <doctest/doctest.h>

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

// Picking the next token from a row of logits: greedy, temperature, top-k, top-p, min-p,
// with a seeded generator so the same seed gives the same tokens on every machine.
//
// Order of the filters: temperature scales the logits, then top-k keeps the k most
// probable tokens, top-p keeps the smallest set of the most probable remaining tokens
// whose mass (renormalized over what top-k kept) is >= p, and min-p drops tokens whose
// probability is below min_p times the most probable one's. Ties are broken by the lower
// id. Only ids below `candidates` (the tokenizer's size) are ever considered: the model's
// padding rows are never sampled, whatever their logits.
#pragma once
#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

namespace hearth {

struct SamplingParams {
  double temperature = 1.0;  // 0: greedy (argmax)
  double top_p = 0.95;       // (0, 1]; 1 disables
  int64_t top_k = 0;         // 0 disables
  double min_p = 0.0;        // [0, 1]; 0 disables
  uint64_t seed = 0;
  // Random draws to discard after seeding. A non-greedy sample draws once per token, so a
  // sample that already has k tokens continues its own random stream with skip = k
  // (hearth prove resumes partial samples this way).
  uint64_t skip = 0;

  // Throws std::invalid_argument naming the field on a value out of range.
  void validate() const;
};

class Sampler {
 public:
  // `candidates`: ids [0, candidates) may be sampled (the tokenizer's size).
  Sampler(const SamplingParams& params, int64_t candidates);

  // One token id from `logits` (one row, at least `candidates` long or shorter: then its
  // length bounds the candidates). NaN logits count as -infinity. Throws
  // std::runtime_error when no candidate has a finite logit.
  int32_t sample(std::span<const float> logits);

  void reseed(uint64_t seed) { rng_.seed(seed); }
  const SamplingParams& params() const { return params_; }

 private:
  double uniform();  // [0, 1), the same sequence on every platform

  SamplingParams params_;
  int64_t candidates_;
  std::mt19937_64 rng_;
  // Scratch kept from token to token (engine/sampler.cc says how they are used).
  std::vector<float> weights_;                    // per candidate id: exp((l - max) / T)
  std::vector<int64_t> count_;                    // per weight bucket
  std::vector<double> mass_, block_;              // per weight bucket; per block of ids
  std::vector<std::pair<double, int32_t>> work_;  // (probability weight, id) of the tokens a filter sorts
};

}  // namespace hearth

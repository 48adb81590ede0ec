#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace hearth {

void SamplingParams::validate() const {
  if (!std::isfinite(temperature) || temperature < 0)
    throw std::invalid_argument("temperature must be a finite number >= 0 (0: greedy), got " + std::to_string(temperature));
  if (!std::isfinite(top_p) || top_p <= 0 || top_p > 1)
    throw std::invalid_argument("top-p must be in (0, 1], got " + std::to_string(top_p));
  if (top_k < 0) throw std::invalid_argument("top-k must be >= 0 (0: off), got " + std::to_string(top_k));
  if (!std::isfinite(min_p) || min_p < 0 || min_p > 1)
    throw std::invalid_argument("min-p must be in [0, 1], got " + std::to_string(min_p));
}

Sampler::Sampler(const SamplingParams& params, int64_t candidates)
    : params_(params), candidates_(candidates), rng_(params.seed) {
  params_.validate();
  if (candidates_ <= 0) throw std::invalid_argument("Sampler: no candidate token ids");
  rng_.discard(params_.skip);
}

double Sampler::uniform() { return double(rng_() >> 11) * 0x1.0p-53; }

int32_t Sampler::sample(std::span<const float> logits) {
  const int64_t n = std::min<int64_t>(candidates_, int64_t(logits.size()));
  // The best candidate (lowest id on ties); NaN never wins.
  int64_t best = -1;
  float best_logit = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i)
    if (logits[size_t(i)] > best_logit) {
      best_logit = logits[size_t(i)];
      best = i;
    }
  if (best < 0 || !std::isfinite(best_logit)) {
    if (best >= 0 && best_logit > 0) return int32_t(best);  // +inf: certain
    throw std::runtime_error("sampler: no candidate token has a finite logit");
  }
  if (params_.temperature == 0 || params_.top_k == 1) return int32_t(best);

  // Weights relative to the best token: exp((l - max) / T) in (0, 1], the best is 1.
  work_.clear();
  const double inv_t = 1.0 / params_.temperature;
  for (int64_t i = 0; i < n; ++i) {
    const float l = logits[size_t(i)];
    if (!(l > -std::numeric_limits<float>::infinity())) continue;  // -inf and NaN
    const double w = std::exp((double(l) - double(best_logit)) * inv_t);
    if (w > 0) work_.emplace_back(w, int32_t(i));
  }
  if (work_.empty()) return int32_t(best);  // a temperature so small that only the best has weight
  const auto more_probable = [](const std::pair<double, int32_t>& a, const std::pair<double, int32_t>& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  };
  size_t kept = work_.size();
  if (params_.top_k > 0 && size_t(params_.top_k) < kept) {
    std::nth_element(work_.begin(), work_.begin() + params_.top_k, work_.end(), more_probable);
    kept = size_t(params_.top_k);
  }
  // min-p relative to the best (weight 1); independent of the order of the other filters.
  if (params_.min_p > 0) {
    const auto end = std::partition(work_.begin(), work_.begin() + ptrdiff_t(kept),
                                    [&](const auto& e) { return e.first >= params_.min_p; });
    kept = size_t(end - work_.begin());
  }
  if (params_.top_p < 1) {
    double total = 0;
    for (size_t i = 0; i < kept; ++i) total += work_[i].first;
    const double target = params_.top_p * total;
    // Selection by mass, O(n): halve [lo, hi) around its median; the more probable half
    // either reaches the target (the cut lies inside it) or is kept whole.
    size_t lo = 0, hi = kept;
    double acc = 0;  // mass of [0, lo), all kept
    while (hi - lo > 64) {
      const size_t mid = lo + (hi - lo) / 2;
      std::nth_element(work_.begin() + ptrdiff_t(lo), work_.begin() + ptrdiff_t(mid), work_.begin() + ptrdiff_t(hi),
                       more_probable);
      double m = 0;
      for (size_t i = lo; i < mid; ++i) m += work_[i].first;
      if (acc + m >= target) {
        hi = mid;
      } else {
        acc += m;
        lo = mid;
      }
    }
    std::sort(work_.begin() + ptrdiff_t(lo), work_.begin() + ptrdiff_t(hi), more_probable);
    size_t i = lo;
    while (i < hi && acc < target) acc += work_[i++].first;
    kept = std::max<size_t>(i, 1);
  }
  double total = 0;
  for (size_t i = 0; i < kept; ++i) total += work_[i].first;
  double r = uniform() * total;
  for (size_t i = 0; i < kept; ++i) {
    r -= work_[i].first;
    if (r < 0) return work_[i].second;
  }
  return work_[kept - 1].second;  // rounding left a sliver
}

}  // namespace hearth

#include "engine/profile.h"

#include <algorithm>
#include <stdexcept>

namespace hearth {

std::string_view phase_name(Phase p) {
  switch (p) {
    case Phase::kAttention: return "attention (MLA)";
    case Phase::kIndexer: return "indexer";
    case Phase::kRouter: return "router";
    case Phase::kRoutedExperts: return "routed experts";
    case Phase::kSharedExperts: return "shared experts";
    case Phase::kDenseMlp: return "dense MLP";
    case Phase::kHead: return "head";
    case Phase::kSampling: return "sampling";
    case Phase::kOther: return "other";
    case Phase::kCount: break;
  }
  return "?";
}

std::string_view phase_key(Phase p) {
  switch (p) {
    case Phase::kAttention: return "attention";
    case Phase::kIndexer: return "indexer";
    case Phase::kRouter: return "router";
    case Phase::kRoutedExperts: return "routed_experts";
    case Phase::kSharedExperts: return "shared_experts";
    case Phase::kDenseMlp: return "dense_mlp";
    case Phase::kHead: return "head";
    case Phase::kSampling: return "sampling";
    case Phase::kOther: return "other";
    case Phase::kCount: break;
  }
  return "?";
}

void Profiler::charge(Clock::time_point now) {
  const double s = std::chrono::duration<double>(now - since_).count();
  seconds_[size_t(current_)] += s;
  last_[size_t(current_)] = s;
  since_ = now;
}

void Profiler::move_last(Phase from, Phase to, double fraction) {
  const double s = last_[size_t(from)] * std::clamp(fraction, 0.0, 1.0);
  seconds_[size_t(from)] -= s;
  seconds_[size_t(to)] += s;
  last_[size_t(from)] -= s;
}

void Profiler::start() {
  if (running_) throw std::logic_error("Profiler::start: already running");
  running_ = true;
  stack_.clear();
  current_ = Phase::kOther;
  since_ = Clock::now();
}

void Profiler::stop() {
  if (!running_) return;
  charge(Clock::now());
  stack_.clear();
  current_ = Phase::kOther;
  running_ = false;
}

void Profiler::enter(Phase p) {
  if (!running_) return;
  charge(Clock::now());
  stack_.push_back(current_);
  current_ = p;
}

void Profiler::leave() {
  if (!running_ || stack_.empty()) return;  // stopped inside the phase: already charged
  charge(Clock::now());
  current_ = stack_.back();
  stack_.pop_back();
}

double Profiler::total_seconds() const {
  double t = 0;
  for (double s : seconds_) t += s;
  return t;
}

void Profiler::reset() {
  seconds_.fill(0.0);
  last_.fill(0.0);
  if (running_) since_ = Clock::now();
}

}  // namespace hearth

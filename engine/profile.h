// What a forward step can report about itself when asked: where its wall time went
// (Profiler, by phase) and which routed experts it read (ExpertUsage). Both are optional
// probes a Forward carries as pointers; with none attached, every instrumentation point
// is one null-pointer test.
//
// Phases are exclusive: entering a phase pauses the enclosing one (the indexer runs
// inside attention, but its time counts only as indexer), so the phases of a bracketed
// interval add up to the interval's wall time exactly. Phase timers run only on the
// thread that drives the step. Where one parallel region runs two phases' work (the
// routed and shared experts), its threads time their items and move_last splits the
// region's time between the phases in proportion.
#pragma once
#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

namespace hearth {

struct WeightMatrix;

enum class Phase : int {
  kAttention,      // MLA: projections, rope, cache writes, scores, output projection
  kIndexer,        // DSA lightning indexer: its projections, keys, scoring, top-k
  kRouter,         // MoE gate: router logits and expert choice
  kRoutedExperts,  // the routed experts' MLPs and the weighted sum
  kSharedExperts,  // the shared expert(s)
  kDenseMlp,       // the dense layers' MLP
  kHead,           // final norm + lm_head
  kSampling,       // choosing the next token (outside Forward::step; the caller marks it)
  kOther,          // everything else: embeddings, norms, residual adds, bookkeeping
  kCount
};
inline constexpr int kPhaseCount = int(Phase::kCount);
// For tables: "attention (MLA)", "indexer", "router", "routed experts", ...
std::string_view phase_name(Phase p);
// For JSON keys: "attention", "indexer", "router", "routed_experts", ...
std::string_view phase_key(Phase p);

class Profiler {
 public:
  using Clock = std::chrono::steady_clock;

  // Starts an interval; time not inside a marked phase counts as kOther.
  void start();
  // Ends the interval (closing any phases still open).
  void stop();
  bool running() const { return running_; }

  void enter(Phase p);  // pauses the current phase; p runs until the matching leave()
  void leave();

  // Moves `fraction` (0..1) of the time last charged to `from` (from the phase change
  // that began it to the one that ended it) to `to`: for one parallel region that ran
  // two phases' work side by side, split by how long the threads spent on each
  // (engine/moe.cc).
  void move_last(Phase from, Phase to, double fraction);

  double seconds(Phase p) const { return seconds_[size_t(p)]; }
  double total_seconds() const;  // the sum over phases = the wall time of the intervals
  void reset();

 private:
  void charge(Clock::time_point now);
  std::array<double, kPhaseCount> seconds_{};
  std::array<double, kPhaseCount> last_{};  // each phase's most recent charge
  std::vector<Phase> stack_;
  Phase current_ = Phase::kOther;
  Clock::time_point since_{};
  bool running_ = false;
};

// Marks one phase for the lifetime of the object; no-op for a null or stopped profiler.
class ScopedPhase {
 public:
  ScopedPhase(Profiler* p, Phase phase) : p_(p && p->running() ? p : nullptr) {
    if (p_) p_->enter(phase);
  }
  ~ScopedPhase() {
    if (p_) p_->leave();
  }
  ScopedPhase(const ScopedPhase&) = delete;
  ScopedPhase& operator=(const ScopedPhase&) = delete;

 private:
  Profiler* p_;
};

// The routed experts a step actually read: per MoE layer per step, the distinct experts
// the batch's tokens were routed to, and their weight bytes (each distinct expert is
// read once per step however many tokens chose it).
struct ExpertUsage {
  int64_t layer_steps = 0;       // MoE layer evaluations recorded
  int64_t distinct_experts = 0;  // summed over them
  int64_t bytes = 0;             // weight bytes of those experts (FP8 scales included)
  void record(int64_t experts, int64_t expert_bytes) {
    ++layer_steps;
    distinct_experts += experts;
    bytes += expert_bytes;
  }
  void reset() { *this = ExpertUsage{}; }
};

// How many tokens each routed expert was chosen by: hits[layer][expert] (rows of dense
// layers stay empty; a MoE layer's row is sized on first use), over `tokens` tokens (each
// step's tokens counted once, at the first MoE layer). hits[l][e] / tokens is the
// fraction of tokens routed to e; a layer's fractions sum to num_experts_per_tok.
// Used to collect expert profiles for placement (hearth profile-experts).
struct ExpertCounts {
  std::vector<std::vector<int64_t>> hits;
  int64_t tokens = 0;
  void reset() { *this = ExpertCounts{}; }
};

// Sees the float input rows of a weight product before it runs: `rows` rows of
// w->cols values, row i at x + i * ld. Called on the thread that drives the step (never
// inside a parallel region), for attention's q_a, q_b, kv_a, kv_b (prefill path only:
// its rows are the cached latents of the chunk's keys), o, the indexer's wq_b, wk and
// weights_proj, the MoE router, dense and shared MLPs, every routed expert's gate/up
// (the token rows routed to it) and down (its hidden rows), and lm_head. Used to collect
// importance matrices (hearth imatrix).
using ActivationObserver = std::function<void(const WeightMatrix* w, const float* x, int64_t rows, int64_t ld)>;

// The probes a Forward reports to (all optional).
struct StepProbes {
  Profiler* profiler = nullptr;
  ExpertUsage* experts = nullptr;
  const ActivationObserver* activations = nullptr;
  ExpertCounts* expert_counts = nullptr;
};

// Reports x to the activation observer, if there is one.
inline void observe_rows(const StepProbes& p, const WeightMatrix& w, const float* x, int64_t rows, int64_t ld) {
  if (p.activations && rows > 0) (*p.activations)(&w, x, rows, ld);
}

}  // namespace hearth

// Feed-forward blocks: the dense SiLU-gated MLP and DeepSeek's routed mixture of experts.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

#include "engine/experts.h"
#include "engine/layers.h"
#include "engine/numa_experts.h"
#include "engine/ops.h"
#include "engine/read_bytes.h"

namespace hearth {

void mlp_forward(ThreadPool& pool, const Mlp& mlp, const float* x, int64_t rows, float* out,
                 const ActivationObserver* observe) {
  mlp_rows(pool, mlp, x, rows, out, observe);
}

Routing route_token(const ModelConfig& c, const float* logits, const std::vector<float>& bias) {
  const int64_t E = c.n_routed_experts, k = c.num_experts_per_tok;
  std::vector<float> score(static_cast<size_t>(E)), biased(static_cast<size_t>(E));
  if (c.scoring_func == "softmax") {
    const float m = *std::max_element(logits, logits + E);
    double sum = 0.0;
    for (int64_t e = 0; e < E; ++e) sum += (score[size_t(e)] = std::exp(logits[e] - m));
    for (float& s : score) s = float(s / sum);
  } else {
    for (int64_t e = 0; e < E; ++e) score[size_t(e)] = 1.0f / (1.0f + std::exp(-logits[e]));
  }
  // The correction bias steers which experts are chosen, never how much they weigh.
  for (int64_t e = 0; e < E; ++e) biased[size_t(e)] = score[size_t(e)] + (bias.empty() ? 0.0f : bias[size_t(e)]);

  // Group-limited routing: keep the topk_group groups whose best two biased scores sum
  // highest (the single best without a bias), then pick the top k experts inside them.
  std::vector<bool> allowed(static_cast<size_t>(E), true);
  if (c.n_group > 1) {
    const int64_t per = E / c.n_group;
    std::vector<float> gscore(static_cast<size_t>(c.n_group));
    for (int64_t g = 0; g < c.n_group; ++g) {
      std::vector<float> v(biased.begin() + g * per, biased.begin() + (g + 1) * per);
      std::sort(v.begin(), v.end(), std::greater<float>());
      gscore[size_t(g)] = bias.empty() ? v[0] : v[0] + (per > 1 ? v[1] : 0.0f);
    }
    std::vector<int64_t> order(static_cast<size_t>(c.n_group));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return gscore[size_t(a)] > gscore[size_t(b)]; });
    std::fill(allowed.begin(), allowed.end(), false);
    for (int64_t i = 0; i < c.topk_group; ++i)
      for (int64_t e = order[size_t(i)] * per; e < (order[size_t(i)] + 1) * per; ++e) allowed[size_t(e)] = true;
  }
  std::vector<int32_t> idx;
  for (int64_t e = 0; e < E; ++e)
    if (allowed[size_t(e)]) idx.push_back(int32_t(e));
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return biased[size_t(a)] > biased[size_t(b)]; });
  idx.resize(static_cast<size_t>(k));

  Routing r;
  r.experts = idx;
  float sum = 0.0f;
  for (int32_t e : idx) {
    r.weights.push_back(score[size_t(e)]);
    sum += score[size_t(e)];
  }
  const bool normalize = c.norm_topk_prob && k > 1;
  for (float& w : r.weights) w = (normalize ? w / sum : w) * float(c.routed_scaling_factor);
  return r;
}

void record_routing(const StepProbes& probes, const ModelConfig& c, int64_t layer, const Moe& moe,
                    const std::vector<int64_t>& rows_per_expert, int64_t tokens) {
  const int64_t E = int64_t(rows_per_expert.size());
  if (ExpertCounts* counts = probes.expert_counts) {
    if (counts->hits.size() <= size_t(layer)) counts->hits.resize(size_t(layer) + 1);
    std::vector<int64_t>& hits = counts->hits[size_t(layer)];
    hits.resize(size_t(E), 0);
    for (int64_t e = 0; e < E; ++e) hits[size_t(e)] += rows_per_expert[size_t(e)];
    // Every token passes every MoE layer: count the step's tokens once, at the first.
    int64_t first_moe = 0;
    while (first_moe < c.num_hidden_layers && !c.is_moe_layer(first_moe)) ++first_moe;
    if (layer == first_moe) counts->tokens += tokens;
  }
  if (ExpertUsage* usage = probes.experts) {
    int64_t hit = 0, bytes = 0;
    for (int64_t e = 0; e < E; ++e)
      if (rows_per_expert[size_t(e)] > 0) {
        ++hit;
        bytes += mlp_read_bytes(moe.experts[size_t(e)]);
      }
    usage->record(hit, bytes);
  }
}

void moe_forward(const StepContext& ctx, int64_t layer, const Moe& moe, const float* x, float* out) {
  const ModelConfig& c = ctx.config;
  const int64_t T = ctx.rows(), H = c.hidden_size, E = c.n_routed_experts;
  Profiler* prof = ctx.probes.profiler;
  // Group the batch's tokens by expert so each expert's weights are read once per step.
  // The lists are reused from step to step (their capacity kept): no allocation per step.
  static thread_local std::vector<ExpertWork> by_expert;
  by_expert.resize(size_t(E));
  for (int64_t e = 0; e < E; ++e) {
    by_expert[size_t(e)].mlp = &moe.experts[size_t(e)];
    by_expert[size_t(e)].rows.clear();
    by_expert[size_t(e)].weights.clear();
  }
  {
    ScopedPhase phase(prof, Phase::kRouter);
    std::vector<float> logits(static_cast<size_t>(T * E));
    observe_rows(ctx.probes, moe.router, x, T, H);
    linear(ctx.pool, moe.router, x, T, logits.data());
    for (int64_t r = 0; r < T; ++r) {
      const Routing route = route_token(c, logits.data() + r * E, moe.router_bias);
      for (size_t i = 0; i < route.experts.size(); ++i) {
        ExpertWork& w = by_expert[size_t(route.experts[i])];
        w.rows.push_back(int32_t(r));
        w.weights.push_back(route.weights[i]);
      }
    }
  }
  {
    std::vector<int64_t> rows_per_expert(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) rows_per_expert[size_t(e)] = int64_t(by_expert[size_t(e)].rows.size());
    record_routing(ctx.probes, c, layer, moe, rows_per_expert, T);
  }

  std::fill(out, out + T * H, 0.0f);
  // Without NUMA shards or an activation observer, the shared expert is one more entry
  // of the routed experts' pass, last, with weight 1 on every row: its reads then stream
  // beside theirs in one parallel region instead of three regions of its own (the bench
  // preset's Q4_K decode: docs/performance.md). Its output is added last either way, and
  // 1.0f * y adds y's bits, so the logits do not change.
  const bool sharded = ctx.numa_experts && !ctx.probes.activations;
  const bool fold_shared = moe.has_shared && !ctx.numa_experts && !ctx.probes.activations;
  const bool timing = prof && prof->running() && fold_shared;
  std::atomic<double> routed_busy{0.0}, shared_busy{0.0};
  static thread_local ExpertWork shared_work;  // moved in and out: its lists keep their capacity
  if (fold_shared) {
    shared_work.mlp = &moe.shared;
    shared_work.rows.resize(size_t(T));
    std::iota(shared_work.rows.begin(), shared_work.rows.end(), 0);
    shared_work.weights.assign(size_t(T), 1.0f);
    by_expert.push_back(std::move(shared_work));
  }
  for (ExpertWork& w : by_expert) w.busy = timing ? &routed_busy : nullptr;
  if (timing) by_expert.back().busy = &shared_busy;
  {
    // Every expert hit in the step: its gates and ups, then its downs, in one parallel
    // region (engine/experts.h), then the weighted sum in expert order. Sharded over NUMA
    // nodes, every node does that over its slices and the nodes' partial sums are added.
    // An activation observer (imatrix) sees the whole experts' inputs, so it runs on the
    // model's own weights.
    ScopedPhase phase(prof, Phase::kRoutedExperts);
    if (sharded) {
      ctx.numa_experts->accumulate(layer, by_expert, x, out);
    } else {
      // Experts handed over to NUMA shards are gone from the model (release_routed_experts).
      for (const ExpertWork& w : by_expert)
        if (!w.rows.empty() && !w.mlp->holds_weights())
          throw std::logic_error("layer " + std::to_string(layer) +
                                 ": the routed experts were moved to NUMA shards, and this step " +
                                 (ctx.probes.activations ? "observes activations, which needs" : "was given no shards, so it needs") +
                                 " the model's own copy");
      experts_accumulate(ctx.pool, by_expert, x, H, out, ctx.probes.activations);
    }
  }
  if (timing) {
    // The region's wall time went to the routed experts; the shared expert's share of the
    // threads' busy time moves to its own phase.
    const double r = routed_busy.load(), sh = shared_busy.load();
    if (r + sh > 0) prof->move_last(Phase::kRoutedExperts, Phase::kSharedExperts, sh / (r + sh));
  }
  if (moe.has_shared && !fold_shared) {
    ScopedPhase phase(prof, Phase::kSharedExperts);
    static thread_local std::vector<float> ye;
    if (ye.size() < size_t(T * H)) ye.resize(size_t(T * H));
    mlp_rows(ctx.pool, moe.shared, x, T, ye.data(), ctx.probes.activations);
    for (int64_t i = 0; i < T * H; ++i) out[i] += ye[size_t(i)];
  }
  if (fold_shared) {
    shared_work = std::move(by_expert.back());
    by_expert.pop_back();
  }
}

}  // namespace hearth

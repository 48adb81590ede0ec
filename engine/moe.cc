// Feed-forward blocks: the dense SiLU-gated MLP and DeepSeek's routed mixture of experts.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/layers.h"
#include "engine/ops.h"

namespace hearth {

void mlp_forward(ThreadPool& pool, const Mlp& mlp, const float* x, int64_t rows, float* out) {
  const int64_t inter = mlp.gate.rows;
  std::vector<float> g(static_cast<size_t>(rows * inter)), u(static_cast<size_t>(rows * inter));
  linear(pool, mlp.gate, x, rows, g.data());
  linear(pool, mlp.up, x, rows, u.data());
  for (size_t i = 0; i < g.size(); ++i) g[i] = silu(g[i]) * u[i];
  linear(pool, mlp.down, g.data(), rows, out);
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

void moe_forward(const StepContext& ctx, const Moe& moe, const float* x, float* out) {
  const ModelConfig& c = ctx.config;
  const int64_t T = ctx.rows(), H = c.hidden_size, E = c.n_routed_experts;
  std::vector<float> logits(static_cast<size_t>(T * E));
  linear(ctx.pool, moe.router, x, T, logits.data());

  // Group the batch's tokens by expert so each expert's weights are read once per step.
  std::vector<std::vector<std::pair<int64_t, float>>> by_expert(static_cast<size_t>(E));
  for (int64_t r = 0; r < T; ++r) {
    const Routing route = route_token(c, logits.data() + r * E, moe.router_bias);
    for (size_t i = 0; i < route.experts.size(); ++i) by_expert[size_t(route.experts[i])].push_back({r, route.weights[i]});
  }

  std::fill(out, out + T * H, 0.0f);
  std::vector<float> xe, ye;
  for (int64_t e = 0; e < E; ++e) {
    const auto& rows = by_expert[size_t(e)];
    if (rows.empty()) continue;
    const int64_t n = int64_t(rows.size());
    xe.resize(static_cast<size_t>(n * H));
    ye.resize(static_cast<size_t>(n * H));
    for (int64_t i = 0; i < n; ++i) std::copy_n(x + rows[size_t(i)].first * H, H, xe.data() + i * H);
    mlp_forward(ctx.pool, moe.experts[size_t(e)], xe.data(), n, ye.data());
    for (int64_t i = 0; i < n; ++i) {
      float* o = out + rows[size_t(i)].first * H;
      const float w = rows[size_t(i)].second;
      for (int64_t d = 0; d < H; ++d) o[d] += w * ye[size_t(i * H + d)];
    }
  }
  if (moe.has_shared) {
    ye.resize(static_cast<size_t>(T * H));
    mlp_forward(ctx.pool, moe.shared, x, T, ye.data());
    for (int64_t i = 0; i < T * H; ++i) out[i] += ye[size_t(i)];
  }
}

}  // namespace hearth

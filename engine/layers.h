// The per-layer pieces of the forward pass (internal to engine/).
#pragma once
#include <cstdint>
#include <vector>

#include "engine/forward.h"

namespace hearth {

// What every layer of one step needs to know about the rows it is computing (the layout
// of the rows is the base: ctx.row_pos, ctx.rows(), ...).
struct StepContext : RowLayout {
  const ModelConfig& config;
  ThreadPool& pool;
  KvCache& cache;
  const Rope& rope;
  AttentionPath path;
  const std::vector<SequenceChunk>& chunks;
  StepProbes probes;  // optional phase timer and expert-read counter
  // Routed experts sharded over NUMA nodes (engine/numa_experts.h); nullptr: run them
  // from the model's own weights on `pool`.
  const NumaExperts* numa_experts = nullptr;
};

// x: [rows][hidden] normalized input; out: [rows][hidden]. Also writes this layer's
// cache entries for the new positions.
void attention_forward(const StepContext& ctx, int64_t layer, const Attention& attn, const float* x, float* out);
// Absorbed decode over an f32 cache runs its stages split by heads while the threads
// together would read at most this many bytes of picked entries, and splits the entries
// between the threads past it (engine/attention.cc says why; 8 MB). Process-wide; returns
// the previous bound. Exposed for tests, which need both splits on a small model.
int64_t set_absorbed_head_split_bytes(int64_t bytes);
// How attention's prefill path takes a group of up to kPrefillRowGroup consecutive rows of
// one chunk (exposed for tests): together, over one list of keys, or each row alone.
constexpr int64_t kPrefillRowGroup = 16;
struct PrefillGroup {
  bool together = false;        // false: each row attends alone over its own picks
  std::vector<int32_t> keys;    // the union of the rows' picks, in increasing order
  std::vector<int64_t> counts;  // nested picks: row k's are the first counts[k] keys
  std::vector<uint8_t> keep;    // otherwise row k picked keys[j] where keep[k * keys.size() + j]
};

// Plans the group of `rows` rows from r0 (picked[r]: row r's positions, increasing).
// Where each row picked a prefix of the last row's picks (a prompt's rows while they see
// fewer positions than index_topk), they go over the last row's keys, each up to its
// count. Otherwise (V3.2 rows past index_topk, whose picks differ) they go over the union
// of their picks, each keeping its own, as long as the union is at most twice the keys
// the rows picked in all: neighbouring rows' queries pick mostly the same positions, and
// a shared pass loads each key once for the group where rows alone load it once per row
// (with dot_rows_f32's one-query tile, 9 loads per 8 multiply-adds). mark: a zeroed
// scratch map of positions (a bit per row), left zeroed.
PrefillGroup plan_prefill_group(const std::vector<std::vector<int32_t>>& picked, int64_t r0, int64_t rows,
                                std::vector<uint32_t>& mark);

void mlp_forward(ThreadPool& pool, const Mlp& mlp, const float* x, int64_t rows, float* out,
                 const ActivationObserver* observe = nullptr);
// `layer` indexes the model's layers (for the per-expert counts of StepProbes).
void moe_forward(const StepContext& ctx, int64_t layer, const Moe& moe, const float* x, float* out);

// Reports one MoE layer's routing to the probes that want it (ExpertCounts, ExpertUsage):
// rows_per_expert[e] rows of the step's `tokens` chose expert e. Shared by the CPU and
// the offloaded pass.
void record_routing(const StepProbes& probes, const ModelConfig& c, int64_t layer, const Moe& moe,
                    const std::vector<int64_t>& rows_per_expert, int64_t tokens);

// Expert choice for one token (exposed for tests): indices and weights of the
// num_experts_per_tok experts, following DeepSeek-V3's group-limited routing.
struct Routing {
  std::vector<int32_t> experts;
  std::vector<float> weights;
};
Routing route_token(const ModelConfig& c, const float* router_logits, const std::vector<float>& bias);

}  // namespace hearth

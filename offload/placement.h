// Which parts of the model live on the GPU: placement as data.
//
// A model is described as a list of PlacementItems (named as llama.cpp names tensors, so
// habits from its -ot flag carry over): the KV cache, the embeddings, each layer's
// attention block, router, dense MLP or shared expert, every routed expert on its own, and
// the head. plan_placement() fills a GPU memory budget greedily and returns a
// PlacementPlan that the offloaded forward pass, `hearth plan` and the tests all read.
//
// Item names:
//   kv_cache             the attention cache for the planned context and batch
//   token_embd           the embedding table
//   output               the LM head and the final norm
//   blk.L.attn           layer L's MLA attention, its DSA indexer and the layer's norms
//   blk.L.ffn_gate_inp   layer L's MoE router (weight and correction bias)
//   blk.L.ffn            layer L's dense MLP
//   blk.L.ffn_shexp      layer L's shared expert(s)
//   blk.L.ffn_exps.E     routed expert E of layer L
//
// Greedy order (after the --place overrides): KV cache, attention, shared experts, dense
// MLPs, head, routers, then the routed experts by how often the profile says tokens pick
// them (without a profile: layer by layer, expert by expert, a deterministic order).
// An item that does not fit is left on the CPU and the next one is tried.
//
// The embeddings stay on the CPU unless an override puts them on the GPU: a step reads
// one row per token from them (a lookup, not a product), so the GPU would spend
// vocab x hidden bytes (1.8 GB for DeepSeek-V3) to save copying a few KB per step.
//
// The module is independent of engine/ (engine/placement_items.h turns a loaded Model
// into items).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace hearth {

enum class TensorKind {
  kKvCache,
  kAttention,  // MLA attention, the DSA indexer and the layer's norms
  kSharedExpert,
  kDenseMlp,
  kEmbedding,
  kHead,  // lm_head and the final norm
  kRouter,
  kRoutedExpert,
};
inline constexpr int kTensorKindCount = 8;
// For tables: "KV cache", "attention", "shared experts", ...
std::string_view tensor_kind_name(TensorKind k);
// For JSON keys: "kv_cache", "attention", "shared_experts", ...
std::string_view tensor_kind_key(TensorKind k);

enum class Where { kCpu, kGpu };
std::string_view where_name(Where w);  // "cpu" | "gpu"

struct PlacementItem {
  std::string name;
  TensorKind kind = TensorKind::kAttention;
  int64_t layer = -1, expert = -1;  // -1 where it does not apply
  int64_t bytes = 0;
};

// How often each routed expert is chosen: freq[layer][expert] is the fraction of tokens
// routed to it (a layer's row sums to experts_per_tok). Dense layers have empty rows.
struct ExpertProfile {
  std::vector<std::vector<double>> freq;
  int64_t tokens = 0;            // tokens the frequencies were counted over
  int64_t experts_per_tok = 0;   // the model's top-k, for checking sums (0: unknown)
  std::string source;            // the file it came from, for error messages

  // 0 for a layer or expert the profile has no entry for.
  double at(int64_t layer, int64_t expert) const;

  // {"format": "hearth-expert-profile", "version": 1, "tokens": N, "experts_per_tok": K,
  //  "freq": [[...], ...]}
  nlohmann::json to_json() const;
  // Throws std::runtime_error naming `source` and the bad key or shape.
  static ExpertProfile from_json(const nlohmann::json& j, const std::string& source);
  static ExpertProfile load(const std::string& path);
  // Atomic: writes PATH.tmp and renames it over PATH.
  void save(const std::string& path) const;
};

// "REGEX=gpu" or "REGEX=cpu": every item whose name the regex matches (ECMAScript, search
// anywhere in the name, as llama.cpp's -ot) goes there. The first matching override wins.
struct PlaceOverride {
  std::string pattern;
  Where where = Where::kCpu;
};
// Throws std::invalid_argument naming the text: no '=', an empty regex, a target other
// than gpu/cpu, or a regex std::regex rejects.
PlaceOverride parse_place_override(std::string_view text);

struct PlanRequest {
  std::vector<PlacementItem> items;
  int64_t gpu_budget_bytes = 0;  // 0: no GPU; everything on the CPU
  std::vector<PlaceOverride> overrides;
  const ExpertProfile* profile = nullptr;  // ranks the routed experts; nullptr: uniform
};

struct PlacementDecision {
  PlacementItem item;
  Where where = Where::kCpu;
  bool forced = false;  // put there by an override
};

class PlacementPlan {
 public:
  PlacementPlan() = default;
  // Decisions in the request's item order. Throws std::invalid_argument on duplicate names.
  PlacementPlan(std::vector<PlacementDecision> decisions, int64_t gpu_budget_bytes);

  const std::vector<PlacementDecision>& decisions() const { return decisions_; }
  int64_t gpu_budget_bytes() const { return budget_; }
  // Overrides (their text) that matched no item: most likely a typo.
  std::vector<std::string> unmatched_overrides;

  // false for a name that is not an item.
  bool on_gpu(std::string_view name) const;
  bool expert_on_gpu(int64_t layer, int64_t expert) const;
  const PlacementDecision* find(std::string_view name) const;

  int64_t bytes(Where w) const;
  int64_t bytes(TensorKind k, Where w) const;
  int64_t count(TensorKind k, Where w) const;  // items
  // Routed experts on the GPU per layer (index: layer; 0 for layers without experts).
  std::vector<int64_t> gpu_experts_per_layer() const;
  // Whether every item of kind k is on the GPU (true when there are none).
  bool all_on_gpu(TensorKind k) const;

  // Markdown: per kind, the items and bytes on each side, and the totals.
  std::string table() const;
  // {"gpu_budget_bytes", "gpu_bytes", "cpu_bytes", "kinds": {key: {gpu_bytes, cpu_bytes,
  //  gpu_items, cpu_items}}, "unmatched_overrides": [...], "items": [{name, kind, layer,
  //  expert, bytes, where, forced}]}
  nlohmann::json to_json() const;

 private:
  std::vector<PlacementDecision> decisions_;
  int64_t budget_ = 0;
  std::vector<size_t> by_name_;                // decision indices, sorted by item name
  std::vector<std::vector<bool>> gpu_experts_;                // [layer][expert]
};

// Throws std::invalid_argument when the plan is impossible: a negative budget, forced GPU
// items alone over the budget, a KV cache larger than a non-zero budget, or a profile whose
// shape does not match the routed experts (messages name the bytes, budget or file).
PlacementPlan plan_placement(const PlanRequest& request);

// The memory/link roofline the throughput estimate assumes.
struct Roofline {
  double cpu_read_gbps = 0;   // host memory read bandwidth, 1e9 bytes/s
  double gpu_read_gbps = 0;   // device memory read bandwidth
  double link_gbps = 0;       // host <-> device, each direction
  double link_latency_us = 0; // per transfer
};

// The model facts predict() needs beyond the plan.
struct ModelShape {
  int64_t hidden = 0;
  int64_t experts_per_tok = 0;
  int64_t n_routed = 0;
};

// One kind of step, as the roofline sees it.
struct StepEstimate {
  int64_t tokens = 0;  // tokens the step produces (decode: the batch; prefill: the chunk)
  double gpu_bytes = 0, cpu_bytes = 0, link_bytes = 0;  // expected, per step
  int64_t link_transfers = 0;                            // per step
  double gpu_s = 0, cpu_s = 0, link_s = 0;               // per step
  double seconds() const { return gpu_s + cpu_s + link_s; }
  double tokens_per_s() const;
};

struct ThroughputEstimate {
  StepEstimate decode;   // `batch` sequences, one token each
  StepEstimate prefill;  // one chunk of `prefill_tokens` tokens
};

// The memory-wall estimate of a plan. A step's time is the sum (no overlap assumed) of:
//   gpu_s  = GPU weight bytes read / gpu_read_gbps
//   cpu_s  = CPU weight bytes read / cpu_read_gbps
//   link_s = per split layer (a layer with items on both sides), two transfers of
//            tokens x hidden x 4 bytes (activations out and the partial sum back), each
//            paying link_latency_us: 2 x (latency + tokens x hidden x 4 / link_gbps).
// Bytes read per step, on each side:
//   - every non-expert weight item on that side, once (the batch shares the read);
//   - each routed expert E of layer L with probability 1 - (1 - p)^tokens of being picked
//     by at least one of the step's tokens, where p = freq[L][E] from the profile, or
//     experts_per_tok / n_routed without one (for one token: p itself, so a token reads
//     experts_per_tok / n_routed of each layer's expert bytes on average).
//   - the KV cache and the embeddings are not counted (attention reads at most index_topk
//     cached keys per query, the embeddings one row per token).
// Decode runs `batch` tokens per step, prefill `prefill_tokens` (weights are read once for
// the whole chunk: that is the reuse). tokens/s = tokens / seconds. Compute is not
// modelled, so prefill figures are upper bounds (prefill is usually compute-bound).
// Throws std::invalid_argument for non-positive bandwidths, a negative latency, batch or
// prefill_tokens < 1, or experts_per_tok/n_routed missing while the plan has experts.
ThroughputEstimate predict(const PlacementPlan& plan, const Roofline& roofline, const ModelShape& shape,
                           int64_t batch = 1, const ExpertProfile* profile = nullptr, int64_t prefill_tokens = 512);

}  // namespace hearth

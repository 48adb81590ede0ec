// The golden model as placement items (engine/placement_items.h): names, per-item bytes
// against the checkpoint's tensors, totals against Model::footprint, the KV cache size;
// and the per-expert routing counts a forward step reports (ExpertCounts).
#include <doctest/doctest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "engine/forward.h"
#include "engine/model.h"
#include "engine/placement_items.h"
#include "support/golden.h"

namespace engine_placement_items_suite {

using namespace hearth;

namespace {

int64_t kind_bytes(const std::vector<PlacementItem>& items, TensorKind k) {
  int64_t n = 0;
  for (const PlacementItem& it : items)
    if (it.kind == k) n += it.bytes;
  return n;
}

// The bytes of a checkpoint tensor as the model holds it: 1-D vectors (norms, biases) are
// widened to float, everything else stays in its stored format.
int64_t held_bytes(const TensorView& t) { return t.shape.size() == 1 ? t.numel() * 4 : int64_t(t.nbytes); }

}  // namespace

TEST_CASE("placement items: the golden model's items add up to its footprint") {
  const Model model = Model::load(testing::kGoldenDir);
  const ModelConfig& c = model.config();
  const std::vector<PlacementItem> items = placement_items(model, 100, 2);

  // One item per KV cache, embeddings, head, attention per layer, dense MLP per dense layer,
  // router + shared expert + routed experts per MoE layer.
  const int64_t moe_layers = c.num_hidden_layers - c.first_k_dense_replace;
  CHECK(int64_t(items.size()) == 3 + c.num_hidden_layers + c.first_k_dense_replace + moe_layers * (2 + c.n_routed_experts));
  std::set<std::string> names;
  for (const PlacementItem& it : items) names.insert(it.name);
  CHECK(names.size() == items.size());
  for (const char* n : {"kv_cache", "token_embd", "output", "blk.0.attn", "blk.0.ffn", "blk.1.ffn_gate_inp",
                        "blk.3.ffn_shexp", "blk.3.ffn_exps.15"})
    CHECK_MESSAGE(names.count(n), n);
  CHECK_FALSE(names.count("blk.0.ffn_exps.0"));

  // The weight matrices' kinds match the footprint's exactly.
  const ModelFootprint f = model.footprint();
  CHECK(kind_bytes(items, TensorKind::kRoutedExpert) == f.routed_experts.bytes);
  CHECK(kind_bytes(items, TensorKind::kSharedExpert) == f.shared_experts.bytes);
  CHECK(kind_bytes(items, TensorKind::kDenseMlp) == f.dense_mlp.bytes);

  // The rest, classified here by tensor name (the MTP layer apart: never run).
  std::map<TensorKind, int64_t> want;
  int64_t widened = 0;  // what widening the stored 1-D vectors to float adds
  const std::string mtp = "model.layers." + std::to_string(c.num_hidden_layers) + ".";
  for (const auto& [name, t] : model.store().tensors()) {
    if (name.starts_with(mtp)) continue;
    const auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
    if (has(".mlp.experts.") || has(".shared_experts.")) continue;
    if (name.starts_with("model.layers.") && has(".mlp.") && !has(".mlp.gate.")) continue;  // dense MLP
    TensorKind k = TensorKind::kAttention;
    if (has(".mlp.gate.")) k = TensorKind::kRouter;
    else if (name.starts_with("lm_head.") || name == "model.norm.weight") k = TensorKind::kHead;
    else if (has("embed_tokens")) k = TensorKind::kEmbedding;
    else REQUIRE_MESSAGE((has(".self_attn.") || has("input_layernorm") || has("post_attention_layernorm")), name);
    want[k] += held_bytes(t);
    widened += held_bytes(t) - int64_t(t.nbytes);
  }
  for (TensorKind k : {TensorKind::kAttention, TensorKind::kRouter, TensorKind::kHead, TensorKind::kEmbedding}) {
    INFO(tensor_kind_name(k));
    CHECK(kind_bytes(items, k) == want[k]);
  }
  CHECK(widened > 0);
  int64_t weights = 0;
  for (const PlacementItem& it : items)
    if (it.kind != TensorKind::kKvCache) weights += it.bytes;
  CHECK(weights == f.total().bytes - f.mtp.bytes + widened);

  // One routed expert: its three FP8 matrices and their block scales.
  int64_t expert = 0;
  for (const char* proj : {"gate_proj", "up_proj", "down_proj"})
    for (const char* suffix : {".weight", ".weight_scale_inv"})
      expert += int64_t(model.store().tensors().at(std::string("model.layers.2.mlp.experts.5.") + proj + suffix).nbytes);
  for (const PlacementItem& it : items)
    if (it.name == "blk.2.ffn_exps.5") {
      CHECK(it.bytes == expert);
      CHECK(it.layer == 2);
      CHECK(it.expert == 5);
    }

  // KV cache: per token and layer the latent and rope key (padded to 16 bytes), the
  // indexer's FP8 key and its scale; 100 positions take two pages of 64; two sequences.
  const int64_t per_token = (c.kv_lora_rank * 4 + c.qk_rope_head_dim * 4 + 15) / 16 * 16 + c.index_head_dim + 4;
  CHECK(items[0].name == "kv_cache");
  CHECK(items[0].bytes == per_token * c.num_hidden_layers * 128 * 2);
  CHECK(kv_cache_bytes(c, 128, 1) == per_token * c.num_hidden_layers * 128);
  CHECK_THROWS_AS(placement_items(model, 0, 1), std::invalid_argument);
  CHECK_THROWS_AS(placement_items(model, 16, 0), std::invalid_argument);

  const ModelShape s = model_shape(c);
  CHECK(s.hidden == c.hidden_size);
  CHECK(s.experts_per_tok == c.num_experts_per_tok);
  CHECK(s.n_routed == c.n_routed_experts);
}

TEST_CASE("placement items: a forward step counts each token's routed experts per layer") {
  const Model model = Model::load(testing::kGoldenDir);
  const ModelConfig& c = model.config();
  ThreadPool pool(2);
  Forward fwd(model, pool);
  ExpertCounts counts;
  ExpertUsage usage;
  StepProbes probes;
  probes.expert_counts = &counts;
  probes.experts = &usage;
  fwd.set_probes(probes);

  int64_t tokens = 0;
  for (const testing::GoldenCase& g : testing::golden_cases()) {
    KvCache cache(c);
    const SeqId s = cache.add_sequence();
    fwd.step(cache, {{s, g.tokens}}, nullptr);
    tokens += int64_t(g.tokens.size());
  }
  CHECK(counts.tokens == tokens);
  REQUIRE(int64_t(counts.hits.size()) == c.num_hidden_layers);
  int64_t distinct_sum = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    INFO("layer ", l);
    if (!c.is_moe_layer(l)) {
      CHECK(counts.hits[size_t(l)].empty());
      continue;
    }
    REQUIRE(int64_t(counts.hits[size_t(l)].size()) == c.n_routed_experts);
    int64_t sum = 0, used = 0;
    for (int64_t h : counts.hits[size_t(l)]) {
      CHECK(h >= 0);
      sum += h;
      used += h > 0;
    }
    // Every token picks exactly num_experts_per_tok distinct experts in every MoE layer.
    CHECK(sum == tokens * c.num_experts_per_tok);
    CHECK(used >= c.num_experts_per_tok);
    distinct_sum += used;
  }
  // With one step per case, each step's distinct experts (ExpertUsage) are at least those
  // any step hit and at most the steps times that.
  CHECK(usage.distinct_experts >= distinct_sum);
  CHECK(usage.layer_steps == int64_t(testing::golden_cases().size()) * (c.num_hidden_layers - c.first_k_dense_replace));

  counts.reset();
  CHECK(counts.tokens == 0);
  CHECK(counts.hits.empty());
}

}  // namespace engine_placement_items_suite

#include "engine/placement_items.h"

#include <stdexcept>
#include <string>

#include "engine/kv_cache.h"
#include "engine/read_bytes.h"

namespace hearth {

namespace {

int64_t floats(const std::vector<float>& v) { return int64_t(v.size() * sizeof(float)); }

int64_t attention_bytes(const Layer& L) {
  const Attention& a = L.attn;
  int64_t n = weight_read_bytes(a.q_a) + weight_read_bytes(a.q_b) + weight_read_bytes(a.kv_a) +
              weight_read_bytes(a.kv_b) + weight_read_bytes(a.o) + floats(a.q_a_norm) + floats(a.kv_a_norm) +
              floats(L.attn_norm) + floats(L.ffn_norm);
  if (a.has_indexer) {
    const Indexer& ix = a.indexer;
    n += weight_read_bytes(ix.wq_b) + weight_read_bytes(ix.wk) + weight_read_bytes(ix.weights_proj) +
         floats(ix.k_norm_weight) + floats(ix.k_norm_bias);
  }
  return n;
}

}  // namespace

int64_t kv_cache_bytes(const ModelConfig& config, int64_t ctx, int64_t batch) {
  if (ctx < 1) throw std::invalid_argument("the context must be at least 1 token");
  if (batch < 1) throw std::invalid_argument("the batch must be at least 1 sequence");
  const KvCache cache(config);  // allocates nothing until sequences grow
  const int64_t pages = (ctx + cache.page_tokens() - 1) / cache.page_tokens();
  return pages * cache.page_bytes() * batch;
}

std::vector<PlacementItem> placement_items(const Model& model, int64_t ctx, int64_t batch) {
  std::vector<PlacementItem> items;
  items.push_back({"kv_cache", TensorKind::kKvCache, -1, -1, kv_cache_bytes(model.config(), ctx, batch)});
  items.push_back({"token_embd", TensorKind::kEmbedding, -1, -1, weight_read_bytes(model.embed)});
  for (size_t l = 0; l < model.layers.size(); ++l) {
    const Layer& L = model.layers[l];
    const int64_t layer = int64_t(l);
    const std::string blk = "blk." + std::to_string(l) + ".";
    items.push_back({blk + "attn", TensorKind::kAttention, layer, -1, attention_bytes(L)});
    if (!L.is_moe) {
      items.push_back({blk + "ffn", TensorKind::kDenseMlp, layer, -1, mlp_read_bytes(L.dense)});
      continue;
    }
    items.push_back({blk + "ffn_gate_inp", TensorKind::kRouter, layer, -1,
                     weight_read_bytes(L.moe.router) + floats(L.moe.router_bias)});
    if (L.moe.has_shared)
      items.push_back({blk + "ffn_shexp", TensorKind::kSharedExpert, layer, -1, mlp_read_bytes(L.moe.shared)});
    for (size_t e = 0; e < L.moe.experts.size(); ++e)
      items.push_back({blk + "ffn_exps." + std::to_string(e), TensorKind::kRoutedExpert, layer, int64_t(e),
                       mlp_read_bytes(L.moe.experts[e])});
  }
  items.push_back({"output", TensorKind::kHead, -1, -1, weight_read_bytes(model.lm_head) + floats(model.final_norm)});
  return items;
}

ModelShape model_shape(const ModelConfig& c) {
  ModelShape s;
  s.hidden = c.hidden_size;
  s.experts_per_tok = c.num_experts_per_tok;
  s.n_routed = c.n_routed_experts;
  return s;
}

}  // namespace hearth

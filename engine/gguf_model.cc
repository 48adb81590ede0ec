#include "engine/gguf_model.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "quant/block_formats.h"

namespace hearth {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------------------------------
// Names (checked against llama.cpp's llama-arch.cpp tensor table and the DeepSeek
// converter: blk.%d.attn_kv_a_mqa, blk.%d.exp_probs_b, blk.%d.ffn_gate_exps,
// blk.%d.indexer.*, blk.%d.nextn.*).

const std::vector<GgufNamePair> kGlobalNames = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
};

const std::vector<GgufNamePair> kLayerNames = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"self_attn.q_a_proj.weight", "attn_q_a.weight"},
    {"self_attn.q_a_layernorm.weight", "attn_q_a_norm.weight"},
    {"self_attn.q_b_proj.weight", "attn_q_b.weight"},
    {"self_attn.kv_a_proj_with_mqa.weight", "attn_kv_a_mqa.weight"},
    {"self_attn.kv_a_layernorm.weight", "attn_kv_a_norm.weight"},
    {"self_attn.kv_b_proj.weight", "attn_kv_b.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.indexer.wq_b.weight", "indexer.attn_q_b.weight"},
    {"self_attn.indexer.wk.weight", "indexer.attn_k.weight"},
    {"self_attn.indexer.weights_proj.weight", "indexer.proj.weight"},
    {"self_attn.indexer.k_norm.weight", "indexer.k_norm.weight"},
    {"self_attn.indexer.k_norm.bias", "indexer.k_norm.bias"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
    {"mlp.gate.weight", "ffn_gate_inp.weight"},
    {"mlp.gate.e_score_correction_bias", "exp_probs_b.bias"},
    {"mlp.shared_experts.gate_proj.weight", "ffn_gate_shexp.weight"},
    {"mlp.shared_experts.up_proj.weight", "ffn_up_shexp.weight"},
    {"mlp.shared_experts.down_proj.weight", "ffn_down_shexp.weight"},
    // The MTP layer's own tensors.
    {"eh_proj.weight", "nextn.eh_proj.weight"},
    {"enorm.weight", "nextn.enorm.weight"},
    {"hnorm.weight", "nextn.hnorm.weight"},
    {"shared_head.norm.weight", "nextn.shared_head_norm.weight"},
    {"shared_head.head.weight", "nextn.shared_head_head.weight"},
    {"embed_tokens.weight", "nextn.embed_tokens.weight"},
};

const std::vector<GgufNamePair> kExpertNames = {
    {"gate_proj.weight", "ffn_gate_exps.weight"},
    {"up_proj.weight", "ffn_up_exps.weight"},
    {"down_proj.weight", "ffn_down_exps.weight"},
};

constexpr std::string_view kHfLayerPrefix = "model.layers.";
constexpr std::string_view kGgufBlockPrefix = "blk.";

// "<prefix>L.<rest>" -> (L, rest); nullopt when the name is not of that form.
std::optional<std::pair<int64_t, std::string_view>> split_layer(std::string_view name, std::string_view prefix) {
  if (!name.starts_with(prefix)) return std::nullopt;
  name.remove_prefix(prefix.size());
  size_t i = 0;
  int64_t layer = 0;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9' && i < 6) layer = layer * 10 + (name[i++] - '0');
  if (i == 0 || i >= name.size() || name[i] != '.' || (i > 1 && name[0] == '0')) return std::nullopt;
  return std::make_pair(layer, name.substr(i + 1));
}

std::string dims_str(const std::vector<int64_t>& d) {
  std::string out = "[";
  for (size_t i = 0; i < d.size(); ++i) out += (i ? ", " : "") + std::to_string(d[i]);
  return out + "]";
}

// ---------------------------------------------------------------------------------------
// Floats: GGUF stores hyper-parameters as f32; config.json has decimal literals. Reading
// back the shortest decimal that rounds to the stored f32 gives the config's value again
// (1e-06, not 9.99999997e-07), so a config survives the round trip unchanged.

double shortest_decimal(float f) {
  if (!std::isfinite(f)) return double(f);
  char buf[64];
  for (int p = 1; p <= 9; ++p) {
    std::snprintf(buf, sizeof buf, "%.*g", p, double(f));
    const double d = std::strtod(buf, nullptr);
    if (float(d) == f) return d;
  }
  return double(f);
}

// The shortest decimal x with cast(mul * x) == stored (cast: to f32 when the file held an
// f32): the inverse of a value the writer stored as mul * x.
double shortest_inverse(double stored, bool f32, double mul) {
  const double guess = stored / mul;
  if (!std::isfinite(guess)) return guess;
  char buf[64];
  for (int p = 1; p <= 17; ++p) {
    std::snprintf(buf, sizeof buf, "%.*g", p, guess);
    const double x = std::strtod(buf, nullptr);
    if (f32 ? float(mul * x) == float(stored) : mul * x == stored) return x;
  }
  return guess;
}

// ---------------------------------------------------------------------------------------
// Metadata reading, with errors that name the file and the key.

class MetaReader {
 public:
  MetaReader(const GgufFile& f, std::string arch) : f_(f), arch_(std::move(arch)) {}

  std::string key(std::string_view k) const { return arch_ + "." + std::string(k); }
  bool has(std::string_view k) const { return f_.has(key(k)); }

  [[noreturn]] void fail(const std::string& full_key, const std::string& what) const {
    throw std::runtime_error(f_.path().string() + ": metadata key '" + full_key + "': " + what);
  }

  // An integer hyper-parameter (stored as any integer type); `min` is the least sane value.
  int64_t req_int(std::string_view k, int64_t min = 1) const { return check_int(key(k), f_.get_u64(key(k)), min); }
  int64_t opt_int(std::string_view k, int64_t def, int64_t min = 0) const {
    return has(k) ? req_int(k, min) : def;
  }
  int64_t full_opt_int(const std::string& full, int64_t def) const {
    return f_.has(full) ? check_int(full, f_.get_u64(full), 0) : def;
  }
  double req_float(std::string_view k) const {
    const std::string full = key(k);
    const double d = f_.get_f64(full);
    if (!std::isfinite(d)) fail(full, "value is not finite");
    return f_.get(full).type() == GgufType::F32 ? shortest_decimal(float(d)) : d;
  }
  double opt_float(std::string_view k, double def) const { return has(k) ? req_float(k) : def; }
  bool opt_bool(std::string_view k, bool def) const { return has(k) ? f_.get_bool(key(k)) : def; }
  std::optional<std::string> opt_string(std::string_view k) const {
    if (!has(k)) return std::nullopt;
    return f_.get_string(key(k));
  }
  bool is_f32(std::string_view k) const { return f_.get(key(k)).type() == GgufType::F32; }

 private:
  int64_t check_int(const std::string& full, uint64_t v, int64_t min) const {
    // Far above any real model, far below anything that could overflow a size computation;
    // ModelConfig::from_json applies the tighter per-field limits.
    if (v > uint64_t(1) << 40) fail(full, "value " + std::to_string(v) + " is out of range");
    if (int64_t(v) < min) fail(full, "must be at least " + std::to_string(min) + ", got " + std::to_string(v));
    return int64_t(v);
  }

  const GgufFile& f_;
  std::string arch_;
};

// ModelConfig::from_json names Hugging Face fields; errors on a GGUF also name the key
// the field came from.
const std::map<std::string, std::string>& field_keys() {
  static const std::map<std::string, std::string> m = {
      {"vocab_size", "vocab_size"},
      {"hidden_size", "embedding_length"},
      {"intermediate_size", "feed_forward_length"},
      {"moe_intermediate_size", "expert_feed_forward_length"},
      {"num_hidden_layers", "block_count"},
      {"first_k_dense_replace", "leading_dense_block_count"},
      {"moe_layer_freq", "moe_every_n_layers"},
      {"num_attention_heads", "attention.head_count"},
      {"q_lora_rank", "attention.q_lora_rank"},
      {"kv_lora_rank", "attention.kv_lora_rank"},
      {"qk_nope_head_dim", "attention.key_length_mla"},
      {"qk_rope_head_dim", "rope.dimension_count"},
      {"v_head_dim", "attention.value_length_mla"},
      {"n_routed_experts", "expert_count"},
      {"num_experts_per_tok", "expert_used_count"},
      {"n_group", "expert_group_count"},
      {"topk_group", "expert_group_used_count"},
      {"n_shared_experts", "expert_shared_count"},
      {"routed_scaling_factor", "expert_weights_scale"},
      {"rms_norm_eps", "attention.layer_norm_rms_epsilon"},
      {"rope_theta", "rope.freq_base"},
      {"max_position_embeddings", "context_length"},
      {"rope_scaling.factor", "rope.scaling.factor"},
      {"rope_scaling.original_max_position_embeddings", "rope.scaling.original_context_length"},
      {"rope_scaling.beta_fast", "rope.scaling.yarn_beta_fast"},
      {"rope_scaling.beta_slow", "rope.scaling.yarn_beta_slow"},
      {"rope_scaling.mscale_all_dim", "rope.scaling.yarn_log_multiplier"},
      {"index_n_heads", "attention.indexer.head_count"},
      {"index_head_dim", "attention.indexer.key_length"},
      {"index_topk", "attention.indexer.top_k"},
      {"num_nextn_predict_layers", "nextn_predict_layers"},
  };
  return m;
}

// The GGUF name the table gives a Hugging Face name (one the code itself spells).
std::string table_name(const std::vector<GgufNamePair>& table, std::string_view hf) {
  for (const GgufNamePair& p : table)
    if (p.hf == hf) return std::string(p.gguf);
  throw std::logic_error("no GGUF name for '" + std::string(hf) + "'");
}

GgufTensorSpec spec(std::string name, std::vector<int64_t> dims, int64_t layer, GgufTensorKind kind, std::string hf) {
  GgufTensorSpec s;
  s.name = std::move(name);
  s.dims = std::move(dims);
  s.layer = layer;
  s.kind = kind;
  s.hf = std::move(hf);
  return s;
}

// kv_b_proj rebuilt from attn_k_b and attn_v_b (see gguf_weight_store).
struct RebuiltKvB {
  DType dtype;
  std::shared_ptr<uint8_t[]> data;
  uint64_t nbytes;
};

RebuiltKvB rebuild_kv_b(const GgufTensor& kb, const GgufTensor& vb, int64_t n_head, int64_t nope, int64_t v,
                        int64_t kv_lora) {
  const int64_t rows = n_head * (nope + v), cols = kv_lora;
  const GgmlType kt = kb.type(), vt = vb.type();
  const bool same_float = kt == vt && (kt == GgmlType::F32 || kt == GgmlType::F16 || kt == GgmlType::BF16);
  RebuiltKvB out;
  out.dtype = same_float ? *dtype_of(kt) : DType::F32;
  const size_t es = same_float ? dtype_size(out.dtype) : sizeof(float);
  out.nbytes = uint64_t(rows * cols) * es;
  out.data = std::shared_ptr<uint8_t[]>(new uint8_t[std::max<uint64_t>(out.nbytes, 1)]);
  uint8_t* dst = out.data.get();
  const auto* kbytes = static_cast<const uint8_t*>(kb.data);
  const auto* vbytes = static_cast<const uint8_t*>(vb.data);
  const int64_t k_row = row_bytes(kt, nope), v_row = row_bytes(vt, kv_lora);
  std::vector<float> tmp(size_t(std::max(nope, kv_lora)));
  for (int64_t h = 0; h < n_head; ++h) {
    // k_b row (h, c) holds kv_b[h*(nope+v) + i][c] for i < nope.
    for (int64_t c = 0; c < cols; ++c) {
      const uint8_t* src = kbytes + (h * cols + c) * k_row;
      if (same_float) {
        for (int64_t i = 0; i < nope; ++i)
          std::memcpy(dst + ((h * (nope + v) + i) * cols + c) * es, src + i * es, es);
      } else {
        block_format(kt).dequantize_row(src, tmp.data(), nope);
        for (int64_t i = 0; i < nope; ++i)
          reinterpret_cast<float*>(dst)[(h * (nope + v) + i) * cols + c] = tmp[size_t(i)];
      }
    }
    // v_b row (h, j) is kv_b row h*(nope+v) + nope + j.
    for (int64_t j = 0; j < v; ++j) {
      const uint8_t* src = vbytes + (h * v + j) * v_row;
      uint8_t* row = dst + (h * (nope + v) + nope + j) * cols * int64_t(es);
      if (same_float) std::memcpy(row, src, size_t(v_row));
      else block_format(vt).dequantize_row(src, reinterpret_cast<float*>(row), kv_lora);
    }
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Names

std::string_view gguf_architecture(const ModelConfig& c) {
  return c.has_indexer() ? kGgufArchDeepseek32 : kGgufArchDeepseek2;
}

int64_t gguf_block_count(const ModelConfig& c) {
  return c.num_hidden_layers + (c.has_indexer() ? c.num_nextn_predict_layers : 0);
}

const std::vector<GgufNamePair>& gguf_global_names() { return kGlobalNames; }
const std::vector<GgufNamePair>& gguf_layer_names() { return kLayerNames; }
const std::vector<GgufNamePair>& gguf_merged_expert_names() { return kExpertNames; }

std::optional<std::string> gguf_tensor_name(std::string_view hf) {
  for (const GgufNamePair& p : kGlobalNames)
    if (p.hf == hf) return std::string(p.gguf);
  if (auto lr = split_layer(hf, kHfLayerPrefix)) {
    if (lr->second == "self_attn.kv_b_proj.weight") return std::nullopt;  // split into k_b / v_b
    for (const GgufNamePair& p : kLayerNames)
      if (p.hf == lr->second) return std::string(kGgufBlockPrefix) + std::to_string(lr->first) + "." + std::string(p.gguf);
  }
  return std::nullopt;
}

std::optional<std::string> hf_tensor_name(std::string_view gguf) {
  for (const GgufNamePair& p : kGlobalNames)
    if (p.gguf == gguf) return std::string(p.hf);
  if (auto lr = split_layer(gguf, kGgufBlockPrefix))
    for (const GgufNamePair& p : kLayerNames)
      if (p.gguf == lr->second) return std::string(kHfLayerPrefix) + std::to_string(lr->first) + "." + std::string(p.hf);
  return std::nullopt;
}

std::string_view gguf_tensor_kind_name(GgufTensorKind k) {
  switch (k) {
    case GgufTensorKind::kEmbedding: return "embedding";
    case GgufTensorKind::kOutput: return "output";
    case GgufTensorKind::kNorm: return "norm";
    case GgufTensorKind::kAttention: return "attention";
    case GgufTensorKind::kIndexer: return "indexer";
    case GgufTensorKind::kRouter: return "router";
    case GgufTensorKind::kDenseFfn: return "dense_ffn";
    case GgufTensorKind::kSharedExpert: return "shared_expert";
    case GgufTensorKind::kRoutedExperts: return "routed_experts";
    case GgufTensorKind::kMtp: return "mtp";
  }
  return "unknown";
}

int64_t GgufTensorSpec::rows() const {
  int64_t r = 1;
  for (size_t i = 1; i < dims.size(); ++i) r *= dims[i];
  return r;
}

int64_t GgufTensorSpec::numel() const { return row_elems() * rows(); }

std::vector<GgufTensorSpec> gguf_tensor_specs(const ModelConfig& c, bool split_kv_b) {
  using K = GgufTensorKind;
  const int64_t H = c.hidden_size, V = c.vocab_size, nh = c.num_attention_heads;
  const int64_t nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, v = c.v_head_dim, kvl = c.kv_lora_rank;
  std::vector<GgufTensorSpec> out;
  auto global = [&](std::string_view hf, std::vector<int64_t> dims, K kind) {
    out.push_back(spec(table_name(kGlobalNames, hf), std::move(dims), -1, kind, std::string(hf)));
  };
  global("model.embed_tokens.weight", {H, V}, K::kEmbedding);

  for (int64_t L = 0; L < gguf_block_count(c); ++L) {
    const bool mtp = L >= c.num_hidden_layers;
    const std::string b = std::string(kGgufBlockPrefix) + std::to_string(L) + ".";
    const std::string p = std::string(kHfLayerPrefix) + std::to_string(L) + ".";
    const size_t first = out.size();
    auto add_named = [&](std::string_view gguf, std::vector<int64_t> dims, K kind, std::string_view hf) {
      out.push_back(spec(b + std::string(gguf), std::move(dims), L, kind, p + std::string(hf)));
    };
    auto add = [&](std::string_view hf, std::vector<int64_t> dims, K kind) {  // named by the table
      add_named(table_name(kLayerNames, hf), std::move(dims), kind, hf);
    };
    add("input_layernorm.weight", {H}, K::kNorm);
    add("self_attn.q_a_proj.weight", {H, c.q_lora_rank}, K::kAttention);
    add("self_attn.q_a_layernorm.weight", {c.q_lora_rank}, K::kNorm);
    add("self_attn.q_b_proj.weight", {c.q_lora_rank, nh * (nope + rope)}, K::kAttention);
    add("self_attn.kv_a_proj_with_mqa.weight", {H, kvl + rope}, K::kAttention);
    add("self_attn.kv_a_layernorm.weight", {kvl}, K::kNorm);
    if (split_kv_b) {
      add_named(kGgufKB, {nope, kvl, nh}, K::kAttention, "self_attn.kv_b_proj.weight");
      out.back().layout = GgufLayout::kKB;
      add_named(kGgufVB, {kvl, v, nh}, K::kAttention, "self_attn.kv_b_proj.weight");
      out.back().layout = GgufLayout::kVB;
    } else {
      add("self_attn.kv_b_proj.weight", {kvl, nh * (nope + v)}, K::kAttention);  // attn_kv_b
    }
    add("self_attn.o_proj.weight", {nh * v, H}, K::kAttention);
    if (c.has_indexer()) {
      add("self_attn.indexer.wq_b.weight", {c.q_lora_rank, c.index_n_heads * c.index_head_dim}, K::kIndexer);
      add("self_attn.indexer.wk.weight", {H, c.index_head_dim}, K::kIndexer);
      add("self_attn.indexer.k_norm.weight", {c.index_head_dim}, K::kIndexer);
      add("self_attn.indexer.k_norm.bias", {c.index_head_dim}, K::kIndexer);
      add("self_attn.indexer.weights_proj.weight", {H, c.index_n_heads}, K::kIndexer);
    }
    add("post_attention_layernorm.weight", {H}, K::kNorm);
    if (!c.is_moe_layer(L)) {
      const int64_t I = c.intermediate_size;
      add("mlp.gate_proj.weight", {H, I}, K::kDenseFfn);
      add("mlp.up_proj.weight", {H, I}, K::kDenseFfn);
      add("mlp.down_proj.weight", {I, H}, K::kDenseFfn);
    } else {
      const int64_t E = c.n_routed_experts, M = c.moe_intermediate_size;
      add("mlp.gate.weight", {H, E}, K::kRouter);
      if (c.topk_method == "noaux_tc") add("mlp.gate.e_score_correction_bias", {E}, K::kRouter);
      for (const GgufNamePair& n : kExpertNames) {
        const bool down = n.hf.starts_with("down");
        add_named(n.gguf, down ? std::vector<int64_t>{M, H, E} : std::vector<int64_t>{H, M, E}, K::kRoutedExperts,
                  "mlp.experts.");
        GgufTensorSpec& s = out.back();
        s.layout = GgufLayout::kExperts;
        s.n_experts = E;
        s.hf_suffix = std::string(".").append(n.hf);  // (not "." + s: GCC 12 -Wrestrict false positive)
      }
      if (c.n_shared_experts > 0) {
        const int64_t S = M * c.n_shared_experts;
        add("mlp.shared_experts.gate_proj.weight", {H, S}, K::kSharedExpert);
        add("mlp.shared_experts.up_proj.weight", {H, S}, K::kSharedExpert);
        add("mlp.shared_experts.down_proj.weight", {S, H}, K::kSharedExpert);
      }
    }
    if (mtp) {
      add("eh_proj.weight", {2 * H, H}, K::kMtp);
      add("enorm.weight", {H}, K::kNorm);
      add("hnorm.weight", {H}, K::kNorm);
      add("shared_head.norm.weight", {H}, K::kNorm);
      add("shared_head.head.weight", {H, V}, K::kMtp);
      add("embed_tokens.weight", {H, V}, K::kMtp);
      for (size_t i = first; i < out.size(); ++i) out[i].mtp = true;
    }
  }
  global("model.norm.weight", {H}, K::kNorm);
  if (!c.tie_word_embeddings) global("lm_head.weight", {H, V}, K::kOutput);
  return out;
}

// ---------------------------------------------------------------------------------------
// Metadata

std::vector<GgufKeyValue> gguf_model_metadata(const ModelConfig& c, std::string_view name) {
  const std::string arch(gguf_architecture(c));
  std::vector<GgufKeyValue> kv;
  auto put = [&](const std::string& key, GgufValue v) { kv.push_back({key, std::move(v)}); };
  auto u32 = [&](std::string_view k, int64_t v) { put(arch + "." + std::string(k), GgufValue(uint32_t(v))); };
  auto f32 = [&](std::string_view k, double v) { put(arch + "." + std::string(k), GgufValue(float(v))); };

  put("general.architecture", GgufValue(arch));
  put("general.name", GgufValue(name.empty() ? std::string(c.model_type) : std::string(name)));
  u32("block_count", gguf_block_count(c));
  u32("context_length", c.max_position_embeddings);
  u32("embedding_length", c.hidden_size);
  u32("feed_forward_length", c.intermediate_size);
  u32("attention.head_count", c.num_attention_heads);
  u32("attention.head_count_kv", 1);  // MLA runs as MQA over the compressed latent
  if (c.rope_scaling.yarn) {
    put(arch + ".rope.scaling.type", GgufValue("yarn"));
    f32("rope.scaling.factor", c.rope_scaling.factor);
    u32("rope.scaling.original_context_length", c.rope_scaling.original_max_position_embeddings);
    f32("rope.scaling.yarn_beta_fast", c.rope_scaling.beta_fast);
    f32("rope.scaling.yarn_beta_slow", c.rope_scaling.beta_slow);
  }
  f32("rope.freq_base", c.rope_theta);
  f32("attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  u32("expert_used_count", c.num_experts_per_tok);
  u32("expert_group_count", c.n_group);
  u32("expert_group_used_count", c.topk_group);
  u32("expert_gating_func", c.scoring_func == "softmax" ? 1 : 2);  // llama.cpp: 1 softmax, 2 sigmoid
  u32("leading_dense_block_count", c.first_k_dense_replace);
  u32("vocab_size", c.vocab_size);
  u32("attention.q_lora_rank", c.q_lora_rank);
  u32("attention.kv_lora_rank", c.kv_lora_rank);
  u32("attention.key_length", c.kv_lora_rank + c.qk_rope_head_dim);
  u32("attention.value_length", c.kv_lora_rank);
  u32("attention.key_length_mla", c.qk_nope_head_dim + c.qk_rope_head_dim);
  u32("attention.value_length_mla", c.v_head_dim);
  u32("expert_feed_forward_length", c.moe_intermediate_size);
  u32("expert_count", c.n_routed_experts);
  u32("expert_shared_count", c.n_shared_experts);
  f32("expert_weights_scale", c.routed_scaling_factor);
  put(arch + ".expert_weights_norm", GgufValue(c.norm_topk_prob));
  u32("rope.dimension_count", c.qk_rope_head_dim);
  if (c.rope_scaling.yarn) f32("rope.scaling.yarn_log_multiplier", 0.1 * c.rope_scaling.mscale_all_dim);
  if (c.has_indexer()) {
    u32("nextn_predict_layers", c.num_nextn_predict_layers);
    u32("attention.indexer.head_count", c.index_n_heads);
    u32("attention.indexer.key_length", c.index_head_dim);
    u32("attention.indexer.top_k", c.index_topk);
  }
  // What llama.cpp's schema cannot say, only where a reader would infer something else.
  if (c.moe_layer_freq != 1) u32("moe_every_n_layers", c.moe_layer_freq);
  if (c.rope_scaling.yarn && c.rope_scaling.mscale != c.rope_scaling.mscale_all_dim)
    put("hearth.rope.scaling.mscale", GgufValue(float(c.rope_scaling.mscale)));
  return kv;
}

void add_gguf_model_metadata(GgufWriter& w, const ModelConfig& c, std::string_view name) {
  for (GgufKeyValue& kv : gguf_model_metadata(c, name)) w.add(kv.key, std::move(kv.value));
}

ModelConfig config_from_gguf(const GgufFile& file) {
  // A set of one that does not own the file: it lives only for this call.
  return config_from_gguf(GgufShards(std::shared_ptr<const GgufFile>(std::shared_ptr<const GgufFile>(), &file)));
}

ModelConfig config_from_gguf(const GgufShards& shards) {
  const GgufFile& f = shards.first();  // the metadata; tensors may be in any shard
  const std::string path = f.path().string();
  const std::string arch = f.get_string("general.architecture");
  std::string model_type;
  if (arch == kGgufArchDeepseek32) model_type = "deepseek_v32";
  else if (arch == kGgufArchDeepseek2) model_type = "deepseek_v3";
  else
    throw std::runtime_error(path + ": unsupported architecture '" + arch + "' (hearth runs " +
                             std::string(kGgufArchDeepseek2) + " and " + std::string(kGgufArchDeepseek32) + ")");
  const MetaReader r(f, arch);

  json j;
  j["model_type"] = model_type;
  const int64_t blocks = r.req_int("block_count");
  const int64_t nextn = r.opt_int("nextn_predict_layers", 0);
  if (nextn >= blocks)
    r.fail(r.key("nextn_predict_layers"), "value " + std::to_string(nextn) + " leaves no layers of the " +
                                              std::to_string(blocks) + " blocks");
  j["num_hidden_layers"] = blocks - nextn;
  j["num_nextn_predict_layers"] = nextn;
  j["max_position_embeddings"] = r.req_int("context_length");
  j["hidden_size"] = r.req_int("embedding_length");
  j["intermediate_size"] = r.req_int("feed_forward_length");
  const int64_t n_head = r.req_int("attention.head_count");
  j["num_attention_heads"] = n_head;
  if (r.has("attention.head_count_kv")) {
    const int64_t kv = r.req_int("attention.head_count_kv");
    if (kv != 1 && kv != n_head)
      r.fail(r.key("attention.head_count_kv"), "expected 1 (MLA as MQA) or the head count " +
                                                   std::to_string(n_head) + ", got " + std::to_string(kv));
  }
  j["rms_norm_eps"] = r.req_float("attention.layer_norm_rms_epsilon");
  j["rope_theta"] = r.opt_float("rope.freq_base", 10000.0);
  j["first_k_dense_replace"] = r.req_int("leading_dense_block_count", 0);
  j["moe_layer_freq"] = r.opt_int("moe_every_n_layers", 1, 1);

  if (r.has("vocab_size")) {
    j["vocab_size"] = r.req_int("vocab_size");
  } else if (const GgufTensor* t = shards.find_tensor("token_embd.weight"); t && t->dims.size() == 2) {
    j["vocab_size"] = t->dims[1];
  } else {
    throw std::runtime_error(path + ": missing metadata key '" + r.key("vocab_size") + "' (and no token_embd.weight)");
  }

  j["q_lora_rank"] = r.req_int("attention.q_lora_rank");
  const int64_t kv_lora = r.req_int("attention.kv_lora_rank");
  j["kv_lora_rank"] = kv_lora;
  const int64_t rope = r.req_int("rope.dimension_count");
  j["qk_rope_head_dim"] = rope;
  // Current files: key_length_mla = nope + rope, value_length_mla = v (key_length and
  // value_length describe the compressed cache). Older files: key_length and
  // value_length are the per-head sizes themselves.
  const bool mla = r.has("attention.key_length_mla");
  const char* klen = mla ? "attention.key_length_mla" : "attention.key_length";
  const char* vlen = mla ? "attention.value_length_mla" : "attention.value_length";
  const int64_t k_head = r.req_int(klen);
  if (k_head <= rope)
    r.fail(r.key(klen), "value " + std::to_string(k_head) + " must exceed the rope dimension " + std::to_string(rope));
  j["qk_nope_head_dim"] = k_head - rope;
  j["v_head_dim"] = r.req_int(vlen);

  j["moe_intermediate_size"] = r.req_int("expert_feed_forward_length");
  j["n_routed_experts"] = r.req_int("expert_count");
  j["num_experts_per_tok"] = r.req_int("expert_used_count");
  const int64_t groups = r.opt_int("expert_group_count", 1, 0);
  j["n_group"] = std::max<int64_t>(groups, 1);  // 0: llama.cpp's "no groups"
  j["topk_group"] = std::max<int64_t>(r.opt_int("expert_group_used_count", 1, 0), 1);
  j["n_shared_experts"] = r.opt_int("expert_shared_count", 0);
  j["routed_scaling_factor"] = r.opt_float("expert_weights_scale", 1.0);
  j["norm_topk_prob"] = r.opt_bool("expert_weights_norm", false);
  const int64_t gating = r.opt_int("expert_gating_func", arch == kGgufArchDeepseek32 ? 2 : 1, 1);
  if (gating != 1 && gating != 2)
    r.fail(r.key("expert_gating_func"), "unsupported value " + std::to_string(gating) + " (1 softmax, 2 sigmoid)");
  j["scoring_func"] = gating == 2 ? "sigmoid" : "softmax";
  // llama.cpp has no top-k method key: DeepSeek-V3's sigmoid router corrects the
  // selection with exp_probs_b (noaux_tc); V2's softmax router selects greedily, by groups
  // when it has them.
  j["topk_method"] = gating == 2 ? "noaux_tc" : (groups > 1 ? "group_limited_greedy" : "greedy");

  if (const std::optional<std::string> type = r.opt_string("rope.scaling.type"); type && *type != "none") {
    if (*type != "yarn") r.fail(r.key("rope.scaling.type"), "unsupported rope scaling '" + *type + "' (hearth supports yarn)");
    json y;
    y["type"] = "yarn";
    y["factor"] = r.req_float("rope.scaling.factor");
    y["original_max_position_embeddings"] = r.opt_int("rope.scaling.original_context_length", 4096, 1);
    y["beta_fast"] = r.opt_float("rope.scaling.yarn_beta_fast", 32.0);
    y["beta_slow"] = r.opt_float("rope.scaling.yarn_beta_slow", 1.0);
    double mscale_all_dim = 0.0;
    if (r.has("rope.scaling.yarn_log_multiplier")) {
      const double lm = f.get_f64(r.key("rope.scaling.yarn_log_multiplier"));
      mscale_all_dim = shortest_inverse(lm, r.is_f32("rope.scaling.yarn_log_multiplier"), 0.1);
    }
    y["mscale_all_dim"] = mscale_all_dim;
    // llama.cpp scales the rotation as if mscale == mscale_all_dim (true of every DeepSeek
    // release); hearth writes the key only where they differ.
    if (f.has("hearth.rope.scaling.mscale")) {
      const double m = f.get_f64("hearth.rope.scaling.mscale");
      y["mscale"] = f.get("hearth.rope.scaling.mscale").type() == GgufType::F32 ? shortest_decimal(float(m)) : m;
    } else {
      y["mscale"] = mscale_all_dim;
    }
    j["rope_scaling"] = y;
  }

  if (arch == kGgufArchDeepseek32) {
    j["index_n_heads"] = r.req_int("attention.indexer.head_count");
    j["index_head_dim"] = r.req_int("attention.indexer.key_length");
    j["index_topk"] = r.req_int("attention.indexer.top_k");
  }
  j["bos_token_id"] = r.full_opt_int("tokenizer.ggml.bos_token_id", 0);
  j["eos_token_id"] = r.full_opt_int("tokenizer.ggml.eos_token_id", 1);
  j["tie_word_embeddings"] = shards.find_tensor("token_embd.weight") && !shards.find_tensor("output.weight");

  try {
    return ModelConfig::from_json(j, path);
  } catch (const std::runtime_error& e) {
    // "PATH: field 'NAME': ..." -> also name the GGUF key NAME came from.
    std::string msg = e.what();
    const size_t at = msg.find("field '");
    if (at != std::string::npos) {
      const size_t end = msg.find('\'', at + 7);
      const std::string field = msg.substr(at + 7, end - at - 7);
      const auto& keys = field_keys();
      if (auto it = keys.find(field); it != keys.end()) msg += " (metadata key '" + arch + "." + it->second + "')";
      else if (field == "bos_token_id" || field == "eos_token_id") msg += " (metadata key 'tokenizer.ggml." + field + "')";
      else if (field == "rope_scaling.mscale") msg += " (metadata key 'hearth.rope.scaling.mscale')";
    }
    throw std::runtime_error(msg);
  }
}

// ---------------------------------------------------------------------------------------
// Tensors

WeightStore gguf_weight_store(std::shared_ptr<const GgufFile> file, const ModelConfig& c) {
  return gguf_weight_store(std::make_shared<const GgufShards>(std::move(file)), c);
}

WeightStore gguf_weight_store(std::shared_ptr<const GgufShards> shards, const ModelConfig& c) {
  const GgufShards& f = *shards;
  const std::string path = f.first().path().string();  // the model, as the user named it
  std::vector<TensorView> views;
  std::vector<std::shared_ptr<const void>> keepalive{shards};
  auto where = [&](const GgufTensor& t) { return f.path_of(t).string(); };  // the shard that holds t

  auto dtype = [&](const GgufTensor& t) {
    const std::optional<DType> d = dtype_of(t.type());
    if (!d)
      throw std::runtime_error(where(t) + ": tensor '" + t.name + "' is " + std::string(t.format->name) +
                               ", which hearth cannot use as a weight");
    return *d;
  };
  auto view = [&](std::string hf, const GgufTensor& t, std::vector<int64_t> shape, const void* data, uint64_t nbytes) {
    TensorView v;
    v.name = std::move(hf);
    v.dtype = dtype(t);
    v.shape = std::move(shape);
    v.data = data;
    v.nbytes = nbytes;
    v.file = where(t);
    views.push_back(std::move(v));
  };
  auto find = [&](const GgufTensorSpec& s) -> const GgufTensor* {
    const GgufTensor* t = f.find_tensor(s.name);
    if (t && t->dims != s.dims)
      throw std::runtime_error(where(*t) + ": tensor '" + s.name + "' has ne " + dims_str(t->dims) + ", the config implies " +
                               dims_str(s.dims));
    return t;
  };
  auto missing = [&](const GgufTensorSpec& s, const std::string& alternative = "") {
    throw std::runtime_error(path + ": missing tensor '" + s.name + "'" + alternative + " (Hugging Face '" +
                             (s.layout == GgufLayout::kExperts ? s.expert_hf(0) : s.hf) + "')");
  };

  const std::vector<GgufTensorSpec> specs = gguf_tensor_specs(c, true);
  for (size_t i = 0; i < specs.size(); ++i) {
    const GgufTensorSpec& s = specs[i];
    if (s.layout == GgufLayout::kVB) continue;  // handled with its kKB
    if (s.layout == GgufLayout::kKB) {
      const GgufTensorSpec& vs = specs[i + 1];
      GgufTensorSpec whole = s;  // the attn_kv_b form, as older files have it
      whole.name = s.name.substr(0, s.name.size() - kGgufKB.size()) + std::string(kGgufKvB);
      whole.dims = {c.kv_lora_rank, c.num_attention_heads * (c.qk_nope_head_dim + c.v_head_dim)};
      const std::vector<int64_t> shape{whole.dims[1], whole.dims[0]};
      if (const GgufTensor* kvb = find(whole)) {
        view(s.hf, *kvb, shape, kvb->data, kvb->nbytes);
        continue;
      }
      const GgufTensor* kb = find(s);
      const GgufTensor* vb = find(vs);
      if (!kb || !vb) {
        if (s.mtp) continue;
        if (kb || vb) missing(kb ? vs : s);
        missing(whole, " (or attn_k_b + attn_v_b)");
      }
      (void)dtype(*kb);
      (void)dtype(*vb);
      // The prefill path wants kv_b whole, so it is rebuilt: exact, in the files' own
      // element type when both are F32, F16 or BF16, else as F32 (the block formats are
      // decoded). The cost is a resident copy of every layer's kv_b: for DeepSeek-V3
      // (61 + 1 layers of 128 heads x 256 rows x 512) about 2 GB at 16 bits and 4 GB as
      // F32, in exchange for reading llama.cpp's current files unchanged.
      RebuiltKvB rb = rebuild_kv_b(*kb, *vb, c.num_attention_heads, c.qk_nope_head_dim, c.v_head_dim, c.kv_lora_rank);
      TensorView v;
      v.name = s.hf;
      v.dtype = rb.dtype;
      v.shape = shape;
      v.data = rb.data.get();
      v.nbytes = rb.nbytes;
      v.file = where(*kb);
      views.push_back(std::move(v));
      keepalive.push_back(std::move(rb.data));
      if (rb.dtype == DType::F32 && dtype(*kb) != DType::F32) {
        // Block formats: the F32 kv_b is 2-4x the files' bytes, and a decode step reads all
        // of it. Absorbed attention uses k_b and v_b as they are instead (Attention::k_b):
        // k_b's rows are W_uk's columns, the rows a query's latent projection dots with.
        const std::string stem = s.hf.substr(0, s.hf.size() - std::string_view("kv_b_proj.weight").size());
        const int64_t nh = c.num_attention_heads;
        view(stem + "k_b_proj.weight", *kb, {nh * c.kv_lora_rank, c.qk_nope_head_dim}, kb->data, kb->nbytes);
        view(stem + "v_b_proj.weight", *vb, {nh * c.v_head_dim, c.kv_lora_rank}, vb->data, vb->nbytes);
      }
      continue;
    }
    const GgufTensor* t = find(s);
    if (!t) {
      if (s.mtp) continue;
      missing(s);
    }
    if (s.layout == GgufLayout::kExperts) {
      // Expert e is the contiguous slice [e * rows * row_bytes, (e + 1) * ...).
      const uint64_t slice = uint64_t(row_bytes(t->type(), s.dims[0]) * s.dims[1]);
      for (int64_t e = 0; e < s.n_experts; ++e)
        view(s.expert_hf(e), *t, {s.dims[1], s.dims[0]}, static_cast<const uint8_t*>(t->data) + uint64_t(e) * slice, slice);
      continue;
    }
    view(s.hf, *t, t->shape(), t->data, t->nbytes);
  }
  if (c.tie_word_embeddings)  // the head is the embedding table
    if (const GgufTensor* t = f.find_tensor("token_embd.weight")) view("lm_head.weight", *t, t->shape(), t->data, t->nbytes);
  return WeightStore::from_views(f.first().path(), std::move(views), std::move(keepalive));
}

bool is_gguf_file(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return false;
  std::string ext = path.extension().string();
  for (char& ch : ext) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  if (ext == ".gguf") return true;
  char magic[4] = {};
  std::ifstream in(path, std::ios::binary);
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

OpenCheckpoint open_checkpoint(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    if (!fs::exists(path / "config.json", ec)) {
      // A folder of downloaded GGUF files: say which file to give instead.
      std::vector<std::string> ggufs;
      for (const auto& e : fs::directory_iterator(path, ec))
        if (e.path().extension() == ".gguf") ggufs.push_back(e.path().filename().string());
      std::sort(ggufs.begin(), ggufs.end());
      if (!ggufs.empty()) {
        const auto first = std::find_if(ggufs.begin(), ggufs.end(), [](const std::string& n) { return n.find("-00001-of-") != std::string::npos; });
        throw std::runtime_error("model '" + path.string() + "' is a folder of GGUF files without config.json: give one file, e.g. " +
                                 (path / (first != ggufs.end() ? *first : ggufs.front())).string() +
                                 (first != ggufs.end() ? " (a split model's first shard)" : ""));
      }
    }
    OpenCheckpoint o;
    o.config = ModelConfig::load(path / "config.json");
    o.store = WeightStore::open(path);
    return o;
  }
  if (is_gguf_file(path)) {
    auto shards = std::make_shared<const GgufShards>(GgufShards::open(path));
    OpenCheckpoint o;
    o.config = config_from_gguf(*shards);
    o.store = gguf_weight_store(shards, o.config);
    o.gguf = std::move(shards);
    return o;
  }
  if (fs::exists(path, ec))
    throw std::runtime_error("model '" + path.string() +
                             "' is neither a directory (config.json + safetensors) nor a GGUF file");
  throw std::runtime_error("model '" + path.string() + "' does not exist (expected a directory or a .gguf file)");
}

}  // namespace hearth

// The model's shape and hyper-parameters, parsed once from a Hugging Face config.json
// (model_type deepseek_v3 or deepseek_v32) and validated before anything is loaded.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace hearth {

struct RopeScaling {
  bool yarn = false;  // false: plain RoPE with rope_theta
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
};

struct Fp8Quantization {
  bool present = false;  // quantization_config with quant_method "fp8"
  std::string fmt = "e4m3";
  std::string scale_fmt;  // "ue8m0" on V3.2 (scales are powers of two); may be empty
  int64_t block_rows = 128, block_cols = 128;
};

struct ModelConfig {
  std::string model_type;  // "deepseek_v3" | "deepseek_v32"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;      // dense MLP layers
  int64_t moe_intermediate_size = 0;  // each routed / shared expert
  int64_t num_hidden_layers = 0;
  int64_t first_k_dense_replace = 0;  // layers [0, k) are dense, the rest MoE
  int64_t moe_layer_freq = 1;
  int64_t num_attention_heads = 0;
  int64_t q_lora_rank = 0;
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  int64_t n_routed_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  int64_t n_shared_experts = 0;
  double routed_scaling_factor = 1.0;
  std::string scoring_func = "sigmoid";
  std::string topk_method = "noaux_tc";
  bool norm_topk_prob = true;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 0;
  // DSA lightning indexer (deepseek_v32 only; zero heads on deepseek_v3).
  int64_t index_n_heads = 0;
  int64_t index_head_dim = 0;
  int64_t index_topk = 0;
  int64_t num_nextn_predict_layers = 0;
  int64_t bos_token_id = 0;
  int64_t eos_token_id = 1;
  bool tie_word_embeddings = false;
  Fp8Quantization quantization;

  bool has_indexer() const { return model_type == "deepseek_v32"; }
  bool is_moe_layer(int64_t layer) const {
    return layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  // Softmax scale of MLA: qk_head_dim^-0.5, times mscale^2 under YaRN.
  double attention_scale() const;

  // Throws std::runtime_error naming `source` and the field on any missing, mistyped or
  // absurd value.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& source = "config.json");
  static ModelConfig load(const std::filesystem::path& config_json);
  nlohmann::json to_json() const;  // the HF config.json form, as synth writes it
};

}  // namespace hearth

#include "engine/config.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace hearth {
namespace {

using nlohmann::json;

// Sane upper bounds: far above any real DeepSeek model, far below anything that would
// overflow a size computation or ask for absurd amounts of memory.
constexpr int64_t kMaxHidden = int64_t(1) << 20;
constexpr int64_t kMaxVocab = int64_t(1) << 24;
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxExperts = 4096;
constexpr int64_t kMaxHeads = 1024;
constexpr int64_t kMaxHeadDim = 4096;
constexpr int64_t kMaxRopeDim = 512;  // Rope keeps one position's angles on the stack
constexpr int64_t kMaxPositions = int64_t(1) << 26;
constexpr int64_t kIndexerHadamard = 128;

std::string type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_float: return "a non-integer number";
    default: return "a number";
  }
}

// Reads and validates the fields of one JSON object; every error is one line
// "SOURCE: field 'PREFIX.NAME': what is wrong".
class Reader {
 public:
  Reader(const json& obj, const std::string& source, std::string prefix = "")
      : obj_(obj), source_(source), prefix_(std::move(prefix)) {}

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw std::runtime_error(source_ + ": field '" + prefix_ + field + "': " + what);
  }

  // The value of `field`, or nullptr when absent (or JSON null and null_is_absent).
  const json* find(const std::string& field, bool null_is_absent = true) const {
    auto it = obj_.find(field);
    if (it == obj_.end()) return nullptr;
    if (null_is_absent && it->is_null()) return nullptr;
    return &*it;
  }
  const json& need(const std::string& field) const {
    const json* v = find(field);
    if (!v) fail(field, "missing (required)");
    return *v;
  }

  int64_t to_int(const std::string& field, const json& v) const {
    if (v.is_number_integer()) {
      if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
        fail(field, "value " + v.dump() + " is out of range");
      return v.get<int64_t>();
    }
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) return int64_t(d);
      fail(field, "expected an integer, got " + v.dump());
    }
    fail(field, "expected an integer, got " + type_name(v) + " (" + v.dump() + ")");
  }
  double to_double(const std::string& field, const json& v) const {
    if (!v.is_number()) fail(field, "expected a number, got " + type_name(v) + " (" + v.dump() + ")");
    const double d = v.get<double>();
    if (!std::isfinite(d)) fail(field, "value is not finite");
    return d;
  }

  int64_t req_int(const std::string& field) const { return to_int(field, need(field)); }
  int64_t opt_int(const std::string& field, int64_t def) const {
    const json* v = find(field);
    return v ? to_int(field, *v) : def;
  }
  double req_double(const std::string& field) const { return to_double(field, need(field)); }
  double opt_double(const std::string& field, double def) const {
    const json* v = find(field);
    return v ? to_double(field, *v) : def;
  }
  std::string opt_string(const std::string& field, const std::string& def) const {
    const json* v = find(field);
    if (!v) return def;
    if (!v->is_string()) fail(field, "expected a string, got " + type_name(*v) + " (" + v->dump() + ")");
    return v->get<std::string>();
  }
  bool opt_bool(const std::string& field, bool def) const {
    const json* v = find(field);
    if (!v) return def;
    if (!v->is_boolean()) fail(field, "expected true or false, got " + type_name(*v) + " (" + v->dump() + ")");
    return v->get<bool>();
  }

  // Range checks that name the field.
  void in_range(const std::string& field, int64_t v, int64_t lo, int64_t hi) const {
    if (v < lo || v > hi)
      fail(field, "value " + std::to_string(v) + " is out of range [" + std::to_string(lo) + ", " +
                      std::to_string(hi) + "]");
  }
  void positive(const std::string& field, int64_t v, int64_t hi) const {
    if (v <= 0) fail(field, "must be positive, got " + std::to_string(v));
    if (v > hi)
      fail(field, "value " + std::to_string(v) + " is above the sane limit " + std::to_string(hi));
  }

 private:
  const json& obj_;
  const std::string& source_;
  std::string prefix_;
};

std::string fmt_double(double d) {
  std::ostringstream s;
  s << d;
  return s.str();
}

}  // namespace

double ModelConfig::attention_scale() const {
  double scale = 1.0 / std::sqrt(double(qk_head_dim()));
  if (rope_scaling.yarn && rope_scaling.factor > 1.0) {
    const double m = 0.1 * rope_scaling.mscale_all_dim * std::log(rope_scaling.factor) + 1.0;
    scale *= m * m;
  }
  return scale;
}

ModelConfig ModelConfig::from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw std::runtime_error(source + ": expected a JSON object, got " + type_name(j));
  Reader r(j, source);
  ModelConfig c;

  const json* mt = r.find("model_type");
  if (!mt) r.fail("model_type", "missing (required; hearth runs deepseek_v3 and deepseek_v32)");
  if (!mt->is_string()) r.fail("model_type", "expected a string, got " + type_name(*mt));
  c.model_type = mt->get<std::string>();
  if (c.model_type != "deepseek_v3" && c.model_type != "deepseek_v32")
    throw std::runtime_error(source + ": unsupported model_type '" + c.model_type +
                             "' (hearth runs deepseek_v3 and deepseek_v32)");

  c.vocab_size = r.req_int("vocab_size");
  r.positive("vocab_size", c.vocab_size, kMaxVocab);
  c.hidden_size = r.req_int("hidden_size");
  r.positive("hidden_size", c.hidden_size, kMaxHidden);
  c.intermediate_size = r.req_int("intermediate_size");
  r.positive("intermediate_size", c.intermediate_size, kMaxHidden);
  c.moe_intermediate_size = r.req_int("moe_intermediate_size");
  r.positive("moe_intermediate_size", c.moe_intermediate_size, kMaxHidden);
  c.num_hidden_layers = r.req_int("num_hidden_layers");
  r.positive("num_hidden_layers", c.num_hidden_layers, kMaxLayers);
  c.num_attention_heads = r.req_int("num_attention_heads");
  r.positive("num_attention_heads", c.num_attention_heads, kMaxHeads);
  c.q_lora_rank = r.req_int("q_lora_rank");
  r.positive("q_lora_rank", c.q_lora_rank, kMaxHidden);
  c.kv_lora_rank = r.req_int("kv_lora_rank");
  r.positive("kv_lora_rank", c.kv_lora_rank, kMaxHidden);
  c.qk_nope_head_dim = r.req_int("qk_nope_head_dim");
  r.positive("qk_nope_head_dim", c.qk_nope_head_dim, kMaxHeadDim);
  c.qk_rope_head_dim = r.req_int("qk_rope_head_dim");
  r.positive("qk_rope_head_dim", c.qk_rope_head_dim, kMaxRopeDim);
  if (c.qk_rope_head_dim % 2 != 0)
    r.fail("qk_rope_head_dim", "must be even (RoPE rotates pairs), got " + std::to_string(c.qk_rope_head_dim));
  c.v_head_dim = r.req_int("v_head_dim");
  r.positive("v_head_dim", c.v_head_dim, kMaxHeadDim);

  c.n_routed_experts = r.req_int("n_routed_experts");
  r.positive("n_routed_experts", c.n_routed_experts, kMaxExperts);
  c.num_experts_per_tok = r.req_int("num_experts_per_tok");
  r.positive("num_experts_per_tok", c.num_experts_per_tok, kMaxExperts);
  if (c.num_experts_per_tok > c.n_routed_experts)
    r.fail("num_experts_per_tok", "value " + std::to_string(c.num_experts_per_tok) + " exceeds n_routed_experts (" +
                                      std::to_string(c.n_routed_experts) + ")");
  c.n_group = r.opt_int("n_group", 1);
  r.positive("n_group", c.n_group, kMaxExperts);
  if (c.n_routed_experts % c.n_group != 0)
    r.fail("n_group", "n_routed_experts (" + std::to_string(c.n_routed_experts) + ") is not divisible by n_group (" +
                          std::to_string(c.n_group) + ")");
  c.topk_group = r.opt_int("topk_group", 1);
  r.positive("topk_group", c.topk_group, kMaxExperts);
  if (c.topk_group > c.n_group)
    r.fail("topk_group", "value " + std::to_string(c.topk_group) + " exceeds n_group (" + std::to_string(c.n_group) +
                             ")");
  if (c.num_experts_per_tok > c.topk_group * (c.n_routed_experts / c.n_group))
    r.fail("num_experts_per_tok", "value " + std::to_string(c.num_experts_per_tok) + " exceeds the " +
                                      std::to_string(c.topk_group * (c.n_routed_experts / c.n_group)) +
                                      " experts in the topk_group selected groups");
  c.n_shared_experts = r.opt_int("n_shared_experts", 0);
  r.in_range("n_shared_experts", c.n_shared_experts, 0, 64);
  c.routed_scaling_factor = r.opt_double("routed_scaling_factor", 1.0);
  if (!(c.routed_scaling_factor > 0.0))
    r.fail("routed_scaling_factor", "must be positive, got " + fmt_double(c.routed_scaling_factor));
  c.scoring_func = r.opt_string("scoring_func", "sigmoid");
  if (c.scoring_func != "sigmoid" && c.scoring_func != "softmax")
    r.fail("scoring_func", "unsupported value '" + c.scoring_func + "' (expected sigmoid or softmax)");
  c.topk_method = r.opt_string("topk_method", "noaux_tc");
  if (c.topk_method != "noaux_tc" && c.topk_method != "greedy" && c.topk_method != "group_limited_greedy")
    r.fail("topk_method",
           "unsupported value '" + c.topk_method + "' (expected noaux_tc, greedy or group_limited_greedy)");
  c.norm_topk_prob = r.opt_bool("norm_topk_prob", true);

  c.first_k_dense_replace = r.req_int("first_k_dense_replace");
  r.in_range("first_k_dense_replace", c.first_k_dense_replace, 0, c.num_hidden_layers);
  c.moe_layer_freq = r.opt_int("moe_layer_freq", 1);
  r.positive("moe_layer_freq", c.moe_layer_freq, kMaxLayers);

  c.rms_norm_eps = r.req_double("rms_norm_eps");
  if (!(c.rms_norm_eps > 0.0 && c.rms_norm_eps < 1.0))
    r.fail("rms_norm_eps", "must be in (0, 1), got " + fmt_double(c.rms_norm_eps));
  c.rope_theta = r.req_double("rope_theta");
  if (!(c.rope_theta > 0.0)) r.fail("rope_theta", "must be positive, got " + fmt_double(c.rope_theta));
  c.max_position_embeddings = r.req_int("max_position_embeddings");
  r.positive("max_position_embeddings", c.max_position_embeddings, kMaxPositions);

  if (const json* rs = r.find("rope_scaling")) {
    if (!rs->is_object()) r.fail("rope_scaling", "expected an object or null, got " + type_name(*rs));
    Reader y(*rs, source, "rope_scaling.");
    std::string type;
    if (y.find("type")) type = y.opt_string("type", "");
    else if (y.find("rope_type")) type = y.opt_string("rope_type", "");
    else y.fail("type", "missing (expected \"yarn\")");
    if (type == "default" || type == "none") {
      c.rope_scaling = RopeScaling{};
    } else if (type != "yarn") {
      y.fail(y.find("type") ? "type" : "rope_type", "unsupported rope type '" + type + "' (hearth supports yarn)");
    } else {
      RopeScaling& s = c.rope_scaling;
      s.yarn = true;
      s.factor = y.req_double("factor");
      if (!(s.factor >= 1.0)) y.fail("factor", "must be at least 1, got " + fmt_double(s.factor));
      s.original_max_position_embeddings = y.opt_int("original_max_position_embeddings", 4096);
      y.positive("original_max_position_embeddings", s.original_max_position_embeddings, kMaxPositions);
      s.beta_fast = y.opt_double("beta_fast", 32.0);
      s.beta_slow = y.opt_double("beta_slow", 1.0);
      if (!(s.beta_slow > 0.0)) y.fail("beta_slow", "must be positive, got " + fmt_double(s.beta_slow));
      if (!(s.beta_fast > s.beta_slow))
        y.fail("beta_fast", "must exceed beta_slow (" + fmt_double(s.beta_slow) + "), got " + fmt_double(s.beta_fast));
      s.mscale = y.opt_double("mscale", 1.0);
      if (!(s.mscale >= 0.0)) y.fail("mscale", "must not be negative, got " + fmt_double(s.mscale));
      s.mscale_all_dim = y.opt_double("mscale_all_dim", 0.0);
      if (!(s.mscale_all_dim >= 0.0))
        y.fail("mscale_all_dim", "must not be negative, got " + fmt_double(s.mscale_all_dim));
    }
  }

  if (c.has_indexer()) {
    c.index_n_heads = r.req_int("index_n_heads");
    r.positive("index_n_heads", c.index_n_heads, kMaxHeads);
    c.index_head_dim = r.req_int("index_head_dim");
    r.positive("index_head_dim", c.index_head_dim, kMaxHeadDim);
    if (c.index_head_dim < c.qk_rope_head_dim)
      r.fail("index_head_dim", "value " + std::to_string(c.index_head_dim) + " is smaller than qk_rope_head_dim (" +
                                   std::to_string(c.qk_rope_head_dim) + ")");
    if (c.index_head_dim != kIndexerHadamard)
      r.fail("index_head_dim", "must be " + std::to_string(kIndexerHadamard) +
                                   " (the indexer's Hadamard transform is 128-point), got " +
                                   std::to_string(c.index_head_dim));
    c.index_topk = r.req_int("index_topk");
    r.positive("index_topk", c.index_topk, kMaxPositions);
  }

  c.num_nextn_predict_layers = r.opt_int("num_nextn_predict_layers", 0);
  r.in_range("num_nextn_predict_layers", c.num_nextn_predict_layers, 0, 16);
  c.bos_token_id = r.opt_int("bos_token_id", 0);
  r.in_range("bos_token_id", c.bos_token_id, 0, c.vocab_size - 1);
  c.eos_token_id = r.opt_int("eos_token_id", 1);
  r.in_range("eos_token_id", c.eos_token_id, 0, c.vocab_size - 1);
  c.tie_word_embeddings = r.opt_bool("tie_word_embeddings", false);

  if (const json* q = r.find("quantization_config")) {
    if (!q->is_object()) r.fail("quantization_config", "expected an object or null, got " + type_name(*q));
    Reader qr(*q, source, "quantization_config.");
    const json* method = qr.find("quant_method");
    if (!method) qr.fail("quant_method", "missing (expected \"fp8\")");
    if (!method->is_string()) qr.fail("quant_method", "expected a string, got " + type_name(*method));
    if (method->get<std::string>() != "fp8")
      qr.fail("quant_method", "unsupported quantization '" + method->get<std::string>() + "' (hearth reads fp8)");
    Fp8Quantization& f = c.quantization;
    f.present = true;
    f.fmt = qr.opt_string("fmt", "e4m3");
    if (f.fmt != "e4m3") qr.fail("fmt", "unsupported fp8 format '" + f.fmt + "' (hearth reads e4m3)");
    f.scale_fmt = qr.opt_string("scale_fmt", "");
    if (!f.scale_fmt.empty() && f.scale_fmt != "ue8m0")
      qr.fail("scale_fmt", "unsupported scale format '" + f.scale_fmt + "' (expected ue8m0 or none)");
    if (const json* bs = qr.find("weight_block_size")) {
      if (!bs->is_array() || bs->size() != 2)
        qr.fail("weight_block_size", "expected [rows, cols], got " + bs->dump());
      f.block_rows = qr.to_int("weight_block_size", (*bs)[0]);
      f.block_cols = qr.to_int("weight_block_size", (*bs)[1]);
      if (f.block_rows != 128 || f.block_cols != 128)
        qr.fail("weight_block_size", "unsupported block size " + bs->dump() + " (hearth reads [128, 128])");
    }
  }
  return c;
}

ModelConfig ModelConfig::load(const std::filesystem::path& config_json) {
  const std::string source = config_json.string();
  std::ifstream in(config_json, std::ios::binary);
  if (!in) throw std::runtime_error(source + ": cannot open");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw std::runtime_error(source + ": invalid JSON: " + e.what());
  }
  return from_json(j, source);
}

nlohmann::json ModelConfig::to_json() const {
  json j;
  j["architectures"] = json::array({has_indexer() ? "DeepseekV32ForCausalLM" : "DeepseekV3ForCausalLM"});
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["moe_intermediate_size"] = moe_intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["first_k_dense_replace"] = first_k_dense_replace;
  j["moe_layer_freq"] = moe_layer_freq;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_attention_heads;
  j["q_lora_rank"] = q_lora_rank;
  j["kv_lora_rank"] = kv_lora_rank;
  j["qk_nope_head_dim"] = qk_nope_head_dim;
  j["qk_rope_head_dim"] = qk_rope_head_dim;
  j["v_head_dim"] = v_head_dim;
  j["n_routed_experts"] = n_routed_experts;
  j["num_experts_per_tok"] = num_experts_per_tok;
  j["n_group"] = n_group;
  j["topk_group"] = topk_group;
  j["n_shared_experts"] = n_shared_experts;
  j["routed_scaling_factor"] = routed_scaling_factor;
  j["scoring_func"] = scoring_func;
  j["topk_method"] = topk_method;
  j["norm_topk_prob"] = norm_topk_prob;
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  if (rope_scaling.yarn) {
    j["rope_scaling"] = {
        {"type", "yarn"},
        {"factor", rope_scaling.factor},
        {"original_max_position_embeddings", rope_scaling.original_max_position_embeddings},
        {"beta_fast", rope_scaling.beta_fast},
        {"beta_slow", rope_scaling.beta_slow},
        {"mscale", rope_scaling.mscale},
        {"mscale_all_dim", rope_scaling.mscale_all_dim},
    };
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["max_position_embeddings"] = max_position_embeddings;
  if (has_indexer()) {
    j["index_n_heads"] = index_n_heads;
    j["index_head_dim"] = index_head_dim;
    j["index_topk"] = index_topk;
  }
  j["num_nextn_predict_layers"] = num_nextn_predict_layers;
  j["bos_token_id"] = bos_token_id;
  j["eos_token_id"] = eos_token_id;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["torch_dtype"] = "bfloat16";
  if (quantization.present) {
    json q = {
        {"activation_scheme", "dynamic"},
        {"fmt", quantization.fmt},
        {"quant_method", "fp8"},
        {"weight_block_size", json::array({quantization.block_rows, quantization.block_cols})},
    };
    if (!quantization.scale_fmt.empty()) q["scale_fmt"] = quantization.scale_fmt;
    j["quantization_config"] = q;
  }
  return j;
}

}  // namespace hearth

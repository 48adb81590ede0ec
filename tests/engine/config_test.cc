#include "engine/config.h"

#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace engine_config_suite {

using hearth::ModelConfig;
using nlohmann::json;

namespace {

const std::string kTinyConfig = std::string(HEARTH_TEST_DATA) + "/tiny-v32/config.json";

json tiny_json() {
  std::ifstream in(kTinyConfig);
  REQUIRE(in.good());
  return json::parse(in);
}

// The message from_json throws for `j`, or "" when it parses.
std::string error_of(const json& j) {
  try {
    ModelConfig::from_json(j, "test.json");
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

std::string error_with(const std::string& key, const json& value) {
  json j = tiny_json();
  j[key] = value;
  return error_of(j);
}

std::string error_without(const std::string& key) {
  json j = tiny_json();
  j.erase(key);
  return error_of(j);
}

void check_one_line(const std::string& msg) {
  CHECK(msg.find('\n') == std::string::npos);
  CHECK(msg.rfind("test.json: ", 0) == 0);
}

}  // namespace

TEST_CASE("config: parses the tiny V3.2 config.json") {
  const ModelConfig c = ModelConfig::load(kTinyConfig);
  CHECK(c.model_type == "deepseek_v32");
  CHECK(c.has_indexer());
  CHECK(c.vocab_size == 1024);
  CHECK(c.hidden_size == 256);
  CHECK(c.intermediate_size == 384);
  CHECK(c.moe_intermediate_size == 96);
  CHECK(c.num_hidden_layers == 4);
  CHECK(c.first_k_dense_replace == 1);
  CHECK(c.num_attention_heads == 4);
  CHECK(c.q_lora_rank == 192);
  CHECK(c.kv_lora_rank == 128);
  CHECK(c.qk_nope_head_dim == 64);
  CHECK(c.qk_rope_head_dim == 32);
  CHECK(c.qk_head_dim() == 96);
  CHECK(c.v_head_dim == 64);
  CHECK(c.n_routed_experts == 16);
  CHECK(c.num_experts_per_tok == 4);
  CHECK(c.n_group == 4);
  CHECK(c.topk_group == 2);
  CHECK(c.n_shared_experts == 1);
  CHECK(c.routed_scaling_factor == 2.5);
  CHECK(c.scoring_func == "sigmoid");
  CHECK(c.topk_method == "noaux_tc");
  CHECK(c.norm_topk_prob);
  CHECK(c.rms_norm_eps == 1e-6);
  CHECK(c.rope_theta == 10000.0);
  CHECK(c.rope_scaling.yarn);
  CHECK(c.rope_scaling.factor == 40.0);
  CHECK(c.rope_scaling.original_max_position_embeddings == 4096);
  CHECK(c.rope_scaling.beta_fast == 32.0);
  CHECK(c.rope_scaling.beta_slow == 1.0);
  CHECK(c.rope_scaling.mscale == 1.0);
  CHECK(c.rope_scaling.mscale_all_dim == 1.0);
  CHECK(c.max_position_embeddings == 163840);
  CHECK(c.index_n_heads == 16);
  CHECK(c.index_head_dim == 128);
  CHECK(c.index_topk == 8);
  CHECK(c.num_nextn_predict_layers == 1);
  CHECK(c.bos_token_id == 0);
  CHECK(c.eos_token_id == 1);
  CHECK_FALSE(c.tie_word_embeddings);
  CHECK(c.quantization.present);
  CHECK(c.quantization.fmt == "e4m3");
  CHECK(c.quantization.scale_fmt == "ue8m0");
  CHECK(c.quantization.block_rows == 128);
  CHECK(c.quantization.block_cols == 128);
  CHECK_FALSE(c.is_moe_layer(0));
  CHECK(c.is_moe_layer(1));
  CHECK(c.is_moe_layer(4));  // the MTP layer
}

TEST_CASE("config: attention_scale") {
  ModelConfig c = ModelConfig::load(kTinyConfig);
  const double m = 0.1 * 1.0 * std::log(40.0) + 1.0;
  CHECK(c.attention_scale() == doctest::Approx(m * m / std::sqrt(96.0)).epsilon(1e-12));
  c.rope_scaling.mscale_all_dim = 0.0;
  CHECK(c.attention_scale() == doctest::Approx(1.0 / std::sqrt(96.0)).epsilon(1e-12));
  c.rope_scaling.mscale_all_dim = 1.0;
  c.rope_scaling.factor = 1.0;
  CHECK(c.attention_scale() == doctest::Approx(1.0 / std::sqrt(96.0)).epsilon(1e-12));
  c.rope_scaling.factor = 40.0;
  c.rope_scaling.yarn = false;
  CHECK(c.attention_scale() == doctest::Approx(1.0 / std::sqrt(96.0)).epsilon(1e-12));
}

TEST_CASE("config: to_json reproduces the HF config.json and round-trips") {
  const json file = tiny_json();
  const ModelConfig c = ModelConfig::from_json(file);
  // The tiny config.json is exactly the form to_json writes (numbers compare by value).
  CHECK(c.to_json() == file);
  const ModelConfig back = ModelConfig::from_json(c.to_json());
  CHECK(back.to_json() == c.to_json());
  CHECK(back.index_topk == 8);
  CHECK(back.rope_scaling.factor == 40.0);
  CHECK(back.quantization.scale_fmt == "ue8m0");
  CHECK(c.to_json()["architectures"] == json::array({"DeepseekV32ForCausalLM"}));
  CHECK(c.to_json()["torch_dtype"] == "bfloat16");

  // A V3 config without YaRN or quantization, with non-default optional values.
  json j = file;
  j["model_type"] = "deepseek_v3";
  j["rope_scaling"] = nullptr;
  j.erase("quantization_config");
  j["n_shared_experts"] = nullptr;
  j["scoring_func"] = "softmax";
  j["norm_topk_prob"] = false;
  j["tie_word_embeddings"] = true;
  j["moe_layer_freq"] = 2;
  j["bos_token_id"] = 5;
  j["eos_token_id"] = 7;
  const ModelConfig v3 = ModelConfig::from_json(j);
  CHECK_FALSE(v3.has_indexer());
  CHECK(v3.index_n_heads == 0);
  CHECK_FALSE(v3.rope_scaling.yarn);
  CHECK_FALSE(v3.quantization.present);
  CHECK(v3.n_shared_experts == 0);
  const json out = v3.to_json();
  CHECK(out["architectures"] == json::array({"DeepseekV3ForCausalLM"}));
  CHECK(out["rope_scaling"].is_null());
  CHECK_FALSE(out.contains("quantization_config"));
  CHECK_FALSE(out.contains("index_topk"));
  const ModelConfig v3b = ModelConfig::from_json(out);
  CHECK(v3b.to_json() == out);
  CHECK(v3b.scoring_func == "softmax");
  CHECK_FALSE(v3b.norm_topk_prob);
  CHECK(v3b.tie_word_embeddings);
  CHECK(v3b.moe_layer_freq == 2);
  CHECK(v3b.bos_token_id == 5);
  CHECK(v3b.eos_token_id == 7);
  CHECK(v3b.attention_scale() == doctest::Approx(1.0 / std::sqrt(96.0)));

  // Defaults for absent optional fields; "rope_type" spelling of YaRN.
  json d = file;
  for (const char* k : {"moe_layer_freq", "n_group", "topk_group", "n_shared_experts", "routed_scaling_factor",
                        "scoring_func", "topk_method", "norm_topk_prob", "num_nextn_predict_layers", "bos_token_id",
                        "eos_token_id", "tie_word_embeddings"})
    d.erase(k);
  d["num_experts_per_tok"] = 2;
  d["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4}};
  d["quantization_config"] = {{"quant_method", "fp8"}};
  const ModelConfig dc = ModelConfig::from_json(d);
  CHECK(dc.moe_layer_freq == 1);
  CHECK(dc.n_group == 1);
  CHECK(dc.topk_group == 1);
  CHECK(dc.n_shared_experts == 0);
  CHECK(dc.routed_scaling_factor == 1.0);
  CHECK(dc.scoring_func == "sigmoid");
  CHECK(dc.num_nextn_predict_layers == 0);
  CHECK_FALSE(dc.tie_word_embeddings);
  CHECK(dc.rope_scaling.yarn);
  CHECK(dc.rope_scaling.factor == 4.0);
  CHECK(dc.rope_scaling.original_max_position_embeddings == 4096);
  CHECK(dc.quantization.present);
  CHECK(dc.quantization.scale_fmt.empty());
  CHECK(ModelConfig::from_json(dc.to_json()).to_json() == dc.to_json());
}

TEST_CASE("config: model_type and JSON shape errors") {
  std::string e = error_with("model_type", "llama");
  CHECK(e == "test.json: unsupported model_type 'llama' (hearth runs deepseek_v3 and deepseek_v32)");
  e = error_without("model_type");
  CHECK(e.find("field 'model_type': missing") != std::string::npos);
  check_one_line(e);
  CHECK(error_with("model_type", 3).find("field 'model_type': expected a string") != std::string::npos);
  CHECK(error_of(json::array()).find("test.json: expected a JSON object") == 0);
  CHECK_THROWS_WITH_AS(ModelConfig::load("/nonexistent/config.json"), doctest::Contains("cannot open"),
                       std::runtime_error);
}

TEST_CASE("config: every required field is required") {
  for (const char* k : {"vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size",
                        "num_hidden_layers", "num_attention_heads", "q_lora_rank", "kv_lora_rank",
                        "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "n_routed_experts",
                        "num_experts_per_tok", "rms_norm_eps", "rope_theta", "max_position_embeddings",
                        "first_k_dense_replace", "index_n_heads", "index_head_dim", "index_topk"}) {
    CAPTURE(k);
    const std::string e = error_without(k);
    CHECK(e == std::string("test.json: field '") + k + "': missing (required)");
  }
  // The indexer fields are V3.2-only.
  json j = tiny_json();
  j["model_type"] = "deepseek_v3";
  j.erase("index_n_heads");
  j.erase("index_head_dim");
  j.erase("index_topk");
  CHECK(error_of(j).empty());
}

TEST_CASE("config: wrong JSON types") {
  std::string e = error_with("hidden_size", "256");
  CHECK_MESSAGE(e.find("test.json: field 'hidden_size': expected an integer, got a string") == 0, e);
  check_one_line(e);
  CHECK(error_with("hidden_size", 256.5).find("field 'hidden_size': expected an integer") != std::string::npos);
  CHECK(error_with("hidden_size", true).find("field 'hidden_size': expected an integer") != std::string::npos);
  CHECK(error_with("hidden_size", 256.0).empty());  // an integral float is fine
  CHECK(error_with("rms_norm_eps", "1e-6").find("field 'rms_norm_eps': expected a number") != std::string::npos);
  CHECK(error_with("rope_theta", json::array({1})).find("field 'rope_theta': expected a number") !=
        std::string::npos);
  CHECK(error_with("norm_topk_prob", 1).find("field 'norm_topk_prob': expected true or false") !=
        std::string::npos);
  CHECK(error_with("scoring_func", 1).find("field 'scoring_func': expected a string") != std::string::npos);
  CHECK(error_with("rope_scaling", "yarn").find("field 'rope_scaling': expected an object or null") !=
        std::string::npos);
  CHECK(error_with("quantization_config", 1).find("field 'quantization_config': expected an object") !=
        std::string::npos);
  json j = tiny_json();
  j["rope_scaling"]["factor"] = "40";
  CHECK(error_of(j).find("field 'rope_scaling.factor': expected a number") != std::string::npos);
  CHECK(error_with("n_shared_experts", nullptr).empty());  // null means none
}

TEST_CASE("config: absurd values name the field") {
  auto check = [](const std::string& key, const json& value, const std::string& expect) {
    CAPTURE(key);
    const std::string e = error_with(key, value);
    CHECK_MESSAGE(e.find(expect) != std::string::npos, e);
    CHECK_MESSAGE(e.find("field '" + key + "'") != std::string::npos, e);
    check_one_line(e);
  };
  for (const char* k : {"vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size",
                        "num_hidden_layers", "num_attention_heads", "q_lora_rank", "kv_lora_rank",
                        "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "n_routed_experts",
                        "num_experts_per_tok", "index_n_heads", "index_topk", "max_position_embeddings"}) {
    check(k, 0, "must be positive");
    check(k, -4, "must be positive");
  }
  check("hidden_size", (1 << 20) + 1, "above the sane limit");
  check("vocab_size", (1 << 24) + 1, "above the sane limit");
  check("num_hidden_layers", 1025, "above the sane limit");
  check("n_routed_experts", 4097, "above the sane limit");
  check("hidden_size", json(uint64_t(1) << 63), "out of range");
  check("num_experts_per_tok", 17, "exceeds n_routed_experts (16)");
  check("num_experts_per_tok", 9, "exceeds the 8 experts in the topk_group selected groups");
  check("topk_group", 5, "exceeds n_group (4)");
  check("n_group", 3, "n_routed_experts (16) is not divisible by n_group (3)");
  check("rms_norm_eps", 0.0, "must be in (0, 1)");
  check("rms_norm_eps", -1e-6, "must be in (0, 1)");
  check("rms_norm_eps", 1.0, "must be in (0, 1)");
  check("rope_theta", 0, "must be positive");
  check("rope_theta", -10000.0, "must be positive");
  check("qk_rope_head_dim", 33, "must be even");
  check("index_head_dim", 16, "smaller than qk_rope_head_dim (32)");
  check("index_head_dim", 96, "must be 128");
  check("index_head_dim", 256, "must be 128");
  check("scoring_func", "relu", "unsupported value 'relu'");
  check("topk_method", "magic", "unsupported value 'magic'");
  check("first_k_dense_replace", 5, "out of range [0, 4]");
  check("first_k_dense_replace", -1, "out of range");
  check("n_shared_experts", -1, "out of range");
  check("routed_scaling_factor", 0.0, "must be positive");
  check("moe_layer_freq", 0, "must be positive");
  check("num_nextn_predict_layers", -1, "out of range");
  check("bos_token_id", 1024, "out of range [0, 1023]");
  check("eos_token_id", -1, "out of range");
}

TEST_CASE("config: rope_scaling and quantization_config errors") {
  auto err = [](const char* field, const json& value) {
    json j = tiny_json();
    const std::string f = field;
    const size_t dot = f.find('.');
    j[f.substr(0, dot)][f.substr(dot + 1)] = value;
    return error_of(j);
  };
  std::string e = err("rope_scaling.type", "linear");
  CHECK(e == "test.json: field 'rope_scaling.type': unsupported rope type 'linear' (hearth supports yarn)");
  json j = tiny_json();
  j["rope_scaling"].erase("type");
  CHECK(error_of(j).find("field 'rope_scaling.type': missing") != std::string::npos);
  j["rope_scaling"]["rope_type"] = "dynamic";
  CHECK(error_of(j).find("field 'rope_scaling.rope_type': unsupported rope type 'dynamic'") != std::string::npos);
  CHECK(err("rope_scaling.factor", 0.5).find("field 'rope_scaling.factor': must be at least 1") !=
        std::string::npos);
  CHECK(err("rope_scaling.original_max_position_embeddings", 0)
            .find("field 'rope_scaling.original_max_position_embeddings': must be positive") != std::string::npos);
  CHECK(err("rope_scaling.beta_fast", 0.5).find("field 'rope_scaling.beta_fast': must exceed beta_slow") !=
        std::string::npos);
  CHECK(err("rope_scaling.mscale_all_dim", -1).find("field 'rope_scaling.mscale_all_dim'") != std::string::npos);
  CHECK(error_with("rope_scaling", nullptr).empty());

  e = err("quantization_config.quant_method", "gptq");
  CHECK(e == "test.json: field 'quantization_config.quant_method': unsupported quantization 'gptq' (hearth reads fp8)");
  CHECK(err("quantization_config.fmt", "e5m2").find("field 'quantization_config.fmt': unsupported fp8 format") !=
        std::string::npos);
  CHECK(err("quantization_config.scale_fmt", "fp32").find("field 'quantization_config.scale_fmt'") !=
        std::string::npos);
  CHECK(err("quantization_config.weight_block_size", json::array({64, 64}))
            .find("field 'quantization_config.weight_block_size': unsupported block size [64,64]") !=
        std::string::npos);
  CHECK(err("quantization_config.weight_block_size", 128)
            .find("field 'quantization_config.weight_block_size': expected [rows, cols]") != std::string::npos);
  j = tiny_json();
  j["quantization_config"].erase("quant_method");
  CHECK(error_of(j).find("field 'quantization_config.quant_method': missing") != std::string::npos);
  CHECK(error_with("quantization_config", nullptr).empty());
}

TEST_CASE("config: load reports invalid JSON with the path") {
  const std::string path = "/tmp/hearth_config_test_bad.json";
  {
    std::ofstream out(path);
    out << "{\"model_type\": \"deepseek_v3\",";
  }
  CHECK_THROWS_WITH_AS(ModelConfig::load(path), doctest::Contains((path + ": invalid JSON").c_str()), std::runtime_error);
  {
    std::ofstream out(path);
    out << "{\"model_type\": \"llama\"}";
  }
  CHECK_THROWS_WITH_AS(ModelConfig::load(path), doctest::Contains((path + ": unsupported model_type 'llama'").c_str()),
                       std::runtime_error);
  std::remove(path.c_str());
}

}  // namespace engine_config_suite

#include "engine/synth.h"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "offload/thread_pool.h"
#include "quant/numbers.h"

namespace hearth {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------------------------------
// Presets

// What every preset shares with the real DeepSeek-V3/V3.2 configs: routing, YaRN RoPE as
// the real model has it, FP8 block quantization with ue8m0 scales.
const char* kCommonConfig = R"({
  "first_k_dense_replace": 1,
  "moe_layer_freq": 1,
  "n_shared_experts": 1,
  "routed_scaling_factor": 2.5,
  "scoring_func": "sigmoid",
  "topk_method": "noaux_tc",
  "norm_topk_prob": true,
  "hidden_act": "silu",
  "attention_bias": false,
  "rms_norm_eps": 1e-06,
  "rope_theta": 10000,
  "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                   "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
  "max_position_embeddings": 163840,
  "bos_token_id": 0,
  "eos_token_id": 1,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                          "scale_fmt": "ue8m0", "weight_block_size": [128, 128]}
})";

// The shape of tests/data/tiny-v32 (the golden reference model).
const char* kTinyPreset = R"({
  "architectures": ["DeepseekV32ForCausalLM"], "model_type": "deepseek_v32",
  "vocab_size": 1024, "hidden_size": 256, "intermediate_size": 384, "moe_intermediate_size": 96,
  "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
  "q_lora_rank": 192, "kv_lora_rank": 128, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64,
  "n_routed_experts": 16, "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2,
  "index_n_heads": 16, "index_head_dim": 128, "index_topk": 8,
  "num_nextn_predict_layers": 1
})";

const char* kSmallPreset = R"({
  "architectures": ["DeepseekV32ForCausalLM"], "model_type": "deepseek_v32",
  "vocab_size": 32768, "hidden_size": 1024, "intermediate_size": 2048, "moe_intermediate_size": 256,
  "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 8,
  "q_lora_rank": 384, "kv_lora_rank": 256, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64,
  "n_routed_experts": 32, "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2,
  "index_n_heads": 8, "index_head_dim": 128, "index_topk": 64,
  "num_nextn_predict_layers": 1
})";

// Pinned: benchmark results are compared across commits. Do not change.
const char* kBenchPreset = R"({
  "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
  "vocab_size": 129280, "hidden_size": 2048, "intermediate_size": 8192, "moe_intermediate_size": 1024,
  "num_hidden_layers": 12, "num_attention_heads": 16, "num_key_value_heads": 16,
  "q_lora_rank": 768, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
  "n_routed_experts": 64, "num_experts_per_tok": 8, "n_group": 8, "topk_group": 4,
  "num_nextn_predict_layers": 0
})";

// The real DeepSeek-V3.2 shape (deepseek-ai/DeepSeek-V3.2-Exp's config.json): 61 layers
// (the first 3 dense), hidden 7168, 128 heads, 256 experts top-8, the 64-head indexer,
// one MTP layer. 671 B parameters plus the MTP layer: only ever built in memory
// (`hearth bench --synthetic v32-full`), where the RAM check refuses it on small machines.
const char* kV32FullPreset = R"({
  "architectures": ["DeepseekV32ForCausalLM"], "model_type": "deepseek_v32",
  "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
  "num_hidden_layers": 61, "first_k_dense_replace": 3, "num_attention_heads": 128, "num_key_value_heads": 128,
  "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
  "n_routed_experts": 256, "num_experts_per_tok": 8, "n_group": 8, "topk_group": 4,
  "index_n_heads": 64, "index_head_dim": 128, "index_topk": 2048,
  "num_nextn_predict_layers": 1
})";

struct Preset {
  const char* name;
  const char* json;
  bool memory_only;  // too large to write out: only built in memory
};
const Preset kPresets[] = {{"tiny", kTinyPreset, false},
                           {"small", kSmallPreset, false},
                           {"bench", kBenchPreset, false},
                           {"v32-full", kV32FullPreset, true}};

// ---------------------------------------------------------------------------------------
// Counter-based random numbers: element i of a tensor is a pure function of
// (tensor seed, i), so any partition of the work gives identical bytes.

constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ull;

inline uint64_t mix64(uint64_t z) {  // the splitmix64 finalizer
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t tensor_seed(uint64_t seed, const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (unsigned char ch : name) h = (h ^ ch) * 0x100000001b3ull;
  return mix64(mix64(seed + kGamma) ^ h);
}

// Approximately standard normal: the sum of four 16-bit uniforms (Irwin-Hall), centred
// and scaled to unit variance. Bounded by +-3.46, which suits FP8 block scaling.
inline float normal_at(uint64_t ts, uint64_t i) {
  const uint64_t r = mix64(ts + (i + 1) * kGamma);
  const int32_t s = int32_t(r & 0xffff) + int32_t((r >> 16) & 0xffff) + int32_t((r >> 32) & 0xffff) +
                    int32_t(r >> 48);
  return float(s - 131070) * (1.7320508f / 65536.0f);
}

// ---------------------------------------------------------------------------------------
// The checkpoint plan

class Planner {
 public:
  explicit Planner(const ModelConfig& c) : c_(c) {}

  std::vector<SynthTensor> plan() {
    const int64_t h = c_.hidden_size;
    bf16("model.embed_tokens.weight", {c_.vocab_size, h}, 0.0f, 1.0f);
    for (int64_t i = 0; i < c_.num_hidden_layers; ++i) layer(i);
    norm("model.norm.weight", h);
    if (!c_.tie_word_embeddings) bf16("lm_head.weight", {c_.vocab_size, h}, 0.0f, kHeadGain * inv_sqrt(h));
    for (int64_t k = 0; k < c_.num_nextn_predict_layers; ++k) {
      const int64_t i = c_.num_hidden_layers + k;
      const std::string p = "model.layers." + std::to_string(i) + ".";
      layer(i);
      norm(p + "enorm.weight", h);
      norm(p + "hnorm.weight", h);
      bf16(p + "eh_proj.weight", {h, 2 * h}, 0.0f, inv_sqrt(2 * h));
      norm(p + "shared_head.norm.weight", h);
      bf16(p + "shared_head.head.weight", {c_.vocab_size, h}, 0.0f, kHeadGain * inv_sqrt(h));
      bf16(p + "embed_tokens.weight", {c_.vocab_size, h}, 0.0f, 1.0f);
    }
    return std::move(items_);
  }

 private:
  static float inv_sqrt(int64_t n) { return float(1.0 / std::sqrt(double(n))); }

  // Conditioning, so the random network behaves like a trained one where it matters for
  // measuring quantization: each layer adds a small update to the residual stream (the
  // projections that write into it, o_proj and down_proj, are scaled down), so a routing
  // or key-selection flip caused by rounding moves the output a little instead of
  // replacing it; and the head makes peaked next-token distributions (logits with a
  // spread of a few units) instead of near-uniform ones whose argmax any noise flips.
  // Without this, KL divergence between two quantizations of the same synthetic model
  // measures chaos, not quantization error.
  static constexpr float kResidualWriteGain = 0.1f;
  static constexpr float kHeadGain = 4.0f;

  void add(std::string name, DType dt, std::vector<int64_t> shape, float mean, float std) {
    SynthTensor it;
    it.weight = TensorSpec{std::move(name), dt, std::move(shape)};
    it.mean = mean;
    it.std = std;
    items_.push_back(std::move(it));
  }
  void bf16(std::string name, std::vector<int64_t> shape, float mean, float std) {
    add(std::move(name), DType::BF16, std::move(shape), mean, std);
  }
  void norm(std::string name, int64_t n) { bf16(std::move(name), {n}, 1.0f, 0.1f); }
  // A linear layer's weight [rows, cols]: FP8 with 128x128 block scales when the config
  // is FP8-quantized, BF16 otherwise.
  void linear(const std::string& prefix, int64_t rows, int64_t cols, float gain = 1.0f) {
    if (!c_.quantization.present) {
      bf16(prefix + ".weight", {rows, cols}, 0.0f, gain * inv_sqrt(cols));
      return;
    }
    const int64_t br = c_.quantization.block_rows, bc = c_.quantization.block_cols;
    SynthTensor it;
    it.weight = TensorSpec{prefix + ".weight", DType::F8_E4M3, {rows, cols}};
    it.fp8 = true;
    it.scale = TensorSpec{prefix + ".weight_scale_inv", DType::F32, {(rows + br - 1) / br, (cols + bc - 1) / bc}};
    it.std = gain * inv_sqrt(cols);
    items_.push_back(std::move(it));
  }
  void mlp(const std::string& prefix, int64_t inter) {
    linear(prefix + "gate_proj", inter, c_.hidden_size);
    linear(prefix + "up_proj", inter, c_.hidden_size);
    linear(prefix + "down_proj", c_.hidden_size, inter, kResidualWriteGain);
  }
  void layer(int64_t i) {
    const ModelConfig& c = c_;
    const int64_t h = c.hidden_size;
    const std::string p = "model.layers." + std::to_string(i) + ".";
    norm(p + "input_layernorm.weight", h);
    norm(p + "post_attention_layernorm.weight", h);
    const std::string a = p + "self_attn.";
    linear(a + "q_a_proj", c.q_lora_rank, h);
    norm(a + "q_a_layernorm.weight", c.q_lora_rank);
    linear(a + "q_b_proj", c.num_attention_heads * c.qk_head_dim(), c.q_lora_rank);
    linear(a + "kv_a_proj_with_mqa", c.kv_lora_rank + c.qk_rope_head_dim, h);
    norm(a + "kv_a_layernorm.weight", c.kv_lora_rank);
    linear(a + "kv_b_proj", c.num_attention_heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
    linear(a + "o_proj", h, c.num_attention_heads * c.v_head_dim, kResidualWriteGain);
    if (c.has_indexer()) {
      linear(a + "indexer.wq_b", c.index_n_heads * c.index_head_dim, c.q_lora_rank);
      linear(a + "indexer.wk", c.index_head_dim, h);
      norm(a + "indexer.k_norm.weight", c.index_head_dim);
      bf16(a + "indexer.k_norm.bias", {c.index_head_dim}, 0.0f, 0.05f);
      bf16(a + "indexer.weights_proj.weight", {c.index_n_heads, h}, 0.0f, inv_sqrt(h));
    }
    if (!c.is_moe_layer(i)) {
      mlp(p + "mlp.", c.intermediate_size);
      return;
    }
    bf16(p + "mlp.gate.weight", {c.n_routed_experts, h}, 0.0f, inv_sqrt(h));
    add(p + "mlp.gate.e_score_correction_bias", DType::F32, {c.n_routed_experts}, 0.0f, 0.05f);
    for (int64_t e = 0; e < c.n_routed_experts; ++e)
      mlp(p + "mlp.experts." + std::to_string(e) + ".", c.moe_intermediate_size);
    if (c.n_shared_experts > 0) mlp(p + "mlp.shared_experts.", c.moe_intermediate_size * c.n_shared_experts);
  }

  const ModelConfig& c_;
  std::vector<SynthTensor> items_;
};

// ---------------------------------------------------------------------------------------
// Generation

}  // namespace

namespace {

// The per-block dequantization scale for a block whose largest magnitude is amax.
inline float block_scale(float amax, bool ue8m0) {
  if (!(amax > 0.0f)) return 1.0f;
  float s = amax / kFp8E4M3Max;
  if (ue8m0) {
    int e;
    const float m = std::frexp(s, &e);  // s = m * 2^e, m in [0.5, 1)
    s = (m == 0.5f) ? s : std::ldexp(1.0f, e);
  }
  return s;
}

// Fills `out` with the item's bytes: the tensor, then (FP8) its scales.
void generate(const SynthTensor& it, uint64_t seed, bool ue8m0, ThreadPool& pool, uint8_t* out) {
  synth_generate_rows(it, seed, ue8m0, pool, 0, it.rows(), out,
                      it.fp8 ? reinterpret_cast<float*>(out + it.weight.nbytes()) : nullptr);
}

std::string shard_name(int index, int count) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", index + 1, count);
  return buf;
}

double gb(uint64_t bytes) { return double(bytes) / 1e9; }

// A growable buffer that does not zero its memory.
struct Buffer {
  std::unique_ptr<uint8_t[]> data;
  uint64_t cap = 0;
  uint8_t* get(uint64_t n) {
    if (n > cap) {
      data.reset();
      data.reset(new uint8_t[n]);
      cap = n;
    }
    return data.get();
  }
};

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error(path.string() + ": cannot create");
  out << text;
  out.close();
  if (!out) throw std::runtime_error(path.string() + ": write failed");
}

}  // namespace

std::vector<std::string> synth_preset_names() {
  std::vector<std::string> names;
  for (const Preset& p : kPresets)
    if (!p.memory_only) names.push_back(p.name);
  return names;
}

std::vector<std::string> synth_memory_preset_names() {
  std::vector<std::string> names;
  for (const Preset& p : kPresets)
    if (p.memory_only) names.push_back(p.name);
  return names;
}

bool synth_preset_is_memory_only(const std::string& name) {
  for (const Preset& p : kPresets)
    if (name == p.name) return p.memory_only;
  return false;
}

json synth_preset_config(const std::string& name) {
  for (const Preset& p : kPresets)
    if (name == p.name) {
      json j = json::parse(kCommonConfig);
      j.merge_patch(json::parse(p.json));
      return j;
    }
  std::string known, memory;
  for (const Preset& p : kPresets) {
    std::string& list = p.memory_only ? memory : known;
    list += std::string(list.empty() ? "" : ", ") + p.name;
  }
  throw std::runtime_error("unknown preset '" + name + "' (known presets: " + known + "; in memory only, for hearth bench --synthetic: " + memory + ")");
}

void apply_config_overrides(json& config, const std::vector<std::string>& sets) {
  for (const std::string& s : sets) {
    const size_t eq = s.find('=');
    if (eq == std::string::npos || eq == 0)
      throw std::runtime_error("--set '" + s + "': expected KEY=JSON (e.g. index_topk=2048 or model_type='\"deepseek_v32\"')");
    const std::string key = s.substr(0, eq);
    json value;
    try {
      value = json::parse(s.substr(eq + 1));
    } catch (const json::exception& e) {
      throw std::runtime_error("--set " + key + ": the value is not valid JSON (strings need quotes, e.g. " + key +
                               "='\"text\"'): " + e.what());
    }
    config[key] = std::move(value);
  }
}

json synth_config_json(const std::string& preset, const std::vector<std::string>& sets) {
  json j = synth_preset_config(preset);
  apply_config_overrides(j, sets);
  if (j.is_object() && j.value("model_type", json()) == "deepseek_v32") {
    // The real V3.2 indexer, for presets written as deepseek_v3.
    if (!j.contains("index_n_heads")) j["index_n_heads"] = 64;
    if (!j.contains("index_head_dim")) j["index_head_dim"] = 128;
    if (!j.contains("index_topk")) j["index_topk"] = 2048;
  }
  const ModelConfig c = ModelConfig::from_json(j, "synth config (preset " + preset + ")");
  // The canonical form, plus any extra keys the user set that ModelConfig does not model.
  json out = c.to_json();
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!out.contains(it.key())) out[it.key()] = it.value();
  return out;
}

std::vector<TensorSpec> checkpoint_tensor_specs(const ModelConfig& config) {
  std::vector<TensorSpec> specs;
  for (SynthTensor& it : synth_tensor_plan(config)) {
    specs.push_back(std::move(it.weight));
    if (it.fp8) specs.push_back(std::move(it.scale));
  }
  return specs;
}

uint64_t SynthTensor::bytes() const { return weight.nbytes() + (fp8 ? scale.nbytes() : 0); }

int64_t SynthTensor::rows() const { return weight.shape.empty() ? 1 : weight.shape[0]; }

std::vector<SynthTensor> synth_tensor_plan(const ModelConfig& config) { return Planner(config).plan(); }

void synth_generate_rows(const SynthTensor& it, uint64_t seed, bool ue8m0, ThreadPool& pool, int64_t row0,
                         int64_t row1, void* weight_rows, float* scale_rows) {
  const int64_t rows = it.rows();
  const int64_t cols = it.weight.shape.size() > 1 ? it.weight.shape[1] : 1;
  constexpr int64_t br = 128, bc = 128;  // the FP8 block (Planner writes 128x128 scales)
  if (row0 < 0 || row1 > rows || row0 > row1 || (it.fp8 && (row0 % br != 0 || (row1 % br != 0 && row1 != rows))))
    throw std::invalid_argument("synth: rows [" + std::to_string(row0) + ", " + std::to_string(row1) +
                                ") of '" + it.weight.name + "' are not whole blocks of its " + std::to_string(rows) +
                                " rows");
  const uint64_t ts = tensor_seed(seed, it.weight.name);
  const float mean = it.mean, sd = it.std;
  if (!it.fp8) {
    // Element i of the tensor is normal_at(ts, i), whichever rows are asked for.
    const int64_t first = row0 * cols, n = (row1 - row0) * cols;
    const bool f32 = it.weight.dtype == DType::F32;
    pool.parallel_for(n, [&](int64_t b, int64_t e) {
      if (f32) {
        float* o = static_cast<float*>(weight_rows);
        for (int64_t i = b; i < e; ++i) o[i] = mean + sd * normal_at(ts, uint64_t(first + i));
      } else {
        uint16_t* o = static_cast<uint16_t*>(weight_rows);
        for (int64_t i = b; i < e; ++i) o[i] = f32_to_bf16(mean + sd * normal_at(ts, uint64_t(first + i)));
      }
    });
    return;
  }
  const int64_t nbc = it.scale.shape[1];
  const int64_t rb_first = row0 / br, nrb = (row1 - row0 + br - 1) / br;
  uint8_t* q = static_cast<uint8_t*>(weight_rows);  // row row0 at q
  pool.parallel_for(nrb, [&](int64_t i0, int64_t i1) {
    std::vector<float> block(size_t(br * bc));
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t rb = rb_first + i;
      const int64_t r0 = rb * br, r1 = std::min(rows, r0 + br);
      for (int64_t cb = 0; cb < nbc; ++cb) {
        const int64_t c0 = cb * bc, c1 = std::min(cols, c0 + bc), w = c1 - c0;
        float amax = 0.0f;
        for (int64_t r = r0; r < r1; ++r) {
          float* dst = block.data() + (r - r0) * w;
          const uint64_t base = uint64_t(r * cols + c0);
          for (int64_t k = 0; k < w; ++k) {
            const float v = sd * normal_at(ts, base + uint64_t(k));
            dst[k] = v;
            amax = std::max(amax, std::fabs(v));
          }
        }
        const float s = block_scale(amax, ue8m0);
        scale_rows[i * nbc + cb] = s;
        for (int64_t r = r0; r < r1; ++r) {
          const float* src = block.data() + (r - r0) * w;
          uint8_t* dst = q + (r - row0) * cols + c0;
          for (int64_t k = 0; k < w; ++k) dst[k] = f32_to_fp8_e4m3(src[k] / s);
        }
      }
    }
  });
}

int64_t tokenizer_id_count(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path.string() + ": cannot open the tokenizer");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw std::runtime_error(path.string() + ": not valid JSON: " + e.what());
  }
  int64_t max_id = -1;
  auto take = [&](const json& id) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0)
      throw std::runtime_error(path.string() + ": a token id is not a non-negative integer");
    max_id = std::max(max_id, id.get<int64_t>());
  };
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object() || !j["model"].contains("vocab") ||
      !j["model"]["vocab"].is_object())
    throw std::runtime_error(path.string() + ": no model.vocab object (not a Hugging Face tokenizer.json?)");
  for (const auto& [token, id] : j["model"]["vocab"].items()) take(id);
  if (j.contains("added_tokens") && j["added_tokens"].is_array())
    for (const json& t : j["added_tokens"])
      if (t.is_object() && t.contains("id")) take(t["id"]);
  if (max_id < 0) throw std::runtime_error(path.string() + ": the tokenizer defines no tokens");
  return max_id + 1;
}

SynthResult synthesize_checkpoint(const SynthOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.out_dir.empty()) throw std::runtime_error("no output directory given");
  if (o.shard_size == 0) throw std::runtime_error("shard size must be positive");
  if (synth_preset_is_memory_only(o.preset))
    throw std::runtime_error("preset '" + o.preset + "' is only built in memory (hearth bench --synthetic " + o.preset +
                             "): its checkpoint would not fit a disk");
  json config_json = synth_config_json(o.preset, o.sets);
  if (!o.tokenizer.empty()) {
    const int64_t ids = tokenizer_id_count(o.tokenizer);
    const int64_t vocab = config_json.at("vocab_size").get<int64_t>();
    if (vocab < ids) {
      // DeepSeek-V3's own padded vocabulary where it covers the tokenizer (the real model's
      // shape for the real tokenizer), else the id count rounded up to a multiple of 128.
      constexpr int64_t kDeepSeekVocab = 129280;
      const int64_t raised = ids <= kDeepSeekVocab && ids > kDeepSeekVocab - 1024 ? kDeepSeekVocab : (ids + 127) / 128 * 128;
      config_json["vocab_size"] = raised;
      if (o.log)
        std::fprintf(o.log, "synth: vocab_size raised from %lld to %lld to cover the tokenizer's %lld ids\n",
                     (long long)vocab, (long long)raised, (long long)ids);
    }
  }
  SynthResult res;
  res.config = ModelConfig::from_json(config_json, "synth config");
  const ModelConfig& c = res.config;
  const bool ue8m0 = c.quantization.scale_fmt == "ue8m0";
  ThreadPool pool(o.threads);

  // Plan: tensors in file order, grouped into shards (a weight and its scales stay together).
  const std::vector<SynthTensor> items = synth_tensor_plan(c);
  std::vector<std::vector<size_t>> shards;
  uint64_t cur = 0, largest = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const uint64_t b = items[i].bytes();
    largest = std::max(largest, b);
    if (shards.empty() || (cur > 0 && cur + b > o.shard_size)) {
      shards.emplace_back();
      cur = 0;
    }
    shards.back().push_back(i);
    cur += b;
    res.tensor_bytes += b;
    res.tensors += items[i].fp8 ? 2 : 1;
  }
  res.shards = int(shards.size());

  // The output directory: refuse to overwrite; build in a temporary sibling.
  fs::path out = fs::absolute(o.out_dir).lexically_normal();
  if (!out.has_filename()) out = out.parent_path();
  std::error_code ec;
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec))
      throw std::runtime_error("output '" + o.out_dir.string() + "' exists and is not a directory");
    if (!fs::is_empty(out, ec))
      throw std::runtime_error("output directory '" + o.out_dir.string() +
                               "' exists and is not empty (refusing to overwrite it)");
  }
  fs::create_directories(out.parent_path());
  fs::path tmp;
  for (int attempt = 0;; ++attempt) {
    const uint64_t tag =
        mix64(uint64_t(::getpid()) * 1000003ull + uint64_t(t0.time_since_epoch().count()) + uint64_t(attempt));
    char suffix[32];
    std::snprintf(suffix, sizeof suffix, ".tmp-%08llx", (unsigned long long)(tag & 0xffffffffull));
    tmp = out.parent_path() / (out.filename().string() + suffix);
    if (fs::create_directory(tmp, ec)) break;
    if (attempt > 100) throw std::runtime_error(tmp.string() + ": cannot create: " + ec.message());
  }

  try {
    write_text(tmp / "config.json", config_json.dump(2) + "\n");
    std::map<std::string, std::string> weight_map;
    Buffer bufs[2];
    int cur_buf = 0;
    int64_t done_tensors = 0;
    uint64_t done_bytes = 0;
    auto last_log = std::chrono::steady_clock::now();
    for (size_t s = 0; s < shards.size(); ++s) {
      const std::string fname = shard_name(int(s), int(shards.size()));
      std::vector<TensorSpec> specs;
      for (size_t i : shards[s]) {
        specs.push_back(items[i].weight);
        weight_map[items[i].weight.name] = fname;
        if (items[i].fp8) {
          specs.push_back(items[i].scale);
          weight_map[items[i].scale.name] = fname;
        }
      }
      SafetensorsWriter writer(tmp / fname, std::move(specs));
      {
        // Generate the next tensor while the previous one is being written.
        std::future<void> pending;
        for (size_t i : shards[s]) {
          const SynthTensor& it = items[i];
          uint8_t* data = bufs[cur_buf].get(std::max<uint64_t>(it.bytes(), 1));
          generate(it, o.seed, ue8m0, pool, data);
          if (pending.valid()) pending.get();
          pending = std::async(std::launch::async, [&writer, &it, data] {
            writer.write(it.weight.name, data, it.weight.nbytes());
            if (it.fp8) writer.write(it.scale.name, data + it.weight.nbytes(), it.scale.nbytes());
          });
          cur_buf ^= 1;
          done_tensors += it.fp8 ? 2 : 1;
          done_bytes += it.bytes();
          const auto now = std::chrono::steady_clock::now();
          if (o.log && now - last_log >= std::chrono::seconds(1)) {
            last_log = now;
            std::fprintf(o.log, "synth: %lld/%lld tensors, %.2f/%.2f GB, shard %zu/%zu\n", (long long)done_tensors,
                         (long long)res.tensors, gb(done_bytes), gb(res.tensor_bytes), s + 1, shards.size());
            std::fflush(o.log);
          }
        }
        if (pending.valid()) pending.get();
      }
      writer.finish();
    }
    write_safetensors_index(tmp, weight_map, res.tensor_bytes);
    if (!o.tokenizer.empty()) fs::copy_file(o.tokenizer, tmp / "tokenizer.json");
    for (const auto& e : fs::directory_iterator(tmp))
      if (e.is_regular_file()) res.file_bytes += e.file_size();
    fs::rename(tmp, out);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (o.log) {
    std::fprintf(o.log, "synth: wrote %s: %lld tensors in %d shard%s, %.3f GB (%llu bytes) in %.1f s\n",
                 out.string().c_str(), (long long)res.tensors, res.shards, res.shards == 1 ? "" : "s",
                 gb(res.file_bytes), (unsigned long long)res.file_bytes, res.seconds);
    std::fflush(o.log);
  }
  return res;
}

}  // namespace hearth

#include "engine/synth.h"

#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/config.h"
#include "engine/safetensors.h"
#include "quant/numbers.h"

#include "support/scratch.h"

namespace engine_synth_suite {

namespace fs = std::filesystem;
using hearth::testing::TempDir;
using hearth::DType;
using hearth::ModelConfig;
using nlohmann::json;

namespace {

const fs::path kTinyDir = fs::path(HEARTH_TEST_DATA) / "tiny-v32";


hearth::SynthResult synth(const fs::path& out, uint64_t seed = 0, std::vector<std::string> sets = {},
                          uint64_t shard_size = uint64_t(1) << 30, int threads = 0) {
  hearth::SynthOptions o;
  o.out_dir = out;
  o.preset = "tiny";
  o.seed = seed;
  o.sets = std::move(sets);
  o.shard_size = shard_size;
  o.threads = threads;
  o.log = nullptr;
  return hearth::synthesize_checkpoint(o);
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE(in.good());
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Every file of a directory, by name, with its bytes.
std::map<std::string, std::string> dir_contents(const fs::path& dir) {
  std::map<std::string, std::string> m;
  for (const auto& e : fs::directory_iterator(dir)) m[e.path().filename().string()] = slurp(e.path());
  return m;
}

// Tensor names of a safetensors file in header (= file) order.
std::vector<std::string> header_order(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  uint8_t len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  std::string header(n, '\0');
  in.read(header.data(), std::streamsize(n));
  std::vector<std::string> names;
  const nlohmann::ordered_json h = nlohmann::ordered_json::parse(header);
  for (const auto& [k, v] : h.items())
    if (k != "__metadata__") names.push_back(k);
  return names;
}

float element(const hearth::TensorView& t, int64_t i) {
  switch (t.dtype) {
    case DType::F32: return static_cast<const float*>(t.data)[i];
    case DType::BF16: return hearth::bf16_to_f32(static_cast<const uint16_t*>(t.data)[i]);
    case DType::F8_E4M3: return hearth::fp8_e4m3_to_f32(static_cast<const uint8_t*>(t.data)[i]);
    default: FAIL("unexpected dtype"); return 0.0f;
  }
}

struct Stats {
  double mean = 0, std = 0, amax = 0;
};
Stats stats(const hearth::WeightStore& ws, const std::string& name) {
  const hearth::TensorView& t = ws.get(name);
  const int64_t n = t.numel();
  const hearth::TensorView* s = nullptr;
  if (t.dtype == DType::F8_E4M3) s = &ws.get(name + "_scale_inv");
  double sum = 0, sq = 0, amax = 0;
  for (int64_t i = 0; i < n; ++i) {
    double v = element(t, i);
    if (s) {
      const int64_t r = i / t.dim(1), c = i % t.dim(1);
      v *= element(*s, (r / 128) * s->dim(1) + c / 128);
    }
    sum += v;
    sq += v * v;
    amax = std::max(amax, std::fabs(v));
  }
  Stats st;
  st.mean = sum / double(n);
  st.std = std::sqrt(std::max(0.0, sq / double(n) - st.mean * st.mean));
  st.amax = amax;
  return st;
}

}  // namespace

TEST_CASE("synth: presets") {
  for (const std::string& name : hearth::synth_preset_names()) {
    CAPTURE(name);
    CHECK_NOTHROW(ModelConfig::from_json(hearth::synth_preset_config(name)));
  }
  CHECK_THROWS_WITH_AS(hearth::synth_preset_config("huge"),
                       doctest::Contains("unknown preset 'huge' (known presets: tiny, small, bench; in memory only"),
                       std::runtime_error);

  // tiny is the shape of the checked-in reference model.
  CHECK(ModelConfig::from_json(hearth::synth_preset_config("tiny")).to_json() ==
        ModelConfig::load(kTinyDir / "config.json").to_json());

  const ModelConfig s = ModelConfig::from_json(hearth::synth_preset_config("small"));
  CHECK(s.model_type == "deepseek_v32");
  CHECK(s.hidden_size == 1024);
  CHECK(s.vocab_size == 32768);
  CHECK(s.n_routed_experts == 32);
  CHECK(s.index_n_heads == 8);
  CHECK(s.index_topk == 64);

  // bench is pinned.
  const ModelConfig b = ModelConfig::from_json(hearth::synth_preset_config("bench"));
  CHECK(b.model_type == "deepseek_v3");
  CHECK(b.hidden_size == 2048);
  CHECK(b.num_hidden_layers == 12);
  CHECK(b.first_k_dense_replace == 1);
  CHECK(b.num_attention_heads == 16);
  CHECK(b.q_lora_rank == 768);
  CHECK(b.kv_lora_rank == 512);
  CHECK(b.qk_nope_head_dim == 128);
  CHECK(b.qk_rope_head_dim == 64);
  CHECK(b.v_head_dim == 128);
  CHECK(b.n_routed_experts == 64);
  CHECK(b.num_experts_per_tok == 8);
  CHECK(b.n_group == 8);
  CHECK(b.topk_group == 4);
  CHECK(b.n_shared_experts == 1);
  CHECK(b.moe_intermediate_size == 1024);
  CHECK(b.intermediate_size == 8192);
  CHECK(b.vocab_size == 129280);
  CHECK(b.routed_scaling_factor == 2.5);
  CHECK(b.rope_theta == 10000.0);
  CHECK(b.rope_scaling.yarn);
  CHECK(b.rope_scaling.factor == 40.0);
  CHECK(b.rope_scaling.original_max_position_embeddings == 4096);
  CHECK(b.rope_scaling.mscale_all_dim == 1.0);
  CHECK(b.max_position_embeddings == 163840);
  CHECK(b.rms_norm_eps == 1e-6);
  CHECK(b.quantization.scale_fmt == "ue8m0");
  CHECK(b.num_nextn_predict_layers == 0);
  uint64_t bytes = 0;
  for (const auto& t : hearth::checkpoint_tensor_specs(b)) bytes += t.nbytes();
  CHECK(bytes > uint64_t(5.0e9));  // 4.8 GB of FP8 layers + 1.06 GB of BF16 embeddings/head
  CHECK(bytes < uint64_t(6.0e9));

  // bench switched to V3.2 gets the real indexer unless told otherwise.
  json j = hearth::synth_config_json("bench", {"model_type=\"deepseek_v32\""});
  CHECK(j["index_n_heads"] == 64);
  CHECK(j["index_head_dim"] == 128);
  CHECK(j["index_topk"] == 2048);
  CHECK(j["architectures"] == json::array({"DeepseekV32ForCausalLM"}));
  j = hearth::synth_config_json("bench", {"model_type=\"deepseek_v32\"", "index_topk=512"});
  CHECK(j["index_topk"] == 512);
}

TEST_CASE("synth: tiny has exactly the tensors of tests/data/tiny-v32") {
  TempDir tmp;
  const fs::path out = tmp.path / "model";
  const hearth::SynthResult r = synth(out, 7);
  CHECK(r.shards == 1);
  CHECK(fs::exists(out / "model-00001-of-00001.safetensors"));
  CHECK(fs::exists(out / "model.safetensors.index.json"));

  // config.json: the reference config, parsed alike.
  const ModelConfig c = ModelConfig::load(out / "config.json");
  CHECK(c.to_json() == ModelConfig::load(kTinyDir / "config.json").to_json());

  const hearth::WeightStore ref = hearth::WeightStore::open(kTinyDir);
  const hearth::WeightStore syn = hearth::WeightStore::open(out);
  CHECK(ref.tensors().size() == syn.tensors().size());
  for (const auto& [name, t] : ref.tensors()) {
    CAPTURE(name);
    REQUIRE(syn.has(name));
    CHECK(syn.get(name).dtype == t.dtype);
    CHECK(syn.get(name).shape == t.shape);
  }
  for (const auto& [name, t] : syn.tensors()) {
    CAPTURE(name);
    CHECK(ref.has(name));
  }
  CHECK(syn.total_bytes() == ref.total_bytes());
  CHECK(r.tensor_bytes == ref.total_bytes());
  CHECK(r.tensors == int64_t(ref.tensors().size()));

  // Same order as the reference file, and as checkpoint_tensor_specs.
  const std::vector<std::string> order = header_order(kTinyDir / "model.safetensors");
  CHECK(header_order(out / "model-00001-of-00001.safetensors") == order);
  std::vector<std::string> spec_names;
  for (const auto& s : hearth::checkpoint_tensor_specs(c)) spec_names.push_back(s.name);
  CHECK(spec_names == order);

  // The index names every tensor.
  const json index = json::parse(slurp(out / "model.safetensors.index.json"));
  CHECK(index["weight_map"].size() == ref.tensors().size());
  CHECK(index["metadata"]["total_size"] == ref.total_bytes());

  // Nothing left behind next to the output.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(tmp.path)) {
    CHECK(e.path().filename() == "model");
    ++entries;
  }
  CHECK(entries == 1);
}

TEST_CASE("synth: values are numerically sane") {
  TempDir tmp;
  synth(tmp.path / "m", 3);
  const hearth::WeightStore ws = hearth::WeightStore::open(tmp.path / "m");
  const std::string a = "model.layers.1.self_attn.";

  // Linear weights: std ~gain/sqrt(fan_in) after dequantization; the projections that
  // write into the residual stream (o_proj, down_proj) have gain 0.1 (synth.cc's
  // conditioning), the others 1.
  struct Linear {
    std::string name;
    int cols;
    double gain;
  };
  for (const Linear& l : std::vector<Linear>{
           {a + "q_a_proj.weight", 256, 1.0}, {a + "q_b_proj.weight", 192, 1.0}, {a + "kv_b_proj.weight", 128, 1.0},
           {a + "o_proj.weight", 256, 0.1}, {a + "indexer.wq_b.weight", 192, 1.0},
           {"model.layers.0.mlp.down_proj.weight", 384, 0.1}, {"model.layers.2.mlp.experts.5.gate_proj.weight", 256, 1.0},
           {"model.layers.2.mlp.experts.5.down_proj.weight", 96, 0.1}}) {
    CAPTURE(l.name);
    const Stats s = stats(ws, l.name);
    CHECK(std::fabs(s.mean) < 0.1 * l.gain / std::sqrt(l.cols));
    CHECK(s.std == doctest::Approx(l.gain / std::sqrt(l.cols)).epsilon(0.05));
  }
  // ue8m0: every block scale is a power of two, and the FP8 range is used.
  {
    const hearth::TensorView& w = ws.get(a + "q_b_proj.weight");
    const hearth::TensorView& sc = ws.get(a + "q_b_proj.weight_scale_inv");
    CHECK(sc.dtype == DType::F32);
    for (int64_t i = 0; i < sc.numel(); ++i) {
      int e;
      CHECK(std::frexp(element(sc, i), &e) == 0.5f);
    }
    float amax = 0;
    for (int64_t i = 0; i < w.numel(); ++i) amax = std::max(amax, std::fabs(element(w, i)));
    CHECK(amax > 200.0f);
    CHECK(amax <= 448.0f);
  }
  // Norm weights near 1, biases small, embeddings std ~1, router ~1/sqrt(hidden), head
  // 4/sqrt(hidden) (peaked next-token distributions).
  for (const char* n : {"model.norm.weight", "model.layers.0.input_layernorm.weight",
                               "model.layers.2.self_attn.kv_a_layernorm.weight", "model.layers.4.enorm.weight"}) {
    CAPTURE(n);
    const Stats s = stats(ws, n);
    CHECK(s.mean == doctest::Approx(1.0).epsilon(0.05));
    CHECK(s.std < 0.2);
    CHECK(s.std > 0.01);
  }
  CHECK(std::fabs(stats(ws, a + "indexer.k_norm.bias").mean) < 0.05);
  CHECK(stats(ws, a + "indexer.k_norm.bias").amax < 0.5);
  CHECK(stats(ws, "model.layers.1.mlp.gate.e_score_correction_bias").amax < 0.5);
  CHECK(stats(ws, "model.embed_tokens.weight").std == doctest::Approx(1.0).epsilon(0.05));
  CHECK(stats(ws, "lm_head.weight").std == doctest::Approx(4.0 / 16).epsilon(0.05));
  CHECK(stats(ws, "model.layers.3.mlp.gate.weight").std == doctest::Approx(1.0 / 16).epsilon(0.1));
  CHECK(stats(ws, "model.layers.4.eh_proj.weight").std == doctest::Approx(1.0 / std::sqrt(512)).epsilon(0.05));

  // Different tensors get different values.
  const auto& e0 = ws.get("model.layers.1.mlp.experts.0.gate_proj.weight");
  const auto& e1 = ws.get("model.layers.1.mlp.experts.1.gate_proj.weight");
  CHECK(std::memcmp(e0.data, e1.data, e0.nbytes) != 0);
}

TEST_CASE("synth: deterministic, seed-dependent, independent of threads and sharding order") {
  TempDir tmp;
  synth(tmp.path / "a", 42, {}, 2 << 20, 1);
  synth(tmp.path / "b", 42, {}, 2 << 20, 2);
  synth(tmp.path / "c", 43, {}, 2 << 20, 2);
  const auto a = dir_contents(tmp.path / "a"), b = dir_contents(tmp.path / "b"), c = dir_contents(tmp.path / "c");
  CHECK(a.size() > 3);  // config, index and several shards
  CHECK(a == b);
  REQUIRE(a.size() == c.size());
  for (const auto& [name, bytes] : a) {
    CAPTURE(name);
    if (name == "config.json" || name == "model.safetensors.index.json") CHECK(c.at(name) == bytes);
    else CHECK(c.at(name) != bytes);
  }
  // Shard names and the index agree; every shard holds at most ~2 MiB unless one item is larger.
  const int n = int(a.size()) - 2;
  for (int i = 1; i <= n; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", i, n);
    CHECK(a.count(name) == 1);
  }
  const hearth::WeightStore sharded = hearth::WeightStore::open(tmp.path / "a");
  // The same tensors carry the same bytes whether sharded or not.
  synth(tmp.path / "single", 42);
  const hearth::WeightStore single = hearth::WeightStore::open(tmp.path / "single");
  REQUIRE(single.tensors().size() == sharded.tensors().size());
  for (const auto& [name, t] : single.tensors()) {
    const auto& u = sharded.get(name);
    REQUIRE(u.nbytes == t.nbytes);
    CHECK_MESSAGE(std::memcmp(u.data, t.data, t.nbytes) == 0, name);
  }
}

TEST_CASE("synth: --set overrides") {
  TempDir tmp;
  synth(tmp.path / "m", 0,
        {"index_topk=16", "num_hidden_layers=3", "num_nextn_predict_layers=0", "extra_key={\"a\":[1,2]}"});
  const json j = json::parse(slurp(tmp.path / "m" / "config.json"));
  CHECK(j["index_topk"] == 16);
  CHECK(j["num_hidden_layers"] == 3);
  CHECK(j["extra_key"] == json({{"a", {1, 2}}}));
  const hearth::WeightStore ws = hearth::WeightStore::open(tmp.path / "m");
  CHECK(ws.has("model.layers.2.mlp.experts.15.down_proj.weight"));
  CHECK_FALSE(ws.has("model.layers.3.input_layernorm.weight"));
  CHECK_FALSE(ws.has("model.layers.4.eh_proj.weight"));

  // V3: no indexer; no quantization: BF16 linear weights without scales.
  synth(tmp.path / "v3", 0, {"model_type=\"deepseek_v3\"", "quantization_config=null", "n_routed_experts=8",
                             "n_group=2", "topk_group=1", "num_experts_per_tok=2"});
  const ModelConfig c = ModelConfig::load(tmp.path / "v3" / "config.json");
  CHECK(c.model_type == "deepseek_v3");
  CHECK_FALSE(c.quantization.present);
  const hearth::WeightStore v3 = hearth::WeightStore::open(tmp.path / "v3");
  CHECK_FALSE(v3.has("model.layers.0.self_attn.indexer.wk.weight"));
  CHECK(v3.get("model.layers.0.self_attn.q_a_proj.weight").dtype == DType::BF16);
  CHECK_FALSE(v3.has("model.layers.0.self_attn.q_a_proj.weight_scale_inv"));
  CHECK(v3.has("model.layers.1.mlp.experts.7.up_proj.weight"));
  CHECK_FALSE(v3.has("model.layers.1.mlp.experts.8.up_proj.weight"));
  CHECK(v3.get("model.layers.1.mlp.gate.weight").shape == std::vector<int64_t>{8, 256});
}

TEST_CASE("synth: errors") {
  TempDir tmp;
  hearth::SynthOptions o;
  o.log = nullptr;
  o.out_dir = tmp.path / "x";
  o.preset = "huge";
  CHECK_THROWS_WITH_AS(hearth::synthesize_checkpoint(o), doctest::Contains("unknown preset 'huge'"),
                       std::runtime_error);
  o.preset = "tiny";
  o.sets = {"index_topk=abc"};
  CHECK_THROWS_WITH_AS(hearth::synthesize_checkpoint(o), doctest::Contains("--set index_topk: the value is not valid JSON"),
                       std::runtime_error);
  o.sets = {"model_type=deepseek_v32"};  // unquoted string
  CHECK_THROWS_WITH_AS(hearth::synthesize_checkpoint(o), doctest::Contains("not valid JSON"), std::runtime_error);
  o.sets = {"index_topk"};
  CHECK_THROWS_WITH_AS(hearth::synthesize_checkpoint(o), doctest::Contains("expected KEY=JSON"), std::runtime_error);
  o.sets = {"=1"};
  CHECK_THROWS_WITH_AS(hearth::synthesize_checkpoint(o), doctest::Contains("expected KEY=JSON"), std::runtime_error);
  o.sets = {"hidden_size=-1"};
  CHECK_THROWS_WITH_AS(hearth::synthesize_checkpoint(o), doctest::Contains("field 'hidden_size': must be positive"),
                       std::runtime_error);
  o.sets = {"model_type=\"llama\""};
  CHECK_THROWS_WITH_AS(hearth::synthesize_checkpoint(o), doctest::Contains("unsupported model_type 'llama'"),
                       std::runtime_error);
  o.sets = {};
  o.shard_size = 0;
  CHECK_THROWS_WITH_AS(hearth::synthesize_checkpoint(o), doctest::Contains("shard size"), std::runtime_error);
  o.shard_size = uint64_t(1) << 30;
  CHECK_FALSE(fs::exists(tmp.path / "x"));  // nothing written by the failures
  CHECK(fs::is_empty(tmp.path));

  // An existing non-empty directory is never touched.
  fs::create_directories(tmp.path / "full");
  std::ofstream(tmp.path / "full" / "keep.txt") << "keep";
  o.out_dir = tmp.path / "full";
  CHECK_THROWS_WITH_AS(hearth::synthesize_checkpoint(o), doctest::Contains("exists and is not empty"),
                       std::runtime_error);
  CHECK(slurp(tmp.path / "full" / "keep.txt") == "keep");
  CHECK(std::distance(fs::directory_iterator(tmp.path / "full"), fs::directory_iterator()) == 1);
  // A file in the way.
  o.out_dir = tmp.path / "full" / "keep.txt";
  CHECK_THROWS_WITH_AS(hearth::synthesize_checkpoint(o), doctest::Contains("not a directory"), std::runtime_error);
  // An existing empty directory is fine, with or without a trailing slash.
  fs::create_directories(tmp.path / "empty");
  o.out_dir = (tmp.path / "empty").string() + "/";
  CHECK_NOTHROW(hearth::synthesize_checkpoint(o));
  CHECK(fs::exists(tmp.path / "empty" / "config.json"));
  // Only the outputs remain: no temporary directories.
  for (const auto& e : fs::directory_iterator(tmp.path)) CHECK(e.path().filename().string().find(".tmp") == std::string::npos);
}

TEST_CASE("synth: the hearth synth command") {
  TempDir tmp;
  const std::string bin = HEARTH_CLI_BIN;
  const std::string out = (tmp.path / "cli").string();
  const std::string log = (tmp.path / "log.txt").string();
  int rc = std::system((bin + " synth -o " + out + " --preset tiny --seed 5 --set index_topk=16 --set 'extra={\"a\":1,\"b\":2}'"
                        " --shard-size 4M 2> " + log).c_str());
  CHECK(rc == 0);
  const ModelConfig c = ModelConfig::load(fs::path(out) / "config.json");
  CHECK(c.index_topk == 16);
  CHECK(json::parse(slurp(fs::path(out) / "config.json"))["extra"] == json({{"a", 1}, {"b", 2}}));
  CHECK(fs::exists(fs::path(out) / "model-00003-of-00003.safetensors"));
  CHECK(slurp(log).find("synth: wrote") != std::string::npos);

  // Same files as the library with the same options.
  synth(tmp.path / "lib", 5, {"index_topk=16", "extra={\"a\":1,\"b\":2}"}, 4 << 20);
  CHECK(dir_contents(out) == dir_contents(tmp.path / "lib"));

  // Errors: one line, non-zero exit.
  rc = std::system((bin + " synth -o " + out + " --preset tiny 2> " + log).c_str());
  CHECK(rc != 0);
  std::string msg = slurp(log);
  CHECK(msg.find("hearth synth: error: ") == 0);
  CHECK(msg.find("exists and is not empty") != std::string::npos);
  CHECK(std::count(msg.begin(), msg.end(), '\n') == 1);
  rc = std::system((bin + " synth -o " + out + "2 --preset huge 2> " + log).c_str());
  CHECK(rc != 0);
  CHECK(slurp(log).find("unknown preset 'huge'") != std::string::npos);
  rc = std::system((bin + " synth --preset tiny 2> " + log).c_str());
  CHECK(rc != 0);
  CHECK(slurp(log).find("--output is required") != std::string::npos);
  rc = std::system((bin + " synth --help > " + log).c_str());
  CHECK(rc == 0);
  CHECK(slurp(log).find("--shard-size") != std::string::npos);
}

}  // namespace engine_synth_suite

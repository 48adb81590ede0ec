// Loading the network from a checkpoint: shape checks, missing pieces, byte counts; and
// the routing and cache pieces of the forward pass on hand-checked inputs.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <string>

#include "engine/layers.h"
#include "engine/safetensors_writer.h"

namespace engine_model_suite {

using namespace hearth;
namespace fs = std::filesystem;

namespace {

const std::string kDir = std::string(HEARTH_TEST_DATA) + "/tiny-v32";

// A copy of the golden checkpoint with `edit` applied to its tensor list (drop or
// reshape entries); data is copied as is.
struct EditedCheckpoint {
  fs::path dir;
  explicit EditedCheckpoint(const std::function<bool(TensorSpec&)>& keep) {
    dir = fs::temp_directory_path() / ("hearth-model-test-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    fs::copy_file(kDir + "/config.json", dir / "config.json");
    const WeightStore src = WeightStore::open(kDir);
    std::vector<TensorSpec> specs;
    std::vector<const TensorView*> views;
    for (const auto& [name, t] : src.tensors()) {
      TensorSpec s{name, t.dtype, t.shape};
      if (!keep(s)) continue;
      specs.push_back(s);
      views.push_back(&t);
    }
    SafetensorsWriter w(dir / "model.safetensors", specs);
    for (size_t i = 0; i < specs.size(); ++i) {
      std::vector<uint8_t> bytes(specs[i].nbytes(), 0);
      std::copy_n(static_cast<const uint8_t*>(views[i]->data), std::min<uint64_t>(bytes.size(), views[i]->nbytes), bytes.begin());
      w.write(specs[i].name, bytes.data(), bytes.size());
    }
    w.finish();
  }
  ~EditedCheckpoint() { fs::remove_all(dir); }
};

std::string load_error(const fs::path& dir) {
  try {
    Model::load(dir.string());
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("model: an FP8 weight without its block scale is refused by name") {
  EditedCheckpoint ck([](TensorSpec& s) { return s.name != "model.layers.2.self_attn.o_proj.weight_scale_inv"; });
  const std::string err = load_error(ck.dir);
  CHECK(err.find("model.layers.2.self_attn.o_proj.weight") != std::string::npos);
  CHECK(err.find("no block scale") != std::string::npos);
}

TEST_CASE("model: a tensor whose shape disagrees with the config is refused by name") {
  EditedCheckpoint ck([](TensorSpec& s) {
    if (s.name == "model.layers.1.mlp.experts.3.up_proj.weight") s.shape = {96, 128};
    return true;
  });
  const std::string err = load_error(ck.dir);
  CHECK(err.find("model.layers.1.mlp.experts.3.up_proj.weight") != std::string::npos);
  CHECK(err.find("[96, 128]") != std::string::npos);
  CHECK(err.find("[96, 256]") != std::string::npos);
}

TEST_CASE("model: a missing expert tensor is refused by name") {
  EditedCheckpoint ck([](TensorSpec& s) { return s.name != "model.layers.3.mlp.experts.15.down_proj.weight"; });
  const std::string err = load_error(ck.dir);
  CHECK(err.find("missing tensor 'model.layers.3.mlp.experts.15.down_proj.weight'") != std::string::npos);
}

TEST_CASE("model: footprint splits parameters by kind") {
  const Model m = Model::load(kDir);
  const ModelFootprint f = m.footprint();
  // Routed experts of layers 1..3: 3 x 16 x 3 x (96 x 256).
  CHECK(f.routed_experts.params == 3 * 16 * 3 * 96 * 256);
  // Embeddings + head: 2 x 1024 x 256 BF16.
  CHECK(f.embeddings.params == 2 * 1024 * 256);
  CHECK(f.embeddings.bytes == 2 * 1024 * 256 * 2);
  CHECK(f.total().bytes == int64_t(m.store().total_bytes()));
  CHECK(f.mtp.params > 0);
}

TEST_CASE("moe routing: groups by top-2 sum, bias selects but does not weigh") {
  ModelConfig c;
  c.n_routed_experts = 8;
  c.num_experts_per_tok = 2;
  c.n_group = 4;  // groups {0,1} {2,3} {4,5} {6,7}
  c.topk_group = 2;
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.0;
  c.scoring_func = "sigmoid";
  // Logits chosen so sigmoid scores are simple: logit(p) = ln(p / (1 - p)).
  auto logit = [](double p) { return float(std::log(p / (1.0 - p))); };
  const float logits[8] = {logit(0.9), logit(0.1), logit(0.6), logit(0.6), logit(0.7), logit(0.2), logit(0.5), logit(0.5)};
  // Without bias: group sums 1.0, 1.2, 0.9, 1.0 -> groups {2,3} and (tie 1.0) {0,1}, the earlier group.
  Routing r = route_token(c, logits, std::vector<float>(8, 0.0f));
  REQUIRE(r.experts.size() == 2);
  CHECK(r.experts[0] == 0);  // 0.9
  CHECK(r.experts[1] == 2);  // 0.6 (tie with 3: the lower index)
  CHECK(r.weights[0] == doctest::Approx(2.0 * 0.9 / 1.5));
  CHECK(r.weights[1] == doctest::Approx(2.0 * 0.6 / 1.5));
  // A bias on expert 7 lifts group {6,7} (0.5 + 1.0 = 1.5 -> 2.0) and expert 7 to the top,
  // but its weight is still its unbiased score 0.5.
  std::vector<float> bias(8, 0.0f);
  bias[7] = 1.0f;
  r = route_token(c, logits, bias);
  CHECK(r.experts[0] == 7);
  CHECK(r.experts[1] == 2);
  CHECK(r.weights[0] == doctest::Approx(2.0 * 0.5 / 1.1));
  CHECK(r.weights[1] == doctest::Approx(2.0 * 0.6 / 1.1));
}

TEST_CASE("kv cache: pages are allocated per sequence and reused after removal") {
  const ModelConfig c = ModelConfig::load(kDir + "/config.json");
  KvCache cache(c, 4);
  const SeqId a = cache.add_sequence(), b = cache.add_sequence();
  cache.extend(a, 9);  // 3 pages
  cache.extend(b, 4);  // 1 page
  CHECK(cache.pages_in_use() == 4);
  // Distinct slots per (layer, sequence, position), and the values stay put.
  *cache.latent(3, a, 8) = 1.5f;
  *cache.latent(3, b, 3) = 2.5f;
  *cache.latent(0, a, 8) = 3.5f;
  cache.rope_key(3, a, 8)[c.qk_rope_head_dim - 1] = 4.5f;
  std::vector<uint8_t> key(static_cast<size_t>(c.index_head_dim), 0);
  key.back() = 7;
  cache.write_index_key(3, a, 8, key.data(), 0.25f);
  CHECK(*cache.latent(3, a, 8) == 1.5f);
  CHECK(*cache.latent(3, b, 3) == 2.5f);
  CHECK(*cache.latent(0, a, 8) == 3.5f);
  CHECK(cache.rope_key(3, a, 8)[c.qk_rope_head_dim - 1] == 4.5f);
  std::vector<uint8_t> read(key.size(), 1);
  cache.read_index_key(3, a, 8, read.data());
  CHECK(read == key);
  CHECK(*cache.index_scale(3, a, 8) == 0.25f);
  cache.remove_sequence(a);
  CHECK(cache.pages_in_use() == 1);
  const SeqId d = cache.add_sequence();
  CHECK(d == a);  // the slot is reused
  cache.extend(d, 12);
  CHECK(cache.pages_in_use() == 4);
  CHECK(cache.length(d) == 12);
}

TEST_CASE("prefill attention groups: nested picks share the last row's keys, overlapping picks their union") {
  std::vector<uint32_t> mark(64, 0);
  auto iota = [](int32_t n) {
    std::vector<int32_t> v(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i) v[size_t(i)] = i;
    return v;
  };
  SUBCASE("a prompt's rows: every row sees a prefix of the last row's positions") {
    const std::vector<std::vector<int32_t>> picked = {iota(5), iota(6), iota(7), iota(8)};
    const PrefillGroup g = plan_prefill_group(picked, 1, 3, mark);
    CHECK(g.together);
    CHECK(g.keys == iota(8));
    CHECK(g.counts == std::vector<int64_t>{6, 7, 8});
    CHECK(g.keep.empty());
    CHECK_FALSE(plan_prefill_group(picked, 2, 1, mark).together);  // one row: alone
  }
  SUBCASE("rows past index_topk: differing picks go over their union, each keeping its own") {
    const std::vector<std::vector<int32_t>> picked = {{0, 2, 3, 9}, {0, 3, 9, 10}, {2, 3, 10, 11}};
    const PrefillGroup g = plan_prefill_group(picked, 0, 3, mark);
    REQUIRE(g.together);  // 3 rows x 6 keys <= 2 x 12 picks
    CHECK(g.keys == std::vector<int32_t>{0, 2, 3, 9, 10, 11});
    CHECK(g.counts.empty());
    CHECK(g.keep == std::vector<uint8_t>{1, 1, 1, 1, 0, 0,  //
                                         1, 0, 1, 1, 1, 0,  //
                                         0, 1, 1, 0, 1, 1});
  }
  SUBCASE("picks with little in common: each row alone") {
    const std::vector<std::vector<int32_t>> picked = {{0, 1}, {2, 3}, {4, 5}};
    const PrefillGroup g = plan_prefill_group(picked, 0, 3, mark);
    CHECK_FALSE(g.together);  // 3 rows x 6 keys > 2 x 6 picks
  }
  CHECK(std::all_of(mark.begin(), mark.end(), [](uint32_t m) { return m == 0; }));  // left zeroed
}

}  // namespace engine_model_suite

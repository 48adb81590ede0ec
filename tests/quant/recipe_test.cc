// Quantization recipes (quant/recipe.h) on the real DeepSeek-V3.2 tensor list: the
// expectations are written out per preset from the documented rules, with the
// "more-bits" layers of a 61-layer model listed by hand.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "quant/recipe.h"
#include "support/errors.h"

namespace quant_recipe_suite {

using namespace hearth;
using hearth::testing::check_error;

namespace {

struct Tensor {
  std::string name;
  std::vector<int64_t> dims;  // ne order
};

constexpr int kLayers = 61;  // DeepSeek-V3: 61 layers, the first 3 dense, then MTP layer 61

// Every tensor of a DeepSeek-V3.2 GGUF (llama.cpp's names and ne order) with the real
// sizes: hidden 7168, q_lora 1536, kv_lora 512, 128 heads of nope 128 + rope 64, v 128,
// 256 experts of 2048, dense 18432, vocab 129280, indexer 64 heads of 128.
std::vector<Tensor> deepseek_v32() {
  const int64_t H = 7168, Q = 1536, KV = 512, NH = 128, NOPE = 128, ROPE = 64, V = 128, E = 256, MI = 2048,
                DI = 18432, VOCAB = 129280, IH = 64, ID = 128;
  std::vector<Tensor> ts = {{"token_embd.weight", {H, VOCAB}}, {"output_norm.weight", {H}}, {"output.weight", {H, VOCAB}}};
  for (int l = 0; l <= kLayers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    auto add = [&](const std::string& n, std::vector<int64_t> d) { ts.push_back({b + n, std::move(d)}); };
    add("attn_norm.weight", {H});
    add("attn_q_a.weight", {H, Q});
    add("attn_q_a_norm.weight", {Q});
    add("attn_q_b.weight", {Q, NH * (NOPE + ROPE)});
    add("attn_kv_a_mqa.weight", {H, KV + ROPE});
    add("attn_kv_a_norm.weight", {KV});
    add("attn_kv_b.weight", {KV, NH * (NOPE + V)});
    add("attn_k_b.weight", {NOPE, KV, NH});
    add("attn_v_b.weight", {KV, V, NH});
    add("attn_output.weight", {NH * V, H});
    add("ffn_norm.weight", {H});
    if (l < 3) {
      add("ffn_gate.weight", {H, DI});
      add("ffn_up.weight", {H, DI});
      add("ffn_down.weight", {DI, H});
    } else {
      add("ffn_gate_inp.weight", {H, E});
      add("exp_probs_b.bias", {E});
      add("ffn_gate_exps.weight", {H, MI, E});
      add("ffn_up_exps.weight", {H, MI, E});
      add("ffn_down_exps.weight", {MI, H, E});
      add("ffn_gate_shexp.weight", {H, MI});
      add("ffn_up_shexp.weight", {H, MI});
      add("ffn_down_shexp.weight", {MI, H});
    }
    add("indexer.attn_q_b.weight", {Q, IH * ID});
    add("indexer.attn_k.weight", {H, ID});
    add("indexer.proj.weight", {H, IH});
    add("indexer.k_norm.weight", {ID});
    add("indexer.k_norm.bias", {ID});
    if (l == kLayers) {
      add("nextn.eh_proj.weight", {2 * H, H});
      add("nextn.enorm.weight", {H});
      add("nextn.hnorm.weight", {H});
      add("nextn.shared_head_norm.weight", {H});
    }
  }
  return ts;
}

const Tensor& find(const std::vector<Tensor>& ts, const std::string& name) {
  for (const Tensor& t : ts)
    if (t.name == name) return t;
  throw std::logic_error("test list lacks " + name);
}

RecipeTensor as_recipe(const Tensor& t) { return RecipeTensor{t.name, t.dims, -1, kLayers}; }

// The more-bits layers of a 61-layer model, by hand: layers 0-6 (first eighth, 61/8 = 7),
// 53-60 (7*61/8 = 53) and every third layer from 9: 9, 12, ..., 51.
const std::set<int> kMoreBits = {0,  1,  2,  3,  4,  5,  6,  9,  12, 15, 18, 21, 24, 27, 30,
                                 33, 36, 39, 42, 45, 48, 51, 53, 54, 55, 56, 57, 58, 59, 60};

// Bytes of the whole model under a recipe, from the block geometry.
int64_t model_bytes(const QuantRecipe& r, const std::vector<Tensor>& ts) {
  int64_t total = 0;
  for (const Tensor& t : ts) {
    int64_t rows = 1;
    for (size_t i = 1; i < t.dims.size(); ++i) rows *= t.dims[i];
    const DType d = r.type_for(as_recipe(t));
    total += rows * (t.dims[0] / dtype_block_elems(d)) * dtype_block_bytes(d);
  }
  return total;
}

bool always_f32(const Tensor& t) {
  return t.dims.size() == 1 || t.name.find("ffn_gate_inp") != std::string::npos ||
         t.name.find("exp_probs_b") != std::string::npos || t.name.find("indexer.proj") != std::string::npos;
}

}  // namespace

TEST_CASE("recipe: every preset keeps norms router and indexer.proj at F32 and fits every row") {
  const auto ts = deepseek_v32();
  CHECK(QuantRecipe::preset_names().size() == 15);
  for (const std::string& name : QuantRecipe::preset_names()) {
    CAPTURE(name);
    const QuantRecipe r = QuantRecipe::preset(name);
    CHECK(r.name() == name);
    for (const Tensor& t : ts) {
      CAPTURE(t.name);
      const RecipeChoice c = r.choose(as_recipe(t));
      if (always_f32(t)) CHECK(c.type == DType::F32);
      CHECK(t.dims[0] % dtype_block_elems(c.type) == 0);
      CHECK(c.type != DType::F8_E4M3);
      CHECK(!c.why.empty());
    }
  }
}

TEST_CASE("recipe: Q4_K_M gives output Q6_K and more bits to attn_v and ffn_down in selected layers") {
  const auto ts = deepseek_v32();
  const QuantRecipe r = QuantRecipe::preset("q4_k_m");  // any case
  auto type = [&](const std::string& n) { return r.type_for(as_recipe(find(ts, n))); };
  CHECK(type("output.weight") == DType::Q6_K);
  CHECK(type("token_embd.weight") == DType::Q4_K);
  for (int l = 0; l <= kLayers; ++l) {
    CAPTURE(l);
    const std::string b = "blk." + std::to_string(l) + ".";
    const bool more = kMoreBits.count(l) || l == kLayers;  // MTP layer counts as last
    const DType bumped = more ? DType::Q6_K : DType::Q4_K;
    CHECK(type(b + "attn_kv_b.weight") == bumped);
    CHECK(type(b + "attn_v_b.weight") == bumped);
    CHECK(type(b + (l < 3 ? "ffn_down.weight" : "ffn_down_exps.weight")) == bumped);
    if (l >= 3) {
      CHECK(type(b + "ffn_down_shexp.weight") == bumped);
      CHECK(type(b + "ffn_gate_exps.weight") == DType::Q4_K);
      CHECK(type(b + "ffn_up_shexp.weight") == DType::Q4_K);
      CHECK(type(b + "ffn_gate_inp.weight") == DType::F32);
      CHECK(type(b + "exp_probs_b.bias") == DType::F32);
    }
    CHECK(type(b + "attn_q_a.weight") == DType::Q4_K);
    CHECK(type(b + "attn_q_b.weight") == DType::Q4_K);
    CHECK(type(b + "attn_kv_a_mqa.weight") == DType::Q4_K);
    CHECK(type(b + "attn_output.weight") == DType::Q4_K);
    CHECK(type(b + "attn_k_b.weight") == DType::Q8_0);  // rows of 128: not a K-quant block
    CHECK(type(b + "indexer.attn_q_b.weight") == DType::Q4_K);
    CHECK(type(b + "indexer.attn_k.weight") == DType::Q4_K);
    CHECK(type(b + "indexer.proj.weight") == DType::F32);
    CHECK(type(b + "indexer.k_norm.bias") == DType::F32);
    CHECK(type(b + "attn_norm.weight") == DType::F32);
  }
  CHECK(type("blk.61.nextn.eh_proj.weight") == DType::Q4_K);
  CHECK(type("blk.61.nextn.enorm.weight") == DType::F32);
}

TEST_CASE("recipe: the other K-quant mixes") {
  const auto ts = deepseek_v32();
  auto type = [&](const char* preset, const std::string& n) {
    return QuantRecipe::preset(preset).type_for(as_recipe(find(ts, n)));
  };
  // Q5_K_M: as Q4_K_M one step up.
  CHECK(type("Q5_K_M", "output.weight") == DType::Q6_K);
  CHECK(type("Q5_K_M", "blk.12.ffn_down_exps.weight") == DType::Q6_K);
  CHECK(type("Q5_K_M", "blk.13.ffn_down_exps.weight") == DType::Q5_K);
  CHECK(type("Q5_K_M", "blk.13.attn_v_b.weight") == DType::Q5_K);
  CHECK(type("Q5_K_M", "blk.54.attn_v_b.weight") == DType::Q6_K);
  CHECK(type("Q5_K_M", "blk.13.ffn_up_exps.weight") == DType::Q5_K);
  // Q5_K_S: only the output lifted.
  CHECK(type("Q5_K_S", "output.weight") == DType::Q6_K);
  CHECK(type("Q5_K_S", "blk.0.ffn_down.weight") == DType::Q5_K);
  CHECK(type("Q5_K_S", "blk.0.attn_kv_b.weight") == DType::Q5_K);
  // Q4_K_S: attn_v Q5_K in the first 4 layers, ffn_down Q5_K in the first eighth (0-6).
  CHECK(type("Q4_K_S", "blk.3.attn_kv_b.weight") == DType::Q5_K);
  CHECK(type("Q4_K_S", "blk.4.attn_kv_b.weight") == DType::Q4_K);
  CHECK(type("Q4_K_S", "blk.6.ffn_down_exps.weight") == DType::Q5_K);
  CHECK(type("Q4_K_S", "blk.7.ffn_down_exps.weight") == DType::Q4_K);
  CHECK(type("Q4_K_S", "blk.60.ffn_down_exps.weight") == DType::Q4_K);
  CHECK(type("Q4_K_S", "output.weight") == DType::Q6_K);
  // Q3_K_M: attn_v Q5_K in layers 0-1 then Q4_K; ffn_down Q5_K in layers 0-2 (61/16 = 3)
  // then Q4_K; attn_output Q4_K; the rest Q3_K.
  CHECK(type("Q3_K_M", "blk.1.attn_v_b.weight") == DType::Q5_K);
  CHECK(type("Q3_K_M", "blk.2.attn_v_b.weight") == DType::Q4_K);
  CHECK(type("Q3_K_M", "blk.2.ffn_down.weight") == DType::Q5_K);
  CHECK(type("Q3_K_M", "blk.3.ffn_down_exps.weight") == DType::Q4_K);
  CHECK(type("Q3_K_M", "blk.3.ffn_down_shexp.weight") == DType::Q4_K);
  CHECK(type("Q3_K_M", "blk.30.attn_output.weight") == DType::Q4_K);
  CHECK(type("Q3_K_M", "blk.30.ffn_up_exps.weight") == DType::Q3_K);
  CHECK(type("Q3_K_M", "token_embd.weight") == DType::Q3_K);
  CHECK(type("Q3_K_M", "output.weight") == DType::Q6_K);
  // Q3_K_S: uniform but the output.
  CHECK(type("Q3_K_S", "blk.0.ffn_down.weight") == DType::Q3_K);
  CHECK(type("Q3_K_S", "blk.0.attn_kv_b.weight") == DType::Q3_K);
  CHECK(type("Q3_K_S", "output.weight") == DType::Q6_K);
  // Q2_K: attn_v, ffn_down and attn_output at Q3_K.
  CHECK(type("Q2_K", "blk.30.ffn_down_exps.weight") == DType::Q3_K);
  CHECK(type("Q2_K", "blk.30.attn_kv_b.weight") == DType::Q3_K);
  CHECK(type("Q2_K", "blk.30.attn_output.weight") == DType::Q3_K);
  CHECK(type("Q2_K", "blk.30.ffn_gate_exps.weight") == DType::Q2_K);
  CHECK(type("Q2_K", "token_embd.weight") == DType::Q2_K);
  CHECK(type("Q2_K", "output.weight") == DType::Q6_K);
  CHECK(type("Q2_K", "blk.30.attn_k_b.weight") == DType::Q8_0);
  // Uniform presets.
  CHECK(type("Q6_K", "blk.30.ffn_down_exps.weight") == DType::Q6_K);
  CHECK(type("Q6_K", "output.weight") == DType::Q6_K);
  CHECK(type("Q6_K", "blk.30.attn_k_b.weight") == DType::Q8_0);
  CHECK(type("Q8_0", "output.weight") == DType::Q8_0);
  CHECK(type("Q8_0", "blk.30.attn_k_b.weight") == DType::Q8_0);
  CHECK(type("F16", "blk.30.ffn_up_exps.weight") == DType::F16);
  CHECK(type("F16", "blk.30.attn_norm.weight") == DType::F32);
  CHECK(type("F16", "blk.30.ffn_gate_inp.weight") == DType::F32);
  CHECK(type("BF16", "token_embd.weight") == DType::BF16);
  CHECK(type("F32", "blk.30.attn_k_b.weight") == DType::F32);
}

TEST_CASE("recipe: MoE presets put routed experts low and everything else at Q8_0") {
  const auto ts = deepseek_v32();
  const std::map<std::string, DType> experts = {
      {"MOE_Q4_K", DType::Q4_K}, {"MOE_Q3_K", DType::Q3_K}, {"moe_q2_k", DType::Q2_K}};
  for (const auto& [name, low] : experts) {
    CAPTURE(name);
    const QuantRecipe r = QuantRecipe::preset(name);
    for (const Tensor& t : ts) {
      CAPTURE(t.name);
      const bool routed = t.name.ends_with("_exps.weight");
      const DType want = always_f32(t) ? DType::F32 : routed ? low : DType::Q8_0;
      CHECK(r.type_for(as_recipe(t)) == want);
    }
  }
  // moe() is the same split with any pair.
  const QuantRecipe m = QuantRecipe::moe(DType::Q5_K, DType::BF16);
  CHECK(m.name() == "moe(Q5_K, BF16)");
  CHECK(m.type_for(as_recipe(find(ts, "blk.5.ffn_down_exps.weight"))) == DType::Q5_K);
  CHECK(m.type_for(as_recipe(find(ts, "blk.5.ffn_down_shexp.weight"))) == DType::BF16);
  CHECK(m.type_for(as_recipe(find(ts, "blk.5.attn_k_b.weight"))) == DType::BF16);
  CHECK(m.type_for(as_recipe(find(ts, "output.weight"))) == DType::BF16);
  CHECK(m.type_for(as_recipe(find(ts, "blk.5.ffn_gate_inp.weight"))) == DType::F32);
  check_error([] { QuantRecipe::moe(DType::F8_E4M3, DType::Q8_0); }, {"F8_E4M3", "GGUF"});
}

TEST_CASE("recipe: model sizes grow with the preset") {
  const auto ts = deepseek_v32();
  const char* order[] = {"MOE_Q2_K", "MOE_Q3_K", "MOE_Q4_K", "Q8_0", "BF16", "F32"};
  const char* kquants[] = {"Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0"};
  auto check_increasing = [&](const char* const* names, size_t n) {
    for (size_t i = 1; i < n; ++i) {
      CAPTURE(names[i]);
      CHECK(model_bytes(QuantRecipe::preset(names[i - 1]), ts) < model_bytes(QuantRecipe::preset(names[i]), ts));
    }
  };
  check_increasing(order, std::size(order));
  check_increasing(kquants, std::size(kquants));
  // Q8_0 is 8.5 bits per weight on everything but the F32 tensors; ~685B weights in all.
  const double q8 = double(model_bytes(QuantRecipe::preset("Q8_0"), ts));
  int64_t params = 0, f32_params = 0;
  for (const Tensor& t : ts) {
    int64_t n = 1;
    for (int64_t d : t.dims) n *= d;
    params += n;
    if (always_f32(t)) f32_params += n;
  }
  CHECK(params > 680e9);
  CHECK(params < 690e9);
  CHECK(q8 == doctest::Approx(double(params - f32_params) * 34 / 32 + double(f32_params) * 4));
}

TEST_CASE("recipe: block fallback for rows the chosen blocks do not divide") {
  const QuantRecipe r = QuantRecipe::preset("Q4_K_M");
  const RecipeChoice kb = r.choose({"blk.10.attn_k_b.weight", {128, 512, 128}, -1, kLayers});
  CHECK(kb.wanted == DType::Q4_K);
  CHECK(kb.type == DType::Q8_0);
  CHECK(kb.fell_back());
  CHECK(kb.why.find("128") != std::string::npos);
  CHECK(kb.why.find("Q8_0") != std::string::npos);
  CHECK(r.why({"blk.10.attn_k_b.weight", {128, 512, 128}, -1, kLayers}) == kb.why);
  // 100 is not a multiple of 32 either: F16.
  CHECK(r.type_for({"blk.10.attn_q_b.weight", {100, 64}, -1, kLayers}) == DType::F16);
  // Q8_0 rows of 48 values: F16. Element types always fit.
  CHECK(QuantRecipe::preset("Q8_0").type_for({"blk.0.attn_q_b.weight", {48, 64}, -1, kLayers}) == DType::F16);
  CHECK(QuantRecipe::preset("BF16").type_for({"blk.0.attn_q_b.weight", {7, 64}, -1, kLayers}) == DType::BF16);
  // A fitting choice does not fall back.
  const RecipeChoice ok = r.choose({"blk.10.attn_q_b.weight", {1536, 24576}, -1, kLayers});
  CHECK(!ok.fell_back());
  CHECK(ok.type == DType::Q4_K);
}

TEST_CASE("recipe: overrides win in the order added and keep the F32 tensors") {
  QuantRecipe r = QuantRecipe::preset("Q4_K_M");
  r.add_override("ffn_down_exps=q2_k");   // more specific first: it wins
  r.add_override("_exps\\.=Q3_K");
  r.add_override("blk\\.1[0-9]\\.=Q8_0");  // later: loses to the ones above on experts
  r.add_override("attn_k_b=Q5_K");         // goes through the fallback
  r.add_override("ffn_gate_inp|norm=Q4_0");  // never touches the always-F32 tensors
  auto t = [&](const std::string& n, std::vector<int64_t> d) { return RecipeTensor{n, std::move(d), -1, kLayers}; };
  CHECK(r.type_for(t("blk.12.ffn_down_exps.weight", {2048, 7168, 256})) == DType::Q2_K);
  CHECK(r.type_for(t("blk.12.ffn_up_exps.weight", {7168, 2048, 256})) == DType::Q3_K);
  CHECK(r.type_for(t("blk.12.attn_q_b.weight", {1536, 24576})) == DType::Q8_0);
  CHECK(r.type_for(t("blk.22.attn_q_b.weight", {1536, 24576})) == DType::Q4_K);   // no override: preset
  CHECK(r.type_for(t("blk.22.attn_kv_b.weight", {512, 32768})) == DType::Q4_K);  // 22 is not a more-bits layer
  const RecipeChoice kb = r.choose(t("blk.22.attn_k_b.weight", {128, 512, 128}));
  CHECK(kb.wanted == DType::Q5_K);
  CHECK(kb.type == DType::Q8_0);
  CHECK(kb.why.find("override 'attn_k_b=Q5_K'") != std::string::npos);
  CHECK(kb.overridden);
  CHECK_FALSE(r.choose(t("blk.22.attn_q_b.weight", {1536, 24576})).overridden);
  CHECK_FALSE(r.choose(t("blk.12.ffn_gate_inp.weight", {7168, 256})).overridden);  // F32 wins over the override
  CHECK(r.type_for(t("blk.12.ffn_gate_inp.weight", {7168, 256})) == DType::F32);
  CHECK(r.type_for(t("blk.12.attn_norm.weight", {7168})) == DType::F32);
  CHECK(r.why(t("blk.12.ffn_gate_inp.weight", {7168, 256})).find("router") != std::string::npos);
  const std::string d = r.describe();
  CHECK(d.find("Q4_K_M") != std::string::npos);
  CHECK(d.find("ffn_down_exps=Q2_K") != std::string::npos);
  CHECK(d.find('\n') == std::string::npos);
  // The 32-value formats llama.cpp falls back to, and IQ4_XS, by any spelling.
  QuantRecipe n = QuantRecipe::preset("Q4_K_M");
  n.add_override("attn_k_b=q5_0");
  n.add_override("attn_v_b=Q5_1");
  n.add_override("ffn_down_exps=iq4_nl");
  n.add_override("ffn_up_exps=IQ4_XS");
  n.add_override("attn_output=q4_1");
  n.add_override("attn_q_b=iq4_xs");
  CHECK(n.type_for(t("blk.12.attn_k_b.weight", {128, 512, 128})) == DType::Q5_0);
  CHECK(n.type_for(t("blk.12.attn_v_b.weight", {512, 128, 128})) == DType::Q5_1);
  CHECK(n.type_for(t("blk.12.ffn_down_exps.weight", {2048, 7168, 256})) == DType::IQ4_NL);
  CHECK(n.type_for(t("blk.12.ffn_up_exps.weight", {7168, 2048, 256})) == DType::IQ4_XS);
  CHECK(n.type_for(t("blk.12.attn_output.weight", {16384, 7168})) == DType::Q4_1);
  const RecipeChoice xs = n.choose(t("blk.12.attn_q_b.weight", {1536 + 64, 24576}));  // rows of 1600
  CHECK(xs.wanted == DType::IQ4_XS);
  CHECK(xs.type == DType::Q8_0);  // IQ4_XS falls back as the K-quants do
  CHECK(n.describe().find("attn_k_b=Q5_0") != std::string::npos);
  // A regex that contains '=' splits at the last one.
  QuantRecipe e = QuantRecipe::preset("Q8_0");
  e.add_override("at(?=tn)tn_output=Q4_0");
  CHECK(e.type_for(t("blk.1.attn_output.weight", {16384, 7168})) == DType::Q4_0);
}

TEST_CASE("recipe: bad presets and override specs are one-line errors") {
  check_error([] { QuantRecipe::preset("Q4_K_X"); }, {"'Q4_K_X'", "Q4_K_M", "MOE_Q2_K"});
  QuantRecipe r = QuantRecipe::preset("Q8_0");
  check_error([&] { r.add_override("attn_q_b"); }, {"'attn_q_b'", "REGEX=TYPE"});
  check_error([&] { r.add_override("=Q4_K"); }, {"'=Q4_K'", "empty regex"});
  check_error([&] { r.add_override("attn=Q7_K"); }, {"'attn=Q7_K'", "Q7_K", "Q4_K"});
  check_error([&] { r.add_override("attn="); }, {"'attn='", "unknown type"});
  check_error([&] { r.add_override("attn=F8_E4M3"); }, {"'attn=F8_E4M3'", "F8_E4M3"});
  check_error([&] { r.add_override("attn(=Q4_K"); }, {"'attn(=Q4_K'", "regular expression"});
  // None of the failures left an override behind.
  CHECK(r.type_for({"blk.0.attn_q_b.weight", {1536, 24576}, -1, kLayers}) == DType::Q8_0);
}

TEST_CASE("recipe: layer rules need the layer count") {
  const QuantRecipe r = QuantRecipe::preset("Q4_K_M");
  CHECK_THROWS_AS(r.type_for({"blk.3.ffn_down_exps.weight", {2048, 7168, 256}, -1, 0}), std::invalid_argument);
  // Rules without layers do not need it; an explicit layer beats the name.
  CHECK(r.type_for({"output.weight", {7168, 129280}, -1, 0}) == DType::Q6_K);
  CHECK(r.type_for({"blk.3.ffn_down_exps.weight", {2048, 7168, 256}, 10, kLayers}) == DType::Q4_K);
  CHECK(r.type_for({"blk.3.ffn_down_exps.weight", {2048, 7168, 256}, -1, kLayers}) == DType::Q6_K);
  CHECK(QuantRecipe::preset("F16").type_for({"blk.3.ffn_down_exps.weight", {2048, 7168, 256}, -1, 0}) == DType::F16);
}

}  // namespace quant_recipe_suite

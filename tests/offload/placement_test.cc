// Placement plans on hand-built item lists (offload/placement.h): budgets that fit nothing,
// everything or exactly half the routed experts, overrides both ways, profile order, bad
// input, and the roofline's figures against values worked out by hand here.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <set>
#include <string>
#include <vector>

#include "offload/byte_size.h"
#include "offload/placement.h"
#include "support/scratch.h"

namespace offload_placement_suite {

using namespace hearth;

namespace {

// The message of whatever `f` throws ("<no exception>" if nothing).
std::string thrown(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no exception>";
}

void check_thrown(const std::function<void()>& f, std::initializer_list<std::string> parts) {
  const std::string msg = thrown(f);
  for (const std::string& p : parts) CHECK_MESSAGE(msg.find(p) != std::string::npos, "'", p, "' not in: ", msg);
  CHECK_MESSAGE(msg.find('\n') == std::string::npos, "multi-line message: ", msg);
}

// A small model: KV cache 1000 bytes, embeddings 500, layer 0 dense (attention 100, MLP
// 200), layers 1 and 2 MoE (attention 100, router 10, shared expert 50, 8 experts of 40),
// head 300. Always-active on the GPU by default: 1000 + 3*100 + 200 + 2*(10+50) + 300 = 1920.
constexpr int64_t kExperts = 8, kExpertBytes = 40, kAlwaysActive = 1920, kTotal = 3060;

std::vector<PlacementItem> toy_items() {
  std::vector<PlacementItem> v;
  v.push_back({"kv_cache", TensorKind::kKvCache, -1, -1, 1000});
  v.push_back({"token_embd", TensorKind::kEmbedding, -1, -1, 500});
  v.push_back({"blk.0.attn", TensorKind::kAttention, 0, -1, 100});
  v.push_back({"blk.0.ffn", TensorKind::kDenseMlp, 0, -1, 200});
  for (int l = 1; l <= 2; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    v.push_back({b + "attn", TensorKind::kAttention, l, -1, 100});
    v.push_back({b + "ffn_gate_inp", TensorKind::kRouter, l, -1, 10});
    v.push_back({b + "ffn_shexp", TensorKind::kSharedExpert, l, -1, 50});
    for (int e = 0; e < kExperts; ++e)
      v.push_back({b + "ffn_exps." + std::to_string(e), TensorKind::kRoutedExpert, l, e, kExpertBytes});
  }
  v.push_back({"output", TensorKind::kHead, -1, -1, 300});
  return v;
}

PlacementPlan plan(int64_t budget, std::vector<std::string> overrides = {}, const ExpertProfile* profile = nullptr) {
  PlanRequest r;
  r.items = toy_items();
  r.gpu_budget_bytes = budget;
  for (const std::string& o : overrides) r.overrides.push_back(parse_place_override(o));
  r.profile = profile;
  return plan_placement(r);
}

// The (layer, expert) pairs the plan puts on the GPU.
std::set<std::pair<int64_t, int64_t>> gpu_experts(const PlacementPlan& p) {
  std::set<std::pair<int64_t, int64_t>> s;
  for (int64_t l = 0; l < 4; ++l)
    for (int64_t e = 0; e < kExperts + 2; ++e)
      if (p.expert_on_gpu(l, e)) s.insert({l, e});
  return s;
}

// A profile whose frequencies are all distinct: layer 2's experts are used more than layer
// 1's, and within a layer the odd experts more than the even ones.
ExpertProfile distinct_profile() {
  ExpertProfile p;
  p.source = "toy.json";
  p.tokens = 100;
  p.experts_per_tok = 2;
  p.freq.resize(3);
  for (int l = 1; l <= 2; ++l)
    for (int e = 0; e < kExperts; ++e) p.freq[size_t(l)].push_back(0.01 * (l * 16 + (e % 2) * 8 + e));
  return p;
}

}  // namespace

TEST_CASE("placement: a budget of zero puts everything on the CPU") {
  const PlacementPlan p = plan(0);
  CHECK(p.bytes(Where::kGpu) == 0);
  CHECK(p.bytes(Where::kCpu) == kTotal);
  for (const PlacementDecision& d : p.decisions()) CHECK(d.where == Where::kCpu);
  CHECK_FALSE(p.on_gpu("kv_cache"));
  CHECK(gpu_experts(p).empty());
}

TEST_CASE("placement: a budget smaller than the KV cache is an error naming both sizes") {
  check_thrown([] { plan(999); }, {"KV cache", "1000 B", "999 B"});
  check_thrown([] { plan(-1); }, {"negative"});
}

TEST_CASE("placement: a budget that fits everything leaves only the embeddings on the CPU") {
  const PlacementPlan p = plan(int64_t(1) << 40);
  CHECK(p.bytes(Where::kGpu) == kTotal - 500);
  CHECK(p.bytes(Where::kCpu) == 500);
  CHECK_FALSE(p.on_gpu("token_embd"));
  for (const char* n : {"kv_cache", "blk.0.attn", "blk.0.ffn", "blk.2.ffn_shexp", "blk.1.ffn_gate_inp", "output"})
    CHECK_MESSAGE(p.on_gpu(n), n);
  CHECK(gpu_experts(p).size() == 2 * kExperts);
  CHECK(p.gpu_experts_per_layer() == std::vector<int64_t>{0, kExperts, kExperts});
  CHECK(p.all_on_gpu(TensorKind::kAttention));
  CHECK_FALSE(p.all_on_gpu(TensorKind::kEmbedding));
  CHECK_FALSE(p.on_gpu("no.such.item"));
  CHECK(p.find("no.such.item") == nullptr);
  REQUIRE(p.find("blk.2.ffn_exps.7") != nullptr);
  CHECK(p.find("blk.2.ffn_exps.7")->item.bytes == kExpertBytes);

  // The embeddings go to the GPU only when asked to.
  const PlacementPlan all = plan(int64_t(1) << 40, {"token_embd=gpu"});
  CHECK(all.bytes(Where::kGpu) == kTotal);
  CHECK(all.find("token_embd")->forced);
}

TEST_CASE("placement: without a profile half the routed experts means layer 1's") {
  const int64_t budget = kAlwaysActive + kExperts * kExpertBytes + kExpertBytes - 1;  // room for 8, not 9
  const PlacementPlan p = plan(budget);
  CHECK(p.bytes(TensorKind::kRoutedExpert, Where::kGpu) == kExperts * kExpertBytes);
  CHECK(p.bytes(TensorKind::kRoutedExpert, Where::kCpu) == kExperts * kExpertBytes);
  std::set<std::pair<int64_t, int64_t>> want;
  for (int e = 0; e < kExperts; ++e) want.insert({1, e});
  CHECK(gpu_experts(p) == want);
  CHECK(p.bytes(Where::kGpu) == kAlwaysActive + kExperts * kExpertBytes);
  CHECK(p.gpu_experts_per_layer() == std::vector<int64_t>{0, kExperts, 0});
}

TEST_CASE("placement: with a profile half the routed experts are the most used half") {
  const ExpertProfile prof = distinct_profile();
  const PlacementPlan p = plan(kAlwaysActive + kExperts * kExpertBytes, {}, &prof);
  // Rank by frequency, computed here: l*16 + (e%2)*8 + e. Layer 2 (32..47) beats layer 1
  // (16..31) everywhere, so the top 8 are all of layer 2.
  std::vector<std::pair<double, std::pair<int64_t, int64_t>>> ranked;
  for (int l = 1; l <= 2; ++l)
    for (int e = 0; e < kExperts; ++e) ranked.push_back({double(l * 16 + (e % 2) * 8 + e), {l, e}});
  std::sort(ranked.rbegin(), ranked.rend());
  std::set<std::pair<int64_t, int64_t>> want;
  for (int i = 0; i < kExperts; ++i) want.insert(ranked[size_t(i)].second);
  CHECK(gpu_experts(p) == want);

  // Room for three: the three most used of layer 2 are its odd experts 7, 5, 3.
  const PlacementPlan three = plan(kAlwaysActive + 3 * kExpertBytes, {}, &prof);
  CHECK(gpu_experts(three) == std::set<std::pair<int64_t, int64_t>>{{2, 7}, {2, 5}, {2, 3}});

  // Ties go by layer, then expert: a flat profile gives the no-profile order.
  ExpertProfile flat = prof;
  for (auto& row : flat.freq)
    for (double& f : row) f = 0.25;
  const PlacementPlan tied = plan(kAlwaysActive + 3 * kExpertBytes, {}, &flat);
  CHECK(gpu_experts(tied) == std::set<std::pair<int64_t, int64_t>>{{1, 0}, {1, 1}, {1, 2}});
}

TEST_CASE("placement: overrides keep matching experts on the CPU even with room") {
  const PlacementPlan p = plan(int64_t(1) << 40, {"ffn_exps\\.[0-3]$=cpu"});
  for (int l = 1; l <= 2; ++l)
    for (int e = 0; e < kExperts; ++e) {
      CHECK(p.expert_on_gpu(l, e) == (e >= 4));
      CHECK(p.find("blk." + std::to_string(l) + ".ffn_exps." + std::to_string(e))->forced == (e < 4));
    }
  CHECK(p.bytes(Where::kCpu) == 500 + 2 * 4 * kExpertBytes);
  CHECK(p.unmatched_overrides.empty());
}

TEST_CASE("placement: overrides to gpu go first and count against the budget") {
  // Room for the KV cache and layer 1's experts only: the forced experts take their share
  // before attention is considered, so attention does not fit.
  const PlacementPlan p = plan(1000 + kExperts * kExpertBytes, {"blk\\.1\\.ffn_exps=gpu"});
  for (int e = 0; e < kExperts; ++e) {
    CHECK(p.expert_on_gpu(1, e));
    CHECK_FALSE(p.expert_on_gpu(2, e));
  }
  CHECK(p.on_gpu("kv_cache"));
  CHECK_FALSE(p.on_gpu("blk.0.attn"));
  CHECK(p.bytes(Where::kGpu) == 1000 + kExperts * kExpertBytes);

  // The first matching override wins.
  const PlacementPlan first = plan(int64_t(1) << 40, {"ffn_exps\\.0$=cpu", "ffn_exps=gpu"});
  CHECK_FALSE(first.expert_on_gpu(1, 0));
  CHECK(first.expert_on_gpu(1, 1));

  // Forced items alone over the budget: an error naming the bytes and the budget.
  check_thrown([] { plan(300, {"blk\\.1\\.ffn_exps=gpu"}); }, {"320 bytes", "300 bytes", "budget"});
  check_thrown([] { plan(0, {"output=gpu"}); }, {"300 bytes", "0 bytes"});
  // Forced GPU items leave too little for the cache.
  check_thrown([] { plan(1100, {"output=gpu"}); }, {"KV cache", "800 B left"});

  // An override that matches nothing is reported, not silently dropped.
  const PlacementPlan typo = plan(int64_t(1) << 40, {"fnn_exps=cpu"});
  CHECK(typo.unmatched_overrides == std::vector<std::string>{"fnn_exps=cpu"});
  CHECK(typo.bytes(Where::kCpu) == 500);
}

TEST_CASE("placement: bad overrides are errors naming the text") {
  check_thrown([] { parse_place_override("ffn_exps"); }, {"'ffn_exps'", "no '='"});
  check_thrown([] { parse_place_override("=gpu"); }, {"'=gpu'", "empty regex"});
  check_thrown([] { parse_place_override("ffn=tpu"); }, {"'ffn=tpu'", "'tpu'", "gpu or cpu"});
  check_thrown([] { parse_place_override("blk.([0-3=cpu"); }, {"'blk.([0-3=cpu'", "invalid regex"});
  const PlaceOverride o = parse_place_override("a=b(?=c)=GPU");  // the target follows the last '='
  CHECK(o.pattern == "a=b(?=c)");
  CHECK(o.where == Where::kGpu);
  CHECK(parse_place_override("x=cpu").where == Where::kCpu);
}

TEST_CASE("placement: a profile of the wrong shape is an error naming the file") {
  ExpertProfile p = distinct_profile();
  p.freq[2].pop_back();
  check_thrown([&] { plan(4000, {}, &p); }, {"toy.json", "freq[2]", "7 experts", "the model 8"});
  p = distinct_profile();
  p.freq.resize(2);
  check_thrown([&] { plan(4000, {}, &p); }, {"toy.json", "no row for layer 2"});
  p = distinct_profile();
  p.freq[0] = {0.5, 0.5};
  check_thrown([&] { plan(4000, {}, &p); }, {"toy.json", "freq[0]", "has none"});
}

TEST_CASE("placement: expert profiles round-trip through JSON and bad files are named errors") {
  hearth::testing::TempDir tmp("hearth-placement");
  const ExpertProfile p = distinct_profile();
  const std::string path = (tmp.path / "prof.json").string();
  p.save(path);
  CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
  const ExpertProfile q = ExpertProfile::load(path);
  CHECK(q.freq == p.freq);
  CHECK(q.tokens == 100);
  CHECK(q.experts_per_tok == 2);
  CHECK(q.source == path);
  CHECK(q.at(2, 3) == p.freq[2][3]);
  CHECK(q.at(0, 0) == 0.0);
  CHECK(q.at(7, 0) == 0.0);

  auto write = [&](const std::string& text) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
    return path;
  };
  nlohmann::json j = p.to_json();
  j["freq"][1][3] = 1.5;
  check_thrown([&] { ExpertProfile::load(write(j.dump())); }, {path, "freq[1][3]", "1.5"});
  j = p.to_json();
  j["freq"][2] = {0.1, 0.2};
  check_thrown([&] { ExpertProfile::load(write(j.dump())); }, {path, "freq[2]", "2 experts"});
  j = p.to_json();
  j.erase("tokens");
  check_thrown([&] { ExpertProfile::load(write(j.dump())); }, {path, "\"tokens\""});
  j = p.to_json();
  j["format"] = "other";
  check_thrown([&] { ExpertProfile::load(write(j.dump())); }, {path, "\"format\""});
  check_thrown([&] { ExpertProfile::load(write("{\"freq\": [")); }, {path, "not valid JSON"});
  check_thrown([&] { ExpertProfile::load((tmp.path / "missing.json").string()); }, {"missing.json", "cannot read"});
}

TEST_CASE("placement: the table and JSON report bytes per kind and side") {
  const PlacementPlan p = plan(kAlwaysActive + kExperts * kExpertBytes);
  const nlohmann::json j = p.to_json();
  CHECK(j["gpu_bytes"] == kAlwaysActive + kExperts * kExpertBytes);
  CHECK(j["cpu_bytes"] == 500 + kExperts * kExpertBytes);
  CHECK(j["gpu_budget_bytes"] == kAlwaysActive + kExperts * kExpertBytes);
  CHECK(j["kinds"]["routed_experts"]["gpu_items"] == kExperts);
  CHECK(j["kinds"]["routed_experts"]["cpu_bytes"] == kExperts * kExpertBytes);
  CHECK(j["kinds"]["embeddings"]["cpu_bytes"] == 500);
  CHECK(j["kinds"]["kv_cache"]["gpu_bytes"] == 1000);
  CHECK(j["items"].size() == toy_items().size());
  CHECK(j["items"][0]["name"] == "kv_cache");
  CHECK(j["items"][0]["where"] == "gpu");
  const std::string t = p.table();
  CHECK(t.find("| routed experts | 8 | 320 B | 8 | 320 B |") != std::string::npos);
  CHECK(t.find("| embeddings | 0 | 0 B | 1 | 500 B |") != std::string::npos);
  CHECK(t.find("| **total** | 18 | 2.19 KiB | 9 | 820 B |") != std::string::npos);
}

TEST_CASE("placement: the roofline estimate matches the formula worked by hand") {
  // Layer 1's experts on the GPU, layer 2's on the CPU (as in the half test above).
  const PlacementPlan p = plan(kAlwaysActive + kExperts * kExpertBytes);
  const Roofline r{/*cpu*/ 0.5, /*gpu*/ 2.0, /*link*/ 0.25, /*latency us*/ 1.0};
  const ModelShape shape{/*hidden*/ 16, /*experts_per_tok*/ 2, /*n_routed*/ 8};

  // Decode, one token: GPU reads the always-active weights without KV cache and embeddings
  // (300 + 200 + 20 + 100 + 300 = 920) and 2/8 of layer 1's 320 expert bytes (80); the CPU
  // 2/8 of layer 2's (80). Layer 2 is split (attention on the GPU, experts on the CPU):
  // two transfers of 16 x 4 bytes, each with 1 us latency.
  ThroughputEstimate t = predict(p, r, shape, 1);
  CHECK(t.decode.gpu_bytes == doctest::Approx(1000.0));
  CHECK(t.decode.cpu_bytes == doctest::Approx(80.0));
  CHECK(t.decode.link_transfers == 2);
  CHECK(t.decode.link_bytes == doctest::Approx(128.0));
  const double s1 = 1000.0 / 2e9 + 80.0 / 0.5e9 + 2 * 1e-6 + 128.0 / 0.25e9;  // 3.172 us
  CHECK(t.decode.seconds() == doctest::Approx(s1).epsilon(1e-12));
  CHECK(t.decode.tokens_per_s() == doctest::Approx(1.0 / 3.172e-6).epsilon(1e-9));

  // Four tokens: an expert is read when any of them picks it, 1 - (3/4)^4 = 175/256.
  t = predict(p, r, shape, 4);
  const double hit4 = 175.0 / 256.0;
  CHECK(t.decode.gpu_bytes == doctest::Approx(920.0 + 320.0 * hit4));
  CHECK(t.decode.cpu_bytes == doctest::Approx(320.0 * hit4));
  const double s4 = (920.0 + 320.0 * hit4) / 2e9 + 320.0 * hit4 / 0.5e9 + 2e-6 + 2 * 4 * 16 * 4 / 0.25e9;
  CHECK(t.decode.tokens_per_s() == doctest::Approx(4.0 / s4).epsilon(1e-9));

  // Prefill of 512 tokens: every expert is read (1 - (3/4)^512 is 1 to double precision).
  CHECK(t.prefill.tokens == 512);
  CHECK(t.prefill.gpu_bytes == doctest::Approx(1240.0));
  CHECK(t.prefill.cpu_bytes == doctest::Approx(320.0));
  const double sp = 1240.0 / 2e9 + 320.0 / 0.5e9 + 2e-6 + 2 * 512 * 16 * 4 / 0.25e9;
  CHECK(t.prefill.tokens_per_s() == doctest::Approx(512.0 / sp).epsilon(1e-9));

  // With a profile, each expert weighs by its own frequency.
  const ExpertProfile prof = distinct_profile();
  t = predict(p, r, shape, 1, &prof);
  double gpu = 920, cpu = 0;
  for (int e = 0; e < kExperts; ++e) {
    gpu += kExpertBytes * 0.01 * (16 + (e % 2) * 8 + e);
    cpu += kExpertBytes * 0.01 * (32 + (e % 2) * 8 + e);
  }
  CHECK(t.decode.gpu_bytes == doctest::Approx(gpu));
  CHECK(t.decode.cpu_bytes == doctest::Approx(cpu));

  // Everything on the GPU: no CPU bytes and no link traffic.
  t = predict(plan(int64_t(1) << 40), r, shape, 1);
  CHECK(t.decode.cpu_bytes == 0.0);
  CHECK(t.decode.link_transfers == 0);
  CHECK(t.decode.tokens_per_s() == doctest::Approx(2e9 / 1080.0).epsilon(1e-9));

  check_thrown([&] { predict(p, Roofline{0, 1, 1, 0}, shape, 1); }, {"bandwidths"});
  check_thrown([&] { predict(p, r, shape, 0); }, {"batch"});
  check_thrown([&] { predict(p, r, ModelShape{16, 0, 0}, 1); }, {"experts_per_tok"});
}

TEST_CASE("placement: byte sizes parse with binary units and reject junk") {
  CHECK(parse_byte_size("0") == 0);
  CHECK(parse_byte_size("4096") == 4096);
  CHECK(parse_byte_size("512M") == 512ll << 20);
  CHECK(parse_byte_size("24G") == 24ll << 30);
  CHECK(parse_byte_size("24gib") == 24ll << 30);
  CHECK(parse_byte_size("24GB") == 24ll << 30);
  CHECK(parse_byte_size("1.5T") == 3ll << 39);
  CHECK(parse_byte_size("2k") == 2048);
  for (const char* bad : {"", "G", "-1G", "12X", "1.2.3G", "1e9", "24 G", "99999999999T"})
    check_thrown([&] { parse_byte_size(bad); }, {std::string("'") + bad + "'"});
  CHECK(format_bytes(512) == "512 B");
  CHECK(format_bytes(1536) == "1.50 KiB");
  CHECK(format_bytes(24.0 * (1ll << 30)) == "24.00 GiB");
}

}  // namespace offload_placement_suite

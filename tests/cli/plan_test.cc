// `hearth plan` and `hearth profile-experts` end to end: the plan and estimate the CLI prints
// against the library's own on the golden model, budgets of none / all / part, profiles
// written with the right shape and used for ranking, and one-line errors for bad flags.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "engine/model.h"
#include "engine/placement_items.h"
#include "offload/byte_size.h"
#include "offload/placement.h"
#include "support/golden.h"
#include "support/scratch.h"
#include "support/tiny_chat_model.h"

namespace cli_plan_suite {

using hearth::testing::CliRun;
using hearth::testing::run_hearth;
using hearth::testing::TempDir;
using namespace hearth;

namespace {

const std::string kFixedBw = " --cpu-bw 40 --gpu-bw 900 --link-bw 20 --link-latency 5";

nlohmann::json run_json(const std::string& args) {
  const CliRun r = run_hearth(args + " --json");
  INFO(r.all());
  REQUIRE(r.code == 0);
  return nlohmann::json::parse(r.out);
}

bool one_line_error(const CliRun& r, std::initializer_list<std::string> parts) {
  bool ok = r.code != 0 && !r.err.empty() && std::count(r.err.begin(), r.err.end(), '\n') == 1;
  for (const std::string& p : parts) ok = ok && r.err.find(p) != std::string::npos;
  return ok;
}

const char* kText =
    "The quick brown fox jumps over the lazy dog. A proof by induction first checks the base case, "
    "then shows that the statement for n implies the statement for n + 1. Every positive integer "
    "greater than one is a product of primes, and that factorization is unique up to order.\n";

}  // namespace

TEST_CASE("cli: hearth plan prints the library's plan and roofline for the golden model") {
  const Model model = Model::load(testing::kGoldenDir);
  const int64_t ctx = 256, batch = 2;
  PlanRequest req;
  req.items = placement_items(model, ctx, batch);
  // Room for the always-active part (the embeddings apart) and 20 routed experts.
  int64_t always = 0, expert = 0;
  for (const PlacementItem& it : req.items) {
    if (it.kind == TensorKind::kRoutedExpert) expert = it.bytes;
    else if (it.kind != TensorKind::kEmbedding) always += it.bytes;
  }
  req.gpu_budget_bytes = always + 20 * expert;
  const PlacementPlan want = plan_placement(req);
  const ThroughputEstimate est = predict(want, Roofline{40, 900, 20, 5}, model_shape(model.config()), batch);

  const std::string base = "plan -m " + testing::kGoldenDir + " --ctx 256 --batch 2" + kFixedBw;
  const nlohmann::json j = run_json(base + " --gpu-mem " + std::to_string(req.gpu_budget_bytes));
  CHECK(j["gpu_budget_bytes"] == req.gpu_budget_bytes);
  CHECK(j["kv_cache_bytes"] == req.items[0].bytes);
  CHECK(j["plan"] == want.to_json());
  CHECK(j["plan"]["kinds"]["routed_experts"]["gpu_items"] == 20);
  CHECK(j["estimate"]["decode"]["tokens_per_s"].get<double>() == doctest::Approx(est.decode.tokens_per_s()));
  CHECK(j["estimate"]["prefill"]["tokens_per_s"].get<double>() == doctest::Approx(est.prefill.tokens_per_s()));
  CHECK(j["roofline"]["cpu_read_source"] == "given");

  // The text form: budget, KV cache, the table, the per-layer expert summary, the estimates.
  const CliRun r = run_hearth(base + " --gpu-mem " + std::to_string(req.gpu_budget_bytes));
  INFO(r.all());
  REQUIRE(r.code == 0);
  CHECK(r.out.find("GPU budget  " + format_bytes(double(req.gpu_budget_bytes))) != std::string::npos);
  CHECK(r.out.find("KV cache    " + format_bytes(double(req.items[0].bytes)) + " for --ctx 256 x --batch 2") !=
        std::string::npos);
  CHECK(r.out.find("| routed experts | 20 |") != std::string::npos);
  // Without a profile: layer 1's 16 experts, then 4 of layer 2.
  CHECK(r.out.find("routed experts on the GPU: 20 of 48 (41.7 %); per layer: 1: 16, 2: 4, 3: 0") != std::string::npos);
  CHECK(r.out.find("CPU read  40.0 GB/s (given)") != std::string::npos);
  CHECK(r.out.find("decode (batch 2)") != std::string::npos);
  CHECK(r.out.find("prefill (512 tokens)") != std::string::npos);

  // A budget for everything, and none at all.
  const nlohmann::json all = run_json(base + " --gpu-mem 1G");
  CHECK(all["plan"]["kinds"]["routed_experts"]["cpu_items"] == 0);
  CHECK(all["plan"]["kinds"]["embeddings"]["cpu_items"] == 1);
  CHECK(all["estimate"]["decode"]["cpu_bytes"] == 0.0);
  const CliRun none = run_hearth(base + " --gpu-mem 0");
  INFO(none.all());
  REQUIRE(none.code == 0);
  CHECK(none.out.find("no GPU, everything on the CPU") != std::string::npos);
  CHECK(none.out.find("| **total** | 0 | 0 B |") != std::string::npos);

  // Overrides both ways, and a warning for one that matches nothing.
  const nlohmann::json forced =
      run_json(base + " --gpu-mem 1G --place 'ffn_exps\\.[0-3]$=cpu' --place 'token_embd=gpu' --place 'nothing=cpu'");
  CHECK(forced["plan"]["kinds"]["routed_experts"]["cpu_items"] == 12);
  CHECK(forced["plan"]["kinds"]["embeddings"]["gpu_items"] == 1);
  CHECK(forced["plan"]["unmatched_overrides"] == nlohmann::json::array({"nothing=cpu"}));
  const CliRun warn = run_hearth(base + " --gpu-mem 1G --place nothing=cpu");
  CHECK(warn.code == 0);
  CHECK(warn.err.find("--place 'nothing=cpu' matched no item") != std::string::npos);
}

TEST_CASE("cli: hearth plan measures the CPU bandwidth when not given one") {
  const CliRun r = run_hearth("plan -m " + testing::kGoldenDir + " --gpu-mem 1G --ctx 64 -t 1");
  INFO(r.all());
  REQUIRE(r.code == 0);
  CHECK(r.out.find("GB/s (measured, 1 threads)") != std::string::npos);
  CHECK(r.out.find("(assumed default; pass --gpu-bw for your GPU)") != std::string::npos);
}

TEST_CASE("cli: hearth plan rejects bad flags with one line naming the flag") {
  const std::string m = "plan -m " + testing::kGoldenDir + " --ctx 256" + kFixedBw;
  CHECK(one_line_error(run_hearth(m + " --gpu-mem 24X"), {"--gpu-mem", "'24X'"}));
  CHECK(one_line_error(run_hearth(m + " --gpu-mem -1G"), {"--gpu-mem", "negative"}));
  CHECK(one_line_error(run_hearth(m), {"--gpu-mem", "required"}));
  CHECK(one_line_error(run_hearth(m + " --gpu-mem 1K"), {"--gpu-mem 1K", "KV cache", "--ctx 256"}));
  CHECK(one_line_error(run_hearth(m + " --gpu-mem 1G --place 'blk.([0-3=gpu'"), {"--place", "invalid regex"}));
  CHECK(one_line_error(run_hearth(m + " --gpu-mem 1G --place ffn_exps"), {"--place", "no '='"}));
  CHECK(one_line_error(run_hearth(m + " --gpu-mem 1M --place ffn_exps=gpu"), {"--place", "budget"}));
  CHECK(one_line_error(run_hearth(m + " --gpu-mem 1G --profile /nonexistent/prof.json"),
                       {"--profile", "/nonexistent/prof.json"}));
  CHECK(one_line_error(run_hearth(m + " --gpu-mem 1G --gpu-bw 0"), {"--gpu-bw"}));
  CHECK(one_line_error(run_hearth(m + " --gpu-mem 1G --batch 0"), {"--batch"}));
  CHECK(one_line_error(run_hearth("plan -m " + testing::kGoldenDir + " --gpu-mem 1G --ctx 999999999"), {"--ctx"}));
}

TEST_CASE("cli: hearth profile-experts writes frequencies that hearth plan ranks experts by") {
  const std::filesystem::path model_dir = testing::tiny_chat_model_dir();
  TempDir tmp("hearth-profile-cli");
  const std::string text = (tmp.path / "text.txt").string(), out = (tmp.path / "prof.json").string();
  std::ofstream(text, std::ios::binary) << kText;

  const CliRun r = run_hearth("profile-experts -m " + model_dir.string() + " -f " + text + " -o " + out +
                              " --ctx 16 --chunks 2 -t 2");
  INFO(r.all());
  REQUIRE(r.code == 0);
  CHECK(r.out.find("32 tokens in 2 chunks") != std::string::npos);
  CHECK(r.out.find("most used") != std::string::npos);
  CHECK(r.out.find("least used") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(out + ".tmp"));

  const Model model = Model::load(model_dir.string());
  const ModelConfig& c = model.config();
  const ExpertProfile prof = ExpertProfile::load(out);
  CHECK(prof.tokens == 32);
  CHECK(prof.experts_per_tok == c.num_experts_per_tok);
  REQUIRE(int64_t(prof.freq.size()) == c.num_hidden_layers);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    INFO("layer ", l);
    if (!c.is_moe_layer(l)) {
      CHECK(prof.freq[size_t(l)].empty());
      continue;
    }
    REQUIRE(int64_t(prof.freq[size_t(l)].size()) == c.n_routed_experts);
    double sum = 0;
    for (double f : prof.freq[size_t(l)]) {
      sum += f;
      // A whole number of the 32 tokens chose each expert.
      CHECK(f * 32 == doctest::Approx(double(int64_t(f * 32 + 0.5))));
    }
    CHECK(sum == doctest::Approx(double(c.num_experts_per_tok)));  // top-k per token
  }

  // hearth plan with the profile and room for 5 routed experts: the 5 most used.
  PlanRequest req;
  req.items = placement_items(model, 64, 1);
  int64_t always = 0, expert = 0;
  for (const PlacementItem& it : req.items) {
    if (it.kind == TensorKind::kRoutedExpert) expert = it.bytes;
    else if (it.kind != TensorKind::kEmbedding) always += it.bytes;
  }
  const int64_t budget = always + 5 * expert;
  const nlohmann::json j = run_json("plan -m " + model_dir.string() + " --ctx 64 --gpu-mem " + std::to_string(budget) +
                                    " --profile " + out + kFixedBw);
  CHECK(j["profile"] == out);
  std::vector<std::tuple<double, int64_t, int64_t>> ranked;  // (-freq, layer, expert): most used first
  for (size_t l = 0; l < prof.freq.size(); ++l)
    for (size_t e = 0; e < prof.freq[l].size(); ++e) ranked.emplace_back(-prof.freq[l][e], int64_t(l), int64_t(e));
  std::sort(ranked.begin(), ranked.end());
  std::set<std::string> want, got;
  for (size_t i = 0; i < 5; ++i)
    want.insert("blk." + std::to_string(std::get<1>(ranked[i])) + ".ffn_exps." + std::to_string(std::get<2>(ranked[i])));
  for (const auto& it : j["plan"]["items"])
    if (it["kind"] == "routed_experts" && it["where"] == "gpu") got.insert(it["name"].get<std::string>());
  CHECK(got == want);

  // A profile of another shape (one expert fewer per layer) is an error naming the flag,
  // the file and the first row that does not match the model.
  nlohmann::json bad = prof.to_json();
  for (auto& row : bad["freq"])
    if (!row.empty()) row.erase(0);
  const std::string bad_path = (tmp.path / "bad.json").string();
  std::ofstream(bad_path) << bad.dump();
  CHECK(one_line_error(run_hearth("plan -m " + model_dir.string() + " --ctx 64 --gpu-mem 1G --profile " + bad_path + kFixedBw),
                       {"--profile", bad_path, "freq[1]"}));

  // Errors: a text shorter than a chunk, a missing text, a missing -o; no profile is left.
  const std::string none = (tmp.path / "none.json").string();
  CHECK(one_line_error(run_hearth("profile-experts -m " + model_dir.string() + " -f " + text + " -o " + none + " --ctx 4096"),
                       {"fewer than one chunk"}));
  CHECK(one_line_error(run_hearth("profile-experts -m " + model_dir.string() + " -f /nonexistent.txt -o " + none),
                       {"/nonexistent.txt"}));
  CHECK(one_line_error(run_hearth("profile-experts -m " + model_dir.string() + " -f " + text), {"--output"}));
  CHECK_FALSE(std::filesystem::exists(none));
}

}  // namespace cli_plan_suite

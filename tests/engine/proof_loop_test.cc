// The proof loop on a deterministic fake model (tests/support/fake_proof_runner.h):
// stage counts, scoring, stopping, and runs interrupted or crashed and then resumed,
// which must leave the same pool as a run that never stopped.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "engine/proof_loop.h"
#include "engine/proof_parse.h"
#include "support/fake_proof_runner.h"
#include "support/proof_pool_map.h"
#include "support/scratch.h"

namespace engine_proof_loop_suite {

using namespace hearth;
using hearth::testing::FakeProofRunner;
using hearth::testing::slurp;
using hearth::testing::TempDir;
namespace fs = std::filesystem;
using hearth::testing::pool_map;

namespace {

const std::string kProblem = "Show that the sum of two odd integers is even.";

ProofLoopOptions options(int n, int v, int r) {
  ProofLoopOptions o;
  o.samples = n;
  o.verifications = v;
  o.rounds = r;
  o.max_tokens = 400;
  o.seed = 11;
  o.journal_interval = 0.05;
  return o;
}

int count_kind(const std::map<std::string, nlohmann::json>& pool, const std::string& kind, int round = 0) {
  int n = 0;
  for (const auto& [id, j] : pool) n += j["kind"] == kind && (round == 0 || j["round"] == round);
  return n;
}

struct Run {
  ProofLoopResult result;
  int64_t tokens = 0, resumed_jobs = 0;
  std::vector<std::string> prompts, warnings;
};

// One run of the loop in `dir` with a fresh fake; `setup` adjusts the fake.
Run run_loop(const fs::path& dir, const ProofLoopOptions& o, const std::function<void(FakeProofRunner&)>& setup = {},
             std::atomic<bool>* stop = nullptr) {
  FakeProofRunner fake;
  fake.stop_flag = stop;
  if (setup) setup(fake);
  Run out;
  ProofLoop loop(fake, ProofTemplates::defaults(), kProblem, o, dir, [&](const std::string& w) { out.warnings.push_back(w); });
  out.result = loop.run(stop);
  out.tokens = fake.tokens;
  out.resumed_jobs = fake.resumed_jobs;
  out.prompts = fake.prompts;
  return out;
}

}  // namespace

TEST_CASE("proof_loop: N=4 V=4 R=2 runs every stage with the right counts") {
  TempDir d("proof-loop");
  std::vector<ProofProgress> progress;
  FakeProofRunner fake;
  ProofLoop loop(fake, ProofTemplates::defaults(), kProblem, options(4, 4, 2), d.path);
  const ProofLoopResult res = loop.run(nullptr, [&](const ProofProgress& p) { progress.push_back(p); });
  CHECK(res.end == ProofLoopResult::End::kRoundsDone);
  CHECK(res.rounds_run == 2);

  const auto pool = pool_map(d.path);
  CHECK(pool.size() == 8 + 32);
  CHECK(count_kind(pool, "generation", 1) == 4);
  CHECK(count_kind(pool, "generation", 2) == 4);
  CHECK(count_kind(pool, "verification", 1) == 16);
  CHECK(count_kind(pool, "verification", 2) == 16);
  CHECK(count_kind(pool, "meta") == 0);
  CHECK(res.samples_finished == 40);
  CHECK(res.samples_from_pool == 0);
  const std::string lines = slurp(d.path / "pool.jsonl");
  CHECK(std::count(lines.begin(), lines.end(), '\n') == 40);

  for (const auto& [id, j] : pool) {
    if (j["kind"] == "verification") {
      const std::string parent = j["parent"];
      REQUIRE(pool.count(parent));
      CHECK(pool.at(parent)["kind"] == "generation");
      CHECK(j["rating"] == 0.5);  // the fake verifier reads the quality the proof states
      // The V ratings of one proof are consecutive seeds (one submit of n samples).
      CHECK(j["seed"].get<uint64_t>() == pool.at(parent + ".v0")["seed"].get<uint64_t>() +
                                             j["index"].get<uint64_t>());
    } else {
      CHECK(j["self_score"] == 0.5);
      CHECK(parse_proof(j["text"].get<std::string>(), true).sections.solution == j["proof"]);
      CHECK(j["stop"] == stop_reason_name(StopReason::kEos));
    }
  }
  // Refinements were shown the three best round-1 proofs (all tied: by index).
  CHECK(pool.at("r2.g0")["context"] == nlohmann::json({"r1.g0", "r1.g1", "r1.g2"}));
  CHECK(pool.at("r2.g3")["parent"] == "r1.g0");
  CHECK(pool.at("r1.g0")["parent"] == "");
  // ... in a prompt carrying their proofs and scores.
  const auto refine = std::find_if(fake.prompts.begin(), fake.prompts.end(),
                                   [](const std::string& p) { return p.find("Earlier attempts") != std::string::npos; });
  REQUIRE(refine != fake.prompts.end());
  CHECK(refine->find(pool.at("r1.g1")["proof"].get<std::string>()) != std::string::npos);
  CHECK(refine->find(pool.at("r1.g3")["proof"].get<std::string>()) == std::string::npos);
  CHECK(refine->find("mean score 0.5") != std::string::npos);
  CHECK(refine->find("Step two is checked") != std::string::npos);  // a finding from a 0.5 rating

  REQUIRE(res.proofs.size() == 8);
  for (const ProofScore& p : res.proofs) {
    CHECK(p.ratings.size() == 4);
    CHECK(p.score == std::optional<double>(0.5));
  }
  CHECK(fake.most_running == 5);  // verifications joined generations still running
  CHECK(slurp(d.path / "best.md").find(res.proofs.front().proof) != std::string::npos);
  const auto summary = nlohmann::json::parse(slurp(d.path / "summary.json"));
  CHECK(summary["end"] == "rounds_done");
  CHECK(summary["proofs"].size() == 8);
  CHECK(proof_summary_table(res).find("all rounds done after 2 round(s)") != std::string::npos);

  REQUIRE(!progress.empty());
  CHECK(progress.back().round == 2);
  CHECK(progress.back().done == 20);
  CHECK(progress.back().total == 20);
  CHECK(progress.back().tokens == fake.tokens);
}

TEST_CASE("proof_loop: it stops at the first round where a proof scores 1") {
  TempDir a("proof-loop-solved1"), b("proof-loop-solved2");
  const Run first = run_loop(a.path, options(3, 2, 3), [](FakeProofRunner& f) { f.first_quality = 1; });
  CHECK(first.result.end == ProofLoopResult::End::kSolved);
  CHECK(first.result.rounds_run == 1);
  CHECK(pool_map(a.path).size() == 3 + 6);

  const Run second = run_loop(b.path, options(3, 2, 3), [](FakeProofRunner& f) { f.refine_quality = 1; });
  CHECK(second.result.end == ProofLoopResult::End::kSolved);
  CHECK(second.result.rounds_run == 2);
  const auto pool = pool_map(b.path);
  CHECK(pool.size() == 2 * (3 + 6));
  CHECK(count_kind(pool, "generation", 3) == 0);
  REQUIRE(!second.result.proofs.empty());
  CHECK(second.result.proofs.front().round == 2);
  CHECK(second.result.proofs.front().score == std::optional<double>(1.0));
  CHECK(nlohmann::json::parse(slurp(b.path / "summary.json"))["end"] == "solved");
}

TEST_CASE("proof_loop: meta-verification checks each rating below 1 and drops the unsound ones") {
  TempDir d("proof-loop-meta");
  ProofLoopOptions o = options(4, 4, 1);
  o.meta_verify = true;
  const Run run = run_loop(d.path, o, [](FakeProofRunner& f) { f.mixed_ratings = true; });
  const auto pool = pool_map(d.path);
  int low = 0;
  for (const auto& [id, j] : pool)
    if (j["kind"] == "verification") {
      const bool has_meta = pool.count(id + ".m") > 0;
      CHECK(has_meta == (j["rating"] != 1.0));
      low += j["rating"] != 1.0;
      if (has_meta) CHECK(pool.at(id + ".m")["parent"] == id);
    }
  CHECK(low > 0);
  CHECK(low < 16);
  CHECK(count_kind(pool, "meta") == low);
  // Each proof's score, recomputed from the pool: the ratings whose verdict is not 0.
  for (const ProofScore& p : run.result.proofs) {
    double sum = 0;
    int n = 0;
    for (int j = 0; j < 4; ++j) {
      const std::string v = p.id + ".v" + std::to_string(j);
      const double rating = pool.at(v)["rating"];
      if (pool.count(v + ".m") && pool.at(v + ".m")["verdict"] == 0.0) continue;
      sum += rating;
      ++n;
    }
    CHECK(p.score == (n ? std::optional<double>(sum / n) : std::nullopt));
  }
  // The ranking follows the scores.
  for (size_t i = 1; i < run.result.proofs.size(); ++i)
    CHECK(run.result.proofs[i - 1].score.value_or(-1) >= run.result.proofs[i].score.value_or(-1));
}

TEST_CASE("proof_loop: proofs never written are not verified") {
  TempDir d("proof-loop-short");
  ProofLoopOptions o = options(3, 4, 2);
  o.max_tokens = 12;  // the budget ends inside the reasoning
  const Run run = run_loop(d.path, o);
  const auto pool = pool_map(d.path);
  CHECK(pool.size() == 6);
  CHECK(count_kind(pool, "verification") == 0);
  for (const auto& [id, j] : pool) {
    CHECK(j["proof"] == "");
    CHECK(j["tokens"] == 12);
    CHECK(j["stop"] == stop_reason_name(StopReason::kMaxTokens));
  }
  CHECK(run.result.end == ProofLoopResult::End::kRoundsDone);
  CHECK(slurp(d.path / "best.md").find("No sample wrote a proof") != std::string::npos);
}

TEST_CASE("proof_loop: non-thinking prompts are answered without reasoning") {
  TempDir d("proof-loop-plain");
  ProofLoopOptions o = options(2, 2, 1);
  o.thinking = false;
  const Run run = run_loop(d.path, o);
  const auto pool = pool_map(d.path);
  CHECK(count_kind(pool, "verification") == 4);
  for (const std::string& p : run.prompts) CHECK(p.starts_with("[plain]"));
  CHECK(run.result.proofs.front().score == std::optional<double>(0.5));
}

TEST_CASE("proof_loop: interrupted runs resume to the same pool with nothing lost or doubled") {
  ProofLoopOptions o = options(4, 3, 2);
  o.meta_verify = true;
  const auto mixed = [](FakeProofRunner& f) { f.mixed_ratings = true; };
  TempDir whole("proof-loop-whole");
  const Run ref = run_loop(whole.path, o, mixed);
  const auto expected = pool_map(whole.path);
  REQUIRE(ref.tokens > 100);
  REQUIRE(count_kind(expected, "meta") > 0);

  for (const int64_t k : {ref.tokens / 9, ref.tokens / 3, ref.tokens / 2, ref.tokens * 4 / 5, ref.tokens * 9 / 10}) {
    CAPTURE(k);
    TempDir d("proof-loop-resume");
    std::atomic<bool> stop{false};
    const Run first = run_loop(d.path, o, [&](FakeProofRunner& f) { mixed(f), f.stop_after_tokens = k; }, &stop);
    CHECK(first.result.end == ProofLoopResult::End::kInterrupted);
    CHECK_FALSE(fs::exists(d.path / "best.md"));
    CHECK(pool_map(d.path).size() < expected.size());
    const Run second = run_loop(d.path, o, mixed);
    CHECK(second.result.end == ref.result.end);
    CHECK(pool_map(d.path) == expected);
    // Every token was made exactly once: the partial samples went on from the journal.
    CHECK(first.tokens + second.tokens == ref.tokens);
    CHECK(second.resumed_jobs > 0);
    CHECK(second.result.samples_resumed == second.resumed_jobs);
    CHECK(first.result.samples_finished + second.result.samples_finished == int64_t(expected.size()));
    CHECK(slurp(d.path / "best.md") == slurp(whole.path / "best.md"));
  }
}

TEST_CASE("proof_loop: a crash loses at most the unjournaled tokens and never finished work") {
  ProofLoopOptions o = options(1, 2, 2);
  const auto terse = [](FakeProofRunner& f) { f.terse = true; };
  TempDir whole("proof-loop-whole");
  const Run ref = run_loop(whole.path, o, terse);
  const auto expected = pool_map(whole.path);

  SUBCASE("journal written after every token: nothing is generated twice") {
    o.journal_interval = 0;  // a journal write (with fsync) per token: keep this run small
    for (const int64_t k : {ref.tokens / 3, ref.tokens * 3 / 4}) {
      CAPTURE(k);
      TempDir d("proof-loop-crash");
      CHECK_THROWS_WITH(run_loop(d.path, o, [&](FakeProofRunner& f) { f.terse = true, f.throw_after_tokens = k; }),
                        "fake runner: simulated crash");
      const Run second = run_loop(d.path, o, terse);
      CHECK(pool_map(d.path) == expected);
      CHECK(k + second.tokens == ref.tokens);
    }
  }
  SUBCASE("journal never written mid-round: partial samples start over") {
    o.journal_interval = 1e9;
    TempDir d("proof-loop-crash");
    CHECK_THROWS(run_loop(d.path, o, [&](FakeProofRunner& f) { f.terse = true, f.throw_after_tokens = ref.tokens / 2; }));
    const auto before = pool_map(d.path);
    CHECK(!before.empty());
    const Run second = run_loop(d.path, o, terse);
    CHECK(pool_map(d.path) == expected);
    CHECK(second.tokens > ref.tokens - ref.tokens / 2);  // some work was redone
    CHECK(second.result.samples_from_pool == int64_t(before.size()));
  }
}

TEST_CASE("proof_loop: a torn pool line after a crash is dropped and its sample redone") {
  ProofLoopOptions o = options(3, 2, 1);
  TempDir whole("proof-loop-whole");
  run_loop(whole.path, o);
  TempDir d("proof-loop-torn");
  std::atomic<bool> stop{false};
  run_loop(d.path, o, [](FakeProofRunner& f) { f.stop_after_tokens = 300; }, &stop);
  std::ofstream(d.path / "pool.jsonl", std::ios::binary | std::ios::app) << "{\"id\": \"r1.g9\", \"ro";
  const Run second = run_loop(d.path, o);
  REQUIRE(second.warnings.size() == 1);
  CHECK(second.warnings[0].find("torn") != std::string::npos);
  CHECK(pool_map(d.path) == pool_map(whole.path));
}

TEST_CASE("proof_loop: resuming a finished run generates nothing") {
  TempDir d("proof-loop-done");
  const ProofLoopOptions o = options(2, 2, 2);
  const Run first = run_loop(d.path, o);
  const std::string pool = slurp(d.path / "pool.jsonl");
  const Run again = run_loop(d.path, o);
  CHECK(again.tokens == 0);
  CHECK(again.result.samples_finished == 0);
  CHECK(again.result.samples_from_pool == int64_t(pool_map(d.path).size()));
  CHECK(slurp(d.path / "pool.jsonl") == pool);
  REQUIRE(again.result.proofs.size() == first.result.proofs.size());
  for (size_t i = 0; i < first.result.proofs.size(); ++i) CHECK(again.result.proofs[i].id == first.result.proofs[i].id);
}

TEST_CASE("proof_loop: stop-after-samples ends the run like an interrupt") {
  TempDir d("proof-loop-stopafter");
  ProofLoopOptions o = options(3, 2, 1);
  o.stop_after_samples = 4;
  const Run first = run_loop(d.path, o);
  CHECK(first.result.end == ProofLoopResult::End::kInterrupted);
  CHECK(first.result.samples_finished >= 4);
  CHECK(first.result.samples_finished < 9);
  o.stop_after_samples = 0;
  const Run second = run_loop(d.path, o);
  CHECK(second.result.end == ProofLoopResult::End::kRoundsDone);
  CHECK(pool_map(d.path).size() == 9);
}

TEST_CASE("proof_loop: seeds depend on round, kind and index only") {
  std::set<uint64_t> seen;
  for (int round = 1; round <= 3; ++round)
    for (SampleKind kind : {SampleKind::kGeneration, SampleKind::kVerification, SampleKind::kMeta})
      for (int group = 0; group < 4; ++group) seen.insert(proof_sample_seed(7, round, kind, group, 0));
  CHECK(seen.size() == 3 * 3 * 4);
  CHECK(proof_sample_seed(7, 2, SampleKind::kVerification, 1, 3) == proof_sample_seed(7, 2, SampleKind::kVerification, 1, 0) + 3);
  CHECK(proof_sample_seed(7, 2, SampleKind::kVerification, 1, 0) != proof_sample_seed(8, 2, SampleKind::kVerification, 1, 0));
}

TEST_CASE("proof_loop: bad options and an empty problem are refused") {
  TempDir d("proof-loop-bad");
  FakeProofRunner fake;
  ProofLoopOptions o = options(0, 2, 1);
  CHECK_THROWS_WITH_AS(ProofLoop(fake, ProofTemplates::defaults(), kProblem, o, d.path), doctest::Contains("samples"),
                       std::invalid_argument);
  o = options(1, 1, 1);
  o.top_p = 0;
  CHECK_THROWS_WITH_AS(ProofLoop(fake, ProofTemplates::defaults(), kProblem, o, d.path), doctest::Contains("top-p"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(ProofLoop(fake, ProofTemplates::defaults(), "  \n", options(1, 1, 1), d.path),
                       doctest::Contains("problem is empty"), std::invalid_argument);
}

}  // namespace engine_proof_loop_suite

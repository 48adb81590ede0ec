// The proof loop on the real batching scheduler and the tiny synthetic model: resumed
// samples continue their own random stream, samples of one prompt go in as one submit,
// and the whole loop (N=4, V=4, R=2) runs, stops and resumes to the same pool. The model
// is random, so it never writes a real proof: the checks are on the pool's structure.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/batch_scheduler.h"
#include "engine/proof_loop.h"
#include "engine/proof_runner_scheduler.h"
#include "support/proof_pool_map.h"
#include "support/scratch.h"
#include "support/tiny_chat_model.h"

namespace engine_proof_runner_scheduler_suite {

using namespace hearth;
using hearth::testing::TempDir;
namespace fs = std::filesystem;
using hearth::testing::pool_map;

namespace {

struct Fixture {
  Model model = Model::load(testing::tiny_chat_model_dir().string());
  Tokenizer tok = Tokenizer::load(testing::tiny_chat_model_dir() / "tokenizer.json");
  BatchOptions options() const {
    BatchOptions o;
    o.threads = 2;
    o.context = 4096;
    o.kv_budget_bytes = int64_t(256) << 20;
    return o;
  }
};

SampleJob job(std::vector<int32_t> prompt, uint64_t seed, int64_t max_tokens) {
  SampleJob j;
  j.id = std::string("s") + std::to_string(seed);
  j.prompt = std::move(prompt);
  j.request.sampling.temperature = 1.0;
  j.request.sampling.top_p = 0.95;
  j.request.sampling.seed = seed;
  j.request.max_tokens = max_tokens;
  j.request.stop_at_eos = true;
  return j;
}

void run_jobs(SampleRunner& r, std::vector<SampleJob>& jobs) {
  r.run(jobs, {}, [] { return false; });
}

ProofLoopOptions loop_options() {
  ProofLoopOptions o;
  o.samples = 4;
  o.verifications = 4;
  o.rounds = 2;
  o.max_tokens = 16;
  o.seed = 5;
  o.thinking = false;  // a random model never closes its reasoning: read its whole output as the answer
  o.journal_interval = 0.2;
  return o;
}

const char* kProblem = "Prove that there are infinitely many primes.";

}  // namespace

TEST_CASE("proof_runner_scheduler: a resumed sample continues from its journaled tokens") {
  Fixture f;
  BatchScheduler sched(f.model, f.tok, f.options());
  SchedulerSampleRunner runner(sched);
  const std::vector<int32_t> prompt = runner.encode_prompt("Write one sentence about the sea.", true);
  for (const double temperature : {0.0, 1.0}) {
    CAPTURE(temperature);
    std::vector<SampleJob> whole{job(prompt, 42, 20)};
    whole[0].request.sampling.temperature = temperature;
    whole[0].request.stop_at_eos = false;  // the full budget, whatever the model samples
    run_jobs(runner, whole);
    REQUIRE(whole[0].generated.size() == 20);
    CHECK(whole[0].stop == StopReason::kMaxTokens);
    for (const size_t k : {size_t(1), size_t(7), size_t(19)}) {
      CAPTURE(k);
      std::vector<SampleJob> resumed{whole[0]};
      resumed[0].generated.resize(k);
      resumed[0].stop = StopReason::kCancelled;
      run_jobs(runner, resumed);
      REQUIRE(resumed[0].generated.size() == 20);
      CHECK(std::equal(resumed[0].generated.begin(), resumed[0].generated.begin() + ptrdiff_t(k), whole[0].generated.begin()));
      CHECK(resumed[0].stop == StopReason::kMaxTokens);
      // The continuation comes from the sample's own random stream, advanced past the k
      // draws already made (a random model spreads its probability over the whole vocabulary,
      // so any other draw picks another token), and from logits bit-identical to the
      // uninterrupted run's: the journaled tokens rerun on the decode form of attention, as
      // they were first computed. So every later token matches, sampled or greedy.
      CHECK(resumed[0].generated[k] == whole[0].generated[k]);
      CHECK(resumed[0].generated == whole[0].generated);
    }
    if (temperature > 0) {
      // Control: the same continuation from an unadvanced stream picks another token.
      GenerateRequest r = whole[0].request;
      r.max_tokens = 1;
      std::vector<int32_t> ids = prompt;
      ids.insert(ids.end(), whole[0].generated.begin(), whole[0].generated.begin() + 7);
      int32_t token = -1;
      RequestCallbacks cb;
      cb.on_token = [&](RequestId, int32_t t, std::string_view) { token = t; };
      sched.submit(ids, r, 1, cb);
      sched.run_until_idle();
      CHECK(token >= 0);
      CHECK(token != whole[0].generated[7]);
    }
  }
}

TEST_CASE("proof_runner_scheduler: samples of one prompt are one submit and match separate runs") {
  Fixture f;
  BatchScheduler sched(f.model, f.tok, f.options());
  SchedulerSampleRunner runner(sched);
  const std::vector<int32_t> prompt = runner.encode_prompt("Grade this proof: 1 + 1 = 2 because it does.", true);
  std::vector<SampleJob> together;
  for (uint64_t s = 0; s < 4; ++s) together.push_back(job(prompt, 100 + s, 12));
  together.push_back(job(prompt, 7, 12));  // not the next seed: a submit of its own
  run_jobs(runner, together);
  CHECK(runner.submits() == 2);
  const SchedulerStats st = sched.stats();
  CHECK(st.prompt_tokens == int64_t(5 * prompt.size()));
  CHECK(st.prefilled_tokens < st.prompt_tokens);  // the shared prompt was not prefilled five times
  CHECK(st.shared_prefix_tokens > 0);

  for (size_t i = 0; i < together.size(); ++i) {
    BatchScheduler alone_sched(f.model, f.tok, f.options());
    SchedulerSampleRunner alone(alone_sched);
    std::vector<SampleJob> one{job(prompt, together[i].request.sampling.seed, 12)};
    run_jobs(alone, one);
    CHECK(one[0].generated == together[i].generated);
    CHECK(one[0].stop == together[i].stop);
  }
}

TEST_CASE("proof_runner_scheduler: follow-up jobs join the running batch and stop cancels") {
  Fixture f;
  BatchScheduler sched(f.model, f.tok, f.options());
  SchedulerSampleRunner runner(sched);
  const std::vector<int32_t> prompt = runner.encode_prompt("Say something.", false);
  std::vector<SampleJob> jobs{job(prompt, 1, 6), job(prompt, 2, 200)};
  jobs[1].request.stop_at_eos = false;
  int tokens = 0, done = 0;
  bool stop = false;
  SampleEvents ev;
  ev.on_token = [&](size_t, int32_t) { ++tokens; };
  ev.on_done = [&](size_t i) {
    ++done;
    std::vector<SampleJob> next;
    if (i == 0) next.push_back(job(prompt, 3, 200)), next.back().request.stop_at_eos = false;
    if (i == 2 || tokens > 60) stop = true;
    return next;
  };
  runner.run(jobs, ev, [&] { return stop || tokens >= 60; });
  REQUIRE(jobs.size() == 3);
  CHECK(done == 3);
  CHECK(jobs[0].stop != StopReason::kCancelled);
  CHECK(jobs[1].stop == StopReason::kCancelled);
  CHECK(jobs[2].stop == StopReason::kCancelled);
  CHECK(jobs[1].generated.size() < 200);
  CHECK(int(jobs[0].generated.size() + jobs[1].generated.size() + jobs[2].generated.size()) == tokens);
  CHECK(sched.stats().running == 0);
  CHECK(sched.stats().queued == 0);
}

namespace {

// Short templates keep the tiny model's prompts short (the test pays for every prefilled
// position); the format contract does not matter to a random model.
ProofTemplates short_templates() {
  ProofTemplates t;
  t.generate = "Prove: {problem}";
  t.verify = "Rate the proof of {problem}: {proof}";
  t.meta_verify = "Is this rating of {proof} for {problem} sound? {evaluation}";
  t.refine = "Improve on these for {problem}: {attempts}";
  t.refine_attempt = "{proof} ({score})";
  t.source = "test templates";
  return t;
}

// Runs the loop to its end (or its stop_after_samples) on a fresh scheduler.
ProofLoopResult run_loop(const Fixture& f, const ProofLoopOptions& o, const fs::path& dir) {
  BatchScheduler sched(f.model, f.tok, f.options());
  SchedulerSampleRunner runner(sched);
  ProofLoop loop(runner, short_templates(), kProblem, o, dir);
  return loop.run();
}

}  // namespace

TEST_CASE("proof_runner_scheduler: the whole loop on the tiny model with N=4 V=4 R=2") {
  Fixture f;
  TempDir whole("proof-real-whole");
  ProofLoopOptions o = loop_options();
  o.top_p = 1;  // sampling from a random model's flat distribution: top-p would sort 129k candidates a token
  const ProofLoopResult ref = run_loop(f, o, whole.path);
  CHECK(ref.end == ProofLoopResult::End::kRoundsDone);  // a random model never earns a 1
  CHECK(ref.rounds_run == 2);
  const auto pool = pool_map(whole.path);
  int gens = 0, with_proof = 0, verifs = 0;
  for (const auto& [id, j] : pool) {
    if (j["kind"] == "generation") {
      ++gens;
      CHECK(j["tokens"].get<int64_t>() >= 1);
      CHECK(j["tokens"].get<int64_t>() <= 16);
      if (j["proof"] != "") {
        ++with_proof;
        for (int v = 0; v < 4; ++v) CHECK_MESSAGE(pool.count(id + ".v" + std::to_string(v)), id);
      }
    } else {
      CHECK(j["kind"] == "verification");
      ++verifs;
      CHECK(pool.count(j["parent"].get<std::string>()));
    }
  }
  CHECK(gens == 8);
  CHECK(with_proof >= 6);  // 16 random tokens are almost never empty
  CHECK(verifs == 4 * with_proof);
  CHECK(ref.proofs.size() == 8);
  CHECK(ref.samples_finished == int64_t(pool.size()));
  CHECK(fs::exists(whole.path / "best.md"));
  CHECK(fs::exists(whole.path / "summary.json"));
}

TEST_CASE("proof_runner_scheduler: the loop on the tiny model stopped and resumed makes the same pool") {
  Fixture f;
  ProofLoopOptions o = loop_options();
  o.samples = 3;
  o.verifications = 2;
  // Sampled (temperature 1): a resumed sample continues its own random stream from logits
  // bit-identical to the uninterrupted run's, so even sampled continuations match.
  o.temperature = 1.0;
  TempDir whole("proof-real-whole"), parts("proof-real-parts");
  const ProofLoopResult ref = run_loop(f, o, whole.path);
  const auto pool = pool_map(whole.path);
  ProofLoopOptions stop_early = o;
  stop_early.stop_after_tokens = 100;  // mid-round: samples half done
  CHECK(run_loop(f, stop_early, parts.path).end == ProofLoopResult::End::kInterrupted);
  CHECK(pool_map(parts.path).size() < pool.size());
  const ProofLoopResult resumed = run_loop(f, o, parts.path);  // a new scheduler: nothing cached
  CHECK(resumed.samples_resumed > 0);
  CHECK(resumed.end == ref.end);
  CHECK(pool_map(parts.path) == pool);
}

}  // namespace engine_proof_runner_scheduler_suite

// `hearth prove` driven as a user would, on the tiny synthetic model: bad input, a whole
// run, a run stopped and resumed, and Ctrl-C. The model is random, so its "proofs" are
// noise: the checks are on exit codes, messages and the files in --out.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/proof_pool_map.h"
#include "support/scratch.h"
#include "support/spawn.h"
#include "support/tiny_chat_model.h"

namespace cli_prove_suite {


namespace fs = std::filesystem;
using hearth::testing::pool_map;
using hearth::testing::CliRun;
using hearth::testing::run_hearth;
using hearth::testing::slurp;
using hearth::testing::TempDir;

namespace {

std::string model() { return hearth::testing::tiny_chat_model_dir().string(); }

// Short templates: the tiny model pays for every prompt position, and a random model
// makes nothing of the built-in instructions anyway.
fs::path short_templates(const TempDir& d) {
  const fs::path p = d.path / "short-templates.json";
  std::ofstream(p) << R"json({"generate": "Prove: {problem}", "verify": "Rate the proof of {problem}: {proof}",
    "meta_verify": "Is this rating of {proof} for {problem} sound? {evaluation}",
    "refine": "Improve on these for {problem}: {attempts}", "refine_attempt": "{proof} ({score})"})json";
  return p;
}

// A small greedy run: N=4, V=4, R=2, 16 tokens a sample, non-thinking (a random model
// never closes its reasoning, so in thinking mode it would never write a proof to verify).
std::string prove_args(const TempDir& d, const fs::path& out, const std::string& extra = "", int samples = 4,
                       int verifications = 4) {
  return "prove -m " + model() + " --problem 'Show that every prime above 2 is odd.' --samples " + std::to_string(samples) +
         " --verifications " + std::to_string(verifications) + " " +
         "--rounds 2 --max-tokens 16 --no-thinking --temperature 0 -t 2 --parallel 16 --kv-budget 256 --templates '" +
         short_templates(d).string() + "' --out '" + out.string() + "' " + extra;
}

// What a resumed run needs besides --resume: the templates (they are not stored, only checked).
std::string resume_args(const TempDir& d, const fs::path& out) {
  return "prove -m " + model() + " --out '" + out.string() + "' --resume -t 2 --kv-budget 256 --templates '" +
         short_templates(d).string() + "'";
}

void check_one_line_error(const CliRun& r, std::initializer_list<std::string> parts) {
  CHECK(r.code != 0);
  CHECK(r.code != 130);
  for (const std::string& p : parts) CHECK_MESSAGE(r.err.find(p) != std::string::npos, "'", p, "' not in: ", r.err);
  CHECK_MESSAGE(std::count(r.err.begin(), r.err.end(), '\n') == 1, r.err);
}

// Checks the structure of a finished small run's pool.
void check_pool_structure(const std::map<std::string, nlohmann::json>& pool) {
  int gens = 0, with_proof = 0, verifs = 0;  // greedy: the samples of one prompt are the same
  for (const auto& [id, j] : pool) {
    if (j["kind"] == "generation") {
      ++gens;
      if (j["proof"] != "") ++with_proof;
      CHECK(j["tokens"].get<int>() <= 16);
    } else {
      REQUIRE(j["kind"] == "verification");
      ++verifs;
      CHECK(pool.count(j["parent"].get<std::string>()));
    }
  }
  CHECK(gens == 8);
  CHECK(with_proof >= 4);  // 16 random tokens are almost never empty
  CHECK(verifs == 4 * with_proof);
}

}  // namespace

TEST_CASE("prove cli: bad input is a one-line error") {
  TempDir d("prove-cli-bad");
  check_one_line_error(run_hearth("prove --problem 'x'"), {"--model is required"});
  check_one_line_error(run_hearth("prove -m " + model() + " --out '" + (d.path / "o").string() + "'"), {"no problem"});
  std::ofstream(d.path / "p.md") << "Prove it.";
  check_one_line_error(run_hearth("prove -m " + model() + " '" + (d.path / "p.md").string() + "' --problem 'x'"), {"not both"});
  check_one_line_error(run_hearth("prove -m " + model() + " '" + (d.path / "absent.md").string() + "'"),
                       {"absent.md", "cannot read"});
  check_one_line_error(run_hearth("prove -m " + model() + " --problem '  '"), {"problem is empty"});
  check_one_line_error(run_hearth("prove -m " + model() + " --problem x --samples 0"), {"--samples"});
  check_one_line_error(run_hearth("prove -m " + model() + " --problem x --top-p 1.5"), {"--top-p"});
  check_one_line_error(run_hearth("prove -m " + model() + " --problem x --bogus"), {"bogus"});

  std::ofstream(d.path / "t.json") << R"({"verify": "{problem} {answer}"})";
  check_one_line_error(run_hearth("prove -m " + model() + " --problem x --templates '" + (d.path / "t.json").string() + "'"),
                       {(d.path / "t.json").string(), "'verify'", "{answer}"});

  fs::create_directories(d.path / "full");
  std::ofstream(d.path / "full" / "something") << "x";
  check_one_line_error(run_hearth(prove_args(d, d.path / "full")), {"--out", "not empty", "--resume"});
  check_one_line_error(run_hearth(prove_args(d, d.path / "empty-resume", "--resume")), {"--resume", "run.json"});
  CHECK_FALSE(fs::exists(d.path / "empty-resume"));

  // A model that fails to load leaves no directory behind.
  check_one_line_error(run_hearth("prove -m '" + (d.path / "nomodel").string() + "' --problem x --out '" +
                                  (d.path / "o2").string() + "'"),
                       {"nomodel"});
  CHECK_FALSE(fs::exists(d.path / "o2"));
}

TEST_CASE("prove cli: a whole run, then resumed runs that must keep its settings") {
  TempDir d("prove-cli-run");
  const fs::path out = d.path / "out";
  const CliRun r = run_hearth(prove_args(d, out));
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(r.out.find("all rounds done after 2 round(s)") != std::string::npos);
  CHECK(r.out.find("r1.g0") != std::string::npos);
  CHECK(r.err.find("round 2/2") != std::string::npos);
  CHECK(r.err.find("best.md") != std::string::npos);
  {
    // The 4 samples of a round and the 4 verifications of a proof share their prompts.
    const std::string key = "shared from other samples' caches ";
    const size_t at = r.err.find(key);
    REQUIRE(at != std::string::npos);
    const long long shared = std::stoll(r.err.substr(at + key.size()));
    const size_t pt = r.err.find("prompt tokens ");
    REQUIRE(pt != std::string::npos);
    const long long prompt = std::stoll(r.err.substr(pt + 14));
    CHECK(shared > 0);
    CHECK(shared < prompt);
  }
  const auto pool = pool_map(out);
  check_pool_structure(pool);
  for (const char* f : {"run.json", "pool.jsonl", "journal.json", "summary.json", "best.md"})
    CHECK_MESSAGE(fs::exists(out / f), f);
  CHECK(nlohmann::json::parse(slurp(out / "journal.json"))["samples"].empty());
  const auto run = nlohmann::json::parse(slurp(out / "run.json"));
  CHECK(run["samples"] == 4);
  CHECK(run["problem"] == "Show that every prime above 2 is odd.");
  const auto summary = nlohmann::json::parse(slurp(out / "summary.json"));
  CHECK(summary["proofs"].size() == 8);

  // Settings a resumed run may not change.
  check_one_line_error(run_hearth("prove -m " + model() + " --out '" + out.string() + "' --resume --samples 8"),
                       {"samples = 4", "not 8", "--samples"});
  check_one_line_error(run_hearth("prove -m " + model() + " --problem 'Another problem.' --out '" + out.string() + "' --resume"),
                       {"problem"});
  check_one_line_error(run_hearth(resume_args(d, out) + " --seed 3"), {"--seed"});
  check_one_line_error(run_hearth("prove -m " + model() + " --out '" + out.string() + "' --resume"),
                       {"--resume", "other templates", "short-templates.json"});
  // Resuming the finished run (settings from run.json) redoes nothing.
  const std::string before = slurp(out / "pool.jsonl");
  const CliRun again = run_hearth(resume_args(d, out));
  INFO(again.err);
  CHECK(again.code == 0);
  CHECK(again.out.find("0 samples finished in this run") != std::string::npos);
  CHECK(slurp(out / "pool.jsonl") == before);
}

TEST_CASE("prove cli: a run stopped mid-way and resumed makes the same pool") {
  TempDir d("prove-cli-resume");
  // Sampled, not greedy: resumed samples continue their own random streams from logits
  // bit-identical to the uninterrupted run's, so the pools match at temperature 1 too.
  const fs::path whole = d.path / "whole", parts = d.path / "parts";
  const auto sampled = [](std::string args) {
    const size_t at = args.find("--temperature 0");
    REQUIRE(at != std::string::npos);
    return args.replace(at, 15, "--temperature 1");
  };
  REQUIRE(run_hearth(sampled(prove_args(d, whole, "", 2, 2))).code == 0);
  // 60 tokens: the round-1 proofs are done (2 x 16), their verifications half done.
  const CliRun first = run_hearth(sampled(prove_args(d, parts, "--stop-after-tokens 60", 2, 2)));
  CHECK(first.code == 130);
  CHECK(first.err.find("Resume with: hearth prove -m") != std::string::npos);
  CHECK(first.err.find("--resume") != std::string::npos);
  CHECK(pool_map(parts).size() < pool_map(whole).size());
  CHECK_FALSE(fs::exists(parts / "best.md"));
  CHECK(!nlohmann::json::parse(slurp(parts / "journal.json"))["samples"].empty());

  const CliRun second = run_hearth(resume_args(d, parts));
  INFO(second.err);
  CHECK(second.code == 0);
  CHECK(second.out.find("resumed from the journal") != std::string::npos);
  CHECK(pool_map(parts) == pool_map(whole));
  CHECK(slurp(parts / "best.md") == slurp(whole / "best.md"));
}

TEST_CASE("prove cli: Ctrl-C stops cleanly and says how to resume") {
  TempDir d("prove-cli-sigint");
  const fs::path out = d.path / "out", err = d.path / "err";
  const std::string m = model();
  std::vector<std::string> args = {HEARTH_CLI_BIN, "prove", "-m", m, "--problem", "Show that 1 + 1 = 2.", "--samples", "3",
                                   "--verifications", "2", "--rounds", "1", "--max-tokens", "32", "--no-thinking",
                                   "--temperature", "0", "-t", "2", "--parallel", "2", "--kv-budget", "256", "--templates",
                                   short_templates(d).string(), "--out", out.string()};
  const pid_t pid = hearth::testing::spawn_with_stderr(args, err);
  // Interrupt once the first samples are in the pool.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(40);
  const auto finished_lines = [&] {  // complete lines only: the child may be writing one
    const std::string text = slurp(out / "pool.jsonl");
    return std::count(text.begin(), text.end(), '\n');
  };
  while (finished_lines() < 2 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  kill(pid, SIGINT);
  int status = 0;
  waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 130);
  const std::string text = slurp(err);
  CHECK(text.find("interrupted") != std::string::npos);
  CHECK(text.find("--resume") != std::string::npos);
  CHECK(nlohmann::json::parse(slurp(out / "journal.json")).contains("samples"));
  const size_t done_before = pool_map(out).size();
  CHECK(done_before >= 2);

  const CliRun resumed = run_hearth(resume_args(d, out));
  INFO(resumed.err);
  CHECK(resumed.code == 0);
  const auto pool = pool_map(out);
  CHECK(pool.size() > done_before);
  int gens = 0, with_proof = 0;
  for (const auto& [id, j] : pool) gens += j["kind"] == "generation", with_proof += j["proof"] != "";
  CHECK(gens == 3);
  CHECK(pool.size() == size_t(gens + 2 * with_proof));
}

}  // namespace cli_prove_suite

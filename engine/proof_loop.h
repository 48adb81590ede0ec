// The proof loop of DeepSeekMath-V2, run on one machine (hearth prove):
//
//   round 1      N proof generations of the problem;
//   verification each proof with a non-empty Solution is rated V times; its score is the
//                mean of the valid ratings (a rating whose meta-verification finds it
//                unsound, verdict 0, is left out of the mean);
//   meta         optionally, every rating below 1 is itself checked once;
//   round r > 1  a refinement prompt carrying the best proofs so far (by score), their
//                ratings and the verifiers' findings is sampled N times, and each new
//                proof is verified V times;
//   stop         as soon as some proof's score is 1, or after R rounds.
//
// Everything a sample depends on is deterministic: its id says where it is in the loop,
//   "r{round}.g{i}"          generation i of a round
//   "r{round}.g{i}.v{j}"     verification j of that proof
//   "r{round}.g{i}.v{j}.m"   meta-verification of that rating
// and its seed comes from (--seed, round, kind, index), so a run that is interrupted and
// resumed makes the same pool as one that never stopped: finished samples are read back
// from the pool, partial ones continue from their journaled tokens, and the refinement
// prompts (which depend only on the pool) come out the same.
//
// Verifications of a proof are queued as soon as the proof finishes, in the same batch
// as the generations still running; the V verifications of one proof share one prompt.
#pragma once
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/proof_pool.h"
#include "engine/proof_prompts.h"
#include "engine/proof_runner.h"

namespace hearth {

struct ProofLoopOptions {
  int samples = 4;        // N: generations per round
  int verifications = 4;  // V: ratings per proof
  int rounds = 2;         // R: round 1 generates, rounds 2..R refine
  bool meta_verify = false;
  int64_t max_tokens = 16384;  // per sample
  double temperature = 1.0;
  double top_p = 0.95;
  uint64_t seed = 0;
  bool thinking = true;  // prompts in thinking mode; answers are read after "</think>"
  int refine_best = 3;   // proofs shown to a refinement prompt
  double journal_interval = 2.0;   // seconds between journal writes
  int64_t stop_after_samples = 0;  // testing: behave as if interrupted once this many samples
                                   // finished in this run (0: never)
  int64_t stop_after_tokens = 0;   // testing: the same once this many tokens were generated in
                                   // this run (0: never); leaves samples half done

  // Throws std::invalid_argument naming the option on a bad value.
  void validate() const;
};

// The seed of sample `index` of a (round, kind) stage; the samples of one prompt have
// consecutive seeds (the scheduler's n-sample convention).
uint64_t proof_sample_seed(uint64_t base, int round, SampleKind kind, int group, int index);

// Progress, reported after every finished sample and about once a second while tokens flow.
struct ProofProgress {
  int round = 0, rounds = 0;
  std::string stage;         // what is running now: "generate", "verify", "meta-verify" joined by '+', or "done"
  int64_t done = 0;          // samples of this round finished (from the pool included)
  int64_t total = 0;         // samples of this round known so far
  int64_t running = 0;       // samples running or queued now
  int64_t tokens = 0;        // tokens generated in this run
  double tokens_per_s = 0;   // over this run
  double eta_s = -1;         // rest of the round, from the mean tokens of a finished sample; -1: unknown
};

struct ProofScore {
  std::string id;
  int round = 0;
  std::string proof;
  std::optional<double> self_score;
  std::vector<std::optional<double>> ratings;   // in verification order
  std::vector<std::optional<double>> verdicts;  // meta-verification of each rating (nullopt: none or no score)
  std::optional<double> score;                  // mean of the counted ratings
  int64_t tokens = 0;
};

struct ProofLoopResult {
  enum class End { kSolved, kRoundsDone, kInterrupted };
  End end = End::kRoundsDone;
  int rounds_run = 0;              // rounds started
  std::vector<ProofScore> proofs;  // every generation so far, best first
  int64_t samples_finished = 0;    // finished in this run
  int64_t samples_from_pool = 0;   // found finished in the pool
  int64_t samples_resumed = 0;     // continued from journaled tokens
  int64_t tokens = 0;              // generated in this run
  double seconds = 0;
};

class ProofLoop {
 public:
  using ProgressFn = std::function<void(const ProofProgress&)>;

  // Keeps `out_dir`/pool.jsonl and `out_dir`/journal.json (engine/proof_pool.h); the
  // directory must exist. Throws std::invalid_argument on bad options or an empty problem.
  ProofLoop(SampleRunner& runner, ProofTemplates templates, std::string problem, ProofLoopOptions options,
            std::filesystem::path out_dir, WarnFn warn = {});
  ~ProofLoop();

  // Runs (or resumes) the loop until a proof scores 1, R rounds are done, or `stop`
  // becomes true (then the journal is written and the result says kInterrupted; else
  // best.md and summary.json are written in the output directory). A
  // sample the runner fails ends the run with std::runtime_error naming it, after the
  // journal is written.
  ProofLoopResult run(const std::atomic<bool>* stop = nullptr, const ProgressFn& progress = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The proofs best first: by score (none last), then self-evaluation, then round and index.
void rank_proofs(std::vector<ProofScore>& proofs);

// A plain-text table of the proofs (best first, at most `max_rows`) and a closing line.
std::string proof_summary_table(const ProofLoopResult& result, size_t max_rows = 20);

// "solved", "rounds_done", "interrupted".
const char* proof_loop_end_name(ProofLoopResult::End e);

// The files a finished run leaves (ProofLoop::run writes both unless interrupted):
// best.md: the problem, which proof won with its ratings, and the proof itself;
// summary.json: {"end", "rounds_run", "proofs": [{id, round, score, self_score, ratings,
// verdicts, tokens, has_proof}]}, best first.
void write_best_proof(const std::filesystem::path& file, const std::string& problem, const ProofLoopResult& result);
void write_proof_summary_json(const std::filesystem::path& file, const ProofLoopResult& result);

}  // namespace hearth

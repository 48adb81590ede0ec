// What the proof loop needs from a model: turning prompt texts into ids, ids into text,
// and running many samples together. The loop (engine/proof_loop.h) talks only to this
// interface; engine/proof_runner_scheduler.h runs it on the batching scheduler, and the
// tests run it on a deterministic fake.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "engine/generator.h"  // GenerateRequest, StopReason

namespace hearth {

// One sample to run: the prompt, and the tokens a previous run already generated for it
// (non-empty when it is resumed from the journal). The runner continues it as if it had
// never stopped: the first new token is sampled after prompt + generated, from the
// sample's own random stream advanced past `generated.size()` draws, and the sample
// ends after request.max_tokens tokens in all (the resumed ones included).
struct SampleJob {
  std::string id;
  std::vector<int32_t> prompt;
  std::vector<int32_t> generated;  // in: resumed tokens; out: every token (EOS included when it ended the sample)
  GenerateRequest request;         // request.sampling.seed: the sample's own seed
  // Out:
  StopReason stop = StopReason::kCancelled;
  std::string error;               // non-empty when the runner failed this sample
  double seconds = 0;              // wall time spent on it in this run
};

// Called by the runner on the thread that called run(). `job` indexes the vector run()
// was given (follow-up jobs are appended to it).
struct SampleEvents {
  // After each new token of a job (job.generated already holds it).
  std::function<void(size_t job, int32_t token)> on_token;
  // Once per job, when it ends for any reason. Returns follow-up jobs to run in the same
  // batch (e.g. the verifications of a finished proof); they are appended to the vector.
  std::function<std::vector<SampleJob>(size_t job)> on_done;
};

class SampleRunner {
 public:
  virtual ~SampleRunner() = default;

  // The ids of a one-user-turn chat prompt (thinking mode or not).
  virtual std::vector<int32_t> encode_prompt(const std::string& user_text, bool thinking) = 0;
  // The text of generated ids.
  virtual std::string decode(std::span<const int32_t> ids) = 0;
  virtual int32_t eos_id() const = 0;

  // Runs every job (and the follow-ups on_done returns) to its end. `should_stop` is
  // polled between steps (and after each token); once it returns true, the jobs not yet
  // finished end with StopReason::kCancelled (their tokens so far in job.generated) and
  // run() returns once each has had its on_done.
  virtual void run(std::vector<SampleJob>& jobs, const SampleEvents& events,
                   const std::function<bool()>& should_stop) = 0;
};

}  // namespace hearth

// The proof loop's samples on the batching scheduler (engine/batch_scheduler.h).
//
// Every job of a stage is submitted at once, so they run in the same steps; jobs that
// share a prompt and have consecutive seeds (the V verifications of one proof, the N
// generations of one round) go in as one submit() with n samples, so their prompt is
// prefilled once. A resumed job is submitted as prompt + its journaled tokens, with the
// remaining token budget and its random stream advanced past the draws already made
// (SamplingParams::skip).
//
// run() drives the scheduler itself (step() on the calling thread); the scheduler must
// not also be driven by its background worker meanwhile.
#pragma once
#include "engine/batch_scheduler.h"
#include "engine/proof_runner.h"

namespace hearth {

class SchedulerSampleRunner final : public SampleRunner {
 public:
  explicit SchedulerSampleRunner(BatchScheduler& scheduler) : sched_(scheduler) {}

  std::vector<int32_t> encode_prompt(const std::string& user_text, bool thinking) override;
  std::string decode(std::span<const int32_t> ids) override;
  int32_t eos_id() const override;
  void run(std::vector<SampleJob>& jobs, const SampleEvents& events, const std::function<bool()>& should_stop) override;

  // Submits made by run() so far (a group of n samples counts once).
  int64_t submits() const { return submits_; }

 private:
  BatchScheduler& sched_;
  int64_t submits_ = 0;
};

}  // namespace hearth

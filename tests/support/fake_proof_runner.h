// A deterministic stand-in for the model in proof-loop tests (engine/proof_runner.h).
//
// Ids are bytes + 1 (0 is EOS). A sample's whole output is a script chosen from its
// prompt and seed, and token k of a sample is byte k of its script, so a sample resumed
// from k journaled tokens continues exactly as an uninterrupted one would: what the real
// model does with the same seed and a random stream advanced k draws.
//
// Scripts, by the prompt's opening words (the built-in templates):
//   generation / refinement: reasoning, "</think>" (in thinking mode), "## Solution" with a
//     proof that states its quality ("quality 0.5"), and "## Self Evaluation" \boxed{quality};
//     round 1 proofs have `first_quality`, refinements `refine_quality`;
//   verification: "Here is my evaluation of the solution:" ... \boxed{the quality stated in the proof}
//     (with mixed_ratings, \boxed{1} when the seed is a multiple of 3);
//   meta-verification: \boxed{0} for an even seed, \boxed{1} for an odd one.
// Samples run `max_running` at a time, one token each per step, in queue order.
#pragma once
#include <algorithm>
#include <atomic>
#include <deque>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/proof_runner.h"

namespace hearth::testing {

class FakeProofRunner : public SampleRunner {
 public:
  double first_quality = 0.5;   // 0, 0.5 or 1
  double refine_quality = 0.5;
  bool terse = false;                // short scripts (for tests that pay per token, e.g. a journal write each)
  bool mixed_ratings = false;        // a verifier whose seed is a multiple of 3 rates 1 whatever the proof
  size_t max_running = 5;
  int64_t stop_after_tokens = 0;     // sets *stop_flag once this many tokens were made in all (0: never)
  std::atomic<bool>* stop_flag = nullptr;
  int64_t throw_after_tokens = 0;    // throws from run() once this many tokens were made (0: never)

  // What the runner saw.
  int64_t tokens = 0;                      // tokens made, over every run() call
  int64_t resumed_jobs = 0;                // jobs that came with journaled tokens
  std::vector<std::string> prompts;        // the decoded prompt of every job, in order of arrival
  size_t most_running = 0;

  std::vector<int32_t> encode_prompt(const std::string& text, bool thinking) override {
    const std::string s = (thinking ? "[think]" : "[plain]") + text;
    std::vector<int32_t> ids;
    for (unsigned char c : s) ids.push_back(int32_t(c) + 1);
    return ids;
  }
  std::string decode(std::span<const int32_t> ids) override {
    std::string s;
    for (int32_t id : ids)
      if (id > 0) s += char(id - 1);
    return s;
  }
  int32_t eos_id() const override { return 0; }

  // The whole output of a sample (EOS not included).
  std::string script(const std::string& prompt, uint64_t seed) const {
    const bool thinking = prompt.starts_with("[think]");
    const std::string body = prompt.substr(7);
    const std::string think =
        !thinking ? "" : terse ? std::string("T") + std::to_string(seed % 10) + "</think>" : "Let me think (seed " + std::to_string(seed % 1000) + ").</think>\n";
    if (body.starts_with("You are grading")) {
      const size_t q = body.find("quality ");
      const std::string quality = q == std::string::npos ? "0" : body.substr(q + 8, body.find_first_of(" \n", q + 8) - q - 8);
      const std::string rating = mixed_ratings && seed % 3 == 0 ? "1" : quality;
      if (terse) return think + "\\boxed{" + rating + "}";
      return think + "Here is my evaluation of the solution:\nStep two is checked " + std::to_string(seed % 97) +
             " times.\n\\boxed{" + rating + "}";
    }
    if (body.starts_with("Another grader")) return think + "The grading holds up.\n\\boxed{" + (seed % 2 ? "1" : "0") + "}";
    const double q = body.find("Earlier attempts") != std::string::npos ? refine_quality : first_quality;
    const std::string quality = q == 1 ? "1" : q == 0 ? "0" : "0.5";
    if (terse) return think + "## Solution\nP" + std::to_string(seed % 10) + " quality " + quality + " \n## Self Evaluation\n\\boxed{" + quality + "}";
    return think + "## Solution\nBy induction on n, variant " + std::to_string(seed % 10007) + "; quality " + quality +
           " .\n## Self Evaluation\nI checked it. \\boxed{" + quality + "}";
  }

  void run(std::vector<SampleJob>& jobs, const SampleEvents& events, const std::function<bool()>& should_stop) override {
    std::deque<size_t> queue;
    std::vector<size_t> active;
    std::vector<std::string> scripts;
    const auto arrive = [&](size_t from) {
      for (size_t i = from; i < jobs.size(); ++i) {
        queue.push_back(i);
        prompts.push_back(decode(jobs[i].prompt));
        scripts.push_back(script(prompts.back(), jobs[i].request.sampling.seed));
        if (!jobs[i].generated.empty()) ++resumed_jobs;
      }
    };
    arrive(0);
    while (!queue.empty() || !active.empty()) {
      if (should_stop()) {
        std::vector<size_t> left(active.begin(), active.end());
        left.insert(left.end(), queue.begin(), queue.end());
        for (size_t i : left) {
          jobs[i].stop = StopReason::kCancelled;
          if (events.on_done) events.on_done(i);
        }
        return;
      }
      while (active.size() < max_running && !queue.empty()) active.push_back(queue.front()), queue.pop_front();
      most_running = std::max(most_running, active.size());
      std::vector<size_t> finished;
      for (size_t i : active) {
        SampleJob& j = jobs[i];
        const size_t k = j.generated.size();
        const std::string& s = scripts[i];
        const int32_t token = k < s.size() ? int32_t(static_cast<unsigned char>(s[k])) + 1 : 0;
        j.generated.push_back(token);
        if (events.on_token) events.on_token(i, token);
        ++tokens;
        if (throw_after_tokens > 0 && tokens >= throw_after_tokens) throw std::runtime_error("fake runner: simulated crash");
        if (stop_after_tokens > 0 && tokens >= stop_after_tokens && stop_flag) stop_flag->store(true);
        if (token == 0) j.stop = StopReason::kEos;
        else if (int64_t(j.generated.size()) >= j.request.max_tokens) j.stop = StopReason::kMaxTokens;
        else continue;
        finished.push_back(i);
      }
      for (size_t i : finished) {
        active.erase(std::find(active.begin(), active.end(), i));
        std::vector<SampleJob> next = events.on_done ? events.on_done(i) : std::vector<SampleJob>{};
        const size_t from = jobs.size();
        for (SampleJob& n : next) jobs.push_back(std::move(n));
        arrive(from);
      }
    }
  }
};

}  // namespace hearth::testing

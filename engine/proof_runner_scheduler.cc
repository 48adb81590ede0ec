#include "engine/proof_runner_scheduler.h"

#include <chrono>
#include <deque>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "engine/chat_template.h"

namespace hearth {

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Whether job b can be sample k of the same submit() as job a (k = b's offset from a).
bool same_group(const SampleJob& a, const SampleJob& b, uint64_t k) {
  const GenerateRequest &x = a.request, &y = b.request;
  return a.generated.empty() && b.generated.empty() && a.prompt == b.prompt && x.max_tokens == y.max_tokens &&
         x.stop == y.stop && x.stop_at_eos == y.stop_at_eos && x.sampling.temperature == y.sampling.temperature &&
         x.sampling.top_p == y.sampling.top_p && x.sampling.top_k == y.sampling.top_k &&
         x.sampling.min_p == y.sampling.min_p && x.sampling.skip == y.sampling.skip &&
         y.sampling.seed == x.sampling.seed + k;
}

}  // namespace

std::vector<int32_t> SchedulerSampleRunner::encode_prompt(const std::string& user_text, bool thinking) {
  return encode_chat(sched_.tokenizer(), {{"user", user_text, ""}}, thinking);
}

std::string SchedulerSampleRunner::decode(std::span<const int32_t> ids) { return sched_.tokenizer().decode(ids); }

int32_t SchedulerSampleRunner::eos_id() const { return sched_.tokenizer().eos_id(); }

void SchedulerSampleRunner::run(std::vector<SampleJob>& jobs, const SampleEvents& events,
                                const std::function<bool()>& should_stop) {
  std::unordered_map<RequestId, size_t> job_of;   // outstanding requests
  std::unordered_set<RequestId> cancelled;
  std::unordered_map<size_t, double> started;
  std::deque<size_t> done;  // jobs whose request ended during the last step

  RequestCallbacks cb;
  cb.on_token = [&](RequestId id, int32_t token, std::string_view) {
    const auto it = job_of.find(id);
    if (it == job_of.end()) return;
    jobs[it->second].generated.push_back(token);
    if (events.on_token) events.on_token(it->second, token);
  };
  cb.on_done = [&](RequestId id, const GenerationResult& result, const std::string& error) {
    const auto it = job_of.find(id);
    if (it == job_of.end()) return;
    SampleJob& j = jobs[it->second];
    j.stop = result.stats.stop;
    j.error = error;
    j.seconds = now_seconds() - started[it->second];
    done.push_back(it->second);
    job_of.erase(it);
  };

  // Submits jobs [from, end), grouping runs of samples of one prompt.
  const auto submit_from = [&](size_t from) {
    for (size_t i = from; i < jobs.size();) {
      size_t end = i + 1;
      while (end < jobs.size() && same_group(jobs[i], jobs[end], uint64_t(end - i))) ++end;
      SampleJob& first = jobs[i];
      const int64_t have = int64_t(first.generated.size());
      GenerateRequest req = first.request;
      req.max_tokens -= have;
      req.sampling.skip += uint64_t(have);
      const double t = now_seconds();
      for (size_t k = i; k < end; ++k) started[k] = t;
      if (req.max_tokens < 1) {  // nothing left to generate
        first.stop = StopReason::kMaxTokens;
        done.push_back(i);
        i = end;
        continue;
      }
      std::vector<int32_t> prompt = first.prompt;
      prompt.insert(prompt.end(), first.generated.begin(), first.generated.end());
      try {
        // Journaled tokens were decoded one by one: they rerun on the decode form, so the
        // continuation draws exactly what the uninterrupted run drew.
        const int64_t generated_from = have > 0 ? int64_t(first.prompt.size()) : -1;
        const std::vector<RequestId> ids = sched_.submit(std::move(prompt), req, int(end - i), cb, generated_from);
        ++submits_;
        for (size_t k = 0; k < ids.size(); ++k) job_of[ids[k]] = i + k;
      } catch (const std::invalid_argument& e) {
        for (size_t k = i; k < end; ++k) {
          jobs[k].error = e.what();
          done.push_back(k);
        }
      }
      i = end;
    }
  };

  const auto cancel_all = [&] {
    for (const auto& [id, job] : job_of)
      if (cancelled.insert(id).second) sched_.cancel(id);
  };

  try {
    submit_from(0);
    for (;;) {
      while (!done.empty()) {
        const size_t j = done.front();
        done.pop_front();
        std::vector<SampleJob> next = events.on_done ? events.on_done(j) : std::vector<SampleJob>{};
        if (next.empty()) continue;
        const size_t from = jobs.size();
        for (SampleJob& n : next) jobs.push_back(std::move(n));
        submit_from(from);
      }
      if (job_of.empty()) break;
      if (should_stop()) cancel_all();
      if (!sched_.step() && done.empty() && !job_of.empty()) {
        // Idle with requests outstanding: they can never run (should not happen).
        for (const auto& [id, job] : job_of) {
          jobs[job].error = "the scheduler stopped without running it";
          done.push_back(job);
        }
        job_of.clear();
      }
    }
  } catch (...) {
    // Leave nothing behind that calls back into this frame.
    cancel_all();
    while (!job_of.empty() && sched_.step()) {
    }
    job_of.clear();
    throw;
  }
}

}  // namespace hearth

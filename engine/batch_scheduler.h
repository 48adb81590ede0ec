// Continuous batching: many sequences stepped together through one Forward.
//
// Every step serves every running sequence at once (one decode token each, plus a chunk
// of at most `prefill_chunk` prompt tokens for sequences still prefilling), so each
// expert's weights are read once per step for all of them. Requests join and leave at
// any step. A KV-cache budget decides how many sequences run: a request is admitted only
// when the pages it can ever need (prompt + max_tokens, capped by the context, minus
// pages it shares) fit; the others wait in the queue, in arrival order.
//
// Shared prefixes: the cache is paged, and a sequence can be forked from another at a
// token count, sharing its full pages (copy-on-write at the first page it writes).
// The n samples of one submit() prefill their prompt once; a new request whose prompt
// starts with tokens still held by a running or recently finished sequence (the prefix
// cache, LRU within `prefix_cache_bytes`) reuses those positions instead of prefilling
// them again.
//
// Determinism: a sequence's tokens depend only on its prompt and its seed, not on what
// else runs in the same step, how its prompt was chunked, or whether part of it came from
// a fork: batched runs give bit-identical tokens to one-at-a-time runs (and to the
// Generator, whose prompts of 2 or more tokens take the same forms). The forward pass computes each row on its own, but
// its two attention forms (expanded and weight-absorbed) round differently, and its
// automatic choice depends on the chunk (a 1-token chunk goes absorbed). So the scheduler
// pins the form per position: prompt positions take the expanded form (absorbed past
// prefill_path_positions(), where expansion would not fit in memory), generated tokens the
// absorbed one. Only prompt positions are ever shared (generated ones were computed the
// other way), so the prefix cache keeps prompts, not answers.
//
// Threads: submit(), cancel() and stats() may be called from any thread. The callbacks
// run on the thread that steps the scheduler (the caller of step()/run_until_idle(),
// or the worker started by start()); they may call submit(), cancel() and stats(), but
// not step(), run_until_idle(), start() or stop().
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "engine/generator.h"  // GenerateRequest, GenerationResult, StopReason
#include "engine/model.h"
#include "engine/tokenizer.h"

namespace hearth {

class OffloadForward;

using RequestId = int64_t;

// The KV budget when BatchOptions::kv_budget_bytes is 0: 8 GiB or a quarter of the RAM,
// whichever is less.
int64_t default_kv_budget();

struct BatchOptions {
  int threads = 0;                  // worker threads of the forward pass (0: one per physical core)
  int64_t context = 0;              // positions one sequence may hold; 0: the model's max_position_embeddings
  int64_t kv_budget_bytes = 0;      // KV cache budget for all sequences; 0: 8 GiB or what fits 1/4 of RAM, whichever is less
  int64_t max_running = 64;         // sequences in one step at most
  int64_t prefill_chunk = 512;      // prompt tokens of one sequence per step at most
  int64_t prefix_cache_bytes = -1;  // finished prompts kept for reuse; -1: a quarter of the KV budget; 0: off
  int64_t page_tokens = 64;         // positions per cache page
  int64_t step_tokens = 0;          // rows of one step at most: every decode token, then prompt chunks in the rest
                                    // (at least one prompt token per step); 0: prefill_chunk + max_running
  OffloadForward* offload = nullptr;  // run the steps offloaded (engine/offload_forward.h); must outlive the scheduler
  const NumaExperts* numa_experts = nullptr;  // routed experts sharded over NUMA nodes (engine/numa_experts.h); must outlive it
};

struct RequestCallbacks {
  // After each sampled token (EOS included): its id and the text it completes (possibly
  // empty: text is held back while a UTF-8 character or a possible stop string is open).
  std::function<void(RequestId, int32_t token, std::string_view text)> on_token;
  // Exactly once per request, when it ends for any reason (cancel included). `error` is
  // empty unless the request failed (then the result holds what was generated before and
  // its stats.stop is kCancelled). Text a cancelled request still held back is in
  // result.text but was never streamed; otherwise the streamed pieces add up to result.text.
  std::function<void(RequestId, const GenerationResult&, const std::string& error)> on_done;
};

struct SchedulerStats {
  int64_t queued = 0, running = 0, finished = 0;
  int64_t kv_pages_used = 0, kv_pages_budget = 0;
  int64_t prompt_tokens = 0;         // submitted prompt tokens (all samples counted)
  int64_t prefilled_tokens = 0;      // of which actually run through the network
  int64_t shared_prefix_tokens = 0;  // of which reused from a fork or the prefix cache
  int64_t decoded_tokens = 0;        // tokens sampled (each request's generated_tokens, summed)
  int64_t steps = 0;
  double busy_seconds = 0;           // time spent inside steps
};

class BatchScheduler {
 public:
  BatchScheduler(const Model& model, const Tokenizer& tokenizer, const BatchOptions& options = {});
  ~BatchScheduler();  // stops the worker, cancels what is left (their on_done runs)

  BatchScheduler(const BatchScheduler&) = delete;
  BatchScheduler& operator=(const BatchScheduler&) = delete;

  // Queues `n` samples of `prompt` (ids exactly as the model sees them); sample i uses
  // seed request.sampling.seed + i. Returns their ids in sample order. Throws
  // std::invalid_argument (nothing queued) for an empty prompt, ids outside the
  // vocabulary, a prompt longer than the context, a bad request, n < 1, or a request
  // that could never fit the KV budget even alone.
  //
  // generated_from (resuming a generation): prompt positions from this index on are
  // tokens the model generated earlier; they are run on the decode form of attention, as
  // they were when generated, so the continuation is bit-identical to an uninterrupted
  // run. -1: the whole prompt is prompt.
  std::vector<RequestId> submit(std::vector<int32_t> prompt, const GenerateRequest& request, int n,
                                RequestCallbacks callbacks, int64_t generated_from = -1);
  // Ends a request (queued or running) with StopReason::kCancelled at the next step
  // boundary. Unknown or finished ids are ignored.
  void cancel(RequestId id);

  // Synchronous driving: one step; returns false when nothing is queued or running.
  bool step();
  void run_until_idle();

  // Background driving: a worker thread steps while there is work and sleeps otherwise.
  void start();
  void stop();  // joins the worker; queued and running requests stay

  SchedulerStats stats() const;
  const Model& model() const;
  const Tokenizer& tokenizer() const;
  int64_t context() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hearth

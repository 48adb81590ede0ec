// Text generation over one sequence: prefill the prompt, then decode token by token,
// streaming text as it completes and stopping on EOS, a stop string, the token budget,
// the context limit or a cancel flag.
//
// The generator keeps its cache between calls: when a new prompt starts with ids already
// in the cache (a chat turn extending the last one), only the new suffix is prefilled.
// Where the prompt departs from the cache, the cache is cut back to the common prefix.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "offload/thread_pool.h"

namespace hearth {

struct GeneratorOptions {
  int threads = 0;      // worker threads (0: one per physical core)
  int64_t context = 0;  // positions a sequence may hold; 0: the model's max_position_embeddings
  OffloadForward* offload = nullptr;  // run steps offloaded (engine/offload_forward.h); must outlive the generator
  const NumaExperts* numa_experts = nullptr;  // routed experts sharded over NUMA nodes (engine/numa_experts.h); must outlive it
};

struct GenerateRequest {
  SamplingParams sampling;
  int64_t max_tokens = 256;        // generated tokens at most (>= 1)
  std::vector<std::string> stop;   // stop strings, matched on the decoded text (never emitted)
  bool stop_at_eos = true;         // the tokenizer's EOS ends generation (and is not emitted)
};

enum class StopReason { kEos, kStopString, kMaxTokens, kContextFull, kCancelled };
const char* stop_reason_name(StopReason r);

struct GenerationStats {
  int64_t prompt_tokens = 0;    // the whole prompt
  int64_t reused_tokens = 0;    // of which already in the cache (not prefilled again)
  double prefill_seconds = 0;   // prefill of the new prompt tokens, first sample included
  double prefill_tok_s = 0;     // prefilled tokens per second
  int64_t generated_tokens = 0; // sampled tokens (an EOS that ended generation included)
  double decode_seconds = 0;    // after the first token
  double decode_tok_s = 0;      // (generated - 1) / decode_seconds
  double ttft_seconds = 0;      // from the call to the first token's text
  StopReason stop = StopReason::kMaxTokens;
};

struct GenerationResult {
  std::string text;            // everything emitted (stop string and EOS excluded)
  std::vector<int32_t> tokens; // sampled ids
  GenerationStats stats;
};

// The checks every generation request gets (the Generator's and the batch scheduler's):
// std::invalid_argument naming what is wrong for bad sampling parameters, a token budget
// below 1, an empty stop string, an empty prompt, a prompt longer than `context`, or ids
// outside [0, vocab).
void validate_generation(std::span<const int32_t> prompt, const GenerateRequest& request, int64_t context,
                         int64_t vocab);

class Generator {
 public:
  using TextSink = std::function<void(std::string_view)>;

  Generator(const Model& model, const Tokenizer& tokenizer, const GeneratorOptions& options = {});
  ~Generator();

  // Generates after `prompt` (the ids exactly as the model should see them: BOS, chat
  // markers). `on_text` receives the text as it completes (never a partial UTF-8
  // character, never part of a stop string). Throws std::invalid_argument for an empty
  // prompt, a prompt longer than the context, ids outside the model's vocabulary or a
  // bad request. A prompt that fills the context exactly still gets one token.
  GenerationResult generate(std::span<const int32_t> prompt, const GenerateRequest& request,
                            const TextSink& on_text = {}, const std::atomic<bool>* cancel = nullptr);

  // Forgets the cache.
  void reset();
  // The ids whose keys are in the cache (prompt and generated tokens fed back so far).
  const std::vector<int32_t>& cached_ids() const { return cached_; }
  int64_t context() const { return context_; }
  const Tokenizer& tokenizer() const { return tok_; }
  const Model& model() const { return model_; }

 private:
  const Model& model_;
  const Tokenizer& tok_;
  int64_t context_;
  ThreadPool pool_;
  Forward forward_;
  KvCache cache_;
  SeqId seq_;
  std::vector<int32_t> cached_;
  std::vector<float> logits_;
};

}  // namespace hearth

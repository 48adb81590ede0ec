// Measuring a model on text: perplexity, and how far a candidate (e.g. a quantized copy)
// strays from a base model token by token (KL divergence, top-1 agreement).
//
// The token sequence is cut into chunks of `ctx` tokens, each evaluated from an empty
// cache in one prefill step with logits for every position, exactly as llama.cpp's
// `perplexity` and `--kl-divergence` do, so numbers are comparable:
//   - the first token of every chunk is replaced by BOS (when `bos` >= 0);
//   - only the second half of a chunk is scored: the logits of positions
//     [ctx/2, ctx-1) predict the tokens at [ctx/2+1, ctx), so every scored prediction
//     sees at least ctx/2 tokens of context. That is ctx - 1 - ctx/2 scores per chunk
//     (255 for ctx 512), which is why ctx must be at least 3;
//   - a trailing partial chunk is not evaluated.
// Softmaxes run over the ids [0, n_vocab) only — the tokenizer's ids — so the padding
// rows a model's vocabulary carries past its tokenizer never take probability mass.
// All arithmetic past the logits is double precision, through log-sum-exp, so large
// logits neither overflow nor underflow.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "offload/thread_pool.h"

namespace hearth {

// log Σ exp(logits[i]), in double (max-shifted).
double log_sum_exp(std::span<const float> logits);
// -log softmax(logits)[target].
double negative_log_likelihood(std::span<const float> logits, int32_t target);
// KL(P || Q) = Σ p_i (log p_i - log q_i) with P = softmax(p_logits), Q = softmax(q_logits),
// both over the same ids. Identical rows give exactly 0; a rounding-level negative sum is
// returned as 0.
double kl_divergence(std::span<const float> p_logits, std::span<const float> q_logits);
// The first index of the largest logit, NaN skipped (argmax_f32); 0 when there is none.
int64_t argmax(std::span<const float> logits);

// Mean, median, 99th percentile and maximum; percentiles interpolate linearly between the
// closest ranks (numpy's default). All zero for an empty sample.
struct Summary {
  double mean = 0, median = 0, p99 = 0, max = 0;
};
Summary summarize(std::vector<double> values);

// The bytes of weights the forward pass reads, as loaded (a --repack counts at its new
// size; the MTP layer, never run, is left out): Model::footprint().total().
uint64_t model_weight_bytes(const Model& model);

struct EvalProgress {
  int64_t chunk = 0, chunks = 0;  // chunks done so far (1-based) of the total
  int64_t scored = 0;             // positions scored so far
  double perplexity = 0;          // so far (the base model's, for KLD)
  double candidate_perplexity = 0, kld_mean = 0, top1 = 0;  // so far; KLD only
};

struct EvalOptions {
  int64_t ctx = 512;        // tokens per chunk, >= 3
  int64_t max_chunks = 0;   // evaluate at most this many chunks; 0: every whole chunk
  int64_t n_vocab = 0;      // ids in the softmax, [0, n_vocab); 0: the model's vocab_size
  int32_t bos = -1;         // >= 0: replaces the first token of each chunk
  std::function<void(const EvalProgress&)> progress;  // after each chunk
  // Routed experts sharded over NUMA nodes (engine/numa_experts.h): each model's steps
  // use the entry built from it, if any.
  std::vector<const NumaExperts*> numa_experts;
  // Each model's KV cache type, in the order the models are given (perplexity: one; KLD:
  // base, candidate); a model past the end gets default_kv_cache_type().
  std::vector<KvCacheType> kv_cache;
};

// Whole chunks the tokens make, capped by max_chunks. Throws std::invalid_argument for
// ctx < 3 or max_chunks < 0.
int64_t eval_chunk_count(int64_t tokens, const EvalOptions& options);

struct PerplexityResult {
  int64_t chunks = 0;
  std::vector<double> nll;  // per scored position, in order
  double mean_nll = 0;
  double perplexity = 0;    // exp(mean_nll)
};

// Throws std::invalid_argument when the tokens do not fill one chunk (naming how many
// there are), when ctx exceeds the model's context, when n_vocab exceeds the model's
// vocabulary, or when a scored token lies outside [0, n_vocab).
PerplexityResult evaluate_perplexity(const Model& model, ThreadPool& pool, std::span<const int32_t> tokens,
                                     const EvalOptions& options);

struct KldResult {
  PerplexityResult base, candidate;  // both models on the same positions
  std::vector<double> kld;           // KL(P_base || P_candidate) per scored position
  std::vector<uint8_t> top1_same;    // 1 where both models' argmax agree
  Summary kld_summary;
  double top1_agreement = 0;         // fraction of positions in [0, 1]
  uint64_t base_bytes = 0, candidate_bytes = 0;
};

// As evaluate_perplexity, for two models on the same chunks. Throws std::invalid_argument
// when their vocabulary sizes differ.
KldResult evaluate_kld(const Model& base, const Model& candidate, ThreadPool& pool,
                       std::span<const int32_t> tokens, const EvalOptions& options);

}  // namespace hearth

#include "engine/generator.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>

#include "engine/stop_filter.h"

namespace hearth {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::kEos: return "eos";
    case StopReason::kStopString: return "stop string";
    case StopReason::kMaxTokens: return "token budget";
    case StopReason::kContextFull: return "context full";
    case StopReason::kCancelled: return "cancelled";
  }
  return "?";
}

Generator::Generator(const Model& model, const Tokenizer& tokenizer, const GeneratorOptions& options)
    : model_(model),
      tok_(tokenizer),
      context_(options.context > 0 ? options.context : model.config().max_position_embeddings),
      pool_(options.threads),
      forward_(model, pool_),
      cache_(model.config()),
      seq_(cache_.add_sequence()),
      logits_(size_t(model.config().vocab_size)) {
  if (options.context < 0) throw std::invalid_argument("context must be positive, got " + std::to_string(options.context));
  if (context_ <= 0) throw std::invalid_argument("the model declares no context length (max_position_embeddings)");
  if (tok_.size() > model.config().vocab_size)
    throw std::invalid_argument("the tokenizer defines " + std::to_string(tok_.size()) + " ids but the model's vocabulary has only " +
                                std::to_string(model.config().vocab_size) + " (a model must cover its tokenizer)");
}

Generator::~Generator() = default;

void Generator::reset() {
  cache_.truncate(seq_, 0);
  cached_.clear();
}

GenerationResult Generator::generate(std::span<const int32_t> prompt, const GenerateRequest& req,
                                     const TextSink& on_text, const std::atomic<bool>* cancel) {
  const auto t0 = Clock::now();
  req.sampling.validate();
  if (req.max_tokens < 1) throw std::invalid_argument("the token budget must be at least 1, got " + std::to_string(req.max_tokens));
  for (const std::string& s : req.stop)
    if (s.empty()) throw std::invalid_argument("a stop string must not be empty");
  if (prompt.empty()) throw std::invalid_argument("the prompt is empty (it has no tokens)");
  if (int64_t(prompt.size()) > context_)
    throw std::invalid_argument("the prompt has " + std::to_string(prompt.size()) + " tokens but the context holds only " +
                                std::to_string(context_));
  const int64_t V = model_.config().vocab_size;
  for (int32_t id : prompt)
    if (id < 0 || id >= V)
      throw std::invalid_argument("prompt token id " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(V) + ")");

  GenerationResult res;
  GenerationStats& st = res.stats;
  st.prompt_tokens = int64_t(prompt.size());
  Sampler sampler(req.sampling, tok_.size());

  // Reuse the cached prefix; at least the prompt's last token is run to get its logits.
  size_t keep = 0;
  while (keep < cached_.size() && keep < prompt.size() && cached_[keep] == prompt[keep]) ++keep;
  keep = std::min(keep, prompt.size() - 1);
  cache_.truncate(seq_, int64_t(keep));
  cached_.resize(keep);
  st.reused_tokens = int64_t(keep);

  auto run = [&](std::span<const int32_t> ids) {
    try {
      forward_.step(cache_, {{seq_, ids}}, logits_.data(), AttentionPath::kAuto, /*last_only=*/true);
    } catch (...) {
      reset();  // the cache may hold part of the step
      throw;
    }
    cached_.insert(cached_.end(), ids.begin(), ids.end());
  };

  const auto t_prefill = Clock::now();
  run(prompt.subspan(keep));
  StreamDecoder decoder(tok_);
  StopFilter filter(req.stop, res.text, on_text);
  const int32_t eos = tok_.eos_id();
  Clock::time_point t_decode{};
  bool stopped = false;
  for (;;) {
    if (cancel && cancel->load()) {
      st.stop = StopReason::kCancelled;
      break;
    }
    const int32_t tok = sampler.sample(logits_);
    res.tokens.push_back(tok);
    if (res.tokens.size() == 1) {
      st.prefill_seconds = seconds_since(t_prefill);
      st.ttft_seconds = seconds_since(t0);
      t_decode = Clock::now();
    }
    if (req.stop_at_eos && tok == eos) {
      st.stop = StopReason::kEos;
      break;
    }
    if (filter.push(decoder.push(tok))) {
      st.stop = StopReason::kStopString;
      stopped = true;
      break;
    }
    if (int64_t(res.tokens.size()) >= req.max_tokens) {
      st.stop = StopReason::kMaxTokens;
      break;
    }
    if (int64_t(cached_.size()) >= context_) {
      st.stop = StopReason::kContextFull;
      break;
    }
    run(std::span<const int32_t>(&tok, 1));
  }
  if (!stopped && !filter.push(decoder.flush())) filter.finish();

  st.generated_tokens = int64_t(res.tokens.size());
  if (st.generated_tokens == 0) st.prefill_seconds = seconds_since(t_prefill);  // cancelled before the first token
  const double prefilled = double(prompt.size() - keep);
  st.prefill_tok_s = st.prefill_seconds > 0 ? prefilled / st.prefill_seconds : 0;
  if (st.generated_tokens > 1) {
    st.decode_seconds = seconds_since(t_decode);
    st.decode_tok_s = st.decode_seconds > 0 ? double(st.generated_tokens - 1) / st.decode_seconds : 0;
  }
  return res;
}

}  // namespace hearth

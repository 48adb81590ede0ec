#include "engine/generator.h"

#include <algorithm>
#include <optional>
#include <stdexcept>
#include <string>

#include "engine/token_stream.h"

namespace hearth {

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
  forward_.set_offload(options.offload);
  forward_.set_numa_experts(options.numa_experts);
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

void validate_generation(std::span<const int32_t> prompt, const GenerateRequest& req, int64_t context, int64_t vocab) {
  req.sampling.validate();
  if (req.max_tokens < 1) throw std::invalid_argument("the token budget must be at least 1, got " + std::to_string(req.max_tokens));
  for (const std::string& s : req.stop)
    if (s.empty()) throw std::invalid_argument("a stop string must not be empty");
  if (prompt.empty()) throw std::invalid_argument("the prompt is empty (it has no tokens)");
  if (int64_t(prompt.size()) > context)
    throw std::invalid_argument("the prompt has " + std::to_string(prompt.size()) + " tokens but the context holds only " +
                                std::to_string(context));
  for (int32_t id : prompt)
    if (id < 0 || id >= vocab)
      throw std::invalid_argument("prompt token id " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
}

GenerationResult Generator::generate(std::span<const int32_t> prompt, const GenerateRequest& req,
                                     const TextSink& on_text, const std::atomic<bool>* cancel) {
  validate_generation(prompt, req, context_, model_.config().vocab_size);
  TokenStream stream(tok_, req, int64_t(prompt.size()));  // the clock starts here
  Sampler sampler(req.sampling, tok_.size());

  // Reuse the cached prefix; at least the prompt's last token is run to get its logits.
  size_t keep = 0;
  while (keep < cached_.size() && keep < prompt.size() && cached_[keep] == prompt[keep]) ++keep;
  keep = std::min(keep, prompt.size() - 1);
  cache_.truncate(seq_, int64_t(keep));
  cached_.resize(keep);

  auto run = [&](std::span<const int32_t> ids) {
    try {
      forward_.step(cache_, {{seq_, ids}}, logits_.data(), AttentionPath::kAuto, /*last_only=*/true);
    } catch (...) {
      reset();  // the cache may hold part of the step
      throw;
    }
    cached_.insert(cached_.end(), ids.begin(), ids.end());
  };

  stream.admitted(int64_t(keep));
  run(prompt.subspan(keep));
  std::string text;
  const auto emit = [&] {
    if (on_text && !text.empty()) on_text(text);
  };
  for (;;) {
    if (cancel && cancel->load()) {
      stream.abort(&text);  // what was held back is still shown
      emit();
      return stream.finish(StopReason::kCancelled);
    }
    const int32_t tok = sampler.sample(logits_);
    const std::optional<StopReason> stop = stream.push(tok, int64_t(cached_.size()), context_, text);
    emit();
    if (stop) return stream.finish(*stop);
    run(std::span<const int32_t>(&tok, 1));
  }
}

}  // namespace hearth

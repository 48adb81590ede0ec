#include "engine/token_stream.h"

namespace hearth {

namespace {
double seconds(TokenStream::Clock::time_point a, TokenStream::Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}
}  // namespace

TokenStream::TokenStream(const Tokenizer& tokenizer, const GenerateRequest& request, int64_t prompt_tokens)
    : tok_(tokenizer),
      req_(request),
      sink_([this](std::string_view text) { released_ += text; }),
      decoder_(tokenizer),
      filter_(request.stop, result_.text, sink_),
      submitted_(Clock::now()) {
  result_.stats.prompt_tokens = prompt_tokens;
}

void TokenStream::admitted(int64_t reused) {
  admitted_ = Clock::now();
  was_admitted_ = true;
  result_.stats.reused_tokens = reused;
}

std::optional<StopReason> TokenStream::push(int32_t token, int64_t cached, int64_t context, std::string& released) {
  released_.clear();
  result_.tokens.push_back(token);
  if (result_.tokens.size() == 1) first_token_ = Clock::now();
  std::optional<StopReason> stop;
  bool stop_string = false;
  if (req_.stop_at_eos && token == tok_.eos_id()) {
    stop = StopReason::kEos;
  } else if (filter_.push(decoder_.push(token))) {
    stop = StopReason::kStopString;
    stop_string = true;
  } else if (int64_t(result_.tokens.size()) >= req_.max_tokens) {
    stop = StopReason::kMaxTokens;
  } else if (cached >= context) {
    stop = StopReason::kContextFull;
  }
  if (stop) {
    flushed_ = true;
    if (!stop_string && !filter_.push(decoder_.flush())) filter_.finish();
  }
  released.swap(released_);
  return stop;
}

void TokenStream::abort(std::string* released) {
  released_.clear();
  if (!flushed_) {
    flushed_ = true;
    if (!filter_.push(decoder_.flush())) filter_.finish();
  }
  if (released) released->swap(released_);
}

GenerationResult TokenStream::finish(StopReason stop) {
  abort();
  const Clock::time_point now = Clock::now();
  GenerationStats& st = result_.stats;
  st.stop = stop;
  st.generated_tokens = int64_t(result_.tokens.size());
  if (was_admitted_) {
    const Clock::time_point prefill_end = st.generated_tokens > 0 ? first_token_ : now;
    st.prefill_seconds = seconds(admitted_, prefill_end);
    const double prefilled = double(st.prompt_tokens - st.reused_tokens);
    st.prefill_tok_s = st.prefill_seconds > 0 ? prefilled / st.prefill_seconds : 0;
  }
  if (st.generated_tokens > 0) st.ttft_seconds = seconds(submitted_, first_token_);
  if (st.generated_tokens > 1) {
    st.decode_seconds = seconds(first_token_, now);
    st.decode_tok_s = st.decode_seconds > 0 ? double(st.generated_tokens - 1) / st.decode_seconds : 0;
  }
  return std::move(result_);
}

}  // namespace hearth

// One request's output as its tokens are sampled, for the Generator and the batch scheduler: the text to
// stream with each token, the stop checks in the Generator's order (EOS, stop string,
// token budget, context), and the request's GenerationStats.
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "engine/generator.h"
#include "engine/stop_filter.h"
#include "engine/tokenizer.h"

namespace hearth {

class TokenStream {
 public:
  using Clock = std::chrono::steady_clock;

  // `request` must outlive the stream. The clock starts now (time to first token counts
  // the wait in the queue).
  TokenStream(const Tokenizer& tokenizer, const GenerateRequest& request, int64_t prompt_tokens);
  TokenStream(const TokenStream&) = delete;
  TokenStream& operator=(const TokenStream&) = delete;

  // The request got its sequence; `reused` prompt positions came from another one.
  void admitted(int64_t reused);

  // Takes the next sampled token; `cached` is the positions its sequence holds, `context`
  // the most it may. Returns why generation ends with this token, if it does. `released`
  // receives the text to stream with it (all of what is left when generation ends).
  std::optional<StopReason> push(int32_t token, int64_t cached, int64_t context, std::string& released);

  // Ends the request early (cancel or failure): text still held back joins the result;
  // it is streamed only through `released` when given (the Generator shows it, the
  // scheduler does not).
  void abort(std::string* released = nullptr);

  // The result, stats filled (`stop` as given).
  GenerationResult finish(StopReason stop);
  int64_t generated() const { return int64_t(result_.tokens.size()); }

 private:
  const Tokenizer& tok_;
  const GenerateRequest& req_;
  GenerationResult result_;
  std::string released_;
  StopFilter::Sink sink_;
  StreamDecoder decoder_;
  StopFilter filter_;
  Clock::time_point submitted_, admitted_, first_token_;
  bool was_admitted_ = false, flushed_ = false;
};

}  // namespace hearth

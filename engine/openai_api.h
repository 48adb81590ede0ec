// The OpenAI-compatible HTTP API of `hearth serve`, without the sockets: request bodies in
// (parsed and validated, every violation an ApiError naming the field), prompt ids out,
// and the response bodies back: `chat.completion` / `text_completion` objects, and the
// server-sent events of a streamed response.
//
// Chat replies follow DeepSeek's API: in thinking mode the text before "</think>" is
// `reasoning_content`, the text after it `content` (streamed as delta.reasoning_content,
// then delta.content). Thinking mode is chosen per request, first match wins:
//   1. "thinking": true | false, or {"type": "enabled" | "disabled"};
//   2. "chat_template_kwargs": {"thinking": true | false} (the vLLM / SGLang convention);
//   3. "model": "deepseek-reasoner" (thinking) or "deepseek-chat" (not), as DeepSeek names them;
//   4. the server's default (thinking unless `hearth serve --no-thinking`).
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "engine/chat_template.h"
#include "engine/generator.h"

namespace hearth {
class Tokenizer;
}

namespace hearth::openai {

// A request the server cannot serve, with the HTTP status and OpenAI's error fields.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, const std::string& message, std::string param = "",
           std::string type = "invalid_request_error", std::string code = "")
      : std::runtime_error(message), status_(status), param_(std::move(param)), type_(std::move(type)), code_(std::move(code)) {}
  int status() const { return status_; }
  const std::string& param() const { return param_; }  // the offending field ("" when none)
  const std::string& type() const { return type_; }
  const std::string& code() const { return code_; }

 private:
  int status_;
  std::string param_, type_, code_;
};

// {"error": {"message", "type", "param", "code"}} (param and code null when empty).
nlohmann::json error_body(const ApiError& e);
// The error body for a status alone: 400 invalid_request_error, 404 not_found_error, ...
nlohmann::json error_body(int status, const std::string& message, const std::string& param = "");

struct Limits {
  int64_t max_tokens = 4096;  // a larger max_tokens is refused; also the chat default
  int64_t default_completion_tokens = 16;  // /v1/completions without max_tokens (OpenAI's default)
  int max_n = 16;             // choices per request
  size_t max_stop = 16;       // stop strings per request
};

enum class Endpoint { kChat, kCompletion };

struct CompletionRequest {
  Endpoint endpoint = Endpoint::kChat;
  std::string model;                  // as the client named it ("" when absent)
  std::vector<ChatMessage> messages;  // chat: the conversation, the last turn the user's
  std::string prompt;                 // completions: the raw prompt text...
  std::vector<int32_t> prompt_ids;    // ...or the prompt as token ids (then prompt is empty)
  int n = 1;
  GenerateRequest generate;           // sampling, max_tokens, stop strings
  bool seed_given = false;            // without a seed the server picks a random one
  bool stream = false;
  bool include_usage = false;         // stream_options.include_usage: a last chunk with usage
  bool thinking = true;               // chat only: the prompt opens "<think>"
};

// Parse and validate a request body. Throw ApiError (400) naming the field; `default_thinking`
// applies when the request does not choose.
CompletionRequest parse_chat_request(std::string_view body, const Limits& limits, bool default_thinking);
CompletionRequest parse_completion_request(std::string_view body, const Limits& limits);

// The prompt as the model sees it: the chat template (encode_chat), or BOS + the raw prompt
// (special-token text such as "<｜User｜>" becomes its token, as in `hearth generate`), or
// the given ids as they are. ApiError (400) on ids outside the tokenizer.
std::vector<int32_t> encode_prompt(const CompletionRequest& request, const Tokenizer& tokenizer);

// "stop" (EOS or a stop string), "length" (max_tokens or the context), "abort" (cancelled).
const char* finish_reason(StopReason reason);

// What every response object of one request shares.
struct ResponseMeta {
  std::string id;       // "chatcmpl-..." / "cmpl-..."
  int64_t created = 0;  // Unix seconds
  std::string model;    // the served model's id
};

// The finished choices of a non-streamed request, in sample order. Usage counts the prompt
// once and every generated token of every choice (an EOS that ended a choice included).
nlohmann::json chat_completion(const ResponseMeta& meta, bool thinking, const std::vector<GenerationResult>& choices,
                               int64_t prompt_tokens);
nlohmann::json text_completion(const ResponseMeta& meta, const std::vector<GenerationResult>& choices,
                               int64_t prompt_tokens);

// One server-sent event: "data: {json}\n\n".
std::string sse_event(const nlohmann::json& payload);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

// The events of one streamed response of `n` choices. Chat: begin() gives each choice a
// first chunk with delta.role; text then streams as delta.reasoning_content until
// "</think>" (thinking mode) and as delta.content after; finish() flushes what the
// reasoning split held back and sends the chunk with finish_reason; end() sends the usage
// chunk (when asked) and "data: [DONE]". Completions: chunks of choices[].text.
// Every call returns the bytes to write (possibly empty); pieces for an index after its
// finish() are ignored.
class StreamEncoder {
 public:
  StreamEncoder(ResponseMeta meta, Endpoint endpoint, bool thinking, int n, bool include_usage);
  ~StreamEncoder();
  StreamEncoder(const StreamEncoder&) = delete;
  StreamEncoder& operator=(const StreamEncoder&) = delete;

  std::string begin();
  std::string piece(int index, std::string_view text);
  std::string finish(int index, StopReason reason, int64_t completion_tokens);
  std::string error(const ApiError& e);  // an error event in the stream (the response has begun)
  std::string end(int64_t prompt_tokens);

 private:
  struct Choice;
  nlohmann::json chunk(nlohmann::json choices) const;
  ResponseMeta meta_;
  Endpoint endpoint_;
  bool thinking_, include_usage_;
  int64_t completion_tokens_ = 0;
  std::vector<std::unique_ptr<Choice>> choices_;
  std::string out_;  // the events a call produces (the reasoning streams write here)
};

}  // namespace hearth::openai

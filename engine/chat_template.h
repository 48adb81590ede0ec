// The DeepSeek-V3.2 / DeepSeek-Math-V2 chat template, and splitting a generated turn
// into its reasoning and its answer.
//
//   <｜begin▁of▁sentence｜>{system}
//   <｜User｜>{user}<｜Assistant｜></think>{answer}<｜end▁of▁sentence｜>   earlier turns
//   <｜User｜>{user}<｜Assistant｜><think>                                  last user turn, thinking
//   <｜User｜>{user}<｜Assistant｜></think>                                 last user turn, non-thinking
//
// Earlier assistant turns keep only their answer (their reasoning is dropped). An
// assistant message after the last user turn in thinking mode continues the open
// "<think>": {reasoning}</think>{answer}<｜end▁of▁sentence｜>.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace hearth {

class Tokenizer;

inline constexpr std::string_view kBosText = "<｜begin▁of▁sentence｜>";
inline constexpr std::string_view kEosText = "<｜end▁of▁sentence｜>";
inline constexpr std::string_view kUserText = "<｜User｜>";
inline constexpr std::string_view kAssistantText = "<｜Assistant｜>";
inline constexpr std::string_view kThinkText = "<think>";
inline constexpr std::string_view kEndThinkText = "</think>";

struct ChatMessage {
  std::string role;       // "system" | "user" | "assistant"
  std::string content;    // for an assistant: the answer
  std::string reasoning;  // assistant only; rendered only after the last user turn in thinking mode
};

// The prompt as text. Throws std::invalid_argument on an unknown role.
std::string render_chat(const std::vector<ChatMessage>& messages, bool thinking = true);

// The same prompt as token ids. Message text is encoded with parse_special = false, so a
// user who types "<｜User｜>" gets those characters, not the marker token; the markers
// themselves are the tokenizer's special ids. Equal to encode(render_chat(...)) whenever
// the message text contains no special-token text.
std::vector<int32_t> encode_chat(const Tokenizer& tok, const std::vector<ChatMessage>& messages,
                                 bool thinking = true);

struct ReasoningSplit {
  std::string reasoning;  // text before "</think>" (a leading "<think>" removed)
  std::string answer;     // text after it, as generated
  bool finished_thinking = false;  // whether "</think>" was present
};

// Splits a generated turn. Without "</think>" the whole text is reasoning when the turn
// started in thinking mode (the model has not finished thinking), else it is the answer.
ReasoningSplit split_reasoning(std::string_view generated, bool started_thinking = true);

// The streaming form of split_reasoning: feeds chunks of generated text and reports each
// piece as reasoning or answer as soon as it is known. A "</think>" split across chunks
// is recognized; the marker itself is not reported.
class ReasoningStream {
 public:
  using Sink = std::function<void(std::string_view text, bool is_reasoning)>;
  ReasoningStream(bool started_thinking, Sink sink) : in_reasoning_(started_thinking), sink_(std::move(sink)) {}
  void push(std::string_view text);
  void flush();  // emits anything held back (a partial marker at the end of the turn)
  bool in_reasoning() const { return in_reasoning_; }

 private:
  bool in_reasoning_;
  Sink sink_;
  std::string held_;
};

}  // namespace hearth

#include "engine/chat_template.h"

#include <stdexcept>

#include "engine/tokenizer.h"

namespace hearth {

namespace {

// Walks the template once, handing out literal marker text and message text separately,
// so the string and the token-id renderings cannot disagree.
template <typename Marker, typename Text>
void walk_chat(const std::vector<ChatMessage>& messages, bool thinking, Marker marker, Text text) {
  size_t last_user = messages.size();
  for (size_t i = 0; i < messages.size(); ++i)
    if (messages[i].role == "user") last_user = i;
  marker(kBosText);
  bool open_think = false;  // the last "<｜Assistant｜>" was followed by "<think>"
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "system") {
      text(m.content);
    } else if (m.role == "user") {
      marker(kUserText);
      text(m.content);
      marker(kAssistantText);
      open_think = thinking && i == last_user;
      marker(open_think ? kThinkText : kEndThinkText);
    } else if (m.role == "assistant") {
      if (open_think) {
        text(m.reasoning);
        marker(kEndThinkText);
        open_think = false;
      }
      text(m.content);
      marker(kEosText);
    } else {
      throw std::invalid_argument("chat message " + std::to_string(i) + ": unknown role '" + m.role +
                                  "' (expected system, user or assistant)");
    }
  }
}

}  // namespace

std::string render_chat(const std::vector<ChatMessage>& messages, bool thinking) {
  std::string out;
  walk_chat(messages, thinking, [&](std::string_view s) { out += s; }, [&](std::string_view s) { out += s; });
  return out;
}

std::vector<int32_t> encode_chat(const Tokenizer& tok, const std::vector<ChatMessage>& messages, bool thinking) {
  std::vector<int32_t> ids;
  walk_chat(
      messages, thinking,
      [&](std::string_view s) {
        const int32_t id = tok.token_id(s);
        if (id < 0) throw std::runtime_error("the tokenizer has no token '" + std::string(s) + "' (not a DeepSeek tokenizer?)");
        ids.push_back(id);
      },
      [&](std::string_view s) {
        if (s.empty()) return;
        const std::vector<int32_t> part = tok.encode(s, /*parse_special=*/false);
        ids.insert(ids.end(), part.begin(), part.end());
      });
  return ids;
}

ReasoningSplit split_reasoning(std::string_view generated, bool started_thinking) {
  ReasoningSplit r;
  const size_t end = generated.find(kEndThinkText);
  if (end == std::string_view::npos) {
    (started_thinking ? r.reasoning : r.answer) = std::string(generated);
  } else {
    r.reasoning = std::string(generated.substr(0, end));
    r.answer = std::string(generated.substr(end + kEndThinkText.size()));
    r.finished_thinking = true;
  }
  if (r.reasoning.starts_with(kThinkText)) r.reasoning.erase(0, kThinkText.size());
  return r;
}

void ReasoningStream::push(std::string_view text) {
  if (!in_reasoning_) {
    if (!text.empty()) sink_(text, false);
    return;
  }
  held_ += text;
  const size_t end = held_.find(kEndThinkText);
  if (end != std::string::npos) {
    const std::string reasoning = held_.substr(0, end), answer = held_.substr(end + kEndThinkText.size());
    held_.clear();
    in_reasoning_ = false;
    if (!reasoning.empty()) sink_(reasoning, true);
    if (!answer.empty()) sink_(answer, false);
    return;
  }
  // Hold back the longest tail that could still become "</think>".
  size_t keep = 0;
  for (size_t k = std::min(held_.size(), kEndThinkText.size() - 1); k > 0; --k)
    if (kEndThinkText.starts_with(std::string_view(held_).substr(held_.size() - k))) {
      keep = k;
      break;
    }
  if (held_.size() > keep) {
    sink_(std::string_view(held_).substr(0, held_.size() - keep), true);
    held_.erase(0, held_.size() - keep);
  }
}

void ReasoningStream::flush() {
  if (!held_.empty()) sink_(held_, in_reasoning_);
  held_.clear();
}

}  // namespace hearth

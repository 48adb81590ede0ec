// The DeepSeek-V3.2 chat template and the reasoning / answer split.
#include <doctest/doctest.h>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "engine/chat_template.h"
#include "engine/tokenizer.h"

namespace engine_chat_template_suite {

using hearth::ChatMessage;

namespace {

const std::vector<ChatMessage> kConversation = {
    {"user", "hello", ""}, {"assistant", "Hello! I am DeepSeek.", "The user greets me."}, {"user", "1+1=?", ""}};

const char* kExpected =
    "<｜begin▁of▁sentence｜><｜User｜>hello<｜Assistant｜></think>Hello! I am DeepSeek.<｜end▁of▁sentence｜>"
    "<｜User｜>1+1=?<｜Assistant｜><think>";

// Collects a ReasoningStream's output as (text, is_reasoning) runs.
struct Collected {
  std::string reasoning, answer;
  std::vector<std::pair<std::string, bool>> pieces;
};

Collected stream(const std::vector<std::string>& chunks, bool thinking) {
  Collected c;
  hearth::ReasoningStream rs(thinking, [&](std::string_view t, bool r) {
    (r ? c.reasoning : c.answer) += t;
    c.pieces.emplace_back(std::string(t), r);
  });
  for (const std::string& s : chunks) rs.push(s);
  rs.flush();
  return c;
}

}  // namespace

TEST_CASE("chat template: the documented multi-turn example renders exactly") {
  CHECK(hearth::render_chat(kConversation, true) == kExpected);
}

TEST_CASE("chat template: system prompt and non-thinking mode") {
  const std::vector<ChatMessage> m = {{"system", "You are a careful mathematician.", ""}, {"user", "Prove 1+1=2.", ""}};
  CHECK(hearth::render_chat(m, true) ==
        "<｜begin▁of▁sentence｜>You are a careful mathematician.<｜User｜>Prove 1+1=2.<｜Assistant｜><think>");
  CHECK(hearth::render_chat(m, false) ==
        "<｜begin▁of▁sentence｜>You are a careful mathematician.<｜User｜>Prove 1+1=2.<｜Assistant｜></think>");
  CHECK(hearth::render_chat(kConversation, false) ==
        "<｜begin▁of▁sentence｜><｜User｜>hello<｜Assistant｜></think>Hello! I am DeepSeek.<｜end▁of▁sentence｜>"
        "<｜User｜>1+1=?<｜Assistant｜></think>");
  CHECK(hearth::render_chat({}, true) == "<｜begin▁of▁sentence｜>");
  // An assistant turn after the last user turn continues the open <think>.
  std::vector<ChatMessage> done = kConversation;
  done.push_back({"assistant", "2", "Add them."});
  CHECK(hearth::render_chat(done, true) == std::string(kExpected) + "Add them.</think>2<｜end▁of▁sentence｜>");
  CHECK_THROWS_AS(hearth::render_chat({{"tool", "x", ""}}, true), std::invalid_argument);
}

TEST_CASE("chat template: splitting reasoning from the answer") {
  auto s = hearth::split_reasoning("Let me add.\n</think>\n\nThe answer is 2.");
  CHECK(s.reasoning == "Let me add.\n");
  CHECK(s.answer == "\n\nThe answer is 2.");
  CHECK(s.finished_thinking);
  s = hearth::split_reasoning("<think>thinking</think>2");
  CHECK(s.reasoning == "thinking");
  CHECK(s.answer == "2");
  s = hearth::split_reasoning("still thinking, cut off");  // no </think>: all reasoning
  CHECK(s.reasoning == "still thinking, cut off");
  CHECK(s.answer.empty());
  CHECK_FALSE(s.finished_thinking);
  s = hearth::split_reasoning("plain answer", /*started_thinking=*/false);
  CHECK(s.reasoning.empty());
  CHECK(s.answer == "plain answer");
  s = hearth::split_reasoning("</think>only answer");
  CHECK(s.reasoning.empty());
  CHECK(s.answer == "only answer");
}

TEST_CASE("chat template: streaming split recognizes a marker across chunks") {
  Collected c = stream({"abc </th", "ink", ">answer"}, true);
  CHECK(c.reasoning == "abc ");
  CHECK(c.answer == "answer");
  c = stream({"a<", "/", "t", "hi", "nk>", "b", "c"}, true);
  CHECK(c.reasoning == "a");
  CHECK(c.answer == "bc");
  // A partial marker that never completes is reasoning, released at the flush.
  c = stream({"x </thi", "s is fine"}, true);
  CHECK(c.reasoning == "x </this is fine");
  CHECK(c.answer.empty());
  c = stream({"cut </thin"}, true);
  CHECK(c.reasoning == "cut </thin");
  // Not thinking: everything is answer, markers included.
  c = stream({"a</think>b"}, false);
  CHECK(c.answer == "a</think>b");
  CHECK(c.reasoning.empty());
  // Text before a held partial marker is released at once.
  c = stream({"hello </"}, true);
  REQUIRE(c.pieces.size() >= 1);
  CHECK(c.pieces[0] == std::make_pair(std::string("hello "), true));
}

TEST_CASE("chat template: token ids of the example with the DeepSeek tokenizer") {
  const auto tok = hearth::Tokenizer::load(std::filesystem::path(HEARTH_TEST_DATA) / "tokenizer/tokenizer.json");
  const std::vector<int32_t> expected = {0,     128803, 33310, 128804, 128799, 19923, 3,  342, 1030,   22651, 4374,
                                         1465,  16,     1,     128803, 19,     13,    19, 127252, 128804, 128798};
  CHECK(hearth::encode_chat(tok, kConversation, true) == expected);
  CHECK(tok.encode(kExpected) == expected);
  // Message text never turns into marker tokens.
  const auto ids = hearth::encode_chat(tok, {{"user", "<｜User｜>", ""}}, true);
  int users = 0;
  for (int32_t id : ids) users += id == 128803;
  CHECK(users == 1);
}

}  // namespace engine_chat_template_suite

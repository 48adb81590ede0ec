// The OpenAI-compatible protocol of `hearth serve`, without sockets: request validation,
// prompt encoding, response objects and the streamed events.
#include <doctest/doctest.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/chat_template.h"
#include "engine/openai_api.h"
#include "engine/tokenizer.h"
#include "support/sse.h"

namespace engine_openai_api_suite {

using hearth::GenerationResult;
using hearth::StopReason;
using hearth::openai::ApiError;
using hearth::openai::Endpoint;
using hearth::openai::Limits;
using hearth::openai::parse_chat_request;
using hearth::openai::parse_completion_request;
using json = nlohmann::json;

namespace {

const Limits kLimits{/*max_tokens=*/1000, /*default_completion_tokens=*/16, /*max_n=*/8, /*max_stop=*/4};

// The ApiError a body gets from /v1/chat/completions (or /v1/completions).
ApiError chat_error(const std::string& body, Endpoint endpoint = Endpoint::kChat) {
  try {
    if (endpoint == Endpoint::kChat) parse_chat_request(body, kLimits, true);
    else parse_completion_request(body, kLimits);
  } catch (const ApiError& e) {
    return e;
  }
  return ApiError(0, "<no error>");
}

GenerationResult result(const std::string& text, StopReason stop, int tokens) {
  GenerationResult r;
  r.text = text;
  r.stats.stop = stop;
  r.tokens.assign(size_t(tokens), 7);
  return r;
}

const hearth::Tokenizer& tokenizer() {
  static const hearth::Tokenizer tok =
      hearth::Tokenizer::load(std::filesystem::path(HEARTH_TEST_DATA) / "tokenizer/tokenizer.json");
  return tok;
}

}  // namespace

TEST_CASE("openai api: a full chat request is parsed field by field") {
  const auto r = parse_chat_request(R"({
    "model": "tiny", "n": 3, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
    "max_tokens": 77, "stop": ["END", "##"], "seed": 1234, "stream": true,
    "stream_options": {"include_usage": true}, "user": "ignored", "frequency_penalty": 0,
    "messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
      {"role": "assistant", "content": "Hello.", "reasoning_content": "Greet back."},
      {"role": "user", "content": "1+1?"}]})",
                                    kLimits, true);
  CHECK(r.endpoint == Endpoint::kChat);
  CHECK(r.model == "tiny");
  CHECK(r.n == 3);
  CHECK(r.generate.sampling.temperature == 0.5);
  CHECK(r.generate.sampling.top_p == 0.9);
  CHECK(r.generate.sampling.top_k == 40);
  CHECK(r.generate.sampling.min_p == 0.05);
  CHECK(r.generate.sampling.seed == 1234);
  CHECK(r.seed_given);
  CHECK(r.generate.max_tokens == 77);
  CHECK(r.generate.stop == std::vector<std::string>{"END", "##"});
  CHECK(r.stream);
  CHECK(r.include_usage);
  CHECK(r.thinking);
  REQUIRE(r.messages.size() == 4);
  CHECK(r.messages[0].role == "system");
  CHECK(r.messages[1].content == "Hi there");
  CHECK(r.messages[2].role == "assistant");
  CHECK(r.messages[2].reasoning == "Greet back.");
  CHECK(r.messages[3].content == "1+1?");
}

TEST_CASE("openai api: defaults follow OpenAI's and nulls count as absent") {
  const auto r = parse_chat_request(
      R"({"messages": [{"role": "developer", "content": "sys"}, {"role": "user", "content": "q"}],
          "temperature": null, "stop": null, "seed": null, "max_tokens": null})",
      kLimits, false);
  CHECK(r.n == 1);
  CHECK(r.generate.sampling.temperature == 1.0);
  CHECK(r.generate.sampling.top_p == 1.0);
  CHECK(r.generate.max_tokens == kLimits.max_tokens);  // chat: up to the server's limit
  CHECK(r.generate.stop.empty());
  CHECK_FALSE(r.seed_given);
  CHECK_FALSE(r.stream);
  CHECK_FALSE(r.thinking);  // the server default given above
  CHECK(r.messages[0].role == "system");  // developer is OpenAI's newer name for system
  // max_completion_tokens is the newer name of max_tokens; 8.0 from double-only clients is 8.
  CHECK(parse_chat_request(R"({"messages":[{"role":"user","content":"q"}],"max_completion_tokens":8.0})", kLimits, true)
            .generate.max_tokens == 8);
  // stream_options without stream is ignored.
  CHECK_FALSE(parse_chat_request(R"({"messages":[{"role":"user","content":"q"}],"stream_options":{"include_usage":true}})",
                                 kLimits, true)
                  .include_usage);
}

TEST_CASE("openai api: thinking mode is chosen by field then template kwargs then model name") {
  auto thinking = [](const std::string& extra, bool server_default) {
    return parse_chat_request(R"({"messages":[{"role":"user","content":"q"}])" + extra + "}", kLimits, server_default)
        .thinking;
  };
  CHECK(thinking("", true));
  CHECK_FALSE(thinking("", false));
  CHECK_FALSE(thinking(R"(,"thinking":false)", true));
  CHECK(thinking(R"(,"thinking":true)", false));
  CHECK(thinking(R"(,"thinking":{"type":"enabled"})", false));
  CHECK_FALSE(thinking(R"(,"thinking":{"type":"disabled"})", true));
  CHECK_FALSE(thinking(R"(,"chat_template_kwargs":{"thinking":false})", true));
  CHECK(thinking(R"(,"chat_template_kwargs":{"thinking":true})", false));
  CHECK(thinking(R"(,"model":"deepseek-reasoner")", false));
  CHECK_FALSE(thinking(R"(,"model":"DeepSeek-Chat")", true));
  CHECK(thinking(R"(,"model":"some-local-model")", true));
  // The explicit field wins over the kwargs, which win over the model name.
  CHECK(thinking(R"(,"model":"deepseek-chat","chat_template_kwargs":{"thinking":true})", false));
  CHECK_FALSE(thinking(R"(,"model":"deepseek-reasoner","thinking":false,"chat_template_kwargs":{"thinking":true})", true));
}

TEST_CASE("openai api: every bad field gets a 400 naming it") {
  struct Case {
    std::string body, param, part;
  };
  const std::string msgs = R"("messages":[{"role":"user","content":"q"}])";
  const std::vector<Case> cases = {
      {"{not json", "", "not valid JSON"},
      {"[1,2]", "", "must be a JSON object"},
      {"{}", "messages", "messages is required"},
      {R"({"messages":[]})", "messages", "non-empty array"},
      {R"({"messages":"hi"})", "messages", "non-empty array"},
      {R"({"messages":[3]})", "messages[0]", "must be an object"},
      {R"({"messages":[{"content":"q"}]})", "messages[0].role", "messages[0].role is required"},
      {R"({"messages":[{"role":"tool","content":"q"}]})", "messages[0].role", "'tool' is not supported"},
      {R"({"messages":[{"role":"user"}]})", "messages[0].content", "is required"},
      {R"({"messages":[{"role":"user","content":5}]})", "messages[0].content", "must be a string"},
      {R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})", "messages[0].content[0]", "only"},
      {R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]})", "messages",
       "last message must be the user's"},
      {"{" + msgs + R"(,"n":0})", "n", "between 1 and 8"},
      {"{" + msgs + R"(,"n":9})", "n", "between 1 and 8"},
      {"{" + msgs + R"(,"n":"two"})", "n", "must be an integer"},
      {"{" + msgs + R"(,"temperature":2.5})", "temperature", "between 0 and 2"},
      {"{" + msgs + R"(,"temperature":"hot"})", "temperature", "must be a number"},
      {"{" + msgs + R"(,"top_p":0})", "top_p", "(0, 1]"},
      {"{" + msgs + R"(,"top_k":-1})", "top_k", ">= 0"},
      {"{" + msgs + R"(,"min_p":1.5})", "min_p", "[0, 1]"},
      {"{" + msgs + R"(,"max_tokens":0})", "max_tokens", "at least 1"},
      {"{" + msgs + R"(,"max_tokens":1001})", "max_tokens", "above this server's limit of 1000"},
      {"{" + msgs + R"(,"max_completion_tokens":5000})", "max_completion_tokens", "limit of 1000"},
      {"{" + msgs + R"(,"max_tokens":5,"max_completion_tokens":6})", "max_completion_tokens", "disagree"},
      {"{" + msgs + R"(,"max_tokens":2.5})", "max_tokens", "must be an integer"},
      {"{" + msgs + R"(,"stop":5})", "stop", "string or an array"},
      {"{" + msgs + R"(,"stop":["a",""]})", "stop", "must not be empty"},
      {"{" + msgs + R"(,"stop":["a",1]})", "stop[1]", "must be a string"},
      {"{" + msgs + R"(,"stop":["a","b","c","d","e"]})", "stop", "more than the limit of 4"},
      {"{" + msgs + R"(,"seed":1.5})", "seed", "must be an integer"},
      {"{" + msgs + R"(,"stream":"yes"})", "stream", "true or false"},
      {"{" + msgs + R"(,"stream":true,"stream_options":{"include_usage":1}})", "stream_options.include_usage",
       "true or false"},
      {"{" + msgs + R"(,"model":7})", "model", "must be a string"},
      {"{" + msgs + R"(,"thinking":"maybe"})", "thinking", "thinking must be"},
      {"{" + msgs + R"(,"chat_template_kwargs":{"thinking":"x"}})", "chat_template_kwargs.thinking", "true or false"},
      {"{" + msgs + R"(,"logprobs":true})", "logprobs", "not supported"},
      {"{" + msgs + R"(,"tools":[{"type":"function"}]})", "tools", "not supported"},
      {"{" + msgs + R"(,"presence_penalty":0.5})", "presence_penalty", "not supported"},
      {"{" + msgs + R"(,"response_format":{"type":"json_object"}})", "response_format", "not supported"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.body);
    const ApiError e = chat_error(c.body);
    CHECK(e.status() == 400);
    CHECK(e.param() == c.param);
    CHECK_MESSAGE(std::string(e.what()).find(c.part) != std::string::npos, e.what());
    CHECK(e.type() == "invalid_request_error");
  }
  // Neutral values of unsupported parameters are accepted (clients send them by default).
  CHECK_NOTHROW(parse_chat_request("{" + msgs + R"(,"logprobs":false,"tools":[],"tool_choice":"none",
      "presence_penalty":0,"frequency_penalty":0.0,"logit_bias":{},"response_format":{"type":"text"}})",
                                   kLimits, true));
}

TEST_CASE("openai api: completions take a raw prompt string or token ids") {
  const auto r = parse_completion_request(R"({"prompt":"Once upon","max_tokens":5,"echo":false,"best_of":1})", kLimits);
  CHECK(r.endpoint == Endpoint::kCompletion);
  CHECK(r.prompt == "Once upon");
  CHECK(r.generate.max_tokens == 5);
  CHECK_FALSE(r.thinking);
  CHECK(parse_completion_request(R"({"prompt":["one string"]})", kLimits).prompt == "one string");
  CHECK(parse_completion_request(R"({"prompt":"x"})", kLimits).generate.max_tokens == 16);  // OpenAI's default
  CHECK(parse_completion_request(R"({"prompt":[0, 5, 9]})", kLimits).prompt_ids == std::vector<int32_t>{0, 5, 9});
  struct Case {
    std::string body, param, part;
  };
  for (const Case& c : std::vector<Case>{{"{}", "prompt", "prompt is required"},
                                         {R"({"prompt":{}})", "prompt", "must be a string"},
                                         {R"({"prompt":["a","b"]})", "prompt", "must be a string"},
                                         {R"({"prompt":[1,-2]})", "prompt", "out of range"},
                                         {R"({"prompt":"x","echo":true})", "echo", "not supported"},
                                         {R"({"prompt":"x","best_of":3})", "best_of", "not supported"},
                                         {R"({"prompt":"x","max_tokens":1001})", "max_tokens", "limit of 1000"}}) {
    CAPTURE(c.body);
    const ApiError e = chat_error(c.body, Endpoint::kCompletion);
    CHECK(e.status() == 400);
    CHECK(e.param() == c.param);
    CHECK_MESSAGE(std::string(e.what()).find(c.part) != std::string::npos, e.what());
  }
}

TEST_CASE("openai api: prompts are the chat template or BOS plus the raw text") {
  const hearth::Tokenizer& tok = tokenizer();
  const auto chat = parse_chat_request(
      R"({"messages":[{"role":"system","content":"S"},{"role":"user","content":"What is <｜User｜>?"}]})", kLimits, true);
  CHECK(hearth::openai::encode_prompt(chat, tok) == hearth::encode_chat(tok, chat.messages, true));
  const auto plain = parse_chat_request(R"({"messages":[{"role":"user","content":"hi"}],"thinking":false})", kLimits, true);
  const std::vector<int32_t> ids = hearth::openai::encode_prompt(plain, tok);
  CHECK(tok.decode(ids) == "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜></think>");

  auto completion = parse_completion_request(R"({"prompt":"<｜User｜>2+2"})", kLimits);
  std::vector<int32_t> want{tok.bos_id()};
  for (int32_t id : tok.encode("<｜User｜>2+2", true)) want.push_back(id);
  CHECK(hearth::openai::encode_prompt(completion, tok) == want);
  CHECK(want[1] == tok.token_id("<｜User｜>"));  // special-token text is the token, as in hearth generate

  completion = parse_completion_request(R"({"prompt":[0, 100, 200]})", kLimits);
  CHECK(hearth::openai::encode_prompt(completion, tok) == std::vector<int32_t>{0, 100, 200});
  completion = parse_completion_request(R"({"prompt":[0, 999999]})", kLimits);
  try {
    hearth::openai::encode_prompt(completion, tok);
    FAIL("no error for an id outside the vocabulary");
  } catch (const ApiError& e) {
    CHECK(e.status() == 400);
    CHECK(e.param() == "prompt");
    CHECK(std::string(e.what()).find("prompt[1]: token id 999999 is outside the vocabulary") != std::string::npos);
  }
}

TEST_CASE("openai api: error bodies have OpenAI's shape") {
  const json e = hearth::openai::error_body(ApiError(400, "n must be between 1 and 8", "n"));
  CHECK(e == json::parse(R"({"error":{"message":"n must be between 1 and 8","type":"invalid_request_error",
                                      "param":"n","code":null}})"));
  const json nf = hearth::openai::error_body(404, "no route");
  CHECK(nf["error"]["type"] == "not_found_error");
  CHECK(nf["error"]["param"].is_null());
  CHECK(hearth::openai::error_body(500, "boom")["error"]["type"] == "server_error");
}

TEST_CASE("openai api: a non-streamed chat completion splits reasoning from the answer") {
  const hearth::openai::ResponseMeta meta{"chatcmpl-1", 1700000000, "tiny"};
  const std::vector<GenerationResult> results = {result("Let me add.</think>It is 2.", StopReason::kEos, 9),
                                                 result("Still thinking", StopReason::kMaxTokens, 4),
                                                 result("x</think>y", StopReason::kStopString, 3)};
  const json r = hearth::openai::chat_completion(meta, true, results, 11);
  CHECK(r["id"] == "chatcmpl-1");
  CHECK(r["object"] == "chat.completion");
  CHECK(r["created"] == 1700000000);
  CHECK(r["model"] == "tiny");
  REQUIRE(r["choices"].size() == 3);
  CHECK(r["choices"][0] == json::parse(R"({"index":0,"logprobs":null,"finish_reason":"stop",
      "message":{"role":"assistant","content":"It is 2.","reasoning_content":"Let me add."}})"));
  CHECK(r["choices"][1]["message"]["reasoning_content"] == "Still thinking");
  CHECK(r["choices"][1]["message"]["content"] == "");
  CHECK(r["choices"][1]["finish_reason"] == "length");
  CHECK(r["choices"][2]["index"] == 2);
  CHECK(r["choices"][2]["finish_reason"] == "stop");
  CHECK(r["usage"] == json::parse(R"({"prompt_tokens":11,"completion_tokens":16,"total_tokens":27})"));

  // Non-thinking: everything is the answer (even a stray "</think>") and there is no
  // reasoning_content.
  const json plain = hearth::openai::chat_completion(meta, false, {result("a</think>b", StopReason::kEos, 2)}, 3);
  CHECK(plain["choices"][0]["message"] == json::parse(R"({"role":"assistant","content":"a</think>b"})"));

  const json text = hearth::openai::text_completion({"cmpl-9", 5, "tiny"}, results, 11);
  CHECK(text["object"] == "text_completion");
  CHECK(text["choices"][2] == json::parse(R"({"index":2,"text":"x</think>y","logprobs":null,"finish_reason":"stop"})"));
  CHECK(text["usage"]["total_tokens"] == 27);
}

TEST_CASE("openai api: streamed chat chunks carry role first then reasoning then content then finish_reason") {
  hearth::openai::StreamEncoder enc({"chatcmpl-7", 42, "tiny"}, Endpoint::kChat, true, 2, true);
  std::string wire = enc.begin();
  // Two choices interleaved; choice 0's "</think>" is split across three pieces.
  const std::vector<std::pair<int, std::string>> pieces = {
      {0, "I think"}, {1, "Hmm"}, {0, " hard</th"}, {1, "</think>"}, {0, "in"}, {0, "k>The answer"},
      {1, "Done."},   {0, " is 4."}};
  std::map<int, std::string> generated;
  for (const auto& [i, text] : pieces) {
    wire += enc.piece(i, text);
    generated[i] += text;
  }
  wire += enc.finish(1, StopReason::kEos, 5);
  wire += enc.piece(1, "ignored after finish");
  wire += enc.finish(0, StopReason::kMaxTokens, 8);
  wire += enc.end(13);

  const auto sse = hearth::testing::parse_sse(wire);
  CHECK(sse.complete);
  REQUIRE(sse.data.size() >= 6);
  CHECK(sse.data.back() == "[DONE]");
  std::map<int, std::string> reasoning, content, finish;
  std::map<int, int> events;
  json usage;
  for (size_t k = 0; k + 1 < sse.data.size(); ++k) {
    const json c = json::parse(sse.data[k]);
    CHECK(c["id"] == "chatcmpl-7");
    CHECK(c["object"] == "chat.completion.chunk");
    CHECK(c["model"] == "tiny");
    CHECK(c["created"] == 42);
    if (c.contains("usage")) {
      CHECK(c["choices"].empty());
      CHECK(k + 2 == sse.data.size());  // the usage chunk comes last, before [DONE]
      usage = c["usage"];
      continue;
    }
    REQUIRE(c["choices"].size() == 1);
    const json& ch = c["choices"][0];
    const int i = ch["index"].get<int>();
    CHECK_FALSE(finish.count(i));  // nothing after a choice's finish_reason
    const json& d = ch["delta"];
    if (events[i]++ == 0) CHECK(d["role"] == "assistant");  // the first chunk of each choice
    else CHECK_FALSE(d.contains("role"));
    if (d.contains("reasoning_content")) {
      CHECK(content[i].empty());  // reasoning never after the answer began
      reasoning[i] += d["reasoning_content"].get<std::string>();
    }
    if (d.contains("content")) content[i] += d["content"].get<std::string>();
    if (!ch["finish_reason"].is_null()) finish[i] = ch["finish_reason"].get<std::string>();
  }
  for (int i : {0, 1}) {
    const hearth::ReasoningSplit want = hearth::split_reasoning(generated[i], true);
    CHECK(reasoning[i] == want.reasoning);
    CHECK(content[i] == want.answer);
  }
  CHECK(reasoning[0] == "I think hard");
  CHECK(content[0] == "The answer is 4.");
  CHECK(content[1] == "Done.");
  CHECK(finish[0] == "length");
  CHECK(finish[1] == "stop");
  CHECK(usage == json::parse(R"({"prompt_tokens":13,"completion_tokens":13,"total_tokens":26})"));
}

TEST_CASE("openai api: a streamed completion holds back a partial think marker until the end") {
  // Thinking ended by the token budget in the middle of "</think>": the held-back text is
  // still reasoning and arrives with finish().
  hearth::openai::StreamEncoder enc({"c", 1, "m"}, Endpoint::kChat, true, 1, false);
  std::string wire = enc.begin();
  wire += enc.piece(0, "abc</th");
  const std::string before_finish = wire;
  wire += enc.finish(0, StopReason::kMaxTokens, 3);
  wire += enc.end(1);
  std::string reasoning;
  for (const std::string& d : hearth::testing::parse_sse(wire).data)
    if (d != "[DONE]")
      if (const json c = json::parse(d); c["choices"][0]["delta"].contains("reasoning_content"))
        reasoning += c["choices"][0]["delta"]["reasoning_content"].get<std::string>();
  CHECK(reasoning == "abc</th");
  CHECK(before_finish.find("</th") == std::string::npos);
  CHECK(wire.find("usage") == std::string::npos);  // not asked for

  // Text completions stream choices[].text and end with finish_reason, then [DONE].
  hearth::openai::StreamEncoder text({"cmpl-1", 1, "m"}, Endpoint::kCompletion, false, 1, false);
  std::string text_wire = text.begin();  // nothing: completions have no role chunk
  text_wire += text.piece(0, "Hello");
  text_wire += text.piece(0, " world");
  text_wire += text.finish(0, StopReason::kStopString, 2);
  text_wire += text.end(4);
  const auto sse = hearth::testing::parse_sse(text_wire);
  REQUIRE(sse.data.size() == 4);
  CHECK(json::parse(sse.data[0])["object"] == "text_completion");
  CHECK(json::parse(sse.data[0])["choices"][0]["text"] == "Hello");
  CHECK(json::parse(sse.data[1])["choices"][0]["text"] == " world");
  CHECK(json::parse(sse.data[2])["choices"][0]["finish_reason"] == "stop");
  CHECK(sse.data[3] == "[DONE]");
}

}  // namespace engine_openai_api_suite

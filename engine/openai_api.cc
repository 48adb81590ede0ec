#include "engine/openai_api.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>

#include "engine/tokenizer.h"

namespace hearth::openai {

using json = nlohmann::json;

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& message) { throw ApiError(400, message, param); }

// A field that is present and not null (clients send null for "not given").
const json* field(const json& object, const char* name) {
  const auto it = object.find(name);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

json parse_object(std::string_view body) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {
    throw ApiError(400, std::string("the request body is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw ApiError(400, "the request body must be a JSON object");
  return j;
}

int64_t get_int(const json& v, const std::string& name) {
  if (v.is_number_unsigned()) {
    if (v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())) bad(name, name + " is too large");
    return int64_t(v.get<uint64_t>());
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {  // 8.0 from a client that only has doubles
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) return int64_t(d);
  }
  bad(name, name + " must be an integer, got " + v.dump());
}

double get_number(const json& v, const std::string& name) {
  if (!v.is_number()) bad(name, name + " must be a number, got " + v.dump());
  return v.get<double>();
}

bool get_bool(const json& v, const std::string& name) {
  if (!v.is_boolean()) bad(name, name + " must be true or false, got " + v.dump());
  return v.get<bool>();
}

std::string get_string(const json& v, const std::string& name) {
  if (!v.is_string()) bad(name, name + " must be a string, got " + v.dump());
  return v.get<std::string>();
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// OpenAI parameters hearth does not implement: refused when set to anything but their
// neutral value, so a client never silently gets something else than it asked for.
void refuse_unsupported(const json& body) {
  auto refuse = [&](const char* name, bool set) {
    if (set) bad(name, std::string(name) + " is not supported by hearth serve");
  };
  auto nonzero = [](const json& v) { return !(v.is_number() && v.get<double>() == 0) && !(v.is_boolean() && !v.get<bool>()); };
  auto nonempty = [](const json& v) { return !((v.is_array() || v.is_object() || v.is_string()) && v.empty()); };
  for (const char* name : {"logprobs", "top_logprobs", "frequency_penalty", "presence_penalty", "echo"})
    if (const json* v = field(body, name)) refuse(name, nonzero(*v));
  for (const char* name : {"tools", "functions", "logit_bias", "suffix"})
    if (const json* v = field(body, name)) refuse(name, nonempty(*v));
  if (const json* v = field(body, "tool_choice")) refuse("tool_choice", !(v->is_string() && v->get<std::string>() == "none"));
  if (const json* v = field(body, "function_call")) refuse("function_call", !(v->is_string() && v->get<std::string>() == "none"));
  if (const json* v = field(body, "response_format")) {
    const json* type = v->is_object() ? field(*v, "type") : nullptr;
    refuse("response_format", !(type && type->is_string() && type->get<std::string>() == "text"));
  }
}

// The fields /v1/chat/completions and /v1/completions share.
void parse_common(const json& body, const Limits& limits, int64_t default_max_tokens, CompletionRequest& r) {
  refuse_unsupported(body);
  if (const json* v = field(body, "model")) r.model = get_string(*v, "model");

  if (const json* v = field(body, "n")) {
    const int64_t n = get_int(*v, "n");
    if (n < 1 || n > limits.max_n)
      bad("n", "n must be between 1 and " + std::to_string(limits.max_n) + ", got " + std::to_string(n));
    r.n = int(n);
  }
  if (const json* v = field(body, "best_of")) {
    const int64_t best_of = get_int(*v, "best_of");
    if (best_of != r.n) bad("best_of", "best_of is not supported by hearth serve (it must equal n)");
  }

  SamplingParams& s = r.generate.sampling;
  s.temperature = 1.0;  // OpenAI's defaults
  s.top_p = 1.0;
  if (const json* v = field(body, "temperature")) {
    s.temperature = get_number(*v, "temperature");
    if (s.temperature < 0 || s.temperature > 2)
      bad("temperature", "temperature must be between 0 and 2 (0: greedy), got " + v->dump());
  }
  if (const json* v = field(body, "top_p")) {
    s.top_p = get_number(*v, "top_p");
    if (!(s.top_p > 0 && s.top_p <= 1)) bad("top_p", "top_p must be in (0, 1], got " + v->dump());
  }
  if (const json* v = field(body, "top_k")) {  // not OpenAI's, but common in local servers
    s.top_k = get_int(*v, "top_k");
    if (s.top_k < 0) bad("top_k", "top_k must be >= 0 (0: off), got " + v->dump());
  }
  if (const json* v = field(body, "min_p")) {
    s.min_p = get_number(*v, "min_p");
    if (!(s.min_p >= 0 && s.min_p <= 1)) bad("min_p", "min_p must be in [0, 1], got " + v->dump());
  }
  if (const json* v = field(body, "seed")) {
    if (!v->is_number_integer()) bad("seed", "seed must be an integer, got " + v->dump());
    s.seed = v->is_number_unsigned() ? v->get<uint64_t>() : uint64_t(v->get<int64_t>());
    r.seed_given = true;
  }

  const json* max_tokens = field(body, "max_tokens");
  const json* max_completion = field(body, "max_completion_tokens");
  const char* max_name = max_completion ? "max_completion_tokens" : "max_tokens";
  if (max_tokens && max_completion && *max_tokens != *max_completion)
    bad("max_completion_tokens", "max_tokens and max_completion_tokens disagree; give one of them");
  r.generate.max_tokens = std::min(default_max_tokens, limits.max_tokens);
  if (const json* v = max_completion ? max_completion : max_tokens) {
    const int64_t m = get_int(*v, max_name);
    if (m < 1) bad(max_name, std::string(max_name) + " must be at least 1, got " + std::to_string(m));
    if (m > limits.max_tokens)
      bad(max_name, std::string(max_name) + " is " + std::to_string(m) + ", above this server's limit of " +
                        std::to_string(limits.max_tokens) + " (hearth serve --max-tokens-limit)");
    r.generate.max_tokens = m;
  }

  if (const json* v = field(body, "stop")) {
    std::vector<std::string> stop;
    if (v->is_string()) {
      stop.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      for (size_t i = 0; i < v->size(); ++i) stop.push_back(get_string((*v)[i], "stop[" + std::to_string(i) + "]"));
    } else {
      bad("stop", "stop must be a string or an array of strings, got " + v->dump());
    }
    if (stop.size() > limits.max_stop)
      bad("stop", "stop has " + std::to_string(stop.size()) + " strings, more than the limit of " + std::to_string(limits.max_stop));
    for (const std::string& x : stop)
      if (x.empty()) bad("stop", "stop strings must not be empty");
    r.generate.stop = std::move(stop);
  }

  if (const json* v = field(body, "stream")) r.stream = get_bool(*v, "stream");
  if (const json* v = field(body, "stream_options"); v && r.stream) {
    if (!v->is_object()) bad("stream_options", "stream_options must be an object, got " + v->dump());
    if (const json* u = field(*v, "include_usage")) r.include_usage = get_bool(*u, "stream_options.include_usage");
  }
}

bool parse_thinking(const json& body, const std::string& model, bool default_thinking) {
  if (const json* v = field(body, "thinking")) {
    if (v->is_boolean()) return v->get<bool>();
    if (v->is_object())
      if (const json* type = field(*v, "type"); type && type->is_string()) {
        if (type->get<std::string>() == "enabled") return true;
        if (type->get<std::string>() == "disabled") return false;
      }
    bad("thinking", "thinking must be true, false, {\"type\": \"enabled\"} or {\"type\": \"disabled\"}, got " + v->dump());
  }
  if (const json* kw = field(body, "chat_template_kwargs")) {
    if (!kw->is_object()) bad("chat_template_kwargs", "chat_template_kwargs must be an object, got " + kw->dump());
    if (const json* v = field(*kw, "thinking")) return get_bool(*v, "chat_template_kwargs.thinking");
  }
  const std::string m = lower(model);
  if (m == "deepseek-reasoner") return true;
  if (m == "deepseek-chat") return false;
  return default_thinking;
}

std::string message_text(const json& content, const std::string& name) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) bad(name, name + " must be a string or an array of text parts, got " + content.dump());
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const json& part = content[i];
    const std::string pname = name + "[" + std::to_string(i) + "]";
    const json* type = part.is_object() ? field(part, "type") : nullptr;
    if (!type || !type->is_string() || type->get<std::string>() != "text")
      bad(pname, pname + ": only {\"type\": \"text\", \"text\": ...} parts are supported");
    const json* t = field(part, "text");
    if (!t) bad(pname + ".text", pname + ".text is required");
    text += get_string(*t, pname + ".text");
  }
  return text;
}

std::vector<ChatMessage> parse_messages(const json& body) {
  const json* list = field(body, "messages");
  if (!list) bad("messages", "messages is required (an array of {\"role\", \"content\"} objects)");
  if (!list->is_array() || list->empty())
    bad("messages", "messages must be a non-empty array of {\"role\", \"content\"} objects");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < list->size(); ++i) {
    const json& m = (*list)[i];
    const std::string name = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) bad(name, name + " must be an object with role and content");
    const json* role = field(m, "role");
    if (!role) bad(name + ".role", name + ".role is required");
    ChatMessage msg;
    msg.role = get_string(*role, name + ".role");
    if (msg.role == "developer") msg.role = "system";  // OpenAI's newer name for it
    if (msg.role != "system" && msg.role != "user" && msg.role != "assistant")
      bad(name + ".role", name + ".role '" + msg.role + "' is not supported (system, user or assistant)");
    const json* content = field(m, "content");
    if (content) msg.content = message_text(*content, name + ".content");
    else if (msg.role != "assistant") bad(name + ".content", name + ".content is required");
    if (msg.role == "assistant")
      if (const json* r = field(m, "reasoning_content")) msg.reasoning = get_string(*r, name + ".reasoning_content");
    out.push_back(std::move(msg));
  }
  if (out.back().role != "user")
    bad("messages", "the last message must be the user's (role user), not " + out.back().role + "'s");
  return out;
}

}  // namespace

json error_body(const ApiError& e) {
  return {{"error",
           {{"message", e.what()},
            {"type", e.type()},
            {"param", e.param().empty() ? json(nullptr) : json(e.param())},
            {"code", e.code().empty() ? json(nullptr) : json(e.code())}}}};
}

json error_body(int status, const std::string& message, const std::string& param) {
  std::string type = "invalid_request_error";
  if (status == 404) type = "not_found_error";
  else if (status == 503) type = "service_unavailable";
  else if (status >= 500) type = "server_error";
  return error_body(ApiError(status, message, param, type));
}

CompletionRequest parse_chat_request(std::string_view text, const Limits& limits, bool default_thinking) {
  const json body = parse_object(text);
  CompletionRequest r;
  r.endpoint = Endpoint::kChat;
  r.messages = parse_messages(body);
  parse_common(body, limits, limits.max_tokens, r);
  r.thinking = parse_thinking(body, r.model, default_thinking);
  return r;
}

CompletionRequest parse_completion_request(std::string_view text, const Limits& limits) {
  const json body = parse_object(text);
  CompletionRequest r;
  r.endpoint = Endpoint::kCompletion;
  r.thinking = false;
  const json* prompt = field(body, "prompt");
  if (!prompt) bad("prompt", "prompt is required (a string, or an array of token ids)");
  if (prompt->is_string()) {
    r.prompt = prompt->get<std::string>();
  } else if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) {
    r.prompt = (*prompt)[0].get<std::string>();
  } else if (prompt->is_array() && !prompt->empty() && (*prompt)[0].is_number()) {
    for (size_t i = 0; i < prompt->size(); ++i) {
      const int64_t id = get_int((*prompt)[i], "prompt[" + std::to_string(i) + "]");
      if (id < 0 || id > std::numeric_limits<int32_t>::max())
        bad("prompt", "prompt[" + std::to_string(i) + "]: token id " + std::to_string(id) + " is out of range");
      r.prompt_ids.push_back(int32_t(id));
    }
  } else {
    bad("prompt", "prompt must be a string, a one-string array or a non-empty array of token ids");
  }
  parse_common(body, limits, limits.default_completion_tokens, r);
  return r;
}

std::vector<int32_t> encode_prompt(const CompletionRequest& r, const Tokenizer& tok) {
  if (r.endpoint == Endpoint::kChat) return encode_chat(tok, r.messages, r.thinking);
  if (!r.prompt_ids.empty()) {
    for (size_t i = 0; i < r.prompt_ids.size(); ++i)
      if (r.prompt_ids[i] >= tok.size())
        bad("prompt", "prompt[" + std::to_string(i) + "]: token id " + std::to_string(r.prompt_ids[i]) +
                          " is outside the vocabulary [0, " + std::to_string(tok.size()) + ")");
    return r.prompt_ids;
  }
  std::vector<int32_t> ids{tok.bos_id()};
  const std::vector<int32_t> body = tok.encode(r.prompt, /*parse_special=*/true);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

const char* finish_reason(StopReason reason) {
  switch (reason) {
    case StopReason::kEos:
    case StopReason::kStopString: return "stop";
    case StopReason::kMaxTokens:
    case StopReason::kContextFull: return "length";
    case StopReason::kCancelled: return "abort";
  }
  return "stop";
}

namespace {

json usage(int64_t prompt_tokens, int64_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

json envelope(const ResponseMeta& meta, const char* object) {
  return {{"id", meta.id}, {"object", object}, {"created", meta.created}, {"model", meta.model}};
}

}  // namespace

json chat_completion(const ResponseMeta& meta, bool thinking, const std::vector<GenerationResult>& results,
                     int64_t prompt_tokens) {
  json out = envelope(meta, "chat.completion");
  json choices = json::array();
  int64_t completion = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    // Not thinking: the whole turn is the answer, as the streamed form reports it.
    json message = {{"role", "assistant"}, {"content", results[i].text}};
    if (thinking) {
      const ReasoningSplit split = split_reasoning(results[i].text, true);
      message["content"] = split.answer;
      message["reasoning_content"] = split.reasoning;
    }
    choices.push_back({{"index", i},
                       {"message", std::move(message)},
                       {"logprobs", nullptr},
                       {"finish_reason", finish_reason(results[i].stats.stop)}});
    completion += int64_t(results[i].tokens.size());
  }
  out["choices"] = std::move(choices);
  out["usage"] = usage(prompt_tokens, completion);
  return out;
}

json text_completion(const ResponseMeta& meta, const std::vector<GenerationResult>& results, int64_t prompt_tokens) {
  json out = envelope(meta, "text_completion");
  json choices = json::array();
  int64_t completion = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    choices.push_back({{"index", i},
                       {"text", results[i].text},
                       {"logprobs", nullptr},
                       {"finish_reason", finish_reason(results[i].stats.stop)}});
    completion += int64_t(results[i].tokens.size());
  }
  out["choices"] = std::move(choices);
  out["usage"] = usage(prompt_tokens, completion);
  return out;
}

std::string sse_event(const json& payload) {
  // Invalid UTF-8 (never produced: the decoder holds partial characters back) would be
  // replaced rather than throw in the middle of a stream.
  return "data: " + payload.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

struct StreamEncoder::Choice {
  std::unique_ptr<ReasoningStream> reasoning;  // chat only
  bool finished = false;
};

StreamEncoder::StreamEncoder(ResponseMeta meta, Endpoint endpoint, bool thinking, int n, bool include_usage)
    : meta_(std::move(meta)), endpoint_(endpoint), thinking_(thinking && endpoint == Endpoint::kChat),
      include_usage_(include_usage) {
  for (int i = 0; i < n; ++i) {
    auto c = std::make_unique<Choice>();
    if (endpoint_ == Endpoint::kChat)
      c->reasoning = std::make_unique<ReasoningStream>(thinking_, [this, i](std::string_view text, bool is_reasoning) {
        if (text.empty()) return;
        json delta = {{is_reasoning ? "reasoning_content" : "content", std::string(text)}};
        out_ += sse_event(chunk(json::array({{{"index", i}, {"delta", std::move(delta)}, {"logprobs", nullptr},
                                              {"finish_reason", nullptr}}})));
      });
    choices_.push_back(std::move(c));
  }
}

StreamEncoder::~StreamEncoder() = default;

json StreamEncoder::chunk(json choices) const {
  json out = envelope(meta_, endpoint_ == Endpoint::kChat ? "chat.completion.chunk" : "text_completion");
  out["choices"] = std::move(choices);
  return out;
}

std::string StreamEncoder::begin() {
  if (endpoint_ != Endpoint::kChat) return {};
  std::string out;
  for (size_t i = 0; i < choices_.size(); ++i) {
    json delta = {{"role", "assistant"}, {"content", ""}};
    if (thinking_) delta["reasoning_content"] = "";
    out += sse_event(chunk(json::array({{{"index", i}, {"delta", std::move(delta)}, {"logprobs", nullptr},
                                          {"finish_reason", nullptr}}})));
  }
  return out;
}

std::string StreamEncoder::piece(int index, std::string_view text) {
  if (index < 0 || size_t(index) >= choices_.size() || choices_[size_t(index)]->finished || text.empty()) return {};
  out_.clear();
  if (endpoint_ == Endpoint::kChat) {
    choices_[size_t(index)]->reasoning->push(text);
  } else {
    out_ += sse_event(chunk(json::array({{{"index", index}, {"text", std::string(text)}, {"logprobs", nullptr},
                                          {"finish_reason", nullptr}}})));
  }
  return std::move(out_);
}

std::string StreamEncoder::finish(int index, StopReason reason, int64_t completion_tokens) {
  if (index < 0 || size_t(index) >= choices_.size() || choices_[size_t(index)]->finished) return {};
  Choice& c = *choices_[size_t(index)];
  c.finished = true;
  completion_tokens_ += completion_tokens;
  out_.clear();
  if (c.reasoning) c.reasoning->flush();
  json last = {{"index", index}, {"logprobs", nullptr}, {"finish_reason", finish_reason(reason)}};
  if (endpoint_ == Endpoint::kChat) last["delta"] = json::object();
  else last["text"] = "";
  out_ += sse_event(chunk(json::array({std::move(last)})));
  return std::move(out_);
}

std::string StreamEncoder::error(const ApiError& e) { return sse_event(error_body(e)); }

std::string StreamEncoder::end(int64_t prompt_tokens) {
  std::string out;
  if (include_usage_) {
    json last = chunk(json::array());
    last["usage"] = usage(prompt_tokens, completion_tokens_);
    out += sse_event(last);
  }
  out += kSseDone;
  return out;
}

}  // namespace hearth::openai

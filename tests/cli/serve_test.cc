// hearth serve end to end: the built binary serving the tiny synthetic model over
// loopback, driven by a real HTTP client. Answers are checked against the engine's
// one-sequence Generator on the same model, prompt, sampling and seed.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <latch>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "engine/chat_template.h"
#include "engine/generator.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "support/scratch.h"
#include "support/spawn.h"
#include "support/sse.h"
#include "support/tiny_chat_model.h"

namespace cli_serve_suite {


namespace {

using json = nlohmann::json;
using hearth::GenerationResult;
using hearth::StopReason;
using Clock = std::chrono::steady_clock;

constexpr int64_t kCtx = 4096;

// `hearth serve` on the tiny model, started with --port 0 in a child process; stopped
// with SIGTERM (and expected to exit 0) by stop(), killed by the destructor otherwise.
class ServeProcess {
 public:
  explicit ServeProcess(const std::vector<std::string>& extra = {}) {
    ::signal(SIGPIPE, SIG_IGN);  // our client writing to a server that hung up
    log_ = dir_.path / "stderr";
    std::vector<std::string> args = {HEARTH_CLI_BIN, "serve",  "-m",    hearth::testing::tiny_chat_model_dir().string(),
                                     "--port",       "0",      "-t",    "1",
                                     "--ctx",        std::to_string(kCtx)};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = hearth::testing::spawn_with_stderr(args, log_);
    // The port is on stderr once the server listens.
    const std::string marker = "listening on http://127.0.0.1:";
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (port_ == 0) {
      const std::string text = log();
      if (const size_t at = text.find(marker); at != std::string::npos && text.find('\n', at) != std::string::npos)
        port_ = std::stoi(text.substr(at + marker.size()));
      else if (int status; ::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = 0;
        FAIL("hearth serve exited before listening: ", text);
      } else if (Clock::now() > deadline) {
        FAIL("hearth serve did not listen within 60 s: ", text);
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  }
  ~ServeProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  // Sends `sig` and returns the exit code (-1: still running after 20 s, then killed).
  int stop(int sig = SIGTERM) {
    ::kill(pid_, sig);
    const auto deadline = Clock::now() + std::chrono::seconds(20);
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) != pid_) {
      if (Clock::now() > deadline) return -1;  // the destructor kills it
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    pid_ = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  int port() const { return port_; }
  std::string log() const { return hearth::testing::slurp(log_); }
  std::unique_ptr<httplib::Client> client() const {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", port_);
    c->set_read_timeout(60);
    return c;
  }
  json health() const {
    auto r = client()->Get("/health");
    REQUIRE(r);
    REQUIRE(r->status == 200);
    return json::parse(r->body);
  }
  // Waits until `pred(health)` holds; returns the last health seen.
  template <typename Pred>
  json wait_health(Pred pred, double seconds = 10) const {
    const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    json h = health();
    while (!pred(h) && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      h = health();
    }
    return h;
  }

 private:
  hearth::testing::TempDir dir_{"hearth-serve"};
  std::filesystem::path log_;
  pid_t pid_ = 0;
  int port_ = 0;
};

// The same model in this process, generating one sequence at a time.
struct Reference {
  hearth::Tokenizer tok;
  hearth::Model model;
  hearth::Generator gen;
  Reference()
      : tok(hearth::Tokenizer::load(hearth::testing::tiny_chat_model_dir() / "tokenizer.json")),
        model(hearth::Model::load(hearth::testing::tiny_chat_model_dir().string())),
        gen(model, tok, hearth::GeneratorOptions{1, kCtx}) {}

  std::vector<int32_t> chat(const std::string& user, bool thinking) {
    return hearth::encode_chat(tok, {{"user", user, ""}}, thinking);
  }
  std::vector<int32_t> raw(const std::string& prompt) {
    std::vector<int32_t> ids{tok.bos_id()};
    for (int32_t id : tok.encode(prompt, true)) ids.push_back(id);
    return ids;
  }
  GenerationResult run(const std::vector<int32_t>& ids, double temperature, uint64_t seed, int64_t max_tokens,
                       std::vector<std::string> stop = {}) {
    hearth::GenerateRequest r;
    r.sampling.temperature = temperature;
    r.sampling.top_p = 1.0;  // OpenAI's default, which the server uses
    r.sampling.seed = seed;
    r.max_tokens = max_tokens;
    r.stop = std::move(stop);
    gen.reset();
    return gen.generate(ids, r);
  }
};

std::string finish_of(StopReason s) {
  return s == StopReason::kEos || s == StopReason::kStopString ? "stop" : "length";
}

struct Reply {
  int status = -1;  // -1: no HTTP response
  json body;
};

Reply post(httplib::Client& c, const std::string& path, const std::string& body) {
  const auto r = c.Post(path.c_str(), body, "application/json");
  if (!r) return Reply{-1, httplib::to_string(r.error())};  // the body says why
  Reply out{r->status, json()};
  out.body = json::parse(r->body, nullptr, /*allow_exceptions=*/false);
  return out;
}

struct Streamed {
  int status = -1;
  std::string wire;  // the response body as received
};

// A streamed POST; `keep_going(wire so far)` returning false hangs up mid-response.
Streamed post_stream(httplib::Client& c, const std::string& path, const json& body,
                     const std::function<bool(const std::string&)>& keep_going = {}) {
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  Streamed s;
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    s.wire.append(data, n);
    return !keep_going || keep_going(s.wire);
  };
  const auto r = c.send(req);
  if (r) s.status = r->status;
  return s;
}

// One choice of a reply, streamed or not.
struct Choice {
  std::string reasoning, content, finish;
  bool has_reasoning = false;
};

std::map<int, Choice> choices_of(const json& reply) {
  std::map<int, Choice> out;
  for (const json& c : reply["choices"]) {
    Choice& o = out[c["index"].get<int>()];
    if (c.contains("message")) {
      o.content = c["message"]["content"].get<std::string>();
      o.has_reasoning = c["message"].contains("reasoning_content");
      if (o.has_reasoning) o.reasoning = c["message"]["reasoning_content"].get<std::string>();
    } else {
      o.content = c["text"].get<std::string>();
    }
    o.finish = c["finish_reason"].get<std::string>();
  }
  return out;
}

// Assembles a streamed reply the way a client does, checking the event grammar on the way:
// every chunk is well formed, each chat choice starts with its role, nothing follows a
// choice's finish_reason, and the stream ends with [DONE].
struct Assembled {
  std::map<int, Choice> choices;
  json usage;
  bool done = false;
};

Assembled assemble(const std::string& wire, bool chat) {
  Assembled a;
  const auto sse = hearth::testing::parse_sse(wire);
  CHECK(sse.complete);
  std::map<int, int> chunks;
  for (size_t k = 0; k < sse.data.size(); ++k) {
    if (sse.data[k] == "[DONE]") {
      CHECK(k + 1 == sse.data.size());
      a.done = true;
      continue;
    }
    const json c = json::parse(sse.data[k]);
    CHECK(c["object"] == (chat ? "chat.completion.chunk" : "text_completion"));
    if (c.contains("usage")) {
      a.usage = c["usage"];
      continue;
    }
    for (const json& ch : c["choices"]) {
      const int i = ch["index"].get<int>();
      Choice& o = a.choices[i];
      CHECK(o.finish.empty());  // nothing after finish_reason
      if (chat) {
        const json& d = ch["delta"];
        if (chunks[i] == 0) CHECK(d["role"] == "assistant");
        if (d.contains("reasoning_content")) {
          o.has_reasoning = true;
          o.reasoning += d["reasoning_content"].get<std::string>();
        }
        if (d.contains("content")) o.content += d["content"].get<std::string>();
      } else {
        o.content += ch["text"].get<std::string>();
      }
      ++chunks[i];
      if (!ch["finish_reason"].is_null()) o.finish = ch["finish_reason"].get<std::string>();
    }
  }
  return a;
}

// The reply the reference predicts for a chat turn.
Choice expected_chat(const GenerationResult& g, bool thinking) {
  const hearth::ReasoningSplit s = hearth::split_reasoning(g.text, thinking);
  return Choice{s.reasoning, s.answer, finish_of(g.stats.stop), thinking};
}

void check_choice(const Choice& got, const Choice& want) {
  CHECK(got.reasoning == want.reasoning);
  CHECK(got.content == want.content);
  CHECK(got.finish == want.finish);
  CHECK(got.has_reasoning == want.has_reasoning);
}

json chat_body(const std::string& user, double temperature, uint64_t seed, int64_t max_tokens) {
  return {{"model", "tiny"},
          {"messages", {{{"role", "user"}, {"content", user}}}},
          {"temperature", temperature},
          {"seed", seed},
          {"max_tokens", max_tokens}};
}

// A stop string taken from the middle of `text` (two whole UTF-8 characters).
std::string stop_string_inside(const std::string& text) {
  auto is_lead = [&](size_t i) { return (static_cast<unsigned char>(text[i]) & 0xC0) != 0x80; };
  size_t a = text.size() / 2;
  while (a < text.size() && !is_lead(a)) ++a;
  size_t b = a + 1, chars = 0;
  while (b < text.size() && (!is_lead(b) || ++chars < 2)) ++b;
  return text.substr(a, b - a);
}

}  // namespace

TEST_CASE("serve: chat replies streamed and not equal the one-sequence generator") {
  ServeProcess server({"--parallel", "4"});
  Reference ref;
  auto c = server.client();

  const json h = server.health();
  CHECK(h["status"] == "ok");
  auto models = c->Get("/v1/models");
  REQUIRE(models);
  CHECK(models->status == 200);
  const std::string id = hearth::testing::tiny_chat_model_dir().filename().string();
  CHECK(json::parse(models->body) ==
        json::parse(R"({"object":"list","data":[{"id":")" + id + R"(","object":"model","owned_by":"hearth","created":)" +
                    std::to_string(json::parse(models->body)["data"][0]["created"].get<int64_t>()) + "}]}"));

  const std::string question = "What is the sum of the first ten primes?";
  const std::vector<int32_t> prompt = ref.chat(question, true);
  const GenerationResult want = ref.run(prompt, 0.0, 0, 12);

  // Not streamed, thinking mode (the server's default).
  const Reply r = post(*c, "/v1/chat/completions", chat_body(question, 0.0, 99, 12).dump());
  REQUIRE(r.status == 200);
  CHECK(r.body["object"] == "chat.completion");
  CHECK(r.body["model"] == id);
  CHECK(r.body["id"].get<std::string>().starts_with("chatcmpl-"));
  CHECK(r.body["usage"]["prompt_tokens"] == prompt.size());
  CHECK(r.body["usage"]["completion_tokens"] == want.tokens.size());
  CHECK(r.body["usage"]["total_tokens"] == prompt.size() + want.tokens.size());
  REQUIRE(r.body["choices"].size() == 1);
  CHECK(r.body["choices"][0]["message"]["role"] == "assistant");
  check_choice(choices_of(r.body)[0], expected_chat(want, true));

  // Streamed, with the usage chunk.
  json body = chat_body(question, 0.0, 7, 12);
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  const Streamed s = post_stream(*c, "/v1/chat/completions", body);
  REQUIRE(s.status == 200);
  const Assembled a = assemble(s.wire, true);
  CHECK(a.done);
  REQUIRE(a.choices.size() == 1);
  check_choice(a.choices.at(0), expected_chat(want, true));
  CHECK(a.usage["prompt_tokens"] == prompt.size());
  CHECK(a.usage["completion_tokens"] == want.tokens.size());

  // Non-thinking mode, chosen by DeepSeek's model name: the whole turn is content.
  const GenerationResult plain = ref.run(ref.chat(question, false), 0.0, 0, 10);
  json nt = chat_body(question, 0.0, 1, 10);
  nt["model"] = "deepseek-chat";
  const Reply rn = post(*c, "/v1/chat/completions", nt.dump());
  REQUIRE(rn.status == 200);
  check_choice(choices_of(rn.body)[0], expected_chat(plain, false));
  CHECK_FALSE(rn.body["choices"][0]["message"].contains("reasoning_content"));

  // A stop string from the middle of that answer ends it there, finish_reason "stop".
  const std::string stop = stop_string_inside(plain.text);
  REQUIRE(!stop.empty());
  nt["stop"] = stop;
  const Reply rs = post(*c, "/v1/chat/completions", nt.dump());
  REQUIRE(rs.status == 200);
  CHECK(rs.body["choices"][0]["message"]["content"] == plain.text.substr(0, plain.text.find(stop)));
  CHECK(rs.body["choices"][0]["finish_reason"] == "stop");

  CHECK(server.stop() == 0);
}

TEST_CASE("serve: completions and n choices use seeds seed+i like the generator") {
  ServeProcess server({"--parallel", "4"});
  Reference ref;
  auto c = server.client();
  const std::string prompt = "The proof begins with";
  const std::vector<int32_t> ids = ref.raw(prompt);
  std::vector<GenerationResult> want;
  for (uint64_t i = 0; i < 3; ++i) want.push_back(ref.run(ids, 1.0, 1234 + i, 8));
  CHECK(want[0].text != want[1].text);  // the samples differ: a real test of the seeds

  const json body = {{"prompt", prompt}, {"n", 3}, {"temperature", 1.0}, {"seed", 1234}, {"max_tokens", 8}};
  const Reply r = post(*c, "/v1/completions", body.dump());
  REQUIRE(r.status == 200);
  CHECK(r.body["object"] == "text_completion");
  CHECK(r.body["id"].get<std::string>().starts_with("cmpl-"));
  auto got = choices_of(r.body);
  REQUIRE(got.size() == 3);
  int64_t tokens = 0;
  for (int i = 0; i < 3; ++i) {
    CHECK(got[i].content == want[size_t(i)].text);
    CHECK(got[i].finish == finish_of(want[size_t(i)].stats.stop));
    tokens += int64_t(want[size_t(i)].tokens.size());
  }
  CHECK(r.body["usage"]["prompt_tokens"] == ids.size());
  CHECK(r.body["usage"]["completion_tokens"] == tokens);

  json sb = body;
  sb["stream"] = true;
  const Assembled a = assemble(post_stream(*c, "/v1/completions", sb).wire, false);
  CHECK(a.done);
  REQUIRE(a.choices.size() == 3);
  for (int i = 0; i < 3; ++i) CHECK(a.choices.at(i).content == want[size_t(i)].text);

  // Streamed chat with n = 2.
  const std::vector<int32_t> chat_ids = ref.chat("Prove that there are infinitely many primes.", true);
  json cb = chat_body("Prove that there are infinitely many primes.", 1.0, 77, 6);
  cb["n"] = 2;
  cb["stream"] = true;
  const Assembled ac = assemble(post_stream(*c, "/v1/chat/completions", cb).wire, true);
  CHECK(ac.done);
  REQUIRE(ac.choices.size() == 2);
  for (int i = 0; i < 2; ++i) check_choice(ac.choices.at(i), expected_chat(ref.run(chat_ids, 1.0, 77 + uint64_t(i), 6), true));

  CHECK(server.stop() == 0);
}

TEST_CASE("serve: 16 concurrent clients get the answers each gets alone") {
  ServeProcess server({"--parallel", "16"});
  constexpr int kClients = 16;
  // 16 tokens each, so the requests overlap in the server even when the clients' threads
  // start unevenly on a loaded 2-core machine (the check at the end wants batched steps).
  auto request = [](int k) {
    json b = chat_body("Question " + std::to_string(k % 5) + ": what is " + std::to_string(k) + " squared?", 1.0,
                       uint64_t(500 + k), 16);
    b["stream"] = k % 2 == 0;
    return b;
  };
  // A request's choice, or nullopt with why in `why`.
  auto answer = [&](httplib::Client& c, int k, std::string& why) -> std::optional<Choice> {
    const json b = request(k);
    if (b["stream"].get<bool>()) {
      const Streamed s = post_stream(c, "/v1/chat/completions", b);
      if (s.status != 200) {
        why = "streamed request: HTTP status " + std::to_string(s.status) + ", body " + s.wire;
        return std::nullopt;
      }
      Assembled a = assemble(s.wire, true);
      if (!a.done || a.choices.size() != 1) {
        why = "streamed request: incomplete stream " + s.wire;
        return std::nullopt;
      }
      return a.choices[0];
    }
    const Reply r = post(c, "/v1/chat/completions", b.dump());
    if (r.status != 200) {
      why = "request: HTTP status " + std::to_string(r.status) + " (-1: no response), body " + r.body.dump();
      return std::nullopt;
    }
    return choices_of(r.body)[0];
  };

  // One client, one request at a time.
  std::vector<Choice> alone;
  {
    auto c = server.client();
    for (int k = 0; k < kClients; ++k) {
      std::string why;
      const auto a = answer(*c, k, why);
      INFO(why);
      REQUIRE(a);
      CHECK(!a->finish.empty());
      alone.push_back(*a);
    }
  }
  // All at once.
  const json before = server.health();
  std::vector<std::optional<Choice>> together(kClients);
  std::vector<std::string> why(kClients);
  std::vector<std::thread> threads;
  std::latch start(kClients);  // every client thread ready before any sends
  for (int k = 0; k < kClients; ++k)
    threads.emplace_back([&, k] {
      auto c = server.client();
      start.arrive_and_wait();
      together[size_t(k)] = answer(*c, k, why[size_t(k)]);
    });
  for (auto& t : threads) t.join();
  for (int k = 0; k < kClients; ++k) {
    CAPTURE(k);
    INFO(why[size_t(k)]);
    if (!together[size_t(k)]) MESSAGE("server log:\n" << server.log());
    REQUIRE(together[size_t(k)]);
    check_choice(*together[size_t(k)], alone[size_t(k)]);
  }
  // A handler counts itself done just after its reply's last byte is sent, so a client can
  // have its answer a moment before active_requests drops: wait for that too.
  const json h = server.wait_health(
      [](const json& h) { return h["running"] == 0 && h["queued"] == 0 && h["active_requests"] == 0; });
  CHECK(h["running"] == 0);
  CHECK(h["queued"] == 0);
  CHECK(h["active_requests"] == 0);
  CHECK(h["finished"] == 2 * kClients);
  CHECK(h["cancelled_samples"] == 0);
  // They were batched: some steps decoded several sequences.
  CHECK(h["steps"].get<int64_t>() - before["steps"].get<int64_t>() <
        h["decoded_tokens"].get<int64_t>() - before["decoded_tokens"].get<int64_t>());
  CHECK(server.stop() == 0);
}

TEST_CASE("serve: a client that hangs up has its sequence cancelled") {
  ServeProcess server({"--parallel", "4"});
  constexpr int64_t kLong = 3000;  // far more tokens than the test waits for

  // Streamed: hang up after the first pieces of reasoning.
  {
    json b = chat_body("Write a very long proof.", 1.0, 5, kLong);
    b["stream"] = true;
    auto c = server.client();
    const Streamed s = post_stream(*c, "/v1/chat/completions", b, [](const std::string& wire) {
      return hearth::testing::parse_sse(wire).data.size() < 4;
    });
    CHECK(s.status == -1);  // we cancelled the read
    CHECK(hearth::testing::parse_sse(s.wire).data.size() >= 4);
  }
  json h = server.wait_health([](const json& h) {
    return h["cancelled_samples"] == 1 && h["running"] == 0 && h["queued"] == 0 && h["active_requests"] == 0;
  });
  CHECK(h["cancelled_samples"] == 1);
  CHECK(h["disconnects"] == 1);
  CHECK(h["running"] == 0);
  CHECK(h["queued"] == 0);
  CHECK(h["decoded_tokens"].get<int64_t>() < kLong);  // it did not run to its end

  // Not streamed: the client gives up waiting.
  {
    auto c = server.client();
    c->set_read_timeout(0, 300 * 1000);
    const Reply r = post(*c, "/v1/chat/completions", chat_body("Another long proof.", 1.0, 6, kLong).dump());
    CHECK(r.status == -1);
  }
  h = server.wait_health([](const json& h) {
    return h["cancelled_samples"] == 2 && h["running"] == 0 && h["queued"] == 0 && h["active_requests"] == 0;
  });
  CHECK(h["cancelled_samples"] == 2);
  CHECK(h["disconnects"] == 2);
  CHECK(h["running"] == 0);
  CHECK(h["queued"] == 0);
  CHECK(h["decoded_tokens"].get<int64_t>() < 2 * kLong);

  // The server is still fine.
  const Reply ok = post(*server.client(), "/v1/chat/completions", chat_body("Hi", 0.0, 0, 2).dump());
  CHECK(ok.status == 200);
  CHECK(server.stop() == 0);
}

TEST_CASE("serve: bad requests get HTTP errors with OpenAI error bodies") {
  ServeProcess server({"--max-body", "65536", "--max-tokens-limit", "64", "--ctx", "256"});
  auto c = server.client();
  auto check_error = [](const httplib::Result& r, int status, const std::string& part, const std::string& param = "") {
    REQUIRE(r);
    CHECK(r->status == status);
    const json e = json::parse(r->body, nullptr, false);
    REQUIRE(e.is_object());
    CHECK_MESSAGE(e["error"]["message"].get<std::string>().find(part) != std::string::npos, r->body);
    CHECK(e["error"].contains("type"));
    if (!param.empty()) CHECK(e["error"]["param"] == param);
  };
  check_error(c->Post("/v1/chat/completions", "{\"messages\": [", "application/json"), 400, "not valid JSON");
  check_error(c->Post("/v1/completions", "\"just a string\"", "application/json"), 400, "must be a JSON object");
  check_error(c->Post("/v1/chat/completions", chat_body("hi", 0, 0, 65).dump(), "application/json"), 400,
              "above this server's limit of 64", "max_tokens");
  json b = chat_body("hi", 0, 0, 4);
  b["temperature"] = "warm";
  check_error(c->Post("/v1/chat/completions", b.dump(), "application/json"), 400, "temperature must be a number",
              "temperature");
  b = chat_body("hi", 0, 0, 4);
  b["n"] = 1000;
  check_error(c->Post("/v1/chat/completions", b.dump(), "application/json"), 400, "n must be between", "n");
  check_error(c->Post("/v1/chat/completions", R"({"messages":[{"role":"user"}]})", "application/json"), 400,
              "messages[0].content is required", "messages[0].content");
  // Larger than --max-body.
  const std::string huge = chat_body(std::string(100000, 'a'), 0, 0, 4).dump();
  check_error(c->Post("/v1/chat/completions", huge, "application/json"), 413, "limit of 65536 bytes");
  // Fits the body limit but not the 256-token context.
  std::string words;
  for (int i = 0; i < 400; ++i) words += " word" + std::to_string(i);
  check_error(c->Post("/v1/chat/completions", chat_body(words, 0, 0, 4).dump(), "application/json"), 400, "context",
              "messages");
  // Routes and methods.
  check_error(c->Get("/v1/nothing"), 404, "no route GET /v1/nothing");
  const auto wrong = c->Get("/v1/chat/completions");
  check_error(wrong, 405, "method GET is not allowed");
  CHECK(wrong->get_header_value("Allow") == "POST");
  check_error(c->Post("/health", "{}", "application/json"), 405, "use GET");
  check_error(c->Get("/v1/models/other"), 404, "does not exist", "model");

  // The server still serves after all that.
  const Reply ok = post(*c, "/v1/chat/completions", chat_body("hi", 0, 0, 3).dump());
  CHECK(ok.status == 200);
  CHECK(server.stop() == 0);
}

TEST_CASE("serve: SIGTERM during a stream stops the server with exit code 0") {
  ServeProcess server;
  std::atomic<bool> streaming{false};
  Streamed s;
  std::thread client([&] {
    json b = chat_body("A long answer please.", 1.0, 3, 3000);
    b["stream"] = true;
    auto c = server.client();
    s = post_stream(*c, "/v1/chat/completions", b, [&](const std::string& wire) {
      if (hearth::testing::parse_sse(wire).data.size() >= 3) streaming = true;
      return true;
    });
    streaming = true;  // also when the request failed: never leave the test waiting
  });
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (!streaming && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(streaming);
  CHECK(server.stop(SIGTERM) == 0);
  client.join();
  CHECK(server.log().find("terminated, stopping") != std::string::npos);
  // The stream was ended properly: its choice aborted, then [DONE].
  CHECK(s.status == 200);
  const Assembled a = assemble(s.wire, true);
  CHECK(a.done);
  REQUIRE(a.choices.size() == 1);
  CHECK(a.choices.at(0).finish == "abort");
  CHECK(!a.choices.at(0).reasoning.empty());
}

TEST_CASE("serve: bad flags and a taken port fail with one line") {
  const std::string model = hearth::testing::tiny_chat_model_dir().string();
  auto r = hearth::testing::run_hearth("serve --port 0");
  CHECK(r.code != 0);
  CHECK(r.err.find("--model is required") != std::string::npos);
  r = hearth::testing::run_hearth("serve -m '" + model + "' --port 70000");
  CHECK(r.code != 0);
  CHECK(r.err.find("--port: must be between 0 and 65535") != std::string::npos);
  r = hearth::testing::run_hearth("serve -m '" + model + "' --parallel 0");
  CHECK(r.code != 0);
  CHECK(r.err.find("--parallel") != std::string::npos);
  ServeProcess server;
  r = hearth::testing::run_hearth("serve -m '" + model + "' -t 1 --port " + std::to_string(server.port()));
  CHECK(r.code != 0);
  CHECK(r.err.find("cannot listen on 127.0.0.1:" + std::to_string(server.port())) != std::string::npos);
  CHECK(server.stop() == 0);
}

}  // namespace cli_serve_suite

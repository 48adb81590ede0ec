#include "cli/http_server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <httplib.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>

namespace hearth::cli {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using openai::ApiError;
using openai::Endpoint;

constexpr auto kPollInterval = std::chrono::milliseconds(100);  // how often a waiting request checks its client
constexpr auto kKeepAliveEvery = std::chrono::seconds(2);        // an SSE comment while a stream has nothing to say
constexpr auto kDrainWait = std::chrono::seconds(2);             // shutdown's wait for cancelled requests to end

int port_of(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
  if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
  return -1;
}

// The socket the request came on. httplib 0.11 does not hand it to handlers, so it is
// found among the process's descriptors by the connection's address pair; -1 if none.
int connection_fd(const httplib::Request& req) {
  DIR* dir = ::opendir("/proc/self/fd");
  if (!dir) return -1;
  int found = -1;
  while (const dirent* e = ::readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == ::dirfd(dir)) continue;
    sockaddr_storage local{}, peer{};
    socklen_t local_len = sizeof local, peer_len = sizeof peer;
    if (::getsockname(int(fd), reinterpret_cast<sockaddr*>(&local), &local_len) != 0) continue;
    if (local.ss_family != AF_INET && local.ss_family != AF_INET6) continue;
    if (req.local_port >= 0 && port_of(local) != req.local_port) continue;
    if (::getpeername(int(fd), reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) continue;
    if (port_of(peer) != req.remote_port) continue;
    char host[NI_MAXHOST];
    if (::getnameinfo(reinterpret_cast<sockaddr*>(&peer), peer_len, host, sizeof host, nullptr, 0, NI_NUMERICHOST) != 0)
      continue;
    if (req.remote_addr == host) {
      found = int(fd);
      break;
    }
  }
  ::closedir(dir);
  return found;
}

// Whether the client has closed its end of the connection (or it broke).
bool client_gone(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

std::string random_hex(size_t digits) {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard lk(mu);
  std::string s;
  while (s.size() < digits) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
    s += buf;
  }
  s.resize(digits);
  return s;
}

uint64_t random_seed() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard lk(mu);
  return rng();
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status();
  res.set_content(openai::error_body(e).dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

// What the scheduler's thread hands to the request's HTTP worker.
struct Event {
  RequestId id = 0;
  std::string text;  // a token's text (streamed requests only)
  bool done = false;
  GenerationResult result;  // when done
  std::string error;        // when done and failed
};

// One HTTP request's samples in the scheduler.
struct Exchange {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<RequestId> ids;  // sample order, once submit() has returned
  std::deque<Event> events;
  int pending = 0;             // samples not finished
  bool keep_text = false;      // queue token texts (streaming)

  int index_of(RequestId id) const {
    for (size_t i = 0; i < ids.size(); ++i)
      if (ids[i] == id) return int(i);
    return -1;
  }
};

// Counters outlive the server: a cancelled sample may end after the server is gone.
struct Counters {
  std::atomic<int64_t> requests{0}, active{0}, cancelled_samples{0}, disconnects{0};
};

// A streamed response's state between calls of its content provider.
struct Stream {
  std::shared_ptr<Exchange> ex;
  std::unique_ptr<openai::StreamEncoder> encoder;
  int fd = -1;
  int n = 0, finished = 0;
  int64_t prompt_tokens = 0;
  bool begun = false;
  std::vector<std::string> emitted;  // per sample: text already streamed
  Clock::time_point last_write;
};

}  // namespace

struct OpenAiServer::Impl {
  BatchScheduler& scheduler;
  ServeOptions options;
  httplib::Server http;
  int64_t started = std::time(nullptr);
  std::shared_ptr<Counters> counters = std::make_shared<Counters>();
  std::mutex mu;
  std::condition_variable drained;  // `active` lost a member
  std::set<std::shared_ptr<Exchange>> active;
  bool stopping = false;
  int listen_fd = -1;  // the listening socket, as httplib's socket-options hook saw it

  Impl(BatchScheduler& s, ServeOptions o) : scheduler(s), options(std::move(o)) {}

  void routes();
  void complete(const httplib::Request& req, httplib::Response& res, Endpoint endpoint);
  std::shared_ptr<Exchange> submit(std::vector<int32_t> prompt, const openai::CompletionRequest& r);
  void cancel(Exchange& ex);
  void release(const std::shared_ptr<Exchange>& ex);
  bool pump(Stream& s, httplib::DataSink& sink);
  json health() const;
  json model_object() const {
    return {{"id", options.model_id}, {"object", "model"}, {"created", started}, {"owned_by", "hearth"}};
  }
};

std::shared_ptr<Exchange> OpenAiServer::Impl::submit(std::vector<int32_t> prompt, const openai::CompletionRequest& r) {
  auto ex = std::make_shared<Exchange>();
  ex->pending = r.n;
  ex->keep_text = r.stream;
  {
    std::lock_guard lk(mu);
    if (stopping) throw ApiError(503, "the server is shutting down", "", "service_unavailable");
    active.insert(ex);
  }
  RequestCallbacks cb;
  cb.on_token = [ex](RequestId id, int32_t, std::string_view text) {
    if (!ex->keep_text || text.empty()) return;
    std::lock_guard lk(ex->mu);
    Event e;
    e.id = id;
    e.text = std::string(text);
    ex->events.push_back(std::move(e));
    ex->cv.notify_all();
  };
  cb.on_done = [ex, counters = counters](RequestId id, const GenerationResult& result, const std::string& error) {
    if (result.stats.stop == StopReason::kCancelled) ++counters->cancelled_samples;
    std::lock_guard lk(ex->mu);
    Event e;
    e.id = id;
    e.done = true;
    e.result = result;
    e.error = error;
    ex->events.push_back(std::move(e));
    --ex->pending;
    ex->cv.notify_all();
  };
  GenerateRequest gen = r.generate;
  if (!r.seed_given) gen.sampling.seed = random_seed();
  std::vector<RequestId> ids;
  try {
    ids = scheduler.submit(std::move(prompt), gen, r.n, std::move(cb));
  } catch (const std::invalid_argument& e) {  // a prompt too long for the context, and such
    release(ex);
    throw ApiError(400, e.what(), r.endpoint == Endpoint::kChat ? "messages" : "prompt");
  } catch (...) {
    release(ex);
    throw;
  }
  {
    std::lock_guard lk(ex->mu);
    ex->ids = std::move(ids);
  }
  bool late;
  {
    std::lock_guard lk(mu);
    late = stopping;  // shutdown() ran while we submitted: it could not see our ids
  }
  if (late) cancel(*ex);
  return ex;
}

void OpenAiServer::Impl::cancel(Exchange& ex) {
  std::vector<RequestId> ids;
  {
    std::lock_guard lk(ex.mu);
    if (ex.pending == 0) return;
    ids = ex.ids;
  }
  // Outside our locks: the scheduler may be inside a callback that takes ex.mu.
  for (RequestId id : ids) scheduler.cancel(id);
}

void OpenAiServer::Impl::release(const std::shared_ptr<Exchange>& ex) {
  std::lock_guard lk(mu);
  active.erase(ex);
  drained.notify_all();
}

void OpenAiServer::Impl::complete(const httplib::Request& req, httplib::Response& res, Endpoint endpoint) {
  ++counters->requests;
  ++counters->active;
  struct Active {  // a streamed response stays active after the handler returns
    Counters& c;
    bool armed = true;
    ~Active() {
      if (armed) --c.active;
    }
  } active_guard{*counters};
  try {
    const openai::CompletionRequest r = endpoint == Endpoint::kChat
                                            ? openai::parse_chat_request(req.body, options.limits, options.default_thinking)
                                            : openai::parse_completion_request(req.body, options.limits);
    std::vector<int32_t> prompt = openai::encode_prompt(r, scheduler.tokenizer());
    const int64_t prompt_tokens = int64_t(prompt.size());
    const openai::ResponseMeta meta{(endpoint == Endpoint::kChat ? "chatcmpl-" : "cmpl-") + random_hex(24),
                                    int64_t(std::time(nullptr)), options.model_id};
    std::shared_ptr<Exchange> ex = submit(std::move(prompt), r);

    if (r.stream) {
      auto s = std::make_shared<Stream>();
      s->ex = ex;
      s->encoder = std::make_unique<openai::StreamEncoder>(meta, endpoint, r.thinking, r.n, r.include_usage);
      s->fd = connection_fd(req);
      s->n = r.n;
      s->prompt_tokens = prompt_tokens;
      s->emitted.resize(size_t(r.n));
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider(
          "text/event-stream", [this, s](size_t, httplib::DataSink& sink) { return pump(*s, sink); },
          [this, s, counters = counters](bool) {
            cancel(*s->ex);  // the client went away, or the server stopped: free the samples
            release(s->ex);
            --counters->active;
          });
      active_guard.armed = false;
      return;
    }

    // Not streamed: wait for every sample, watching for a client that gives up.
    const int fd = connection_fd(req);
    std::vector<GenerationResult> results(size_t(r.n));
    std::string error;
    bool gone = false;
    {
      std::unique_lock lk(ex->mu);
      while (ex->pending > 0) {
        ex->cv.wait_for(lk, kPollInterval);
        if (ex->pending > 0 && !gone && client_gone(fd)) {
          gone = true;
          ++counters->disconnects;
          lk.unlock();
          cancel(*ex);
          lk.lock();
        }
      }
      for (Event& e : ex->events) {
        const int i = ex->index_of(e.id);
        if (!e.done || i < 0) continue;
        results[size_t(i)] = std::move(e.result);
        if (!e.error.empty() && error.empty()) error = e.error;
      }
    }
    release(ex);
    if (!error.empty()) throw ApiError(500, "generation failed: " + error, "", "server_error");
    for (const GenerationResult& g : results)
      if (g.stats.stop == StopReason::kCancelled && !gone)
        throw ApiError(503, "the request was cancelled: the server is shutting down", "", "service_unavailable");
    const json body = endpoint == Endpoint::kChat ? openai::chat_completion(meta, r.thinking, results, prompt_tokens)
                                                  : openai::text_completion(meta, results, prompt_tokens);
    res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
  } catch (const ApiError& e) {
    send_error(res, e);
  } catch (const std::exception& e) {
    send_error(res, ApiError(500, e.what(), "", "server_error"));
  }
}

// One call of a streamed response's content provider: wait a little for the samples'
// events and write them. Returns false to end the response early (the client is gone).
bool OpenAiServer::Impl::pump(Stream& s, httplib::DataSink& sink) {
  std::string out;
  if (!s.begun) {
    s.begun = true;
    s.last_write = Clock::now();
    out = s.encoder->begin();
  }
  std::deque<Event> events;
  {
    std::unique_lock lk(s.ex->mu);
    if (out.empty()) s.ex->cv.wait_for(lk, kPollInterval, [&] { return !s.ex->events.empty(); });
    events.swap(s.ex->events);
  }
  for (Event& e : events) {
    const int i = s.ex->index_of(e.id);  // ids are set: the stream starts after submit()
    if (i < 0) continue;
    std::string& emitted = s.emitted[size_t(i)];
    if (!e.done) {
      emitted += e.text;
      out += s.encoder->piece(i, e.text);
      continue;
    }
    // Text the scheduler held back and never handed to on_token (it ends the result).
    const std::string& text = e.result.text;
    if (text.size() > emitted.size() && std::string_view(text).starts_with(emitted))
      out += s.encoder->piece(i, std::string_view(text).substr(emitted.size()));
    if (!e.error.empty()) out += s.encoder->error(ApiError(500, "generation failed: " + e.error, "", "server_error"));
    out += s.encoder->finish(i, e.result.stats.stop, int64_t(e.result.tokens.size()));
    ++s.finished;
  }
  const bool all_done = s.finished == s.n;
  if (all_done) out += s.encoder->end(s.prompt_tokens);
  if (out.empty()) {
    if (client_gone(s.fd)) {
      ++counters->disconnects;
      return false;  // the releaser cancels the samples
    }
    if (Clock::now() - s.last_write < kKeepAliveEvery) return true;
    out = ": keep-alive\n\n";  // an SSE comment: clients skip it; a closed socket shows on the write
  }
  if (!sink.write(out.data(), out.size())) {
    ++counters->disconnects;
    return false;
  }
  s.last_write = Clock::now();
  if (all_done) sink.done();
  return true;
}

json OpenAiServer::Impl::health() const {
  const SchedulerStats st = scheduler.stats();
  return {{"status", "ok"},
          {"model", options.model_id},
          {"queued", st.queued},
          {"running", st.running},
          {"finished", st.finished},
          {"kv_pages_used", st.kv_pages_used},
          {"kv_pages_budget", st.kv_pages_budget},
          {"prompt_tokens", st.prompt_tokens},
          {"prefilled_tokens", st.prefilled_tokens},
          {"shared_prefix_tokens", st.shared_prefix_tokens},
          {"decoded_tokens", st.decoded_tokens},
          {"steps", st.steps},
          {"requests", counters->requests.load()},
          {"active_requests", counters->active.load()},
          {"cancelled_samples", counters->cancelled_samples.load()},
          {"disconnects", counters->disconnects.load()}};
}

void OpenAiServer::Impl::routes() {
  using httplib::Request;
  using httplib::Response;
  using HR = httplib::Server::HandlerResponse;
  http.Post("/v1/chat/completions", [this](const Request& req, Response& res) { complete(req, res, Endpoint::kChat); });
  http.Post("/v1/completions", [this](const Request& req, Response& res) { complete(req, res, Endpoint::kCompletion); });
  http.Get("/v1/models", [this](const Request&, Response& res) {
    res.set_content(json{{"object", "list"}, {"data", json::array({model_object()})}}.dump(), "application/json");
  });
  http.Get(R"(/v1/models/(.+))", [this](const Request& req, Response& res) {
    if (req.matches[1] != options.model_id)
      return send_error(res, ApiError(404, "the model '" + std::string(req.matches[1]) + "' does not exist (this server has '" +
                                               options.model_id + "')",
                                      "model", "not_found_error", "model_not_found"));
    res.set_content(model_object().dump(), "application/json");
  });
  http.Get("/health", [this](const Request&, Response& res) { res.set_content(health().dump(), "application/json"); });

  // A known path with the wrong method is 405, not httplib's 404.
  http.set_pre_routing_handler([this](const Request& req, Response& res) {
    std::string allowed;
    if (req.path == "/v1/chat/completions" || req.path == "/v1/completions") allowed = "POST";
    else if (req.path == "/health" || req.path == "/v1/models" || req.path.starts_with("/v1/models/")) allowed = "GET";
    if (allowed.empty() || req.method == allowed || (allowed == "GET" && req.method == "HEAD")) return HR::Unhandled;
    res.set_header("Allow", allowed);
    send_error(res, ApiError(405, "method " + req.method + " is not allowed on " + req.path + " (use " + allowed + ")"));
    return HR::Handled;
  });
  // Errors httplib produces itself (no route, an oversized body, a malformed request)
  // get a JSON body too; bodies the handlers wrote are kept.
  http.set_error_handler(httplib::Server::HandlerWithResponse([this](const Request& req, Response& res) {
    if (!res.body.empty()) return HR::Unhandled;
    std::string message;
    switch (res.status) {
      case 404:
        message = "no route " + req.method + " " + req.path +
                  " (hearth serve has POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health)";
        break;
      case 413:
        message = "the request body is larger than this server's limit of " + std::to_string(options.max_body) +
                  " bytes (hearth serve --max-body)";
        break;
      case 414: message = "the request URI is too long"; break;
      case 400: message = "malformed HTTP request"; break;
      default: message = "HTTP error " + std::to_string(res.status); break;
    }
    const int status = res.status;
    send_error(res, ApiError(status, message, "", openai::error_body(status, "")["error"]["type"].get<std::string>()));
    return HR::Handled;
  }));
  http.set_exception_handler([](const Request&, Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, ApiError(500, what, "", "server_error"));
  });
}

OpenAiServer::OpenAiServer(BatchScheduler& scheduler, ServeOptions options)
    : impl_(std::make_unique<Impl>(scheduler, std::move(options))) {
  Impl& s = *impl_;
  s.http.set_payload_max_length(s.options.max_body);
  // httplib's default also sets SO_REUSEPORT, which would let a second server share the
  // port silently; SO_REUSEADDR alone still allows a quick restart.
  s.http.set_socket_options([&s](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    s.listen_fd = int(sock);
  });
  const size_t threads = size_t(std::max(1, s.options.http_threads));
  s.http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  s.routes();
}

OpenAiServer::~OpenAiServer() = default;

int OpenAiServer::bind() {
  Impl& s = *impl_;
  errno = 0;
  int port = s.options.port;
  if (port == 0) {
    port = s.http.bind_to_any_port(s.options.host);
    if (port < 0) port = -1;
  } else if (!s.http.bind_to_port(s.options.host, port)) {
    port = -1;
  }
  if (port <= 0)
    throw std::runtime_error("cannot listen on " + s.options.host + ":" + std::to_string(s.options.port) +
                             (errno ? std::string(" (") + std::strerror(errno) + ")" : std::string()));
  // httplib listens with a backlog of 5 connections waiting to be accepted. Clients that
  // connect at once beyond that wait on the kernel's retransmissions (a second or more)
  // or fail; listening again on the bound socket raises the backlog (the kernel caps it
  // at net.core.somaxconn). A failure here leaves httplib's backlog, which still works.
  constexpr int kListenBacklog = 1024;
  if (s.listen_fd >= 0) (void)::listen(s.listen_fd, kListenBacklog);
  return port;
}

void OpenAiServer::serve() {
  const bool clean = impl_->http.listen_after_bind();
  std::lock_guard lk(impl_->mu);
  if (!clean && !impl_->stopping) throw std::runtime_error("the HTTP server failed to accept connections");
}

void OpenAiServer::shutdown() {
  Impl& s = *impl_;
  std::vector<std::shared_ptr<Exchange>> running;
  {
    std::lock_guard lk(s.mu);
    s.stopping = true;
    running.assign(s.active.begin(), s.active.end());
  }
  for (const auto& ex : running) s.cancel(*ex);
  // Let the cancelled requests end properly (a 503, or a stream's finish_reason and
  // [DONE]) before the listener closes, which cuts streams off; a client that does not
  // read is not waited for long.
  {
    std::unique_lock lk(s.mu);
    s.drained.wait_for(lk, kDrainWait, [&] { return s.active.empty(); });
  }
  s.http.stop();
}

}  // namespace hearth::cli

// hearth serve's HTTP side: the OpenAI-compatible routes over one BatchScheduler.
//
// Each HTTP request runs on a worker of the HTTP server's pool: it parses its body
// (engine/openai_api.h), submits its n samples to the shared scheduler and waits for
// their tokens, which the scheduler's thread hands over through a per-request queue.
// Streamed responses are written as the tokens arrive; a client that goes away (its
// socket closed, or a write that fails) gets its samples cancelled, which frees their
// cache pages at the scheduler's next step.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "engine/batch_scheduler.h"
#include "engine/openai_api.h"

namespace hearth::cli {

struct ServeOptions {
  std::string host = "127.0.0.1";  // loopback unless asked otherwise
  int port = 8080;                 // 0: any free port (bind() tells which)
  std::string model_id;            // what /v1/models lists and responses name
  openai::Limits limits;
  size_t max_body = size_t(1) << 20;  // request bodies above this get HTTP 413
  bool default_thinking = true;       // chat requests that do not choose
  int http_threads = 16;              // requests served at once (the rest wait for a worker)
};

class OpenAiServer {
 public:
  OpenAiServer(BatchScheduler& scheduler, ServeOptions options);
  ~OpenAiServer();
  OpenAiServer(const OpenAiServer&) = delete;
  OpenAiServer& operator=(const OpenAiServer&) = delete;

  // Binds host:port and returns the port. Throws std::runtime_error naming the address.
  int bind();
  // Serves until shutdown(); returns when the last request in progress has ended.
  void serve();
  // Stops accepting connections and cancels every running request. Thread-safe; not
  // async-signal-safe (call it from a thread that waited for the signal).
  void shutdown();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hearth::cli

// hearth serve: an OpenAI-compatible HTTP server over the batching scheduler.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>

#include "cli/commands.h"
#include "cli/cpu_gemm_flag.h"
#include "cli/kv_cache_flag.h"
#include "cli/flag_errors.h"
#include "cli/numa_flags.h"
#include "cli/offload_flags.h"
#include "cli/generation.h"
#include "cli/http_server.h"
#include "cli/model_tokenizer.h"
#include "engine/batch_scheduler.h"

namespace hearth::cli {

namespace {

// The id clients see: the model directory's or file's name.
std::string model_id_of(const std::string& path) {
  std::filesystem::path p = std::filesystem::path(path).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();  // "dir/"
  const std::string name = p.filename().string();
  return name.empty() || name == "." ? "model" : name;
}

template <typename T>
T in_range(const cxxopts::ParseResult& args, const char* flag, T lo, T hi, const char* what) {
  const T v = args[flag].as<T>();
  if (v < lo || v > hi)
    throw std::invalid_argument(std::string("--") + flag + ": " + what + ", got " + std::to_string(v));
  return v;
}

}  // namespace

int cmd_serve(int argc, char** argv) {
  cxxopts::Options opts(argv[0],
                        "Serve a model over HTTP with OpenAI's API (/v1/chat/completions, /v1/completions,\n"
                        "/v1/models, /health); concurrent requests are batched together. See docs/serve.md.");
  opts.add_options()
      ("m,model", "model directory (config.json, safetensors, tokenizer.json) or .gguf file", cxxopts::value<std::string>())
      ("host", "address to listen on (the default accepts local clients only)", cxxopts::value<std::string>()->default_value("127.0.0.1"))
      ("port", "TCP port (0: any free port; the address is printed on stderr)", cxxopts::value<int>()->default_value("8080"))
      ("parallel", "sequences generated together at most (more requests wait in the queue)", cxxopts::value<int64_t>()->default_value("16"))
      ("t,threads", "worker threads of the forward pass (default: one per physical core)", cxxopts::value<int>()->default_value("0"))
      ("ctx", "context limit in tokens of one sequence (default: the model's max_position_embeddings)", cxxopts::value<int64_t>()->default_value("0"))
      ("kv-budget", "KV-cache memory for all sequences in MiB (0: the scheduler's default)", cxxopts::value<int64_t>()->default_value("0"))
      ("max-tokens-limit", "the largest max_tokens a request may ask for (also the chat default)", cxxopts::value<int64_t>()->default_value("32768"))
      ("max-n", "the largest n (choices) a request may ask for", cxxopts::value<int>()->default_value("16"))
      ("max-body", "the largest request body in bytes (larger: HTTP 413)", cxxopts::value<int64_t>()->default_value("4194304"))
      ("http-threads", "requests served at once (default: 2 x --parallel + 8)", cxxopts::value<int>()->default_value("0"))
      ("no-thinking", "chat requests that do not choose get non-thinking mode (default: thinking)")
      ("tokenizer", "the tokenizer.json to use (default: MODEL/tokenizer.json, or the tokenizer inside a .gguf model)",
       cxxopts::value<std::string>(), "FILE")
      ("h,help", "show this help");
  add_repack_option(opts);
  add_numa_option(opts);
  add_cpu_gemm_option(opts);
  add_kv_cache_option(opts);
  add_offload_options(opts);
  const auto args = parse_flags(opts, argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", opts.help().c_str());
    return 0;
  }
  if (!args.unmatched().empty()) throw std::invalid_argument("unexpected argument '" + args.unmatched()[0] + "'");
  if (!args.count("model")) throw std::invalid_argument("--model is required (see --help)");
  const std::string model_path = args["model"].as<std::string>();

  ServeOptions so;
  so.host = args["host"].as<std::string>();
  if (so.host.empty()) throw std::invalid_argument("--host: the address is empty");
  so.port = in_range<int>(args, "port", 0, 65535, "must be between 0 and 65535");
  const int64_t parallel = in_range<int64_t>(args, "parallel", 1, 4096, "must be between 1 and 4096");
  const int threads = in_range<int>(args, "threads", 0, 4096, "must be between 0 and 4096");
  const int64_t context = in_range<int64_t>(args, "ctx", 0, int64_t(1) << 40, "must be >= 0 (0: the model's context)");
  const int64_t kv_mib = in_range<int64_t>(args, "kv-budget", 0, int64_t(1) << 30, "must be >= 0 MiB (0: the default)");
  so.limits.max_tokens = in_range<int64_t>(args, "max-tokens-limit", 1, int64_t(1) << 40, "must be at least 1");
  so.limits.default_completion_tokens = std::min<int64_t>(so.limits.default_completion_tokens, so.limits.max_tokens);
  so.limits.max_n = in_range<int>(args, "max-n", 1, 1024, "must be between 1 and 1024");
  so.max_body = size_t(in_range<int64_t>(args, "max-body", 1, int64_t(1) << 40, "must be at least 1 byte"));
  so.http_threads = in_range<int>(args, "http-threads", 0, 65536, "must be between 0 and 65536");
  (void)parse_numa_flag(args, args.count("offload") > 0);  // a bad --numa before the model loads
  apply_cpu_gemm_flag(args);
  apply_kv_cache_flag(args);
  if (so.http_threads == 0) so.http_threads = int(std::min<int64_t>(2 * parallel + 8, 65536));
  so.default_thinking = !args.count("no-thinking");
  so.model_id = model_id_of(model_path);

  // Signals are taken by one thread that waits for them (shutdown is not async-signal-safe);
  // every thread started from here on inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);  // a client that hangs up shows as a failed write

  // The tokenizer first: its errors come before a long model load.
  const Tokenizer tokenizer = load_model_tokenizer(model_path, args.count("tokenizer") ? args["tokenizer"].as<std::string>() : "");
  Model model = Model::load(model_path, parse_load_options(args, threads));
  const int64_t max_ctx = model.config().max_position_embeddings;
  if (context > max_ctx)
    throw std::invalid_argument("--ctx " + std::to_string(context) + " exceeds the model's context of " +
                                std::to_string(max_ctx) + " tokens");
  const SchedulerSetup setup = scheduler_setup(args, model, threads, context, kv_mib << 20, parallel);
  BatchScheduler scheduler(model, tokenizer, setup.batch);

  OpenAiServer server(scheduler, so);
  const int port = server.bind();
  scheduler.start();
  const std::string host = so.host.find(':') != std::string::npos ? "[" + so.host + "]" : so.host;
  std::fprintf(stderr, "hearth serve: model %s, context %lld, up to %lld sequences at once\n", so.model_id.c_str(),
               static_cast<long long>(scheduler.context()), static_cast<long long>(parallel));
  std::fprintf(stderr, "hearth serve: listening on http://%s:%d\n", host.c_str(), port);
  std::fflush(stderr);

  std::atomic<bool> served{false};
  std::thread signals([&] {
    const timespec tick{0, 200 * 1000 * 1000};
    while (!served.load()) {
      const int sig = sigtimedwait(&stop_signals, nullptr, &tick);
      if (sig == SIGINT || sig == SIGTERM) {
        std::fprintf(stderr, "hearth serve: %s, stopping\n", sig == SIGINT ? "interrupted" : "terminated");
        server.shutdown();
        return;
      }
    }
  });
  server.serve();
  served.store(true);
  signals.join();
  scheduler.stop();
  const SchedulerStats st = scheduler.stats();
  std::fprintf(stderr, "hearth serve: stopped after %lld finished sequences, %lld tokens generated\n",
               static_cast<long long>(st.finished), static_cast<long long>(st.decoded_tokens));
  return 0;
}

}  // namespace hearth::cli

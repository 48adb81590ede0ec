#include "cli/generation.h"


#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <stdexcept>

#include "cli/cpu_gemm_flag.h"
#include "cli/kv_cache_flag.h"
#include "cli/model_tokenizer.h"
#include "cli/offload_flags.h"
#include "engine/repack.h"
#include "engine/utf8.h"

namespace hearth::cli {

namespace {

constexpr const char* kFaint = "\x1b[2m";
constexpr const char* kReset = "\x1b[0m";

std::atomic<bool> g_interrupted{false};

void on_sigint(int) { g_interrupted.store(true); }

}  // namespace

void add_generation_options(cxxopts::Options& opts, int64_t default_max_tokens) {
  opts.add_options()
      ("m,model", "model directory (config.json, safetensors, tokenizer.json) or .gguf file", cxxopts::value<std::string>())
      ("n,max-tokens", "generate at most N tokens", cxxopts::value<int64_t>()->default_value(std::to_string(default_max_tokens)))
      ("temp", "temperature (0: greedy)", cxxopts::value<double>()->default_value("1.0"))
      ("top-p", "keep the smallest set of most probable tokens with mass >= P (1: off)", cxxopts::value<double>()->default_value("0.95"))
      ("top-k", "keep the K most probable tokens (0: off)", cxxopts::value<int64_t>()->default_value("0"))
      ("min-p", "drop tokens less probable than P x the most probable (0: off)", cxxopts::value<double>()->default_value("0"))
      ("seed", "random seed (the same seed gives the same text)", cxxopts::value<uint64_t>()->default_value("0"))
      ("stop", "stop when this text is generated (repeatable; not printed)", cxxopts::value<std::string>())
      ("reasoning", "chat reasoning (text before </think>): show (faint on a terminal), hide, separate (to stderr)",
       cxxopts::value<std::string>()->default_value("show"))
      ("no-thinking", "chat template in non-thinking mode (answer without reasoning)")
      ("ctx", "context limit in tokens (default: the model's max_position_embeddings)", cxxopts::value<int64_t>()->default_value("0"))
      ("t,threads", "worker threads (default: one per physical core)", cxxopts::value<int>()->default_value("0"))
      ("tokenizer", "the tokenizer.json to use (default: MODEL/tokenizer.json, or the tokenizer inside a .gguf model)",
       cxxopts::value<std::string>(), "FILE")
      ("h,help", "show this help");
  add_repack_option(opts);
  add_numa_option(opts);
  add_cpu_gemm_option(opts);
  add_kv_cache_option(opts);
  add_offload_options(opts);
}

void add_repack_option(cxxopts::Options& opts) {
  opts.add_options()("repack", "convert the linear weights at load to TYPE: " + std::string(repack_target_names()),
                     cxxopts::value<std::string>(), "TYPE")(
      "no-mmap", "copy the weights into memory (huge pages) at load instead of reading them from the mapped file")(
      "no-interleave", "keep Q4_K and Q6_K weights as stored (by default the CPU runs them laid out eight rows side "
                       "by side, Q4_K_R8, and Q6_K sixteen rows side by side, Q6_K_R16; never with --offload cuda)");
}

bool interleave_by_default(const cxxopts::ParseResult& args) {
  // The CUDA kernels do not take Q4_K_R8 or Q6_K_R16; the simulated device runs the CPU's kernels.
  const bool cuda = args.count("offload") && args["offload"].as<std::string>() == "cuda";
  return !args.count("no-interleave") && !cuda;
}

ModelLoadOptions parse_load_options(const cxxopts::ParseResult& args, int threads) {
  ModelLoadOptions o;
  o.threads = threads;
  o.in_memory = args.count("no-mmap") > 0;
  o.populate = true;
  o.interleave = interleave_by_default(args);
  if (args.count("repack")) {
    try {
      o.repack = parse_repack_target(args["repack"].as<std::string>());
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string("--repack: ") + e.what());
    }
  }
  return o;
}

GenerationFlags parse_generation_flags(const cxxopts::ParseResult& args) {
  GenerationFlags f;
  if (!args.count("model")) throw std::invalid_argument("--model is required (see --help)");
  f.model_dir = args["model"].as<std::string>();
  if (args.count("tokenizer")) f.tokenizer = args["tokenizer"].as<std::string>();
  GenerateRequest& r = f.request;
  r.max_tokens = args["max-tokens"].as<int64_t>();
  if (r.max_tokens < 1) throw std::invalid_argument("--max-tokens: must be at least 1");
  r.sampling.temperature = args["temp"].as<double>();
  if (!std::isfinite(r.sampling.temperature) || r.sampling.temperature < 0)
    throw std::invalid_argument("--temp: must be a finite number >= 0 (0: greedy)");
  r.sampling.top_p = args["top-p"].as<double>();
  r.sampling.top_k = args["top-k"].as<int64_t>();
  r.sampling.min_p = args["min-p"].as<double>();
  r.sampling.seed = args["seed"].as<uint64_t>();
  try {
    r.sampling.validate();
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("--") + e.what());
  }
  for (const auto& kv : args.arguments())
    if (kv.key() == "stop") {
      if (kv.value().empty()) throw std::invalid_argument("--stop: the stop string is empty");
      check_utf8(kv.value(), "--stop");
      r.stop.push_back(kv.value());
    }
  const std::string mode = args["reasoning"].as<std::string>();
  if (mode == "show") f.reasoning = ReasoningMode::kShow;
  else if (mode == "hide") f.reasoning = ReasoningMode::kHide;
  else if (mode == "separate") f.reasoning = ReasoningMode::kSeparate;
  else throw std::invalid_argument("--reasoning: '" + mode + "' is not one of show, hide, separate");
  f.thinking = !args.count("no-thinking");
  f.context = args["ctx"].as<int64_t>();
  if (f.context < 0) throw std::invalid_argument("--ctx: must be positive (0: the model's context)");
  f.threads = args["threads"].as<int>();
  if (f.threads < 0 || f.threads > 4096) throw std::invalid_argument("--threads: must be between 0 and 4096");
  f.load = parse_load_options(args, f.threads);
  apply_kv_cache_flag(args);  // before the offload flags: their context budget counts cache bytes
  f.offload = parse_offload_flags(args, f.threads, f.context);
  f.numa = parse_numa_flag(args, f.offload.has_value());
  apply_cpu_gemm_flag(args);
  if (!args.unmatched().empty()) throw std::invalid_argument("unexpected argument '" + args.unmatched()[0] + "'");
  return f;
}

std::unique_ptr<Session> open_session(const GenerationFlags& flags) {
  // The tokenizer first: its errors come before a long model load.
  Tokenizer tok = load_model_tokenizer(flags.model_dir, flags.tokenizer);
  std::unique_ptr<Session> s(
      new Session{Model::load(flags.model_dir, flags.load), std::move(tok), nullptr, nullptr, nullptr});
  const int64_t max_ctx = s->model.config().max_position_embeddings;
  if (flags.context > max_ctx)
    throw std::invalid_argument("--ctx " + std::to_string(flags.context) + " exceeds the model's context of " +
                                std::to_string(max_ctx) + " tokens");
  GeneratorOptions go{flags.threads, flags.context};
  if (flags.offload) {
    s->offload = Offload::create(s->model, *flags.offload);
    std::fprintf(stderr, "%s\n", s->offload->summary().c_str());
    go.offload = &s->offload->forward();
  }
  s->numa = shard_experts(flags.numa, s->model, flags.threads);
  go.numa_experts = s->numa.get();
  s->generator = std::make_unique<Generator>(s->model, s->tokenizer, go);
  return s;
}

void check_utf8(std::string_view s, const std::string& what) {
  for (size_t i = 0; i < s.size();) {
    const size_t len = utf8_sequence_length(s, i);
    if (!len) throw std::invalid_argument(what + " is not valid UTF-8 (byte offset " + std::to_string(i) + ")");
    i += len;
  }
}

std::atomic<bool>& interrupted() { return g_interrupted; }

void install_interrupt_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a read at the prompt returns EINTR
  sigaction(SIGINT, &sa, nullptr);
}

TurnPrinter::TurnPrinter(bool chat, bool thinking, ReasoningMode mode)
    : chat_(chat),
      tty_(::isatty(STDOUT_FILENO) == 1),
      mode_(mode),
      stream_(chat && thinking, [this](std::string_view text, bool is_reasoning) {
        if (!is_reasoning) {
          if (!answer_started_) {
            answer_started_ = true;
            if (faint_on_) write(stdout, "", false);
            if (reasoning_shown_ && last_out_ != '\n') write(stdout, "\n", false);
            if (mode_ == ReasoningMode::kSeparate && last_err_ != '\n') {
              std::fputc('\n', stderr);
              last_err_ = '\n';
            }
          }
          write(stdout, text, false);
        } else if (mode_ == ReasoningMode::kShow) {
          reasoning_shown_ = true;
          write(stdout, text, tty_);
        } else if (mode_ == ReasoningMode::kSeparate) {
          std::fwrite(text.data(), 1, text.size(), stderr);
          std::fflush(stderr);
          last_err_ = text.back();
        }
      }) {}

void TurnPrinter::write(std::FILE* f, std::string_view text, bool faint) {
  if (faint != faint_on_) {
    std::fputs(faint ? kFaint : kReset, f);
    faint_on_ = faint;
  }
  std::fwrite(text.data(), 1, text.size(), f);
  std::fflush(f);
  if (!text.empty()) last_out_ = text.back();
}

void TurnPrinter::operator()(std::string_view text) {
  if (chat_) stream_.push(text);
  else write(stdout, text, false);
}

void TurnPrinter::finish() {
  if (chat_) stream_.flush();
  if (faint_on_) write(stdout, "", false);
  if ((chat_ || tty_) && last_out_ != '\n') write(stdout, "\n", false);
  if (mode_ == ReasoningMode::kSeparate && last_err_ != '\n') {
    std::fputc('\n', stderr);
    last_err_ = '\n';
  }
}

void print_stats(const GenerationStats& s) {
  std::fprintf(stderr,
               "prompt: %lld tokens (%lld reused from the cache), prefill %.3f s, %.1f tok/s | generated: %lld tokens, "
               "decode %.1f tok/s | time to first token %.3f s | stop: %s\n",
               (long long)s.prompt_tokens, (long long)s.reused_tokens, s.prefill_seconds, s.prefill_tok_s,
               (long long)s.generated_tokens, s.decode_tok_s, s.ttft_seconds, stop_reason_name(s.stop));
  std::fflush(stderr);
}

}  // namespace hearth::cli

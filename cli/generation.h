// What `hearth generate` and `hearth chat` share: the sampling flags, loading a model with
// its tokenizer, Ctrl-C as a cancel flag, and printing a turn (reasoning dimmed, hidden or
// on stderr) and its statistics.
#pragma once
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cxxopts.hpp>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/chat_template.h"
#include "engine/generator.h"
#include "engine/model.h"
#include "engine/offload_setup.h"
#include "engine/tokenizer.h"
#include "cli/numa_flags.h"

namespace hearth::cli {

enum class ReasoningMode { kShow, kHide, kSeparate };

struct GenerationFlags {
  std::string model_dir;  // -m: a model directory or a .gguf file
  std::string tokenizer;  // --tokenizer: a tokenizer.json replacing the model's own
  ModelLoadOptions load;  // --repack (its threads: -t)
  GenerateRequest request;
  ReasoningMode reasoning = ReasoningMode::kShow;
  bool thinking = true;
  int64_t context = 0;  // 0: the model's
  int threads = 0;
  std::optional<OffloadOptions> offload;  // --offload and its flags (cli/offload_flags.h)
  NumaChoice numa;                        // --numa (cli/numa_flags.h)
};

// -m, -n, --temp, --top-p, --top-k, --min-p, --seed, --stop, --reasoning, --no-thinking, --ctx, -t,
// --repack, --tokenizer, --numa and the offload flags.
void add_generation_options(cxxopts::Options& opts, int64_t default_max_tokens);
// Throws std::invalid_argument with the flag's name on a bad value.
GenerationFlags parse_generation_flags(const cxxopts::ParseResult& args);

// --repack TYPE, --no-mmap and --no-interleave, shared by every command that loads a
// model: the options, and the load options they ask for (std::invalid_argument naming the
// flag on an unknown type).
void add_repack_option(cxxopts::Options& opts);
ModelLoadOptions parse_load_options(const cxxopts::ParseResult& args, int threads);
// Whether Q4_K weights get the CPU's interleaved layout: unless --no-interleave, or
// --offload cuda (whose kernels do not take it). args must hold add_repack_option's flags.
bool interleave_by_default(const cxxopts::ParseResult& args);

// The model, its tokenizer (--tokenizer, MODEL/tokenizer.json, or a .gguf model's own) and
// a generator over both.
struct Session {
  Model model;
  Tokenizer tokenizer;
  std::unique_ptr<Offload> offload;  // before the generator: it outlives the generator's steps
  std::unique_ptr<NumaExperts> numa;  // likewise
  std::unique_ptr<Generator> generator;
};
std::unique_ptr<Session> open_session(const GenerationFlags& flags);

// Throws std::invalid_argument naming `what` and the byte offset of the first invalid byte.
void check_utf8(std::string_view text, const std::string& what);

// SIGINT sets the flag instead of ending the process (installed without SA_RESTART, so a
// blocking read returns EINTR).
std::atomic<bool>& interrupted();
void install_interrupt_handler();

// Writes one generated turn as it streams. Raw mode passes text through; chat mode splits
// reasoning from the answer and routes the reasoning by `mode` (shown faint on a TTY).
class TurnPrinter {
 public:
  TurnPrinter(bool chat, bool thinking, ReasoningMode mode);
  TurnPrinter(const TurnPrinter&) = delete;  // its stream calls back into it
  TurnPrinter& operator=(const TurnPrinter&) = delete;
  void operator()(std::string_view text);  // a Generator::TextSink
  // Releases anything held; ends the turn with a newline where the terminal needs one
  // (always in chat mode).
  void finish();

 private:
  void write(std::FILE* f, std::string_view text, bool faint);
  bool chat_, tty_;
  ReasoningMode mode_;
  ReasoningStream stream_;
  bool faint_on_ = false, reasoning_shown_ = false, answer_started_ = false;
  char last_out_ = '\n', last_err_ = '\n';
};

// One line on stderr: prompt tokens, prefill tok/s, generated tokens, decode tok/s, TTFT.
void print_stats(const GenerationStats& s);

}  // namespace hearth::cli

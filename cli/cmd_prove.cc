// hearth prove: DeepSeekMath-V2's generate -> verify -> refine loop on one machine
// (engine/proof_loop.h), batched on the scheduler, with a durable pool and journal in --out.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>

#include "cli/commands.h"
#include "cli/cpu_gemm_flag.h"
#include "cli/kv_cache_flag.h"
#include "cli/flag_errors.h"
#include "cli/numa_flags.h"
#include "cli/offload_flags.h"
#include "cli/generation.h"
#include "cli/model_tokenizer.h"
#include "cli/progress.h"
#include "engine/batch_scheduler.h"
#include "engine/model.h"
#include "engine/proof_loop.h"
#include "engine/proof_run_dir.h"
#include "engine/proof_runner_scheduler.h"

namespace hearth::cli {

namespace {

namespace fs = std::filesystem;

std::string read_problem_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::invalid_argument("cannot read the problem file '" + path + "'");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

template <class T>
T flag_in(const cxxopts::ParseResult& args, const char* name, T lo, T hi) {
  const T v = args[name].as<T>();
  if (v < lo || v > hi)
    throw std::invalid_argument(std::string("--") + name + ": must be between " + std::to_string(lo) + " and " +
                                std::to_string(hi));
  return v;
}

// One progress line: "round 1/3  generate+verify  12/40 samples  8 running  95.2 tok/s  ETA 0:42".
std::string progress_text(const ProofProgress& p) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "round %d/%d  %s  %lld/%lld samples  %lld running  %.1f tok/s  ETA %s", p.round, p.rounds,
                p.stage.c_str(), (long long)p.done, (long long)p.total, (long long)p.running, p.tokens_per_s,
                format_duration(p.eta_s).c_str());
  return buf;
}

// Redraws one line on a terminal; prints a line every few seconds (and at each round's
// end) elsewhere, so logs stay readable.
class ProgressPrinter {
 public:
  ProgressPrinter() : tty_(::isatty(STDERR_FILENO) == 1) {}
  ~ProgressPrinter() { end_line(); }
  void operator()(const ProofProgress& p) {
    const double now = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
    const bool round_done = p.running == 0 && p.done == p.total;
    if (tty_) {
      if (now - last_ < 0.2 && !round_done) return;
      std::fprintf(stderr, "\r\x1b[K%s", progress_text(p).c_str());
      open_ = true;
    } else {
      if (now - last_ < 5 && !round_done) return;
      std::fprintf(stderr, "%s\n", progress_text(p).c_str());
    }
    std::fflush(stderr);
    last_ = now;
  }
  void end_line() {
    if (open_) std::fputc('\n', stderr);
    open_ = false;
  }

 private:
  bool tty_, open_ = false;
  double last_ = -1e9;
};

}  // namespace

int cmd_prove(int argc, char** argv) {
  cxxopts::Options opts(argv[0],
                        "Prove a statement the DeepSeekMath-V2 way: generate proofs that grade themselves, verify each\n"
                        "one V times, refine the best with the verifiers' findings, until a proof scores 1 or R rounds\n"
                        "are done. Every finished sample is kept in --out/pool.jsonl; partial ones are journaled, and\n"
                        "--resume continues an interrupted run. See docs/prove.md.");
  opts.positional_help("PROBLEM.md");
  opts.add_options()
      ("m,model", "model directory (config.json, safetensors, tokenizer.json) or .gguf file", cxxopts::value<std::string>())
      ("problem", "the problem as text (instead of PROBLEM.md)", cxxopts::value<std::string>(), "TEXT")
      ("samples", "N: proofs generated per round", cxxopts::value<int>()->default_value("8"))
      ("verifications", "V: ratings per proof (its score is their mean)", cxxopts::value<int>()->default_value("4"))
      ("rounds", "R: rounds at most (round 1 generates, the others refine)", cxxopts::value<int>()->default_value("3"))
      ("meta-verify", "check each rating below 1 once more (an unsound rating is left out of the mean)")
      ("max-tokens", "tokens per sample at most (reasoning included)", cxxopts::value<int64_t>()->default_value("16384"))
      ("out", "output directory: run.json, pool.jsonl, journal.json, summary.json, best.md",
       cxxopts::value<std::string>()->default_value("prove-out"), "DIR")
      ("resume", "continue the run in --out (settings not given are taken from its run.json)")
      ("templates", "prompt templates to use instead of the built-in ones (JSON; see docs/prove.md)",
       cxxopts::value<std::string>(), "FILE")
      ("temperature", "sampling temperature (0: greedy)", cxxopts::value<double>()->default_value("1.0"))
      ("top-p", "keep the smallest set of most probable tokens with mass >= P", cxxopts::value<double>()->default_value("0.95"))
      ("seed", "base random seed (each sample's seed follows from it and the sample's place)",
       cxxopts::value<uint64_t>()->default_value("0"))
      ("no-thinking", "prompts in non-thinking mode (the whole output is the answer)")
      ("parallel", "samples generated together at most (the others wait)", cxxopts::value<int64_t>()->default_value("32"))
      ("kv-budget", "KV-cache memory for all samples in MiB (0: the scheduler's default)",
       cxxopts::value<int64_t>()->default_value("0"))
      ("ctx", "context limit in tokens (default: the model's)", cxxopts::value<int64_t>()->default_value("0"))
      ("t,threads", "worker threads (default: one per physical core)", cxxopts::value<int>()->default_value("0"))
      ("tokenizer", "the tokenizer.json to use (default: the model's)", cxxopts::value<std::string>(), "FILE")
      ("stop-after-samples", "testing: stop as if interrupted after N samples finished in this run",
       cxxopts::value<int64_t>()->default_value("0"), "N")
      ("stop-after-tokens", "testing: stop as if interrupted after N tokens generated in this run",
       cxxopts::value<int64_t>()->default_value("0"), "N")
      ("h,help", "show this help");
  add_repack_option(opts);
  opts.add_options("positional")("problem-file", "the problem, a Markdown or text file", cxxopts::value<std::string>());
  opts.parse_positional({"problem-file"});
  add_numa_option(opts);
  add_cpu_gemm_option(opts);
  add_kv_cache_option(opts);
  add_offload_options(opts);
  const auto args = parse_flags(opts, argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", opts.help({""}).c_str());
    return 0;
  }
  if (!args.unmatched().empty()) throw std::invalid_argument("unexpected argument '" + args.unmatched()[0] + "'");
  if (!args.count("model")) throw std::invalid_argument("--model is required (see --help)");
  const bool resume = args.count("resume") > 0;
  if (args.count("problem") && args.count("problem-file"))
    throw std::invalid_argument("give the problem either as PROBLEM.md or with --problem, not both");
  if (!resume && !args.count("problem") && !args.count("problem-file"))
    throw std::invalid_argument("no problem: give PROBLEM.md or --problem TEXT (see --help)");

  // The settings asked for; with --resume, those not given come from run.json.
  std::string problem = args.count("problem") ? args["problem"].as<std::string>()
                        : args.count("problem-file") ? read_problem_file(args["problem-file"].as<std::string>())
                                                     : std::string();
  if (!problem.empty()) check_utf8(problem, "the problem");
  if ((args.count("problem") || args.count("problem-file")) && problem.find_first_not_of(" \t\r\n") == std::string::npos)
    throw std::invalid_argument("the problem is empty");
  ProofLoopOptions o;
  o.samples = flag_in<int>(args, "samples", 1, 100000);
  o.verifications = flag_in<int>(args, "verifications", 1, 10000);
  o.rounds = flag_in<int>(args, "rounds", 1, 10000);
  o.meta_verify = args.count("meta-verify") > 0;
  o.max_tokens = flag_in<int64_t>(args, "max-tokens", 1, int64_t(1) << 40);
  o.temperature = args["temperature"].as<double>();
  if (!std::isfinite(o.temperature) || o.temperature < 0)
    throw std::invalid_argument("--temperature: must be a finite number >= 0 (0: greedy)");
  o.top_p = args["top-p"].as<double>();
  if (!std::isfinite(o.top_p) || o.top_p <= 0 || o.top_p > 1) throw std::invalid_argument("--top-p: must be in (0, 1]");
  o.seed = args["seed"].as<uint64_t>();
  o.thinking = !args.count("no-thinking");
  o.stop_after_samples = flag_in<int64_t>(args, "stop-after-samples", 0, int64_t(1) << 40);
  o.stop_after_tokens = flag_in<int64_t>(args, "stop-after-tokens", 0, int64_t(1) << 40);
  const int threads = flag_in<int>(args, "threads", 0, 4096);
  const int64_t parallel = flag_in<int64_t>(args, "parallel", 1, 4096);
  const int64_t kv_mib = flag_in<int64_t>(args, "kv-budget", 0, int64_t(1) << 30);
  const int64_t ctx = flag_in<int64_t>(args, "ctx", 0, int64_t(1) << 40);
  const std::string templates_file = args.count("templates") ? args["templates"].as<std::string>() : "";
  const ProofTemplates templates = templates_file.empty() ? ProofTemplates::defaults() : ProofTemplates::load(templates_file);
  const ModelLoadOptions load = parse_load_options(args, threads);
  (void)parse_numa_flag(args, args.count("offload") > 0);  // a bad --numa before the model loads
  apply_cpu_gemm_flag(args);
  apply_kv_cache_flag(args);

  std::set<std::string> given = {"templates"};  // the templates in use must always be the run's
  const std::pair<const char*, const char*> flag_keys[] = {
      {"samples", "samples"},         {"verifications", "verifications"}, {"rounds", "rounds"},
      {"meta-verify", "meta_verify"}, {"max-tokens", "max_tokens"},       {"temperature", "temperature"},
      {"top-p", "top_p"},             {"seed", "seed"},                   {"no-thinking", "thinking"}};
  for (const auto& [flag, key] : flag_keys)
    if (!resume || args.count(flag)) given.insert(key);
  if (!resume || !problem.empty()) given.insert("problem");
  if (!resume) given.insert("refine_best");
  const fs::path out_dir = args["out"].as<std::string>();
  const nlohmann::json wanted = proof_run_settings(problem, o, templates, templates_file);
  const auto open_dir = [&] {
    const nlohmann::json settings = open_proof_run_dir(out_dir, resume, wanted, given);
    const ProofLoopOptions asked = o;  // the test hooks are not settings of the run
    apply_proof_run_settings(settings, (out_dir / "run.json").string(), problem, o);
    o.stop_after_samples = asked.stop_after_samples;
    o.stop_after_tokens = asked.stop_after_tokens;
  };
  // Directory errors before the long model load; a new run's directory is made after it,
  // so a model that fails to load leaves nothing behind.
  if (resume) open_dir();
  else check_new_proof_run_dir(out_dir);

  // The tokenizer first: its errors come before a long model load.
  const std::string model_path = args["model"].as<std::string>();
  const Tokenizer tok = load_model_tokenizer(model_path, args.count("tokenizer") ? args["tokenizer"].as<std::string>() : "");
  Model model = Model::load(model_path, load);
  if (!resume) open_dir();
  const SchedulerSetup setup = scheduler_setup(args, model, threads, ctx, kv_mib << 20, parallel);
  BatchScheduler scheduler(model, tok, setup.batch);
  SchedulerSampleRunner runner(scheduler);

  ProgressPrinter printer;
  ProofLoop loop(runner, templates, problem, o, out_dir, [&](const std::string& w) {
    printer.end_line();
    std::fprintf(stderr, "hearth prove: warning: %s\n", w.c_str());
  });
  std::fprintf(stderr, "hearth prove: %d sample(s) x %d verification(s), up to %d round(s)%s; output in %s%s\n", o.samples,
               o.verifications, o.rounds, o.meta_verify ? ", meta-verification" : "", out_dir.string().c_str(),
               resume ? " (resumed)" : "");
  install_interrupt_handler();
  const ProofLoopResult res = loop.run(&interrupted(), [&](const ProofProgress& p) { printer(p); });
  printer.end_line();

  const std::string resume_cmd = "hearth prove -m " + model_path + " --out " + out_dir.string() + " --resume";
  if (res.end == ProofLoopResult::End::kInterrupted) {
    std::fprintf(stderr,
                 "hearth prove: interrupted after %lld finished sample(s) in this run; the journal is saved. "
                 "Resume with: %s\n",
                 (long long)res.samples_finished, resume_cmd.c_str());
    return 130;
  }
  std::printf("%s", proof_summary_table(res).c_str());
  std::fflush(stdout);
  // What batching and prefix sharing saved: prompt tokens submitted versus run.
  const SchedulerStats st = scheduler.stats();
  std::fprintf(stderr,
               "hearth prove: prompt tokens %lld, prefilled %lld, shared from other samples' caches %lld (%.1f%%); "
               "%lld tokens generated in %lld batched steps\n",
               (long long)st.prompt_tokens, (long long)st.prefilled_tokens, (long long)st.shared_prefix_tokens,
               st.prompt_tokens > 0 ? 100.0 * double(st.shared_prefix_tokens) / double(st.prompt_tokens) : 0.0,
               (long long)st.decoded_tokens, (long long)st.steps);
  std::fprintf(stderr, "hearth prove: best proof in %s, every sample in %s\n", (out_dir / "best.md").string().c_str(),
               (out_dir / "pool.jsonl").string().c_str());
  return 0;
}

}  // namespace hearth::cli

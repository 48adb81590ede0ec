// hearth bench: llama-bench-style throughput (pp / tg / batched tg, at a cache depth),
// set against the memory wall of the machine it runs on (engine/bench.h).
#include <algorithm>
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/cpu_gemm_flag.h"
#include "cli/kv_cache_flag.h"
#include "cli/flag_errors.h"
#include "cli/generation.h"
#include "cli/numa_flags.h"
#include "cli/offload_flags.h"
#include "engine/bench.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/repack.h"
#include "engine/synth.h"
#include "engine/synth_model.h"
#include "offload/thread_pool.h"
#include "quant/weight_matrix.h"

namespace hearth::cli {

namespace {

// "1,4,16" -> {1, 4, 16}; std::invalid_argument naming the flag on anything else.
std::vector<int64_t> parse_list(const std::string& flag, const std::string& text) {
  std::vector<int64_t> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, comma - start);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size())
      throw std::invalid_argument(flag + ": '" + text + "' is not a comma-separated list of integers");
    out.push_back(v);
    start = comma + 1;
  }
  return out;
}

std::string model_label(const std::string& path) {
  std::filesystem::path p = std::filesystem::path(path).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  return p.filename().string().empty() ? path : p.filename().string();
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  std::string presets;
  for (const std::string& p : synth_preset_names()) presets += (presets.empty() ? "" : "|") + p;
  for (const std::string& p : synth_memory_preset_names()) presets += "|" + p;
  cxxopts::Options opts(argv[0],
                        "Measure prefill (pp) and decode (tg) throughput like llama-bench, against the machine's\n"
                        "memory wall: the weight bytes a decode step reads over the measured read bandwidth.");
  opts.add_options()
      ("m,model", "model directory", cxxopts::value<std::string>())
      ("synthetic", "build a synthetic model in memory instead: " + presets, cxxopts::value<std::string>(), "PRESET")
      ("type", "--synthetic: convert the weights to TYPE while building (" + std::string(repack_target_names()) + ")",
       cxxopts::value<std::string>(), "TYPE")
      ("set", "--synthetic: override a config key, e.g. --set model_type='\"deepseek_v32\"' (repeatable)",
       cxxopts::value<std::string>())
      ("seed", "--synthetic: weight seed (as hearth synth --seed)", cxxopts::value<uint64_t>()->default_value("0"))
      ("p,n-prompt", "prompt lengths of the pp tests (comma-separated; 0: none)", cxxopts::value<std::string>()->default_value("512"))
      ("n,n-gen", "tokens of the tg tests (comma-separated; 0: none)", cxxopts::value<std::string>()->default_value("128"))
      ("batch", "sequences decoding together in the tg tests (comma-separated)", cxxopts::value<std::string>()->default_value("1"))
      ("depth", "tokens already in the cache before each test (comma-separated)", cxxopts::value<std::string>()->default_value("0"))
      ("depth-fill", "how --depth fills the cache: prefill (run the tokens) or random (write random cache entries: the same decode work, no long prefill)",
       cxxopts::value<std::string>()->default_value("prefill"))
      ("r,repetitions", "repetitions of each test", cxxopts::value<int>()->default_value("3"))
      ("no-warmup", "skip each test's untimed warm-up run (its prompt once, or one step of its batch)")
      ("t,threads", "worker threads (default: one per physical core)", cxxopts::value<int>()->default_value("0"))
      ("o,output", "md (a markdown table) or json", cxxopts::value<std::string>()->default_value("md"))
      ("profile", "also time each phase of a decode step (attention, indexer, router, experts, head, ...)")
      ("isa", "CPU kernels to use: auto (the best this CPU has), avx512bf16, avx512vnni, avx512, avx2 or scalar, to compare them",
       cxxopts::value<std::string>()->default_value("auto"))
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
  const bool synthetic = args.count("synthetic") > 0;
  if (synthetic == (args.count("model") > 0))
    throw std::invalid_argument("give exactly one of --model and --synthetic (see --help)");
  if (!synthetic)
    for (const char* flag : {"type", "set", "seed"})
      if (args.count(flag)) throw std::invalid_argument(std::string("--") + flag + " applies to --synthetic models only");

  BenchOptions bo;
  bo.prompts = parse_list("-p/--n-prompt", args["n-prompt"].as<std::string>());
  bo.gens = parse_list("-n/--n-gen", args["n-gen"].as<std::string>());
  bo.batches = parse_list("--batch", args["batch"].as<std::string>());
  bo.depths = parse_list("--depth", args["depth"].as<std::string>());
  bo.reps = args["repetitions"].as<int>();
  bo.profile = args.count("profile") > 0;
  bo.warmup = args.count("no-warmup") == 0;
  const std::string fill = args["depth-fill"].as<std::string>();
  if (fill != "prefill" && fill != "random") throw std::invalid_argument("--depth-fill: '" + fill + "' is not prefill or random");
  bo.random_depth = fill == "random";
  validate(bo);
  const std::string output = args["output"].as<std::string>();
  if (output != "md" && output != "json") throw std::invalid_argument("--output: '" + output + "' is not md or json");
  const int threads = args["threads"].as<int>();
  if (threads < 0 || threads > 4096) throw std::invalid_argument("--threads: must be between 0 and 4096");
  const NumaChoice numa = parse_numa_flag(args, args.count("offload") > 0);
  apply_cpu_gemm_flag(args);
  apply_kv_cache_flag(args);
  const std::string isa_flag = args["isa"].as<std::string>();
  const std::optional<KernelIsa> isa = parse_isa(isa_flag);
  if (!isa) throw std::invalid_argument("--isa: '" + isa_flag + "' is not auto, avx512bf16, avx512vnni, avx512, avx2 or scalar");
  if (*isa != KernelIsa::kAuto && int(*isa) > int(cpu_isa()))
    throw std::invalid_argument("--isa " + isa_flag + ": this CPU lacks it (its best is " + isa_name(cpu_isa()) + ")");
  limit_isa(*isa);

  std::optional<Model> model;
  std::string label;
  if (synthetic) {
    SyntheticModelOptions so;
    so.preset = args["synthetic"].as<std::string>();
    for (const auto& kv : args.arguments())
      if (kv.key() == "set") so.sets.push_back(kv.value());
    so.seed = args["seed"].as<uint64_t>();
    std::optional<std::string> type;
    if (args.count("type")) type = args["type"].as<std::string>();
    if (args.count("repack")) {
      const std::string r = args["repack"].as<std::string>();
      if (type && !same_ignoring_case(*type, r))
        throw std::invalid_argument("--type " + *type + " and --repack " + r + " disagree (with --synthetic they mean the same)");
      type = r;
    }
    if (type) {
      try {
        so.type = parse_repack_target(*type);
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(std::string("--type: ") + e.what());
      }
    }
    so.threads = threads;
    so.interleave = interleave_by_default(args);
    so.log = stderr;
    // The cache the tests fill and the logits they read count against the RAM too.
    // (Each sequence's last page may be partly used: up to 64 more tokens per sequence.)
    const ModelConfig config = synthetic_model_size(so).config;
    const int64_t max_batch = *std::max_element(bo.batches.begin(), bo.batches.end());
    const int64_t cached = bench_max_cached_tokens(bo) + 64 * max_batch;
    so.extra_bytes = uint64_t(cached * KvCache(config).bytes_per_token()) +
                     uint64_t(config.vocab_size * max_batch) * sizeof(float);
    model.emplace(build_synthetic_model(so));
    label = so.preset + " (synthetic)";
  } else {
    const std::string dir = args["model"].as<std::string>();
    model.emplace(Model::load(dir, parse_load_options(args, threads)));
    label = model_label(dir);
  }

  std::unique_ptr<Offload> offload;
  if (auto oo = parse_offload_flags(args, threads, bench_max_cached_tokens(bo) + 64)) {
    oo->batch = *std::max_element(bo.batches.begin(), bo.batches.end());
    offload = Offload::create(*model, *oo);
    bo.offload = &offload->forward();
    bo.device = offload->summary();
    bo.device_label = oo->device + " " + offload->experts_label();
  }
  const std::unique_ptr<NumaExperts> numa_experts = shard_experts(numa, *model, threads);
  bo.numa_experts = numa_experts.get();
  ThreadPool pool(threads);
  bo.progress = [](const std::string& line) {
    std::fprintf(stderr, "hearth bench: %s\n", line.c_str());
    std::fflush(stderr);
  };
  const BenchReport report = run_bench(*model, pool, label, bo);
  if (output == "json") std::printf("%s\n", bench_json(report).dump(2).c_str());
  else std::printf("%s", bench_markdown(report).c_str());
  return 0;
}

}  // namespace hearth::cli

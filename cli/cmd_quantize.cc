// hearth quantize: any model hearth loads (Hugging Face directory or GGUF) to a GGUF file,
// each tensor in the type a recipe picks (quant/recipe.h): a preset, or routed experts and
// the rest at two types, then the user's --tensor-type overrides; an importance matrix
// (--imatrix) weights the quantization error.
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>

#include "cli/commands.h"
#include "cli/flag_errors.h"
#include "engine/quantize.h"
#include "cli/progress.h"
#include "engine/gguf_model.h"
#include "engine/imatrix.h"
#include "engine/repack.h"
#include "offload/byte_size.h"
#include "quant/recipe.h"

namespace hearth::cli {

namespace {

namespace fs = std::filesystem;

std::atomic<bool> g_cancel{false};
void cancel_on_sigint(int) { g_cancel.store(true); }

std::string human_bytes(double v) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int i = 0;
  while (v >= 1000.0 && i < 4) v /= 1000.0, ++i;
  char buf[32];
  std::snprintf(buf, sizeof buf, i ? "%.2f %s" : "%.0f %s", v, units[i]);
  return buf;
}

// Restores the previous SIGINT action when the command ends, however it ends.
struct SigintScope {
  struct sigaction old {};
  SigintScope() {
    struct sigaction sa {};
    sa.sa_handler = cancel_on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
  }
  ~SigintScope() { sigaction(SIGINT, &old, nullptr); }
};

// llama.cpp's general.file_type (LLAMA_FTYPE_*) of the presets that have one; the MoE
// splits have none and get the type holding most of the weights' bytes.
std::optional<uint32_t> preset_file_type(const std::string& preset) {
  static const std::pair<const char*, uint32_t> kTypes[] = {
      {"F32", 0},     {"F16", 1},     {"Q8_0", 7},    {"Q2_K", 10},   {"Q3_K_S", 11}, {"Q3_K_M", 12},
      {"Q4_K_S", 14}, {"Q4_K_M", 15}, {"Q5_K_S", 16}, {"Q5_K_M", 17}, {"Q6_K", 18},   {"BF16", 32}};
  for (const auto& [name, type] : kTypes)
    if (same_ignoring_case(preset, name)) return type;
  return std::nullopt;
}

}  // namespace

int cmd_quantize(int argc, char** argv) {
  std::string presets;
  for (const std::string& p : QuantRecipe::preset_names()) presets += (presets.empty() ? "" : ", ") + p;
  cxxopts::Options opts(argv[0],
                        "Write a model (Hugging Face directory or GGUF file) as a GGUF file. Each tensor's type comes\n"
                        "from a preset (--type) or from --experts/--rest, then --tensor-type overrides. 1-D tensors,\n"
                        "the MoE router and the indexer's weights_proj always stay F32; a weight whose rows the type's\n"
                        "blocks do not divide gets Q8_0 (K-quants, when 32 divides them) or F16. Ctrl-C stops cleanly\n"
                        "and leaves no partial file.");
  opts.add_options()
      ("m,model", "input: model directory (config.json + safetensors) or .gguf file", cxxopts::value<std::string>())
      ("o,output", "output .gguf file (written as OUT.tmp, renamed when complete)", cxxopts::value<std::string>())
      ("type", "preset: " + presets, cxxopts::value<std::string>(), "PRESET")
      ("experts", "routed experts' type (instead of --type), e.g. q4_k", cxxopts::value<std::string>(), "TYPE")
      ("keep-types", "a GGUF input: every tensor keeps its type, copied as stored (instead of --type; "
                     "--tensor-type still changes the tensors it names), e.g. to split a file with "
                     "--split-max-size without touching its weights")
      ("rest", "with --experts: every other weight's type", cxxopts::value<std::string>()->default_value("q8_0"), "TYPE")
      ("tensor-type", "REGEX=TYPE: tensors whose GGUF name matches get TYPE (repeatable; the first match wins)",
       cxxopts::value<std::vector<std::string>>(), "REGEX=TYPE")
      ("imatrix", "importance matrix (llama.cpp's GGUF or legacy .dat format) for the low-bit scale search",
       cxxopts::value<std::string>(), "FILE")
      ("split-max-size", "write shards of at most SIZE of tensor data (e.g. 45G) as llama.cpp's gguf-split names "
                         "them: OUT-00001-of-0000N.gguf, ... (OUT without .gguf); load the first",
       cxxopts::value<std::string>(), "SIZE")
      ("name", "general.name (default: the input's name)", cxxopts::value<std::string>())
      ("t,threads", "worker threads (default: one per physical core)", cxxopts::value<int>()->default_value("0"))
      ("q,quiet", "no progress on stderr")
      ("h,help", "show this help");
  const auto args = parse_flags(opts, argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", opts.help().c_str());
    return 0;
  }
  for (const char* req : {"model", "output"})
    if (!args.count(req)) throw std::invalid_argument(std::string("--") + req + " is required (see --help)");
  if (!args.unmatched().empty()) throw std::invalid_argument("unexpected argument '" + args.unmatched()[0] + "'");
  const bool keep = args.count("keep-types") > 0;
  if (int(args.count("type") > 0) + int(args.count("experts") > 0) + int(keep) != 1)
    throw std::invalid_argument("give one of --type PRESET, --experts TYPE [--rest TYPE] or --keep-types (see --help)");

  // With --keep-types the recipe only carries the --tensor-type overrides (its preset is
  // never consulted).
  QuantRecipe recipe = [&] {
    if (keep) return QuantRecipe::preset("Q8_0");
    if (args.count("type")) {
      try {
        return QuantRecipe::preset(args["type"].as<std::string>());
      } catch (const std::exception& e) {
        throw std::invalid_argument(std::string("--type: ") + e.what());
      }
    }
    auto type_arg = [&](const char* flag) {
      const std::string v = args[flag].as<std::string>();
      const std::optional<DType> t = find_dtype(v);
      if (!t || *t == DType::F8_E4M3)
        throw std::invalid_argument(std::string("--") + flag + ": '" + v + "' is not a type GGUF holds (" +
                                    std::string(repack_target_names()) + ")");
      return *t;
    };
    return QuantRecipe::moe(type_arg("experts"), type_arg("rest"));
  }();
  if (args.count("tensor-type"))
    for (const std::string& spec : args["tensor-type"].as<std::vector<std::string>>()) {
      try {
        recipe.add_override(spec);
      } catch (const std::exception& e) {
        throw std::invalid_argument(std::string("--tensor-type: ") + e.what());
      }
    }

  const int threads = args["threads"].as<int>();
  if (threads < 0 || threads > 4096) throw std::invalid_argument("--threads: must be between 0 and 4096");
  const std::string out = args["output"].as<std::string>();
  if (!out.ends_with(".gguf")) throw std::invalid_argument("--output: '" + out + "' must end in .gguf");
  const bool quiet = args.count("quiet") > 0;
  uint64_t split_max = 0;
  if (args.count("split-max-size")) {
    const std::string v = args["split-max-size"].as<std::string>();
    try {
      split_max = uint64_t(parse_byte_size(v));
    } catch (const std::exception& e) {
      throw std::invalid_argument(std::string("--split-max-size: ") + e.what());
    }
    if (split_max < (uint64_t(1) << 20))
      throw std::invalid_argument("--split-max-size: '" + v + "' is under 1 MiB (a size like 45G is meant)");
  }

  std::optional<ImportanceMatrix> imatrix;
  if (args.count("imatrix")) imatrix = ImportanceMatrix::load(args["imatrix"].as<std::string>());

  QuantizeOptions o;
  o.input = args["model"].as<std::string>();
  o.output = out;
  o.split_max_bytes = split_max;
  // The recipe's layer rules count the blocks before the MTP layers.
  const OpenCheckpoint input = open_checkpoint(o.input);
  const int n_layers = int(input.config.num_hidden_layers);
  int64_t fallbacks = 0, imatrix_hits = 0;
  o.type_for = [&](const GgufExportTensor& t) {
    const RecipeChoice c = recipe.choose(RecipeTensor{t.name, t.dims, int(t.layer), n_layers});
    if (keep && !c.overridden) {
      if (!t.stored_type)
        throw std::runtime_error("--keep-types: the input does not hold tensor '" + t.name +
                                 "' in a GGUF type (an FP8 checkpoint, or attn_k_b from an older file's attn_kv_b): "
                                 "give --type");
      return *t.stored_type;
    }
    if (c.fell_back()) ++fallbacks;
    return c.type;
  };
  if (imatrix)
    o.importance = [&](const std::string& name, int64_t expert, int64_t ne0) -> const float* {
      const float* w = imatrix->weights(name, expert, ne0);
      if (w) ++imatrix_hits;
      return w;
    };
  o.threads = threads;
  if (args.count("type")) o.file_type = preset_file_type(args["type"].as<std::string>());
  // The same tensors: the same general.file_type (e.g. Q4_K_M, not the _S its bytes suggest).
  if (keep && !args.count("tensor-type") && input.gguf && input.gguf->first().has("general.file_type"))
    o.file_type = input.gguf->first().get_u32("general.file_type");
  if (args.count("name")) o.name = args["name"].as<std::string>();
  g_cancel.store(false);
  o.cancel = &g_cancel;
  std::unique_ptr<ProgressBar> bar;
  o.progress = [&](const QuantizeProgress& p) {
    if (quiet) return;
    if (!bar) bar = std::make_unique<ProgressBar>(p.bytes_in_total, "quantize");
    bar->update(p.bytes_in_done, p.tensor->name + " " + std::string(dtype_name(p.type)));
  };
  if (!quiet)
    std::fprintf(stderr, "recipe: %s\n",
                 keep ? ("every tensor keeps its type (--keep-types)" +
                         std::string(args.count("tensor-type") ? " but those --tensor-type names" : ""))
                            .c_str()
                      : recipe.describe().c_str());
  QuantizeResult r;
  {
    SigintScope sigint;
    r = quantize_model(o);
  }
  if (bar) bar->finish();

  std::printf("%-6s %8s %14s %8s\n", "type", "tensors", "bytes", "share");
  for (const auto& [dt, n] : r.by_type)
    std::printf("%-6s %8lld %14s %7.1f%%\n", std::string(dtype_name(dt)).c_str(), (long long)n.tensors,
                human_bytes(double(n.bytes)).c_str(), r.tensor_bytes ? 100.0 * double(n.bytes) / double(r.tensor_bytes) : 0.0);
  std::printf("%-6s %8lld %14s\n", "total", (long long)r.tensors, human_bytes(double(r.tensor_bytes)).c_str());
  if (fallbacks)
    std::printf("%lld tensors fell back to another type: their rows are not a whole number of the type's blocks\n",
                (long long)fallbacks);
  if (r.tokenizer.empty())
    std::printf("no tokenizer in the input: llama.cpp cannot run this file, hearth needs --tokenizer FILE\n");
  else
    std::printf("tokenizer from %s\n", r.tokenizer.c_str());
  if (imatrix) std::printf("importance matrix used for %lld matrices\n", (long long)imatrix_hits);
  if (r.copied) std::printf("%lld tensors copied as the input stores them (their type did not change)\n", (long long)r.copied);
  if (r.files.size() > 1 || split_max > 0)
    for (const auto& f : r.files) std::printf("shard %s (%s)\n", f.string().c_str(), human_bytes(double(fs::file_size(f))).c_str());
  const std::string what =
      split_max > 0 ? r.files.front().string() + " and " + std::to_string(r.files.size() - 1) + " more shards" : out;
  std::printf("wrote %s (%s, %s, file type %u) in %.1f s\n", what.c_str(), human_bytes(double(r.file_bytes)).c_str(),
              std::string(r.config.model_type).c_str(), r.file_type, r.seconds);
  return 0;
}

}  // namespace hearth::cli

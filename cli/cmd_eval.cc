// hearth perplexity and hearth kld: what a model (or a quantized copy of one) costs in
// prediction quality on a text. The evaluation itself is engine/eval.*.
#include <algorithm>
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/cpu_gemm_flag.h"
#include "cli/kv_cache_flag.h"
#include "cli/flag_errors.h"
#include "cli/text_input.h"
#include "cli/generation.h"
#include "cli/model_tokenizer.h"
#include "cli/numa_flags.h"
#include "engine/eval.h"
#include "engine/model.h"
#include "engine/tokenizer.h"

namespace hearth::cli {

namespace {

struct EvalFlags {
  std::vector<std::string> models;
  std::string text_file;
  EvalOptions eval;
  int threads = 0;
  bool json = false;
  ModelLoadOptions load;  // --repack: the evaluated model (perplexity) or the candidate (kld); --no-mmap, --no-interleave: all
  NumaChoice numa;        // --numa
};

void add_eval_options(cxxopts::Options& opts, const char* model_help) {
  opts.add_options()
      ("m,model", model_help, cxxopts::value<std::string>())
      ("f,file", "the text to evaluate, UTF-8 (- for stdin)", cxxopts::value<std::string>())
      ("ctx", "tokens per chunk; the second half of each chunk is scored", cxxopts::value<int64_t>()->default_value("512"))
      ("chunks", "evaluate at most N chunks (0: every whole chunk of the text)", cxxopts::value<int64_t>()->default_value("0"))
      ("t,threads", "worker threads (default: one per physical core)", cxxopts::value<int>()->default_value("0"))
      ("json", "print one JSON object instead of the table")
      ("h,help", "show this help");
  add_repack_option(opts);
  add_numa_option(opts);
  add_cpu_gemm_option(opts);
  add_kv_cache_option(opts);
}

// nullopt-like: returns false after printing help.
bool parse_eval_flags(cxxopts::Options& opts, int argc, char** argv, size_t n_models, EvalFlags& f) {
  const auto args = parse_flags(opts, argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", opts.help().c_str());
    return false;
  }
  if (!args.unmatched().empty()) throw std::invalid_argument("unexpected argument '" + args.unmatched()[0] + "'");
  for (const auto& kv : args.arguments())  // each -m in order (not split at commas)
    if (kv.key() == "model") f.models.push_back(kv.value());
  if (f.models.size() != n_models)
    throw std::invalid_argument(n_models == 1 ? "give the model with exactly one -m MODEL (see --help)"
                                              : "give exactly two models: -m BASE -m CANDIDATE (see --help)");
  if (!args.count("file")) throw std::invalid_argument("--file is required (see --help)");
  f.text_file = args["file"].as<std::string>();
  f.eval.ctx = args["ctx"].as<int64_t>();
  if (f.eval.ctx < 3) throw std::invalid_argument("--ctx: must be at least 3 (half of each chunk is context, the rest is scored)");
  f.eval.max_chunks = args["chunks"].as<int64_t>();
  if (f.eval.max_chunks < 0) throw std::invalid_argument("--chunks: must be >= 0 (0: all)");
  f.threads = args["threads"].as<int>();
  if (f.threads < 0 || f.threads > 4096) throw std::invalid_argument("--threads: must be between 0 and 4096");
  f.json = args.count("json") > 0;
  f.load = parse_load_options(args, f.threads);
  f.numa = parse_numa_flag(args);
  apply_cpu_gemm_flag(args);
  apply_kv_cache_flag(args);
  return true;
}


// BOS, then the text as plain text (special-token markers in it are not parsed), as
// llama.cpp tokenizes its perplexity input. Sets the softmax to the tokenizer's ids.
std::vector<int32_t> tokenize_text(const std::string& model_dir, const std::string& text, EvalFlags& f) {
  // A directory's tokenizer.json, or a .gguf model's own tokenizer.
  const Tokenizer tok = load_model_tokenizer(model_dir, "", "the text is tokenized with the (base) model's tokenizer");
  std::vector<int32_t> ids = text_token_ids(tok, text);
  if (int64_t(ids.size()) < f.eval.ctx)
    throw std::invalid_argument("the text has " + std::to_string(ids.size()) + " tokens (BOS included), fewer than one chunk of --ctx " +
                                std::to_string(f.eval.ctx) + " tokens");
  f.eval.bos = tok.bos_id();
  f.eval.n_vocab = tok.size();
  return ids;
}

void check_vocab(const Model& m, const std::string& dir, int64_t tokenizer_ids) {
  if (m.config().vocab_size < tokenizer_ids)
    throw std::invalid_argument("model '" + dir + "' has a vocabulary of " + std::to_string(m.config().vocab_size) +
                                " ids, fewer than the tokenizer's " + std::to_string(tokenizer_ids));
}

double gb(uint64_t bytes) { return double(bytes) / 1e9; }

int model_column(const std::vector<std::string>& names) {
  size_t w = 5;
  for (const auto& n : names) w = std::max(w, n.size());
  return int(w);
}

void print_plan(const EvalFlags& f, size_t tokens) {
  const int64_t chunks = eval_chunk_count(int64_t(tokens), f.eval);
  std::fprintf(stderr, "%zu tokens: %lld chunk%s of %lld tokens, %lld scored per chunk\n", tokens, (long long)chunks,
               chunks == 1 ? "" : "s", (long long)f.eval.ctx, (long long)(f.eval.ctx - 1 - f.eval.ctx / 2));
}

}  // namespace

int cmd_perplexity(int argc, char** argv) {
  cxxopts::Options opts(argv[0],
                        "Perplexity of a model on a text: the text (BOS first) is cut into chunks of --ctx tokens,\n"
                        "each run from an empty cache; the second half of each chunk is scored (as llama.cpp does).");
  add_eval_options(opts, "model directory (config.json, safetensors, tokenizer.json)");
  EvalFlags f;
  if (!parse_eval_flags(opts, argc, argv, 1, f)) return 0;
  const std::string text = read_text_file(f.text_file);
  const std::vector<int32_t> ids = tokenize_text(f.models[0], text, f);

  Model model = Model::load(f.models[0], f.load);
  check_vocab(model, f.models[0], f.eval.n_vocab);
  const std::unique_ptr<NumaExperts> numa = shard_experts(f.numa, model, f.threads);
  f.eval.numa_experts = {numa.get()};
  ThreadPool pool(f.threads);
  print_plan(f, ids.size());
  f.eval.progress = [](const EvalProgress& p) {
    std::fprintf(stderr, "chunk %lld/%lld: PPL %.4f\n", (long long)p.chunk, (long long)p.chunks, p.perplexity);
    std::fflush(stderr);
  };
  const PerplexityResult r = evaluate_perplexity(model, pool, ids, f.eval);
  const uint64_t bytes = model_weight_bytes(model);

  if (f.json) {
    const nlohmann::json j = {{"model", f.models[0]},    {"bytes", bytes},      {"ctx", f.eval.ctx},
                              {"chunks", r.chunks},      {"tokens", ids.size()}, {"scored", r.nll.size()},
                              {"mean_nll", r.mean_nll},  {"perplexity", r.perplexity}};
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  const int w = model_column(f.models);
  std::printf("%-*s  %9s  %14s\n", w, "model", "size GB", "PPL");
  std::printf("%-*s  %9.3f  %14.4f\n", w, f.models[0].c_str(), gb(bytes), r.perplexity);
  std::printf("\n%zu positions scored in %lld chunk%s of %lld tokens (mean NLL %.6f)\n", r.nll.size(),
              (long long)r.chunks, r.chunks == 1 ? "" : "s", (long long)f.eval.ctx, r.mean_nll);
  return 0;
}

int cmd_kld(int argc, char** argv) {
  cxxopts::Options opts(argv[0],
                        "KL divergence of a candidate model (e.g. a quantized copy) from a base model on a text, per\n"
                        "scored position: KL(P_base || P_candidate), with top-1 agreement and both perplexities.\n"
                        "The text is tokenized with the base model's tokenizer; chunks as for hearth perplexity.");
  add_eval_options(opts, "model, given twice: -m BASE (a directory with tokenizer.json) -m CANDIDATE (a directory "
                         "or .gguf file)");
  EvalFlags f;
  if (!parse_eval_flags(opts, argc, argv, 2, f)) return 0;
  const std::string text = read_text_file(f.text_file);
  const std::vector<int32_t> ids = tokenize_text(f.models[0], text, f);

  // --repack converts the candidate only (so -m M -m M --repack TYPE measures TYPE), and
  // --kv-cache is the candidate's cache (-m M -m M --kv-cache fp8 measures the FP8
  // cache; the base keeps f32); --no-mmap holds both in memory; --no-interleave keeps
  // both as stored.
  ModelLoadOptions base_load;
  base_load.threads = f.load.threads;
  base_load.in_memory = f.load.in_memory;
  base_load.populate = f.load.populate;
  base_load.interleave = f.load.interleave;
  Model base = Model::load(f.models[0], base_load);
  Model candidate = Model::load(f.models[1], f.load);
  if (base.config().vocab_size != candidate.config().vocab_size)
    throw std::invalid_argument("the models' vocabularies differ: '" + f.models[0] + "' has " +
                                std::to_string(base.config().vocab_size) + " ids, '" + f.models[1] + "' has " +
                                std::to_string(candidate.config().vocab_size));
  check_vocab(base, f.models[0], f.eval.n_vocab);
  const std::unique_ptr<NumaExperts> base_numa = shard_experts(f.numa, base, f.threads);
  const std::unique_ptr<NumaExperts> candidate_numa = shard_experts(f.numa, candidate, f.threads);
  f.eval.numa_experts = {base_numa.get(), candidate_numa.get()};
  f.eval.kv_cache = {KvCacheType::kF32, default_kv_cache_type()};
  ThreadPool pool(f.threads);
  print_plan(f, ids.size());
  f.eval.progress = [](const EvalProgress& p) {
    std::fprintf(stderr, "chunk %lld/%lld: PPL base %.4f candidate %.4f, KLD mean %.6f, top-1 %.2f%%\n",
                 (long long)p.chunk, (long long)p.chunks, p.perplexity, p.candidate_perplexity, p.kld_mean,
                 100.0 * p.top1);
    std::fflush(stderr);
  };
  const KldResult r = evaluate_kld(base, candidate, pool, ids, f.eval);
  const Summary& k = r.kld_summary;

  if (f.json) {
    const nlohmann::json j = {
        {"base", {{"model", f.models[0]}, {"bytes", r.base_bytes}, {"mean_nll", r.base.mean_nll}, {"perplexity", r.base.perplexity}}},
        {"candidate",
         {{"model", f.models[1]}, {"bytes", r.candidate_bytes}, {"mean_nll", r.candidate.mean_nll}, {"perplexity", r.candidate.perplexity},
          {"kv_cache", kv_cache_type_name(default_kv_cache_type())}}},
        {"ctx", f.eval.ctx},
        {"chunks", r.base.chunks},
        {"tokens", ids.size()},
        {"scored", r.kld.size()},
        {"kld", {{"mean", k.mean}, {"median", k.median}, {"p99", k.p99}, {"max", k.max}}},
        {"top1_agreement", r.top1_agreement}};
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  const int w = model_column(f.models);
  std::printf("%-9s  %-*s  %9s  %14s\n", "", w, "model", "size GB", "PPL");
  std::printf("%-9s  %-*s  %9.3f  %14.4f\n", "base", w, f.models[0].c_str(), gb(r.base_bytes), r.base.perplexity);
  std::printf("%-9s  %-*s  %9.3f  %14.4f\n", "candidate", w, f.models[1].c_str(), gb(r.candidate_bytes),
              r.candidate.perplexity);
  if (default_kv_cache_type() != KvCacheType::kF32)
    std::printf("(KV cache: %s for the candidate, f32 for the base)\n", kv_cache_type_name(default_kv_cache_type()));
  std::printf("\nKLD mean    %12.6f\nKLD median  %12.6f\nKLD p99     %12.6f\nKLD max     %12.6f\ntop-1       %11.2f %%\n",
              k.mean, k.median, k.p99, k.max, 100.0 * r.top1_agreement);
  std::printf("\n%zu positions scored in %lld chunk%s of %lld tokens\n", r.kld.size(), (long long)r.base.chunks,
              r.base.chunks == 1 ? "" : "s", (long long)f.eval.ctx);
  return 0;
}

}  // namespace hearth::cli

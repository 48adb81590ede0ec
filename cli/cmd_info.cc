// hearth info: what a checkpoint is, and where its bytes go.
#include <cstdio>
#include <cxxopts.hpp>
#include <string>
#include <utility>

#include "cli/commands.h"
#include "cli/flag_errors.h"
#include "cli/generation.h"
#include "engine/gguf_model.h"
#include "engine/model.h"

namespace hearth::cli {

namespace {

std::string human(double v, const char* unit) {
  const char* prefixes[] = {"", "K", "M", "G", "T"};
  int i = 0;
  while (v >= 1000.0 && i < 4) {
    v /= 1000.0;
    ++i;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, i ? "%.2f %s%s" : "%.0f %s%s", v, prefixes[i], unit);
  return buf;
}

}  // namespace

int cmd_info(int argc, char** argv) {
  cxxopts::Options opts(argv[0], "Print a model's configuration and its parameter and byte counts by kind.");
  opts.add_options()("m,model", "model directory (config.json + safetensors) or .gguf file", cxxopts::value<std::string>())
      ("t,threads", "threads for --repack (default: one per physical core)", cxxopts::value<int>()->default_value("0"))
      ("h,help", "show this help");
  add_repack_option(opts);
  const auto args = parse_flags(opts, argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", opts.help().c_str());
    return 0;
  }
  if (!args.count("model")) throw std::invalid_argument("--model is required (see --help)");
  const int threads = args["threads"].as<int>();
  if (threads < 0 || threads > 4096) throw std::invalid_argument("--threads: must be between 0 and 4096");
  const std::string path = args["model"].as<std::string>();
  // Model::load's two steps, so the shard count comes from the files the load opened.
  OpenCheckpoint ck = open_checkpoint(path);
  std::string shards;  // a split GGUF: how many files the model is in
  if (const size_t n = ck.gguf ? ck.gguf->files().size() : 0; n > 1) shards = ", " + std::to_string(n) + " shards";
  const Model model(std::move(ck.config), std::move(ck.store), parse_load_options(args, threads));
  const ModelConfig& c = model.config();
  std::printf("model        %s (%s%s)\n", path.c_str(), c.model_type.c_str(), shards.c_str());
  std::printf("layers       %lld (%lld dense, %lld MoE) + %lld MTP\n", (long long)c.num_hidden_layers,
              (long long)c.first_k_dense_replace, (long long)(c.num_hidden_layers - c.first_k_dense_replace),
              (long long)c.num_nextn_predict_layers);
  std::printf("hidden       %lld, vocab %lld, dense intermediate %lld\n", (long long)c.hidden_size,
              (long long)c.vocab_size, (long long)c.intermediate_size);
  std::printf("attention    MLA: %lld heads, q_lora %lld, kv_lora %lld, qk nope %lld + rope %lld, v %lld\n",
              (long long)c.num_attention_heads, (long long)c.q_lora_rank, (long long)c.kv_lora_rank,
              (long long)c.qk_nope_head_dim, (long long)c.qk_rope_head_dim, (long long)c.v_head_dim);
  if (c.has_indexer())
    std::printf("indexer      DSA: %lld heads x %lld, top-%lld keys per query\n", (long long)c.index_n_heads,
                (long long)c.index_head_dim, (long long)c.index_topk);
  std::printf("experts      %lld routed (top-%lld, %lld groups, top-%lld groups, scale %.3g) + %lld shared, intermediate %lld\n",
              (long long)c.n_routed_experts, (long long)c.num_experts_per_tok, (long long)c.n_group,
              (long long)c.topk_group, c.routed_scaling_factor, (long long)c.n_shared_experts,
              (long long)c.moe_intermediate_size);
  std::printf("rope         theta %.6g", c.rope_theta);
  if (c.rope_scaling.yarn)
    std::printf(", YaRN x%.6g from %lld positions", c.rope_scaling.factor,
                (long long)c.rope_scaling.original_max_position_embeddings);
  std::printf("\n");
  if (c.quantization.present)
    std::printf("quantization fp8 %s, %lldx%lld block scales%s\n", c.quantization.fmt.c_str(),
                (long long)c.quantization.block_rows, (long long)c.quantization.block_cols,
                c.quantization.scale_fmt.empty() ? "" : (" (" + c.quantization.scale_fmt + ")").c_str());

  if (const RepackSummary& rp = model.repack_summary(); rp.target) {
    std::printf("repack       to %s:", std::string(dtype_name(*rp.target)).c_str());
    for (const auto& [dt, n] : rp.converted) std::printf(" %lld %s,", (long long)n, std::string(dtype_name(dt)).c_str());
    std::printf(" %lld as stored (linear weights; embeddings, router, weights_proj as stored)\n", (long long)rp.kept);
  }

  if (const RepackSummary& rp = model.repack_summary(); rp.interleaved || rp.interleaved_q6 || rp.not_interleaved) {
    std::printf("interleave   %lld Q4_K weights as Q4_K_R8 (eight rows side by side)", (long long)rp.interleaved);
    if (rp.interleaved_q6) std::printf(", %lld Q6_K weights as Q6_K_R16 (sixteen)", (long long)rp.interleaved_q6);
    if (rp.not_interleaved)
      std::printf("; %lld left as stored: MemAvailable cannot hold their copy", (long long)rp.not_interleaved);
    std::printf("\n");
  }

  const ModelFootprint f = model.footprint();
  std::printf("\n%-16s %14s %14s\n", "kind", "params", "bytes");
  auto row = [](const char* name, const ParamCounts& p) {
    std::printf("%-16s %14s %14s\n", name, human(double(p.params), "").c_str(), human(double(p.bytes), "B").c_str());
  };
  row("attention", f.attention);
  row("routed experts", f.routed_experts);
  row("shared experts", f.shared_experts);
  row("dense MLP", f.dense_mlp);
  row("embeddings+head", f.embeddings);
  row("norms+router", f.norms_router);
  row("MTP layer", f.mtp);
  row("total", f.total());
  return 0;
}

}  // namespace hearth::cli

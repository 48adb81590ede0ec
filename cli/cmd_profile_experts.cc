// hearth profile-experts: how often each routed expert is chosen on a text, the ranking
// `hearth plan --profile` and the offloaded forward pass use to fill the GPU with the
// experts that matter most. The text is cut into chunks as for hearth perplexity (BOS
// first, --ctx tokens each, each from an empty cache); every token of every chunk counts.
#include <algorithm>
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "cli/commands.h"
#include "cli/flag_errors.h"
#include "cli/text_input.h"
#include "cli/model_tokenizer.h"
#include "engine/eval.h"
#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "offload/placement.h"

namespace hearth::cli {


int cmd_profile_experts(int argc, char** argv) {
  cxxopts::Options opts(argv[0],
                        "Count how often each routed expert is chosen on a text and write the frequencies (per layer\n"
                        "and expert, the fraction of tokens routed there) as JSON, for hearth plan --profile. Chunks\n"
                        "as for hearth perplexity: --ctx tokens each (BOS first), each run from an empty cache.");
  add_text_pass_options(opts, "the text, UTF-8", "the profile to write (JSON; written to OUTPUT.tmp, then renamed)");
  const auto args = parse_flags(opts, argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", opts.help().c_str());
    return 0;
  }
  const TextPassFlags f = parse_text_pass_flags(args);
  const std::string &model_path = f.model, &out_path = f.output;
  const EvalOptions& eo = f.eval;
  const int threads = f.threads;
  const TextChunks text = text_pass_chunks(f);
  const std::vector<int32_t>& ids = text.ids;
  const int64_t chunks = text.count;

  ModelLoadOptions load;
  load.threads = threads;
  load.populate = true;  // every chunk of the text runs the forward pass
  const Model model = Model::load(model_path, load);
  const ModelConfig& c = model.config();
  if (eo.ctx > c.max_position_embeddings)
    throw std::invalid_argument("--ctx " + std::to_string(eo.ctx) + " exceeds the model's context of " +
                                std::to_string(c.max_position_embeddings));
  if (c.n_routed_experts < 1) throw std::invalid_argument("model '" + model_path + "' has no routed experts");
  ThreadPool pool(threads);
  Forward fwd(model, pool);
  ExpertCounts counts;
  StepProbes probes;
  probes.expert_counts = &counts;
  fwd.set_probes(probes);

  std::fprintf(stderr, "%zu tokens: %lld chunk%s of %lld tokens\n", ids.size(), (long long)chunks, chunks == 1 ? "" : "s",
               (long long)eo.ctx);
  for (int64_t i = 0; i < chunks; ++i) {
    const std::vector<int32_t> chunk = text.chunk(i);
    KvCache cache(c);
    const SeqId seq = cache.add_sequence();
    fwd.step(cache, {{seq, chunk}}, /*logits=*/nullptr);  // the routing is all we need: no head
    std::fprintf(stderr, "chunk %lld/%lld\n", (long long)(i + 1), (long long)chunks);
    std::fflush(stderr);
  }

  ExpertProfile profile;
  profile.tokens = counts.tokens;
  profile.experts_per_tok = c.num_experts_per_tok;
  profile.freq.resize(size_t(c.num_hidden_layers));
  std::vector<std::tuple<double, int64_t, int64_t>> ranked;  // (freq, layer, expert)
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    if (!c.is_moe_layer(l)) continue;
    const std::vector<int64_t> none(size_t(c.n_routed_experts), 0);
    const std::vector<int64_t>& hits = size_t(l) < counts.hits.size() && !counts.hits[size_t(l)].empty() ? counts.hits[size_t(l)] : none;
    for (int64_t e = 0; e < c.n_routed_experts; ++e) {
      const double f = counts.tokens ? double(hits[size_t(e)]) / double(counts.tokens) : 0.0;
      profile.freq[size_t(l)].push_back(f);
      ranked.emplace_back(f, l, e);
    }
  }
  profile.save(out_path);

  std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
    if (std::get<0>(a) != std::get<0>(b)) return std::get<0>(a) > std::get<0>(b);
    return std::make_pair(std::get<1>(a), std::get<2>(a)) < std::make_pair(std::get<1>(b), std::get<2>(b));
  });
  const int64_t never = std::count_if(ranked.begin(), ranked.end(), [](const auto& r) { return std::get<0>(r) == 0.0; });
  std::printf("wrote %s: %lld tokens in %lld chunk%s, %zu routed experts in %zu MoE layers (top-%lld)\n", out_path.c_str(),
              (long long)counts.tokens, (long long)chunks, chunks == 1 ? "" : "s", ranked.size(),
              ranked.size() / size_t(c.n_routed_experts), (long long)c.num_experts_per_tok);
  std::printf("uniform share   %.4f of tokens per expert\n", double(c.num_experts_per_tok) / double(c.n_routed_experts));
  auto list = [&](const char* label, auto begin, auto end) {
    std::printf("%-15s", label);
    for (auto it = begin; it != end; ++it)
      std::printf(" blk.%lld.ffn_exps.%lld %.4f", (long long)std::get<1>(*it), (long long)std::get<2>(*it), std::get<0>(*it));
    std::printf("\n");
  };
  const size_t shown = std::min<size_t>(5, ranked.size());
  list("most used", ranked.begin(), ranked.begin() + ptrdiff_t(shown));
  list("least used", ranked.rbegin(), ranked.rbegin() + ptrdiff_t(shown));
  std::printf("never chosen    %lld of %zu experts\n", (long long)never, ranked.size());
  return 0;
}

}  // namespace hearth::cli

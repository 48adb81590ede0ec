// hearth imatrix: collects an importance matrix (engine/imatrix.h) from a calibration
// text, for `hearth quantize --imatrix`. The text is cut into chunks exactly as for
// hearth perplexity (BOS replacing each chunk's first token, each chunk run from an empty
// cache); every weight product's float input rows are observed through StepProbes and
// accumulated under the weight's GGUF tensor name.
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "cli/commands.h"
#include "cli/flag_errors.h"
#include "cli/text_input.h"
#include "cli/model_tokenizer.h"
#include "engine/eval.h"
#include "engine/forward.h"
#include "engine/gguf_model.h"
#include "engine/imatrix.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/tokenizer.h"

namespace hearth::cli {

namespace {

// Where a weight's activations go in the importance matrix.
struct ImatrixTarget {
  std::string name;  // GGUF tensor name
  int64_t expert = 0, n_expert = 1;
};
using TargetMap = std::unordered_map<const WeightMatrix*, ImatrixTarget>;

void add_hf(TargetMap& map, const WeightMatrix& w, const std::string& hf) {
  const std::optional<std::string> g = gguf_tensor_name(hf);
  if (!g) throw std::logic_error("no GGUF name for '" + hf + "'");
  map[&w] = {*g, 0, 1};
}

// Every weight the forward pass multiplies, by GGUF name. kv_b is recorded under
// attn_kv_b (its prefill-path input, the latents); quantize writes it split into
// attn_k_b / attn_v_b, whose inputs in llama.cpp are different vectors, so those two get
// no entry and are quantized without an importance matrix.
TargetMap weight_targets(const Model& model) {
  TargetMap map;
  const int64_t n_expert = model.config().n_routed_experts;
  for (size_t l = 0; l < model.layers.size(); ++l) {
    const Layer& L = model.layers[l];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add_hf(map, L.attn.q_a, p + "self_attn.q_a_proj.weight");
    add_hf(map, L.attn.q_b, p + "self_attn.q_b_proj.weight");
    add_hf(map, L.attn.kv_a, p + "self_attn.kv_a_proj_with_mqa.weight");
    map[&L.attn.kv_b] = {"blk." + std::to_string(l) + "." + std::string(kGgufKvB), 0, 1};
    add_hf(map, L.attn.o, p + "self_attn.o_proj.weight");
    if (L.attn.has_indexer) {
      add_hf(map, L.attn.indexer.wq_b, p + "self_attn.indexer.wq_b.weight");
      add_hf(map, L.attn.indexer.wk, p + "self_attn.indexer.wk.weight");
      add_hf(map, L.attn.indexer.weights_proj, p + "self_attn.indexer.weights_proj.weight");
    }
    if (!L.is_moe) {
      add_hf(map, L.dense.gate, p + "mlp.gate_proj.weight");
      add_hf(map, L.dense.up, p + "mlp.up_proj.weight");
      add_hf(map, L.dense.down, p + "mlp.down_proj.weight");
      continue;
    }
    add_hf(map, L.moe.router, p + "mlp.gate.weight");
    const std::string blk = "blk." + std::to_string(l) + ".";
    for (size_t e = 0; e < L.moe.experts.size(); ++e) {
      const Mlp& m = L.moe.experts[e];
      map[&m.gate] = {blk + "ffn_gate_exps.weight", int64_t(e), n_expert};
      map[&m.up] = {blk + "ffn_up_exps.weight", int64_t(e), n_expert};
      map[&m.down] = {blk + "ffn_down_exps.weight", int64_t(e), n_expert};
    }
    if (L.moe.has_shared) {
      add_hf(map, L.moe.shared.gate, p + "mlp.shared_experts.gate_proj.weight");
      add_hf(map, L.moe.shared.up, p + "mlp.shared_experts.up_proj.weight");
      add_hf(map, L.moe.shared.down, p + "mlp.shared_experts.down_proj.weight");
    }
  }
  map[&model.lm_head] = {"output.weight", 0, 1};
  return map;
}


}  // namespace

int cmd_imatrix(int argc, char** argv) {
  cxxopts::Options opts(argv[0],
                        "Collect an importance matrix (per weight, the mean x^2 of each input column over the text's\n"
                        "tokens) in llama.cpp's GGUF imatrix format, for hearth quantize --imatrix. Chunks as for\n"
                        "hearth perplexity: --ctx tokens each (BOS first), each run from an empty cache.");
  add_text_pass_options(opts, "the calibration text, UTF-8", "the imatrix file to write (GGUF)");
  const auto args = parse_flags(opts, argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", opts.help().c_str());
    return 0;
  }
  const TextPassFlags f = parse_text_pass_flags(args);
  const std::string &model_path = f.model, &text_path = f.text, &out_path = f.output;
  const EvalOptions& eo = f.eval;
  const int threads = f.threads;
  const TextChunks text = text_pass_chunks(f);
  const std::vector<int32_t>& ids = text.ids;
  const int64_t chunks = text.count;

  ModelLoadOptions load;
  load.threads = threads;
  load.populate = true;  // every chunk of the text runs the forward pass
  const Model model = Model::load(model_path, load);
  if (eo.ctx > model.config().max_position_embeddings)
    throw std::invalid_argument("--ctx " + std::to_string(eo.ctx) + " exceeds the model's context of " +
                                std::to_string(model.config().max_position_embeddings));
  ThreadPool pool(threads);
  Forward fwd(model, pool);
  const TargetMap targets = weight_targets(model);
  ImportanceMatrix im;
  im.set_chunk_size(uint32_t(eo.ctx));
  im.add_dataset(std::filesystem::path(text_path).filename().string());
  const ActivationObserver observer = [&](const WeightMatrix* w, const float* x, int64_t rows, int64_t ld) {
    const auto it = targets.find(w);
    if (it == targets.end()) return;
    for (int64_t r = 0; r < rows; ++r) im.add(it->second.name, it->second.expert, it->second.n_expert, x + r * ld, w->cols);
  };
  StepProbes probes;
  probes.activations = &observer;
  fwd.set_probes(probes);

  std::fprintf(stderr, "%zu tokens: %lld chunk%s of %lld tokens\n", ids.size(), (long long)chunks, chunks == 1 ? "" : "s",
               (long long)eo.ctx);
  std::vector<float> logits(size_t(eo.ctx * model.config().vocab_size));
  for (int64_t c = 0; c < chunks; ++c) {
    const std::vector<int32_t> chunk = text.chunk(c);
    KvCache cache(model.config());
    const SeqId seq = cache.add_sequence();
    fwd.step(cache, {{seq, chunk}}, logits.data(), AttentionPath::kAuto, /*last_only=*/false);
    im.finish_chunk();
    std::fprintf(stderr, "chunk %lld/%lld: %zu tensors\n", (long long)(c + 1), (long long)chunks, im.size());
    std::fflush(stderr);
  }
  im.save(out_path);
  std::printf("wrote %s: %zu tensors from %lld chunk%s of %lld tokens\n", out_path.c_str(), im.size(), (long long)chunks,
              chunks == 1 ? "" : "s", (long long)eo.ctx);
  return 0;
}

}  // namespace hearth::cli

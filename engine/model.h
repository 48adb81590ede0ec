// The network's weights, arranged by layer, as views into the mapped checkpoint.
//
// Linear weights stay in their stored format (FP8 with block scales, BF16, ...) and
// are decoded inside the kernels; only the small 1-D vectors (norm weights, biases)
// are widened to float here. Loading checks every shape against the config, so a
// mismatched checkpoint fails at load with the tensor's name, not mid-forward.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/config.h"
#include "engine/safetensors.h"
#include "offload/weight_arena.h"
#include "quant/weight_matrix.h"

namespace hearth {

struct Indexer {  // DSA lightning indexer (deepseek_v32)
  WeightMatrix wq_b;          // [index_heads * index_head_dim, q_lora_rank]
  WeightMatrix wk;            // [index_head_dim, hidden]
  WeightMatrix weights_proj;  // [index_heads, hidden]
  std::vector<float> k_norm_weight, k_norm_bias;  // LayerNorm over index_head_dim
};

struct Attention {  // multi-head latent attention
  WeightMatrix q_a, q_b;        // hidden -> q_lora -> heads * (nope + rope)
  std::vector<float> q_a_norm;  // RMSNorm over q_lora
  WeightMatrix kv_a;            // hidden -> kv_lora + rope
  std::vector<float> kv_a_norm; // RMSNorm over kv_lora
  WeightMatrix kv_b;            // kv_lora -> heads * (nope + v); rows of head h: [h*(nope+v), (h+1)*(nope+v))
  // kv_b as llama.cpp's GGUF files split it, where they store it in a block format (kv_b
  // is then rebuilt as F32, which absorbed attention would have to stream whole): k_b
  // [heads * kv_lora][nope], head h's rows h*kv_lora.. being W_uk's columns (q_nope ->
  // latent space is a plain row product), and v_b [heads * v][kv_lora] (W_uv). Absorbed
  // attention uses them when split_kv_b(); the expanded (prefill) path uses kv_b.
  WeightMatrix k_b, v_b;
  bool split_kv_b() const { return k_b.data && v_b.data; }
  WeightMatrix o;               // heads * v -> hidden
  bool has_indexer = false;
  Indexer indexer;
};

struct Mlp {  // SiLU-gated: down(silu(gate(x)) * up(x))
  WeightMatrix gate, up, down;
  // False once the weights were handed to NUMA shards (release_routed_experts).
  bool holds_weights() const { return gate.data && up.data && down.data; }
};

struct Moe {
  WeightMatrix router;              // [n_routed_experts, hidden]
  std::vector<float> router_bias;   // e_score_correction_bias (selection only); empty if absent
  std::vector<Mlp> experts;
  bool has_shared = false;
  Mlp shared;                       // the shared expert(s), fused along the intermediate dim
};

struct Layer {
  std::vector<float> attn_norm, ffn_norm;
  Attention attn;
  bool is_moe = false;
  Mlp dense;  // when !is_moe
  Moe moe;    // when is_moe
};

// Byte counts by the kinds a placement plan cares about.
struct ParamCounts {
  int64_t params = 0, bytes = 0;
};
struct ModelFootprint {
  ParamCounts attention, routed_experts, shared_experts, dense_mlp, embeddings, norms_router, mtp;
  ParamCounts total() const;
};

struct ModelLoadOptions {
  // Convert the linear weights to this format at load (engine/repack.h): attention
  // (q_a, q_b, kv_a, kv_b, o, indexer wq_b and wk), dense MLPs, routed and shared experts
  // and lm_head. The embeddings (a lookup table, one row read per token), the MoE router
  // and the indexer's weights_proj (small and precision-sensitive: they pick experts and
  // keys) stay as stored. A weight whose row length the target's blocks do not divide
  // gets Q8_0 when that fits (K-quant targets) or stays as stored. nullopt: no repacking.
  std::optional<DType> repack;
  int threads = 0;  // threads for the conversion and the copy (0: one per physical core)
  // Copy every weight still read in place from the checkpoint's mapped files (after any
  // repack) into huge-page memory the model owns (offload/weight_arena.h), as llama.cpp's
  // --no-mmap: decode streams 2 MiB pages instead of 4 KiB page-cache pages, and nothing
  // is read from disk after the load. Refused, naming both sizes, when MemAvailable cannot
  // hold the copy.
  bool in_memory = false;
  // Without in_memory: fill the page tables of every weight read in place from a mapped
  // file during the load (offload/memory.h's populate_read), reading from disk what the
  // page cache lacks, as llama.cpp maps its files with MAP_POPULATE. Otherwise each
  // weight's first use faults page by page, and waits on the disk where the page cache
  // lacks it: a fresh load's first tokens pick routed experts never read before. Skipped
  // when the mapped weights exceed MemAvailable (Model::mapped_weights says so).
  bool populate = false;
  // Lay out every Q4_K linear weight whose rows come in whole groups of eight as Q4_K_R8
  // (quant/interleaved.h) after any repack: eight rows side by side, which the CPU's
  // kernels compute together; and, where the CPU has AVX2 (its kernels' levels), every
  // Q6_K one in whole groups of sixteen as Q6_K_R16. Same values; the dot products
  // round differently from plain ones. kv_b and k_b stay as stored (absorbed attention
  // reads kv_b transposed; k_b's rows are shorter than a block); v_b takes the layout
  // when v_head_dim is a multiple of the group. The rearranged copy lives in huge-page
  // memory the model owns. For the CPU only: a GPU cannot run the layout. Weights that
  // would need a copy stay as stored when MemAvailable cannot hold it (counted in
  // RepackSummary::not_interleaved).
  bool interleave = false;
};

// One tensor's bytes (or an FP8 scale array's) read in place from a mapped file.
struct MappedPiece {
  const uint8_t* from;
  size_t bytes;
};

// The weights a model reads in place from mapped checkpoint files.
struct MappedWeights {
  uint64_t bytes = 0;                  // counted when ModelLoadOptions::populate asked for it
  std::optional<uint64_t> available;   // MemAvailable at that time
  bool populated = false;              // page tables filled at load
};

// What a repack did: how many weights got each format, and how many stayed as stored.
struct RepackSummary {
  std::optional<DType> target;
  std::map<DType, int64_t> converted;  // by resulting format
  int64_t kept = 0;                    // already in the format, or no format fits
  int64_t interleaved = 0;             // Q4_K weights laid out as Q4_K_R8 (ModelLoadOptions::interleave)
  int64_t interleaved_q6 = 0;          // Q6_K weights laid out as Q6_K_R16 (likewise)
  int64_t not_interleaved = 0;         // ... left as stored: no RAM for their copy
};

class Model {
 public:
  // Loads a Hugging Face directory (config.json + safetensors) or a GGUF file (a regular
  // file named *.gguf or starting with the GGUF magic; engine/gguf_model.h). The store is
  // kept alive by the model.
  static Model load(const std::string& path, const ModelLoadOptions& options = {});
  Model(ModelConfig config, WeightStore store, const ModelLoadOptions& options = {});

  const ModelConfig& config() const { return config_; }
  const WeightStore& store() const { return store_; }

  WeightMatrix embed;  // [vocab, hidden]
  std::vector<Layer> layers;
  std::vector<float> final_norm;
  WeightMatrix lm_head;  // [vocab, hidden]

  // Counted from the checkpoint's tensors (the MTP layer apart: the forward pass does not
  // use it), with repacked weights at their new size (and their FP8 scales at none).
  ModelFootprint footprint() const;
  const RepackSummary& repack_summary() const { return repack_; }
  const MappedWeights& mapped_weights() const { return mapped_; }

 private:
  void repack(const ModelLoadOptions& options);
  void interleave(const ModelLoadOptions& options);
  void copy_into_memory(const ModelLoadOptions& options);
  void populate_mapped(const ModelLoadOptions& options);
  // The weight bytes still read in place from mapped files, each tensor once.
  std::vector<MappedPiece> mapped_pieces();
  // The linear weights repack and interleave consider, by checkpoint name.
  std::vector<std::pair<std::string, WeightMatrix*>> linear_weights();
  // Every weight matrix of the forward pass (the MTP layer apart), each once.
  std::vector<WeightMatrix*> matrices();

  ModelConfig config_;
  WeightStore store_;
  RepackSummary repack_;
  MappedWeights mapped_;
  std::shared_ptr<WeightArena> arena_;                        // repacked weight data (huge pages)
  std::unordered_map<std::string, int64_t> repacked_bytes_;  // by tensor name ("....weight")
};

}  // namespace hearth

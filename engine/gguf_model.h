// DeepSeek-V3 / V3.2 models in GGUF files, as llama.cpp's converter writes them: the
// architecture and metadata keys, the tensor names, and a view of a GGUF file's tensors
// under the Hugging Face names the rest of hearth uses (engine/model.h).
//
// Architectures: "deepseek32" for configs with the DSA indexer (deepseek_v32; the MTP
// layer is kept as block num_hidden_layers), "deepseek2" otherwise (deepseek_v3; like
// llama.cpp's converter, the MTP layers are not exported).
//
// Tensor layout differences from the Hugging Face checkpoint:
//   - routed experts: one 3-D tensor per layer and projection, blk.L.ffn_{gate,up,down}_exps,
//     the experts stacked (ne = [cols, rows, n_expert]); each expert is a contiguous slice.
//   - kv_b_proj [n_head * (nope + v), kv_lora] is split per head (llama.cpp's MLA
//     absorption layout): attn_k_b = the first nope rows of each head, transposed,
//     ne [nope, kv_lora, n_head]; attn_v_b = the last v rows, ne [kv_lora, v, n_head].
//     Older files have attn_kv_b (ne [kv_lora, n_head * (nope + v)]) instead.
//   - FP8 weights are stored dequantized (no weight_scale_inv tensors).
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/config.h"
#include "engine/gguf.h"
#include "engine/gguf_shards.h"
#include "engine/safetensors.h"

namespace hearth {

inline constexpr std::string_view kGgufArchDeepseek2 = "deepseek2";
inline constexpr std::string_view kGgufArchDeepseek32 = "deepseek32";

// "deepseek32" when the config has the DSA indexer, else "deepseek2".
std::string_view gguf_architecture(const ModelConfig& config);
// Blocks the file holds: num_hidden_layers, plus the MTP layers on deepseek32.
int64_t gguf_block_count(const ModelConfig& config);

// One row of the name table: a Hugging Face tensor name and its GGUF name. Per-layer rows
// give the part after "model.layers.L." and "blk.L." respectively.
struct GgufNamePair {
  std::string_view hf;
  std::string_view gguf;
};
// The table itself: global tensors, then per-layer tensors (attention, indexer, MLP,
// router, shared experts, MTP-only). Routed experts and k_b/v_b are not in it: they do
// not map one to one (see gguf_merged_expert_names, kGgufKB/kGgufVB).
const std::vector<GgufNamePair>& gguf_global_names();
const std::vector<GgufNamePair>& gguf_layer_names();
// Merged routed experts: "mlp.experts.E.<hf>" of every E -> "blk.L.<gguf>".
const std::vector<GgufNamePair>& gguf_merged_expert_names();
inline constexpr std::string_view kGgufKB = "attn_k_b.weight";
inline constexpr std::string_view kGgufVB = "attn_v_b.weight";
inline constexpr std::string_view kGgufKvB = "attn_kv_b.weight";

// What a GGUF tensor is, for choosing its type: the role of the weight in the network.
// MTP-layer tensors carry their role (attention, routed experts, ...) and mtp = true;
// kMtp is for the MTP layer's own projections (eh_proj, embed_tokens, shared_head_head).
enum class GgufTensorKind : uint8_t {
  kEmbedding,      // token_embd
  kOutput,         // output (lm_head)
  kNorm,           // RMSNorm weights (1-D)
  kAttention,      // MLA projections, including attn_k_b / attn_v_b
  kIndexer,        // DSA indexer: attn_q_b, attn_k, proj, k_norm
  kRouter,         // ffn_gate_inp and exp_probs_b
  kDenseFfn,       // the leading dense layers' MLP
  kSharedExpert,   // ffn_*_shexp
  kRoutedExperts,  // ffn_*_exps (merged, 3-D)
  kMtp,            // nextn.eh_proj, nextn.embed_tokens, nextn.shared_head_head
};
std::string_view gguf_tensor_kind_name(GgufTensorKind kind);  // "embedding", "routed_experts", ...

// How a GGUF tensor is made from the Hugging Face tensors.
enum class GgufLayout : uint8_t {
  kDirect,   // one HF tensor, same values in the same order
  kExperts,  // HF "<hf>E<hf_suffix>" for E in [0, n_experts), stacked
  kKB,       // attn_k_b from kv_b_proj: per head, the first nope rows, transposed
  kVB,       // attn_v_b from kv_b_proj: per head, the last v rows
};

// One tensor of a GGUF file of a config, with where its values come from.
struct GgufTensorSpec {
  std::string name;           // GGUF name, "blk.3.ffn_gate_exps.weight"
  std::vector<int64_t> dims;  // ne order: dims[0] is the row length
  int64_t layer = -1;         // block index; -1 for token_embd, output_norm, output
  GgufTensorKind kind = GgufTensorKind::kNorm;
  bool mtp = false;           // in an MTP layer (block >= num_hidden_layers)
  GgufLayout layout = GgufLayout::kDirect;
  int64_t n_experts = 0;      // kExperts: dims[2]
  std::string hf;             // kDirect/kKB/kVB: the HF tensor; kExperts: the part before E
  std::string hf_suffix;      // kExperts: the part after E (".gate_proj.weight")

  int64_t row_elems() const { return dims.empty() ? 1 : dims[0]; }
  int64_t rows() const;   // product of dims[1..]
  int64_t numel() const;
  // kExperts: the HF name of expert e.
  std::string expert_hf(int64_t e) const { return hf + std::to_string(e) + hf_suffix; }
};

// Every tensor of the GGUF file of `config`, in the order hearth writes them: token_embd,
// blocks 0..gguf_block_count-1 (attention, indexer, norms, MLP or router + experts +
// shared experts, then the MTP extras), output_norm, output (absent with tied
// embeddings). split_kv_b: attn_k_b + attn_v_b (llama.cpp's current layout), else
// attn_kv_b. Routed experts use the merged layout.
std::vector<GgufTensorSpec> gguf_tensor_specs(const ModelConfig& config, bool split_kv_b = true);

// The GGUF name of a Hugging Face tensor that maps one to one ("model.layers.3.mlp.gate.weight"
// -> "blk.3.ffn_gate_inp.weight"); nullopt for routed experts, kv_b_proj, block scales and
// names the table does not know.
std::optional<std::string> gguf_tensor_name(std::string_view hf_name);
// The inverse, for one-to-one names; nullopt for merged experts, attn_k_b / attn_v_b and
// unknown names.
std::optional<std::string> hf_tensor_name(std::string_view gguf_name);

// The metadata llama.cpp's converter writes for this config, in its order (architecture,
// name, hyper-parameters; no tokenizer.ggml.* and no general.file_type). Keys llama.cpp
// has no counterpart for are written only where their value is not what a reader infers
// (see config_from_gguf): ARCH.moe_every_n_layers when moe_layer_freq != 1, and
// hearth.rope.scaling.mscale when mscale != mscale_all_dim.
std::vector<GgufKeyValue> gguf_model_metadata(const ModelConfig& config, std::string_view name = "");
void add_gguf_model_metadata(GgufWriter& writer, const ModelConfig& config, std::string_view name = "");

// The ModelConfig a GGUF file's metadata describes. Tolerates older and foreign files:
// without key_length_mla / value_length_mla, key_length / value_length are the per-head
// nope + rope and v; head_count_kv may be 1 or head_count; optional keys take the Hugging
// Face defaults, except those whose absence llama.cpp gives a meaning:
// expert_weights_norm (absent: false, the converter omits it then), expert_gating_func
// (absent: softmax on deepseek2, sigmoid on deepseek32), vocab_size (absent: token_embd's
// rows), rope.scaling.type (absent: no YaRN). Derived: model_type from the architecture;
// topk_method noaux_tc for sigmoid gating, else group_limited_greedy with groups or
// greedy; mscale = mscale_all_dim; tie_word_embeddings when token_embd exists and output
// does not; bos/eos from tokenizer.ggml.*_token_id when present. A GGUF holds no FP8, so
// `quantization` is absent. Errors name the file and the key; an unknown architecture is
// an error naming it.
// A split model's metadata is its first shard's; its tensors (the head, whose absence
// means tied embeddings) may be in any shard.
ModelConfig config_from_gguf(const GgufShards& shards);
ModelConfig config_from_gguf(const GgufFile& file);

// Every tensor of `file` under its Hugging Face name, as zero-copy views into the
// mapping: DType from the ggml type, shape = ne reversed (the PyTorch shape), merged
// experts as one view per expert. kv_b_proj, when the file has attn_k_b / attn_v_b
// instead of attn_kv_b, is rebuilt into memory the store owns (exact: see the .cc). Every
// tensor the forward pass needs is checked first: a missing one or one of the wrong shape
// is an error naming the GGUF tensor and the file. Tensors the table does not know are
// left out; MTP-layer tensors are optional (the forward pass does not read them) but
// checked when present. The store keeps the files alive. A model split by gguf-split
// (engine/gguf_shards.h) reads the same as one file; errors about a tensor name its shard.
WeightStore gguf_weight_store(std::shared_ptr<const GgufShards> shards, const ModelConfig& config);
WeightStore gguf_weight_store(std::shared_ptr<const GgufFile> file, const ModelConfig& config);

// True for a regular file whose name ends in ".gguf" (any case) or that starts with the
// GGUF magic.
bool is_gguf_file(const std::filesystem::path& path);

// A checkpoint opened for reading: a Hugging Face directory (config.json + safetensors) or
// a GGUF file, with its tensors under Hugging Face names. Throws naming the path when it
// is neither.
struct OpenCheckpoint {
  ModelConfig config;
  WeightStore store;
  std::shared_ptr<const GgufShards> gguf;  // the GGUF file or shards; null for a directory
};
OpenCheckpoint open_checkpoint(const std::filesystem::path& path);

}  // namespace hearth

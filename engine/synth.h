// Synthetic checkpoints: deterministic random weights in the exact Hugging Face layout
// of DeepSeek-V3 / V3.2 (config.json, sharded safetensors with FP8 e4m3 weights and
// 128x128 block scales, model.safetensors.index.json). Used by `hearth synth`, tests and
// benchmarks that need a model of a given shape without downloading one.
//
// The values are numerically sane (linear weights with std ~1/sqrt(fan_in), norm weights
// near 1, embeddings with std ~1), so activations neither explode nor vanish, and
// conditioned like a trained network's where quantization measurements need it (the
// projections into the residual stream scaled down, a head that makes peaked
// distributions: see synth.cc). Every
// tensor's values depend only on (seed, tensor name): the same seed and configuration give
// byte-identical files whatever the thread count.
#pragma once
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/config.h"
#include "engine/safetensors_writer.h"
#include "offload/thread_pool.h"

namespace hearth {

// The presets `hearth synth` writes: "tiny", "small", "bench".
std::vector<std::string> synth_preset_names();
// Presets only ever built in memory (`hearth bench --synthetic`): "v32-full", the real
// DeepSeek-V3.2 shape (671 B parameters + indexer + 1 MTP layer), far too large to write.
std::vector<std::string> synth_memory_preset_names();
bool synth_preset_is_memory_only(const std::string& name);
// The HF config.json of a preset (either list); throws naming the known presets for an
// unknown name.
//   tiny:  the shape of tests/data/tiny-v32 (deepseek_v32, hidden 256, 4 layers + 1 MTP).
//   small: deepseek_v32, hidden 1024, 8 layers, 32 experts.
//   bench: deepseek_v3, hidden 2048, 12 layers, 64 experts top-8, vocab 129280, YaRN and
//          ue8m0 FP8 scales like the real model (~5.7 GB: 4.8 GB of FP8 layers, 1.06 GB of
//          BF16 embeddings and head). No MTP layer: it would add 1.5 GB (its own copies of
//          the embeddings and head) that decoding never reads. Pinned: benchmark numbers
//          are compared across commits.
nlohmann::json synth_preset_config(const std::string& name);

// Applies "key=JSON" overrides (each sets one top-level key to the parsed JSON value).
// Throws on a missing '=', an empty key or a value that is not valid JSON.
void apply_config_overrides(nlohmann::json& config, const std::vector<std::string>& sets);

// The preset with overrides applied. When the result is deepseek_v32 but lacks indexer
// fields (bench switched with --set model_type), they default to the real model's
// (index_n_heads 64, index_head_dim 128, index_topk 2048). Validated with from_json.
nlohmann::json synth_config_json(const std::string& preset, const std::vector<std::string>& sets);

// Every tensor of a checkpoint of this configuration, in file order (embeddings, decoder
// layers, final norm, lm_head, then the MTP layers), with HF names, dtypes and shapes.
// FP8 weights are followed by their "weight_scale_inv" F32 block scales.
std::vector<TensorSpec> checkpoint_tensor_specs(const ModelConfig& config);

// One generated unit of a synthetic checkpoint: a tensor and, for an FP8 weight, its
// block scales (stored right after it). Its values are a pure function of (seed, name,
// element index), so a writer and an in-memory builder produce the same bytes.
struct SynthTensor {
  TensorSpec weight;
  bool fp8 = false;
  TensorSpec scale;  // FP8 only: "...weight_scale_inv", F32 [ceil(rows/128)][ceil(cols/128)]
  float mean = 0.0f, std = 1.0f;
  uint64_t bytes() const;  // weight + scales
  int64_t rows() const;    // shape[0] (a 1-D tensor's rows are its elements)
};
// The units in file order (what checkpoint_tensor_specs flattens).
std::vector<SynthTensor> synth_tensor_plan(const ModelConfig& config);
// Generates rows [row0, row1) of `t` into weight_rows (row row0 first, in t's dtype) and,
// for FP8, the scale rows [row0/128, ceil(row1/128)) into scale_rows; so whole tensors
// can be produced a band at a time. For FP8, row0 and row1 must fall on 128-row block
// boundaries (row1 may be the last row); std::invalid_argument otherwise. ue8m0: scales
// rounded up to powers of two (the config's scale_fmt). Work is split over `pool`.
void synth_generate_rows(const SynthTensor& t, uint64_t seed, bool ue8m0, ThreadPool& pool, int64_t row0,
                         int64_t row1, void* weight_rows, float* scale_rows);

struct SynthOptions {
  std::filesystem::path out_dir;  // must not exist, or be an empty directory
  std::string preset = "tiny";
  uint64_t seed = 0;
  std::vector<std::string> sets;           // "key=JSON" config overrides
  uint64_t shard_size = uint64_t(1) << 30;  // bytes of tensor data per shard (at least one tensor each)
  int threads = 0;                          // 0: std::thread::hardware_concurrency()
  std::FILE* log = stderr;                  // progress lines; nullptr: quiet
  // A Hugging Face tokenizer.json copied to OUT/tokenizer.json. When the configuration's
  // vocab_size is below the tokenizer's id count it is raised so the model covers every
  // id: to DeepSeek-V3's padded 129280 for a tokenizer of 128257..129280 ids (DeepSeek's
  // own has 128815), else to the id count rounded up to a multiple of 128.
  std::filesystem::path tokenizer;
};

// The ids a tokenizer.json defines: the largest id in model.vocab and added_tokens, + 1.
// Throws std::runtime_error naming the file when it cannot be read or has no ids.
int64_t tokenizer_id_count(const std::filesystem::path& tokenizer_json);

struct SynthResult {
  ModelConfig config;
  int64_t tensors = 0;
  int shards = 0;
  uint64_t tensor_bytes = 0;  // sum of tensor data (the index's total_size)
  uint64_t file_bytes = 0;    // everything written, headers and config included
  double seconds = 0.0;
};

// Writes the checkpoint into a temporary sibling directory and renames it to out_dir at
// the end, so a failed or interrupted run never leaves a directory that looks complete.
// Memory-only presets are refused.
SynthResult synthesize_checkpoint(const SynthOptions& options);

}  // namespace hearth

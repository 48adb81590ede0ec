// One forward step over a batch of sequences: the whole network, top to bottom.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/profile.h"
#include "engine/rope.h"
#include "offload/thread_pool.h"

namespace hearth {

// Which form of MLA attention to run. Both read the same compressed cache and give
// the same result; they differ in cost.
enum class AttentionPath {
  kAuto,     // prefill for chunks of several tokens (while the expansion fits in memory), decode otherwise
  kPrefill,  // expand per-head keys/values from the cached latents (one kv_b GEMM per chunk)
  kDecode,   // weight-absorbed: fold kv_b into the query and the output, attend over latents
};

// New tokens of one sequence, appended after what the cache already holds for it.
struct SequenceChunk {
  SeqId seq;
  std::span<const int32_t> tokens;
  // This chunk's attention path; kAuto: the step's. Lets one step run prompt chunks on
  // the expanded path and decode tokens on the absorbed one (the batch scheduler pins
  // each position's path so its results do not depend on how a prompt was chunked).
  AttentionPath path = AttentionPath::kAuto;
};

// Where the new tokens of a step go: row r of the step's activations is position
// row_pos[r] of the sequence of chunk row_chunk[r]. The CPU pass, the offloaded pass and
// the device models all read a step through this.
struct RowLayout {
  std::vector<int64_t> chunk_first_row;  // first activation row of each chunk
  std::vector<int64_t> chunk_start_pos;  // cache length of each chunk's sequence before the step
  std::vector<int32_t> row_chunk;
  std::vector<int64_t> row_pos;
  int64_t rows() const { return int64_t(row_pos.size()); }

  // The batch laid out after what `cache` holds (call it before the step extends the
  // cache). Throws std::out_of_range naming a token id outside [0, vocab).
  static RowLayout of(const KvCache& cache, const std::vector<SequenceChunk>& batch, int64_t vocab);
  // Row r's token id.
  int32_t token(const std::vector<SequenceChunk>& batch, int64_t r) const {
    const int32_t ci = row_chunk[size_t(r)];
    return batch[size_t(ci)].tokens[size_t(row_pos[size_t(r)] - chunk_start_pos[size_t(ci)])];
  }
  // The rows the head reads: every row, or each non-empty chunk's last with last_only.
  std::vector<int32_t> head_rows(const std::vector<SequenceChunk>& batch, bool last_only) const;
};

// Cache positions below which the expanded (prefill) path stays within its memory cap
// for any chunk: a chunk ending at or before this position may be pinned to kPrefill.
int64_t prefill_path_positions(const ModelConfig& config);

class OffloadForward;
class NumaExperts;

class Forward {
 public:
  Forward(const Model& model, ThreadPool& pool);

  // Runs every chunk's tokens through the network in one pass and appends them to the
  // cache. `logits` receives [total tokens][vocab] rows in batch order (all positions)
  // or, with last_only, one row per chunk; nullptr skips the head.
  void step(KvCache& cache, const std::vector<SequenceChunk>& batch, float* logits,
            AttentionPath path = AttentionPath::kAuto, bool last_only = false);

  const Model& model() const { return model_; }

  // Sends every later step to an accelerator split (engine/offload_forward.h) instead of
  // the CPU; nullptr returns to the CPU. The pointed-to object must outlive those steps.
  // Offloaded steps report routing (ExpertUsage, ExpertCounts) but not phase times (the
  // device has its own trace) or activations.
  void set_offload(OffloadForward* offload) { offload_ = offload; }
  OffloadForward* offload() const { return offload_; }

  // Runs the routed experts of later CPU steps from their NUMA-node shards
  // (engine/numa_experts.h, built from this model); nullptr: from the model's weights on
  // the pool. Steps with an activation observer (imatrix) always use the model's weights.
  // The pointed-to object must outlive those steps.
  // std::invalid_argument for shards of another model.
  void set_numa_experts(const NumaExperts* experts);
  const NumaExperts* numa_experts() const { return numa_experts_; }

  // Where later steps report their phase times and expert reads (engine/profile.h);
  // the pointed-to objects must outlive those steps. Default: none.
  void set_probes(const StepProbes& probes) { probes_ = probes; }
  const StepProbes& probes() const { return probes_; }

 private:
  const Model& model_;
  ThreadPool& pool_;
  Rope rope_;
  StepProbes probes_;
  OffloadForward* offload_ = nullptr;
  const NumaExperts* numa_experts_ = nullptr;
};

}  // namespace hearth

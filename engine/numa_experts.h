// Routed experts sharded across NUMA nodes, for the CPU forward pass.
//
// Every routed expert's intermediate dimension is split over the nodes (gate and up by
// rows, down by columns; engine/expert_shards.h), so each node holds a slice of every
// expert in its own memory and never a copy of another node's: a node's threads stream
// only local DRAM. In a step, every node runs all the experts the step hit over its
// slices (the batched kernels of engine/experts.h on that node's pinned pool), which
// gives each node a partial sum of the weighted expert outputs; the partials are then
// added in node order. Within a node the work split is deterministic, so the result does
// not depend on the threads per node; it differs from the unsharded pass by float
// rounding only, because each down projection's dot products are cut at the node
// boundaries and their pieces added afterwards.
//
// Built only for layouts of two or more nodes: a one-node machine runs the experts where
// the model holds them (no copy at all).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/expert_shards.h"
#include "engine/experts.h"
#include "engine/model.h"
#include "offload/bandwidth.h"
#include "offload/node_memory.h"
#include "offload/numa.h"

namespace hearth {

// `total` threads split over the layout's nodes in proportion to their cores (cumulative
// rounding), at least one per node (so the sum exceeds `total` when it is smaller than
// the node count). total <= 0: every node's core count.
std::vector<int> split_threads(int total, const NumaLayout& layout);

// Takes MoE layer `layer`'s routed experts out of `model`, once a NumaExperts holds them:
// the pages of their weight data go back to the kernel (MADV_DONTNEED; whole pages inside
// each matrix only, so a neighbour's bytes on a shared page stay), whether they lie in a
// read-only file mapping (a safetensors or GGUF checkpoint) or in memory the model owns
// (repacked at load, built in memory, converted from GGUF), and each expert matrix's data
// pointer becomes nullptr, so nothing can read them afterwards: moe_forward refuses a step
// that would need them without the shards. Shapes, formats and FP8 scales stay (byte counts
// still work). Returns the bytes released; 0 for a dense layer or one already released.
// Without this, the experts would be resident twice: in the model and in the shards.
int64_t release_routed_experts(Model& model, int64_t layer);

class NumaExperts {
 public:
  // Plans every MoE layer's split (shares = cores per node), then, on each node's leader
  // thread and pool, allocates that node's buffer (placed on the node) and copies its
  // slice of every routed expert into it, one MoE layer at a time on all nodes at once.
  // `copied` (optional) is called with each MoE layer's index as soon as every node holds
  // its slices of that layer, e.g. to release the model's own copy of them
  // (release_routed_experts): then at most one layer's experts are resident twice while
  // the shards are built. threads_per_node as NodeWorkers (<= 0: the node's cores).
  // std::invalid_argument for a layout of fewer than two nodes, or experts the split
  // cannot take (engine/expert_shards.h); NodeMemoryError when a node's memory cannot
  // hold its slices. The model must outlive this object.
  NumaExperts(const Model& model, const NumaLayout& layout, std::vector<int> threads_per_node,
              const std::function<void(int64_t layer)>& copied = {});
  ~NumaExperts();
  NumaExperts(const NumaExperts&) = delete;
  NumaExperts& operator=(const NumaExperts&) = delete;

  const Model& model() const { return model_; }
  const NumaLayout& layout() const { return layout_; }
  int node_count() const { return layout_.node_count(); }
  const std::vector<int>& threads_per_node() const { return threads_; }
  // The split of MoE layer `layer`; nullptr for a dense layer.
  const ExpertShardPlan* plan(int64_t layer) const;
  // Bytes of expert slices held by `node`.
  int64_t node_bytes(int node) const;
  // One line, e.g. "routed experts split over 2 NUMA nodes: node 0 [0, 1024) 8 threads
  // 120.00 GiB, node 1 [1024, 2048) 8 threads 120.00 GiB" (the ranges of the first MoE
  // layer; "(layers differ)" when another MoE layer is split otherwise).
  std::string summary() const;

  // out[r] += the routed experts' weighted outputs of MoE layer `layer`: work[e] lists the
  // rows of x ([T][hidden]) that chose expert e and their weights (as moe_forward builds
  // it, one entry per routed expert). Each node sums its partial from zero over the
  // experts in list order; the partials are added to out in node order. Calls are
  // serialized (one step at a time).
  void accumulate(int64_t layer, const std::vector<ExpertWork>& work, const float* x, float* out) const;

  // One plain-sum pass over every node's expert slices, each node's workers over the
  // slices in its own memory, all nodes at once (as accumulate reads them): the read
  // rate the shards allow, for hearth bench's second wall. Serialized with accumulate.
  RangeReadResult read_rate() const;

 private:
  struct LayerShards {
    ExpertShardPlan plan;
    // Per node: that node's slice of every expert as an Mlp (gate/up rows, down
    // columns); empty when the node has no slice of this layer.
    std::vector<std::vector<Mlp>> nodes;
  };

  const Model& model_;
  NumaLayout layout_;
  std::vector<int> threads_;
  std::vector<LayerShards> layers_;  // by model layer (empty plans for dense layers)
  std::vector<NodeBuffer> buffers_;  // one per node
  std::unique_ptr<NodeWorkers> workers_;

  mutable std::mutex mu_;                           // one accumulate at a time
  mutable std::vector<std::vector<float>> partial_;  // per node, [T][hidden]
};

}  // namespace hearth

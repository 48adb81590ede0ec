// Routed experts split across NUMA nodes, each node holding and computing one slice.
//
// An expert is y = down(silu(gate x) * up(x)) with gate, up: [inter][hidden] and down:
// [hidden][inter]. Cutting the intermediate dimension into ranges R_0..R_k gives
//   y = sum_k down[:, R_k] (silu(gate[R_k] x) * up[R_k] x),
// so node k keeps the rows R_k of gate and up and the columns R_k of down, computes a
// partial output of the full hidden size from its own memory, and the caller adds the
// partials. No weight is duplicated and no node reads another node's weights; the only
// cross-node traffic is x in and one hidden-sized vector per token out.
//
// Boundaries must not cut through a block: down's rows are inter values long, so each
// range of down columns must start on a block of down's format (32 for Q8_0 and the
// other 32-value formats, 256 for K-quants and IQ4_XS, the scale block, 128, for FP8 with
// block scales), and an FP8 gate/up row range must start on a scale-block row. Gate/up
// row ranges need nothing more, but use the same ranges. Only the end of the last range
// may be off the grid (it is the end of the matrix).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "engine/model.h"
#include "offload/node_memory.h"

namespace hearth {

// The granularity every internal boundary of an expert's intermediate split falls on
// (the least common multiple of the constraints above; 1 for F32/BF16/F16 without scales).
int64_t expert_split_unit(const Mlp& mlp);
// The same for an expert whose three matrices are all `dtype` (FP8: `fp8_block`-square
// block scales).
int64_t expert_split_unit(DType dtype, int64_t fp8_block = 128);

struct ExpertSlice {
  int node = 0;                   // layout node that holds and computes it
  int64_t begin = 0, end = 0;     // intermediate indices [begin, end)
  int64_t size() const { return end - begin; }
};

// One layer's split (every routed expert of a layer has the same shape and formats).
struct ExpertShardPlan {
  int64_t hidden = 0, inter = 0;
  int64_t unit = 1;                 // every internal boundary is a multiple of this
  std::vector<ExpertSlice> slices;  // ascending, contiguous, non-empty, cover [0, inter)
  // The slice of `node`, nullptr when that node holds none of this layer's experts.
  const ExpertSlice* slice_of(int node) const;
};

// Splits [0, inter) into one contiguous range per node, node i's share proportional to
// node_weights[i] (its core count, so every node finishes at the same time), every
// internal boundary a multiple of `unit`. The split is done in whole units with
// cumulative rounding: boundary i is round(units * (w_0 + .. + w_i) / total) units, units
// = ceil(inter / unit). When inter is too small to split (fewer units than nodes, or a
// node's share rounds to no unit), the nodes that round to nothing get no slice, so a
// plan can have fewer slices than nodes, down to one: such nodes do not take part in
// that layer's experts (for a model whose experts are that small, placing whole experts
// round-robin over the nodes balances better; this plan does not do that).
// std::invalid_argument for non-positive sizes or unit, an empty
// or negative weight list, or weights that sum to zero.
ExpertShardPlan plan_expert_shards(int64_t hidden, int64_t inter, int64_t unit, std::span<const int> node_weights);
// Equal shares over n_nodes, all three matrices in `dtype`.
ExpertShardPlan plan_expert_shards(int64_t hidden, int64_t inter, DType dtype, int n_nodes);
// An expert of this shape and formats over a layout's nodes, shares = cores per node.
ExpertShardPlan plan_expert_shards(const Mlp& expert, const NumaLayout& layout);

// One node's slice of one expert, in that node's memory.
struct ExpertShard {
  int node = -1;
  int64_t begin = 0, end = 0;  // the intermediate range; empty when the node has no slice
  WeightMatrix gate, up;       // [end - begin][hidden]: rows [begin, end) of the expert's
  WeightMatrix down;           // [hidden][end - begin]: columns [begin, end) of its down
  bool empty() const { return end <= begin; }
};

// Bytes shard_expert needs for `node`'s slice of `expert` (0 when it has none); every
// piece is padded to NodeBuffer::kMinAlignment, so slices of consecutive experts can be
// packed into one buffer at offsets that are sums of these sizes.
int64_t expert_shard_bytes(const Mlp& expert, const ExpertShardPlan& plan, int node);

// Copies `node`'s slice of `expert` into `buffer` (which must be on that node) starting
// at byte `offset` (a multiple of kMinAlignment), and returns views of the copy: gate and
// up rows are one contiguous copy each, down's column range is a strided copy of each
// row's block range, FP8 block scales are sliced alongside. Run it on a thread of that
// node when the buffer is placed by first touch. std::invalid_argument when the expert
// does not have the plan's shape, the plan's unit does not fit its formats, the buffer
// is on another node or too small.
ExpertShard shard_expert(const Mlp& expert, const ExpertShardPlan& plan, int node, NodeBuffer& buffer,
                         int64_t offset = 0);

}  // namespace hearth

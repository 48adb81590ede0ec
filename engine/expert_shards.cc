#include "engine/expert_shards.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>

#include "quant/interleaved.h"

namespace hearth {

namespace {

// The scale block of a block-scaled FP8 matrix; 1 (no constraint) for anything else.
int64_t scale_block(const WeightMatrix& w) { return w.dtype == DType::F8_E4M3 && w.scale ? w.block : 1; }

int64_t whole_units(int64_t a, int64_t b) { return (a + b - 1) / b; }

int64_t pad(int64_t bytes) {
  const int64_t a = int64_t(NodeBuffer::kMinAlignment);
  return (bytes + a - 1) / a * a;
}

std::string shape(const WeightMatrix& w) { return "[" + std::to_string(w.rows) + "][" + std::to_string(w.cols) + "]"; }

void check_expert(const Mlp& e, const ExpertShardPlan& plan) {
  const int64_t H = plan.hidden, I = plan.inter;
  if (e.gate.rows != I || e.gate.cols != H || e.up.rows != I || e.up.cols != H || e.down.rows != H || e.down.cols != I)
    throw std::invalid_argument("expert shards: expert gate " + shape(e.gate) + ", up " + shape(e.up) + ", down " +
                                shape(e.down) + " do not match the plan's hidden " + std::to_string(H) + ", inter " +
                                std::to_string(I));
  const int64_t need = expert_split_unit(e);
  if (plan.unit % need != 0)
    throw std::invalid_argument("expert shards: the plan splits on multiples of " + std::to_string(plan.unit) +
                                " but the expert's formats need multiples of " + std::to_string(need));
}

// Byte sizes of one shard's pieces, in the order they are laid out in the buffer.
struct ShardPieces {
  int64_t gate = 0, gate_scale = 0, up = 0, up_scale = 0, down = 0, down_scale = 0;
  int64_t total() const { return pad(gate) + pad(gate_scale) + pad(up) + pad(up_scale) + pad(down) + pad(down_scale); }
};

// Scale rows of a row-sliced FP8 matrix: those of rows [begin, end).
int64_t scale_rows(const WeightMatrix& w, int64_t begin, int64_t end) {
  return whole_units(end, w.block) - begin / w.block;
}

ShardPieces pieces(const Mlp& e, const ExpertSlice& s) {
  const int64_t m = s.size();
  ShardPieces p;
  p.gate = m * row_bytes(e.gate.dtype, e.gate.cols);
  p.up = m * row_bytes(e.up.dtype, e.up.cols);
  p.down = e.down.rows * row_bytes(e.down.dtype, m);
  const int64_t f = int64_t(sizeof(float));
  if (scale_block(e.gate) > 1) p.gate_scale = scale_rows(e.gate, s.begin, s.end) * e.gate.scale_cols() * f;
  if (scale_block(e.up) > 1) p.up_scale = scale_rows(e.up, s.begin, s.end) * e.up.scale_cols() * f;
  if (scale_block(e.down) > 1)
    p.down_scale = whole_units(e.down.rows, e.down.block) * scale_rows(e.down, s.begin, s.end) * f;
  return p;
}

// Copies rows [begin, end) of w (and their scale rows) to dst; returns the view.
WeightMatrix copy_rows(const WeightMatrix& w, int64_t begin, int64_t end, std::byte*& dst) {
  const int64_t unit = interleaved_unit_rows(w.dtype);
  if (begin % unit != 0 || end % unit != 0)
    throw std::invalid_argument("expert shards: rows of an interleaved weight must be split on groups of " +
                                std::to_string(unit));
  WeightMatrix v = w;
  v.rows = end - begin;
  const int64_t rb = row_bytes(w.dtype, w.cols);
  std::memcpy(dst, static_cast<const std::byte*>(w.data) + begin * rb, size_t(v.rows * rb));
  v.data = dst;
  dst += pad(v.rows * rb);
  v.scale = nullptr;
  if (scale_block(w) > 1) {
    const int64_t n = scale_rows(w, begin, end) * w.scale_cols();
    std::memcpy(dst, w.scale + (begin / w.block) * w.scale_cols(), size_t(n) * sizeof(float));
    v.scale = reinterpret_cast<const float*>(dst);
    dst += pad(n * int64_t(sizeof(float)));
  }
  return v;
}

// Copies columns [begin, end) of w (a block range of every row, and the matching scale
// columns) to dst; returns the view.
WeightMatrix copy_columns(const WeightMatrix& w, int64_t begin, int64_t end, std::byte*& dst) {
  WeightMatrix v = w;
  v.cols = end - begin;
  // An interleaved weight's group of eight (Q4_K_R8) or sixteen (Q6_K_R16) rows holds its
  // blocks in column order, like one row that many times as wide: the same copy, group by
  // group.
  const int64_t k = interleaved_unit_rows(w.dtype), lines = w.rows / k;
  const int64_t src_rb = k * row_bytes(w.dtype, w.cols);
  const int64_t skip = k * row_bytes(w.dtype, begin);  // begin is on a block edge (the plan's unit)
  const int64_t rb = k * row_bytes(w.dtype, v.cols);
  const auto* src = static_cast<const std::byte*>(w.data);
  for (int64_t r = 0; r < lines; ++r) std::memcpy(dst + r * rb, src + r * src_rb + skip, size_t(rb));
  v.data = dst;
  dst += pad(lines * rb);
  v.scale = nullptr;
  if (scale_block(w) > 1) {
    const int64_t c0 = begin / w.block, nc = scale_rows(w, begin, end), src_cols = w.scale_cols();
    const int64_t nr = whole_units(w.rows, w.block);
    auto* out = reinterpret_cast<float*>(dst);
    for (int64_t r = 0; r < nr; ++r) std::memcpy(out + r * nc, w.scale + r * src_cols + c0, size_t(nc) * sizeof(float));
    v.scale = out;
    dst += pad(nr * nc * int64_t(sizeof(float)));
  }
  return v;
}

}  // namespace

int64_t expert_split_unit(const Mlp& mlp) {
  int64_t unit = dtype_block_elems(mlp.down.dtype);
  for (const WeightMatrix* w : {&mlp.gate, &mlp.up, &mlp.down}) unit = std::lcm(unit, scale_block(*w));
  return unit;
}

int64_t expert_split_unit(DType dtype, int64_t fp8_block) {
  if (dtype == DType::F8_E4M3) {
    if (fp8_block <= 0) throw std::invalid_argument("expert shards: FP8 scale block must be positive");
    return fp8_block;
  }
  return dtype_block_elems(dtype);
}

const ExpertSlice* ExpertShardPlan::slice_of(int node) const {
  for (const ExpertSlice& s : slices)
    if (s.node == node) return &s;
  return nullptr;
}

ExpertShardPlan plan_expert_shards(int64_t hidden, int64_t inter, int64_t unit, std::span<const int> node_weights) {
  if (hidden <= 0 || inter <= 0 || unit <= 0)
    throw std::invalid_argument("expert shards: hidden " + std::to_string(hidden) + ", inter " + std::to_string(inter) +
                                " and unit " + std::to_string(unit) + " must be positive");
  if (node_weights.empty()) throw std::invalid_argument("expert shards: no NUMA nodes to split over");
  int64_t total = 0;
  for (int w : node_weights) {
    if (w < 0) throw std::invalid_argument("expert shards: negative node weight " + std::to_string(w));
    total += w;
  }
  if (total == 0) throw std::invalid_argument("expert shards: node weights sum to zero");

  ExpertShardPlan plan;
  plan.hidden = hidden;
  plan.inter = inter;
  plan.unit = unit;
  const int64_t units = whole_units(inter, unit);
  int64_t cumulative = 0, prev = 0;
  for (size_t i = 0; i < node_weights.size(); ++i) {
    cumulative += node_weights[i];
    const int64_t edge = (2 * units * cumulative + total) / (2 * total);  // round half up
    if (edge > prev)
      plan.slices.push_back({int(i), prev * unit, std::min(edge * unit, inter)});
    prev = std::max(prev, edge);
  }
  return plan;
}

ExpertShardPlan plan_expert_shards(int64_t hidden, int64_t inter, DType dtype, int n_nodes) {
  if (n_nodes <= 0) throw std::invalid_argument("expert shards: " + std::to_string(n_nodes) + " NUMA nodes");
  const std::vector<int> equal(size_t(n_nodes), 1);
  return plan_expert_shards(hidden, inter, expert_split_unit(dtype), equal);
}

ExpertShardPlan plan_expert_shards(const Mlp& expert, const NumaLayout& layout) {
  std::vector<int> cores;
  for (const NumaNode& n : layout.nodes()) cores.push_back(n.cores());
  ExpertShardPlan plan = plan_expert_shards(expert.gate.cols, expert.gate.rows, expert_split_unit(expert), cores);
  check_expert(expert, plan);
  return plan;
}

int64_t expert_shard_bytes(const Mlp& expert, const ExpertShardPlan& plan, int node) {
  check_expert(expert, plan);
  const ExpertSlice* s = plan.slice_of(node);
  return s ? pieces(expert, *s).total() : 0;
}

ExpertShard shard_expert(const Mlp& expert, const ExpertShardPlan& plan, int node, NodeBuffer& buffer, int64_t offset) {
  check_expert(expert, plan);
  ExpertShard shard;
  shard.node = node;
  shard.gate = expert.gate;
  shard.up = expert.up;
  shard.down = expert.down;
  shard.gate.rows = shard.up.rows = shard.down.cols = 0;
  shard.gate.data = shard.up.data = shard.down.data = nullptr;
  shard.gate.scale = shard.up.scale = shard.down.scale = nullptr;
  const ExpertSlice* s = plan.slice_of(node);
  if (!s) return shard;
  if (buffer.node() != node)
    throw std::invalid_argument("expert shards: node " + std::to_string(node) + "'s slice given a buffer on node " +
                                std::to_string(buffer.node()));
  const int64_t need = pieces(expert, *s).total();
  if (offset < 0 || offset % int64_t(NodeBuffer::kMinAlignment) != 0 || offset + need > int64_t(buffer.size()))
    throw std::invalid_argument("expert shards: node " + std::to_string(node) + "'s slice needs " + std::to_string(need) +
                                " bytes at offset " + std::to_string(offset) + " (a multiple of " +
                                std::to_string(NodeBuffer::kMinAlignment) + ") of a " + std::to_string(buffer.size()) +
                                "-byte buffer");
  std::byte* dst = buffer.data() + offset;
  shard.begin = s->begin;
  shard.end = s->end;
  shard.gate = copy_rows(expert.gate, s->begin, s->end, dst);
  shard.up = copy_rows(expert.up, s->begin, s->end, dst);
  shard.down = copy_columns(expert.down, s->begin, s->end, dst);
  return shard;
}

}  // namespace hearth

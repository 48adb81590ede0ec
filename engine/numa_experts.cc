#include "engine/numa_experts.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <stdexcept>

#include "offload/byte_size.h"

namespace hearth {

namespace {

bool same_split(const ExpertShardPlan& a, const ExpertShardPlan& b) {
  if (a.slices.size() != b.slices.size()) return false;
  for (size_t i = 0; i < a.slices.size(); ++i)
    if (a.slices[i].node != b.slices[i].node || a.slices[i].begin != b.slices[i].begin ||
        a.slices[i].end != b.slices[i].end)
      return false;
  return true;
}

}  // namespace

std::vector<int> split_threads(int total, const NumaLayout& layout) {
  const int n = layout.node_count();
  std::vector<int> out(size_t(n), 1);
  if (total <= 0) {
    for (int i = 0; i < n; ++i) out[size_t(i)] = std::max(1, layout.nodes()[size_t(i)].cores());
    return out;
  }
  const int64_t cores = std::max(1, layout.total_cores());
  int64_t cumulative = 0, prev = 0;
  for (int i = 0; i < n; ++i) {
    cumulative += layout.nodes()[size_t(i)].cores();
    const int64_t edge = (2 * int64_t(total) * cumulative + cores) / (2 * cores);  // round half up
    out[size_t(i)] = int(std::max<int64_t>(1, edge - prev));
    prev = std::max(prev, edge);
  }
  return out;
}

NumaExperts::NumaExperts(const Model& model, const NumaLayout& layout, std::vector<int> threads_per_node,
                         const std::function<void(int64_t layer)>& copied)
    : model_(model), layout_(layout), threads_(std::move(threads_per_node)) {
  const int N = layout_.node_count();
  if (N < 2)
    throw std::invalid_argument("NUMA expert shards need at least two NUMA nodes (the layout has " +
                                std::to_string(N) + ")");
  if (int(threads_.size()) != N)
    throw std::invalid_argument("NUMA expert shards: " + std::to_string(threads_.size()) + " thread counts for " +
                                std::to_string(N) + " NUMA nodes");
  for (int i = 0; i < N; ++i)
    if (threads_[size_t(i)] <= 0) threads_[size_t(i)] = std::max(1, layout_.nodes()[size_t(i)].cores());

  // Plan every MoE layer and lay each node's slices out back to back in one buffer.
  const size_t L = model_.layers.size();
  layers_.resize(L);
  std::vector<std::vector<std::vector<int64_t>>> offset(L);  // [layer][node][expert]
  std::vector<int64_t> total(size_t(N), 0);
  for (size_t l = 0; l < L; ++l) {
    const Layer& layer = model_.layers[l];
    if (!layer.is_moe || layer.moe.experts.empty()) continue;
    for (const Mlp& m : layer.moe.experts)
      if (!m.holds_weights())
        throw std::invalid_argument("NUMA expert shards: layer " + std::to_string(l) +
                                    "'s routed experts were already released from the model");
    LayerShards& ls = layers_[l];
    ls.plan = plan_expert_shards(layer.moe.experts[0], layout_);
    ls.nodes.resize(size_t(N));
    offset[l].assign(size_t(N), std::vector<int64_t>(layer.moe.experts.size(), 0));
    for (int k = 0; k < N; ++k)
      for (size_t e = 0; e < layer.moe.experts.size(); ++e) {
        offset[l][size_t(k)][e] = total[size_t(k)];
        total[size_t(k)] += expert_shard_bytes(layer.moe.experts[e], ls.plan, k);  // checks every expert's shape
      }
  }

  workers_ = std::make_unique<NodeWorkers>(layout_, threads_);
  buffers_.resize(size_t(N));
  partial_.resize(size_t(N));
  // Each node allocates and fills its own buffer from its own threads: where the OS
  // would not bind the memory, the copy's first touch still puts every page there. A
  // bound buffer's pages are only allocated as the copy reaches them, so with `copied`
  // releasing the originals layer by layer the process never holds both copies whole.
  workers_->run_on_every_node(
      [&](int k, ThreadPool&) { buffers_[size_t(k)] = NodeBuffer(layout_, k, size_t(total[size_t(k)])); });
  for (size_t l = 0; l < L; ++l) {
    LayerShards& ls = layers_[l];
    if (ls.nodes.empty()) continue;
    workers_->run_on_every_node([&](int k, ThreadPool& pool) {
      if (!ls.plan.slice_of(k)) return;
      const std::vector<Mlp>& experts = model_.layers[l].moe.experts;
      std::vector<Mlp>& shards = ls.nodes[size_t(k)];
      shards.resize(experts.size());
      pool.parallel_for(int64_t(experts.size()), [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          const ExpertShard s = shard_expert(experts[size_t(i)], ls.plan, k, buffers_[size_t(k)], offset[l][size_t(k)][size_t(i)]);
          shards[size_t(i)] = Mlp{s.gate, s.up, s.down};
        }
      });
    });
    if (copied) copied(int64_t(l));
  }
}

NumaExperts::~NumaExperts() = default;

const ExpertShardPlan* NumaExperts::plan(int64_t layer) const {
  if (layer < 0 || size_t(layer) >= layers_.size() || layers_[size_t(layer)].nodes.empty()) return nullptr;
  return &layers_[size_t(layer)].plan;
}

int64_t NumaExperts::node_bytes(int node) const { return int64_t(buffers_.at(size_t(node)).size()); }

std::string NumaExperts::summary() const {
  const ExpertShardPlan* first = nullptr;
  bool differ = false;
  for (size_t l = 0; l < layers_.size(); ++l)
    if (const ExpertShardPlan* p = plan(int64_t(l))) {
      if (!first) first = p;
      else if (!same_split(*first, *p)) differ = true;
    }
  std::string s = "routed experts split over " + std::to_string(node_count()) + " NUMA nodes";
  if (!first) return s + " (the model has no routed experts)";
  s += " (intermediate " + std::to_string(first->inter) + "):";
  for (int k = 0; k < node_count(); ++k) {
    s += k ? ", node " : " node ";
    s += std::to_string(k);
    if (const ExpertSlice* sl = first->slice_of(k)) {
      s += " [";
      s += std::to_string(sl->begin);
      s += ", ";
      s += std::to_string(sl->end);
      s += ")";
    } else {
      s += " no slice";
    }
    s += ' ';
    s += std::to_string(threads_[size_t(k)]);
    s += threads_[size_t(k)] == 1 ? " thread " : " threads ";
    s += format_bytes(double(node_bytes(k)));
  }
  if (differ) s += " (layers differ)";
  return s;
}

void NumaExperts::accumulate(int64_t layer, const std::vector<ExpertWork>& work, const float* x, float* out) const {
  const ExpertShardPlan* p = plan(layer);
  if (!p) throw std::invalid_argument("NUMA expert shards: layer " + std::to_string(layer) + " has no routed experts");
  const LayerShards& ls = layers_[size_t(layer)];
  const int64_t H = p->hidden;
  int64_t T = 0;
  for (const ExpertWork& w : work)
    if (!w.rows.empty()) T = std::max<int64_t>(T, w.rows.back() + 1);
  if (T == 0) return;

  std::lock_guard<std::mutex> lock(mu_);
  workers_->run_on_every_node([&](int k, ThreadPool& pool) {
    const std::vector<Mlp>& shards = ls.nodes[size_t(k)];
    if (shards.empty()) return;
    std::vector<float>& part = partial_[size_t(k)];
    if (part.size() < size_t(T * H)) part.resize(size_t(T * H));
    std::fill(part.begin(), part.begin() + T * H, 0.0f);
    experts_accumulate(pool, work, shards, x, H, part.data());
  });
  for (int k = 0; k < node_count(); ++k) {
    if (ls.nodes[size_t(k)].empty()) continue;
    const float* part = partial_[size_t(k)].data();
    for (int64_t i = 0; i < T * H; ++i) out[i] += part[i];
  }
}

RangeReadResult NumaExperts::read_rate() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::vector<ByteRange>> ranges(static_cast<size_t>(node_count()));
  RangeReadResult r;
  for (const LayerShards& ls : layers_)
    for (size_t k = 0; k < ls.nodes.size(); ++k)
      for (const Mlp& m : ls.nodes[k])
        for (const WeightMatrix* w : {&m.gate, &m.up, &m.down})
          if (w->data && w->bytes() > 0) {
            ranges[k].push_back({w->data, uint64_t(w->bytes())});
            r.bytes += uint64_t(w->bytes());
          }
  std::atomic<uint64_t> sum{0};
  std::atomic<int> threads{0};
  const auto t0 = std::chrono::steady_clock::now();
  workers_->run_on_every_node([&](int k, ThreadPool& pool) {
    const RangeReadResult node = measure_read_rate(pool, ranges[size_t(k)], 1);
    sum.fetch_add(node.byte_sum, std::memory_order_relaxed);
    threads.fetch_add(node.threads, std::memory_order_relaxed);
  });
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.bytes_per_second = s > 0 && r.bytes > 0 ? double(r.bytes) / s : 0;
  r.byte_sum = sum.load();
  r.threads = threads.load();
  r.runs = 1;
  return r;
}

int64_t release_routed_experts(Model& model, int64_t layer) {
  if (layer < 0 || size_t(layer) >= model.layers.size())
    throw std::out_of_range("release_routed_experts: layer " + std::to_string(layer) + " out of range");
  Layer& L = model.layers[size_t(layer)];
  if (!L.is_moe) return 0;
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  int64_t released = 0;
  // The data only: FP8 block scales are a few KiB per matrix, and byte counts read them.
  auto release = [&](WeightMatrix& w) {
    const int64_t n = w.data ? w.bytes() : 0;
    const uintptr_t p = reinterpret_cast<uintptr_t>(w.data);
    w.data = nullptr;
    if (n <= 0) return;
    const uintptr_t b = (p + page - 1) / page * page, e = (p + uintptr_t(n)) / page * page;
    if (e > b && madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED) == 0) released += int64_t(e - b);
  };
  for (Mlp& m : L.moe.experts) {
    release(m.gate);
    release(m.up);
    release(m.down);
  }
  return released;
}

}  // namespace hearth

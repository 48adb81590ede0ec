#include "offload/numa.h"

#include <hwloc.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace hearth {

// The hwloc topology and the CPU/node sets every bind call needs, kept alive by every
// copy of the layout (and so by every NodeWorkers and NodeBuffer made from it).
struct NumaLayout::Impl {
  hwloc_topology_t topo = nullptr;
  bool binds = false;
  std::vector<NumaNode> nodes;
  int memory_only = 0;
  std::vector<hwloc_bitmap_t> node_cpus;               // union of the node's owned cores
  std::vector<hwloc_bitmap_t> node_set;                // the node as a nodeset
  std::vector<std::vector<hwloc_bitmap_t>> core_cpus;  // per node, per owned core

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() {
    for (auto b : node_cpus) hwloc_bitmap_free(b);
    for (auto b : node_set) hwloc_bitmap_free(b);
    for (auto& v : core_cpus)
      for (auto b : v) hwloc_bitmap_free(b);
    if (topo) hwloc_topology_destroy(topo);
  }
};

namespace {

std::string os_error(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

std::shared_ptr<NumaLayout::Impl> load(const std::string& synthetic, bool attempt_binding) {
  auto impl = std::make_shared<NumaLayout::Impl>();
  if (hwloc_topology_init(&impl->topo) != 0) {
    impl->topo = nullptr;
    throw std::runtime_error("hwloc: cannot initialise topology");
  }
  hwloc_topology_t topo = impl->topo;
  if (!synthetic.empty() && hwloc_topology_set_synthetic(topo, synthetic.c_str()) != 0)
    throw std::runtime_error("hwloc: bad synthetic topology '" + synthetic + "'");
  // hwloc makes bind calls on a synthetic topology no-ops unless told it is this system.
  if (!synthetic.empty() && attempt_binding) hwloc_topology_set_flags(topo, HWLOC_TOPOLOGY_FLAG_IS_THISSYSTEM);
  if (hwloc_topology_load(topo) != 0) throw std::runtime_error("hwloc: cannot load topology");
  impl->binds = hwloc_topology_is_thissystem(topo) != 0;

  const int n_numa = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE);
  std::vector<hwloc_obj_t> numa(static_cast<size_t>(n_numa));
  for (int i = 0; i < n_numa; ++i) numa[size_t(i)] = hwloc_get_obj_by_type(topo, HWLOC_OBJ_NUMANODE, unsigned(i));

  // Each core goes to the first node containing it (else the first it overlaps, else the
  // first node), so no core is counted twice when nodes share CPUs.
  const hwloc_obj_type_t unit = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE) > 0 ? HWLOC_OBJ_CORE : HWLOC_OBJ_PU;
  const int n_units = hwloc_get_nbobjs_by_type(topo, unit);
  std::vector<std::vector<hwloc_obj_t>> owned(static_cast<size_t>(std::max(1, n_numa)));
  for (int c = 0; c < n_units; ++c) {
    hwloc_obj_t core = hwloc_get_obj_by_type(topo, unit, unsigned(c));
    int owner = -1;
    for (int i = 0; i < n_numa && owner < 0; ++i)
      if (hwloc_bitmap_isincluded(core->cpuset, numa[size_t(i)]->cpuset)) owner = i;
    for (int i = 0; i < n_numa && owner < 0; ++i)
      if (hwloc_bitmap_intersects(core->cpuset, numa[size_t(i)]->cpuset)) owner = i;
    owned[size_t(std::max(owner, 0))].push_back(core);
  }

  for (int i = 0; i < int(owned.size()); ++i) {
    if (owned[size_t(i)].empty()) {
      ++impl->memory_only;
      continue;
    }
    NumaNode node;
    hwloc_bitmap_t nodeset = hwloc_bitmap_alloc();
    if (i < n_numa) {
      node.os_index = numa[size_t(i)]->os_index;
      node.local_memory_bytes = numa[size_t(i)]->attr->numanode.local_memory;
      hwloc_bitmap_copy(nodeset, numa[size_t(i)]->nodeset);
    } else {
      hwloc_bitmap_only(nodeset, 0);  // hwloc 2 always has a node; keep going if it had none
    }
    hwloc_bitmap_t cpus = hwloc_bitmap_alloc();
    std::vector<hwloc_bitmap_t> cores;
    for (hwloc_obj_t core : owned[size_t(i)]) {
      std::vector<unsigned> pus;
      unsigned pu;
      hwloc_bitmap_foreach_begin(pu, core->cpuset) { pus.push_back(pu); }
      hwloc_bitmap_foreach_end();
      node.core_pus.push_back(std::move(pus));
      cores.push_back(hwloc_bitmap_dup(core->cpuset));
      hwloc_bitmap_or(cpus, cpus, core->cpuset);
    }
    impl->nodes.push_back(std::move(node));
    impl->node_cpus.push_back(cpus);
    impl->node_set.push_back(nodeset);
    impl->core_cpus.push_back(std::move(cores));
  }
  if (impl->nodes.empty()) throw std::runtime_error("hwloc: the topology has no processing units");
  return impl;
}

std::string gib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", double(bytes) / double(1ull << 30));
  return buf;
}

}  // namespace

int NumaNode::pus() const {
  int n = 0;
  for (const auto& c : core_pus) n += int(c.size());
  return n;
}

NumaLayout NumaLayout::detect() { return NumaLayout(load("", false)); }

NumaLayout NumaLayout::synthetic(const std::string& description, bool attempt_binding) {
  if (description.empty()) throw std::runtime_error("hwloc: empty synthetic topology");
  return NumaLayout(load(description, attempt_binding));
}

const std::vector<NumaNode>& NumaLayout::nodes() const { return impl_->nodes; }
int NumaLayout::memory_only_nodes() const { return impl_->memory_only; }
bool NumaLayout::binds() const { return impl_->binds; }

int NumaLayout::total_cores() const {
  int n = 0;
  for (const NumaNode& node : nodes()) n += node.cores();
  return n;
}

std::string NumaLayout::summary() const {
  std::string s = std::to_string(node_count()) + (node_count() == 1 ? " NUMA node: " : " NUMA nodes: ");
  for (int i = 0; i < node_count(); ++i) {
    const NumaNode& n = nodes()[size_t(i)];
    if (i) s += ", ";
    // Appends one piece at a time (GCC 12 warns falsely on "literal" + std::string).
    s += "node ";
    s += std::to_string(i);
    s += " (os ";
    s += std::to_string(n.os_index);
    s += ") ";
    s += std::to_string(n.cores());
    s += n.cores() == 1 ? " core" : " cores";
    if (n.local_memory_bytes) {
      s += ' ';
      s += gib(n.local_memory_bytes);
    }
  }
  if (memory_only_nodes()) {
    s += ", plus ";
    s += std::to_string(memory_only_nodes());
    s += " memory-only";
  }
  return s;
}

bool NumaLayout::bind_thread(int node, int core, std::string* why) const {
  if (node < 0 || node >= node_count()) throw std::out_of_range("NUMA node " + std::to_string(node) + " does not exist");
  const auto& cores = impl_->core_cpus[size_t(node)];
  if (core >= int(cores.size())) throw std::out_of_range("NUMA node " + std::to_string(node) + " has no core " + std::to_string(core));
  if (!binds()) return true;
  hwloc_const_cpuset_t set = core < 0 ? impl_->node_cpus[size_t(node)] : cores[size_t(core)];
  if (hwloc_set_cpubind(impl_->topo, set, HWLOC_CPUBIND_THREAD) == 0) return true;
  if (why) {
    char* text = nullptr;
    hwloc_bitmap_list_asprintf(&text, set);
    *why = os_error(("cannot bind to CPUs " + std::string(text ? text : "?")).c_str());
    std::free(text);
  }
  return false;
}

bool NumaLayout::bind_memory(void* p, std::size_t bytes, int node, std::string* why) const {
  if (node < 0 || node >= node_count()) throw std::out_of_range("NUMA node " + std::to_string(node) + " does not exist");
  if (!binds() || bytes == 0) return true;
  if (hwloc_set_area_membind(impl_->topo, p, bytes, impl_->node_set[size_t(node)], HWLOC_MEMBIND_BIND,
                             HWLOC_MEMBIND_BYNODESET) == 0)
    return true;
  if (why) *why = os_error(("cannot bind memory to OS node " + std::to_string(nodes()[size_t(node)].os_index)).c_str());
  return false;
}

std::optional<int> NumaLayout::node_of_memory(const void* p, std::size_t bytes) const {
  if (!binds() || bytes == 0) return std::nullopt;
  hwloc_bitmap_t where = hwloc_bitmap_alloc();
  std::optional<int> found;
  if (hwloc_get_area_memlocation(impl_->topo, p, bytes, where, HWLOC_MEMBIND_BYNODESET) == 0 &&
      hwloc_bitmap_weight(where) == 1)
    for (int i = 0; i < node_count() && !found; ++i)
      if (hwloc_bitmap_isequal(where, impl_->node_set[size_t(i)])) found = i;
  hwloc_bitmap_free(where);
  return found;
}

// ---- NodeWorkers ----------------------------------------------------------------

struct NodeWorkers::Group {
  int threads = 1;
  std::unique_ptr<ThreadPool> pool;
};

NodeWorkers::NodeWorkers(const NumaLayout& layout, int threads_per_node)
    : NodeWorkers(layout, std::vector<int>(size_t(layout.node_count()), threads_per_node)) {}

NodeWorkers::NodeWorkers(const NumaLayout& layout, std::vector<int> threads_per_node) : layout_(layout) {
  const int n = layout_.node_count();
  if (int(threads_per_node.size()) != n)
    throw std::invalid_argument("NodeWorkers: " + std::to_string(threads_per_node.size()) + " thread counts for " +
                                std::to_string(n) + " NUMA nodes");
  for (int i = 0; i < n; ++i) {
    auto g = std::make_unique<Group>();
    const int t = threads_per_node[size_t(i)];
    g->threads = t > 0 ? t : std::max(1, layout_.nodes()[size_t(i)].cores());
    groups_.push_back(std::move(g));
  }
  errors_.assign(size_t(n), nullptr);
  pending_ = n;  // each leader counts itself down once its pool is built and pinned
  std::exception_ptr failure;
  try {
    for (int i = 0; i < n; ++i) leaders_.emplace_back([this, i] { leader_loop(i); });
  } catch (...) {
    failure = std::current_exception();
    std::lock_guard<std::mutex> lock(mu_);
    pending_ -= n - int(leaders_.size());  // leaders never started never count down
  }
  {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return pending_ == 0; });
  }
  for (auto& e : errors_)
    if (e && !failure) failure = e;
  if (failure) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    start_cv_.notify_all();
    for (auto& t : leaders_) t.join();
    std::rethrow_exception(failure);
  }
}

NodeWorkers::~NodeWorkers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (auto& t : leaders_) t.join();
}

ThreadPool& NodeWorkers::pool(int node) {
  if (node < 0 || node >= node_count()) throw std::out_of_range("NodeWorkers: no node " + std::to_string(node));
  return *groups_[size_t(node)]->pool;
}

void NodeWorkers::note_binding(int node, int thread, bool ok, const std::string& why) {
  std::lock_guard<std::mutex> lock(notes_mu_);
  if (!ok)
    warnings_.push_back("node " + std::to_string(node) + " thread " + std::to_string(thread) + ": " + why);
  else if (layout_.binds())
    ++pinned_;
}

std::vector<std::string> NodeWorkers::warnings() const {
  std::lock_guard<std::mutex> lock(notes_mu_);
  return warnings_;
}

int NodeWorkers::pinned_threads() const {
  std::lock_guard<std::mutex> lock(notes_mu_);
  return pinned_;
}

void NodeWorkers::leader_loop(int node) {
  Group& g = *groups_[size_t(node)];
  try {
    // The leader first takes the whole node so the pool's workers, which inherit its CPU
    // mask, stay on the node even if pinning them to single cores fails below.
    layout_.bind_thread(node, -1, nullptr);
    g.pool = std::make_unique<ThreadPool>(g.threads);
    const bool per_core = g.threads <= layout_.nodes()[size_t(node)].cores();
    // parallel_for over exactly size() items hands item i to thread i (the leader is 0).
    g.pool->parallel_for(g.pool->size(), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        std::string why;
        const bool ok = layout_.bind_thread(node, per_core ? int(i) : -1, &why);
        note_binding(node, int(i), ok, why);
      }
    });
  } catch (...) {
    errors_[size_t(node)] = std::current_exception();
  }
  uint64_t seen = 0;
  std::unique_lock<std::mutex> lock(mu_);
  if (--pending_ == 0) done_cv_.notify_all();
  for (;;) {
    start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) break;
    seen = generation_;
    const auto* job = job_;
    lock.unlock();
    try {
      (*job)(node, *g.pool);
    } catch (...) {
      errors_[size_t(node)] = std::current_exception();
    }
    lock.lock();
    if (--pending_ == 0) done_cv_.notify_all();
  }
  lock.unlock();
  g.pool.reset();
}

void NodeWorkers::run_on_every_node(const std::function<void(int node, ThreadPool& pool)>& fn) {
  std::lock_guard<std::mutex> serial(run_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &fn;
    errors_.assign(errors_.size(), nullptr);
    pending_ = node_count();
    ++generation_;
  }
  start_cv_.notify_all();
  {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
  }
  for (auto& e : errors_)
    if (e) std::rethrow_exception(e);
}

}  // namespace hearth

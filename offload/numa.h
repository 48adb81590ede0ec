// NUMA nodes and the worker groups that run on them.
//
// On a machine with several NUMA nodes a core reads its own node's memory at full speed
// and another node's across the interconnect at a fraction of it. Expert weights are the
// bulk of every step's memory traffic, so each node gets its own slice of them
// (engine/expert_shards.h), its own memory (offload/node_memory.h) and its own group of
// threads pinned to its cores (NodeWorkers below); a one-node machine is the special case
// of one group.
//
// NumaLayout reads the machine through hwloc, or an hwloc synthetic description for
// tests ("pack:2 numa:2 core:4 pu:1" is four nodes of four cores). Binding calls act only
// on the real machine: a synthetic layout describes an imaginary one, so its binds do
// nothing unless the test asks for real binding attempts (to exercise the failure paths).
#pragma once
#include <cstddef>
#include <cstdint>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "offload/thread_pool.h"

namespace hearth {

struct NumaNode {
  unsigned os_index = 0;  // the kernel's node number (numactl's), not the position in the layout
  // One entry per physical core owned by this node: the OS indexes of its PUs (hardware
  // threads). On a topology with no core objects every PU counts as a core.
  std::vector<std::vector<unsigned>> core_pus;
  uint64_t local_memory_bytes = 0;  // 0 when hwloc does not know

  int cores() const { return int(core_pus.size()); }
  int pus() const;
};

class NumaLayout {
 public:
  // The running machine.
  static NumaLayout detect();
  // An imaginary machine from an hwloc synthetic description; std::runtime_error when the
  // description is invalid. With attempt_binding, bind calls are made against the real OS
  // with the synthetic CPU and node numbers (they fail for numbers the machine lacks):
  // only for tests of the failure paths.
  static NumaLayout synthetic(const std::string& description, bool attempt_binding = false);

  // Nodes that own at least one core, in hwloc's logical order. A core belongs to the
  // first node whose CPU set contains it, so nodes that share CPUs with an earlier one
  // (high-bandwidth or CXL memory exposed as its own node) own no cores: they are counted
  // in memory_only_nodes() and get no workers and no weights.
  const std::vector<NumaNode>& nodes() const;
  int node_count() const { return int(nodes().size()); }
  int memory_only_nodes() const;
  int total_cores() const;
  // Whether bind_* below really bind (false for synthetic layouts unless attempt_binding).
  bool binds() const;
  // e.g. "2 NUMA nodes: node 0 (os 0) 4 cores 64.0 GiB, node 1 (os 1) 4 cores 64.0 GiB"
  std::string summary() const;

  // Binds the calling thread to the PUs of core `core` of node `node`, or to all of the
  // node's PUs when core < 0. True on success or when binds() is false (nothing to do);
  // false with the reason in *why when the OS refused.
  bool bind_thread(int node, int core, std::string* why) const;
  // Binds the pages of [p, p + bytes) to node `node` (hwloc membind, BIND policy); same
  // conventions. p and bytes should be page-aligned.
  bool bind_memory(void* p, std::size_t bytes, int node, std::string* why) const;
  // The layout node that holds every page of [p, p + bytes) (pages must have been
  // touched); nullopt when they are spread over several nodes or the OS cannot say.
  std::optional<int> node_of_memory(const void* p, std::size_t bytes) const;

  struct Impl;

 private:
  explicit NumaLayout(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;  // shared: pools and buffers keep the hwloc topology alive
};

// One group of pinned worker threads per node of a layout.
//
// Group g has a leader thread (bound to the node's first core) that owns a ThreadPool of
// the group's size: the leader is the pool's thread 0 and worker i is bound to core i
// (to the whole node when the group has more threads than the node has cores). A thread
// whose binding the OS refuses keeps running unbound (or bound to the whole node): that
// is recorded in warnings(), never an error.
class NodeWorkers {
 public:
  // threads_per_node <= 0: each node's core count.
  explicit NodeWorkers(const NumaLayout& layout, int threads_per_node = 0);
  // One count per node (<= 0: that node's core count); std::invalid_argument when the
  // vector's length is not layout.node_count().
  NodeWorkers(const NumaLayout& layout, std::vector<int> threads_per_node);
  ~NodeWorkers();
  NodeWorkers(const NodeWorkers&) = delete;
  NodeWorkers& operator=(const NodeWorkers&) = delete;

  const NumaLayout& layout() const { return layout_; }
  int node_count() const { return int(groups_.size()); }
  // Node `node`'s pool; use it from fn inside run_on_every_node (its thread 0 is that
  // node's leader, so calling parallel_for from another thread runs range 0 unpinned).
  ThreadPool& pool(int node);

  // Calls fn(node, pool) on every node's leader thread at once and returns when all have
  // finished. An exception from any node is rethrown here (the lowest node's first)
  // after every node is done. Calls are serialized; fn must not call it again.
  void run_on_every_node(const std::function<void(int node, ThreadPool& pool)>& fn);

  // One line per thread the OS would not pin, e.g. "node 1 thread 0: cannot bind ...".
  std::vector<std::string> warnings() const;
  // Threads that ended up pinned as intended (0 when the layout does not bind).
  int pinned_threads() const;

 private:
  struct Group;
  void leader_loop(int node);
  void note_binding(int node, int thread, bool ok, const std::string& why);

  NumaLayout layout_;
  std::vector<std::unique_ptr<Group>> groups_;
  std::vector<std::thread> leaders_;

  std::mutex run_mu_;  // one run_on_every_node at a time
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(int, ThreadPool&)>* job_ = nullptr;
  uint64_t generation_ = 0;
  int pending_ = 0;  // leaders still starting up or running the current job
  bool stop_ = false;
  std::vector<std::exception_ptr> errors_;

  mutable std::mutex notes_mu_;
  std::vector<std::string> warnings_;
  int pinned_ = 0;
};

}  // namespace hearth

// NumaLayout on hwloc synthetic machines and this one, NodeWorkers' groups and pinning,
// and binding failures (provoked with synthetic CPU/node numbers the machine lacks).
#include <doctest/doctest.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "offload/numa.h"
#include "offload/topology.h"

namespace offload_numa_suite {

using namespace hearth;

namespace {

// Synthetic CPUs 4000+ and node 1000 exist on no real machine: with attempt_binding,
// every bind to node 1 fails, exactly as on a machine that forbids binding.
constexpr const char* kUnbindable = "numa:2(indexes=0,1000) core:2 pu:1(indexes=0,1,4000,4001)";

std::vector<unsigned> pus_of(const NumaNode& n) {
  std::vector<unsigned> all;
  for (const auto& c : n.core_pus) all.insert(all.end(), c.begin(), c.end());
  return all;
}

}  // namespace

TEST_CASE("numa layout: synthetic machines") {
  struct Case {
    const char* desc;
    int nodes, cores_per_node, pus_per_node, memory_only;
  };
  const Case cases[] = {
      {"core:2 pu:1", 1, 2, 2, 0},
      {"numa:2 core:3 pu:2", 2, 3, 6, 0},
      {"pack:2 numa:2 core:4 pu:1", 4, 4, 4, 0},
      {"pu:3", 1, 3, 3, 0},                             // no core objects: each PU is a core
      {"pack:2 [numa] [numa] core:2 pu:1", 2, 2, 2, 2},  // a second node per package shares its CPUs
  };
  for (const Case& c : cases) {
    CAPTURE(c.desc);
    const NumaLayout layout = NumaLayout::synthetic(c.desc);
    CHECK_FALSE(layout.binds());
    REQUIRE(layout.node_count() == c.nodes);
    CHECK(layout.memory_only_nodes() == c.memory_only);
    CHECK(layout.total_cores() == c.nodes * c.cores_per_node);
    std::set<unsigned> seen;
    for (const NumaNode& n : layout.nodes()) {
      CHECK(n.cores() == c.cores_per_node);
      CHECK(n.pus() == c.pus_per_node);
      for (unsigned pu : pus_of(n)) CHECK(seen.insert(pu).second);  // no PU in two nodes
    }
    // The same machine through detect_topology: every core and node accounted for.
    const Topology t = detect_topology(c.desc);
    CHECK(layout.node_count() + layout.memory_only_nodes() == t.numa_nodes);
    CHECK(int(seen.size()) == t.logical_cpus);
  }
  // Exact CPU numbers: hwloc numbers PUs in order, 4 per node here.
  const NumaLayout four = NumaLayout::synthetic("pack:2 numa:2 core:4 pu:1");
  for (int i = 0; i < 4; ++i) {
    const NumaNode& n = four.nodes()[size_t(i)];
    CHECK(n.os_index == unsigned(i));
    CHECK(pus_of(n) == std::vector<unsigned>{unsigned(4 * i), unsigned(4 * i + 1), unsigned(4 * i + 2), unsigned(4 * i + 3)});
  }
  const NumaLayout smt = NumaLayout::synthetic("numa:2 core:3 pu:2");
  CHECK(smt.nodes()[1].core_pus[0] == std::vector<unsigned>{6, 7});
  // The memory-only nodes are the second of each pair (os 1 and 3).
  const NumaLayout hbm = NumaLayout::synthetic("pack:2 [numa] [numa] core:2 pu:1");
  CHECK(hbm.nodes()[0].os_index == 0);
  CHECK(hbm.nodes()[1].os_index == 2);
  const NumaLayout sized = NumaLayout::synthetic("numa:2(memory=1000000000) core:2 pu:1");
  CHECK(sized.nodes()[1].local_memory_bytes == 1000000000u);
  CHECK(sized.summary() == "2 NUMA nodes: node 0 (os 0) 2 cores 0.9 GiB, node 1 (os 1) 2 cores 0.9 GiB");
  CHECK(hbm.summary().find("plus 2 memory-only") != std::string::npos);
  CHECK_THROWS_AS(NumaLayout::synthetic("numa:2 pu:0"), std::runtime_error);
  CHECK_THROWS_AS(NumaLayout::synthetic(""), std::runtime_error);
}

TEST_CASE("numa layout: this machine") {
  const NumaLayout layout = NumaLayout::detect();
  const Topology t = detect_topology();
  CHECK(layout.binds());
  CHECK(layout.node_count() >= 1);
  CHECK(layout.total_cores() == t.physical_cores);
  MESSAGE("this machine: " << layout.summary());
  CHECK_THROWS_AS(layout.bind_thread(layout.node_count(), 0, nullptr), std::out_of_range);
  CHECK_THROWS_AS(layout.bind_thread(0, layout.nodes()[0].cores(), nullptr), std::out_of_range);
}

TEST_CASE("node workers: one group per node running at the same time") {
  const NumaLayout layout = NumaLayout::synthetic("pack:2 numa:2 core:4 pu:1");
  for (int threads : {1, 2, 3}) {
    CAPTURE(threads);
    NodeWorkers workers(layout, threads);
    REQUIRE(workers.node_count() == 4);
    for (int n = 0; n < 4; ++n) CHECK(workers.pool(n).size() == threads);
    CHECK(workers.warnings().empty());
    CHECK(workers.pinned_threads() == 0);  // a synthetic machine binds nothing

    // Every node's function must be running at once for all four to pass the barrier.
    std::mutex mu;
    std::condition_variable cv;
    int arrived = 0;
    std::vector<int> calls(4, 0);
    std::vector<int64_t> sums(4, -1);
    std::atomic<bool> all_met{true};
    workers.run_on_every_node([&](int node, ThreadPool& pool) {
      {
        std::unique_lock<std::mutex> lock(mu);
        ++calls[size_t(node)];
        if (++arrived == 4) cv.notify_all();
        if (!cv.wait_for(lock, std::chrono::seconds(20), [&] { return arrived == 4; })) all_met = false;
      }
      std::vector<int64_t> part(size_t(pool.size()), 0);
      std::mutex part_mu;
      pool.parallel_for(1000, [&](int64_t b, int64_t e) {
        int64_t s = 0;
        for (int64_t i = b; i < e; ++i) s += i * (node + 1);
        std::lock_guard<std::mutex> lock(part_mu);
        part[0] += s;
      });
      sums[size_t(node)] = part[0];
    });
    CHECK(all_met);
    for (int n = 0; n < 4; ++n) {
      CHECK(calls[size_t(n)] == 1);
      CHECK(sums[size_t(n)] == 499500 * (n + 1));
    }
  }
  // Default: one thread per core of each node.
  NodeWorkers by_cores(NumaLayout::synthetic("numa:2 core:3 pu:2"));
  CHECK(by_cores.pool(0).size() == 3);
  CHECK(by_cores.pool(1).size() == 3);
  NodeWorkers uneven(layout, std::vector<int>{1, 2, 0, 3});
  CHECK(uneven.pool(2).size() == 4);
  CHECK(uneven.pool(3).size() == 3);
  CHECK_THROWS_AS(NodeWorkers(layout, std::vector<int>{1, 2}), std::invalid_argument);
  CHECK_THROWS_AS(uneven.pool(4), std::out_of_range);
}

TEST_CASE("node workers: an exception on one node reaches the caller") {
  NodeWorkers workers(NumaLayout::synthetic("numa:3 core:2 pu:1"), 2);
  std::atomic<int> ran{0};
  CHECK_THROWS_WITH_AS(workers.run_on_every_node([&](int node, ThreadPool& pool) {
    ++ran;
    if (node == 1) throw std::runtime_error("node 1 failed");
  }),
                       "node 1 failed", std::runtime_error);
  CHECK(ran == 3);  // the other nodes still ran to the end
  ran = 0;
  workers.run_on_every_node([&](int, ThreadPool&) { ++ran; });  // still usable
  CHECK(ran == 3);
}

TEST_CASE("node workers: threads are pinned to their cores on this machine") {
  const NumaLayout layout = NumaLayout::detect();
  NodeWorkers workers(layout);
  int total = 0;
  for (int n = 0; n < workers.node_count(); ++n) total += workers.pool(n).size();
  CHECK(workers.pinned_threads() + int(workers.warnings().size()) == total);
  for (const std::string& w : workers.warnings()) MESSAGE("binding warning: " << w);
  // Where pinning worked, each thread's CPU mask is exactly its core's PUs.
  std::mutex mu;
  std::vector<std::string> mismatches;
  workers.run_on_every_node([&](int node, ThreadPool& pool) {
    pool.parallel_for(pool.size(), [&](int64_t b, int64_t e) {
      cpu_set_t set;
      CPU_ZERO(&set);
      if (sched_getaffinity(0, sizeof set, &set) != 0) return;
      const auto& want = layout.nodes()[size_t(node)].core_pus[size_t(b)];
      bool same = CPU_COUNT(&set) == int(want.size());
      for (unsigned pu : want) same = same && CPU_ISSET(pu, &set);
      if (!same) {
        std::lock_guard<std::mutex> lock(mu);
        mismatches.push_back("node " + std::to_string(node) + " thread " + std::to_string(b));
      }
    });
  });
  if (workers.warnings().empty()) CHECK(mismatches.empty());
}

TEST_CASE("node workers: binding the OS refuses is a warning") {
  const NumaLayout layout = NumaLayout::synthetic(kUnbindable, /*attempt_binding=*/true);
  REQUIRE(layout.binds());
  std::string why;
  CHECK_FALSE(layout.bind_thread(1, 0, &why));
  CHECK(why.find("cannot bind to CPUs 4000") != std::string::npos);
  NodeWorkers workers(layout, 2);
  int node1_warnings = 0;
  for (const std::string& w : workers.warnings())
    if (w.rfind("node 1 thread ", 0) == 0) ++node1_warnings;
  CHECK(node1_warnings == 2);
  std::atomic<int> sum{0};
  workers.run_on_every_node([&](int node, ThreadPool& pool) {
    pool.parallel_for(10, [&](int64_t b, int64_t e) { sum += int(e - b); });
  });
  CHECK(sum == 20);
}

}  // namespace offload_numa_suite

// detect_topology on this machine and on hwloc synthetic topologies.
//
// hwloc 2.x synthetic syntax: levels from the top, "type:count" each, the last level
// PUs. "numa:2 core:4 pu:2" is 2 NUMA nodes x 4 cores x 2 PUs (NUMA nodes are memory
// children in hwloc 2, counted per parent level); with no NUMA level hwloc adds one.
#include <doctest/doctest.h>

#include <stdexcept>
#include <string>

#include "offload/topology.h"

namespace offload_topology_suite {

using namespace hearth;

TEST_CASE("topology: this machine") {
  const Topology t = detect_topology();
  CHECK(t.numa_nodes >= 1);
  CHECK(t.physical_cores >= 1);
  CHECK(t.logical_cpus >= 1);
  CHECK(t.logical_cpus >= t.physical_cores);
  MESSAGE("this machine: " << t.summary());
}

TEST_CASE("topology: synthetic machines") {
  struct Case {
    const char* desc;
    int numa, cores, pus;
  };
  const Case cases[] = {
      {"numa:2 core:4 pu:2", 2, 8, 16},
      {"node:2 core:4 pu:2", 2, 8, 16},                // "node" is hwloc's alias for numa
      {"package:2 numa:1 core:4 pu:2", 2, 8, 16},
      {"pack:2 [numa] core:3 pu:1", 2, 6, 6},          // memory attached by [numa] per package
      {"package:2 numa:2 l2:2 core:1 pu:4", 4, 8, 32},
      {"core:4 pu:2", 1, 4, 8},                        // no NUMA level: one default node
      {"pu:1", 1, 1, 1},                               // no cores at all: counted as 1
  };
  for (const Case& c : cases) {
    CAPTURE(c.desc);
    const Topology t = detect_topology(c.desc);
    CHECK(t.numa_nodes == c.numa);
    CHECK(t.physical_cores == c.cores);
    CHECK(t.logical_cpus == c.pus);
  }
  CHECK(detect_topology("numa:2 core:4 pu:2").summary() == "2 NUMA nodes, 8 cores, 16 hardware threads");
  CHECK(detect_topology("core:1 pu:1").summary() == "1 NUMA node, 1 core, 1 hardware thread");
}

TEST_CASE("topology: bad synthetic descriptions throw") {
  for (const char* bad : {"bogus:3", "numa:2 pu:0", "core:x pu:2", "core:4 pu:2 numa:2", "pu:1 core:4"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(detect_topology(bad), std::runtime_error);
  }
}

}  // namespace offload_topology_suite

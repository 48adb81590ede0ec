// What the machine looks like, as hwloc sees it: the sizes every pool and shard
// decision starts from.
#pragma once
#include <string>

namespace hearth {

struct Topology {
  int numa_nodes = 1;
  int physical_cores = 1;
  int logical_cpus = 1;
  std::string summary() const;  // e.g. "1 NUMA node, 2 cores, 2 hardware threads"
};

// Reads the running machine. With `synthetic` (an hwloc synthetic description such as
// "numa:2 core:4 pu:1") describes that imaginary machine instead, for tests.
Topology detect_topology(const std::string& synthetic = "");

}  // namespace hearth

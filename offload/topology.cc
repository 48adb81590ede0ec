#include "offload/topology.h"

#include <hwloc.h>

#include <algorithm>
#include <stdexcept>

namespace hearth {

std::string Topology::summary() const {
  auto plural = [](int n, const char* one) { return std::to_string(n) + " " + one + (n == 1 ? "" : "s"); };
  return plural(numa_nodes, "NUMA node") + ", " + plural(physical_cores, "core") + ", " +
         plural(logical_cpus, "hardware thread");
}

Topology detect_topology(const std::string& synthetic) {
  hwloc_topology_t topo;
  if (hwloc_topology_init(&topo) != 0) throw std::runtime_error("hwloc: cannot initialise topology");
  if (!synthetic.empty() && hwloc_topology_set_synthetic(topo, synthetic.c_str()) != 0) {
    hwloc_topology_destroy(topo);
    throw std::runtime_error("hwloc: bad synthetic topology '" + synthetic + "'");
  }
  if (hwloc_topology_load(topo) != 0) {
    hwloc_topology_destroy(topo);
    throw std::runtime_error("hwloc: cannot load topology");
  }
  Topology t;
  t.numa_nodes = std::max(1, hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE));
  t.physical_cores = std::max(1, hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE));
  t.logical_cpus = std::max(1, hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PU));
  hwloc_topology_destroy(topo);
  return t;
}

}  // namespace hearth

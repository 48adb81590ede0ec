#include "cli/numa_flags.h"

#include <cstdio>
#include <stdexcept>

#include "offload/byte_size.h"

namespace hearth::cli {

void add_numa_option(cxxopts::Options& opts) {
  opts.add_options()("numa",
                     "shard the routed experts over NUMA nodes: auto (when the machine has 2 or more), off, or an hwloc "
                     "synthetic topology for testing, e.g. 'pack:2 numa:2 core:1 pu:1'",
                     cxxopts::value<std::string>()->default_value("auto"), "auto|off|SYNTH");
}

NumaChoice parse_numa_flag(const cxxopts::ParseResult& args, bool offloaded) {
  const std::string v = args["numa"].as<std::string>();
  NumaChoice c;
  if (v == "off") return c;
  if (v == "auto") {
    if (!offloaded) c.layout = NumaLayout::detect();
    return c;
  }
  try {
    c.layout = NumaLayout::synthetic(v);
  } catch (const std::exception&) {
    throw std::invalid_argument("--numa: '" + v + "' is not auto, off or an hwloc synthetic topology (e.g. 'pack:2 numa:2 core:1 pu:1')");
  }
  if (offloaded) throw std::invalid_argument("--numa: a topology cannot be combined with --offload (use auto or off)");
  c.explicit_layout = true;
  return c;
}

std::unique_ptr<NumaExperts> shard_experts(const NumaChoice& choice, Model& model, int threads) {
  if (!choice.layout || choice.layout->node_count() < 2) return nullptr;
  const NumaLayout& layout = *choice.layout;
  // Each layer's experts leave the model as soon as the nodes hold them: never two copies.
  int64_t released = 0;
  auto experts = std::make_unique<NumaExperts>(model, layout, split_threads(threads, layout),
                                               [&](int64_t layer) { released += release_routed_experts(model, layer); });
  std::fprintf(stderr, "%s%s; %s\n", choice.explicit_layout ? "synthetic " : "", layout.summary().c_str(),
               experts->summary().c_str());
  std::fprintf(stderr, "released %s of the model's routed experts (the nodes hold them now)\n",
               format_bytes(double(released)).c_str());
  std::fflush(stderr);
  return experts;
}

}  // namespace hearth::cli

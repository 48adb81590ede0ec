// --numa auto|off|SYNTH, shared by the commands that run the model on the CPU (generate,
// chat, bench, prove, serve, perplexity, kld): whether the routed experts are sharded over
// the machine's NUMA nodes (engine/numa_experts.h).
//
//   auto   shard when the machine has two or more NUMA nodes (the default)
//   off    run the experts from the model's own weights on one thread pool (as on a
//          one-node machine)
//   SYNTH  an hwloc synthetic topology, e.g. "pack:2 numa:2 core:1 pu:1", for tests:
//          sharded as if the machine were that one (nothing is bound)
#pragma once
#include <cxxopts.hpp>
#include <memory>
#include <optional>
#include <string>

#include "engine/model.h"
#include "engine/numa_experts.h"
#include "offload/numa.h"

namespace hearth::cli {

struct NumaChoice {
  std::optional<NumaLayout> layout;  // nullopt: --numa off
  bool explicit_layout = false;      // a SYNTH topology was given
};

void add_numa_option(cxxopts::Options& opts);
// Throws std::invalid_argument naming --numa for a value that is none of the three
// (or, with `offloaded`, for a SYNTH topology: the offloaded pass runs its CPU experts
// itself; auto then means off).
NumaChoice parse_numa_flag(const cxxopts::ParseResult& args, bool offloaded = false);

// The model's experts sharded over the choice's nodes, -t `threads` split over the nodes
// by their cores, with a line on stderr saying how and one with the bytes released: each
// layer's experts are taken out of the model once the nodes hold them
// (release_routed_experts), so they are never resident twice and the model can no longer
// run them without the shards. nullptr (and the model untouched) when the choice is off
// or has one node.
std::unique_ptr<NumaExperts> shard_experts(const NumaChoice& choice, Model& model, int threads);

}  // namespace hearth::cli

// The flags that put part of the model on an accelerator, shared by generate, chat, bench:
// --offload cuda|sim, --gpu-mem SIZE, --place REGEX=gpu|cpu (repeatable), --expert-profile
// FILE, --trace FILE, --sim-link GBPS, --stream-rows N.
#pragma once
#include <cxxopts.hpp>
#include <memory>
#include <optional>

#include "engine/offload_setup.h"

namespace hearth::cli {

void add_offload_options(cxxopts::Options& opts);
// nullopt without --offload. Throws std::invalid_argument naming the flag on a bad value
// (and for offload flags given without --offload).
std::optional<OffloadOptions> parse_offload_flags(const cxxopts::ParseResult& args, int threads, int64_t ctx);

// For the batch scheduler's commands (prove, serve): the KV cache on the device holds the
// scheduler's whole KV budget (kv_budget_bytes, or its default when 0), planned as one
// sequence of that many tokens. nullptr without --offload.
std::unique_ptr<Offload> make_scheduler_offload(const cxxopts::ParseResult& args, const Model& model, int threads,
                                                int64_t kv_budget_bytes);

}  // namespace hearth::cli

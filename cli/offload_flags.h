// The flags that put part of the model on an accelerator, shared by generate, chat, bench:
// --offload cuda|sim, --gpu-mem SIZE, --place REGEX=gpu|cpu (repeatable), --expert-profile
// FILE, --trace FILE, --sim-link GBPS, --stream-rows N, --cuda-gemm kernels|cublas-bf16.
#pragma once
#include <cxxopts.hpp>
#include <memory>
#include <optional>

#include "engine/batch_scheduler.h"
#include "engine/numa_experts.h"
#include "engine/offload_setup.h"

namespace hearth::cli {

void add_offload_options(cxxopts::Options& opts);
// nullopt without --offload. Throws std::invalid_argument naming the flag on a bad value
// (and for offload flags given without --offload).
std::optional<OffloadOptions> parse_offload_flags(const cxxopts::ParseResult& args, int threads, int64_t ctx);

// The batch scheduler's options for prove and serve, from their shared flags, and the
// offload (--offload) their steps go to: the device's KV cache holds the scheduler's whole
// KV budget (kv_budget_bytes, or its default when 0), planned as one sequence of that many
// tokens. offload is nullptr without --offload; it must outlive the scheduler.
// Likewise --numa (cli/numa_flags.h): the routed experts sharded over NUMA nodes, or
// nullptr.
struct SchedulerSetup {
  BatchOptions batch;
  std::unique_ptr<Offload> offload;
  std::unique_ptr<NumaExperts> numa;
};
SchedulerSetup scheduler_setup(const cxxopts::ParseResult& args, Model& model, int threads, int64_t context,
                               int64_t kv_budget_bytes, int64_t max_running);

}  // namespace hearth::cli

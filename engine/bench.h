// Throughput measurement in the manner of llama-bench, with a memory-wall analysis:
// how fast prefill and decode run, and how close decode comes to the speed at which the
// machine can stream the weights a step must read.
//
// Tests (names as llama-bench writes them):
//   pp<P>        one sequence, P prompt tokens in one step; tokens/s
//   tg<N>        one sequence, N single-token decode steps, each sampled (argmax); tokens/s
//   tg<N>@b<B>   B sequences decoding together, one token each per step; aggregate tokens/s
//   ...@d<D>     the cache first holds D tokens (filled untimed) before the test
// Tokens are deterministic pseudo-random ids. Each test repeats `reps` times, each from a
// fresh cache; results are mean ± sample standard deviation.
//
// Memory wall: a decode step reads every always-active weight (attention, indexer, dense
// MLPs, shared experts, routers, head, one embedding row per token) plus the routed
// experts the batch's tokens were sent to, each distinct expert once, counted from the
// real routing of the timed steps. wall t/s = bandwidth / bytes per step × batch; the
// efficiency is the measured t/s over that. The bandwidth of a decode test is measured
// again right before its first repetition and right after its last (the mean of the two):
// a machine's read rate drifts (this project's VMs by a third within minutes), and a
// wall from another minute would credit or blame the kernels for the drift.
//
// Second wall: that bandwidth is a fresh buffer's, placed well by first touch. The weights
// may lie in slower memory (another NUMA node, or page cache the OS put wherever it had
// room), which no kernel can read faster than. So each decode test also times a plain
// sum over the model's own weights where they are (measure_read_rate), and reports its
// efficiency against that: the kernels' share of the gap, apart from placement's. With
// the routed experts sharded over NUMA nodes, each node's workers sum its own slices
// (NumaExperts::read_rate) after the pool has summed the rest, as a decode step reads them.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "engine/model.h"
#include "engine/profile.h"
#include "offload/bandwidth.h"
#include "offload/thread_pool.h"

namespace hearth {

class OffloadForward;
class NumaExperts;

struct BenchOptions {
  std::vector<int64_t> prompts = {512};  // a pp test per entry
  std::vector<int64_t> gens = {128};     // a tg test per entry and batch
  std::vector<int64_t> batches = {1};
  std::vector<int64_t> depths = {0};
  int reps = 3;
  bool profile = false;         // per-phase times of the decode tests
  // One untimed run of each test's shape before its repetitions (as llama-bench does;
  // `--no-warmup` turns it off): a prefill of the test's prompt length, or one decode step
  // of its batch. The first step of a new size grows the forward pass's buffers, which the
  // OS then faults in and zeroes, and charged that to the first repetition alone.
  bool warmup = true;
  // Depth filled by writing random cache entries (latents, rope keys, indexer keys with
  // their scales) instead of prefilling tokens: a decode step at depth D does the same
  // work either way (every cached position is scored by the indexer; attention reads
  // index_topk of them), and prefilling 16K tokens takes a long time on a small machine.
  bool random_depth = false;
  uint64_t token_seed = 0x5eed;
  uint64_t bandwidth_bytes = 0;  // buffer for the bandwidth measurement (0: the default)
  std::function<void(const std::string&)> progress;  // one line per test repetition
  // Run the tests offloaded (engine/offload_forward.h); `device` names it in the report.
  OffloadForward* offload = nullptr;
  // Run the CPU tests with the routed experts sharded over NUMA nodes
  // (engine/numa_experts.h); its summary heads the report.
  const NumaExperts* numa_experts = nullptr;
  std::string device;        // a line: device, resident bytes and experts
  std::string device_label;  // the table's device column, e.g. "cuda 41/64"
};

// Throws std::invalid_argument naming the option for empty lists, values below 1 (0 is
// allowed in prompts, gens and depths: the test is skipped / no prefill), reps < 1, or
// no test at all.
void validate(const BenchOptions& options);

// Bytes of weights a decode step reads whatever the routing, by kind (FP8 scales
// included; norm vectors as the float copies the forward pass reads).
struct ActiveBytes {
  int64_t attention = 0, indexer = 0, dense_mlp = 0, shared_experts = 0, router = 0, head = 0, norms = 0;
  int64_t embedding_row = 0;  // per token
  int64_t per_step(int64_t batch) const;
};

struct BenchModelInfo {
  std::string name;
  int64_t weight_bytes = 0;  // every weight the forward pass uses (the MTP layer is not)
  int64_t params = 0;
  std::string quant;         // the format holding the most weight bytes
  int threads = 0;
  ActiveBytes active;
  int64_t moe_layers = 0, experts_per_layer = 0, experts_per_token = 0;
};
BenchModelInfo describe_model(const Model& model, const std::string& name, int threads);

struct BenchResult {
  std::string name;  // "pp512", "tg128@b4@d16384"
  bool decode = false;
  int64_t tokens = 0;  // P or N
  int64_t batch = 1, depth = 0;
  std::vector<double> tok_s;  // per repetition
  double mean = 0, sd = 0;
  // Decode tests only.
  double experts_per_layer = 0;      // distinct routed experts per MoE layer per step
  double routed_bytes_per_step = 0;  // their weight bytes, summed over the MoE layers
  double active_bytes_per_step = 0;  // the always-active weights (ActiveBytes::per_step)
  double bytes_per_step() const { return routed_bytes_per_step + active_bytes_per_step; }
  double bandwidth = 0;              // bytes/s read around this test (mean of before and after)
  double wall_tok_s = 0;             // bandwidth / bytes_per_step * batch
  double efficiency = 0;             // mean / wall_tok_s
  // The same three against the rate at which the model's own weights read where they lie
  // (BenchReport::weights_read), when that was measured; 0 otherwise.
  double weights_rate = 0;          // bytes/s, mean of before and after the test
  double weights_wall_tok_s = 0;    // weights_rate / bytes_per_step * batch
  double weights_efficiency = 0;    // mean / weights_wall_tok_s
  // With BenchOptions::profile: seconds per phase summed over the timed steps (sampling
  // included; a prefill has none), and the tokens they produced or prefilled.
  std::optional<std::array<double, kPhaseCount>> phase_seconds;
  int64_t profiled_tokens = 0;
};

struct BenchReport {
  BenchModelInfo model;
  BandwidthResult bandwidth;  // measured before the first test
  std::vector<BenchResult> results;
  std::string device;  // the offload device and what it holds; empty: CPU only
  std::string device_short;
  int numa_nodes = 1;  // nodes the routed experts are sharded over (1: not sharded)
  std::string kernels;  // the CPU kernels' instruction set (isa_name), and the CPU's best if lower
  std::string gemm;     // how float weights meet many tokens (--cpu-gemm): "kernels", or "onednn (...)"
  std::string kv_cache;  // the KV cache's latent type and bytes per position (--kv-cache)
  std::string numa;    // a line: the NUMA layout and the experts' split, or that there is none
  MappedWeights mapped;  // the weights read in place from the checkpoint's mapped files
  // A plain sum over every weight a decode step may read (decode_weight_ranges), where
  // those weights lie, before the first test; bytes == 0 when it was not measured, and
  // weights_read_skipped says why.
  RangeReadResult weights_read;
  std::string weights_read_skipped;
};

// The weight bytes a decode step may read, where the model keeps them: attention (k_b and
// v_b where decode reads those), indexer, dense MLPs, routers, every routed expert the
// model holds (unless routed_experts is false: sharded over NUMA nodes, decode reads the
// shards instead), shared experts and the head. Not the embeddings (one row per token),
// norms or FP8 block scales: small, and the wall counts them anyway.
std::vector<ByteRange> decode_weight_ranges(const Model& model, bool routed_experts = true);

// Measures the bandwidth with `pool`'s threads, then runs every test.
BenchReport run_bench(const Model& model, ThreadPool& pool, const std::string& model_name, const BenchOptions& options);

// A line for the user when mapped weights read clearly slower (below 85 %) than the
// fresh buffer: how much, and that --no-mmap copies them into memory hearth owns. Empty
// otherwise (nothing mapped, nothing measured, or close enough). bench_markdown prints it.
std::string placement_hint(const BenchReport& report);

// Lines about the machine and the bytes per token, then a pasteable markdown table (and,
// with profiles, a second table of ms per token and % by phase).
std::string bench_markdown(const BenchReport& report);
nlohmann::json bench_json(const BenchReport& report);

// The test names run_bench produces for these options, in order.
std::vector<std::string> bench_test_names(const BenchOptions& options);

// The most tokens the cache holds at once across the tests (for memory estimates).
int64_t bench_max_cached_tokens(const BenchOptions& options);

}  // namespace hearth

// The forward pass split between the CPU and an accelerator (a CUDA GPU or the simulated
// device), as a PlacementPlan says.
//
// Per layer of a step: the device runs attention (and the indexer) on its KV pages, the
// router and the resident experts; the normalized hidden rows and router logits go to the
// host (a few KB per token), the host routes them and computes the CPU-resident experts
// on its thread pool while the device computes its resident experts and the shared
// expert; the CPU's partial sum goes back and is added. Only activations cross the link.
// For large prefill chunks a cost model may instead stream a layer's non-resident experts
// to the device (double-buffered: layer L+1 uploads while layer L computes).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/device_model.h"
#include "engine/forward.h"
#include "offload/device.h"

namespace hearth {

// What the per-layer choice between CPU experts and streaming a layer's experts to the
// device is made from (defaults are a typical desktop's; the CLI passes measured values).
struct OffloadTuning {
  bool allow_streaming = true;
  double cpu_read_gbps = 20;   // the CPU's measured read bandwidth
  double cpu_gflops = 100;     // the CPU's dot-product rate on these formats (GFLOP/s)
  double link_gbps = 25;       // host -> device copies
  // Streams every layer whose non-resident experts a chunk of at least this many rows
  // hits (0: decide by the cost model alone). Tests and benchmarks use it to force a path.
  int64_t force_stream_rows = 0;
  // Size of each of the two staging buffers (pinned host and device): a layer's experts
  // stream in groups of at most this many bytes, one group uploading while the previous
  // computes.
  int64_t staging_bytes = int64_t(512) << 20;
};

// Per step, what the executor did (for tests, bench and the trace).
struct OffloadStepStats {
  int64_t layers_streamed = 0;
  int64_t bytes_streamed = 0;   // expert weights uploaded for this step
  int64_t cpu_expert_calls = 0; // expert evaluations the CPU ran
  int64_t device_expert_calls = 0;
};

class OffloadForward {
 public:
  // `dm` holds the device-resident weights; experts it does not hold run on `pool`.
  OffloadForward(const Model& model, ThreadPool& pool, Device& device, DeviceModel& dm);
  ~OffloadForward();

  // Same contract as Forward::step (engine/forward.h).
  void step(KvCache& cache, const std::vector<SequenceChunk>& batch, float* logits,
            AttentionPath path = AttentionPath::kAuto, bool last_only = false);

  const Model& model() const { return model_; }
  Device& device() { return device_; }
  void set_tuning(const OffloadTuning& t) { tuning_ = t; }
  const OffloadTuning& tuning() const { return tuning_; }
  const OffloadStepStats& last_step() const { return stats_; }
  // The routing probes (ExpertUsage, ExpertCounts) later steps report to; phase timers and
  // activation observers are the CPU path's only. Forward passes its own on.
  void set_probes(const StepProbes& probes) { probes_ = probes; }

  // The cost model: whether a chunk of `rows` rows should stream layer `layer`'s
  // non-resident experts to the device rather than compute them on the CPU.
  bool should_stream(int64_t layer, int64_t rows) const;

 private:
  struct Buffers;
  struct StreamedLayer;
  struct StreamGroup;
  void enqueue_uploads_through(size_t g);
  OffloadTuning tuning_;
  OffloadStepStats stats_;
  StepProbes probes_;
  std::vector<StreamedLayer> streamed_;  // per layer
  std::vector<StreamGroup> groups_;      // this step's upload groups, in the order used
  size_t groups_enqueued_ = 0;
  const Model& model_;
  ThreadPool& pool_;
  Device& device_;
  DeviceModel& dm_;
  std::unique_ptr<Buffers> buf_;
};

}  // namespace hearth

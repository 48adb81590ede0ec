// The part of the network that lives on an accelerator, and the coarse steps the
// offloaded forward pass (engine/offload_forward.h) enqueues on it.
//
// A PlacementPlan (offload/placement.h) decides what is resident: attention + indexer,
// norms, dense layers, shared experts, head and the KV cache always are; routed experts
// are resident one by one (the rest run on the CPU, where they are stored). A DeviceModel
// holds device copies of those weights in their stored formats and runs them.
//
// Two implementations:
// - HostDeviceModel (engine/host_device_model.h), for the simulated device: the device's
//   "kernels" are the CPU engine's own functions on device-memory copies of the weights,
//   run on the simulated device's worker thread. Logits equal the CPU path's.
// - CudaDeviceModel (engine/cuda/cuda_device_model.h): CUDA kernels, device KV pages.
//
// Every method that takes `ns` is called from Device::launch's callback: with the CUDA
// stream (it must only enqueue) or, on the simulated device, on its worker (it does the
// work). Pointers named *_dev are device memory of the model's Device.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <vector>

#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "engine/model.h"

namespace hearth {

// The rows of one step, in batch order, as the device needs them (host data, kept alive by
// the caller until the step's device work has finished).
struct StepRows : RowLayout {
  AttentionPath path = AttentionPath::kAuto;  // the step's path (chunks may pin their own)
  std::vector<SequenceChunk> chunks;
  // Per chunk: the page table of its sequence after the step's extend (page ids of the
  // host KvCache; the device keeps the same pages at the same ids).
  std::vector<std::vector<int32_t>> page_tables;
  int64_t page_tokens = 0;
  // The host cache itself: the simulated device's model uses its pages as device pages
  // (device memory is host memory there); a real device keeps its own copy and ignores it.
  KvCache* host_cache = nullptr;
};

// Routed experts the device computes in one MoE layer: for each resident expert hit by the
// step, the rows routed to it and their weights (host vectors, ascending rows).
struct DeviceExpertWork {
  int32_t expert = 0;
  std::vector<int32_t> rows;
  std::vector<float> weights;
};

class DeviceModel {
 public:
  virtual ~DeviceModel() = default;

  // Host side, before a step's work is enqueued (e.g. uploads the row tables).
  virtual void begin_step(const StepRows& rows) = 0;
  // A copy-on-write page copy the host cache made while extending (device pages follow).
  virtual void copy_page(int32_t from, int32_t to, void* ns) = 0;

  // x += attention(attn_norm(x)); h = ffn_norm(x). x_dev, h_dev: [rows][hidden]. Writes the
  // layer's cache entries of the new positions.
  virtual void attention_block(int64_t layer, float* x_dev, float* h_dev, void* ns) = 0;
  // logits_dev[rows][n_routed_experts] = router(h) (MoE layers).
  virtual void router(int64_t layer, const float* h_dev, float* logits_dev, void* ns) = 0;
  // Dense layer: y = mlp(h). MoE layer: y = shared(h) + the device-resident experts' weighted
  // outputs (work lists in expert order; each row's contributions added in that order).
  virtual void ffn(int64_t layer, const float* h_dev, const std::vector<DeviceExpertWork>& experts, float* y_dev,
                   void* ns) = 0;
  // x_dev += y_dev (n floats).
  virtual void add(float* x_dev, const float* y_dev, int64_t n, void* ns) = 0;
  // logits_dev[i] = lm_head(final_norm(x_dev row rows[i])), i < rows.size().
  virtual void head(const float* x_dev, const std::vector<int32_t>& rows, float* logits_dev, void* ns) = 0;

  // Optional (default: not supported): y_dev += the weighted outputs of MLPs whose weights
  // are in device memory but not resident (a layer's experts streamed in for a large
  // prefill chunk). mlps[i] serves work[i] (work[i].expert is informational here).
  virtual bool runs_streamed_mlps() const { return false; }
  virtual void run_mlps(const float* h_dev, const std::vector<const Mlp*>& mlps,
                        const std::vector<DeviceExpertWork>& work, float* y_dev, void* ns) {
    throw std::logic_error("this device model cannot run streamed experts");
  }

  // Whether routed expert e of `layer` is resident on the device.
  virtual bool expert_resident(int64_t layer, int64_t e) const = 0;
  // Device bytes held: weights and the KV pages allocated so far.
  virtual int64_t weight_bytes() const = 0;
};

}  // namespace hearth

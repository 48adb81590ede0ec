// Everything an offloaded run needs, made from a model and the user's flags: the device
// (CUDA or simulated), the placement plan, the device-resident part of the model and the
// executor that a Forward hands its steps to.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/device_model.h"
#include "engine/offload_forward.h"
#include "offload/device.h"
#include "offload/placement.h"
#include "offload/sim_device.h"
#include "quant/cuda/gemm_policy.h"

namespace hearth {

struct OffloadOptions {
  std::string device;          // "cuda" or "sim"; empty: no offload
  int64_t gpu_mem = 0;         // placement budget; 0: the device's free memory less a reserve
  std::vector<std::string> place;  // REGEX=gpu|cpu overrides
  std::string expert_profile;  // from `hearth profile-experts`; empty: uniform
  int64_t ctx = 4096, batch = 1;  // what the KV cache is planned for
  int threads = 0;             // CPU expert threads (0: one per physical core)
  SimulatedDeviceOptions sim;  // --offload sim
  OffloadTuning tuning;
  // --offload cuda: how the device multiplies many activation rows (--cuda-gemm); fixed
  // when the device model is made.
  cuda::GemmOptions cuda_gemm;
  std::string trace_file;      // Chrome trace of the device's copies and kernels, written at the end
};

class Offload {
 public:
  // Throws std::invalid_argument / std::runtime_error with a one-line reason (unknown
  // device, no GPU, a budget too small for the always-active weights and the KV cache).
  static std::unique_ptr<Offload> create(const Model& model, const OffloadOptions& options);
  ~Offload();

  OffloadForward& forward() { return *forward_; }
  Device& device() { return *device_; }
  DeviceModel& device_model() { return *dm_; }
  const PlacementPlan& plan() const { return plan_; }
  // One line: device, resident bytes, experts resident / total.
  std::string summary() const;
  std::string experts_label() const { return std::to_string(experts_resident_) + "/" + std::to_string(experts_total_); }
  // Writes the trace collected since creation to options.trace_file (if set); returns the
  // path written or "".
  std::string write_trace();

 private:
  Offload() = default;
  OffloadOptions options_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<Device> device_;
  PlacementPlan plan_;
  std::unique_ptr<DeviceModel> dm_;
  std::unique_ptr<OffloadForward> forward_;
  int64_t experts_total_ = 0, experts_resident_ = 0;
};

}  // namespace hearth

// The device model of the simulated device: the CPU engine's own layer functions, run on
// the simulated device's worker thread over device-memory copies of the resident weights.
//
// Device memory of the simulated device is host memory, so "kernels" are the CPU kernels
// and the KV pages are the host KvCache's pages (StepRows::host_cache). What this model
// exercises is everything around the math: which weights are resident and uploaded,
// which rows cross the link and when, and the ordering of the executor's streams; the
// logits therefore equal the CPU path's up to the order in which expert outputs are added.
#pragma once
#include <functional>
#include <memory>

#include "engine/device_model.h"
#include "offload/device.h"

namespace hearth {

// resident(layer, expert): whether that routed expert is uploaded. `threads`: the threads
// the model's kernels use inside the simulated device (they stand in for the GPU's cores).
std::unique_ptr<DeviceModel> make_host_device_model(const Model& model, Device& device,
                                                    std::function<bool(int64_t, int64_t)> resident,
                                                    int threads = 1);

}  // namespace hearth

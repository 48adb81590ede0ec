// The CUDA implementation of DeviceModel (engine/device_model.h): the resident weights in
// their stored formats in GPU memory, the KV cache as GPU pages with the host cache's page
// ids, and CUDA kernels for attention (absorbed MLA + the V3.2 indexer), the MLPs and the
// head.
//
// Declared without CUDA types so host code (.cc) can include it; defined in
// engine/cuda/cuda_device_model.cu, compiled only when the build has a CUDA toolkit
// (HEARTH_HAVE_CUDA).
//
// Attention always takes the weight-absorbed form (q_lat = W_uk^T q_nope, scores against
// the cached latents, output W_uv * sum p latent), whatever StepRows::path says: it equals
// the CPU's expanded prefill form up to float rounding. kv_b is kept as a float copy for it.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>

#include "engine/device_model.h"
#include "offload/device.h"
#include "quant/cuda/gemm_policy.h"

namespace hearth {

// `device` must be a CUDA device (make_cuda_device); every weight of attention and the
// indexer, the norms, routers, dense MLPs, shared experts, the routed experts for which
// resident(layer, expert) is true and the head are uploaded (the call returns once they
// are on the device). `max_pages`: the most KV pages the host cache will use (its page
// ids must stay below it); the device pages are allocated at the first step, when the
// page size is known. Throws std::runtime_error naming the step on any CUDA failure,
// std::invalid_argument naming the tensor for a weight format the kernels do not take,
// DeviceOutOfMemory when the weights do not fit. `gemm`: how the projections and MLPs
// multiply many rows (quant/cuda/gemm_policy.h; the router and the indexer's projections
// always take the fp32 kernels).
std::unique_ptr<DeviceModel> make_cuda_device_model(const Model& model, Device& device,
                                                    std::function<bool(int64_t layer, int64_t expert)> resident,
                                                    int64_t max_pages, const cuda::GemmOptions& gemm = {});

}  // namespace hearth

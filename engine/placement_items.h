// A loaded model as the placement planner sees it (offload/placement.h): one item per
// KV cache, embeddings, head, per-layer attention / router / dense MLP / shared expert,
// and per routed expert, with the bytes each would occupy on the GPU.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/model.h"
#include "offload/placement.h"

namespace hearth {

// Weights count as engine/read_bytes.h counts them (stored format, plus FP8 block scales);
// the small 1-D vectors (norm weights, biases) at 4 bytes an element, as the model holds
// them (float). The KV cache holds `batch` sequences of `ctx` positions in whole pages of
// the cache's default page size (engine/kv_cache.h), as the paged cache allocates them.
// Throws std::invalid_argument for ctx or batch < 1.
std::vector<PlacementItem> placement_items(const Model& model, int64_t ctx, int64_t batch);

// The KV cache bytes of placement_items' kv_cache item.
int64_t kv_cache_bytes(const ModelConfig& config, int64_t ctx, int64_t batch);

// hidden, experts_per_tok, n_routed: what predict() needs from the config.
ModelShape model_shape(const ModelConfig& config);

}  // namespace hearth

// Synthetic models built in memory: the tensors `hearth synth` would write (same
// preset, seed and --set overrides give the same values, byte for byte), handed to
// Model without touching a disk. Optionally converted to a block format while they are
// generated, a band of rows at a time, so memory holds the final model and one band.
//
// Used by `hearth bench --synthetic`; the only way to run presets too large to write
// (v32-full), on machines with the RAM for them. Before allocating anything the builder
// computes what the model needs and refuses, with the numbers, when MemAvailable cannot
// cover it.
#pragma once
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/model.h"
#include "quant/dtype.h"

namespace hearth {

struct SyntheticModelOptions {
  std::string preset = "tiny";    // any synth preset, memory-only ones included
  std::vector<std::string> sets;  // "key=JSON" config overrides, as hearth synth --set
  uint64_t seed = 0;
  // Convert the weights Model's --repack converts (ModelLoadOptions::repack) to this
  // format while generating them; the result equals loading the written checkpoint with
  // that repack. nullopt: keep synth's formats (FP8 + BF16).
  std::optional<DType> type;
  // Then lay out Q4_K weights as Q4_K_R8, in place (ModelLoadOptions::interleave).
  bool interleave = false;
  int threads = 0;               // 0: one per physical core
  uint64_t extra_bytes = 0;      // more memory the caller will need (a KV cache), for the RAM check
  std::optional<uint64_t> available_bytes;  // the RAM to check against; default MemAvailable
  std::FILE* log = nullptr;      // progress lines for long builds; nullptr: quiet
};

// What building would allocate.
struct SyntheticModelSize {
  ModelConfig config;
  uint64_t weight_bytes = 0;   // the tensors as built (FP8 scales included; no MTP layer)
  uint64_t scratch_bytes = 0;  // the largest band buffer conversion needs at once
  uint64_t params = 0;
};

// The plan's sizes, without allocating. Throws for an unknown preset or a bad override.
SyntheticModelSize synthetic_model_size(const SyntheticModelOptions& options);

// Memory the RAM check keeps free besides what is asked for: 5% of the available memory,
// at least 512 MiB (allocator slack, activations, the OS).
uint64_t memory_margin_bytes(uint64_t available);

// Throws std::runtime_error, one line naming both sizes in GiB, when `needed` exceeds
// `available` less the margin; `what` names the thing that needs it, `detail` (optional)
// says what the bytes are, in parentheses after the size.
void check_fits_in_memory(const std::string& what, uint64_t needed, uint64_t available,
                          const std::string& detail = "");

// Builds the model. The RAM check runs first (weights + scratch + extra_bytes). The MTP
// layer, which the forward pass never runs, is not built.
Model build_synthetic_model(const SyntheticModelOptions& options);

}  // namespace hearth

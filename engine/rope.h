// Rotary position embedding with YaRN frequency correction, as DeepSeek-V3 uses it.
//
// MLA rotates adjacent pairs (x[2i], x[2i+1]) ("interleaved"); the V3.2 indexer rotates
// the two halves (x[i], x[i + d/2]). Both use the same frequencies.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/config.h"

namespace hearth {

class Rope {
 public:
  explicit Rope(const ModelConfig& c);
  int64_t dim() const { return dim_; }
  // Rotates x[0, dim) in place for position `pos`.
  void apply_interleaved(float* x, int64_t pos) const;
  void apply_halves(float* x, int64_t pos) const;
  const std::vector<float>& inv_freq() const { return inv_freq_; }

 private:
  void angles(int64_t pos, float* cos_out, float* sin_out) const;
  int64_t dim_;
  std::vector<float> inv_freq_;  // dim/2 frequencies
  float mscale_;                 // YaRN magnitude correction of cos/sin (1 when mscale == mscale_all_dim)
};

}  // namespace hearth

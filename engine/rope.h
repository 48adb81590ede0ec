// Rotary position embedding with YaRN frequency correction, as DeepSeek-V3 uses it.
//
// MLA rotates adjacent pairs (x[2i], x[2i+1]) ("interleaved"); the V3.2 indexer rotates
// the two halves (x[i], x[i + d/2]). Both use the same frequencies.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/config.h"

namespace hearth {

// The most frequencies a Rope has (half of config.cc's largest qk_rope_head_dim).
inline constexpr int64_t kMaxRopeFreqs = 256;

class Rope {
 public:
  explicit Rope(const ModelConfig& c);
  int64_t dim() const { return dim_; }
  // Rotates x[0, dim) in place for position `pos`.
  void apply_interleaved(float* x, int64_t pos) const;
  void apply_halves(float* x, int64_t pos) const;
  // Position pos's cos and sin of each frequency (YaRN's mscale applied), dim/2 of each.
  // A position's angles are the costly part (a double cos and sin per frequency): a row
  // computes them once and rotates every head's vector with them, to the same bits.
  void angles(int64_t pos, float* cos_out, float* sin_out) const;
  // The rotations above with angles computed beforehand.
  void apply_interleaved(float* x, const float* cs, const float* sn) const;
  void apply_halves(float* x, const float* cs, const float* sn) const;
  const std::vector<float>& inv_freq() const { return inv_freq_; }

 private:
  int64_t dim_;
  std::vector<float> inv_freq_;  // dim/2 frequencies
  float mscale_;                 // YaRN magnitude correction of cos/sin (1 when mscale == mscale_all_dim)
};

}  // namespace hearth

// Four candidate scales side by side (internal to quant/): the scale searches try a grid of
// candidates per group of values, and each candidate's sums are a chain of dependent
// double additions. One lane of a vector of doubles per candidate (GCC's vector extensions:
// AVX where the function is built for it through target_clones, two SSE2 halves
// otherwise) overlaps those chains, while each lane does exactly the operations, in the
// same order, that its candidate did alone: the quantized bytes do not change.
#pragma once

namespace hearth::candidate_lanes {

constexpr int kLanes = 4;
typedef double Lanes __attribute__((vector_size(32)));
typedef long long LaneBits __attribute__((vector_size(32)));  // comparison masks, indices

inline Lanes splat(double v) { return Lanes{v, v, v, v}; }
inline LaneBits splat_bits(long long v) { return LaneBits{v, v, v, v}; }

}  // namespace hearth::candidate_lanes

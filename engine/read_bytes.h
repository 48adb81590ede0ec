// How many bytes of weights a kernel streams when it reads a matrix once: the data in
// its stored format plus, for FP8, the block scales. The unit of the memory-wall
// analysis (`hearth bench`): decode is bound by these bytes, not by arithmetic.
#pragma once
#include <cstdint>

#include "engine/model.h"

namespace hearth {

inline int64_t weight_read_bytes(const WeightMatrix& w) {
  int64_t n = w.bytes();
  if (w.scale) n += ((w.rows + w.block - 1) / w.block) * w.scale_cols() * int64_t(sizeof(float));
  return n;
}

inline int64_t mlp_read_bytes(const Mlp& m) {
  return weight_read_bytes(m.gate) + weight_read_bytes(m.up) + weight_read_bytes(m.down);
}

}  // namespace hearth

// Internal to the CUDA code: every CUDA runtime call goes through check(), which turns a
// failure into std::runtime_error naming what was being done and CUDA's own message.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace hearth::cuda {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA error while ") + what + ": " + cudaGetErrorString(e));
}

// After a kernel launch: reports a bad launch configuration (and any earlier asynchronous
// failure of the context) at the call that caused or first saw it.
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

}  // namespace hearth::cuda

// Error checks for the CUDA runtime calls of engine/cuda: every failure becomes a
// std::runtime_error naming the step that failed and CUDA's reason.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace hearth::cuda_mla {

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA: ") + what + ": " + cudaGetErrorString(e));
}

// After a kernel launch: configuration errors show up here, at once.
inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

}  // namespace hearth::cuda_mla

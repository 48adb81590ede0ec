// The CUDA entry points of offload/device.h for a build without a CUDA toolkit: nothing is
// compiled for a GPU, so there is never a CUDA device to make.
#include <stdexcept>

#include "offload/device.h"

namespace hearth {

bool cuda_compiled() { return false; }
bool cuda_device_present() { return false; }

std::unique_ptr<Device> make_cuda_device(int) {
  throw std::runtime_error("this build has no CUDA backend (no nvcc found at configure time)");
}

}  // namespace hearth

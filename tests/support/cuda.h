// Shared by the CUDA suites (tests/cuda/): the device the tests run on, or a visible skip
// when this build or this machine has none, and byte-exact host <-> device copies.
//
// Every CUDA test case starts with
//   auto dev = hearth::testing::cuda_device_or_skip();
//   if (!dev) return;
// and keeps the code that calls the CUDA kernels under #if HEARTH_HAVE_CUDA (a build without
// the toolkit has no such functions to link).
#pragma once
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "offload/device.h"

namespace hearth::testing {

// The first CUDA device, or nullptr after printing "skipped: no GPU" (as a doctest
// message and on stderr, so a run without a GPU says so in its log).
inline std::unique_ptr<Device> cuda_device_or_skip() {
  if (!cuda_compiled() || !cuda_device_present()) {
    MESSAGE("skipped: no GPU");
    std::fprintf(stderr, "skipped: no GPU\n");
    return nullptr;
  }
  return make_cuda_device();
}

// A device copy of v starting `offset` bytes into its buffer (offset > 0 makes data that is
// not aligned: the kernels must read it anyway).
template <class T>
DeviceBuffer upload(Device& dev, const std::vector<T>& v, int64_t offset = 0) {
  const int64_t bytes = int64_t(v.size() * sizeof(T));
  DeviceBuffer b(dev, bytes + offset + 1);
  if (bytes > 0) dev.copy_to_device(0, b.as<uint8_t>() + offset, v.data(), bytes, "test upload");
  dev.synchronize();
  return b;
}

template <class T>
std::vector<T> download(Device& dev, const void* src, int64_t count) {
  std::vector<T> v(static_cast<size_t>(count));
  if (count > 0) dev.copy_to_host(0, v.data(), src, count * int64_t(sizeof(T)), "test download");
  dev.synchronize();
  return v;
}

// Runs fn(stream) on the device's compute stream and waits for it.
template <class Fn>
void run_on(Device& dev, Fn fn) {
  dev.launch(0, "test", [&](void* s) { fn(s); });
  dev.synchronize();
}

}  // namespace hearth::testing

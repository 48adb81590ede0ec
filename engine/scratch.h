// Reusable, uninitialized float buffers for the forward pass's large temporaries.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <limits>
#include <memory>

namespace hearth {

// A float buffer that keeps its memory from one call to the next and only grows.
//
// A prefill layer's temporaries (queries, the keys and values expanded from the latent
// cache, the heads' outputs) are tens of MB that live for a few milliseconds. Allocated
// afresh per layer, they came back from the OS each time and were page-faulted in and
// zeroed by the kernel again: on the bench preset's 2048-token prefill that took 42 ms
// per layer for the expanded keys' 32 MB, twice the GEMM that fills them
// (docs/performance.md). take() leaves the contents unspecified, so a user must write
// every float it reads.
class ScratchFloats {
 public:
  // For tests: while on, every take() fills the floats it returns with NaN, so a user
  // that reads a float it did not write turns its results into NaN.
  static void set_poison(bool on) { poison().store(on, std::memory_order_relaxed); }

  // At least n floats. A call that grows the buffer invalidates what earlier calls returned.
  float* take(std::size_t n) {
    if (n > size_) {
      data_.reset();  // the old block goes first: the peak is the new size, not both
      data_.reset(new float[n]);
      size_ = n;
    }
    if (poison().load(std::memory_order_relaxed))
      std::fill_n(data_.get(), n, std::numeric_limits<float>::quiet_NaN());
    return data_.get();
  }

 private:
  static std::atomic<bool>& poison() {
    static std::atomic<bool> on{false};
    return on;
  }
  std::unique_ptr<float[]> data_;
  std::size_t size_ = 0;
};

}  // namespace hearth

// An accelerator as the scheduler sees it: memory, ordered queues of work (streams),
// events between them, asynchronous host<->device copies and timestamps of what ran.
//
// Two implementations share this interface: the CUDA device (offload/cuda_device.h,
// built when a CUDA toolkit is found) and the simulated device (offload/sim_device.h),
// which runs the same queue semantics on host threads with a modelled link, so the
// scheduler and the planner are exercised on machines without a GPU.
//
// Semantics (both implementations):
// - Work on one stream runs in the order it was enqueued; work on different streams may
//   overlap. wait_event(s, e) makes later work on s wait until e's work has finished.
// - Enqueue calls return at once; the host waits only in synchronize()/event_wait().
// - copy_to_device/copy_to_host move `bytes` between host memory (pinned memory from
//   alloc_pinned for truly asynchronous copies) and device memory from alloc().
// - launch(s, label, fn): fn enqueues the kernels of one step. The CUDA device calls fn at
//   once with its cudaStream_t (fn must only enqueue); the simulated device calls fn on the
//   stream's worker thread when the stream reaches it, with nullptr, and fn does the work.
//   Either way, the work is ordered with the stream's other operations.
// - Every operation gets a start and end timestamp from the device's own clock
//   (CUDA events / the simulator's clock) when tracing is on; trace() returns them.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace hearth {

// Thrown when device (or pinned host) memory cannot be had; the message names the size.
class DeviceOutOfMemory : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

using StreamId = int32_t;
using EventId = int32_t;

// One finished operation, for Chrome traces and overlap measurements.
struct DeviceOp {
  enum class Kind { kCopyToDevice, kCopyToHost, kKernel };
  Kind kind = Kind::kKernel;
  StreamId stream = 0;
  std::string label;
  double start_us = 0, end_us = 0;  // device clock, microseconds since the device was made
  int64_t bytes = 0;                // copies only
};

class Device {
 public:
  virtual ~Device() = default;

  virtual std::string name() const = 0;  // e.g. "NVIDIA H200" or "simulated (16 GB/s link)"
  virtual bool simulated() const = 0;
  virtual int64_t total_memory() const = 0;
  virtual int64_t free_memory() const = 0;

  // Device memory; throws DeviceOutOfMemory naming the size when it does not fit.
  virtual void* alloc(int64_t bytes) = 0;
  virtual void free(void* p) = 0;
  // Page-locked host memory, the source/target of asynchronous copies.
  virtual void* alloc_pinned(int64_t bytes) = 0;
  virtual void free_pinned(void* p) = 0;

  // Stream 0 always exists (compute); more are made on request (e.g. "copy").
  virtual StreamId create_stream(std::string_view name) = 0;
  virtual std::string stream_name(StreamId s) const = 0;

  virtual void copy_to_device(StreamId s, void* dst, const void* src, int64_t bytes, std::string_view label) = 0;
  virtual void copy_to_host(StreamId s, void* dst, const void* src, int64_t bytes, std::string_view label) = 0;
  virtual void launch(StreamId s, std::string_view label, std::function<void(void* native_stream)> fn) = 0;

  // An event marks the point reached by a stream's queue; waiting on it (from a stream
  // or the host) waits for everything enqueued on that stream before it.
  virtual EventId record_event(StreamId s) = 0;
  virtual void wait_event(StreamId s, EventId e) = 0;
  virtual void event_wait(EventId e) = 0;  // host blocks
  virtual void release_event(EventId e) = 0;

  virtual void synchronize(StreamId s) = 0;
  virtual void synchronize() = 0;  // every stream

  // Timestamps of finished operations since the last clear (tracing on by default off).
  virtual void set_tracing(bool on) = 0;
  virtual std::vector<DeviceOp> trace() = 0;  // synchronizes first
  virtual void clear_trace() = 0;
};

// Device memory owned by a scope.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Device& d, int64_t bytes) : dev_(&d), ptr_(d.alloc(bytes)), bytes_(bytes) {}
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    reset();
    dev_ = o.dev_;
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
    return *this;
  }
  ~DeviceBuffer() { reset(); }
  void reset() {
    if (ptr_) dev_->free(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }
  void* get() const { return ptr_; }
  template <class T> T* as() const { return static_cast<T*>(ptr_); }
  int64_t bytes() const { return bytes_; }

 private:
  Device* dev_ = nullptr;
  void* ptr_ = nullptr;
  int64_t bytes_ = 0;
};

// Whether this build has the CUDA backend, and whether a usable GPU is present.
bool cuda_compiled();
bool cuda_device_present();
// The first CUDA GPU (ordinal 0 unless given); throws std::runtime_error with the reason
// ("this build has no CUDA backend", "no CUDA device: <driver message>").
std::unique_ptr<Device> make_cuda_device(int ordinal = 0);

}  // namespace hearth

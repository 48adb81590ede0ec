// The CUDA implementation of Device (offload/device.h), built when the build has a CUDA
// toolkit (HEARTH_HAVE_CUDA). Declared without CUDA types; make_cuda_device() is the usual
// way to get one.
//
// - Streams are non-blocking CUDA streams (they never synchronize with the legacy default
//   stream); stream 0, "compute", is made with the device.
// - Every public call first makes this device current on the calling thread, so several
//   CudaDevices (GPUs) can be driven from one thread; launch() does too before it calls fn.
// - Events handed out by record_event come from a pool (timing disabled: cheaper); tracing
//   records a pair of timing events around each copy and launch and turns them into
//   DeviceOp times when trace() is called.
// - Times are microseconds since the device was made: a start event is recorded at
//   construction, and each tracing session (set_tracing(true), clear_trace()) records an
//   epoch event whose offset from it is measured once, so times within a session keep
//   CUDA events' resolution (about 0.5 us) however long the device has lived.
// - Every failing CUDA call throws std::runtime_error naming the operation and CUDA's
//   message; allocation failures throw DeviceOutOfMemory with the size and free memory.
//   free()/free_pinned() report failures on stderr instead (they run in destructors).
// The object is safe to call from several threads (one mutex guards its tables).
#pragma once
#include <memory>

#include "offload/device.h"

namespace hearth {

class CudaDevice : public Device {
 public:
  // Throws std::runtime_error when the ordinal is not a usable device.
  explicit CudaDevice(int ordinal = 0);
  ~CudaDevice() override;
  CudaDevice(const CudaDevice&) = delete;
  CudaDevice& operator=(const CudaDevice&) = delete;

  std::string name() const override;
  bool simulated() const override { return false; }
  int64_t total_memory() const override;
  int64_t free_memory() const override;

  void* alloc(int64_t bytes) override;
  void free(void* p) override;
  void* alloc_pinned(int64_t bytes) override;
  void free_pinned(void* p) override;

  StreamId create_stream(std::string_view name) override;
  std::string stream_name(StreamId s) const override;

  void copy_to_device(StreamId s, void* dst, const void* src, int64_t bytes, std::string_view label) override;
  void copy_to_host(StreamId s, void* dst, const void* src, int64_t bytes, std::string_view label) override;
  void launch(StreamId s, std::string_view label, std::function<void(void* native_stream)> fn) override;

  EventId record_event(StreamId s) override;
  void wait_event(StreamId s, EventId e) override;
  void event_wait(EventId e) override;
  void release_event(EventId e) override;

  void synchronize(StreamId s) override;
  void synchronize() override;

  void set_tracing(bool on) override;
  std::vector<DeviceOp> trace() override;
  void clear_trace() override;

  // Beyond Device: the CUDA ordinal, the compute capability (e.g. 90) and the
  // cudaStream_t of a stream (as void*), for code that enqueues outside launch().
  int ordinal() const;
  int compute_capability() const;
  void* native_stream(StreamId s) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hearth

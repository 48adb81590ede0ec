// CudaDevice (offload/cuda_device.h) and the CUDA entry points of offload/device.h.
#include "offload/cuda_device.h"

#include <cuda_runtime.h>

#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

namespace hearth {

namespace {

void check(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) throw std::runtime_error("CUDA error while " + what + ": " + cudaGetErrorString(e));
}

// For paths that must not throw (free, destructor): report and go on.
void report(cudaError_t e, const char* what) {
  if (e != cudaSuccess) std::fprintf(stderr, "hearth: CUDA error while %s: %s\n", what, cudaGetErrorString(e));
}

std::string mib(int64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

}  // namespace

struct CudaDevice::Impl {
  int ordinal = 0;
  std::string name;
  int compute_capability = 0;
  int64_t total_memory = 0;

  mutable std::mutex mu;
  std::vector<cudaStream_t> streams;
  std::vector<std::string> stream_names;
  std::vector<cudaEvent_t> events;  // by EventId; nullptr once released
  std::vector<EventId> free_event_ids;
  std::vector<cudaEvent_t> sync_pool, timing_pool;  // unused events (timing off / on)

  cudaEvent_t start = nullptr;  // recorded at construction: time zero
  cudaEvent_t epoch = nullptr;  // the tracing session's origin
  double epoch_us = 0;          // epoch - start
  bool tracing = false;
  struct Pending {
    DeviceOp op;
    cudaEvent_t begin, end;
  };
  std::vector<Pending> pending;
  std::vector<DeviceOp> done;

  void make_current() const { check(cudaSetDevice(ordinal), "selecting CUDA device " + std::to_string(ordinal)); }

  cudaStream_t stream(StreamId s) const {
    if (s < 0 || size_t(s) >= streams.size())
      throw std::out_of_range("CudaDevice: no stream " + std::to_string(s) + " (" + std::to_string(streams.size()) +
                              " made)");
    return streams[size_t(s)];
  }

  cudaEvent_t event(EventId e) const {
    if (e < 0 || size_t(e) >= events.size() || !events[size_t(e)])
      throw std::out_of_range("CudaDevice: no event " + std::to_string(e) + " (never recorded or released)");
    return events[size_t(e)];
  }

  cudaEvent_t take(std::vector<cudaEvent_t>& pool, bool timing) {
    if (!pool.empty()) {
      cudaEvent_t e = pool.back();
      pool.pop_back();
      return e;
    }
    cudaEvent_t e = nullptr;
    check(cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming), "creating an event");
    return e;
  }

  // Under mu, when tracing: the event that opens an operation on stream st.
  cudaEvent_t trace_begin(cudaStream_t st) {
    if (!tracing) return nullptr;
    cudaEvent_t b = take(timing_pool, true);
    check(cudaEventRecord(b, st), "recording a trace event");
    return b;
  }
  void trace_end(cudaStream_t st, cudaEvent_t begin, DeviceOp op) {
    if (!begin) return;
    cudaEvent_t e = take(timing_pool, true);
    check(cudaEventRecord(e, st), "recording a trace event");
    pending.push_back({std::move(op), begin, e});
  }

  double since_epoch_us(cudaEvent_t e) const {
    float ms = 0;
    check(cudaEventElapsedTime(&ms, epoch, e), "reading a trace event's time");
    return epoch_us + double(ms) * 1000.0;
  }

  // Under mu, every stream idle: turns pending operations into DeviceOps.
  void resolve() {
    for (Pending& p : pending) {
      p.op.start_us = since_epoch_us(p.begin);
      p.op.end_us = since_epoch_us(p.end);
      done.push_back(std::move(p.op));
      timing_pool.push_back(p.begin);
      timing_pool.push_back(p.end);
    }
    pending.clear();
  }

  // Under mu, every stream idle: a new origin for the operations traced from now on.
  void new_epoch() {
    check(cudaEventRecord(epoch, streams[0]), "recording the trace epoch");
    check(cudaEventSynchronize(epoch), "waiting for the trace epoch");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, epoch), "measuring the trace epoch");
    epoch_us = double(ms) * 1000.0;
  }

  void sync_all_locked() const {
    for (size_t i = 0; i < streams.size(); ++i)
      check(cudaStreamSynchronize(streams[i]), "synchronizing stream " + stream_names[i]);
  }
};

CudaDevice::CudaDevice(int ordinal) : impl_(std::make_unique<Impl>()) {
  Impl& d = *impl_;
  d.ordinal = ordinal;
  d.make_current();
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, ordinal), "reading the properties of CUDA device " + std::to_string(ordinal));
  d.name = prop.name;
  d.compute_capability = prop.major * 10 + prop.minor;
  d.total_memory = int64_t(prop.totalGlobalMem);
  cudaStream_t s = nullptr;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "creating the compute stream");
  d.streams.push_back(s);
  d.stream_names.emplace_back("compute");
  check(cudaEventCreate(&d.start), "creating the start event");
  check(cudaEventCreate(&d.epoch), "creating the epoch event");
  check(cudaEventRecord(d.start, s), "recording the start event");
  check(cudaEventRecord(d.epoch, s), "recording the epoch event");
}

CudaDevice::~CudaDevice() {
  Impl& d = *impl_;
  report(cudaSetDevice(d.ordinal), "selecting the device to close it");
  for (cudaStream_t s : d.streams) report(cudaStreamSynchronize(s), "synchronizing a stream at close");
  for (Impl::Pending& p : d.pending) {
    report(cudaEventDestroy(p.begin), "destroying an event");
    report(cudaEventDestroy(p.end), "destroying an event");
  }
  for (cudaEvent_t e : d.events)
    if (e) report(cudaEventDestroy(e), "destroying an event");
  for (cudaEvent_t e : d.sync_pool) report(cudaEventDestroy(e), "destroying an event");
  for (cudaEvent_t e : d.timing_pool) report(cudaEventDestroy(e), "destroying an event");
  report(cudaEventDestroy(d.start), "destroying the start event");
  report(cudaEventDestroy(d.epoch), "destroying the epoch event");
  for (cudaStream_t s : d.streams) report(cudaStreamDestroy(s), "destroying a stream");
}

std::string CudaDevice::name() const { return impl_->name; }
int64_t CudaDevice::total_memory() const { return impl_->total_memory; }
int CudaDevice::ordinal() const { return impl_->ordinal; }
int CudaDevice::compute_capability() const { return impl_->compute_capability; }

int64_t CudaDevice::free_memory() const {
  impl_->make_current();
  size_t free = 0, total = 0;
  check(cudaMemGetInfo(&free, &total), "querying free device memory");
  return int64_t(free);
}

void* CudaDevice::alloc(int64_t bytes) {
  if (bytes < 0) throw std::invalid_argument("CudaDevice::alloc: negative size " + std::to_string(bytes));
  if (bytes == 0) return nullptr;
  impl_->make_current();
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, size_t(bytes));
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // not sticky, but leave no trace for check_launch
    size_t free = 0, total = 0;
    const bool known = cudaMemGetInfo(&free, &total) == cudaSuccess;
    throw DeviceOutOfMemory("cannot allocate " + std::to_string(bytes) + " bytes (" + mib(bytes) + ") on " +
                            impl_->name + ": " +
                            (known ? mib(int64_t(free)) + " free of " + mib(int64_t(total)) : "free memory unknown"));
  }
  check(e, "allocating " + std::to_string(bytes) + " bytes of device memory");
  return p;
}

void CudaDevice::free(void* p) {
  if (!p) return;
  report(cudaSetDevice(impl_->ordinal), "selecting the device to free memory");
  report(cudaFree(p), "freeing device memory");
}

void* CudaDevice::alloc_pinned(int64_t bytes) {
  if (bytes < 0) throw std::invalid_argument("CudaDevice::alloc_pinned: negative size " + std::to_string(bytes));
  if (bytes == 0) return nullptr;
  impl_->make_current();
  void* p = nullptr;
  const cudaError_t e = cudaHostAlloc(&p, size_t(bytes), cudaHostAllocPortable);
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    throw DeviceOutOfMemory("cannot pin " + std::to_string(bytes) + " bytes (" + mib(bytes) + ") of host memory");
  }
  check(e, "allocating " + std::to_string(bytes) + " bytes of pinned host memory");
  return p;
}

void CudaDevice::free_pinned(void* p) {
  if (!p) return;
  report(cudaFreeHost(p), "freeing pinned host memory");
}

StreamId CudaDevice::create_stream(std::string_view name) {
  Impl& d = *impl_;
  d.make_current();
  std::lock_guard lock(d.mu);
  cudaStream_t s = nullptr;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "creating stream " + std::string(name));
  d.streams.push_back(s);
  d.stream_names.emplace_back(name);
  return StreamId(d.streams.size() - 1);
}

std::string CudaDevice::stream_name(StreamId s) const {
  std::lock_guard lock(impl_->mu);
  (void)impl_->stream(s);
  return impl_->stream_names[size_t(s)];
}

void CudaDevice::copy_to_device(StreamId s, void* dst, const void* src, int64_t bytes, std::string_view label) {
  if (bytes < 0) throw std::invalid_argument("CudaDevice::copy_to_device: negative size");
  if (bytes == 0) return;
  Impl& d = *impl_;
  d.make_current();
  std::lock_guard lock(d.mu);
  const cudaStream_t st = d.stream(s);
  cudaEvent_t begin = d.trace_begin(st);
  check(cudaMemcpyAsync(dst, src, size_t(bytes), cudaMemcpyHostToDevice, st),
        "copying " + std::to_string(bytes) + " bytes to the device (" + std::string(label) + ")");
  d.trace_end(st, begin, DeviceOp{DeviceOp::Kind::kCopyToDevice, s, std::string(label), 0, 0, bytes});
}

void CudaDevice::copy_to_host(StreamId s, void* dst, const void* src, int64_t bytes, std::string_view label) {
  if (bytes < 0) throw std::invalid_argument("CudaDevice::copy_to_host: negative size");
  if (bytes == 0) return;
  Impl& d = *impl_;
  d.make_current();
  std::lock_guard lock(d.mu);
  const cudaStream_t st = d.stream(s);
  cudaEvent_t begin = d.trace_begin(st);
  check(cudaMemcpyAsync(dst, src, size_t(bytes), cudaMemcpyDeviceToHost, st),
        "copying " + std::to_string(bytes) + " bytes to the host (" + std::string(label) + ")");
  d.trace_end(st, begin, DeviceOp{DeviceOp::Kind::kCopyToHost, s, std::string(label), 0, 0, bytes});
}

void CudaDevice::launch(StreamId s, std::string_view label, std::function<void(void* native_stream)> fn) {
  Impl& d = *impl_;
  d.make_current();
  cudaStream_t st;
  cudaEvent_t begin;
  {
    std::lock_guard lock(d.mu);
    st = d.stream(s);
    begin = d.trace_begin(st);
  }
  // fn runs without the lock: it may use this device (e.g. native_stream()).
  try {
    fn(static_cast<void*>(st));
  } catch (...) {
    if (begin) {
      std::lock_guard lock(d.mu);
      d.trace_end(st, begin, DeviceOp{DeviceOp::Kind::kKernel, s, std::string(label) + " (failed)", 0, 0, 0});
    }
    throw;
  }
  std::lock_guard lock(d.mu);
  d.trace_end(st, begin, DeviceOp{DeviceOp::Kind::kKernel, s, std::string(label), 0, 0, 0});
}

EventId CudaDevice::record_event(StreamId s) {
  Impl& d = *impl_;
  d.make_current();
  std::lock_guard lock(d.mu);
  const cudaStream_t st = d.stream(s);
  cudaEvent_t e = d.take(d.sync_pool, false);
  const cudaError_t r = cudaEventRecord(e, st);
  if (r != cudaSuccess) {
    d.sync_pool.push_back(e);
    check(r, "recording an event on stream " + d.stream_names[size_t(s)]);
  }
  EventId id;
  if (!d.free_event_ids.empty()) {
    id = d.free_event_ids.back();
    d.free_event_ids.pop_back();
    d.events[size_t(id)] = e;
  } else {
    id = EventId(d.events.size());
    d.events.push_back(e);
  }
  return id;
}

void CudaDevice::wait_event(StreamId s, EventId e) {
  Impl& d = *impl_;
  d.make_current();
  std::lock_guard lock(d.mu);
  check(cudaStreamWaitEvent(d.stream(s), d.event(e), 0), "making a stream wait for an event");
}

void CudaDevice::event_wait(EventId e) {
  Impl& d = *impl_;
  d.make_current();
  cudaEvent_t ev;
  {
    std::lock_guard lock(d.mu);
    ev = d.event(e);
  }
  check(cudaEventSynchronize(ev), "waiting for an event");
}

void CudaDevice::release_event(EventId e) {
  Impl& d = *impl_;
  std::lock_guard lock(d.mu);
  cudaEvent_t ev = d.event(e);
  d.events[size_t(e)] = nullptr;
  d.free_event_ids.push_back(e);
  d.sync_pool.push_back(ev);  // a later record overwrites it; waits already enqueued still hold
}

void CudaDevice::synchronize(StreamId s) {
  Impl& d = *impl_;
  d.make_current();
  cudaStream_t st;
  {
    std::lock_guard lock(d.mu);
    st = d.stream(s);
  }
  check(cudaStreamSynchronize(st), "synchronizing stream " + std::to_string(s));
}

void CudaDevice::synchronize() {
  Impl& d = *impl_;
  d.make_current();
  std::vector<cudaStream_t> all;
  {
    std::lock_guard lock(d.mu);
    all = d.streams;
  }
  for (cudaStream_t st : all) check(cudaStreamSynchronize(st), "synchronizing the device's streams");
}

void CudaDevice::set_tracing(bool on) {
  Impl& d = *impl_;
  d.make_current();
  std::lock_guard lock(d.mu);
  if (on == d.tracing) return;
  if (on) {
    d.sync_all_locked();
    d.resolve();  // operations of an earlier session keep that session's origin
    d.new_epoch();
  }
  d.tracing = on;
}

std::vector<DeviceOp> CudaDevice::trace() {
  Impl& d = *impl_;
  d.make_current();
  std::lock_guard lock(d.mu);
  d.sync_all_locked();
  d.resolve();
  return d.done;
}

void CudaDevice::clear_trace() {
  Impl& d = *impl_;
  d.make_current();
  std::lock_guard lock(d.mu);
  d.sync_all_locked();
  for (Impl::Pending& p : d.pending) {
    d.timing_pool.push_back(p.begin);
    d.timing_pool.push_back(p.end);
  }
  d.pending.clear();
  d.done.clear();
  if (d.tracing) d.new_epoch();
}

void* CudaDevice::native_stream(StreamId s) const {
  std::lock_guard lock(impl_->mu);
  return static_cast<void*>(impl_->stream(s));
}

bool cuda_compiled() { return true; }

bool cuda_device_present() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return count >= 1;
}

std::unique_ptr<Device> make_cuda_device(int ordinal) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    throw std::runtime_error(std::string("no CUDA device: ") + cudaGetErrorString(e));
  }
  if (count < 1) throw std::runtime_error("no CUDA device: the driver reports none");
  if (ordinal < 0 || ordinal >= count)
    throw std::runtime_error("no CUDA device " + std::to_string(ordinal) + " (" + std::to_string(count) +
                             " present)");
  return std::make_unique<CudaDevice>(ordinal);
}

}  // namespace hearth

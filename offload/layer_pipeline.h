// Streams layers' weights to a device while it computes: double-buffered, so layer L+1's
// upload runs during layer L's compute (prefill of a long chunk, where a layer's compute
// takes about as long as copying the experts it needs).
//
// Per layer, the caller names host regions (a layer's expert matrices, say) to bring over.
// They are packed into one device buffer, each at a 256-byte aligned offset. There are two
// device buffers and two pinned staging buffers; layer L uses buffer L % 2:
//
//   staging thread   memcpy regions of L -> pinned[L%2]      after upload(L-2) has finished
//   copy stream      pinned[L%2] -> device[L%2]               after compute(L-2) (event)
//   compute stream   compute(L) on device[L%2]                after upload(L) (event)
//
// so the host memcpy, the link and the compute all overlap. Every Device call is made
// from the caller's thread (the staging thread only copies host memory), so the Device
// need not be thread-safe.
//
// Two ways to use it:
// - run(layers, compute): the whole pass; compute(slot, native_stream) is launched on the
//   compute stream once per layer. Returns bytes, time and the copy/compute overlap
//   measured from the device's own trace.
// - begin / acquire / release / finish: for a forward pass that enqueues several steps per
//   layer and does host work in between (the offloaded forward's large prefill chunks).
//   acquire(L) makes the compute stream wait for layer L's data and returns where it is;
//   the caller enqueues layer L's work on the compute stream; release(L) marks the end of
//   that work (the buffer may be overwritten once the device reaches it).
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "offload/device.h"
#include "offload/trace.h"

namespace hearth {

// Host memory to upload. Kept valid and unchanged by the caller until the pass ends.
struct HostRegion {
  const void* data = nullptr;
  int64_t bytes = 0;
};
using LayerRegions = std::vector<HostRegion>;

// Where a layer's regions are on the device during its compute.
struct LayerSlot {
  int64_t layer = 0;
  void* data = nullptr;          // device memory; region i at data + offsets[i]
  std::vector<int64_t> offsets;  // multiples of LayerPipeline::kRegionAlign
  int64_t bytes = 0;             // bytes uploaded: the end of the last region
};

struct LayerPipelineOptions {
  StreamId compute_stream = 0;
  StreamId copy_stream = -1;  // below 0: the pipeline makes a stream named "upload"
  // run(): trace the device during the pass (the trace is cleared first and tracing is
  // turned off after) and report the ops and their overlap.
  bool trace = true;
  // When set: the staging thread's memcpys are reported as host spans on this clock.
  const HostClock* host_clock = nullptr;
};

struct LayerPipelineStats {
  int64_t layers = 0;
  int64_t bytes = 0;     // uploaded, all layers
  double wall_us = 0;    // host time of run(), from begin to the end of the last compute
  OverlapStats overlap;  // copy stream vs compute stream, from the device trace
  std::vector<DeviceOp> ops;   // the device trace of the pass (options.trace)
  std::vector<HostSpan> host;  // staging memcpys (options.host_clock)
};

class LayerPipeline {
 public:
  static constexpr int64_t kRegionAlign = 256;

  // Allocates two device buffers and two pinned buffers of `capacity` bytes (at least
  // layer_bytes() of the largest layer that will pass). Throws DeviceOutOfMemory when they
  // do not fit.
  LayerPipeline(Device& device, int64_t capacity, const LayerPipelineOptions& options = {});
  // Ends a pass still open: waits for the device's work on the two streams (errors it
  // kept are dropped here; finish() reports them).
  ~LayerPipeline();
  LayerPipeline(const LayerPipeline&) = delete;
  LayerPipeline& operator=(const LayerPipeline&) = delete;

  // Bytes a layer's regions take packed at aligned offsets.
  static int64_t layer_bytes(const LayerRegions& regions);
  // The largest layer_bytes of `layers`: the capacity a pipeline needs for them.
  static int64_t capacity_for(const std::vector<LayerRegions>& layers);

  // Starts a pass over `layers` (staging of layers 0 and 1 begins at once). Throws
  // std::invalid_argument naming the layer when one does not fit the capacity or has a
  // null region, std::logic_error when a pass is already open.
  void begin(std::vector<LayerRegions> layers);
  // Layers are acquired in order 0, 1, ..., each after the previous one's release().
  // Enqueues layer L's upload wait on the compute stream and layer L+1's upload on the
  // copy stream (waiting on the host for its staging); returns where L's data will be.
  LayerSlot acquire(int64_t layer);
  // Layer L's compute is enqueued: records its end, and once layer L's upload has left
  // its pinned buffer, lets the staging thread fill it with layer L+2.
  void release(int64_t layer);
  // Ends the pass (early too): waits for the copy and compute streams, stops staging and
  // rethrows an error the device kept.
  void finish();

  using Compute = std::function<void(const LayerSlot& slot, void* native_stream)>;
  LayerPipelineStats run(std::vector<LayerRegions> layers, const Compute& compute);

  StreamId copy_stream() const { return copy_stream_; }
  StreamId compute_stream() const { return opt_.compute_stream; }
  int64_t capacity() const { return capacity_; }
  // Host spans of the staging thread since the last begin() (with options.host_clock).
  std::vector<HostSpan> staging_spans() const;

 private:
  void stage_loop();
  void enqueue_upload(int64_t layer);
  void stop_staging();
  void release_events();  // nothrow

  Device& dev_;
  const LayerPipelineOptions opt_;
  const int64_t capacity_;
  StreamId copy_stream_ = -1;
  DeviceBuffer device_buf_[2];
  void* pinned_[2] = {nullptr, nullptr};

  // The open pass.
  bool open_ = false;
  std::vector<LayerRegions> layers_;
  std::vector<std::vector<int64_t>> offsets_;
  std::vector<int64_t> bytes_;
  std::vector<EventId> uploaded_, computed_;  // -1: none held
  int64_t next_acquire_ = 0;                  // the layer acquire() takes next
  bool holding_ = false;                      // acquired, not yet released

  // Between the caller and the staging thread.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int64_t may_stage_ = 0;  // layers below this may be staged (their pinned buffer is free)
  int64_t staged_ = 0;     // layers below this are in their pinned buffer
  bool stop_ = false;
  std::exception_ptr stage_error_;
  std::vector<HostSpan> spans_;
  std::thread stager_;
};

}  // namespace hearth

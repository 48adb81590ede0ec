#include "offload/layer_pipeline.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>

namespace hearth {
namespace {

int64_t align_up(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

// Region offsets inside a layer's buffer; returns the bytes up to the last region's end.
int64_t pack(const LayerRegions& regions, std::vector<int64_t>* offsets) {
  int64_t end = 0;
  for (const HostRegion& r : regions) {
    const int64_t at = align_up(end, LayerPipeline::kRegionAlign);
    if (offsets) offsets->push_back(at);
    end = at + r.bytes;
  }
  return end;
}

}  // namespace

int64_t LayerPipeline::layer_bytes(const LayerRegions& regions) { return pack(regions, nullptr); }

int64_t LayerPipeline::capacity_for(const std::vector<LayerRegions>& layers) {
  int64_t most = 0;
  for (const LayerRegions& l : layers) most = std::max(most, layer_bytes(l));
  return most;
}

LayerPipeline::LayerPipeline(Device& device, int64_t capacity, const LayerPipelineOptions& options)
    : dev_(device), opt_(options), capacity_(capacity) {
  if (capacity < 0) throw std::invalid_argument("layer pipeline: negative capacity " + std::to_string(capacity));
  copy_stream_ = opt_.copy_stream >= 0 ? opt_.copy_stream : dev_.create_stream("upload");
  device_buf_[0] = DeviceBuffer(dev_, capacity);
  device_buf_[1] = DeviceBuffer(dev_, capacity);
  pinned_[0] = dev_.alloc_pinned(capacity);
  try {
    pinned_[1] = dev_.alloc_pinned(capacity);
  } catch (...) {
    dev_.free_pinned(pinned_[0]);
    throw;
  }
}

LayerPipeline::~LayerPipeline() {
  if (open_) {
    stop_staging();
    // The device may still read the buffers freed below.
    try {
      dev_.synchronize(copy_stream_);
    } catch (...) {
    }
    try {
      dev_.synchronize(opt_.compute_stream);
    } catch (...) {
    }
    release_events();
  }
  for (void* p : pinned_) {
    try {
      dev_.free_pinned(p);
    } catch (...) {
    }
  }
}

void LayerPipeline::begin(std::vector<LayerRegions> layers) {
  if (open_) throw std::logic_error("layer pipeline: begin() while a pass is open");
  std::vector<std::vector<int64_t>> offsets(layers.size());
  std::vector<int64_t> bytes(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    for (size_t i = 0; i < layers[l].size(); ++i) {
      const HostRegion& r = layers[l][i];
      if (r.bytes < 0 || (r.bytes > 0 && !r.data))
        throw std::invalid_argument("layer pipeline: layer " + std::to_string(l) + " region " + std::to_string(i) +
                                    (r.bytes < 0 ? " has a negative size" : " has no data"));
    }
    bytes[l] = pack(layers[l], &offsets[l]);
    if (bytes[l] > capacity_)
      throw std::invalid_argument("layer pipeline: layer " + std::to_string(l) + " needs " + std::to_string(bytes[l]) +
                                  " bytes, more than the capacity of " + std::to_string(capacity_));
  }
  layers_ = std::move(layers);
  offsets_ = std::move(offsets);
  bytes_ = std::move(bytes);
  uploaded_.assign(layers_.size(), -1);
  computed_.assign(layers_.size(), -1);
  next_acquire_ = 0;
  holding_ = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    may_stage_ = 2;  // both pinned buffers are free
    staged_ = 0;
    stop_ = false;
    stage_error_ = nullptr;
    spans_.clear();
  }
  open_ = true;
  stager_ = std::thread([this] { stage_loop(); });
}

void LayerPipeline::stage_loop() {
  const int64_t n = int64_t(layers_.size());
  for (int64_t l = 0; l < n; ++l) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || may_stage_ > l; });
      if (stop_) return;
    }
    try {
      const double t0 = opt_.host_clock ? opt_.host_clock->now_us() : 0;
      char* dst = static_cast<char*>(pinned_[l % 2]);
      const LayerRegions& regions = layers_[size_t(l)];
      for (size_t i = 0; i < regions.size(); ++i)
        if (regions[i].bytes > 0) std::memcpy(dst + offsets_[size_t(l)][i], regions[i].data, size_t(regions[i].bytes));
      std::lock_guard<std::mutex> lock(mu_);
      if (opt_.host_clock)
        spans_.push_back({"staging", "stage layer " + std::to_string(l), t0, opt_.host_clock->now_us()});
      staged_ = l + 1;
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      stage_error_ = std::current_exception();
      stop_ = true;
    }
    cv_.notify_all();
  }
}

void LayerPipeline::enqueue_upload(int64_t l) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return staged_ > l || stage_error_; });
    if (stage_error_) std::rethrow_exception(stage_error_);
  }
  if (l >= 2) {
    // Device buffer l % 2 still holds layer l-2 until its compute is done.
    dev_.wait_event(copy_stream_, computed_[size_t(l - 2)]);
    dev_.release_event(computed_[size_t(l - 2)]);
    computed_[size_t(l - 2)] = -1;
  }
  if (bytes_[size_t(l)] > 0)
    dev_.copy_to_device(copy_stream_, device_buf_[l % 2].get(), pinned_[l % 2], bytes_[size_t(l)],
                        "upload layer " + std::to_string(l));
  uploaded_[size_t(l)] = dev_.record_event(copy_stream_);
}

LayerSlot LayerPipeline::acquire(int64_t l) {
  if (!open_) throw std::logic_error("layer pipeline: acquire() without begin()");
  if (holding_ || l != next_acquire_ || l >= int64_t(layers_.size()))
    throw std::logic_error("layer pipeline: acquire(" + std::to_string(l) + ") out of order (next is " +
                           std::to_string(next_acquire_) + " of " + std::to_string(layers_.size()) +
                           (holding_ ? ", the previous layer is not released)" : ")"));
  if (l == 0) enqueue_upload(0);
  dev_.wait_event(opt_.compute_stream, uploaded_[size_t(l)]);
  if (l + 1 < int64_t(layers_.size())) enqueue_upload(l + 1);
  holding_ = true;
  ++next_acquire_;
  LayerSlot slot;
  slot.layer = l;
  slot.data = device_buf_[l % 2].get();
  slot.offsets = offsets_[size_t(l)];
  slot.bytes = bytes_[size_t(l)];
  return slot;
}

void LayerPipeline::release(int64_t l) {
  if (!open_ || !holding_ || l != next_acquire_ - 1)
    throw std::logic_error("layer pipeline: release(" + std::to_string(l) + ") of a layer not acquired");
  holding_ = false;
  computed_[size_t(l)] = dev_.record_event(opt_.compute_stream);
  // Once layer l's upload has read pinned[l % 2], layer l+2 may be staged there. The
  // compute stream already waits for it (by then the device is at most one layer behind).
  dev_.event_wait(uploaded_[size_t(l)]);
  dev_.release_event(uploaded_[size_t(l)]);
  uploaded_[size_t(l)] = -1;
  {
    std::lock_guard<std::mutex> lock(mu_);
    may_stage_ = l + 3;
  }
  cv_.notify_all();
}

void LayerPipeline::stop_staging() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (stager_.joinable()) stager_.join();
}

void LayerPipeline::release_events() {
  for (auto* list : {&uploaded_, &computed_})
    for (EventId& e : *list) {
      if (e < 0) continue;
      try {
        dev_.release_event(e);
      } catch (...) {
      }
      e = -1;
    }
}

void LayerPipeline::finish() {
  if (!open_) return;
  stop_staging();
  open_ = false;
  // Both streams are waited for before either error is thrown: the buffers must be idle.
  std::exception_ptr error;
  for (StreamId s : {copy_stream_, opt_.compute_stream}) {
    try {
      dev_.synchronize(s);
    } catch (...) {
      if (!error) error = std::current_exception();
    }
  }
  release_events();
  if (!error && stage_error_) error = stage_error_;
  if (error) std::rethrow_exception(error);
}

std::vector<HostSpan> LayerPipeline::staging_spans() const {
  std::lock_guard<std::mutex> lock(mu_);
  return spans_;
}

LayerPipelineStats LayerPipeline::run(std::vector<LayerRegions> layers, const Compute& compute) {
  if (!compute) throw std::invalid_argument("layer pipeline: run() without a compute function");
  LayerPipelineStats st;
  st.layers = int64_t(layers.size());
  if (opt_.trace) {
    dev_.synchronize();  // earlier work stays out of this pass's trace
    dev_.set_tracing(true);
    dev_.clear_trace();
  }
  // Launched work may run after this frame on the simulated device; it holds its own copy.
  auto fn = std::make_shared<Compute>(compute);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    begin(std::move(layers));
    for (int64_t l = 0; l < st.layers; ++l) {
      LayerSlot slot = acquire(l);
      st.bytes += slot.bytes;
      dev_.launch(opt_.compute_stream, "layer " + std::to_string(l),
                  [fn, slot = std::move(slot)](void* ns) { (*fn)(slot, ns); });
      release(l);
    }
    finish();
  } catch (...) {
    try {
      finish();
    } catch (...) {
    }
    if (opt_.trace) dev_.set_tracing(false);
    throw;
  }
  st.wall_us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  if (opt_.trace) {
    st.ops = dev_.trace();
    dev_.set_tracing(false);
    st.overlap = measure_overlap(st.ops, {copy_stream_}, {opt_.compute_stream});
  }
  st.host = staging_spans();
  return st;
}

}  // namespace hearth

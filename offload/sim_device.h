// A Device (offload/device.h) made of host threads and host memory, with a modelled link,
// so the transfer scheduler, the layer pipeline and the planner run and are measured on
// machines without a GPU.
//
// What is modelled:
// - Memory: device memory is host memory (64-byte aligned, zeroed and resident, as is
//   pinned memory) counted against memory_bytes; an allocation past it throws
//   DeviceOutOfMemory naming the request and what is free.
// - Streams: each is a FIFO run by its own worker thread. wait_event enqueues a marker
//   that holds the stream until the event's work has finished.
// - Link: one per direction (full duplex, as PCIe). A copy holds its direction's link for
//   link_latency_us + bytes / link_gbps, so copies of one direction on different streams
//   take turns and share the bandwidth; the two directions run at the same time. The
//   memcpy happens while the copy holds the link, so a link modelled faster than the
//   host's memcpy runs at the memcpy's speed. A copy's traced interval is the time it held
//   the link: the modelled time, or the memcpy's when that was longer.
// - Launches: fn(nullptr) runs on the stream's worker and takes the host time it takes
//   (stretched by 1/compute_scale when compute_scale < 1, a slower device).
// - Errors: an exception thrown by a launched fn is kept and rethrown on the host by a
//   later synchronize() or event_wait() (one kept error per call, oldest first); the
//   stream goes on with its next operation. Errors never rethrown are printed to stderr
//   when the device is destroyed.
// - Timestamps: a steady clock, in microseconds since the device was made. They are the
//   modelled device's times: an operation starts at the latest of its enqueue, the end of
//   its stream's previous operation, the times of the events it waited for (and, for a
//   copy, the end of the link's previous copy), and lasts its modelled (copy) or measured
//   (launch) duration. The worker threads run each operation no earlier than that and
//   sleep until its end, but on a busy machine they may wake late; such delays of the
//   simulator's own threads do not show in the timestamps, only in the host's waits (the
//   host never sees an operation finished before its timestamped end).
//
// Every method may be called from any host thread. synchronize()/event_wait() must not be
// called from inside a launched fn (the worker would wait for itself). The destructor
// runs every enqueued operation to its end before it returns.
#pragma once
#include <cstdint>
#include <memory>

#include "offload/device.h"

namespace hearth {

struct SimulatedDeviceOptions {
  int64_t memory_bytes = int64_t(16) << 30;
  double link_gbps = 25;         // host<->device, 1e9 bytes/s in each direction
  double link_latency_us = 10;   // added to every copy
  // How fast the device computes relative to the host: 1 runs a launch in the host time
  // it takes; 0.5 makes it take twice as long. A device faster than the host cannot be
  // modelled by running the host code (values above 1 are rejected).
  double compute_scale = 1.0;
};

// Throws std::invalid_argument naming the option when one is out of range.
std::unique_ptr<Device> make_simulated_device(const SimulatedDeviceOptions& options = {});

}  // namespace hearth

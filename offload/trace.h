// What a device's trace says: a Chrome trace file to look at (chrome://tracing, Perfetto)
// and how much of the copying was hidden behind computing.
//
// Device timestamps (DeviceOp) count from when the device was made. Host-side spans go
// into the same file on their own clock: measure them with a HostClock made right after
// the device (so both zeros agree to a few microseconds), or pass the offset that moves
// them onto the device's clock.
#pragma once
#include <chrono>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "offload/device.h"

namespace hearth {

// A span of host work (staging a layer, routing, CPU experts) shown next to the device.
struct HostSpan {
  std::string thread, label;
  double start_us = 0, end_us = 0;
};

// Microseconds since it was made, on the steady clock the simulated device also uses.
class HostClock {
 public:
  HostClock() : zero_(std::chrono::steady_clock::now()) {}
  double now_us() const {
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - zero_).count();
  }

 private:
  std::chrono::steady_clock::time_point zero_;
};

// The trace as Chrome's JSON object format: {"traceEvents": [...]}. The device is one
// process (named device.name()), each stream one thread (named device.stream_name, tid =
// the stream id); every op is one complete event ("ph": "X", ts/dur in microseconds, cat
// "copy_to_device", "copy_to_host" or "kernel"; copies carry args.bytes and args["GB/s"]).
// Host spans form a second process, "host", one thread per distinct thread name, shifted
// by host_offset_us.
nlohmann::json chrome_trace(const Device& device, const std::vector<DeviceOp>& ops,
                            const std::vector<HostSpan>& host = {}, double host_offset_us = 0);

// Writes chrome_trace(...) to `path`; throws std::runtime_error naming the path if it cannot.
void write_chrome_trace(const std::string& path, const Device& device, const std::vector<DeviceOp>& ops,
                        const std::vector<HostSpan>& host = {}, double host_offset_us = 0);

// How much copy time ran at the same time as compute, from the device's own timestamps.
// copy_us and compute_us are the lengths of the unions of the copy and of the compute
// intervals (time something of that kind ran); overlapped_us is the length of their
// intersection.
struct OverlapStats {
  double copy_us = 0, compute_us = 0, overlapped_us = 0;
  // overlapped / min(copy, compute): 1 when the shorter of the two is hidden entirely;
  // 0 when either is empty.
  double fraction() const;
};

// Copy intervals are the ops on `copy_streams`, compute intervals those on
// `compute_streams` (of any kind).
OverlapStats measure_overlap(const std::vector<DeviceOp>& ops, const std::vector<StreamId>& copy_streams,
                             const std::vector<StreamId>& compute_streams);
// Copy intervals are the copies (either direction), compute intervals the kernels.
OverlapStats measure_overlap(const std::vector<DeviceOp>& ops);

}  // namespace hearth

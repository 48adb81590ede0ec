#include "offload/trace.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <stdexcept>
#include <utility>

namespace hearth {
namespace {

constexpr int kDevicePid = 1, kHostPid = 2;

const char* category(DeviceOp::Kind k) {
  switch (k) {
    case DeviceOp::Kind::kCopyToDevice: return "copy_to_device";
    case DeviceOp::Kind::kCopyToHost: return "copy_to_host";
    case DeviceOp::Kind::kKernel: return "kernel";
  }
  return "kernel";
}

nlohmann::json name_event(const char* what, int pid, int tid, const std::string& name) {
  nlohmann::json e = {{"name", what}, {"ph", "M"}, {"pid", pid}, {"args", {{"name", name}}}};
  if (tid >= 0) e["tid"] = tid;
  return e;
}

using Interval = std::pair<double, double>;

// Sorted, disjoint intervals covering the same time as `v` (empty ones dropped).
std::vector<Interval> merged(std::vector<Interval> v) {
  std::erase_if(v, [](const Interval& i) { return !(i.second > i.first); });
  std::sort(v.begin(), v.end());
  std::vector<Interval> out;
  for (const Interval& i : v) {
    if (!out.empty() && i.first <= out.back().second)
      out.back().second = std::max(out.back().second, i.second);
    else
      out.push_back(i);
  }
  return out;
}

double total(const std::vector<Interval>& v) {
  double t = 0;
  for (const Interval& i : v) t += i.second - i.first;
  return t;
}

// Length of the intersection of two sorted, disjoint interval lists.
double intersection(const std::vector<Interval>& a, const std::vector<Interval>& b) {
  double t = 0;
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    const double lo = std::max(a[i].first, b[j].first), hi = std::min(a[i].second, b[j].second);
    if (hi > lo) t += hi - lo;
    if (a[i].second < b[j].second)
      ++i;
    else
      ++j;
  }
  return t;
}

template <class IsCopy, class IsCompute>
OverlapStats overlap_of(const std::vector<DeviceOp>& ops, IsCopy is_copy, IsCompute is_compute) {
  std::vector<Interval> copy, compute;
  for (const DeviceOp& op : ops) {
    if (is_copy(op)) copy.emplace_back(op.start_us, op.end_us);
    if (is_compute(op)) compute.emplace_back(op.start_us, op.end_us);
  }
  const auto c = merged(std::move(copy)), k = merged(std::move(compute));
  return OverlapStats{total(c), total(k), intersection(c, k)};
}

}  // namespace

nlohmann::json chrome_trace(const Device& device, const std::vector<DeviceOp>& ops, const std::vector<HostSpan>& host,
                            double host_offset_us) {
  nlohmann::json events = nlohmann::json::array();
  events.push_back(name_event("process_name", kDevicePid, -1, device.name()));
  std::set<StreamId> streams;
  for (const DeviceOp& op : ops) streams.insert(op.stream);
  for (StreamId s : streams) events.push_back(name_event("thread_name", kDevicePid, s, device.stream_name(s)));
  for (const DeviceOp& op : ops) {
    const double dur = op.end_us - op.start_us;
    nlohmann::json e = {{"name", op.label}, {"cat", category(op.kind)}, {"ph", "X"},        {"ts", op.start_us},
                        {"dur", dur},       {"pid", kDevicePid},       {"tid", op.stream}};
    if (op.kind != DeviceOp::Kind::kKernel) {
      // bytes / µs = MB/s; / 1e3 = GB/s.
      e["args"] = {{"bytes", op.bytes}, {"GB/s", dur > 0 ? double(op.bytes) / dur / 1e3 : 0.0}};
    }
    events.push_back(std::move(e));
  }
  if (!host.empty()) {
    events.push_back(name_event("process_name", kHostPid, -1, "host"));
    std::map<std::string, int> tids;
    for (const HostSpan& s : host) {
      auto [it, added] = tids.emplace(s.thread, int(tids.size()));
      if (added) events.push_back(name_event("thread_name", kHostPid, it->second, s.thread));
      events.push_back({{"name", s.label},
                        {"cat", "host"},
                        {"ph", "X"},
                        {"ts", s.start_us + host_offset_us},
                        {"dur", s.end_us - s.start_us},
                        {"pid", kHostPid},
                        {"tid", it->second}});
    }
  }
  return {{"traceEvents", std::move(events)}, {"displayTimeUnit", "ms"}};
}

void write_chrome_trace(const std::string& path, const Device& device, const std::vector<DeviceOp>& ops,
                        const std::vector<HostSpan>& host, double host_offset_us) {
  const std::string text = chrome_trace(device, ops, host, host_offset_us).dump();
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw std::runtime_error("trace: cannot open " + path + " for writing");
  f << text << '\n';
  f.close();
  if (!f) throw std::runtime_error("trace: writing " + path + " failed");
}

double OverlapStats::fraction() const {
  const double shorter = std::min(copy_us, compute_us);
  return shorter > 0 ? overlapped_us / shorter : 0.0;
}

OverlapStats measure_overlap(const std::vector<DeviceOp>& ops, const std::vector<StreamId>& copy_streams,
                             const std::vector<StreamId>& compute_streams) {
  auto on = [](const std::vector<StreamId>& ids) {
    return [&ids](const DeviceOp& op) { return std::find(ids.begin(), ids.end(), op.stream) != ids.end(); };
  };
  return overlap_of(ops, on(copy_streams), on(compute_streams));
}

OverlapStats measure_overlap(const std::vector<DeviceOp>& ops) {
  return overlap_of(
      ops, [](const DeviceOp& op) { return op.kind != DeviceOp::Kind::kKernel; },
      [](const DeviceOp& op) { return op.kind == DeviceOp::Kind::kKernel; });
}

}  // namespace hearth

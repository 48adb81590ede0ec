// Chrome traces of a device's ops, and the copy/compute overlap measured from intervals.
#include <doctest/doctest.h>

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "offload/sim_device.h"
#include "offload/trace.h"
#include "support/errors.h"
#include "support/scratch.h"

namespace offload_trace_suite {

using namespace hearth;

namespace {

DeviceOp op(DeviceOp::Kind kind, StreamId s, double start, double end, int64_t bytes = 0) {
  DeviceOp o;
  o.kind = kind;
  o.stream = s;
  o.start_us = start;
  o.end_us = end;
  o.bytes = bytes;
  o.label = "op";
  return o;
}

DeviceOp copy(StreamId s, double start, double end) { return op(DeviceOp::Kind::kCopyToDevice, s, start, end, 1); }
DeviceOp kernel(StreamId s, double start, double end) { return op(DeviceOp::Kind::kKernel, s, start, end); }

}  // namespace

TEST_CASE("trace: a device's ops become one complete event each on their stream's thread") {
  SimulatedDeviceOptions o;
  o.memory_bytes = 1 << 20;
  o.link_gbps = 0.1;
  o.link_latency_us = 0;
  auto dev = make_simulated_device(o);
  dev->set_tracing(true);
  const StreamId up = dev->create_stream("upload");
  const StreamId down = dev->create_stream("download");
  DeviceBuffer buf(*dev, 100000);
  std::vector<char> host(100000, 1);
  dev->copy_to_device(up, buf.get(), host.data(), 100000, "weights");  // 1 ms at 0.1 GB/s
  const EventId e = dev->record_event(up);
  dev->wait_event(0, e);
  dev->launch(0, "matmul", [](void*) {});
  dev->copy_to_host(down, host.data(), buf.get(), 50000, "result");
  const auto ops = dev->trace();
  dev->release_event(e);
  REQUIRE(ops.size() == 3);

  const std::vector<HostSpan> spans = {{"main", "route", 10, 30}, {"stager", "stage", 5, 25}, {"main", "experts", 40, 90}};
  hearth::testing::TempDir tmp("hearth-trace");
  const std::string path = (tmp.path / "t.json").string();
  write_chrome_trace(path, *dev, ops, spans, 1000);
  // The file parses as JSON (a parse error would throw).
  const nlohmann::json j = nlohmann::json::parse(hearth::testing::slurp(path));
  REQUIRE(j.contains("traceEvents"));
  const auto& events = j["traceEvents"];

  std::map<int, std::string> device_threads, host_threads;
  std::string device_process;
  std::vector<nlohmann::json> device_x, host_x;
  for (const auto& ev : events) {
    const std::string ph = ev["ph"].get<std::string>();
    const int pid = ev["pid"].get<int>();
    if (ph == "M" && ev["name"] == "process_name" && pid == 1) device_process = ev["args"]["name"].get<std::string>();
    if (ph == "M" && ev["name"] == "thread_name") (pid == 1 ? device_threads : host_threads)[ev["tid"].get<int>()] = ev["args"]["name"].get<std::string>();
    if (ph == "X") (pid == 1 ? device_x : host_x).push_back(ev);
  }
  CHECK(device_process == dev->name());
  CHECK(device_threads == std::map<int, std::string>{{0, "compute"}, {up, "upload"}, {down, "download"}});
  REQUIRE(device_x.size() == ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    const auto& ev = device_x[i];
    CHECK(ev["name"] == ops[i].label);
    CHECK(ev["tid"] == ops[i].stream);
    CHECK(double(ev["ts"]) == doctest::Approx(ops[i].start_us));
    CHECK(double(ev["dur"]) == doctest::Approx(ops[i].end_us - ops[i].start_us));
    if (ops[i].label == "weights") {
      CHECK(ev["cat"] == "copy_to_device");
      CHECK(ev["tid"] == up);
      CHECK(ev["args"]["bytes"] == 100000);
      // 100000 bytes over the modelled 0.1 GB/s, give or take the thread's wake-up delay.
      CHECK(double(ev["args"]["GB/s"]) == doctest::Approx(100000.0 / double(ev["dur"]) / 1e3));
      CHECK(double(ev["args"]["GB/s"]) <= 0.1 + 1e-9);
      CHECK(double(ev["args"]["GB/s"]) > 0.05);
    } else if (ops[i].label == "result") {
      CHECK(ev["cat"] == "copy_to_host");
      CHECK(ev["tid"] == down);
      CHECK(ev["args"]["bytes"] == 50000);
    } else {
      CHECK(ops[i].label == "matmul");
      CHECK(ev["cat"] == "kernel");
      CHECK(ev["tid"] == 0);
      CHECK_FALSE(ev.contains("args"));
    }
  }

  // Host spans: their own process, one thread per name, shifted onto the device clock.
  REQUIRE(host_x.size() == 3);
  CHECK(host_threads.size() == 2);
  CHECK(host_x[0]["name"] == "route");
  CHECK(double(host_x[0]["ts"]) == 1010);
  CHECK(double(host_x[0]["dur"]) == 20);
  CHECK(host_threads[host_x[0]["tid"].get<int>()] == "main");
  CHECK(host_threads[host_x[1]["tid"].get<int>()] == "stager");
  CHECK(host_x[2]["tid"] == host_x[0]["tid"]);
  CHECK(double(host_x[2]["ts"]) == 1040);

  hearth::testing::check_error([&] { write_chrome_trace((tmp.path / "no/such/dir/t.json").string(), *dev, ops); },
                               {"no/such/dir/t.json"});
}

TEST_CASE("trace: overlap of copy and compute intervals") {
  // Copies: [0,10) [5,15) [20,30) -> union [0,15) + [20,30) = 25 us.
  // Kernels: [12,22) [28,40) [50,60) -> union 10 + 12 + 10 = 32 us.
  // Intersection: [12,15) 3 + [20,22) 2 + [28,30) 2 = 7 us.
  const std::vector<DeviceOp> ops = {copy(1, 0, 10),    copy(1, 5, 15),    copy(2, 20, 30),
                                     kernel(0, 12, 22), kernel(0, 28, 40), kernel(0, 50, 60)};
  OverlapStats s = measure_overlap(ops, {1, 2}, {0});
  CHECK(s.copy_us == doctest::Approx(25));
  CHECK(s.compute_us == doctest::Approx(32));
  CHECK(s.overlapped_us == doctest::Approx(7));
  CHECK(s.fraction() == doctest::Approx(7.0 / 25.0));
  // By kind, the same answer.
  const OverlapStats k = measure_overlap(ops);
  CHECK(k.copy_us == doctest::Approx(25));
  CHECK(k.overlapped_us == doctest::Approx(7));

  // Only stream 1 counts as copying: [0,15) -> overlap [12,15) = 3.
  s = measure_overlap(ops, {1}, {0});
  CHECK(s.copy_us == doctest::Approx(15));
  CHECK(s.overlapped_us == doctest::Approx(3));
  CHECK(s.fraction() == doctest::Approx(3.0 / 15.0));

  // A copy entirely inside compute: fully hidden.
  s = measure_overlap({copy(1, 10, 20), kernel(0, 0, 100)}, {1}, {0});
  CHECK(s.fraction() == doctest::Approx(1.0));
  CHECK(s.overlapped_us == doctest::Approx(10));
  // Back to back (touching at one point) is no overlap.
  s = measure_overlap({copy(1, 0, 10), kernel(0, 10, 20)}, {1}, {0});
  CHECK(s.overlapped_us == 0);
  CHECK(s.fraction() == 0);
  // Nothing to compare.
  CHECK(measure_overlap({}, {1}, {0}).fraction() == 0);
  CHECK(measure_overlap({kernel(0, 0, 5)}, {1}, {0}).fraction() == 0);
  // Many kernels across one long copy, gaps included: kernels [0,2) [3,5) ... cover 2 of
  // every 3 us of [0, 30), the copy [1, 28).
  std::vector<DeviceOp> many = {copy(1, 1, 28)};
  for (int i = 0; i < 10; ++i) many.push_back(kernel(0, 3 * i, 3 * i + 2));
  s = measure_overlap(many, {1}, {0});
  // Overlap: [1,2) 1 + 8 full kernels [3..26) 16 + [27,28) 1 = 18.
  CHECK(s.overlapped_us == doctest::Approx(18));
  CHECK(s.compute_us == doctest::Approx(20));
  CHECK(s.copy_us == doctest::Approx(27));
  CHECK(s.fraction() == doctest::Approx(18.0 / 20.0));
}

}  // namespace offload_trace_suite

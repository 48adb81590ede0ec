// The simulated device: queue order, events across streams, the modelled link (bandwidth,
// sharing, full duplex), memory accounting, errors from launched work, and shutdown with
// work still queued. Times use a slow modelled link and small sizes so each case takes a
// fraction of a second; bounds below are exact (the model never finishes early) and above
// are generous (a loaded machine wakes threads late).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <thread>
#include <vector>

#include "offload/sim_device.h"
#include "support/errors.h"
#include "support/typed_errors.h"

namespace offload_sim_device_suite {

using namespace hearth;
using hearth::testing::check_error;
using hearth::testing::check_error_as;

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

void sleep_ms(double ms) { std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(ms)); }

// 0.1 GB/s = 100 bytes per microsecond: 1 MB takes 10 ms.
std::unique_ptr<Device> slow_device(double gbps = 0.1, double latency_us = 0) {
  SimulatedDeviceOptions o;
  o.memory_bytes = 64 << 20;
  o.link_gbps = gbps;
  o.link_latency_us = latency_us;
  return make_simulated_device(o);
}

const DeviceOp* find_op(const std::vector<DeviceOp>& ops, const std::string& label) {
  for (const DeviceOp& op : ops)
    if (op.label == label) return &op;
  FAIL("no op labelled " << label);
  return nullptr;
}

}  // namespace

TEST_CASE("sim_device: name and memory accounting") {
  auto dev = make_simulated_device();
  CHECK(dev->name() == "simulated device (25 GB/s link, 16 GiB)");
  CHECK(dev->simulated());
  CHECK(dev->total_memory() == (int64_t(16) << 30));
  CHECK(dev->free_memory() == (int64_t(16) << 30));
  CHECK(dev->stream_name(0) == "compute");

  SimulatedDeviceOptions o;
  o.memory_bytes = 1 << 20;
  o.link_gbps = 12.5;
  auto small = make_simulated_device(o);
  CHECK(small->name() == "simulated device (12.5 GB/s link, 1 MiB)");
  void* a = small->alloc(768 << 10);
  CHECK(reinterpret_cast<uintptr_t>(a) % 64 == 0);
  CHECK(small->free_memory() == (256 << 10));
  check_error_as<DeviceOutOfMemory>([&] { small->alloc(512 << 10); }, {"out of memory", "requested 524288 bytes", "262144 bytes free"});
  CHECK_THROWS_AS(small->alloc(512 << 10), DeviceOutOfMemory);
  void* b = small->alloc(256 << 10);  // exactly what is left
  CHECK(small->free_memory() == 0);
  small->free(a);
  CHECK(small->free_memory() == (768 << 10));
  void* c = small->alloc(512 << 10);  // fits again after the free
  small->free(b);
  small->free(c);
  CHECK(small->free_memory() == (1 << 20));
  int not_device = 0;
  CHECK_THROWS_AS(small->free(&not_device), std::invalid_argument);
  small->free(nullptr);  // no-op

  void* pinned = small->alloc_pinned(4 << 20);  // pinned host memory is not device memory
  CHECK(reinterpret_cast<uintptr_t>(pinned) % 64 == 0);
  CHECK(small->free_memory() == (1 << 20));
  small->free_pinned(pinned);
  CHECK_THROWS_AS(small->free_pinned(&not_device), std::invalid_argument);
}

TEST_CASE("sim_device: bad options and bad arguments are errors naming them") {
  SimulatedDeviceOptions o;
  o.link_gbps = 0;
  check_error_as<std::invalid_argument>([&] { make_simulated_device(o); }, {"link_gbps"});
  o = {};
  o.memory_bytes = -1;
  check_error_as<std::invalid_argument>([&] { make_simulated_device(o); }, {"memory_bytes"});
  o = {};
  o.compute_scale = 2;
  check_error_as<std::invalid_argument>([&] { make_simulated_device(o); }, {"compute_scale"});

  auto dev = slow_device();
  check_error_as<std::invalid_argument>([&] { dev->launch(7, "k", [](void*) {}); }, {"unknown stream 7"});
  check_error_as<std::invalid_argument>([&] { dev->stream_name(-1); }, {"unknown stream -1"});
  check_error_as<std::invalid_argument>([&] { dev->wait_event(0, 12345); }, {"unknown event 12345"});
  check_error_as<std::invalid_argument>([&] { dev->event_wait(12345); }, {"unknown event 12345"});
  std::vector<char> host(256), host2(256);
  // Copies must name device memory on the device side (and stay inside the allocation).
  check_error_as<std::invalid_argument>([&] { dev->copy_to_device(0, host2.data(), host.data(), 256, "w"); },
              {"copy_to_device 'w'", "destination", "not inside device memory"});
  DeviceBuffer buf(*dev, 128);
  check_error_as<std::invalid_argument>([&] { dev->copy_to_device(0, buf.get(), host.data(), 256, "w"); }, {"not inside device memory"});
  check_error_as<std::invalid_argument>([&] { dev->copy_to_host(0, host.data(), host2.data(), 16, "r"); }, {"copy_to_host 'r'", "source"});
  check_error_as<std::invalid_argument>([&] { dev->copy_to_device(0, buf.get(), host.data(), -1, "w"); }, {"negative size"});
}

TEST_CASE("sim_device: one stream runs its operations in the order they were enqueued") {
  auto dev = slow_device(1.0);
  const StreamId s = dev->create_stream("work");
  CHECK(dev->stream_name(s) == "work");
  std::vector<int> order;  // only the worker of stream s touches it until synchronize
  for (int i = 0; i < 50; ++i) dev->launch(s, "k", [&order, i](void*) { order.push_back(i); });
  dev->synchronize(s);
  std::vector<int> expected(50);
  std::iota(expected.begin(), expected.end(), 0);
  CHECK(order == expected);

  // Copies and launches interleave in order too: each launch sees the bytes of the copy
  // before it and the copy back sees what the launch wrote.
  DeviceBuffer buf(*dev, 1024);
  std::vector<uint8_t> in(1024), out(1024);
  std::vector<int> seen;
  for (int round = 0; round < 3; ++round) {
    std::memset(in.data(), round + 1, in.size());
    dev->copy_to_device(s, buf.get(), in.data(), 1024, "up");
    dev->synchronize(s);  // `in` is rewritten next round
    dev->launch(s, "add", [&, p = buf.as<uint8_t>()](void*) {
      seen.push_back(p[0]);
      for (int i = 0; i < 1024; ++i) p[i] = uint8_t(p[i] + 10);
    });
    dev->copy_to_host(s, out.data(), buf.get(), 1024, "down");
    dev->synchronize(s);
    CHECK(out[0] == round + 11);
    CHECK(out[1023] == round + 11);
  }
  CHECK(seen == std::vector<int>{1, 2, 3});
}

TEST_CASE("sim_device: enqueueing returns at once and the host waits only when it asks") {
  auto dev = slow_device();
  std::atomic<bool> done{false};
  const auto t0 = Clock::now();
  dev->launch(0, "sleep", [&](void*) {
    sleep_ms(60);
    done = true;
  });
  const EventId e = dev->record_event(0);
  CHECK(ms_since(t0) < 40);  // did not wait for the 60 ms launch
  CHECK_FALSE(done.load());
  dev->event_wait(e);
  CHECK(done.load());
  CHECK(ms_since(t0) >= 60);
  dev->release_event(e);
  CHECK_THROWS_AS(dev->release_event(e), std::invalid_argument);
}

TEST_CASE("sim_device: wait_event orders work across streams") {
  auto dev = slow_device();
  dev->set_tracing(true);
  const StreamId a = dev->create_stream("a"), b = dev->create_stream("b");
  std::atomic<int> a_done{0};
  std::atomic<int> b_saw{-1};
  dev->launch(a, "slow", [&](void*) {
    sleep_ms(30);
    a_done = 1;
  });
  const EventId e = dev->record_event(a);
  dev->launch(a, "after event", [&](void*) { sleep_ms(30); });  // not covered by e
  dev->wait_event(b, e);
  dev->launch(b, "dependent", [&](void*) { b_saw = a_done.load(); });
  dev->synchronize(b);
  CHECK(b_saw.load() == 1);  // without the wait, b would have run at once and seen 0
  dev->synchronize();
  const auto ops = dev->trace();
  REQUIRE(ops.size() == 3);
  const DeviceOp* slow = find_op(ops, "slow");
  const DeviceOp* dependent = find_op(ops, "dependent");
  const DeviceOp* after = find_op(ops, "after event");
  CHECK(dependent->stream == b);
  CHECK(dependent->start_us >= slow->end_us);
  // b did not wait for a's work enqueued after the event: it ran during "after event".
  CHECK(dependent->start_us < after->end_us);

  // An event recorded on an idle stream is already complete.
  const EventId idle = dev->record_event(b);
  dev->event_wait(idle);
  dev->release_event(idle);
  dev->release_event(e);
}

TEST_CASE("sim_device: copies take latency plus bytes over the modelled bandwidth") {
  auto dev = slow_device(0.1, 500);  // 100 bytes/us, 0.5 ms latency
  dev->set_tracing(true);
  const StreamId s = dev->create_stream("copy");
  const int64_t n = 1 << 20;  // 10.49 ms at 0.1 GB/s, + 0.5 ms
  DeviceBuffer buf(*dev, n);
  std::vector<uint8_t> in(static_cast<size_t>(n)), out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) in[size_t(i)] = uint8_t(i * 13 + 7);
  const auto t0 = Clock::now();
  dev->copy_to_device(s, buf.get(), in.data(), n, "up");
  dev->copy_to_host(s, out.data(), buf.get(), n, "down");
  dev->synchronize(s);
  const double host_ms = ms_since(t0);
  CHECK(out == in);
  const double modelled_us = 500 + double(n) / 100.0;
  CHECK(host_ms >= 2 * modelled_us / 1e3);
  const auto ops = dev->trace();
  REQUIRE(ops.size() == 2);
  for (const DeviceOp& op : ops) {
    CHECK(op.bytes == n);
    CHECK(op.stream == s);
    const double dur = op.end_us - op.start_us;
    CHECK(dur >= modelled_us - 1);
    CHECK(dur <= modelled_us * 1.5 + 3000);
  }
  CHECK(ops[0].kind == DeviceOp::Kind::kCopyToDevice);
  CHECK(ops[1].kind == DeviceOp::Kind::kCopyToHost);
  CHECK(ops[1].start_us >= ops[0].end_us);
  // Timestamps count from the device's creation.
  CHECK(ops[0].start_us >= 0);
}

TEST_CASE("sim_device: copies of one direction share the link and the two directions do not") {
  const int64_t n = 1 << 20;  // 10.49 ms each at 0.1 GB/s
  const double each_us = double(n) / 100.0;
  auto dev = slow_device(0.1);
  dev->set_tracing(true);
  const StreamId s1 = dev->create_stream("copy 1"), s2 = dev->create_stream("copy 2");
  DeviceBuffer b1(*dev, n), b2(*dev, n);
  std::vector<uint8_t> h1(size_t(n), 1), h2(size_t(n), 2);

  // Two uploads on two streams: one link, so together they take twice as long.
  auto t0 = Clock::now();
  dev->copy_to_device(s1, b1.get(), h1.data(), n, "up 1");
  dev->copy_to_device(s2, b2.get(), h2.data(), n, "up 2");
  dev->synchronize();
  CHECK(ms_since(t0) >= 2 * each_us / 1e3);
  auto ops = dev->trace();
  REQUIRE(ops.size() == 2);
  CHECK(ops[1].start_us >= ops[0].end_us);  // one after the other (sorted by start)
  CHECK(ops[0].stream != ops[1].stream);

  // One upload and one download at the same time: full duplex, they overlap.
  dev->clear_trace();
  std::vector<uint8_t> back(static_cast<size_t>(n));
  t0 = Clock::now();
  dev->copy_to_device(s1, b1.get(), h2.data(), n, "up");
  dev->copy_to_host(s2, back.data(), b2.get(), n, "down");
  dev->synchronize();
  ops = dev->trace();
  REQUIRE(ops.size() == 2);
  const double overlap = std::min(ops[0].end_us, ops[1].end_us) - std::max(ops[0].start_us, ops[1].start_us);
  CHECK(overlap > 0.5 * each_us);
  CHECK(back == h2);
}

TEST_CASE("sim_device: an exception in launched work is rethrown by the next synchronize") {
  auto dev = slow_device();
  std::atomic<bool> later_ran{false};
  dev->launch(0, "bad", [](void*) { throw std::runtime_error("kernel exploded"); });
  dev->launch(0, "later", [&](void*) { later_ran = true; });
  check_error([&] { dev->synchronize(); }, {"kernel exploded"});
  CHECK(later_ran.load());  // the stream went on
  dev->synchronize();       // reported once

  // event_wait and synchronize(stream) report it too; errors of any kind are kept.
  dev->launch(0, "bad", [](void*) { throw std::runtime_error("second"); });
  const EventId e = dev->record_event(0);
  check_error([&] { dev->event_wait(e); }, {"second"});
  dev->release_event(e);
  const StreamId s = dev->create_stream("other");
  dev->launch(s, "bad", [](void*) { throw 42; });
  CHECK_THROWS_AS(dev->synchronize(s), int);

  // Two errors: two synchronizes report them, oldest first.
  dev->launch(0, "bad", [](void*) { throw std::runtime_error("first of two"); });
  dev->launch(0, "bad", [](void*) { throw std::runtime_error("second of two"); });
  check_error([&] { dev->synchronize(); }, {"first of two"});
  check_error([&] { dev->synchronize(); }, {"second of two"});
  dev->synchronize();
}

TEST_CASE("sim_device: destruction runs the queued work to its end") {
  std::atomic<int> ran{0};
  std::vector<uint8_t> out(4096, 0);
  {
    auto dev = slow_device(0.1);
    const StreamId a = dev->create_stream("a"), b = dev->create_stream("b");
    void* buf = dev->alloc(4096);
    for (int i = 0; i < 5; ++i)
      dev->launch(a, "k", [&](void*) {
        sleep_ms(5);
        ++ran;
      });
    dev->launch(a, "fill", [buf](void*) { std::memset(buf, 9, 4096); });
    const EventId e = dev->record_event(a);
    dev->wait_event(b, e);  // b's copy waits for a's work, still queued at destruction
    dev->copy_to_host(b, out.data(), buf, 4096, "down");
    dev->launch(b, "unreported", [](void*) { throw std::runtime_error("never synchronized"); });
    // No synchronize: the destructor must drain both queues (printing the error).
  }
  CHECK(ran.load() == 5);
  CHECK(out[0] == 9);
  CHECK(out[4095] == 9);
}

TEST_CASE("sim_device: compute_scale below 1 stretches launches") {
  SimulatedDeviceOptions o;
  o.memory_bytes = 1 << 20;
  o.compute_scale = 0.25;
  auto dev = make_simulated_device(o);
  dev->set_tracing(true);
  dev->launch(0, "k", [](void*) { sleep_ms(10); });
  const auto ops = dev->trace();
  REQUIRE(ops.size() == 1);
  CHECK(ops[0].end_us - ops[0].start_us >= 40000 - 1);
  CHECK(ops[0].kind == DeviceOp::Kind::kKernel);
}

}  // namespace offload_sim_device_suite

// CudaDevice (offload/cuda_device.h) against the semantics of offload/device.h: copies that
// round-trip, events that order two streams (checked on the data and on the traced
// timestamps), the trace's kinds, labels, bytes and times, events and streams by id, and
// DeviceOutOfMemory for an allocation no GPU has. The first case runs on every machine: it
// checks the reason make_cuda_device gives when there is no GPU (or no CUDA backend).
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "offload/device.h"
#include "support/cuda.h"
#include "support/errors.h"
#if HEARTH_HAVE_CUDA
#include "offload/cuda_device.h"
#include "quant/cuda/kernels.h"
#endif

namespace cuda_device_suite {

using namespace hearth;
using hearth::testing::cuda_device_or_skip;

TEST_CASE("cuda make_cuda_device gives a device or a one-line reason") {
  if (!cuda_compiled()) {
    CHECK_FALSE(cuda_device_present());
    testing::check_error([] { make_cuda_device(); }, {"this build has no CUDA backend"});
    return;
  }
  if (!cuda_device_present()) {
    testing::check_error([] { make_cuda_device(); }, {"no CUDA device"});
    return;
  }
  auto dev = make_cuda_device();
  CHECK_FALSE(dev->simulated());
  CHECK_FALSE(dev->name().empty());
  CHECK(dev->total_memory() > 0);
  CHECK(dev->free_memory() > 0);
  CHECK(dev->free_memory() <= dev->total_memory());
  CHECK(dev->stream_name(0) == "compute");
  testing::check_error([] { make_cuda_device(999); }, {"no CUDA device 999"});
}

TEST_CASE("cuda device copies round-trip through pinned and pageable memory") {
  auto dev = cuda_device_or_skip();
  if (!dev) return;
  const int64_t count = 1 << 20;
  const int64_t bytes = count * 4;
  auto* pinned = static_cast<uint32_t*>(dev->alloc_pinned(bytes));
  REQUIRE(pinned != nullptr);
  for (int64_t i = 0; i < count; ++i) pinned[i] = uint32_t(i * 2654435761u);
  DeviceBuffer a(*dev, bytes), b(*dev, bytes);
  const StreamId copy = dev->create_stream("copy");
  CHECK(dev->stream_name(copy) == "copy");
  dev->copy_to_device(copy, a.get(), pinned, bytes, "up");
  const EventId uploaded = dev->record_event(copy);
  // Back through the compute stream, after the upload: pageable host memory this time.
  dev->wait_event(0, uploaded);
  std::vector<uint32_t> back(size_t(count), 0);
  dev->copy_to_host(0, back.data(), a.get(), bytes, "down");
  dev->synchronize(0);
  dev->release_event(uploaded);
  CHECK(std::memcmp(back.data(), pinned, size_t(bytes)) == 0);
  // Pageable to device and back into pinned memory.
  for (uint32_t& v : back) v = ~v;
  dev->copy_to_device(0, b.get(), back.data(), bytes, "up again");
  dev->copy_to_host(0, pinned, b.get(), bytes, "down again");
  dev->synchronize();
  CHECK(std::memcmp(back.data(), pinned, size_t(bytes)) == 0);
  dev->free_pinned(pinned);
  // Zero-byte copies and allocations are no-ops.
  CHECK(dev->alloc(0) == nullptr);
  dev->copy_to_device(0, a.get(), back.data(), 0, "nothing");
}

TEST_CASE("cuda device events order two streams") {
  auto dev = cuda_device_or_skip();
  if (!dev) return;
#if HEARTH_HAVE_CUDA
  // Stream "work" adds x to y many times (milliseconds of kernels); stream "copy" waits on an
  // event recorded after them and copies y out. Without the wait the copy would see y early.
  const int64_t n = int64_t(1) << 22;
  const int kAdds = 40;
  std::vector<float> x(static_cast<size_t>(n)), y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) x[size_t(i)] = float(i % 7), y[size_t(i)] = float(i % 5);
  DeviceBuffer dx = testing::upload(*dev, x), dy = testing::upload(*dev, y);
  const StreamId work = dev->create_stream("work"), copy = dev->create_stream("copy");
  dev->set_tracing(true);
  for (int k = 0; k < kAdds; ++k)
    dev->launch(work, "add", [&](void* s) { cuda::add(dy.as<float>(), dx.as<float>(), n, s); });
  const EventId done = dev->record_event(work);
  dev->wait_event(copy, done);
  std::vector<float> out(size_t(n), -1.0f);
  dev->copy_to_host(copy, out.data(), dy.get(), n * 4, "result");
  dev->event_wait(done);  // the host waits for the adds too
  dev->synchronize(copy);
  int bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    float e = y[size_t(i)];
    for (int k = 0; k < kAdds; ++k) e += x[size_t(i)];
    if (out[size_t(i)] != e && bad++ < 5) FAIL_CHECK("y[", i, "] = ", out[size_t(i)], ", expected ", e);
  }
  CHECK(bad == 0);
  const std::vector<DeviceOp> ops = dev->trace();
  REQUIRE(ops.size() == size_t(kAdds + 1));
  double last_add_end = 0;
  for (const DeviceOp& op : ops)
    if (op.stream == work) last_add_end = std::max(last_add_end, op.end_us);
  const DeviceOp& result = ops.back();
  CHECK(result.label == "result");
  CHECK(result.stream == copy);
  // The copy started after the last add ended (events resolve to about half a microsecond).
  CHECK(result.start_us >= last_add_end - 1.0);
  dev->release_event(done);
#endif
}

TEST_CASE("cuda device trace records kinds labels bytes and times") {
  auto dev = cuda_device_or_skip();
  if (!dev) return;
#if HEARTH_HAVE_CUDA
  const int64_t n = 1 << 18, bytes = n * 4;
  std::vector<float> host(size_t(n), 1.5f);
  DeviceBuffer d(*dev, bytes);
  // Off by default: nothing recorded.
  dev->copy_to_device(0, d.get(), host.data(), bytes, "untraced");
  CHECK(dev->trace().empty());
  dev->set_tracing(true);
  dev->copy_to_device(0, d.get(), host.data(), bytes, "up");
  dev->launch(0, "double", [&](void* s) { cuda::add(d.as<float>(), d.as<float>(), n, s); });
  dev->copy_to_host(0, host.data(), d.get(), bytes, "down");
  const std::vector<DeviceOp> ops = dev->trace();
  REQUIRE(ops.size() == 3);
  CHECK(host[0] == 3.0f);
  CHECK(host[size_t(n - 1)] == 3.0f);
  CHECK(ops[0].kind == DeviceOp::Kind::kCopyToDevice);
  CHECK(ops[0].label == "up");
  CHECK(ops[0].bytes == bytes);
  CHECK(ops[1].kind == DeviceOp::Kind::kKernel);
  CHECK(ops[1].label == "double");
  CHECK(ops[1].bytes == 0);
  CHECK(ops[2].kind == DeviceOp::Kind::kCopyToHost);
  CHECK(ops[2].label == "down");
  CHECK(ops[2].bytes == bytes);
  for (size_t i = 0; i < ops.size(); ++i) {
    CAPTURE(i);
    CHECK(ops[i].stream == 0);
    CHECK(ops[i].start_us >= 0.0);
    CHECK(ops[i].start_us <= ops[i].end_us);
    if (i > 0) CHECK(ops[i - 1].end_us <= ops[i].start_us + 1.0);  // one stream: in order
  }
  CHECK(ops[0].end_us > ops[0].start_us);  // a megabyte takes some time
  // trace() keeps what it returned until cleared.
  CHECK(dev->trace().size() == 3);
  dev->clear_trace();
  CHECK(dev->trace().empty());
  dev->launch(0, "after clear", [&](void* s) { cuda::add(d.as<float>(), d.as<float>(), n, s); });
  const std::vector<DeviceOp> later = dev->trace();
  REQUIRE(later.size() == 1);
  CHECK(later[0].label == "after clear");
  CHECK(later[0].start_us >= ops[2].end_us);  // times still count from the device's creation
  dev->set_tracing(false);
  dev->launch(0, "off", [&](void* s) { cuda::add(d.as<float>(), d.as<float>(), n, s); });
  CHECK(dev->trace().size() == 1);
#endif
}

TEST_CASE("cuda device out of memory and bad ids are errors that say so") {
  auto dev = cuda_device_or_skip();
  if (!dev) return;
  const int64_t absurd = int64_t(1) << 50;  // a petabyte
  std::string msg;
  try {
    dev->alloc(absurd);
  } catch (const DeviceOutOfMemory& e) {
    msg = e.what();
  }
  CHECK(msg.find(std::to_string(absurd)) != std::string::npos);
  CHECK(msg.find("free") != std::string::npos);
  // The failure leaves the device usable.
  DeviceBuffer ok(*dev, 1 << 20);
  CHECK(ok.get() != nullptr);
  CHECK_THROWS_AS(dev->alloc(-1), std::invalid_argument);
  CHECK_THROWS_AS(dev->copy_to_device(42, ok.get(), &msg, 1, "no such stream"), std::out_of_range);
  CHECK_THROWS_AS(dev->wait_event(0, 12345), std::out_of_range);
  const EventId e = dev->record_event(0);
  dev->event_wait(e);
  dev->release_event(e);
  CHECK_THROWS_AS(dev->event_wait(e), std::out_of_range);  // released
  // Released ids are reused.
  const EventId again = dev->record_event(0);
  CHECK(again == e);
  dev->release_event(again);
}

}  // namespace cuda_device_suite

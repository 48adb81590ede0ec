#include "offload/sim_device.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace hearth {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int64_t kAlign = 64;

// "16 GiB", "1.5 GiB", "768 MiB", "1000 bytes": the sizes in names and error messages.
std::string size_text(int64_t bytes) {
  char buf[64];
  const double gib = double(bytes) / double(int64_t(1) << 30), mib = double(bytes) / double(1 << 20);
  if (bytes >= (int64_t(1) << 30))
    std::snprintf(buf, sizeof buf, "%.4g GiB", gib);
  else if (bytes >= (1 << 20))
    std::snprintf(buf, sizeof buf, "%.4g MiB", mib);
  else
    std::snprintf(buf, sizeof buf, "%lld bytes", static_cast<long long>(bytes));
  return buf;
}

// Device memory and pinned memory are resident: the pages are touched here, so that no
// copy or launch pays for first-touch page faults a real device would not have.
void* aligned_bytes(int64_t bytes) {
  // aligned_alloc wants a multiple of the alignment; 0 bytes still gets a unique pointer.
  const int64_t rounded = std::max<int64_t>(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
  void* p = std::aligned_alloc(size_t(kAlign), size_t(rounded));
  if (p) std::memset(p, 0, size_t(rounded));
  return p;
}

std::string error_text(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "a non-standard exception";
  }
}

class SimulatedDevice final : public Device {
 public:
  explicit SimulatedDevice(const SimulatedDeviceOptions& o) : opt_(o), zero_(Clock::now()) {
    if (o.memory_bytes <= 0)
      throw std::invalid_argument("simulated device: memory_bytes must be positive, got " +
                                  std::to_string(o.memory_bytes));
    if (!(o.link_gbps > 0))
      throw std::invalid_argument("simulated device: link_gbps must be positive, got " + std::to_string(o.link_gbps));
    if (!(o.link_latency_us >= 0))
      throw std::invalid_argument("simulated device: link_latency_us must not be negative, got " +
                                  std::to_string(o.link_latency_us));
    if (!(o.compute_scale > 0 && o.compute_scale <= 1))
      throw std::invalid_argument("simulated device: compute_scale must be in (0, 1], got " +
                                  std::to_string(o.compute_scale));
    char buf[96];
    std::snprintf(buf, sizeof buf, "simulated device (%g GB/s link, %s)", o.link_gbps, size_text(o.memory_bytes).c_str());
    name_ = buf;
    std::lock_guard<std::mutex> lock(mu_);
    add_stream("compute");
  }

  ~SimulatedDevice() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      for (auto& s : streams_) s->work_cv.notify_all();
    }
    // Workers drain their queues before they leave; waits always refer to work enqueued
    // earlier, so every queue can reach its end.
    for (auto& s : streams_) s->worker.join();
    for (const auto& e : errors_)
      std::fprintf(stderr, "hearth: %s: an error no synchronize() reported: %s\n", name_.c_str(), error_text(e).c_str());
    for (auto& [p, n] : allocations_) std::free(p);
    for (void* p : pinned_) std::free(p);
  }

  std::string name() const override { return name_; }
  bool simulated() const override { return true; }
  int64_t total_memory() const override { return opt_.memory_bytes; }
  int64_t free_memory() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return opt_.memory_bytes - used_;
  }

  void* alloc(int64_t bytes) override {
    if (bytes < 0) throw std::invalid_argument("simulated device: alloc of a negative size " + std::to_string(bytes));
    {
      std::lock_guard<std::mutex> lock(mu_);
      const int64_t free = opt_.memory_bytes - used_;
      if (bytes > free)
        throw DeviceOutOfMemory(name_ + ": out of memory: requested " + std::to_string(bytes) + " bytes (" +
                                size_text(bytes) + "), " + std::to_string(free) + " bytes free (" + size_text(free) +
                                ") of " + size_text(opt_.memory_bytes));
      used_ += bytes;  // reserved while the pages are touched outside the lock
    }
    void* p = aligned_bytes(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    if (!p) {
      used_ -= bytes;
      throw DeviceOutOfMemory(name_ + ": host allocation of " + std::to_string(bytes) + " bytes (" + size_text(bytes) +
                              ") for device memory failed");
    }
    allocations_[static_cast<char*>(p)] = bytes;
    return p;
  }

  void free(void* p) override {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = allocations_.find(static_cast<char*>(p));
    if (it == allocations_.end())
      throw std::invalid_argument(name_ + ": free of a pointer that is not device memory from alloc()");
    used_ -= it->second;
    allocations_.erase(it);
    std::free(p);
  }

  void* alloc_pinned(int64_t bytes) override {
    if (bytes < 0)
      throw std::invalid_argument("simulated device: alloc_pinned of a negative size " + std::to_string(bytes));
    void* p = aligned_bytes(bytes);
    if (!p)
      throw DeviceOutOfMemory(name_ + ": pinned host allocation of " + std::to_string(bytes) + " bytes (" +
                              size_text(bytes) + ") failed");
    std::lock_guard<std::mutex> lock(mu_);
    pinned_.push_back(p);
    return p;
  }

  void free_pinned(void* p) override {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = std::find(pinned_.begin(), pinned_.end(), p);
    if (it == pinned_.end())
      throw std::invalid_argument(name_ + ": free_pinned of a pointer that is not from alloc_pinned()");
    pinned_.erase(it);
    std::free(p);
  }

  StreamId create_stream(std::string_view name) override {
    std::lock_guard<std::mutex> lock(mu_);
    return add_stream(std::string(name));
  }

  std::string stream_name(StreamId s) const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stream(s).name;
  }

  void copy_to_device(StreamId s, void* dst, const void* src, int64_t bytes, std::string_view label) override {
    enqueue_copy(DeviceOp::Kind::kCopyToDevice, s, dst, src, bytes, label);
  }

  void copy_to_host(StreamId s, void* dst, const void* src, int64_t bytes, std::string_view label) override {
    enqueue_copy(DeviceOp::Kind::kCopyToHost, s, dst, src, bytes, label);
  }

  void launch(StreamId s, std::string_view label, std::function<void(void*)> fn) override {
    if (!fn) throw std::invalid_argument(name_ + ": launch '" + std::string(label) + "' without a function");
    Op op;
    op.type = Op::Type::kLaunch;
    op.kind = DeviceOp::Kind::kKernel;
    op.label = label;
    op.fn = std::move(fn);
    enqueue(s, std::move(op));
  }

  EventId record_event(StreamId s) override {
    auto state = std::make_shared<EventState>();
    EventId id;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stream(s);  // validates s before an id is taken
      // Ids are reused only after 2^31 events, and never one still held.
      id = next_event_;
      while (events_.count(id)) id = id == INT32_MAX ? 0 : id + 1;
      next_event_ = id == INT32_MAX ? 0 : id + 1;
      events_[id] = state;
    }
    Op op;
    op.type = Op::Type::kRecord;
    op.event = std::move(state);
    enqueue(s, std::move(op));
    return id;
  }

  void wait_event(StreamId s, EventId e) override {
    Op op;
    op.type = Op::Type::kWait;
    {
      std::lock_guard<std::mutex> lock(mu_);
      op.event = event(e);
    }
    enqueue(s, std::move(op));
  }

  void event_wait(EventId e) override {
    std::unique_lock<std::mutex> lock(mu_);
    const std::shared_ptr<EventState> ev = event(e);
    done_cv_.wait(lock, [&] { return ev->done; });
    rethrow_kept_error(lock);
  }

  void release_event(EventId e) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (events_.erase(e) == 0) throw std::invalid_argument(name_ + ": release of unknown event " + std::to_string(e));
  }

  void synchronize(StreamId s) override {
    std::unique_lock<std::mutex> lock(mu_);
    Stream& st = stream(s);
    const uint64_t target = st.enqueued;
    done_cv_.wait(lock, [&] { return st.completed >= target; });
    rethrow_kept_error(lock);
  }

  void synchronize() override {
    std::unique_lock<std::mutex> lock(mu_);
    drain(lock);
    rethrow_kept_error(lock);
  }

  void set_tracing(bool on) override {
    std::lock_guard<std::mutex> lock(mu_);
    tracing_ = on;
  }

  std::vector<DeviceOp> trace() override {
    std::unique_lock<std::mutex> lock(mu_);
    drain(lock);  // errors stay kept for the caller's next synchronize()
    std::vector<DeviceOp> ops = trace_;
    std::stable_sort(ops.begin(), ops.end(), [](const DeviceOp& a, const DeviceOp& b) { return a.start_us < b.start_us; });
    return ops;
  }

  void clear_trace() override {
    std::lock_guard<std::mutex> lock(mu_);
    trace_.clear();
  }

 private:
  // An event is the point its marker holds in a stream's queue: done when the marker runs
  // (everything before it has run), at the device time the stream reached it.
  struct EventState {
    bool done = false;
    Clock::time_point at{};
  };

  struct Op {
    enum class Type { kCopy, kLaunch, kWait, kRecord };
    Type type = Type::kLaunch;
    DeviceOp::Kind kind = DeviceOp::Kind::kKernel;
    std::string label;
    bool traced = false;
    Clock::time_point enqueued{};
    // Copies.
    void* dst = nullptr;
    const void* src = nullptr;
    int64_t bytes = 0;
    // Launches.
    std::function<void(void*)> fn;
    // Waits and records.
    std::shared_ptr<EventState> event;
  };

  struct Stream {
    StreamId id = 0;
    std::string name;
    std::deque<Op> queue;
    uint64_t enqueued = 0, completed = 0;  // operations, markers included
    // Device time: the next operation starts no earlier than this (the end of the last
    // one, or a waited event's time).
    Clock::time_point ready{};
    std::condition_variable work_cv;
    std::thread worker;
  };

  // The link of one direction: held by the copy using it, free again (device time) at free_at.
  struct Link {
    std::mutex mu;
    Clock::time_point free_at{};
  };

  StreamId add_stream(std::string name) {  // mu_ held
    auto s = std::make_unique<Stream>();
    s->id = StreamId(streams_.size());
    s->name = std::move(name);
    Stream* raw = s.get();
    streams_.push_back(std::move(s));
    raw->worker = std::thread([this, raw] { run_stream(*raw); });
    return raw->id;
  }

  Stream& stream(StreamId s) const {  // mu_ held
    if (s < 0 || size_t(s) >= streams_.size())
      throw std::invalid_argument(name_ + ": unknown stream " + std::to_string(s));
    return *streams_[size_t(s)];
  }

  const std::shared_ptr<EventState>& event(EventId e) const {  // mu_ held
    auto it = events_.find(e);
    if (it == events_.end()) throw std::invalid_argument(name_ + ": unknown event " + std::to_string(e));
    return it->second;
  }

  // Whether [p, p + bytes) lies inside one allocation from alloc(). mu_ held.
  bool is_device_range(const void* p, int64_t bytes) const {
    const char* c = static_cast<const char*>(p);
    auto it = allocations_.upper_bound(const_cast<char*>(c));
    if (it == allocations_.begin()) return false;
    --it;
    return c >= it->first && c + bytes <= it->first + std::max<int64_t>(it->second, 0);
  }

  void enqueue_copy(DeviceOp::Kind kind, StreamId s, void* dst, const void* src, int64_t bytes, std::string_view label) {
    const bool to_device = kind == DeviceOp::Kind::kCopyToDevice;
    const char* what = to_device ? "copy_to_device" : "copy_to_host";
    if (bytes < 0)
      throw std::invalid_argument(name_ + ": " + what + " '" + std::string(label) + "' of a negative size " +
                                  std::to_string(bytes));
    if (bytes > 0 && (!dst || !src))
      throw std::invalid_argument(name_ + ": " + what + " '" + std::string(label) + "' with a null pointer");
    {
      std::lock_guard<std::mutex> lock(mu_);
      const void* dev = to_device ? static_cast<const void*>(dst) : src;
      if (bytes > 0 && !is_device_range(dev, bytes))
        throw std::invalid_argument(name_ + ": " + what + " '" + std::string(label) + "': the " +
                                    (to_device ? "destination" : "source") + " (" + std::to_string(bytes) +
                                    " bytes) is not inside device memory from alloc()");
    }
    Op op;
    op.type = Op::Type::kCopy;
    op.kind = kind;
    op.label = label;
    op.dst = dst;
    op.src = src;
    op.bytes = bytes;
    enqueue(s, std::move(op));
  }

  void enqueue(StreamId s, Op op) {
    std::lock_guard<std::mutex> lock(mu_);
    Stream& st = stream(s);
    op.traced = tracing_ && (op.type == Op::Type::kCopy || op.type == Op::Type::kLaunch);
    op.enqueued = Clock::now();
    st.queue.push_back(std::move(op));
    ++st.enqueued;
    st.work_cv.notify_one();
  }

  double us_since_zero(Clock::time_point t) const {
    return std::chrono::duration<double, std::micro>(t - zero_).count();
  }

  // The worker of one stream: runs its operations in order until the device stops and the
  // queue is empty.
  //
  // Device time vs host time: an operation's device start is the latest of when it was
  // enqueued, when the stream's previous operation ended and the times of the events it
  // waited for (and, for a copy, when the link was free); its end is that plus its
  // duration. The worker thread runs it no earlier (it sleeps until each modelled end), but
  // possibly later on a busy machine; the trace shows device time, so the simulator's own
  // wake-up delays do not show as gaps a real device would not have. The host never sees
  // an operation finished before its device end.
  void run_stream(Stream& s) {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      s.work_cv.wait(lock, [&] { return !s.queue.empty() || stopping_; });
      if (s.queue.empty()) return;
      Op op = std::move(s.queue.front());
      s.queue.pop_front();
      const Clock::time_point start = std::max(op.enqueued, s.ready);
      switch (op.type) {
        case Op::Type::kWait:
          done_cv_.wait(lock, [&] { return op.event->done; });
          s.ready = std::max(s.ready, op.event->at);
          break;
        case Op::Type::kRecord:
          op.event->at = start;
          op.event->done = true;
          break;
        case Op::Type::kCopy:
        case Op::Type::kLaunch: {
          lock.unlock();
          std::exception_ptr error;
          Clock::time_point end;
          DeviceOp done = op.type == Op::Type::kCopy ? run_copy(op, start, end) : run_launch(op, start, end, error);
          done.stream = s.id;
          lock.lock();
          s.ready = end;
          if (error) errors_.push_back(error);
          if (op.traced) trace_.push_back(std::move(done));
          break;
        }
      }
      op.event.reset();
      ++s.completed;
      done_cv_.notify_all();
    }
  }

  // Both run an operation whose device time starts no earlier than `ready`/`start` and
  // set `end` to its device end.
  DeviceOp run_copy(const Op& op, Clock::time_point ready, Clock::time_point& end) {
    Link& link = op.kind == DeviceOp::Kind::kCopyToDevice ? up_ : down_;
    const auto cost = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::micro>(
        opt_.link_latency_us + double(op.bytes) / (opt_.link_gbps * 1e3)));
    // The link is held for the whole copy, so copies of one direction take turns. The copy
    // takes the modelled time, or the memcpy's when the host copies slower than the link.
    std::lock_guard<std::mutex> hold(link.mu);
    const Clock::time_point start = std::max(ready, link.free_at);
    const auto t0 = Clock::now();
    if (op.bytes > 0) std::memcpy(op.dst, op.src, size_t(op.bytes));
    end = start + std::max<Clock::duration>(cost, Clock::now() - t0);
    std::this_thread::sleep_until(end);
    link.free_at = end;
    DeviceOp d;
    d.kind = op.kind;
    d.label = op.label;
    d.bytes = op.bytes;
    d.start_us = us_since_zero(start);
    d.end_us = us_since_zero(end);
    return d;
  }

  DeviceOp run_launch(Op& op, Clock::time_point start, Clock::time_point& end, std::exception_ptr& error) {
    const auto t0 = Clock::now();
    try {
      op.fn(nullptr);
    } catch (...) {
      error = std::current_exception();
    }
    const auto took = std::chrono::duration_cast<Clock::duration>((Clock::now() - t0) / opt_.compute_scale);
    op.fn = nullptr;  // whatever it captured goes now, on the worker
    end = start + took;
    std::this_thread::sleep_until(end);
    DeviceOp d;
    d.kind = DeviceOp::Kind::kKernel;
    d.label = op.label;
    d.start_us = us_since_zero(start);
    d.end_us = us_since_zero(end);
    return d;
  }

  // Waits until everything enqueued so far on every stream has run. mu_ held.
  void drain(std::unique_lock<std::mutex>& lock) {
    std::vector<std::pair<Stream*, uint64_t>> targets;
    for (auto& s : streams_) targets.emplace_back(s.get(), s->enqueued);
    for (auto& [s, target] : targets) done_cv_.wait(lock, [&, s = s, target = target] { return s->completed >= target; });
  }

  void rethrow_kept_error(std::unique_lock<std::mutex>& lock) {
    if (errors_.empty()) return;
    std::exception_ptr e = errors_.front();
    errors_.pop_front();
    lock.unlock();
    std::rethrow_exception(e);
  }

  const SimulatedDeviceOptions opt_;
  const Clock::time_point zero_;
  std::string name_;

  mutable std::mutex mu_;  // everything below, except the links
  std::condition_variable done_cv_;  // an operation finished
  std::vector<std::unique_ptr<Stream>> streams_;
  std::unordered_map<EventId, std::shared_ptr<EventState>> events_;
  EventId next_event_ = 0;
  std::map<char*, int64_t> allocations_;
  std::vector<void*> pinned_;
  int64_t used_ = 0;
  std::deque<std::exception_ptr> errors_;
  bool tracing_ = false;
  std::vector<DeviceOp> trace_;
  bool stopping_ = false;

  Link up_, down_;
};

}  // namespace

std::unique_ptr<Device> make_simulated_device(const SimulatedDeviceOptions& options) {
  return std::make_unique<SimulatedDevice>(options);
}

}  // namespace hearth

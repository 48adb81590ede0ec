#include "offload/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "offload/topology.h"

namespace hearth {

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

namespace {

constexpr int kDefaultSpinUs = 200;

int spin_budget(int threads, int requested) {
  int us = requested;
  if (us < 0) {
    us = kDefaultSpinUs;
    if (const char* env = std::getenv("HEARTH_POOL_SPIN_US")) {
      char* end = nullptr;
      const long v = std::strtol(env, &end, 10);
      if (end != env && *end == '\0' && v >= 0) us = int(std::min<long>(v, 100000));
    }
  }
  const unsigned hw = std::thread::hardware_concurrency();
  if (hw != 0 && unsigned(threads) > hw) us = 0;  // oversubscribed: spinning steals a worker's core
  return us;
}

// Spins until done() or `us` microseconds have passed; true when done() held. After the
// first kPureSpinUs the spinning thread also yields between checks, so on a machine
// where other processes want the core (tests run side by side, a build) it gives it
// up instead of burning it; on a quiet machine yield returns at once.
constexpr int kPureSpinUs = 20;

template <typename Done>
bool spin_until(int us, Done done) {
  if (us <= 0) return done();
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::microseconds(us);
  const auto polite = start + std::chrono::microseconds(std::min(us, kPureSpinUs));
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return done();
    if (now >= polite) std::this_thread::yield();
  }
}

}  // namespace

ThreadPool::ThreadPool(int threads, int spin_us) {
  if (threads <= 0) threads = detect_topology().physical_cores;
  threads = std::max(1, threads);
  spin_us_ = spin_budget(threads, spin_us);
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  {
    std::lock_guard<std::mutex> lock(mu_);
  }
  start_cv_.notify_all();
  for (auto& w : workers_) w.join();
}

uint64_t ThreadPool::wait_for_job(uint64_t seen) {
  const auto ready = [&] { return generation_.load(std::memory_order_acquire) != seen || stop_.load(std::memory_order_acquire); };
  if (!spin_until(spin_us_, ready)) {
    // Announce the sleep before the last check (both sequentially consistent): either the
    // caller's bump of generation_ is seen here, or the caller sees this thread counted in
    // sleeping_workers_ and notifies under mu_, which it can only take once we wait.
    std::unique_lock<std::mutex> lock(mu_);
    sleeping_workers_.fetch_add(1);
    start_cv_.wait(lock, [&] { return generation_.load() != seen || stop_.load(); });
    sleeping_workers_.fetch_sub(1);
  }
  return generation_.load(std::memory_order_acquire);
}

void ThreadPool::wait_for_workers() {
  const auto done = [&] { return pending_.load(std::memory_order_acquire) == 0; };
  if (spin_until(spin_us_, done)) return;
  std::unique_lock<std::mutex> lock(mu_);
  caller_sleeping_.store(true);
  done_cv_.wait(lock, [&] { return pending_.load() == 0; });
  caller_sleeping_.store(false);
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    seen = wait_for_job(seen);
    if (stop_.load(std::memory_order_acquire)) return;
    const std::pair<int64_t, int64_t> range = ranges_[size_t(index)];
    if (range.first < range.second) (*job_)(range.first, range.second);
    // The last worker out wakes the caller if it stopped spinning (same handshake as
    // wait_for_job, mirrored).
    if (pending_.fetch_sub(1) == 1 && caller_sleeping_.load()) {
      { std::lock_guard<std::mutex> lock(mu_); }
      done_cv_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t units = (n + grain - 1) / grain;
  const int threads = int(std::min<int64_t>(size(), units));
  if (threads <= 1) {
    fn(0, n);
    return;
  }
  ranges_.assign(size_t(size()), {0, 0});
  for (int i = 0; i < threads; ++i) {
    const int64_t b = std::min(n, units * i / threads * grain);
    const int64_t e = std::min(n, units * (i + 1) / threads * grain);
    ranges_[size_t(i)] = {b, e};
  }
  // Every range runs through `guarded`, which records the first exception instead of
  // letting it escape (an exception leaving a worker thread would std::terminate).
  // The caller rethrows it once all ranges are done. One pointer fits std::function's
  // small buffer, so this allocates nothing.
  struct Failure {
    const std::function<void(int64_t, int64_t)>* fn;
    std::mutex mu;
    std::exception_ptr error;
  } failure{&fn, {}, nullptr};
  const std::function<void(int64_t, int64_t)> guarded = [f = &failure](int64_t b, int64_t e) {
    try {
      (*f->fn)(b, e);
    } catch (...) {
      std::lock_guard<std::mutex> lock(f->mu);
      if (!f->error) f->error = std::current_exception();
    }
  };
  job_ = &guarded;
  pending_.store(int(workers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1);  // publishes job_, ranges_ and pending_ (sequentially consistent)
  if (sleeping_workers_.load() > 0) {
    { std::lock_guard<std::mutex> lock(mu_); }
    start_cv_.notify_all();
  }
  try {
    fn(ranges_[0].first, ranges_[0].second);
  } catch (...) {
    std::lock_guard<std::mutex> lock(failure.mu);
    failure.error = std::current_exception();  // the caller's own exception wins
  }
  wait_for_workers();
  job_ = nullptr;
  if (failure.error) std::rethrow_exception(failure.error);
}

}  // namespace hearth

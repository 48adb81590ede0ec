#include "offload/thread_pool.h"

#include <algorithm>
#include <exception>

#include "offload/topology.h"

namespace hearth {

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0) threads = detect_topology().physical_cores;
  threads = std::max(1, threads);
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(int64_t, int64_t)>* job;
    std::pair<int64_t, int64_t> range;
    {
      std::unique_lock<std::mutex> lock(mu_);
      start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      job = job_;
      range = ranges_[index];
    }
    if (range.first < range.second) (*job)(range.first, range.second);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0) done_cv_.notify_one();
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
  std::vector<std::pair<int64_t, int64_t>> ranges(size(), {0, 0});
  for (int i = 0; i < threads; ++i) {
    const int64_t b = std::min(n, units * i / threads * grain);
    const int64_t e = std::min(n, units * (i + 1) / threads * grain);
    ranges[i] = {b, e};
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
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &guarded;
    ranges_ = std::move(ranges);
    pending_ = int(workers_.size());
    ++generation_;
  }
  start_cv_.notify_all();
  try {
    fn(ranges_[0].first, ranges_[0].second);
  } catch (...) {
    std::lock_guard<std::mutex> lock(failure.mu);
    failure.error = std::current_exception();  // the caller's own exception wins
  }
  {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
  }
  if (failure.error) std::rethrow_exception(failure.error);
}

}  // namespace hearth

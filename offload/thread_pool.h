// One pool of worker threads that every matmul and attention loop runs on.
//
// parallel_for splits [0, n) into one contiguous range per thread (the caller's thread
// takes the first), so work assignment is deterministic: the same n and thread count
// always give each thread the same rows. Kernels write disjoint outputs, which keeps
// results bit-identical whatever the thread count.
//
// A decode step calls parallel_for a few hundred times with a few microseconds of serial
// work between calls. Waking a sleeping thread costs tens of microseconds (a futex round
// trip, more on a virtual machine), so after each job the workers, and the caller waiting
// for them, spin for a short while (spin_us, default 200 µs; after the first 20 µs they
// yield the core between checks) before they block. A pool
// with more threads than the machine has hardware threads never spins: there a spinning
// thread would take the core a worker needs. HEARTH_POOL_SPIN_US overrides the default
// (0 turns spinning off, e.g. on a machine shared with other work).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace hearth {

// One step of a spin-wait: a pause hint to the core (x86), else a yield.
void cpu_relax();

class ThreadPool {
 public:
  // threads <= 0: one per physical core (from hwloc). spin_us < 0: the default above.
  explicit ThreadPool(int threads = 0, int spin_us = -1);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }
  // How long an idle thread spins before blocking (0: it blocks at once).
  int spin_us() const { return spin_us_; }

  // Calls fn(begin, end) over a partition of [0, n); returns when all are done.
  // Ranges are aligned to `grain` (except the last) so callers can keep blocks whole.
  // One caller at a time: parallel_for must not be called concurrently on one pool.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

 private:
  void worker_loop(int index);
  // Waits until generation_ differs from `seen` or stop_ is set; returns generation_.
  uint64_t wait_for_job(uint64_t seen);
  // Waits until every worker has finished the current job.
  void wait_for_workers();

  std::vector<std::thread> workers_;
  int spin_us_ = 0;

  // The current job, written by the caller before it bumps generation_ (a release), read
  // by workers after they see the new generation (an acquire).
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  std::vector<std::pair<int64_t, int64_t>> ranges_;

  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};            // workers still running the current job
  std::atomic<int> sleeping_workers_{0};   // workers blocked on start_cv_
  std::atomic<bool> caller_sleeping_{false};
  std::atomic<bool> stop_{false};
  // Only for blocking: a thread that gives up spinning announces itself (the counters
  // above) and waits on a condition under mu_; the other side takes mu_ before notifying.
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
};

}  // namespace hearth

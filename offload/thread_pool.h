// One pool of worker threads that every matmul and attention loop runs on.
//
// parallel_for splits [0, n) into one contiguous range per thread (the caller's thread
// takes the first), so work assignment is deterministic: the same n and thread count
// always give each thread the same rows. Kernels write disjoint outputs, which keeps
// results bit-identical whatever the thread count.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace hearth {

class ThreadPool {
 public:
  // threads <= 0: one per physical core (from hwloc).
  explicit ThreadPool(int threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }

  // Calls fn(begin, end) over a partition of [0, n); returns when all are done.
  // Ranges are aligned to `grain` (except the last) so callers can keep blocks whole.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

 private:
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  std::vector<std::pair<int64_t, int64_t>> ranges_;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

}  // namespace hearth

// ThreadPool::parallel_for: exact coverage, grain alignment, determinism, reuse, and
// exception propagation.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "offload/thread_pool.h"
#include "offload/topology.h"

namespace offload_thread_pool_suite {

using namespace hearth;

namespace {

struct Call {
  int64_t begin, end;
};

// Runs parallel_for and returns every (begin, end) it was called with, sorted.
std::vector<Call> record(ThreadPool& pool, int64_t n, int64_t grain, std::vector<int>* hits = nullptr) {
  std::mutex mu;
  std::vector<Call> calls;
  if (hits) hits->assign(size_t(std::max<int64_t>(n, 0)), 0);
  pool.parallel_for(
      n,
      [&](int64_t b, int64_t e) {
        std::lock_guard<std::mutex> lock(mu);
        calls.push_back({b, e});
        if (hits)
          for (int64_t i = b; i < e; ++i)
            if (i >= 0 && i < n) ++(*hits)[size_t(i)];
      },
      grain);
  std::sort(calls.begin(), calls.end(), [](const Call& a, const Call& b) { return a.begin < b.begin; });
  return calls;
}

}  // namespace

TEST_CASE("thread_pool: size") {
  CHECK(ThreadPool(1).size() == 1);
  CHECK(ThreadPool(3).size() == 3);
  const int cores = detect_topology().physical_cores;
  CHECK(ThreadPool(0).size() == cores);
  CHECK(ThreadPool(-2).size() == cores);
}

TEST_CASE("thread_pool: parallel_for covers 0..n exactly once in grain-aligned ranges") {
  std::vector<std::unique_ptr<ThreadPool>> pools;
  for (int t : {1, 2, 3, 4, 5, 8}) pools.push_back(std::make_unique<ThreadPool>(t));
  int combos = 0;
  for (auto& pool : pools) {
    for (int64_t n : {0, 1, 2, 3, 4, 5, 7, 8, 9, 31, 64, 100, 1000, 1023}) {
      for (int64_t grain : {0, 1, 2, 3, 7, 16, 64, 1000, 5000}) {
        CAPTURE(pool->size());
        CAPTURE(n);
        CAPTURE(grain);
        ++combos;
        std::vector<int> hits;
        const std::vector<Call> calls = record(*pool, n, grain, &hits);
        if (n == 0) {
          CHECK(calls.empty());
          continue;
        }
        const int64_t g = std::max<int64_t>(grain, 1);
        const int64_t units = (n + g - 1) / g;
        // One contiguous non-empty range per participating thread, tiling [0, n).
        REQUIRE(!calls.empty());
        CHECK(int64_t(calls.size()) == std::min<int64_t>(pool->size(), units));
        CHECK(calls.front().begin == 0);
        CHECK(calls.back().end == n);
        for (size_t i = 0; i < calls.size(); ++i) {
          CHECK(calls[i].begin < calls[i].end);
          CHECK(calls[i].begin % g == 0);
          if (calls[i].end != n) CHECK(calls[i].end % g == 0);
          if (i > 0) CHECK(calls[i].begin == calls[i - 1].end);
        }
        CHECK(std::all_of(hits.begin(), hits.end(), [](int h) { return h == 1; }));
        // Balanced: no range holds more than one grain unit above the smallest.
        int64_t lo = n, hi = 0;
        for (const Call& c : calls) {
          const int64_t u = (c.end - c.begin + g - 1) / g;
          lo = std::min(lo, u);
          hi = std::max(hi, u);
        }
        CHECK(hi - lo <= 1);
      }
    }
  }
  CHECK(combos == 6 * 14 * 9);
}

TEST_CASE("thread_pool: assignment is deterministic and results identical across thread counts") {
  // A float reduction done the way the kernels do it: every range writes its own
  // per-grain partial sums, combined afterwards in a fixed order.
  const int64_t n = 100003, grain = 64;
  std::vector<float> data(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) data[size_t(i)] = float((i * 2654435761u) % 1000003) * 1e-3f - 500.0f;
  auto reduce = [&](ThreadPool& pool) {
    const int64_t blocks = (n + grain - 1) / grain;
    std::vector<float> partial(size_t(blocks), 0.0f);
    std::atomic<int64_t> isum{0};
    pool.parallel_for(
        n,
        [&](int64_t b, int64_t e) {
          int64_t local = 0;
          for (int64_t i = b; i < e; ++i) {
            partial[size_t(i / grain)] += data[size_t(i)] * data[size_t(i)];
            local += i;
          }
          isum += local;
        },
        grain);
    float total = 0.0f;
    for (float p : partial) total += p;
    CHECK(isum.load() == n * (n - 1) / 2);
    return total;
  };
  ThreadPool p1(1), p2(2), p3(3), p5(5);
  const float r1 = reduce(p1);
  CHECK(std::bit_cast<uint32_t>(reduce(p2)) == std::bit_cast<uint32_t>(r1));
  CHECK(std::bit_cast<uint32_t>(reduce(p3)) == std::bit_cast<uint32_t>(r1));
  CHECK(std::bit_cast<uint32_t>(reduce(p5)) == std::bit_cast<uint32_t>(r1));
  CHECK(std::bit_cast<uint32_t>(reduce(p3)) == std::bit_cast<uint32_t>(r1));  // again, same pool

  // Same n and thread count: the same ranges every time.
  const auto first = record(p3, 1000, 7);
  for (int i = 0; i < 20; ++i) {
    const auto again = record(p3, 1000, 7);
    REQUIRE(again.size() == first.size());
    for (size_t k = 0; k < first.size(); ++k) {
      CHECK(again[k].begin == first[k].begin);
      CHECK(again[k].end == first[k].end);
    }
  }
}

TEST_CASE("thread_pool: reused for many small jobs without deadlock") {
  for (int threads : {2, 4}) {
    ThreadPool pool(threads);
    std::atomic<int64_t> total{0};
    int64_t want = 0;
    for (int job = 0; job < 1000; ++job) {
      const int64_t n = job % 13;  // includes n = 0 and n < threads
      want += n;
      pool.parallel_for(n, [&](int64_t b, int64_t e) { total += e - b; });
    }
    CHECK(total.load() == want);
  }
  // Pools created and destroyed back to back, some never used.
  for (int i = 0; i < 50; ++i) {
    ThreadPool pool(3);
    if (i % 2) {
      std::atomic<int> k{0};
      pool.parallel_for(10, [&](int64_t b, int64_t e) { k += int(e - b); });
      CHECK(k.load() == 10);
    }
  }
}

TEST_CASE("thread_pool: exceptions propagate to the caller and the pool stays usable") {
  ThreadPool pool(4);
  // Thrown in the caller's own range (the first one).
  CHECK_THROWS_AS(pool.parallel_for(100,
                                    [](int64_t b, int64_t) {
                                      if (b == 0) throw std::runtime_error("caller part");
                                    }),
                  std::runtime_error);
  // Thrown in a worker's range.
  CHECK_THROWS_WITH_AS(pool.parallel_for(100,
                                         [](int64_t b, int64_t) {
                                           if (b != 0) throw std::logic_error("worker part");
                                         }),
                       "worker part", std::logic_error);
  // Thrown everywhere: exactly one exception reaches the caller.
  CHECK_THROWS_AS(pool.parallel_for(100, [](int64_t, int64_t) { throw std::runtime_error("all"); }),
                  std::runtime_error);
  // Single-range path (n below the grain) calls fn directly.
  CHECK_THROWS_AS(pool.parallel_for(3, [](int64_t, int64_t) { throw std::runtime_error("one"); }, 10),
                  std::runtime_error);
  // The remaining ranges still ran, and the pool still works.
  std::atomic<int64_t> covered{0};
  CHECK_THROWS(pool.parallel_for(400, [&](int64_t b, int64_t e) {
    covered += e - b;
    if (b == 0) throw std::runtime_error("x");
  }));
  CHECK(covered.load() == 400);
  std::vector<int> hits;
  record(pool, 257, 1, &hits);
  CHECK(std::count(hits.begin(), hits.end(), 1) == 257);
}

TEST_CASE("thread_pool: spinning and blocking hand-offs both deliver every job") {
  // spin 0: every hand-off goes through the condition variables; spin 1 µs: threads give
  // up spinning mid-sequence, so some jobs find workers asleep and others awake; the
  // default: workers stay awake between back-to-back jobs. Sleeps between some jobs push
  // the threads into the blocking path in every mode.
  for (int spin : {0, 1, 2000}) {
    ThreadPool pool(3, spin);
    CAPTURE(spin);
    if (std::thread::hardware_concurrency() >= 3) CHECK(pool.spin_us() == spin);
    std::atomic<int64_t> total{0};
    int64_t want = 0;
    for (int job = 0; job < 3000; ++job) {
      const int64_t n = 3 + job % 7;
      want += n * (n - 1) / 2;
      pool.parallel_for(n, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) total += i;
      });
      if (job % 500 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(3));
    }
    CHECK(total.load() == want);
  }
}

TEST_CASE("thread_pool: never spins when it has more threads than the machine") {
  const unsigned hw = std::thread::hardware_concurrency();
  if (hw == 0) return;  // unknown: nothing to compare against
  ThreadPool pool(int(hw) + 1, 500);
  CHECK(pool.spin_us() == 0);
  std::atomic<int64_t> total{0};
  pool.parallel_for(1000, [&](int64_t b, int64_t e) { total += e - b; });
  CHECK(total.load() == 1000);
}

}  // namespace offload_thread_pool_suite

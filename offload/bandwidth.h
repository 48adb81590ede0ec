// The machine's memory read bandwidth: the ceiling decode speed is measured against.
// Decoding streams every active weight once per step, so bytes/step / bandwidth is the
// least time a step can take (the "memory wall").
#pragma once
#include <cstdint>
#include <span>

#include "offload/thread_pool.h"

namespace hearth {

struct BandwidthResult {
  double bytes_per_second = 0;  // the best run
  uint64_t buffer_bytes = 0;
  int threads = 0;
  int runs = 0;
};

// The largest CPU cache (normally the L3), from hwloc; 0 when hwloc reports none.
uint64_t last_level_cache_bytes();

// Streams a buffer of `bytes` (0: 16x the last-level cache, clamped to [256 MiB, 1 GiB])
// with all of the pool's threads, each summing its own contiguous share with wide loads,
// and returns the best of `runs` passes. The buffer is first written by the same threads
// (first touch), so on NUMA machines each share lives near the thread that reads it.
// Throws std::invalid_argument for runs < 1 or a buffer under 1 MiB.
BandwidthResult measure_read_bandwidth(ThreadPool& pool, uint64_t bytes = 0, int runs = 3);

// Bytes that already exist somewhere in memory: a weight matrix, mapped or owned.
struct ByteRange {
  const void* data = nullptr;
  uint64_t bytes = 0;
};

struct RangeReadResult {
  double bytes_per_second = 0;  // the best run
  uint64_t bytes = 0;           // all the ranges together
  uint64_t byte_sum = 0;        // every byte's value added up (mod 2^64): what was read
  int threads = 0;
  int runs = 0;
};

// Streams the given ranges where they lie, with all of the pool's threads, each summing
// the bytes of its own contiguous share of them, and returns the best of `runs` passes.
// measure_read_bandwidth times a fresh buffer, which first touch placed well; this times
// the memory the data actually sits in (page cache, huge pages, another NUMA node), so a
// kernel's rate over the same bytes can be judged against it. Ranges may start and end
// anywhere. Throws std::invalid_argument for runs < 1 or a null range with bytes.
RangeReadResult measure_read_rate(ThreadPool& pool, std::span<const ByteRange> ranges, int runs = 2);

}  // namespace hearth

#include "offload/bandwidth.h"

#include <hwloc.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace hearth {

namespace {

// Plain sum with four independent accumulators: the reference, and the fallback on CPUs
// without AVX2.
uint64_t sum_scalar(const uint64_t* p, int64_t n) {
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += p[i];
    s1 += p[i + 1];
    s2 += p[i + 2];
    s3 += p[i + 3];
  }
  for (; i < n; ++i) s0 += p[i];
  return s0 + s1 + s2 + s3;
}

// 128 bytes per iteration in four independent 256-bit adds: enough loads in flight that
// the memory system, not the loop, is the limit. p must be 32-byte aligned.
__attribute__((target("avx2"))) uint64_t sum_avx2(const uint64_t* p, int64_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 4)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 8)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 12)));
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
  return lanes[0] + lanes[1] + lanes[2] + lanes[3] + sum_scalar(p + i, n - i);
}

// The sum of n bytes' values (mod 2^64), from any address: the reference, the tail of
// byte_sum_avx2 and the fallback on CPUs without AVX2.
uint64_t byte_sum_scalar(const uint8_t* p, uint64_t n) {
  uint64_t s = 0;
  for (uint64_t i = 0; i < n; ++i) s += p[i];
  return s;
}

// The same, 128 bytes per iteration: vpsadbw against zero adds eight bytes into each
// 64-bit lane, so the loop stays as light as sum_avx2's. Unaligned loads, since weights
// start anywhere; on data streamed from memory they cost nothing extra.
__attribute__((target("avx2"))) uint64_t byte_sum_avx2(const uint8_t* p, uint64_t n) {
  const __m256i zero = _mm256_setzero_si256();
  __m256i a0 = zero, a1 = zero, a2 = zero, a3 = zero;
  uint64_t i = 0;
  for (; i + 128 <= n; i += 128) {
    const auto* v = reinterpret_cast<const __m256i*>(p + i);
    a0 = _mm256_add_epi64(a0, _mm256_sad_epu8(_mm256_loadu_si256(v), zero));
    a1 = _mm256_add_epi64(a1, _mm256_sad_epu8(_mm256_loadu_si256(v + 1), zero));
    a2 = _mm256_add_epi64(a2, _mm256_sad_epu8(_mm256_loadu_si256(v + 2), zero));
    a3 = _mm256_add_epi64(a3, _mm256_sad_epu8(_mm256_loadu_si256(v + 3), zero));
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
  return lanes[0] + lanes[1] + lanes[2] + lanes[3] + byte_sum_scalar(p + i, n - i);
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

}  // namespace

uint64_t last_level_cache_bytes() {
  hwloc_topology_t topo;
  if (hwloc_topology_init(&topo) != 0) return 0;
  uint64_t largest = 0;
  if (hwloc_topology_load(topo) == 0) {
    for (hwloc_obj_type_t t : {HWLOC_OBJ_L1CACHE, HWLOC_OBJ_L2CACHE, HWLOC_OBJ_L3CACHE, HWLOC_OBJ_L4CACHE, HWLOC_OBJ_L5CACHE}) {
      hwloc_obj_t o = nullptr;
      while ((o = hwloc_get_next_obj_by_type(topo, t, o)) != nullptr)
        if (o->attr) largest = std::max<uint64_t>(largest, o->attr->cache.size);
    }
  }
  hwloc_topology_destroy(topo);
  return largest;
}

BandwidthResult measure_read_bandwidth(ThreadPool& pool, uint64_t bytes, int runs) {
  if (runs < 1) throw std::invalid_argument("measure_read_bandwidth: runs must be at least 1");
  if (bytes == 0) bytes = std::clamp<uint64_t>(16 * last_level_cache_bytes(), uint64_t(256) << 20, uint64_t(1) << 30);
  if (bytes < (uint64_t(1) << 20))
    throw std::invalid_argument("measure_read_bandwidth: a buffer of " + std::to_string(bytes) +
                                " bytes is too small to measure memory (at least 1 MiB)");
  constexpr int64_t kPage = 4096;
  bytes = (bytes + kPage - 1) / kPage * kPage;
  std::unique_ptr<uint64_t[], FreeDeleter> buf(static_cast<uint64_t*>(std::aligned_alloc(kPage, bytes)));
  if (!buf) throw std::runtime_error("measure_read_bandwidth: cannot allocate " + std::to_string(bytes >> 20) + " MiB");
  const int64_t n = int64_t(bytes / sizeof(uint64_t));
  const int64_t grain = kPage / int64_t(sizeof(uint64_t));  // whole pages per thread
  uint64_t* p = buf.get();
  pool.parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) p[i] = uint64_t(i) * 0x9E3779B97F4A7C15ull;
  }, grain);

  const bool avx2 = __builtin_cpu_supports("avx2");
  std::atomic<uint64_t> total{0};  // keeps the sums observable, so the loads cannot be dropped
  BandwidthResult r;
  r.buffer_bytes = bytes;
  r.threads = pool.size();
  r.runs = runs;
  for (int run = 0; run < runs; ++run) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(n, [&](int64_t b, int64_t e) {
      total.fetch_add(avx2 ? sum_avx2(p + b, e - b) : sum_scalar(p + b, e - b), std::memory_order_relaxed);
    }, grain);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0) r.bytes_per_second = std::max(r.bytes_per_second, double(bytes) / s);
  }
  volatile uint64_t sink = total.load();
  (void)sink;
  return r;
}

RangeReadResult measure_read_rate(ThreadPool& pool, std::span<const ByteRange> ranges, int runs) {
  if (runs < 1) throw std::invalid_argument("measure_read_rate: runs must be at least 1");
  // Pieces of at most 1 MiB, in the ranges' order: parallel_for gives every thread a
  // contiguous run of them, as the kernels' work items are runs of rows.
  constexpr uint64_t kPiece = uint64_t(1) << 20;
  std::vector<ByteRange> pieces;
  RangeReadResult r;
  for (const ByteRange& range : ranges) {
    if (range.bytes == 0) continue;
    if (!range.data) throw std::invalid_argument("measure_read_rate: a range of " + std::to_string(range.bytes) + " bytes has no data");
    const auto* p = static_cast<const uint8_t*>(range.data);
    for (uint64_t off = 0; off < range.bytes; off += kPiece) pieces.push_back({p + off, std::min(kPiece, range.bytes - off)});
    r.bytes += range.bytes;
  }
  r.threads = pool.size();
  r.runs = runs;
  const bool avx2 = __builtin_cpu_supports("avx2");
  for (int run = 0; run < runs; ++run) {
    std::atomic<uint64_t> total{0};
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(int64_t(pieces.size()), [&](int64_t b, int64_t e) {
      uint64_t s = 0;
      for (int64_t i = b; i < e; ++i) {
        const auto* p = static_cast<const uint8_t*>(pieces[size_t(i)].data);
        s += avx2 ? byte_sum_avx2(p, pieces[size_t(i)].bytes) : byte_sum_scalar(p, pieces[size_t(i)].bytes);
      }
      total.fetch_add(s, std::memory_order_relaxed);
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0 && r.bytes > 0) r.bytes_per_second = std::max(r.bytes_per_second, double(r.bytes) / s);
    r.byte_sum = total.load();
  }
  return r;
}

}  // namespace hearth

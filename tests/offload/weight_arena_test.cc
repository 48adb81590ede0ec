// WeightArena: pieces aligned, disjoint and zero until written, chunks shared and on huge
// page boundaries, large pieces in chunks of their own, and (where the kernel's THP
// setting allows) huge pages actually backing a written chunk.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "offload/weight_arena.h"

namespace offload_weight_arena_suite {

using namespace hearth;

namespace {

uintptr_t address(const void* p) { return reinterpret_cast<uintptr_t>(p); }

// AnonHugePages of the mapping that holds p, from /proc/self/smaps, in kB; -1 when
// smaps cannot be read.
long anon_huge_kb(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  if (!smaps) return -1;
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
      inside = address(p) >= lo && address(p) < hi;
      continue;
    }
    if (inside && line.rfind("AnonHugePages:", 0) == 0) return std::stol(line.substr(14));
  }
  return -1;
}

std::string thp_setting() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string s;
  std::getline(f, s);
  return s;
}

}  // namespace

TEST_CASE("weight arena: aligned, disjoint, zeroed pieces in shared huge-page chunks") {
  WeightArena arena(4 * WeightArena::kHugePage);  // 8 MiB chunks
  CHECK(arena.chunk_count() == 0);
  CHECK_FALSE(arena.huge_pages_advised());
  std::vector<std::pair<uint8_t*, std::size_t>> pieces;
  for (std::size_t bytes : {std::size_t(1), std::size_t(100), std::size_t(64), std::size_t(3) << 20, std::size_t(0),
                            std::size_t(5) << 20, std::size_t(777)})
    pieces.emplace_back(arena.allocate(bytes), bytes);
  std::size_t requested = 0;
  for (const auto& [p, n] : pieces) {
    REQUIRE(p != nullptr);
    CHECK(address(p) % WeightArena::kAlignment == 0);
    for (std::size_t i = 0; i < n; ++i) REQUIRE(p[i] == 0);
    requested += n;
  }
  CHECK(arena.bytes_requested() == requested);
  // 1 + 100 + 64 + 3 MiB fit the first 8 MiB chunk, 5 MiB does not: a second chunk, which
  // the 0- and 777-byte pieces follow into.
  CHECK(arena.chunk_count() == 2);
  CHECK(arena.bytes_mapped() == 2 * 4 * WeightArena::kHugePage);
  CHECK(address(pieces[0].first) % WeightArena::kHugePage == 0);
  CHECK(address(pieces[5].first) % WeightArena::kHugePage == 0);
  CHECK(pieces[6].first > pieces[5].first);
  // Pieces never overlap: write each with its own byte, then read all back.
  for (size_t k = 0; k < pieces.size(); ++k) std::memset(pieces[k].first, int(k + 1), pieces[k].second);
  for (size_t k = 0; k < pieces.size(); ++k)
    CHECK(std::all_of(pieces[k].first, pieces[k].first + pieces[k].second, [&](uint8_t b) { return b == k + 1; }));
  MESSAGE("MADV_HUGEPAGE " << std::string(arena.huge_pages_advised() ? "accepted" : "refused"));
}

TEST_CASE("weight arena: a piece larger than a chunk gets one of its own, and sharing goes on") {
  WeightArena arena(WeightArena::kHugePage);  // 2 MiB chunks
  uint8_t* a = arena.allocate(1000);
  uint8_t* big = arena.allocate((std::size_t(5) << 20) + 3);
  uint8_t* b = arena.allocate(1000);
  CHECK(arena.chunk_count() == 2);
  CHECK(arena.bytes_mapped() == WeightArena::kHugePage + 3 * WeightArena::kHugePage);
  CHECK(address(big) % WeightArena::kHugePage == 0);
  CHECK(b == a + 1024);  // the shared chunk continues after the big piece
  big[(std::size_t(5) << 20) + 2] = 9;
  CHECK(big[(std::size_t(5) << 20) + 2] == 9);
}

TEST_CASE("weight arena: concurrent allocations stay disjoint") {
  WeightArena arena(WeightArena::kHugePage);
  std::vector<std::vector<uint8_t*>> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) got[size_t(t)].push_back(arena.allocate(size_t(64 + 64 * (i % 7))));
    });
  for (std::thread& t : threads) t.join();
  std::set<uint8_t*> all;
  for (const auto& v : got) all.insert(v.begin(), v.end());
  CHECK(all.size() == 2000);
}

TEST_CASE("weight arena: a written chunk is backed by huge pages where THP is on") {
  WeightArena arena(8 * WeightArena::kHugePage);
  uint8_t* p = arena.allocate(8 * WeightArena::kHugePage);
  std::memset(p, 1, 8 * WeightArena::kHugePage);
  const std::string thp = thp_setting();
  const long huge = anon_huge_kb(p);
  MESSAGE("THP '" << thp << "': AnonHugePages of a written 16 MiB chunk " << huge << " kB");
  // With THP in "always" or "madvise" mode and MADV_HUGEPAGE accepted, the kernel backs
  // at least part of the chunk with huge pages (all of it unless memory is fragmented).
  if (arena.huge_pages_advised() && huge >= 0 &&
      (thp.find("[always]") != std::string::npos || thp.find("[madvise]") != std::string::npos))
    CHECK(huge > 0);
}

}  // namespace offload_weight_arena_suite

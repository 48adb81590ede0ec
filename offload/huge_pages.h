// Anonymous memory for transparent huge pages: the mapping both weight buffers use, a
// NUMA node's (offload/node_memory.h) and a model's own (offload/weight_arena.h).
#pragma once
#include <cstddef>

namespace hearth {

inline constexpr std::size_t kHugePageBytes = std::size_t(2) << 20;

struct HugeMapping {
  void* start = nullptr;  // nullptr when the OS refused the mapping (errno says why)
  bool advised = false;   // whether the kernel accepted MADV_HUGEPAGE
};

// A private anonymous mapping of `bytes` (a multiple of kHugePageBytes), zero until
// written, starting on a 2 MiB boundary (a huge page can only back an aligned 2 MiB
// range: one huge page more is mapped and both ends trimmed) and marked MADV_HUGEPAGE,
// so the kernel can back it with huge pages where its THP setting allows. Released with
// munmap(start, bytes).
HugeMapping map_huge_aligned(std::size_t bytes);

}  // namespace hearth

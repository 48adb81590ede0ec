#include "offload/huge_pages.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstdint>

namespace hearth {

HugeMapping map_huge_aligned(std::size_t bytes) {
  if (bytes > SIZE_MAX - kHugePageBytes) {
    errno = ENOMEM;
    return {};
  }
  void* m = mmap(nullptr, bytes + kHugePageBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return {};
  auto* raw = static_cast<std::uint8_t*>(m);
  auto* start =
      reinterpret_cast<std::uint8_t*>((reinterpret_cast<std::uintptr_t>(raw) + kHugePageBytes - 1) & ~(kHugePageBytes - 1));
  if (start > raw) munmap(raw, std::size_t(start - raw));
  if (const std::size_t tail = std::size_t(raw + bytes + kHugePageBytes - (start + bytes)); tail) munmap(start + bytes, tail);
  HugeMapping out;
  out.start = start;
#ifdef MADV_HUGEPAGE
  out.advised = madvise(start, bytes, MADV_HUGEPAGE) == 0;
#endif
  return out;
}

}  // namespace hearth

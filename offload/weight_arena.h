// Memory for the weights a model builds itself (repacked at load with --repack, built in
// memory by `bench --synthetic`), as opposed to weights read in place from a mapped file.
//
// A decode step streams every weight from DRAM. On 4 KiB pages such a stream needs a TLB
// entry per 4 KiB and the hardware prefetchers stop at every page edge; on transparent
// huge pages (2 MiB) it needs 512x fewer. A throwaway driver (two threads of `linear`
// over one 281 MB Q8_0 matrix, 40 alternations on this Zen 3) read a median 26.8 GB/s
// from MADV_HUGEPAGE memory against 25.8 from ordinary allocations. So weights do not go
// through malloc: a WeightArena maps a few large anonymous chunks, each starting on a
// 2 MiB boundary and marked MADV_HUGEPAGE (the kernel backs them with huge pages where
// its THP setting allows: "always" or "madvise"), and hands out 64-byte-aligned pieces
// of them. Pieces are not rounded up to huge pages (an expert matrix is rarely a whole
// number of them), and a chunk's pages cost memory only once touched. One mapping per
// chunk rather than per matrix also keeps a full model's ~46,000 repacked matrices far
// from the kernel's limit on mappings per process.
#pragma once
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "offload/huge_pages.h"

namespace hearth {

class WeightArena {
 public:
  static constexpr std::size_t kHugePage = kHugePageBytes;
  static constexpr std::size_t kAlignment = 64;
  static constexpr std::size_t kDefaultChunk = std::size_t(256) << 20;

  // Requests share chunks of `chunk_bytes` (rounded up to whole huge pages); a larger
  // request gets a chunk of its own.
  explicit WeightArena(std::size_t chunk_bytes = kDefaultChunk);
  ~WeightArena();
  WeightArena(const WeightArena&) = delete;
  WeightArena& operator=(const WeightArena&) = delete;

  // `bytes` of memory (zero until written), kAlignment-aligned, valid until the arena is
  // destroyed. Safe to call from several threads. std::bad_alloc when the OS refuses the
  // mapping.
  std::uint8_t* allocate(std::size_t bytes);

  // Whether p points into memory this arena handed out (or its chunks' unused rest).
  bool contains(const void* p) const;

  std::size_t bytes_requested() const;
  std::size_t bytes_mapped() const;
  std::size_t chunk_count() const;
  // Whether the kernel accepted MADV_HUGEPAGE for every chunk (false on kernels without
  // transparent huge pages; the memory is ordinary then).
  bool huge_pages_advised() const;

 private:
  struct Chunk {
    std::uint8_t* base;
    std::size_t bytes, used;
  };
  std::uint8_t* map_chunk(std::size_t bytes);

  std::size_t chunk_bytes_;
  mutable std::mutex mu_;
  std::vector<Chunk> chunks_;
  std::size_t requested_ = 0;
  bool all_advised_ = true;
};

}  // namespace hearth

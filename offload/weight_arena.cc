#include "offload/weight_arena.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <new>

namespace hearth {

namespace {

std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

}  // namespace

WeightArena::WeightArena(std::size_t chunk_bytes) : chunk_bytes_(round_up(std::max<std::size_t>(chunk_bytes, 1), kHugePage)) {}

WeightArena::~WeightArena() {
  for (const Chunk& c : chunks_) munmap(c.base, c.bytes);
}

std::uint8_t* WeightArena::map_chunk(std::size_t bytes) {
  const HugeMapping m = map_huge_aligned(bytes);
  if (!m.start) throw std::bad_alloc();
  all_advised_ = all_advised_ && m.advised;
  chunks_.push_back({static_cast<std::uint8_t*>(m.start), bytes, 0});
  return chunks_.back().base;
}

std::uint8_t* WeightArena::allocate(std::size_t bytes) {
  const std::size_t need = round_up(std::max<std::size_t>(bytes, 1), kAlignment);
  const std::lock_guard<std::mutex> lock(mu_);
  requested_ += bytes;
  // The newest shared chunk if the piece fits; else a new chunk (one of its own when the
  // piece is larger than a shared chunk, which then stays the newest shared one).
  for (auto it = chunks_.rbegin(); it != chunks_.rend(); ++it) {
    if (it->bytes != chunk_bytes_) continue;
    if (it->bytes - it->used >= need) {
      std::uint8_t* p = it->base + it->used;
      it->used += need;
      return p;
    }
    break;
  }
  if (need > chunk_bytes_) {
    std::uint8_t* p = map_chunk(round_up(need, kHugePage));
    chunks_.back().used = need;
    return p;
  }
  std::uint8_t* p = map_chunk(chunk_bytes_);
  chunks_.back().used = need;
  return p;
}

bool WeightArena::contains(const void* p) const {
  const auto* b = static_cast<const std::uint8_t*>(p);
  const std::lock_guard<std::mutex> lock(mu_);
  for (const Chunk& c : chunks_)
    if (b >= c.base && b < c.base + c.bytes) return true;
  return false;
}

std::size_t WeightArena::bytes_requested() const {
  const std::lock_guard<std::mutex> lock(mu_);
  return requested_;
}

std::size_t WeightArena::bytes_mapped() const {
  const std::lock_guard<std::mutex> lock(mu_);
  std::size_t n = 0;
  for (const Chunk& c : chunks_) n += c.bytes;
  return n;
}

std::size_t WeightArena::chunk_count() const {
  const std::lock_guard<std::mutex> lock(mu_);
  return chunks_.size();
}

bool WeightArena::huge_pages_advised() const {
  const std::lock_guard<std::mutex> lock(mu_);
  return !chunks_.empty() && all_advised_;
}

}  // namespace hearth

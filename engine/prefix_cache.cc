#include "engine/prefix_cache.h"

#include <algorithm>

namespace hearth {

int64_t common_prefix(std::span<const int32_t> a, std::span<const int32_t> b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return int64_t(i);
}

PrefixCache::PrefixCache(KvCache& cache, int64_t byte_limit) : cache_(cache), limit_(byte_limit) {}

PrefixCache::~PrefixCache() { clear(); }

int64_t PrefixCache::entry_bytes(const Entry& e) const {
  return int64_t(cache_.page_table(e.seq).size()) * cache_.page_bytes();
}

int64_t PrefixCache::bytes() const {
  int64_t total = 0;
  for (const Entry& e : entries_) total += entry_bytes(e);
  return total;
}

void PrefixCache::retain(SeqId seq, std::span<const int32_t> tokens) {
  if (limit_ <= 0 || tokens.empty()) return;
  for (auto it = entries_.begin(); it != entries_.end();) {
    const int64_t common = common_prefix(it->tokens, tokens);
    if (common == int64_t(tokens.size())) {  // already held (maybe with more after it)
      entries_.splice(entries_.begin(), entries_, it);
      return;
    }
    if (common == int64_t(it->tokens.size())) {  // subsumed by the new entry
      cache_.remove_sequence(it->seq);
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
  entries_.push_front(Entry{cache_.fork(seq, int64_t(tokens.size())), {tokens.begin(), tokens.end()}});
  trim();
}

PrefixCache::Match PrefixCache::longest_prefix(std::span<const int32_t> prompt) const {
  Match best;
  for (const Entry& e : entries_) {
    const int64_t common = common_prefix(e.tokens, prompt);
    if (common > best.common) best = Match{e.seq, common};
  }
  return best;
}

void PrefixCache::touch(SeqId seq) {
  for (auto it = entries_.begin(); it != entries_.end(); ++it)
    if (it->seq == seq) {
      entries_.splice(entries_.begin(), entries_, it);
      return;
    }
}

bool PrefixCache::evict_oldest() {
  if (entries_.empty()) return false;
  cache_.remove_sequence(entries_.back().seq);
  entries_.pop_back();
  return true;
}

void PrefixCache::clear() {
  while (evict_oldest()) {
  }
}

void PrefixCache::trim() {
  while (!entries_.empty() && bytes() > limit_) evict_oldest();
}

}  // namespace hearth

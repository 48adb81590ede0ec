// Prompts of finished requests kept in the paged KV cache, so that a later request that
// starts with the same tokens forks them instead of prefilling them again (the batch
// scheduler's prefix cache). Each entry is a fork that never grows; the least recently
// used entry goes first when the byte limit or the scheduler needs room.
#pragma once
#include <cstdint>
#include <list>
#include <span>
#include <vector>

#include "engine/kv_cache.h"

namespace hearth {

// Length of the common prefix of a and b.
int64_t common_prefix(std::span<const int32_t> a, std::span<const int32_t> b);

class PrefixCache {
 public:
  // byte_limit: pages held by entries, each entry counting all the pages it references
  // (shared ones included, so the count errs high); 0 keeps nothing.
  PrefixCache(KvCache& cache, int64_t byte_limit);
  ~PrefixCache();  // gives the entries' pages back
  PrefixCache(const PrefixCache&) = delete;
  PrefixCache& operator=(const PrefixCache&) = delete;

  // Keeps positions [0, tokens.size()) of `seq` (which holds those tokens' keys). An entry
  // whose tokens are a prefix of these is dropped (the new one serves everything it
  // did); when an entry already starts with them, it is only marked used. Then the
  // oldest entries go until the limit holds (the new one too, if it alone is over).
  void retain(SeqId seq, std::span<const int32_t> tokens);

  struct Match {
    SeqId seq = -1;      // the entry's sequence (-1: no entry shares a token)
    int64_t common = 0;  // tokens shared with the prompt
  };
  // The entry sharing the longest prefix with `prompt` (ties: the most recently used).
  Match longest_prefix(std::span<const int32_t> prompt) const;
  void touch(SeqId seq);  // marks the entry holding `seq` as just used

  bool evict_oldest();  // false when empty
  void clear();
  int64_t entries() const { return int64_t(entries_.size()); }
  int64_t bytes() const;

 private:
  struct Entry {
    SeqId seq;
    std::vector<int32_t> tokens;
  };
  int64_t entry_bytes(const Entry& e) const;
  void trim();

  KvCache& cache_;
  int64_t limit_;
  std::list<Entry> entries_;  // most recently used first
};

}  // namespace hearth

// The attention cache in MLA's compressed form, paged.
//
// Per token and layer it holds only what absorbed MLA needs: the normalized latent
// (kv_lora_rank floats, or FP8 codes with a scale per 128: KvCacheType), the rotated
// shared rope key (qk_rope_head_dim floats) and,
// on V3.2, the indexer's FP8 key (index_head_dim bytes) with its power-of-two scale,
// kept apart from the rest and dimension-major within a page (kv_cache.cc).
// Per-head keys and values are never stored.
//
// Storage is split into fixed-size pages of `page_tokens` positions (all layers of
// those positions in one page); each sequence owns a page table. This lets sequences of
// different lengths share one pool, and lets forks share prefix pages.
//
// Sharing: fork() makes a sequence that references its parent's pages for a prefix
// (pages count their references). Positions are only ever written at or past a
// sequence's length, right after extend(); extend() first copies the page it will write
// into when another sequence still references it (copy-on-write), so a fork never
// changes what its parent or a sibling reads. A page returns to the pool when its last
// reference goes (remove_sequence, truncate).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/config.h"

namespace hearth {

using SeqId = int32_t;

// How a cache entry keeps the latent.
//   kF32: as computed (the golden reference's logits are computed so).
//   kFp8: FP8 e4m3 codes with a power-of-two scale per 128 values, the form DeepSeek
//     deploys V3.2 with (its reference code rounds the latent so before caching it, "to
//     simulate" that cache). An entry shrinks from 2304 to 784 bytes on V3.2, and at long
//     context attention gathers a third of the bytes; the logits move by the rounding.
// The rope key stays float in both: the FP8 caches DeepSeek describes keep it unrounded.
enum class KvCacheType { kF32, kFp8 };
const char* kv_cache_type_name(KvCacheType t);  // "f32", "fp8"
std::optional<KvCacheType> parse_kv_cache_type(std::string_view name);
// The type a KvCache gets when its constructor is not told one: kF32 until the CLI's
// --kv-cache sets it (process-wide, as --cpu-gemm's choice is).
KvCacheType default_kv_cache_type();
void set_default_kv_cache_type(KvCacheType t);

class KvCache {
 public:
  KvCache(const ModelConfig& c, int64_t page_tokens = 64, KvCacheType type = default_kv_cache_type());
  KvCacheType type() const { return type_; }

  SeqId add_sequence();
  // A new sequence of `length` positions (0 <= length <= the parent's) that shares the
  // parent's pages covering [0, length) instead of copying them.
  SeqId fork(SeqId parent, int64_t length);
  void remove_sequence(SeqId s);
  bool is_live(SeqId s) const;
  int64_t length(SeqId s) const;
  // Makes room for positions [length, new_length) and sets the length (the forward pass
  // fills those positions in the same step). Copies the page holding position `length`
  // first when another sequence shares it. Throws std::length_error (and changes
  // nothing) when that would take the pool past the page limit.
  void extend(SeqId s, int64_t new_length);
  // Forgets positions [new_length, length) (new_length <= length); pages wholly past the
  // new end go back to the pool. The next step continues at new_length.
  void truncate(SeqId s, int64_t new_length);

  // A position's latent is written and read by copy, in the cache's type:
  // write_latent stores kv_lora_rank floats (kFp8: rounds them to FP8 codes and scales),
  // read_latent gives back what is stored (kFp8: decoded, each value exact).
  void write_latent(int64_t layer, SeqId s, int64_t pos, const float* latent);
  void read_latent(int64_t layer, SeqId s, int64_t pos, float* out) const;
  // kF32 only (throws std::logic_error on kFp8): a position's latent in place and, right
  // after it, its rope key: rope_key(l, s, p) == latent(l, s, p) + kv_lora_rank, so
  // absorbed attention scores both with one pass over the entry.
  float* latent(int64_t layer, SeqId s, int64_t pos);
  // The rope key (qk_rope_head_dim floats), in either type.
  float* rope_key(int64_t layer, SeqId s, int64_t pos);
  float* index_scale(int64_t layer, SeqId s, int64_t pos);
  const float* latent(int64_t layer, SeqId s, int64_t pos) const { return const_cast<KvCache*>(this)->latent(layer, s, pos); }
  const float* rope_key(int64_t layer, SeqId s, int64_t pos) const { return const_cast<KvCache*>(this)->rope_key(layer, s, pos); }
  const float* index_scale(int64_t layer, SeqId s, int64_t pos) const { return const_cast<KvCache*>(this)->index_scale(layer, s, pos); }
  // The indexer's FP8 key of a position (index_head_dim codes) and its scale. A page keeps
  // one layer's codes dimension by dimension (see index_keys), so a key is written and read
  // by copy, not through a pointer.
  void write_index_key(int64_t layer, SeqId s, int64_t pos, const uint8_t* codes, float scale);
  void read_index_key(int64_t layer, SeqId s, int64_t pos, uint8_t* codes) const;
  // One page's index keys for one layer, as the scoring kernel reads them: code d of the
  // page's slot t (position page_index * page_tokens + t) at codes[d * page_tokens + t],
  // its scale at scales[t].
  struct IndexKeys {
    const uint8_t* codes;
    const float* scales;
  };
  IndexKeys index_keys(int64_t layer, SeqId s, int64_t page_index) const;

  // A position's entry as stored (kFp8: its latent's codes and scales, then the rope key),
  // and an entry decoded into kv_lora_rank + qk_rope_head_dim floats (latent, then rope
  // key), what absorbed attention scores against. kFp8's values per scale: kFp8Block.
  static constexpr int64_t kFp8Block = 128;
  const uint8_t* entry(int64_t layer, SeqId s, int64_t pos) const;
  void decode_entry(const uint8_t* entry, float* out) const;

  // All layers of one position (rounded up: a page's bytes over its positions).
  int64_t bytes_per_token() const { return (page_bytes_ + page_tokens_ - 1) / page_tokens_; }
  int64_t page_tokens() const { return page_tokens_; }
  int64_t bytes_per_entry() const { return entry_bytes_; }  // one position of one layer, index key apart
  int64_t page_bytes() const { return page_bytes_; }
  int64_t pages_in_use() const;  // distinct pages referenced by some sequence

  // At most `pages` pages in use at once (0: no limit, the default).
  void set_page_limit(int64_t pages);
  int64_t page_limit() const { return page_limit_; }
  // Pages extend(s, new_length) would take from the pool: new pages plus the
  // copy-on-write copy, if any.
  int64_t pages_needed(SeqId s, int64_t new_length) const;

  // Sharing, for accounting and tests.
  const std::vector<int32_t>& page_table(SeqId s) const;  // page ids, position / page_tokens -> page
  int32_t page_refs(int32_t page) const;                   // sequences referencing the page
  int64_t pages_shared() const;                            // pages referenced more than once
  int64_t pages_copied() const { return pages_copied_; }   // copy-on-write copies so far

 private:
  struct Sequence {
    bool live = false;
    int64_t length = 0;
    std::vector<int32_t> pages;
  };
  std::pair<uint8_t*, int64_t> slot(int64_t layer, SeqId s, int64_t pos) const;
  // An entry's latent as floats (kFp8: decoded block by block).
  void decode_latent(const uint8_t* entry, float* out) const;
  // A page's block of index key codes for one layer ([dim][page_tokens]).
  uint8_t* key_codes(uint8_t* page, int64_t layer) const;
  Sequence& live(SeqId s);
  const Sequence& live(SeqId s) const;
  int32_t allocate_page();
  void release_page(int32_t page);

  KvCacheType type_;
  int64_t layers_, page_tokens_, latent_dim_, rope_dim_;
  // A page's layout (kv_cache.cc): entries of entry_bytes_ (latent at latent_off_, kFp8's
  // scales at lscale_off_, rope key at rope_off_), then the index key codes from ikey_base_
  // (index_dim_ bytes per slot), then the index key scales from iscale_base_.
  int64_t latent_off_, lscale_off_, rope_off_, entry_bytes_, index_dim_, ikey_base_, iscale_base_, page_bytes_;
  std::vector<std::unique_ptr<uint8_t[]>> pages_;
  std::vector<int32_t> refs_;  // per page; 0: in free_pages_
  std::vector<int32_t> free_pages_;
  std::vector<Sequence> seqs_;
  int64_t page_limit_ = 0, pages_copied_ = 0;
};

}  // namespace hearth

// The attention cache in MLA's compressed form, paged.
//
// Per token and layer it holds only what absorbed MLA needs: the normalized latent
// (kv_lora_rank floats), the rotated shared rope key (qk_rope_head_dim floats) and,
// on V3.2, the indexer's FP8 key (index_head_dim bytes) with its power-of-two scale.
// Per-head keys and values are never stored.
//
// Storage is split into fixed-size pages of `page_tokens` positions (all layers of
// those positions in one page); each sequence owns a page table. This lets sequences of
// different lengths share one pool, and later lets forks share prefix pages.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/config.h"

namespace hearth {

using SeqId = int32_t;

class KvCache {
 public:
  KvCache(const ModelConfig& c, int64_t page_tokens = 64);

  SeqId add_sequence();
  void remove_sequence(SeqId s);
  int64_t length(SeqId s) const;
  // Makes room for positions [length, new_length) and sets the length (the forward pass
  // fills those positions in the same step).
  void extend(SeqId s, int64_t new_length);
  // Forgets positions [new_length, length) (new_length <= length); pages wholly past the
  // new end go back to the pool. The next step continues at new_length.
  void truncate(SeqId s, int64_t new_length);

  float* latent(int64_t layer, SeqId s, int64_t pos);
  float* rope_key(int64_t layer, SeqId s, int64_t pos);
  uint8_t* index_key(int64_t layer, SeqId s, int64_t pos);
  float* index_scale(int64_t layer, SeqId s, int64_t pos);
  const float* latent(int64_t layer, SeqId s, int64_t pos) const { return const_cast<KvCache*>(this)->latent(layer, s, pos); }
  const float* rope_key(int64_t layer, SeqId s, int64_t pos) const { return const_cast<KvCache*>(this)->rope_key(layer, s, pos); }
  const uint8_t* index_key(int64_t layer, SeqId s, int64_t pos) const { return const_cast<KvCache*>(this)->index_key(layer, s, pos); }
  const float* index_scale(int64_t layer, SeqId s, int64_t pos) const { return const_cast<KvCache*>(this)->index_scale(layer, s, pos); }

  int64_t bytes_per_token() const { return token_bytes_ * layers_; }
  int64_t pages_in_use() const;

 private:
  struct Sequence {
    bool live = false;
    int64_t length = 0;
    std::vector<int32_t> pages;
  };
  uint8_t* slot(int64_t layer, SeqId s, int64_t pos, int64_t offset);
  int32_t allocate_page();

  int64_t layers_, page_tokens_;
  int64_t latent_off_, rope_off_, ikey_off_, iscale_off_, token_bytes_;
  std::vector<std::unique_ptr<uint8_t[]>> pages_;
  std::vector<int32_t> free_pages_;
  std::vector<Sequence> seqs_;
};

}  // namespace hearth

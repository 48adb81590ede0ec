#include "engine/kv_cache.h"

#include <stdexcept>
#include <string>

namespace hearth {

KvCache::KvCache(const ModelConfig& c, int64_t page_tokens)
    : layers_(c.num_hidden_layers), page_tokens_(page_tokens) {
  if (page_tokens_ <= 0) throw std::invalid_argument("KvCache: page_tokens must be positive");
  // One token's slot for one layer: floats first (aligned), then the FP8 index key.
  latent_off_ = 0;
  rope_off_ = latent_off_ + c.kv_lora_rank * 4;
  iscale_off_ = rope_off_ + c.qk_rope_head_dim * 4;
  ikey_off_ = iscale_off_ + (c.has_indexer() ? 4 : 0);
  token_bytes_ = ikey_off_ + (c.has_indexer() ? c.index_head_dim : 0);
  token_bytes_ = (token_bytes_ + 15) / 16 * 16;
}

SeqId KvCache::add_sequence() {
  for (size_t i = 0; i < seqs_.size(); ++i)
    if (!seqs_[i].live) {
      seqs_[i] = Sequence{true, 0, {}};
      return SeqId(i);
    }
  seqs_.push_back(Sequence{true, 0, {}});
  return SeqId(seqs_.size() - 1);
}

void KvCache::remove_sequence(SeqId s) {
  Sequence& q = seqs_.at(static_cast<size_t>(s));
  for (int32_t p : q.pages) free_pages_.push_back(p);
  q = Sequence{};
}

int64_t KvCache::length(SeqId s) const { return seqs_.at(static_cast<size_t>(s)).length; }

int32_t KvCache::allocate_page() {
  if (!free_pages_.empty()) {
    const int32_t p = free_pages_.back();
    free_pages_.pop_back();
    return p;
  }
  const int64_t bytes = page_tokens_ * layers_ * token_bytes_;
  pages_.emplace_back(new uint8_t[size_t(bytes)]());
  return int32_t(pages_.size() - 1);
}

void KvCache::extend(SeqId s, int64_t new_length) {
  Sequence& q = seqs_.at(static_cast<size_t>(s));
  if (!q.live) throw std::logic_error("KvCache: sequence " + std::to_string(s) + " is not live");
  const int64_t need = (new_length + page_tokens_ - 1) / page_tokens_;
  while (int64_t(q.pages.size()) < need) q.pages.push_back(allocate_page());
  q.length = new_length;
}

void KvCache::truncate(SeqId s, int64_t new_length) {
  Sequence& q = seqs_.at(static_cast<size_t>(s));
  if (!q.live) throw std::logic_error("KvCache: sequence " + std::to_string(s) + " is not live");
  if (new_length < 0 || new_length > q.length)
    throw std::out_of_range("KvCache: cannot truncate sequence " + std::to_string(s) + " of length " +
                            std::to_string(q.length) + " to " + std::to_string(new_length));
  const size_t need = size_t((new_length + page_tokens_ - 1) / page_tokens_);
  while (q.pages.size() > need) {
    free_pages_.push_back(q.pages.back());
    q.pages.pop_back();
  }
  q.length = new_length;
}

int64_t KvCache::pages_in_use() const { return int64_t(pages_.size() - free_pages_.size()); }

uint8_t* KvCache::slot(int64_t layer, SeqId s, int64_t pos, int64_t offset) {
  const Sequence& q = seqs_[size_t(s)];
  const int32_t page = q.pages[size_t(pos / page_tokens_)];
  // Within a page: [layer][token] so one layer's positions are contiguous.
  const int64_t index = layer * page_tokens_ + pos % page_tokens_;
  return pages_[size_t(page)].get() + index * token_bytes_ + offset;
}

float* KvCache::latent(int64_t layer, SeqId s, int64_t pos) { return reinterpret_cast<float*>(slot(layer, s, pos, latent_off_)); }
float* KvCache::rope_key(int64_t layer, SeqId s, int64_t pos) { return reinterpret_cast<float*>(slot(layer, s, pos, rope_off_)); }
uint8_t* KvCache::index_key(int64_t layer, SeqId s, int64_t pos) { return slot(layer, s, pos, ikey_off_); }
float* KvCache::index_scale(int64_t layer, SeqId s, int64_t pos) { return reinterpret_cast<float*>(slot(layer, s, pos, iscale_off_)); }

}  // namespace hearth

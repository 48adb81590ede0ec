#include "engine/kv_cache.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "engine/ops.h"
#include "engine/vec_ops.h"

namespace hearth {

namespace {
KvCacheType g_default_type = KvCacheType::kF32;
}  // namespace

const char* kv_cache_type_name(KvCacheType t) { return t == KvCacheType::kFp8 ? "fp8" : "f32"; }

std::optional<KvCacheType> parse_kv_cache_type(std::string_view name) {
  if (name == "f32") return KvCacheType::kF32;
  if (name == "fp8") return KvCacheType::kFp8;
  return std::nullopt;
}

KvCacheType default_kv_cache_type() { return g_default_type; }
void set_default_kv_cache_type(KvCacheType t) { g_default_type = t; }

KvCache::KvCache(const ModelConfig& c, int64_t page_tokens, KvCacheType type)
    : type_(type),
      layers_(c.num_hidden_layers),
      page_tokens_(page_tokens),
      latent_dim_(c.kv_lora_rank),
      rope_dim_(c.qk_rope_head_dim) {
  if (page_tokens_ <= 0) throw std::invalid_argument("KvCache: page_tokens must be positive");
  // A page holds page_tokens positions of every layer, in three regions:
  //   entries [layer][slot]: the latent (floats, or kFp8's codes and then their
  //     scales), then the rope key (floats), what attention gathers for each picked
  //     position;
  //   index key codes [layer][dim][slot]: the indexer scores every cached position at
  //     every step, and its kernel takes sixteen positions' code d as sixteen bytes in a
  //     row (one load, no transpose), one layer's codes in one block of a page;
  //   index key scales [layer][slot].
  const int64_t slots = page_tokens_ * layers_;
  latent_off_ = 0;
  if (type_ == KvCacheType::kFp8) {
    lscale_off_ = (latent_off_ + c.kv_lora_rank + 15) / 16 * 16;
    rope_off_ = lscale_off_ + (c.kv_lora_rank + kFp8Block - 1) / kFp8Block * 4;
  } else {
    lscale_off_ = latent_off_ + c.kv_lora_rank * 4;
    rope_off_ = lscale_off_;
  }
  entry_bytes_ = (rope_off_ + c.qk_rope_head_dim * 4 + 15) / 16 * 16;
  index_dim_ = c.has_indexer() ? c.index_head_dim : 0;
  ikey_base_ = slots * entry_bytes_;
  iscale_base_ = (ikey_base_ + slots * index_dim_ + 15) / 16 * 16;
  page_bytes_ = (iscale_base_ + (c.has_indexer() ? slots * 4 : 0) + 63) / 64 * 64;
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

KvCache::Sequence& KvCache::live(SeqId s) {
  if (s < 0 || size_t(s) >= seqs_.size() || !seqs_[size_t(s)].live)
    throw std::logic_error("KvCache: sequence " + std::to_string(s) + " is not live");
  return seqs_[size_t(s)];
}

const KvCache::Sequence& KvCache::live(SeqId s) const { return const_cast<KvCache*>(this)->live(s); }

bool KvCache::is_live(SeqId s) const { return s >= 0 && size_t(s) < seqs_.size() && seqs_[size_t(s)].live; }

SeqId KvCache::fork(SeqId parent, int64_t length) {
  const Sequence& p = live(parent);
  if (length < 0 || length > p.length)
    throw std::out_of_range("KvCache: cannot fork " + std::to_string(length) + " positions of sequence " +
                            std::to_string(parent) + " of length " + std::to_string(p.length));
  const size_t shared = size_t((length + page_tokens_ - 1) / page_tokens_);
  std::vector<int32_t> pages(p.pages.begin(), p.pages.begin() + ptrdiff_t(shared));
  for (int32_t page : pages) ++refs_[size_t(page)];
  const SeqId child = add_sequence();  // may reallocate seqs_: `p` is not used past here
  seqs_[size_t(child)].length = length;
  seqs_[size_t(child)].pages = std::move(pages);
  return child;
}

void KvCache::remove_sequence(SeqId s) {
  Sequence& q = seqs_.at(static_cast<size_t>(s));
  for (int32_t p : q.pages) release_page(p);
  q = Sequence{};
}

int64_t KvCache::length(SeqId s) const { return seqs_.at(static_cast<size_t>(s)).length; }

int32_t KvCache::allocate_page() {
  if (!free_pages_.empty()) {
    const int32_t p = free_pages_.back();
    free_pages_.pop_back();
    refs_[size_t(p)] = 1;
    return p;
  }
  pages_.emplace_back(new uint8_t[size_t(page_bytes_)]());
  refs_.push_back(1);
  return int32_t(pages_.size() - 1);
}

void KvCache::release_page(int32_t page) {
  if (--refs_[size_t(page)] == 0) free_pages_.push_back(page);
}

void KvCache::set_page_limit(int64_t pages) {
  if (pages < 0) throw std::invalid_argument("KvCache: the page limit must not be negative, got " + std::to_string(pages));
  page_limit_ = pages;
}

int64_t KvCache::pages_needed(SeqId s, int64_t new_length) const {
  const Sequence& q = live(s);
  if (new_length <= q.length) return 0;
  const int64_t need = (new_length + page_tokens_ - 1) / page_tokens_;
  int64_t n = std::max<int64_t>(0, need - int64_t(q.pages.size()));
  // The page that position `length` falls in is written: a shared one is copied first.
  if (q.length % page_tokens_ != 0 && refs_[size_t(q.pages[size_t(q.length / page_tokens_)])] > 1) ++n;
  return n;
}

void KvCache::extend(SeqId s, int64_t new_length) {
  Sequence& q = live(s);
  if (new_length < q.length)
    throw std::out_of_range("KvCache: cannot extend sequence " + std::to_string(s) + " of length " +
                            std::to_string(q.length) + " to " + std::to_string(new_length) + " (truncate shortens)");
  if (new_length == q.length) return;
  const int64_t n = pages_needed(s, new_length);
  if (page_limit_ > 0 && pages_in_use() + n > page_limit_)
    throw std::length_error("KvCache: extending sequence " + std::to_string(s) + " to " + std::to_string(new_length) +
                            " positions needs " + std::to_string(n) + " more pages, past the limit of " +
                            std::to_string(page_limit_) + " (" + std::to_string(pages_in_use()) + " in use)");
  if (q.length % page_tokens_ != 0) {
    int32_t& page = q.pages[size_t(q.length / page_tokens_)];
    if (refs_[size_t(page)] > 1) {
      const int32_t copy = allocate_page();
      std::copy_n(pages_[size_t(page)].get(), size_t(page_bytes_), pages_[size_t(copy)].get());
      release_page(page);
      page = copy;
      ++pages_copied_;
    }
  }
  const int64_t need = (new_length + page_tokens_ - 1) / page_tokens_;
  while (int64_t(q.pages.size()) < need) q.pages.push_back(allocate_page());
  q.length = new_length;
}

void KvCache::truncate(SeqId s, int64_t new_length) {
  Sequence& q = live(s);
  if (new_length < 0 || new_length > q.length)
    throw std::out_of_range("KvCache: cannot truncate sequence " + std::to_string(s) + " of length " +
                            std::to_string(q.length) + " to " + std::to_string(new_length));
  const size_t need = size_t((new_length + page_tokens_ - 1) / page_tokens_);
  while (q.pages.size() > need) {
    release_page(q.pages.back());
    q.pages.pop_back();
  }
  q.length = new_length;
}

int64_t KvCache::pages_in_use() const { return int64_t(pages_.size() - free_pages_.size()); }

const std::vector<int32_t>& KvCache::page_table(SeqId s) const { return live(s).pages; }

int32_t KvCache::page_refs(int32_t page) const { return refs_.at(size_t(page)); }

int64_t KvCache::pages_shared() const {
  int64_t n = 0;
  for (int32_t r : refs_) n += r > 1;
  return n;
}

// Where (layer, pos) of sequence s lives: its page, and its slot within that page's
// regions ([layer][slot], so one layer's positions are contiguous).
std::pair<uint8_t*, int64_t> KvCache::slot(int64_t layer, SeqId s, int64_t pos) const {
  const Sequence& q = seqs_[size_t(s)];
  const int32_t page = q.pages[size_t(pos / page_tokens_)];
  return {pages_[size_t(page)].get(), layer * page_tokens_ + pos % page_tokens_};
}

void KvCache::write_latent(int64_t layer, SeqId s, int64_t pos, const float* latent) {
  const auto [page, i] = slot(layer, s, pos);
  uint8_t* e = page + i * entry_bytes_;
  if (type_ == KvCacheType::kF32) {
    std::copy_n(latent, latent_dim_, reinterpret_cast<float*>(e + latent_off_));
    return;
  }
  float* scales = reinterpret_cast<float*>(e + lscale_off_);
  for (int64_t b = 0; b * kFp8Block < latent_dim_; ++b) {
    const int64_t c0 = b * kFp8Block;
    scales[b] = quantize_fp8_block_pow2(latent + c0, std::min(kFp8Block, latent_dim_ - c0), e + latent_off_ + c0);
  }
}

void KvCache::decode_latent(const uint8_t* e, float* out) const {
  if (type_ == KvCacheType::kF32) {
    std::copy_n(reinterpret_cast<const float*>(e + latent_off_), latent_dim_, out);
    return;
  }
  const float* scales = reinterpret_cast<const float*>(e + lscale_off_);
  for (int64_t b = 0; b * kFp8Block < latent_dim_; ++b) {
    const int64_t c0 = b * kFp8Block;
    decode_fp8_block(e + latent_off_ + c0, std::min(kFp8Block, latent_dim_ - c0), scales[b], out + c0);
  }
}

void KvCache::read_latent(int64_t layer, SeqId s, int64_t pos, float* out) const { decode_latent(entry(layer, s, pos), out); }

const uint8_t* KvCache::entry(int64_t layer, SeqId s, int64_t pos) const {
  const auto [page, i] = slot(layer, s, pos);
  return page + i * entry_bytes_;
}

void KvCache::decode_entry(const uint8_t* e, float* out) const {
  decode_latent(e, out);
  std::copy_n(reinterpret_cast<const float*>(e + rope_off_), rope_dim_, out + latent_dim_);
}

float* KvCache::latent(int64_t layer, SeqId s, int64_t pos) {
  if (type_ != KvCacheType::kF32) throw std::logic_error("KvCache::latent: an fp8 cache's latent is read by copy (read_latent)");
  const auto [page, i] = slot(layer, s, pos);
  return reinterpret_cast<float*>(page + i * entry_bytes_ + latent_off_);
}

float* KvCache::rope_key(int64_t layer, SeqId s, int64_t pos) {
  const auto [page, i] = slot(layer, s, pos);
  return reinterpret_cast<float*>(page + i * entry_bytes_ + rope_off_);
}

float* KvCache::index_scale(int64_t layer, SeqId s, int64_t pos) {
  const auto [page, i] = slot(layer, s, pos);
  return reinterpret_cast<float*>(page + iscale_base_ + i * 4);
}

uint8_t* KvCache::key_codes(uint8_t* page, int64_t layer) const { return page + ikey_base_ + layer * page_tokens_ * index_dim_; }

void KvCache::write_index_key(int64_t layer, SeqId s, int64_t pos, const uint8_t* codes, float scale) {
  uint8_t* block = key_codes(slot(layer, s, pos).first, layer);
  const int64_t t = pos % page_tokens_;
  for (int64_t d = 0; d < index_dim_; ++d) block[d * page_tokens_ + t] = codes[d];
  *index_scale(layer, s, pos) = scale;
}

void KvCache::read_index_key(int64_t layer, SeqId s, int64_t pos, uint8_t* codes) const {
  const uint8_t* block = key_codes(slot(layer, s, pos).first, layer);
  const int64_t t = pos % page_tokens_;
  for (int64_t d = 0; d < index_dim_; ++d) codes[d] = block[d * page_tokens_ + t];
}

KvCache::IndexKeys KvCache::index_keys(int64_t layer, SeqId s, int64_t page_index) const {
  const auto [page, i] = slot(layer, s, page_index * page_tokens_);
  return {key_codes(page, layer), reinterpret_cast<const float*>(page + iscale_base_ + i * 4)};
}

}  // namespace hearth

// The paged KV cache's sharing: forks reference their parent's pages, a write into a
// shared page copies it first, references come and go with sequences, the page limit.
#include <doctest/doctest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/kv_cache.h"

namespace engine_kv_cache_suite {

using namespace hearth;

namespace {

const ModelConfig& config() {
  static const ModelConfig c = ModelConfig::load(std::string(HEARTH_TEST_DATA) + "/tiny-v32/config.json");
  return c;
}

// A value per (sequence tag, layer, position) written into every field of the slot.
float mark(int tag, int64_t layer, int64_t pos) { return float(tag * 10000 + layer * 100 + pos); }

void write(KvCache& cache, SeqId s, int tag, int64_t from, int64_t to) {
  for (int64_t l = 0; l < config().num_hidden_layers; ++l)
    for (int64_t p = from; p < to; ++p) {
      *cache.latent(l, s, p) = mark(tag, l, p);
      cache.rope_key(l, s, p)[config().qk_rope_head_dim - 1] = mark(tag, l, p) + 0.5f;
      std::vector<uint8_t> key(size_t(config().index_head_dim), uint8_t(l));
      key[0] = uint8_t(tag * 7 + p);
      key.back() = uint8_t(tag * 5 + p);
      cache.write_index_key(l, s, p, key.data(), mark(tag, l, p) + 0.25f);
    }
}

bool holds(const KvCache& cache, SeqId s, int tag, int64_t from, int64_t to) {
  for (int64_t l = 0; l < config().num_hidden_layers; ++l)
    for (int64_t p = from; p < to; ++p) {
      std::vector<uint8_t> key(size_t(config().index_head_dim));
      cache.read_index_key(l, s, p, key.data());
      if (*cache.latent(l, s, p) != mark(tag, l, p) ||
          cache.rope_key(l, s, p)[config().qk_rope_head_dim - 1] != mark(tag, l, p) + 0.5f ||
          *cache.index_scale(l, s, p) != mark(tag, l, p) + 0.25f || key[0] != uint8_t(tag * 7 + p) ||
          key.back() != uint8_t(tag * 5 + p) || key[1] != uint8_t(l))
        return false;
    }
  return true;
}

}  // namespace

TEST_CASE("kv cache: a fork shares its parent's pages and copies a shared page before writing into it") {
  KvCache cache(config(), 4);
  const SeqId parent = cache.add_sequence();
  cache.extend(parent, 10);  // pages of positions 0-3, 4-7, 8-9
  write(cache, parent, 1, 0, 10);
  REQUIRE(cache.pages_in_use() == 3);

  // A fork of 6 positions references the parent's first two pages (the second holds 4-5 for it).
  const SeqId child = cache.fork(parent, 6);
  CHECK(cache.length(child) == 6);
  CHECK(cache.pages_in_use() == 3);
  CHECK(cache.pages_shared() == 2);
  const auto& pt = cache.page_table(parent);
  REQUIRE(cache.page_table(child).size() == 2);
  CHECK(cache.page_table(child)[0] == pt[0]);
  CHECK(cache.page_table(child)[1] == pt[1]);
  CHECK(cache.page_refs(pt[0]) == 2);
  CHECK(cache.page_refs(pt[1]) == 2);
  CHECK(cache.page_refs(pt[2]) == 1);
  CHECK(holds(cache, child, 1, 0, 6));

  // Writing position 6 lands in the shared, partly filled page: exactly that page is copied.
  CHECK(cache.pages_needed(child, 7) == 1);
  cache.extend(child, 7);
  CHECK(cache.pages_copied() == 1);
  CHECK(cache.pages_in_use() == 4);
  CHECK(cache.page_table(child)[0] == pt[0]);  // the full page stays shared
  CHECK(cache.page_table(child)[1] != pt[1]);
  CHECK(cache.page_refs(pt[1]) == 1);
  CHECK(cache.pages_shared() == 1);
  CHECK(holds(cache, child, 1, 0, 6));  // the copy carries what the child had
  write(cache, child, 2, 6, 7);
  CHECK(holds(cache, parent, 1, 0, 10));  // the parent's data is untouched
  CHECK(holds(cache, child, 2, 6, 7));

  // Growing further takes a fresh page (positions 8-11), no more copies.
  CHECK(cache.pages_needed(child, 12) == 1);
  cache.extend(child, 12);
  CHECK(cache.pages_copied() == 1);
  CHECK(cache.pages_in_use() == 5);

  // Removing the parent keeps the pages the child still references.
  cache.remove_sequence(parent);
  CHECK(cache.pages_in_use() == 3);
  CHECK(cache.page_refs(cache.page_table(child)[0]) == 1);
  CHECK(holds(cache, child, 1, 0, 6));
  cache.remove_sequence(child);
  CHECK(cache.pages_in_use() == 0);
}

TEST_CASE("kv cache: forks at a page boundary copy nothing and truncation drops references") {
  KvCache cache(config(), 4);
  const SeqId a = cache.add_sequence();
  cache.extend(a, 8);
  write(cache, a, 1, 0, 8);
  const SeqId b = cache.fork(a, 8), c = cache.fork(a, 4);
  CHECK(cache.pages_shared() == 2);
  CHECK(cache.page_refs(cache.page_table(a)[0]) == 3);
  CHECK(cache.pages_needed(b, 9) == 1);  // a fresh page, nothing to copy
  cache.extend(b, 9);
  cache.extend(c, 5);
  CHECK(cache.pages_copied() == 0);
  CHECK(cache.pages_in_use() == 4);
  write(cache, b, 2, 8, 9);
  write(cache, c, 3, 4, 5);
  CHECK(holds(cache, a, 1, 0, 8));

  // Truncating a into its second page drops nothing; into its first drops the second.
  cache.truncate(a, 6);
  CHECK(cache.pages_in_use() == 4);
  cache.truncate(a, 3);
  CHECK(cache.page_table(a).size() == 1);
  CHECK(cache.page_refs(cache.page_table(b)[1]) == 1);  // now only b's
  // a writes position 3 into the page b and c still share: it gets its own copy.
  cache.extend(a, 4);
  CHECK(cache.pages_copied() == 1);
  write(cache, a, 4, 3, 4);
  CHECK(holds(cache, b, 1, 0, 8));
  CHECK(holds(cache, c, 1, 0, 4));
  cache.remove_sequence(a);
  cache.remove_sequence(b);
  cache.remove_sequence(c);
  CHECK(cache.pages_in_use() == 0);
  CHECK(cache.pages_shared() == 0);
}

TEST_CASE("kv cache: the page limit refuses growth without changing anything") {
  KvCache cache(config(), 4);
  cache.set_page_limit(3);
  const SeqId a = cache.add_sequence();
  cache.extend(a, 6);
  const SeqId b = cache.fork(a, 6);
  CHECK(cache.pages_needed(b, 9) == 2);  // the copy of page 4-7 and a page for 8
  CHECK_THROWS_WITH_AS(cache.extend(b, 9), doctest::Contains("past the limit of 3"), std::length_error);
  CHECK(cache.length(b) == 6);
  CHECK(cache.pages_in_use() == 2);
  CHECK(cache.pages_copied() == 0);
  cache.extend(b, 8);  // the copy alone fits
  CHECK(cache.pages_in_use() == 3);
  cache.set_page_limit(0);  // no limit
  cache.extend(b, 40);
  CHECK(cache.pages_in_use() == 11);  // a: 2; b: the shared page, its copy, 8 new

  CHECK_THROWS_AS(cache.fork(a, 7), std::out_of_range);
  CHECK_THROWS_AS(cache.extend(a, 5), std::out_of_range);
  cache.remove_sequence(a);
  CHECK_THROWS_AS(cache.fork(a, 1), std::logic_error);
  CHECK_THROWS_AS(cache.page_table(a), std::logic_error);
  CHECK_THROWS_AS(cache.set_page_limit(-1), std::invalid_argument);
}

TEST_CASE("kv cache: a page's index keys read back dimension by dimension, as the indexer's kernel takes them") {
  const ModelConfig& c = config();
  const int64_t D = c.index_head_dim, pt = 4;
  KvCache cache(c, pt);
  const SeqId other = cache.add_sequence(), s = cache.add_sequence();
  cache.extend(other, 3);
  cache.extend(s, 7);  // pages of positions 0-3 and 4-6
  auto code = [](int64_t layer, int64_t pos, int64_t d) { return uint8_t(layer * 50 + pos * 7 + d); };
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    for (int64_t p = 0; p < 7; ++p) {
      std::vector<uint8_t> key(static_cast<size_t>(D));
      for (int64_t d = 0; d < D; ++d) key[size_t(d)] = code(l, p, d);
      cache.write_index_key(l, s, p, key.data(), float(l * 10 + p));
    }
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    for (int64_t page = 0; page < 2; ++page) {
      const KvCache::IndexKeys keys = cache.index_keys(l, s, page);
      for (int64_t t = 0; t < pt && page * pt + t < 7; ++t) {
        const int64_t p = page * pt + t;
        CHECK(keys.scales[t] == float(l * 10 + p));
        CHECK(*cache.index_scale(l, s, p) == float(l * 10 + p));
        for (int64_t d = 0; d < D; ++d) CHECK(keys.codes[d * pt + t] == code(l, p, d));
      }
    }
  // A rope key follows its latent: absorbed attention scores both in one pass.
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    for (int64_t p = 0; p < 7; ++p) CHECK(cache.rope_key(l, s, p) == cache.latent(l, s, p) + c.kv_lora_rank);
  // The other sequence's page kept its zeros.
  std::vector<uint8_t> key(static_cast<size_t>(D), 1);
  cache.read_index_key(0, other, 2, key.data());
  CHECK(key == std::vector<uint8_t>(static_cast<size_t>(D), 0));
}

}  // namespace engine_kv_cache_suite

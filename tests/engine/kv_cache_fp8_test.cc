// The FP8 KV cache (KvCacheType::kFp8): the block decode kernel against its scalar
// reference, what a cache entry keeps against quantize_fp8_block_pow2, and the forward
// pass over such a cache (its two attention forms agree; threads change no bit).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "engine/config.h"
#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "engine/ops.h"
#include "engine/vec_ops.h"
#include "quant/numbers.h"
#include "support/golden.h"

namespace engine_kv_cache_fp8_suite {

using namespace hearth;

namespace {

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

ModelConfig config_with_rank(int64_t kv_lora_rank) {
  ModelConfig c = ModelConfig::load(std::string(HEARTH_TEST_DATA) + "/tiny-v32/config.json");
  c.kv_lora_rank = kv_lora_rank;
  return c;
}

// Runs `tokens` through a cache of `type`, as one prefill chunk or one token per step.
std::vector<float> run(const Model& m, ThreadPool& pool, KvCacheType type, const std::vector<int32_t>& tokens,
                       bool one_at_a_time, AttentionPath path) {
  return hearth::testing::run_tokens(m, pool, tokens, one_at_a_time, path, type);
}

}  // namespace

TEST_CASE("kv cache fp8: the AVX2 block decode equals fp8_e4m3_to_f32 times the scale for every code") {
  std::vector<uint8_t> codes;
  for (int i = 0; i < 256; ++i)
    if ((i & 0x7f) != 0x7f) codes.push_back(uint8_t(i));  // the two NaNs aside (vec_ops.h)
  for (float scale : {1.0f, 0x1p-20f, 0x1p-9f, 0x1p5f, 0x1p100f})
    for (int64_t n : {int64_t(codes.size()), int64_t(37), int64_t(16), int64_t(5)}) {
      CAPTURE(scale);
      CAPTURE(n);
      std::vector<float> scalar(static_cast<size_t>(n)), simd(static_cast<size_t>(n));
      decode_fp8_block(codes.data(), n, scale, scalar.data(), KernelIsa::kScalar);
      decode_fp8_block(codes.data(), n, scale, simd.data(), KernelIsa::kAuto);
      int wrong = 0;
      for (int64_t i = 0; i < n; ++i) {
        const float want = fp8_e4m3_to_f32(codes[size_t(i)]) * scale;
        wrong += bits(scalar[size_t(i)]) != bits(want) || bits(simd[size_t(i)]) != bits(want);
      }
      CHECK(wrong == 0);
    }
}

TEST_CASE("kv cache fp8: an entry keeps the latent as FP8 codes with a power-of-two scale per 128 values") {
  // 512 is V3.2's rank; 200 leaves a last block of 72 values.
  for (int64_t rank : {int64_t(512), int64_t(200)}) {
    CAPTURE(rank);
    const ModelConfig c = config_with_rank(rank);
    KvCache f32(c, 16, KvCacheType::kF32), fp8(c, 16, KvCacheType::kFp8);
    CHECK(fp8.type() == KvCacheType::kFp8);
    const int64_t blocks = (rank + 127) / 128;
    // Codes (16-aligned), one float scale per block, the rope key in floats; 16-aligned.
    CHECK(fp8.bytes_per_entry() == ((rank + 15) / 16 * 16 + blocks * 4 + c.qk_rope_head_dim * 4 + 15) / 16 * 16);
    CHECK(fp8.bytes_per_entry() < f32.bytes_per_entry() / 2);
    CHECK(fp8.bytes_per_token() < f32.bytes_per_token());

    std::mt19937 rng(7);
    std::normal_distribution<float> g(0.0f, 1.0f);
    const SeqId s = fp8.add_sequence();
    fp8.extend(s, 20);
    std::vector<float> lat(static_cast<size_t>(rank)), rope(static_cast<size_t>(c.qk_rope_head_dim));
    for (int64_t pos : {0, 7, 19}) {
      CAPTURE(pos);
      const int64_t layer = pos % c.num_hidden_layers;
      for (size_t i = 0; i < lat.size(); ++i) lat[i] = g(rng) * (i < 128 ? 0.01f : 30.0f);  // blocks of other scales
      for (float& v : rope) v = g(rng);
      fp8.write_latent(layer, s, pos, lat.data());
      std::memcpy(fp8.rope_key(layer, s, pos), rope.data(), rope.size() * 4);
      // The reference: each block rounded by quantize_fp8_block_pow2, decoded by value.
      std::vector<float> want(static_cast<size_t>(rank)), unit(static_cast<size_t>(rank));
      for (int64_t c0 = 0; c0 < rank; c0 += 128) {
        const int64_t n = std::min<int64_t>(128, rank - c0);
        std::vector<uint8_t> q(static_cast<size_t>(n));
        const float scale = quantize_fp8_block_pow2(lat.data() + c0, n, q.data());
        for (int64_t i = 0; i < n; ++i) {
          want[size_t(c0 + i)] = fp8_e4m3_to_f32(q[size_t(i)]) * scale;
          unit[size_t(c0 + i)] = scale;
        }
      }
      std::vector<float> got(static_cast<size_t>(rank)), entry(static_cast<size_t>(rank + c.qk_rope_head_dim));
      fp8.read_latent(layer, s, pos, got.data());
      fp8.decode_entry(fp8.entry(layer, s, pos), entry.data());
      int wrong = 0;
      double worst = 0.0;
      for (int64_t i = 0; i < rank; ++i) {
        wrong += bits(got[size_t(i)]) != bits(want[size_t(i)]) || bits(entry[size_t(i)]) != bits(want[size_t(i)]);
        // Within half a step of e4m3's 3 mantissa bits, or of its subnormals' 2^-9.
        const double err = std::fabs(double(got[size_t(i)]) - lat[size_t(i)]);
        worst = std::max(worst, err / std::max(std::fabs(double(lat[size_t(i)])), 0x1p-6 * unit[size_t(i)]));
      }
      CHECK(wrong == 0);
      CHECK(worst <= 1.0 / 16 + 1e-6);
      CHECK(std::memcmp(entry.data() + rank, rope.data(), rope.size() * 4) == 0);
    }
    CHECK_THROWS_AS(fp8.latent(0, s, 0), std::logic_error);
  }
}

// Absorbed decode (attend_fp8_online) against expanded prefill (the latents decoded by
// read_latent, then kv_b and a two-pass softmax): the same rounded latents, other
// arithmetic. Max |dlogit| over every position, and positions whose argmax differs.
std::pair<double, int> forms_gap(const Model& m, ThreadPool& pool, const std::vector<int32_t>& tokens) {
  const int64_t V = m.config().vocab_size;
  const std::vector<float> absorbed = run(m, pool, KvCacheType::kFp8, tokens, true, AttentionPath::kDecode);
  const std::vector<float> expanded = run(m, pool, KvCacheType::kFp8, tokens, false, AttentionPath::kPrefill);
  double worst = 0.0;
  int argmax_mismatch = 0;
  for (size_t t = 0; t < tokens.size(); ++t) {
    int64_t ia = 0, ib = 0;
    for (int64_t v = 0; v < V; ++v) {
      const size_t i = t * size_t(V) + size_t(v);
      worst = std::max(worst, std::fabs(double(absorbed[i]) - expanded[i]));
      if (absorbed[i] > absorbed[t * size_t(V) + size_t(ia)]) ia = v;
      if (expanded[i] > expanded[t * size_t(V) + size_t(ib)]) ib = v;
    }
    argmax_mismatch += ia != ib;
  }
  return {worst, argmax_mismatch};
}

TEST_CASE("kv cache fp8: the forward pass's absorbed and expanded forms agree, and threads change no bit") {
  const Model& m = hearth::testing::golden_model();
  const auto& g = hearth::testing::golden_cases()[3];  // 64 tokens
  ThreadPool one(1), two(2);
  SUBCASE("index_topk 8: sparse selection, one chunk of entries") {
    const auto [worst, mismatch] = forms_gap(m, two, g.tokens);
    CHECK(worst <= 1e-3);
    CHECK(mismatch == 0);
    MESSAGE("fp8 cache, topk 8: absorbed vs expanded max|dlogit|=" << worst);
  }
  SUBCASE("every position attended: up to 64 entries, two chunks, the running maximum rescales") {
    ModelConfig dense_cfg = m.config();
    dense_cfg.index_topk = 1 << 20;
    const Model dense(dense_cfg, WeightStore::open(hearth::testing::kGoldenDir));
    const auto [worst, mismatch] = forms_gap(dense, two, g.tokens);
    CHECK(worst <= 1e-3);
    CHECK(mismatch == 0);
    MESSAGE("fp8 cache, every position: absorbed vs expanded max|dlogit|=" << worst);
  }
  const std::vector<float> absorbed = run(m, two, KvCacheType::kFp8, g.tokens, true, AttentionPath::kDecode);
  // The rounding shows: the f32 cache's logits (the golden ones) differ.
  const std::vector<float> f32 = run(m, two, KvCacheType::kF32, g.tokens, true, AttentionPath::kDecode);
  double moved = 0.0;
  for (size_t i = 0; i < f32.size(); ++i) moved = std::max(moved, std::fabs(double(f32[i]) - absorbed[i]));
  CHECK(moved > 1e-2);
  // One thread (one group of four heads) gives the same bits as two (two groups of two).
  CHECK(run(m, one, KvCacheType::kFp8, g.tokens, true, AttentionPath::kDecode) == absorbed);
  CHECK(run(m, one, KvCacheType::kFp8, g.tokens, false, AttentionPath::kPrefill) ==
        run(m, two, KvCacheType::kFp8, g.tokens, false, AttentionPath::kPrefill));
}

TEST_CASE("kv cache fp8: type names parse both ways and the default is f32") {
  CHECK(default_kv_cache_type() == KvCacheType::kF32);
  for (KvCacheType t : {KvCacheType::kF32, KvCacheType::kFp8}) CHECK(parse_kv_cache_type(kv_cache_type_name(t)) == t);
  CHECK_FALSE(parse_kv_cache_type("bf16").has_value());
  CHECK_FALSE(parse_kv_cache_type("FP8").has_value());
}

}  // namespace engine_kv_cache_fp8_suite

// The forward pass against logits from DeepSeek's reference implementation
// (tests/data/tiny-v32: a small random V3.2 checkpoint, FP8 block-scaled, index_topk 8
// so the longer sequences exercise the sparse-attention selection).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/forward.h"
#include "engine/layers.h"
#include "engine/scratch.h"
#include "quant/weight_matrix.h"
#include "support/cpu_gemm_scope.h"
#include "support/golden.h"

namespace engine_golden_suite {

using namespace hearth;
using hearth::testing::golden_cases;
using hearth::testing::GoldenCase;
using hearth::testing::kGoldenDir;

namespace {

const Model& tiny_model() { return hearth::testing::golden_model(); }

// Runs `tokens` as one prefill chunk, or one token per step (decode), on an f32 cache.
std::vector<float> run(const Model& m, ThreadPool& pool, const std::vector<int32_t>& tokens, bool one_at_a_time,
                       AttentionPath path) {
  return hearth::testing::run_tokens(m, pool, tokens, one_at_a_time, path);
}

}  // namespace

TEST_CASE("golden tiny-v32: prefill and decode paths match the reference logits") {
  const Model& m = tiny_model();
  const auto& cases = golden_cases();
  REQUIRE(cases.size() == 4);
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    for (const GoldenCase& g : cases) {
      INFO("threads=" << threads << " tokens=" << g.tokens.size());
      check_golden_logits(run(m, pool, g.tokens, false, AttentionPath::kAuto), g, m.config().vocab_size);
      check_golden_logits(run(m, pool, g.tokens, true, AttentionPath::kAuto), g, m.config().vocab_size);
    }
  }
}

TEST_CASE("golden tiny-v32: prefill through oneDNN's sgemm (--cpu-gemm onednn) matches the reference logits") {
  // The checkpoint is FP8, so every projection of a prefill of kOnednnMinRows tokens or
  // more goes through oneDNN; the decode path's one-token steps stay on the kernels.
  hearth::testing::CpuGemmScope onednn(CpuGemm::kOnednn);
  const Model& m = tiny_model();
  ThreadPool pool(2);
  int through_onednn = 0;
  for (const GoldenCase& g : golden_cases()) {
    INFO("tokens=" << g.tokens.size());
    through_onednn += int64_t(g.tokens.size()) >= kOnednnMinRows;
    check_golden_logits(run(m, pool, g.tokens, false, AttentionPath::kAuto), g, m.config().vocab_size);
  }
  CHECK(through_onednn >= 1);
}

TEST_CASE("golden tiny-v32: forced attention forms agree - absorbed prefill and expanded decode") {
  const Model& m = tiny_model();
  const auto& cases = golden_cases();
  ThreadPool pool(2);
  const GoldenCase& g = cases[3];  // 64 tokens: sparse selection active
  check_golden_logits(run(m, pool, g.tokens, false, AttentionPath::kDecode), g, m.config().vocab_size);
  check_golden_logits(run(m, pool, g.tokens, true, AttentionPath::kPrefill), g, m.config().vocab_size);
}

TEST_CASE("golden tiny-v32: absorbed decode over an f32 cache gives the same bits on 1, 2 and 3 threads") {
  // The absorbed path splits its stages by heads while the picked entries are few, and
  // past that each row's picked entries (scores) and their columns (weighted sums)
  // between the threads: no split may change a bit, whether one sequence decodes alone
  // (64 tokens, sparse picks from token 9 on) or two decode in the same steps. The tiny
  // model's entries are always few, so a bound of 0 forces the entry split.
  const Model& m = tiny_model();
  const auto& cases = golden_cases();
  const int64_t V = m.config().vocab_size;
  auto batch = [&](ThreadPool& pool) {
    Forward fwd(m, pool);
    KvCache cache(m.config(), 16);
    const SeqId sa = cache.add_sequence(), sb = cache.add_sequence();
    std::vector<float> logits;
    std::vector<float> step(2 * size_t(V));
    for (size_t i = 0; i < cases[2].tokens.size(); ++i) {
      fwd.step(cache, {{sa, std::span(cases[3].tokens).subspan(i, 1)}, {sb, std::span(cases[2].tokens).subspan(i, 1)}},
               step.data(), AttentionPath::kDecode);
      logits.insert(logits.end(), step.begin(), step.end());
    }
    return logits;
  };
  ThreadPool one(1);
  const std::vector<float> alone = run(m, one, cases[3].tokens, true, AttentionPath::kDecode);
  check_golden_logits(alone, cases[3], V);
  const std::vector<float> together = batch(one);
  struct BoundScope {  // restores the bound however the test ends
    int64_t previous;
    explicit BoundScope(int64_t b) : previous(set_absorbed_head_split_bytes(b)) {}
    ~BoundScope() { set_absorbed_head_split_bytes(previous); }
  };
  for (const int64_t bound : {int64_t(0), int64_t(8) << 20}) {
    BoundScope scope(bound);
    for (int threads : {1, 2, 3}) {
      CAPTURE(bound);
      CAPTURE(threads);
      ThreadPool pool(threads);
      CHECK(run(m, pool, cases[3].tokens, true, AttentionPath::kDecode) == alone);
      CHECK(batch(pool) == together);
    }
  }
}

TEST_CASE("golden tiny-v32: attention reads only the scratch it wrote (reused buffers poisoned with NaN)") {
  // attention_forward keeps its large temporaries from one layer and step to the next,
  // uninitialized (engine/scratch.h). With every buffer it takes filled with NaN, a float
  // read before it is written turns logits into NaN: prefill, decode, both forced forms and
  // a step that mixes a prefill chunk with a decoding sequence must still match.
  struct Poison {
    Poison() { ScratchFloats::set_poison(true); }
    ~Poison() { ScratchFloats::set_poison(false); }
  } poison;
  const Model& m = tiny_model();
  const auto& cases = golden_cases();
  const int64_t V = m.config().vocab_size;
  ThreadPool pool(2);
  const GoldenCase& g = cases[3];  // 64 tokens: sparse selection active
  check_golden_logits(run(m, pool, g.tokens, false, AttentionPath::kAuto), g, V);
  check_golden_logits(run(m, pool, g.tokens, true, AttentionPath::kAuto), g, V);
  check_golden_logits(run(m, pool, g.tokens, false, AttentionPath::kDecode), g, V);
  check_golden_logits(run(m, pool, g.tokens, true, AttentionPath::kPrefill), g, V);
  // One step: sequence A's second prefill chunk (expanded keys) beside B's decode rows
  // (absorbed), so both paths write parts of the same output buffer.
  const GoldenCase& b = cases[2];
  Forward fwd(m, pool);
  KvCache cache(m.config(), 16);
  const SeqId sa = cache.add_sequence(), sb = cache.add_sequence();
  std::span<const int32_t> ta(g.tokens), tb(b.tokens);
  std::vector<float> la(g.tokens.size() * size_t(V)), lb(b.tokens.size() * size_t(V));
  fwd.step(cache, {{sb, tb.subspan(0, 20)}}, lb.data());
  std::vector<float> both((1 + 64) * size_t(V));
  fwd.step(cache, {{sb, tb.subspan(20, 1), AttentionPath::kDecode}, {sa, ta, AttentionPath::kPrefill}}, both.data());
  std::copy_n(both.begin(), V, lb.begin() + 20 * V);
  std::copy_n(both.begin() + V, 64 * V, la.begin());
  fwd.step(cache, {{sb, tb.subspan(21)}}, lb.data() + 21 * V);
  check_golden_logits(la, g, V);
  check_golden_logits(lb, b, V);
}

TEST_CASE("golden tiny-v32: several sequences of different lengths in one batch") {
  const Model& m = tiny_model();
  const auto& cases = golden_cases();
  const int64_t V = m.config().vocab_size;
  ThreadPool pool(2);
  Forward fwd(m, pool);
  KvCache cache(m.config(), 16);
  // Sequence A is prefilled in two chunks (the second batched with all of B), then both
  // decode together: every step mixes sequences with their own lengths.
  const GoldenCase& a = cases[3];
  const GoldenCase& b = cases[2];
  const SeqId sa = cache.add_sequence(), sb = cache.add_sequence();
  std::vector<float> la(a.tokens.size() * size_t(V)), lb(b.tokens.size() * size_t(V));
  std::span<const int32_t> ta(a.tokens), tb(b.tokens);
  fwd.step(cache, {{sa, ta.subspan(0, 10)}}, la.data());
  std::vector<float> both((30 + 20) * size_t(V));
  fwd.step(cache, {{sa, ta.subspan(10, 30)}, {sb, tb.subspan(0, 20)}}, both.data());
  std::copy_n(both.begin(), 30 * V, la.begin() + 10 * V);
  std::copy_n(both.begin() + 30 * V, 20 * V, lb.begin());
  for (size_t i = 0; i < 4; ++i) {
    std::vector<float> step(2 * size_t(V));
    fwd.step(cache, {{sb, tb.subspan(20 + i, 1)}, {sa, ta.subspan(40 + i, 1)}}, step.data());
    std::copy_n(step.begin(), V, lb.begin() + (20 + i) * V);
    std::copy_n(step.begin() + V, V, la.begin() + (40 + i) * V);
  }
  fwd.step(cache, {{sa, ta.subspan(44)}}, la.data() + 44 * V);
  CHECK(cache.length(sa) == 64);
  CHECK(cache.length(sb) == 24);
  check_golden_logits(la, a, V);
  check_golden_logits(lb, b, V);
}

TEST_CASE("golden tiny-v32: the indexer's sparse selection is what the reference did") {
  // With the selection disabled (every causal key attended), positions past index_topk
  // must drift away from the reference: proof that the sparse path is exercised.
  ModelConfig dense_cfg = tiny_model().config();
  dense_cfg.index_topk = 1 << 20;
  const Model dense(dense_cfg, WeightStore::open(kGoldenDir));
  const auto& cases = golden_cases();
  ThreadPool pool(1);
  const std::vector<float> got = run(dense, pool, cases[3].tokens, false, AttentionPath::kAuto);
  const int64_t V = dense_cfg.vocab_size, topk = tiny_model().config().index_topk;
  double early = 0.0, late = 0.0;
  for (int64_t t = 0; t < 64; ++t)
    for (int64_t v = 0; v < V; ++v) {
      const double d = std::fabs(got[size_t(t * V + v)] - cases[3].logits[size_t(t * V + v)]);
      (t < topk ? early : late) = std::max(t < topk ? early : late, d);
    }
  CHECK(early <= 1e-3);  // up to index_topk keys nothing is dropped
  CHECK(late > 1e-2);
}

TEST_CASE("golden tiny-v32: a prefill row's logits are the same bits in any group of rows, sparse picks included") {
  // index_topk 32 on the 64-token case: rows past position 31 pick differing subsets, which
  // the prefill path takes in groups over their union (plan_prefill_group). Whether a row
  // goes in a group of 16, of 5, or alone, its logits must be the same bits. (The golden
  // logits do not apply at this index_topk.)
  ModelConfig cfg = tiny_model().config();
  cfg.index_topk = 32;
  const Model m(cfg, WeightStore::open(kGoldenDir));
  const std::vector<int32_t>& tokens = golden_cases()[3].tokens;
  REQUIRE(tokens.size() == 64);
  const int64_t V = cfg.vocab_size;
  ThreadPool pool(2);
  const std::vector<float> whole = run(m, pool, tokens, false, AttentionPath::kPrefill);
  const std::vector<float> alone = run(m, pool, tokens, true, AttentionPath::kPrefill);
  std::vector<float> fives(tokens.size() * size_t(V));
  {
    Forward fwd(m, pool);
    KvCache cache(cfg, 16);
    const SeqId s = cache.add_sequence();
    const std::span<const int32_t> all(tokens);
    for (size_t i = 0; i < tokens.size(); i += 5) {
      const size_t n = std::min<size_t>(5, tokens.size() - i);
      fwd.step(cache, {{s, all.subspan(i, n), AttentionPath::kPrefill}}, fives.data() + i * size_t(V));
    }
  }
  CHECK(std::memcmp(whole.data(), alone.data(), whole.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(whole.data(), fives.data(), whole.size() * sizeof(float)) == 0);
  // The sparse selection is active: the dense model's last rows differ.
  ModelConfig dense_cfg = cfg;
  dense_cfg.index_topk = 1 << 20;
  const Model dense(dense_cfg, WeightStore::open(kGoldenDir));
  const std::vector<float> dense_logits = run(dense, pool, tokens, false, AttentionPath::kPrefill);
  CHECK(std::memcmp(whole.data() + 63 * V, dense_logits.data() + 63 * V, size_t(V) * sizeof(float)) != 0);
}

}  // namespace engine_golden_suite

// Routed experts sharded over NUMA nodes in the forward pass (engine/numa_experts.h), on
// synthetic 2-, 3- and 4-node machines with 1-3 threads per node: bit-identical whatever
// the threads per node, and equal to the unsharded pass up to float rounding (each down
// projection's dot products are cut at the node boundaries and the nodes' partial sums
// added afterwards, so the additions happen in another order); the golden logits
// through a sharded Forward; nodes without a slice; the experts leaving the model.
#include <doctest/doctest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/experts.h"
#include "engine/forward.h"
#include "engine/numa_experts.h"
#include "engine/synth_model.h"
#include "support/golden.h"

namespace engine_numa_experts_suite {

using namespace hearth;
using hearth::testing::golden_cases;
using hearth::testing::GoldenCase;
using hearth::testing::kGoldenDir;

namespace {

// tiny's shapes (hidden 256, 16 experts of intermediate 96, 4 layers, 3 of them MoE),
// experts in Q8_0: 3 blocks of 32 along the intermediate dimension, so 2, 3 and 4 nodes
// all split it (the golden checkpoint's FP8 experts, with 128-wide scale blocks, cannot
// be split at all: one node takes them whole).
Model build_q8_model() {
  SyntheticModelOptions o;
  o.preset = "tiny";
  o.sets = {"num_nextn_predict_layers=0"};
  o.type = DType::Q8_0;
  o.threads = 2;
  return build_synthetic_model(o);
}

const Model& q8_model() {
  static const Model m = build_q8_model();
  return m;
}

const Model& golden_f32() {
  static const Model m = Model::load(kGoldenDir, ModelLoadOptions{DType::F32, 2});
  return m;
}

int64_t first_moe_layer(const Model& m) {
  for (size_t l = 0; l < m.layers.size(); ++l)
    if (m.layers[l].is_moe) return int64_t(l);
  return -1;
}

// Random activations and routing: each of T rows picks k distinct experts.
struct Step {
  std::vector<float> x;
  std::vector<ExpertWork> work;
};

Step random_step(const Model& m, int64_t layer, int64_t T, uint32_t seed) {
  const ModelConfig& c = m.config();
  const int64_t H = c.hidden_size, E = c.n_routed_experts;
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::uniform_real_distribution<float> w(0.1f, 1.0f);
  Step s;
  s.x.resize(size_t(T * H));
  for (float& v : s.x) v = g(rng);
  s.work.resize(size_t(E));
  for (int64_t e = 0; e < E; ++e) s.work[size_t(e)].mlp = &m.layers[size_t(layer)].moe.experts[size_t(e)];
  std::vector<int32_t> ids(static_cast<size_t>(E));
  for (int64_t r = 0; r < T; ++r) {
    for (int64_t e = 0; e < E; ++e) ids[size_t(e)] = int32_t(e);
    std::shuffle(ids.begin(), ids.end(), rng);
    for (int64_t i = 0; i < c.num_experts_per_tok; ++i) {
      s.work[size_t(ids[size_t(i)])].rows.push_back(int32_t(r));
      s.work[size_t(ids[size_t(i)])].weights.push_back(w(rng));
    }
  }
  return s;
}

std::vector<float> unsharded(const Model& m, const Step& s) {
  ThreadPool pool(1);
  std::vector<float> out(s.x.size(), 0.0f);
  experts_accumulate(pool, s.work, s.x.data(), m.config().hidden_size, out.data());
  return out;
}

std::vector<float> sharded(const NumaExperts& n, int64_t layer, const Step& s) {
  std::vector<float> out(s.x.size(), 0.0f);
  n.accumulate(layer, s.work, s.x.data(), out.data());
  return out;
}

// max |a - b| over max |b|: float rounding of sums of a few hundred terms stays far below 1e-5.
double relative_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, double(std::fabs(a[i] - b[i])));
    scale = std::max(scale, double(std::fabs(b[i])));
  }
  REQUIRE(scale > 0);
  return worst / scale;
}

std::vector<float> run_logits(const Model& m, ThreadPool& pool, const NumaExperts* numa,
                              const std::vector<int32_t>& tokens, bool one_at_a_time) {
  const int64_t V = m.config().vocab_size;
  Forward fwd(m, pool);
  fwd.set_numa_experts(numa);
  KvCache cache(m.config(), 16);
  const SeqId s = cache.add_sequence();
  std::vector<float> logits(tokens.size() * size_t(V));
  if (!one_at_a_time) {
    fwd.step(cache, {{s, tokens}}, logits.data());
  } else {
    for (size_t i = 0; i < tokens.size(); ++i)
      fwd.step(cache, {{s, std::span<const int32_t>(&tokens[i], 1)}}, logits.data() + i * size_t(V));
  }
  return logits;
}

}  // namespace

TEST_CASE("numa experts: threads split over nodes by their cores") {
  const NumaLayout two = NumaLayout::synthetic("pack:2 numa:1 core:2 pu:1");
  CHECK(split_threads(0, two) == std::vector<int>{2, 2});
  CHECK(split_threads(4, two) == std::vector<int>{2, 2});
  CHECK(split_threads(3, two) == std::vector<int>{2, 1});
  CHECK(split_threads(1, two) == std::vector<int>{1, 1});  // at least one per node
  CHECK(split_threads(7, NumaLayout::synthetic("pack:3 numa:1 core:1 pu:1")) == std::vector<int>{2, 3, 2});
}

TEST_CASE("numa experts: sharded experts match the unsharded ones - 2 nodes and 1 to 3 threads per node") {
  const Model& m = q8_model();
  const int64_t layer = first_moe_layer(m);
  REQUIRE(layer >= 0);
  const NumaLayout layout = NumaLayout::synthetic("pack:2 numa:2 core:2 pu:1");
  REQUIRE(layout.node_count() == 4);
  const NumaLayout two = NumaLayout::synthetic("pack:2 numa:1 core:2 pu:1");
  REQUIRE(two.node_count() == 2);
  for (int64_t T : {1, 7}) {
    const Step s = random_step(m, layer, T, uint32_t(T));
    const std::vector<float> ref = unsharded(m, s);
    std::vector<float> first;
    for (int threads : {1, 2, 3}) {
      INFO("T=" << T << " threads per node=" << threads);
      const NumaExperts n(m, two, {threads, threads});
      const ExpertShardPlan* p = n.plan(layer);
      REQUIRE(p);
      REQUIRE(p->slices.size() == 2);
      CHECK(p->slices[0].end == 64);  // 3 blocks of 32: two to node 0, one to node 1
      CHECK(n.plan(0) == nullptr);    // tiny's first layer is dense
      const std::vector<float> got = sharded(n, layer, s);
      if (first.empty()) first = got;
      else CHECK(got == first);  // bit-identical whatever the threads per node
      CHECK(relative_diff(got, ref) < 1e-5);
      CHECK(got != std::vector<float>(got.size(), 0.0f));
    }
  }
}

TEST_CASE("numa experts: interleaved Q4_K experts (Q4_K_R8) split by groups of rows and by columns") {
  // Experts of intermediate 512: gate and up (512 x 256) and down (256 x 512) all Q4_K,
  // laid out as Q4_K_R8; two nodes take 256 of the intermediate dimension each, so gate
  // and up are cut between groups of rows and down between super-block columns.
  SyntheticModelOptions o;
  o.preset = "tiny";
  o.sets = {"num_nextn_predict_layers=0", "moe_intermediate_size=512"};
  o.type = DType::Q4_K;
  o.threads = 2;
  const Model plain = build_synthetic_model(o);
  o.interleave = true;
  const Model m = build_synthetic_model(o);
  const int64_t layer = first_moe_layer(m);
  REQUIRE(layer >= 0);
  const Mlp& e = m.layers[size_t(layer)].moe.experts[0];
  REQUIRE(e.gate.dtype == DType::Q4_K_R8);
  REQUIRE(e.down.dtype == DType::Q4_K_R8);
  const NumaLayout two = NumaLayout::synthetic("pack:2 numa:1 core:2 pu:1");
  for (int64_t T : {1, 6}) {
    INFO("T=" << T);
    const Step s = random_step(m, layer, T, uint32_t(40 + T));
    Step sp = s;  // the same routing on the plain model's experts
    for (size_t k = 0; k < sp.work.size(); ++k) sp.work[k].mlp = &plain.layers[size_t(layer)].moe.experts[k];
    const std::vector<float> ref = unsharded(m, s);
    CHECK(relative_diff(ref, unsharded(plain, sp)) < 1e-5);
    const NumaExperts n(m, two, {2, 2});
    const ExpertShardPlan* p = n.plan(layer);
    REQUIRE(p);
    REQUIRE(p->slices.size() == 2);
    CHECK(p->slices[0].end == 256);
    CHECK(relative_diff(sharded(n, layer, s), ref) < 1e-5);
  }
}

TEST_CASE("numa experts: 3 and 4 nodes - nodes without a slice take no part") {
  const Model& m = q8_model();
  const int64_t layer = first_moe_layer(m);
  const Step s = random_step(m, layer, 5, 42);
  const std::vector<float> ref = unsharded(m, s);
  struct Case {
    const char* topology;
    size_t slices;
  };
  for (const Case c : {Case{"pack:3 numa:1 core:1 pu:1", 3}, Case{"pack:2 numa:2 core:1 pu:1", 3}}) {
    const NumaLayout layout = NumaLayout::synthetic(c.topology);
    std::vector<float> first;
    for (int threads : {1, 2, 3}) {
      INFO(c.topology << " threads per node=" << threads);
      const NumaExperts n(m, layout, std::vector<int>(size_t(layout.node_count()), threads));
      REQUIRE(n.plan(layer)->slices.size() == c.slices);
      if (layout.node_count() == 4) {
        CHECK(n.plan(layer)->slice_of(2) == nullptr);  // 3 blocks over 4 nodes: node 2 gets none
        CHECK(n.node_bytes(2) == 0);
      }
      const std::vector<float> got = sharded(n, layer, s);
      if (first.empty()) first = got;
      else CHECK(got == first);
      CHECK(relative_diff(got, ref) < 1e-5);
    }
  }
}

TEST_CASE("numa experts: one slice (FP8 experts too small to split) equals the unsharded pass exactly") {
  const Model& m = hearth::testing::golden_model();
  const int64_t layer = first_moe_layer(m);
  const NumaExperts n(m, NumaLayout::synthetic("pack:2 numa:1 core:2 pu:1"), {2, 1});
  REQUIRE(n.plan(layer)->slices.size() == 1);
  const Step s = random_step(m, layer, 6, 7);
  CHECK(sharded(n, layer, s) == unsharded(m, s));
}

TEST_CASE("numa experts: a sharded Forward is bit-identical over threads per node and close to the unsharded one") {
  const Model& m = q8_model();
  const std::vector<int32_t> tokens = golden_cases()[2].tokens;
  ThreadPool pool(2);
  const std::vector<float> ref = run_logits(m, pool, nullptr, tokens, false);
  const NumaLayout layout = NumaLayout::synthetic("pack:2 numa:1 core:2 pu:1");
  std::vector<float> first;
  for (int threads : {1, 2, 3}) {
    INFO("threads per node=" << threads);
    const NumaExperts n(m, layout, {threads, threads});
    const std::vector<float> got = run_logits(m, pool, &n, tokens, false);
    if (first.empty()) first = got;
    else CHECK(got == first);
    CHECK(relative_diff(got, ref) < 1e-4);
  }
  // Decode steps (one row each, the absorbed attention path) through the same shards.
  const NumaExperts n(m, layout, {1, 2});
  const std::vector<float> decoded = run_logits(m, pool, &n, tokens, true);
  CHECK(decoded == run_logits(m, pool, &n, tokens, true));
  CHECK(relative_diff(decoded, run_logits(m, pool, nullptr, tokens, true)) < 1e-4);
}

TEST_CASE("numa experts: read_rate sums every slice once, each node over its own") {
  // The shards hold the model's expert bytes rearranged (gate/up rows, down columns in
  // whole blocks), none twice, so their byte count and byte sum are the model's.
  const Model& m = q8_model();
  uint64_t bytes = 0, sum = 0;
  for (const Layer& L : m.layers)
    for (const Mlp& e : L.moe.experts)
      for (const WeightMatrix* w : {&e.gate, &e.up, &e.down}) {
        bytes += uint64_t(w->bytes());
        const auto* p = static_cast<const uint8_t*>(w->data);
        for (int64_t i = 0; i < w->bytes(); ++i) sum += p[i];
      }
  for (const char* topology : {"pack:2 numa:1 core:2 pu:1", "pack:3 numa:1 core:1 pu:1"}) {
    INFO(topology);
    const NumaLayout layout = NumaLayout::synthetic(topology);
    const NumaExperts n(m, layout, std::vector<int>(size_t(layout.node_count()), 2));
    REQUIRE(n.plan(first_moe_layer(m))->slices.size() == size_t(layout.node_count()));
    const RangeReadResult r = n.read_rate();
    CHECK(r.bytes == bytes);
    CHECK(r.byte_sum == sum);
    CHECK(r.bytes_per_second > 0);
    CHECK(r.threads == 2 * layout.node_count());
  }
}

TEST_CASE("numa experts: golden logits through a Forward sharded over 2 nodes") {
  const auto& cases = golden_cases();
  const NumaLayout layout = NumaLayout::synthetic("pack:2 numa:1 core:2 pu:1");
  ThreadPool pool(2);
  // The checkpoint as stored (FP8: one node holds the experts whole) and repacked to F32
  // (exact for FP8, and split 48 + 48 between the nodes).
  // Every sequence as one prefill chunk; the 24-token one decoded a token per step too.
  for (const Model* m : {&hearth::testing::golden_model(), &golden_f32()}) {
    const NumaExperts n(*m, layout, {2, 1});
    INFO(n.summary());
    for (const GoldenCase& g : cases) {
      INFO("tokens=" << g.tokens.size());
      check_golden_logits(run_logits(*m, pool, &n, g.tokens, false), g, m->config().vocab_size);
    }
    check_golden_logits(run_logits(*m, pool, &n, cases[2].tokens, true), cases[2], m->config().vocab_size);
  }
  const NumaExperts n(golden_f32(), layout, {1, 1});
  CHECK(n.plan(1)->slices.size() == 2);
  CHECK(n.plan(1)->slices[0].end == 48);
}

TEST_CASE("numa experts: one node, another model, and the summary") {
  const Model& m = q8_model();
  CHECK_THROWS_AS(NumaExperts(m, NumaLayout::synthetic("pack:1 numa:1 core:2 pu:1"), {2}), std::invalid_argument);
  const NumaLayout layout = NumaLayout::synthetic("pack:2 numa:1 core:2 pu:1");
  CHECK_THROWS_AS(NumaExperts(m, layout, {1}), std::invalid_argument);
  const NumaExperts n(m, layout, {2, 1});
  ThreadPool pool(1);
  Forward other(hearth::testing::golden_model(), pool);
  CHECK_THROWS_AS(other.set_numa_experts(&n), std::invalid_argument);
  const std::string s = n.summary();
  INFO(s);
  CHECK(s.find("2 NUMA nodes") != std::string::npos);
  CHECK(s.find("node 0 [0, 64) 2 threads") != std::string::npos);
  CHECK(s.find("node 1 [64, 96) 1 thread ") != std::string::npos);
  CHECK(n.node_bytes(0) > n.node_bytes(1));
  CHECK(n.node_bytes(1) > 0);
}

namespace {

struct Range {
  const void* p;
  int64_t bytes;
};

// Every routed expert matrix's data, before it is released.
std::vector<Range> expert_ranges(const Model& m) {
  std::vector<Range> out;
  for (const Layer& L : m.layers)
    if (L.is_moe)
      for (const Mlp& e : L.moe.experts)
        for (const WeightMatrix* w : {&e.gate, &e.up, &e.down}) out.push_back({w->data, w->bytes()});
  return out;
}

// Resident pages among the whole pages inside r (mincore; for anonymous memory, whether
// the process still holds them).
int64_t resident_pages(const Range& r) {
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t p = reinterpret_cast<uintptr_t>(r.p);
  const uintptr_t b = (p + page - 1) / page * page, e = (p + uintptr_t(r.bytes)) / page * page;
  if (e <= b) return 0;
  std::vector<unsigned char> v(static_cast<size_t>((e - b) / page));
  REQUIRE(mincore(reinterpret_cast<void*>(b), e - b, v.data()) == 0);
  return int64_t(std::count_if(v.begin(), v.end(), [](unsigned char c) { return c & 1; }));
}

}  // namespace

TEST_CASE("numa experts: each layer's experts leave the model once the nodes hold them") {
  const NumaLayout layout = NumaLayout::synthetic("pack:2 numa:1 core:2 pu:1");
  const auto& cases = golden_cases();
  ThreadPool pool(2);
  const int64_t page = int64_t(sysconf(_SC_PAGESIZE));
  struct Kind {
    const char* what;
    bool anonymous;  // memory of the process's own (mincore tells whether it is held)
    bool golden;     // the golden checkpoint's weights (its logits are known)
  };
  for (const Kind k : {Kind{"mapped checkpoint (FP8)", false, true}, Kind{"repacked at load (F32)", true, true},
                       Kind{"built in memory (Q8_0)", true, false}}) {
    INFO(k.what);
    Model m = std::string(k.what).starts_with("mapped") ? Model::load(kGoldenDir)
              : k.golden ? Model::load(kGoldenDir, ModelLoadOptions{DType::F32, 2})
                         : build_q8_model();
    const Model& reference = std::string(k.what).starts_with("mapped") ? hearth::testing::golden_model()
                             : k.golden ? golden_f32()
                                        : q8_model();
    const std::vector<Range> ranges = expert_ranges(m);
    int64_t total = 0;
    for (const Range& r : ranges) total += r.bytes;
    if (k.anonymous) {
      int64_t held = 0;
      for (const Range& r : ranges) held += resident_pages(r);
      REQUIRE(held > 0);
    }
    std::vector<int64_t> seen, moe_layers;
    for (size_t l = 0; l < m.layers.size(); ++l)
      if (m.layers[l].is_moe) moe_layers.push_back(int64_t(l));
    int64_t released = 0;
    const NumaExperts n(m, layout, {1, 1}, [&](int64_t layer) {
      seen.push_back(layer);
      released += release_routed_experts(m, layer);
    });
    CHECK(seen == moe_layers);
    // Whole pages inside each matrix: all but at most two pages per matrix.
    CHECK(released <= total);
    CHECK(released >= total - int64_t(ranges.size()) * 2 * page);
    for (const Layer& L : m.layers)
      for (const Mlp& e : L.moe.experts) {
        CHECK(e.gate.data == nullptr);
        CHECK(e.up.data == nullptr);
        CHECK(e.down.data == nullptr);
        CHECK(e.gate.bytes() > 0);  // shapes and formats stay: byte counts still work
      }
    if (k.anonymous)
      for (const Range& r : ranges) CHECK(resident_pages(r) == 0);
    CHECK(release_routed_experts(m, moe_layers[0]) == 0);  // nothing left to release
    CHECK(release_routed_experts(m, 0) == 0);              // tiny's first layer is dense

    // The shards still hold the experts: a step equals the untouched model's.
    const int64_t layer = moe_layers[0];
    const Step s = random_step(reference, layer, 5, 11);
    CHECK(relative_diff(sharded(n, layer, s), unsharded(reference, s)) < 1e-5);
    if (k.golden) {
      for (const GoldenCase& g : cases)
        check_golden_logits(run_logits(m, pool, &n, g.tokens, false), g, m.config().vocab_size);
    } else {
      const std::vector<int32_t> tokens = cases[2].tokens;
      CHECK(relative_diff(run_logits(m, pool, &n, tokens, false), run_logits(reference, pool, nullptr, tokens, false)) <
            1e-4);
    }
    // Without the shards the model cannot run its experts, and says so.
    CHECK_THROWS_WITH_AS(run_logits(m, pool, nullptr, cases[0].tokens, false),
                         doctest::Contains("the routed experts were moved to NUMA shards"), std::logic_error);
    CHECK_THROWS_WITH_AS(NumaExperts(m, layout, {1, 1}), doctest::Contains("already released from the model"),
                         std::invalid_argument);
  }
}

}  // namespace engine_numa_experts_suite

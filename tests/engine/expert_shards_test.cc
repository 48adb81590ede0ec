// Routed experts split across NUMA nodes: plan ranges (cover, alignment, proportions,
// too-small experts), exact shard copies, and the sum of the nodes' partial outputs
// against the whole expert, on synthetic 1-, 2- and 4-node machines with 1-3 threads.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "engine/expert_shards.h"
#include "engine/experts.h"
#include "engine/ops.h"
#include "quant/block_formats.h"
#include "quant/weight_matrix.h"

namespace engine_expert_shards_suite {

using namespace hearth;

namespace {

// partial_out[t] = the shard's slice of the expert applied to x_t, through the batched
// expert executor the forward pass uses (engine/experts.h): every token routed to the
// shard with weight 1. An empty shard contributes zeros.
void shard_partial(ThreadPool& pool, const ExpertShard& shard, const float* x, int64_t n, float* partial_out) {
  const int64_t hidden = shard.down.rows;
  std::fill(partial_out, partial_out + n * hidden, 0.0f);
  if (shard.empty()) return;
  const Mlp slice{shard.gate, shard.up, shard.down};
  ExpertWork work{&slice, {}, {}};
  for (int64_t t = 0; t < n; ++t) {
    work.rows.push_back(int32_t(t));
    work.weights.push_back(1.0f);
  }
  experts_accumulate(pool, {work}, x, hidden, partial_out);
}

// A weight matrix with its own storage (and FP8 block scales).
struct OwnedWeight {
  WeightMatrix view;
  std::vector<uint64_t> storage;
  std::vector<float> scales;
};

OwnedWeight make_weight(DType dt, int64_t rows, int64_t cols, std::mt19937& rng) {
  OwnedWeight w;
  w.view.dtype = dt;
  w.view.rows = rows;
  w.view.cols = cols;
  const int64_t rb = row_bytes(dt, cols);
  w.storage.assign(size_t((rows * rb + 7) / 8), 0);
  auto* bytes = reinterpret_cast<uint8_t*>(w.storage.data());
  std::normal_distribution<float> g(0.0f, 1.0f / std::sqrt(float(cols)));
  std::vector<float> row(static_cast<size_t>(cols));
  if (dt == DType::F8_E4M3) {
    // Any e4m3 byte but the NaNs, with block scales around 1 / sqrt(cols) / 16.
    std::uniform_int_distribution<int> byte(0, 255);
    for (int64_t i = 0; i < rows * cols; ++i) {
      int b;
      do b = byte(rng);
      while ((b & 0x7f) == 0x7f);
      bytes[i] = uint8_t(b);
    }
    std::uniform_real_distribution<float> s(0.5f, 2.0f);
    w.scales.resize(size_t((rows + 127) / 128 * ((cols + 127) / 128)));
    for (float& v : w.scales) v = s(rng) / std::sqrt(float(cols)) / 16.0f;
    w.view.scale = w.scales.data();
    w.view.block = 128;
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      for (float& v : row) v = g(rng);
      if (dt == DType::F32)
        std::memcpy(bytes + r * rb, row.data(), size_t(rb));
      else
        block_format_of(dt)->quantize_row(row.data(), bytes + r * rb, cols, nullptr);
    }
  }
  w.view.data = w.storage.data();
  return w;
}

struct OwnedExpert {
  OwnedWeight gate, up, down;
  Mlp mlp() const { return Mlp{gate.view, up.view, down.view}; }
};

OwnedExpert make_expert(DType gate_up, DType down, int64_t hidden, int64_t inter, std::mt19937& rng) {
  OwnedExpert e;
  e.gate = make_weight(gate_up, inter, hidden, rng);
  e.up = make_weight(gate_up, inter, hidden, rng);
  e.down = make_weight(down, hidden, inter, rng);
  return e;
}

// The whole expert through the same kernels (single thread): what the sum of the shards
// must reproduce up to float summation order.
std::vector<float> kernel_forward(const Mlp& e, const float* x, int64_t n) {
  const int64_t I = e.gate.rows, H = e.gate.cols;
  std::vector<float> g(size_t(n * I)), u(size_t(n * I)), y(size_t(n * H));
  matmul_rows(e.gate, x, H, n, g.data(), I, 0, I);
  matmul_rows(e.up, x, H, n, u.data(), I, 0, I);
  for (size_t i = 0; i < g.size(); ++i) g[i] = silu(g[i]) * u[i];
  matmul_rows(e.down, g.data(), I, n, y.data(), H, 0, H);
  return y;
}

// The whole expert in double on dequantized weights (independent of the kernels; the
// block formats' activation quantization is the only source of difference).
std::vector<float> double_forward(const Mlp& e, const float* x, int64_t n) {
  const int64_t I = e.gate.rows, H = e.gate.cols;
  auto dequant = [](const WeightMatrix& w) {
    std::vector<float> m(size_t(w.rows * w.cols));
    for (int64_t r = 0; r < w.rows; ++r) dequantize_row(w, r, 0, w.cols, m.data() + r * w.cols);
    return m;
  };
  const std::vector<float> G = dequant(e.gate), U = dequant(e.up), D = dequant(e.down);
  std::vector<float> y(size_t(n * H));
  std::vector<double> a(static_cast<size_t>(I));
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < I; ++i) {
      double g = 0, u = 0;
      for (int64_t c = 0; c < H; ++c) {
        g += double(G[size_t(i * H + c)]) * x[t * H + c];
        u += double(U[size_t(i * H + c)]) * x[t * H + c];
      }
      a[size_t(i)] = g / (1.0 + std::exp(-g)) * u;
    }
    for (int64_t r = 0; r < H; ++r) {
      double s = 0;
      for (int64_t i = 0; i < I; ++i) s += double(D[size_t(r * I + i)]) * a[size_t(i)];
      y[size_t(t * H + r)] = float(s);
    }
  }
  return y;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float f : v) m = std::max(m, double(std::fabs(f)));
  return m;
}

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

// Structural checks every plan must pass.
void check_plan(const ExpertShardPlan& p, int n_nodes) {
  REQUIRE(!p.slices.empty());
  CHECK(p.slices.front().begin == 0);
  CHECK(p.slices.back().end == p.inter);
  int prev_node = -1;
  for (size_t i = 0; i < p.slices.size(); ++i) {
    const ExpertSlice& s = p.slices[i];
    CHECK(s.size() > 0);
    CHECK(s.begin % p.unit == 0);
    CHECK((s.end == p.inter || s.end % p.unit == 0));
    if (i > 0) CHECK(s.begin == p.slices[i - 1].end);  // contiguous: every index exactly once
    CHECK(s.node > prev_node);
    CHECK(s.node < n_nodes);
    CHECK(p.slice_of(s.node) == &s);
    prev_node = s.node;
  }
}

using Slices = std::vector<std::vector<int64_t>>;  // {node, begin, end}
Slices slices(const ExpertShardPlan& p) {
  Slices out;
  for (const ExpertSlice& s : p.slices) out.push_back({s.node, s.begin, s.end});
  return out;
}

}  // namespace

TEST_CASE("expert shards: split unit follows the formats") {
  CHECK(expert_split_unit(DType::F32) == 1);
  CHECK(expert_split_unit(DType::BF16) == 1);
  CHECK(expert_split_unit(DType::Q8_0) == 32);
  CHECK(expert_split_unit(DType::Q4_0) == 32);
  CHECK(expert_split_unit(DType::Q4_K) == 256);
  CHECK(expert_split_unit(DType::Q6_K) == 256);
  CHECK(expert_split_unit(DType::IQ4_XS) == 256);
  CHECK(expert_split_unit(DType::F8_E4M3) == 128);
  CHECK(expert_split_unit(DType::F8_E4M3, 64) == 64);
  std::mt19937 rng(1);
  // Down's format decides for block formats (gate/up are split by rows).
  CHECK(expert_split_unit(make_expert(DType::Q4_K, DType::Q8_0, 256, 256, rng).mlp()) == 32);
  CHECK(expert_split_unit(make_expert(DType::Q8_0, DType::Q6_K, 256, 256, rng).mlp()) == 256);
  // Block-scaled FP8 gate/up rows must keep whole scale rows.
  CHECK(expert_split_unit(make_expert(DType::F8_E4M3, DType::Q8_0, 256, 256, rng).mlp()) == 128);
  CHECK(expert_split_unit(make_expert(DType::F32, DType::F8_E4M3, 256, 256, rng).mlp()) == 128);
  Mlp unscaled = make_expert(DType::F32, DType::F32, 64, 64, rng).mlp();
  unscaled.down.dtype = DType::F8_E4M3;  // FP8 without block scales: per-element, no constraint
  CHECK(expert_split_unit(unscaled) == 1);
}

TEST_CASE("expert shards: plans cover the intermediate dimension once on block edges") {
  struct Format {
    DType dtype;
    int64_t unit;
  };
  for (const Format f : {Format{DType::F32, 1}, Format{DType::Q8_0, 32}, Format{DType::Q4_K, 256},
                         Format{DType::F8_E4M3, 128}}) {
    for (int64_t inter : {int64_t(256), int64_t(512), int64_t(1280), int64_t(2048), int64_t(18432)}) {
      for (int nodes = 1; nodes <= 4; ++nodes) {
        CAPTURE(dtype_name(f.dtype));
        CAPTURE(inter);
        CAPTURE(nodes);
        const ExpertShardPlan p = plan_expert_shards(7168, inter, f.dtype, nodes);
        CHECK(p.unit == f.unit);
        check_plan(p, nodes);
        // Equal shares: min(nodes, units) slices, each within one unit of an equal split.
        const int64_t units = (inter + f.unit - 1) / f.unit;
        CHECK(int64_t(p.slices.size()) == std::min<int64_t>(nodes, units));
        if (units >= nodes)
          for (const ExpertSlice& s : p.slices) {
            const double share = double((s.size() + f.unit - 1) / f.unit);
            CHECK(std::fabs(share - double(units) / nodes) <= 1.0);
          }
      }
    }
  }
  // Worked examples (boundary i = round(units * (i + 1) / nodes) units, halves up).
  CHECK(slices(plan_expert_shards(7168, 2048, DType::Q4_K, 2)) == Slices{{0, 0, 1024}, {1, 1024, 2048}});
  CHECK(slices(plan_expert_shards(7168, 2048, DType::Q4_K, 3)) ==
        Slices{{0, 0, 768}, {1, 768, 1280}, {2, 1280, 2048}});
  CHECK(slices(plan_expert_shards(7168, 2048, DType::Q4_K, 1)) == Slices{{0, 0, 2048}});
  // Too small to split: one Q4_K block cannot be shared (it goes to the node whose
  // cumulative share first reaches half a unit); two go to nodes 0 and 2.
  CHECK(slices(plan_expert_shards(7168, 256, DType::Q4_K, 4)) == Slices{{1, 0, 256}});
  const ExpertShardPlan two = plan_expert_shards(7168, 512, DType::Q4_K, 4);
  CHECK(slices(two) == Slices{{0, 0, 256}, {2, 256, 512}});
  CHECK(two.slice_of(1) == nullptr);
  CHECK(two.slice_of(3) == nullptr);
  // FP8 with an intermediate size off the 128 grid: only the last slice ends off it.
  CHECK(slices(plan_expert_shards(448, 320, DType::F8_E4M3, 2)) == Slices{{0, 0, 256}, {1, 256, 320}});
  // Shares follow the weights (cores per node); a zero weight gets nothing.
  const std::vector<int> one_three{1, 3}, two_zero_two{2, 0, 2};
  CHECK(slices(plan_expert_shards(64, 1024, 32, one_three)) == Slices{{0, 0, 256}, {1, 256, 1024}});
  CHECK(slices(plan_expert_shards(64, 1024, 32, two_zero_two)) == Slices{{0, 0, 512}, {2, 512, 1024}});

  const std::vector<int> none{}, zeros{0, 0}, negative{1, -1}, ok{1};
  CHECK_THROWS_AS(plan_expert_shards(64, 1024, 32, none), std::invalid_argument);
  CHECK_THROWS_AS(plan_expert_shards(64, 1024, 32, zeros), std::invalid_argument);
  CHECK_THROWS_AS(plan_expert_shards(64, 1024, 32, negative), std::invalid_argument);
  CHECK_THROWS_AS(plan_expert_shards(0, 1024, 32, ok), std::invalid_argument);
  CHECK_THROWS_AS(plan_expert_shards(64, 0, 32, ok), std::invalid_argument);
  CHECK_THROWS_AS(plan_expert_shards(64, 1024, 0, ok), std::invalid_argument);
  CHECK_THROWS_AS(plan_expert_shards(64, 1024, DType::Q8_0, 0), std::invalid_argument);
}

TEST_CASE("expert shards: shard copies hold exactly the sliced rows and columns") {
  std::mt19937 rng(7);
  const NumaLayout layout = NumaLayout::synthetic("numa:3 core:1 pu:1");
  struct Case {
    DType gate_up, down;
    int64_t hidden, inter;
  };
  for (const Case c : {Case{DType::Q4_K, DType::Q4_K, 512, 1280}, Case{DType::Q8_0, DType::Q8_0, 96, 160},
                       Case{DType::F8_E4M3, DType::F8_E4M3, 200, 1000}, Case{DType::Q4_K, DType::Q8_0, 256, 96}}) {
    CAPTURE(dtype_name(c.gate_up));
    CAPTURE(dtype_name(c.down));
    const OwnedExpert owned = make_expert(c.gate_up, c.down, c.hidden, c.inter, rng);
    const Mlp e = owned.mlp();
    const ExpertShardPlan plan = plan_expert_shards(e, layout);
    check_plan(plan, 3);
    // Two copies of the expert packed back to back in one buffer per node.
    for (int node = 0; node < 3; ++node) {
      const int64_t bytes = expert_shard_bytes(e, plan, node);
      NodeBuffer buf(layout, node, size_t(2 * bytes));
      const ExpertShard a = shard_expert(e, plan, node, buf, 0);
      const ExpertShard b = shard_expert(e, plan, node, buf, bytes);
      const ExpertSlice* s = plan.slice_of(node);
      if (!s) {
        CHECK(a.empty());
        continue;
      }
      for (const ExpertShard& sh : {a, b}) {
        REQUIRE(sh.begin == s->begin);
        REQUIRE(sh.end == s->end);
        const int64_t m = s->size();
        CHECK(sh.gate.rows == m);
        CHECK(sh.down.cols == m);
        CHECK(sh.down.rows == c.hidden);
        std::vector<float> want(size_t(std::max(c.hidden, c.inter))), got(want.size());
        bool same = true;
        for (int64_t i = 0; i < m; ++i) {
          for (auto [whole, part] : {std::pair{&e.gate, &sh.gate}, std::pair{&e.up, &sh.up}}) {
            dequantize_row(*whole, s->begin + i, 0, c.hidden, want.data());
            dequantize_row(*part, i, 0, c.hidden, got.data());
            same = same && std::memcmp(want.data(), got.data(), size_t(c.hidden) * 4) == 0;
          }
        }
        for (int64_t r = 0; r < c.hidden; ++r) {
          dequantize_row(e.down, r, s->begin, s->end, want.data());
          dequantize_row(sh.down, r, 0, m, got.data());
          same = same && std::memcmp(want.data(), got.data(), size_t(m) * 4) == 0;
        }
        CHECK(same);
      }
    }
  }
}

TEST_CASE("expert shards: the nodes' partial outputs add up to the whole expert") {
  struct Case {
    DType gate_up, down;
    int64_t hidden, inter;
    double vs_double;  // tolerance against the double reference, relative to its max
  };
  // Block formats quantize the activations (Q8_0 / Q8_K) inside the kernels, which the
  // double reference does not: that alone makes a difference of 1-2% of the output's
  // largest value (measured); a wrong slice would be off by the order of the output.
  const Case cases[] = {
      {DType::F32, DType::F32, 300, 1000, 1e-5},
      {DType::Q8_0, DType::Q8_0, 320, 1280, 4e-2},
      {DType::Q4_K, DType::Q4_K, 512, 1280, 4e-2},
      {DType::F8_E4M3, DType::F8_E4M3, 448, 1000, 1e-5},
      {DType::Q4_K, DType::Q8_0, 512, 1056, 4e-2},
  };
  const char* machines[] = {"core:2 pu:1", "numa:2 core:3 pu:1", "pack:2 numa:2 core:4 pu:1"};
  const int64_t n = 3;
  std::mt19937 rng(42);
  for (const Case& c : cases) {
    CAPTURE(dtype_name(c.gate_up));
    CAPTURE(dtype_name(c.down));
    const OwnedExpert owned = make_expert(c.gate_up, c.down, c.hidden, c.inter, rng);
    const Mlp e = owned.mlp();
    std::vector<float> x(size_t(n * c.hidden));
    std::normal_distribution<float> g(0.0f, 1.0f);
    for (float& v : x) v = g(rng);
    const std::vector<float> whole = kernel_forward(e, x.data(), n);
    const std::vector<float> exact = double_forward(e, x.data(), n);
    const double scale = max_abs(exact);
    REQUIRE(scale > 0.01);
    CHECK(max_diff(whole, exact) <= c.vs_double * scale);

    for (const char* machine : machines) {
      CAPTURE(machine);
      const NumaLayout layout = NumaLayout::synthetic(machine);
      const ExpertShardPlan plan = plan_expert_shards(e, layout);
      check_plan(plan, layout.node_count());
      std::vector<float> first_sum;
      for (int threads : {1, 2, 3}) {
        CAPTURE(threads);
        NodeWorkers workers(layout, threads);
        std::vector<NodeBuffer> buffers;
        for (int node = 0; node < layout.node_count(); ++node)
          buffers.emplace_back(layout, node, size_t(expert_shard_bytes(e, plan, node)));
        std::vector<std::vector<float>> partial(size_t(layout.node_count()), std::vector<float>(size_t(n * c.hidden), -1.0f));
        // Each node copies its own slice (first touch on its node) and computes on it.
        workers.run_on_every_node([&](int node, ThreadPool& pool) {
          const ExpertShard shard = shard_expert(e, plan, node, buffers[size_t(node)]);
          shard_partial(pool, shard, x.data(), n, partial[size_t(node)].data());
        });
        std::vector<float> sum(size_t(n * c.hidden), 0.0f);
        for (const auto& p : partial)
          for (size_t i = 0; i < sum.size(); ++i) sum[i] += p[i];
        const double d = max_diff(sum, whole);
        CAPTURE(d);
        // Same kernels on the same blocks: only the order of the final float sums
        // differs (measured ~2e-7 of the output's scale).
        CHECK(d <= 2e-6 * scale);
        // The thread count never changes a bit of the result.
        if (first_sum.empty())
          first_sum = sum;
        else
          CHECK(std::memcmp(first_sum.data(), sum.data(), sum.size() * 4) == 0);
      }
    }
  }
}

TEST_CASE("expert shards: mismatched experts buffers and empty shards") {
  std::mt19937 rng(3);
  const NumaLayout layout = NumaLayout::synthetic("numa:4 core:1 pu:1");
  const OwnedExpert owned = make_expert(DType::Q4_K, DType::Q4_K, 256, 512, rng);
  const Mlp e = owned.mlp();
  const ExpertShardPlan plan = plan_expert_shards(e, layout);  // 2 units over 4 nodes
  REQUIRE(slices(plan) == Slices{{0, 0, 256}, {2, 256, 512}});
  const int64_t bytes = expert_shard_bytes(e, plan, 0);
  CHECK(bytes == 2 * 256 * row_bytes(DType::Q4_K, 256) + 256 * row_bytes(DType::Q4_K, 256));
  CHECK(expert_shard_bytes(e, plan, 1) == 0);

  NodeBuffer on0(layout, 0, size_t(bytes)), on1(layout, 1, 64), small0(layout, 0, size_t(bytes - 1));
  CHECK_THROWS_AS(shard_expert(e, plan, 2, on0), std::invalid_argument);      // buffer on another node
  CHECK_THROWS_AS(shard_expert(e, plan, 0, small0), std::invalid_argument);   // too small
  CHECK_THROWS_AS(shard_expert(e, plan, 0, on0, 32), std::invalid_argument);  // misaligned offset
  const ExpertShardPlan fine = plan_expert_shards(256, 512, DType::Q8_0, 4);  // 32-value unit
  CHECK_THROWS_AS(shard_expert(e, fine, 0, on0), std::invalid_argument);
  const ExpertShardPlan other = plan_expert_shards(256, 768, DType::Q4_K, 4);
  CHECK_THROWS_AS(expert_shard_bytes(e, other, 0), std::invalid_argument);

  // A node without a slice gets an empty shard whose partial output is zero.
  const ExpertShard none = shard_expert(e, plan, 1, on1);
  CHECK(none.empty());
  ThreadPool pool(2);
  std::vector<float> x(256, 1.0f), out(256, 5.0f);
  shard_partial(pool, none, x.data(), 1, out.data());
  CHECK(max_abs(out) == 0.0);
}

}  // namespace engine_expert_shards_suite

// The batched expert executor (engine/experts.h) against the straightforward per-expert
// reference: for each expert in turn, gather its rows, gate / up / SiLU(gate) * up /
// down with plain matmul_rows calls, add weight * result into the output. Outputs must be
// bit-identical, with 1, 2 and 3 threads, for mixed weight formats (experts whose gate,
// up and down take different activation formats included).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "engine/experts.h"
#include "engine/ops.h"
#include "quant/block_formats.h"

namespace engine_experts_suite {

using namespace hearth;

namespace {

struct OwnedMatrix {
  std::vector<uint64_t> storage;
  WeightMatrix w;
};

OwnedMatrix make_matrix(DType dt, int64_t rows, int64_t cols, std::mt19937& rng) {
  OwnedMatrix m;
  std::normal_distribution<float> g(0.0f, 0.3f);
  std::vector<float> src(static_cast<size_t>(cols));
  const int64_t rb = is_block_dtype(dt) ? row_bytes(dt, cols) : cols * 4;
  m.storage.assign(size_t((rows * rb + 7) / 8), 0);
  auto* bytes = reinterpret_cast<uint8_t*>(m.storage.data());
  for (int64_t r = 0; r < rows; ++r) {
    for (float& v : src) v = g(rng);
    if (is_block_dtype(dt)) block_format_of(dt)->quantize_row(src.data(), bytes + r * rb, cols, nullptr);
    else std::memcpy(bytes + r * rb, src.data(), size_t(cols) * 4);
  }
  m.w.dtype = dt;
  m.w.rows = rows;
  m.w.cols = cols;
  m.w.data = m.storage.data();
  return m;
}

struct OwnedMlp {
  OwnedMatrix gate, up, down;
  Mlp mlp;
};

void make_mlp(OwnedMlp& o, DType g, DType u, DType d, int64_t hidden, int64_t inter, std::mt19937& rng) {
  o.gate = make_matrix(g, inter, hidden, rng);
  o.up = make_matrix(u, inter, hidden, rng);
  o.down = make_matrix(d, hidden, inter, rng);
  o.mlp.gate = o.gate.w;
  o.mlp.up = o.up.w;
  o.mlp.down = o.down.w;
}

// The straightforward reference: one expert at a time, plain single-threaded matmuls.
std::vector<float> reference_mlp(const Mlp& m, const std::vector<float>& xe, int64_t n) {
  const int64_t H = m.gate.cols, I = m.gate.rows;
  std::vector<float> g(size_t(n * I)), u(size_t(n * I)), y(size_t(n * H));
  matmul_rows(m.gate, xe.data(), H, n, g.data(), I, 0, I);
  matmul_rows(m.up, xe.data(), H, n, u.data(), I, 0, I);
  for (size_t i = 0; i < g.size(); ++i) g[i] = silu(g[i]) * u[i];
  matmul_rows(m.down, g.data(), I, n, y.data(), H, 0, H);
  return y;
}

}  // namespace

TEST_CASE("experts: batched execution equals the per-expert reference with 1 2 and 3 threads") {
  std::mt19937 rng(21);
  const int64_t H = 256, I = 512, E = 6, T = 5, k = 3;
  std::vector<OwnedMlp> experts(static_cast<size_t>(E));
  const DType kinds[E][3] = {{DType::Q8_0, DType::Q8_0, DType::Q8_0}, {DType::Q4_K, DType::Q4_K, DType::Q6_K},
                             {DType::F32, DType::F32, DType::F32},    {DType::Q4_K, DType::Q8_0, DType::Q4_0},
                             {DType::Q8_0, DType::Q4_K, DType::F32},  {DType::Q5_K, DType::Q5_K, DType::Q8_0}};
  for (int64_t e = 0; e < E; ++e)
    make_mlp(experts[size_t(e)], kinds[e][0], kinds[e][1], kinds[e][2], H, I, rng);

  std::normal_distribution<float> g(0.0f, 1.0f);
  std::uniform_real_distribution<float> wdist(0.1f, 1.0f);
  for (int trial = 0; trial < 3; ++trial) {
    CAPTURE(trial);
    std::vector<float> x(static_cast<size_t>(T * H));
    for (float& v : x) v = g(rng);
    // Random routing: each row to k distinct experts; expert 5 left out on trial 1.
    std::vector<ExpertWork> work(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) work[size_t(e)].mlp = &experts[size_t(e)].mlp;
    for (int64_t r = 0; r < T; ++r) {
      std::vector<int64_t> order = {0, 1, 2, 3, 4, 5};
      std::shuffle(order.begin(), order.end(), rng);
      int64_t taken = 0;
      for (int64_t e : order) {
        if (taken == k || (trial == 1 && e == 5)) continue;
        work[size_t(e)].rows.push_back(int32_t(r));
        work[size_t(e)].weights.push_back(wdist(rng));
        ++taken;
      }
    }
    // out starts at `init` everywhere; experts added in order, as the per-expert loop does.
    auto reference = [&](float init) {
      std::vector<float> out(static_cast<size_t>(T * H), init);
      for (int64_t e = 0; e < E; ++e) {
        const ExpertWork& w = work[size_t(e)];
        if (w.rows.empty()) continue;
        const int64_t n = int64_t(w.rows.size());
        std::vector<float> xe(static_cast<size_t>(n * H));
        for (int64_t i = 0; i < n; ++i) std::copy_n(x.data() + w.rows[size_t(i)] * H, H, xe.data() + i * H);
        const std::vector<float> y = reference_mlp(*w.mlp, xe, n);
        for (int64_t i = 0; i < n; ++i)
          for (int64_t d = 0; d < H; ++d) out[size_t(w.rows[size_t(i)] * H + d)] += w.weights[size_t(i)] * y[size_t(i * H + d)];
      }
      return out;
    };
    const std::vector<float> want = reference(0.0f), want_again = reference(1.5f);
    for (int threads : {1, 2, 3}) {
      CAPTURE(threads);
      ThreadPool pool(threads);
      std::vector<float> got(static_cast<size_t>(T * H), 0.0f);
      experts_accumulate(pool, work, x.data(), H, got.data());
      CHECK(got == want);
      // Deterministic from call to call, and it adds into what out already holds.
      std::vector<float> again(static_cast<size_t>(T * H), 1.5f);
      experts_accumulate(pool, work, x.data(), H, again.data());
      int differ = 0;
      for (size_t i = 0; i < again.size(); ++i) differ += again[i] != want_again[i];
      CHECK(differ == 0);
    }
  }
}

TEST_CASE("experts: mlp_rows equals the plain gate up down sequence with 1 2 and 3 threads") {
  std::mt19937 rng(22);
  const int64_t H = 256, I = 768;
  for (DType dt : {DType::Q8_0, DType::Q4_K, DType::F32}) {
    CAPTURE(dtype_name(dt));
    OwnedMlp m;
    make_mlp(m, dt, dt, dt, H, I, rng);
    for (int64_t T : {int64_t(1), int64_t(4)}) {
      std::vector<float> x(static_cast<size_t>(T * H));
      std::normal_distribution<float> g(0.0f, 1.0f);
      for (float& v : x) v = g(rng);
      const std::vector<float> want = reference_mlp(m.mlp, x, T);
      for (int threads : {1, 2, 3}) {
        CAPTURE(threads);
        ThreadPool pool(threads);
        std::vector<float> got(static_cast<size_t>(T * H), -1.0f);
        mlp_rows(pool, m.mlp, x.data(), T, got.data());
        CHECK(got == want);
      }
    }
  }
}

// moe_forward runs the shared expert as one more entry of the routed experts' pass: last,
// every row, weight 1. That must give the bits of the routed pass followed by
// out += mlp_rows(shared), the order it had as a pass of its own, and the busy counters
// must see time on both kinds of entry.
TEST_CASE("experts: a shared expert as a last entry of weight 1 adds mlp_rows' bits, with 1 2 and 3 threads") {
  std::mt19937 rng(23);
  const int64_t H = 256, I = 512, E = 4, T = 3;
  std::vector<OwnedMlp> experts(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) make_mlp(experts[size_t(e)], DType::Q4_K, DType::Q4_K, DType::Q8_0, H, I, rng);
  OwnedMlp shared;
  make_mlp(shared, DType::Q8_0, DType::Q8_0, DType::Q6_K, H, 2 * I, rng);
  std::vector<float> x(static_cast<size_t>(T * H));
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (float& v : x) v = g(rng);
  std::vector<ExpertWork> work(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) {
    work[size_t(e)].mlp = &experts[size_t(e)].mlp;
    for (int64_t r = 0; r < T; ++r)
      if ((r + e) % 2 == 0) {
        work[size_t(e)].rows.push_back(int32_t(r));
        work[size_t(e)].weights.push_back(0.25f + 0.1f * float(e));
      }
  }
  for (int threads : {1, 2, 3}) {
    CAPTURE(threads);
    ThreadPool pool(threads);
    std::vector<float> want(static_cast<size_t>(T * H), 0.0f), ye(static_cast<size_t>(T * H));
    experts_accumulate(pool, work, x.data(), H, want.data());
    mlp_rows(pool, shared.mlp, x.data(), T, ye.data());
    for (size_t i = 0; i < want.size(); ++i) want[i] += ye[i];

    std::vector<ExpertWork> folded = work;
    std::atomic<double> routed_busy{0.0}, shared_busy{0.0};
    for (ExpertWork& w : folded) w.busy = &routed_busy;
    ExpertWork& sw = folded.emplace_back();
    sw.mlp = &shared.mlp;
    for (int64_t r = 0; r < T; ++r) sw.rows.push_back(int32_t(r));
    sw.weights.assign(size_t(T), 1.0f);
    sw.busy = &shared_busy;
    std::vector<float> got(static_cast<size_t>(T * H), 0.0f);
    experts_accumulate(pool, folded, x.data(), H, got.data());
    CHECK(got == want);
    CHECK(routed_busy.load() > 0.0);
    CHECK(shared_busy.load() > 0.0);
  }
}

}  // namespace engine_experts_suite

// Q4_K_R8 (`--interleave`, quant/interleaved.h) through the matrix kernels and the model:
// matmul_rows on an interleaved weight gives exactly what the eight-row reference gives
// for every row and token, whatever range of rows and batch of tokens a call takes;
// decoding and the transposed product read the same values as the plain Q4_K weight;
// a model loaded with interleave runs the same network (logits within float rounding,
// batches the same bits as single sequences), whether its Q4_K weights were converted at
// load (rearranged in place) or read from a GGUF file (copied).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/forward.h"
#include "engine/model.h"
#include "engine/repack.h"
#include "offload/weight_arena.h"
#include "quant/block_formats.h"
#include "quant/interleaved.h"
#include "support/golden.h"
#include "support/golden_gguf.h"
#include "support/scratch.h"

namespace engine_interleave_suite {

using namespace hearth;
using hearth::testing::golden_cases;
using hearth::testing::kGoldenDir;
using hearth::testing::TempDir;

namespace {

// A random Q4_K matrix (quantized from Gaussian values, so scales and mins vary).
struct Q4kMatrix {
  std::vector<uint8_t> bytes;
  WeightMatrix w;
  Q4kMatrix(int64_t rows, int64_t cols, uint32_t seed, GgmlType type = GgmlType::Q4_K) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> g(0.0f, 1.0f);
    const BlockFormat& f = block_format(type);
    bytes.resize(size_t(rows * f.row_bytes(cols)));
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      for (float& v : row) v = g(rng) * (1.0f + float(r % 5));
      f.quantize_row(row.data(), bytes.data() + r * f.row_bytes(cols), cols, nullptr);
    }
    w.dtype = *dtype_of(type);
    w.rows = rows;
    w.cols = cols;
    w.data = bytes.data();
  }
};

std::vector<float> gaussian(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = g(rng);
  return v;
}

// Row r of the interleaved weight (Q4_K_R8 or Q6_K_R16) against token t of x, by the
// reference: x quantized to Q8_K the way matmul_rows does, then the layout's scalar
// reference on r's group of rows.
float reference(const WeightMatrix& r8, const float* x, int64_t r) {
  const BlockFormat& q8k = block_format(GgmlType::Q8_K);
  std::vector<uint64_t> act(size_t(q8k.row_bytes(r8.cols) / 8 + 1));
  q8k.quantize_row(x, act.data(), r8.cols, nullptr);
  const void* a[1] = {act.data()};
  const int64_t unit = interleaved_unit_rows(r8.dtype), nb = r8.cols / kQK_K;
  float out[kQ6UnitRows];
  if (r8.dtype == DType::Q6_K_R16)
    vec_dot_q6_k_x16_scalar(static_cast<const BlockQ6_Kx16*>(r8.data) + (r / unit) * nb, a, 1, r8.cols, out);
  else
    vec_dot_q4_k_x8_scalar(static_cast<const BlockQ4_Kx8*>(r8.data) + (r / unit) * nb, a, 1, r8.cols, out);
  return out[r % unit];
}

std::vector<float> logits(const Model& m, ThreadPool& pool, const std::vector<std::vector<int32_t>>& seqs) {
  // All sequences in one batched step; the logits of each sequence's positions in order.
  Forward fwd(m, pool);
  KvCache cache(m.config(), 16);
  std::vector<SequenceChunk> in;
  size_t total = 0;
  for (const auto& s : seqs) {
    in.push_back({cache.add_sequence(), s});
    total += s.size();
  }
  std::vector<float> out(total * size_t(m.config().vocab_size));
  fwd.step(cache, in, out.data(), AttentionPath::kAuto);
  return out;
}

// The golden model with dense attention (index_topk past every sequence): with random
// weights the sparse model's key selection flips under any rounding change (see
// engine/repack_test.cc), which would hide what is compared here.
Model dense_golden(ModelLoadOptions o) {
  ModelConfig c = ModelConfig::load(kGoldenDir + "/config.json");
  c.index_topk = 1 << 16;
  o.threads = 2;
  return Model(std::move(c), WeightStore::open(kGoldenDir), o);
}

// The share of positions (rows of V logits) whose most probable token agrees.
double top1_agreement(const std::vector<float>& a, const std::vector<float>& b, int64_t V) {
  REQUIRE(a.size() == b.size());
  const int64_t positions = int64_t(a.size()) / V;
  int64_t same = 0;
  for (int64_t t = 0; t < positions; ++t) {
    const auto ia = std::max_element(a.begin() + t * V, a.begin() + (t + 1) * V) - a.begin();
    const auto ib = std::max_element(b.begin() + t * V, b.begin() + (t + 1) * V) - b.begin();
    same += ia == ib;
  }
  return double(same) / double(positions);
}

// |W(r, :) . x| with every product's magnitude: the scale of the float rounding in row r's
// dot product.
double magnitude(const WeightMatrix& w, int64_t r, const float* x) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  dequantize_row(w, r, 0, w.cols, row.data());
  double m = 0;
  for (int64_t c = 0; c < w.cols; ++c) m += std::fabs(double(row[size_t(c)]) * double(x[c]));
  return m;
}

// Whether interleaved computes what plain computes (one token, every row), within the
// rounding of two summation orders.
bool same_products(const WeightMatrix& plain, const WeightMatrix& interleaved) {
  const std::vector<float> x = gaussian(plain.cols, 77);
  std::vector<float> a(size_t(plain.rows)), b(a.size());
  matmul_rows(plain, x.data(), plain.cols, 1, a.data(), plain.rows, 0, plain.rows);
  matmul_rows(interleaved, x.data(), plain.cols, 1, b.data(), plain.rows, 0, plain.rows);
  for (int64_t r = 0; r < plain.rows; ++r)
    if (std::fabs(double(a[size_t(r)]) - double(b[size_t(r)])) > 1e-6 * magnitude(plain, r, x.data())) return false;
  return true;
}

}  // namespace

TEST_CASE("interleaved Q4_K: matmul_rows gives the eight-row reference's bits for any rows and tokens") {
  const Q4kMatrix plain(40, 512, 7);
  WeightArena arena;
  ThreadPool pool(2);
  REQUIRE(can_interleave(plain.w));
  const WeightMatrix r8 = interleave_matrix(plain.w, pool, arena);
  CHECK(r8.dtype == DType::Q4_K_R8);
  CHECK(r8.bytes() == plain.w.bytes());
  // 230 tokens: more than one block of tokens whose activations share L2 (224 at 512
  // columns), so the product walks the rows once per block.
  for (int64_t n : {1, 2, 3, 4, 5, 9, 230}) {
    CAPTURE(n);
    const std::vector<float> x = gaussian(n * r8.cols, uint32_t(100 + n));
    for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, 40}, {3, 37}, {8, 16}, {13, 14}}) {
      CAPTURE(r0);
      CAPTURE(r1);
      const float sentinel = -12345.0f;
      std::vector<float> y(size_t(n * r8.rows), sentinel), yp(size_t(n * r8.rows), sentinel);
      std::vector<float> y2(size_t(n * r8.rows), sentinel);
      // The default kernels (two groups per call where the CPU has AVX-512) and the
      // eight-row AVX2 kernel alone.
      matmul_rows(r8, x.data(), r8.cols, n, y.data(), r8.rows, r0, r1);
      matmul_rows(r8, x.data(), r8.cols, n, y2.data(), r8.rows, r0, r1, KernelIsa::kAvx2);
      CHECK(std::memcmp(y.data(), y2.data(), y.size() * sizeof(float)) == 0);
      matmul_rows(plain.w, x.data(), r8.cols, n, yp.data(), r8.rows, r0, r1);
      for (int64_t t = 0; t < n; ++t)
        for (int64_t r = 0; r < r8.rows; ++r) {
          const float got = y[size_t(t * r8.rows + r)];
          if (r < r0 || r >= r1) {
            CHECK(got == sentinel);  // rows outside the range are not written
            continue;
          }
          const float want = reference(r8, x.data() + t * r8.cols, r);
          CHECK(std::memcmp(&got, &want, sizeof got) == 0);
          // The plain Q4_K kernel: the same integer sums, another float order.
          const float p = yp[size_t(t * r8.rows + r)];
          CHECK(std::fabs(double(got) - double(p)) <= 1e-6 * magnitude(plain.w, r, x.data() + t * r8.cols));
        }
    }
  }
}

TEST_CASE("interleaved Q4_K: prepared activation rows, picked rows and the scalar isa give the same bits") {
  const Q4kMatrix plain(24, 256, 11);
  WeightArena arena;
  ThreadPool pool(1);
  const WeightMatrix r8 = interleave_matrix(plain.w, pool, arena);
  const int64_t n = 6;
  const std::vector<float> x = gaussian(n * r8.cols, 5);
  std::vector<float> direct(size_t(n * r8.rows));
  matmul_rows(r8, x.data(), r8.cols, n, direct.data(), r8.rows, 0, r8.rows);
  ActivationRows a;
  a.prepare(r8.dtype, x.data(), r8.cols, n, r8.cols);
  CHECK(a.fits(r8));
  CHECK(a.fits(plain.w));  // both take Q8_K rows
  const std::vector<int32_t> pick = {5, 0, 3};
  std::vector<float> picked(size_t(3 * r8.rows));
  matmul_rows(r8, a, pick.data(), 3, picked.data(), r8.rows, 0, r8.rows);
  for (size_t k = 0; k < pick.size(); ++k)
    for (int64_t r = 0; r < r8.rows; ++r)
      CHECK(picked[k * size_t(r8.rows) + size_t(r)] == direct[size_t(pick[k] * r8.rows + r)]);
  std::vector<float> scalar(size_t(n * r8.rows));
  matmul_rows(r8, x.data(), r8.cols, n, scalar.data(), r8.rows, 0, r8.rows, KernelIsa::kScalar);
  CHECK(std::memcmp(scalar.data(), direct.data(), scalar.size() * sizeof(float)) == 0);
}

TEST_CASE("interleaved Q4_K: decoding, the transposed product and row slices read the plain weight's values") {
  const Q4kMatrix plain(32, 768, 3);
  WeightArena arena;
  ThreadPool pool(2);
  const WeightMatrix r8 = interleave_matrix(plain.w, pool, arena);
  std::vector<float> a(size_t(r8.cols)), b(size_t(r8.cols));
  for (int64_t r : {0, 5, 8, 31}) {
    dequantize_row(r8, r, 0, r8.cols, a.data());
    dequantize_row(plain.w, r, 0, r8.cols, b.data());
    CHECK(a == b);
    dequantize_row(r8, r, 100, 600, a.data());  // not on block edges
    dequantize_row(plain.w, r, 100, 600, b.data());
    CHECK(std::equal(a.begin(), a.begin() + 500, b.begin()));
  }
  std::vector<float> da(size_t(6 * r8.cols)), db(da.size());
  decode_rows(r8, 10, 16, da.data(), r8.cols);
  decode_rows(plain.w, 10, 16, db.data(), r8.cols);
  CHECK(da == db);
  const std::vector<float> x = gaussian(7, 9);
  for (KernelIsa isa : {KernelIsa::kScalar, KernelIsa::kAuto}) {
    std::vector<float> ya(size_t(r8.cols), 0.5f), yb(ya);
    matmul_t_accumulate(r8, 6, 7, x.data(), ya.data(), 30, 700, isa);
    matmul_t_accumulate(plain.w, 6, 7, x.data(), yb.data(), 30, 700, isa);
    CHECK(ya == yb);
  }
  // A slice on group edges is a matrix of its own.
  const WeightMatrix s = row_slice(r8, 8, 24);
  const std::vector<float> v = gaussian(r8.cols, 4);
  std::vector<float> ys(16), yf(32);
  matmul_rows(s, v.data(), r8.cols, 1, ys.data(), 16, 0, 16);
  matmul_rows(r8, v.data(), r8.cols, 1, yf.data(), 32, 0, 32);
  CHECK(std::equal(ys.begin(), ys.end(), yf.begin() + 8));
  CHECK_THROWS_AS((void)row_slice(r8, 4, 16), std::invalid_argument);
  CHECK_THROWS_AS((void)row_slice(r8, 8, 20), std::invalid_argument);
}

TEST_CASE("interleaved Q4_K: in place and copied give the same bytes; what cannot be interleaved is refused") {
  Q4kMatrix plain(16, 512, 21);
  WeightArena arena;
  ThreadPool pool(2);
  const WeightMatrix copy = interleave_matrix(plain.w, pool, arena);
  const std::vector<uint8_t> before = plain.bytes;
  const WeightMatrix same = interleave_in_place(plain.w, pool);
  CHECK(same.data == plain.bytes.data());
  CHECK(same.dtype == DType::Q4_K_R8);
  CHECK(std::memcmp(same.data, copy.data, size_t(copy.bytes())) == 0);
  CHECK(plain.bytes != before);  // rearranged where it lay
  // And the rearrangement holds every byte: row r back out equals the original row r.
  std::vector<BlockQ4_K> row(2);
  for (int r = 0; r < 16; ++r) {
    deinterleave_q4_k_x8(static_cast<const BlockQ4_Kx8*>(copy.data) + (r / 8) * 2, 2, r % 8, row.data());
    CHECK(std::memcmp(row.data(), before.data() + size_t(r) * 2 * sizeof(BlockQ4_K), 2 * sizeof(BlockQ4_K)) == 0);
  }
  Q4kMatrix odd(12, 256, 1);  // not a whole number of groups
  CHECK_FALSE(can_interleave(odd.w));
  CHECK_THROWS_AS((void)interleave_matrix(odd.w, pool, arena), std::invalid_argument);
  WeightMatrix q8 = odd.w;
  q8.dtype = DType::Q8_0;
  q8.rows = 8;
  CHECK_FALSE(can_interleave(q8));
  CHECK_FALSE(can_interleave(copy));  // already interleaved
}

TEST_CASE("interleaved Q6_K: products, decoding, slices and in-place layout read the plain weight's values") {
  // 40 rows are whole groups of eight but not of sixteen: no Q6_K_R16.
  CHECK_FALSE(can_interleave(Q4kMatrix(40, 512, 13, GgmlType::Q6_K).w));
  // Q6_K takes the layout only where its kernels run (AVX2 and above); elsewhere it is
  // refused.
  Q4kMatrix plain(48, 512, 13, GgmlType::Q6_K);
  REQUIRE(plain.w.dtype == DType::Q6_K);
  CHECK_FALSE(can_interleave(plain.w, KernelIsa::kScalar));
  if (!has_avx2(best_isa())) {
    CHECK_FALSE(can_interleave(plain.w));
    MESSAGE("CPU lacks AVX2: Q6_K stays as stored, Q6_K_R16 is not tested here");
    return;
  }
  CHECK(can_interleave(plain.w, KernelIsa::kAvx2));
  REQUIRE(can_interleave(plain.w));
  WeightArena arena;
  ThreadPool pool(2);
  const WeightMatrix r8 = interleave_matrix(plain.w, pool, arena);
  CHECK(r8.dtype == DType::Q6_K_R16);
  CHECK(r8.bytes() == plain.w.bytes());
  // Tokens one at a time, in sixes and their remainders, and more than one block of
  // tokens; row ranges on and off the units' edges.
  for (int64_t n : {1, 2, 5, 6, 7, 13, 230}) {
    CAPTURE(n);
    const std::vector<float> x = gaussian(n * r8.cols, uint32_t(200 + n));
    for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, 48}, {3, 37}, {16, 32}, {8, 24}, {13, 14}}) {
      CAPTURE(r0);
      CAPTURE(r1);
      const float sentinel = -12345.0f;
      std::vector<float> y(size_t(n * r8.rows), sentinel), yp(y.size(), sentinel), ys(y.size(), sentinel);
      matmul_rows(r8, x.data(), r8.cols, n, y.data(), r8.rows, r0, r1);
      matmul_rows(r8, x.data(), r8.cols, n, ys.data(), r8.rows, r0, r1, KernelIsa::kScalar);
      CHECK(std::memcmp(y.data(), ys.data(), y.size() * sizeof(float)) == 0);
      for (KernelIsa isa : {KernelIsa::kAvx2, KernelIsa::kAvx512}) {  // the levels below the CPU's best
        if (resolve_isa(isa) != isa) continue;
        matmul_rows(r8, x.data(), r8.cols, n, ys.data(), r8.rows, r0, r1, isa);
        CHECK(std::memcmp(y.data(), ys.data(), y.size() * sizeof(float)) == 0);
      }
      matmul_rows(plain.w, x.data(), r8.cols, n, yp.data(), r8.rows, r0, r1);
      for (int64_t t = 0; t < n; ++t)
        for (int64_t r = 0; r < r8.rows; ++r) {
          const float got = y[size_t(t * r8.rows + r)];
          if (r < r0 || r >= r1) {
            CHECK(got == sentinel);
            continue;
          }
          const float want = reference(r8, x.data() + t * r8.cols, r);
          CHECK(std::memcmp(&got, &want, sizeof got) == 0);
          const float p = yp[size_t(t * r8.rows + r)];
          CHECK(std::fabs(double(got) - double(p)) <= 1e-6 * magnitude(plain.w, r, x.data() + t * r8.cols));
        }
    }
  }
  // Decoding and the transposed product read the plain values; slices on group edges.
  std::vector<float> a(size_t(r8.cols)), b(size_t(r8.cols));
  for (int64_t r : {0, 5, 8, 15, 16, 47}) {
    dequantize_row(r8, r, 0, r8.cols, a.data());
    dequantize_row(plain.w, r, 0, r8.cols, b.data());
    CHECK(a == b);
  }
  const std::vector<float> x7 = gaussian(7, 9);
  std::vector<float> ta(size_t(r8.cols), 0.5f), tb(ta);
  matmul_t_accumulate(r8, 6, 7, x7.data(), ta.data(), 30, 500);
  matmul_t_accumulate(plain.w, 6, 7, x7.data(), tb.data(), 30, 500);
  CHECK(ta == tb);
  const WeightMatrix slice = row_slice(r8, 16, 32);
  const std::vector<float> v = gaussian(r8.cols, 4);
  std::vector<float> yslice(16), yfull(48);
  matmul_rows(slice, v.data(), r8.cols, 1, yslice.data(), 16, 0, 16);
  matmul_rows(r8, v.data(), r8.cols, 1, yfull.data(), 48, 0, 48);
  CHECK(std::equal(yslice.begin(), yslice.end(), yfull.begin() + 16));
  CHECK_THROWS_AS((void)row_slice(r8, 8, 24), std::invalid_argument);  // a Q4_K_R8 group, not a unit
  // In place: the same bytes as the copy.
  const WeightMatrix same = interleave_in_place(plain.w, pool);
  CHECK(same.dtype == DType::Q6_K_R16);
  CHECK(std::memcmp(same.data, r8.data, size_t(r8.bytes())) == 0);
  CHECK_FALSE(can_interleave(r8));  // already interleaved
}

TEST_CASE("interleaved Q4_K: a model converted at load runs the same network, batches the same bits") {
  ModelLoadOptions o;
  o.repack = DType::Q4_K;
  const Model plain = dense_golden(o);
  o.interleave = true;
  const Model r8 = dense_golden(o);
  CHECK(plain.repack_summary().interleaved == 0);
  CHECK(r8.repack_summary().interleaved > 0);
  // Which weights: Q4_K ones in whole groups of eight, not kv_b.
  CHECK(r8.layers[1].moe.experts[0].gate.dtype == DType::Q4_K_R8);  // 96 x 256
  CHECK(r8.layers[1].moe.experts[0].down.dtype == DType::Q8_0);     // 96 columns: Q8_0
  CHECK(r8.layers[0].dense.up.dtype == DType::Q4_K_R8);
  CHECK(r8.lm_head.dtype == DType::Q4_K_R8);
  CHECK(r8.layers[0].attn.kv_b.dtype != DType::Q4_K_R8);
  CHECK(r8.footprint().total().bytes == plain.footprint().total().bytes);

  // Every interleaved weight computes what its plain original computes.
  auto check = [&](const WeightMatrix& p, const WeightMatrix& q) {
    if (q.dtype != DType::Q4_K_R8) return 0;
    CHECK(p.dtype == DType::Q4_K);
    CHECK(same_products(p, q));
    return 1;
  };
  int64_t seen = check(plain.lm_head, r8.lm_head);
  for (size_t l = 0; l < plain.layers.size(); ++l) {
    const Layer &a = plain.layers[l], &b = r8.layers[l];
    for (auto [p, q] : {std::pair{&a.attn.q_a, &b.attn.q_a}, {&a.attn.q_b, &b.attn.q_b}, {&a.attn.kv_a, &b.attn.kv_a},
                        {&a.attn.o, &b.attn.o}, {&a.attn.indexer.wq_b, &b.attn.indexer.wq_b},
                        {&a.attn.indexer.wk, &b.attn.indexer.wk}, {&a.dense.gate, &b.dense.gate},
                        {&a.dense.up, &b.dense.up}, {&a.dense.down, &b.dense.down}, {&a.moe.shared.gate, &b.moe.shared.gate},
                        {&a.moe.shared.up, &b.moe.shared.up}, {&a.moe.shared.down, &b.moe.shared.down}})
      seen += check(*p, *q);
    for (size_t e = 0; e < a.moe.experts.size(); ++e)
      for (auto [p, q] : {std::pair{&a.moe.experts[e].gate, &b.moe.experts[e].gate},
                          {&a.moe.experts[e].up, &b.moe.experts[e].up}, {&a.moe.experts[e].down, &b.moe.experts[e].down}})
        seen += check(*p, *q);
  }
  CHECK(seen == r8.repack_summary().interleaved);

  // The network: rounding differences grow through a random network's routing (see
  // engine/repack_test.cc), so the logits are compared by their top token.
  ThreadPool pool(2);
  std::vector<std::vector<int32_t>> seqs;
  for (const auto& g : golden_cases()) seqs.push_back(g.tokens);
  const std::vector<float> want = logits(plain, pool, seqs);
  const std::vector<float> got = logits(r8, pool, seqs);
  const double agree = top1_agreement(got, want, plain.config().vocab_size);
  MESSAGE("top-1 agreement with the plain Q4_K model: " << agree);
  CHECK(agree >= 0.9);
  // Each sequence alone gives the bits it got in the batch.
  size_t off = 0;
  for (const auto& s : seqs) {
    const std::vector<float> alone = logits(r8, pool, {s});
    CHECK(std::memcmp(alone.data(), got.data() + off, alone.size() * sizeof(float)) == 0);
    off += alone.size();
  }
}

TEST_CASE("interleaved Q4_K: a GGUF's mapped Q4_K weights are copied, and --no-mmap holds them once") {
  TempDir tmp("interleave");
  const std::filesystem::path p =
      hearth::testing::golden_as_gguf(tmp.path / "tiny-q4k.gguf", uniform_type_for(DType::Q4_K));
  ModelLoadOptions o;
  o.threads = 2;
  const Model plain = Model::load(p.string(), o);
  o.interleave = true;
  const Model r8 = Model::load(p.string(), o);
  o.in_memory = true;
  const Model both = Model::load(p.string(), o);
  REQUIRE(plain.layers[1].moe.experts[0].gate.dtype == DType::Q4_K);
  CHECK(r8.layers[1].moe.experts[0].gate.dtype == DType::Q4_K_R8);
  CHECK(r8.repack_summary().interleaved > 0);
  // The file is still mapped and unchanged: the plain model reads it.
  ThreadPool pool(2);
  std::vector<std::vector<int32_t>> seqs = {golden_cases()[0].tokens};
  const std::vector<float> want = logits(plain, pool, seqs);
  const std::vector<float> got = logits(r8, pool, seqs);
  CHECK(logits(plain, pool, seqs) == want);
  CHECK(logits(both, pool, seqs) == got);
  CHECK(same_products(plain.layers[1].moe.experts[0].gate, r8.layers[1].moe.experts[0].gate));
  CHECK(same_products(plain.lm_head, r8.lm_head));
}

}  // namespace engine_interleave_suite

// The CUDA device model (engine/cuda/cuda_device_model.h) against the CPU engine on the
// golden tiny V3.2 model: its attention kernels one by one against the CPU's operations
// (bit for bit where the design says so), one attention block against attention_forward,
// and whole forward passes (prefill, decode, a batch, experts split between GPU and CPU)
// through OffloadForward against the CPU Forward's logits.
//
// Without a GPU (or in a build without CUDA) every test says "skipped: no GPU" and returns.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "engine/forward.h"
#include "offload/device.h"
#include "support/golden.h"

#if HEARTH_HAVE_CUDA
#include "engine/cuda/cuda_device_model.h"
#include "engine/cuda/mla_kernels.h"
#include "engine/index_scores.h"
#include "engine/layers.h"
#include "engine/offload_forward.h"
#include "engine/ops.h"
#include "engine/rope.h"
#include "engine/safetensors.h"
#include "quant/cuda/kernels.h"
#include "quant/numbers.h"
#endif

namespace cuda_cuda_model_suite {

using namespace hearth;
using hearth::testing::golden_cases;
using hearth::testing::GoldenCase;
using hearth::testing::kGoldenDir;

namespace {

void say_skipped(const std::string& why) {
  MESSAGE("skipped: no GPU (" << why << ")");
  std::fprintf(stderr, "skipped: no GPU (%s)\n", why.c_str());
}

}  // namespace

#if !HEARTH_HAVE_CUDA

TEST_CASE("cuda model: skipped in a build without CUDA") { say_skipped("this build has no CUDA backend"); }

#else

namespace {

constexpr int64_t kPageTokens = 16;
constexpr int64_t kMaxPages = 64;

const Model& tiny_model() { return hearth::testing::golden_model(); }

// The GPU, or nullptr after saying why the test is skipped.
std::unique_ptr<Device> gpu() {
  std::string why;
  try {
    if (cuda_device_present()) return make_cuda_device();
    why = "no CUDA device present";
  } catch (const std::exception& e) {
    why = e.what();
  }
  say_skipped(why);
  return nullptr;
}

template <class T> DeviceBuffer to_device(Device& d, const std::vector<T>& v) {
  const int64_t bytes = int64_t(v.size() * sizeof(T));
  DeviceBuffer b(d, std::max<int64_t>(bytes, 1));
  if (bytes > 0) d.copy_to_device(0, b.get(), v.data(), bytes, "test upload");
  d.synchronize();
  return b;
}

template <class T> std::vector<T> to_host(Device& d, const void* p, size_t n) {
  std::vector<T> v(n);
  if (n > 0) d.copy_to_host(0, v.data(), p, int64_t(n * sizeof(T)), "test download");
  d.synchronize();
  return v;
}

// (cos_i, sin_i) of the CPU Rope at `pos`, interleaved: rotating the unit pairs (1, 0).
std::vector<float> rope_cs(const Rope& rope, int64_t pos) {
  std::vector<float> v(size_t(rope.dim()));
  for (size_t i = 0; i < v.size(); ++i) v[i] = i % 2 == 0 ? 1.0f : 0.0f;
  rope.apply_interleaved(v.data(), pos);
  return v;
}

int64_t bit_mismatches(const float* a, const float* b, size_t n) {
  int64_t bad = 0;
  for (size_t i = 0; i < n; ++i) bad += std::memcmp(a + i, b + i, sizeof(float)) != 0;
  return bad;
}

// How far logits `got` are from `want`: the largest difference, the logits' scale (the
// largest |want|), and on how many of the rows the top token agrees.
struct LogitGap {
  double worst = 0, scale = 0;
  int64_t rows = 0, same = 0;
};
LogitGap logit_gap(const std::vector<float>& got, const std::vector<float>& want, int64_t V) {
  REQUIRE(got.size() == want.size());
  REQUIRE(!want.empty());
  LogitGap g;
  g.rows = int64_t(want.size()) / V;
  for (int64_t t = 0; t < g.rows; ++t) {
    const float* a = got.data() + t * V;
    const float* b = want.data() + t * V;
    int64_t ia = 0, ib = 0;
    for (int64_t v = 0; v < V; ++v) {
      g.worst = std::max(g.worst, double(std::fabs(a[v] - b[v])));
      g.scale = std::max(g.scale, double(std::fabs(b[v])));
      if (a[v] > a[ia]) ia = v;
      if (b[v] > b[ib]) ib = v;
    }
    g.same += ia == ib;
  }
  return g;
}

// GPU logits against the CPU's: the largest difference at most `tolerance` of the logits'
// scale, and the same top token on at least `same_percent` of the rows.
void check_logits_close(const std::vector<float>& gpu_logits, const std::vector<float>& cpu_logits, int64_t V,
                        const std::string& what, double tolerance = 2e-3, int64_t same_percent = 99) {
  const LogitGap g = logit_gap(gpu_logits, cpu_logits, V);
  MESSAGE(what << ": rows=" << g.rows << " max|dlogit|=" << g.worst << " logit scale=" << g.scale
                << " same argmax=" << g.same);
  CHECK(std::isfinite(g.worst));
  CHECK(g.worst <= tolerance * g.scale);
  CHECK(g.same * 100 >= g.rows * same_percent);
}

// Every logit of `tokens` as one chunk, or one token per step, on the CPU or through the GPU.
template <class F> std::vector<float> run_sequence(F& fwd, const std::vector<int32_t>& tokens, bool decode) {
  const Model& m = fwd.model();
  const int64_t V = m.config().vocab_size;
  KvCache cache(m.config(), kPageTokens);
  cache.set_page_limit(kMaxPages);
  const SeqId s = cache.add_sequence();
  std::vector<float> logits(tokens.size() * size_t(V));
  if (!decode) {
    fwd.step(cache, {{s, tokens}}, logits.data());
  } else {
    for (size_t i = 0; i < tokens.size(); ++i)
      fwd.step(cache, {{s, std::span<const int32_t>(&tokens[i], 1)}}, logits.data() + i * size_t(V));
  }
  return logits;
}

// Sequence A (64 tokens) prefilled in two chunks, the second batched with all of B's prompt,
// then both decoding together and A finishing alone (as the golden batch test).
template <class F> std::pair<std::vector<float>, std::vector<float>> run_batch(F& fwd) {
  const Model& m = fwd.model();
  const int64_t V = m.config().vocab_size;
  const auto& cases = golden_cases();
  const GoldenCase& a = cases[3];
  const GoldenCase& b = cases[2];
  KvCache cache(m.config(), kPageTokens);
  cache.set_page_limit(kMaxPages);
  const SeqId sa = cache.add_sequence(), sb = cache.add_sequence();
  std::vector<float> la(a.tokens.size() * size_t(V)), lb(b.tokens.size() * size_t(V));
  std::span<const int32_t> ta(a.tokens), tb(b.tokens);
  fwd.step(cache, {{sa, ta.subspan(0, 10)}}, la.data());
  std::vector<float> both((30 + 20) * size_t(V));
  fwd.step(cache, {{sa, ta.subspan(10, 30)}, {sb, tb.subspan(0, 20)}}, both.data());
  std::copy_n(both.begin(), 30 * V, la.begin() + 10 * V);
  std::copy_n(both.begin() + 30 * V, 20 * V, lb.begin());
  for (int64_t i = 0; i < 4; ++i) {
    std::vector<float> step(2 * size_t(V));
    fwd.step(cache, {{sb, tb.subspan(size_t(20 + i), 1)}, {sa, ta.subspan(size_t(40 + i), 1)}}, step.data());
    std::copy_n(step.begin(), V, lb.begin() + (20 + i) * V);
    std::copy_n(step.begin() + V, V, la.begin() + (40 + i) * V);
  }
  fwd.step(cache, {{sa, ta.subspan(44)}}, la.data() + 44 * V);
  return {la, lb};
}

std::function<bool(int64_t, int64_t)> all_experts() {
  return [](int64_t, int64_t) { return true; };
}

}  // namespace

TEST_CASE("cuda kernels: top-k selection picks the CPU's positions - ties to the earlier one") {
  auto dev = gpu();
  if (!dev) return;
  const int64_t topk = 8, ld = 3000;
  // n = pos + 1 positions per row: 5 and 8 attend to everything (left alone), the others
  // select; several rows are full of ties (few distinct values, all equal, +0 against -0).
  const std::vector<int32_t> pos = {4, 7, 8, 99, 2999, 999, 1500, 600, 1023};
  const int64_t rows = int64_t(pos.size());
  std::mt19937 rng(7);
  std::vector<float> scores(size_t(rows * ld), 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t s = 0; s <= pos[size_t(r)]; ++s) {
      float v = 0;
      switch (r % 5) {
        case 0: v = float(int(rng() % 6)) * 0.5f - 1.0f; break;           // six values: heavy ties
        case 1: v = std::uniform_real_distribution<float>(-3, 3)(rng); break;  // distinct
        case 2: v = 0.25f; break;                                        // all equal
        case 3: v = (rng() % 2) ? 0.0f : -0.0f; if (rng() % 97 == 0) v = 1.0f + float(s % 3); break;
        default: v = -std::uniform_real_distribution<float>(0, 1)(rng) * 1e-30f; break;  // tiny negatives
      }
      scores[size_t(r * ld + s)] = v;
    }
  }
  DeviceBuffer sc = to_device(*dev, scores), rp = to_device(*dev, pos);
  DeviceBuffer picked = to_device(*dev, std::vector<int32_t>(size_t(rows * topk), -7));
  dev->launch(0, "select_topk", [&](void* ns) {
    cuda_mla::select_topk(sc.as<float>(), ld, rp.as<int32_t>(), rows, topk, picked.as<int32_t>(), ns);
  });
  const std::vector<int32_t> got = to_host<int32_t>(*dev, picked.get(), size_t(rows * topk));
  for (int64_t r = 0; r < rows; ++r) {
    INFO("row " << r << " n=" << pos[size_t(r)] + 1);
    const int64_t n = pos[size_t(r)] + 1;
    std::vector<int32_t> want(size_t(topk), -7);
    if (n > topk) {
      // The CPU's rule (engine/attention.cc select_positions).
      std::vector<int32_t> all(static_cast<size_t>(n));
      std::iota(all.begin(), all.end(), 0);
      const float* s = scores.data() + r * ld;
      std::partial_sort(all.begin(), all.begin() + topk, all.end(), [&](int32_t a, int32_t b) {
        return s[a] > s[b] || (s[a] == s[b] && a < b);
      });
      all.resize(size_t(topk));
      std::sort(all.begin(), all.end());
      want = all;
    }
    CHECK(std::vector<int32_t>(got.begin() + r * topk, got.begin() + (r + 1) * topk) == want);
  }
}

TEST_CASE("cuda kernels: indexer queries are the CPU's rope - Hadamard - FP8 bit for bit") {
  auto dev = gpu();
  if (!dev) return;
  const ModelConfig& c = tiny_model().config();
  const Rope rope(c);
  const int64_t heads = c.index_n_heads, dim = c.index_head_dim, R = c.qk_rope_head_dim;
  const std::vector<int64_t> positions = {0, 5, 1000, 40000};
  const int64_t rows = int64_t(positions.size());
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(size_t(rows * heads * dim)), w(size_t(rows * heads)), cs;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t h = 0; h < heads; ++h) {
      // Scales from below the 1e-4 floor of amax to far above 448.
      const float scale = h == 0 ? 1e-7f : h == 1 ? 3e3f : std::exp2(float(int(rng() % 20) - 10));
      for (int64_t d = 0; d < dim; ++d) q[size_t((r * heads + h) * dim + d)] = normal(rng) * scale;
      w[size_t(r * heads + h)] = normal(rng);
    }
    const std::vector<float> row_cs = rope_cs(rope, positions[size_t(r)]);
    cs.insert(cs.end(), row_cs.begin(), row_cs.end());
  }
  const float head_scale = float(1.0 / std::sqrt(double(heads)) / std::sqrt(double(dim)));
  DeviceBuffer qd = to_device(*dev, q), wd = to_device(*dev, w), csd = to_device(*dev, cs);
  dev->launch(0, "indexer_queries", [&](void* ns) {
    cuda_mla::indexer_queries(qd.as<float>(), wd.as<float>(), rows, heads, dim, R, csd.as<float>(), head_scale, ns);
  });
  const std::vector<float> gq = to_host<float>(*dev, qd.get(), q.size());
  const std::vector<float> gw = to_host<float>(*dev, wd.get(), w.size());
  // The CPU's steps (engine/attention.cc indexer_prepare).
  const float* lut = fp8_e4m3_table();
  std::vector<float> want_q(q.size()), want_w(w.size());
  std::vector<uint8_t> code(static_cast<size_t>(dim));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < heads; ++h) {
      float* qh = q.data() + (r * heads + h) * dim;
      rope.apply_halves(qh, positions[size_t(r)]);
      hadamard_transform(qh, dim);
      const float s = quantize_fp8_block_pow2(qh, dim, code.data());
      for (int64_t d = 0; d < dim; ++d) want_q[size_t((r * heads + h) * dim + d)] = lut[code[size_t(d)]];
      want_w[size_t(r * heads + h)] = w[size_t(r * heads + h)] * head_scale * s;
    }
  CHECK(bit_mismatches(gq.data(), want_q.data(), q.size()) == 0);
  CHECK(bit_mismatches(gw.data(), want_w.data(), w.size()) == 0);
}

namespace {

// A KV page pool on the host and the GPU: one sequence of `length` positions whose pages
// are a shuffled subset of the pool, every entry of `layer` filled with random latents,
// rope keys, FP8 index keys and power-of-two scales.
struct RandomPool {
  cuda_mla::KvPages kv;
  cuda_mla::MlaShape shape;
  int64_t layer = 1, layers = 2, pages = 0, index_dim = 0;
  std::vector<int32_t> table;
  std::vector<uint8_t> host;
  DeviceBuffer dev;

  RandomPool(Device& d, const ModelConfig& c, int64_t length, std::mt19937& rng) {
    shape.heads = c.num_attention_heads;
    shape.nope = c.qk_nope_head_dim;
    shape.rope = c.qk_rope_head_dim;
    shape.v = c.v_head_dim;
    shape.kv_rank = c.kv_lora_rank;
    index_dim = c.index_head_dim;
    kv.page_tokens = 4;
    kv.latent_off = 0;
    kv.rope_off = shape.kv_rank * 4;
    kv.iscale_off = kv.rope_off + shape.rope * 4;
    kv.ikey_off = kv.iscale_off + 4;
    kv.token_bytes = (kv.ikey_off + index_dim + 15) / 16 * 16;
    kv.page_bytes = kv.page_tokens * layers * kv.token_bytes;
    const int64_t used = (length + kv.page_tokens - 1) / kv.page_tokens;
    pages = used + 7;
    std::vector<int32_t> ids(static_cast<size_t>(pages));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    table.assign(ids.begin(), ids.begin() + used);
    host.assign(size_t(pages * kv.page_bytes), 0);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int64_t p = 0; p < length; ++p) {
      uint8_t* e = entry(p);
      auto* lat = reinterpret_cast<float*>(e + kv.latent_off);
      auto* kpe = reinterpret_cast<float*>(e + kv.rope_off);
      for (int64_t i = 0; i < shape.kv_rank; ++i) lat[i] = normal(rng);
      for (int64_t i = 0; i < shape.rope; ++i) kpe[i] = normal(rng);
      *reinterpret_cast<float*>(e + kv.iscale_off) = std::exp2(float(int(rng() % 9) - 12));
      for (int64_t i = 0; i < index_dim; ++i) {
        uint8_t code = uint8_t(rng() & 0xff);
        if ((code & 0x7f) == 0x7f) code = 0x10;  // no NaN codes
        e[kv.ikey_off + i] = code;
      }
    }
    dev = to_device(d, host);
    kv.base = dev.as<uint8_t>();
  }
  uint8_t* entry(int64_t p) {
    return host.data() + table[size_t(p / kv.page_tokens)] * kv.page_bytes +
           (layer * kv.page_tokens + p % kv.page_tokens) * kv.token_bytes;
  }
};

// Step tables for rows of the pool's one sequence at `pos` (rope cos/sin unused: zeros).
struct RowTables {
  DeviceBuffer pos, row_table, tables, cs;
  cuda_mla::StepTables st;
  RowTables(Device& d, const RandomPool& pool, const std::vector<int32_t>& positions) {
    pos = to_device(d, positions);
    row_table = to_device(d, std::vector<int32_t>(positions.size(), 0));
    tables = to_device(d, pool.table);
    cs = to_device(d, std::vector<float>(positions.size() * size_t(pool.shape.rope), 0.0f));
    st.row_pos = pos.as<int32_t>();
    st.row_table = row_table.as<int32_t>();
    st.tables = tables.as<int32_t>();
    st.rope_cs = cs.as<float>();
  }
};

}  // namespace

TEST_CASE("cuda kernels: index scores equal the CPU's bit for bit through the page table") {
  auto dev = gpu();
  if (!dev) return;
  const ModelConfig& c = tiny_model().config();
  std::mt19937 rng(3);
  RandomPool pool(*dev, c, 300, rng);
  const int64_t heads = c.index_n_heads, D = c.index_head_dim, topk = 8;
  const std::vector<int32_t> pos = {3, 7, 8, 100, 299};  // the first two attend to all: no scores
  const int64_t rows = int64_t(pos.size()), ld = 300;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(size_t(rows * heads * D)), w(size_t(rows * heads));
  const float* lut = fp8_e4m3_table();
  for (float& x : q) x = lut[rng() % 126];  // decoded FP8 values, as the queries are
  for (float& x : w) x = normal(rng) * 0.01f;
  RowTables rt(*dev, pool, pos);
  DeviceBuffer qd = to_device(*dev, q), wd = to_device(*dev, w);
  DeviceBuffer sd = to_device(*dev, std::vector<float>(size_t(rows * ld), -1.0f));
  dev->launch(0, "index_scores", [&](void* ns) {
    cuda_mla::index_scores(pool.kv, rt.st, pool.layer, 0, rows, 300, qd.as<float>(), wd.as<float>(), heads, D, topk,
                           sd.as<float>(), ld, ns);
  });
  const std::vector<float> got = to_host<float>(*dev, sd.get(), size_t(rows * ld));
  for (int64_t r = 0; r < rows; ++r) {
    INFO("row " << r << " at position " << pos[size_t(r)]);
    const int64_t n = pos[size_t(r)] + 1;
    std::vector<float> want(static_cast<size_t>(ld), -1.0f);
    if (n > topk) {
      // The device's entries, laid out as the CPU kernel takes them: code d of position s
      // at codes[d * n + s].
      std::vector<uint8_t> codes(static_cast<size_t>(D * n));
      std::vector<float> scales;
      for (int64_t s = 0; s < n; ++s) {
        for (int64_t d = 0; d < D; ++d) codes[size_t(d * n + s)] = pool.entry(s)[pool.kv.ikey_off + d];
        scales.push_back(*reinterpret_cast<const float*>(pool.entry(s) + pool.kv.iscale_off));
      }
      index_scores(q.data() + r * heads * D, w.data() + r * heads, heads, D, codes.data(), n, scales.data(), n,
                   want.data(), KernelIsa::kScalar);
    }
    CHECK(bit_mismatches(got.data() + r * ld, want.data(), size_t(ld)) == 0);
  }
}

TEST_CASE("cuda kernels: absorbed attention over picked positions equals a direct computation") {
  auto dev = gpu();
  if (!dev) return;
  const ModelConfig& c = tiny_model().config();
  std::mt19937 rng(9);
  RandomPool pool(*dev, c, 150, rng);
  const cuda_mla::MlaShape& s = pool.shape;
  const int64_t topk = 8, QK = s.qk(), stride = s.nope + s.v, R = s.kv_rank;
  // Rows up to topk attend to every position; the others to a random sorted pick; the last
  // row's 150 positions span several key tiles when nothing is picked.
  const std::vector<int32_t> pos = {0, 7, 8, 50, 149};
  const int64_t rows = int64_t(pos.size());
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(size_t(rows * s.heads * QK)), kvb(size_t(s.heads * stride * R));
  for (float& x : q) x = normal(rng);
  for (float& x : kvb) x = normal(rng) * 0.1f;
  std::vector<int32_t> picked(size_t(rows * topk), 0);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t n = pos[size_t(r)] + 1;
    if (n <= topk) continue;
    std::vector<int32_t> all(static_cast<size_t>(n));
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    all.resize(size_t(topk));
    std::sort(all.begin(), all.end());
    std::copy(all.begin(), all.end(), picked.begin() + r * topk);
  }
  const float scale = float(c.attention_scale());
  // The reference, in double: W_uk^T q_nope against the latents, softmax, W_uv on the mix.
  auto reference = [&](bool use_picked) {
    std::vector<float> out(size_t(rows * s.heads * s.v));
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = pos[size_t(r)] + 1;
      std::vector<int64_t> keys;
      for (int64_t j = 0; j < (use_picked && n > topk ? topk : n); ++j)
        keys.push_back(use_picked && n > topk ? picked[size_t(r * topk + j)] : j);
      for (int64_t h = 0; h < s.heads; ++h) {
        const float* qh = q.data() + (r * s.heads + h) * QK;
        std::vector<double> ql(size_t(R), 0.0), ol(size_t(R), 0.0), sc;
        for (int64_t i = 0; i < s.nope; ++i)
          for (int64_t cc = 0; cc < R; ++cc) ql[size_t(cc)] += double(qh[i]) * kvb[size_t((h * stride + i) * R + cc)];
        double mx = -1e300;
        for (int64_t k : keys) {
          const auto* lat = reinterpret_cast<const float*>(pool.entry(k) + pool.kv.latent_off);
          const auto* kpe = reinterpret_cast<const float*>(pool.entry(k) + pool.kv.rope_off);
          double d = 0;
          for (int64_t cc = 0; cc < R; ++cc) d += ql[size_t(cc)] * lat[cc];
          for (int64_t i = 0; i < s.rope; ++i) d += double(qh[s.nope + i]) * kpe[i];
          sc.push_back(d * scale);
          mx = std::max(mx, sc.back());
        }
        double sum = 0;
        for (double& x : sc) sum += (x = std::exp(x - mx));
        for (size_t j = 0; j < keys.size(); ++j) {
          const auto* lat = reinterpret_cast<const float*>(pool.entry(keys[j]) + pool.kv.latent_off);
          for (int64_t cc = 0; cc < R; ++cc) ol[size_t(cc)] += sc[j] / sum * lat[cc];
        }
        for (int64_t v = 0; v < s.v; ++v) {
          double o = 0;
          for (int64_t cc = 0; cc < R; ++cc) o += double(kvb[size_t((h * stride + s.nope + v) * R + cc)]) * ol[size_t(cc)];
          out[size_t((r * s.heads + h) * s.v + v)] = float(o);
        }
      }
    }
    return out;
  };
  RowTables rt(*dev, pool, pos);
  DeviceBuffer qd = to_device(*dev, q), kvbd = to_device(*dev, kvb), pd = to_device(*dev, picked);
  for (bool use_picked : {true, false}) {
    const std::vector<float> want = reference(use_picked);
    double want_scale = 0;
    for (float x : want) want_scale = std::max(want_scale, double(std::fabs(x)));
    // sm_count 0: as many heads per block as fit; a huge one: one head per block.
    for (int sm : {0, 1 << 20}) {
      // All rows at once, and the last three as a group of their own (row0 = 2).
      for (int64_t row0 : {int64_t(0), int64_t(2)}) {
        INFO("picked=" << use_picked << " sm_count=" << sm << " row0=" << row0);
        DeviceBuffer od = to_device(*dev, std::vector<float>(want.size(), 0.0f));
        dev->launch(0, "absorbed_attention", [&](void* ns) {
          cuda_mla::absorbed_attention(pool.kv, rt.st, pool.layer, row0, rows - row0, s, qd.as<float>(),
                                       kvbd.as<float>(), use_picked ? pd.as<int32_t>() + row0 * topk : nullptr, topk,
                                       scale, od.as<float>(), sm, ns);
        });
        const std::vector<float> got = to_host<float>(*dev, od.get(), want.size());
        double worst = 0;
        for (size_t i = size_t(row0 * s.heads * s.v); i < want.size(); ++i)
          worst = std::max(worst, double(std::fabs(got[i] - want[i])));
        for (size_t i = 0; i < size_t(row0 * s.heads * s.v); ++i) CHECK(got[i] == 0.0f);  // rows outside: untouched
        CHECK(worst <= 1e-4 * want_scale);
      }
    }
  }
}

TEST_CASE("cuda kernels: cache entries land in the right page and slot with the CPU's values") {
  auto dev = gpu();
  if (!dev) return;
  const ModelConfig& c = tiny_model().config();
  const Rope rope(c);
  cuda_mla::MlaShape shape;
  shape.heads = c.num_attention_heads;
  shape.nope = c.qk_nope_head_dim;
  shape.rope = c.qk_rope_head_dim;
  shape.v = c.v_head_dim;
  shape.kv_rank = c.kv_lora_rank;
  const int64_t D = c.index_head_dim, KVR = shape.kv_rank, R = shape.rope, QK = shape.qk();
  // Three layers of 4-token pages; the rows are positions 3..8 of one sequence whose pages
  // are 2, 0, 3 (out of 4), written for layer 1.
  cuda_mla::KvPages kv;
  kv.page_tokens = 4;
  kv.latent_off = 0;
  kv.rope_off = KVR * 4;
  kv.iscale_off = kv.rope_off + R * 4;
  kv.ikey_off = kv.iscale_off + 4;
  kv.token_bytes = (kv.ikey_off + D + 15) / 16 * 16;
  const int64_t layers = 3, layer = 1, pages = 4;
  kv.page_bytes = kv.page_tokens * layers * kv.token_bytes;
  const std::vector<int32_t> table = {2, 0, 3};
  const std::vector<int32_t> pos = {3, 4, 5, 6, 7, 8};
  const int64_t rows = int64_t(pos.size());

  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto randoms = [&](int64_t n, float mean, float sd) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = mean + sd * normal(rng);
    return v;
  };
  std::vector<float> q = randoms(rows * shape.heads * QK, 0, 1), kva = randoms(rows * (KVR + R), 0, 2);
  const std::vector<float> kv_norm = randoms(KVR, 1, 0.1f), ik = randoms(rows * D, 0.3f, 1.5f);
  const std::vector<float> nw = randoms(D, 1, 0.2f), nb = randoms(D, 0, 0.1f);
  std::vector<float> cs;
  for (int32_t p : pos) {
    const std::vector<float> row_cs = rope_cs(rope, p);
    cs.insert(cs.end(), row_cs.begin(), row_cs.end());
  }
  DeviceBuffer pool = to_device(*dev, std::vector<uint8_t>(size_t(pages * kv.page_bytes), 0));
  kv.base = pool.as<uint8_t>();
  DeviceBuffer posd = to_device(*dev, pos), rtd = to_device(*dev, std::vector<int32_t>(size_t(rows), 0));
  DeviceBuffer tabd = to_device(*dev, table), csd = to_device(*dev, cs);
  cuda_mla::StepTables st;
  st.row_pos = posd.as<int32_t>();
  st.row_table = rtd.as<int32_t>();
  st.tables = tabd.as<int32_t>();
  st.rope_cs = csd.as<float>();
  DeviceBuffer qd = to_device(*dev, q), kvad = to_device(*dev, kva), kvnd = to_device(*dev, kv_norm);
  DeviceBuffer ikd = to_device(*dev, ik), nwd = to_device(*dev, nw), nbd = to_device(*dev, nb);
  const float eps = float(c.rms_norm_eps);
  dev->launch(0, "cache entries", [&](void* ns) {
    cuda_mla::mla_cache_write(kv, st, layer, rows, shape, qd.as<float>(), kvad.as<float>(), kvnd.as<float>(), eps, ns);
    cuda_mla::indexer_keys(kv, st, layer, rows, ikd.as<float>(), D, R, nwd.as<float>(), nbd.as<float>(), 1e-6f, ns);
  });
  std::vector<uint8_t> got = to_host<uint8_t>(*dev, pool.get(), size_t(pages * kv.page_bytes));
  const std::vector<float> gq = to_host<float>(*dev, qd.get(), q.size());

  int64_t q_bad = 0, kpe_bad = 0, key_bad = 0, scale_bad = 0;
  double latent_err = 0;
  std::vector<uint8_t> code(static_cast<size_t>(D));
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t p = pos[size_t(r)];
    for (int64_t h = 0; h < shape.heads; ++h) rope.apply_interleaved(q.data() + (r * shape.heads + h) * QK + shape.nope, p);
    uint8_t* entry = got.data() + table[size_t(p / kv.page_tokens)] * kv.page_bytes +
                     (layer * kv.page_tokens + p % kv.page_tokens) * kv.token_bytes;
    std::vector<float> lat(static_cast<size_t>(KVR)), kpe(kva.begin() + r * (KVR + R) + KVR, kva.begin() + (r + 1) * (KVR + R));
    rms_norm(kva.data() + r * (KVR + R), kv_norm.data(), KVR, c.rms_norm_eps, lat.data());
    rope.apply_interleaved(kpe.data(), p);
    const auto* glat = reinterpret_cast<const float*>(entry + kv.latent_off);
    for (int64_t i = 0; i < KVR; ++i) latent_err = std::max(latent_err, double(std::fabs(glat[i] - lat[size_t(i)])));
    kpe_bad += bit_mismatches(reinterpret_cast<const float*>(entry + kv.rope_off), kpe.data(), size_t(R));
    std::vector<float> k(ik.begin() + r * D, ik.begin() + (r + 1) * D);
    layer_norm(k.data(), nw.data(), nb.data(), D, 1e-6, k.data());
    rope.apply_halves(k.data(), p);
    hadamard_transform(k.data(), D);
    const float s = quantize_fp8_block_pow2(k.data(), D, code.data());
    key_bad += std::memcmp(entry + kv.ikey_off, code.data(), size_t(D)) != 0;
    scale_bad += bit_mismatches(reinterpret_cast<const float*>(entry + kv.iscale_off), &s, 1);
    // Nothing else of the entry is written: clear what was checked, the pool must be zero.
    std::memset(entry, 0, size_t(kv.ikey_off + D));
  }
  q_bad = bit_mismatches(gq.data(), q.data(), q.size());
  CHECK(q_bad == 0);
  CHECK(kpe_bad == 0);
  CHECK(key_bad == 0);
  CHECK(scale_bad == 0);
  CHECK(latent_err <= 1e-5);
  CHECK(std::all_of(got.begin(), got.end(), [](uint8_t b) { return b == 0; }));
}

TEST_CASE("cuda model: one attention block equals the CPU attention across prefill and decode steps") {
  auto dev = gpu();
  if (!dev) return;
  const Model& m = tiny_model();
  const ModelConfig& c = m.config();
  const int64_t H = c.hidden_size;
  auto dm = make_cuda_device_model(m, *dev, [](int64_t, int64_t) { return false; }, kMaxPages);
  ThreadPool pool(2);
  const Rope rope(c);
  KvCache cache(c, kPageTokens);
  const SeqId s = cache.add_sequence();
  const std::vector<int32_t>& tokens = golden_cases()[3].tokens;  // 64: the indexer selects 8 of up to 64
  // A prefill chunk, one decode token, then the rest as a second chunk.
  const std::vector<std::pair<size_t, size_t>> steps = {{0, 40}, {40, 1}, {41, 23}};
  for (const auto& [first, count] : steps) {
    const std::vector<SequenceChunk> batch = {{s, std::span<const int32_t>(tokens.data() + first, count)}};
    StepRows rows;
    rows.chunks = batch;
    rows.chunk_first_row = {0};
    rows.chunk_start_pos = {cache.length(s)};
    for (size_t j = 0; j < count; ++j) {
      rows.row_chunk.push_back(0);
      rows.row_pos.push_back(cache.length(s) + int64_t(j));
    }
    cache.extend(s, cache.length(s) + int64_t(count));
    rows.page_tables = {cache.page_table(s)};
    rows.page_tokens = cache.page_tokens();
    const int64_t T = rows.rows();
    std::vector<float> x0(size_t(T * H));
    for (int64_t r = 0; r < T; ++r) dequantize_row(m.embed, tokens[first + size_t(r)], 0, H, x0.data() + r * H);

    dm->begin_step(rows);
    for (int64_t layer : {int64_t(0), int64_t(2)}) {
      INFO("step at " << first << " of " << count << " tokens, layer " << layer);
      // CPU: the HostDeviceModel's attention block.
      const Layer& L = m.layers[size_t(layer)];
      StepContext ctx{rows, c, pool, cache, rope, AttentionPath::kAuto, rows.chunks, StepProbes{}};
      std::vector<float> x = x0, h(x.size()), y(x.size());
      for (int64_t r = 0; r < T; ++r) rms_norm(x.data() + r * H, L.attn_norm.data(), H, c.rms_norm_eps, h.data() + r * H);
      attention_forward(ctx, layer, L.attn, h.data(), y.data());
      for (size_t i = 0; i < x.size(); ++i) x[i] += y[i];
      for (int64_t r = 0; r < T; ++r) rms_norm(x.data() + r * H, L.ffn_norm.data(), H, c.rms_norm_eps, h.data() + r * H);
      // GPU.
      DeviceBuffer xd = to_device(*dev, x0), hd(*dev, T * H * 4);
      dev->launch(0, "attention", [&](void* ns) { dm->attention_block(layer, xd.as<float>(), hd.as<float>(), ns); });
      const std::vector<float> gx = to_host<float>(*dev, xd.get(), x.size());
      const std::vector<float> gh = to_host<float>(*dev, hd.get(), h.size());
      double dx = 0, dh = 0, sx = 0, sh = 0;
      for (size_t i = 0; i < x.size(); ++i) {
        dx = std::max(dx, double(std::fabs(gx[i] - x[i])));
        dh = std::max(dh, double(std::fabs(gh[i] - h[i])));
        sx = std::max(sx, double(std::fabs(x[i] - x0[i])));  // the attention output's scale
        sh = std::max(sh, double(std::fabs(h[i])));
      }
      MESSAGE("layer " << layer << " rows " << T << ": max|dx|=" << dx << " (attention scale " << sx
                       << ") max|dh|=" << dh << " (scale " << sh << ")");
      CHECK(dx <= 1e-3 * sx);
      CHECK(dh <= 1e-3 * sh);
    }
  }
}

TEST_CASE("cuda model: prefill logits equal the CPU's") {
  auto dev = gpu();
  if (!dev) return;
  const Model& m = tiny_model();
  ThreadPool pool(2);
  auto dm = make_cuda_device_model(m, *dev, all_experts(), kMaxPages);
  OffloadForward off(m, pool, *dev, *dm);
  Forward cpu(m, pool);
  for (const GoldenCase& g : golden_cases()) {
    const std::string what = "prefill of " + std::to_string(g.tokens.size()) + " tokens";
    INFO(what);
    const std::vector<float> got = run_sequence(off, g.tokens, false);
    check_logits_close(got, run_sequence(cpu, g.tokens, false), m.config().vocab_size, what);
    check_logits_close(got, g.logits, m.config().vocab_size, what + " against the reference");
  }
}

TEST_CASE("cuda model: token by token decode logits equal the CPU's") {
  auto dev = gpu();
  if (!dev) return;
  const Model& m = tiny_model();
  ThreadPool pool(2);
  auto dm = make_cuda_device_model(m, *dev, all_experts(), kMaxPages);
  OffloadForward off(m, pool, *dev, *dm);
  Forward cpu(m, pool);
  for (const GoldenCase& g : golden_cases()) {
    const std::string what = "decode of " + std::to_string(g.tokens.size()) + " tokens";
    INFO(what);
    const std::vector<float> got = run_sequence(off, g.tokens, true);
    check_logits_close(got, run_sequence(cpu, g.tokens, true), m.config().vocab_size, what);
  }
}

TEST_CASE("cuda model: two sequences batched in the same steps equal the CPU's") {
  auto dev = gpu();
  if (!dev) return;
  const Model& m = tiny_model();
  ThreadPool pool(2);
  auto dm = make_cuda_device_model(m, *dev, all_experts(), kMaxPages);
  OffloadForward off(m, pool, *dev, *dm);
  Forward cpu(m, pool);
  const auto [ga, gb] = run_batch(off);
  const auto [ca, cb] = run_batch(cpu);
  check_logits_close(ga, ca, m.config().vocab_size, "batch: sequence A");
  check_logits_close(gb, cb, m.config().vocab_size, "batch: sequence B");
}

TEST_CASE("cuda model: half the experts on the GPU and the rest on the CPU or streamed equal the CPU's") {
  auto dev = gpu();
  if (!dev) return;
  const Model& m = tiny_model();
  ThreadPool pool(2);
  auto half = [](int64_t l, int64_t e) { return (e + l) % 2 == 0; };
  auto dm = make_cuda_device_model(m, *dev, half, kMaxPages);
  for (const Layer& L : m.layers)
    if (L.is_moe) {
      const int64_t l = &L - m.layers.data();
      CHECK(dm->expert_resident(l, 0) == half(l, 0));
      CHECK(dm->expert_resident(l, 1) == half(l, 1));
    }
  OffloadForward off(m, pool, *dev, *dm);
  Forward cpu(m, pool);
  const int64_t V = m.config().vocab_size;
  const GoldenCase& g = golden_cases()[3];
  const std::vector<float> want = run_sequence(cpu, g.tokens, false);
  // The other experts on the CPU, then streamed to the GPU for the chunk (run_mlps).
  OffloadTuning on_cpu;
  on_cpu.allow_streaming = false;
  off.set_tuning(on_cpu);
  check_logits_close(run_sequence(off, g.tokens, false), want, V, "half resident, prefill, CPU experts");
  CHECK(off.last_step().cpu_expert_calls > 0);
  CHECK(off.last_step().device_expert_calls > 0);
  OffloadTuning streamed;
  streamed.force_stream_rows = 1;
  off.set_tuning(streamed);
  check_logits_close(run_sequence(off, g.tokens, false), want, V, "half resident, prefill, streamed experts");
  CHECK(off.last_step().layers_streamed > 0);
  CHECK(off.last_step().cpu_expert_calls == 0);
  off.set_tuning(on_cpu);
  const GoldenCase& d = golden_cases()[2];
  check_logits_close(run_sequence(off, d.tokens, true), run_sequence(cpu, d.tokens, true), V,
                     "half resident, decode, CPU experts");
}

TEST_CASE("cuda model: cuBLAS bf16 GEMMs stay within bf16 rounding of the CPU where no choice can flip") {
  // The cuBLAS path rounds both operands of every projection and MLP of 4 rows or more to
  // bf16 (relative error <= 2^-8 each). On this random model a perturbation that size flips
  // the indexer's key selection (index_topk 8) and expert choices, after which the logits
  // are unrelated: the H200 measured max|dlogit| 8.3 on a logit scale of 9 for 64 tokens,
  // and gguf_model_test sees the same for BF16 weights on the CPU. So the comparison runs
  // on the same weights with every choice made continuous: index_topk past every sequence
  // and all 16 experts routed to every token. Then logits move smoothly with rounding,
  // and the test measures how far on the CPU: the model with its weights rounded to bf16
  // (--repack bf16) against the model as stored, d_w (0.5-0.9 % of the logit scale). The
  // cuBLAS path rounds the activations too, about as much again: allowed 4 d_w, and the
  // same top token on 90 % of the rows (the H200 measured 1.3-1.4 d_w and every top token
  // the same). A misdecoded weight tile, a wrong stride or an unordered scratch moves
  // logits by their own scale, far beyond that.
  auto dev = gpu();
  if (!dev) return;
  ModelConfig dc = tiny_model().config();
  dc.index_topk = 64;  // >= every sequence below: every key is attended
  dc.num_experts_per_tok = dc.n_routed_experts;
  dc.topk_group = dc.n_group;
  const Model m(dc, WeightStore::open(kGoldenDir));
  ModelLoadOptions ro;
  ro.repack = DType::BF16;
  const Model rounded(dc, WeightStore::open(kGoldenDir), ro);
  ThreadPool pool(2);
  cuda::GemmOptions gemm;
  gemm.policy = cuda::GemmPolicy::kCublasBf16;
  gemm.min_rows = 4;
  auto dm = make_cuda_device_model(m, *dev, all_experts(), kMaxPages, gemm);
  OffloadForward off(m, pool, *dev, *dm);
  Forward cpu(m, pool), cpu_rounded(rounded, pool);
  const int64_t V = dc.vocab_size;
  // GPU logits against the CPU's, within 4x the CPU's own bf16-weight movement.
  const auto check = [&](const std::vector<float>& gpu_logits, const std::vector<float>& want,
                         const std::vector<float>& weights_rounded, const std::string& what) {
    const LogitGap dw = logit_gap(weights_rounded, want, V);
    MESSAGE(what << ": bf16 weights on the CPU move logits by " << dw.worst << " (scale " << dw.scale << ")");
    CHECK(dw.worst > 0);  // the rounding changed something: the bound below is not vacuous
    check_logits_close(gpu_logits, want, V, what, 4 * dw.worst / dw.scale, 90);
  };
  const int64_t calls_before = cuda::cublas_gemm_calls();
  for (const GoldenCase& g : golden_cases()) {
    if (g.tokens.size() < 4) continue;  // below min_rows: the kernels, checked above
    const std::string what = "cuBLAS prefill of " + std::to_string(g.tokens.size()) + " tokens";
    INFO(what);
    check(run_sequence(off, g.tokens, false), run_sequence(cpu, g.tokens, false),
          run_sequence(cpu_rounded, g.tokens, false), what);
  }
  CHECK(cuda::cublas_gemm_calls() > calls_before);  // the path under test ran
  const auto [ga, gb] = run_batch(off);
  const auto [ca, cb] = run_batch(cpu);
  const auto [ra, rb] = run_batch(cpu_rounded);
  check(ga, ca, ra, "cuBLAS batch: sequence A");
  check(gb, cb, rb, "cuBLAS batch: sequence B");
}

#endif

}  // namespace cuda_cuda_model_suite

// dot_bench [--mb M] [--gb G] [--cols N] [--reps R] [--tokens T]
// Single-threaded. For every block format with an AVX2 dot product, streams rows of N
// columns (default 7168, DeepSeek-V3's hidden size) totalling M MiB of weights (default
// 64, well beyond the caches) through the scalar vec_dot, through vec_dot_avx2 and, where
// the CPU has AVX-512 VNNI, through that kernel, against one activation row
// (cache-resident), best of R passes (default 3), and prints GB/s of
// weight bytes streamed. First it measures the machine's single-thread read bandwidth: an
// AVX2 streaming sum over a G GiB buffer (default 1), best of R passes. Each kernel's
// column "% bw" is its GB/s over that bandwidth.
// Last, the batched product (prefill, batched decode, a MoE expert's tokens): T
// activation rows (default 16) against 8 MiB of weights, one weight row at a time, with
// the one-row kernel per token and with the four-row tiles (quant/dot_tiles.h) where the
// format has them (AVX2, and AVX-512 VNNI where the CPU has it), in GMAC/s (weight values
// times tokens per second).
// Then Q4_K with eight rows interleaved (quant/interleaved.h, `--interleave`): the same M
// MiB of rows through the one-row AVX2 kernel and, interleaved, through the eight-row
// kernel with one token, in GB/s of weights; and four tokens through the four-row tile
// against the eight-row kernel with four tokens, in GMAC/s. Where the CPU has AVX-512,
// the same for Q6_K with sixteen rows interleaved (Q6_K_R16) against the CPU's best
// plain Q6_K kernels.
// And the transposed product of absorbed MLA decode (y += x^T W over 8 MiB of weights,
// one activation row), in GB/s of weights.
// Then float weights (F32, BF16, F16, FP8 with 128x128 block scales: a Hugging Face
// checkpoint as it loads): M MiB of rows against one activation row (decode), in GB/s;
// and times 16, 64 and 512 activation rows, with hearth's kernels and
// with oneDNN's sgemm (CpuGemm, `--cpu-gemm`), in GMAC/s.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "quant/block_formats.h"
#include "quant/dot_tiles.h"
#include "quant/interleaved.h"
#include "quant/numbers.h"
#include "quant/onednn_gemm.h"
#include "quant/weight_matrix.h"

using namespace hearth;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The fastest of `reps` runs of fn, in seconds.
template <class Fn>
double best_seconds(int reps, Fn&& fn) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now();
    fn();
    best = std::min(best, now() - t0);
  }
  return best;
}

__attribute__((target("avx2"))) uint64_t stream_sum_avx2(const uint64_t* p, size_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 4)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 8)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 12)));
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes),
                     _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
  uint64_t s = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < n; ++i) s += p[i];
  return s;
}

uint64_t stream_sum_scalar(const uint64_t* p, size_t n) {
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += p[i];
    s1 += p[i + 1];
    s2 += p[i + 2];
    s3 += p[i + 3];
  }
  for (; i < n; ++i) s0 += p[i];
  return s0 + s1 + s2 + s3;
}

// rows x cols weights in format f (8 MiB in all): eight random rows quantized once and
// repeated (quantizing the whole matrix would take longer than the benchmark).
std::vector<uint8_t> eight_mib_of_weights(const BlockFormat& f, int64_t cols, int64_t rows, std::mt19937& rng) {
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  const int64_t row_bytes = f.row_bytes(cols);
  std::vector<float> seed_rows(size_t(cols) * 8);
  for (float& v : seed_rows) v = gauss(rng);
  std::vector<uint8_t> seed(size_t(row_bytes) * 8), w(size_t(row_bytes * rows));
  f.quantize_row(seed_rows.data(), seed.data(), cols * 8, nullptr);
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(w.data() + r * row_bytes, seed.data() + (r % 8) * row_bytes, size_t(row_bytes));
  return w;
}

// The AVX-512 level the AVX-512 columns time: avx512vnni, avx512 (F/BW), or kAvx2 when
// the CPU has neither (the columns then show "-").
KernelIsa widest_avx512() {
  return has_vnni(cpu_isa()) ? KernelIsa::kAvx512Vnni : has_avx512(cpu_isa()) ? KernelIsa::kAvx512 : KernelIsa::kAvx2;
}

// GMAC/s of T activation rows against 8 MiB of one format's weights: the one-row kernel
// per (weight row, token) against matmul_rows, which takes four tokens per tile.
void batched(int64_t cols, int64_t tokens, int reps) {
  std::printf("\nbatched product, %lld activation rows, single thread (GMAC/s)\n", static_cast<long long>(tokens));
  // The AVX-512 column: VNNI's kernels where the CPU has them, else the F/BW level's.
  const KernelIsa wide = widest_avx512();
  const bool has_wide = wide != KernelIsa::kAvx2;
  std::printf("%-6s %7s %12s %12s %8s %12s\n", "format", "rows", "one-row", "tiled", "speedup",
              (std::string("tiled ") + (has_wide ? isa_name(wide) : "avx512")).c_str());
  std::mt19937 rng(2);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  for (const BlockFormat& f : block_formats()) {
    if (!f.vec_dot_avx2 || !has_avx2(best_isa())) continue;
    const auto dt = dtype_of(f.type);
    if (!dt) continue;
    const int64_t row_bytes = f.row_bytes(cols);
    const int64_t rows = std::max<int64_t>(4, (int64_t(8) << 20) / row_bytes);
    const std::vector<uint8_t> w = eight_mib_of_weights(f, cols, rows, rng);
    const WeightMatrix m{*dt, rows, cols, w.data()};
    std::vector<float> x(size_t(cols * tokens)), y(size_t(rows * tokens));
    for (float& v : x) v = gauss(rng);
    ActivationRows a;
    a.prepare(*dt, x.data(), cols, tokens, cols);
    const BlockFormat& act = block_format(f.vec_dot_type);
    std::vector<uint8_t> q(size_t(act.row_bytes(cols) * tokens));
    for (int64_t t = 0; t < tokens; ++t)
      act.quantize_row(x.data() + t * cols, q.data() + t * act.row_bytes(cols), cols, nullptr);
    auto best_of = [&](auto&& fn) { return double(rows * cols * tokens) / best_seconds(reps, fn) / 1e9; };
    const double one = best_of([&] {
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t t = 0; t < tokens; ++t)
          y[size_t(t * rows + r)] = f.vec_dot_avx2(w.data() + r * row_bytes, q.data() + t * act.row_bytes(cols), cols);
    });
    const double tiled =
        best_of([&] { matmul_rows(m, a, nullptr, tokens, y.data(), rows, 0, rows, KernelIsa::kAvx2); });
    const double tiled_wide =
        has_wide ? best_of([&] { matmul_rows(m, a, nullptr, tokens, y.data(), rows, 0, rows, wide); }) : 0;
    char wide_col[32] = "-";
    if (has_wide) std::snprintf(wide_col, sizeof wide_col, "%.2f", tiled_wide);
    std::printf("%-6s %7lld %12.2f %12.2f %7.2fx %12s%s\n", std::string(f.name).c_str(), static_cast<long long>(rows),
                one, tiled, tiled / one, wide_col, vec_dot4_kernel(f) ? "" : "   (no tile kernel)");
  }
}

// w's rows (rows * row_bytes bytes, nb blocks each) interleaved kUnit at a time by
// interleave(rows[kUnit], nb, out), nb Grouped blocks per unit.
template <int kUnit, class Plain, class Grouped, class Fn>
std::vector<Grouped> interleaved_copy(const std::vector<uint8_t>& w, int64_t rows, int64_t row_bytes, int64_t nb,
                                      Fn&& interleave) {
  std::vector<Grouped> out(size_t(rows / kUnit * nb));
  for (int64_t u = 0; u < rows / kUnit; ++u) {
    const Plain* unit_rows[kUnit];
    for (int r = 0; r < kUnit; ++r) unit_rows[r] = reinterpret_cast<const Plain*>(w.data() + (u * kUnit + r) * row_bytes);
    interleave(unit_rows, nb, out.data() + u * nb);
  }
  return out;
}

// Four activation rows of Gaussian values quantized to Q8_K (a[t] points into q).
struct FourTokens {
  std::vector<uint8_t> q;
  const void* a[4];
};
FourTokens four_q8_k_rows(int64_t cols, std::mt19937& rng) {
  const BlockFormat& act = block_format(GgmlType::Q8_K);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(cols));
  FourTokens t;
  t.q.resize(static_cast<size_t>(act.row_bytes(cols) * 4));
  for (int k = 0; k < 4; ++k) {
    for (float& v : x) v = gauss(rng);
    act.quantize_row(x.data(), t.q.data() + k * act.row_bytes(cols), cols, nullptr);
    t.a[k] = t.q.data() + k * act.row_bytes(cols);
  }
  return t;
}

// Q4_K rows (M MiB, a multiple of eight rows) through the plain AVX2 kernels and, the
// same weights interleaved in groups of eight, through the eight-row kernel: one token
// in GB/s of weights (decode streams them from DRAM), four in GMAC/s.
void interleaved_q4_k(int64_t cols, double mb, int reps, double bw) {
  std::printf("\nq4_K, eight rows interleaved (q4_K_r8), single thread\n");
  const BlockFormat& f = block_format(GgmlType::Q4_K);
  const int64_t row_bytes = f.row_bytes(cols), nb = cols / kQK_K;
  const int64_t rows = std::max<int64_t>(1, int64_t(mb * double(1 << 20)) / row_bytes / kInterleavedRows) *
                       kInterleavedRows;
  const int64_t groups = rows / kInterleavedRows;
  std::mt19937 rng(5);
  const std::vector<uint8_t> w = eight_mib_of_weights(f, cols, rows, rng);
  const std::vector<BlockQ4_Kx8> x8 =
      interleaved_copy<kInterleavedRows, BlockQ4_K, BlockQ4_Kx8>(w, rows, row_bytes, nb, interleave_q4_k_x8);
  const FourTokens tokens4 = four_q8_k_rows(cols, rng);
  const void* const* a = tokens4.a;
  std::vector<float> y(size_t(rows * 4));
  auto seconds = [&](auto&& fn) { return best_seconds(reps, fn); };
  // The sums of the first token's results, to show that both paths compute the same
  // products (they differ only by float rounding).
  auto first_token_sum = [&](int64_t stride) {
    double s = 0;
    for (int64_t r = 0; r < rows; ++r) s += y[size_t(r * stride)];
    return s;
  };
  const VecDotX8Fn x8_dot = vec_dot_q4_k_x8_kernel(KernelIsa::kAvx2);
  const double bytes = double(row_bytes * rows);
  const double one_row = bytes / seconds([&] {
    for (int64_t r = 0; r < rows; ++r) y[size_t(r)] = f.vec_dot_avx2(w.data() + r * row_bytes, a[0], cols);
  }) / 1e9;
  const double sum_one_row = first_token_sum(1);
  const double x8_one = bytes / seconds([&] {
    for (int64_t g = 0; g < groups; ++g) x8_dot(x8.data() + g * nb, a, 1, cols, y.data() + g * kInterleavedRows);
  }) / 1e9;
  const double sum_x8 = first_token_sum(1);
  std::printf("one token:   %7lld rows   one-row AVX2 %7.2f GB/s %5.1f%%   x8 %7.2f GB/s %5.1f%%   %5.2fx   "
              "(sums %.6g / %.6g)\n",
              static_cast<long long>(rows), one_row, 100 * one_row / bw, x8_one, 100 * x8_one / bw, x8_one / one_row,
              sum_one_row, sum_x8);
  const VecDot4Fn tile = vec_dot_tile_kernel(f, 4, KernelIsa::kAvx2);
  const double macs = double(rows * cols * 4);
  const double tiled = macs / seconds([&] {
    for (int64_t r = 0; r < rows; ++r) tile(w.data() + r * row_bytes, a, cols, y.data() + 4 * r);
  }) / 1e9;
  const double sum_tiled = first_token_sum(4);
  const double x8_four = macs / seconds([&] {
    for (int64_t g = 0; g < groups; ++g) x8_dot(x8.data() + g * nb, a, 4, cols, y.data() + g * 4 * kInterleavedRows);
  }) / 1e9;
  double sum_x8_four = 0;  // token 0 of group g: y[32g .. 32g + 7]
  for (int64_t g = 0; g < groups; ++g)
    for (int r = 0; r < kInterleavedRows; ++r) sum_x8_four += y[size_t(g * 4 * kInterleavedRows + r)];
  std::printf("four tokens: %7lld rows   four-row tile %6.2f GMAC/s          x8 %7.2f GMAC/s          %5.2fx   "
              "(sums %.6g / %.6g)\n",
              static_cast<long long>(rows), tiled, x8_four, x8_four / tiled, sum_tiled, sum_x8_four);
  // Two groups per call (AVX-512 F/BW, then with VNNI where the CPU has it), against the
  // eight-row AVX2 kernel above; the sums must equal the x8 ones exactly (the kernels
  // promise the same bits).
  if (groups % 2 != 0) return;
  for (KernelIsa level : {KernelIsa::kAvx512, KernelIsa::kAvx512Vnni}) {
    if (resolve_isa(level) != level) continue;  // the CPU lacks it
    const VecDotX16Fn x16_dot = vec_dot_q4_k_x16_kernel(level);
    for (int tokens : {1, 4}) {
      // As the x8 rows: bytes of weights per second for one token, MACs for four.
      const double x16 = (tokens == 1 ? bytes : macs) / seconds([&] {
        for (int64_t g = 0; g < groups; g += 2)
          x16_dot(x8.data() + g * nb, x8.data() + (g + 1) * nb, a, tokens, cols, y.data() + g * tokens * kInterleavedRows);
      }) / 1e9;
      double sum = 0;  // token 0 of groups g, g + 1: y[16 tokens (g / 2) .. + 15]
      for (int64_t g = 0; g < groups; g += 2)
        for (int r = 0; r < 2 * kInterleavedRows; ++r) sum += y[size_t(g * tokens * kInterleavedRows + r)];
      const double x8 = tokens == 1 ? x8_one : x8_four;
      std::printf("%s x16 (%-10s) %7.2f %s   against x8 %5.2fx   (sum %.6g, x8's %.6g)\n",
                  tokens == 1 ? "one token:  " : "four tokens:", isa_name(level), x16, tokens == 1 ? "GB/s  " : "GMAC/s",
                  x16 / x8, sum, tokens == 1 ? sum_x8 : sum_x8_four);
    }
  }
}

// Q6_K rows (M MiB, a multiple of sixteen rows) through the CPU's best plain kernels and,
// the same weights sixteen rows side by side (Q6_K_R16, AVX-512 only), through its
// kernel: one token in GB/s of weights, four in GMAC/s, as the Q4_K_R8 lines above.
void interleaved_q6_k(int64_t cols, double mb, int reps, double bw) {
  if (vec_dot_q6_k_x16_kernel() == vec_dot_q6_k_x16_scalar) return;  // no AVX-512: no layout
  std::printf("\nq6_K, sixteen rows interleaved (q6_K_r16), single thread\n");
  const BlockFormat& f = block_format(GgmlType::Q6_K);
  const int64_t row_bytes = f.row_bytes(cols), nb = cols / kQK_K;
  const int64_t rows =
      std::max<int64_t>(1, int64_t(mb * double(1 << 20)) / row_bytes / kQ6UnitRows) * kQ6UnitRows;
  const int64_t units = rows / kQ6UnitRows;
  std::mt19937 rng(6);
  const std::vector<uint8_t> w = eight_mib_of_weights(f, cols, rows, rng);
  const std::vector<BlockQ6_Kx16> x16 =
      interleaved_copy<kQ6UnitRows, BlockQ6_K, BlockQ6_Kx16>(w, rows, row_bytes, nb, interleave_q6_k_x16);
  const FourTokens tokens4 = four_q8_k_rows(cols, rng);
  const void* const* a = tokens4.a;
  std::vector<float> y(size_t(rows * 4));
  auto seconds = [&](auto&& fn) { return best_seconds(reps, fn); };
  // Token 0's results summed (stride: floats between a row's token-0 results), to show
  // both paths compute the same products up to float rounding.
  auto token0_sum = [&](int64_t stride, int64_t per_unit) {
    double s = 0;
    for (int64_t r = 0; r < rows; ++r) s += y[size_t(per_unit ? (r / kQ6UnitRows) * per_unit + r % kQ6UnitRows : r * stride)];
    return s;
  };
  const VecDotFn one = vec_dot_kernel(f);
  const VecDotQ6Fn unit_dot = vec_dot_q6_k_x16_kernel();
  const double bytes = double(row_bytes * rows);
  const double plain_one = bytes / seconds([&] {
    for (int64_t r = 0; r < rows; ++r) y[size_t(r)] = one(w.data() + r * row_bytes, a[0], cols);
  }) / 1e9;
  const double sum_plain_one = token0_sum(1, 0);
  const double r16_one = bytes / seconds([&] {
    for (int64_t u = 0; u < units; ++u) unit_dot(x16.data() + u * nb, a, 1, cols, y.data() + u * kQ6UnitRows);
  }) / 1e9;
  const double sum_r16_one = token0_sum(1, 0);
  std::printf("one token:   %7lld rows   one-row      %7.2f GB/s %5.1f%%   x16 %7.2f GB/s %5.1f%%   %5.2fx   "
              "(sums %.6g / %.6g)\n",
              static_cast<long long>(rows), plain_one, 100 * plain_one / bw, r16_one, 100 * r16_one / bw,
              r16_one / plain_one, sum_plain_one, sum_r16_one);
  const VecDot4Fn tile = vec_dot_tile_kernel(f, 4);
  const double macs = double(rows * cols * 4);
  const double tiled = macs / seconds([&] {
    for (int64_t r = 0; r < rows; ++r) tile(w.data() + r * row_bytes, a, cols, y.data() + 4 * r);
  }) / 1e9;
  const double sum_tiled = token0_sum(4, 0);
  const double r16_four = macs / seconds([&] {
    for (int64_t u = 0; u < units; ++u) unit_dot(x16.data() + u * nb, a, 4, cols, y.data() + u * 4 * kQ6UnitRows);
  }) / 1e9;
  const double sum_r16_four = token0_sum(0, 4 * kQ6UnitRows);
  std::printf("four tokens: %7lld rows   four-row tile %6.2f GMAC/s          x16 %7.2f GMAC/s          %5.2fx   "
              "(sums %.6g / %.6g)\n",
              static_cast<long long>(rows), tiled, r16_four, r16_four / tiled, sum_tiled, sum_r16_four);
  // Prefill's case: rows that stay in L2 (about 512 KB) against 24 tokens, in four-token
  // tiles and in six-token x16 calls (the four activation rows above, repeated). Here the
  // weights do not stream from DRAM, so the kernels' own rates show.
  const int64_t hot = std::min<int64_t>(units, std::max<int64_t>(1, (int64_t(512) << 10) / (row_bytes * kQ6UnitRows)));
  const int64_t hot_rows = hot * kQ6UnitRows;
  constexpr int kTokens = 24;
  const void* many[kTokens];
  for (int t = 0; t < kTokens; ++t) many[t] = a[t % 4];
  std::vector<float> out(size_t(kTokens * kQ6UnitRows));
  const double hot_macs = double(hot_rows * cols * kTokens);
  const double hot_tiled = hot_macs / seconds([&] {
    for (int64_t r = 0; r < hot_rows; ++r)
      for (int t = 0; t < kTokens; t += 4) tile(w.data() + r * row_bytes, many + t, cols, out.data() + t);
  }) / 1e9;
  const double hot_r16 = hot_macs / seconds([&] {
    for (int64_t u = 0; u < hot; ++u)
      for (int t = 0; t < kTokens; t += kMaxX16Tokens) unit_dot(x16.data() + u * nb, many + t, kMaxX16Tokens, cols, out.data());
  }) / 1e9;
  std::printf("24 tokens:   %7lld rows   four-row tile %6.2f GMAC/s          x16 %7.2f GMAC/s          %5.2fx   "
              "(rows in L2)\n",
              static_cast<long long>(hot_rows), hot_tiled, hot_r16, hot_r16 / hot_tiled);
}

// matmul_t_accumulate over 8 MiB of each format (what absorbed MLA does per head with
// kv_b's key band), one activation row, in GB/s of weights.
void transposed(int64_t cols, int reps, double bw) {
  std::printf("\ntransposed product (absorbed MLA), one activation row, single thread\n");
  std::printf("%-6s %7s %10s %6s\n", "format", "rows", "GB/s", "% bw");
  std::mt19937 rng(3);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  for (const BlockFormat& f : block_formats()) {
    const auto dt = dtype_of(f.type);
    if (!dt || f.block_elems == 1 || !f.vec_dot_avx2) continue;
    const int64_t row_bytes = f.row_bytes(cols);
    const int64_t rows = std::max<int64_t>(4, (int64_t(8) << 20) / row_bytes);
    const std::vector<uint8_t> w = eight_mib_of_weights(f, cols, rows, rng);
    const WeightMatrix m{*dt, rows, cols, w.data()};
    std::vector<float> x(static_cast<size_t>(rows)), y(static_cast<size_t>(cols), 0.0f);
    for (float& v : x) v = gauss(rng);
    const double best = best_seconds(reps, [&] { matmul_t_accumulate(m, 0, rows, x.data(), y.data(), 0, cols); });
    const double gbs = double(row_bytes * rows) / best / 1e9;
    std::printf("%-6s %7lld %10.2f %5.1f%%\n", std::string(f.name).c_str(), static_cast<long long>(rows), gbs, 100 * gbs / bw);
  }
}

// A rows x cols weight in a float format (F32, BF16, F16, or FP8 with 128x128 block
// scales of 0.01, as a Hugging Face checkpoint loads) holding normally distributed values.
struct FloatWeight {
  std::vector<uint8_t> data;
  std::vector<float> scales;
  WeightMatrix view;
};

FloatWeight random_float_weight(DType dt, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  const int64_t elem = int64_t(dtype_size(dt));
  FloatWeight f;
  f.data.resize(size_t(rows * cols * elem));
  for (size_t i = 0; i < f.data.size(); i += size_t(elem)) {
    const float v = gauss(rng);
    if (dt == DType::F32) std::memcpy(&f.data[i], &v, 4);
    else if (dt == DType::F8_E4M3) f.data[i] = f32_to_fp8_e4m3(v);
    else {
      const uint16_t h = dt == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
      std::memcpy(&f.data[i], &h, 2);
    }
  }
  f.scales.assign(size_t(((rows + 127) / 128) * ((cols + 127) / 128)), 0.01f);
  f.view = WeightMatrix{dt, rows, cols, f.data.data()};
  if (dt == DType::F8_E4M3) f.view.scale = f.scales.data();
  return f;
}

// GB/s of the one-token product (decode) on float weights: M MiB of rows streamed from
// memory like the block formats' table, against one activation row.
void float_decode(int64_t cols, double mb, int reps, double bw) {
  std::printf("\nfloat weights, one activation row (decode), single thread\n");
  std::printf("%-8s %9s %7s %11s %6s\n", "format", "row bytes", "rows", "GB/s", "% bw");
  std::mt19937 rng(4);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::F8_E4M3}) {
    const int64_t row_bytes = cols * int64_t(dtype_size(dt));
    const int64_t rows = std::max<int64_t>(1, int64_t(mb * double(1 << 20)) / row_bytes);
    const FloatWeight m = random_float_weight(dt, rows, cols, rng);
    std::vector<float> x(static_cast<size_t>(cols)), y(static_cast<size_t>(rows));
    for (float& v : x) v = gauss(rng);
    const double best = best_seconds(reps, [&] { matmul_rows(m.view, x.data(), cols, 1, y.data(), rows, 0, rows); });
    const double gbs = double(rows * row_bytes) / best / 1e9;
    std::printf("%-8s %9lld %7lld %11.2f %5.1f%%\n", std::string(dtype_name(dt)).c_str(),
                static_cast<long long>(row_bytes), static_cast<long long>(rows), gbs, 100 * gbs / bw);
  }
}

// GMAC/s of matmul_rows on float weights (8 MiB / cols rows, at least 64) for a few
// activation row counts, CpuGemm::kKernels against kOnednn, and BF16 under kBf16.
void float_gemm(int64_t cols, int reps) {
  std::printf("\nfloat weights times many rows, single thread (GMAC/s): kernels / %s\n", onednn_version().c_str());
  std::printf("%-8s %6s %19s %19s %19s\n", "format", "rows", "16 rows", "64 rows", "512 rows");
  std::mt19937 rng(3);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::F8_E4M3}) {
    const int64_t rows = std::max<int64_t>(64, (int64_t(8) << 20) / cols);
    const FloatWeight m = random_float_weight(dt, rows, cols, rng);
    std::printf("%-8s %6lld", std::string(dtype_name(dt)).c_str(), static_cast<long long>(rows));
    for (int64_t n : {16, 64, 512}) {
      std::vector<float> x(size_t(n * cols)), y(size_t(n * rows));
      for (float& v : x) v = gauss(rng);
      double gmac[2] = {0, 0};
      for (int g = 0; g < 2; ++g) {
        const CpuGemm previous = set_cpu_gemm(g ? CpuGemm::kOnednn : CpuGemm::kKernels);
        const double best = best_seconds(reps, [&] { matmul_rows(m.view, x.data(), cols, n, y.data(), rows, 0, rows); });
        set_cpu_gemm(previous);
        gmac[g] = double(rows * cols * n) / best / 1e9;
      }
      std::printf("   %7.2f / %7.2f", gmac[0], gmac[1]);
    }
    std::printf("\n");
  }
  // BF16 weights against bf16 activations (--cpu-gemm bf16, vdpbf16ps), where the CPU has it.
  if (!has_bf16(cpu_isa())) return;
  const int64_t rows = std::max<int64_t>(64, (int64_t(8) << 20) / cols);
  const FloatWeight m = random_float_weight(DType::BF16, rows, cols, rng);
  std::printf("%-8s %6lld", "bf16/dp", static_cast<long long>(rows));
  for (int64_t n : {16, 64, 512}) {
    std::vector<float> x(size_t(n * cols)), y(size_t(n * rows));
    for (float& v : x) v = gauss(rng);
    const CpuGemm previous = set_cpu_gemm(CpuGemm::kBf16);
    const double best = best_seconds(reps, [&] { matmul_rows(m.view, x.data(), cols, n, y.data(), rows, 0, rows); });
    set_cpu_gemm(previous);
    std::printf("   %7.2f          ", double(rows * cols * n) / best / 1e9);
  }
  std::printf("   (--cpu-gemm bf16: vdpbf16ps against bf16 activations)\n");
}

int run(int argc, char** argv) {
  double mb = 64, gb = 1;
  int64_t cols = 7168;
  int reps = 3;
  int64_t tokens = 16;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--mb") mb = std::atof(argv[i + 1]);
    else if (k == "--gb") gb = std::atof(argv[i + 1]);
    else if (k == "--cols") cols = std::atoll(argv[i + 1]);
    else if (k == "--reps") reps = std::max(1, std::atoi(argv[i + 1]));
    else if (k == "--tokens") tokens = std::max<int64_t>(1, std::atoll(argv[i + 1]));
    else {
      std::fprintf(stderr, "usage: %s [--mb M] [--gb G] [--cols N] [--reps R] [--tokens T]\n", argv[0]);
      return 2;
    }
  }
  if (cols <= 0 || cols % kQK_K != 0) {
    std::fprintf(stderr, "--cols must be a positive multiple of %d\n", kQK_K);
    return 2;
  }
  const bool avx2 = has_avx2(best_isa());
  const bool has_wide = widest_avx512() != KernelIsa::kAvx2;
  std::printf("single thread; best of %d passes; AVX2+FMA+F16C: %s; AVX-512 F/BW: %s; AVX-512 VNNI: %s\n", reps,
              avx2 ? "yes" : "no", has_avx512(cpu_isa()) ? "yes" : "no", has_vnni(cpu_isa()) ? "yes" : "no");

  // ---- read bandwidth ----
  double bw = 0;
  {
    const size_t bytes = size_t(gb * double(1 << 30)) & ~size_t(31);
    uint64_t* buf = static_cast<uint64_t*>(std::aligned_alloc(64, bytes));
    if (!buf) {
      std::fprintf(stderr, "cannot allocate %zu bytes\n", bytes);
      return 1;
    }
    std::memset(buf, 1, bytes);  // fault every page in before timing
    uint64_t sink = 0;
    double best_avx2 = 1e30, best_scalar = 1e30;
    for (int r = 0; r < reps; ++r) {
      double t0 = now();
      if (avx2) {
        sink += stream_sum_avx2(buf, bytes / 8);
        best_avx2 = std::min(best_avx2, now() - t0);
        t0 = now();
      }
      sink += stream_sum_scalar(buf, bytes / 8);
      best_scalar = std::min(best_scalar, now() - t0);
    }
    std::free(buf);
    const double gbs_scalar = double(bytes) / best_scalar / 1e9;
    const double gbs_avx2 = avx2 ? double(bytes) / best_avx2 / 1e9 : 0;
    bw = std::max(gbs_scalar, gbs_avx2);
    std::printf("read bandwidth, streaming sum over %.2f GiB: %.2f GB/s (AVX2 loads), %.2f GB/s "
                "(scalar loads)   [sink %llu]\n\n",
                double(bytes) / double(1 << 30), gbs_avx2, gbs_scalar,
                static_cast<unsigned long long>(sink & 0xff));
  }

  // ---- kernels ----
  std::printf("%-6s %9s %7s %11s %6s %11s %6s %8s %11s %6s\n", "format", "row bytes", "rows", "scalar GB/s",
              "% bw", "AVX2 GB/s", "% bw", "speedup", (std::string(isa_name(widest_avx512())) + " GB/s").c_str(), "% bw");
  std::mt19937 rng(1);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  for (const BlockFormat& f : block_formats()) {
    if (!f.vec_dot_avx2) continue;
    const BlockFormat& act = block_format(f.vec_dot_type);
    const int64_t row_bytes = f.row_bytes(cols);
    const int64_t rows = std::max<int64_t>(1, int64_t(mb * double(1 << 20)) / row_bytes);
    // Quantize a few distinct rows and tile them: quantizing 64 MiB would take longer
    // than the benchmark.
    constexpr int kSeedRows = 8;
    std::vector<float> x(size_t(cols) * kSeedRows);
    for (float& v : x) v = gauss(rng);
    std::vector<uint8_t> seed(size_t(row_bytes) * kSeedRows);
    f.quantize_row(x.data(), seed.data(), cols * kSeedRows, nullptr);
    std::vector<uint8_t> w(size_t(row_bytes * rows));
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(w.data() + r * row_bytes, seed.data() + (r % kSeedRows) * row_bytes, size_t(row_bytes));
    std::vector<float> y(static_cast<size_t>(cols));
    for (float& v : y) v = gauss(rng);
    std::vector<uint8_t> a(size_t(act.row_bytes(cols)));
    act.quantize_row(y.data(), a.data(), cols, nullptr);

    auto measure = [&](VecDotFn dot, float& result) {
      const double best = best_seconds(reps, [&] {
        float s = 0;
        for (int64_t i = 0; i < rows; ++i) s += dot(w.data() + i * row_bytes, a.data(), cols);
        result = s;
      });
      return double(row_bytes * rows) / best / 1e9;
    };
    float rs = 0, rv = 0, rn = 0;
    const double gs = measure(f.vec_dot, rs);
    const double gv = avx2 ? measure(f.vec_dot_avx2, rv) : 0;
    const double gn = has_wide ? measure(vec_dot_kernel(f, widest_avx512()), rn) : 0;
    char wide_cols[64] = "          -      -";
    if (has_wide) std::snprintf(wide_cols, sizeof wide_cols, "%11.2f %5.1f%%", gn, 100 * gn / bw);
    std::printf("%-6s %9lld %7lld %11.2f %5.1f%% %11.2f %5.1f%% %7.1fx %s   (sums %.6g / %.6g%s)\n",
                std::string(f.name).c_str(), static_cast<long long>(row_bytes), static_cast<long long>(rows), gs,
                100 * gs / bw, gv, 100 * gv / bw, gv / gs, wide_cols, double(rs), double(rv),
                has_wide ? (" / " + std::to_string(rn)).c_str() : "");
  }
  batched(cols, tokens, reps);
  if (avx2) interleaved_q4_k(cols, mb, reps, bw);
  interleaved_q6_k(cols, mb, reps, bw);
  transposed(cols, reps, bw);
  float_decode(cols, mb, reps, bw);
  if (has_avx2(best_isa())) float_gemm(cols, reps);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }

// Multi-head latent attention (MLA) with DeepSeek-V3.2's lightning indexer (DSA).
//
// Per new token: project the query through the q LoRA, the key/value through the
// shared latent; cache the normalized latent and the rotated rope key; let the indexer
// pick which cached positions this query may see (index_topk of them on V3.2, all
// causal ones on V3); attend over exactly those positions. Only the picked positions
// are computed, so work per query is bounded by index_topk, not by context length
// (the indexer's scoring apart).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <mutex>
#include <numeric>
#include <utility>

#include "engine/index_scores.h"
#include "engine/layers.h"
#include "engine/ops.h"
#include "engine/scratch.h"
#include "engine/vec_ops.h"
#include "quant/numbers.h"

namespace hearth {

namespace {

struct RowView {
  SeqId seq;
  int64_t pos;
};

// Indexer state for the rows of this step: quantized queries and head weights.
struct IndexerQueries {
  int64_t heads = 0, dim = 0;
  std::vector<float> q;       // [rows][heads][dim], FP8 values decoded (scale kept apart)
  std::vector<float> weight;  // [rows][heads]: weights_proj * heads^-0.5 * dim^-0.5 * q_scale
  // q as the BF16 scoring kernel takes it (index_query_pairs), where the CPU has that
  // kernel and dim is even: [rows][heads][dim / 2].
  std::vector<uint32_t> pairs;
  const uint32_t* row_pairs(int64_t r) const { return pairs.empty() ? nullptr : pairs.data() + r * heads * dim / 2; }
};

// Each row's rope angles (Rope::angles), [row][cos | sin]: computed once per layer for the
// row's query heads, its rope key and the indexer's heads and key (a set per head cost a
// batch of 8 rows 62 us per layer in MLA alone on the bench preset, one per row 23 us).
std::vector<float> row_rope_angles(const StepContext& ctx) {
  const int64_t freqs = ctx.rope.dim() / 2;
  std::vector<float> angles(static_cast<size_t>(ctx.rows() * 2 * freqs));
  ctx.pool.parallel_for(ctx.rows(), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      ctx.rope.angles(ctx.row_pos[size_t(r)], angles.data() + r * 2 * freqs, angles.data() + r * 2 * freqs + freqs);
  });
  return angles;
}

// Runs the indexer's projections for the new rows, fills their cache keys, and returns
// the queries used for scoring. angles: row_rope_angles.
IndexerQueries indexer_prepare(const StepContext& ctx, int64_t layer, const Indexer& ix, const float* x,
                               const float* qr, const std::vector<float>& angles) {
  const ModelConfig& c = ctx.config;
  const int64_t T = ctx.rows(), nh = c.index_n_heads, D = c.index_head_dim;
  IndexerQueries iq;
  iq.heads = nh;
  iq.dim = D;
  std::vector<float> q(static_cast<size_t>(T * nh * D)), k(static_cast<size_t>(T * D)), w(static_cast<size_t>(T * nh));
  observe_rows(ctx.probes, ix.wq_b, qr, T, c.q_lora_rank);
  observe_rows(ctx.probes, ix.wk, x, T, c.hidden_size);
  observe_rows(ctx.probes, ix.weights_proj, x, T, c.hidden_size);
  linear(ctx.pool, ix.wq_b, qr, T, q.data());
  linear(ctx.pool, ix.wk, x, T, k.data());
  linear(ctx.pool, ix.weights_proj, x, T, w.data());
  iq.q.resize(q.size());
  iq.weight.resize(w.size());
  if (has_bf16(resolve_isa(KernelIsa::kAuto)) && D % 2 == 0) iq.pairs.resize(q.size() / 2);
  std::atomic<bool> all_pairs{true};
  const float* lut = fp8_e4m3_table();
  const float head_scale = float(1.0 / std::sqrt(double(nh)) / std::sqrt(double(D)));
  const int64_t freqs = ctx.rope.dim() / 2;
  // One item per (row, head) query and one per row's key: a decode step has a single row,
  // and its 64 heads' rotations, transforms and FP8 roundings would run on one thread.
  ctx.pool.parallel_for(T * (nh + 1), [&](int64_t i0, int64_t i1) {
    uint8_t code[512];
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t r = i < T * nh ? i / nh : i - T * nh;
      const int64_t pos = ctx.row_pos[size_t(r)];
      const float* cs = angles.data() + r * 2 * freqs;
      if (i < T * nh) {
        float* qh = q.data() + i * D;
        ctx.rope.apply_halves(qh, cs, cs + freqs);  // the rope part comes first in the indexer's heads
        hadamard_transform(qh, D);
        const float s = quantize_fp8_block_pow2(qh, D, code);
        float* out = iq.q.data() + i * D;
        for (int64_t d = 0; d < D; ++d) out[d] = lut[code[d]];
        if (!iq.pairs.empty() && !index_query_pairs(out, 1, D, iq.pairs.data() + i * D / 2)) all_pairs = false;
        iq.weight[size_t(i)] = w[size_t(i)] * head_scale * s;
        continue;
      }
      const SeqId seq = ctx.chunks[size_t(ctx.row_chunk[size_t(r)])].seq;
      float* kr = k.data() + r * D;
      layer_norm(kr, ix.k_norm_weight.data(), ix.k_norm_bias.data(), D, 1e-6, kr);
      ctx.rope.apply_halves(kr, cs, cs + freqs);
      hadamard_transform(kr, D);
      const float scale = quantize_fp8_block_pow2(kr, D, code);
      ctx.cache.write_index_key(layer, seq, pos, code, scale);
    }
  });
  if (!all_pairs) iq.pairs.clear();  // FP8 values are bf16 values; were one not, the FMA kernels would score
  return iq;
}

// Positions per unit of the indexer's scoring work (whole pages): 16 units per thread at
// 16K positions on two threads.
constexpr int64_t kIndexChunkPositions = 512;
// Scores held at once while a step's rows are scored (16 MB): rows go in batches whose
// contexts add up to at most this many positions (one row at least).
constexpr int64_t kIndexScoreBatch = int64_t(4) << 20;

// The positions each row of the step may attend to, in increasing order: all causal ones
// [0, pos] without an indexer or while they are no more than index_topk, else the
// index_topk best by the indexer's score.
std::vector<std::vector<int32_t>> select_positions(const StepContext& ctx, int64_t layer, const IndexerQueries* iq) {
  const int64_t T = ctx.rows(), topk = ctx.config.index_topk;
  std::vector<std::vector<int32_t>> picked(static_cast<size_t>(T));
  std::vector<int64_t> scored;  // the rows that need scores
  for (int64_t r = 0; r < T; ++r) {
    const int64_t n = ctx.row_pos[size_t(r)] + 1;  // causal: positions [0, pos]
    if (iq && n > topk) {
      scored.push_back(r);
      continue;
    }
    picked[size_t(r)].resize(size_t(n));
    std::iota(picked[size_t(r)].begin(), picked[size_t(r)].end(), 0);
  }
  if (scored.empty()) return picked;

  const int64_t nh = iq->heads, D = iq->dim;
  const int64_t pt = ctx.cache.page_tokens();
  const int64_t chunk = std::max<int64_t>(1, kIndexChunkPositions / pt) * pt;
  for (size_t b0 = 0; b0 < scored.size();) {
    // A batch of rows and its work items: every chunk of whole pages of every row, taken
    // by whichever thread is free (an atomic counter). One row at a time, a prefill's
    // rows shorter than a chunk left the other threads idle, and each row paid a
    // parallel_for of its own. With a fixed half per thread, one thread waited for the
    // other during 7-10 % of the scoring's wall time on this VM, whose cores' speeds
    // drift; taking chunks, 1.5-2.2 % (temporary timers, 16K positions, three runs each).
    struct Item {
      int64_t row, s0, s1;  // row: index into the batch
    };
    std::vector<int64_t> rows, offset;  // the batch's rows and where their scores start
    std::vector<Item> items;
    int64_t total = 0;
    size_t b1 = b0;
    for (; b1 < scored.size(); ++b1) {
      const int64_t n = ctx.row_pos[size_t(scored[b1])] + 1;
      if (b1 > b0 && total + n > kIndexScoreBatch) break;
      for (int64_t s0 = 0; s0 < n; s0 += chunk) items.push_back({int64_t(rows.size()), s0, std::min(n, s0 + chunk)});
      rows.push_back(scored[b1]);
      offset.push_back(total);
      total += n;
    }
    std::vector<float> score(static_cast<size_t>(total));
    std::vector<std::vector<PositionRank>> best(rows.size());
    std::mutex best_mutex;
    std::atomic<int64_t> next_item{0};
    const int64_t n_items = int64_t(items.size());
    // A thread keeps the positions it scored for one row, cut to that row's best topk as
    // they come (keep_best_positions), and hands them over when it moves to another row,
    // so the merge below only takes a few topk-long lists: on many cores a serial pass
    // over a 100K context would take longer than the scoring. (A partial sort instead of
    // the linear-time selections took 0.63 ms against 0.23 ms for 16K positions and topk
    // 2048 on one core, per layer and token.)
    ctx.pool.parallel_for(std::min<int64_t>(ctx.pool.size(), n_items), [&](int64_t, int64_t) {
      std::vector<PositionRank> mine;
      PositionRank floor = 0;
      int64_t mine_row = -1;
      auto hand_over = [&] {
        if (mine_row < 0) return;
        const std::lock_guard<std::mutex> lock(best_mutex);
        best[size_t(mine_row)].insert(best[size_t(mine_row)].end(), mine.begin(), mine.end());
        mine.clear();
        floor = 0;
      };
      for (int64_t it; (it = next_item.fetch_add(1, std::memory_order_relaxed)) < n_items;) {
        const Item& item = items[size_t(it)];
        if (item.row != mine_row) {
          hand_over();
          mine_row = item.row;
        }
        const int64_t r = rows[size_t(item.row)];
        const SeqId seq = ctx.chunks[size_t(ctx.row_chunk[size_t(r)])].seq;
        const float* q = iq->q.data() + r * nh * D;
        const float* w = iq->weight.data() + r * nh;
        float* row_score = score.data() + offset[size_t(item.row)];
        // Page by page: a page holds this layer's codes of its positions dimension by
        // dimension (KvCache::index_keys), 8 KB on V3.2 with 64-position pages. The next
        // page's block is asked for while this one is scored: the pages of a sequence lie
        // anywhere in memory, so the hardware prefetcher cannot run ahead across them.
        for (int64_t b = item.s0; b < item.s1;) {
          const int64_t page = b / pt, e = std::min(item.s1, (page + 1) * pt);
          if (e < item.s1) {
            const KvCache::IndexKeys next = ctx.cache.index_keys(layer, seq, page + 1);
            prefetch_bytes(next.codes, D * pt);
            prefetch_bytes(next.scales, pt * int64_t(sizeof(float)));
          }
          const KvCache::IndexKeys keys = ctx.cache.index_keys(layer, seq, page);
          index_scores(q, w, nh, D, keys.codes + (b - page * pt), pt, keys.scales + (b - page * pt), e - b, row_score + b,
                       KernelIsa::kAuto, iq->row_pairs(r));
          b = e;
        }
        keep_best_positions(row_score, topk, item.s0, item.s1, mine, floor);
      }
      hand_over();
    });
    ctx.pool.parallel_for(int64_t(rows.size()), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i)
        picked[size_t(rows[size_t(i)])] = best_positions(topk, std::move(best[size_t(i)]));
    });
    b0 = b1;
  }
  return picked;
}

// The automatic path expands per-head keys/values only while they fit in this much
// memory; longer contexts use the absorbed form, which needs none.
constexpr int64_t kMaxExpandedBytes = int64_t(256) << 20;

// Absorbed decode over an f32 cache runs its three stages split by heads, in one region,
// while the threads together read at most this many bytes of picked entries (every
// thread reads all of a row's entries then); past it, attend_absorbed_f32 splits the
// entries between the threads, so each is read once per pass. On the bench preset at Q4_K
// (two threads of a Zen 5 EPYC, decode steps alternating the two in one process),
// attention took 2.49-2.71 against 2.90-2.92 ms per token at 16 positions split by heads,
// 6.55 against 6.95 at 1000 and 13.12 against 13.51 at 2048 (4.7 MB of entries per row
// and layer), but 28.18 against 27.04 at 4096.
constexpr int64_t kHeadSplitReadBytes = int64_t(8) << 20;
std::atomic<int64_t> g_head_split_read_bytes{kHeadSplitReadBytes};

// Softmax over s[0, n) in place; with keep, over the entries keep marks only, in their
// order, the others set to 0. The kept entries get the same bits as a softmax over them
// alone (the same maximum, the same exponentials added in the same order), which is what
// lets rows with differing picks share a pass (plan_prefill_group).
void softmax_inplace(float* s, int64_t n, const uint8_t* keep = nullptr) {
  float m = -INFINITY;
  for (int64_t i = 0; i < n; ++i)
    if (!keep || keep[i]) m = std::max(m, s[i]);
  if (keep)  // dropped keys weigh 0: exp_shifted_f32 gives 0 for -inf
    for (int64_t i = 0; i < n; ++i)
      if (!keep[i]) s[i] = -INFINITY;
  const double sum = exp_shifted_f32(s, n, m);
  const float inv = float(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) s[i] *= inv;
}

// Softmax attention of m queries over the same picked positions, the core both paths
// share (the heads of a group on the absorbed path, consecutive rows of one head on the
// prefill path):
//   p(i, j) = softmax over j < n_i of (q_i . keys[j] + qr_i . rope_keys[j]) * scale,
//   out_i += sum_{j < n_i} p(i, j) values[j]
// with query i at q + i * ldq (dim values), its rope part at qr + i * ldqr (rope values)
// and its output at out + i * ldo (vdim values); n_i is counts[i], or every key when
// counts is null; with keep, query i attends only to the keys j with keep[i * np + j].
// With rope 0 there is no rope part (qr and rope_keys unused): the keys already hold it
// (the absorbed path's cache entries, latent then rope key). The scores go eight keys per
// pass (dot_rows_f32: 9 loads per 8 FMAs, where a dot product per key loads 2 per FMA)
// and the queries share each key loaded; the sums are bit-identical to an axpy per key.
// A query's weights past its n_i keys, or at keys it did not keep, are 0, which adds
// nothing to a sum that started at +0 (such a sum never becomes -0), and the tiles
// compute each dot product with the same operations: a query's result is the same bits
// whichever queries share its call. sc and sr are scratch.
void attend_picked(const float* q, int64_t ldq, int64_t dim, const float* qr, int64_t ldqr, int64_t rope, int64_t m,
                   const std::vector<const float*>& keys, const std::vector<const float*>& rope_keys,
                   const std::vector<const float*>& values, int64_t vdim, float scale, float* out, int64_t ldo,
                   std::vector<float>& sc, std::vector<float>& sr, const int64_t* counts = nullptr,
                   const uint8_t* keep = nullptr) {
  const int64_t np = int64_t(keys.size());
  sc.resize(size_t(m * np));
  sr.resize(size_t(rope > 0 ? m * np : 0));
  dot_rows_f32(q, ldq, m, keys.data(), np, dim, sc.data(), np);
  if (rope > 0) dot_rows_f32(qr, ldqr, m, rope_keys.data(), np, rope, sr.data(), np);
  for (int64_t k = 0; k < m; ++k) {
    const int64_t n = counts ? counts[k] : np;
    float* s = sc.data() + k * np;
    if (rope > 0) {
      const float* t = sr.data() + k * np;
      for (int64_t j = 0; j < n; ++j) s[j] = (s[j] + t[j]) * scale;
    } else {
      for (int64_t j = 0; j < n; ++j) s[j] *= scale;
    }
    softmax_inplace(s, n, keep ? keep + k * np : nullptr);
    std::fill(s + n, s + np, 0.0f);
  }
  weighted_rows_f32(sc.data(), np, m, values.data(), np, vdim, out, ldo);
}

// An fp8 cache's picked entries are decoded in chunks of this many: 32 entries of 576
// floats on V3.2 (72 KB of scratch), which stay in L1/L2 between the scores and the
// weighted sum.
constexpr int64_t kEntryChunk = 32;
// Heads per absorbed work item, at most.
constexpr int64_t kMaxGroupHeads = 8;

// Absorbed attention over an fp8 cache (KvCache::decode_entry), for the m heads of a
// group (queries at q + k * ldq, dim values: latent-space query then rope part) over one
// row's np picked entries (decoded: latent then rope key, dim values):
//   out_k += sum_j softmax_j(q_k . entry_j * scale) entry_j[0, vdim)
// in one pass over the entries: each chunk of kEntryChunk is decoded (rows_of(j0, n)
// gives the chunk's rows), scored (dot_rows_f32), and added to per-head sums with a
// running maximum and total (what was summed is rescaled when the maximum grows, as
// FlashAttention does). So each entry is fetched and decoded once, where scoring all of
// them first and summing after did both twice: at 16K context attention took 59 ms per
// token against 74 (hearth bench, alternated). The result equals the two-pass softmax to
// rounding, and a head's result does not depend on which heads share the call (pairs are
// scored alone, sums go row by row). An f32 cache keeps attend_picked's two passes
// (attend_absorbed_f32): one pass measured no faster for its entries, and its bits are
// the golden-checked ones.
// scratch holds the chunk's scores, the sums and the running maxima.
template <class RowsOf>
void attend_fp8_online(RowsOf&& rows_of, int64_t np, const float* q, int64_t ldq, int64_t dim, int64_t m, int64_t vdim,
                       float scale, float* out, int64_t ldo, std::vector<float>& scratch) {
  if (np == 0) return;  // no weights to normalize (a row always picks its own position)
  scratch.resize(size_t(m * kEntryChunk + m * vdim + m));
  float* s = scratch.data();
  float* acc = s + m * kEntryChunk;
  float* mx = acc + m * vdim;
  std::fill(acc, acc + m * vdim, 0.0f);
  std::fill(mx, mx + m, -INFINITY);
  double total[kMaxGroupHeads] = {};
  for (int64_t j0 = 0; j0 < np; j0 += kEntryChunk) {
    const int64_t n = std::min(kEntryChunk, np - j0);
    const float* const* rows = rows_of(j0, n);
    dot_rows_f32(q, ldq, m, rows, n, dim, s, n);
    for (int64_t k = 0; k < m; ++k) {
      float* sk = s + k * n;
      float chunk_max = -INFINITY;
      for (int64_t j = 0; j < n; ++j) chunk_max = std::max(chunk_max, sk[j] *= scale);
      const float new_max = std::max(mx[k], chunk_max);
      const float rescale = std::exp(mx[k] - new_max);  // 0 for the first chunk
      mx[k] = new_max;
      total[k] = total[k] * rescale + exp_shifted_f32(sk, n, new_max);
      if (rescale != 1.0f)
        for (float *a = acc + k * vdim, *e = a + vdim; a < e; ++a) *a *= rescale;
    }
    weighted_rows_f32(s, n, m, rows, n, vdim, acc, vdim);
  }
  for (int64_t k = 0; k < m; ++k) {
    const float inv = float(1.0 / total[k]);
    for (int64_t d = 0; d < vdim; ++d) out[k * ldo + d] += acc[k * vdim + d] * inv;
  }
}

// Absorbed attention over an f32 cache for R rows at once, every head of a row together:
// row t's np picked entries at lat[t][j] (ent floats: latent, then rope key), its heads'
// queries at q + (t * heads + h) * ent, and
//   out[(t * heads + h) * vdim + d] += sum_j softmax_j(q_th . entry_j * scale) entry_j[d]
// for d < vdim, in attend_picked's two passes, each split between the threads so that
// every entry comes from memory once per pass: the scores by entries (each thread scores
// a share of every row's entries for all heads), the weighted sums by columns (a share of
// every entry's floats). Split by heads, as the fp8 cache's groups are, every thread
// streamed all the picked entries (4.7 MB per layer at 2048 picks on V3.2) twice: at 16K
// context attention took 16.3-16.7 ms per token against 18.1-24.4 (V3.2-shaped bench
// preset, two threads of a Zen 5 EPYC, hearth bench alternated). Each
// score and each output element gets attend_picked's bits: dot products do not depend
// on which queries or entries share a call, and every output element adds its products
// in entry order whatever columns a call covers.
void attend_absorbed_f32(ThreadPool& pool, const std::vector<std::vector<const float*>>& lat, const float* q,
                         int64_t heads, int64_t ent, int64_t vdim, float scale, float* out) {
  const int64_t R = int64_t(lat.size()), P = pool.size();
  std::vector<int64_t> first(static_cast<size_t>(R + 1), 0);  // row t's scores: [head][np] at first[t]
  for (int64_t t = 0; t < R; ++t) first[size_t(t + 1)] = first[size_t(t)] + heads * int64_t(lat[size_t(t)].size());
  std::vector<float> sc(static_cast<size_t>(first[size_t(R)]));
  // Item i is share i / R of row i % R: each thread's run of items holds about 1/P of
  // every row.
  pool.parallel_for(P * R, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t part = i / R, t = i % R, np = int64_t(lat[size_t(t)].size());
      const int64_t j0 = np * part / P, j1 = np * (part + 1) / P;
      if (j1 > j0)
        dot_rows_f32(q + t * heads * ent, ent, heads, lat[size_t(t)].data() + j0, j1 - j0, ent,
                     sc.data() + first[size_t(t)] + j0, np);
    }
  });
  pool.parallel_for(R * heads, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t t = i / heads, np = int64_t(lat[size_t(t)].size());
      float* s = sc.data() + first[size_t(t)] + (i % heads) * np;
      for (int64_t j = 0; j < np; ++j) s[j] *= scale;
      softmax_inplace(s, np);
    }
  });
  // Column shares of whole 16-float vectors.
  const int64_t width = (vdim + 16 * P - 1) / (16 * P) * 16;
  pool.parallel_for(P * R, [&](int64_t i0, int64_t i1) {
    std::vector<const float*> cols;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t part = i / R, t = i % R, np = int64_t(lat[size_t(t)].size());
      const int64_t c0 = part * width, c1 = std::min(vdim, c0 + width);
      if (c0 >= c1) continue;
      cols.resize(size_t(np));
      for (int64_t j = 0; j < np; ++j) cols[size_t(j)] = lat[size_t(t)][size_t(j)] + c0;
      weighted_rows_f32(sc.data() + first[size_t(t)], np, heads, cols.data(), np, c1 - c0, out + t * heads * vdim + c0,
                        vdim);
    }
  });
}

// attention_forward's large temporaries, kept from one layer and step to the next
// (engine/scratch.h): a prefill layer's expanded keys and values, queries and outputs are
// tens of MB. One set per calling thread, so steps run on different threads never share
// one; attention_forward does not call itself.
struct AttentionScratch {
  ScratchFloats qr, q, kv, attn, lat, kvb;
};

AttentionScratch& attention_scratch() {
  static thread_local AttentionScratch scratch;
  return scratch;
}

// Rows of one head that the prefill path attends together: each key loaded serves all of
// them (dot_rows_f32 takes them four queries by two keys while the pair is in L1). Against
// groups of 4, pp2048 of the bench preset went from 51 to 55 t/s (hearth bench, Q4_K).
constexpr int64_t kRowGroup = kPrefillRowGroup;

}  // namespace

PrefillGroup plan_prefill_group(const std::vector<std::vector<int32_t>>& picked, int64_t r0, int64_t rows,
                                std::vector<uint32_t>& mark) {
  static_assert(kRowGroup <= 32, "one bit per row of a group in mark");
  PrefillGroup g;
  const std::vector<int32_t>& last = picked[size_t(r0 + rows - 1)];
  bool nested = true;
  for (int64_t k = 0; nested && k + 1 < rows; ++k) {
    const std::vector<int32_t>& pk = picked[size_t(r0 + k)];
    nested = pk.size() <= last.size() && std::equal(pk.begin(), pk.end(), last.begin());
  }
  if (nested) {
    g.together = rows > 1;
    g.keys = last;
    for (int64_t k = 0; k < rows; ++k) g.counts.push_back(int64_t(picked[size_t(r0 + k)].size()));
    return g;
  }
  int64_t lo = INT64_MAX, hi = -1, total = 0;
  for (int64_t k = 0; k < rows; ++k) {
    const std::vector<int32_t>& pk = picked[size_t(r0 + k)];
    if (pk.empty()) continue;
    lo = std::min<int64_t>(lo, pk.front());
    hi = std::max<int64_t>(hi, pk.back());
    total += int64_t(pk.size());
    for (const int32_t s : pk) mark[size_t(s)] |= uint32_t(1) << k;
  }
  for (int64_t s = lo; s <= hi; ++s)
    if (mark[size_t(s)]) g.keys.push_back(int32_t(s));
  const int64_t nu = int64_t(g.keys.size());
  g.together = nu > 0 && rows * nu <= 2 * total;
  if (g.together) {
    g.keep.resize(size_t(rows * nu));
    for (int64_t j = 0; j < nu; ++j)
      for (int64_t k = 0; k < rows; ++k) g.keep[size_t(k * nu + j)] = (mark[size_t(g.keys[size_t(j)])] >> k) & 1;
  }
  for (int64_t s = lo; s <= hi; ++s) mark[size_t(s)] = 0;
  return g;
}

int64_t set_absorbed_head_split_bytes(int64_t bytes) { return g_head_split_read_bytes.exchange(bytes); }

int64_t prefill_path_positions(const ModelConfig& c) {
  const int64_t per_key = c.num_attention_heads * (c.qk_nope_head_dim + c.v_head_dim) * int64_t(sizeof(float));
  return kMaxExpandedBytes / per_key;
}

void attention_forward(const StepContext& ctx, int64_t layer, const Attention& A, const float* x, float* out) {
  const ModelConfig& c = ctx.config;
  const int64_t T = ctx.rows(), nh = c.num_attention_heads;
  const int64_t nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, vd = c.v_head_dim;
  const int64_t qk = nope + rope, kvr = c.kv_lora_rank, kvb_stride = nope + vd;
  const float scale = float(c.attention_scale());

  // Queries: q = q_b(RMSNorm(q_a(x))), rope part rotated (adjacent pairs).
  AttentionScratch& scratch = attention_scratch();
  float* const qr = scratch.qr.take(size_t(T * c.q_lora_rank));
  float* const q = scratch.q.take(size_t(T * nh * qk));
  float* const kv = scratch.kv.take(size_t(T * (kvr + rope)));
  observe_rows(ctx.probes, A.q_a, x, T, c.hidden_size);
  linear(ctx.pool, A.q_a, x, T, qr);
  for (int64_t r = 0; r < T; ++r)
    rms_norm(qr + r * c.q_lora_rank, A.q_a_norm.data(), c.q_lora_rank, c.rms_norm_eps, qr + r * c.q_lora_rank);
  observe_rows(ctx.probes, A.q_b, qr, T, c.q_lora_rank);
  linear(ctx.pool, A.q_b, qr, T, q);
  // Keys/values: one shared latent per token, normalized, plus one shared rope key.
  observe_rows(ctx.probes, A.kv_a, x, T, c.hidden_size);
  linear(ctx.pool, A.kv_a, x, T, kv);
  const std::vector<float> angles = row_rope_angles(ctx);
  const int64_t freqs = ctx.rope.dim() / 2;
  for (int64_t r = 0; r < T; ++r) {
    const int64_t pos = ctx.row_pos[size_t(r)];
    const SeqId seq = ctx.chunks[size_t(ctx.row_chunk[size_t(r)])].seq;
    const float* cs = angles.data() + r * 2 * freqs;
    const float* sn = cs + freqs;
    for (int64_t h = 0; h < nh; ++h) ctx.rope.apply_interleaved(q + (r * nh + h) * qk + nope, cs, sn);
    float* kvr_row = kv + r * (kvr + rope);
    rms_norm(kvr_row, A.kv_a_norm.data(), kvr, c.rms_norm_eps, kvr_row);
    ctx.cache.write_latent(layer, seq, pos, kvr_row);
    float* kpe = ctx.cache.rope_key(layer, seq, pos);
    std::copy(kvr_row + kvr, kvr_row + kvr + rope, kpe);
    ctx.rope.apply_interleaved(kpe, cs, sn);
  }

  std::vector<std::vector<int32_t>> picked;
  {
    ScopedPhase phase(A.has_indexer ? ctx.probes.profiler : nullptr, Phase::kIndexer);
    IndexerQueries iq;
    if (A.has_indexer) iq = indexer_prepare(ctx, layer, A.indexer, x, qr, angles);
    picked = select_positions(ctx, layer, A.has_indexer ? &iq : nullptr);
  }

  float* const attn = scratch.attn.take(size_t(T * nh * vd));  // every row's heads written below
  std::vector<int32_t> absorbed;  // rows that take the weight-absorbed path, all chunks together
  for (size_t ci = 0; ci < ctx.chunks.size(); ++ci) {
    const int64_t first = ctx.chunk_first_row[ci], n = int64_t(ctx.chunks[ci].tokens.size());
    if (n == 0) continue;
    const SeqId seq = ctx.chunks[ci].seq;
    const AttentionPath path = ctx.chunks[ci].path != AttentionPath::kAuto ? ctx.chunks[ci].path : ctx.path;
    // A decode row takes the absorbed path without the positions map below (a pass over
    // every cached position: 16K of them per layer at 16K context).
    if (path == AttentionPath::kDecode || (path == AttentionPath::kAuto && n == 1)) {
      for (int64_t r = first; r < first + n; ++r) absorbed.push_back(int32_t(r));
      continue;
    }
    // Positions any row of this chunk attends to: the only ones worth expanding.
    const int64_t end = ctx.chunk_start_pos[ci] + n;
    std::vector<int32_t> keys;
    {
      // Marked on a map of [0, end) rather than sorted: n rows of index_topk picks each
      // (4M for a 2048-row chunk on V3.2) took a sort of all of them.
      std::vector<uint8_t> hit(static_cast<size_t>(end), 0);
      for (int64_t r = first; r < first + n; ++r)
        for (const int32_t s : picked[size_t(r)]) hit[size_t(s)] = 1;
      for (int64_t s = 0; s < end; ++s)
        if (hit[size_t(s)]) keys.push_back(int32_t(s));
    }
    const int64_t nk = int64_t(keys.size());
    const bool expand_fits = nk * nh * kvb_stride * int64_t(sizeof(float)) <= kMaxExpandedBytes;
    const bool prefill = path == AttentionPath::kPrefill || expand_fits;  // here path is kPrefill, or kAuto with n > 1
    if (!prefill) {
      for (int64_t r = first; r < first + n; ++r) absorbed.push_back(int32_t(r));
      continue;
    }
    // Expand per-head keys (nope part) and values of those positions: one GEMM.
    std::vector<int32_t> slot(static_cast<size_t>(end), -1);
    float* const lat = scratch.lat.take(size_t(nk * kvr));
    float* const kvb = scratch.kvb.take(size_t(nk * nh * kvb_stride));
    for (int64_t i = 0; i < nk; ++i) {
      slot[size_t(keys[size_t(i)])] = int32_t(i);
      ctx.cache.read_latent(layer, seq, keys[size_t(i)], lat + i * kvr);
    }
    observe_rows(ctx.probes, A.kv_b, lat, nk, kvr);
    linear(ctx.pool, A.kv_b, lat, nk, kvb);
    // One work item per head and group of up to kRowGroup consecutive rows (plan_prefill_group):
    // a group goes through attend_picked together where it can, and its queries share
    // each key loaded; otherwise each row attends alone. Either way a row's result is the
    // same bits, so the grouping never changes one. The items go head by head, so that
    // one thread's consecutive items read the same head's keys while they are in L2: with
    // the heads of a group in turn, each item found its keys evicted by the other heads'
    // (pp2048 of the bench preset went from 37 to 51 t/s, hearth bench, Q4_K).
    const int64_t groups = (n + kRowGroup - 1) / kRowGroup;
    std::vector<PrefillGroup> plan(static_cast<size_t>(groups));
    ctx.pool.parallel_for(groups, [&](int64_t g0, int64_t g1) {
      std::vector<uint32_t> mark(static_cast<size_t>(end), 0);
      for (int64_t g = g0; g < g1; ++g)
        plan[size_t(g)] = plan_prefill_group(picked, first + g * kRowGroup, std::min(kRowGroup, n - g * kRowGroup), mark);
    });
    ctx.pool.parallel_for(groups * nh, [&](int64_t i0, int64_t i1) {
      std::vector<float> sc, sr;
      std::vector<const float*> kh, kpe, vh;
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t h = i / groups, r0 = first + (i % groups) * kRowGroup;
        const int64_t rows = std::min(kRowGroup, first + n - r0);
        // The head's keys, values and rope keys at the positions `pk` picked.
        auto gather = [&](const std::vector<int32_t>& pk) {
          const int64_t np = int64_t(pk.size());
          kh.resize(size_t(np));
          kpe.resize(size_t(np));
          vh.resize(size_t(np));
          for (int64_t j = 0; j < np; ++j) {
            const int64_t s = pk[size_t(j)];
            kh[size_t(j)] = kvb + (slot[size_t(s)] * nh + h) * kvb_stride;
            vh[size_t(j)] = kh[size_t(j)] + nope;
            kpe[size_t(j)] = ctx.cache.rope_key(layer, seq, s);
          }
        };
        const PrefillGroup& g = plan[size_t(i % groups)];
        if (g.together) {
          gather(g.keys);
          for (int64_t k = 0; k < rows; ++k) {
            float* o = attn + ((r0 + k) * nh + h) * vd;
            std::fill(o, o + vd, 0.0f);
          }
          const float* qh = q + (r0 * nh + h) * qk;
          attend_picked(qh, nh * qk, nope, qh + nope, nh * qk, rope, rows, kh, kpe, vh, vd, scale,
                        attn + (r0 * nh + h) * vd, nh * vd, sc, sr, g.counts.empty() ? nullptr : g.counts.data(),
                        g.keep.empty() ? nullptr : g.keep.data());
          continue;
        }
        for (int64_t r = r0; r < r0 + rows; ++r) {
          gather(picked[size_t(r)]);
          const float* qh = q + (r * nh + h) * qk;
          float* o = attn + (r * nh + h) * vd;
          std::fill(o, o + vd, 0.0f);
          attend_picked(qh, qk, nope, qh + nope, qk, rope, 1, kh, kpe, vh, vd, scale, o, vd, sc, sr);
        }
      }
    });
  }

  if (!absorbed.empty()) {
    // Weight-absorbed: q_lat = W_uk(h)^T q_nope; score = q_lat . latent + q_pe . k_pe;
    // out = W_uv(h) (sum_s p_s latent_s). Per-head keys/values never exist. Three stages,
    // each covering every absorbed row of the step (all sequences of a batched decode):
    //  1. each head's kv_b band folds the rows' queries into latent space (each band is
    //     decoded and read once per step, not once per token);
    //  2. the rows attend over their picked cache entries (attend_absorbed_f32 or, for an
    //     fp8 cache, attend_fp8_online per group of heads);
    //  3. each head's value band takes its latent-space outputs back to v_head_dim.
    // A score's or output's bits depend on neither the grouping nor the split between
    // threads, so none of them changes what a row computes.
    const int64_t R = int64_t(absorbed.size());
    const int64_t ent = kvr + rope;  // a cache entry's floats: the latent, then the rope key
    // A GGUF's k_b / v_b in their block format (Attention::k_b), else kv_b's bands.
    const bool split = A.split_kv_b();
    const bool slice_ok = split || A.kv_b.dtype != DType::F8_E4M3 || !A.kv_b.scale ||
                          (nope % A.kv_b.block == 0 && kvb_stride % A.kv_b.block == 0);
    // Per row and head: the query [q_lat | q_pe] against an entry's ent floats in one
    // pass (a second pass for the rope keys came back for their lines: 0.25 of 1.28 ms
    // per layer for 8 heads over 2048 entries, a throwaway driver), and the output in
    // latent space. Both [row][head][...].
    std::vector<float> qcat(static_cast<size_t>(R * nh * ent), 0.0f), olat(static_cast<size_t>(R * nh * kvr), 0.0f);
    // Stage 1 for heads [h0, h1).
    auto fold_queries = [&](int64_t h0, int64_t h1) {
      std::vector<float> qn(static_cast<size_t>(R * nope));
      for (int64_t h = h0; h < h1; ++h) {
        for (int64_t t = 0; t < R; ++t)
          std::copy_n(q + (absorbed[size_t(t)] * nh + h) * qk, nope, qn.data() + t * nope);
        float* qh = qcat.data() + h * ent;
        const int64_t ld = nh * ent;
        if (split) {  // head h's k_b rows are W_uk's columns: q_lat[c] = row c . q_nope
          const WeightMatrix wk = row_slice(A.k_b, h * kvr, (h + 1) * kvr);
          matmul_rows(wk, qn.data(), nope, R, qh, ld, 0, kvr);
        } else {
          matmul_t_accumulate_rows(A.kv_b, h * kvb_stride, nope, qn.data(), nope, R, qh, ld, 0, kvr);
        }
        for (int64_t t = 0; t < R; ++t)
          std::copy_n(q + (absorbed[size_t(t)] * nh + h) * qk + nope, rope, qh + t * ld + kvr);
      }
    };
    // Stage 3 for heads [h0, h1).
    auto expand_values = [&](int64_t h0, int64_t h1) {
      std::vector<float> ov(static_cast<size_t>(R * (slice_ok ? vd : nh * kvb_stride)));
      ActivationRows olat_rows;
      for (int64_t h = h0; h < h1; ++h) {
        const int64_t v0 = h * kvb_stride + nope;
        const float* ol = olat.data() + h * kvr;  // row t's at ol + t * nh * kvr
        if (slice_ok) {  // the head's value rows as a matrix of their own: out rows 0..vd
          const WeightMatrix wv = split ? row_slice(A.v_b, h * vd, (h + 1) * vd) : row_slice(A.kv_b, v0, v0 + vd);
          olat_rows.prepare(wv.dtype, ol, nh * kvr, R, kvr);
          matmul_rows(wv, olat_rows, nullptr, R, ov.data(), vd, 0, vd);
          for (int64_t t = 0; t < R; ++t) std::copy_n(ov.data() + t * vd, vd, attn + (absorbed[size_t(t)] * nh + h) * vd);
        } else {
          const int64_t ld = nh * kvb_stride;
          matmul_rows(A.kv_b, ol, nh * kvr, R, ov.data(), ld, v0, v0 + vd);
          for (int64_t t = 0; t < R; ++t) std::copy_n(ov.data() + t * ld + v0, vd, attn + (absorbed[size_t(t)] * nh + h) * vd);
        }
      }
    };

    // An f32 cache's picked entries, per row.
    const bool fp8 = ctx.cache.type() == KvCacheType::kFp8;
    std::vector<std::vector<const float*>> lat;
    int64_t picked_bytes = 0;
    if (!fp8) {
      lat.resize(size_t(R));
      for (int64_t t = 0; t < R; ++t) {
        const int64_t r = absorbed[size_t(t)];
        const SeqId seq = ctx.chunks[size_t(ctx.row_chunk[size_t(r)])].seq;
        for (const int32_t s : picked[size_t(r)]) lat[size_t(t)].push_back(ctx.cache.latent(layer, seq, s));
        picked_bytes += int64_t(picked[size_t(r)].size()) * ent * int64_t(sizeof(float));
      }
    }
    // Stage 2 over an fp8 cache for heads [h0, h1): entries are decoded as they are read,
    // a group of heads at a time: groups of up to eight heads (18 KB of queries, which
    // stay in L1 beside the entries being scored); on two threads each thread then gathers
    // the picked entries once per layer, where groups of four gathered them twice.
    const int64_t group = std::clamp<int64_t>(nh / ctx.pool.size(), 1, kMaxGroupHeads);
    auto attend_fp8 = [&](int64_t hb, int64_t he) {
      const int64_t entry_bytes = ctx.cache.bytes_per_entry();
      std::vector<float> sc, buf(static_cast<size_t>(kEntryChunk * ent));
      std::vector<const uint8_t*> entries;
      std::vector<const float*> rows(static_cast<size_t>(kEntryChunk));
      for (int64_t j = 0; j < kEntryChunk; ++j) rows[size_t(j)] = buf.data() + j * ent;
      for (int64_t h0 = hb; h0 < he; h0 += group) {
        const int64_t m = std::min(group, he - h0);
        for (int64_t t = 0; t < R; ++t) {
          const int64_t r = absorbed[size_t(t)];
          const SeqId seq = ctx.chunks[size_t(ctx.row_chunk[size_t(r)])].seq;
          const std::vector<int32_t>& pk = picked[size_t(r)];
          const int64_t np = int64_t(pk.size());
          entries.resize(size_t(np));
          for (int64_t j = 0; j < np; ++j) entries[size_t(j)] = ctx.cache.entry(layer, seq, pk[size_t(j)]);
          attend_fp8_online(
              [&](int64_t j0, int64_t n) {
                // The next chunk's entries are asked for while this one is decoded: the
                // picked positions lie anywhere in the cache.
                for (int64_t j = 0; j < n; ++j) {
                  if (const int64_t ahead = j0 + kEntryChunk + j; ahead < np)
                    prefetch_bytes(entries[size_t(ahead)], entry_bytes);
                  ctx.cache.decode_entry(entries[size_t(j0 + j)], buf.data() + j * ent);
                }
                return rows.data();
              },
              np, qcat.data() + (t * nh + h0) * ent, ent, ent, m, kvr, scale, olat.data() + (t * nh + h0) * kvr, kvr,
              sc);
        }
      }
    };
    // Stage 2 over an f32 cache for heads [h0, h1): every thread reads all the picked
    // entries (kHeadSplitReadBytes bounds them all). attend_picked gives each score and
    // output the bits attend_absorbed_f32 gives it.
    auto attend_f32_heads = [&](int64_t h0, int64_t h1) {
      std::vector<float> sc, sr;
      for (int64_t t = 0; t < R; ++t) {
        const std::vector<const float*>& e = lat[size_t(t)];
        attend_picked(qcat.data() + (t * nh + h0) * ent, ent, ent, nullptr, 0, 0, h1 - h0, e, {}, e, kvr, scale,
                      olat.data() + (t * nh + h0) * kvr, kvr, sc, sr);
      }
    };

    if (fp8 || picked_bytes * ctx.pool.size() <= g_head_split_read_bytes.load(std::memory_order_relaxed)) {
      // Each thread runs the three stages for its own heads, in one region instead of
      // three (five for an f32 cache): no head's stage needs another head's results.
      ctx.pool.parallel_for(nh, [&](int64_t h0, int64_t h1) {
        fold_queries(h0, h1);
        if (fp8)
          attend_fp8(h0, h1);
        else
          attend_f32_heads(h0, h1);
        expand_values(h0, h1);
      });
    } else {
      // Many picked entries over an f32 cache: attend_absorbed_f32 splits them between
      // the threads, so each is read once per pass, at two more regions.
      ctx.pool.parallel_for(nh, fold_queries);
      attend_absorbed_f32(ctx.pool, lat, qcat.data(), nh, ent, kvr, scale, olat.data());
      ctx.pool.parallel_for(nh, expand_values);
    }
  }
  observe_rows(ctx.probes, A.o, attn, T, nh * vd);
  linear(ctx.pool, A.o, attn, T, out);
}

}  // namespace hearth

// CUDA kernels of MLA attention and the V3.2 lightning indexer on device KV pages: the
// pieces engine/cuda/cuda_device_model.cu chains into one attention block.
//
// Declared without CUDA types so host tests (.cc) can call them; defined in
// engine/cuda/mla_kernels.cu (CUDA builds only). Pointers are device memory; `stream` is a
// cudaStream_t as void*; every call only enqueues work and throws std::runtime_error naming
// the kernel when the launch fails.
//
// The indexer's steps (rope, Hadamard transform, FP8 quantization, scores, top-k) repeat
// the CPU's float operations one for one (engine/ops.cc, engine/index_scores.cc, no fused
// multiply-adds): given the same projections they give the same bits, so the positions
// picked match the CPU's wherever the projections do.
#pragma once
#include <cstdint>

namespace hearth::cuda_mla {

// Where the KV pages live and how one token's entry is laid out. The device keeps pages of
// its own (nothing copies pages to or from the host's KvCache, which keeps the index keys
// in a region apart): page p holds, for layer l and slot t (= position % page_tokens), the
// entry at base + p * page_bytes + (l * page_tokens + t) * token_bytes, index key and
// scale inside it.
struct KvPages {
  uint8_t* base = nullptr;
  int64_t page_bytes = 0, page_tokens = 0, token_bytes = 0;
  int64_t latent_off = 0, rope_off = 0, iscale_off = 0, ikey_off = 0;
};

// The rows of one step, on the device.
struct StepTables {
  const int32_t* row_pos = nullptr;    // [rows] position of the row in its sequence
  const int32_t* row_table = nullptr;  // [rows] where its sequence's page table starts in `tables`
  const int32_t* tables = nullptr;     // page ids: position p of the row's sequence is in tables[row_table + p / page_tokens]
  const float* rope_cs = nullptr;      // [rows][rope]: cos_i at 2i, sin_i at 2i + 1 (the CPU Rope's values)
};

struct MlaShape {
  int64_t heads = 0, nope = 0, rope = 0, v = 0, kv_rank = 0;
  int64_t qk() const { return nope + rope; }
};

// Per row r (positions st.row_pos): rotates the rope part of every head of q
// ([rows][heads][nope + rope], interleaved pairs), writes RMSNorm(kva latent) * kv_norm and
// the rotated rope key of kva ([rows][kv_rank + rope]) into the row's cache entry of `layer`.
void mla_cache_write(const KvPages& kv, const StepTables& st, int64_t layer, int64_t rows, const MlaShape& s,
                     float* q, const float* kva, const float* kv_norm, float eps, void* stream);

// Indexer queries, in place: each head vector of q ([rows][heads][dim]) gets rope "halves"
// on its first `rope` values, the normalized Hadamard transform and FP8 e4m3 quantization
// with a power-of-two scale; q receives the decoded FP8 values and w ([rows][heads], the
// weights_proj output) becomes w * head_scale * that scale. dim: a power of two, 32..1024.
void indexer_queries(float* q, float* w, int64_t rows, int64_t heads, int64_t dim, int64_t rope, const float* rope_cs,
                     float head_scale, void* stream);

// Indexer keys: LayerNorm(k) * norm_w + norm_b (k: [rows][dim]), rope halves, Hadamard,
// FP8 with a power-of-two scale, written as the row's cache key and scale of `layer`.
void indexer_keys(const KvPages& kv, const StepTables& st, int64_t layer, int64_t rows, const float* k, int64_t dim,
                  int64_t rope, const float* norm_w, const float* norm_b, float eps, void* stream);

// Index scores of rows [row0, row0 + rows): for every such row with n = pos + 1 > topk,
// scores[(r - row0) * ld + s] = score of its cache position s < n (engine/index_scores.h),
// q: [all rows][heads][dim] decoded queries, w: [all rows][heads] head weights. Rows with
// n <= topk are skipped. max_n: the largest such n (<= ld).
void index_scores(const KvPages& kv, const StepTables& st, int64_t layer, int64_t row0, int64_t rows, int64_t max_n,
                  const float* q, const float* w, int64_t heads, int64_t dim, int64_t topk, float* scores, int64_t ld,
                  void* stream);

// For row g < rows with n = row_pos[g] + 1 > topk: picked[g * topk + j], j < topk, gets the
// topk positions s < n of highest scores[g * ld + s] (ties to the earlier position), in
// increasing order. Rows with n <= topk are left alone (they attend to every position).
void select_topk(const float* scores, int64_t ld, const int32_t* row_pos, int64_t rows, int64_t topk, int32_t* picked,
                 void* stream);

// Weight-absorbed attention of rows [row0, row0 + rows) over their picked positions:
// positions picked[(r - row0) * topk + j] when picked != nullptr and pos + 1 > topk, else
// every position 0..pos. q: [all rows][heads][nope + rope] (rope part rotated), kv_b: float
// [heads * (nope + v)][kv_rank]. out[r][h * v + i], for every head h: W_uv(h) (sum_s p_s
// latent_s) with p = softmax over s of (W_uk(h)^T q_nope . latent_s + q_pe . k_pe_s) * scale.
// sm_count: the GPU's multiprocessors (sizes the work per block).
void absorbed_attention(const KvPages& kv, const StepTables& st, int64_t layer, int64_t row0, int64_t rows,
                        const MlaShape& s, const float* q, const float* kv_b, const int32_t* picked, int64_t topk,
                        float scale, float* out, int sm_count, void* stream);

}  // namespace hearth::cuda_mla

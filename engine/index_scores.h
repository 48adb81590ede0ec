// The DSA lightning indexer's scores: how much one query wants each cached position.
//
//   score_s = scale_s * sum_h w_h * max(q_h . k_s, 0)
//
// with q_h the query's FP8-rounded head vectors (decoded to float), k_s the cached FP8
// key of position s and scale_s its power-of-two block scale. This is the only part of
// sparse attention whose work grows with the context (every cached position is scored;
// attention itself then reads only index_topk of them), so it has AVX2, AVX-512 and
// AVX512_BF16 kernels.
//
// Every kernel gives each position the very same sequence of float operations as the
// scalar reference, so all produce identical bits and the positions picked never depend
// on the instruction set; the CUDA kernel (engine/cuda/mla_kernels.cu) does the same.
// q_h . k_s is a chain of fused multiply-adds over the dimensions taken in pairs, the odd
// one of each pair first (2p + 1, then 2p; a last unpaired dimension alone): that is the
// order in which vdpbf16ps adds a pair's two products, each exactly rounded (a product
// of two bf16 values is exact in float, so a fused multiply-add rounds the same sum).
// The FP8 keys and queries are exact in bf16, so the BF16 kernel multiplies the same
// numbers. The AVX2 kernel scores sixteen positions at once, one per lane, the AVX-512
// ones 64; a fused multiply-add is exactly rounded everywhere, and on Zen 3 runs 1.35x as
// many multiply-adds per cycle as a multiply and an add (which use four pipes for what
// two FMA pipes do).
#pragma once
#include <cstdint>
#include <vector>

#include "quant/weight_matrix.h"  // KernelIsa

namespace hearth {

// out[i] = score of the key of position i, for i < n: its FP8 e4m3 codes at
// codes[d * ld + i] for d < dim (ld >= n: a KvCache page keeps its positions' codes
// dimension by dimension, KvCache::index_keys), its scale at key_scales[i].
// q: [heads][dim], w: [heads]. dim <= 512.
// q_pairs: the query as index_query_pairs gave it where that returned true, for the BF16
// kernel; where it is null the FMA kernels score (the same bits), and so no call rebuilds
// the pairs page after page.
void index_scores(const float* q, const float* w, int64_t heads, int64_t dim, const uint8_t* codes, int64_t ld,
                  const float* key_scales, int64_t n, float* out, KernelIsa isa = KernelIsa::kAuto,
                  const uint32_t* q_pairs = nullptr);

// The query's head vectors as the BF16 kernel takes them: pairs[h * dim / 2 + p] holds
// q[h][2p] as bf16 in its low half and q[h][2p + 1] in its high half (dim even). Building
// them costs as much as scoring a few positions, so the indexer builds them once per query
// and layer, not once per page. False where dim is odd or some value is not a bf16
// exactly or is below 2^-110 but not zero (FP8 values always fit): the scores then come
// from the FMA kernels, with the same bits.
bool index_query_pairs(const float* q, int64_t heads, int64_t dim, uint32_t* pairs);

// Picking the topk best positions: highest score first, ties to the earlier position
// (-0 ties with +0; a NaN score ranks by its bits, above +inf when positive, below -inf
// when negative, as the CUDA selection ranks it). That order is total, so the set is
// unique, and threads that each score some of the positions can each cut theirs to its
// best topk (the whole set's best are among each part's best) before one merge: the picks
// never depend on who scored what.
//
// A candidate is a PositionRank: the score's order-preserving bits above the position's
// complement, so a larger number ranks first and the selections compare plain integers
// (with the scores looked up through a comparator they took 2.5x as long).
using PositionRank = uint64_t;
PositionRank position_rank(float score, int32_t position);
inline int32_t ranked_position(PositionRank r) { return int32_t(~uint32_t(r)); }

// One part's candidates: adds the positions [begin, end) that rank above `floor` to
// `kept`, then, when `kept` holds more than 2 * topk, cuts it to its topk best (a
// linear-time selection) and raises `floor` to the worst of those. A position ranked
// below it cannot be among the part's topk best, so none of the whole set's: once the
// first cut is made, most positions are dropped on a comparison instead of being kept
// and selected again (at 16K positions and topk 2048, two threads spent about a sixth of
// the indexer's scoring in the repeated selections). A part starts with floor 0, below
// every rank.
void keep_best_positions(const float* score, int64_t topk, int64_t begin, int64_t end, std::vector<PositionRank>& kept,
                         PositionRank& floor);
// The positions of the topk best of `candidates` (all of them when there are no more), in
// increasing order (marked on a bitmap of the positions and read back in order: a sort
// of 2048 took most of this call's 0.1 ms at 16K).
std::vector<int32_t> best_positions(int64_t topk, std::vector<PositionRank> candidates);

}  // namespace hearth

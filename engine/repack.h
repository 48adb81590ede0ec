// Converting weights to another format at load time (`--repack TYPE`): an FP8 or BF16
// checkpoint runs as q8_0, q4_K, ... without a separate conversion step, at the cost of
// holding the converted weights in memory (the mapped originals are then never read).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "offload/thread_pool.h"
#include "offload/weight_arena.h"
#include "quant/weight_matrix.h"

namespace hearth {

// The formats weights can be repacked to: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1,
// iq4_nl, q2_k..q6_k, iq4_xs, by name ignoring case. Throws std::invalid_argument naming `name` and the choices.
DType parse_repack_target(std::string_view name);
// A comma-separated list of the accepted names, for help texts and errors.
std::string_view repack_target_names();

// The format a weight with rows of `cols` values gets when `target` is asked for: target
// when cols is a multiple of its block; else Q8_0 (blocks of 32) for a K-quant or IQ4_XS target
// when that fits; else nullopt (the weight stays as stored).
std::optional<DType> repack_format_for(DType target, int64_t cols);

// Converts w row by row (decoded with its scales, then quantize_row of `to`, no
// importance weights) into storage taken from `arena` (huge-page memory,
// offload/weight_arena.h); the result views that storage. Rows are split over the pool's
// threads; the result is the same for any thread count.
WeightMatrix repack_matrix(const WeightMatrix& w, DType to, ThreadPool& pool, WeightArena& arena);
// The same conversion into caller-owned storage of w.rows * row_bytes(to, w.cols) bytes
// (e.g. one band of rows of a larger matrix at a time: rows convert independently).
void repack_into(const WeightMatrix& w, DType to, ThreadPool& pool, uint8_t* out);

// Whether w can be laid out as Q4_K_R8 or Q6_K_R16 (quant/interleaved.h): Q4_K with a
// whole number of groups of eight rows, or Q6_K with a whole number of sixteen where the
// layout's kernels run at `isa` (AVX2 and above; below it would have only the scalar
// reference).
bool can_interleave(const WeightMatrix& w, KernelIsa isa = KernelIsa::kAuto);
// w (can_interleave) with its rows interleaved in groups of eight (sixteen), in storage taken from
// `arena`: the same bytes rearranged, so the same values. Groups are split over the
// pool's threads.
WeightMatrix interleave_matrix(const WeightMatrix& w, ThreadPool& pool, WeightArena& arena);
// The same rearrangement done where w's bytes lie (they must be writable and read by
// nothing else): one group at a time through a small buffer, so no second copy of the
// weight is ever held. Returns the Q4_K_R8 (Q6_K_R16) view of the same storage.
WeightMatrix interleave_in_place(const WeightMatrix& w, ThreadPool& pool);

}  // namespace hearth

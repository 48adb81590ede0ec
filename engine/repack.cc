#include "engine/repack.h"

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "quant/block_formats.h"
#include "quant/interleaved.h"

namespace hearth {

namespace {

constexpr DType kTargets[] = {DType::F32,  DType::F16,  DType::BF16,   DType::Q8_0, DType::Q4_0,
                              DType::Q4_1, DType::Q5_0, DType::Q5_1,   DType::IQ4_NL, DType::Q2_K,
                              DType::Q3_K, DType::Q4_K, DType::Q5_K,   DType::Q6_K, DType::IQ4_XS};

}  // namespace

std::string_view repack_target_names() {
  return "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_xs";
}

DType parse_repack_target(std::string_view name) {
  if (const std::optional<DType> t = find_dtype(name))
    for (DType ok : kTargets)
      if (*t == ok) return ok;
  throw std::invalid_argument("'" + std::string(name) + "' is not a repack type (one of " +
                              std::string(repack_target_names()) + ")");
}

std::optional<DType> repack_format_for(DType target, int64_t cols) {
  if (cols % dtype_block_elems(target) == 0) return target;
  if (dtype_block_elems(target) > dtype_block_elems(DType::Q8_0) && cols % dtype_block_elems(DType::Q8_0) == 0)
    return DType::Q8_0;
  return std::nullopt;
}

WeightMatrix repack_matrix(const WeightMatrix& w, DType to, ThreadPool& pool, WeightArena& arena) {
  if (!block_format_of(to)) throw std::invalid_argument("cannot repack to " + std::string(dtype_name(to)));
  const int64_t rb = row_bytes(to, w.cols);  // throws unless cols fits the blocks
  uint8_t* storage = arena.allocate(size_t(w.rows * rb));
  repack_into(w, to, pool, storage);
  WeightMatrix q;
  q.dtype = to;
  q.rows = w.rows;
  q.cols = w.cols;
  q.data = storage;
  return q;
}

void repack_into(const WeightMatrix& w, DType to, ThreadPool& pool, uint8_t* out) {
  const BlockFormat* f = block_format_of(to);
  if (!f) throw std::invalid_argument("cannot repack to " + std::string(dtype_name(to)));
  const int64_t rb = row_bytes(to, w.cols);  // throws unless cols fits the blocks
  pool.parallel_for(
      w.rows,
      [&](int64_t r0, int64_t r1) {
        std::vector<float> row(size_t(w.cols));
        for (int64_t r = r0; r < r1; ++r) {
          dequantize_row(w, r, 0, w.cols, row.data());
          f->quantize_row(row.data(), out + r * rb, w.cols, nullptr);
        }
      },
      16);
}

bool can_interleave(const WeightMatrix& w, KernelIsa isa) {
  int64_t unit = 0;
  if (w.dtype == DType::Q4_K) unit = kInterleavedRows;
  if (w.dtype == DType::Q6_K && vec_dot_q6_k_x16_kernel(isa) != vec_dot_q6_k_x16_scalar) unit = kQ6UnitRows;
  return unit > 0 && w.rows > 0 && w.rows % unit == 0 && w.cols % kQK_K == 0;
}

namespace {

void require_interleavable(const WeightMatrix& w) {
  if (!can_interleave(w))
    throw std::invalid_argument("cannot interleave a " + std::string(dtype_name(w.dtype)) + " weight of " +
                                std::to_string(w.rows) + " x " + std::to_string(w.cols));
}

// Groups of kUnit of w's rows interleaved into out; in place when out is w's own storage
// (each group goes through a buffer first, and groups do not overlap). Plain is BlockQ4_K
// or BlockQ6_K, Grouped the interleaved block of kUnit rows, one per super-block.
template <int kUnit, class Plain, class Grouped, class Fn>
void interleave_groups(const WeightMatrix& w, ThreadPool& pool, Grouped* out, Fn&& interleave) {
  const int64_t nb = w.cols / kQK_K, groups = w.rows / kUnit;
  const auto* rows = static_cast<const Plain*>(w.data);
  pool.parallel_for(
      groups,
      [&](int64_t g0, int64_t g1) {
        std::vector<Grouped> buf(static_cast<size_t>(nb));
        for (int64_t g = g0; g < g1; ++g) {
          const Plain* group[kUnit];
          for (int r = 0; r < kUnit; ++r) group[r] = rows + (g * kUnit + r) * nb;
          interleave(group, nb, buf.data());
          std::memcpy(out + g * nb, buf.data(), buf.size() * sizeof(Grouped));
        }
      },
      4);
}

// w's groups interleaved into `out` (w's own storage or a new buffer of w.bytes()), and
// the interleaved view of `out`.
WeightMatrix interleave_into(const WeightMatrix& w, ThreadPool& pool, void* out) {
  WeightMatrix v = w;
  v.data = out;
  if (w.dtype == DType::Q6_K) {
    interleave_groups<kQ6UnitRows, BlockQ6_K>(w, pool, static_cast<BlockQ6_Kx16*>(out), interleave_q6_k_x16);
    v.dtype = DType::Q6_K_R16;
  } else {
    interleave_groups<kInterleavedRows, BlockQ4_K>(w, pool, static_cast<BlockQ4_Kx8*>(out), interleave_q4_k_x8);
    v.dtype = DType::Q4_K_R8;
  }
  return v;
}

}  // namespace

WeightMatrix interleave_matrix(const WeightMatrix& w, ThreadPool& pool, WeightArena& arena) {
  require_interleavable(w);
  return interleave_into(w, pool, arena.allocate(size_t(w.bytes())));
}

WeightMatrix interleave_in_place(const WeightMatrix& w, ThreadPool& pool) {
  require_interleavable(w);
  return interleave_into(w, pool, const_cast<void*>(w.data));
}

}  // namespace hearth

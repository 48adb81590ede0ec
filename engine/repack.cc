#include "engine/repack.h"

#include <stdexcept>
#include <string>
#include <vector>

#include "quant/block_formats.h"

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

}  // namespace hearth

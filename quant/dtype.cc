#include "quant/dtype.h"

#include <stdexcept>
#include <string>

#include "quant/block_formats.h"

namespace hearth {

namespace {

constexpr DType kAll[] = {DType::F32,  DType::F16,  DType::BF16, DType::F8_E4M3, DType::Q8_0,
                          DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,    DType::IQ4_NL,
                          DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K,    DType::Q6_K,
                          DType::IQ4_XS};

struct Geometry {
  int64_t elems, bytes;
};

// Block formats take their geometry from the BlockFormat table, the one place that
// defines their layout; FP8 (scales held apart) is not a ggml format.
Geometry geometry(DType t) {
  if (t == DType::F8_E4M3) return {1, 1};
  if (t == DType::Q4_K_R8) return geometry(DType::Q4_K);  // eight Q4_K rows' bytes per group
  if (t == DType::Q6_K_R16) return geometry(DType::Q6_K);
  const BlockFormat* f = block_format_of(t);
  if (!f) throw std::invalid_argument("unknown dtype " + std::to_string(int(t)));
  return {f->block_elems, f->block_bytes};
}

}  // namespace

bool same_ignoring_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

bool is_block_dtype(DType t) { return geometry(t).elems > 1; }
int64_t dtype_block_elems(DType t) { return geometry(t).elems; }
int64_t dtype_block_bytes(DType t) { return geometry(t).bytes; }

std::size_t dtype_size(DType t) {
  const Geometry g = geometry(t);
  if (g.elems != 1)
    throw std::invalid_argument("dtype_size: " + std::string(dtype_name(t)) +
                                " is a block format (elements have no whole size; use row_bytes)");
  return std::size_t(g.bytes);
}

int64_t row_bytes(DType t, int64_t cols) {
  const Geometry g = geometry(t);
  if (cols < 0 || cols % g.elems != 0)
    throw std::invalid_argument(std::string(dtype_name(t)) + ": row length " + std::to_string(cols) +
                                " is not a multiple of the block size " + std::to_string(g.elems));
  return cols / g.elems * g.bytes;
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F8_E4M3: return "F8_E4M3";
    case DType::Q8_0: return "Q8_0";
    case DType::Q4_0: return "Q4_0";
    case DType::Q2_K: return "Q2_K";
    case DType::Q3_K: return "Q3_K";
    case DType::Q4_K: return "Q4_K";
    case DType::Q5_K: return "Q5_K";
    case DType::Q6_K: return "Q6_K";
    case DType::Q4_1: return "Q4_1";
    case DType::Q5_0: return "Q5_0";
    case DType::Q5_1: return "Q5_1";
    case DType::IQ4_NL: return "IQ4_NL";
    case DType::IQ4_XS: return "IQ4_XS";
    case DType::Q4_K_R8: return "Q4_K_R8";
    case DType::Q6_K_R16: return "Q6_K_R16";
  }
  return "?";
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3})
    if (dtype_name(t) == name) return t;
  return std::nullopt;
}

std::optional<DType> find_dtype(std::string_view name) {
  for (DType t : kAll)
    if (same_ignoring_case(dtype_name(t), name)) return t;
  return std::nullopt;
}

}  // namespace hearth

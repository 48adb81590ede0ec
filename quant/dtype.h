// The element types hearth reads from checkpoints: one vocabulary shared by every
// reader (safetensors, GGUF), every kernel and every backend.
//
// Two kinds: element formats (F32, F16, BF16, F8_E4M3), where every value has its own
// bytes, and ggml's block formats (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K..Q6_K,
// IQ4_XS; quant/block_formats.h), where
// a row is a run of fixed-size blocks of block_elems values each. Sizes of whole rows go
// through row_bytes(), which both kinds answer.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace hearth {

enum class DType : uint8_t {
  F32,
  F16,
  BF16,
  F8_E4M3,  // OCP e4m3fn: bias 7, no infinities, max 448; used with 128x128 block scales
  // ggml block formats, byte for byte as in GGUF files (quant/block_formats.h).
  Q8_0,
  Q4_0,
  Q2_K,
  Q3_K,
  Q4_K,
  Q5_K,
  Q6_K,
  Q4_1,
  Q5_0,
  Q5_1,
  IQ4_NL,
  IQ4_XS,
  // Q4_K with eight rows interleaved (quant/interleaved.h): a layout hearth builds in
  // memory for the CPU kernels (`--interleave`), never read from or written to a file. Its
  // rows take Q4_K's bytes (row_bytes), but a row's bytes are spread over its group of
  // eight: only the kernels of quant/weight_matrix.h read it.
  Q4_K_R8,
  // Q6_K with sixteen rows interleaved, likewise (quant/interleaved.h).
  Q6_K_R16,
};

// True for the ggml block formats (and Q4_K_R8, Q6_K_R16, made of them).
bool is_block_dtype(DType t);
// True for the layouts that interleave rows (Q4_K_R8, Q6_K_R16): no ggml descriptor, and
// rows are read only through the kernels.
inline bool is_interleaved_dtype(DType t) { return t == DType::Q4_K_R8 || t == DType::Q6_K_R16; }
// The rows an interleaved layout keeps together (8 for Q4_K_R8, 16 for Q6_K_R16; 1 for
// every other type): slices and splits of its rows start and end on multiples of it.
inline int64_t interleaved_unit_rows(DType t) { return t == DType::Q4_K_R8 ? 8 : t == DType::Q6_K_R16 ? 16 : 1; }
// Values per block (1 for the element formats) and bytes per block (the element size for
// the element formats).
int64_t dtype_block_elems(DType t);
int64_t dtype_block_bytes(DType t);
// Bytes per element of an element format; std::invalid_argument for a block format (whose
// elements have no whole size: use row_bytes).
std::size_t dtype_size(DType t);
// Bytes of a row of `cols` values; std::invalid_argument unless cols is a non-negative
// multiple of dtype_block_elems(t).
int64_t row_bytes(DType t, int64_t cols);
// The name used by safetensors ("F32", "BF16", "F8_E4M3", ...) or, for a block format,
// ggml's name in upper case ("Q8_0", "Q4_K", "IQ4_NL", ...).
std::string_view dtype_name(DType t);
// Parses a safetensors dtype name (element formats only); nullopt for names hearth does
// not support.
std::optional<DType> parse_dtype(std::string_view name);
// Any dtype by name, ignoring ASCII case ("q4_k", "BF16", "f8_e4m3"); nullopt if unknown.
std::optional<DType> find_dtype(std::string_view name);

// ASCII case-insensitive equality, for the format names users type.
bool same_ignoring_case(std::string_view a, std::string_view b);

}  // namespace hearth

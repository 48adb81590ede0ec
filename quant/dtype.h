// The element types hearth reads from checkpoints: one vocabulary shared by every
// reader (safetensors today, GGUF later), every kernel and every backend.
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
};

// Bytes per element.
std::size_t dtype_size(DType t);
// The name used by safetensors ("F32", "BF16", "F8_E4M3", ...).
std::string_view dtype_name(DType t);
// Parses a safetensors dtype name; nullopt for names hearth does not support.
std::optional<DType> parse_dtype(std::string_view name);

}  // namespace hearth

// The golden checkpoint written as a GGUF file by hearth's quantizer, for tests that need
// a GGUF of known content.
#pragma once
#include <filesystem>
#include <functional>
#include <utility>

#include "engine/quantize.h"
#include "support/golden.h"

namespace hearth::testing {

// Options that write tests/data/tiny-v32 to `out` with each tensor's type from `type_for`
// (uniform_type_for(...) for one type where the rows allow), kv_b split into attn_k_b /
// attn_v_b unless `split_kv_b` is false, on two threads; callers may set more.
inline QuantizeOptions golden_gguf_options(const std::filesystem::path& out,
                                           std::function<DType(const GgufExportTensor&)> type_for,
                                           bool split_kv_b = true) {
  QuantizeOptions o;
  o.input = kGoldenDir;
  o.output = out;
  o.type_for = std::move(type_for);
  o.threads = 2;
  o.split_kv_b = split_kv_b;
  o.name = "tiny";
  return o;
}

// Writes them; returns `out`.
inline std::filesystem::path golden_as_gguf(const std::filesystem::path& out,
                                            std::function<DType(const GgufExportTensor&)> type_for,
                                            bool split_kv_b = true) {
  const QuantizeOptions o = golden_gguf_options(out, std::move(type_for), split_kv_b);
  quantize_model(o);
  return o.output;
}

}  // namespace hearth::testing

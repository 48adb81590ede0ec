// The tensors of a GGUF file made from any checkpoint hearth loads: what each is, its
// shape, and its values as float rows, decoded on demand from the source weights. The
// source is a WeightStore under Hugging Face names: a safetensors directory (FP8 with
// block scales, BF16, ...) or a GGUF file seen through gguf_weight_store, so converting
// and re-quantizing share one path (engine/quantize.h writes the file).
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/gguf_model.h"
#include "engine/safetensors.h"

namespace hearth {

struct GgufExportTensor : GgufTensorSpec {
  using GgufTensorSpec::rows;  // the row count, beside rows(r0, n, out) below

  // Bytes the source tensors take as stored (FP8 block scales included; a kv_b split
  // into k_b and v_b shares its bytes between them by rows). For progress reports.
  uint64_t source_bytes = 0;

  // Writes rows [r0, r0 + n) as floats, row_elems() each: rows count over all the dims
  // above dims[0] (a merged experts tensor has n_experts * dims[1] rows; a 1-D tensor
  // has one). The values are the source's, decoded exactly (FP8 scales applied, block
  // formats dequantized). Safe to call from several threads at once for different rows.
  void rows(int64_t r0, int64_t n, float* out) const { produce_(r0, n, out); }

  std::function<void(int64_t r0, int64_t n, float* out)> produce_;

  // Where the source already holds this tensor in a GGUF type, row for row (a GGUF input):
  // that type, and stored_rows() copies rows [r0, r0 + n) as stored (row_bytes each). So a
  // tensor whose type does not change is copied, not decoded and quantized again, which
  // would move a K-quant's blocks (llama-quantize copies such tensors too). nullopt when
  // the source must be converted (FP8, a kv_b split by transposition).
  std::optional<DType> stored_type;
  void stored_rows(int64_t r0, int64_t n, uint8_t* out) const { copy_(r0, n, out); }

  std::function<void(int64_t r0, int64_t n, uint8_t* out)> copy_;
};

struct GgufExportOptions {
  // attn_k_b + attn_v_b as llama.cpp's current converter writes them; false: attn_kv_b,
  // the layout of older files.
  bool split_kv_b = true;
};

// The tensors of the GGUF file of `config`, in file order (gguf_tensor_specs), each
// reading from `store`, which must outlive the result. Every source tensor is looked up
// and its shape checked here, so a missing or mis-shaped one is an error naming it
// before anything is written.
std::vector<GgufExportTensor> plan_gguf_export(const ModelConfig& config, const WeightStore& store,
                                               const GgufExportOptions& options = {});

}  // namespace hearth

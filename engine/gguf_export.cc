#include "engine/gguf_export.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "quant/weight_matrix.h"

namespace hearth {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// A source tensor as a matrix the kernels' decoder reads, with its stored size.
struct Source {
  WeightMatrix m;
  uint64_t bytes = 0;
};

// The HF tensor `name`, which must have `shape` ([n] reads as one row of n). FP8 weights
// bring their "_scale_inv" block scales.
Source source(const WeightStore& store, const std::string& name, const std::vector<int64_t>& shape) {
  const TensorView& t = store.get(name);
  if (t.shape != shape)
    throw std::runtime_error(t.file + ": tensor '" + name + "' has shape " + shape_str(t.shape) +
                             ", the config implies " + shape_str(shape));
  Source s;
  s.m.dtype = t.dtype;
  s.m.rows = shape.size() == 1 ? 1 : shape[0];
  s.m.cols = shape.back();
  s.m.data = t.data;
  s.bytes = t.nbytes;
  if (t.dtype == DType::F8_E4M3) {
    const std::string sname = name + "_scale_inv";
    if (!store.has(sname))
      throw std::runtime_error(t.file + ": FP8 tensor '" + name + "' has no block scale '" + sname + "'");
    const TensorView& sc = store.get(sname);
    const std::vector<int64_t> want{(s.m.rows + 127) / 128, (s.m.cols + 127) / 128};
    if (sc.shape != want || sc.dtype != DType::F32)
      throw std::runtime_error(sc.file + ": scale '" + sname + "' must be F32 of shape " + shape_str(want));
    s.m.scale = static_cast<const float*>(sc.data);
    s.m.block = 128;
    s.bytes += sc.nbytes;
  }
  return s;
}

// A GGUF file can hold `d` as it is (every type but FP8).
bool gguf_storable(DType d) { return d != DType::F8_E4M3 && block_format_of(d) != nullptr; }

// Rows [r0, r0 + n) of per-part matrices as stored: part p holds rows [p * per, (p + 1) *
// per) of `row_bytes` each (one part: a plain matrix; n_experts parts: merged experts).
void stored_as(GgufExportTensor& t, DType d, std::vector<const uint8_t*> parts, int64_t per, int64_t row_bytes) {
  t.stored_type = d;
  t.copy_ = [parts = std::move(parts), per, row_bytes](int64_t r0, int64_t n, uint8_t* o) {
    for (int64_t r = r0; r < r0 + n; ++r)
      std::memcpy(o + (r - r0) * row_bytes, parts[size_t(r / per)] + (r % per) * row_bytes, size_t(row_bytes));
  };
}

}  // namespace

std::vector<GgufExportTensor> plan_gguf_export(const ModelConfig& c, const WeightStore& store,
                                               const GgufExportOptions& options) {
  std::vector<GgufExportTensor> out;
  for (GgufTensorSpec& s : gguf_tensor_specs(c, options.split_kv_b)) {
    GgufExportTensor t;
    static_cast<GgufTensorSpec&>(t) = std::move(s);
    const int64_t cols = t.row_elems();
    switch (t.layout) {
      case GgufLayout::kDirect: {
        std::vector<int64_t> shape(t.dims.rbegin(), t.dims.rend());
        const Source src = source(store, t.hf, shape);
        t.source_bytes = src.bytes;
        t.produce_ = [m = src.m, cols](int64_t r0, int64_t n, float* o) {
          for (int64_t r = 0; r < n; ++r) dequantize_row(m, r0 + r, 0, cols, o + r * cols);
        };
        if (gguf_storable(src.m.dtype))
          stored_as(t, src.m.dtype, {static_cast<const uint8_t*>(src.m.data)}, src.m.rows, row_bytes(src.m.dtype, cols));
        break;
      }
      case GgufLayout::kExperts: {
        const int64_t per = t.dims[1];
        std::vector<WeightMatrix> experts;
        for (int64_t e = 0; e < t.n_experts; ++e) {
          const Source src = source(store, t.expert_hf(e), {per, cols});
          experts.push_back(src.m);
          t.source_bytes += src.bytes;
        }
        const DType d = experts.front().dtype;
        bool same = gguf_storable(d);
        std::vector<const uint8_t*> parts;
        for (const WeightMatrix& m : experts) {
          same = same && m.dtype == d;
          parts.push_back(static_cast<const uint8_t*>(m.data));
        }
        if (same) stored_as(t, d, std::move(parts), per, row_bytes(d, cols));
        t.produce_ = [experts = std::move(experts), per, cols](int64_t r0, int64_t n, float* o) {
          for (int64_t r = 0; r < n; ++r)
            dequantize_row(experts[size_t((r0 + r) / per)], (r0 + r) % per, 0, cols, o + r * cols);
        };
        break;
      }
      case GgufLayout::kKB:
      case GgufLayout::kVB: {
        const int64_t nh = c.num_attention_heads, nope = c.qk_nope_head_dim, v = c.v_head_dim, kvl = c.kv_lora_rank;
        const Source src = source(store, t.hf, {nh * (nope + v), kvl});
        const WeightMatrix m = src.m;
        // A GGUF input's own attn_k_b / attn_v_b (block formats; engine/gguf_model.cc): in
        // this very layout, so copyable as stored.
        const std::string stem = t.hf.substr(0, t.hf.size() - std::string_view("kv_b_proj.weight").size());
        const std::string own = stem + (t.layout == GgufLayout::kKB ? "k_b_proj.weight" : "v_b_proj.weight");
        if (store.has(own)) {
          const TensorView& w = store.get(own);
          const std::vector<int64_t> want{t.rows(), t.row_elems()};
          if (w.shape == want && gguf_storable(w.dtype))
            stored_as(t, w.dtype, {static_cast<const uint8_t*>(w.data)}, want[0], row_bytes(w.dtype, want[1]));
        }
        if (t.layout == GgufLayout::kVB) {
          // Row (h, j) is kv_b row h * (nope + v) + nope + j.
          t.source_bytes = src.bytes * uint64_t(v) / uint64_t(nope + v);
          t.produce_ = [m, nope, v, kvl](int64_t r0, int64_t n, float* o) {
            for (int64_t r = r0; r < r0 + n; ++r)
              dequantize_row(m, (r / v) * (nope + v) + nope + r % v, 0, kvl, o + (r - r0) * kvl);
          };
          break;
        }
        // Row (h, c) holds column c of head h's first nope kv_b rows: decode the columns
        // the requested rows touch, one kv_b row at a time, and transpose.
        t.source_bytes = src.bytes - src.bytes * uint64_t(v) / uint64_t(nope + v);
        t.produce_ = [m, nope, v, kvl](int64_t r0, int64_t n, float* o) {
          std::vector<float> tmp(static_cast<size_t>(kvl));
          for (int64_t r = r0; r < r0 + n;) {
            const int64_t h = r / kvl, c0 = r % kvl, c1 = std::min(kvl, c0 + (r0 + n - r));
            for (int64_t i = 0; i < nope; ++i) {
              dequantize_row(m, h * (nope + v) + i, c0, c1, tmp.data());
              for (int64_t col = c0; col < c1; ++col) o[(r - r0 + col - c0) * nope + i] = tmp[size_t(col - c0)];
            }
            r += c1 - c0;
          }
        };
        break;
      }
    }
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace hearth

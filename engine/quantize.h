// Writing a GGUF file from any checkpoint hearth loads (a Hugging Face directory or a GGUF
// file), each tensor in the type a policy picks: the core of `hearth quantize`.
//
// The work streams tensor by tensor in chunks of rows (a few MB of floats): each chunk is
// decoded from the source (engine/gguf_export.h), quantized in parallel over its rows and
// appended to the file, so memory stays at a few chunks whatever the model's size. The
// file appears only when complete (GgufWriter writes OUT.tmp and renames it); an error or
// a cancel removes the temporary file.
#pragma once
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "engine/config.h"
#include "engine/gguf_export.h"
#include "quant/dtype.h"

namespace hearth {

struct QuantizeProgress {
  const GgufExportTensor* tensor = nullptr;  // the tensor being written
  DType type = DType::F32;                   // its output type
  int64_t tensor_index = 0, tensor_count = 0;
  uint64_t bytes_in_done = 0, bytes_in_total = 0;    // source bytes (as stored) consumed
  uint64_t bytes_out_done = 0, bytes_out_total = 0;  // tensor data written
};

struct QuantizeOptions {
  std::filesystem::path input;   // a Hugging Face directory or a .gguf file
  std::filesystem::path output;  // the GGUF file to write (replaced if it exists)
  // The output type of each tensor; must be a format GGUF holds (not F8_E4M3) whose block
  // divides the tensor's row length. Default (unset): uniform_type_for(DType::Q8_0).
  std::function<DType(const GgufExportTensor&)> type_for;
  // Per-column importance for the quantizer's scale search (e.g. an imatrix's mean squared
  // activations): ne0 non-negative floats for the rows of `gguf_name` (of expert `expert`
  // for merged experts, else expert -1), or nullptr for none. Called from the calling
  // thread only.
  std::function<const float*(const std::string& gguf_name, int64_t expert, int64_t ne0)> importance;
  int threads = 0;                        // 0: one per physical core
  std::atomic<bool>* cancel = nullptr;    // checked between chunks; set -> throws, no OUT left
  std::function<void(const QuantizeProgress&)> progress;  // after each chunk, from the calling thread
  std::string name;                       // general.name; empty: the input's file or directory name
  std::optional<uint32_t> file_type;      // general.file_type; unset: from the types chosen
  bool split_kv_b = true;                 // attn_k_b + attn_v_b (false: attn_kv_b, as older files)
  int64_t chunk_bytes = int64_t(4) << 20; // floats decoded per chunk (rounded to whole rows)
  // > 0: write llama.cpp's split layout (engine/gguf_shards.h) instead of one file, shards
  // of at most this many bytes of tensor data, named OUT-00001-of-0000N.gguf (OUT being
  // `output` without ".gguf"); big models are published this way (Hugging Face takes
  // files up to 50 GB).
  uint64_t split_max_bytes = 0;
};

struct QuantizeTypeCount {
  int64_t tensors = 0;
  uint64_t bytes = 0;
};

struct QuantizeResult {
  ModelConfig config;
  std::map<DType, QuantizeTypeCount> by_type;  // by output type
  int64_t tensors = 0;
  int64_t copied = 0;         // tensors copied as the input stores them (type unchanged)
  uint64_t tensor_bytes = 0;  // tensor data written
  uint64_t file_bytes = 0;    // the whole file (all shards)
  std::vector<std::filesystem::path> files;  // the files written: `output`, or the shards in order
  uint32_t file_type = 0;
  std::string tokenizer;  // where the tokenizer.* keys came from; empty: the input has none
  double seconds = 0.0;
};

// Throws std::runtime_error naming the file, tensor or type on bad input, and
// "quantize: cancelled" when *cancel was set.
QuantizeResult quantize_model(const QuantizeOptions& options);

// The type a tensor gets when the whole model is asked to be `type`: F32 for 1-D tensors
// (norms, biases), the router (ffn_gate_inp, exp_probs_b) and the indexer's head weights
// (indexer.proj), which are small and decide discrete choices; `type` for the rest,
// falling back where the row length is not a whole number of its blocks: to Q8_0 for a
// K-quant when 32 divides it, else to F16.
DType default_tensor_type(const GgufExportTensor& tensor, DType type);
std::function<DType(const GgufExportTensor&)> uniform_type_for(DType type);

// llama.cpp's general.file_type (LLAMA_FTYPE_*) for a model mostly of `type`: F32 0,
// F16 1, Q4_0 2, Q4_1 3, Q8_0 7, Q5_0 8, Q5_1 9, Q2_K 10, Q3_K 11 (Q3_K_S), Q4_K 14
// (Q4_K_S), Q5_K 16 (Q5_K_S), Q6_K 18, IQ4_NL 25, IQ4_XS 30, BF16 32 (the "_S" mixes are
// the uniform ones).
uint32_t llama_file_type(DType type);

}  // namespace hearth

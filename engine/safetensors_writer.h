// Writes safetensors files tensor by tensor, so a checkpoint larger than RAM can be
// produced with one tensor in memory at a time. The header (names, dtypes, shapes,
// offsets) is declared up front; the data is then streamed in declaration order.
#pragma once
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "quant/dtype.h"

namespace hearth {

struct TensorSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t nbytes() const;
};

class SafetensorsWriter {
 public:
  // Writes to `path` + ".tmp" and renames on finish(), so an interrupted run never
  // leaves a file that looks complete.
  SafetensorsWriter(const std::filesystem::path& path, std::vector<TensorSpec> specs,
                    const std::map<std::string, std::string>& metadata = {{"format", "pt"}});
  ~SafetensorsWriter();  // removes the temp file if finish() was not reached
  SafetensorsWriter(const SafetensorsWriter&) = delete;  // owns the open FILE*
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;
  // Appends the next tensor's bytes (must be the next spec, with exactly nbytes()).
  void write(const std::string& name, const void* data, uint64_t nbytes);
  void finish();

 private:
  std::filesystem::path path_, tmp_;
  std::vector<TensorSpec> specs_;
  size_t next_ = 0;
  std::FILE* f_ = nullptr;
};

// Writes model.safetensors.index.json for shards: {"metadata": {"total_size": N},
// "weight_map": {tensor: file}}.
void write_safetensors_index(const std::filesystem::path& dir,
                             const std::map<std::string, std::string>& weight_map,
                             uint64_t total_size);

}  // namespace hearth

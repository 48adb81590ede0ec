// Memory-mapped safetensors checkpoints: one file, or shards listed by
// model.safetensors.index.json. Tensors are views into the mapping (zero copy).
//
// Every header is validated before use: header length bounded and inside the file,
// valid JSON, known dtype, shape x dtype size == byte range, ranges inside the data
// section, no two tensors overlapping. Errors name the file and the tensor.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "quant/dtype.h"

namespace hearth {

// A read-only memory mapping of a whole file.
class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path);  // throws naming the path
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // inside the mapping
  uint64_t nbytes = 0;
  std::string file;  // the shard it lives in, for messages

  int64_t numel() const;
  int64_t dim(int i) const { return shape.at(size_t(i)); }
};

// The largest header hearth accepts (the real 163-shard checkpoint's biggest is ~100 KB).
inline constexpr uint64_t kMaxSafetensorsHeader = 100ull << 20;

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);  // maps and validates
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::filesystem::path& path() const { return file_->path(); }
  const MappedFile& mapping() const { return *file_; }

 private:
  std::shared_ptr<MappedFile> file_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint directory, by name. Knows nothing about the network.
class WeightStore {
 public:
  // `dir` holds model.safetensors.index.json (sharded) or exactly the safetensors files
  // to load (model.safetensors, or *.safetensors when there is no index). A tensor named
  // by two shards, or listed in the index but missing from its shard, is an error.
  static WeightStore open(const std::filesystem::path& dir);
  // A store over tensors that live elsewhere: a GGUF file seen under Hugging Face names,
  // buffers built in memory. `origin` names them in messages; `keepalive` owns whatever
  // the views point into. Two views with one name are an error.
  static WeightStore from_views(std::filesystem::path origin, std::vector<TensorView> views,
                                std::vector<std::shared_ptr<const void>> keepalive);

  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  // Throws "missing tensor 'NAME' in DIR" when absent.
  const TensorView& get(const std::string& name) const;
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::filesystem::path& dir() const { return dir_; }
  uint64_t total_bytes() const;

 private:
  std::filesystem::path dir_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::vector<std::shared_ptr<const void>> keepalive_;  // from_views: what the views point into
  std::map<std::string, TensorView> tensors_;
};

}  // namespace hearth

// A GGUF model stored as one file or as the shards llama.cpp's gguf-split writes, which
// is how the big DeepSeek quants are published (a 380 GB Q4_K_M is nine files of ~45 GB):
//   PREFIX-00001-of-00009.gguf, PREFIX-00002-of-00009.gguf, ... PREFIX-00009-of-00009.gguf
// Each shard is a complete GGUF file (its own tensor infos, alignment and data section).
// The first holds the model's metadata; every shard holds split.no (u16, 0-based),
// split.count (u16) and split.tensors.count (i32, the tensors of all shards together).
// A file without split.count, or with a count of 0 or 1 (gguf-split --merge writes 0), is
// a model by itself. The user names the first shard, as with llama.cpp; the others are
// found by that naming pattern next to it.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/gguf.h"

namespace hearth {

inline constexpr std::string_view kGgufSplitNo = "split.no";
inline constexpr std::string_view kGgufSplitCount = "split.count";
inline constexpr std::string_view kGgufSplitTensors = "split.tensors.count";

// Shard `index` (0-based) of `count`: PREFIX-<index + 1>-of-<count>.gguf, five digits each.
std::filesystem::path gguf_shard_path(const std::filesystem::path& prefix, int index, int count);

class GgufShards {
 public:
  explicit GgufShards(std::shared_ptr<const GgufFile> single);

  // Opens `path` and, when its metadata makes it the first of several shards, every other
  // shard, each validated as a GGUF file. Errors are one line naming the file: a shard
  // other than the first given, a name that does not follow the pattern, a missing shard,
  // a shard whose split.no or split.count disagrees, a tensor in two shards, a total that
  // is not split.tensors.count.
  static GgufShards open(const std::filesystem::path& path);

  const GgufFile& first() const { return *files_.front(); }  // the model's metadata
  const std::vector<std::shared_ptr<const GgufFile>>& files() const { return files_; }
  int64_t tensor_count() const { return int64_t(index_.size()); }

  const GgufTensor* find_tensor(std::string_view name) const;  // nullptr when absent
  // The shard that holds `t` (a tensor of one of files()).
  const std::filesystem::path& path_of(const GgufTensor& t) const;

 private:
  GgufShards() = default;
  void add(std::shared_ptr<const GgufFile> file);

  std::vector<std::shared_ptr<const GgufFile>> files_;
  std::map<std::string, std::pair<size_t, const GgufTensor*>, std::less<>> index_;  // name -> (file, tensor)
};

}  // namespace hearth

#include "engine/gguf_shards.h"

#include <cstdio>
#include <stdexcept>
#include <system_error>

namespace hearth {

namespace fs = std::filesystem;

namespace {

std::string shard_suffix(int index, int count) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "-%05d-of-%05d.gguf", index + 1, count);
  return buf;
}

// split.no / split.count as the shard states them; `key` absent reads as `absent`.
int64_t split_value(const GgufFile& f, std::string_view key, int64_t absent) {
  if (!f.has(key)) return absent;
  return int64_t(f.get_u32(key));  // u16 in llama.cpp's files; any unsigned integer reads
}

}  // namespace

fs::path gguf_shard_path(const fs::path& prefix, int index, int count) {
  return fs::path(prefix.string() + shard_suffix(index, count));
}

GgufShards::GgufShards(std::shared_ptr<const GgufFile> single) {
  if (!single) throw std::invalid_argument("GgufShards: no file");
  add(std::move(single));
}

void GgufShards::add(std::shared_ptr<const GgufFile> file) {
  const size_t at = files_.size();
  for (const GgufTensor& t : file->tensors()) {
    const auto [it, fresh] = index_.try_emplace(t.name, at, &t);
    if (!fresh)
      throw std::runtime_error(file->path().string() + ": tensor '" + t.name + "' is also in " +
                               files_[it->second.first]->path().string());
  }
  files_.push_back(std::move(file));
}

GgufShards GgufShards::open(const fs::path& path) {
  GgufShards s;
  auto first = std::make_shared<const GgufFile>(path);
  const std::string name = path.string();
  const int64_t count = split_value(*first, kGgufSplitCount, 1);
  if (count <= 1) {  // a file of its own (gguf-split --merge leaves split.count = 0)
    s.add(std::move(first));
    return s;
  }
  if (count > 99999) throw std::runtime_error(name + ": split.count " + std::to_string(count) + " is not a shard count");
  const int64_t no = split_value(*first, kGgufSplitNo, 0);
  if (no >= count)
    throw std::runtime_error(name + ": split.no " + std::to_string(no) + " is not below split.count " + std::to_string(count));
  const std::string own_suffix = shard_suffix(int(no), int(count));
  const bool named = name.size() > own_suffix.size() && name.ends_with(own_suffix);
  if (no != 0) {
    std::string hint;
    if (named) hint = ": give the first, " + gguf_shard_path(name.substr(0, name.size() - own_suffix.size()), 0, int(count)).string();
    throw std::runtime_error(name + ": this is shard " + std::to_string(no + 1) + " of " + std::to_string(count) +
                             " of a split GGUF" + (hint.empty() ? std::string(": give the first shard") : hint));
  }
  if (!named)
    throw std::runtime_error(name + ": split.count says the model is in " + std::to_string(count) +
                             " shards, but the name does not end in " + own_suffix +
                             ", so the others cannot be found (keep gguf-split's names)");
  const fs::path prefix = name.substr(0, name.size() - own_suffix.size());
  s.add(std::move(first));
  for (int i = 1; i < int(count); ++i) {
    const fs::path p = gguf_shard_path(prefix, i, int(count));
    std::error_code ec;
    if (!fs::is_regular_file(p, ec))
      throw std::runtime_error(name + ": shard " + std::to_string(i + 1) + " of " + std::to_string(count) + ", " +
                               p.string() + ", is missing");
    auto f = std::make_shared<const GgufFile>(p);
    const int64_t fno = split_value(*f, kGgufSplitNo, -1), fcount = split_value(*f, kGgufSplitCount, -1);
    if (fno != i || fcount != count)
      throw std::runtime_error(p.string() + ": split.no " + std::to_string(fno) + " / split.count " +
                               std::to_string(fcount) + " where shard " + std::to_string(i + 1) + " of " +
                               std::to_string(count) + " should say " + std::to_string(i) + " / " +
                               std::to_string(count) + " (a shard of another model?)");
    s.add(std::move(f));
  }
  if (s.first().has(kGgufSplitTensors)) {
    const int64_t want = s.first().get_i64(kGgufSplitTensors);
    if (want != s.tensor_count())
      throw std::runtime_error(name + ": split.tensors.count says " + std::to_string(want) + " tensors, the " +
                               std::to_string(count) + " shards hold " + std::to_string(s.tensor_count()));
  }
  return s;
}

const GgufTensor* GgufShards::find_tensor(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second.second;
}

const fs::path& GgufShards::path_of(const GgufTensor& t) const {
  const auto it = index_.find(t.name);
  if (it == index_.end() || it->second.second != &t)
    throw std::logic_error("GgufShards::path_of: tensor '" + t.name + "' is not one of these files'");
  return files_[it->second.first]->path();
}

}  // namespace hearth

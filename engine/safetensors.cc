#include "engine/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "engine/file_error.h"

namespace hearth {
namespace {

using nlohmann::json;

[[noreturn]] void fail_tensor(const std::filesystem::path& file, const std::string& tensor,
                              const std::string& what) {
  fail(file, "tensor '" + tensor + "': " + what);
}

// A JSON integer that must be >= 0 (safetensors offsets and dims are unsigned).
bool get_unsigned(const json& j, uint64_t& out) {
  if (j.is_number_unsigned()) {
    out = j.get<uint64_t>();
    return true;
  }
  if (j.is_number_integer() && j.get<int64_t>() >= 0) {
    out = uint64_t(j.get<int64_t>());
    return true;
  }
  return false;
}

// Parses one header entry into `t` (everything but the data pointer), checking types,
// dtype, and that shape x dtype size matches the byte range inside the data section.
void parse_entry(const std::filesystem::path& file, const std::string& name, const json& e,
                 uint64_t data_size, TensorView& t, uint64_t& begin) {
  if (!e.is_object()) fail_tensor(file, name, "header entry is not a JSON object");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!e.contains(key)) fail_tensor(file, name, std::string("missing key '") + key + "'");

  const json& jd = e["dtype"];
  if (!jd.is_string()) fail_tensor(file, name, "'dtype' is not a string");
  auto dt = parse_dtype(jd.get<std::string>());
  if (!dt) fail_tensor(file, name, "unsupported dtype '" + jd.get<std::string>() + "'");

  const json& js = e["shape"];
  if (!js.is_array()) fail_tensor(file, name, "'shape' is not an array");
  uint64_t numel = 1;
  for (const json& d : js) {
    uint64_t dim;
    if (!get_unsigned(d, dim) || dim > uint64_t(INT64_MAX))
      fail_tensor(file, name, "shape " + js.dump() + " has a dimension that is not a non-negative integer");
    // Overflow would let a hostile header pass the size check with a tiny byte range.
    if (__builtin_mul_overflow(numel, dim, &numel))
      fail_tensor(file, name, "shape " + js.dump() + " overflows 64 bits");
    t.shape.push_back(int64_t(dim));
  }

  const json& jo = e["data_offsets"];
  uint64_t end;
  if (!jo.is_array() || jo.size() != 2 || !get_unsigned(jo[0], begin) || !get_unsigned(jo[1], end))
    fail_tensor(file, name, "'data_offsets' " + jo.dump() + " is not two non-negative integers");
  const std::string offs = "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "]";
  if (begin > end) fail_tensor(file, name, offs + " begin after end");
  if (end > data_size)
    fail_tensor(file, name, offs + " end past the data section (size " + std::to_string(data_size) + ")");

  uint64_t nbytes;
  if (__builtin_mul_overflow(numel, uint64_t(dtype_size(*dt)), &nbytes) || nbytes != end - begin)
    fail_tensor(file, name, "shape " + js.dump() + " of " + jd.get<std::string>() + " does not match " +
                                offs + " (" + std::to_string(end - begin) + " bytes)");
  t.name = name;
  t.dtype = *dt;
  t.nbytes = nbytes;
  t.file = file.string();
}

json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail(path, "not valid JSON");
  return j;
}

}  // namespace

MappedFile::MappedFile(const std::filesystem::path& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, "not a regular file");
  }
  size_ = uint64_t(st.st_size);
  // mmap rejects length 0, and an empty file has nothing to map: keep data_ null.
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      fail(path, std::string("mmap failed: ") + std::strerror(err));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);  // the mapping keeps the file referenced
  // No madvise here: access patterns differ (header scan, per-layer streaming, random
  // expert reads), so callers advise the ranges they know about.
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // validated against the byte range when loaded
  return n;
}

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path)
    : file_(std::make_shared<MappedFile>(path)) {
  const uint64_t size = file_->size();
  if (size < 8) fail(path, "file is " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | file_->data()[i];  // little-endian on any host
  if (n > kMaxSafetensorsHeader)
    fail(path, "header length " + std::to_string(n) + " exceeds the limit of " +
                   std::to_string(kMaxSafetensorsHeader) + " bytes");
  if (8 + n > size)
    fail(path, "header length " + std::to_string(n) + " runs past the end of the file (size " +
                   std::to_string(size) + ", truncated?)");

  const char* hdr = reinterpret_cast<const char*>(file_->data() + 8);
  // nlohmann stops at a NUL byte, which would silently ignore whatever follows it.
  if (std::memchr(hdr, 0, n)) fail(path, "header is not valid JSON (contains a NUL byte)");
  json j = json::parse(hdr, hdr + n, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail(path, "header is not valid JSON");
  if (!j.is_object()) fail(path, "header is not a JSON object");

  const uint64_t data_size = size - 8 - n;
  const uint8_t* data = file_->data() + 8 + n;
  struct Range {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Range> ranges;
  for (auto& [name, e] : j.items()) {
    if (name == "__metadata__") {
      if (!e.is_object()) fail(path, "__metadata__ is not a JSON object");
      for (auto& [k, v] : e.items()) {
        if (!v.is_string()) fail(path, "__metadata__ value of '" + k + "' is not a string");
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    TensorView t;
    uint64_t begin = 0;
    parse_entry(path, name, e, data_size, t, begin);
    t.data = data + begin;
    auto it = tensors_.emplace(name, std::move(t)).first;
    ranges.push_back({begin, begin + it->second.nbytes, &it->first});
  }

  // Overlapping tensors would alias each other's bytes; empty ranges own no bytes.
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const Range* last = nullptr;  // the non-empty range reaching furthest so far
  for (const Range& r : ranges) {
    if (r.begin == r.end) continue;
    if (last && r.begin < last->end)
      fail_tensor(path, *r.name,
                  "data_offsets [" + std::to_string(r.begin) + ", " + std::to_string(r.end) +
                      "] overlap tensor '" + *last->name + "' [" + std::to_string(last->begin) + ", " +
                      std::to_string(last->end) + "]");
    if (!last || r.end > last->end) last = &r;
  }
}

WeightStore WeightStore::open(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  WeightStore ws;
  ws.dir_ = dir;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail(dir, "checkpoint directory does not exist");

  const fs::path index_path = dir / "model.safetensors.index.json";
  std::map<std::string, std::string> weight_map;  // tensor -> shard, from the index
  std::set<std::string> shards;
  if (fs::exists(index_path, ec)) {
    json j = read_json_file(index_path);
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      fail(index_path, "no 'weight_map' object");
    for (auto& [name, shard] : j["weight_map"].items()) {
      if (!shard.is_string()) fail_tensor(index_path, name, "shard is not a string");
      const std::string s = shard.get<std::string>();
      // Shards are plain names next to the index; a path could escape the directory.
      if (s.empty() || fs::path(s).filename() != fs::path(s))
        fail_tensor(index_path, name, "shard '" + s + "' is not a file name");
      if (!shards.count(s) && !fs::is_regular_file(dir / s, ec))
        fail_tensor(index_path, name, "shard '" + s + "' does not exist");
      weight_map[name] = s;
      shards.insert(s);
    }
  } else {
    for (const auto& entry : fs::directory_iterator(dir))
      if (entry.is_regular_file() && entry.path().extension() == ".safetensors")
        shards.insert(entry.path().filename().string());
  }
  if (shards.empty()) fail(dir, "no .safetensors files");

  for (const std::string& s : shards) {  // sorted, so errors are deterministic
    auto f = std::make_shared<SafetensorsFile>(dir / s);
    for (const auto& [name, t] : f->tensors()) {
      auto [it, fresh] = ws.tensors_.emplace(name, t);
      if (!fresh) fail_tensor(f->path(), name, "also present in " + it->second.file);
    }
    ws.files_.push_back(std::move(f));
  }
  for (const auto& [name, s] : weight_map) {
    auto it = ws.tensors_.find(name);
    if (it == ws.tensors_.end() || fs::path(it->second.file).filename() != s)
      fail_tensor(index_path, name, "listed in shard '" + s + "' but missing from it");
  }
  return ws;
}

WeightStore WeightStore::from_views(std::filesystem::path origin, std::vector<TensorView> views,
                                    std::vector<std::shared_ptr<const void>> keepalive) {
  WeightStore ws;
  ws.dir_ = std::move(origin);
  ws.keepalive_ = std::move(keepalive);
  for (TensorView& v : views) {
    if (v.file.empty()) v.file = ws.dir_.string();
    const std::string name = v.name;
    if (!ws.tensors_.emplace(name, std::move(v)).second) fail_tensor(ws.dir_, name, "appears twice");
  }
  return ws;
}

const TensorView& WeightStore::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw std::runtime_error("missing tensor '" + name + "' in " + dir_.string());
  return it->second;
}

uint64_t WeightStore::total_bytes() const {
  uint64_t n = 0;
  for (const auto& [name, t] : tensors_) n += t.nbytes;
  return n;
}

}  // namespace hearth

#include "engine/imatrix.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>

#include "engine/file_error.h"
#include "engine/gguf.h"
#include "engine/safetensors.h"  // MappedFile

namespace hearth {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kSumsSuffix = ".in_sum2";
constexpr std::string_view kCountsSuffix = ".counts";

// One tensor's statistics: n_mat matrices of ne0 columns. The mean of x^2 is kept, not
// the sum, so a long calibration run does not lose precision in float sums; the file's
// sums are mean * count.
struct Entry {
  int64_t ne0 = 0, n_mat = 0;
  std::vector<float> mean;     // n_mat * ne0
  std::vector<int64_t> count;  // rows per matrix
  std::unique_ptr<std::mutex[]> locks;  // one per matrix, for add()

  Entry(int64_t ne0_, int64_t n_mat_)
      : ne0(ne0_), n_mat(n_mat_), mean(size_t(ne0_ * n_mat_), 0.0f), count(size_t(n_mat_), 0),
        locks(new std::mutex[size_t(n_mat_)]) {}
};

// A bounds-checked little-endian reader over a mapped legacy file.
class LegacyReader {
 public:
  explicit LegacyReader(const MappedFile& f) : f_(f) {}
  uint64_t left() const { return f_.size() - pos_; }
  int32_t i32(const std::string& what) {
    int32_t v;
    bytes(&v, 4, what);
    return v;
  }
  void bytes(void* out, uint64_t n, const std::string& what) {
    if (n > left())
      fail(f_.path(), "truncated: " + what + " needs " + std::to_string(int64_t(n)) + " bytes at offset " + std::to_string(int64_t(pos_)) +
                          ", only " + std::to_string(int64_t(left())) + " left");
    if (n) std::memcpy(out, f_.data() + pos_, n);
    pos_ += n;
  }

 private:
  const MappedFile& f_;
  uint64_t pos_ = 0;
};

// The values of an importance entry are sums or means of squares: finite and >= 0.
void check_values(const fs::path& file, const std::string& entry, const float* v, int64_t n, const char* what) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i]) || v[i] < 0)
      fail(file, "entry '" + entry + "': " + what + " " + std::to_string(i) + " is " + std::to_string(v[i]) +
                     " (expected a finite value >= 0)");
}

}  // namespace

struct ImportanceMatrix::State {
  mutable std::shared_mutex map_lock;  // guards the map's shape (add() inserts)
  std::map<std::string, std::unique_ptr<Entry>, std::less<>> entries;
  std::atomic<uint32_t> chunks{0};
  uint32_t chunk_size = 0;
  std::vector<std::string> datasets;

  const Entry* find(std::string_view name) const {
    std::shared_lock lock(map_lock);
    auto it = entries.find(name);
    return it == entries.end() ? nullptr : it->second.get();
  }
};

ImportanceMatrix::ImportanceMatrix() : s_(std::make_unique<State>()) {}
ImportanceMatrix::~ImportanceMatrix() = default;
ImportanceMatrix::ImportanceMatrix(ImportanceMatrix&&) noexcept = default;
ImportanceMatrix& ImportanceMatrix::operator=(ImportanceMatrix&&) noexcept = default;

// ---- accumulation ----------------------------------------------------------------

void ImportanceMatrix::add(std::string_view name, int64_t expert, int64_t n_expert, const float* x, int64_t ne0) {
  const int64_t n_mat = n_expert < 1 ? 1 : n_expert;
  if (expert == -1 && n_mat == 1) expert = 0;  // -1: "not an expert tensor"
  if (expert < 0 || expert >= n_mat || ne0 < 1 || !x)
    throw std::invalid_argument("ImportanceMatrix::add('" + std::string(name) + "'): expert " + std::to_string(expert) + " of " +
                                std::to_string(n_expert) + ", " + std::to_string(ne0) + " values" + (x ? "" : ", null row"));
  for (int64_t j = 0; j < ne0; ++j)
    if (!std::isfinite(x[j]))
      throw std::runtime_error("imatrix: activation " + std::to_string(j) + " into '" + std::string(name) + "' is " +
                               std::to_string(x[j]));

  Entry* e = const_cast<Entry*>(s_->find(name));
  if (!e) {
    std::unique_lock lock(s_->map_lock);
    auto& slot = s_->entries[std::string(name)];  // another thread may have made it meanwhile
    if (!slot) slot = std::make_unique<Entry>(ne0, n_mat);
    e = slot.get();
  }
  if (e->ne0 != ne0 || e->n_mat != n_mat)
    throw std::runtime_error("imatrix: '" + std::string(name) + "' has " + std::to_string(e->n_mat) + " matrices of rows of " +
                             std::to_string(e->ne0) + ", got a row of " + std::to_string(ne0) + " for " + std::to_string(n_mat) + " matrices");

  std::lock_guard lock(e->locks[size_t(expert)]);
  int64_t& n = e->count[size_t(expert)];
  ++n;
  // Running mean: m += (x^2 - m) / n stays accurate however many rows arrive.
  const float inv = float(1.0 / double(n));
  float* m = e->mean.data() + expert * ne0;
  for (int64_t j = 0; j < ne0; ++j) m[j] += (x[j] * x[j] - m[j]) * inv;
}

void ImportanceMatrix::finish_chunk() { s_->chunks.fetch_add(1, std::memory_order_relaxed); }

// ---- queries -----------------------------------------------------------------------

const float* ImportanceMatrix::weights(std::string_view name, int64_t expert, int64_t ne0) const {
  const Entry* e = s_->find(name);
  if (expert == -1) expert = 0;  // a plain tensor
  if (!e || expert < 0 || ne0 < 1) return nullptr;
  if (e->n_mat > 1 || e->ne0 == ne0) {
    if (e->ne0 != ne0 || expert >= e->n_mat || e->count[size_t(expert)] == 0) return nullptr;
    return e->mean.data() + expert * ne0;
  }
  // One matrix longer than the row: flattened expert rows (legacy files).
  if (e->ne0 % ne0 != 0 || expert >= e->ne0 / ne0 || e->count[0] == 0) return nullptr;
  return e->mean.data() + expert * ne0;
}

int64_t ImportanceMatrix::count(std::string_view name, int64_t expert) const {
  const Entry* e = s_->find(name);
  if (!e || expert < 0 || expert >= e->n_mat) return 0;
  return e->count[size_t(expert)];
}

size_t ImportanceMatrix::size() const {
  std::shared_lock lock(s_->map_lock);
  return s_->entries.size();
}

std::vector<std::string> ImportanceMatrix::names() const {
  std::shared_lock lock(s_->map_lock);
  std::vector<std::string> out;
  for (const auto& [name, e] : s_->entries) out.push_back(name);
  return out;
}

std::pair<int64_t, int64_t> ImportanceMatrix::shape(std::string_view name) const {
  const Entry* e = s_->find(name);
  return e ? std::pair{e->ne0, e->n_mat} : std::pair<int64_t, int64_t>{0, 0};
}

uint32_t ImportanceMatrix::chunk_count() const { return s_->chunks.load(std::memory_order_relaxed); }
uint32_t ImportanceMatrix::chunk_size() const { return s_->chunk_size; }
void ImportanceMatrix::set_chunk_size(uint32_t tokens) { s_->chunk_size = tokens; }
const std::vector<std::string>& ImportanceMatrix::datasets() const { return s_->datasets; }
void ImportanceMatrix::add_dataset(std::string name) { s_->datasets.push_back(std::move(name)); }

// ---- files -------------------------------------------------------------------------

void ImportanceMatrix::save(const fs::path& path) const {
  GgufWriter w(path);
  w.add("general.type", "imatrix");
  w.add(std::string(kImatrixDatasetsKey), s_->datasets);
  w.add(std::string(kImatrixChunkCountKey), chunk_count());
  w.add(std::string(kImatrixChunkSizeKey), s_->chunk_size);
  for (const auto& [name, e] : s_->entries) {
    w.add_tensor(name + std::string(kSumsSuffix), GgmlType::F32, {e->ne0, e->n_mat});
    w.add_tensor(name + std::string(kCountsSuffix), GgmlType::F32, {1, e->n_mat});
  }
  std::vector<float> buf;
  for (const auto& [name, e] : s_->entries) {
    buf.resize(e->mean.size());
    for (int64_t m = 0; m < e->n_mat; ++m)
      for (int64_t j = 0; j < e->ne0; ++j)
        buf[size_t(m * e->ne0 + j)] = float(double(e->mean[size_t(m * e->ne0 + j)]) * double(e->count[size_t(m)]));
    w.write(name + std::string(kSumsSuffix), buf.data(), buf.size() * sizeof(float));
    buf.resize(size_t(e->n_mat));
    for (int64_t m = 0; m < e->n_mat; ++m) buf[size_t(m)] = float(e->count[size_t(m)]);
    w.write(name + std::string(kCountsSuffix), buf.data(), buf.size() * sizeof(float));
  }
  w.finish();
}

namespace {

void load_gguf(const fs::path& path, ImportanceMatrix& im,
                           std::map<std::string, std::unique_ptr<Entry>, std::less<>>& entries, uint32_t& chunks,
                           uint32_t& chunk_size) {
  const GgufFile f(path);
  const GgufValue* type = f.find("general.type");
  if (!type) fail(path, "a GGUF file without general.type, not an imatrix");
  if (type->type() != GgufType::STRING || type->is_array() || type->str() != "imatrix")
    fail(path, "general.type is " + (type->type() == GgufType::STRING && !type->is_array() ? "'" + type->str() + "'"
                                                                                             : type->type_name()) +
                   ", not 'imatrix'");
  if (f.has(kImatrixDatasetsKey))
    for (const std::string& d : f.get_string_array(kImatrixDatasetsKey)) im.add_dataset(d);
  if (f.has(kImatrixChunkCountKey)) chunks = f.get_u32(kImatrixChunkCountKey);
  if (f.has(kImatrixChunkSizeKey)) chunk_size = f.get_u32(kImatrixChunkSizeKey);

  // Pair NAME.in_sum2 with NAME.counts; other tensors are not ours to read.
  std::map<std::string, std::pair<const GgufTensor*, const GgufTensor*>, std::less<>> pairs;
  for (const GgufTensor& t : f.tensors()) {
    std::string_view n = t.name;
    if (n.ends_with(kSumsSuffix))
      pairs[std::string(n.substr(0, n.size() - kSumsSuffix.size()))].first = &t;
    else if (n.ends_with(kCountsSuffix))
      pairs[std::string(n.substr(0, n.size() - kCountsSuffix.size()))].second = &t;
  }
  if (pairs.empty()) fail(path, "no importance entries (no NAME.in_sum2 / NAME.counts tensors)");

  std::vector<float> sums, counts;
  for (const auto& [name, pair] : pairs) {
    const auto [s, c] = pair;
    auto bad = [&](const std::string& what) { fail(path, "entry '" + name + "': " + what); };
    if (!s) bad("has " + name + std::string(kCountsSuffix) + " but no " + std::string(kSumsSuffix));
    if (!c) bad("has " + name + std::string(kSumsSuffix) + " but no " + std::string(kCountsSuffix));
    for (const GgufTensor* t : {s, c})
      if (t->type() != GgmlType::F32) bad(t->name + " is " + std::string(t->format->name) + ", expected f32");
    if (s->dims.empty() || s->dims.size() > 2)
      bad(s->name + " has " + std::to_string(int64_t(s->dims.size())) + " dimensions, expected 1 or 2");
    const int64_t ne0 = s->dims[0], n_mat = s->dims.size() > 1 ? s->dims[1] : 1;
    if (ne0 < 1 || n_mat < 1) bad(s->name + " is empty");
    if (c->numel() != n_mat)
      bad(c->name + " holds " + std::to_string(c->numel()) + " counts for " + std::to_string(n_mat) + " matrices");
    sums.resize(size_t(ne0 * n_mat));
    counts.resize(size_t(n_mat));
    std::memcpy(sums.data(), s->data, sums.size() * sizeof(float));
    std::memcpy(counts.data(), c->data, counts.size() * sizeof(float));
    check_values(path, name, sums.data(), ne0 * n_mat, "sum");
    check_values(path, name, counts.data(), n_mat, "count");
    auto e = std::make_unique<Entry>(ne0, n_mat);
    for (int64_t m = 0; m < n_mat; ++m) {
      const double n = counts[size_t(m)];
      e->count[size_t(m)] = std::llround(n);
      if (n > 0)
        for (int64_t j = 0; j < ne0; ++j) e->mean[size_t(m * ne0 + j)] = float(sums[size_t(m * ne0 + j)] / n);
    }
    entries.emplace(name, std::move(e));
  }
}

void load_legacy(const fs::path& path, ImportanceMatrix& im,
                 std::map<std::string, std::unique_ptr<Entry>, std::less<>>& entries, uint32_t& chunks) {
  const MappedFile f(path);
  LegacyReader r(f);
  const int32_t n_entries = r.i32("the entry count");
  if (n_entries < 0) fail(path, "negative entry count " + std::to_string(n_entries) + " (not an imatrix file?)");
  if (n_entries == 0) fail(path, "no importance entries");
  // Each entry takes at least 13 bytes (three int32 and a one-byte name).
  if (uint64_t(n_entries) * 13 > r.left())
    fail(path, "entry count " + std::to_string(n_entries) + " cannot fit in the " + std::to_string(int64_t(r.left())) +
                   " bytes that follow (not an imatrix file?)");
  for (int32_t i = 0; i < n_entries; ++i) {
    const std::string at = "entry " + std::to_string(i);
    const int32_t len = r.i32(at + "'s name length");
    if (len <= 0) fail(path, at + ": name length " + std::to_string(len) + " is not positive");
    if (uint64_t(len) > r.left())
      fail(path, at + ": name length " + std::to_string(len) + " runs past the end of the file (" + std::to_string(int64_t(r.left())) +
                     " bytes left)");
    std::string name(size_t(len), '\0');
    r.bytes(name.data(), uint64_t(len), at + "'s name");
    const std::string quoted = "entry '" + name + "'";
    const int32_t ncall = r.i32(quoted + "'s call count");
    const int32_t nval = r.i32(quoted + "'s value count");
    if (ncall < 0) fail(path, quoted + ": negative call count " + std::to_string(ncall));
    if (nval <= 0) fail(path, quoted + ": value count " + std::to_string(nval) + " is not positive");
    if (uint64_t(nval) * 4 > r.left())
      fail(path, quoted + ": " + std::to_string(nval) + " values run past the end of the file (" + std::to_string(int64_t(r.left())) +
                     " bytes left)");
    if (entries.count(name)) fail(path, quoted + " appears twice");
    auto e = std::make_unique<Entry>(nval, 1);
    r.bytes(e->mean.data(), uint64_t(nval) * 4, quoted + "'s values");
    check_values(path, name, e->mean.data(), nval, "value");
    // Stored: mean * ncall. A zero ncall leaves the values as they are, as llama.cpp does.
    if (ncall > 0)
      for (float& v : e->mean) v = float(double(v) / ncall);
    e->count[0] = ncall > 0 ? ncall : 1;
    entries.emplace(std::move(name), std::move(e));
  }
  // The trailer: last chunk, then the dataset name; older writers stopped earlier.
  if (r.left() > 0) {
    const int32_t last = r.i32("the chunk count");
    if (last < 0) fail(path, "negative chunk count " + std::to_string(last));
    chunks = uint32_t(last);
  }
  if (r.left() > 0) {
    const int32_t len = r.i32("the dataset name length");
    if (len < 0 || uint64_t(len) > r.left())
      fail(path, "dataset name length " + std::to_string(len) + " does not fit the " + std::to_string(int64_t(r.left())) + " bytes left");
    std::string dataset(size_t(len), '\0');
    r.bytes(dataset.data(), uint64_t(len), "the dataset name");
    im.add_dataset(std::move(dataset));
  }
  if (r.left() > 0) fail(path, std::to_string(int64_t(r.left())) + " unexpected bytes after the dataset name");
}

}  // namespace

ImportanceMatrix ImportanceMatrix::load(const fs::path& path) {
  ImportanceMatrix im;
  uint32_t chunks = 0;
  bool gguf = false;
  {
    const MappedFile f(path);
    if (f.size() < 4) fail(path, "file is " + std::to_string(int64_t(f.size())) + " bytes, too short for an imatrix");
    gguf = std::memcmp(f.data(), "GGUF", 4) == 0;
  }
  if (gguf)
    load_gguf(path, im, im.s_->entries, chunks, im.s_->chunk_size);
  else
    load_legacy(path, im, im.s_->entries, chunks);
  im.s_->chunks = chunks;
  return im;
}

}  // namespace hearth

// Importance matrices ("imatrix"): per weight tensor and per input column, the mean of
// x^2 over the activation rows x that went into the tensor while running calibration
// text. The quantizers (quant/block_formats.h) weigh each value's error by it, so the
// columns that carry large activations are kept most exactly.
//
// Files, both as llama.cpp's tools/imatrix writes them:
//   GGUF (current): general.type = "imatrix"; imatrix.datasets (array of str),
//     imatrix.chunk_count and imatrix.chunk_size (u32); per tensor NAME an F32 tensor
//     "NAME.in_sum2" with ne = [row length, matrices] (the sums of x^2; matrices is
//     n_expert for merged expert tensors, else 1) and an F32 "NAME.counts" with
//     ne = [1, matrices] (rows summed into each matrix). Other tensors (such as the
//     newer "NAME.in_sum", sums of x) are ignored.
//   Legacy .dat: int32 entry count; per entry int32 name length, the name bytes, int32
//     ncall, int32 nval, float values[nval] (the mean of x^2 times ncall, experts
//     concatenated); then int32 last chunk and int32 length + bytes of the dataset name
//     (both optional, as older writers left them out). All little-endian.
// load() tells them apart by the GGUF magic; save() always writes GGUF.
//
// Legacy entries do not record how many experts they hold, and llama.cpp's conversions
// of them keep one matrix: an entry with a single matrix whose length is a multiple of
// the asked row length is read as consecutive rows of that length (see weights()).
//
// Thread safety: add() may be called concurrently, for the same or different tensors;
// rows for different tensors (or different experts of one tensor) accumulate in
// parallel, rows for the same matrix take turns on its own lock. finish_chunk() is
// atomic. Everything else (weights, save, the accessors) reads without those locks and
// must not overlap an add().
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hearth {

inline constexpr std::string_view kImatrixDatasetsKey = "imatrix.datasets";
inline constexpr std::string_view kImatrixChunkCountKey = "imatrix.chunk_count";
inline constexpr std::string_view kImatrixChunkSizeKey = "imatrix.chunk_size";

class ImportanceMatrix {
 public:
  ImportanceMatrix();
  ~ImportanceMatrix();
  ImportanceMatrix(ImportanceMatrix&&) noexcept;
  ImportanceMatrix& operator=(ImportanceMatrix&&) noexcept;

  // Reads either format. Errors are one line naming the file and, where there is one,
  // the entry: unreadable or truncated files, counts or lengths the file cannot hold,
  // negative lengths, duplicate entries, non-finite or negative values, a GGUF file that
  // is not an imatrix, a file with no entries.
  static ImportanceMatrix load(const std::filesystem::path& path);
  // Writes the GGUF format, entries sorted by name, through GgufWriter (a temp file
  // renamed into place once complete).
  void save(const std::filesystem::path& path) const;

  // Accumulates one activation row x[0..ne0) going into tensor `name`: for matrix
  // `expert` of a merged expert tensor of n_expert matrices, or (n_expert 0 or 1,
  // expert 0 or -1) a plain tensor. A tensor's first row fixes its row length and matrix
  // count; a later row that disagrees, or a non-finite value in x, throws
  // std::runtime_error naming the tensor (and adds nothing). expert outside
  // [0, n_expert), ne0 < 1 or a null x is std::invalid_argument.
  void add(std::string_view name, int64_t expert, int64_t n_expert, const float* x, int64_t ne0);
  // Marks the end of one calibration chunk (counts them for the file's chunk_count).
  void finish_chunk();

  // The ne0 per-column importances (mean x^2) of matrix `expert` of tensor `name`
  // (expert 0 or -1 for a plain tensor);
  // nullptr if the tensor is absent, the matrix saw no rows, or the lengths differ. For
  // a tensor recorded with several matrices, ne0 must be its row length; for one with a
  // single matrix of L values, ne0 == L (expert 0) or L a multiple of ne0 (expert below
  // L / ne0: flattened expert rows). Valid until the next add() or the object's end.
  const float* weights(std::string_view name, int64_t expert, int64_t ne0) const;
  // Rows accumulated into a matrix (legacy files: their ncall); 0 if absent.
  int64_t count(std::string_view name, int64_t expert) const;

  size_t size() const;                  // entries (tensors)
  std::vector<std::string> names() const;  // sorted
  // Row length and matrix count of an entry; {0, 0} if absent.
  std::pair<int64_t, int64_t> shape(std::string_view name) const;

  uint32_t chunk_count() const;
  uint32_t chunk_size() const;           // tokens per chunk; 0 if unknown (legacy files)
  void set_chunk_size(uint32_t tokens);
  const std::vector<std::string>& datasets() const;
  void add_dataset(std::string name);

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace hearth

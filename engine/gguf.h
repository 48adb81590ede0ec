// GGUF files (ggml's single-file model format, versions 2 and 3): a memory-mapped reader
// with zero-copy tensor views and typed metadata, and a streaming writer.
//
// Layout (all little-endian):
//   "GGUF"  u32 version  u64 tensor_count  u64 kv_count
//   kv_count x  { string key, u32 value type, value }
//   tensor_count x { string name, u32 n_dims, n_dims x u64 ne, u32 ggml type, u64 offset }
//   zero padding to the alignment, then the data section; each tensor's offset is
//   relative to the data section and a multiple of the alignment.
// A string is a u64 byte count and the bytes (no terminator). An array value is a u32
// element type, a u64 count and the elements; arrays of arrays do not exist. The
// alignment is the u32 key general.alignment (a power of two), 32 when absent.
// ne[0] is the fastest-varying dimension: the reverse of a PyTorch shape. As in ggml, a
// tensor info with n_dims 0 reads as a one-element scalar; the writer always writes 1 to 4.
//
// Every file is validated before use: magic, version, counts and string/array lengths
// bounded by the bytes that remain (never an allocation a hostile count asks for), value
// types known, keys and tensor names unique and non-empty, at most 4 dims with a product
// that fits 64 bits, ggml types hearth supports with ne[0] a whole number of blocks,
// offsets aligned, data inside the file, no two tensors overlapping. Errors are one line
// naming the file and, where there is one, the key or tensor.
#pragma once
#include <concepts>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <map>
#include <set>
#include <vector>

#include "quant/block_formats.h"

namespace hearth {

class MappedFile;  // engine/safetensors.h

inline constexpr uint32_t kGgufVersion = 3;            // what the writer writes
inline constexpr uint32_t kGgufDefaultAlignment = 32;  // without general.alignment
inline constexpr int kGgufMaxDims = 4;
inline constexpr uint64_t kGgufMaxStringBytes = 1ull << 30;  // longest string accepted
inline constexpr uint64_t kGgufMaxArrayCount = 1ull << 30;   // most array elements accepted
// ggml keeps tensor names in a 64-byte buffer with the terminator; the writer refuses
// longer names so llama.cpp can load what it writes.
inline constexpr size_t kGgufMaxTensorName = 63;
inline constexpr std::string_view kGgufAlignmentKey = "general.alignment";

// GGUF metadata value types, as stored in the file.
enum class GgufType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};

// "u8", "i8", ..., "f32", "bool", "str", "arr", "u64", "i64", "f64"; "type N" if unknown.
std::string gguf_type_name(GgufType t);
// Bytes per element of a fixed-size type (bool: 1); 0 for STRING, ARRAY and unknown ids.
uint64_t gguf_type_size(GgufType t);

// The C++ types that map one to one onto the fixed-size GGUF value types.
template <class T>
concept GgufNumber =
    std::same_as<T, uint8_t> || std::same_as<T, int8_t> || std::same_as<T, uint16_t> ||
    std::same_as<T, int16_t> || std::same_as<T, uint32_t> || std::same_as<T, int32_t> ||
    std::same_as<T, float> || std::same_as<T, bool> || std::same_as<T, uint64_t> ||
    std::same_as<T, int64_t> || std::same_as<T, double>;

template <GgufNumber T>
constexpr GgufType gguf_type_of() {
  if constexpr (std::same_as<T, uint8_t>) return GgufType::U8;
  else if constexpr (std::same_as<T, int8_t>) return GgufType::I8;
  else if constexpr (std::same_as<T, uint16_t>) return GgufType::U16;
  else if constexpr (std::same_as<T, int16_t>) return GgufType::I16;
  else if constexpr (std::same_as<T, uint32_t>) return GgufType::U32;
  else if constexpr (std::same_as<T, int32_t>) return GgufType::I32;
  else if constexpr (std::same_as<T, float>) return GgufType::F32;
  else if constexpr (std::same_as<T, bool>) return GgufType::BOOL;
  else if constexpr (std::same_as<T, uint64_t>) return GgufType::U64;
  else if constexpr (std::same_as<T, int64_t>) return GgufType::I64;
  else return GgufType::F64;
}

// One metadata value: a scalar, or an array of one element type. Built from the C++
// type that names its GGUF type exactly, so `GgufValue(uint32_t(7))` is a u32,
// `GgufValue(7)` an i32, `GgufValue(std::vector<std::string>{...})` an array of strings;
// types without a GGUF counterpart (long long, char) do not compile.
class GgufValue {
 public:
  template <GgufNumber T>
  GgufValue(T v) : type_(gguf_type_of<T>()), bytes_(sizeof(T)) {  // NOLINT: implicit by design
    std::memcpy(bytes_.data(), &v, sizeof(T));
  }
  GgufValue(std::string s) : type_(GgufType::STRING), strings_{std::move(s)} {}  // NOLINT
  GgufValue(std::string_view s) : GgufValue(std::string(s)) {}                  // NOLINT
  GgufValue(const char* s) : GgufValue(std::string(s)) {}  // NOLINT: else it would be a bool
  template <GgufNumber T>
  GgufValue(const std::vector<T>& v)  // NOLINT
      : type_(gguf_type_of<T>()), is_array_(true), bytes_(v.size() * sizeof(T)) {
    if constexpr (std::same_as<T, bool>) {
      for (size_t i = 0; i < v.size(); ++i) bytes_[i] = v[i] ? 1 : 0;
    } else if (!v.empty()) {
      std::memcpy(bytes_.data(), v.data(), bytes_.size());
    }
  }
  GgufValue(std::vector<std::string> v)  // NOLINT
      : type_(GgufType::STRING), is_array_(true), strings_(std::move(v)) {}

  // The element type (never ARRAY) and whether this is an array of it.
  GgufType type() const { return type_; }
  bool is_array() const { return is_array_; }
  // Elements: 1 for a scalar.
  uint64_t count() const;
  // "u32", "str", "array of str", ...
  std::string type_name() const;

  // Element i; std::invalid_argument unless T is exactly the element type and i < count().
  template <GgufNumber T>
  T get(uint64_t i = 0) const {
    check_access(gguf_type_of<T>(), i);
    T v;
    std::memcpy(&v, bytes_.data() + i * sizeof(T), sizeof(T));
    if constexpr (std::same_as<T, bool>) v = bytes_[i] != 0;
    return v;
  }
  const std::string& str(uint64_t i = 0) const;
  // Every element of a string value (one for a scalar).
  const std::vector<std::string>& strings() const;
  // The elements of a fixed-size type, little-endian, count() * gguf_type_size(type()).
  const std::vector<uint8_t>& raw() const { return bytes_; }

  bool operator==(const GgufValue&) const = default;

 private:
  friend class GgufFile;
  GgufValue(GgufType type, bool is_array) : type_(type), is_array_(is_array) {}
  void check_access(GgufType want, uint64_t i) const;

  GgufType type_ = GgufType::U8;
  bool is_array_ = false;
  std::vector<uint8_t> bytes_;         // fixed-size elements (bool: one byte, 0 or 1)
  std::vector<std::string> strings_;   // STRING elements
};

struct GgufKeyValue {
  std::string key;
  GgufValue value;
};

// A tensor of a GGUF file: a view into the mapping.
struct GgufTensor {
  std::string name;
  const BlockFormat* format = nullptr;  // never null for a loaded tensor
  std::vector<int64_t> dims;            // ne order: dims[0] varies fastest; empty = scalar
  uint64_t offset = 0;                  // relative to the data section
  const void* data = nullptr;           // inside the mapping
  uint64_t nbytes = 0;

  GgmlType type() const { return format->type; }
  // The row-major (PyTorch) shape: dims reversed.
  std::vector<int64_t> shape() const;
  int64_t numel() const;
  // ne[0] (1 for a scalar) and the number of rows of that length.
  int64_t row_elems() const { return dims.empty() ? 1 : dims[0]; }
  int64_t rows() const;
};

class GgufFile {
 public:
  explicit GgufFile(const std::filesystem::path& path);  // maps and validates
  ~GgufFile();
  GgufFile(GgufFile&&) noexcept = default;  // views stay valid: the mapping moves along
  GgufFile& operator=(GgufFile&&) noexcept = default;

  const std::filesystem::path& path() const;
  uint64_t file_size() const;
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // where the data section starts
  const MappedFile& mapping() const { return *file_; }  // the whole file, read-only

  // Metadata in file order.
  const std::vector<GgufKeyValue>& metadata() const { return kv_; }
  bool has(std::string_view key) const { return find(key) != nullptr; }
  const GgufValue* find(std::string_view key) const;  // nullptr when absent
  // Throws "PATH: missing metadata key 'KEY'" when absent.
  const GgufValue& get(std::string_view key) const;
  // Scalars. The integer getters take any integer type whose value fits the result
  // (a u8 for get_u32, a non-negative i32 for get_u64, ...); get_f64 also takes f32.
  // Anything else throws "PATH: metadata key 'KEY' is TYPE, expected ..." (or names the
  // value that does not fit).
  uint32_t get_u32(std::string_view key) const;
  int32_t get_i32(std::string_view key) const;
  uint64_t get_u64(std::string_view key) const;
  int64_t get_i64(std::string_view key) const;
  float get_f32(std::string_view key) const;
  double get_f64(std::string_view key) const;
  bool get_bool(std::string_view key) const;
  const std::string& get_string(std::string_view key) const;
  // Arrays: of strings; of any integer type (every value must fit int64); of f32.
  const std::vector<std::string>& get_string_array(std::string_view key) const;
  std::vector<int64_t> get_int_array(std::string_view key) const;
  std::vector<float> get_float_array(std::string_view key) const;

  // Tensors in file order.
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* find_tensor(std::string_view name) const;  // nullptr when absent
  // Throws "PATH: missing tensor 'NAME'" when absent.
  const GgufTensor& tensor(std::string_view name) const;

 private:
  [[noreturn]] void fail_key(std::string_view key, const std::string& what) const;

  std::shared_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  uint32_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<GgufKeyValue> kv_;
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

// Writes a GGUF v3 file: metadata and tensor declarations first, then the tensor data in
// declaration order, streamed (a tensor may arrive in several pieces), each padded to the
// alignment. The file is written as path + ".tmp", synced, and renamed on finish(), so an
// interrupted run never leaves a file that looks complete.
class GgufWriter {
 public:
  explicit GgufWriter(const std::filesystem::path& path);  // creates the temp file
  ~GgufWriter();  // removes the temp file if finish() was not reached
  GgufWriter(const GgufWriter&) = delete;  // owns the open FILE*
  GgufWriter& operator=(const GgufWriter&) = delete;

  // Metadata, kept in call order. general.alignment must be a u32 power of two and sets
  // the alignment. Keys must be non-empty and unique. Only before the first write().
  void add(const std::string& key, GgufValue value);
  // Declares the next tensor: dims in ne order (dims[0] fastest, 1 to 4 of them), ne[0]
  // a whole number of the type's blocks. Only before the first write(). Returns its size.
  uint64_t add_tensor(const std::string& name, GgmlType type, std::vector<int64_t> dims);

  // Appends bytes of tensor `name`, which must be the first tensor not yet complete; a
  // tensor is complete (and padded) once its declared byte count has arrived. The first
  // call writes the header. A zero-byte tensor is completed by a call with nbytes 0.
  void write(const std::string& name, const void* data, uint64_t nbytes);
  // Every declared tensor must be complete. Syncs the file and renames it into place.
  void finish();
  // finish() in two steps, so that several files (a split model's shards) appear together
  // or not at all: complete() checks every tensor arrived and syncs the temp file;
  // commit() renames it into place. A writer destroyed before commit() removes its temp.
  void complete();
  void commit();

  uint32_t alignment() const { return alignment_; }

 private:
  struct Decl {
    std::string name;
    GgmlType type;
    std::vector<int64_t> dims;
    uint64_t nbytes;
  };
  void write_header();
  void put(const void* p, uint64_t n);
  void put_string(std::string_view s);
  template <class T>
  void put_num(T v) { put(&v, sizeof(T)); }
  void pad();
  [[noreturn]] void fail(const std::string& what) const;

  std::filesystem::path path_, tmp_;
  std::FILE* f_ = nullptr;
  uint32_t alignment_ = kGgufDefaultAlignment;
  std::vector<GgufKeyValue> kv_;
  std::vector<Decl> tensors_;
  std::set<std::string, std::less<>> keys_, names_;  // for duplicate checks
  bool header_written_ = false;
  bool completed_ = false, committed_ = false;
  size_t next_ = 0;        // the tensor being written
  uint64_t next_done_ = 0;  // its bytes written so far
  uint64_t pos_ = 0;        // bytes written to the file
  std::unique_ptr<char[]> buf_;  // stdio buffer
};

}  // namespace hearth

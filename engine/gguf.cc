#include "engine/gguf.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <limits>
#include <stdexcept>

#include "engine/file_error.h"
#include "engine/safetensors.h"  // MappedFile

namespace hearth {
namespace {

namespace fs = std::filesystem;

// A name from the file, fit for a one-line message: control bytes and quotes escaped,
// long names cut.
std::string printable(std::string_view s) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (out.size() >= 200) return out + "...";
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f || c == '\'' || c == '\\') {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += char(c);
    }
  }
  return out;
}

std::string dec(uint64_t v) { return std::to_string(v); }

bool known_type(uint32_t t) { return t <= uint32_t(GgufType::F64) && t != uint32_t(GgufType::ARRAY); }

bool is_integer(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::U16: case GgufType::I16:
    case GgufType::U32: case GgufType::I32: case GgufType::U64: case GgufType::I64:
      return true;
    default:
      return false;
  }
}

// Element i of an integer value as sign and magnitude (every integer type fits).
struct IntValue {
  bool neg;
  uint64_t mag;
};

IntValue int_at(const GgufValue& v, uint64_t i) {
  auto s = [](int64_t x) { return x < 0 ? IntValue{true, uint64_t(-(x + 1)) + 1} : IntValue{false, uint64_t(x)}; };
  switch (v.type()) {
    case GgufType::U8: return {false, v.get<uint8_t>(i)};
    case GgufType::U16: return {false, v.get<uint16_t>(i)};
    case GgufType::U32: return {false, v.get<uint32_t>(i)};
    case GgufType::U64: return {false, v.get<uint64_t>(i)};
    case GgufType::I8: return s(v.get<int8_t>(i));
    case GgufType::I16: return s(v.get<int16_t>(i));
    case GgufType::I32: return s(v.get<int32_t>(i));
    case GgufType::I64: return s(v.get<int64_t>(i));
    default: throw std::logic_error("int_at on a non-integer GGUF value");
  }
}

std::string int_text(IntValue x) { return (x.neg ? "-" : "") + dec(x.mag); }

uint64_t align_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }  // a: power of two

// Reads the header fields in order, bounds-checked against the mapping. `where` names
// what is being read ("metadata key 'k'", "tensor 't'") for the messages.
class Cursor {
 public:
  Cursor(const fs::path& path, const uint8_t* data, uint64_t size) : path_(path), p_(data), size_(size) {}

  std::string where;

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  [[noreturn]] void fail(const std::string& what) const {
    hearth::fail(path_, where.empty() ? what : where + ": " + what);
  }

  void need(uint64_t n, const std::string& what) const {
    if (n > remaining())
      fail("truncated: " + what + " needs " + dec(n) + " bytes at offset " + dec(pos_) + ", only " +
           dec(remaining()) + " remain in the file");
  }

  template <class T>
  T num(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  // A GGUF string; `what` names it, `index` >= 0 for an array element.
  std::string_view string(const char* what, int64_t index = -1) {
    auto name = [&] { return std::string(what) + (index >= 0 ? " " + dec(uint64_t(index)) : ""); };
    if (remaining() < 8) need(8, name() + " length");
    const uint64_t n = num<uint64_t>("string length");
    if (n > kGgufMaxStringBytes)
      fail(name() + " length " + dec(n) + " exceeds the limit of " + dec(kGgufMaxStringBytes) + " bytes");
    if (n > remaining())
      fail("truncated: " + name() + " of " + dec(n) + " bytes at offset " + dec(pos_) +
           " runs past the end of the file (" + dec(remaining()) + " bytes remain)");
    std::string_view s(reinterpret_cast<const char*>(p_ + pos_), n);
    pos_ += n;
    return s;
  }

  const uint8_t* take(uint64_t n) {  // caller checked n <= remaining()
    const uint8_t* p = p_ + pos_;
    pos_ += n;
    return p;
  }

 private:
  const fs::path& path_;
  const uint8_t* p_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

// Smallest encodings, to bound counts by the bytes that remain before allocating: a key
// (u64 length + 1 byte) + u32 type + a 1-byte value; a tensor info with a 1-byte name and
// no dims (u64 + 1 + u32 n_dims + u32 type + u64 offset).
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 4 + 8;
constexpr uint64_t kHeaderBytes = 4 + 4 + 8 + 8;

}  // namespace

// ---------------------------------------------------------------------------------------
// Values

std::string gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::U8: return "u8";
    case GgufType::I8: return "i8";
    case GgufType::U16: return "u16";
    case GgufType::I16: return "i16";
    case GgufType::U32: return "u32";
    case GgufType::I32: return "i32";
    case GgufType::F32: return "f32";
    case GgufType::BOOL: return "bool";
    case GgufType::STRING: return "str";
    case GgufType::ARRAY: return "arr";
    case GgufType::U64: return "u64";
    case GgufType::I64: return "i64";
    case GgufType::F64: return "f64";
  }
  return "type " + dec(uint32_t(t));
}

uint64_t gguf_type_size(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::BOOL: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    default: return 0;
  }
}

uint64_t GgufValue::count() const {
  return type_ == GgufType::STRING ? strings_.size() : bytes_.size() / gguf_type_size(type_);
}

std::string GgufValue::type_name() const {
  return is_array_ ? "array of " + gguf_type_name(type_) : gguf_type_name(type_);
}

void GgufValue::check_access(GgufType want, uint64_t i) const {
  if (want != type_)
    throw std::invalid_argument("GGUF value is " + type_name() + ", not " + gguf_type_name(want));
  if (i >= count())
    throw std::invalid_argument("GGUF value index " + dec(i) + " out of range (" + dec(count()) + " elements)");
}

const std::string& GgufValue::str(uint64_t i) const {
  check_access(GgufType::STRING, i);
  return strings_[i];
}

const std::vector<std::string>& GgufValue::strings() const {
  if (type_ != GgufType::STRING) throw std::invalid_argument("GGUF value is " + type_name() + ", not str");
  return strings_;
}

// ---------------------------------------------------------------------------------------
// Tensors

std::vector<int64_t> GgufTensor::shape() const { return {dims.rbegin(), dims.rend()}; }

int64_t GgufTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;  // overflow was ruled out when loaded
  return n;
}

int64_t GgufTensor::rows() const {
  int64_t n = 1;
  for (size_t i = 1; i < dims.size(); ++i) n *= dims[i];
  return n;
}

// ---------------------------------------------------------------------------------------
// Reader

GgufFile::GgufFile(const fs::path& path) : file_(std::make_shared<MappedFile>(path)) {
  const uint64_t size = file_->size();
  const uint8_t* base = file_->data();
  if (size < 4) fail(path, "file is " + dec(size) + " bytes, too short for the GGUF magic (truncated?)");
  if (std::memcmp(base, "GGUF", 4) != 0) {
    std::string m;
    for (int i = 0; i < 4; ++i) m += (base[i] >= 0x20 && base[i] < 0x7f && base[i] != '\'') ? char(base[i]) : '?';
    fail(path, "bad magic '" + m + "': not a GGUF file");
  }
  if (size < kHeaderBytes)
    fail(path, "truncated: file is " + dec(size) + " bytes, shorter than the " + dec(kHeaderBytes) +
                   "-byte GGUF header");

  Cursor c(path, base, size);
  c.take(4);
  version_ = c.num<uint32_t>("version");
  if (version_ == 1)
    fail(path, "GGUF version 1 is not supported (it used 32-bit counts; convert the model again)");
  if (version_ != 0 && (version_ & 0xffff) == 0)
    fail(path, "GGUF version " + dec(version_) + " looks byte-swapped: big-endian GGUF files are not supported");
  if (version_ != 2 && version_ != 3)
    fail(path, "unsupported GGUF version " + dec(version_) + " (hearth reads versions 2 and 3)");

  const uint64_t n_tensors = c.num<uint64_t>("tensor count");
  const uint64_t n_kv = c.num<uint64_t>("metadata count");
  if (n_kv > c.remaining() / kMinKvBytes)
    fail(path, "metadata count " + dec(n_kv) + " cannot fit in the " + dec(c.remaining()) +
                   " bytes after the header (corrupt or truncated)");
  if (n_tensors > c.remaining() / kMinTensorInfoBytes)
    fail(path, "tensor count " + dec(n_tensors) + " cannot fit in the " + dec(c.remaining()) +
                   " bytes after the header (corrupt or truncated)");

  // Metadata.
  for (uint64_t i = 0; i < n_kv; ++i) {
    c.where = "metadata key #" + dec(i);
    const std::string_view key = c.string("key");
    if (key.empty()) c.fail("empty key");
    c.where = "metadata key '" + printable(key) + "'";
    if (kv_index_.count(key)) c.fail("duplicate key");

    const uint32_t t = c.num<uint32_t>("value type");
    const bool is_array = t == uint32_t(GgufType::ARRAY);
    uint32_t et = t;
    uint64_t n = 1;
    if (is_array) {
      et = c.num<uint32_t>("array element type");
      n = c.num<uint64_t>("array count");
      if (et == uint32_t(GgufType::ARRAY)) c.fail("arrays of arrays are not supported");
      if (!known_type(et)) c.fail("unknown array element type " + dec(et));
      if (n > kGgufMaxArrayCount)
        c.fail("array count " + dec(n) + " exceeds the limit of " + dec(kGgufMaxArrayCount));
    } else if (!known_type(t)) {
      c.fail("unknown value type " + dec(t));
    }
    const GgufType type = GgufType(et);
    GgufValue v(type, is_array);
    if (type == GgufType::STRING) {
      // Each string takes at least its 8-byte length.
      if (n > c.remaining() / 8)
        c.fail("truncated: " + dec(n) + " strings at offset " + dec(c.pos()) + " need at least " + dec(n * 8) +
               " bytes, only " + dec(c.remaining()) + " remain");
      v.strings_.reserve(std::min<uint64_t>(n, 1 << 16));  // a hostile n must not allocate
      for (uint64_t j = 0; j < n; ++j) v.strings_.emplace_back(c.string("string", is_array ? int64_t(j) : -1));
    } else {
      const uint64_t esize = gguf_type_size(type);
      c.need(n * esize, std::to_string(n) + " x " + gguf_type_name(type));  // n <= 2^30: no overflow
      const uint8_t* p = c.take(n * esize);
      v.bytes_.assign(p, p + n * esize);
      if (type == GgufType::BOOL)
        for (uint8_t& b : v.bytes_) b = b != 0;
    }
    kv_.push_back({std::string(key), std::move(v)});
    kv_index_.emplace(kv_.back().key, kv_.size() - 1);
  }
  c.where.clear();

  if (const GgufValue* a = find(kGgufAlignmentKey)) {
    if (a->type() != GgufType::U32 || a->is_array())
      fail_key(kGgufAlignmentKey, "type " + a->type_name() + ", expected u32");
    alignment_ = a->get<uint32_t>();
    if (alignment_ == 0 || (alignment_ & (alignment_ - 1)) != 0)
      fail_key(kGgufAlignmentKey, "alignment " + dec(alignment_) + " is not a power of two");
  }

  // Tensor infos.
  for (uint64_t i = 0; i < n_tensors; ++i) {
    c.where = "tensor #" + dec(i);
    const std::string_view name = c.string("tensor name");
    if (name.empty()) c.fail("empty tensor name");
    c.where = "tensor '" + printable(name) + "'";
    if (tensor_index_.count(name)) c.fail("duplicate tensor name");

    GgufTensor t;
    t.name = std::string(name);
    const uint32_t n_dims = c.num<uint32_t>("n_dims");
    if (n_dims > uint32_t(kGgufMaxDims))
      c.fail("n_dims " + dec(n_dims) + " exceeds the maximum of " + dec(kGgufMaxDims));
    int64_t numel = 1;
    bool overflow = false;
    for (uint32_t j = 0; j < n_dims; ++j) {
      const uint64_t d = c.num<uint64_t>("dimension");
      if (d > uint64_t(std::numeric_limits<int64_t>::max()))
        c.fail("dimension " + dec(j) + " is " + dec(d) + ", more than 2^63 - 1");
      t.dims.push_back(int64_t(d));
      overflow = overflow || __builtin_mul_overflow(numel, int64_t(d), &numel);
    }
    auto dims_text = [&] {
      std::string s = "[";
      for (size_t j = 0; j < t.dims.size(); ++j) s += (j ? ", " : "") + dec(uint64_t(t.dims[j]));
      return s + "]";
    };
    if (overflow) c.fail("dims " + dims_text() + ": element count overflows 64 bits");

    const uint32_t type_id = c.num<uint32_t>("ggml type");
    t.format = find_block_format_by_id(type_id);
    if (!t.format) c.fail("unsupported ggml type id " + dec(type_id));
    const int64_t ne0 = t.row_elems();
    if (ne0 % t.format->block_elems != 0)
      c.fail("dims " + dims_text() + ": ne[0] = " + dec(uint64_t(ne0)) + " is not a multiple of the " +
             std::string(t.format->name) + " block size " + dec(uint64_t(t.format->block_elems)));
    const uint64_t row = uint64_t(ne0 / t.format->block_elems) * uint64_t(t.format->block_bytes);
    if (__builtin_mul_overflow(row, uint64_t(t.rows()), &t.nbytes))
      c.fail("dims " + dims_text() + " of " + std::string(t.format->name) + ": byte size overflows 64 bits");
    t.offset = c.num<uint64_t>("data offset");
    tensors_.push_back(std::move(t));
    tensor_index_.emplace(tensors_.back().name, tensors_.size() - 1);
  }
  c.where.clear();

  // The data section starts at the next multiple of the alignment.
  data_offset_ = align_up(c.pos(), alignment_);
  if (n_tensors > 0 && data_offset_ > size)
    fail(path, "truncated: the data section would start at offset " + dec(data_offset_) +
                   ", past the end of the file (" + dec(size) + " bytes)");
  const uint64_t data_size = data_offset_ <= size ? size - data_offset_ : 0;

  struct Range {
    uint64_t begin, end;
    const GgufTensor* t;
  };
  std::vector<Range> ranges;
  for (GgufTensor& t : tensors_) {
    const std::string tn = "tensor '" + printable(t.name) + "': ";
    if (t.offset % alignment_ != 0)
      fail(path, tn + "offset " + dec(t.offset) + " is not a multiple of the alignment " + dec(alignment_));
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      fail(path, tn + "data at offset " + dec(t.offset) + " + " + dec(t.nbytes) +
                     " bytes runs past the end of the file (the data section has " + dec(data_size) +
                     " bytes; truncated?)");
    t.data = base + data_offset_ + t.offset;
    if (t.nbytes > 0) ranges.push_back({t.offset, t.offset + t.nbytes, &t});
  }
  // Overlapping tensors would alias each other's bytes.
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  const Range* last = nullptr;  // the range reaching furthest so far
  for (const Range& r : ranges) {
    if (last && r.begin < last->end)
      fail(path, "tensor '" + printable(r.t->name) + "': bytes [" + dec(r.begin) + ", " + dec(r.end) +
                     ") of the data section overlap tensor '" + printable(last->t->name) + "' [" +
                     dec(last->begin) + ", " + dec(last->end) + ")");
    if (!last || r.end > last->end) last = &r;
  }
}

GgufFile::~GgufFile() = default;

const fs::path& GgufFile::path() const { return file_->path(); }
uint64_t GgufFile::file_size() const { return file_->size(); }

void GgufFile::fail_key(std::string_view key, const std::string& what) const {
  fail(path(), "metadata key '" + printable(key) + "': " + what);
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].value;
}

const GgufValue& GgufFile::get(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) fail(path(), "missing metadata key '" + printable(key) + "'");
  return *v;
}

namespace {

// The scalar integer at `key` if it lies in [-lo_mag, hi] (lo_mag = 0: non-negative).
IntValue scalar_int(const GgufFile& f, std::string_view key, uint64_t lo_mag, uint64_t hi, const char* want) {
  const GgufValue& v = f.get(key);
  auto bad = [&](const std::string& what) { fail(f.path(), "metadata key '" + printable(key) + "': " + what); };
  if (v.is_array() || !is_integer(v.type())) bad("type " + v.type_name() + ", expected " + want);
  const IntValue x = int_at(v, 0);
  if (x.neg ? x.mag > lo_mag : x.mag > hi)
    bad("value " + int_text(x) + " (" + v.type_name() + ") does not fit " + want);
  return x;
}

int64_t to_i64(IntValue x) { return x.neg ? -int64_t(x.mag - 1) - 1 : int64_t(x.mag); }

}  // namespace

uint32_t GgufFile::get_u32(std::string_view key) const {
  return uint32_t(scalar_int(*this, key, 0, std::numeric_limits<uint32_t>::max(), "u32").mag);
}

int32_t GgufFile::get_i32(std::string_view key) const {
  return int32_t(to_i64(scalar_int(*this, key, 1ull << 31, std::numeric_limits<int32_t>::max(), "i32")));
}

uint64_t GgufFile::get_u64(std::string_view key) const {
  return scalar_int(*this, key, 0, std::numeric_limits<uint64_t>::max(), "u64").mag;
}

int64_t GgufFile::get_i64(std::string_view key) const {
  return to_i64(scalar_int(*this, key, 1ull << 63, std::numeric_limits<int64_t>::max(), "i64"));
}

float GgufFile::get_f32(std::string_view key) const {
  const GgufValue& v = get(key);
  if (v.is_array() || v.type() != GgufType::F32) fail_key(key, "type " + v.type_name() + ", expected f32");
  return v.get<float>();
}

double GgufFile::get_f64(std::string_view key) const {
  const GgufValue& v = get(key);
  if (!v.is_array() && v.type() == GgufType::F32) return v.get<float>();
  if (v.is_array() || v.type() != GgufType::F64) fail_key(key, "type " + v.type_name() + ", expected f64");
  return v.get<double>();
}

bool GgufFile::get_bool(std::string_view key) const {
  const GgufValue& v = get(key);
  if (v.is_array() || v.type() != GgufType::BOOL) fail_key(key, "type " + v.type_name() + ", expected bool");
  return v.get<bool>();
}

const std::string& GgufFile::get_string(std::string_view key) const {
  const GgufValue& v = get(key);
  if (v.is_array() || v.type() != GgufType::STRING) fail_key(key, "type " + v.type_name() + ", expected str");
  return v.str();
}

const std::vector<std::string>& GgufFile::get_string_array(std::string_view key) const {
  const GgufValue& v = get(key);
  if (!v.is_array() || v.type() != GgufType::STRING)
    fail_key(key, "type " + v.type_name() + ", expected array of str");
  return v.strings();
}

std::vector<int64_t> GgufFile::get_int_array(std::string_view key) const {
  const GgufValue& v = get(key);
  if (!v.is_array() || !is_integer(v.type()))
    fail_key(key, "type " + v.type_name() + ", expected an array of integers");
  std::vector<int64_t> out(v.count());
  for (uint64_t i = 0; i < out.size(); ++i) {
    const IntValue x = int_at(v, i);
    if (!x.neg && x.mag > uint64_t(std::numeric_limits<int64_t>::max()))
      fail_key(key, "element " + dec(i) + " = " + int_text(x) + " does not fit i64");
    out[i] = to_i64(x);
  }
  return out;
}

std::vector<float> GgufFile::get_float_array(std::string_view key) const {
  const GgufValue& v = get(key);
  if (!v.is_array() || v.type() != GgufType::F32)
    fail_key(key, "type " + v.type_name() + ", expected array of f32");
  std::vector<float> out(v.count());
  if (!out.empty()) std::memcpy(out.data(), v.raw().data(), out.size() * sizeof(float));
  return out;
}

const GgufTensor* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensor& GgufFile::tensor(std::string_view name) const {
  const GgufTensor* t = find_tensor(name);
  if (!t) fail(path(), "missing tensor '" + printable(name) + "'");
  return *t;
}

// ---------------------------------------------------------------------------------------
// Writer

GgufWriter::GgufWriter(const fs::path& path) : path_(path), tmp_(path.string() + ".tmp") {
  f_ = std::fopen(tmp_.c_str(), "wb");
  if (!f_) hearth::fail(tmp_, std::string("cannot create: ") + std::strerror(errno));
  constexpr size_t kBuf = 1 << 20;  // the tokenizer arrays are ~10^5 small strings
  buf_ = std::make_unique<char[]>(kBuf);
  std::setvbuf(f_, buf_.get(), _IOFBF, kBuf);
}

GgufWriter::~GgufWriter() {
  if (f_) std::fclose(f_);
  // After commit() the temp file was renamed away, so this is a no-op; a file completed
  // but never committed is removed like an unfinished one.
  std::error_code ec;
  if (!committed_) fs::remove(tmp_, ec);
}

void GgufWriter::fail(const std::string& what) const { hearth::fail(path_, what); }

void GgufWriter::add(const std::string& key, GgufValue value) {
  const std::string k = "metadata key '" + printable(key) + "': ";
  if (!f_) fail(k + "added after finish");
  if (header_written_) fail(k + "added after tensor data started");
  if (key.empty()) fail("empty metadata key");
  if (key.size() > kGgufMaxStringBytes) fail(k + "key too long");
  if (keys_.count(key)) fail(k + "duplicate key");
  if (key == kGgufAlignmentKey) {
    if (value.type() != GgufType::U32 || value.is_array())
      fail(k + "type " + value.type_name() + ", expected u32");
    const uint32_t a = value.get<uint32_t>();
    if (a == 0 || (a & (a - 1)) != 0) fail(k + "alignment " + dec(a) + " is not a power of two");
    alignment_ = a;
  }
  if (value.count() > kGgufMaxArrayCount)
    fail(k + dec(value.count()) + " elements exceed the limit of " + dec(kGgufMaxArrayCount));
  if (value.type() == GgufType::STRING)
    for (const std::string& s : value.strings())
      if (s.size() > kGgufMaxStringBytes) fail(k + "a string of " + dec(s.size()) + " bytes exceeds the limit");
  keys_.insert(key);
  kv_.push_back({key, std::move(value)});
}

uint64_t GgufWriter::add_tensor(const std::string& name, GgmlType type, std::vector<int64_t> dims) {
  const std::string t = "tensor '" + printable(name) + "': ";
  if (!f_) fail(t + "declared after finish");
  if (header_written_) fail(t + "declared after tensor data started");
  if (name.empty()) fail("empty tensor name");
  if (name.size() > kGgufMaxTensorName)
    fail(t + "name of " + dec(name.size()) + " bytes is longer than ggml's limit of " + dec(kGgufMaxTensorName));
  if (names_.count(name)) fail(t + "duplicate tensor name");
  if (dims.empty() || dims.size() > size_t(kGgufMaxDims))
    fail(t + dec(dims.size()) + " dims, expected 1 to " + dec(kGgufMaxDims));
  const BlockFormat* f = find_block_format_by_id(uint32_t(type));
  if (!f) fail(t + "unsupported ggml type id " + dec(uint32_t(type)));
  uint64_t rows = 1;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] < 0) fail(t + "negative dimension " + std::to_string(dims[i]));
    if (i > 0 && __builtin_mul_overflow(rows, uint64_t(dims[i]), &rows)) fail(t + "element count overflows");
  }
  int64_t numel;
  if (__builtin_mul_overflow(int64_t(rows), dims[0], &numel) || rows > uint64_t(INT64_MAX))
    fail(t + "element count overflows");
  if (dims[0] % f->block_elems != 0)
    fail(t + "ne[0] = " + std::to_string(dims[0]) + " is not a multiple of the " + std::string(f->name) +
         " block size " + std::to_string(f->block_elems));
  uint64_t nbytes;
  if (__builtin_mul_overflow(uint64_t(dims[0] / f->block_elems) * uint64_t(f->block_bytes), rows, &nbytes))
    fail(t + "byte size overflows");
  names_.insert(name);
  tensors_.push_back({name, type, std::move(dims), nbytes});
  return nbytes;
}

void GgufWriter::put(const void* p, uint64_t n) {
  if (n > 0 && std::fwrite(p, 1, n, f_) != n)
    hearth::fail(tmp_, std::string("write failed: ") + std::strerror(errno));
  pos_ += n;
}

void GgufWriter::put_string(std::string_view s) {
  put_num<uint64_t>(s.size());
  put(s.data(), s.size());
}

void GgufWriter::pad() {
  static const char zeros[4096] = {};
  uint64_t n = align_up(pos_, alignment_) - pos_;
  while (n > 0) {
    const uint64_t k = std::min<uint64_t>(n, sizeof(zeros));
    put(zeros, k);
    n -= k;
  }
}

void GgufWriter::write_header() {
  put("GGUF", 4);
  put_num<uint32_t>(kGgufVersion);
  put_num<uint64_t>(tensors_.size());
  put_num<uint64_t>(kv_.size());
  for (const GgufKeyValue& kv : kv_) {
    put_string(kv.key);
    const GgufValue& v = kv.value;
    if (v.is_array()) {
      put_num<uint32_t>(uint32_t(GgufType::ARRAY));
      put_num<uint32_t>(uint32_t(v.type()));
      put_num<uint64_t>(v.count());
    } else {
      put_num<uint32_t>(uint32_t(v.type()));
    }
    if (v.type() == GgufType::STRING)
      for (const std::string& s : v.strings()) put_string(s);
    else
      put(v.raw().data(), v.raw().size());
  }
  uint64_t offset = 0;
  for (const Decl& d : tensors_) {
    put_string(d.name);
    put_num<uint32_t>(uint32_t(d.dims.size()));
    for (int64_t n : d.dims) put_num<uint64_t>(uint64_t(n));
    put_num<uint32_t>(uint32_t(d.type));
    put_num<uint64_t>(offset);
    if (__builtin_add_overflow(offset, align_up(d.nbytes, alignment_), &offset))
      fail("tensor '" + printable(d.name) + "': data section size overflows 64 bits");
  }
  pad();
  header_written_ = true;
}

void GgufWriter::write(const std::string& name, const void* data, uint64_t nbytes) {
  const std::string t = "tensor '" + printable(name) + "': ";
  if (!f_) fail(t + "write after finish");
  if (!header_written_) write_header();
  if (next_ >= tensors_.size()) fail(t + "all declared tensors already written");
  const Decl& d = tensors_[next_];
  if (name != d.name) fail(t + "expected tensor '" + printable(d.name) + "' next");
  if (nbytes > d.nbytes - next_done_)
    fail(t + "got " + dec(nbytes) + " bytes, but only " + dec(d.nbytes - next_done_) + " of its " +
         dec(d.nbytes) + " remain");
  put(data, nbytes);
  next_done_ += nbytes;
  if (next_done_ == d.nbytes) {
    pad();
    ++next_;
    next_done_ = 0;
  }
}

void GgufWriter::finish() {
  complete();
  commit();
}

void GgufWriter::complete() {
  if (!f_) fail(committed_ ? "finish called twice" : "complete called twice");
  if (!header_written_) write_header();
  if (next_ != tensors_.size())
    fail("finish after " + dec(next_) + " of " + dec(tensors_.size()) + " tensors; '" +
         printable(tensors_[next_].name) + "' has " + dec(next_done_) + " of " + dec(tensors_[next_].nbytes) +
         " bytes");
  // fsync before rename: otherwise a crash can leave the final name on a file whose data
  // never reached the disk.
  bool ok = std::fflush(f_) == 0 && ::fsync(::fileno(f_)) == 0;
  const int err = errno;
  ok = std::fclose(f_) == 0 && ok;
  f_ = nullptr;
  if (!ok) hearth::fail(tmp_, std::string("flush failed: ") + std::strerror(err));
  completed_ = true;
}

void GgufWriter::commit() {
  if (!completed_ || committed_) fail(committed_ ? "committed twice" : "commit before complete");
  std::error_code ec;
  fs::rename(tmp_, path_, ec);
  if (ec) fail("rename from " + tmp_.string() + " failed: " + ec.message());
  committed_ = true;
}

}  // namespace hearth

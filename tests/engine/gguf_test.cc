// GGUF reader and writer: round trips of every metadata type and of real quantized
// tensors, a file assembled byte by byte without the writer, and one case per kind of
// malformed input (each error must name the file and the problem, on a single line).
#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "engine/gguf.h"
#include "quant/block_formats.h"
#include "support/errors.h"
#include "support/scratch.h"

namespace engine_gguf_suite {

using namespace hearth;
namespace fs = std::filesystem;
using hearth::testing::pattern;
using hearth::testing::check_error;
using hearth::testing::error_of;
using hearth::testing::TempDir;

namespace {


void write_file(const fs::path& p, const std::vector<uint8_t>& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

std::vector<uint8_t> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Little-endian byte assembly, independent of the writer.
struct Bytes {
  std::vector<uint8_t> b;
  template <class T>
  Bytes& num(T v) {
    uint8_t tmp[sizeof(T)];
    std::memcpy(tmp, &v, sizeof(T));
    b.insert(b.end(), tmp, tmp + sizeof(T));
    return *this;
  }
  Bytes& u32(uint32_t v) { return num(v); }
  Bytes& u64(uint64_t v) { return num(v); }
  Bytes& raw(std::string_view s) {
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& str(std::string_view s) { return u64(s.size()).raw(s); }
  Bytes& bytes(const std::vector<uint8_t>& v) {
    b.insert(b.end(), v.begin(), v.end());
    return *this;
  }
  Bytes& pad_to(uint64_t a) {
    while (b.size() % a) b.push_back(0);
    return *this;
  }
};

// One metadata entry: key, value type, then the encoded value.
std::vector<uint8_t> kv(std::string_view key, uint32_t type, const Bytes& value) {
  return Bytes().str(key).u32(type).bytes(value.b).b;
}
std::vector<uint8_t> kv_u32(std::string_view key, uint32_t v) { return kv(key, 4, Bytes().u32(v)); }
std::vector<uint8_t> kv_str(std::string_view key, std::string_view v) { return kv(key, 8, Bytes().str(v)); }

struct RawTensor {
  std::string name;
  std::vector<uint64_t> dims;
  uint32_t type;
  uint64_t offset;
};

// A GGUF file assembled by hand; every field can be made wrong.
struct RawFile {
  std::string magic = "GGUF";
  uint32_t version = 3;
  std::optional<uint64_t> n_tensors, n_kv;  // override the true counts
  std::vector<std::vector<uint8_t>> kvs;
  std::vector<RawTensor> tensors;
  uint32_t alignment = 32;  // pads the data section
  uint64_t data_bytes = 0;  // pattern bytes in the data section

  std::vector<uint8_t> build() const {
    Bytes out;
    out.raw(magic).u32(version).u64(n_tensors.value_or(tensors.size())).u64(n_kv.value_or(kvs.size()));
    for (const auto& e : kvs) out.bytes(e);
    for (const RawTensor& t : tensors) {
      out.str(t.name).u32(uint32_t(t.dims.size()));
      for (uint64_t d : t.dims) out.u64(d);
      out.u32(t.type).u64(t.offset);
    }
    if (!tensors.empty()) out.pad_to(alignment);
    out.bytes(pattern(data_bytes, 3));
    return out.b;
  }
};

// Writes `raw` to DIR/bad.gguf and asserts opening it fails naming the file and `parts`.
void check_rejects(const RawFile& raw, std::initializer_list<std::string> parts) {
  TempDir tmp;
  const fs::path p = tmp.path / "bad.gguf";
  write_file(p, raw.build());
  const std::string msg = error_of([&] { GgufFile f(p); });
  CHECK_MESSAGE(msg.find(p.string()) != std::string::npos, "file not named in: ", msg);
  for (const std::string& part : parts)
    CHECK_MESSAGE(msg.find(part) != std::string::npos, "'", part, "' not in: ", msg);
  CHECK_MESSAGE(msg.find('\n') == std::string::npos, "multi-line message: ", msg);
}

// The valid base the corruption cases start from: one key, one F32 [8] tensor.
RawFile base_file() {
  RawFile r;
  r.kvs = {kv_str("general.architecture", "deepseek2")};
  r.tensors = {{"blk.0.attn_norm.weight", {8}, 0, 0}};
  r.data_bytes = 32;
  return r;
}

// "<｜begin▁of▁sentence｜> ∀x∈ℝ 🙂": 3- and 4-byte UTF-8 sequences.
const std::string kUnicode =
    "<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C> "
    "\xE2\x88\x80x\xE2\x88\x88\xE2\x84\x9D \xF0\x9F\x99\x82";

uint64_t align_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

std::vector<float> ramp(int64_t n, float scale) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = scale * std::sin(0.37f * float(i) + 0.1f) + 0.01f * float(i % 7);
  return v;
}

}  // namespace

TEST_SUITE("gguf") {

TEST_CASE("gguf round trip of every metadata type") {
  TempDir tmp;
  const fs::path p = tmp.path / "meta.gguf";
  const std::vector<std::string> strings = {"", "a", kUnicode, std::string("nul\0inside", 10), "end"};
  {
    GgufWriter w(p);
    w.add("general.architecture", "deepseek2");
    w.add("t.u8", uint8_t(200));
    w.add("t.i8", int8_t(-100));
    w.add("t.u16", uint16_t(60000));
    w.add("t.i16", int16_t(-30000));
    w.add("t.u32", uint32_t(4000000000u));
    w.add("t.i32", int32_t(-2000000000));
    w.add("t.f32", 3.5f);
    w.add("t.bool", true);
    w.add("t.bool_false", false);
    w.add("t.str", kUnicode);
    w.add("t.empty_str", std::string());
    w.add("t.u64", uint64_t(1) << 63 | 5);
    w.add("t.i64", -(int64_t(1) << 62) - 3);
    w.add("t.f64", 3.141592653589793);
    w.add("a.u8", std::vector<uint8_t>{0, 1, 255});
    w.add("a.i8", std::vector<int8_t>{-128, 0, 127});
    w.add("a.u16", std::vector<uint16_t>{1, 65535});
    w.add("a.i16", std::vector<int16_t>{-32768, 32767});
    w.add("a.u32", std::vector<uint32_t>{7, 4294967295u});
    w.add("a.i32", std::vector<int32_t>{1, 1, 3, -6});
    w.add("a.f32", std::vector<float>{-0.0f, 1.5f, -1e30f, std::numeric_limits<float>::infinity()});
    w.add("a.bool", std::vector<bool>{true, false, true});
    w.add("a.u64", std::vector<uint64_t>{0, ~uint64_t(0)});
    w.add("a.i64", std::vector<int64_t>{std::numeric_limits<int64_t>::min(), 42});
    w.add("a.f64", std::vector<double>{1e300, -2.5});
    w.add("a.str", strings);
    w.add("a.empty", std::vector<int32_t>{});
    CHECK(fs::exists(p.string() + ".tmp"));
    CHECK_FALSE(fs::exists(p));
    w.finish();
  }
  CHECK_FALSE(fs::exists(p.string() + ".tmp"));

  GgufFile f(p);
  CHECK(f.version() == 3);
  CHECK(f.alignment() == 32);
  CHECK(f.tensors().empty());
  REQUIRE(f.metadata().size() == 28);
  // File order is call order.
  CHECK(f.metadata()[0].key == "general.architecture");
  CHECK(f.metadata()[1].key == "t.u8");
  CHECK(f.metadata()[27].key == "a.empty");

  CHECK(f.get_string("general.architecture") == "deepseek2");
  CHECK(f.get("t.u8").type() == GgufType::U8);
  CHECK(f.get("t.u8").get<uint8_t>() == 200);
  CHECK(f.get("t.i8").get<int8_t>() == -100);
  CHECK(f.get("t.u16").get<uint16_t>() == 60000);
  CHECK(f.get("t.i16").get<int16_t>() == -30000);
  CHECK(f.get_u32("t.u32") == 4000000000u);
  CHECK(f.get_i32("t.i32") == -2000000000);
  CHECK(f.get_f32("t.f32") == 3.5f);
  CHECK(f.get_bool("t.bool"));
  CHECK_FALSE(f.get_bool("t.bool_false"));
  CHECK(f.get_string("t.str") == kUnicode);
  CHECK(f.get_string("t.empty_str").empty());
  CHECK(f.get_u64("t.u64") == (uint64_t(1) << 63 | 5));
  CHECK(f.get_i64("t.i64") == -(int64_t(1) << 62) - 3);
  CHECK(f.get_f64("t.f64") == 3.141592653589793);

  // Lossless conversions between integer types; f32 widens to f64.
  CHECK(f.get_u32("t.u8") == 200);
  CHECK(f.get_u64("t.u16") == 60000);
  CHECK(f.get_i64("t.i8") == -100);
  CHECK(f.get_i64("t.u32") == 4000000000ll);
  CHECK(f.get_i32("t.i16") == -30000);
  CHECK(f.get_f64("t.f32") == 3.5);

  CHECK(f.get("a.u8") == GgufValue(std::vector<uint8_t>{0, 1, 255}));
  CHECK(f.get("a.i8") == GgufValue(std::vector<int8_t>{-128, 0, 127}));
  CHECK(f.get("a.u16").get<uint16_t>(1) == 65535);
  CHECK(f.get("a.i16").get<int16_t>(0) == -32768);
  CHECK(f.get("a.u32").get<uint32_t>(1) == 4294967295u);
  CHECK(f.get_int_array("a.i32") == std::vector<int64_t>{1, 1, 3, -6});
  CHECK(f.get_int_array("a.u8") == std::vector<int64_t>{0, 1, 255});
  CHECK(f.get_int_array("a.i64") == std::vector<int64_t>{std::numeric_limits<int64_t>::min(), 42});
  const std::vector<float> fl = f.get_float_array("a.f32");
  REQUIRE(fl.size() == 4);
  CHECK(std::signbit(fl[0]));
  CHECK(fl[1] == 1.5f);
  CHECK(fl[2] == -1e30f);
  CHECK(std::isinf(fl[3]));
  const GgufValue& b = f.get("a.bool");
  CHECK(b.is_array());
  CHECK(b.type() == GgufType::BOOL);
  CHECK(b.count() == 3);
  CHECK((b.get<bool>(0) && !b.get<bool>(1) && b.get<bool>(2)));
  CHECK(f.get("a.u64").get<uint64_t>(1) == ~uint64_t(0));
  CHECK(f.get("a.f64").get<double>(0) == 1e300);
  CHECK(f.get_string_array("a.str") == strings);
  CHECK(f.get("a.empty").count() == 0);
  CHECK(f.get("a.empty").type_name() == "array of i32");
  CHECK(f.get_int_array("a.empty").empty());

  // Missing keys and type mismatches name the key (and the types, or the value).
  const std::string file = p.string();
  check_error([&] { f.get_u32("no.such.key"); }, {file, "missing metadata key 'no.such.key'"});
  check_error([&] { f.get_u32("general.architecture"); }, {file, "'general.architecture'", "str", "expected u32"});
  check_error([&] { f.get_u32("t.i32"); }, {file, "'t.i32'", "-2000000000", "does not fit u32"});
  check_error([&] { f.get_i32("t.u32"); }, {file, "'t.u32'", "4000000000", "does not fit i32"});
  check_error([&] { f.get_i64("t.u64"); }, {file, "'t.u64'", "does not fit i64"});
  check_error([&] { f.get_u64("t.i8"); }, {file, "'t.i8'", "-100"});
  check_error([&] { f.get_f32("t.f64"); }, {file, "'t.f64'", "f64", "expected f32"});
  check_error([&] { f.get_bool("t.u8"); }, {file, "'t.u8'", "expected bool"});
  check_error([&] { f.get_string("a.str"); }, {file, "'a.str'", "array of str", "expected str"});
  check_error([&] { f.get_string_array("t.str"); }, {file, "'t.str'", "expected array of str"});
  check_error([&] { f.get_int_array("a.f32"); }, {file, "'a.f32'", "array of f32"});
  check_error([&] { f.get_int_array("a.u64"); }, {file, "'a.u64'", "element 1", "does not fit i64"});
  check_error([&] { f.get_float_array("a.f64"); }, {file, "'a.f64'", "expected array of f32"});
  check_error([&] { f.get_u32("a.u32"); }, {file, "'a.u32'", "array of u32"});
  check_error([&] { f.tensor("output.weight"); }, {file, "missing tensor 'output.weight'"});
  CHECK_THROWS_AS(f.get("t.u8").get<int8_t>(), std::invalid_argument);
  CHECK_THROWS_AS(f.get("a.u8").get<uint8_t>(3), std::invalid_argument);
}

TEST_CASE("gguf round trip of a tokenizer-sized string array") {
  TempDir tmp;
  const fs::path p = tmp.path / "tok.gguf";
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  for (int i = 0; i < 129280; ++i) {
    tokens.push_back(i % 1000 == 0 ? kUnicode + std::to_string(i) : "tok" + std::to_string(i));
    scores.push_back(-float(i));
    types.push_back(i < 3 ? 3 : 1);
  }
  {
    GgufWriter w(p);
    w.add("tokenizer.ggml.model", "gpt2");
    w.add("tokenizer.ggml.tokens", tokens);
    w.add("tokenizer.ggml.scores", scores);
    w.add("tokenizer.ggml.token_type", types);
    w.finish();
  }
  GgufFile f(p);
  CHECK(f.get_string_array("tokenizer.ggml.tokens") == tokens);
  CHECK(f.get_float_array("tokenizer.ggml.scores") == scores);
  const std::vector<int64_t> tt = f.get_int_array("tokenizer.ggml.token_type");
  CHECK(tt.size() == types.size());
  CHECK(tt[0] == 3);
  CHECK(tt[129279] == 1);
}

TEST_CASE("gguf tensors of F32 F16 Q8_0 Q4_K round trip with exact bytes and alignment") {
  for (const uint32_t alignment : {32u, 64u}) {
    CAPTURE(alignment);
    TempDir tmp;
    const fs::path p = tmp.path / "model.gguf";

    // Real quantized data: the reference quantizers applied to real values.
    const BlockFormat& q8 = block_format(GgmlType::Q8_0);
    const BlockFormat& q4k = block_format(GgmlType::Q4_K);
    const std::vector<float> w8 = ramp(64 * 3, 2.0f), w4 = ramp(256 * 2, 0.5f);
    std::vector<uint8_t> b8(size_t(q8.row_bytes(64) * 3)), b4(size_t(q4k.row_bytes(256) * 2));
    for (int r = 0; r < 3; ++r) q8.quantize_row(&w8[size_t(r) * 64], &b8[size_t(r * q8.row_bytes(64))], 64, nullptr);
    for (int r = 0; r < 2; ++r)
      q4k.quantize_row(&w4[size_t(r) * 256], &b4[size_t(r * q4k.row_bytes(256))], 256, nullptr);
    const std::vector<float> emb = ramp(5 * 3, 1.0f);
    std::vector<uint8_t> bemb(emb.size() * 4);
    std::memcpy(bemb.data(), emb.data(), bemb.size());
    const std::vector<uint8_t> bf16 = pattern(14, 9);

    struct Want {
      std::string name;
      GgmlType type;
      std::vector<int64_t> dims;
      std::vector<uint8_t> bytes;
    };
    const std::vector<Want> want = {
        {"token_embd.weight", GgmlType::F32, {5, 3}, bemb},  // 60 bytes: padded
        {"blk.0.attn_norm.weight", GgmlType::F16, {7}, bf16},
        {"blk.0.ffn_down.weight", GgmlType::Q8_0, {64, 3}, b8},
        {"blk.0.ffn_gate_exps.weight", GgmlType::Q4_K, {256, 1, 2}, b4},
        {"empty", GgmlType::F32, {0, 4}, {}},
        {"output_norm.weight", GgmlType::F32, {1}, pattern(4, 5)},
    };
    {
      GgufWriter w(p);
      w.add("general.architecture", "deepseek2");
      if (alignment != 32) w.add("general.alignment", alignment);
      CHECK(w.alignment() == alignment);
      for (const Want& t : want) CHECK(w.add_tensor(t.name, t.type, t.dims) == t.bytes.size());
      for (const Want& t : want) {
        if (t.type == GgmlType::Q4_K) {  // streamed in two pieces, one row each
          const size_t half = t.bytes.size() / 2;
          w.write(t.name, t.bytes.data(), half);
          w.write(t.name, t.bytes.data() + half, half);
        } else {
          w.write(t.name, t.bytes.data(), t.bytes.size());
        }
      }
      w.finish();
    }

    GgufFile f(p);
    CHECK(f.alignment() == alignment);
    CHECK(f.data_offset() % alignment == 0);
    REQUIRE(f.tensors().size() == want.size());
    uint64_t offset = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      const GgufTensor& t = f.tensors()[i];
      CAPTURE(t.name);
      CHECK(t.name == want[i].name);
      CHECK(&f.tensor(want[i].name) == &t);
      CHECK(t.type() == want[i].type);
      CHECK(t.dims == want[i].dims);
      CHECK(t.nbytes == want[i].bytes.size());
      CHECK(t.offset == offset);  // declaration order, each padded to the alignment
      CHECK(t.offset % alignment == 0);
      CHECK(static_cast<const uint8_t*>(t.data) == static_cast<const uint8_t*>(f.tensors()[0].data) + t.offset);
      CHECK(reinterpret_cast<uintptr_t>(t.data) % alignment == 0);
      CHECK((t.nbytes == 0 || std::memcmp(t.data, want[i].bytes.data(), t.nbytes) == 0));
      offset += align_up(want[i].bytes.size(), alignment);
    }
    // The writer pads after the last tensor too, as ggml does.
    CHECK(f.file_size() == f.data_offset() + offset);

    // Dims are ne order; shape() is the row-major view.
    const GgufTensor& emb_t = f.tensor("token_embd.weight");
    CHECK(emb_t.shape() == std::vector<int64_t>{3, 5});
    CHECK(emb_t.numel() == 15);
    CHECK(emb_t.row_elems() == 5);
    CHECK(emb_t.rows() == 3);
    CHECK(static_cast<const float*>(emb_t.data)[5 + 2] == emb[7]);  // row 1, column 2
    const GgufTensor& exps = f.tensor("blk.0.ffn_gate_exps.weight");
    CHECK(exps.shape() == std::vector<int64_t>{2, 1, 256});
    CHECK(exps.rows() == 2);
    CHECK(f.tensor("empty").numel() == 0);

    // The mapped quantized rows decode to what the source bytes decode to, and close to
    // the original values.
    std::vector<float> got(256), ref(256);
    for (int r = 0; r < 2; ++r) {
      q4k.dequantize_row(static_cast<const uint8_t*>(exps.data) + r * q4k.row_bytes(256), got.data(), 256);
      q4k.dequantize_row(&b4[size_t(r * q4k.row_bytes(256))], ref.data(), 256);
      CHECK(got == ref);
      for (int i = 0; i < 256; ++i) CHECK(std::fabs(got[size_t(i)] - w4[size_t(r * 256 + i)]) < 0.05f);
    }
    const GgufTensor& down = f.tensor("blk.0.ffn_down.weight");
    q8.dequantize_row(static_cast<const uint8_t*>(down.data) + 2 * q8.row_bytes(64), got.data(), 64);
    for (int i = 0; i < 64; ++i) CHECK(std::fabs(got[size_t(i)] - w8[size_t(128 + i)]) < 0.02f);

    // Header bytes as the format defines them.
    const std::vector<uint8_t> bytes = read_file(p);
    CHECK(std::string(bytes.begin(), bytes.begin() + 4) == "GGUF");
    uint32_t version;
    uint64_t n_tensors, n_kv;
    std::memcpy(&version, &bytes[4], 4);
    std::memcpy(&n_tensors, &bytes[8], 8);
    std::memcpy(&n_kv, &bytes[16], 8);
    CHECK(version == 3);
    CHECK(n_tensors == 6);
    CHECK(n_kv == (alignment == 32 ? 1u : 2u));
  }
}

TEST_CASE("gguf reads a hand-assembled file") {
  TempDir tmp;
  const fs::path p = tmp.path / "hand.gguf";
  // Three keys (a string, an i32 array, a bool), three tensors: F32 ne [2 3], Q8_0 ne [32]
  // and an F32 with n_dims 0 (ggml reads it as one element).
  Bytes b;
  b.raw("GGUF").u32(3).u64(3).u64(3);
  b.str("general.architecture").u32(8).str("deepseek2");
  b.str("x.arr").u32(9).u32(5).u64(3).num<int32_t>(1).num<int32_t>(-2).num<int32_t>(3);
  b.str("x.flag").u32(7).num<uint8_t>(1);
  b.str("a").u32(2).u64(2).u64(3).u32(0).u64(0);
  b.str("b").u32(1).u64(32).u32(8).u64(32);
  b.str("s").u32(0).u32(0).u64(96);
  b.pad_to(32);
  const uint64_t data_start = b.b.size();
  const std::vector<float> a = {1, 2, 3, 4, 5, 6};
  for (float x : a) b.num(x);
  b.pad_to(32);
  BlockQ8_0 blk;
  blk.d = 0x3c00;  // f16 1.0
  for (int i = 0; i < 32; ++i) blk.qs[i] = int8_t(i - 16);
  b.num(blk);
  b.pad_to(32);
  b.num(42.5f);
  write_file(p, b.b);

  for (const uint32_t version : {3u, 2u}) {
    CAPTURE(version);
    std::memcpy(&b.b[4], &version, 4);
    write_file(p, b.b);
    GgufFile opened(p);
    const GgufFile f = std::move(opened);  // movable; the views follow the mapping
    CHECK(f.version() == version);
    CHECK(f.data_offset() == data_start);
    CHECK(f.get_string("general.architecture") == "deepseek2");
    CHECK(f.get_int_array("x.arr") == std::vector<int64_t>{1, -2, 3});
    CHECK(f.get_bool("x.flag"));
    REQUIRE(f.tensors().size() == 3);
    const GgufTensor& ta = f.tensor("a");
    CHECK(ta.dims == std::vector<int64_t>{2, 3});
    CHECK(ta.shape() == std::vector<int64_t>{3, 2});
    CHECK(ta.nbytes == 24);
    CHECK(std::memcmp(ta.data, a.data(), 24) == 0);
    const GgufTensor& tb = f.tensor("b");
    CHECK(tb.type() == GgmlType::Q8_0);
    CHECK(tb.nbytes == 34);
    CHECK(tb.offset == 32);
    std::vector<float> got(32);
    tb.format->dequantize_row(tb.data, got.data(), 32);
    for (int i = 0; i < 32; ++i) CHECK(got[size_t(i)] == float(i - 16));
    const GgufTensor& ts = f.tensor("s");
    CHECK(ts.dims.empty());
    CHECK(ts.numel() == 1);
    CHECK(ts.nbytes == 4);
    CHECK(*static_cast<const float*>(ts.data) == 42.5f);
  }
}

TEST_CASE("gguf writer rejects misuse and leaves no file when not finished") {
  TempDir tmp;
  const fs::path p = tmp.path / "w.gguf";
  const std::string file = p.string();
  const auto d = pattern(64, 0);
  {
    GgufWriter w(p);
    w.add("k", uint32_t(1));
    check_error([&] { w.add("k", uint32_t(2)); }, {file, "'k'", "duplicate key"});
    check_error([&] { w.add("", uint32_t(2)); }, {file, "empty metadata key"});
    check_error([&] { w.add("general.alignment", uint64_t(64)); }, {file, "'general.alignment'", "expected u32"});
    check_error([&] { w.add("general.alignment", uint32_t(48)); }, {file, "48 is not a power of two"});
    check_error([&] { w.add("general.alignment", uint32_t(0)); }, {file, "0 is not a power of two"});
    CHECK(w.add_tensor("x", GgmlType::F32, {4}) == 16);
    CHECK(w.add_tensor("y", GgmlType::Q8_0, {32, 1}) == 34);
    check_error([&] { w.add_tensor("x", GgmlType::F32, {4}); }, {file, "'x'", "duplicate tensor name"});
    check_error([&] { w.add_tensor("q", GgmlType::Q4_K, {128}); }, {file, "'q'", "128", "multiple", "256"});
    check_error([&] { w.add_tensor("f", GgmlType::F32, {1, 1, 1, 1, 1}); }, {file, "'f'", "5 dims"});
    check_error([&] { w.add_tensor("g", GgmlType::F32, {}); }, {file, "'g'", "0 dims"});
    check_error([&] { w.add_tensor("n", GgmlType::F32, {2, -1}); }, {file, "'n'", "negative"});
    check_error([&] { w.add_tensor("o", GgmlType::F32, {int64_t(1) << 40, int64_t(1) << 40}); },
                {file, "'o'", "overflow"});
    check_error([&] { w.add_tensor("u", GgmlType(99), {4}); }, {file, "'u'", "unsupported ggml type id 99"});
    check_error([&] { w.add_tensor(std::string(64, 'n'), GgmlType::F32, {4}); }, {file, "longer than ggml's limit"});
    check_error([&] { w.write("y", d.data(), 34); }, {file, "'y'", "expected tensor 'x'"});
    check_error([&] { w.write("x", d.data(), 17); }, {file, "'x'", "17 bytes", "only 16"});
    w.write("x", d.data(), 10);
    check_error([&] { w.add("late", uint8_t(1)); }, {file, "'late'", "after tensor data started"});
    check_error([&] { w.add_tensor("late", GgmlType::F32, {1}); }, {file, "'late'", "after tensor data started"});
    check_error([&] { w.write("x", d.data(), 7); }, {file, "'x'", "only 6"});
    w.write("x", d.data(), 6);
    check_error([&] { w.finish(); }, {file, "1 of 2 tensors", "'y'"});
    w.write("y", d.data(), 34);
    check_error([&] { w.write("z", d.data(), 0); }, {file, "'z'", "already written"});
    CHECK(fs::exists(p.string() + ".tmp"));
  }  // never finished: no file, no temp file
  CHECK_FALSE(fs::exists(p));
  CHECK_FALSE(fs::exists(p.string() + ".tmp"));

  {  // A zero-byte tensor is completed by a zero-byte write; finish twice is an error.
    GgufWriter w(p);
    w.add_tensor("e", GgmlType::F32, {0});
    check_error([&] { w.finish(); }, {file, "0 of 1 tensors"});
    w.write("e", nullptr, 0);
    w.finish();
    check_error([&] { w.finish(); }, {file, "finish called twice"});
  }
  GgufFile f(p);
  CHECK(f.tensor("e").nbytes == 0);
}

TEST_CASE("gguf truncated file is an error at every cut") {
  TempDir tmp;
  const fs::path src = tmp.path / "full.gguf";
  {
    GgufWriter w(src);
    w.add("general.architecture", "deepseek2");
    w.add("tokenizer.ggml.tokens", std::vector<std::string>{"a", kUnicode, "ccc"});
    w.add("x.scores", std::vector<float>{1, 2});
    w.add("x.n", uint64_t(7));
    w.add_tensor("a", GgmlType::F32, {3});
    w.add_tensor("b", GgmlType::Q8_0, {32, 2});
    w.add_tensor("c", GgmlType::F16, {5});
    for (const char* n : {"a", "b", "c"}) {
      const auto d = pattern(n[0] == 'a' ? 12 : n[0] == 'b' ? 68 : 10, 1);
      w.write(n, d.data(), d.size());
    }
    w.finish();
  }
  const std::vector<uint8_t> full = read_file(src);
  uint64_t end = 0;  // the end of the last tensor's bytes; the padding after it is optional
  {
    GgufFile f(src);
    const GgufTensor& c = f.tensor("c");
    end = f.data_offset() + c.offset + c.nbytes;
  }
  REQUIRE(end < full.size());
  const fs::path p = tmp.path / "cut.gguf";
  int errors = 0;
  for (uint64_t cut = 0; cut <= full.size(); ++cut) {
    write_file(p, std::vector<uint8_t>(full.begin(), full.begin() + int64_t(cut)));
    const std::string msg = error_of([&] { GgufFile f(p); });
    if (cut < end) {
      const bool ok = msg.find(p.string()) != std::string::npos && msg.find('\n') == std::string::npos &&
                      (msg.find("truncated") != std::string::npos || msg.find("too short") != std::string::npos ||
                       msg.find("past the end") != std::string::npos);
      CHECK_MESSAGE(ok, "cut at ", cut, ": ", msg);
      errors += ok;
    } else {
      CHECK_MESSAGE(msg == "<no exception>", "cut at ", cut, ": ", msg);
    }
  }
  CHECK(errors == int(end));
}

TEST_CASE("gguf header bytes overwritten anywhere give a clean error or a valid file") {
  TempDir tmp;
  const fs::path src = tmp.path / "full.gguf";
  {
    GgufWriter w(src);
    w.add("general.architecture", "deepseek2");
    w.add("tokenizer.ggml.tokens", std::vector<std::string>{"a", "bb"});
    w.add("x.ids", std::vector<int32_t>{1, 2});
    w.add_tensor("a", GgmlType::F32, {3});
    w.add_tensor("b", GgmlType::Q8_0, {32, 2});
    const auto d = pattern(68, 1);
    w.write("a", d.data(), 12);
    w.write("b", d.data(), 68);
    w.finish();
  }
  const std::vector<uint8_t> full = read_file(src);
  uint64_t header_end = 0;
  {
    GgufFile f(src);
    header_end = f.data_offset();
  }
  // Only std::runtime_error may escape (anything else fails the test case).
  const fs::path p = tmp.path / "flip.gguf";
  int rejected = 0, accepted = 0;
  for (uint64_t i = 0; i < header_end; ++i) {
    for (const uint8_t v : {uint8_t(0x00), uint8_t(0xff), uint8_t(0x80), uint8_t(full[i] + 1)}) {
      if (v == full[i]) continue;
      std::vector<uint8_t> bytes = full;
      bytes[i] = v;
      write_file(p, bytes);
      const std::string msg = error_of([&] { GgufFile f(p); });
      if (msg == "<no exception>") {
        ++accepted;
      } else {
        ++rejected;
        CHECK_MESSAGE(msg.find(p.string()) != std::string::npos, "byte ", i, " = ", int(v), ": ", msg);
        CHECK_MESSAGE(msg.find('\n') == std::string::npos, "byte ", i, " = ", int(v), ": ", msg);
      }
    }
  }
  CHECK(rejected > 0);
  CHECK(accepted > 0);  // e.g. changed string bytes or padding
}

TEST_CASE("gguf base corruption file is valid") {
  TempDir tmp;
  write_file(tmp.path / "ok.gguf", base_file().build());
  GgufFile f(tmp.path / "ok.gguf");
  CHECK(f.tensor("blk.0.attn_norm.weight").nbytes == 32);
}

TEST_CASE("gguf rejects bad magic") {
  RawFile r = base_file();
  r.magic = "GGML";
  check_rejects(r, {"bad magic 'GGML'", "not a GGUF file"});
}

TEST_CASE("gguf rejects version 1") {
  RawFile r = base_file();
  r.version = 1;
  check_rejects(r, {"GGUF version 1 is not supported"});
}

TEST_CASE("gguf rejects version 99 and byte-swapped versions") {
  RawFile r = base_file();
  r.version = 99;
  check_rejects(r, {"unsupported GGUF version 99"});
  r.version = 0;
  check_rejects(r, {"unsupported GGUF version 0"});
  r.version = 0x03000000;
  check_rejects(r, {"byte-swapped", "big-endian"});
}

TEST_CASE("gguf rejects a huge tensor count") {
  RawFile r = base_file();
  r.n_tensors = uint64_t(1) << 60;
  check_rejects(r, {"tensor count 1152921504606846976", "cannot fit"});
}

TEST_CASE("gguf rejects a huge metadata count") {
  RawFile r = base_file();
  r.n_kv = uint64_t(1) << 60;
  check_rejects(r, {"metadata count 1152921504606846976", "cannot fit"});
  RawFile k;  // a plausible count, but the second key is not there
  k.kvs = {kv_str("general.architecture", "deepseek2")};
  k.n_kv = 2;
  check_rejects(k, {"metadata key #1", "truncated"});
}

TEST_CASE("gguf rejects a huge string length") {
  RawFile r = base_file();
  r.kvs = {Bytes().u64(uint64_t(1) << 60).raw("general.architecture").b};
  check_rejects(r, {"metadata key #0", "length 1152921504606846976 exceeds the limit"});
  r.kvs = {kv("general.name", 8, Bytes().u64(uint64_t(1) << 40).raw("x"))};
  check_rejects(r, {"'general.name'", "length 1099511627776 exceeds the limit"});
  r.kvs = {kv("general.name", 8, Bytes().u64(5000).raw("x"))};  // under the limit, past the end
  check_rejects(r, {"'general.name'", "5000 bytes", "runs past the end"});
  RawFile r2;  // a tensor name length of 2^50 where the tensor info starts
  r2.n_tensors = 1;
  r2.n_kv = 0;
  r2.kvs = {Bytes().u64(uint64_t(1) << 50).raw(std::string(40, 'x')).b};
  check_rejects(r2, {"tensor #0", "exceeds the limit"});
}

TEST_CASE("gguf rejects a huge array count") {
  RawFile r = base_file();
  r.kvs = {kv("tokenizer.ggml.tokens", 9, Bytes().u32(8).u64(uint64_t(1) << 60))};
  check_rejects(r, {"'tokenizer.ggml.tokens'", "array count 1152921504606846976 exceeds the limit"});
  r.kvs = {kv("tokenizer.ggml.tokens", 9, Bytes().u32(8).u64(uint64_t(1) << 29))};
  check_rejects(r, {"'tokenizer.ggml.tokens'", "truncated", "536870912 strings"});
  r.kvs = {kv("tokenizer.ggml.scores", 9, Bytes().u32(6).u64(uint64_t(1) << 29))};
  check_rejects(r, {"'tokenizer.ggml.scores'", "truncated", "536870912 x f32"});
}

TEST_CASE("gguf rejects an unknown value type") {
  RawFile r = base_file();
  r.kvs = {kv("x.weird", 13, Bytes().u32(0))};
  check_rejects(r, {"'x.weird'", "unknown value type 13"});
  r.kvs = {kv("x.weird", 9, Bytes().u32(42).u64(1).u32(0))};
  check_rejects(r, {"'x.weird'", "unknown array element type 42"});
  r.kvs = {kv("x.nested", 9, Bytes().u32(9).u64(1).u32(4).u64(0))};
  check_rejects(r, {"'x.nested'", "arrays of arrays"});
}

TEST_CASE("gguf rejects an unsupported ggml type id") {
  RawFile r = base_file();
  r.tensors[0].type = 99;
  check_rejects(r, {"'blk.0.attn_norm.weight'", "unsupported ggml type id 99"});
}

TEST_CASE("gguf rejects a misaligned tensor offset") {
  RawFile r = base_file();
  r.tensors[0].offset = 16;
  r.data_bytes = 64;
  check_rejects(r, {"'blk.0.attn_norm.weight'", "offset 16 is not a multiple of the alignment 32"});
  r.kvs.push_back(kv_u32("general.alignment", 8));  // aligned under a smaller alignment
  r.tensors[0].offset = 20;
  check_rejects(r, {"offset 20 is not a multiple of the alignment 8"});
}

TEST_CASE("gguf rejects tensor data past the end of the file") {
  RawFile r = base_file();
  r.data_bytes = 31;
  check_rejects(r, {"'blk.0.attn_norm.weight'", "runs past the end of the file"});
  r.data_bytes = 64;
  r.tensors[0].offset = uint64_t(1) << 63;  // aligned, far away: no overflow
  check_rejects(r, {"'blk.0.attn_norm.weight'", "runs past the end of the file"});
}

TEST_CASE("gguf rejects overlapping tensors") {
  RawFile r = base_file();
  r.tensors = {{"a", {16}, 0, 0}, {"b", {8}, 0, 32}};
  r.data_bytes = 64;
  check_rejects(r, {"tensor 'b'", "overlap tensor 'a'", "[32, 64)", "[0, 64)"});
}

TEST_CASE("gguf rejects duplicate names") {
  RawFile r = base_file();
  r.tensors = {{"a", {8}, 0, 0}, {"a", {8}, 0, 32}};
  r.data_bytes = 64;
  check_rejects(r, {"tensor 'a'", "duplicate tensor name"});
  r = base_file();
  r.kvs.push_back(kv_str("general.architecture", "other"));
  check_rejects(r, {"'general.architecture'", "duplicate key"});
  r = base_file();
  r.kvs.push_back(kv_str("", "x"));
  check_rejects(r, {"metadata key #1", "empty key"});
}

TEST_CASE("gguf rejects n_dims 5") {
  RawFile r = base_file();
  r.tensors[0].dims = {8, 1, 1, 1, 1};
  check_rejects(r, {"'blk.0.attn_norm.weight'", "n_dims 5 exceeds the maximum of 4"});
}

TEST_CASE("gguf rejects bad dims") {
  RawFile r = base_file();
  r.tensors[0].dims = {uint64_t(1) << 32, uint64_t(1) << 32};
  check_rejects(r, {"'blk.0.attn_norm.weight'", "overflows 64 bits"});
  r.tensors[0].dims = {~uint64_t(0)};
  check_rejects(r, {"'blk.0.attn_norm.weight'", "more than 2^63 - 1"});
  r.tensors[0].dims = {33};
  r.tensors[0].type = 8;  // Q8_0
  check_rejects(r, {"'blk.0.attn_norm.weight'", "ne[0] = 33 is not a multiple of the q8_0 block size 32"});
}

TEST_CASE("gguf rejects a bad alignment key") {
  RawFile r = base_file();
  r.kvs.push_back(kv_u32("general.alignment", 48));
  check_rejects(r, {"'general.alignment'", "48 is not a power of two"});
  r.kvs.back() = kv_u32("general.alignment", 0);
  check_rejects(r, {"'general.alignment'", "0 is not a power of two"});
  r.kvs.back() = kv("general.alignment", 10, Bytes().u64(32));
  check_rejects(r, {"'general.alignment'", "type u64, expected u32"});
}

TEST_CASE("gguf rejects files too short for the header") {
  TempDir tmp;
  const fs::path p = tmp.path / "short.gguf";
  write_file(p, {});
  check_error([&] { GgufFile f(p); }, {p.string(), "0 bytes", "too short"});
  write_file(p, {'G', 'G', 'U', 'F', 3, 0, 0});
  check_error([&] { GgufFile f(p); }, {p.string(), "truncated", "24-byte GGUF header"});
  check_error([&] { GgufFile f(tmp.path / "missing.gguf"); }, {"missing.gguf", "cannot open"});
}

}  // TEST_SUITE

}  // namespace engine_gguf_suite

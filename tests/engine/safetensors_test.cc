// Safetensors reader and writer: round trips, the golden checkpoint, and one case per
// kind of malformed input (each error must name the file and, where there is one, the
// tensor, on a single line).
#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/safetensors.h"
#include "engine/safetensors_writer.h"

using namespace hearth;
#include "support/errors.h"
#include "support/scratch.h"

namespace engine_safetensors_suite {

namespace fs = std::filesystem;
using hearth::testing::pattern;
using hearth::testing::check_error;
using hearth::testing::error_of;
using hearth::testing::TempDir;

namespace {



// Writes a file by hand (length, header, `data_bytes` of data) so tests can build what
// the writer refuses to. `len` overrides the header length field.
fs::path write_raw(const fs::path& p, const std::string& header, uint64_t data_bytes,
                   std::optional<uint64_t> len = std::nullopt) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  const uint64_t n = len.value_or(header.size());
  for (int i = 0; i < 8; ++i) out.put(char(uint8_t(n >> (8 * i))));
  out << header;
  const std::vector<uint8_t> d = pattern(data_bytes, 1);
  out.write(reinterpret_cast<const char*>(d.data()), std::streamsize(d.size()));
  return p;
}

void write_text(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }

void check_file_error(const fs::path& p, std::initializer_list<std::string> parts) {
  std::vector<std::string> all(parts);
  all.push_back(p.filename().string());
  const std::string msg = error_of([&] { SafetensorsFile f(p); });
  for (const std::string& part : all)
    CHECK_MESSAGE(msg.find(part) != std::string::npos, "'", part, "' not in: ", msg);
  CHECK_MESSAGE(msg.find('\n') == std::string::npos, "multi-line message: ", msg);
}

// Writes one shard through SafetensorsWriter with pattern data; returns the bytes written.
uint64_t write_shard(const fs::path& p, const std::vector<TensorSpec>& specs) {
  SafetensorsWriter w(p, specs);
  uint64_t total = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto d = pattern(specs[i].nbytes(), uint8_t(i));
    w.write(specs[i].name, d.data(), d.size());
    total += d.size();
  }
  w.finish();
  return total;
}

const std::string kOne = R"("t": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]})";

}  // namespace

TEST_SUITE("safetensors") {

TEST_CASE("safetensors round trip of every dtype with exact bytes") {
  TempDir tmp;
  const fs::path p = tmp.path / "model.safetensors";
  const std::vector<TensorSpec> specs = {
      {"a.f32", DType::F32, {2, 3}},      {"b.f16", DType::F16, {5}},
      {"c.bf16", DType::BF16, {3, 1, 2}}, {"d.fp8", DType::F8_E4M3, {3, 5}},
      {"e.empty", DType::F32, {0, 4}},    {"f.scalar", DType::F32, {}},
  };
  CHECK(specs[0].nbytes() == 24);
  CHECK(specs[3].nbytes() == 15);
  CHECK(specs[4].nbytes() == 0);
  CHECK(specs[5].nbytes() == 4);
  {
    SafetensorsWriter w(p, specs, {{"format", "pt"}, {"source", "test"}});
    for (size_t i = 0; i < specs.size(); ++i) {
      const auto d = pattern(specs[i].nbytes(), uint8_t(i));
      w.write(specs[i].name, d.data(), d.size());
    }
    CHECK(fs::exists(p.string() + ".tmp"));
    CHECK_FALSE(fs::exists(p));
    w.finish();
  }
  CHECK_FALSE(fs::exists(p.string() + ".tmp"));

  // Layout: length field, space-padded header, data starting 8-byte aligned.
  std::ifstream in(p, std::ios::binary);
  uint8_t len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  CHECK((8 + n) % 8 == 0);
  CHECK(fs::file_size(p) == 8 + n + 24 + 10 + 12 + 15 + 0 + 4);

  SafetensorsFile f(p);
  CHECK(f.path() == p);
  CHECK(f.metadata() == std::map<std::string, std::string>{{"format", "pt"}, {"source", "test"}});
  REQUIRE(f.tensors().size() == specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    CAPTURE(specs[i].name);
    const TensorView& t = f.tensors().at(specs[i].name);
    CHECK(t.name == specs[i].name);
    CHECK(t.dtype == specs[i].dtype);
    CHECK(t.shape == specs[i].shape);
    CHECK(t.nbytes == specs[i].nbytes());
    CHECK(t.file == p.string());
    const auto want = pattern(specs[i].nbytes(), uint8_t(i));
    CHECK((want.empty() || std::memcmp(t.data, want.data(), want.size()) == 0));
  }
  CHECK(f.tensors().at("a.f32").numel() == 6);
  CHECK(f.tensors().at("c.bf16").numel() == 6);
  CHECK(f.tensors().at("c.bf16").dim(2) == 2);
  CHECK(f.tensors().at("e.empty").numel() == 0);
  CHECK(f.tensors().at("f.scalar").numel() == 1);
  // Declaration order is file order: the first tensor starts the data section.
  CHECK(static_cast<const uint8_t*>(f.tensors().at("a.f32").data) ==
        static_cast<const uint8_t*>(f.tensors().at("b.f16").data) - 24);
  CHECK(reinterpret_cast<uintptr_t>(f.tensors().at("a.f32").data) % 8 == 0);
}

TEST_CASE("safetensors writer rejects wrong order, wrong size and early finish") {
  TempDir tmp;
  const fs::path p = tmp.path / "w.safetensors";
  const std::vector<TensorSpec> specs = {{"x", DType::BF16, {4}}, {"y", DType::F32, {2}}};
  const auto d = pattern(16, 0);
  {
    SafetensorsWriter w(p, specs);
    check_error([&] { w.write("y", d.data(), 8); }, {"w.safetensors", "'y'", "expected tensor 'x'"});
    check_error([&] { w.write("x", d.data(), 7); }, {"w.safetensors", "'x'", "7 bytes", "declared 8"});
    w.write("x", d.data(), 8);
    check_error([&] { w.finish(); }, {"w.safetensors", "1 of 2", "'y'"});
    w.write("y", d.data(), 8);
    check_error([&] { w.write("z", d.data(), 0); }, {"w.safetensors", "'z'"});
  }  // never finished: no file, no temp file
  CHECK_FALSE(fs::exists(p));
  CHECK_FALSE(fs::exists(p.string() + ".tmp"));
  check_error([&] { SafetensorsWriter w(p, {{"x", DType::F32, {1}}, {"x", DType::F32, {1}}}); },
              {"w.safetensors", "'x'", "duplicate"});
  check_error([&] { (void)TensorSpec{"neg", DType::F32, {2, -1}}.nbytes(); }, {"'neg'"});
}

TEST_CASE("safetensors sharded directory with index round trip") {
  TempDir tmp;
  const std::vector<TensorSpec> s1 = {{"model.embed_tokens.weight", DType::BF16, {8, 4}},
                                      {"model.layers.0.w", DType::F8_E4M3, {4, 4}}};
  const std::vector<TensorSpec> s2 = {{"model.layers.0.w_scale_inv", DType::F32, {1, 1}},
                                      {"model.norm.weight", DType::BF16, {4}}};
  const std::string n1 = "model-00001-of-00002.safetensors", n2 = "model-00002-of-00002.safetensors";
  const uint64_t total = write_shard(tmp.path / n1, s1) + write_shard(tmp.path / n2, s2);
  CHECK(total == 64 + 16 + 4 + 8);
  std::map<std::string, std::string> wm;
  for (const auto& s : s1) wm[s.name] = n1;
  for (const auto& s : s2) wm[s.name] = n2;
  write_safetensors_index(tmp.path, wm, total);
  // A stray file not named by the index is not loaded.
  write_shard(tmp.path / "stray.safetensors", {{"stray", DType::F32, {1}}});

  std::ifstream in(tmp.path / "model.safetensors.index.json");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(text.find("\n  \"metadata\": {\n    \"total_size\": 92\n  }") != std::string::npos);
  const auto j = nlohmann::json::parse(text);
  CHECK(j["metadata"]["total_size"] == 92);
  CHECK(j["weight_map"]["model.norm.weight"] == n2);

  const WeightStore ws = WeightStore::open(tmp.path);
  CHECK(ws.dir() == tmp.path);
  CHECK(ws.tensors().size() == 4);
  CHECK_FALSE(ws.has("stray"));
  CHECK(ws.total_bytes() == 92);
  for (const auto* specs : {&s1, &s2})
    for (size_t i = 0; i < specs->size(); ++i) {
      const TensorSpec& s = (*specs)[i];
      CAPTURE(s.name);
      REQUIRE(ws.has(s.name));
      const TensorView& t = ws.get(s.name);
      CHECK(t.dtype == s.dtype);
      CHECK(t.shape == s.shape);
      CHECK(fs::path(t.file).filename() == wm[s.name]);
      const auto want = pattern(s.nbytes(), uint8_t(i));
      CHECK(std::memcmp(t.data, want.data(), want.size()) == 0);
    }
}

TEST_CASE("safetensors directory without index loads every .safetensors file") {
  TempDir tmp;
  write_shard(tmp.path / "a.safetensors", {{"x", DType::F32, {2}}});
  write_shard(tmp.path / "b.safetensors", {{"y", DType::F16, {3}}});
  write_text(tmp.path / "notes.txt", "not a checkpoint");
  const WeightStore ws = WeightStore::open(tmp.path);
  CHECK(ws.tensors().size() == 2);
  CHECK(ws.get("x").nbytes == 8);
  CHECK(ws.get("y").dtype == DType::F16);
  CHECK(fs::path(ws.get("y").file).filename() == "b.safetensors");
}

TEST_CASE("safetensors empty file and header-only file") {
  TempDir tmp;
  const fs::path empty = tmp.path / "empty.safetensors";
  write_text(empty, "");
  MappedFile m(empty);
  CHECK(m.size() == 0);
  CHECK(m.data() == nullptr);
  check_file_error(empty, {"0 bytes", "shorter than"});

  // No tensors at all is a valid (if useless) file.
  const fs::path none = tmp.path / "none.safetensors";
  write_shard(none, {});
  SafetensorsFile f(none);
  CHECK(f.tensors().empty());
  CHECK(f.metadata().at("format") == "pt");

  check_error([&] { MappedFile m2(tmp.path / "absent.safetensors"); }, {"absent.safetensors", "cannot open"});
}

TEST_CASE("safetensors malformed: truncated file shorter than 8 bytes") {
  TempDir tmp;
  const fs::path p = tmp.path / "short.safetensors";
  write_text(p, std::string("\x10\x00\x00", 3));
  check_file_error(p, {"3 bytes", "shorter than the 8-byte header length"});
}

TEST_CASE("safetensors malformed: header length past the end of the file") {
  TempDir tmp;
  const std::string h = "{" + kOne + "}";
  const fs::path p = write_raw(tmp.path / "hlen.safetensors", h, 16, h.size() + 100);
  check_file_error(p, {"header length " + std::to_string(h.size() + 100), "past the end of the file"});
  const fs::path big = write_raw(tmp.path / "huge.safetensors", h, 16, kMaxSafetensorsHeader + 1);
  check_file_error(big, {"exceeds the limit"});
  // A u64 length near 2^64 must not wrap around the bounds check.
  const fs::path wrap = write_raw(tmp.path / "wrap.safetensors", h, 16, ~uint64_t(0) - 3);
  check_file_error(wrap, {"exceeds the limit"});
}

TEST_CASE("safetensors malformed: data_offsets past the end of the data section") {
  TempDir tmp;
  const fs::path p = write_raw(tmp.path / "model.safetensors",
                               R"({"model.norm.weight": {"dtype": "F32", "shape": [4], "data_offsets": [4, 20]}})", 16);
  check_file_error(p, {"tensor 'model.norm.weight'", "data_offsets [4, 20] end past the data section (size 16)"});
}

TEST_CASE("safetensors malformed: file truncated inside the data") {
  TempDir tmp;
  const fs::path p = tmp.path / "cut.safetensors";
  write_shard(p, {{"first", DType::F32, {4}}, {"second", DType::BF16, {8}}});
  fs::resize_file(p, fs::file_size(p) - 1);
  check_file_error(p, {"tensor 'second'", "end past the data section (size 31)"});
}

TEST_CASE("safetensors malformed: overlapping tensors") {
  TempDir tmp;
  const fs::path p = write_raw(tmp.path / "overlap.safetensors", R"({
    "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
    "b": {"dtype": "F32", "shape": [2], "data_offsets": [24, 32]},
    "c": {"dtype": "BF16", "shape": [4], "data_offsets": [12, 20]},
    "empty": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}})",
                               32);
  check_file_error(p, {"tensor 'c'", "overlap tensor 'a'", "[12, 20]", "[0, 16]"});
  // Touching ranges and an empty range inside another tensor are fine.
  const fs::path ok = write_raw(tmp.path / "adjacent.safetensors", R"({
    "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
    "b": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]},
    "empty": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}})",
                                32);
  CHECK(SafetensorsFile(ok).tensors().size() == 3);
}

TEST_CASE("safetensors malformed: shape and byte size mismatch") {
  TempDir tmp;
  const fs::path p = write_raw(tmp.path / "mismatch.safetensors",
                               R"({"w": {"dtype": "BF16", "shape": [3, 4], "data_offsets": [0, 16]}})", 16);
  check_file_error(p, {"tensor 'w'", "shape [3,4] of BF16 does not match data_offsets [0, 16] (16 bytes)"});
  // Dims whose product overflows 64 bits must not wrap to the right size.
  const fs::path o = write_raw(tmp.path / "overflow.safetensors",
                               R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 1], "data_offsets": [0, 0]}})", 0);
  check_file_error(o, {"tensor 'w'", "overflows"});
  const fs::path o2 = write_raw(tmp.path / "overflow2.safetensors",
                                R"({"w": {"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 0]}})", 0);
  check_file_error(o2, {"tensor 'w'", "does not match"});
}

TEST_CASE("safetensors malformed: unknown dtype") {
  TempDir tmp;
  for (const std::string dt : {"F8_E5M2", "Q4", "I64"}) {
    CAPTURE(dt);
    const fs::path p = write_raw(tmp.path / ("dtype-" + dt + ".safetensors"),
                                 R"({"lm_head.weight": {"dtype": ")" + dt + R"(", "shape": [2], "data_offsets": [0, 2]}})", 2);
    check_file_error(p, {"tensor 'lm_head.weight'", "unsupported dtype '" + dt + "'"});
  }
}

TEST_CASE("safetensors malformed: header that is not valid JSON or not an object") {
  TempDir tmp;
  const fs::path p = write_raw(tmp.path / "badjson.safetensors", R"({"t": {"dtype": "F32", "shape": [2)", 8);
  check_file_error(p, {"header is not valid JSON"});
  const fs::path a = write_raw(tmp.path / "array.safetensors", "[1, 2]", 0);
  check_file_error(a, {"header is not a JSON object"});
  const fs::path z = write_raw(tmp.path / "nul.safetensors", std::string("{}\0\0", 4), 0);
  check_file_error(z, {"header is not valid JSON"});
}

TEST_CASE("safetensors malformed: header entries with wrong keys or types") {
  TempDir tmp;
  struct Case {
    const char* entry;
    const char* error;
  };
  const Case cases[] = {
      {R"("t": [1, 2])", "not a JSON object"},
      {R"("t": {"shape": [4], "data_offsets": [0, 16]})", "missing key 'dtype'"},
      {R"("t": {"dtype": "F32", "data_offsets": [0, 16]})", "missing key 'shape'"},
      {R"("t": {"dtype": "F32", "shape": [4]})", "missing key 'data_offsets'"},
      {R"("t": {"dtype": 7, "shape": [4], "data_offsets": [0, 16]})", "'dtype' is not a string"},
      {R"("t": {"dtype": "F32", "shape": 4, "data_offsets": [0, 16]})", "'shape' is not an array"},
      {R"("t": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]})", "not a non-negative integer"},
      {R"("t": {"dtype": "F32", "shape": [4.0], "data_offsets": [0, 16]})", "not a non-negative integer"},
      {R"("t": {"dtype": "F32", "shape": [4], "data_offsets": [0]})", "not two non-negative integers"},
      {R"("t": {"dtype": "F32", "shape": [4], "data_offsets": [-1, 15]})", "not two non-negative integers"},
      {R"("t": {"dtype": "F32", "shape": [4], "data_offsets": "0-16"})", "not two non-negative integers"},
      {R"("t": {"dtype": "F32", "shape": [0], "data_offsets": [16, 8]})", "begin after end"},
  };
  int i = 0;
  for (const Case& c : cases) {
    CAPTURE(c.entry);
    const fs::path p = write_raw(tmp.path / ("entry" + std::to_string(i++) + ".safetensors"),
                                 std::string("{") + c.entry + "}", 16);
    check_file_error(p, {"tensor 't'", c.error});
  }
  const fs::path m = write_raw(tmp.path / "meta.safetensors", R"({"__metadata__": {"format": 1}, )" + kOne + "}", 16);
  check_file_error(m, {"__metadata__", "'format'"});
}

TEST_CASE("safetensors WeightStore: get of a missing tensor") {
  TempDir tmp;
  write_shard(tmp.path / "model.safetensors", {{"present", DType::F32, {1}}});
  const WeightStore ws = WeightStore::open(tmp.path);
  CHECK(ws.has("present"));
  CHECK_FALSE(ws.has("model.absent.weight"));
  CHECK_THROWS_WITH_AS(ws.get("model.absent.weight"),
                       doctest::Contains(("missing tensor 'model.absent.weight' in " + tmp.path.string()).c_str()),
                       std::runtime_error);
}

TEST_CASE("safetensors WeightStore: index naming a missing shard") {
  TempDir tmp;
  write_shard(tmp.path / "model-00001-of-00002.safetensors", {{"a", DType::F32, {1}}});
  write_safetensors_index(tmp.path, {{"a", "model-00001-of-00002.safetensors"}, {"b", "model-00002-of-00002.safetensors"}}, 8);
  check_error([&] { WeightStore::open(tmp.path); },
              {"model.safetensors.index.json", "tensor 'b'", "shard 'model-00002-of-00002.safetensors' does not exist"});
  // A shard path that leaves the directory is refused, not followed.
  write_safetensors_index(tmp.path, {{"a", "../model-00001-of-00002.safetensors"}}, 4);
  check_error([&] { WeightStore::open(tmp.path); }, {"model.safetensors.index.json", "tensor 'a'", "not a file name"});
}

TEST_CASE("safetensors WeightStore: tensor present in two shards") {
  TempDir tmp;
  write_shard(tmp.path / "model-00001-of-00002.safetensors", {{"a", DType::F32, {1}}, {"dup.weight", DType::F32, {2}}});
  write_shard(tmp.path / "model-00002-of-00002.safetensors", {{"dup.weight", DType::F32, {2}}, {"b", DType::F32, {1}}});
  // Without an index every file is loaded, so the duplicate is caught.
  check_error([&] { WeightStore::open(tmp.path); },
              {"model-00002-of-00002.safetensors", "tensor 'dup.weight'", "also present in",
               "model-00001-of-00002.safetensors"});
  // With an index too: the shards themselves must not disagree.
  write_safetensors_index(tmp.path,
                          {{"a", "model-00001-of-00002.safetensors"},
                           {"dup.weight", "model-00001-of-00002.safetensors"},
                           {"b", "model-00002-of-00002.safetensors"}},
                          20);
  check_error([&] { WeightStore::open(tmp.path); },
              {"model-00002-of-00002.safetensors", "tensor 'dup.weight'", "also present in"});
}

TEST_CASE("safetensors WeightStore: index tensor missing from its shard") {
  TempDir tmp;
  write_shard(tmp.path / "s1.safetensors", {{"a", DType::F32, {1}}});
  write_shard(tmp.path / "s2.safetensors", {{"b", DType::F32, {1}}});
  write_safetensors_index(tmp.path, {{"a", "s1.safetensors"}, {"b", "s1.safetensors"}, {"c", "s2.safetensors"}}, 12);
  check_error([&] { WeightStore::open(tmp.path); },
              {"model.safetensors.index.json", "tensor 'b'", "listed in shard 's1.safetensors' but missing from it"});
}

TEST_CASE("safetensors WeightStore: missing directory, no files, bad index") {
  TempDir tmp;
  check_error([&] { WeightStore::open(tmp.path / "nope"); }, {"nope", "does not exist"});
  check_error([&] { WeightStore::open(tmp.path); }, {tmp.path.string(), "no .safetensors files"});
  write_shard(tmp.path / "model.safetensors", {{"a", DType::F32, {1}}});
  write_text(tmp.path / "model.safetensors.index.json", "{\"weight_map\": {");
  check_error([&] { WeightStore::open(tmp.path); }, {"model.safetensors.index.json", "not valid JSON"});
  write_text(tmp.path / "model.safetensors.index.json", R"({"metadata": {}})");
  check_error([&] { WeightStore::open(tmp.path); }, {"model.safetensors.index.json", "'weight_map'"});
  write_text(tmp.path / "model.safetensors.index.json", R"({"weight_map": {"a": 3}})");
  check_error([&] { WeightStore::open(tmp.path); }, {"model.safetensors.index.json", "tensor 'a'", "not a string"});
  // A malformed shard reports the shard, not the directory.
  fs::remove(tmp.path / "model.safetensors.index.json");
  write_raw(tmp.path / "broken.safetensors", "{", 0);
  check_error([&] { WeightStore::open(tmp.path); }, {"broken.safetensors", "not valid JSON"});
}

TEST_CASE("safetensors golden checkpoint tiny-v32") {
  const fs::path dir = fs::path(HEARTH_TEST_DATA) / "tiny-v32";
  const SafetensorsFile f(dir / "model.safetensors");
  CHECK(f.tensors().size() == 536);
  CHECK(f.metadata().at("format") == "pt");

  const TensorView& emb = f.tensors().at("model.embed_tokens.weight");
  CHECK(emb.dtype == DType::BF16);
  CHECK(emb.shape == std::vector<int64_t>{1024, 256});
  CHECK(emb.nbytes == 524288);
  const uint8_t emb_head[8] = {0xa9, 0x3d, 0xee, 0xbe, 0x4f, 0x3d, 0x30, 0x3f};
  CHECK(std::memcmp(emb.data, emb_head, 8) == 0);

  const TensorView& kv = f.tensors().at("model.layers.0.self_attn.kv_b_proj.weight");
  CHECK(kv.dtype == DType::F8_E4M3);
  CHECK(kv.shape == std::vector<int64_t>{512, 128});
  CHECK(kv.numel() == 65536);

  const TensorView& sc = f.tensors().at("model.layers.0.self_attn.kv_b_proj.weight_scale_inv");
  CHECK(sc.dtype == DType::F32);
  CHECK(sc.shape == std::vector<int64_t>{4, 1});
  float s[4];
  std::memcpy(s, sc.data, sizeof s);
  CHECK(s[0] == float(0.000736129586584866));
  CHECK(s[3] == float(0.0009335633949376643));
  // Offsets 689848 and 755384 from the header, relative to the same data section.
  CHECK(static_cast<const uint8_t*>(sc.data) - static_cast<const uint8_t*>(kv.data) == 755384 - 689848);
  CHECK(static_cast<const uint8_t*>(kv.data) - static_cast<const uint8_t*>(emb.data) == 689848);

  const WeightStore ws = WeightStore::open(dir);
  CHECK(ws.tensors().size() == 536);
  CHECK(ws.total_bytes() == 11361928);
  CHECK(ws.get("model.embed_tokens.weight").shape == emb.shape);
}

}  // TEST_SUITE

}  // namespace engine_safetensors_suite

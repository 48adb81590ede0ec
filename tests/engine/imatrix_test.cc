// Importance matrices (engine/imatrix.h): accumulation against means computed here in
// double precision, the GGUF layout read back through GgufFile, legacy .dat files
// written here byte by byte, and the errors corrupted files must give.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "engine/gguf.h"
#include "engine/imatrix.h"
#include "support/errors.h"
#include "support/scratch.h"

namespace engine_imatrix_suite {

using namespace hearth;
using hearth::testing::check_error;
using hearth::testing::error_of;
using hearth::testing::TempDir;

namespace {

// Little-endian bytes of a legacy .dat file, built field by field.
struct Dat {
  std::string b;
  Dat& i32(int32_t v) {
    b.append(reinterpret_cast<const char*>(&v), 4);
    return *this;
  }
  Dat& f32(float v) {
    b.append(reinterpret_cast<const char*>(&v), 4);
    return *this;
  }
  Dat& str(const std::string& s) {
    i32(int32_t(s.size()));
    b += s;
    return *this;
  }
  Dat& entry(const std::string& name, int32_t ncall, const std::vector<float>& values) {
    str(name).i32(ncall).i32(int32_t(values.size()));
    for (float v : values) f32(v);
    return *this;
  }
};

std::filesystem::path write(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
  return p;
}

std::vector<float> row(std::mt19937& rng, int64_t n) {
  std::normal_distribution<float> d(0.0f, 2.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
}

// Mean of x^2 per column, in double.
std::vector<double> mean_sq(const std::vector<std::vector<float>>& rows) {
  std::vector<double> m(rows.at(0).size(), 0.0);
  for (const auto& r : rows)
    for (size_t j = 0; j < r.size(); ++j) m[j] += double(r[j]) * r[j];
  for (double& v : m) v /= double(rows.size());
  return m;
}

void check_close(const float* got, const std::vector<double>& want, double rel = 1e-5) {
  REQUIRE(got != nullptr);
  for (size_t j = 0; j < want.size(); ++j) {
    CAPTURE(j);
    CHECK(double(got[j]) == doctest::Approx(want[j]).epsilon(rel));
  }
}

}  // namespace

TEST_CASE("imatrix: accumulates the mean of x squared per column and per expert") {
  std::mt19937 rng(7);
  ImportanceMatrix im;
  std::vector<std::vector<float>> plain, e0, e2;
  for (int i = 0; i < 50; ++i) {
    plain.push_back(row(rng, 64));
    im.add("blk.0.attn_q_a.weight", 0, 1, plain.back().data(), 64);
  }
  for (int i = 0; i < 30; ++i) {
    e0.push_back(row(rng, 32));
    im.add("blk.3.ffn_up_exps.weight", 0, 4, e0.back().data(), 32);
    if (i % 3 == 0) {
      e2.push_back(row(rng, 32));
      im.add("blk.3.ffn_up_exps.weight", 2, 4, e2.back().data(), 32);
    }
  }
  im.finish_chunk();
  im.finish_chunk();
  CHECK(im.size() == 2);
  CHECK(im.chunk_count() == 2);
  CHECK(im.names() == std::vector<std::string>{"blk.0.attn_q_a.weight", "blk.3.ffn_up_exps.weight"});
  CHECK(im.shape("blk.3.ffn_up_exps.weight") == std::pair<int64_t, int64_t>{32, 4});
  check_close(im.weights("blk.0.attn_q_a.weight", 0, 64), mean_sq(plain));
  CHECK(im.weights("blk.0.attn_q_a.weight", -1, 64) == im.weights("blk.0.attn_q_a.weight", 0, 64));
  CHECK(im.weights("blk.0.attn_q_a.weight", -2, 64) == nullptr);
  check_close(im.weights("blk.3.ffn_up_exps.weight", 0, 32), mean_sq(e0));
  check_close(im.weights("blk.3.ffn_up_exps.weight", 2, 32), mean_sq(e2));
  CHECK(im.count("blk.3.ffn_up_exps.weight", 0) == 30);
  CHECK(im.count("blk.3.ffn_up_exps.weight", 2) == 10);
  // Absent, unseen, out of range or of another length: nullptr.
  CHECK(im.weights("blk.3.ffn_up_exps.weight", 1, 32) == nullptr);  // no rows
  CHECK(im.weights("blk.3.ffn_up_exps.weight", 4, 32) == nullptr);
  CHECK(im.weights("blk.3.ffn_up_exps.weight", 0, 16) == nullptr);
  CHECK(im.weights("blk.0.attn_q_a.weight", 0, 48) == nullptr);
  // A single matrix is read as flattened rows when the asked length divides it.
  CHECK(im.weights("blk.0.attn_q_a.weight", 1, 32) == im.weights("blk.0.attn_q_a.weight", 0, 64) + 32);
  CHECK(im.weights("blk.0.attn_q_a.weight", 1, 64) == nullptr);
  CHECK(im.weights("blk.9.attn_q_a.weight", 0, 64) == nullptr);
  CHECK(im.count("blk.9.attn_q_a.weight", 0) == 0);
}

TEST_CASE("imatrix: rows that disagree with the tensor are errors that add nothing") {
  ImportanceMatrix im;
  const std::vector<float> a(8, 1.0f), b(4, 1.0f);
  im.add("t.weight", 0, 1, a.data(), 8);
  check_error([&] { im.add("t.weight", 0, 1, b.data(), 4); }, {"'t.weight'", "8", "4"});
  check_error([&] { im.add("t.weight", 0, 2, a.data(), 8); }, {"'t.weight'", "matrices"});
  std::vector<float> bad(8, 3.0f);
  bad[5] = std::numeric_limits<float>::quiet_NaN();
  check_error([&] { im.add("t.weight", 0, 1, bad.data(), 8); }, {"'t.weight'", "activation 5"});
  CHECK(im.count("t.weight", 0) == 1);
  CHECK(im.weights("t.weight", 0, 8)[5] == 1.0f);  // the NaN row added nothing
  CHECK_THROWS_AS(im.add("t.weight", 1, 1, a.data(), 8), std::invalid_argument);
  CHECK_THROWS_AS(im.add("t.weight", -2, 1, a.data(), 8), std::invalid_argument);
  im.add("t.weight", -1, 1, a.data(), 8);  // -1: a plain tensor's one matrix
  CHECK(im.count("t.weight", 0) == 2);
  CHECK_THROWS_AS(im.add("u.weight", 0, 1, nullptr, 8), std::invalid_argument);
  CHECK_THROWS_AS(im.add("u.weight", 0, 1, a.data(), 0), std::invalid_argument);
  CHECK(im.size() == 1);
}

TEST_CASE("imatrix: concurrent adds to different tensors and experts") {
  // Four threads: two share one expert tensor (different experts), two have a tensor
  // each. Every row of a thread is the same, so each mean is that row squared.
  ImportanceMatrix im;
  const int64_t n = 256;
  auto work = [&](std::string name, int64_t expert, int64_t n_expert, float scale) {
    std::vector<float> x(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) x[size_t(j)] = scale * float(j % 7 + 1);
    for (int i = 0; i < 2000; ++i) im.add(name, expert, n_expert, x.data(), n);
  };
  std::vector<std::thread> ts;
  ts.emplace_back(work, "blk.1.ffn_down_exps.weight", 0, 8, 1.0f);
  ts.emplace_back(work, "blk.1.ffn_down_exps.weight", 5, 8, 2.0f);
  ts.emplace_back(work, "blk.1.attn_q_b.weight", 0, 1, 0.5f);
  ts.emplace_back(work, "blk.2.attn_q_b.weight", 0, 0, 3.0f);
  for (auto& t : ts) t.join();
  struct Want {
    const char* name;
    int64_t expert;
    float scale;
  };
  for (const Want w : {Want{"blk.1.ffn_down_exps.weight", 0, 1.0f}, Want{"blk.1.ffn_down_exps.weight", 5, 2.0f},
                       Want{"blk.1.attn_q_b.weight", 0, 0.5f}, Want{"blk.2.attn_q_b.weight", 0, 3.0f}}) {
    CAPTURE(w.name);
    CAPTURE(w.expert);
    CHECK(im.count(w.name, w.expert) == 2000);
    std::vector<double> want(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) want[size_t(j)] = std::pow(double(w.scale) * (j % 7 + 1), 2);
    check_close(im.weights(w.name, w.expert, n), want);
  }
}

TEST_CASE("imatrix: GGUF save writes llama.cpp's layout and loads back") {
  TempDir dir("imatrix");
  std::mt19937 rng(3);
  ImportanceMatrix im;
  std::vector<std::vector<float>> plain, ex1;
  for (int i = 0; i < 20; ++i) {
    plain.push_back(row(rng, 64));
    im.add("blk.0.attn_kv_b.weight", 0, 1, plain.back().data(), 64);
    ex1.push_back(row(rng, 32));
    im.add("blk.4.ffn_down_exps.weight", 1, 3, ex1.back().data(), 32);
  }
  for (int i = 0; i < 5; ++i) im.finish_chunk();
  im.set_chunk_size(512);
  im.add_dataset("calib.txt");
  const auto path = dir.path / "im.gguf";
  im.save(path);
  CHECK(!std::filesystem::exists(dir.path / "im.gguf.tmp"));

  // The file as llama.cpp reads it.
  {
    const GgufFile f(path);
    CHECK(f.get_string("general.type") == "imatrix");
    CHECK(f.get_string_array("imatrix.datasets") == std::vector<std::string>{"calib.txt"});
    CHECK(f.get_u32("imatrix.chunk_count") == 5);
    CHECK(f.get_u32("imatrix.chunk_size") == 512);
    REQUIRE(f.tensors().size() == 4);
    const GgufTensor& s = f.tensor("blk.4.ffn_down_exps.weight.in_sum2");
    const GgufTensor& c = f.tensor("blk.4.ffn_down_exps.weight.counts");
    CHECK(s.type() == GgmlType::F32);
    CHECK(s.dims == std::vector<int64_t>{32, 3});
    CHECK(c.dims == std::vector<int64_t>{1, 3});
    const float* cv = static_cast<const float*>(c.data);
    CHECK(cv[0] == 0.0f);
    CHECK(cv[1] == 20.0f);
    CHECK(cv[2] == 0.0f);
    const float* sv = static_cast<const float*>(s.data);
    const auto m = mean_sq(ex1);
    for (int j = 0; j < 32; ++j) {
      CHECK(double(sv[32 + j]) == doctest::Approx(m[size_t(j)] * 20).epsilon(1e-5));
      CHECK(sv[j] == 0.0f);
    }
    CHECK(f.tensor("blk.0.attn_kv_b.weight.in_sum2").dims == std::vector<int64_t>{64, 1});
    CHECK(f.tensors()[0].name == "blk.0.attn_kv_b.weight.in_sum2");  // sorted by name
  }

  const ImportanceMatrix back = ImportanceMatrix::load(path);
  CHECK(back.size() == 2);
  CHECK(back.chunk_count() == 5);
  CHECK(back.chunk_size() == 512);
  CHECK(back.datasets() == std::vector<std::string>{"calib.txt"});
  CHECK(back.count("blk.4.ffn_down_exps.weight", 1) == 20);
  check_close(back.weights("blk.0.attn_kv_b.weight", 0, 64), mean_sq(plain));
  check_close(back.weights("blk.4.ffn_down_exps.weight", 1, 32), mean_sq(ex1));
  CHECK(back.weights("blk.4.ffn_down_exps.weight", 0, 32) == nullptr);

  // Saving what was loaded gives the same statistics again.
  back.save(dir.path / "again.gguf");
  const ImportanceMatrix again = ImportanceMatrix::load(dir.path / "again.gguf");
  for (int j = 0; j < 64; ++j)
    CHECK(again.weights("blk.0.attn_kv_b.weight", 0, 64)[j] ==
          doctest::Approx(back.weights("blk.0.attn_kv_b.weight", 0, 64)[j]).epsilon(1e-6));
}

TEST_CASE("imatrix: legacy dat files load with their values divided by ncall") {
  TempDir dir("imatrix");
  // Entry 1: a plain tensor, 4 columns, ncall 2 (stored values are mean * ncall).
  // Entry 2: an expert tensor flattened, 2 experts of 3 columns, ncall 4.
  Dat d;
  d.i32(2);
  d.entry("blk.0.attn_q_b.weight", 2, {2.0f, 4.0f, 1.0f, 0.5f});
  d.entry("blk.3.ffn_up_exps.weight", 4, {4.0f, 8.0f, 12.0f, 1.0f, 2.0f, 3.0f});
  d.i32(17).str("wiki.train.raw");
  const ImportanceMatrix im = ImportanceMatrix::load(write(dir.path / "im.dat", d.b));
  CHECK(im.size() == 2);
  CHECK(im.chunk_count() == 17);
  CHECK(im.chunk_size() == 0);
  CHECK(im.datasets() == std::vector<std::string>{"wiki.train.raw"});
  const float* w = im.weights("blk.0.attn_q_b.weight", 0, 4);
  REQUIRE(w);
  CHECK(w[0] == 1.0f);
  CHECK(w[1] == 2.0f);
  CHECK(w[2] == 0.5f);
  CHECK(w[3] == 0.25f);
  // Expert rows are sliced by the asked row length.
  const float* e1 = im.weights("blk.3.ffn_up_exps.weight", 1, 3);
  REQUIRE(e1);
  CHECK(e1[0] == 0.25f);
  CHECK(e1[1] == 0.5f);
  CHECK(e1[2] == 0.75f);
  CHECK(im.weights("blk.3.ffn_up_exps.weight", 0, 3)[2] == 3.0f);
  CHECK(im.weights("blk.3.ffn_up_exps.weight", 2, 3) == nullptr);
  CHECK(im.weights("blk.3.ffn_up_exps.weight", 0, 4) == nullptr);  // 6 is no multiple of 4
  CHECK(im.weights("blk.3.ffn_up_exps.weight", 0, 6) != nullptr);

  // Older files end after the entries, or after the chunk count.
  Dat bare;
  bare.i32(1).entry("a.weight", 1, {3.0f});
  CHECK(ImportanceMatrix::load(write(dir.path / "bare.dat", bare.b)).weights("a.weight", 0, 1)[0] == 3.0f);
  bare.i32(9);
  CHECK(ImportanceMatrix::load(write(dir.path / "bare2.dat", bare.b)).chunk_count() == 9);

  // Converting to GGUF keeps the values.
  im.save(dir.path / "conv.gguf");
  const ImportanceMatrix conv = ImportanceMatrix::load(dir.path / "conv.gguf");
  CHECK(conv.weights("blk.3.ffn_up_exps.weight", 1, 3)[2] == doctest::Approx(0.75));
  CHECK(conv.datasets() == std::vector<std::string>{"wiki.train.raw"});
}

TEST_CASE("imatrix: corrupted legacy files are one-line errors naming file and entry") {
  TempDir dir("imatrix");
  Dat good;
  good.i32(2).entry("blk.0.attn_q_b.weight", 2, {2.0f, 4.0f}).entry("blk.1.x.weight", 1, {1.0f});
  good.i32(3).str("data.txt");
  // Every truncation is an error (or, cut inside the optional trailer, still a clean one).
  const size_t entries_end = good.b.size() - 4 - 4 - 8;
  for (size_t n = 0; n < good.b.size(); ++n) {
    CAPTURE(n);
    const auto p = write(dir.path / "cut.dat", good.b.substr(0, n));
    if (n == entries_end || n == entries_end + 4) {
      CHECK_NOTHROW(ImportanceMatrix::load(p));
      continue;
    }
    const std::string msg = error_of([&] { ImportanceMatrix::load(p); });
    CHECK(msg.find("cut.dat") != std::string::npos);
    CHECK(msg.find('\n') == std::string::npos);
  }
  const auto f = dir.path / "bad.dat";
  auto load = [&](const Dat& d) { return [&, d] { ImportanceMatrix::load(write(f, d.b)); }; };
  check_error(load(Dat().i32(1).entry("a.weight", 1, {1.0f}).i32(0).str("x").i32(5)), {"bad.dat", "4 unexpected bytes"});
  check_error(load(Dat().i32(-3)), {"bad.dat", "negative entry count -3"});
  check_error(load(Dat().i32(0)), {"bad.dat", "no importance entries"});
  check_error(load(Dat().i32(0x7fffffff).entry("a.weight", 1, {1.0f})), {"bad.dat", "entry count 2147483647"});
  check_error(load(Dat().i32(1).i32(-5).i32(0).i32(0).i32(0)), {"bad.dat", "entry 0", "name length -5"});
  check_error(load(Dat().i32(1).i32(0x7ffffff0).i32(0).i32(0).i32(0)), {"bad.dat", "entry 0", "past the end"});
  check_error(load(Dat().i32(1).str("a.weight").i32(1).i32(0x7fffffff).f32(1)), {"bad.dat", "'a.weight'", "2147483647 values"});
  check_error(load(Dat().i32(1).str("a.weight").i32(1).i32(-2)), {"bad.dat", "'a.weight'", "value count -2"});
  check_error(load(Dat().i32(1).str("a.weight").i32(-1).i32(1).f32(1)), {"bad.dat", "'a.weight'", "negative call count"});
  check_error(load(Dat().i32(1).entry("a.weight", 1, {1.0f, std::numeric_limits<float>::infinity()})),
              {"bad.dat", "'a.weight'", "value 1"});
  check_error(load(Dat().i32(1).entry("a.weight", 1, {-1.0f})), {"bad.dat", "'a.weight'", "value 0"});
  check_error(load(Dat().i32(2).entry("a.weight", 1, {1.0f}).entry("a.weight", 1, {1.0f})),
              {"bad.dat", "'a.weight' appears twice"});
  check_error(load(Dat().i32(1).entry("a.weight", 1, {1.0f}).i32(2).i32(-4)), {"bad.dat", "dataset name length -4"});
  check_error([&] { ImportanceMatrix::load(dir.path / "missing.dat"); }, {"missing.dat", "cannot open"});
  check_error([&] { ImportanceMatrix::load(write(dir.path / "tiny.dat", "ab")); }, {"tiny.dat", "too short"});
}

TEST_CASE("imatrix: GGUF files that are not valid imatrices are one-line errors") {
  TempDir dir("imatrix");
  const auto p = dir.path / "x.gguf";
  auto make = [&](const std::string& type, auto&& tensors) {
    GgufWriter w(p);
    if (!type.empty()) w.add("general.type", type);
    tensors(w);
    w.finish();
  };
  auto f32_tensor = [](GgufWriter& w, const std::string& name, std::vector<int64_t> dims, std::vector<float> v) {
    w.add_tensor(name, GgmlType::F32, std::move(dims));
    return std::pair{name, std::move(v)};
  };
  auto write_all = [](GgufWriter& w, std::vector<std::pair<std::string, std::vector<float>>> data) {
    for (auto& [n, v] : data) w.write(n, v.data(), v.size() * 4);
  };
  make("model", [&](GgufWriter& w) { write_all(w, {f32_tensor(w, "a.in_sum2", {2, 1}, {1, 2}), f32_tensor(w, "a.counts", {1, 1}, {1})}); });
  check_error([&] { ImportanceMatrix::load(p); }, {"x.gguf", "general.type is 'model'"});
  make("", [&](GgufWriter& w) { write_all(w, {f32_tensor(w, "a.in_sum2", {2, 1}, {1, 2}), f32_tensor(w, "a.counts", {1, 1}, {1})}); });
  check_error([&] { ImportanceMatrix::load(p); }, {"x.gguf", "without general.type"});
  make("imatrix", [&](GgufWriter& w) { write_all(w, {f32_tensor(w, "a.in_sum2", {2, 1}, {1, 2})}); });
  check_error([&] { ImportanceMatrix::load(p); }, {"x.gguf", "entry 'a'", "no .counts"});
  make("imatrix", [&](GgufWriter& w) { write_all(w, {f32_tensor(w, "a.in_sum2", {2, 3}, {1, 2, 3, 4, 5, 6}), f32_tensor(w, "a.counts", {1, 2}, {1, 1})}); });
  check_error([&] { ImportanceMatrix::load(p); }, {"x.gguf", "entry 'a'", "2 counts for 3 matrices"});
  make("imatrix", [&](GgufWriter& w) { write_all(w, {f32_tensor(w, "a.in_sum2", {2, 1}, {1, -2}), f32_tensor(w, "a.counts", {1, 1}, {1})}); });
  check_error([&] { ImportanceMatrix::load(p); }, {"x.gguf", "entry 'a'", "sum 1"});
  make("imatrix", [&](GgufWriter& w) { write_all(w, {f32_tensor(w, "a.in_sum2", {2, 1}, {1, 2}), f32_tensor(w, "a.counts", {1, 1}, {NAN})}); });
  check_error([&] { ImportanceMatrix::load(p); }, {"x.gguf", "entry 'a'", "count 0"});
  make("imatrix", [&](GgufWriter& w) { write_all(w, {}); });
  check_error([&] { ImportanceMatrix::load(p); }, {"x.gguf", "no importance entries"});
  {
    GgufWriter w(p);
    w.add("general.type", "imatrix");
    w.add_tensor("a.in_sum2", GgmlType::F16, {2, 1});
    w.add_tensor("a.counts", GgmlType::F32, {1, 1});
    const uint16_t h[2] = {0x3c00, 0x3c00};
    const float one = 1;
    w.write("a.in_sum2", h, 4);
    w.write("a.counts", &one, 4);
    w.finish();
  }
  check_error([&] { ImportanceMatrix::load(p); }, {"x.gguf", "entry 'a'", "expected f32"});
  // A truncated GGUF file: GgufFile's own one-line error names it.
  make("imatrix", [&](GgufWriter& w) { write_all(w, {f32_tensor(w, "a.in_sum2", {2, 1}, {1, 2}), f32_tensor(w, "a.counts", {1, 1}, {1})}); });
  const std::string whole = hearth::testing::slurp(p);
  write(dir.path / "cut.gguf", whole.substr(0, whole.size() - 40));
  check_error([&] { ImportanceMatrix::load(dir.path / "cut.gguf"); }, {"cut.gguf"});
  // The complete one loads.
  CHECK(ImportanceMatrix::load(p).weights("a", 0, 2)[1] == 2.0f);
}

}  // namespace engine_imatrix_suite

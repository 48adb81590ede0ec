// GGUF tensors in the formats llama.cpp's quantizer adds beside the K-quants (Q4_1, Q5_0,
// Q5_1 and IQ4_NL for rows that are not whole super-blocks, IQ4_XS as a preset): written
// and read back, read from a file assembled byte by byte, and tiny-v32 exported in each
// of them running exactly as the same model repacked to that format at load time.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "engine/forward.h"
#include "engine/gguf.h"
#include "engine/gguf_export.h"
#include "engine/quantize.h"
#include "quant/block_formats.h"
#include "support/golden.h"
#include "support/scratch.h"

namespace engine_gguf_formats_suite {

using namespace hearth;
namespace fs = std::filesystem;
using hearth::testing::golden_cases;
using hearth::testing::golden_logits;
using hearth::testing::GoldenCase;
using hearth::testing::kGoldenDir;
using hearth::testing::TempDir;

namespace {

struct Format {
  GgmlType type;
  DType dtype;
  uint32_t id;                  // ggml's type id, as written in the file
  int64_t block_elems, block_bytes;  // ggml's block_q4_1 ... block_iq4_xs
};

const Format kFormats[] = {
    {GgmlType::Q4_1, DType::Q4_1, 3, 32, 20},     {GgmlType::Q5_0, DType::Q5_0, 6, 32, 22},
    {GgmlType::Q5_1, DType::Q5_1, 7, 32, 24},     {GgmlType::IQ4_NL, DType::IQ4_NL, 20, 32, 18},
    {GgmlType::IQ4_XS, DType::IQ4_XS, 23, 256, 136},
};

std::vector<float> wave(int64_t n, float scale) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = scale * std::sin(0.29f * float(i) + 0.3f) + 0.02f * float(i % 5);
  return v;
}

}  // namespace

TEST_CASE("gguf formats: tensors of each new format round trip through the writer and the reader") {
  TempDir tmp("hearth-gguf-formats");
  const fs::path p = tmp.path / "formats.gguf";
  const int64_t rows = 3, cols = 512;
  const std::vector<float> src = wave(rows * cols, 1.5f);
  std::vector<std::vector<uint8_t>> bytes;
  {
    GgufWriter w(p);
    w.add("general.architecture", "deepseek2");
    for (const Format& f : kFormats) {
      const BlockFormat& bf = block_format(f.type);
      std::vector<uint8_t> b(size_t(rows * bf.row_bytes(cols)));
      for (int64_t r = 0; r < rows; ++r)
        bf.quantize_row(&src[size_t(r * cols)], &b[size_t(r * bf.row_bytes(cols))], cols, nullptr);
      CHECK(w.add_tensor("t." + std::string(bf.name), f.type, {cols, rows}) == b.size());
      bytes.push_back(std::move(b));
    }
    for (size_t i = 0; i < std::size(kFormats); ++i)
      w.write("t." + std::string(block_format(kFormats[i].type).name), bytes[i].data(), bytes[i].size());
    w.finish();
  }
  const GgufFile file(p);
  REQUIRE(file.tensors().size() == std::size(kFormats));
  std::vector<float> got(static_cast<size_t>(cols));
  for (size_t i = 0; i < std::size(kFormats); ++i) {
    const Format& f = kFormats[i];
    const GgufTensor& t = file.tensors()[i];
    CAPTURE(t.name);
    CHECK(t.type() == f.type);
    CHECK(t.format->ggml_id() == f.id);
    CHECK(t.nbytes == uint64_t(rows * cols / f.block_elems * f.block_bytes));
    CHECK(std::memcmp(t.data, bytes[i].data(), bytes[i].size()) == 0);
    // The mapped rows decode close to the source values (4 to 5 bits: a few percent of
    // the range).
    const int64_t rb = t.format->row_bytes(cols);
    double worst = 0;
    for (int64_t r = 0; r < rows; ++r) {
      t.format->dequantize_row(static_cast<const uint8_t*>(t.data) + r * rb, got.data(), cols);
      for (int64_t c = 0; c < cols; ++c) worst = std::max(worst, std::fabs(double(got[size_t(c)]) - src[size_t(r * cols + c)]));
    }
    CHECK(worst < 0.25);
  }
}

TEST_CASE("gguf formats: a hand-assembled file with type ids 3 6 7 20 and 23 reads with ggml's block sizes") {
  // Header, no metadata, one tensor per format with ne [256, 2], data at 32-byte
  // alignment: assembled here without the writer.
  std::vector<uint8_t> out;
  auto put = [&](const void* p, size_t n) { out.insert(out.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n); };
  auto u32 = [&](uint32_t v) { put(&v, 4); };
  auto u64 = [&](uint64_t v) { put(&v, 8); };
  put("GGUF", 4);
  u32(3);
  u64(std::size(kFormats));
  u64(0);
  uint64_t offset = 0;
  std::vector<uint64_t> sizes;
  for (const Format& f : kFormats) {
    const std::string name = "w" + std::to_string(f.id);
    u64(name.size());
    put(name.data(), name.size());
    u32(2);
    u64(256);
    u64(2);
    u32(f.id);
    u64(offset);
    const uint64_t size = uint64_t(2 * 256 / f.block_elems * f.block_bytes);
    sizes.push_back(size);
    offset += (size + 31) / 32 * 32;
  }
  while (out.size() % 32) out.push_back(0);
  const size_t data_start = out.size();
  out.resize(data_start + offset, 0);
  // Block 0 of each tensor: a first f16 field of 1.0 and every other byte 0x11 (level
  // indices 1, fifth bits 0x11111111, m = f16 0x1111, IQ4_XS scales 0x11 and 0x1111).
  uint64_t pos = 0;
  for (size_t i = 0; i < std::size(kFormats); ++i) {
    uint8_t* blk = out.data() + data_start + pos;
    std::memset(blk, 0x11, size_t(kFormats[i].block_bytes));
    blk[0] = 0x00;
    blk[1] = 0x3C;  // d = 1
    pos += (sizes[i] + 31) / 32 * 32;
  }
  TempDir tmp("hearth-gguf-formats");
  const fs::path p = tmp.path / "hand.gguf";
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(out.data()), std::streamsize(out.size()));

  const GgufFile file(p);
  REQUIRE(file.tensors().size() == std::size(kFormats));
  // Expected first values of block 0, from the layouts: byte 0x11 holds index / nibble 1
  // for values 0 and 16.
  //   Q4_1: d = 1, m = f16 0x1111 (a tiny positive number): 1 * 1 + m.
  //   Q5_0: qh = 0x11111111: bit 0 set -> level 1 + 16 - 16 = 1; bit 1 clear for value 1.
  //   Q5_1: m = f16 0x1111, qh bit 0 set: 17 + m.
  //   IQ4_NL: index 1 -> -104.
  //   IQ4_XS: scale of sub-block 0: low nibble 1 (scales_l[0] = 0x11), top bits 01
  //   (scales_h = 0x1111) -> 17 - 32 = -15; index 1 -> -15 * -104 = 1560.
  const double m = std::ldexp(1.0 + 0x111 / 1024.0, 4 - 15);  // f16 0x1111: exponent 4, mantissa 0x111
  const double want[] = {1 + m, 1.0, 17 + m, -104.0, 1560.0};
  for (size_t i = 0; i < std::size(kFormats); ++i) {
    const GgufTensor& t = file.tensors()[i];
    CAPTURE(t.name);
    CHECK(t.type() == kFormats[i].type);
    CHECK(t.dims == std::vector<int64_t>{256, 2});
    CHECK(t.nbytes == sizes[i]);
    std::vector<float> y(256);
    t.format->dequantize_row(t.data, y.data(), 256);
    CHECK(double(y[0]) == doctest::Approx(want[i]).epsilon(1e-6));
  }
}

namespace {

// tiny-v32 exported with the linear weights in `f` runs exactly as --repack to `f`: both
// quantize the same decoded rows with the same quantizer, and fall back the same way
// (IQ4_XS: Q8_0 for rows that are not whole super-blocks); the embeddings stay BF16 (as
// stored, what --repack keeps) and kv_b is written whole (what --repack converts), so the
// two models hold the same weights and give the same logits.
void check_export_matches_repack(const Format& f) {
  TempDir tmp("hearth-gguf-formats");
  const std::string name(dtype_name(f.dtype));
  QuantizeOptions o;
  o.input = kGoldenDir;
  o.output = tmp.path / (name + ".gguf");
  o.type_for = [&](const GgufExportTensor& t) {
    return t.name == "token_embd.weight" ? DType::BF16 : default_tensor_type(t, f.dtype);
  };
  o.threads = 2;
  o.split_kv_b = false;
  o.name = "tiny";
  quantize_model(o);
  {
    const GgufFile file(o.output);
    int64_t of_type = 0;
    for (const GgufTensor& t : file.tensors()) of_type += t.type() == f.type;
    CHECK(of_type > 0);
    // general.file_type names the type holding most bytes: in tiny-v32 most rows are
    // not whole IQ4_XS super-blocks (96, 128, 192 values), so there Q8_0.
    const DType main = f.block_elems == 256 ? DType::Q8_0 : f.dtype;
    CHECK(file.get_u32("general.file_type") == llama_file_type(main));
  }
  const Model from_gguf = Model::load(o.output.string());
  ModelLoadOptions ro;
  ro.repack = f.dtype;
  ro.threads = 2;
  const Model repacked = Model::load(kGoldenDir, ro);
  CHECK(from_gguf.layers[0].attn.q_a.dtype == f.dtype);  // rows of 256: every format fits
  CHECK(repacked.layers[0].attn.q_a.dtype == f.dtype);
  const auto a = golden_logits(from_gguf), b = golden_logits(repacked);
  bool finite = true;
  for (const auto& v : a)
    for (float x : v) finite = finite && std::isfinite(x);
  CHECK(finite);
  CHECK(a == b);
}

}  // namespace

TEST_CASE("gguf formats: tiny-v32 exported as Q4_1 runs exactly as --repack q4_1") {
  check_export_matches_repack(kFormats[0]);
}
TEST_CASE("gguf formats: tiny-v32 exported as Q5_0 runs exactly as --repack q5_0") {
  check_export_matches_repack(kFormats[1]);
}
TEST_CASE("gguf formats: tiny-v32 exported as Q5_1 runs exactly as --repack q5_1") {
  check_export_matches_repack(kFormats[2]);
}
TEST_CASE("gguf formats: tiny-v32 exported as IQ4_NL runs exactly as --repack iq4_nl") {
  check_export_matches_repack(kFormats[3]);
}
TEST_CASE("gguf formats: tiny-v32 exported as IQ4_XS runs exactly as --repack iq4_xs") {
  check_export_matches_repack(kFormats[4]);
}

TEST_CASE("gguf formats: attn_k_b in Q5_0 and attn_v_b in Q5_1 rebuild kv_b from their decoded rows") {
  // What llama.cpp's Q4_K_M / Q5_K_M write for DeepSeek: k_b (rows of qk_nope = 64) and
  // v_b in the 32-value formats. The model's kv_b must hold exactly their decoded values.
  TempDir tmp("hearth-gguf-formats");
  QuantizeOptions o;
  o.input = kGoldenDir;
  o.output = tmp.path / "kb.gguf";
  o.type_for = [](const GgufExportTensor& t) {
    if (t.name.find("attn_k_b") != std::string::npos) return DType::Q5_0;
    if (t.name.find("attn_v_b") != std::string::npos) return DType::Q5_1;
    return DType::F32;
  };
  o.threads = 2;
  o.name = "tiny";
  quantize_model(o);
  const GgufFile file(o.output);
  const Model m = Model::load(o.output.string());
  const ModelConfig& c = m.config();
  const int64_t nh = c.num_attention_heads, nope = c.qk_nope_head_dim, v = c.v_head_dim, kvl = c.kv_lora_rank;
  for (int64_t L : {0, 2}) {
    CAPTURE(L);
    const std::string blk = "blk." + std::to_string(L) + ".";
    const GgufTensor& kb = file.tensor(blk + "attn_k_b.weight");
    const GgufTensor& vb = file.tensor(blk + "attn_v_b.weight");
    REQUIRE(kb.type() == GgmlType::Q5_0);
    REQUIRE(vb.type() == GgmlType::Q5_1);
    const WeightMatrix& kv_b = m.layers[size_t(L)].attn.kv_b;
    REQUIRE(kv_b.rows == nh * (nope + v));
    REQUIRE(kv_b.cols == kvl);
    std::vector<float> row(static_cast<size_t>(kvl)), dec(static_cast<size_t>(std::max(nope, kvl)));
    int64_t mismatches = 0;
    for (int64_t h = 0; h < nh; ++h) {
      // k_b row (h, c) holds kv_b[h*(nope+v) + i][c], i < nope.
      for (int64_t col = 0; col < kvl; ++col) {
        kb.format->dequantize_row(static_cast<const uint8_t*>(kb.data) + (h * kvl + col) * kb.format->row_bytes(nope),
                                  dec.data(), nope);
        for (int64_t i = 0; i < nope; ++i) {
          dequantize_row(kv_b, h * (nope + v) + i, col, col + 1, row.data());
          mismatches += row[0] != dec[size_t(i)];
        }
      }
      // v_b row (h, j) is kv_b row h*(nope+v) + nope + j.
      for (int64_t j = 0; j < v; ++j) {
        vb.format->dequantize_row(static_cast<const uint8_t*>(vb.data) + (h * v + j) * vb.format->row_bytes(kvl), dec.data(),
                                  kvl);
        dequantize_row(kv_b, h * (nope + v) + nope + j, 0, kvl, row.data());
        for (int64_t col = 0; col < kvl; ++col) mismatches += row[size_t(col)] != dec[size_t(col)];
      }
    }
    CHECK(mismatches == 0);
  }
  // And it runs.
  const auto logits = golden_logits(m);
  bool finite = true;
  for (const auto& l : logits)
    for (float x : l) finite = finite && std::isfinite(x);
  CHECK(finite);
}

}  // namespace engine_gguf_formats_suite

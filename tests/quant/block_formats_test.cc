// ggml block formats (quant/block_formats.h). Every expectation is computed here from
// the format definitions, reading blocks as raw bytes at the documented offsets (so the
// library's structs are checked too), never by calling the library.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "quant/block_formats.h"

namespace quant_block_formats_suite {

using namespace hearth;

namespace {

// ---- reading raw blocks ----------------------------------------------------------

// IEEE binary16 from its definition (finite codes only; exact in float).
float half(uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  const double mag = e == 0 ? m * std::ldexp(1.0, -24) : (1024 + m) * std::ldexp(1.0, e - 25);
  return float(s ? -mag : mag);
}
float half_at(const uint8_t* p) { return half(uint16_t(p[0] | (p[1] << 8))); }
float float_at(const uint8_t* p) {
  float f;
  std::memcpy(&f, p, 4);
  return f;
}

// Reference decoders, one block each, written from ggml's definitions: they walk the
// bytes in ggml's loop order and do the float arithmetic in ggml's order, so their
// output is ggml's, bit for bit.
void ref_q8_0(const uint8_t* b, float* y) {
  const float d = half_at(b);
  for (int i = 0; i < 32; ++i) y[i] = float(int8_t(b[2 + i])) * d;
}

void ref_q4_0(const uint8_t* b, float* y) {
  const float d = half_at(b);
  for (int j = 0; j < 16; ++j) {
    y[j] = float((b[2 + j] & 15) - 8) * d;
    y[j + 16] = float((b[2 + j] >> 4) - 8) * d;
  }
}

uint32_t u32_at(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }

// Q4_1: f16 d at 0, f16 m at 2, nibbles at 4.
void ref_q4_1(const uint8_t* b, float* y) {
  const float d = half_at(b), m = half_at(b + 2);
  for (int j = 0; j < 16; ++j) {
    y[j] = float(b[4 + j] & 15) * d + m;
    y[j + 16] = float(b[4 + j] >> 4) * d + m;
  }
}

// Q5_0: f16 d at 0, the 32 fifth bits at 2 (little-endian word), nibbles at 6.
void ref_q5_0(const uint8_t* b, float* y) {
  const float d = half_at(b);
  const uint32_t qh = u32_at(b + 2);
  for (int j = 0; j < 16; ++j) {
    const int lo = (b[6 + j] & 15) | int(((qh >> j) & 1) << 4);
    const int hi = (b[6 + j] >> 4) | int(((qh >> (j + 16)) & 1) << 4);
    y[j] = float(lo - 16) * d;
    y[j + 16] = float(hi - 16) * d;
  }
}

// Q5_1: f16 d at 0, f16 m at 2, fifth bits at 4, nibbles at 8.
void ref_q5_1(const uint8_t* b, float* y) {
  const float d = half_at(b), m = half_at(b + 2);
  const uint32_t qh = u32_at(b + 4);
  for (int j = 0; j < 16; ++j) {
    const int lo = (b[8 + j] & 15) | int(((qh >> j) & 1) << 4);
    const int hi = (b[8 + j] >> 4) | int(((qh >> (j + 16)) & 1) << 4);
    y[j] = float(lo) * d + m;
    y[j + 16] = float(hi) * d + m;
  }
}

// ggml's kvalues_iq4nl, written out here rather than taken from the library.
const int kIq4Levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// IQ4_NL: f16 d at 0, level indices (nibbles) at 2.
void ref_iq4_nl(const uint8_t* b, float* y) {
  const float d = half_at(b);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(kIq4Levels[b[2 + j] & 15]);
    y[j + 16] = d * float(kIq4Levels[b[2 + j] >> 4]);
  }
}

// IQ4_XS: f16 d at 0, u16 scales_h at 2, scales_l[4] at 4, 128 bytes of nibbles at 8.
void ref_iq4_xs(const uint8_t* b, float* y) {
  const float d = half_at(b);
  const int sh = b[2] | (b[3] << 8);
  const uint8_t* qs = b + 8;
  for (int ib = 0; ib < 8; ++ib, y += 32, qs += 16) {
    const int ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 15) | (((sh >> (2 * ib)) & 3) << 4);
    const float dl = d * float(ls - 32);
    for (int j = 0; j < 16; ++j) {
      y[j] = dl * float(kIq4Levels[qs[j] & 15]);
      y[j + 16] = dl * float(kIq4Levels[qs[j] >> 4]);
    }
  }
}

void ref_q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* q = b + 16;
  const float d = half_at(b + 80), dmin = half_at(b + 82);
  int is = 0;
  for (int n = 0; n < 256; n += 128, q += 32) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int half16 = 0; half16 < 2; ++half16) {
        const uint8_t sc = scales[is++];
        const float dl = d * float(sc & 15), ml = dmin * float(sc >> 4);
        for (int l = 0; l < 16; ++l) *y++ = dl * float((q[l + 16 * half16] >> shift) & 3) - ml;
      }
    }
  }
}

int q3_scale_ref(const uint8_t* s, int j) {
  int low = j < 8 ? s[j] & 15 : s[j - 8] >> 4;
  int high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (low | high << 4) - 32;
}

void ref_q3_k(const uint8_t* b, float* y) {
  const uint8_t* hm = b;
  const uint8_t* q = b + 32;
  const uint8_t* s = b + 96;
  const float d = half_at(b + 108);
  int is = 0, bit = 0;
  for (int n = 0; n < 256; n += 128, q += 32) {
    for (int shift = 0; shift < 8; shift += 2, ++bit) {
      for (int half16 = 0; half16 < 2; ++half16) {
        const float dl = d * float(q3_scale_ref(s, is++));
        for (int l = 16 * half16; l < 16 * half16 + 16; ++l) {
          const int low = (q[l] >> shift) & 3;
          *y++ = dl * float(low - (((hm[l] >> bit) & 1) ? 0 : 4));
        }
      }
    }
  }
}

void scale_min_ref(const uint8_t* s, int j, int& sc, int& m) {
  if (j < 4) {
    sc = s[j] & 63;
    m = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
    m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Q4_K (qh == nullptr) and Q5_K.
void ref_q45_k(const uint8_t* b, const uint8_t* qh, const uint8_t* q, float* y) {
  const float d = half_at(b), dmin = half_at(b + 2);
  const uint8_t* s = b + 4;
  for (int c = 0; c < 4; ++c, q += 32) {
    int sc1, m1, sc2, m2;
    scale_min_ref(s, 2 * c, sc1, m1);
    scale_min_ref(s, 2 * c + 1, sc2, m2);
    const float d1 = d * float(sc1), o1 = dmin * float(m1);
    const float d2 = d * float(sc2), o2 = dmin * float(m2);
    for (int l = 0; l < 32; ++l) {
      const int hi = qh ? ((qh[l] >> (2 * c)) & 1) * 16 : 0;
      *y++ = d1 * float((q[l] & 15) + hi) - o1;
    }
    for (int l = 0; l < 32; ++l) {
      const int hi = qh ? ((qh[l] >> (2 * c + 1)) & 1) * 16 : 0;
      *y++ = d2 * float((q[l] >> 4) + hi) - o2;
    }
  }
}
void ref_q4_k(const uint8_t* b, float* y) { ref_q45_k(b, nullptr, b + 16, y); }
void ref_q5_k(const uint8_t* b, float* y) { ref_q45_k(b, b + 16, b + 48, y); }

void ref_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = half_at(b + 208);
  for (int n = 0; n < 256; n += 128, ql += 64, qh += 32, sc += 8, y += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * float(sc[is]) * float(q1);
      y[l + 32] = d * float(sc[is + 2]) * float(q2);
      y[l + 64] = d * float(sc[is + 4]) * float(q3);
      y[l + 96] = d * float(sc[is + 6]) * float(q4);
    }
  }
}

void ref_q8_k(const uint8_t* b, float* y) {
  const float d = float_at(b);
  for (int i = 0; i < 256; ++i) y[i] = d * float(int8_t(b[4 + i]));
}

struct RefFormat {
  GgmlType type;
  int elems, bytes;
  void (*decode)(const uint8_t*, float*);
  std::vector<int> half_offsets;  // f16 fields (kept finite when filling random bytes)
  int float_offset = -1;          // Q8_K's float d
};

const std::vector<RefFormat>& ref_formats() {
  static const std::vector<RefFormat> v = {
      {GgmlType::Q4_0, 32, 18, ref_q4_0, {0}},
      {GgmlType::Q4_1, 32, 20, ref_q4_1, {0, 2}},
      {GgmlType::Q5_0, 32, 22, ref_q5_0, {0}},
      {GgmlType::Q5_1, 32, 24, ref_q5_1, {0, 2}},
      {GgmlType::IQ4_NL, 32, 18, ref_iq4_nl, {0}},
      {GgmlType::IQ4_XS, 256, 136, ref_iq4_xs, {0}},
      {GgmlType::Q8_0, 32, 34, ref_q8_0, {0}},
      {GgmlType::Q2_K, 256, 84, ref_q2_k, {80, 82}},
      {GgmlType::Q3_K, 256, 110, ref_q3_k, {108}},
      {GgmlType::Q4_K, 256, 144, ref_q4_k, {0, 2}},
      {GgmlType::Q5_K, 256, 176, ref_q5_k, {0, 2}},
      {GgmlType::Q6_K, 256, 210, ref_q6_k, {208}},
      {GgmlType::Q8_K, 256, 292, ref_q8_k, {}, 0},
  };
  return v;
}

std::vector<float> ref_decode(const RefFormat& f, const std::vector<uint8_t>& bytes) {
  const size_t nb = bytes.size() / size_t(f.bytes);
  std::vector<float> y(nb * size_t(f.elems));
  for (size_t i = 0; i < nb; ++i) f.decode(bytes.data() + i * f.bytes, y.data() + i * f.elems);
  return y;
}

std::vector<float> dequantize(const BlockFormat& f, const void* blocks, int64_t n) {
  std::vector<float> y(size_t(n), -12345.0f);
  f.dequantize_row(blocks, y.data(), n);
  return y;
}

std::vector<uint8_t> quantize(const BlockFormat& f, const std::vector<float>& x,
                              const float* importance = nullptr) {
  std::vector<uint8_t> b(size_t(f.row_bytes(int64_t(x.size()))), 0xAA);
  f.quantize_row(x.data(), b.data(), int64_t(x.size()), importance);
  return b;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

void put_half(uint8_t* p, uint16_t h) {
  p[0] = uint8_t(h & 0xff);
  p[1] = uint8_t(h >> 8);
}

std::vector<float> gaussian(size_t n, uint32_t seed, double sigma = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> dist(0.0, sigma);
  std::vector<float> x(n);
  for (float& v : x) v = float(dist(rng));
  return x;
}

double rel_rmse(const std::vector<float>& x, const std::vector<float>& y) {
  double e = 0, s = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    e += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    s += double(x[i]) * x[i];
  }
  return std::sqrt(e / s);
}

// The quantized weight formats (everything a model tensor may be stored as except the
// plain floats).
const GgmlType kQuantized[] = {GgmlType::Q4_0, GgmlType::Q4_1,   GgmlType::Q5_0, GgmlType::Q5_1,
                               GgmlType::Q8_0, GgmlType::IQ4_NL, GgmlType::Q2_K, GgmlType::Q3_K,
                               GgmlType::Q4_K, GgmlType::Q5_K,   GgmlType::Q6_K, GgmlType::IQ4_XS};

}  // namespace

// ---- layout and lookup -----------------------------------------------------------

TEST_CASE("block formats: struct sizes and field offsets match ggml") {
  CHECK(sizeof(BlockQ8_0) == 34);
  CHECK(offsetof(BlockQ8_0, qs) == 2);
  CHECK(sizeof(BlockQ4_0) == 18);
  CHECK(offsetof(BlockQ4_0, qs) == 2);
  CHECK(sizeof(BlockQ4_1) == 20);
  CHECK(offsetof(BlockQ4_1, m) == 2);
  CHECK(offsetof(BlockQ4_1, qs) == 4);
  CHECK(sizeof(BlockQ5_0) == 22);
  CHECK(offsetof(BlockQ5_0, qh) == 2);
  CHECK(offsetof(BlockQ5_0, qs) == 6);
  CHECK(sizeof(BlockQ5_1) == 24);
  CHECK(offsetof(BlockQ5_1, m) == 2);
  CHECK(offsetof(BlockQ5_1, qh) == 4);
  CHECK(offsetof(BlockQ5_1, qs) == 8);
  CHECK(sizeof(BlockIQ4_NL) == 18);
  CHECK(offsetof(BlockIQ4_NL, qs) == 2);
  CHECK(sizeof(BlockIQ4_XS) == 136);
  CHECK(offsetof(BlockIQ4_XS, scales_h) == 2);
  CHECK(offsetof(BlockIQ4_XS, scales_l) == 4);
  CHECK(offsetof(BlockIQ4_XS, qs) == 8);
  for (int i = 0; i < 16; ++i) CHECK(int(kIq4nlValues[i]) == kIq4Levels[i]);
  CHECK(sizeof(BlockQ2_K) == 84);
  CHECK(offsetof(BlockQ2_K, qs) == 16);
  CHECK(offsetof(BlockQ2_K, d) == 80);
  CHECK(offsetof(BlockQ2_K, dmin) == 82);
  CHECK(sizeof(BlockQ3_K) == 110);
  CHECK(offsetof(BlockQ3_K, qs) == 32);
  CHECK(offsetof(BlockQ3_K, scales) == 96);
  CHECK(offsetof(BlockQ3_K, d) == 108);
  CHECK(sizeof(BlockQ4_K) == 144);
  CHECK(offsetof(BlockQ4_K, dmin) == 2);
  CHECK(offsetof(BlockQ4_K, scales) == 4);
  CHECK(offsetof(BlockQ4_K, qs) == 16);
  CHECK(sizeof(BlockQ5_K) == 176);
  CHECK(offsetof(BlockQ5_K, qh) == 16);
  CHECK(offsetof(BlockQ5_K, qs) == 48);
  CHECK(sizeof(BlockQ6_K) == 210);
  CHECK(offsetof(BlockQ6_K, qh) == 128);
  CHECK(offsetof(BlockQ6_K, scales) == 192);
  CHECK(offsetof(BlockQ6_K, d) == 208);
  CHECK(sizeof(BlockQ8_K) == 292);
  CHECK(offsetof(BlockQ8_K, qs) == 4);
  CHECK(offsetof(BlockQ8_K, bsums) == 260);
}

TEST_CASE("block formats: lookup by name and by ggml id") {
  struct Expect {
    const char* name;
    uint32_t id;
    int64_t elems, bytes;
    GgmlType dot;
  };
  const Expect table[] = {
      {"f32", 0, 1, 4, GgmlType::F32},         {"f16", 1, 1, 2, GgmlType::F16},
      {"q4_0", 2, 32, 18, GgmlType::Q8_0},     {"q4_1", 3, 32, 20, GgmlType::Q8_0},
      {"q5_0", 6, 32, 22, GgmlType::Q8_0},     {"q5_1", 7, 32, 24, GgmlType::Q8_0},
      {"q8_0", 8, 32, 34, GgmlType::Q8_0},
      {"q2_K", 10, 256, 84, GgmlType::Q8_K},   {"q3_K", 11, 256, 110, GgmlType::Q8_K},
      {"q4_K", 12, 256, 144, GgmlType::Q8_K},  {"q5_K", 13, 256, 176, GgmlType::Q8_K},
      {"q6_K", 14, 256, 210, GgmlType::Q8_K},  {"q8_K", 15, 256, 292, GgmlType::Q8_K},
      {"iq4_nl", 20, 32, 18, GgmlType::Q8_0},  {"iq4_xs", 23, 256, 136, GgmlType::Q8_K},
      {"bf16", 30, 1, 2, GgmlType::BF16},
  };
  CHECK(block_formats().size() == std::size(table));
  for (const Expect& e : table) {
    CAPTURE(e.name);
    const BlockFormat* by_name = find_block_format(e.name);
    const BlockFormat* by_id = find_block_format_by_id(e.id);
    REQUIRE(by_name != nullptr);
    CHECK(by_name == by_id);
    CHECK(by_name == &block_format(GgmlType(e.id)));
    CHECK(by_name->name == e.name);
    CHECK(by_name->ggml_id() == e.id);
    CHECK(by_name->block_elems == e.elems);
    CHECK(by_name->block_bytes == e.bytes);
    CHECK(by_name->vec_dot_type == e.dot);
    CHECK(bool(by_name->dequantize_row));
    CHECK(bool(by_name->quantize_row));
    CHECK(bool(by_name->vec_dot));
  }
  CHECK(find_block_format("Q4_K") == find_block_format("q4_K"));
  CHECK(find_block_format("BF16") == find_block_format("bf16"));
  CHECK(find_block_format("q4_k")->type == GgmlType::Q4_K);
  CHECK(find_block_format("IQ4_NL")->type == GgmlType::IQ4_NL);
  CHECK(find_block_format("iq2_xxs") == nullptr);
  CHECK(find_block_format("") == nullptr);
  CHECK(find_block_format("q4_K ") == nullptr);
  CHECK(find_block_format_by_id(4) == nullptr);   // q4_2: removed from ggml
  CHECK(find_block_format_by_id(9) == nullptr);   // q8_1: not supported
  CHECK(find_block_format_by_id(16) == nullptr);  // iq2_xxs
  CHECK(find_block_format_by_id(1000) == nullptr);
}

TEST_CASE("block formats: row sizes and rows that are not whole blocks") {
  CHECK(row_bytes(GgmlType::Q4_K, 7168) == 28 * 144);
  CHECK(row_bytes(GgmlType::Q8_0, 64) == 68);
  CHECK(row_bytes(GgmlType::Q6_K, 0) == 0);
  CHECK(row_bytes(GgmlType::F16, 3) == 6);
  CHECK(row_bytes(GgmlType::BF16, 5) == 10);
  CHECK(row_bytes(GgmlType::F32, 5) == 20);
  CHECK_THROWS_AS(row_bytes(GgmlType::Q4_K, 300), std::invalid_argument);
  CHECK_THROWS_AS(row_bytes(GgmlType::Q4_0, 33), std::invalid_argument);
  CHECK_THROWS_AS(row_bytes(GgmlType::Q8_K, -256), std::invalid_argument);

  std::vector<uint8_t> blocks(4096, 0);
  std::vector<float> x(512, 1.0f), y(512);
  for (const BlockFormat& f : block_formats()) {
    if (f.block_elems == 1) continue;
    CAPTURE(f.name);
    const int64_t bad = f.block_elems + 1;
    CHECK_THROWS_AS(f.row_bytes(bad), std::invalid_argument);
    CHECK_THROWS_AS(f.dequantize_row(blocks.data(), y.data(), bad), std::invalid_argument);
    CHECK_THROWS_AS(f.quantize_row(x.data(), blocks.data(), bad, nullptr), std::invalid_argument);
    CHECK_THROWS_AS(f.vec_dot(blocks.data(), blocks.data(), bad), std::invalid_argument);
  }
  std::vector<BlockQ8_0> q8(2);
  CHECK_THROWS_AS(quantize_row_q8_0(x.data(), q8.data(), 48), std::invalid_argument);
  std::vector<BlockQ8_K> q8k(2);
  CHECK_THROWS_AS(quantize_row_q8_k(x.data(), q8k.data(), 128), std::invalid_argument);
}

// ---- known answers: hand-built blocks ------------------------------------------------

TEST_CASE("block formats: q8_0 known answer") {
  uint8_t b[34];
  put_half(b, 0x3400);  // 0.25
  for (int i = 0; i < 32; ++i) b[2 + i] = uint8_t(int8_t(8 * i - 128));
  const auto y = dequantize(block_format(GgmlType::Q8_0), b, 32);
  for (int i = 0; i < 32; ++i) CHECK(y[i] == 0.25f * float(8 * i - 128));
  CHECK(y[0] == -32.0f);
  CHECK(y[31] == 30.0f);
}

TEST_CASE("block formats: q4_0 known answer") {
  uint8_t b[18];
  put_half(b, 0x3800);  // 0.5
  for (int j = 0; j < 16; ++j) b[2 + j] = uint8_t(j | ((15 - j) << 4));
  const auto y = dequantize(block_format(GgmlType::Q4_0), b, 32);
  for (int j = 0; j < 16; ++j) {
    CHECK(y[j] == 0.5f * float(j - 8));        // low nibbles: values 0..15
    CHECK(y[j + 16] == 0.5f * float(7 - j));  // high nibbles: values 16..31
  }
  CHECK(y[0] == -4.0f);
  CHECK(y[16] == 3.5f);
}

TEST_CASE("block formats: q4_1 known answer") {
  uint8_t b[20];
  put_half(b, 0x3800);      // d = 0.5
  put_half(b + 2, 0xC000);  // m = -2
  for (int j = 0; j < 16; ++j) b[4 + j] = uint8_t(j | ((15 - j) << 4));
  const auto y = dequantize(block_format(GgmlType::Q4_1), b, 32);
  for (int j = 0; j < 16; ++j) {
    CHECK(y[j] == 0.5f * float(j) - 2.0f);         // low nibbles: values 0..15
    CHECK(y[j + 16] == 0.5f * float(15 - j) - 2.0f);  // high nibbles: values 16..31
  }
  CHECK(y[0] == -2.0f);
  CHECK(y[16] == 5.5f);
}

TEST_CASE("block formats: q5_0 known answer") {
  uint8_t b[22];
  put_half(b, 0x3400);  // d = 0.25
  // Fifth bits: qh bytes 0x0F, 0xF0, 0x00, 0xFF set bits 0..3, 12..15 and 24..31.
  const uint8_t qh[4] = {0x0F, 0xF0, 0x00, 0xFF};
  std::memcpy(b + 2, qh, 4);
  for (int j = 0; j < 16; ++j) b[6 + j] = uint8_t(j | (j << 4));  // nibble j, twice
  const auto y = dequantize(block_format(GgmlType::Q5_0), b, 32);
  for (int i = 0; i < 32; ++i) {
    const int nibble = i % 16;
    const bool fifth = i < 4 || (i >= 12 && i < 16) || i >= 24;
    CAPTURE(i);
    CHECK(y[i] == 0.25f * float(nibble + (fifth ? 16 : 0) - 16));
  }
  // By hand: value 0 is level 16 -> 0; value 5 has no fifth bit: 0.25 * (5 - 16); value
  // 16 (high nibble 0, bit 16 clear): 0.25 * -16; value 31 (nibble 15, bit 31): 0.25 * 15.
  CHECK(y[0] == 0.0f);
  CHECK(y[5] == -2.75f);
  CHECK(y[16] == -4.0f);
  CHECK(y[31] == 3.75f);
}

TEST_CASE("block formats: q5_1 known answer") {
  uint8_t b[24];
  put_half(b, 0x3C00);      // d = 1
  put_half(b + 2, 0xB800);  // m = -0.5
  const uint8_t qh[4] = {0xAA, 0x55, 0x01, 0x80};  // bits 1,3,5,7, 8,10,12,14, 16, 31
  std::memcpy(b + 4, qh, 4);
  for (int j = 0; j < 16; ++j) b[8 + j] = uint8_t(j * 29 + 3);
  const auto y = dequantize(block_format(GgmlType::Q5_1), b, 32);
  for (int i = 0; i < 32; ++i) {
    const int byte = uint8_t((i % 16) * 29 + 3);
    const int nibble = i < 16 ? byte & 15 : byte >> 4;
    const bool fifth = (i < 8 && i % 2 == 1) || (i >= 8 && i < 16 && i % 2 == 0) || i == 16 || i == 31;
    CAPTURE(i);
    CHECK(y[i] == float(nibble + (fifth ? 16 : 0)) - 0.5f);
  }
  // By hand: value 1 is the low nibble of 32 (0x20) = 0 plus 16: 15.5; value 16 the high
  // nibble of 3 = 0 plus 16: 15.5; value 31 the high nibble of 15*29+3 = 438 mod 256 =
  // 182 = 0xB6 -> 11, plus 16: 26.5.
  CHECK(y[1] == 15.5f);
  CHECK(y[16] == 15.5f);
  CHECK(y[31] == 26.5f);
}

TEST_CASE("block formats: iq4_nl known answer") {
  uint8_t b[18];
  put_half(b, 0x3800);  // d = 0.5
  for (int j = 0; j < 16; ++j) b[2 + j] = uint8_t(j | ((15 - j) << 4));
  const auto y = dequantize(block_format(GgmlType::IQ4_NL), b, 32);
  const int levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
  for (int j = 0; j < 16; ++j) {
    CHECK(y[j] == 0.5f * float(levels[j]));
    CHECK(y[j + 16] == 0.5f * float(levels[15 - j]));
  }
  CHECK(y[0] == -63.5f);
  CHECK(y[16] == 56.5f);
  CHECK(y[8] == 0.5f);
}

TEST_CASE("block formats: iq4_xs known answer") {
  uint8_t b[136];
  put_half(b, 0x3400);  // d = 0.25
  // Stored scales 0, 1, 31, 32, 33, 63, 17, 48 (minus 32: the signed scales below).
  // Low nibbles 0,1 | 15,0 | 1,15 | 1,0 -> scales_l; top bit pairs 0,0,1,2,2,3,1,3 at
  // bits 2j of scales_h = 0b11'01'11'10'10'01'00'00 = 0xDE90.
  put_half(b + 2, 0xDE90);
  const uint8_t sl[4] = {0x10, 0x0F, 0xF1, 0x01};
  std::memcpy(b + 4, sl, 4);
  const int sc[8] = {-32, -31, -1, 0, 1, 31, -15, 16};
  for (int i = 0; i < 128; ++i) b[8 + i] = uint8_t(i * 37 + 5);
  const int levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
  const auto y = dequantize(block_format(GgmlType::IQ4_XS), b, 256);
  for (int i = 0; i < 256; ++i) {
    // value 32j + t: nibble (t < 16: low, else high) of qs[16j + t % 16].
    const int j = i / 32, t = i % 32;
    const int byte = b[8 + 16 * j + t % 16];
    const int idx = t < 16 ? byte & 15 : byte >> 4;
    CAPTURE(i);
    CHECK(y[i] == 0.25f * float(sc[j]) * float(levels[idx]));
  }
  // Value 0: qs[0] = 5 -> level -35, scale -32: 0.25 * -32 * -35. Value 48 (sub-block 1,
  // high nibble of qs[16] = 16*37+5 = 597 mod 256 = 0x55 -> 5): 0.25 * -31 * -35.
  CHECK(y[0] == 280.0f);
  CHECK(y[48] == 271.25f);
  CHECK(y[96] == 0.0f);  // sub-block 3: scale 0
}

TEST_CASE("block formats: q8_K known answer") {
  uint8_t b[292] = {};
  const float d = -0.5f;
  std::memcpy(b, &d, 4);
  for (int i = 0; i < 256; ++i) b[4 + i] = uint8_t(int8_t(i - 128));
  const auto y = dequantize(block_format(GgmlType::Q8_K), b, 256);
  for (int i = 0; i < 256; ++i) CHECK(y[i] == -0.5f * float(i - 128));
}

TEST_CASE("block formats: q2_K known answer") {
  uint8_t b[84];
  for (int j = 0; j < 16; ++j) b[j] = uint8_t(j | ((15 - j) << 4));  // scale j, min 15 - j
  for (int i = 0; i < 64; ++i) b[16 + i] = uint8_t(i * 71 + 5);
  put_half(b + 80, 0x3800);  // d = 0.5
  put_half(b + 82, 0x3000);  // dmin = 0.125
  const auto y = dequantize(block_format(GgmlType::Q2_K), b, 256);
  for (int i = 0; i < 256; ++i) {
    // value i = 128c + 32g + l: bits 2g of qs[32c + l]; sub-block i / 16.
    const int c = i / 128, g = (i / 32) % 4, l = i % 32, j = i / 16;
    const int q = (uint8_t(b[16 + 32 * c + l]) >> (2 * g)) & 3;
    CAPTURE(i);
    CHECK(y[i] == 0.5f * float(j) * float(q) - 0.125f * float(15 - j));
  }
  // Spot values worked out by hand: value 0 is qs[0] = 5, bits 0..1 = 1, sub-block 0
  // (scale 0, min 15); value 200 = 128 + 64 + 8 is bits 4..5 of qs[40] = 40*71+5 = 2845
  // mod 256 = 29 (0b00011101): 1; sub-block 12: 0.5*12*1 - 0.125*3.
  CHECK(y[0] == -1.875f);
  CHECK(y[200] == 6.0f - 0.375f);
}

TEST_CASE("block formats: q3_K known answer") {
  uint8_t b[110];
  for (int l = 0; l < 32; ++l) b[l] = uint8_t(l * 53 + 1);       // hmask
  for (int i = 0; i < 64; ++i) b[32 + i] = uint8_t(i * 97 + 3);  // qs
  const uint8_t scales[12] = {0x10, 0x32, 0x54, 0x76, 0x98, 0xBA,
                              0xDC, 0xFE, 0xE4, 0x1B, 0x00, 0xFF};
  std::memcpy(b + 96, scales, 12);
  put_half(b + 108, 0x3800);  // 0.5
  // The sixteen scales decoded by hand: low nibbles 0,2,..,14 (bytes 0..7 low) and
  // 1,3,..,15 (bytes 0..7 high); high bit pairs from 0xE4 (0,1,2,3 for scales 0,4,8,12),
  // 0x1B (3,2,1,0 for 1,5,9,13), 0x00 (2,6,10,14), 0xFF (3 for 3,7,11,15); minus 32.
  const int sc[16] = {-32, 18, -28, 22, -8, 10, -20, 30, 1, -13, -27, 23, 25, -21, -19, 31};
  const auto y = dequantize(block_format(GgmlType::Q3_K), b, 256);
  for (int i = 0; i < 256; ++i) {
    const int c = i / 128, g = (i / 32) % 4, l = i % 32;
    const int low = (b[32 + 32 * c + l] >> (2 * g)) & 3;
    const int high = (b[i % 32] >> (i / 32)) & 1;
    const int q = low + 4 * high - 4;  // -4..3
    CAPTURE(i);
    CHECK(y[i] == 0.5f * float(sc[i / 16]) * float(q));
  }
  // Value 0: qs[0] = 3 -> low 3; hmask[0] = 1 -> bit 0 set -> q = 3; scale -32.
  CHECK(y[0] == -48.0f);
}

TEST_CASE("block formats: q4_K known answer") {
  uint8_t b[144];
  put_half(b, 0x3800);      // d = 0.5
  put_half(b + 2, 0x3400);  // dmin = 0.25
  const uint8_t s[12] = {0xC1, 0x02, 0x43, 0x84, 0x05, 0x46, 0x87, 0xC8, 0x21, 0x43, 0x65, 0x87};
  std::memcpy(b + 4, s, 12);
  for (int i = 0; i < 128; ++i) b[16 + i] = uint8_t(i * 7 + 2);
  // Decoded by hand: scales 0..3 and mins 0..3 are the low 6 bits of bytes 0..3 and 4..7;
  // scales/mins 4..7 take their low nibbles from bytes 8..11 (scale low, min high) and
  // their top 2 bits from the top of bytes 0..3 (scales: 3,0,1,2) and 4..7 (mins: 0,1,2,3).
  const int sc[8] = {1, 2, 3, 4, 1 + 48, 3 + 0, 5 + 16, 7 + 32};
  const int mn[8] = {5, 6, 7, 8, 2 + 0, 4 + 16, 6 + 32, 8 + 48};
  const auto y = dequantize(block_format(GgmlType::Q4_K), b, 256);
  for (int i = 0; i < 256; ++i) {
    const int c = i / 64, h = (i / 32) % 2, l = i % 32;
    const int q = (b[16 + 32 * c + l] >> (4 * h)) & 15;
    CAPTURE(i);
    CHECK(y[i] == 0.5f * float(sc[i / 32]) * float(q) - 0.25f * float(mn[i / 32]));
  }
  // Value 160 = 128 + 32: sub-block 5 (scale 3, min 20), high nibble of qs[64] =
  // 64*7+2 = 450 mod 256 = 194 = 0xC2 -> 12: 0.5*3*12 - 0.25*20.
  CHECK(y[160] == 13.0f);
}

TEST_CASE("block formats: q5_K known answer") {
  uint8_t b[176];
  put_half(b, 0x3400);      // d = 0.25
  put_half(b + 2, 0x3C00);  // dmin = 1
  const uint8_t s[12] = {0xC1, 0x02, 0x43, 0x84, 0x05, 0x46, 0x87, 0xC8, 0x21, 0x43, 0x65, 0x87};
  std::memcpy(b + 4, s, 12);
  for (int l = 0; l < 32; ++l) b[16 + l] = uint8_t(l * 37 + 11);  // qh
  for (int i = 0; i < 128; ++i) b[48 + i] = uint8_t(i * 7 + 2);   // qs
  const int sc[8] = {1, 2, 3, 4, 49, 3, 21, 39};
  const int mn[8] = {5, 6, 7, 8, 2, 20, 38, 56};
  const auto y = dequantize(block_format(GgmlType::Q5_K), b, 256);
  for (int i = 0; i < 256; ++i) {
    const int c = i / 64, h = (i / 32) % 2, l = i % 32;
    const int low = (b[48 + 32 * c + l] >> (4 * h)) & 15;
    const int high = (b[16 + l] >> (2 * c + h)) & 1;
    CAPTURE(i);
    CHECK(y[i] == 0.25f * float(sc[i / 32]) * float(low + 16 * high) - float(mn[i / 32]));
  }
  // Value 0: qs[0] = 2 -> 2; qh[0] = 11 = 0b1011, bit 0 set -> 18; 0.25*1*18 - 5.
  CHECK(y[0] == -0.5f);
}

TEST_CASE("block formats: q6_K known answer") {
  uint8_t b[210];
  for (int i = 0; i < 128; ++i) b[i] = uint8_t(i * 13 + 7);       // ql
  for (int i = 0; i < 64; ++i) b[128 + i] = uint8_t(i * 29 + 1);  // qh
  const int8_t sc[16] = {-128, -64, -1, 0, 1, 2, 3, 127, 10, -10, 20, -20, 30, -30, 40, -40};
  std::memcpy(b + 192, sc, 16);
  put_half(b + 208, 0x3400);  // 0.25
  const auto y = dequantize(block_format(GgmlType::Q6_K), b, 256);
  for (int i = 0; i < 256; ++i) {
    // value i = 128c + 32g + l: low 4 bits from ql[64c + 32(g % 2) + l] (low nibble for
    // g < 2), top 2 bits from bits 2g of qh[32c + l].
    const int c = i / 128, g = (i / 32) % 4, l = i % 32;
    const int low = (b[64 * c + 32 * (g % 2) + l] >> (g < 2 ? 0 : 4)) & 15;
    const int high = (b[128 + 32 * c + l] >> (2 * g)) & 3;
    CAPTURE(i);
    CHECK(y[i] == 0.25f * float(sc[i / 16]) * float(low + 16 * high - 32));
  }
  // Value 0: ql[0] = 7, qh[0] = 1 -> bits 0..1 = 1 -> 23 - 32 = -9; scale -128.
  CHECK(y[0] == 288.0f);
}

TEST_CASE("block formats: dequantization of random blocks is bit-exact to the reference") {
  std::mt19937 rng(7);
  for (const RefFormat& rf : ref_formats()) {
    const BlockFormat& f = block_format(rf.type);
    CAPTURE(f.name);
    const int nblocks = 24;
    std::vector<uint8_t> bytes(size_t(nblocks) * rf.bytes);
    for (uint8_t& v : bytes) v = uint8_t(rng());
    for (int ib = 0; ib < nblocks; ++ib) {
      uint8_t* blk = bytes.data() + size_t(ib) * rf.bytes;
      for (int off : rf.half_offsets) {
        uint16_t h = uint16_t(rng());
        if (((h >> 10) & 31) == 31) h = uint16_t(h & ~0x4000);  // keep it finite
        put_half(blk + off, h);
      }
      if (rf.float_offset >= 0) {
        const float d = float(std::ldexp(double(rng() % 2000) - 1000.0, int(rng() % 40) - 30));
        std::memcpy(blk + rf.float_offset, &d, 4);
      }
    }
    const auto expect = ref_decode(rf, bytes);
    const auto got = dequantize(f, bytes.data(), int64_t(expect.size()));
    int mismatches = 0;
    for (size_t i = 0; i < expect.size(); ++i) mismatches += !same_bits(expect[i], got[i]);
    CHECK(mismatches == 0);
  }
}

// ---- quantization --------------------------------------------------------------------

TEST_CASE("block formats: quantize then dequantize error on gaussian data") {
  // Relative RMSE sqrt(sum (x - y)^2 / sum x^2) on N(0, 1) rows; bounds sit a little
  // above the values measured when this was written (shown in the comments).
  struct Bound {
    GgmlType type;
    double max_rel_rmse;
  };
  const Bound bounds[] = {
      {GgmlType::Q8_0, 0.0060},  // measured 0.00536
      {GgmlType::Q6_K, 0.0190},  // measured 0.01766
      {GgmlType::Q5_K, 0.0380},  // measured 0.03609
      {GgmlType::Q4_K, 0.0750},  // measured 0.07158 (ggml's reference quantizer: 0.0713)
      {GgmlType::Q4_0, 0.0900},  // measured 0.08576
      {GgmlType::Q4_1, 0.0750},    // measured 0.06978 (ggml's reference quantizer: 0.0782)
      {GgmlType::Q5_0, 0.0460},    // measured 0.04282 (ggml's: 0.04282)
      {GgmlType::Q5_1, 0.0360},    // measured 0.03361 (ggml's reference quantizer: 0.0378)
      {GgmlType::IQ4_NL, 0.0800},  // measured 0.07615 (ggml's: 0.07615)
      {GgmlType::IQ4_XS, 0.0810},  // measured 0.07670 (ggml's: 0.07671)
      {GgmlType::Q3_K, 0.1600},  // measured 0.15277 (ggml's reference quantizer: 0.1513)
      {GgmlType::Q2_K, 0.3100},  // measured 0.29677
      {GgmlType::Q8_K, 0.0075},  // measured 0.00692 (one scale per 256 values)
  };
  const int64_t n = 8 * 4096;
  const auto x = gaussian(size_t(n), 11);
  for (const Bound& b : bounds) {
    const BlockFormat& f = block_format(b.type);
    const auto y = dequantize(f, quantize(f, x).data(), n);
    const double e = rel_rmse(x, y);
    MESSAGE(std::string(f.name) << " relative rmse " << e);
    CHECK(e < b.max_rel_rmse);
  }
  // The float formats: F32 exact, F16 and BF16 at their rounding error.
  CHECK(rel_rmse(x, dequantize(block_format(GgmlType::F32),
                               quantize(block_format(GgmlType::F32), x).data(), n)) == 0.0);
  CHECK(rel_rmse(x, dequantize(block_format(GgmlType::F16),
                               quantize(block_format(GgmlType::F16), x).data(), n)) < 3e-4);
  CHECK(rel_rmse(x, dequantize(block_format(GgmlType::BF16),
                               quantize(block_format(GgmlType::BF16), x).data(), n)) < 3e-3);
}

TEST_CASE("block formats: error scales with the data and re-quantizing is stable") {
  // Scaling the input by a power of two scales the error by the same factor (no
  // absolute thresholds hide inside the searches), within f16 rounding of the scales.
  const int64_t n = 2048;
  const auto x = gaussian(size_t(n), 5);
  std::vector<float> big(x), small(x);
  for (float& v : big) v *= 64.0f;
  for (float& v : small) v *= 1.0f / 64.0f;
  for (GgmlType t : kQuantized) {
    const BlockFormat& f = block_format(t);
    CAPTURE(f.name);
    const double e = rel_rmse(x, dequantize(f, quantize(f, x).data(), n));
    CHECK(rel_rmse(big, dequantize(f, quantize(f, big).data(), n)) == doctest::Approx(e).epsilon(0.05));
    CHECK(rel_rmse(small, dequantize(f, quantize(f, small).data(), n)) == doctest::Approx(e).epsilon(0.05));
    // Values that are already on the grid come back unchanged or very nearly so.
    const auto y = dequantize(f, quantize(f, x).data(), n);
    const auto z = dequantize(f, quantize(f, y).data(), n);
    CHECK(rel_rmse(y, z) < 0.25 * e);
  }
}

TEST_CASE("block formats: adversarial rows never give nan or inf") {
  const int64_t n = 512;
  std::vector<std::pair<std::string, std::vector<float>>> rows;
  rows.push_back({"zeros", std::vector<float>(n, 0.0f)});
  rows.push_back({"all 65504", std::vector<float>(n, 65504.0f)});
  {
    std::vector<float> v(n);
    for (int64_t i = 0; i < n; ++i) v[i] = (i % 2) ? 65504.0f : -65504.0f;
    rows.push_back({"alternating 65504", v});
  }
  rows.push_back({"constant 3.7", std::vector<float>(n, 3.7f)});
  rows.push_back({"constant -3.7", std::vector<float>(n, -3.7f)});
  {
    auto v = gaussian(size_t(n), 3, 1e-3);
    v[100] = 1000.0f;
    v[300] = -1000.0f;
    rows.push_back({"single outliers", v});
  }
  {
    std::vector<float> v(n);
    for (int64_t i = 0; i < n; ++i)
      v[i] = (i % 3 == 0) ? 1e-40f : (i % 3 == 1) ? -3e-39f : std::numeric_limits<float>::denorm_min();
    rows.push_back({"denormals", v});
  }
  rows.push_back({"tiny", gaussian(size_t(n), 4, 1e-7)});
  rows.push_back({"huge", gaussian(size_t(n), 5, 1e30)});
  {
    auto v = gaussian(size_t(n), 6);
    for (int64_t i = 0; i < n / 2; ++i) v[size_t(i)] = 0.0f;
    rows.push_back({"half zero", v});
  }
  const auto ones = std::vector<float>(n, 1.0f);
  auto random_imp = gaussian(size_t(n), 8);
  for (float& v : random_imp) v = std::exp(2.0f * v);

  for (const BlockFormat& f : block_formats()) {
    for (const auto& [label, x] : rows) {
      const double amax = std::fabs(double(*std::max_element(x.begin(), x.end(), [](float a, float b) {
        return std::fabs(a) < std::fabs(b);
      })));
      if (f.type == GgmlType::F16 && amax > 65504) continue;  // beyond f16's range by design
      const float* const importances[] = {nullptr, ones.data(), random_imp.data()};
      for (const float* imp : importances) {
        CAPTURE(f.name);
        CAPTURE(label);
        CAPTURE(imp != nullptr);
        const auto blocks = quantize(f, x, imp);
        const auto y = dequantize(f, blocks.data(), n);
        bool finite = true;
        double worst = 0;
        for (int64_t i = 0; i < n; ++i) {
          finite = finite && std::isfinite(y[size_t(i)]);
          worst = std::max(worst, std::fabs(double(y[size_t(i)]) - x[size_t(i)]));
        }
        CHECK(finite);
        // Nothing comes back larger than twice the input's largest magnitude.
        CHECK(worst <= 2 * amax + 1e-30);
        if (label == "zeros") CHECK(worst == 0.0);
        if (label.rfind("constant", 0) == 0 || label == "all 65504") CHECK(worst <= 0.01 * amax);
        // Q4_0 puts the largest magnitude at -8, so +amax lands on 7/8 of it (as in ggml).
        if (label.rfind("alternating", 0) == 0) CHECK(worst <= 0.126 * amax);
        if (label == "single outliers") {
          CHECK(std::fabs(y[100] - 1000.0) <= 20.0);
          CHECK(std::fabs(y[300] + 1000.0) <= 20.0);
        }
        if (label != "huge") {
          // The dot product with activations made from the same row stays finite too.
          const BlockFormat& act = block_format(f.vec_dot_type);
          const auto a = quantize(act, x);
          CHECK(std::isfinite(f.vec_dot(blocks.data(), a.data(), n)));
        }
      }
    }
  }
}

TEST_CASE("block formats: importance weights lower the weighted error") {
  // Strongly non-uniform importance (log-normal, spread of ~e^5 between typical large and
  // small columns), the same for every row, like an imatrix: the weighted squared error
  // sum imp * (x - y)^2 must drop when the quantizer sees the weights.
  const int64_t n = 4096, rows = 4;
  auto imp = gaussian(size_t(n), 21);
  for (float& v : imp) v = std::exp(2.5f * v);
  for (GgmlType t : kQuantized) {
    const BlockFormat& f = block_format(t);
    double plain = 0, weighted = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const auto x = gaussian(size_t(n), uint32_t(100 + r));
      const auto y0 = dequantize(f, quantize(f, x).data(), n);
      const auto y1 = dequantize(f, quantize(f, x, imp.data()).data(), n);
      for (int64_t i = 0; i < n; ++i) {
        plain += imp[size_t(i)] * std::pow(double(x[size_t(i)]) - y0[size_t(i)], 2);
        weighted += imp[size_t(i)] * std::pow(double(x[size_t(i)]) - y1[size_t(i)], 2);
      }
    }
    MESSAGE(std::string(f.name) << " weighted error with importance / without: " << weighted / plain);
    CHECK(weighted < 0.95 * plain);
  }
}

// ---- activations and dot products ------------------------------------------------------

TEST_CASE("block formats: q8_0 and q8_K activations follow ggml's definitions") {
  const int64_t n = 512;
  const auto x = gaussian(size_t(n), 31, 3.0);
  std::vector<BlockQ8_0> a(n / 32);
  quantize_row_q8_0(x.data(), a.data(), n);
  for (int64_t ib = 0; ib < n / 32; ++ib) {
    double amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(double(x[size_t(ib * 32 + i)])));
    const double d = half(a[size_t(ib)].d);
    CHECK(d == doctest::Approx(amax / 127).epsilon(1e-3));  // amax / 127 rounded to f16
    for (int i = 0; i < 32; ++i) {
      CHECK(std::abs(int(a[size_t(ib)].qs[i])) <= 127);
      CHECK(std::fabs(a[size_t(ib)].qs[i] * d - x[size_t(ib * 32 + i)]) <= 0.5 * d * 1.001);
    }
  }
  std::vector<BlockQ8_K> k(n / 256);
  quantize_row_q8_k(x.data(), k.data(), n);
  for (int64_t ib = 0; ib < n / 256; ++ib) {
    const BlockQ8_K& b = k[size_t(ib)];
    double amax = 0;
    float max = 0;
    for (int i = 0; i < 256; ++i) {
      const float v = x[size_t(ib * 256 + i)];
      if (std::fabs(v) > amax) {
        amax = std::fabs(v);
        max = v;
      }
    }
    // The value of largest magnitude maps to -127.
    CHECK(b.d == doctest::Approx(-max / 127.0).epsilon(1e-6));
    for (int j = 0; j < 16; ++j) {
      int sum = 0;
      for (int i = 0; i < 16; ++i) sum += b.qs[16 * j + i];
      CHECK(b.bsums[j] == sum);
    }
    for (int i = 0; i < 256; ++i)
      CHECK(std::fabs(double(b.qs[i]) * b.d - x[size_t(ib * 256 + i)]) <= 0.5 * std::fabs(b.d) * 1.001);
  }
}

TEST_CASE("block formats: vec_dot equals the dot product of the dequantized rows") {
  const int64_t n = 4096;
  for (const BlockFormat& f : block_formats()) {
    CAPTURE(f.name);
    const BlockFormat& act = block_format(f.vec_dot_type);
    for (uint32_t seed : {1u, 2u, 3u}) {
      const auto w = gaussian(size_t(n), seed);
      auto x = gaussian(size_t(n), seed + 50, 2.0);
      if (seed == 3)
        for (float& v : x) v = std::fabs(v) + 0.5f;  // all-positive activations: mins matter
      const auto wb = quantize(f, w);
      const auto ab = quantize(act, x);
      const auto wd = dequantize(f, wb.data(), n);
      const auto ad = dequantize(act, ab.data(), n);
      double ref = 0, mag = 0;
      for (int64_t i = 0; i < n; ++i) {
        ref += double(wd[size_t(i)]) * ad[size_t(i)];
        mag += std::fabs(double(wd[size_t(i)]) * ad[size_t(i)]);
      }
      const double got = f.vec_dot(wb.data(), ab.data(), n);
      CHECK(std::fabs(got - ref) <= 2e-6 * mag + 1e-30);
    }
  }
}

}  // namespace quant_block_formats_suite

// The device decoders of quant/cuda/blocks.cuh, compiled for the host and checked bit for
// bit against the CPU dequantizers (dequantize_row) on every format, so their index math is
// tested on machines without a GPU too. The handful of device intrinsics they use are
// emulated below with their exact host equivalents (a load, a rounded multiply or add, a
// byte permute); the emulated loads also fail the test when an address is not aligned for
// the width the decoder chose, which checks each format's alignment claims: the aligned
// variant runs on data aligned as kAlign promises, the byte-load variant at odd addresses.
#include <doctest/doctest.h>

#if HEARTH_HAVE_CUDA

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <vector_functions.h>
#include <vector_types.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {
int misaligned_loads = 0;
}

template <class T>
inline T __ldg(const T* p) {
  if (reinterpret_cast<uintptr_t>(p) % alignof(T) != 0) ++misaligned_loads;
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
inline float __fmul_rn(float a, float b) { return a * b; }  // ISO C++ mode: never contracted
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __uint_as_float(unsigned u) { return std::bit_cast<float>(u); }
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const uint64_t v = (uint64_t(y) << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= unsigned((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
  return r;
}

#include "quant/block_formats.h"
#include "quant/cuda/blocks.cuh"
#include "quant/numbers.h"
#include "quant/weight_matrix.h"
#include "support/block_rows.h"

using namespace hearth;
namespace blocks = hearth::cuda::blocks;

namespace {

// Rows of `nblocks` blocks of format t: gaussian values quantized by the CPU, and random
// bytes (finite factors for the block formats, no NaN or infinity for the float formats).
std::vector<std::vector<uint8_t>> sample_rows(DType t, int64_t n, std::mt19937& rng) {
  std::vector<std::vector<uint8_t>> rows;
  const int64_t bytes = row_bytes(t, n);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (int kind = 0; kind < 6; ++kind) {
    std::vector<uint8_t> r(size_t(bytes), 0);
    if (is_block_dtype(t)) {
      const BlockFormat& f = *block_format_of(t);
      if (kind < 3) {
        std::vector<float> src(static_cast<size_t>(n));
        for (float& v : src) v = g(rng) + (kind == 1 ? 0.4f : 0.0f);
        f.quantize_row(src.data(), r.data(), n, nullptr);
      } else {
        r = testing::weight_row(f, int(n / f.block_elems), rng, kind == 3 ? 0xff : -1, kind == 3 ? 0x7bff : -1);
      }
    } else {
      for (int64_t i = 0; i < n; ++i) {
        const float v = kind < 3 ? g(rng) : std::ldexp(g(rng), int(rng() % 60) - 30);
        switch (t) {
          case DType::F32: std::memcpy(r.data() + 4 * i, &v, 4); break;
          case DType::F16: {
            const uint16_t h = kind < 3 ? f32_to_f16(v) : uint16_t(rng() & 0xfbffu);  // subnormals too
            std::memcpy(r.data() + 2 * i, &h, 2);
            break;
          }
          case DType::BF16: {
            const uint16_t h = f32_to_bf16(v);
            std::memcpy(r.data() + 2 * i, &h, 2);
            break;
          }
          default: {  // F8_E4M3: every code but the NaNs
            const uint8_t q = kind < 3 ? f32_to_fp8_e4m3(v * 50.0f) : uint8_t(rng());
            r[size_t(i)] = (q & 0x7f) == 0x7f ? 0 : q;
          }
        }
      }
    }
    rows.push_back(std::move(r));
  }
  return rows;
}

template <class F, int A>
void check_decode8(DType t, const std::vector<uint8_t>& row, int64_t n, const std::vector<float>& ref, int64_t offset) {
  std::vector<uint8_t> buf(row.size() + 32);
  uint8_t* p = buf.data() + offset;  // vector storage is 16-byte aligned
  std::memcpy(p, row.data(), row.size());
  int bad = 0;
  for (int64_t g = 0; g < n / 8; ++g) {
    float v[8];
    F::template decode8<A>(p + (g / (F::kQK / 8)) * F::kBytes, int(g % (F::kQK / 8)), v);
    for (int m = 0; m < 8; ++m)
      if (std::memcmp(&v[m], &ref[size_t(8 * g + m)], 4) != 0 && bad++ < 3)
        FAIL_CHECK(dtype_name(t), " (A = ", A, ") value ", 8 * g + m, ": ", v[m], " vs the CPU's ", ref[size_t(8 * g + m)]);
  }
  if constexpr (F::kElement) {
    for (int64_t c = 0; c < n; ++c) {
      const float v = F::decode1(p, c);
      if (std::memcmp(&v, &ref[size_t(c)], 4) != 0 && bad++ < 3)
        FAIL_CHECK(dtype_name(t), " decode1 value ", c, ": ", v, " vs the CPU's ", ref[size_t(c)]);
    }
  }
  CHECK(bad == 0);
}

template <class F>
void check_format(DType t) {
  CAPTURE(dtype_name(t));
  std::mt19937 rng(77 + int(t));
  const int64_t n = 3 * std::max<int64_t>(F::kQK, 256);
  for (const std::vector<uint8_t>& row : sample_rows(t, n, rng)) {
    WeightMatrix w;
    w.dtype = t;
    w.rows = 1;
    w.cols = n;
    w.data = row.data();
    std::vector<float> ref(static_cast<size_t>(n));
    dequantize_row(w, 0, 0, n, ref.data());
    misaligned_loads = 0;
    check_decode8<F, F::kAlign>(t, row, n, ref, 0);
    check_decode8<F, 1>(t, row, n, ref, 1);
    check_decode8<F, 1>(t, row, n, ref, 3);
    CHECK(misaligned_loads == 0);
  }
}

}  // namespace

TEST_CASE("cuda block decoders compiled for the host match the CPU dequantizers") {
  check_format<blocks::F32>(DType::F32);
  check_format<blocks::F16>(DType::F16);
  check_format<blocks::BF16>(DType::BF16);
  check_format<blocks::F8E4M3>(DType::F8_E4M3);
  check_format<blocks::Q8_0>(DType::Q8_0);
  check_format<blocks::Q4_0>(DType::Q4_0);
  check_format<blocks::Q4_1>(DType::Q4_1);
  check_format<blocks::Q5_0>(DType::Q5_0);
  check_format<blocks::Q5_1>(DType::Q5_1);
  check_format<blocks::IQ4_NL>(DType::IQ4_NL);
  check_format<blocks::Q2_K>(DType::Q2_K);
  check_format<blocks::Q3_K>(DType::Q3_K);
  check_format<blocks::Q4_K>(DType::Q4_K);
  check_format<blocks::Q5_K>(DType::Q5_K);
  check_format<blocks::Q6_K>(DType::Q6_K);
  check_format<blocks::IQ4_XS>(DType::IQ4_XS);
}

#endif  // HEARTH_HAVE_CUDA (the decoders need the toolkit's headers)

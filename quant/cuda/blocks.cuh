// Device-side decoders of every weight format, shared by the matmul and dequantize kernels.
//
// Every format is seen as a row of blocks of kQK values (kBytes bytes each); the element
// formats as blocks of 8 values. decode8<A>(block, k, v) writes values 8k .. 8k + 7 of one
// block to v, with the scales of the block applied (not the FP8 128x128 block scales,
// which the kernels apply). A is the alignment (bytes) the caller guarantees for the
// block's address: kAlign when the weight data is aligned to 16 bytes (a row is a whole
// number of blocks, so every block start keeps gcd(kBytes, 16)), 1 otherwise; every load
// is as wide as A and the field's offset allow, so any address works.
//
// The arithmetic repeats the CPU dequantizers (quant/block_formats.cc, kquants.cc,
// legacy_quants.cc, iq4.cc) operation for operation with explicitly rounded multiplies and
// adds (__fmul_rn, __fsub_rn, ...) that the compiler may not fuse, so a decoded value is
// bit-identical to the CPU's (the tests check this through cuda::dequantize).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

// nvcc unrolls the loops over a group's 8 values; host compilers (tests/cuda/
// blocks_host_test.cc compiles these decoders for the CPU) know no such pragma.
#if defined(__CUDACC__)
#define HEARTH_CUDA_UNROLL _Pragma("unroll")
#else
#define HEARTH_CUDA_UNROLL
#endif

namespace hearth::cuda::blocks {

template <int A, int B>
inline constexpr int kMinAlign = A < B ? A : B;

// ---- loads of 2, 4 and 8 bytes at a p aligned to A bytes (little-endian) ----------------

template <int A>
__device__ __forceinline__ uint32_t ld_u8(const uint8_t* p) {
  return __ldg(p);
}

template <int A>
__device__ __forceinline__ uint32_t ld_u16(const uint8_t* p) {
  if constexpr (A >= 2) return __ldg(reinterpret_cast<const unsigned short*>(p));
  else return uint32_t(__ldg(p)) | (uint32_t(__ldg(p + 1)) << 8);
}

template <int A>
__device__ __forceinline__ uint32_t ld_u32(const uint8_t* p) {
  if constexpr (A >= 4) return __ldg(reinterpret_cast<const unsigned int*>(p));
  else return ld_u16<A>(p) | (ld_u16<A>(p + 2) << 16);
}

// 8 bytes: .x holds bytes 0..3, .y bytes 4..7.
template <int A>
__device__ __forceinline__ uint2 ld_u64(const uint8_t* p) {
  if constexpr (A >= 8) return __ldg(reinterpret_cast<const uint2*>(p));
  else return make_uint2(ld_u32<A>(p), ld_u32<A>(p + 4));
}

// 16 bytes.
template <int A>
__device__ __forceinline__ uint4 ld_u128(const uint8_t* p) {
  if constexpr (A >= 16) {
    return __ldg(reinterpret_cast<const uint4*>(p));
  } else {
    const uint2 a = ld_u64<A>(p), b = ld_u64<A>(p + 8);
    return make_uint4(a.x, a.y, b.x, b.y);
  }
}

// Byte m (0..7, a compile-time constant after unrolling) of 8 loaded bytes.
__device__ __forceinline__ uint32_t byte_of(uint2 q, int m) { return ((m < 4 ? q.x : q.y) >> (8 * (m & 3))) & 0xffu; }

__device__ __forceinline__ float half_bits_to_float(uint32_t h) { return __half2float(__ushort_as_half((unsigned short)h)); }
__device__ __forceinline__ float bf16_bits_to_float(uint32_t h) { return __uint_as_float(h << 16); }

// Two FP8 e4m3 codes (low byte first) to floats, exactly (NaN codes give NaN).
__device__ __forceinline__ float2 fp8x2_to_float2(uint32_t two) {
  const __half2_raw raw = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)two, __NV_E4M3);
  return __half22float2(__half2(raw));
}
__device__ __forceinline__ float fp8_to_float(uint32_t code) {
  return __half2float(__half(__nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)code, __NV_E4M3)));
}

// ggml's kvalues_iq4nl (quant/block_formats.h kIq4nlValues) packed four to a word, picked
// with __byte_perm instead of an indexed array (which would go to local memory).
__device__ __forceinline__ float iq4nl_value(uint32_t idx) {
  // -127, -104, -83, -65 | -49, -35, -22, -10 | 1, 13, 25, 38 | 53, 69, 89, 113 (as bytes)
  const uint32_t lo = __byte_perm(0xBFAD9881u, 0xF6EADDCFu, idx & 7);
  const uint32_t hi = __byte_perm(0x26190D01u, 0x71594535u, idx & 7);
  const uint32_t b = (idx & 8) ? hi : lo;
  return float(int32_t(int8_t(b & 0xffu)));
}

// ---- element formats: blocks of 8 values ------------------------------------------------

struct F32 {
  static constexpr bool kElement = true;
  static constexpr int kQK = 8, kBytes = 32, kAlign = 16;
  template <int A>
  __device__ __forceinline__ static void decode8(const uint8_t* b, int, float v[8]) {
    const uint4 p = ld_u128<A>(b), q = ld_u128<A>(b + 16);
    v[0] = __uint_as_float(p.x), v[1] = __uint_as_float(p.y), v[2] = __uint_as_float(p.z), v[3] = __uint_as_float(p.w);
    v[4] = __uint_as_float(q.x), v[5] = __uint_as_float(q.y), v[6] = __uint_as_float(q.z), v[7] = __uint_as_float(q.w);
  }
  // Value c of a row, with byte loads (any alignment).
  __device__ __forceinline__ static float decode1(const uint8_t* row, int64_t c) {
    return __uint_as_float(ld_u32<1>(row + 4 * c));
  }
};

template <bool kBf16>
struct Half16 {
  static constexpr bool kElement = true;
  static constexpr int kQK = 8, kBytes = 16, kAlign = 16;
  __device__ __forceinline__ static float convert(uint32_t h) {
    if constexpr (kBf16) return bf16_bits_to_float(h);
    else return half_bits_to_float(h);
  }
  template <int A>
  __device__ __forceinline__ static void decode8(const uint8_t* b, int, float v[8]) {
    const uint4 p = ld_u128<A>(b);
    const uint32_t w[4] = {p.x, p.y, p.z, p.w};
HEARTH_CUDA_UNROLL
    for (int i = 0; i < 4; ++i) {
      v[2 * i] = convert(w[i] & 0xffffu);
      v[2 * i + 1] = convert(w[i] >> 16);
    }
  }
  __device__ __forceinline__ static float decode1(const uint8_t* row, int64_t c) {
    return convert(ld_u16<1>(row + 2 * c));
  }
};
using F16 = Half16<false>;
using BF16 = Half16<true>;

struct F8E4M3 {
  static constexpr bool kElement = true;
  static constexpr int kQK = 8, kBytes = 8, kAlign = 8;
  template <int A>
  __device__ __forceinline__ static void decode8(const uint8_t* b, int, float v[8]) {
    const uint2 q = ld_u64<A>(b);
    const float2 a = fp8x2_to_float2(q.x & 0xffffu), c = fp8x2_to_float2(q.x >> 16);
    const float2 d = fp8x2_to_float2(q.y & 0xffffu), e = fp8x2_to_float2(q.y >> 16);
    v[0] = a.x, v[1] = a.y, v[2] = c.x, v[3] = c.y, v[4] = d.x, v[5] = d.y, v[6] = e.x, v[7] = e.y;
  }
  __device__ __forceinline__ static float decode1(const uint8_t* row, int64_t c) { return fp8_to_float(__ldg(row + c)); }
};

// ---- ggml's 32-value formats ------------------------------------------------------------

// Q8_0 (34 bytes): f16 d at 0, int8 qs[32] at 2. value = q * d.
struct Q8_0 {
  static constexpr bool kElement = false;
  static constexpr int kQK = 32, kBytes = 34, kAlign = 2;
  template <int A>
  __device__ __forceinline__ static void decode8(const uint8_t* b, int k, float v[8]) {
    const float d = half_bits_to_float(ld_u16<A>(b));
    const uint2 q = ld_u64<kMinAlign<A, 2>>(b + 2 + 8 * k);
HEARTH_CUDA_UNROLL
    for (int m = 0; m < 8; ++m) v[m] = __fmul_rn(float(int32_t(int8_t(byte_of(q, m)))), d);
  }
};

// Q4_0 (18 bytes): f16 d, qs[16]; value j in the low nibble of byte j (j < 16), value
// j + 16 in its high nibble. value = (nibble - 8) * d.
struct Q4_0 {
  static constexpr bool kElement = false;
  static constexpr int kQK = 32, kBytes = 18, kAlign = 2;
  template <int A>
  __device__ __forceinline__ static void decode8(const uint8_t* b, int k, float v[8]) {
    const float d = half_bits_to_float(ld_u16<A>(b));
    const uint2 q = ld_u64<kMinAlign<A, 2>>(b + 2 + 8 * (k & 1));
    const int shift = (k >> 1) * 4;
HEARTH_CUDA_UNROLL
    for (int m = 0; m < 8; ++m) v[m] = __fmul_rn(float(int32_t((byte_of(q, m) >> shift) & 15u) - 8), d);
  }
};

// Q4_1 (20 bytes): f16 d, f16 m, qs[16] as Q4_0. value = nibble * d + m.
struct Q4_1 {
  static constexpr bool kElement = false;
  static constexpr int kQK = 32, kBytes = 20, kAlign = 4;
  template <int A>
  __device__ __forceinline__ static void decode8(const uint8_t* b, int k, float v[8]) {
    const float d = half_bits_to_float(ld_u16<A>(b)), mn = half_bits_to_float(ld_u16<kMinAlign<A, 2>>(b + 2));
    const uint2 q = ld_u64<kMinAlign<A, 4>>(b + 4 + 8 * (k & 1));
    const int shift = (k >> 1) * 4;
HEARTH_CUDA_UNROLL
    for (int m = 0; m < 8; ++m) v[m] = __fadd_rn(__fmul_rn(float((byte_of(q, m) >> shift) & 15u), d), mn);
  }
};

// Q5_0 (22 bytes): f16 d, qh (32 bits, bit i = fifth bit of value i), qs[16] as Q4_0.
// value = (q - 16) * d.
struct Q5_0 {
  static constexpr bool kElement = false;
  static constexpr int kQK = 32, kBytes = 22, kAlign = 2;
  template <int A>
  __device__ __forceinline__ static void decode8(const uint8_t* b, int k, float v[8]) {
    const float d = half_bits_to_float(ld_u16<A>(b));
    const uint32_t h = ld_u32<kMinAlign<A, 2>>(b + 2);
    const uint2 q = ld_u64<kMinAlign<A, 2>>(b + 6 + 8 * (k & 1));
    const int shift = (k >> 1) * 4;
HEARTH_CUDA_UNROLL
    for (int m = 0; m < 8; ++m) {
      const uint32_t lv = ((byte_of(q, m) >> shift) & 15u) | (((h >> (8 * k + m)) & 1u) << 4);
      v[m] = __fmul_rn(float(int32_t(lv) - 16), d);
    }
  }
};

// Q5_1 (24 bytes): f16 d, f16 m, qh, qs[16]. value = q * d + m.
struct Q5_1 {
  static constexpr bool kElement = false;
  static constexpr int kQK = 32, kBytes = 24, kAlign = 8;
  template <int A>
  __device__ __forceinline__ static void decode8(const uint8_t* b, int k, float v[8]) {
    const float d = half_bits_to_float(ld_u16<A>(b)), mn = half_bits_to_float(ld_u16<kMinAlign<A, 2>>(b + 2));
    const uint32_t h = ld_u32<kMinAlign<A, 4>>(b + 4);
    const uint2 q = ld_u64<kMinAlign<A, 8>>(b + 8 + 8 * (k & 1));
    const int shift = (k >> 1) * 4;
HEARTH_CUDA_UNROLL
    for (int m = 0; m < 8; ++m) {
      const uint32_t lv = ((byte_of(q, m) >> shift) & 15u) | (((h >> (8 * k + m)) & 1u) << 4);
      v[m] = __fadd_rn(__fmul_rn(float(lv), d), mn);
    }
  }
};

// IQ4_NL (18 bytes): f16 d, nibbles as Q4_0 indexing kIq4nlValues. value = d * level.
struct IQ4_NL {
  static constexpr bool kElement = false;
  static constexpr int kQK = 32, kBytes = 18, kAlign = 2;
  template <int A>
  __device__ __forceinline__ static void decode8(const uint8_t* b, int k, float v[8]) {
    const float d = half_bits_to_float(ld_u16<A>(b));
    const uint2 q = ld_u64<kMinAlign<A, 2>>(b + 2 + 8 * (k & 1));
    const int shift = (k >> 1) * 4;
HEARTH_CUDA_UNROLL
    for (int m = 0; m < 8; ++m) v[m] = __fmul_rn(d, iq4nl_value((byte_of(q, m) >> shift) & 15u));
  }
};

// ---- K-quants: super-blocks of 256 ------------------------------------------------------
//
// Group k (values 8k .. 8k + 7) of a super-block, in the 2-bit layout of Q2_K/Q3_K/Q6_K
// (value 128c + 32g + l): c = k / 16, g = (k / 4) % 4, l = 8 (k % 4) .. + 7; in the nibble
// layout of Q4_K/Q5_K (value 64c + 32h + l): c = k / 8, h = (k / 4) % 2, same l.

// Q2_K (84 bytes): scales[16] at 0, qs[64] at 16, f16 d at 80, f16 dmin at 82.
// value = (d * (sc & 15)) * q - (dmin * (sc >> 4)), sc = scales[i / 16].
struct Q2_K {
  static constexpr bool kElement = false;
  static constexpr int kQK = 256, kBytes = 84, kAlign = 4;
  template <int A>
  __device__ __forceinline__ static void decode8(const uint8_t* b, int k, float v[8]) {
    const int c = k >> 4, g = (k >> 2) & 3, l = 8 * (k & 3);
    const float d = half_bits_to_float(ld_u16<kMinAlign<A, 4>>(b + 80));
    const float dmin = half_bits_to_float(ld_u16<kMinAlign<A, 2>>(b + 82));
    const uint32_t sc = ld_u8<A>(b + (k >> 1));
    const float step = __fmul_rn(d, float(sc & 15u)), offset = __fmul_rn(dmin, float(sc >> 4));
    const uint2 q = ld_u64<kMinAlign<A, 8>>(b + 16 + 32 * c + l);
HEARTH_CUDA_UNROLL
    for (int m = 0; m < 8; ++m) v[m] = __fsub_rn(__fmul_rn(step, float((byte_of(q, m) >> (2 * g)) & 3u)), offset);
  }
};

// Q3_K (110 bytes): hmask[32] at 0, qs[64] at 32, scales[12] at 96, f16 d at 108.
// q = low 2 bits + 4 * (bit i / 32 of hmask[i % 32]) - 4; value = (d * sc) * q with the
// 6-bit scale sc of sub-block j = i / 16: low 4 bits from scales[j] (j < 8, low nibble) or
// scales[j - 8] (high nibble), top 2 bits at 2 (j / 4) of scales[8 + j % 4], minus 32.
struct Q3_K {
  static constexpr bool kElement = false;
  static constexpr int kQK = 256, kBytes = 110, kAlign = 2;
  template <int A>
  __device__ __forceinline__ static void decode8(const uint8_t* b, int k, float v[8]) {
    const int c = k >> 4, g = (k >> 2) & 3, l = 8 * (k & 3), j = k >> 1;
    const float d = half_bits_to_float(ld_u16<kMinAlign<A, 4>>(b + 108));
    const uint32_t low = j < 8 ? (ld_u8<A>(b + 96 + j) & 15u) : (ld_u8<A>(b + 96 + j - 8) >> 4);
    const uint32_t high = (ld_u8<A>(b + 104 + (j & 3)) >> (2 * (j >> 2))) & 3u;
    const int sc = int32_t(low | (high << 4)) - 32;
    const float step = __fmul_rn(d, float(sc));
    const uint2 q = ld_u64<kMinAlign<A, 8>>(b + 32 + 32 * c + l);
    const uint2 hm = ld_u64<kMinAlign<A, 8>>(b + l);
    const int hbit = k >> 2;  // i / 32
HEARTH_CUDA_UNROLL
    for (int m = 0; m < 8; ++m) {
      const int lv = int32_t((byte_of(q, m) >> (2 * g)) & 3u) + 4 * int32_t((byte_of(hm, m) >> hbit) & 1u) - 4;
      v[m] = __fmul_rn(step, float(lv));
    }
  }
};

// Q4_K / Q5_K scale and min of sub-block j (0..7) from the 12 packed bytes at s.
template <int A>
__device__ __forceinline__ void scale_min_k4(const uint8_t* s, int j, uint32_t& sc, uint32_t& mn) {
  if (j < 4) {
    sc = ld_u8<A>(s + j) & 63u;
    mn = ld_u8<A>(s + j + 4) & 63u;
  } else {
    const uint32_t packed = ld_u8<A>(s + j + 4);
    sc = (packed & 15u) | ((ld_u8<A>(s + j - 4) >> 6) << 4);
    mn = (packed >> 4) | ((ld_u8<A>(s + j) >> 6) << 4);
  }
}

// Q4_K (144 bytes): f16 d at 0, f16 dmin at 2, scales[12] at 4, qs[128] at 16.
// value = (d * sc) * nibble - (dmin * m) for the sub-block j = i / 32.
struct Q4_K {
  static constexpr bool kElement = false;
  static constexpr int kQK = 256, kBytes = 144, kAlign = 16;
  template <int A>
  __device__ __forceinline__ static void decode8(const uint8_t* b, int k, float v[8]) {
    const int c = k >> 3, h = (k >> 2) & 1, l = 8 * (k & 3), j = k >> 2;
    const float d = half_bits_to_float(ld_u16<A>(b)), dmin = half_bits_to_float(ld_u16<kMinAlign<A, 2>>(b + 2));
    uint32_t sc, mn;
    scale_min_k4<A>(b + 4, j, sc, mn);
    const float step = __fmul_rn(d, float(sc)), offset = __fmul_rn(dmin, float(mn));
    const uint2 q = ld_u64<kMinAlign<A, 8>>(b + 16 + 32 * c + l);
HEARTH_CUDA_UNROLL
    for (int m = 0; m < 8; ++m) v[m] = __fsub_rn(__fmul_rn(step, float((byte_of(q, m) >> (4 * h)) & 15u)), offset);
  }
};

// Q5_K (176 bytes): f16 d, f16 dmin, scales[12] at 4, qh[32] at 16, qs[128] at 48; the
// fifth bit of value i is bit i / 32 of qh[i % 32].
struct Q5_K {
  static constexpr bool kElement = false;
  static constexpr int kQK = 256, kBytes = 176, kAlign = 16;
  template <int A>
  __device__ __forceinline__ static void decode8(const uint8_t* b, int k, float v[8]) {
    const int c = k >> 3, h = (k >> 2) & 1, l = 8 * (k & 3), j = k >> 2;
    const float d = half_bits_to_float(ld_u16<A>(b)), dmin = half_bits_to_float(ld_u16<kMinAlign<A, 2>>(b + 2));
    uint32_t sc, mn;
    scale_min_k4<A>(b + 4, j, sc, mn);
    const float step = __fmul_rn(d, float(sc)), offset = __fmul_rn(dmin, float(mn));
    const uint2 q = ld_u64<kMinAlign<A, 8>>(b + 48 + 32 * c + l);
    const uint2 qh = ld_u64<kMinAlign<A, 8>>(b + 16 + l);
HEARTH_CUDA_UNROLL
    for (int m = 0; m < 8; ++m) {
      const uint32_t lv = ((byte_of(q, m) >> (4 * h)) & 15u) + 16u * ((byte_of(qh, m) >> j) & 1u);
      v[m] = __fsub_rn(__fmul_rn(step, float(lv)), offset);
    }
  }
};

// Q6_K (210 bytes): ql[128] at 0, qh[64] at 128, int8 scales[16] at 192, f16 d at 208.
// Value 128c + 32g + l: low 4 bits in ql[64c + 32 (g & 1) + l] (nibble g >> 1), top 2
// bits at 2g of qh[32c + l]; value = (d * scales[i / 16]) * (q - 32).
struct Q6_K {
  static constexpr bool kElement = false;
  static constexpr int kQK = 256, kBytes = 210, kAlign = 2;
  template <int A>
  __device__ __forceinline__ static void decode8(const uint8_t* b, int k, float v[8]) {
    const int c = k >> 4, g = (k >> 2) & 3, l = 8 * (k & 3);
    const float d = half_bits_to_float(ld_u16<kMinAlign<A, 16>>(b + 208));
    const int sc = int32_t(int8_t(ld_u8<A>(b + 192 + (k >> 1))));
    const float step = __fmul_rn(d, float(sc));
    const uint2 ql = ld_u64<kMinAlign<A, 8>>(b + 64 * c + 32 * (g & 1) + l);
    const uint2 qh = ld_u64<kMinAlign<A, 8>>(b + 128 + 32 * c + l);
HEARTH_CUDA_UNROLL
    for (int m = 0; m < 8; ++m) {
      const uint32_t lv = ((byte_of(ql, m) >> (4 * (g >> 1))) & 15u) | (((byte_of(qh, m) >> (2 * g)) & 3u) << 4);
      v[m] = __fmul_rn(step, float(int32_t(lv) - 32));
    }
  }
};

// IQ4_XS (136 bytes): f16 d at 0, scales_h (16 bits) at 2, scales_l[4] at 4, qs[128] at 8.
// Sub-block j (32 values) is an IQ4_NL block's nibbles at qs[16j..]; its scale is
// (nibble j % 2 of scales_l[j / 2]) | (bits 2j..2j+1 of scales_h) << 4, minus 32.
struct IQ4_XS {
  static constexpr bool kElement = false;
  static constexpr int kQK = 256, kBytes = 136, kAlign = 8;
  template <int A>
  __device__ __forceinline__ static void decode8(const uint8_t* b, int k, float v[8]) {
    const int j = k >> 2, kk = k & 3;
    const float d = half_bits_to_float(ld_u16<A>(b));
    const uint32_t sh = ld_u16<kMinAlign<A, 2>>(b + 2);
    const uint32_t low = (ld_u8<A>(b + 4 + (j >> 1)) >> (4 * (j & 1))) & 15u;
    const uint32_t high = (sh >> (2 * j)) & 3u;
    const float step = __fmul_rn(d, float(int32_t(low | (high << 4)) - 32));
    const uint2 q = ld_u64<kMinAlign<A, 8>>(b + 8 + 16 * j + 8 * (kk & 1));
    const int shift = (kk >> 1) * 4;
HEARTH_CUDA_UNROLL
    for (int m = 0; m < 8; ++m) v[m] = __fmul_rn(step, iq4nl_value((byte_of(q, m) >> shift) & 15u));
  }
};

}  // namespace hearth::cuda::blocks

// The AVX-512 VNNI dot products (quant/dot_avx512vnni.cc) against the AVX2 ones, which
// block_dot_simd_test checks against the scalar references. Both are built from
// quant/dot_kernels.inc and must give the same floats, bit for bit, one-row kernels and
// tiles alike.
//
// Most machines that run this suite have no AVX-512, so this file builds the VNNI
// flavour of the kernels a second time, with SIMDe's portable vpdpbusd / vpdpwssd in
// place of the instructions and everything else as AVX2: the same source as the real
// kernels, checked on any AVX2 machine. Where the CPU has AVX-512 VNNI, the real kernels
// are checked as well.
#include <immintrin.h>
#include <simde/x86/avx512/dpbusd.h>
#include <simde/x86/avx512/dpwssd.h>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "quant/avx2_blocks.h"
#include "quant/block_formats.h"
#include "quant/dot_simd.h"
#include "quant/kquants.h"
#include "quant/weight_matrix.h"
#include "support/block_rows.h"

namespace hearth::dot_vnni_emulated {

HEARTH_DOT_SIMD_KERNELS

// A VNNI instruction through SIMDe's portable code (this file is compiled without
// AVX-512). The copies in and out are register moves once inlined.
template <simde__m256i (*kOp)(simde__m256i, simde__m256i, simde__m256i)>
HEARTH_AVX2 inline __m256i through_simde(__m256i acc, __m256i x, __m256i y) {
  simde__m256i a, b, c;
  std::memcpy(&a, &acc, 32);
  std::memcpy(&b, &x, 32);
  std::memcpy(&c, &y, 32);
  const simde__m256i r = kOp(a, b, c);
  __m256i out;
  std::memcpy(&out, &r, 32);
  return out;
}

#define HEARTH_DOT_TARGET HEARTH_AVX2
#define HEARTH_DOT_VNNI 1
#define HEARTH_DPBUSD through_simde<simde_mm256_dpbusd_epi32>
#define HEARTH_DPWSSD through_simde<simde_mm256_dpwssd_epi32>
#include "quant/dot_kernels.inc"

}  // namespace hearth::dot_vnni_emulated

namespace quant_dot_vnni_suite {

using namespace hearth;
using namespace hearth::testing;

namespace {

bool have_vnni() { return has_vnni(best_isa()); }

// The VNNI kernels to check: the emulated ones always, the real ones where the CPU runs them.
struct Flavour {
  const char* name;
  VecDotFn (*row)(GgmlType);
  VecDot4Fn (*tile)(GgmlType, int);
  VecDot2x4Fn (*tile2x4)(GgmlType);
};
std::vector<Flavour> flavours() {
  std::vector<Flavour> v{{"emulated", dot_vnni_emulated::row_kernel, dot_vnni_emulated::tile_kernel,
                          dot_vnni_emulated::tile2x4_kernel}};
  if (have_vnni())
    v.push_back({"native", dot_avx512vnni::row_kernel, dot_avx512vnni::tile_kernel, dot_avx512vnni::tile2x4_kernel});
  // The AVX-512 F/BW level (quant/dot_avx512.cc: Q8_0 in 512-bit registers, the rest
  // AVX2) promises the same floats.
  if (has_avx512(best_isa()))
    v.push_back({"avx512", dot_avx512::row_kernel, dot_avx512::tile_kernel, dot_avx512::tile2x4_kernel});
  // The VNNI level's picks (quant/dot_avx512vnni_wide.cc: Q8_0 in 512-bit registers with
  // vpdpbusd, the rest the 256-bit VNNI kernels).
  if (have_vnni())
    v.push_back({"vnni512", dot_avx512vnni_wide::row_kernel, dot_avx512vnni_wide::tile_kernel,
                 dot_avx512vnni_wide::tile2x4_kernel});
  return v;
}

// Compares every VNNI flavour's one-row kernel with AVX2's on one row pair; returns the
// number of flavours whose float differs in any bit.
int row_mismatches(const BlockFormat& f, const std::vector<uint8_t>& w, const std::vector<uint8_t>& a, int64_t n) {
  const float want = f.vec_dot_avx2(w.data(), a.data(), n);
  int bad = 0;
  for (const Flavour& fl : flavours()) {
    const float got = fl.row(f.type)(w.data(), a.data(), n);
    if (float_bits(got) != float_bits(want)) {
      CAPTURE(fl.name);
      CAPTURE(f.name);
      CAPTURE(n);
      CAPTURE(want);
      CAPTURE(got);
      FAIL_CHECK("VNNI (or AVX-512) and AVX2 dot products differ");
      ++bad;
    }
  }
  return bad;
}

// The tiles for 2..4 tokens (and Q8_0's two-row tile) against AVX2's one-row kernel.
int tile_mismatches(const BlockFormat& f, const std::vector<uint8_t> (&w)[2], const ActRows4& a,
                    int64_t n) {
  const void* rows[4] = {a[0].data(), a[1].data(), a[2].data(), a[3].data()};
  int bad = 0;
  auto expect = [&](const char* what, int r, int t, float got) {
    const float want = f.vec_dot_avx2(w[r].data(), a[t].data(), n);
    if (float_bits(got) == float_bits(want)) return;
    CAPTURE(what);
    CAPTURE(f.name);
    CAPTURE(n);
    CAPTURE(r);
    CAPTURE(t);
    CAPTURE(want);
    CAPTURE(got);
    FAIL_CHECK("VNNI (or AVX-512) tile and AVX2 one-row kernel differ");
    ++bad;
  };
  for (const Flavour& fl : flavours()) {
    for (int tokens = 2; tokens <= 4; ++tokens) {
      float out[4];
      fl.tile(f.type, tokens)(w[0].data(), rows, n, out);
      for (int t = 0; t < tokens; ++t) expect(fl.name, 0, t, out[t]);
    }
    if (VecDot2x4Fn two = fl.tile2x4(f.type)) {
      float out[8];
      two(w[0].data(), w[1].data(), rows, n, out);
      for (int r = 0; r < 2; ++r)
        for (int t = 0; t < 4; ++t) expect(fl.name, r, t, out[r * 4 + t]);
    }
  }
  return bad;
}

#define SKIP_WITHOUT_AVX2()                                              \
  if (!has_avx2(best_isa())) {                                            \
    MESSAGE("CPU lacks AVX2/FMA/F16C: the VNNI kernels' check needs it"); \
    return;                                                               \
  }

}  // namespace

TEST_CASE("dot vnni: every AVX2 format has a VNNI kernel and the tiled ones have tiles") {
  for (GgmlType t : kSimdFormats) {
    CAPTURE(block_format(t).name);
    CHECK((dot_vnni_emulated::row_kernel(t) != nullptr));
    CHECK((dot_avx512vnni::row_kernel(t) != nullptr));
  }
  // vec_dot_kernel picks AVX2 kernels through dot_avx2::row_kernel; the format table
  // names them too (tests and dot_bench call them there). The two must agree.
  for (const BlockFormat& f : block_formats()) {
    CAPTURE(f.name);
    CHECK((dot_avx2::row_kernel(f.type) == f.vec_dot_avx2));
  }
  for (GgmlType t : kTiledFormats)
    for (int tokens = 2; tokens <= 4; ++tokens) CHECK((dot_avx512vnni::tile_kernel(t, tokens) != nullptr));
  CHECK((dot_avx512vnni::tile2x4_kernel(GgmlType::Q8_0) != nullptr));
  CHECK((dot_avx512vnni::row_kernel(GgmlType::F16) == nullptr));
  CHECK((dot_avx512vnni::tile_kernel(GgmlType::Q4_0, 4) == nullptr));
}

TEST_CASE("dot vnni: requests are capped at what the CPU has") {
  const KernelIsa best = best_isa();
  CHECK(resolve_isa(KernelIsa::kAuto) == best);
  CHECK(resolve_isa(KernelIsa::kScalar) == KernelIsa::kScalar);
  CHECK(resolve_isa(KernelIsa::kAvx512Bf16) == best);
  CHECK(resolve_isa(KernelIsa::kAvx512Vnni) == (has_vnni(best) ? KernelIsa::kAvx512Vnni : best));
  CHECK(resolve_isa(KernelIsa::kAvx2) == (best == KernelIsa::kScalar ? KernelIsa::kScalar : KernelIsa::kAvx2));
  CHECK(resolve_isa(KernelIsa::kAvx512) == (has_avx512(best) ? KernelIsa::kAvx512 : best));
  CHECK(std::string(isa_name(KernelIsa::kAvx512Bf16)) == "avx512bf16");
  CHECK(parse_isa("avx512bf16") == KernelIsa::kAvx512Bf16);
  CHECK(std::string(isa_name(KernelIsa::kAvx512Vnni)) == "avx512vnni");
  CHECK(std::string(isa_name(KernelIsa::kAvx512)) == "avx512");
  CHECK(parse_isa("avx512") == KernelIsa::kAvx512);
  for (GgmlType t : kSimdFormats) {
    const BlockFormat& f = block_format(t);
    CAPTURE(f.name);
    // On a CPU without AVX-512 a VNNI request runs AVX2 (or scalar) rather than faulting.
    // Below VNNI: the AVX-512 F/BW kernels where the CPU has them (Q8_0's own, the AVX2
    // ones otherwise), else AVX2, else scalar.
    const VecDotFn want_avx512 = has_avx512(best_isa()) ? dot_avx512::row_kernel(t)
                                 : has_avx2(best_isa()) ? f.vec_dot_avx2
                                                        : f.vec_dot;
    const VecDotFn want_vnni = have_vnni() ? dot_avx512vnni_wide::row_kernel(t) : want_avx512;
    CHECK((vec_dot_kernel(f, KernelIsa::kAvx512Vnni) == want_vnni));
    CHECK((vec_dot_kernel(f, KernelIsa::kAvx512Bf16) == want_vnni));  // no BF16 flavour
    CHECK((vec_dot_kernel(f) == want_vnni));
    CHECK((vec_dot_kernel(f, KernelIsa::kAvx2) == (has_avx2(best_isa()) ? f.vec_dot_avx2 : f.vec_dot)));
    CHECK((vec_dot_kernel(f, KernelIsa::kAvx512) == want_avx512));
    // Only Q8_0 has a 512-bit kernel of its own, at both levels.
    CHECK(((dot_avx512::row_kernel(t) == f.vec_dot_avx2) == (t != GgmlType::Q8_0)));
    CHECK(((dot_avx512vnni_wide::row_kernel(t) == dot_avx512vnni::row_kernel(t)) == (t != GgmlType::Q8_0)));
  }
  for (GgmlType t : kTiledFormats) {
    const BlockFormat& f = block_format(t);
    const VecDot4Fn want = have_vnni()              ? dot_avx512vnni_wide::tile_kernel(t, 4)
                           : has_avx512(best_isa()) ? dot_avx512::tile_kernel(t, 4)
                           : has_avx2(best_isa())   ? dot_avx2::tile_kernel(t, 4)
                                                    : nullptr;
    CHECK((vec_dot_tile_kernel(f, 4, KernelIsa::kAvx512Vnni) == want));
    CHECK((vec_dot_tile_kernel(f, 4, KernelIsa::kAvx512Bf16) == want));
  }
}

TEST_CASE("dot vnni: random and quantized rows give the AVX2 floats bit for bit") {
  SKIP_WITHOUT_AVX2();
  std::mt19937 rng(41);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  for (GgmlType t : kSimdFormats) {
    const BlockFormat& f = block_format(t);
    const BlockFormat& act = block_format(f.vec_dot_type);
    CAPTURE(f.name);
    int bad = 0;
    for (int nblocks : {1, 2, 7, 33}) {
      const int64_t n = nblocks * f.block_elems;
      for (int rep = 0; rep < 12; ++rep) bad += row_mismatches(f, weight_row(f, nblocks, rng), act_row(f, n, rng), n);
    }
    // Rows quantized from gaussian values by the formats' own quantizers.
    const int64_t n = 9 * kQK_K;
    std::vector<float> x(static_cast<size_t>(n)), y(static_cast<size_t>(n));
    for (float& v : x) v = gauss(rng);
    for (float& v : y) v = std::fabs(gauss(rng)) + 0.25f;
    std::vector<uint8_t> w(size_t(f.row_bytes(n))), a(size_t(act.row_bytes(n)));
    f.quantize_row(x.data(), w.data(), n, nullptr);
    act.quantize_row(y.data(), a.data(), n, nullptr);
    bad += row_mismatches(f, w, a, n);
    CHECK(bad == 0);
  }
}

TEST_CASE("dot vnni: adversarial blocks give the AVX2 floats bit for bit") {
  // The ends of every range: all-ones and sign-bit quant bytes (largest levels, Q8_0's
  // -128), activations at their lowest (lowest_act_quant) and 127, extreme f16 factors.
  SKIP_WITHOUT_AVX2();
  std::mt19937 rng(43);
  for (GgmlType t : kSimdFormats) {
    const BlockFormat& f = block_format(t);
    CAPTURE(f.name);
    int bad = 0;
    const int cases = for_each_adversarial_row(f, rng, [&](const auto& w, const auto& a, int64_t n) {
      bad += row_mismatches(f, w, a, n);
    });
    CHECK(cases > 100);
    CHECK(bad == 0);
  }
  // The integer sums themselves: unit scales, weights -128 and activations -127
  // everywhere (the ends of Q8_0's sign trick), exact in float.
  const BlockFormat& q8 = block_format(GgmlType::Q8_0);
  const auto w = weight_row(q8, 3, rng, 0x80, 0x3C00);
  const auto a = act_row(q8, 3 * kQK8_0, rng, -127, 1.0f);
  for (const Flavour& fl : flavours()) {
    CAPTURE(fl.name);
    CHECK(fl.row(GgmlType::Q8_0)(w.data(), a.data(), 3 * kQK8_0) == 3.0f * 32 * 128 * 127);
  }
}

TEST_CASE("dot vnni: tiles give the AVX2 one-row floats bit for bit") {
  SKIP_WITHOUT_AVX2();
  std::mt19937 rng(47);
  const int fills[] = {0x00, 0xFF, 0x80, 0x7F, -1};
  const int halves[] = {0x7BFF, 0x0001, 0x3C00, 0x8000, -1};
  for (GgmlType t : kTiledFormats) {
    const BlockFormat& f = block_format(t);
    CAPTURE(f.name);
    int bad = 0, cases = 0;
    for (int nblocks : {1, 3, 8}) {
      const int64_t n = nblocks * f.block_elems;
      for (int rep = 0; rep < 10; ++rep) {
        const std::vector<uint8_t> w[2] = {weight_row(f, nblocks, rng), weight_row(f, nblocks, rng)};
        const ActRows4 a = random_act_rows(f, n, rng);
        bad += tile_mismatches(f, w, a, n);
        ++cases;
      }
      for (int fill : fills)
        for (int half : halves) {
          const std::vector<uint8_t> w[2] = {weight_row(f, nblocks, rng, fill, half), weight_row(f, nblocks, rng)};
          const ActRows4 a = extreme_act_rows(f, n, rng);
          bad += tile_mismatches(f, w, a, n);
          ++cases;
        }
    }
    CHECK(cases > 50);
    CHECK(bad == 0);
  }
}

}  // namespace quant_dot_vnni_suite

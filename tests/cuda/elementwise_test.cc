// The element-wise CUDA kernels (quant/cuda/kernels.h) against host references: rms_norm
// against the engine's own rms_norm (engine/ops.h; within 3e-5: the sum of squares runs in
// another order), silu_mul against engine's silu, and add,
// gather_rows and scatter_add_rows exactly against plain loops (the kernels round each
// operation as the loops do). Strided rows keep padding that must come back untouched.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "engine/ops.h"
#include "support/cuda.h"
#if HEARTH_HAVE_CUDA
#include "quant/cuda/kernels.h"
#endif

namespace cuda_elementwise_suite {

using namespace hearth;
using hearth::testing::cuda_device_or_skip;

namespace {

[[maybe_unused]] std::vector<float> gaussian(size_t n, std::mt19937& rng, float sd = 1.0f) {
  std::normal_distribution<float> g(0.0f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = g(rng);
  return v;
}

}  // namespace

TEST_CASE("cuda rms_norm matches the engine's rms_norm") {
  auto dev = cuda_device_or_skip();
  if (!dev) return;
#if HEARTH_HAVE_CUDA
  std::mt19937 rng(5);
  for (int64_t dim : {100, 7168}) {
    for (bool in_place : {false, true}) {
      CAPTURE(dim);
      CAPTURE(in_place);
      const int64_t rows = 5, ldx = dim + 3, ldo = in_place ? ldx : dim + 5;
      const float eps = 1e-6f;
      std::vector<float> x = gaussian(size_t(rows * ldx), rng, 2.0f);
      for (int64_t c = 0; c < dim; ++c) x[size_t(2 * ldx + c)] = 0.0f;  // an all-zero row: eps alone
      const std::vector<float> weight = gaussian(size_t(dim), rng);
      DeviceBuffer dx = testing::upload(*dev, x), dw = testing::upload(*dev, weight);
      DeviceBuffer dout = in_place ? DeviceBuffer() : testing::upload(*dev, std::vector<float>(size_t(rows * ldo), 9.0f));
      float* out = in_place ? dx.as<float>() : dout.as<float>();
      testing::run_on(*dev, [&](void* s) {
        cuda::rms_norm(dx.as<float>(), ldx, dw.as<float>(), rows, dim, eps, out, ldo, s);
      });
      const std::vector<float> got = testing::download<float>(*dev, out, rows * ldo);
      std::vector<float> ref(static_cast<size_t>(dim));
      int bad = 0;
      for (int64_t r = 0; r < rows; ++r) {
        rms_norm(x.data() + r * ldx, weight.data(), dim, eps, ref.data());
        for (int64_t c = 0; c < ldo; ++c) {
          const float g = got[size_t(r * ldo + c)];
          if (c >= dim) {  // padding: untouched
            const float before = in_place ? x[size_t(r * ldx + c)] : 9.0f;
            if (g != before && bad++ < 5) FAIL_CHECK("padding [", r, "][", c, "] changed to ", g);
            continue;
          }
          const float e = ref[size_t(c)];
          if (!(std::fabs(g - e) <= 3e-5f * std::fabs(e) + 1e-30f) && bad++ < 5)
            FAIL_CHECK("[", r, "][", c, "]: ", g, " vs ", e);
        }
      }
      CHECK(bad == 0);
    }
  }
#endif
}

TEST_CASE("cuda silu_mul and add match host loops") {
  auto dev = cuda_device_or_skip();
  if (!dev) return;
#if HEARTH_HAVE_CUDA
  std::mt19937 rng(6);
  const int64_t n = 100003;
  std::vector<float> gate = gaussian(size_t(n), rng, 4.0f), up = gaussian(size_t(n), rng);
  gate[0] = 100.0f, gate[1] = -100.0f, gate[2] = 0.0f, gate[3] = -0.0f;  // saturation both ways
  DeviceBuffer dg = testing::upload(*dev, gate), du = testing::upload(*dev, up);
  DeviceBuffer dout = testing::upload(*dev, std::vector<float>(size_t(n + 1), 5.0f));
  testing::run_on(*dev, [&](void* s) { cuda::silu_mul(dg.as<float>(), du.as<float>(), n, dout.as<float>(), s); });
  std::vector<float> got = testing::download<float>(*dev, dout.get(), n + 1);
  int bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float e = silu(gate[size_t(i)]) * up[size_t(i)];
    const float g = got[size_t(i)];
    if (!(std::fabs(g - e) <= 1e-6f * std::fabs(e) + 1e-30f) && bad++ < 5) FAIL_CHECK("silu_mul[", i, "]: ", g, " vs ", e);
  }
  CHECK(bad == 0);
  CHECK(got[size_t(n)] == 5.0f);

  // add: y += x, exactly; the element past n untouched.
  std::vector<float> y = gaussian(size_t(n + 1), rng), x = gaussian(size_t(n), rng);
  DeviceBuffer dy = testing::upload(*dev, y), dx = testing::upload(*dev, x);
  testing::run_on(*dev, [&](void* s) { cuda::add(dy.as<float>(), dx.as<float>(), n, s); });
  got = testing::download<float>(*dev, dy.get(), n + 1);
  bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float e = y[size_t(i)] + x[size_t(i)];
    if (got[size_t(i)] != e && bad++ < 5) FAIL_CHECK("add[", i, "]: ", got[size_t(i)], " vs ", e);
  }
  CHECK(bad == 0);
  CHECK(got[size_t(n)] == y[size_t(n)]);
#endif
}

TEST_CASE("cuda gather_rows and scatter_add_rows with repeated indices") {
  auto dev = cuda_device_or_skip();
  if (!dev) return;
#if HEARTH_HAVE_CUDA
  std::mt19937 rng(7);
  const int64_t cols = 1000, src_rows = 9, ld_src = cols + 7, ld_dst = cols + 2;
  const std::vector<int32_t> idx = {3, 0, 3, 8, 3, 1, 0, 7, 3, 5, 2};  // 3 four times, 0 twice
  const int64_t n = int64_t(idx.size());
  const std::vector<float> src = gaussian(size_t(src_rows * ld_src), rng);
  DeviceBuffer dsrc = testing::upload(*dev, src), didx = testing::upload(*dev, idx);

  // gather: dst row i = src row idx[i], padding untouched.
  DeviceBuffer dg = testing::upload(*dev, std::vector<float>(size_t(n * ld_dst), 4.0f));
  testing::run_on(*dev, [&](void* s) {
    cuda::gather_rows(dsrc.as<float>(), ld_src, didx.as<int32_t>(), n, cols, dg.as<float>(), ld_dst, s);
  });
  std::vector<float> got = testing::download<float>(*dev, dg.get(), n * ld_dst);
  int bad = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < ld_dst; ++c) {
      const float e = c < cols ? src[size_t(idx[size_t(i)] * ld_src + c)] : 4.0f;
      if (got[size_t(i * ld_dst + c)] != e && bad++ < 5) FAIL_CHECK("gather [", i, "][", c, "]");
    }
  CHECK(bad == 0);

  // scatter_add: rows of `rows_src` (n rows, stride ld_src) into 9 destination rows, in
  // index order, with weights and without (nullptr: weight 1).
  const std::vector<float> contrib = gaussian(size_t(n * ld_src), rng);
  const std::vector<float> weight = gaussian(size_t(n), rng);
  const std::vector<float> dst0 = gaussian(size_t(src_rows * ld_dst), rng);
  DeviceBuffer dc = testing::upload(*dev, contrib), dwt = testing::upload(*dev, weight);
  for (bool weighted : {true, false}) {
    CAPTURE(weighted);
    DeviceBuffer dd = testing::upload(*dev, dst0);
    testing::run_on(*dev, [&](void* s) {
      cuda::scatter_add_rows(dc.as<float>(), ld_src, didx.as<int32_t>(), weighted ? dwt.as<float>() : nullptr, n, cols,
                             dd.as<float>(), ld_dst, s);
    });
    got = testing::download<float>(*dev, dd.get(), src_rows * ld_dst);
    std::vector<float> ref = dst0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < cols; ++c) {
        const float p = (weighted ? weight[size_t(i)] : 1.0f) * contrib[size_t(i * ld_src + c)];
        float& d = ref[size_t(idx[size_t(i)] * ld_dst + c)];
        d = d + p;
      }
    bad = 0;
    for (size_t k = 0; k < ref.size(); ++k)
      if (got[k] != ref[k] && bad++ < 5) FAIL_CHECK("scatter_add value ", k, ": ", got[k], " vs ", ref[k]);
    CHECK(bad == 0);
  }
#endif
}

}  // namespace cuda_elementwise_suite

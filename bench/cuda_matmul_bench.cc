// Throughput of cuda::matmul per weight format: GB/s of weight bytes streamed for one and
// eight activation rows (the GEMV kernel, decode), times for 24 rows (three GEMV passes)
// and 25 (the tiled kernel, from kTiledMinRows on), TFLOP/s for 64 rows, and TFLOP/s for
// 128 and 512 rows (prefill) with the kernels and with GemmPolicy::kCublasBf16 (dequantize
// to bf16 + cuBLAS, quant/cuda/gemm_policy.h), as a markdown table. Times are the median over --reps launches, each timed by a pair of CUDA events
// (CudaDevice's trace). The launches are enqueued while the stream waits behind other
// work, so they run back to back and the times are the kernels' own; "host us" is what one
// cuda::matmul call (through Device::launch) costs the calling thread.
//
// Each format's weight is one random matrix (random block bytes: kernel speed does not
// depend on the values) copied into the device as many times as fills --ring-mb, and
// successive launches cycle through the copies, so a matrix smaller than the L2 cache is
// not read from the cache.
//
//   cuda_matmul_bench [--rows 8192] [--cols 8192] [--reps 100] [--ring-mb 512]
// Exits 0 with "skipped: no GPU" when there is no CUDA device.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "offload/device.h"
#include "quant/cuda/kernels.h"
#include "quant/dtype.h"
#include "quant/numbers.h"

using namespace hearth;

namespace {

struct Options {
  int64_t rows = 8192, cols = 8192, reps = 100, ring_mb = 512;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> int64_t {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "cuda_matmul_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      const int64_t v = std::atoll(argv[++i]);
      if (v <= 0) {
        std::fprintf(stderr, "cuda_matmul_bench: %s must be positive\n", a.c_str());
        std::exit(2);
      }
      return v;
    };
    if (a == "--rows") o.rows = value();
    else if (a == "--cols") o.cols = value();
    else if (a == "--reps") o.reps = value();
    else if (a == "--ring-mb") o.ring_mb = value();
    else {
      std::fprintf(stderr, "cuda_matmul_bench: unknown option %s\n", a.c_str());
      std::exit(2);
    }
  }
  if (o.cols % 256 != 0) {
    std::fprintf(stderr, "cuda_matmul_bench: --cols must be a multiple of 256 (K-quant blocks)\n");
    std::exit(2);
  }
  return o;
}

uint64_t next(uint64_t& s) {  // xorshift64
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

// Random contents: float formats get values in [-1, 1) (no NaN or infinity), block formats
// random bytes.
std::vector<uint8_t> random_weight(DType t, int64_t rows, int64_t cols, uint64_t seed) {
  const int64_t bytes = rows * row_bytes(t, cols);
  std::vector<uint8_t> out(size_t(bytes + 8));
  uint64_t s = seed | 1;
  auto uniform = [&] { return float(int64_t(next(s) >> 40) - (int64_t(1) << 23)) / float(1 << 23); };
  const int64_t count = rows * cols;
  switch (t) {
    case DType::F32: {
      float* p = reinterpret_cast<float*>(out.data());
      for (int64_t i = 0; i < count; ++i) p[i] = uniform();
      break;
    }
    case DType::F16:
    case DType::BF16: {
      uint16_t* p = reinterpret_cast<uint16_t*>(out.data());
      for (int64_t i = 0; i < count; ++i) p[i] = t == DType::F16 ? f32_to_f16(uniform()) : f32_to_bf16(uniform());
      break;
    }
    case DType::F8_E4M3:
      for (int64_t i = 0; i < count; ++i) out[size_t(i)] = f32_to_fp8_e4m3(uniform());
      break;
    default:
      for (int64_t i = 0; i < bytes; i += 8) {
        const uint64_t v = next(s);
        std::memcpy(out.data() + i, &v, 8);
      }
      break;
  }
  out.resize(size_t(bytes));
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  if (!cuda_compiled() || !cuda_device_present()) {
    std::printf("skipped: no GPU\n");
    return 0;
  }
  try {
    std::unique_ptr<Device> dev = make_cuda_device();
    const DType formats[] = {DType::F32,  DType::F16,  DType::BF16, DType::F8_E4M3, DType::Q8_0,  DType::Q4_0,
                             DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::IQ4_NL,  DType::Q2_K,  DType::Q3_K,
                             DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::IQ4_XS};
    const int64_t kMaxN = 512;
    const int64_t ns[] = {1, 8, 24, 25, 64};
    // Prefill: (n, policy) for the TFLOP/s columns after the kernels' n = 64.
    cuda::GemmOptions cublas;
    cublas.policy = cuda::GemmPolicy::kCublasBf16;
    const std::pair<int64_t, cuda::GemmOptions> prefill[] = {
        {128, cuda::GemmOptions{}}, {128, cublas}, {512, cuda::GemmOptions{}}, {512, cublas}};
    DeviceBuffer x(*dev, kMaxN * o.cols * 4), y(*dev, kMaxN * o.rows * 4);
    const int64_t kBusy = int64_t(64) << 20;  // floats per operand of the blocking adds
    DeviceBuffer busy(*dev, 2 * kBusy * 4);
    const StreamId blocker = dev->create_stream("blocker");
    {
      std::vector<float> hx(size_t(kMaxN * o.cols));
      uint64_t s = 12345;
      for (float& v : hx) v = float(int64_t(next(s) >> 40) - (int64_t(1) << 23)) / float(1 << 23);
      dev->copy_to_device(0, x.get(), hx.data(), x.bytes(), "x");
      dev->synchronize();
    }
    for (int i = 0; i < 2000; ++i)  // ~0.3 s of work first: clocks up before anything is timed
      dev->launch(blocker, "warm-up", [&](void* s) { cuda::add(busy.as<float>(), busy.as<float>() + kBusy, kBusy, s); });
    dev->synchronize();
    std::printf("# cuda::matmul on %s: %lld x %lld weights, median of %lld launches\n\n", dev->name().c_str(),
                (long long)o.rows, (long long)o.cols, (long long)o.reps);
    std::printf("| format | weight MB | n=1 us | n=1 GB/s | n=8 us | n=8 GB/s | n=24 us | n=25 us | n=64 us | n=64 TFLOP/s | host us "
                "| n=128 kernels TFLOP/s | n=128 cublas-bf16 TFLOP/s | n=512 kernels TFLOP/s | n=512 cublas-bf16 TFLOP/s |\n");
    std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (DType t : formats) {
      const int64_t wbytes = o.rows * row_bytes(t, o.cols);
      const std::vector<uint8_t> host = random_weight(t, o.rows, o.cols, 0x9e3779b97f4a7c15ull + uint64_t(t));
      const int64_t copies = std::max<int64_t>(1, (o.ring_mb << 20) / wbytes);
      const int64_t stride = (wbytes + 255) / 256 * 256;
      DeviceBuffer ring(*dev, copies * stride);
      for (int64_t c = 0; c < copies; ++c)
        dev->copy_to_device(0, ring.as<uint8_t>() + c * stride, host.data(), wbytes, "weight");
      DeviceBuffer scales;
      WeightMatrix w;
      w.dtype = t;
      w.rows = o.rows;
      w.cols = o.cols;
      if (t == DType::F8_E4M3) {
        const int64_t count = ((o.rows + 127) / 128) * ((o.cols + 127) / 128);
        std::vector<float> hs(size_t(count), 1.0f / 64);
        scales = DeviceBuffer(*dev, count * 4);
        dev->copy_to_device(0, scales.get(), hs.data(), count * 4, "scales");
        w.scale = scales.as<float>();
      }
      dev->synchronize();
      int64_t launch = 0;
      // Median kernel time (us) of n activation rows under `gemm`; host_us: one call's cost
      // to the calling thread.
      auto measure = [&](int64_t n, const cuda::GemmOptions& gemm, double& host_us) {
        auto run_once = [&](const char* label) {
          w.data = ring.as<uint8_t>() + (launch++ % copies) * stride;
          dev->launch(0, label,
                      [&](void* s) { cuda::matmul(w, x.as<float>(), o.cols, n, y.as<float>(), o.rows, s, gemm); });
        };
        for (int i = 0; i < 3; ++i) run_once("warm-up");
        dev->synchronize();
        dev->set_tracing(true);
        dev->clear_trace();
        // Hold the compute stream behind ~20 ms of adds on another stream (which also keeps
        // the GPU's clocks up: an idle GPU runs at a fraction of its clock for a while).
        for (int i = 0; i < 128; ++i)
          dev->launch(blocker, "block", [&](void* s) { cuda::add(busy.as<float>(), busy.as<float>() + kBusy, kBusy, s); });
        const EventId go = dev->record_event(blocker);
        dev->wait_event(0, go);
        const auto t0 = std::chrono::steady_clock::now();
        for (int64_t i = 0; i < o.reps; ++i) run_once("matmul");
        host_us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / double(o.reps);
        dev->release_event(go);
        std::vector<double> times;
        for (const DeviceOp& op : dev->trace())
          if (op.kind == DeviceOp::Kind::kKernel && op.label == "matmul") times.push_back(op.end_us - op.start_us);
        dev->set_tracing(false);
        return median(times);
      };
      double us[5] = {}, host_us[5] = {}, prefill_tflops[4] = {};
      for (int k = 0; k < 5; ++k) us[k] = measure(ns[k], cuda::GemmOptions{}, host_us[k]);
      for (int k = 0; k < 4; ++k) {
        double unused = 0;
        const double t_us = measure(prefill[k].first, prefill[k].second, unused);
        prefill_tflops[k] =
            t_us > 0 ? 2.0 * double(o.rows) * double(o.cols) * double(prefill[k].first) / (t_us * 1e6) : 0.0;
      }
      auto gbs = [&](double t_us) { return t_us > 0 ? double(wbytes) / (t_us * 1e3) : 0.0; };
      const double tflops = us[4] > 0 ? 2.0 * double(o.rows) * double(o.cols) * 64 / (us[4] * 1e6) : 0.0;
      std::printf("| %s | %.1f | %.1f | %.0f | %.1f | %.0f | %.1f | %.1f | %.1f | %.2f | %.1f | %.2f | %.2f | %.2f | %.2f |\n",
                  std::string(dtype_name(t)).c_str(), double(wbytes) / 1e6, us[0], gbs(us[0]), us[1], gbs(us[1]),
                  us[2], us[3], us[4], tflops, host_us[0], prefill_tflops[0], prefill_tflops[1], prefill_tflops[2],
                  prefill_tflops[3]);
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cuda_matmul_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}

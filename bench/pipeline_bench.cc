// pipeline_bench [--layers 16] [--layer-mb 8] [--compute-ms 2] [--links 2,4,8,16,25] [--latency-us 10] [--repeat 3] [--trace FILE]
// The double-buffered layer pipeline (offload/layer_pipeline.h) on the simulated device:
// for each modelled link speed, N layers each upload --layer-mb while the previous layer
// "computes" for --compute-ms (a sleep). Prints a markdown table: the modelled copy time,
// the pass's time against the serial sum, and how much of the copying the device's own
// timestamps show hidden behind compute. Each speed gets one warm-up pass and --repeat
// measured passes; the fastest is shown (the others differ by the machine's noise).
// --trace writes a Chrome trace (chrome://tracing,
// Perfetto) of the first link speed's fastest pass, with the staging thread's memcpys.
//
// The simulated link cannot be faster than the host's memcpy: where a layer's copy takes
// longer than modelled, the "copy ms" column shows the time it really took.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <cxxopts.hpp>

#include "offload/layer_pipeline.h"
#include "offload/sim_device.h"
#include "offload/trace.h"

namespace {

std::vector<double> parse_links(const std::string& s) {
  std::vector<double> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) {
    double v = 0;
    try {
      v = std::stod(item);
    } catch (const std::exception&) {
      throw std::invalid_argument("--links: not a number: '" + item + "'");
    }
    if (!(v > 0)) throw std::invalid_argument("--links: link speeds must be positive, got " + item);
    out.push_back(v);
  }
  if (out.empty()) throw std::invalid_argument("--links: no link speeds");
  return out;
}

int run(int argc, char** argv) {
  cxxopts::Options opts(argv[0], "Copy/compute overlap of the layer pipeline on the simulated device.");
  opts.add_options()
      ("layers", "layers per pass", cxxopts::value<int>()->default_value("16"))
      ("layer-mb", "bytes uploaded per layer (MB, 1e6 bytes)", cxxopts::value<double>()->default_value("8"))
      ("compute-ms", "compute time per layer (a sleep)", cxxopts::value<double>()->default_value("2"))
      ("links", "modelled link speeds, GB/s (comma-separated)", cxxopts::value<std::string>()->default_value("2,4,8,16,25"))
      ("latency-us", "modelled latency of every copy", cxxopts::value<double>()->default_value("10"))
      ("repeat", "measured passes per link speed (the fastest is shown)", cxxopts::value<int>()->default_value("3"))
      ("trace", "write a Chrome trace of the first link speed's pass to FILE", cxxopts::value<std::string>())
      ("h,help", "show this help");
  const auto args = opts.parse(argc, argv);
  if (args.count("help")) {
    std::printf("%s", opts.help().c_str());
    return 0;
  }
  const int layers = args["layers"].as<int>();
  const double layer_mb = args["layer-mb"].as<double>(), compute_ms = args["compute-ms"].as<double>();
  if (layers < 1) throw std::invalid_argument("--layers: must be at least 1");
  if (!(layer_mb > 0)) throw std::invalid_argument("--layer-mb: must be positive");
  if (!(compute_ms >= 0)) throw std::invalid_argument("--compute-ms: must not be negative");
  const int repeat = args["repeat"].as<int>();
  if (repeat < 1) throw std::invalid_argument("--repeat: must be at least 1");
  const std::vector<double> links = parse_links(args["links"].as<std::string>());
  const int64_t layer_bytes = int64_t(layer_mb * 1e6);

  // Each layer's "experts": one region of distinct bytes (written once, so the staging
  // memcpys read touched memory).
  std::vector<std::vector<uint8_t>> weights(static_cast<size_t>(layers), std::vector<uint8_t>(static_cast<size_t>(layer_bytes)));
  for (int l = 0; l < layers; ++l) std::memset(weights[size_t(l)].data(), l + 1, size_t(layer_bytes));
  std::vector<hearth::LayerRegions> regions;
  for (const auto& w : weights) regions.push_back({{w.data(), int64_t(w.size())}});

  std::printf("%d layers x %.3g MB, compute %.3g ms per layer, copy latency %.3g us\n\n", layers, layer_mb, compute_ms,
              args["latency-us"].as<double>());
  std::printf("| link GB/s | copy ms (modelled) | copy ms | compute ms | pass ms | serial ms | speedup | overlapped ms | overlap %% |\n");
  std::printf("|----------:|-------------------:|--------:|-----------:|--------:|----------:|--------:|--------------:|----------:|\n");
  for (size_t i = 0; i < links.size(); ++i) {
    hearth::SimulatedDeviceOptions o;
    o.link_gbps = links[i];
    o.link_latency_us = args["latency-us"].as<double>();
    o.memory_bytes = std::max<int64_t>(int64_t(1) << 30, 4 * layer_bytes);
    auto dev = hearth::make_simulated_device(o);
    hearth::HostClock clock;  // made right after the device: the same zero, within microseconds
    hearth::LayerPipelineOptions po;
    po.host_clock = &clock;
    hearth::LayerPipeline pipe(*dev, hearth::LayerPipeline::capacity_for(regions), po);
    auto pass = [&] {
      return pipe.run(regions, [compute_ms](const hearth::LayerSlot&, void*) {
        std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(compute_ms));
      });
    };
    pass();  // warm-up: threads started, caches and pages warm
    hearth::LayerPipelineStats st = pass();
    for (int r = 1; r < repeat; ++r) {
      hearth::LayerPipelineStats next = pass();
      if (next.wall_us < st.wall_us) st = std::move(next);
    }
    // Per layer: the copies' and kernels' own durations from the trace.
    double copy_sum = 0, compute_sum = 0;
    for (const auto& op : st.ops)
      (op.kind == hearth::DeviceOp::Kind::kKernel ? compute_sum : copy_sum) += op.end_us - op.start_us;
    const double modelled_ms = (o.link_latency_us + double(layer_bytes) / (o.link_gbps * 1e3)) / 1e3;
    const double serial_ms = (copy_sum + compute_sum) / 1e3;
    std::printf("| %9.3g | %18.3f | %7.3f | %10.3f | %7.1f | %9.1f | %6.2fx | %13.1f | %8.1f %% |\n", links[i], modelled_ms,
                copy_sum / 1e3 / layers, compute_sum / 1e3 / layers, st.wall_us / 1e3, serial_ms,
                serial_ms / (st.wall_us / 1e3), st.overlap.overlapped_us / 1e3, st.overlap.fraction() * 100);
    if (i == 0 && args.count("trace")) {
      const std::string path = args["trace"].as<std::string>();
      hearth::write_chrome_trace(path, *dev, st.ops, st.host);
      std::fprintf(stderr, "trace of the %g GB/s pass: %s (%zu device ops, %zu host spans)\n", links[i], path.c_str(),
                   st.ops.size(), st.host.size());
    }
  }
  std::printf("\noverlap %% = copy time during compute / the shorter of copy and compute (device timestamps); "
              "serial = the sum of both\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pipeline_bench: %s\n", e.what());
    return 1;
  }
}

#include "cli/offload_flags.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "cli/numa_flags.h"
#include "engine/kv_cache.h"
#include "offload/byte_size.h"

namespace hearth::cli {

void add_offload_options(cxxopts::Options& opts) {
  opts.add_options("offload")
      ("offload", "run attention, shared experts and the hottest routed experts on a device: cuda or sim (simulated)",
       cxxopts::value<std::string>(), "DEVICE")
      ("gpu-mem", "device memory the placement may use, e.g. 24G (default: the device's free memory less a reserve)",
       cxxopts::value<std::string>(), "SIZE")
      ("place", "put the items whose name matches REGEX on the gpu or the cpu (repeatable; see hearth plan)",
       cxxopts::value<std::vector<std::string>>(), "REGEX=gpu|cpu")
      ("expert-profile", "rank routed experts by this profile (hearth profile-experts) when filling the device",
       cxxopts::value<std::string>(), "FILE")
      ("trace", "write a Chrome trace (chrome://tracing, Perfetto) of the device's copies and kernels", cxxopts::value<std::string>(),
       "FILE")
      ("sim-link", "--offload sim: the simulated host<->device link in GB/s", cxxopts::value<double>()->default_value("25"))
      ("stream-rows", "stream a layer's non-resident experts to the device for chunks of at least N rows "
       "(default: when the cost model says it is faster than the CPU)", cxxopts::value<int64_t>()->default_value("0"))
      ("cuda-gemm", "--offload cuda: multiply prefill chunks with hearth's fp32 kernels or, from 32 rows on, with cuBLAS "
       "on bf16 copies of the weight and activations: kernels or cublas-bf16 (default kernels)",
       cxxopts::value<std::string>(), "POLICY");
}

std::optional<OffloadOptions> parse_offload_flags(const cxxopts::ParseResult& args, int threads, int64_t ctx) {
  if (!args.count("offload")) {
    for (const char* f : {"gpu-mem", "place", "expert-profile", "trace"})
      if (args.count(f)) throw std::invalid_argument(std::string("--") + f + " needs --offload cuda|sim");
    if (args.count("cuda-gemm")) throw std::invalid_argument("--cuda-gemm needs --offload cuda");
    return std::nullopt;
  }
  OffloadOptions o;
  o.device = args["offload"].as<std::string>();
  if (o.device != "cuda" && o.device != "sim")
    throw std::invalid_argument("--offload: unknown device '" + o.device + "' (expected cuda or sim)");
  if (args.count("gpu-mem")) {
    try {
      o.gpu_mem = parse_byte_size(args["gpu-mem"].as<std::string>());
    } catch (const std::exception& e) {
      throw std::invalid_argument(std::string("--gpu-mem: ") + e.what());
    }
    if (o.gpu_mem == 0) throw std::invalid_argument("--gpu-mem: must be more than 0 with --offload");
  }
  if (args.count("place")) o.place = args["place"].as<std::vector<std::string>>();
  for (const std::string& p : o.place) {
    try {
      (void)parse_place_override(p);
    } catch (const std::exception& e) {
      throw std::invalid_argument(std::string("--place: ") + e.what());
    }
  }
  if (args.count("expert-profile")) o.expert_profile = args["expert-profile"].as<std::string>();
  if (args.count("trace")) o.trace_file = args["trace"].as<std::string>();
  if (args.count("cuda-gemm")) {
    const std::string v = args["cuda-gemm"].as<std::string>();
    const std::optional<cuda::GemmPolicy> p = cuda::parse_gemm_policy(v);
    if (!p) throw std::invalid_argument("--cuda-gemm: unknown policy '" + v + "' (expected kernels or cublas-bf16)");
    if (!cuda_compiled()) throw std::invalid_argument("--cuda-gemm: this build has no CUDA backend");
    if (o.device != "cuda") throw std::invalid_argument("--cuda-gemm " + v + " needs --offload cuda");
    o.cuda_gemm.policy = *p;
  }
  o.sim.link_gbps = args["sim-link"].as<double>();
  if (!(o.sim.link_gbps > 0)) throw std::invalid_argument("--sim-link: must be a positive GB/s figure");
  o.tuning.force_stream_rows = args["stream-rows"].as<int64_t>();
  if (o.tuning.force_stream_rows < 0) throw std::invalid_argument("--stream-rows: must be 0 or more");
  o.tuning.link_gbps = o.sim.link_gbps;
  o.threads = threads;
  o.ctx = ctx > 0 ? ctx : 4096;
  return o;
}

SchedulerSetup scheduler_setup(const cxxopts::ParseResult& args, Model& model, int threads, int64_t context,
                               int64_t kv_budget_bytes, int64_t max_running) {
  SchedulerSetup s;
  s.batch.threads = threads;
  s.batch.context = context;
  s.batch.kv_budget_bytes = kv_budget_bytes;
  s.batch.max_running = max_running;
  std::optional<OffloadOptions> o = parse_offload_flags(args, threads, 0);
  if (!o) {
    s.numa = shard_experts(parse_numa_flag(args), model, threads);
    s.batch.numa_experts = s.numa.get();
    return s;
  }
  (void)parse_numa_flag(args, true);  // rejects a topology given with --offload
  const int64_t budget = kv_budget_bytes > 0 ? kv_budget_bytes : default_kv_budget();
  o->ctx = std::max<int64_t>(1, budget / KvCache(model.config()).bytes_per_token());
  o->batch = 1;
  s.offload = Offload::create(model, *o);
  std::fprintf(stderr, "%s\n", s.offload->summary().c_str());
  s.batch.offload = &s.offload->forward();
  return s;
}

}  // namespace hearth::cli

// hearth plan: what a GPU of a given size would hold (offload/placement.h) and the
// memory/link roofline of the resulting split, before anything is uploaded.
#include <algorithm>
#include <cstdio>
#include <cxxopts.hpp>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/flag_errors.h"
#include "engine/model.h"
#include "engine/placement_items.h"
#include "offload/bandwidth.h"
#include "offload/byte_size.h"
#include "offload/device.h"
#include "offload/placement.h"
#include "offload/thread_pool.h"

namespace hearth::cli {

namespace {

// Stated defaults for what hearth cannot measure here: the GPU's own memory bandwidth (no
// device query for it) and the host link (PCIe 4.0 x16 is ~25 GB/s each way in practice).
constexpr double kDefaultGpuGbps = 1000.0;
constexpr double kDefaultLinkGbps = 25.0;
constexpr double kDefaultLinkLatencyUs = 10.0;

double positive_flag(const cxxopts::ParseResult& args, const char* flag) {
  const double v = args[flag].as<double>();
  if (!(v > 0) || v > 1e6) throw std::invalid_argument(std::string("--") + flag + ": must be a positive number of GB/s");
  return v;
}

// "1-2: 16, 3: 8" (layers with the same count run together; only layers with experts).
std::string per_layer_summary(const PlacementPlan& plan) {
  std::vector<std::pair<int64_t, int64_t>> layers;  // (layer, experts on the GPU)
  std::vector<int64_t> gpu = plan.gpu_experts_per_layer();
  std::vector<bool> has(gpu.size(), false);
  for (const PlacementDecision& d : plan.decisions())
    if (d.item.kind == TensorKind::kRoutedExpert && d.item.layer >= 0) has[size_t(d.item.layer)] = true;
  for (size_t l = 0; l < gpu.size(); ++l)
    if (has[l]) layers.push_back({int64_t(l), gpu[l]});
  std::string out;
  for (size_t i = 0; i < layers.size();) {
    size_t j = i;
    while (j + 1 < layers.size() && layers[j + 1].first == layers[j].first + 1 && layers[j + 1].second == layers[i].second) ++j;
    out += (out.empty() ? "" : ", ") + std::to_string(layers[i].first) +
           (j > i ? "-" + std::to_string(layers[j].first) : "") + ": " + std::to_string(layers[i].second);
    i = j + 1;
  }
  return out;
}

std::string gbps_text(double gbps) {
  char buf[32];
  std::snprintf(buf, sizeof buf, gbps >= 100 ? "%.0f" : "%.1f", gbps);
  return buf;
}

void print_step(const char* label, const StepEstimate& s) {
  std::printf("  %-22s %10.2f tok/s   per step: GPU %s in %.3f ms, CPU %s in %.3f ms, link %lld transfers in %.3f ms\n",
              label, s.tokens_per_s(), format_bytes(s.gpu_bytes).c_str(), s.gpu_s * 1e3,
              format_bytes(s.cpu_bytes).c_str(), s.cpu_s * 1e3, (long long)s.link_transfers, s.link_s * 1e3);
}

nlohmann::json step_json(const StepEstimate& s) {
  return {{"tokens", s.tokens},       {"tokens_per_s", s.tokens_per_s()}, {"seconds", s.seconds()},
          {"gpu_bytes", s.gpu_bytes}, {"cpu_bytes", s.cpu_bytes},         {"link_bytes", s.link_bytes},
          {"link_transfers", s.link_transfers}, {"gpu_s", s.gpu_s},       {"cpu_s", s.cpu_s},
          {"link_s", s.link_s}};
}

}  // namespace

int cmd_plan(int argc, char** argv) {
  cxxopts::Options opts(argv[0],
                        "Plan which weights a GPU of --gpu-mem bytes would hold (KV cache, attention, shared experts,\n"
                        "dense layers, head and routers first, then the most used routed experts) and estimate the\n"
                        "decode and prefill throughput of that split from memory and link bandwidths.");
  opts.add_options()
      ("m,model", "model directory (config.json + safetensors) or .gguf file", cxxopts::value<std::string>())
      ("gpu-mem", "GPU memory the plan may use, e.g. 24G, 80G, 512M (0: no GPU)", cxxopts::value<std::string>(), "SIZE")
      ("ctx", "context the KV cache is planned for, per sequence", cxxopts::value<int64_t>()->default_value("32768"))
      ("batch", "sequences decoding together (KV cache and decode estimate)", cxxopts::value<int64_t>()->default_value("1"))
      ("place", "REGEX=gpu|cpu: items whose name matches go there first (repeatable; first match wins; names: "
                "kv_cache, token_embd, output, blk.L.attn, blk.L.ffn, blk.L.ffn_shexp, blk.L.ffn_gate_inp, "
                "blk.L.ffn_exps.E)", cxxopts::value<std::vector<std::string>>(), "REGEX=WHERE")
      ("profile", "expert profile from hearth profile-experts: the most used experts go to the GPU first",
       cxxopts::value<std::string>(), "FILE")
      ("expert-profile", "the same as --profile (the name the offload flags use)", cxxopts::value<std::string>(), "FILE")
      ("cpu-bw", "CPU memory read bandwidth in GB/s (default: measured now with -t threads)", cxxopts::value<double>(),
       "GBPS")
      ("gpu-bw", "GPU memory read bandwidth in GB/s", cxxopts::value<double>()->default_value(gbps_text(kDefaultGpuGbps)),
       "GBPS")
      ("link-bw", "host<->GPU link bandwidth in GB/s, each way",
       cxxopts::value<double>()->default_value(gbps_text(kDefaultLinkGbps)), "GBPS")
      ("link-latency", "latency of one host<->GPU transfer in microseconds",
       cxxopts::value<double>()->default_value(gbps_text(kDefaultLinkLatencyUs)), "US")
      ("t,threads", "threads for measuring the CPU bandwidth (default: one per physical core)",
       cxxopts::value<int>()->default_value("0"))
      ("json", "print one JSON object (the plan with every item, the assumptions and the estimates)")
      ("h,help", "show this help");
  const auto args = parse_flags(opts, argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", opts.help().c_str());
    return 0;
  }
  if (!args.unmatched().empty()) throw std::invalid_argument("unexpected argument '" + args.unmatched()[0] + "'");
  for (const char* req : {"model", "gpu-mem"})
    if (!args.count(req)) throw std::invalid_argument(std::string("--") + req + " is required (see --help)");
  const std::string gpu_mem_text = args["gpu-mem"].as<std::string>();
  int64_t budget = 0;
  try {
    budget = parse_byte_size(gpu_mem_text);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("--gpu-mem: ") + e.what());
  }
  const int64_t ctx = args["ctx"].as<int64_t>(), batch = args["batch"].as<int64_t>();
  if (ctx < 1) throw std::invalid_argument("--ctx: must be at least 1");
  if (batch < 1 || batch > 65536) throw std::invalid_argument("--batch: must be between 1 and 65536");
  const int threads = args["threads"].as<int>();
  if (threads < 0 || threads > 4096) throw std::invalid_argument("--threads: must be between 0 and 4096");
  std::vector<PlaceOverride> overrides;
  if (args.count("place"))
    for (const std::string& p : args["place"].as<std::vector<std::string>>()) {
      try {
        overrides.push_back(parse_place_override(p));
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(std::string("--place: ") + e.what());
      }
    }
  if (args.count("profile") && args.count("expert-profile"))
    throw std::invalid_argument("--profile and --expert-profile are the same flag: give one");
  std::optional<ExpertProfile> profile;
  for (const char* flag : {"profile", "expert-profile"})
    if (args.count(flag)) {
      try {
        profile = ExpertProfile::load(args[flag].as<std::string>());
      } catch (const std::exception& e) {
        throw std::invalid_argument(std::string("--") + flag + ": " + e.what());
      }
    }
  Roofline roof;
  roof.gpu_read_gbps = positive_flag(args, "gpu-bw");
  roof.link_gbps = positive_flag(args, "link-bw");
  roof.link_latency_us = args["link-latency"].as<double>();
  if (!(roof.link_latency_us >= 0) || roof.link_latency_us > 1e6)
    throw std::invalid_argument("--link-latency: must be a non-negative number of microseconds");

  const std::string model_path = args["model"].as<std::string>();
  const Model model = Model::load(model_path);
  const ModelConfig& c = model.config();
  if (ctx > c.max_position_embeddings)
    throw std::invalid_argument("--ctx " + std::to_string(ctx) + " exceeds the model's context of " +
                                std::to_string(c.max_position_embeddings));

  PlanRequest req;
  req.items = placement_items(model, ctx, batch);
  req.gpu_budget_bytes = budget;
  req.overrides = overrides;
  req.profile = profile ? &*profile : nullptr;
  PlacementPlan plan;
  try {
    plan = plan_placement(req);
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    if (what.starts_with("the KV cache"))
      throw std::invalid_argument("--gpu-mem " + gpu_mem_text + ": " + what + " (for --ctx " + std::to_string(ctx) +
                                  ", --batch " + std::to_string(batch) + ")");
    if (what.starts_with("the overrides")) throw std::invalid_argument("--place: " + what);
    if (what.starts_with("expert profile")) throw std::invalid_argument("--profile: " + what);
    throw;
  }

  std::string cpu_bw_source;
  if (args.count("cpu-bw")) {
    roof.cpu_read_gbps = positive_flag(args, "cpu-bw");
    cpu_bw_source = "given";
  } else {
    ThreadPool pool(threads);
    const BandwidthResult bw = measure_read_bandwidth(pool);
    roof.cpu_read_gbps = bw.bytes_per_second / 1e9;
    cpu_bw_source = "measured, " + std::to_string(bw.threads) + " threads";
  }
  const std::string gpu_bw_source = args["gpu-bw"].count() ? "given" : "assumed default; pass --gpu-bw for your GPU";
  const std::string link_source = args["link-bw"].count() || args["link-latency"].count() ? "given" : "assumed default";
  const ThroughputEstimate est = predict(plan, roof, model_shape(c), batch, req.profile);

  const int64_t kv = req.items[0].bytes;
  const int64_t experts_total = plan.count(TensorKind::kRoutedExpert, Where::kGpu) + plan.count(TensorKind::kRoutedExpert, Where::kCpu);
  const int64_t experts_gpu = plan.count(TensorKind::kRoutedExpert, Where::kGpu);
  std::string device_note;
  if (cuda_device_present()) {
    try {
      const auto dev = make_cuda_device();
      device_note = dev->name() + ", " + format_bytes(double(dev->total_memory())) + " total, " +
                    format_bytes(double(dev->free_memory())) + " free";
    } catch (const std::exception& e) {
      device_note = std::string("CUDA device not usable: ") + e.what();
    }
  }

  if (args.count("json")) {
    const nlohmann::json j = {
        {"model", model_path},
        {"ctx", ctx},
        {"batch", batch},
        {"gpu_budget_bytes", budget},
        {"kv_cache_bytes", kv},
        {"profile", profile ? nlohmann::json(profile->source) : nlohmann::json(nullptr)},
        {"device", device_note},
        {"roofline",
         {{"cpu_read_gbps", roof.cpu_read_gbps},
          {"cpu_read_source", cpu_bw_source},
          {"gpu_read_gbps", roof.gpu_read_gbps},
          {"gpu_read_source", gpu_bw_source},
          {"link_gbps", roof.link_gbps},
          {"link_latency_us", roof.link_latency_us},
          {"link_source", link_source}}},
        {"estimate", {{"decode", step_json(est.decode)}, {"prefill", step_json(est.prefill)}}},
        {"plan", plan.to_json()}};
    std::printf("%s\n", j.dump(1).c_str());
  } else {
    std::printf("model       %s (%s, %lld layers, %lld routed experts, top-%lld)\n", model_path.c_str(),
                c.model_type.c_str(), (long long)c.num_hidden_layers, (long long)c.n_routed_experts,
                (long long)c.num_experts_per_tok);
    std::printf("GPU budget  %s (%lld bytes)%s\n", format_bytes(double(budget)).c_str(), (long long)budget,
                budget == 0 ? ": no GPU, everything on the CPU" : "");
    if (!device_note.empty()) std::printf("device      %s\n", device_note.c_str());
    std::printf("KV cache    %s for --ctx %lld x --batch %lld\n", format_bytes(double(kv)).c_str(), (long long)ctx,
                (long long)batch);
    if (profile)
      std::printf("profile     %s (%lld tokens): most used routed experts first\n", profile->source.c_str(),
                  (long long)profile->tokens);
    else
      std::printf("profile     none: routed experts fill the GPU layer by layer, expert by expert\n");
    std::printf("\n%s\n", plan.table().c_str());
    std::printf("GPU used    %s of the %s budget\n", format_bytes(double(plan.bytes(Where::kGpu))).c_str(),
                format_bytes(double(budget)).c_str());
    if (experts_total > 0)
      std::printf("routed experts on the GPU: %lld of %lld (%.1f %%); per layer: %s\n", (long long)experts_gpu,
                  (long long)experts_total, 100.0 * double(experts_gpu) / double(experts_total),
                  per_layer_summary(plan).c_str());
    std::printf("\nroofline (memory and link time only; compute is not modelled, so prefill is an upper bound):\n");
    std::printf("  CPU read  %s GB/s (%s)\n", gbps_text(roof.cpu_read_gbps).c_str(), cpu_bw_source.c_str());
    std::printf("  GPU read  %s GB/s (%s)\n", gbps_text(roof.gpu_read_gbps).c_str(), gpu_bw_source.c_str());
    std::printf("  link      %s GB/s each way, %g us per transfer (%s)\n", gbps_text(roof.link_gbps).c_str(),
                roof.link_latency_us, link_source.c_str());
    const std::string decode_label = "decode (batch " + std::to_string(batch) + ")";
    const std::string prefill_label = "prefill (" + std::to_string(est.prefill.tokens) + " tokens)";
    print_step(decode_label.c_str(), est.decode);
    print_step(prefill_label.c_str(), est.prefill);
  }
  for (const std::string& o : plan.unmatched_overrides)
    std::fprintf(stderr, "hearth plan: warning: --place '%s' matched no item\n", o.c_str());
  for (TensorKind k : {TensorKind::kAttention, TensorKind::kSharedExpert, TensorKind::kDenseMlp, TensorKind::kHead,
                       TensorKind::kRouter})
    if (budget > 0 && !plan.all_on_gpu(k))
      std::fprintf(stderr, "hearth plan: note: %lld %s item(s) (%s) are on the CPU; the offloaded forward pass needs them on the GPU\n",
                   (long long)plan.count(k, Where::kCpu), std::string(tensor_kind_name(k)).c_str(),
                   format_bytes(double(plan.bytes(k, Where::kCpu))).c_str());
  return 0;
}

}  // namespace hearth::cli

#include "engine/offload_setup.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>

#include "engine/host_device_model.h"
#include "engine/placement_items.h"
#include "offload/byte_size.h"
#include "offload/trace.h"
#if HEARTH_HAVE_CUDA
#include "engine/cuda/cuda_device_model.h"
#endif

namespace hearth {

namespace {

// Device memory kept out of the placement budget: activations, staging buffers, and the
// runtime's own (cuBLAS workspaces, the CUDA context).
std::string fmt_ms(double us) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", us / 1000.0);
  return b;
}
std::string fmt_pct(double f) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f%%", 100.0 * f);
  return b;
}

int64_t reserve_bytes(int64_t total) { return std::max<int64_t>(int64_t(512) << 20, total / 16); }

}  // namespace

std::unique_ptr<Offload> Offload::create(const Model& model, const OffloadOptions& o) {
  const ModelConfig& c = model.config();
  std::unique_ptr<Offload> off(new Offload());
  off->options_ = o;
  if (o.device != "cuda" && o.cuda_gemm.policy != cuda::GemmPolicy::kKernels)
    throw std::invalid_argument(std::string("--cuda-gemm ") + cuda::gemm_policy_name(o.cuda_gemm.policy) +
                                " needs --offload cuda");
  if (o.device == "cuda") off->device_ = make_cuda_device();
  else if (o.device == "sim") off->device_ = make_simulated_device(o.sim);
  else throw std::invalid_argument("--offload: unknown device '" + o.device + "' (expected cuda or sim)");
  Device& dev = *off->device_;

  int64_t budget = o.gpu_mem;
  if (budget == 0) budget = std::max<int64_t>(0, dev.free_memory() - reserve_bytes(dev.total_memory()));
  if (budget > dev.free_memory())
    throw std::invalid_argument("--gpu-mem " + format_bytes(double(budget)) + " is more than the device's free memory (" +
                                format_bytes(double(dev.free_memory())) + ")");
  ExpertProfile profile;
  PlanRequest req;
  req.items = placement_items(model, o.ctx, o.batch);
  req.gpu_budget_bytes = budget;
  for (const std::string& p : o.place) req.overrides.push_back(parse_place_override(p));
  if (!o.expert_profile.empty()) {
    profile = ExpertProfile::load(o.expert_profile);
    req.profile = &profile;
  }
  off->plan_ = plan_placement(req);
  const PlacementPlan& plan = off->plan_;
  // The device model always holds attention, norms, dense and shared MLPs, routers and the
  // head: a plan that leaves any of them on the CPU cannot be run this way.
  for (TensorKind k : {TensorKind::kKvCache, TensorKind::kAttention, TensorKind::kSharedExpert, TensorKind::kDenseMlp,
                       TensorKind::kHead, TensorKind::kRouter})
    if (!plan.all_on_gpu(k))
      throw std::invalid_argument("the GPU budget of " + format_bytes(double(budget)) + " does not hold every " +
                                  std::string(tensor_kind_name(k)) + " item (" +
                                  format_bytes(double(plan.bytes(k, Where::kCpu))) +
                                  " left on the CPU); offloading needs the always-active weights and the KV cache "
                                  "on the device: raise --gpu-mem, lower --ctx, or remove the --place override");

  auto resident = [&plan](int64_t layer, int64_t e) { return plan.expert_on_gpu(layer, e); };
  if (o.device == "cuda") {
#if HEARTH_HAVE_CUDA
    const int64_t page_tokens = 64;
    const int64_t max_pages = (o.ctx + page_tokens - 1) / page_tokens * o.batch + 2 * o.batch;
    off->dm_ = make_cuda_device_model(model, dev, resident, max_pages, o.cuda_gemm);
#endif
  } else {
    off->dm_ = make_host_device_model(model, dev, resident);
  }
  off->pool_ = std::make_unique<ThreadPool>(o.threads);
  off->forward_ = std::make_unique<OffloadForward>(model, *off->pool_, dev, *off->dm_);
  off->forward_->set_tuning(o.tuning);
  for (size_t l = 0; l < model.layers.size(); ++l)
    if (model.layers[l].is_moe)
      for (int64_t e = 0; e < c.n_routed_experts; ++e) {
        ++off->experts_total_;
        off->experts_resident_ += off->dm_->expert_resident(int64_t(l), e);
      }
  if (!o.trace_file.empty()) {
    dev.clear_trace();
    dev.set_tracing(true);
  }
  return off;
}

Offload::~Offload() {
  try {
    write_trace();
  } catch (...) {
  }
}

std::string Offload::summary() const {
  return "offload: " + device_->name() + ", " + format_bytes(double(dm_->weight_bytes())) + " of weights resident, " +
         std::to_string(experts_resident_) + "/" + std::to_string(experts_total_) + " routed experts on the device" +
         (options_.cuda_gemm.policy == cuda::GemmPolicy::kKernels
              ? std::string()
              : std::string(", ") + cuda::gemm_policy_name(options_.cuda_gemm.policy) + " GEMMs from " +
                    std::to_string(options_.cuda_gemm.min_rows) + " rows");
}

std::string Offload::write_trace() {
  if (options_.trace_file.empty() || !device_) return "";
  const std::vector<DeviceOp> ops = device_->trace();
  write_chrome_trace(options_.trace_file, *device_, ops);
  // The overlap the trace shows, from the device's own timestamps: streamed expert uploads
  // against compute, and all copies against compute.
  std::vector<StreamId> compute{0}, uploads, copies;
  for (const DeviceOp& op : ops) {
    if (op.kind == DeviceOp::Kind::kKernel) continue;
    if (std::find(copies.begin(), copies.end(), op.stream) == copies.end()) copies.push_back(op.stream);
    if (device_->stream_name(op.stream) == "upload" && uploads.empty()) uploads.push_back(op.stream);
  }
  std::string line = "trace: " + options_.trace_file + " (" + std::to_string(ops.size()) + " operations)";
  if (!uploads.empty()) {
    const OverlapStats o = measure_overlap(ops, uploads, compute);
    line += "; expert uploads " + fmt_ms(o.copy_us) + " ms, compute " + fmt_ms(o.compute_us) + " ms, overlap " +
            fmt_pct(o.fraction()) + " of the shorter";
  }
  const OverlapStats all = measure_overlap(ops, copies, compute);
  line += "; all copies " + fmt_ms(all.copy_us) + " ms, overlap " + fmt_pct(all.fraction());
  std::fprintf(stderr, "%s\n", line.c_str());
  const std::string path = options_.trace_file;
  options_.trace_file.clear();  // once
  return path;
}

}  // namespace hearth

#include "engine/synth_model.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string_view>

#include "engine/repack.h"
#include "engine/safetensors.h"
#include "engine/synth.h"
#include "offload/memory.h"
#include "offload/thread_pool.h"
#include "offload/weight_arena.h"
#include "quant/weight_matrix.h"

namespace hearth {

namespace {

// The weights Model::repack converts (engine/model.cc, ModelLoadOptions::repack): every
// attention projection (the indexer's wq_b and wk included), the dense and expert MLPs
// and lm_head; not the embeddings, the router, weights_proj, norms or biases. The
// bit-exact test against a loaded checkpoint keeps the two lists in step.
bool converted_by_repack(std::string_view name) {
  static constexpr std::array<std::string_view, 10> kSuffixes = {
      ".q_a_proj.weight",  ".q_b_proj.weight",    ".kv_a_proj_with_mqa.weight", ".kv_b_proj.weight",
      ".o_proj.weight",    ".indexer.wq_b.weight", ".indexer.wk.weight",        ".gate_proj.weight",
      ".up_proj.weight",   ".down_proj.weight"};
  if (name == "lm_head.weight") return true;
  for (std::string_view s : kSuffixes)
    if (name.ends_with(s)) return true;
  return false;
}

// How one planned tensor is built.
struct Build {
  const SynthTensor* tensor;
  std::optional<DType> convert_to;  // set: generated in bands, converted into this format
  uint64_t bytes = 0;               // as built
  int64_t band_rows = 0;            // conversion: rows per band (whole 128-row FP8 blocks)
  uint64_t band_bytes = 0;          // conversion: scratch for one band as stored
};

// Where a band's FP8 scales start in the scratch buffer: after its rows, float-aligned.
uint64_t scale_offset(int64_t rows, uint64_t bytes_per_row) { return (uint64_t(rows) * bytes_per_row + 15) / 16 * 16; }

// Bands of about this many stored bytes: large enough to keep every thread busy, small
// enough that scratch is noise next to the model.
constexpr uint64_t kBandBytes = uint64_t(32) << 20;

struct Plan {
  ModelConfig config;
  bool ue8m0 = false;
  std::vector<SynthTensor> tensors;
  std::vector<Build> builds;
  SyntheticModelSize size;
};

Plan make_plan(const SyntheticModelOptions& o) {
  Plan p;
  p.config = ModelConfig::from_json(synth_config_json(o.preset, o.sets), "synthetic preset " + o.preset);
  p.ue8m0 = p.config.quantization.scale_fmt == "ue8m0";
  // The MTP layer is never run: plan without it (the other tensors keep their names).
  ModelConfig main_only = p.config;
  main_only.num_nextn_predict_layers = 0;
  p.tensors = synth_tensor_plan(main_only);
  p.size.config = p.config;
  p.builds.reserve(p.tensors.size());
  for (const SynthTensor& t : p.tensors) {
    Build b{&t, std::nullopt, t.bytes(), 0, 0};
    const int64_t rows = t.rows(), cols = t.weight.shape.size() == 2 ? t.weight.shape[1] : 0;
    if (o.type && cols > 0 && converted_by_repack(t.weight.name)) {
      const std::optional<DType> to = repack_format_for(*o.type, cols);
      if (to && *to != t.weight.dtype) {
        b.convert_to = to;
        b.bytes = uint64_t(rows * row_bytes(*to, cols));
        const uint64_t in_row = t.weight.nbytes() / uint64_t(rows);
        b.band_rows = std::clamp<int64_t>(int64_t(kBandBytes / std::max<uint64_t>(in_row, 1)) / 128 * 128, 128,
                                          (rows + 127) / 128 * 128);
        const int64_t n = std::min(rows, b.band_rows);
        b.band_bytes = scale_offset(n, in_row) + (t.fp8 ? uint64_t((n + 127) / 128 * t.scale.shape[1]) * sizeof(float) : 0);
      }
    }
    p.size.weight_bytes += b.bytes;
    p.size.scratch_bytes = std::max(p.size.scratch_bytes, b.band_bytes);
    int64_t n = 1;
    for (int64_t d : t.weight.shape) n *= d;
    p.size.params += uint64_t(n);
    p.builds.push_back(b);
  }
  return p;
}

double gib(uint64_t b) { return double(b) / double(uint64_t(1) << 30); }

std::string fmt_gib(uint64_t b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", gib(b));
  return buf;
}

}  // namespace

SyntheticModelSize synthetic_model_size(const SyntheticModelOptions& options) { return make_plan(options).size; }

uint64_t memory_margin_bytes(uint64_t available) {
  return std::max<uint64_t>(uint64_t(512) << 20, available / 20);
}

void check_fits_in_memory(const std::string& what, uint64_t needed, uint64_t available, const std::string& detail) {
  const uint64_t margin = memory_margin_bytes(available);
  if (needed + margin <= available) return;
  throw std::runtime_error(what + " needs " + fmt_gib(needed) + " of RAM" + (detail.empty() ? "" : " (" + detail + ")") +
                           ", but only " + fmt_gib(available) + " is available (MemAvailable; " + fmt_gib(margin) +
                           " of it is kept free)");
}

Model build_synthetic_model(const SyntheticModelOptions& o) {
  Plan plan = make_plan(o);
  const SyntheticModelSize& size = plan.size;
  const std::string what =
      "the synthetic " + o.preset + " model" + (o.type ? " in " + std::string(dtype_name(*o.type)) : std::string());
  std::optional<uint64_t> available = o.available_bytes ? o.available_bytes : mem_available_bytes();
  if (!available) throw std::runtime_error("cannot read MemAvailable from /proc/meminfo to check " + what + " fits");
  check_fits_in_memory(what, size.weight_bytes + size.scratch_bytes + o.extra_bytes, *available,
                       fmt_gib(size.weight_bytes) + " of weights, " + fmt_gib(size.scratch_bytes + o.extra_bytes) +
                           " of cache and scratch");

  ThreadPool pool(o.threads);
  std::vector<TensorView> views;
  std::vector<std::shared_ptr<const void>> keepalive;
  views.reserve(plan.tensors.size() * 2);
  // Every tensor in huge-page memory (offload/weight_arena.h), kept alive by the store.
  const auto arena = std::make_shared<WeightArena>();
  keepalive.push_back(arena);
  std::unique_ptr<uint8_t[]> band;
  uint64_t band_cap = 0, done = 0;
  const auto t0 = std::chrono::steady_clock::now();
  auto last_log = t0;
  const std::string origin = "synthetic:" + o.preset;

  for (const Build& b : plan.builds) {
    const SynthTensor& t = *b.tensor;
    uint8_t* data = arena->allocate(size_t(b.bytes));
    TensorView w;
    w.name = t.weight.name;
    w.shape = t.weight.shape;
    w.data = data;
    w.nbytes = b.bytes;
    if (!b.convert_to) {
      // As synth writes it: the tensor, then (FP8) its scales.
      synth_generate_rows(t, o.seed, plan.ue8m0, pool, 0, t.rows(), data,
                          t.fp8 ? reinterpret_cast<float*>(data + t.weight.nbytes()) : nullptr);
      w.dtype = t.weight.dtype;
      w.nbytes = t.weight.nbytes();
      if (t.fp8) {
        TensorView s;
        s.name = t.scale.name;
        s.dtype = t.scale.dtype;
        s.shape = t.scale.shape;
        s.data = data + t.weight.nbytes();
        s.nbytes = t.scale.nbytes();
        views.push_back(std::move(s));
      }
    } else {
      // Generate a band of rows as stored, convert it the way Model's repack does, next.
      const int64_t rows = t.rows(), cols = t.weight.shape[1];
      const int64_t out_row = row_bytes(*b.convert_to, cols);
      const uint64_t in_row = t.weight.nbytes() / uint64_t(rows);
      if (b.band_bytes > band_cap) {
        band.reset();
        band = std::make_unique_for_overwrite<uint8_t[]>(size_t(b.band_bytes));
        band_cap = b.band_bytes;
      }
      for (int64_t r0 = 0; r0 < rows; r0 += b.band_rows) {
        const int64_t r1 = std::min(rows, r0 + b.band_rows);
        float* scales = t.fp8 ? reinterpret_cast<float*>(band.get() + scale_offset(r1 - r0, in_row)) : nullptr;
        synth_generate_rows(t, o.seed, plan.ue8m0, pool, r0, r1, band.get(), scales);
        WeightMatrix stored;
        stored.dtype = t.weight.dtype;
        stored.rows = r1 - r0;
        stored.cols = cols;
        stored.data = band.get();
        stored.scale = scales;  // band rows start on a block boundary, so block indexing holds
        stored.block = 128;
        repack_into(stored, *b.convert_to, pool, data + r0 * out_row);
      }
      w.dtype = *b.convert_to;
    }
    views.push_back(std::move(w));
    done += b.bytes;
    const auto now = std::chrono::steady_clock::now();
    if (o.log && now - last_log >= std::chrono::seconds(2)) {
      last_log = now;
      std::fprintf(o.log, "building %s: %.2f of %.2f GiB\n", origin.c_str(), gib(done), gib(size.weight_bytes));
      std::fflush(o.log);
    }
  }
  band.reset();
  if (o.log) {
    std::fprintf(o.log, "built %s: %.2f GiB in %.1f s\n", origin.c_str(), gib(size.weight_bytes),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    std::fflush(o.log);
  }
  ModelLoadOptions load;
  load.threads = o.threads;
  load.interleave = o.interleave;
  return Model(plan.config, WeightStore::from_views(origin, std::move(views), std::move(keepalive)), load);
}

}  // namespace hearth

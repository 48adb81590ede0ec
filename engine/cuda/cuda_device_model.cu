// The CUDA DeviceModel (engine/cuda/cuda_device_model.h).
//
// Weights are uploaded once, in their stored formats (quant/cuda/kernels.h multiplies
// them in place); kv_b is also kept as float [heads * (nope + v)][kv_rank] for the
// absorbed attention kernel. The KV pages are one device allocation of max_pages pages
// (entries as engine/cuda/mla_kernels.h's KvPages lays them out), made at the first step
// (when the page size is known).
//
// Host data a step's kernels read (row tables, expert row lists, head rows) is copied into
// pinned staging memory and uploaded on the stream of the call that needs it, so the
// caller's vectors may go away at once. Buffers sized by the step (activations, scores)
// only change in begin_step, after everything this model enqueued before has finished.
#include "engine/cuda/cuda_device_model.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "engine/cuda/cuda_check.cuh"
#include "engine/cuda/mla_kernels.h"
#include "engine/rope.h"
#include "quant/cuda/kernels.h"

namespace hearth {

namespace {

using cuda_mla::as_stream;
using cuda_mla::check_cuda;

// Index scores held at once per attention group (rows x positions floats): bounds the
// memory of a long prefill chunk's selection.
constexpr int64_t kScoreBudgetFloats = int64_t(32) << 20;
// Rows per attention group (a grid dimension of the score kernel).
constexpr int64_t kMaxGroupRows = 65535;

int64_t align_up(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

// Pinned host memory paired with device memory of the same size, handed out front to back
// within a step. upload() copies host data into the pinned part and enqueues its copy to
// the device part on the caller's stream.
class StagingArena {
 public:
  explicit StagingArena(Device& d) : dev_(d) {}
  StagingArena(const StagingArena&) = delete;
  StagingArena& operator=(const StagingArena&) = delete;
  ~StagingArena() { release(); }

  void* upload(const void* src, int64_t bytes, cudaStream_t s, const char* what) {
    const int64_t need = align_up(std::max<int64_t>(bytes, 1), 256);
    if (chunks_.empty() || used_ + need > chunks_.back().bytes) {
      const int64_t last = chunks_.empty() ? 0 : chunks_.back().bytes;
      add_chunk(std::max({need, 2 * last, int64_t(1) << 20}));
    }
    Chunk& c = chunks_.back();
    uint8_t* host = static_cast<uint8_t*>(c.host) + used_;
    uint8_t* dev = static_cast<uint8_t*>(c.dev) + used_;
    if (bytes > 0) {
      std::memcpy(host, src, size_t(bytes));
      check_cuda(cudaMemcpyAsync(dev, host, size_t(bytes), cudaMemcpyHostToDevice, s), what);
    }
    used_ += need;
    return dev;
  }

  // At the start of a step, when no upload is in flight: one chunk covering everything the
  // last step needed, so a steady state makes no allocations.
  void reset() {
    if (chunks_.size() > 1) {
      int64_t total = 0;
      for (const Chunk& c : chunks_) total += c.bytes;
      release();
      add_chunk(total);
    }
    used_ = 0;
  }

 private:
  struct Chunk {
    void* host = nullptr;
    void* dev = nullptr;
    int64_t bytes = 0;
  };
  void add_chunk(int64_t bytes) {
    Chunk c;
    c.bytes = bytes;
    c.host = dev_.alloc_pinned(bytes);
    try {
      c.dev = dev_.alloc(bytes);
    } catch (...) {
      dev_.free_pinned(c.host);
      throw;
    }
    chunks_.push_back(c);
    used_ = 0;
  }
  void release() {
    for (Chunk& c : chunks_) {
      dev_.free(c.dev);
      dev_.free_pinned(c.host);
    }
    chunks_.clear();
    used_ = 0;
  }

  Device& dev_;
  std::vector<Chunk> chunks_;
  int64_t used_ = 0;  // bytes handed out of the last chunk
};

struct DeviceLayer {
  float* attn_norm = nullptr;
  float* ffn_norm = nullptr;
  WeightMatrix q_a, q_b, kv_a, o;
  float* q_a_norm = nullptr;
  float* kv_a_norm = nullptr;
  float* kv_b = nullptr;  // float [heads * (nope + v)][kv_rank]
  bool has_indexer = false;
  WeightMatrix wq_b, wk, wproj;
  float* k_norm_w = nullptr;
  float* k_norm_b = nullptr;
  bool is_moe = false;
  Mlp dense;
  WeightMatrix router;
  bool has_shared = false;
  Mlp shared;
  std::vector<Mlp> experts;  // device copies of the resident ones, empty matrices elsewhere
  std::vector<bool> resident;
};

// Rows of one attention launch: [r0, r0 + rows), index scores `ld` wide (0: no row of the
// group selects, every row attends to all of its positions).
struct AttnGroup {
  int64_t r0 = 0, rows = 0, ld = 0;
};

class CudaDeviceModel final : public DeviceModel {
 public:
  CudaDeviceModel(const Model& model, Device& device, std::function<bool(int64_t, int64_t)> resident,
                  int64_t max_pages, const cuda::GemmOptions& gemm)
      : model_(model), c_(model.config()), device_(device), rope_(model.config()), max_pages_(max_pages),
        gemm_(gemm), arena_(device) {
    if (device.simulated()) throw std::invalid_argument("make_cuda_device_model: the device is not a CUDA GPU");
    if (max_pages <= 0) throw std::invalid_argument("make_cuda_device_model: max_pages must be positive");
    int ordinal = 0;
    check_cuda(cudaGetDevice(&ordinal), "cudaGetDevice");
    check_cuda(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, ordinal),
               "cudaDeviceGetAttribute(multiprocessors)");
    shape_.heads = c_.num_attention_heads;
    shape_.nope = c_.qk_nope_head_dim;
    shape_.rope = c_.qk_rope_head_dim;
    shape_.v = c_.v_head_dim;
    shape_.kv_rank = c_.kv_lora_rank;
    if (shape_.rope % 2 != 0 || shape_.rope > 256)
      throw std::invalid_argument("make_cuda_device_model: qk_rope_head_dim must be even and at most 256");
    head_scale_ = float(1.0 / std::sqrt(double(c_.index_n_heads)) / std::sqrt(double(c_.index_head_dim)));

    const int64_t nl = int64_t(model.layers.size());
    layers_.resize(size_t(nl));
    for (int64_t l = 0; l < nl; ++l) {
      const Layer& src = model.layers[size_t(l)];
      DeviceLayer& d = layers_[size_t(l)];
      const std::string p = "layer " + std::to_string(l) + " ";
      d.attn_norm = upload_floats(src.attn_norm, p + "attn_norm");
      d.ffn_norm = upload_floats(src.ffn_norm, p + "ffn_norm");
      const Attention& A = src.attn;
      d.q_a = upload(A.q_a, p + "q_a");
      d.q_b = upload(A.q_b, p + "q_b");
      d.kv_a = upload(A.kv_a, p + "kv_a");
      d.o = upload(A.o, p + "o");
      d.q_a_norm = upload_floats(A.q_a_norm, p + "q_a_norm");
      d.kv_a_norm = upload_floats(A.kv_a_norm, p + "kv_a_norm");
      d.kv_b = float_copy(A.kv_b, p + "kv_b");
      d.has_indexer = A.has_indexer;
      if (A.has_indexer) {
        if (c_.index_topk < 1) throw std::invalid_argument("make_cuda_device_model: index_topk must be positive");
        d.wq_b = upload(A.indexer.wq_b, p + "indexer wq_b");
        d.wk = upload(A.indexer.wk, p + "indexer wk");
        d.wproj = upload(A.indexer.weights_proj, p + "indexer weights_proj");
        d.k_norm_w = upload_floats(A.indexer.k_norm_weight, p + "indexer k_norm weight");
        d.k_norm_b = upload_floats(A.indexer.k_norm_bias, p + "indexer k_norm bias");
      }
      d.is_moe = src.is_moe;
      if (!src.is_moe) {
        d.dense = upload(src.dense, p + "mlp");
        inter_max_ = std::max(inter_max_, src.dense.gate.rows);
        continue;
      }
      d.router = upload(src.moe.router, p + "router");
      d.has_shared = src.moe.has_shared;
      if (src.moe.has_shared) {
        d.shared = upload(src.moe.shared, p + "shared expert");
        inter_max_ = std::max(inter_max_, src.moe.shared.gate.rows);
      }
      const int64_t ne = int64_t(src.moe.experts.size());
      d.experts.resize(size_t(ne));
      d.resident.assign(size_t(ne), false);
      for (int64_t e = 0; e < ne; ++e) {
        inter_max_ = std::max(inter_max_, src.moe.experts[size_t(e)].gate.rows);
        if (!resident(l, e)) continue;
        d.experts[size_t(e)] = upload(src.moe.experts[size_t(e)], p + "expert " + std::to_string(e));
        d.resident[size_t(e)] = true;
      }
    }
    final_norm_ = upload_floats(model.final_norm, "final_norm");
    lm_head_ = upload(model.lm_head, "lm_head");
    device_.synchronize();
    temp_.clear();  // the stored kv_b copies, dequantized by now
  }

  ~CudaDeviceModel() override {
    try {
      wait_idle();
    } catch (...) {
    }
    for (auto& [s, e] : stream_events_) cudaEventDestroy(e);
  }

  void begin_step(const StepRows& rows) override {
    wait_idle();  // nothing this model enqueued earlier still runs: buffers may change
    const int64_t T = rows.rows();
    if (int64_t(rows.row_chunk.size()) != T || rows.page_tables.size() != rows.chunks.size())
      throw std::invalid_argument("CudaDeviceModel::begin_step: inconsistent row tables");
    if (rows.page_tokens <= 0) throw std::invalid_argument("CudaDeviceModel::begin_step: page_tokens must be positive");
    if (!pages_.get()) allocate_pages(rows.page_tokens);
    else if (rows.page_tokens != kv_.page_tokens)
      throw std::invalid_argument("CudaDeviceModel: the cache's page size changed from " +
                                  std::to_string(kv_.page_tokens) + " to " + std::to_string(rows.page_tokens));

    // Row tables: positions, where each row's page table starts, the tables, rope cos/sin.
    std::vector<int32_t> table_start(rows.chunks.size());
    int64_t table_len = 0;
    for (size_t i = 0; i < rows.page_tables.size(); ++i) {
      table_start[i] = int32_t(table_len);
      for (int32_t pg : rows.page_tables[i])
        if (pg < 0 || pg >= max_pages_)
          throw std::out_of_range("CudaDeviceModel: KV page " + std::to_string(pg) + " is outside the device's " +
                                  std::to_string(max_pages_) + " pages");
      table_len += int64_t(rows.page_tables[i].size());
    }
    const int64_t R = shape_.rope;
    off_rt_ = align_up(T * 4, 256);
    off_tab_ = align_up(off_rt_ + T * 4, 256);
    off_rope_ = align_up(off_tab_ + table_len * 4, 256);
    tables_host_.assign(size_t(off_rope_ + T * R * 4), 0);
    auto* pos32 = reinterpret_cast<int32_t*>(tables_host_.data());
    auto* rt = reinterpret_cast<int32_t*>(tables_host_.data() + off_rt_);
    auto* tab = reinterpret_cast<int32_t*>(tables_host_.data() + off_tab_);
    auto* cs = reinterpret_cast<float*>(tables_host_.data() + off_rope_);
    for (size_t i = 0; i < rows.page_tables.size(); ++i)
      std::copy(rows.page_tables[i].begin(), rows.page_tables[i].end(), tab + table_start[i]);
    for (int64_t r = 0; r < T; ++r) {
      const int32_t ci = rows.row_chunk[size_t(r)];
      const int64_t pos = rows.row_pos[size_t(r)];
      if (ci < 0 || size_t(ci) >= rows.chunks.size())
        throw std::out_of_range("CudaDeviceModel: row " + std::to_string(r) + " names chunk " + std::to_string(ci));
      if (pos < 0 || pos >= std::numeric_limits<int32_t>::max() ||
          pos / rows.page_tokens >= int64_t(rows.page_tables[size_t(ci)].size()))
        throw std::out_of_range("CudaDeviceModel: position " + std::to_string(pos) + " of row " + std::to_string(r) +
                                " is outside its sequence's pages");
      pos32[r] = int32_t(pos);
      rt[r] = table_start[size_t(ci)];
      std::memcpy(cs + r * R, rope_row(pos), size_t(R) * sizeof(float));
    }

    plan_groups(rows);
    grow_scratch(T);
    arena_.reset();
    T_ = T;
    tables_ready_ = false;
    in_step_ = true;
  }

  void copy_page(int32_t from, int32_t to, void* ns) override {
    if (!pages_.get()) throw std::logic_error("CudaDeviceModel::copy_page before the first step");
    if (from < 0 || from >= max_pages_ || to < 0 || to >= max_pages_)
      throw std::out_of_range("CudaDeviceModel::copy_page: page " + std::to_string(from) + " -> " +
                              std::to_string(to) + " outside the device's " + std::to_string(max_pages_) + " pages");
    cudaStream_t s = as_stream(ns);
    check_cuda(cudaMemcpyAsync(kv_.base + int64_t(to) * kv_.page_bytes, kv_.base + int64_t(from) * kv_.page_bytes,
                               size_t(kv_.page_bytes), cudaMemcpyDeviceToDevice, s),
               "copy KV page");
    mark(s);
  }

  void attention_block(int64_t layer, float* x, float* h, void* ns) override {
    const DeviceLayer& L = layer_at(layer);
    cudaStream_t s = as_stream(ns);
    ensure_tables(s);
    const int64_t T = T_, H = c_.hidden_size, QL = c_.q_lora_rank, NH = shape_.heads, QK = shape_.qk();
    const int64_t KVW = shape_.kv_rank + shape_.rope;
    const float eps = float(c_.rms_norm_eps);
    if (T == 0) return;

    cuda::rms_norm(x, H, L.attn_norm, T, H, eps, h, H, ns);
    cuda::matmul(L.q_a, h, H, T, qr_.as<float>(), QL, ns, gemm_);
    cuda::rms_norm(qr_.as<float>(), QL, L.q_a_norm, T, QL, eps, qr_.as<float>(), QL, ns);
    cuda::matmul(L.q_b, qr_.as<float>(), QL, T, q_.as<float>(), NH * QK, ns, gemm_);
    cuda::matmul(L.kv_a, h, H, T, kva_.as<float>(), KVW, ns, gemm_);
    cuda_mla::mla_cache_write(kv_, tables_, layer, T, shape_, q_.as<float>(), kva_.as<float>(), L.kv_a_norm, eps, ns);

    const int64_t IH = c_.index_n_heads, ID = c_.index_head_dim, topk = c_.index_topk;
    if (L.has_indexer) {  // fp32 kernels whatever gemm_ says (see gemm_)
      cuda::matmul(L.wq_b, qr_.as<float>(), QL, T, iq_.as<float>(), IH * ID, ns);
      cuda::matmul(L.wk, h, H, T, ik_.as<float>(), ID, ns);
      cuda::matmul(L.wproj, h, H, T, iw_.as<float>(), IH, ns);
      cuda_mla::indexer_queries(iq_.as<float>(), iw_.as<float>(), T, IH, ID, shape_.rope, tables_.rope_cs,
                                head_scale_, ns);
      cuda_mla::indexer_keys(kv_, tables_, layer, T, ik_.as<float>(), ID, shape_.rope, L.k_norm_w, L.k_norm_b, 1e-6f,
                             ns);
    }
    const float scale = float(c_.attention_scale());
    for (const AttnGroup& g : groups_) {
      const int32_t* picked = nullptr;
      if (L.has_indexer && g.ld > 0) {
        cuda_mla::index_scores(kv_, tables_, layer, g.r0, g.rows, g.ld, iq_.as<float>(), iw_.as<float>(), IH, ID, topk,
                               scores_.as<float>(), g.ld, ns);
        cuda_mla::select_topk(scores_.as<float>(), g.ld, tables_.row_pos + g.r0, g.rows, topk, picked_.as<int32_t>(),
                              ns);
        picked = picked_.as<int32_t>();
      }
      cuda_mla::absorbed_attention(kv_, tables_, layer, g.r0, g.rows, shape_, q_.as<float>(), L.kv_b, picked,
                                   L.has_indexer ? topk : 0, scale, attn_.as<float>(), sm_count_, ns);
    }
    cuda::matmul(L.o, attn_.as<float>(), NH * shape_.v, T, yattn_.as<float>(), H, ns, gemm_);
    cuda::add(x, yattn_.as<float>(), T * H, ns);
    cuda::rms_norm(x, H, L.ffn_norm, T, H, eps, h, H, ns);
    mark(s);
  }

  void router(int64_t layer, const float* h, float* logits, void* ns) override {
    const DeviceLayer& L = layer_at(layer);
    if (!L.is_moe) throw std::logic_error("CudaDeviceModel::router: layer " + std::to_string(layer) + " is dense");
    if (T_ == 0) return;
    cuda::matmul(L.router, h, c_.hidden_size, T_, logits, c_.n_routed_experts, ns);
    mark(as_stream(ns));
  }

  void ffn(int64_t layer, const float* h, const std::vector<DeviceExpertWork>& experts, float* y, void* ns) override {
    const DeviceLayer& L = layer_at(layer);
    cudaStream_t s = as_stream(ns);
    const int64_t T = T_, H = c_.hidden_size;
    if (T == 0) return;
    if (!L.is_moe) {
      if (!experts.empty())
        throw std::logic_error("CudaDeviceModel::ffn: routed experts for dense layer " + std::to_string(layer));
      run_mlp(L.dense, h, T, y, ns);
      mark(s);
      return;
    }
    for (const DeviceExpertWork& w : experts)
      if (w.expert < 0 || size_t(w.expert) >= L.resident.size() || !L.resident[size_t(w.expert)])
        throw std::logic_error("CudaDeviceModel::ffn: expert " + std::to_string(w.expert) + " of layer " +
                               std::to_string(layer) + " is not resident on the device");
    // Routed experts first, in list order, then the shared expert: the CPU's order of sums.
    check_cuda(cudaMemsetAsync(y, 0, size_t(T * H) * sizeof(float), s), "clear ffn output");
    std::vector<const Mlp*> mlps;
    for (const DeviceExpertWork& w : experts) mlps.push_back(&L.experts[size_t(w.expert)]);
    accumulate(h, mlps, experts, y, s);
    if (L.has_shared) {
      run_mlp(L.shared, h, T, ys_.as<float>(), ns);
      cuda::add(y, ys_.as<float>(), T * H, ns);
    }
    mark(s);
  }

  bool runs_streamed_mlps() const override { return true; }
  void run_mlps(const float* h, const std::vector<const Mlp*>& mlps, const std::vector<DeviceExpertWork>& work,
                float* y, void* ns) override {
    if (mlps.size() != work.size())
      throw std::invalid_argument("CudaDeviceModel::run_mlps: " + std::to_string(mlps.size()) + " MLPs for " +
                                  std::to_string(work.size()) + " work lists");
    check_step();
    for (const Mlp* m : mlps)
      if (!m || m->gate.rows > inter_max_ || m->gate.cols != c_.hidden_size || m->down.rows != c_.hidden_size)
        throw std::invalid_argument("CudaDeviceModel::run_mlps: an MLP of a shape the model does not have");
    cudaStream_t s = as_stream(ns);
    accumulate(h, mlps, work, y, s);
    mark(s);
  }

  void add(float* x, const float* y, int64_t n, void* ns) override {
    if (n <= 0) return;
    cuda::add(x, y, n, ns);
    mark(as_stream(ns));
  }

  void head(const float* x, const std::vector<int32_t>& rows, float* logits, void* ns) override {
    check_step();
    const int64_t n = int64_t(rows.size()), H = c_.hidden_size;
    if (n == 0) return;
    if (n > scratch_rows_) throw std::invalid_argument("CudaDeviceModel::head: more rows than the step has");
    for (int32_t r : rows)
      if (r < 0 || r >= T_) throw std::out_of_range("CudaDeviceModel::head: row " + std::to_string(r) + " of " +
                                                    std::to_string(T_));
    cudaStream_t s = as_stream(ns);
    const auto* idx = static_cast<const int32_t*>(arena_.upload(rows.data(), n * 4, s, "upload head rows"));
    float* hn = hn_.as<float>();
    cuda::gather_rows(x, H, idx, n, H, hn, H, ns);
    cuda::rms_norm(hn, H, final_norm_, n, H, float(c_.rms_norm_eps), hn, H, ns);
    cuda::matmul(lm_head_, hn, H, n, logits, c_.vocab_size, ns, gemm_);
    mark(s);
  }

  bool expert_resident(int64_t layer, int64_t e) const override {
    if (layer < 0 || layer >= int64_t(layers_.size())) return false;
    const DeviceLayer& L = layers_[size_t(layer)];
    return e >= 0 && e < int64_t(L.resident.size()) && L.resident[size_t(e)];
  }

  int64_t weight_bytes() const override { return weight_bytes_ + pages_.bytes(); }

 private:
  const DeviceLayer& layer_at(int64_t layer) {
    check_step();
    if (layer < 0 || layer >= int64_t(layers_.size()))
      throw std::out_of_range("CudaDeviceModel: no layer " + std::to_string(layer));
    return layers_[size_t(layer)];
  }
  void check_step() const {
    if (!in_step_) throw std::logic_error("CudaDeviceModel: work enqueued before begin_step");
  }

  // ---- uploads ------------------------------------------------------------------------
  void* copy_in(const void* src, int64_t bytes, const std::string& what, bool keep = true) {
    DeviceBuffer b(device_, std::max<int64_t>(bytes, 1));
    device_.copy_to_device(0, b.get(), src, bytes, what);
    void* p = b.get();
    if (keep) {
      weight_bytes_ += b.bytes();
      owned_.push_back(std::move(b));
    } else {
      temp_.push_back(std::move(b));
    }
    return p;
  }
  float* upload_floats(const std::vector<float>& v, const std::string& what) {
    if (v.empty()) throw std::invalid_argument("make_cuda_device_model: " + what + " is missing");
    return static_cast<float*>(copy_in(v.data(), int64_t(v.size() * sizeof(float)), what));
  }
  WeightMatrix upload(const WeightMatrix& w, const std::string& what, bool keep = true) {
    if (!w.data) throw std::invalid_argument("make_cuda_device_model: " + what + " is missing");
    if (!cuda::matmul_supports(w.dtype))
      throw std::invalid_argument("make_cuda_device_model: " + what + " is " + std::string(dtype_name(w.dtype)) +
                                  ", a format the CUDA kernels do not take");
    WeightMatrix d = w;
    d.data = copy_in(w.data, w.bytes(), what, keep);
    if (w.scale) {
      const int64_t sb = ((w.rows + w.block - 1) / w.block) * w.scale_cols() * int64_t(sizeof(float));
      d.scale = static_cast<const float*>(copy_in(w.scale, sb, what + " scales", keep));
    }
    return d;
  }
  Mlp upload(const Mlp& m, const std::string& what) {
    Mlp d;
    d.gate = upload(m.gate, what + " gate");
    d.up = upload(m.up, what + " up");
    d.down = upload(m.down, what + " down");
    return d;
  }
  // kv_b as float on the device: the stored copy goes up (kept until the constructor's
  // final synchronize) and is dequantized there.
  float* float_copy(const WeightMatrix& w, const std::string& what) {
    if (w.rows != shape_.heads * (shape_.nope + shape_.v) || w.cols != shape_.kv_rank)
      throw std::invalid_argument("make_cuda_device_model: " + what + " has the wrong shape");
    const WeightMatrix stored = upload(w, what, false);
    DeviceBuffer b(device_, w.rows * w.cols * int64_t(sizeof(float)));
    float* out = b.as<float>();
    device_.launch(0, "dequantize " + what, [&stored, out](void* ns) { cuda::dequantize(stored, out, ns); });
    weight_bytes_ += b.bytes();
    owned_.push_back(std::move(b));
    return out;
  }

  // ---- per-step state -------------------------------------------------------------------
  void allocate_pages(int64_t page_tokens) {
    const ModelConfig& c = c_;
    // One entry per layer and position: the floats first, then the index scale and key.
    kv_.page_tokens = page_tokens;
    kv_.latent_off = 0;
    kv_.rope_off = kv_.latent_off + c.kv_lora_rank * 4;
    kv_.iscale_off = kv_.rope_off + c.qk_rope_head_dim * 4;
    kv_.ikey_off = kv_.iscale_off + (c.has_indexer() ? 4 : 0);
    kv_.token_bytes = align_up(kv_.ikey_off + (c.has_indexer() ? c.index_head_dim : 0), 16);
    kv_.page_bytes = page_tokens * c.num_hidden_layers * kv_.token_bytes;
    pages_ = DeviceBuffer(device_, max_pages_ * kv_.page_bytes);
    kv_.base = pages_.as<uint8_t>();
    check_cuda(cudaMemset(kv_.base, 0, size_t(pages_.bytes())), "clear KV pages");
    check_cuda(cudaDeviceSynchronize(), "clear KV pages");
  }

  // The CPU Rope's cos/sin of a position, interleaved (cos_i, sin_i): rotating the unit
  // pairs (1, 0) gives exactly (cos_i, sin_i) as Rope::angles computes them.
  const float* rope_row(int64_t pos) {
    const int64_t R = shape_.rope;
    while (int64_t(rope_table_.size()) < (pos + 1) * R) {
      const int64_t p = int64_t(rope_table_.size()) / R;
      float v[256];
      for (int64_t i = 0; i < R; ++i) v[i] = i % 2 == 0 ? 1.0f : 0.0f;
      rope_.apply_interleaved(v, p);
      rope_table_.insert(rope_table_.end(), v, v + R);
    }
    return rope_table_.data() + pos * R;
  }

  void plan_groups(const StepRows& rows) {
    groups_.clear();
    const int64_t T = rows.rows(), topk = c_.index_topk;
    const bool selects = c_.has_indexer();
    int64_t score_floats = 0, picked_rows = 0;
    for (int64_t r = 0; r < T;) {
      AttnGroup g;
      g.r0 = r;
      while (r < T && g.rows < kMaxGroupRows) {
        const int64_t n = rows.row_pos[size_t(r)] + 1;
        const int64_t ld = std::max(g.ld, selects && n > topk ? n : 0);
        if (g.rows > 0 && (g.rows + 1) * ld > kScoreBudgetFloats) break;
        g.ld = ld;
        ++g.rows;
        ++r;
      }
      if (g.ld > 0) {
        score_floats = std::max(score_floats, g.rows * g.ld);
        picked_rows = std::max(picked_rows, g.rows);
      }
      groups_.push_back(g);
    }
    grow(scores_, score_floats * 4);
    grow(picked_, picked_rows * topk * 4);
  }

  void grow(DeviceBuffer& b, int64_t bytes) {
    if (bytes <= b.bytes()) return;
    b.reset();
    b = DeviceBuffer(device_, bytes);
  }

  void grow_scratch(int64_t T) {
    if (T <= scratch_rows_) return;
    const ModelConfig& c = c_;
    const int64_t H = c.hidden_size, F = 4;
    grow(qr_, T * c.q_lora_rank * F);
    grow(q_, T * shape_.heads * shape_.qk() * F);
    grow(kva_, T * (shape_.kv_rank + shape_.rope) * F);
    grow(attn_, T * shape_.heads * shape_.v * F);
    grow(yattn_, T * H * F);
    if (c.has_indexer()) {
      grow(iq_, T * c.index_n_heads * c.index_head_dim * F);
      grow(ik_, T * c.index_head_dim * F);
      grow(iw_, T * c.index_n_heads * F);
    }
    grow(xe_, T * H * F);
    grow(gate_, T * std::max<int64_t>(inter_max_, 1) * F);
    grow(up_, T * std::max<int64_t>(inter_max_, 1) * F);
    grow(ye_, T * H * F);
    grow(ys_, T * H * F);
    grow(hn_, T * H * F);
    scratch_rows_ = T;
  }

  void ensure_tables(cudaStream_t s) {
    if (tables_ready_) return;
    auto* base = static_cast<uint8_t*>(
        arena_.upload(tables_host_.data(), int64_t(tables_host_.size()), s, "upload step row tables"));
    tables_.row_pos = reinterpret_cast<const int32_t*>(base);
    tables_.row_table = reinterpret_cast<const int32_t*>(base + off_rt_);
    tables_.tables = reinterpret_cast<const int32_t*>(base + off_tab_);
    tables_.rope_cs = reinterpret_cast<const float*>(base + off_rope_);
    tables_ready_ = true;
  }

  // ---- MLPs -----------------------------------------------------------------------------
  // out[n][hidden] = down(silu(gate(x)) * up(x)) for n rows of x.
  void run_mlp(const Mlp& m, const float* x, int64_t n, float* out, void* ns) {
    const int64_t H = c_.hidden_size, I = m.gate.rows;
    cuda::matmul(m.gate, x, H, n, gate_.as<float>(), I, ns, gemm_);
    cuda::matmul(m.up, x, H, n, up_.as<float>(), I, ns, gemm_);
    cuda::silu_mul(gate_.as<float>(), up_.as<float>(), n * I, gate_.as<float>(), ns);
    cuda::matmul(m.down, gate_.as<float>(), I, n, out, H, ns, gemm_);
  }

  // y[row] += weight * mlps[i](h[row]) for every (row, weight) of work[i], i in order.
  void accumulate(const float* h, const std::vector<const Mlp*>& mlps, const std::vector<DeviceExpertWork>& work,
                  float* y, cudaStream_t s) {
    int64_t total = 0;
    for (const DeviceExpertWork& w : work) {
      if (w.rows.size() != w.weights.size())
        throw std::invalid_argument("CudaDeviceModel: expert " + std::to_string(w.expert) + " has " +
                                    std::to_string(w.rows.size()) + " rows but " + std::to_string(w.weights.size()) +
                                    " weights");
      if (int64_t(w.rows.size()) > T_)
        throw std::invalid_argument("CudaDeviceModel: expert " + std::to_string(w.expert) + " has more rows than the step");
      for (int32_t r : w.rows)
        if (r < 0 || r >= T_)
          throw std::out_of_range("CudaDeviceModel: expert " + std::to_string(w.expert) + " names row " +
                                  std::to_string(r) + " of " + std::to_string(T_));
      total += int64_t(w.rows.size());
    }
    if (total == 0) return;
    // One upload for every list: all rows, then all weights.
    lists_host_.resize(size_t(2 * total) * 4);
    auto* rows_h = reinterpret_cast<int32_t*>(lists_host_.data());
    auto* weights_h = reinterpret_cast<float*>(lists_host_.data() + total * 4);
    int64_t off = 0;
    for (const DeviceExpertWork& w : work) {
      std::copy(w.rows.begin(), w.rows.end(), rows_h + off);
      std::copy(w.weights.begin(), w.weights.end(), weights_h + off);
      off += int64_t(w.rows.size());
    }
    auto* base = static_cast<uint8_t*>(arena_.upload(lists_host_.data(), 2 * total * 4, s, "upload expert rows"));
    const auto* rows_d = reinterpret_cast<const int32_t*>(base);
    const auto* weights_d = reinterpret_cast<const float*>(base + total * 4);
    const int64_t H = c_.hidden_size;
    void* ns = s;
    off = 0;
    for (size_t i = 0; i < work.size(); ++i) {
      const int64_t n = int64_t(work[i].rows.size());
      if (n == 0) continue;
      cuda::gather_rows(h, H, rows_d + off, n, H, xe_.as<float>(), H, ns);
      run_mlp(*mlps[i], xe_.as<float>(), n, ye_.as<float>(), ns);
      cuda::scatter_add_rows(ye_.as<float>(), H, rows_d + off, weights_d + off, n, H, y, H, ns);
      off += n;
    }
  }

  // ---- ordering ---------------------------------------------------------------------------
  // Records that this model's work so far on stream s ends here.
  void mark(cudaStream_t s) {
    for (auto& [st, ev] : stream_events_)
      if (st == s) {
        check_cuda(cudaEventRecord(ev, s), "cudaEventRecord");
        return;
      }
    cudaEvent_t ev = nullptr;
    check_cuda(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), "cudaEventCreate");
    stream_events_.emplace_back(s, ev);
    check_cuda(cudaEventRecord(ev, s), "cudaEventRecord");
  }
  void wait_idle() {
    for (auto& [st, ev] : stream_events_) check_cuda(cudaEventSynchronize(ev), "waiting for the previous step");
  }

  const Model& model_;
  const ModelConfig& c_;
  Device& device_;
  Rope rope_;
  int64_t max_pages_;
  // The projections' GEMM policy. The router and the indexer's projections always take the
  // fp32 kernels: their outputs choose experts and cached positions (top-k), where the bf16
  // rounding of the cuBLAS path would flip near-ties, and they are a few percent of the FLOPs.
  cuda::GemmOptions gemm_;
  int sm_count_ = 1;
  cuda_mla::MlaShape shape_;
  float head_scale_ = 1.0f;

  std::vector<DeviceLayer> layers_;
  float* final_norm_ = nullptr;
  WeightMatrix lm_head_;
  int64_t inter_max_ = 0;
  std::vector<DeviceBuffer> owned_, temp_;
  int64_t weight_bytes_ = 0;

  DeviceBuffer pages_;
  cuda_mla::KvPages kv_;

  // The current step.
  bool in_step_ = false;
  int64_t T_ = 0;
  std::vector<uint8_t> tables_host_;
  int64_t off_rt_ = 0, off_tab_ = 0, off_rope_ = 0;
  bool tables_ready_ = false;
  cuda_mla::StepTables tables_;
  std::vector<AttnGroup> groups_;
  std::vector<float> rope_table_;
  std::vector<uint8_t> lists_host_;
  StagingArena arena_;

  // Scratch, sized for scratch_rows_ rows.
  int64_t scratch_rows_ = 0;
  DeviceBuffer qr_, q_, kva_, attn_, yattn_, iq_, ik_, iw_, xe_, gate_, up_, ye_, ys_, hn_, scores_, picked_;

  std::vector<std::pair<cudaStream_t, cudaEvent_t>> stream_events_;
};

}  // namespace

std::unique_ptr<DeviceModel> make_cuda_device_model(const Model& model, Device& device,
                                                    std::function<bool(int64_t layer, int64_t expert)> resident,
                                                    int64_t max_pages, const cuda::GemmOptions& gemm) {
  return std::make_unique<CudaDeviceModel>(model, device, std::move(resident), max_pages, gemm);
}

}  // namespace hearth

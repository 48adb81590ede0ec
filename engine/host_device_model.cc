#include "engine/host_device_model.h"

#include <cstring>
#include <stdexcept>

#include "engine/experts.h"
#include "engine/layers.h"
#include "engine/ops.h"
#include "engine/rope.h"

namespace hearth {

namespace {

class HostDeviceModel final : public DeviceModel {
 public:
  HostDeviceModel(const Model& model, Device& device, std::function<bool(int64_t, int64_t)> resident, int threads)
      : model_(model), device_(device), pool_(threads), rope_(model.config()) {
    const ModelConfig& c = model.config();
    layers_.resize(model.layers.size());
    resident_.resize(model.layers.size());
    for (size_t l = 0; l < model.layers.size(); ++l) {
      const Layer& src = model.layers[l];
      Layer& dst = layers_[l];
      dst.attn_norm = src.attn_norm;
      dst.ffn_norm = src.ffn_norm;
      dst.is_moe = src.is_moe;
      dst.attn = src.attn;
      for (WeightMatrix* w : {&dst.attn.q_a, &dst.attn.q_b, &dst.attn.kv_a, &dst.attn.kv_b, &dst.attn.o}) upload(*w);
      if (dst.attn.split_kv_b()) {  // a GGUF's k_b / v_b, which absorbed attention reads instead of kv_b
        upload(dst.attn.k_b);
        upload(dst.attn.v_b);
      }
      if (dst.attn.has_indexer)
        for (WeightMatrix* w : {&dst.attn.indexer.wq_b, &dst.attn.indexer.wk, &dst.attn.indexer.weights_proj}) upload(*w);
      if (!src.is_moe) {
        dst.dense = src.dense;
        upload(dst.dense);
        continue;
      }
      dst.moe.router = src.moe.router;
      upload(dst.moe.router);
      dst.moe.router_bias = src.moe.router_bias;
      dst.moe.has_shared = src.moe.has_shared;
      if (src.moe.has_shared) {
        dst.moe.shared = src.moe.shared;
        upload(dst.moe.shared);
      }
      dst.moe.experts.resize(src.moe.experts.size());
      resident_[l].assign(src.moe.experts.size(), false);
      for (size_t e = 0; e < src.moe.experts.size(); ++e) {
        if (!resident(int64_t(l), int64_t(e))) continue;
        resident_[l][e] = true;
        dst.moe.experts[e] = src.moe.experts[e];
        upload(dst.moe.experts[e]);
      }
    }
    head_ = model.lm_head;
    upload(head_);
    final_norm_ = model.final_norm;
    device_.synchronize();
    (void)c;
  }

  ~HostDeviceModel() override {
    for (void* p : owned_) device_.free(p);
  }

  void begin_step(const StepRows& rows) override {
    if (!rows.host_cache) throw std::logic_error("the simulated device's model needs StepRows::host_cache");
    rows_ = &rows;
  }
  void copy_page(int32_t, int32_t, void*) override {}  // the host cache already copied it

  void attention_block(int64_t layer, float* x, float* h, void*) override {
    const ModelConfig& c = model_.config();
    const StepRows& R = *rows_;
    const int64_t T = R.rows(), H = c.hidden_size;
    const Layer& L = layers_[size_t(layer)];
    StepContext ctx{R, c, pool_, *R.host_cache, rope_, R.path, R.chunks, StepProbes{}};
    y_.resize(size_t(T * H));
    for (int64_t r = 0; r < T; ++r) rms_norm(x + r * H, L.attn_norm.data(), H, c.rms_norm_eps, h + r * H);
    attention_forward(ctx, layer, L.attn, h, y_.data());
    for (int64_t i = 0; i < T * H; ++i) x[i] += y_[size_t(i)];
    for (int64_t r = 0; r < T; ++r) rms_norm(x + r * H, L.ffn_norm.data(), H, c.rms_norm_eps, h + r * H);
  }

  void router(int64_t layer, const float* h, float* logits, void*) override {
    linear(pool_, layers_[size_t(layer)].moe.router, h, rows_->rows(), logits);
  }

  void ffn(int64_t layer, const float* h, const std::vector<DeviceExpertWork>& experts, float* y, void*) override {
    const Layer& L = layers_[size_t(layer)];
    const int64_t T = rows_->rows(), H = model_.config().hidden_size;
    if (!L.is_moe) {
      mlp_rows(pool_, L.dense, h, T, y);
      return;
    }
    if (L.moe.has_shared) mlp_rows(pool_, L.moe.shared, h, T, y);
    else std::fill(y, y + T * H, 0.0f);
    std::vector<ExpertWork> work;
    for (const DeviceExpertWork& w : experts) {
      if (!resident_[size_t(layer)][size_t(w.expert)])
        throw std::logic_error("expert " + std::to_string(w.expert) + " of layer " + std::to_string(layer) +
                               " is not resident on the device");
      work.push_back(ExpertWork{&L.moe.experts[size_t(w.expert)], w.rows, w.weights});
    }
    if (!work.empty()) experts_accumulate(pool_, work, h, H, y);
  }

  bool runs_streamed_mlps() const override { return true; }
  void run_mlps(const float* h, const std::vector<const Mlp*>& mlps, const std::vector<DeviceExpertWork>& experts,
                float* y, void*) override {
    std::vector<ExpertWork> work;
    for (size_t i = 0; i < experts.size(); ++i) work.push_back(ExpertWork{mlps[i], experts[i].rows, experts[i].weights});
    if (!work.empty()) experts_accumulate(pool_, work, h, model_.config().hidden_size, y);
  }

  void add(float* x, const float* y, int64_t n, void*) override {
    for (int64_t i = 0; i < n; ++i) x[i] += y[i];
  }

  void head(const float* x, const std::vector<int32_t>& rows, float* logits, void*) override {
    const ModelConfig& c = model_.config();
    const int64_t H = c.hidden_size;
    hn_.resize(rows.size() * size_t(H));
    for (size_t i = 0; i < rows.size(); ++i)
      rms_norm(x + int64_t(rows[i]) * H, final_norm_.data(), H, c.rms_norm_eps, hn_.data() + int64_t(i) * H);
    linear(pool_, head_, hn_.data(), int64_t(rows.size()), logits);
  }

  bool expert_resident(int64_t layer, int64_t e) const override {
    return layer >= 0 && size_t(layer) < resident_.size() && e >= 0 && size_t(e) < resident_[size_t(layer)].size() &&
           resident_[size_t(layer)][size_t(e)];
  }
  int64_t weight_bytes() const override { return bytes_; }

 private:
  // Copies a weight (and its FP8 block scales) into device memory and points it there.
  void upload(WeightMatrix& w) {
    if (!w.data) return;
    const int64_t n = w.bytes();
    void* d = device_.alloc(n);
    owned_.push_back(d);
    device_.copy_to_device(0, d, w.data, n, "upload weight");
    w.data = d;
    bytes_ += n;
    if (w.scale) {
      const int64_t s = ((w.rows + w.block - 1) / w.block) * w.scale_cols() * int64_t(sizeof(float));
      void* ds = device_.alloc(s);
      owned_.push_back(ds);
      device_.copy_to_device(0, ds, w.scale, s, "upload scales");
      w.scale = static_cast<const float*>(ds);
      bytes_ += s;
    }
  }
  void upload(Mlp& m) {
    upload(m.gate);
    upload(m.up);
    upload(m.down);
  }

  const Model& model_;
  Device& device_;
  ThreadPool pool_;
  Rope rope_;
  std::vector<Layer> layers_;
  std::vector<std::vector<bool>> resident_;
  WeightMatrix head_;
  std::vector<float> final_norm_;
  std::vector<void*> owned_;
  int64_t bytes_ = 0;
  const StepRows* rows_ = nullptr;
  std::vector<float> y_, hn_;
};

}  // namespace

std::unique_ptr<DeviceModel> make_host_device_model(const Model& model, Device& device,
                                                    std::function<bool(int64_t, int64_t)> resident, int threads) {
  return std::make_unique<HostDeviceModel>(model, device, std::move(resident), threads);
}

}  // namespace hearth

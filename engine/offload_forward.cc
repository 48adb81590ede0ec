#include "engine/offload_forward.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <stdexcept>
#include <string>

#include "engine/experts.h"
#include "engine/layers.h"
#include "engine/read_bytes.h"

namespace hearth {

namespace {

// Device memory (or pinned host memory) that grows to the largest step seen; contents are
// not kept on growth.
template <bool kPinned>
struct GrowingBuffer {
  Device* dev = nullptr;
  void* ptr = nullptr;
  int64_t bytes = 0;
  float* get(int64_t need) {
    if (need > bytes) {
      release();
      ptr = kPinned ? dev->alloc_pinned(need) : dev->alloc(need);
      bytes = need;
    }
    return static_cast<float*>(ptr);
  }
  void release() {
    if (ptr) kPinned ? dev->free_pinned(ptr) : dev->free(ptr);
    ptr = nullptr;
    bytes = 0;
  }
  ~GrowingBuffer() { release(); }
};
using GrowingDeviceBuffer = GrowingBuffer<false>;
using GrowingPinnedBuffer = GrowingBuffer<true>;

}  // namespace

// One weight of a streamed expert: where its bytes come from and where they go inside a
// staging buffer.
struct StagedPiece {
  const void* src = nullptr;
  int64_t bytes = 0, offset = 0;
};

// A layer's non-resident experts, each laid out back to back for staging.
struct OffloadForward::StreamedLayer {
  std::vector<int32_t> experts;
  std::vector<std::vector<StagedPiece>> pieces;  // per expert: gate, up, down data (+ scales)
  std::vector<int64_t> expert_bytes, expert_params;
  int64_t bytes = 0, params = 0;
};

// A run of one layer's streamed experts that fits one staging slot.
struct OffloadForward::StreamGroup {
  int64_t layer = 0;
  size_t first = 0, count = 0;  // indices into StreamedLayer::experts
  int64_t bytes = 0;
  int slot = 0;
  EventId uploaded = -1, computed = -1;
};

namespace {

int64_t scale_bytes(const WeightMatrix& w) {
  return w.scale ? ((w.rows + w.block - 1) / w.block) * w.scale_cols() * int64_t(sizeof(float)) : 0;
}

constexpr int64_t kStageAlign = 256;

int64_t aligned(int64_t n) { return (n + kStageAlign - 1) / kStageAlign * kStageAlign; }

}  // namespace

struct OffloadForward::Buffers {
  explicit Buffers(Device& d) {
    for (GrowingDeviceBuffer* b : {&x, &h, &y, &cpu_y, &router, &logits}) b->dev = &d;
    for (GrowingPinnedBuffer* b : {&x_host, &h_host, &router_host, &cpu_y_host, &logits_host}) b->dev = &d;
    for (int i = 0; i < 2; ++i) {
      stage_dev[i].dev = &d;
      stage_host[i].dev = &d;
    }
  }
  GrowingDeviceBuffer x, h, y, cpu_y, router, logits;
  GrowingPinnedBuffer x_host, h_host, router_host, cpu_y_host, logits_host;
  GrowingDeviceBuffer stage_dev[2];
  GrowingPinnedBuffer stage_host[2];
  StreamId copy = 0;    // activations both ways: a few KB per token per layer
  StreamId upload = 0;  // streamed expert weights: kept apart so activations never queue behind them
};

OffloadForward::OffloadForward(const Model& model, ThreadPool& pool, Device& device, DeviceModel& dm)
    : model_(model), pool_(pool), device_(device), dm_(dm), buf_(std::make_unique<Buffers>(device)) {
  buf_->copy = device_.create_stream("copy");
  buf_->upload = device_.create_stream("upload");
  streamed_.resize(model.layers.size());
  for (size_t l = 0; l < model.layers.size(); ++l) {
    const Layer& L = model.layers[l];
    if (!L.is_moe) continue;
    StreamedLayer& S = streamed_[l];
    for (size_t e = 0; e < L.moe.experts.size(); ++e) {
      if (dm.expert_resident(int64_t(l), int64_t(e))) continue;
      const Mlp& m = L.moe.experts[e];
      std::vector<StagedPiece> pieces;
      int64_t off = 0, params = 0;
      for (const WeightMatrix* w : {&m.gate, &m.up, &m.down}) {
        pieces.push_back({w->data, w->bytes(), off});
        off += aligned(w->bytes());
        if (w->scale) {
          pieces.push_back({w->scale, scale_bytes(*w), off});
          off += aligned(scale_bytes(*w));
        }
        params += w->rows * w->cols;
      }
      S.experts.push_back(int32_t(e));
      S.pieces.push_back(std::move(pieces));
      S.expert_bytes.push_back(off);
      S.expert_params.push_back(params);
      S.bytes += off;
      S.params += params;
    }
  }
}

bool OffloadForward::should_stream(int64_t layer, int64_t rows) const {
  if (!tuning_.allow_streaming || !dm_.runs_streamed_mlps()) return false;
  if (layer < 0 || size_t(layer) >= streamed_.size() || streamed_[size_t(layer)].experts.empty()) return false;
  if (tuning_.force_stream_rows > 0) return rows >= tuning_.force_stream_rows;
  // CPU: each non-resident expert a row hits costs its weights once per step (memory) and
  // 2 flops per parameter per row (compute); the slower of the two bounds the layer.
  // Device: the whole group of non-resident experts crosses the link (its math is far
  // faster than the link on any GPU worth offloading to).
  const ModelConfig& c = model_.config();
  const StreamedLayer& S = streamed_[size_t(layer)];
  const double share = double(c.num_experts_per_tok) / double(std::max<int64_t>(1, c.n_routed_experts));
  const double hit = 1.0 - std::pow(1.0 - share, double(rows));  // fraction of experts some row hits
  const double cpu_s = std::max(hit * double(S.bytes) / (tuning_.cpu_read_gbps * 1e9),
                                2.0 * double(rows) * share * double(S.params) / (tuning_.cpu_gflops * 1e9));
  const double link_s = double(S.bytes) / (tuning_.link_gbps * 1e9);
  return link_s < cpu_s;
}

// Uploads groups [groups_enqueued_, g] (each: host copy into a pinned slot, then an async
// copy into the device slot). A slot is reused only after the upload that last read its
// pinned half has finished (host wait) and the compute that last read its device half has
// been passed on the copy stream (device wait).
void OffloadForward::enqueue_uploads_through(size_t g) {
  Buffers& b = *buf_;
  for (; groups_enqueued_ <= g && groups_enqueued_ < groups_.size(); ++groups_enqueued_) {
    StreamGroup& G = groups_[groups_enqueued_];
    const size_t prev = groups_enqueued_;
    if (prev >= 2) {
      StreamGroup& old = groups_[prev - 2];
      device_.event_wait(old.uploaded);
      if (old.computed < 0) throw std::logic_error("staging slot reused before its compute was enqueued");
      device_.wait_event(b.upload, old.computed);
    }
    G.slot = int(prev % 2);
    // Sized for the step's largest group before any upload (the device is idle then).
    auto* host = reinterpret_cast<uint8_t*>(b.stage_host[G.slot].ptr);
    auto* dev = reinterpret_cast<uint8_t*>(b.stage_dev[G.slot].ptr);
    // The host half of the copy: every thread of the pool copies its share (one thread
    // copies ~7 GB/s, well under a PCIe link, and would leave the link idle).
    const StreamedLayer& S = streamed_[size_t(G.layer)];
    struct Span {
      uint8_t* dst;
      const uint8_t* src;
      int64_t bytes;
    };
    std::vector<Span> spans;
    constexpr int64_t kSpan = int64_t(1) << 20;
    int64_t base = 0;
    for (size_t i = G.first; i < G.first + G.count; ++i) {
      for (const StagedPiece& p : S.pieces[i])
        for (int64_t o = 0; o < p.bytes; o += kSpan)
          spans.push_back({host + base + p.offset + o, static_cast<const uint8_t*>(p.src) + o, std::min(kSpan, p.bytes - o)});
      base += S.expert_bytes[i];
    }
    pool_.parallel_for(int64_t(spans.size()), [&](int64_t a, int64_t z) {
      for (int64_t k = a; k < z; ++k) std::memcpy(spans[size_t(k)].dst, spans[size_t(k)].src, size_t(spans[size_t(k)].bytes));
    });
    device_.copy_to_device(b.upload, dev, host, G.bytes, "stream experts");
    G.uploaded = device_.record_event(b.upload);
  }
}

OffloadForward::~OffloadForward() {
  try {
    device_.synchronize();
  } catch (...) {
  }
}

void OffloadForward::step(KvCache& cache, const std::vector<SequenceChunk>& batch, float* logits, AttentionPath path,
                          bool last_only) {
  const ModelConfig& c = model_.config();
  StepRows rows;
  static_cast<RowLayout&>(rows) = RowLayout::of(cache, batch, c.vocab_size);
  rows.path = path;
  rows.chunks = batch;
  // Extending may copy a shared page (copy-on-write); the device's pages must follow.
  std::vector<std::pair<int32_t, int32_t>> page_copies;
  for (size_t i = 0; i < batch.size(); ++i) {
    const std::vector<int32_t> before = cache.page_table(batch[i].seq);
    cache.extend(batch[i].seq, rows.chunk_start_pos[i] + int64_t(batch[i].tokens.size()));
    const std::vector<int32_t>& after = cache.page_table(batch[i].seq);
    for (size_t p = 0; p < before.size() && p < after.size(); ++p)
      if (before[p] != after[p]) page_copies.emplace_back(before[p], after[p]);
  }
  for (size_t i = 0; i < batch.size(); ++i) rows.page_tables.push_back(cache.page_table(batch[i].seq));
  rows.page_tokens = cache.page_tokens();
  rows.host_cache = &cache;
  const int64_t T = rows.rows(), H = c.hidden_size, E = c.n_routed_experts;
  if (T == 0) return;

  Buffers& b = *buf_;
  const StreamId compute = 0, copy = b.copy;
  float* x = b.x.get(T * H * 4);
  float* h = b.h.get(T * H * 4);
  float* y = b.y.get(T * H * 4);
  float* x_host = b.x_host.get(T * H * 4);
  for (int64_t r = 0; r < T; ++r) dequantize_row(model_.embed, rows.token(batch, r), 0, H, x_host + r * H);

  DeviceModel& dm = dm_;
  dm.begin_step(rows);
  device_.copy_to_device(compute, x, x_host, T * H * 4, "embeddings");
  for (const auto& [from, to] : page_copies)
    device_.launch(compute, "copy page", [&dm, from = from, to = to](void* ns) { dm.copy_page(from, to, ns); });

  // Large chunks may stream layers' non-resident experts instead of computing them on the
  // CPU: plan this step's upload groups and start the first two right away, so they
  // overlap with the first layers' attention.
  for (StreamGroup& G : groups_)
    for (EventId e : {G.uploaded, G.computed})
      if (e >= 0) device_.release_event(e);
  groups_.clear();
  groups_enqueued_ = 0;
  stats_ = OffloadStepStats{};
  std::vector<size_t> layer_first_group(size_t(c.num_hidden_layers), SIZE_MAX);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    if (!should_stream(l, T)) continue;
    const StreamedLayer& S = streamed_[size_t(l)];
    layer_first_group[size_t(l)] = groups_.size();
    ++stats_.layers_streamed;
    for (size_t i = 0; i < S.experts.size();) {
      StreamGroup G;
      G.layer = l;
      G.first = i;
      while (i < S.experts.size() && (G.count == 0 || G.bytes + S.expert_bytes[i] <= tuning_.staging_bytes)) {
        if (S.expert_bytes[i] > tuning_.staging_bytes)
          throw std::invalid_argument("one expert (" + std::to_string(S.expert_bytes[i]) +
                                      " bytes) does not fit the staging buffer of " +
                                      std::to_string(tuning_.staging_bytes) + " bytes");
        G.bytes += S.expert_bytes[i++];
        ++G.count;
      }
      stats_.bytes_streamed += G.bytes;
      groups_.push_back(G);
    }
  }
  if (!groups_.empty()) {
    int64_t largest = 0;
    for (const StreamGroup& G : groups_) largest = std::max(largest, G.bytes);
    for (int i = 0; i < 2; ++i) {
      b.stage_host[i].get(largest);
      b.stage_dev[i].get(largest);
    }
  }
  size_t groups_computed = 0;  // groups whose compute is enqueued

  // Host data a launch reads stays here until the step has finished on the device.
  std::deque<std::vector<DeviceExpertWork>> keep;
  std::deque<std::vector<const Mlp*>> keep_mlps;
  std::deque<Mlp> keep_views;
  std::vector<ExpertWork> cpu_work;
  // On any exception the device must be idle before the host data above goes away.
  struct IdleOnExit {
    Device& d;
    ~IdleOnExit() {
      try {
        d.synchronize();
      } catch (...) {
      }
    }
  } idle_on_exit{device_};
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const Layer& L = model_.layers[size_t(l)];
    device_.launch(compute, "attention", [&dm, l, x, h](void* ns) { dm.attention_block(l, x, h, ns); });
    if (!L.is_moe) {
      static const std::vector<DeviceExpertWork> none;
      device_.launch(compute, "dense mlp", [&dm, l, h, y](void* ns) { dm.ffn(l, h, none, y, ns); });
      device_.launch(compute, "residual", [&dm, x, y, n = T * H](void* ns) { dm.add(x, y, n, ns); });
      continue;
    }
    // The host needs the normalized rows and the router logits to route and to run its
    // experts: download both on the copy stream as soon as each exists.
    const EventId attn_done = device_.record_event(compute);
    float* rl = b.router.get(T * E * 4);
    device_.launch(compute, "router", [&dm, l, h, rl](void* ns) { dm.router(l, h, rl, ns); });
    const EventId router_done = device_.record_event(compute);
    float* h_host = b.h_host.get(T * H * 4);
    float* rl_host = b.router_host.get(T * E * 4);
    device_.wait_event(copy, attn_done);
    device_.copy_to_host(copy, h_host, h, T * H * 4, "hidden rows");
    device_.wait_event(copy, router_done);
    device_.copy_to_host(copy, rl_host, rl, T * E * 4, "router logits");
    const EventId down = device_.record_event(copy);
    // While the device runs this layer's attention and router, stage the next two
    // expert groups (host copies into the pinned slots): the host would only wait here.
    if (groups_computed < groups_.size()) enqueue_uploads_through(groups_computed + 1);
    device_.event_wait(down);
    for (EventId e : {attn_done, router_done, down}) device_.release_event(e);

    // Route every row; each expert's rows go to whichever side holds it.
    std::vector<std::vector<int32_t>> er(static_cast<size_t>(E));
    std::vector<std::vector<float>> ew(static_cast<size_t>(E));
    for (int64_t r = 0; r < T; ++r) {
      const Routing route = route_token(c, rl_host + r * E, L.moe.router_bias);
      for (size_t i = 0; i < route.experts.size(); ++i) {
        er[size_t(route.experts[i])].push_back(int32_t(r));
        ew[size_t(route.experts[i])].push_back(route.weights[i]);
      }
    }
    {
      std::vector<int64_t> rows_per_expert(static_cast<size_t>(E));
      for (int64_t e = 0; e < E; ++e) rows_per_expert[size_t(e)] = int64_t(er[size_t(e)].size());
      record_routing(probes_, c, l, L.moe, rows_per_expert, T);
    }
    const bool streamed = layer_first_group[size_t(l)] != SIZE_MAX;
    std::vector<DeviceExpertWork>& dev_work = keep.emplace_back();
    cpu_work.clear();
    for (int64_t e = 0; e < E; ++e) {
      if (er[size_t(e)].empty()) continue;
      if (dm.expert_resident(l, e))
        dev_work.push_back(DeviceExpertWork{int32_t(e), std::move(er[size_t(e)]), std::move(ew[size_t(e)])});
      else if (!streamed)
        cpu_work.push_back(ExpertWork{&L.moe.experts[size_t(e)], std::move(er[size_t(e)]), std::move(ew[size_t(e)])});
    }
    stats_.device_expert_calls += int64_t(dev_work.size());
    stats_.cpu_expert_calls += int64_t(cpu_work.size());
    const std::vector<DeviceExpertWork>* dw = &dev_work;
    device_.launch(compute, "shared + resident experts", [&dm, l, h, dw, y](void* ns) { dm.ffn(l, h, *dw, y, ns); });
    if (streamed) {
      // The layer's streamed experts, group by group as each arrives; the next group
      // uploads while this one computes.
      const StreamedLayer& S = streamed_[size_t(l)];
      for (size_t g = layer_first_group[size_t(l)]; g < groups_.size() && groups_[g].layer == l; ++g) {
        enqueue_uploads_through(g + 1);
        StreamGroup& G = groups_[g];
        auto* dev = reinterpret_cast<uint8_t*>(b.stage_dev[G.slot].ptr);
        std::vector<const Mlp*>& mlps = keep_mlps.emplace_back();
        std::vector<DeviceExpertWork>& work = keep.emplace_back();
        int64_t base = 0;
        for (size_t i = G.first; i < G.first + G.count; ++i) {
          const int32_t e = S.experts[i];
          const std::vector<StagedPiece>& pieces = S.pieces[i];
          if (!er[size_t(e)].empty()) {
            Mlp& view = keep_views.emplace_back(L.moe.experts[size_t(e)]);
            size_t p = 0;
            for (WeightMatrix* w : {&view.gate, &view.up, &view.down}) {
              w->data = dev + base + pieces[p++].offset;
              if (w->scale) w->scale = reinterpret_cast<const float*>(dev + base + pieces[p++].offset);
            }
            mlps.push_back(&view);
            work.push_back(DeviceExpertWork{e, std::move(er[size_t(e)]), std::move(ew[size_t(e)])});
          }
          base += S.expert_bytes[i];
        }
        stats_.device_expert_calls += int64_t(work.size());
        device_.wait_event(compute, G.uploaded);
        const std::vector<const Mlp*>* mp = &mlps;
        const std::vector<DeviceExpertWork>* wp = &work;
        device_.launch(compute, "streamed experts", [&dm, h, mp, wp, y](void* ns) { dm.run_mlps(h, *mp, *wp, y, ns); });
        G.computed = device_.record_event(compute);
        groups_computed = g + 1;
      }
    }
    if (!cpu_work.empty()) {
      // The CPU's experts run while the device computes its own.
      float* cy_host = b.cpu_y_host.get(T * H * 4);
      float* cy = b.cpu_y.get(T * H * 4);
      std::fill(cy_host, cy_host + T * H, 0.0f);
      experts_accumulate(pool_, cpu_work, h_host, H, cy_host);
      device_.copy_to_device(copy, cy, cy_host, T * H * 4, "cpu experts");
      const EventId up = device_.record_event(copy);
      device_.wait_event(compute, up);
      device_.release_event(up);
      device_.launch(compute, "cpu experts add", [&dm, x, cy, n = T * H](void* ns) { dm.add(x, cy, n, ns); });
    }
    device_.launch(compute, "residual", [&dm, x, y, n = T * H](void* ns) { dm.add(x, y, n, ns); });
  }

  if (!logits) {
    device_.synchronize();
    return;
  }
  const std::vector<int32_t> head_rows = rows.head_rows(batch, last_only);
  const int64_t N = int64_t(head_rows.size()), V = c.vocab_size;
  float* lg = b.logits.get(N * V * 4);
  float* lg_host = b.logits_host.get(N * V * 4);
  device_.launch(compute, "head", [&dm, x, &head_rows, lg](void* ns) { dm.head(x, head_rows, lg, ns); });
  device_.copy_to_host(compute, lg_host, lg, N * V * 4, "logits");
  device_.synchronize();
  std::memcpy(logits, lg_host, size_t(N * V) * sizeof(float));
}

}  // namespace hearth

#include "engine/forward.h"

#include <stdexcept>
#include <string>

#include "engine/layers.h"
#include "engine/numa_experts.h"
#include "engine/offload_forward.h"
#include "engine/ops.h"

namespace hearth {

RowLayout RowLayout::of(const KvCache& cache, const std::vector<SequenceChunk>& batch, int64_t vocab) {
  RowLayout L;
  for (size_t i = 0; i < batch.size(); ++i) {
    const SequenceChunk& ch = batch[i];
    const int64_t start = cache.length(ch.seq);
    L.chunk_first_row.push_back(L.rows());
    L.chunk_start_pos.push_back(start);
    for (size_t j = 0; j < ch.tokens.size(); ++j) {
      const int32_t tok = ch.tokens[j];
      if (tok < 0 || tok >= vocab)
        throw std::out_of_range("token id " + std::to_string(tok) + " is outside the vocabulary [0, " +
                                std::to_string(vocab) + ")");
      L.row_chunk.push_back(int32_t(i));
      L.row_pos.push_back(start + int64_t(j));
    }
  }
  return L;
}

std::vector<int32_t> RowLayout::head_rows(const std::vector<SequenceChunk>& batch, bool last_only) const {
  std::vector<int32_t> rows;
  for (size_t i = 0; i < batch.size(); ++i) {
    const int64_t first = chunk_first_row[i], n = int64_t(batch[i].tokens.size());
    if (n == 0) continue;
    if (last_only) rows.push_back(int32_t(first + n - 1));
    else
      for (int64_t j = 0; j < n; ++j) rows.push_back(int32_t(first + j));
  }
  return rows;
}

Forward::Forward(const Model& model, ThreadPool& pool) : model_(model), pool_(pool), rope_(model.config()) {}

void Forward::set_numa_experts(const NumaExperts* experts) {
  if (experts && &experts->model() != &model_)
    throw std::invalid_argument("Forward: the NUMA expert shards were built from another model");
  numa_experts_ = experts;
}

void Forward::step(KvCache& cache, const std::vector<SequenceChunk>& batch, float* logits,
                   AttentionPath path, bool last_only) {
  if (offload_) {
    offload_->set_probes(probes_);
    offload_->step(cache, batch, logits, path, last_only);
    return;
  }
  const ModelConfig& c = model_.config();
  StepContext ctx{RowLayout::of(cache, batch, c.vocab_size), c, pool_, cache, rope_, path, batch, probes_, numa_experts_};
  for (size_t i = 0; i < batch.size(); ++i)
    cache.extend(batch[i].seq, ctx.chunk_start_pos[i] + int64_t(batch[i].tokens.size()));
  const int64_t T = ctx.rows(), H = c.hidden_size;
  if (T == 0) return;

  // The residual stream, one row per new token.
  std::vector<float> x(static_cast<size_t>(T * H)), h(static_cast<size_t>(T * H)), y(static_cast<size_t>(T * H));
  for (int64_t r = 0; r < T; ++r) dequantize_row(model_.embed, ctx.token(batch, r), 0, H, x.data() + r * H);

  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const Layer& L = model_.layers[size_t(l)];
    for (int64_t r = 0; r < T; ++r) rms_norm(x.data() + r * H, L.attn_norm.data(), H, c.rms_norm_eps, h.data() + r * H);
    {
      ScopedPhase phase(probes_.profiler, Phase::kAttention);
      attention_forward(ctx, l, L.attn, h.data(), y.data());
    }
    for (int64_t i = 0; i < T * H; ++i) x[size_t(i)] += y[size_t(i)];
    for (int64_t r = 0; r < T; ++r) rms_norm(x.data() + r * H, L.ffn_norm.data(), H, c.rms_norm_eps, h.data() + r * H);
    if (L.is_moe) {
      moe_forward(ctx, l, L.moe, h.data(), y.data());  // marks router, routed and shared experts
    } else {
      ScopedPhase phase(probes_.profiler, Phase::kDenseMlp);
      mlp_forward(pool_, L.dense, h.data(), T, y.data(), probes_.activations);
    }
    for (int64_t i = 0; i < T * H; ++i) x[size_t(i)] += y[size_t(i)];
  }

  if (!logits) return;
  // Final norm and head, on every row or on each chunk's last row.
  ScopedPhase phase(probes_.profiler, Phase::kHead);
  const std::vector<int32_t> rows = ctx.head_rows(batch, last_only);
  for (size_t i = 0; i < rows.size(); ++i)
    rms_norm(x.data() + int64_t(rows[i]) * H, model_.final_norm.data(), H, c.rms_norm_eps, h.data() + int64_t(i) * H);
  observe_rows(probes_, model_.lm_head, h.data(), int64_t(rows.size()), H);
  linear(pool_, model_.lm_head, h.data(), int64_t(rows.size()), logits);
}

}  // namespace hearth

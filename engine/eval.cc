#include "engine/eval.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>

#include "engine/kv_cache.h"
#include "engine/numa_experts.h"
#include "engine/vec_ops.h"

namespace hearth {

double log_sum_exp(std::span<const float> logits) {
  if (logits.empty()) throw std::invalid_argument("log_sum_exp: no logits");
  double mx = -std::numeric_limits<double>::infinity();
  for (float v : logits) mx = std::max(mx, double(v));
  if (!std::isfinite(mx)) return mx;  // +inf, or every logit -inf
  double sum = 0;
  for (float v : logits) sum += std::exp(double(v) - mx);
  return mx + std::log(sum);
}

double negative_log_likelihood(std::span<const float> logits, int32_t target) {
  if (target < 0 || size_t(target) >= logits.size())
    throw std::invalid_argument("negative_log_likelihood: target " + std::to_string(target) + " outside [0, " +
                                std::to_string(logits.size()) + ")");
  return log_sum_exp(logits) - double(logits[size_t(target)]);
}

double kl_divergence(std::span<const float> p_logits, std::span<const float> q_logits) {
  if (p_logits.size() != q_logits.size())
    throw std::invalid_argument("kl_divergence: rows of " + std::to_string(p_logits.size()) + " and " +
                                std::to_string(q_logits.size()) + " logits");
  const double lp = log_sum_exp(p_logits), lq = log_sum_exp(q_logits);
  double kl = 0;
  for (size_t i = 0; i < p_logits.size(); ++i) {
    const double log_p = double(p_logits[i]) - lp;
    const double log_q = double(q_logits[i]) - lq;
    const double p = std::exp(log_p);
    if (p > 0) kl += p * (log_p - log_q);  // 0 · log 0 = 0
  }
  return std::max(kl, 0.0);
}

int64_t argmax(std::span<const float> logits) {
  return std::max<int64_t>(0, argmax_f32(logits.data(), int64_t(logits.size())));
}

namespace {

double percentile_sorted(const std::vector<double>& v, double p) {
  const double at = p * double(v.size() - 1);
  const size_t lo = size_t(std::floor(at));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (at - double(lo)) * (v[hi] - v[lo]);
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / double(v.size());
}

// The chunk loop both evaluations share: validates, builds each chunk (BOS in front),
// runs every model over it from an empty cache with all-position logits, and hands the
// rows to `score(chunk_tokens, logits per model)`.
class ChunkRunner {
 public:
  ChunkRunner(std::vector<const Model*> models, ThreadPool& pool, std::span<const int32_t> tokens,
              const EvalOptions& o)
      : models_(std::move(models)), pool_(pool), tokens_(tokens), o_(o) {
    const ModelConfig& c = models_[0]->config();
    vocab_ = c.vocab_size;
    for (const Model* m : models_)
      if (m->config().vocab_size != vocab_)
        throw std::invalid_argument("the models' vocabularies differ (" + std::to_string(vocab_) + " and " +
                                    std::to_string(m->config().vocab_size) + " ids); they cannot be compared");
    n_vocab_ = o.n_vocab == 0 ? vocab_ : o.n_vocab;
    if (n_vocab_ < 1 || n_vocab_ > vocab_)
      throw std::invalid_argument("n_vocab " + std::to_string(n_vocab_) + " is outside the model's vocabulary of " +
                                  std::to_string(vocab_) + " ids");
    for (const Model* m : models_)
      if (o.ctx > m->config().max_position_embeddings)
        throw std::invalid_argument("ctx " + std::to_string(o.ctx) + " exceeds the model's context of " +
                                    std::to_string(m->config().max_position_embeddings) + " tokens");
    chunks_ = eval_chunk_count(int64_t(tokens.size()), o);
    if (chunks_ == 0)
      throw std::invalid_argument("the text has " + std::to_string(tokens.size()) + " tokens, fewer than one chunk of " +
                                  std::to_string(o.ctx));
    if (o.bos >= vocab_) throw std::invalid_argument("bos id " + std::to_string(o.bos) + " is outside the vocabulary");
    const int64_t used = chunks_ * o.ctx;
    for (int64_t i = 0; i < used; ++i) {
      const int32_t t = tokens[size_t(i)];
      const bool replaced = o.bos >= 0 && i % o.ctx == 0;
      if (!replaced && (t < 0 || t >= n_vocab_))
        throw std::invalid_argument("token " + std::to_string(t) + " at position " + std::to_string(i) +
                                    " is outside the scored vocabulary [0, " + std::to_string(n_vocab_) + ")");
    }
  }

  int64_t chunks() const { return chunks_; }
  int64_t n_vocab() const { return n_vocab_; }
  int64_t first() const { return o_.ctx / 2; }
  int64_t scored_per_chunk() const { return o_.ctx - 1 - o_.ctx / 2; }

  template <class Score>
  void run(Score&& score) {
    const size_t V = size_t(vocab_), ctx = size_t(o_.ctx);
    std::vector<std::vector<float>> logits(models_.size(), std::vector<float>(ctx * V));
    std::vector<std::unique_ptr<Forward>> forwards;
    std::vector<std::unique_ptr<KvCache>> caches;
    for (size_t i = 0; i < models_.size(); ++i) {
      const Model* m = models_[i];
      forwards.push_back(std::make_unique<Forward>(*m, pool_));
      for (const NumaExperts* n : o_.numa_experts)
        if (n && &n->model() == m) forwards.back()->set_numa_experts(n);
      const KvCacheType type = i < o_.kv_cache.size() ? o_.kv_cache[i] : default_kv_cache_type();
      caches.push_back(std::make_unique<KvCache>(m->config(), 64, type));
    }
    std::vector<int32_t> chunk(ctx);
    for (int64_t c = 0; c < chunks_; ++c) {
      std::copy_n(tokens_.begin() + std::ptrdiff_t(size_t(c) * ctx), ctx, chunk.begin());
      if (o_.bos >= 0) chunk[0] = o_.bos;
      for (size_t m = 0; m < models_.size(); ++m) {  // each chunk starts from an empty cache
        const SeqId seq = caches[m]->add_sequence();
        forwards[m]->step(*caches[m], {{seq, chunk}}, logits[m].data(), AttentionPath::kAuto, /*last_only=*/false);
        caches[m]->remove_sequence(seq);
      }
      score(c, std::span<const int32_t>(chunk), logits);
    }
  }

  // Row r of a chunk's logits, cut to the scored vocabulary.
  std::span<const float> row(const std::vector<float>& logits, int64_t r) const {
    return {logits.data() + size_t(r) * size_t(vocab_), size_t(n_vocab_)};
  }

 private:
  std::vector<const Model*> models_;
  ThreadPool& pool_;
  std::span<const int32_t> tokens_;
  const EvalOptions& o_;
  int64_t vocab_ = 0, n_vocab_ = 0, chunks_ = 0;
};

void finish(PerplexityResult& r) {
  r.mean_nll = mean_of(r.nll);
  r.perplexity = std::exp(r.mean_nll);
}

}  // namespace

Summary summarize(std::vector<double> v) {
  Summary s;
  if (v.empty()) return s;
  s.mean = mean_of(v);
  std::sort(v.begin(), v.end());
  s.median = percentile_sorted(v, 0.5);
  s.p99 = percentile_sorted(v, 0.99);
  s.max = v.back();
  return s;
}

uint64_t model_weight_bytes(const Model& model) { return uint64_t(model.footprint().total().bytes); }

int64_t eval_chunk_count(int64_t tokens, const EvalOptions& o) {
  if (o.ctx < 3) throw std::invalid_argument("ctx must be at least 3 (got " + std::to_string(o.ctx) + ")");
  if (o.max_chunks < 0) throw std::invalid_argument("max_chunks must be >= 0 (0: all)");
  const int64_t whole = std::max<int64_t>(tokens, 0) / o.ctx;
  return o.max_chunks > 0 ? std::min(whole, o.max_chunks) : whole;
}

PerplexityResult evaluate_perplexity(const Model& model, ThreadPool& pool, std::span<const int32_t> tokens,
                                     const EvalOptions& o) {
  ChunkRunner runner({&model}, pool, tokens, o);
  PerplexityResult r;
  r.chunks = runner.chunks();
  const int64_t first = runner.first(), n = runner.scored_per_chunk();
  r.nll.reserve(size_t(r.chunks * n));
  std::vector<double> nll(static_cast<size_t>(n));
  runner.run([&](int64_t c, std::span<const int32_t> chunk, const std::vector<std::vector<float>>& logits) {
    pool.parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        nll[size_t(i)] = negative_log_likelihood(runner.row(logits[0], first + i), chunk[size_t(first + i + 1)]);
    });
    r.nll.insert(r.nll.end(), nll.begin(), nll.end());
    if (o.progress) {
      EvalProgress p;
      p.chunk = c + 1, p.chunks = r.chunks, p.scored = int64_t(r.nll.size());
      p.perplexity = std::exp(mean_of(r.nll));
      o.progress(p);
    }
  });
  finish(r);
  return r;
}

KldResult evaluate_kld(const Model& base, const Model& candidate, ThreadPool& pool, std::span<const int32_t> tokens,
                       const EvalOptions& o) {
  ChunkRunner runner({&base, &candidate}, pool, tokens, o);
  KldResult r;
  r.base.chunks = r.candidate.chunks = runner.chunks();
  r.base_bytes = model_weight_bytes(base);
  r.candidate_bytes = model_weight_bytes(candidate);
  const int64_t first = runner.first(), n = runner.scored_per_chunk();
  const size_t rows = static_cast<size_t>(n);
  std::vector<double> nll_a(rows), nll_b(rows), kld(rows);
  std::vector<uint8_t> same(rows);
  int64_t agree = 0;
  runner.run([&](int64_t c, std::span<const int32_t> chunk, const std::vector<std::vector<float>>& logits) {
    pool.parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const auto pa = runner.row(logits[0], first + i), pb = runner.row(logits[1], first + i);
        const int32_t target = chunk[size_t(first + i + 1)];
        nll_a[size_t(i)] = negative_log_likelihood(pa, target);
        nll_b[size_t(i)] = negative_log_likelihood(pb, target);
        kld[size_t(i)] = kl_divergence(pa, pb);
        same[size_t(i)] = argmax(pa) == argmax(pb);
      }
    });
    r.base.nll.insert(r.base.nll.end(), nll_a.begin(), nll_a.end());
    r.candidate.nll.insert(r.candidate.nll.end(), nll_b.begin(), nll_b.end());
    r.kld.insert(r.kld.end(), kld.begin(), kld.end());
    r.top1_same.insert(r.top1_same.end(), same.begin(), same.end());
    for (uint8_t s : same) agree += s;
    if (o.progress) {
      EvalProgress p;
      p.chunk = c + 1, p.chunks = runner.chunks(), p.scored = int64_t(r.kld.size());
      p.perplexity = std::exp(mean_of(r.base.nll));
      p.candidate_perplexity = std::exp(mean_of(r.candidate.nll));
      p.kld_mean = mean_of(r.kld);
      p.top1 = double(agree) / double(r.kld.size());
      o.progress(p);
    }
  });
  finish(r.base);
  finish(r.candidate);
  r.kld_summary = summarize(r.kld);
  r.top1_agreement = r.kld.empty() ? 0.0 : double(agree) / double(r.kld.size());
  return r;
}

}  // namespace hearth

#include "engine/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <span>
#include <stdexcept>
#include <unordered_set>

#include "engine/eval.h"
#include "engine/forward.h"
#include "engine/offload_forward.h"
#include "engine/kv_cache.h"
#include "engine/numa_experts.h"
#include "engine/ops.h"
#include "engine/read_bytes.h"
#include "quant/onednn_gemm.h"
#include "quant/weight_matrix.h"

namespace hearth {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Deterministic pseudo-random token ids: splitmix64 over (seed, stream, index).
class TokenSource {
 public:
  TokenSource(uint64_t seed, int64_t vocab) : state_(seed * 0x9E3779B97F4A7C15ull + 1), vocab_(uint64_t(vocab)) {}
  int32_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return int32_t((z ^ (z >> 31)) % vocab_);
  }
  std::vector<int32_t> take(int64_t n) {
    std::vector<int32_t> v(static_cast<size_t>(n));
    for (int32_t& t : v) t = next();
    return v;
  }

 private:
  uint64_t state_, vocab_;
};

// Fills each sequence's cache with `depth` tokens (untimed), one sequence and one
// prefill chunk per step, so the activations stay those of a 512-token prompt.
void fill_depth(Forward& fwd, KvCache& cache, const std::vector<SeqId>& seqs, int64_t depth, TokenSource& tokens,
                bool random) {
  if (random) {  // cache entries shaped like real ones: unit-RMS latents and keys
    const ModelConfig& c = fwd.model().config();
    std::mt19937_64 rng(tokens.take(1)[0]);
    std::normal_distribution<float> g(0.0f, 1.0f);
    std::vector<float> key(static_cast<size_t>(std::max<int64_t>(c.index_head_dim, 1)));
    std::vector<uint8_t> code(key.size());
    std::vector<float> latent(static_cast<size_t>(c.kv_lora_rank));
    for (const SeqId s : seqs) {
      const int64_t from = cache.length(s);
      cache.extend(s, from + depth);
      for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer)
        for (int64_t pos = from; pos < from + depth; ++pos) {
          for (float& v : latent) v = g(rng);
          cache.write_latent(layer, s, pos, latent.data());
          for (float* p = cache.rope_key(layer, s, pos), *e = p + c.qk_rope_head_dim; p < e; ++p) *p = g(rng);
          if (c.has_indexer()) {
            for (float& v : key) v = g(rng);
            const float scale = quantize_fp8_block_pow2(key.data(), c.index_head_dim, code.data());
            cache.write_index_key(layer, s, pos, code.data(), scale);
          }
        }
    }
    return;
  }
  constexpr int64_t kChunk = 512;
  for (const SeqId s : seqs)
    for (int64_t done = 0; done < depth; done += kChunk) {
      const std::vector<int32_t> ids = tokens.take(std::min(kChunk, depth - done));
      fwd.step(cache, {{s, ids}}, nullptr);
    }
}

struct Test {
  bool decode;
  int64_t tokens, batch, depth;
};

std::string test_name(const Test& t) {
  std::string n = (t.decode ? "tg" : "pp") + std::to_string(t.tokens);
  if (t.decode && t.batch > 1) n += "@b" + std::to_string(t.batch);
  if (t.depth > 0) n += "@d" + std::to_string(t.depth);
  return n;
}

// BenchOptions::warmup for test t: its prompt once on an empty cache (a depth is not
// filled: the buffers a step grows depend on its new tokens), or one step of its batch.
void warm_up(Forward& fwd, const Test& t, uint64_t seed) {
  const ModelConfig& c = fwd.model().config();
  const int64_t batch = t.decode ? t.batch : 1;
  KvCache cache(c);
  std::vector<SeqId> seqs;
  for (int64_t b = 0; b < batch; ++b) seqs.push_back(cache.add_sequence());
  TokenSource source(seed ^ 0x77a3, c.vocab_size);
  std::vector<float> logits(static_cast<size_t>(batch * c.vocab_size));
  const std::vector<int32_t> ids = source.take(t.decode ? batch : t.tokens);
  std::vector<SequenceChunk> step;
  if (!t.decode) step.push_back({seqs[0], ids});
  else
    for (int64_t b = 0; b < batch; ++b) step.push_back({seqs[size_t(b)], std::span<const int32_t>(ids).subspan(size_t(b), 1)});
  fwd.step(cache, step, logits.data(), AttentionPath::kAuto, true);
}

std::vector<Test> plan_tests(const BenchOptions& o) {
  std::vector<Test> tests;
  for (int64_t d : o.depths) {
    for (int64_t p : o.prompts)
      if (p > 0) tests.push_back({false, p, 1, d});
    for (int64_t n : o.gens)
      if (n > 0)
        for (int64_t b : o.batches) tests.push_back({true, n, b, d});
  }
  return tests;
}

void mean_sd(const std::vector<double>& v, double& mean, double& sd) {
  mean = sd = 0;
  if (v.empty()) return;
  for (double x : v) mean += x;
  mean /= double(v.size());
  if (v.size() < 2) return;
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  sd = std::sqrt(ss / double(v.size() - 1));
}

int64_t floats_bytes(const std::vector<float>& v) { return int64_t(v.size() * sizeof(float)); }

// Every weight matrix the forward pass uses, with a visitor (for sizes and formats).
template <class F>
void for_each_matrix(const Model& m, F&& f) {
  f(m.embed);
  f(m.lm_head);
  for (const Layer& L : m.layers) {
    const Attention& A = L.attn;
    for (const WeightMatrix* w : {&A.q_a, &A.q_b, &A.kv_a, &A.kv_b, &A.o}) f(*w);
    if (A.has_indexer)
      for (const WeightMatrix* w : {&A.indexer.wq_b, &A.indexer.wk, &A.indexer.weights_proj}) f(*w);
    auto mlp = [&](const Mlp& p) {
      f(p.gate);
      f(p.up);
      f(p.down);
    };
    if (!L.is_moe) {
      mlp(L.dense);
      continue;
    }
    f(L.moe.router);
    for (const Mlp& e : L.moe.experts) mlp(e);
    if (L.moe.has_shared) mlp(L.moe.shared);
  }
}

// Parameters in the float vectors (norms, biases) the model holds.
int64_t vector_params(const Model& m) {
  int64_t n = int64_t(m.final_norm.size());
  for (const Layer& L : m.layers) {
    n += int64_t(L.attn_norm.size() + L.ffn_norm.size() + L.attn.q_a_norm.size() + L.attn.kv_a_norm.size());
    if (L.attn.has_indexer) n += int64_t(L.attn.indexer.k_norm_weight.size() + L.attn.indexer.k_norm_bias.size());
    if (L.is_moe) n += int64_t(L.moe.router_bias.size());
  }
  return n;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string mb(double bytes) { return fmt("%.1f", bytes / 1e6); }

}  // namespace

int64_t ActiveBytes::per_step(int64_t batch) const {
  return attention + indexer + dense_mlp + shared_experts + router + head + norms + embedding_row * batch;
}

void validate(const BenchOptions& o) {
  auto check = [](const std::vector<int64_t>& v, const char* flag, int64_t min) {
    if (v.empty()) throw std::invalid_argument(std::string(flag) + ": needs at least one value");
    for (int64_t x : v)
      if (x < min)
        throw std::invalid_argument(std::string(flag) + ": " + std::to_string(x) + " is below " + std::to_string(min));
  };
  check(o.prompts, "-p/--n-prompt", 0);
  check(o.gens, "-n/--n-gen", 0);
  check(o.batches, "--batch", 1);
  check(o.depths, "--depth", 0);
  if (o.reps < 1) throw std::invalid_argument("-r/--repetitions: must be at least 1");
  if (plan_tests(o).empty()) throw std::invalid_argument("no test to run (-p and -n are both 0)");
}

std::vector<std::string> bench_test_names(const BenchOptions& o) {
  std::vector<std::string> names;
  for (const Test& t : plan_tests(o)) names.push_back(test_name(t));
  return names;
}

int64_t bench_max_cached_tokens(const BenchOptions& o) {
  int64_t most = 0;
  for (const Test& t : plan_tests(o))
    most = std::max(most, t.decode ? t.batch * (t.depth + t.tokens + 1) : t.depth + t.tokens);
  return most;
}

BenchModelInfo describe_model(const Model& m, const std::string& name, int threads) {
  BenchModelInfo info;
  info.name = name;
  info.threads = threads;
  std::map<DType, int64_t> by_format;
  for_each_matrix(m, [&](const WeightMatrix& w) {
    const int64_t b = weight_read_bytes(w);
    info.weight_bytes += b;
    info.params += w.rows * w.cols;
    by_format[w.dtype] += b;
  });
  info.params += vector_params(m);
  info.weight_bytes += vector_params(m) * int64_t(sizeof(float));
  DType dominant = DType::F32;
  int64_t most = -1;
  for (const auto& [dt, b] : by_format)
    if (b > most) most = b, dominant = dt;
  info.quant = std::string(dtype_name(dominant));

  const ModelConfig& c = m.config();
  ActiveBytes& a = info.active;
  a.embedding_row = row_bytes(m.embed.dtype, c.hidden_size);
  a.head = weight_read_bytes(m.lm_head);
  a.norms = floats_bytes(m.final_norm);
  for (const Layer& L : m.layers) {
    const Attention& A = L.attn;
    a.norms += floats_bytes(L.attn_norm) + floats_bytes(L.ffn_norm);
    // Decode's absorbed attention reads a GGUF's k_b and v_b where the model has them,
    // not the kv_b rebuilt from them.
    const int64_t kv_b = A.split_kv_b() ? weight_read_bytes(A.k_b) + weight_read_bytes(A.v_b) : weight_read_bytes(A.kv_b);
    a.attention += weight_read_bytes(A.q_a) + weight_read_bytes(A.q_b) + weight_read_bytes(A.kv_a) + kv_b +
                   weight_read_bytes(A.o) + floats_bytes(A.q_a_norm) + floats_bytes(A.kv_a_norm);
    if (A.has_indexer)
      a.indexer += weight_read_bytes(A.indexer.wq_b) + weight_read_bytes(A.indexer.wk) +
                   weight_read_bytes(A.indexer.weights_proj) + floats_bytes(A.indexer.k_norm_weight) +
                   floats_bytes(A.indexer.k_norm_bias);
    if (!L.is_moe) {
      a.dense_mlp += mlp_read_bytes(L.dense);
      continue;
    }
    ++info.moe_layers;
    a.router += weight_read_bytes(L.moe.router) + floats_bytes(L.moe.router_bias);
    if (L.moe.has_shared) a.shared_experts += mlp_read_bytes(L.moe.shared);
  }
  info.experts_per_layer = c.n_routed_experts;
  info.experts_per_token = c.num_experts_per_tok;
  return info;
}

std::vector<ByteRange> decode_weight_ranges(const Model& m, bool routed_experts) {
  std::vector<ByteRange> out;
  auto add = [&](const WeightMatrix& w) {
    if (w.data) out.push_back({w.data, uint64_t(w.bytes())});
  };
  // Every matrix but the embeddings (one row per token) and, where a GGUF has k_b and v_b,
  // the kv_b rebuilt from them: decode's absorbed attention reads those two instead.
  // A hash set: left out of a sharded V3.2, the routed experts are 47K matrices.
  std::unordered_set<const WeightMatrix*> not_read = {&m.embed};
  for (const Layer& L : m.layers) {
    if (L.attn.split_kv_b()) {
      not_read.insert(&L.attn.kv_b);
      add(L.attn.k_b);
      add(L.attn.v_b);
    }
    if (!routed_experts && L.is_moe)
      for (const Mlp& e : L.moe.experts) not_read.insert({&e.gate, &e.up, &e.down});
  }
  for_each_matrix(m, [&](const WeightMatrix& w) {
    if (!not_read.contains(&w)) add(w);
  });
  return out;
}

namespace {

// The weights' own read rate, best of `runs` passes. Sharded, a pass is the pool over
// `ranges` (the rest) and then every node's workers over their slices: one step's order,
// so the rate is all the bytes over the two times added.
RangeReadResult weights_read_rate(ThreadPool& pool, const std::vector<ByteRange>& ranges, const NumaExperts* numa,
                                  int runs = 2) {
  if (!numa) return measure_read_rate(pool, ranges, runs);
  RangeReadResult best;
  for (int run = 0; run < runs; ++run) {
    const RangeReadResult rest = measure_read_rate(pool, ranges, 1), shards = numa->read_rate();
    double secs = 0;
    for (const RangeReadResult* part : {&rest, &shards})
      if (part->bytes > 0 && part->bytes_per_second > 0) secs += double(part->bytes) / part->bytes_per_second;
    best.bytes = rest.bytes + shards.bytes;
    best.byte_sum = rest.byte_sum + shards.byte_sum;
    best.threads = std::max(rest.threads, shards.threads);
    if (secs > 0) best.bytes_per_second = std::max(best.bytes_per_second, double(best.bytes) / secs);
  }
  best.runs = runs;
  return best;
}

}  // namespace

BenchReport run_bench(const Model& model, ThreadPool& pool, const std::string& model_name, const BenchOptions& o) {
  validate(o);
  const ModelConfig& c = model.config();
  BenchReport report;
  report.model = describe_model(model, model_name, pool.size());
  report.bandwidth = measure_read_bandwidth(pool, o.bandwidth_bytes);
  report.kernels = isa_name(best_isa());
  if (best_isa() != cpu_isa()) report.kernels += std::string(" (limited; the CPU has ") + isa_name(cpu_isa()) + ")";
  report.gemm = cpu_gemm_name(cpu_gemm());
  report.mapped = model.mapped_weights();
  {
    const KvCache probe(c);  // allocates nothing
    report.kv_cache = std::string(kv_cache_type_name(probe.type())) + " latents, " +
                      std::to_string(probe.bytes_per_token()) + " bytes per position (all layers)";
  }
  if (cpu_gemm() == CpuGemm::kOnednn)
    report.gemm += " (" + onednn_version() + ", float weights from " + std::to_string(kOnednnMinRows) + " rows)";

  // The weights' own read rate: only where the CPU reads them all from memory. Offloaded,
  // the device reads the hot ones; mapped and not filled at load, a pass would read the
  // disk. Sharded, the routed experts are read from the node shards, not the model.
  std::vector<ByteRange> weight_ranges;
  bool any_decode_test = false;
  for (const Test& t : plan_tests(o)) any_decode_test = any_decode_test || t.decode;
  if (!any_decode_test) report.weights_read_skipped = "no decode test";
  else if (o.offload) report.weights_read_skipped = "offloaded: the device reads the resident weights";
  else if (report.mapped.bytes > 0 && !report.mapped.populated)
    report.weights_read_skipped = "mapped weights not filled at load: a pass would read the disk";
  else weight_ranges = decode_weight_ranges(model, !o.numa_experts);
  if (!weight_ranges.empty()) report.weights_read = weights_read_rate(pool, weight_ranges, o.numa_experts);

  Forward fwd(model, pool);
  fwd.set_numa_experts(o.numa_experts);
  if (o.numa_experts && !o.offload) {
    report.numa_nodes = o.numa_experts->node_count();
    report.numa = o.numa_experts->layout().summary() + "; " + o.numa_experts->summary();
  } else {
    report.numa = "routed experts not sharded over NUMA nodes";
  }
  if (o.offload) {
    if (o.random_depth && !o.offload->device().simulated())
      throw std::invalid_argument("--depth-fill random writes the host's cache only: use --depth-fill prefill with --offload cuda");
    if (o.profile) throw std::invalid_argument("--profile times the CPU path's phases: use --trace with --offload");
    fwd.set_offload(o.offload);
    report.device = o.device;
    report.device_short = o.device_label.empty() ? "offload" : o.device_label;
  }
  const int64_t V = c.vocab_size;
  {
    // Warm-up (untimed): threads awake, buffers allocated, first pages touched.
    KvCache cache(c);
    const SeqId s = cache.add_sequence();
    TokenSource tokens(o.token_seed ^ 0xabcdef, V);
    const std::vector<int32_t> ids = tokens.take(4);
    std::vector<float> logits(static_cast<size_t>(V));
    fwd.step(cache, {{s, std::span<const int32_t>(ids).first(3)}}, logits.data(), AttentionPath::kAuto, true);
    fwd.step(cache, {{s, std::span<const int32_t>(ids).last(1)}}, logits.data(), AttentionPath::kAuto, true);
  }

  for (const Test& t : plan_tests(o)) {
    BenchResult r;
    r.name = test_name(t);
    r.decode = t.decode;
    r.tokens = t.tokens;
    r.batch = t.batch;
    r.depth = t.depth;
    Profiler profiler;
    ExpertUsage usage;
    int64_t steps = 0;
    // Offloaded, the device reads the weights: the CPU's wall is not reported.
    const bool walled = t.decode && !o.offload;
    const bool weights_walled = walled && !weight_ranges.empty();
    if (o.warmup) {
      if (o.progress) o.progress(r.name + ": warm-up");
      warm_up(fwd, t, o.token_seed);
    }
    const double bandwidth_before =
        walled ? measure_read_bandwidth(pool, o.bandwidth_bytes).bytes_per_second : 0.0;
    const double weights_before =
        weights_walled ? weights_read_rate(pool, weight_ranges, o.numa_experts).bytes_per_second : 0.0;
    for (int rep = 0; rep < o.reps; ++rep) {
      if (o.progress) o.progress(r.name + ": repetition " + std::to_string(rep + 1) + " of " + std::to_string(o.reps));
      TokenSource tokens(o.token_seed + uint64_t(rep) * 7919 + uint64_t(t.depth), V);
      KvCache cache(c);
      std::vector<SeqId> seqs;
      for (int64_t b = 0; b < t.batch; ++b) seqs.push_back(cache.add_sequence());
      fill_depth(fwd, cache, seqs, t.depth, tokens, o.random_depth);
      std::vector<float> logits(static_cast<size_t>(t.batch * V));
      if (!t.decode) {
        const std::vector<int32_t> prompt = tokens.take(t.tokens);
        fwd.set_probes({o.profile ? &profiler : nullptr, nullptr});
        const auto t0 = Clock::now();
        if (o.profile) profiler.start();
        fwd.step(cache, {{seqs[0], prompt}}, logits.data(), AttentionPath::kAuto, true);
        if (o.profile) profiler.stop();
        r.tok_s.push_back(double(t.tokens) / seconds_since(t0));
        fwd.set_probes({});
        steps += 1;
        continue;
      }
      // Decode: a pseudo-random token per sequence per step (so routing sees varied
      // inputs, as real text gives), the logits sampled greedily as a server would.
      std::vector<std::vector<int32_t>> ids(static_cast<size_t>(t.tokens));
      for (auto& step_ids : ids) step_ids = tokens.take(t.batch);
      fwd.set_probes({o.profile ? &profiler : nullptr, &usage});
      volatile int64_t sink = 0;
      const auto t0 = Clock::now();
      if (o.profile) profiler.start();
      for (int64_t i = 0; i < t.tokens; ++i) {
        std::vector<SequenceChunk> batch;
        for (int64_t b = 0; b < t.batch; ++b)
          batch.push_back({seqs[size_t(b)], std::span<const int32_t>(ids[size_t(i)]).subspan(size_t(b), 1)});
        fwd.step(cache, batch, logits.data(), AttentionPath::kAuto, true);
        ScopedPhase sampling(o.profile ? &profiler : nullptr, Phase::kSampling);
        for (int64_t b = 0; b < t.batch; ++b)
          sink = sink + argmax(std::span<const float>(logits).subspan(size_t(b * V), size_t(V)));
      }
      if (o.profile) profiler.stop();
      const double secs = seconds_since(t0);
      fwd.set_probes({});
      steps += t.tokens;
      r.tok_s.push_back(double(t.tokens * t.batch) / secs);
    }
    mean_sd(r.tok_s, r.mean, r.sd);
    if (walled) r.bandwidth = (bandwidth_before + measure_read_bandwidth(pool, o.bandwidth_bytes).bytes_per_second) / 2;
    if (weights_walled)
      r.weights_rate = (weights_before + weights_read_rate(pool, weight_ranges, o.numa_experts).bytes_per_second) / 2;
    if (t.decode) {
      r.experts_per_layer = usage.layer_steps ? double(usage.distinct_experts) / double(usage.layer_steps) : 0;
      r.routed_bytes_per_step = steps ? double(usage.bytes) / double(steps) : 0;
      r.active_bytes_per_step = double(report.model.active.per_step(t.batch));
      r.wall_tok_s = r.bandwidth / r.bytes_per_step() * double(t.batch);
      r.efficiency = r.wall_tok_s > 0 ? r.mean / r.wall_tok_s : 0;
      r.weights_wall_tok_s = r.weights_rate / r.bytes_per_step() * double(t.batch);
      r.weights_efficiency = r.weights_wall_tok_s > 0 ? r.mean / r.weights_wall_tok_s : 0;
    }
    if (o.profile) {
      std::array<double, kPhaseCount> s{};
      for (int p = 0; p < kPhaseCount; ++p) s[size_t(p)] = profiler.seconds(Phase(p));
      r.phase_seconds = s;
      // Decode: one token per sequence per step; prefill: the whole prompt in one step.
      r.profiled_tokens = t.decode ? steps * t.batch : steps * t.tokens;
    }
    report.results.push_back(std::move(r));
  }
  return report;
}

std::string placement_hint(const BenchReport& rep) {
  const double fresh = rep.bandwidth.bytes_per_second, weights = rep.weights_read.bytes_per_second;
  if (rep.mapped.bytes == 0 || rep.weights_read.bytes == 0 || fresh <= 0 || weights <= 0 || weights >= 0.85 * fresh)
    return {};
  return "hint: the weights read " + fmt("%.0f", 100 * (1 - weights / fresh)) +
         " % slower than fresh memory, and " + fmt("%.2f", double(rep.mapped.bytes) / 1e9) +
         " GB of them are read in place from the mapped checkpoint: --no-mmap copies those into memory hearth owns "
         "(RAM for the copy needed), which may read faster";
}

std::string bench_markdown(const BenchReport& rep) {
  const BenchModelInfo& m = rep.model;
  const ActiveBytes& a = m.active;
  std::string out;
  out += "read bandwidth: " + fmt("%.2f", rep.bandwidth.bytes_per_second / 1e9) + " GB/s (" +
         std::to_string(rep.bandwidth.threads) + " threads, best of " + std::to_string(rep.bandwidth.runs) +
         " passes over " + std::to_string(rep.bandwidth.buffer_bytes >> 20) + " MiB; each decode test's wall uses its own, "
         "measured right before and after it: the GB/s column)\n";
  out += "weights read per decode step, always active: " + mb(double(a.per_step(0))) + " MB (attention " +
         mb(double(a.attention)) + ", indexer " + mb(double(a.indexer)) + ", dense MLP " + mb(double(a.dense_mlp)) +
         ", shared experts " + mb(double(a.shared_experts)) + ", router " + mb(double(a.router)) + ", head " +
         mb(double(a.head)) + ", norms " + mb(double(a.norms)) + ") + " + fmt("%.0f", double(a.embedding_row)) +
         " B embedding row per token\n";
  if (rep.weights_read.bytes > 0)
    out += "weights read where they lie: " + fmt("%.2f", rep.weights_read.bytes_per_second / 1e9) + " GB/s (" +
           std::to_string(rep.weights_read.threads) + " threads, best of " + std::to_string(rep.weights_read.runs) +
           " plain-sum passes over the " + fmt("%.2f", double(rep.weights_read.bytes) / 1e9) +
           " GB a decode step may read; each decode test's is measured around it: the weights GB/s column)\n";
  else if (!rep.weights_read_skipped.empty())
    out += "weights read where they lie: not measured (" + rep.weights_read_skipped + ")\n";
  if (const std::string hint = placement_hint(rep); !hint.empty()) out += hint + "\n";
  out += "numa: " + rep.numa + "\n";
  if (const MappedWeights& mw = rep.mapped; mw.bytes > 0) {
    out += "mapped weights: " + fmt("%.2f", double(mw.bytes) / 1e9) + " GB read in place from the checkpoint, ";
    out += mw.populated ? std::string("page tables filled at load")
                        : "not filled at load (more than MemAvailable, " +
                              fmt("%.2f", double(mw.available.value_or(0)) / 1e9) + " GB): decode may wait on page faults";
    out += "\n";
  }
  out += "cpu kernels: " + rep.kernels + "\n";
  out += "cpu gemm: " + rep.gemm + "\n";
  out += "kv cache: " + rep.kv_cache + "\n";
  // Offloaded, the CPU's memory wall says nothing about the step (the device reads the
  // resident weights), so the wall columns are left out.
  const bool dev = !rep.device.empty();
  bool any_decode = false;
  for (const BenchResult& r : rep.results) {
    if (!r.decode || dev) continue;
    any_decode = true;
    out += r.name + ": " + fmt("%.2f", r.experts_per_layer) + " of " + std::to_string(m.experts_per_layer) +
           " experts per MoE layer per step (x" + std::to_string(m.moe_layers) + " layers) -> routed " +
           mb(r.routed_bytes_per_step) + " MB + always active " + mb(r.active_bytes_per_step) + " MB = " +
           mb(r.bytes_per_step()) + " MB/step, " + mb(r.bytes_per_step() / double(r.batch)) + " MB/token\n";
  }
  if (dev) out += rep.device + "\n";
  out += std::string("\n| model | size | params | quant | threads | ") + (dev ? "device | " : "") + "test | t/s |";
  bool any_weights = false;
  for (const BenchResult& r : rep.results) any_weights = any_weights || r.weights_rate > 0;
  if (any_decode) out += " MB/step | GB/s | wall t/s | efficiency |";
  if (any_weights) out += " weights GB/s | efficiency vs weights |";
  out += std::string("\n| --- | ---: | ---: | --- | ---: | ") + (dev ? "--- | " : "") + "--- | ---: |";
  if (any_decode) out += " ---: | ---: | ---: | ---: |";
  if (any_weights) out += " ---: | ---: |";
  out += "\n";
  const std::string size = fmt("%.2f GiB", double(m.weight_bytes) / double(uint64_t(1) << 30));
  const std::string params = fmt("%.2f B", double(m.params) / 1e9);
  for (const BenchResult& r : rep.results) {
    out += "| " + m.name + " | " + size + " | " + params + " | " + m.quant + " | " + std::to_string(m.threads) + " | " +
           (dev ? rep.device_short + " | " : std::string()) + r.name + " | " + fmt("%.2f", r.mean) + " ± " + fmt("%.2f", r.sd) + " |";
    if (any_decode) {
      if (r.decode)
        out += ' ' + mb(r.bytes_per_step()) + " | " + fmt("%.2f", r.bandwidth / 1e9) + " | " + fmt("%.2f", r.wall_tok_s) +
               " | " + fmt("%.1f", 100 * r.efficiency) + "% |";
      else
        out += " - | - | - | - |";
    }
    if (any_weights) {
      if (r.weights_rate > 0)
        out += ' ' + fmt("%.2f", r.weights_rate / 1e9) + " | " + fmt("%.1f", 100 * r.weights_efficiency) + "% |";
      else
        out += " - | - |";
    }
    out += "\n";
  }

  std::vector<const BenchResult*> profiled;
  for (const BenchResult& r : rep.results)
    if (r.phase_seconds && r.profiled_tokens > 0) profiled.push_back(&r);
  if (!profiled.empty()) {
    out += "\nper-phase time (ms per token, % of the test's time; a prefill's head runs for its last token only):\n\n| phase |";
    for (const BenchResult* r : profiled) out += " " + r->name + " ms/t | % |";
    out += "\n| --- |";
    for (size_t i = 0; i < profiled.size(); ++i) out += " ---: | ---: |";
    out += "\n";
    auto total = [](const BenchResult& r) {
      double t = 0;
      for (double s : *r.phase_seconds) t += s;
      return t;
    };
    for (int p = 0; p <= kPhaseCount; ++p) {
      out += "| " + std::string(p < kPhaseCount ? phase_name(Phase(p)) : "total") + " |";
      for (const BenchResult* r : profiled) {
        const double s = p < kPhaseCount ? (*r->phase_seconds)[size_t(p)] : total(*r);
        const double t = total(*r);
        out += ' ' + fmt("%.3f", 1e3 * s / double(r->profiled_tokens)) + " | " + fmt("%.1f", t > 0 ? 100 * s / t : 0) + " |";
      }
      out += "\n";
    }
  }
  return out;
}

nlohmann::json bench_json(const BenchReport& rep) {
  using nlohmann::json;
  const BenchModelInfo& m = rep.model;
  const ActiveBytes& a = m.active;
  json j;
  if (!rep.device.empty()) j["device"] = rep.device;
  j["numa"] = {{"nodes", rep.numa_nodes}, {"summary", rep.numa}};
  j["mapped_weights"] = {{"bytes", rep.mapped.bytes}, {"populated", rep.mapped.populated}};
  j["cpu_kernels"] = rep.kernels;
  j["cpu_gemm"] = rep.gemm;
  j["kv_cache"] = rep.kv_cache;
  j["model"] = {{"name", m.name},
                {"size_bytes", m.weight_bytes},
                {"size_gib", double(m.weight_bytes) / double(uint64_t(1) << 30)},
                {"params", m.params},
                {"quant", m.quant},
                {"threads", m.threads},
                {"moe_layers", m.moe_layers},
                {"routed_experts", m.experts_per_layer},
                {"experts_per_token", m.experts_per_token},
                {"always_active_bytes",
                 {{"attention", a.attention},
                  {"indexer", a.indexer},
                  {"dense_mlp", a.dense_mlp},
                  {"shared_experts", a.shared_experts},
                  {"router", a.router},
                  {"head", a.head},
                  {"norms", a.norms},
                  {"embedding_row_per_token", a.embedding_row}}}};
  j["bandwidth"] = {{"bytes_per_second", rep.bandwidth.bytes_per_second},
                    {"buffer_bytes", rep.bandwidth.buffer_bytes},
                    {"threads", rep.bandwidth.threads},
                    {"runs", rep.bandwidth.runs}};
  if (rep.weights_read.bytes > 0)
    j["weights_read"] = {{"bytes_per_second", rep.weights_read.bytes_per_second},
                         {"bytes", rep.weights_read.bytes},
                         {"threads", rep.weights_read.threads},
                         {"runs", rep.weights_read.runs}};
  else
    j["weights_read"] = {{"skipped", rep.weights_read_skipped}};
  j["tests"] = json::array();
  for (const BenchResult& r : rep.results) {
    json t = {{"name", r.name}, {"kind", r.decode ? "tg" : "pp"}, {"tokens", r.tokens}, {"batch", r.batch},
              {"depth", r.depth}, {"tok_s", r.tok_s}, {"mean", r.mean}, {"sd", r.sd}};
    if (r.decode) {
      t["experts_per_layer"] = r.experts_per_layer;
      t["routed_bytes_per_step"] = r.routed_bytes_per_step;
      t["always_active_bytes_per_step"] = r.active_bytes_per_step;
      t["bytes_per_step"] = r.bytes_per_step();
      t["bytes_per_token"] = r.bytes_per_step() / double(r.batch);
      if (r.bandwidth > 0) {  // not offloaded
        t["bandwidth_bytes_per_second"] = r.bandwidth;
        t["wall_tok_s"] = r.wall_tok_s;
        t["efficiency"] = r.efficiency;
      }
      if (r.weights_rate > 0) {
        t["weights_bytes_per_second"] = r.weights_rate;
        t["weights_wall_tok_s"] = r.weights_wall_tok_s;
        t["weights_efficiency"] = r.weights_efficiency;
      }
    }
    if (r.phase_seconds && r.profiled_tokens > 0) {
      json ms = json::object(), pct = json::object();
      double total = 0;
      for (double s : *r.phase_seconds) total += s;
      for (int p = 0; p < kPhaseCount; ++p) {
        const double s = (*r.phase_seconds)[size_t(p)];
        ms[std::string(phase_key(Phase(p)))] = 1e3 * s / double(r.profiled_tokens);
        pct[std::string(phase_key(Phase(p)))] = total > 0 ? 100 * s / total : 0;
      }
      t["profile"] = {{"ms_per_token", ms}, {"percent", pct}, {"total_ms_per_token", 1e3 * total / double(r.profiled_tokens)}};
    }
    j["tests"].push_back(std::move(t));
  }
  return j;
}

}  // namespace hearth

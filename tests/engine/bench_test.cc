// hearth bench's library parts: in-memory synthetic models, the RAM check, the phase
// profiler, the expert-read counter, the bandwidth probe and run_bench itself.
#include "engine/bench.h"

#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "engine/eval.h"
#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/numa_experts.h"
#include "engine/profile.h"
#include "engine/synth.h"
#include "engine/synth_model.h"
#include "offload/bandwidth.h"
#include "offload/memory.h"
#include "offload/numa.h"
#include "offload/thread_pool.h"
#include "support/errors.h"
#include "support/scratch.h"

namespace engine_bench_suite {

using namespace hearth;
using hearth::testing::TempDir;

namespace {

const std::vector<int32_t> kTokens = {0, 17, 923, 4, 511, 77, 1000, 3};

// Prefill logits for every position, then two decode steps (both attention paths).
std::vector<float> run_logits(const Model& m, ThreadPool& pool) {
  const int64_t V = m.config().vocab_size;
  Forward fwd(m, pool);
  KvCache cache(m.config());
  const SeqId s = cache.add_sequence();
  std::vector<float> out(kTokens.size() * size_t(V));
  fwd.step(cache, {{s, std::span<const int32_t>(kTokens).first(6)}}, out.data());
  fwd.step(cache, {{s, std::span<const int32_t>(kTokens).subspan(6, 1)}}, out.data() + 6 * V);
  fwd.step(cache, {{s, std::span<const int32_t>(kTokens).subspan(7, 1)}}, out.data() + 7 * V);
  return out;
}

SyntheticModelOptions tiny_options(std::optional<DType> type = std::nullopt) {
  SyntheticModelOptions o;
  o.preset = "tiny";
  o.seed = 5;
  o.type = type;
  o.threads = 2;
  return o;
}

// Weight bytes of one tiny routed expert, from the config: three FP8 matrices of
// inter x hidden values, one byte each, plus one float scale per 128x128 block.
int64_t tiny_fp8_expert_bytes(const ModelConfig& c) {
  const int64_t h = c.hidden_size, i = c.moe_intermediate_size;
  const int64_t blocks = ((i + 127) / 128) * ((h + 127) / 128);
  return 3 * (h * i + blocks * 4);
}

}  // namespace

TEST_CASE("synthetic model: built in memory it gives the written checkpoint's logits bit for bit") {
  TempDir tmp("hearth-synthmem");
  SynthOptions so;
  so.out_dir = tmp.path / "tiny";
  so.preset = "tiny";
  so.seed = 5;
  so.threads = 2;
  so.log = nullptr;
  synthesize_checkpoint(so);
  ThreadPool pool(2);
  for (const std::optional<DType> type : {std::optional<DType>(), std::optional<DType>(DType::Q8_0),
                                          std::optional<DType>(DType::Q4_K)}) {
    CAPTURE(type ? std::string(dtype_name(*type)) : std::string("as stored"));
    ModelLoadOptions lo;
    lo.repack = type;
    lo.threads = 2;
    const Model disk = Model::load(so.out_dir.string(), lo);
    const Model mem = build_synthetic_model(tiny_options(type));
    // Every weight got the same format on both paths (the repack selection agrees).
    for (size_t l = 0; l < disk.layers.size(); ++l) {
      CHECK(disk.layers[l].attn.q_a.dtype == mem.layers[l].attn.q_a.dtype);
      CHECK(disk.layers[l].attn.kv_b.dtype == mem.layers[l].attn.kv_b.dtype);
      CHECK(disk.layers[l].attn.indexer.wq_b.dtype == mem.layers[l].attn.indexer.wq_b.dtype);
      CHECK(disk.layers[l].attn.indexer.weights_proj.dtype == mem.layers[l].attn.indexer.weights_proj.dtype);
      if (disk.layers[l].is_moe) {
        CHECK(disk.layers[l].moe.experts[3].down.dtype == mem.layers[l].moe.experts[3].down.dtype);
        CHECK(disk.layers[l].moe.router.dtype == mem.layers[l].moe.router.dtype);
      }
    }
    CHECK(disk.lm_head.dtype == mem.lm_head.dtype);
    const ModelFootprint fd = disk.footprint(), fm = mem.footprint();
    CHECK(fd.attention.bytes == fm.attention.bytes);
    CHECK(fd.routed_experts.bytes == fm.routed_experts.bytes);
    CHECK(fd.embeddings.bytes == fm.embeddings.bytes);
    CHECK(fd.routed_experts.params == fm.routed_experts.params);
    CHECK(fm.mtp.bytes == 0);  // the MTP layer is not built
    const std::vector<float> a = run_logits(disk, pool), b = run_logits(mem, pool);
    REQUIRE(a.size() == b.size());
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("synthetic model: generating a tensor in bands gives the bytes of generating it whole") {
  const ModelConfig c = ModelConfig::from_json(synth_config_json("small", {}));
  ThreadPool pool(2);
  for (const SynthTensor& t : synth_tensor_plan(c)) {
    if (t.weight.name != "model.layers.1.self_attn.q_b_proj.weight" && t.weight.name != "lm_head.weight") continue;
    CAPTURE(t.weight.name);
    const int64_t rows = t.rows();
    std::vector<uint8_t> whole(t.bytes());
    synth_generate_rows(t, 3, true, pool, 0, rows, whole.data(),
                        t.fp8 ? reinterpret_cast<float*>(whole.data() + t.weight.nbytes()) : nullptr);
    const uint64_t row_b = t.weight.nbytes() / uint64_t(rows);
    std::vector<uint8_t> band(t.bytes());
    std::vector<float> scales(t.fp8 ? t.scale.nbytes() / 4 : 0);
    const int64_t step = 256;
    for (int64_t r0 = 0; r0 < rows; r0 += step) {
      const int64_t r1 = std::min(rows, r0 + step);
      synth_generate_rows(t, 3, true, pool, r0, r1, band.data() + uint64_t(r0) * row_b,
                          t.fp8 ? scales.data() + (r0 / 128) * t.scale.shape[1] : nullptr);
    }
    CHECK(std::memcmp(whole.data(), band.data(), t.weight.nbytes()) == 0);
    if (t.fp8) CHECK(std::memcmp(whole.data() + t.weight.nbytes(), scales.data(), t.scale.nbytes()) == 0);
    if (t.fp8)
      CHECK_THROWS_AS(synth_generate_rows(t, 3, true, pool, 64, 128, band.data(), scales.data()), std::invalid_argument);
  }
}

TEST_CASE("synthetic model: v32-full is the real V3.2 shape and is refused where it does not fit") {
  const ModelConfig c = ModelConfig::from_json(synth_preset_config("v32-full"));
  CHECK(c.model_type == "deepseek_v32");
  CHECK(c.num_hidden_layers == 61);
  CHECK(c.first_k_dense_replace == 3);
  CHECK(c.hidden_size == 7168);
  CHECK(c.num_attention_heads == 128);
  CHECK(c.n_routed_experts == 256);
  CHECK(c.num_experts_per_tok == 8);
  CHECK(c.index_n_heads == 64);
  CHECK(c.index_topk == 2048);
  CHECK(c.vocab_size == 129280);
  CHECK(synth_memory_preset_names() == std::vector<std::string>{"v32-full"});

  SyntheticModelOptions o;
  o.preset = "v32-full";
  o.type = DType::F32;
  const SyntheticModelSize size = synthetic_model_size(o);
  // DeepSeek-V3's published 671 B parameters, plus V3.2's indexer (61 x ~14 M).
  CHECK(size.params > uint64_t(671e9));
  CHECK(size.params < uint64_t(673e9));
  // Converted weights at 4 bytes each: above 2.5 TB whatever the machine has.
  CHECK(size.weight_bytes > uint64_t(2.5e12));
  hearth::testing::check_error([&] { build_synthetic_model(o); },
                               {"the synthetic v32-full model in F32 needs ", " GiB of RAM (", " GiB of weights, ", ", but only ", " GiB is available"});

  // The check runs before anything is allocated: tiny against a pretend 100 MiB machine.
  SyntheticModelOptions t = tiny_options();
  t.available_bytes = uint64_t(100) << 20;
  hearth::testing::check_error([&] { build_synthetic_model(t); }, {"synthetic tiny model", "0.1 GiB is available"});
  // ... and passes with room to spare.
  t.available_bytes = uint64_t(8) << 30;
  CHECK_NOTHROW(build_synthetic_model(t));

  // hearth synth refuses to write it.
  TempDir tmp("hearth-v32full");
  SynthOptions so;
  so.out_dir = tmp.path / "m";
  so.preset = "v32-full";
  so.log = nullptr;
  hearth::testing::check_error([&] { synthesize_checkpoint(so); }, {"'v32-full' is only built in memory"});
}

TEST_CASE("memory: MemAvailable parsing and the RAM check's message") {
  CHECK(parse_mem_available("MemTotal:       24000000 kB\nMemFree:  1 kB\nMemAvailable:   1234 kB\n") ==
        uint64_t(1234) * 1024);
  CHECK_FALSE(parse_mem_available("MemTotal: 5 kB\n").has_value());
  CHECK_FALSE(parse_mem_available("MemAvailable: lots\n").has_value());
  const std::optional<uint64_t> avail = mem_available_bytes();
  REQUIRE(avail.has_value());
  CHECK(*avail > 0);
  CHECK(memory_margin_bytes(uint64_t(100) << 30) == uint64_t(5) << 30);
  CHECK(memory_margin_bytes(uint64_t(1) << 30) == uint64_t(512) << 20);
  CHECK_NOTHROW(check_fits_in_memory("x", uint64_t(1) << 30, uint64_t(2) << 30));
  hearth::testing::check_error([] { check_fits_in_memory("the thing", uint64_t(3) << 30, uint64_t(2) << 30); },
                               {"the thing needs 3.0 GiB of RAM, but only 2.0 GiB is available"});
}

TEST_CASE("bandwidth: a positive rate from all the pool's threads") {
  ThreadPool pool(2);
  const BandwidthResult r = measure_read_bandwidth(pool, uint64_t(16) << 20, 2);
  CHECK(r.bytes_per_second > 0);
  CHECK(std::isfinite(r.bytes_per_second));
  CHECK(r.threads == 2);
  CHECK(r.runs == 2);
  CHECK(r.buffer_bytes == uint64_t(16) << 20);
  CHECK_THROWS_AS(measure_read_bandwidth(pool, 1000, 1), std::invalid_argument);
  CHECK_THROWS_AS(measure_read_bandwidth(pool, uint64_t(16) << 20, 0), std::invalid_argument);
}

TEST_CASE("read rate over given ranges: every byte read once, whatever the threads and alignment") {
  // Ranges that start and end off any vector boundary, one of several pieces, one empty.
  std::vector<uint8_t> a(size_t(3) << 20), b(1000), c(77);
  uint64_t x = 12345;
  for (auto* v : {&a, &b, &c})
    for (uint8_t& byte : *v) byte = uint8_t((x = x * 6364136223846793005ull + 1442695040888963407ull) >> 56);
  const std::vector<ByteRange> ranges = {{a.data() + 3, a.size() - 10}, {b.data() + 1, 999}, {c.data(), 0}, {c.data() + 5, 70}};
  uint64_t want = 0, bytes = 0;  // the scalar reference
  for (const ByteRange& r : ranges) {
    for (uint64_t i = 0; i < r.bytes; ++i) want += static_cast<const uint8_t*>(r.data)[i];
    bytes += r.bytes;
  }
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    const RangeReadResult r = measure_read_rate(pool, ranges, 2);
    CHECK(r.byte_sum == want);
    CHECK(r.bytes == bytes);
    CHECK(r.bytes_per_second > 0);
    CHECK(std::isfinite(r.bytes_per_second));
    CHECK(r.threads == threads);
    CHECK(r.runs == 2);
  }
  ThreadPool pool(1);
  CHECK_THROWS_AS(measure_read_rate(pool, ranges, 0), std::invalid_argument);
  const std::vector<ByteRange> null_range = {{nullptr, 8}};
  CHECK_THROWS_AS(measure_read_rate(pool, null_range, 1), std::invalid_argument);
  const RangeReadResult none = measure_read_rate(pool, {}, 1);
  CHECK(none.bytes == 0);
  CHECK(none.bytes_per_second == 0);
}

TEST_CASE("bench: the --no-mmap hint only for mapped weights that read clearly slower than fresh memory") {
  BenchReport r;
  r.bandwidth.bytes_per_second = 20e9;
  r.weights_read.bytes = 5'000'000'000;
  r.weights_read.bytes_per_second = 15e9;  // 25 % slower
  r.mapped.bytes = 4'500'000'000;
  CHECK(placement_hint(r) ==
        "hint: the weights read 25 % slower than fresh memory, and 4.50 GB of them are read in place from the mapped "
        "checkpoint: --no-mmap copies those into memory hearth owns (RAM for the copy needed), which may read faster");
  CHECK(bench_markdown(r).find(placement_hint(r)) != std::string::npos);
  BenchReport close = r;
  close.weights_read.bytes_per_second = 17.5e9;  // 12.5 % slower: within the noise of a VM
  CHECK(placement_hint(close).empty());
  BenchReport owned = r;
  owned.mapped.bytes = 0;  // nothing mapped: --no-mmap would change nothing
  CHECK(placement_hint(owned).empty());
  BenchReport unmeasured = r;
  unmeasured.weights_read = {};
  CHECK(placement_hint(unmeasured).empty());
}

TEST_CASE("profiler: exclusive nested phases that add up to the interval") {
  Profiler p;
  {
    ScopedPhase off(&p, Phase::kHead);  // not running: records nothing
  }
  CHECK(p.total_seconds() == 0);
  auto spin = [](double s) {
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < s) {
    }
  };
  const auto t0 = std::chrono::steady_clock::now();
  p.start();
  spin(0.002);
  {
    ScopedPhase a(&p, Phase::kAttention);
    spin(0.004);
    {
      ScopedPhase i(&p, Phase::kIndexer);
      spin(0.003);
    }
  }
  p.stop();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(p.seconds(Phase::kIndexer) >= 0.003);
  CHECK(p.seconds(Phase::kAttention) >= 0.004);
  CHECK(p.seconds(Phase::kOther) >= 0.002);
  // Exclusive: had the indexer's 3 ms also counted as attention, the phases would add up
  // to more than the wall time of the interval.
  CHECK(p.total_seconds() <= wall);
  CHECK(p.total_seconds() >= 0.009);
}

TEST_CASE("profiler: move_last moves a share of a phase's last interval and keeps the total") {
  Profiler p;
  auto spin = [](double s) {
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < s) {
    }
  };
  p.start();
  {
    ScopedPhase a(&p, Phase::kRoutedExperts);
    spin(0.002);
  }
  const double first = p.seconds(Phase::kRoutedExperts);
  {
    ScopedPhase a(&p, Phase::kRoutedExperts);
    spin(0.004);
  }
  const double both = p.seconds(Phase::kRoutedExperts), total = p.total_seconds();
  const double last = both - first;
  p.move_last(Phase::kRoutedExperts, Phase::kSharedExperts, 0.25);
  // A quarter of the second interval only, not of the phase's whole time.
  CHECK(p.seconds(Phase::kSharedExperts) == doctest::Approx(0.25 * last).epsilon(1e-9));
  CHECK(p.seconds(Phase::kRoutedExperts) == doctest::Approx(first + 0.75 * last).epsilon(1e-9));
  CHECK(p.total_seconds() == doctest::Approx(total).epsilon(1e-12));
  p.move_last(Phase::kRoutedExperts, Phase::kSharedExperts, 2.0);  // clamped to all that is left of it
  CHECK(p.seconds(Phase::kRoutedExperts) == doctest::Approx(first).epsilon(1e-9));
  CHECK(p.seconds(Phase::kSharedExperts) == doctest::Approx(last).epsilon(1e-9));
  p.stop();
}

TEST_CASE("profiler: the phases of decode steps sum to the measured step time") {
  const Model m = build_synthetic_model(tiny_options());
  ThreadPool pool(2);
  Forward fwd(m, pool);
  Profiler prof;
  ExpertUsage usage;
  fwd.set_probes({&prof, &usage});
  KvCache cache(m.config());
  const SeqId s = cache.add_sequence();
  const int64_t V = m.config().vocab_size;
  std::vector<float> logits(static_cast<size_t>(V));
  fwd.step(cache, {{s, std::span<const int32_t>(kTokens).first(4)}}, logits.data(), AttentionPath::kAuto, true);
  CHECK(prof.total_seconds() == 0);  // not started: the probes cost a pointer test
  CHECK(usage.layer_steps == 3);     // the expert counter runs without the profiler
  usage.reset();

  int64_t sink = 0;
  const auto t0 = std::chrono::steady_clock::now();
  prof.start();
  for (int i = 0; i < 4; ++i) {
    fwd.step(cache, {{s, std::span<const int32_t>(kTokens).subspan(size_t(4 + i), 1)}}, logits.data(),
             AttentionPath::kAuto, true);
    ScopedPhase sampling(&prof, Phase::kSampling);
    sink += argmax(logits);
  }
  prof.stop();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(sink >= 0);
  CHECK(std::fabs(prof.total_seconds() - wall) <= 0.1 * wall);
  for (Phase p : {Phase::kAttention, Phase::kIndexer, Phase::kRouter, Phase::kRoutedExperts, Phase::kSharedExperts,
                  Phase::kDenseMlp, Phase::kHead, Phase::kSampling, Phase::kOther}) {
    CAPTURE(phase_name(p));
    CHECK(prof.seconds(p) > 0);
  }

  // Batch 1: each MoE layer reads exactly num_experts_per_tok experts per step.
  const ModelConfig& c = m.config();
  const int64_t moe_layers = c.num_hidden_layers - c.first_k_dense_replace;
  CHECK(usage.layer_steps == 4 * moe_layers);
  CHECK(usage.distinct_experts == 4 * moe_layers * c.num_experts_per_tok);
  CHECK(usage.bytes == 4 * moe_layers * c.num_experts_per_tok * tiny_fp8_expert_bytes(c));
}

TEST_CASE("bench: --no-warmup runs only the timed repetitions") {
  const Model m = build_synthetic_model(tiny_options());
  ThreadPool pool(1);
  BenchOptions o;
  o.prompts = {8};
  o.gens = {0};
  o.reps = 2;
  o.warmup = false;
  o.bandwidth_bytes = uint64_t(16) << 20;
  std::vector<std::string> lines;
  o.progress = [&](const std::string& line) { lines.push_back(line); };
  const BenchReport r = run_bench(m, pool, "tiny", o);
  CHECK(lines == std::vector<std::string>{"pp8: repetition 1 of 2", "pp8: repetition 2 of 2"});
  REQUIRE(r.results.size() == 1);
  CHECK(r.results[0].tok_s.size() == 2);
}

TEST_CASE("bench: run_bench on the tiny synthetic model") {
  const Model m = build_synthetic_model(tiny_options());
  const ModelConfig& c = m.config();
  ThreadPool pool(2);
  BenchOptions o;
  o.prompts = {16};
  o.gens = {4};
  o.batches = {1, 2};
  o.depths = {0, 8};
  o.reps = 2;
  o.profile = true;
  o.bandwidth_bytes = uint64_t(16) << 20;
  int progress_lines = 0, warmups = 0;
  o.progress = [&](const std::string& line) {
    ++progress_lines;
    warmups += line.ends_with(": warm-up");
  };
  CHECK(bench_test_names(o) ==
        std::vector<std::string>{"pp16", "tg4", "tg4@b2", "pp16@d8", "tg4@d8", "tg4@b2@d8"});
  CHECK(bench_max_cached_tokens(o) == 2 * (8 + 4 + 1));
  const BenchReport r = run_bench(m, pool, "tiny", o);
  CHECK(warmups == 6);  // one untimed run per test, before its two repetitions
  CHECK(progress_lines == 6 * (2 + 1));
  CHECK(r.bandwidth.bytes_per_second > 0);

  // The weights' own read rate covers what decode may read: the head and every routed
  // expert's three matrices are among the ranges; the embedding table is not.
  const std::vector<ByteRange> ranges = decode_weight_ranges(m);
  uint64_t range_bytes = 0;
  auto has = [&](const WeightMatrix& w) {
    for (const ByteRange& b : ranges)
      if (b.data == w.data && b.bytes == uint64_t(w.bytes())) return true;
    return false;
  };
  for (const ByteRange& b : ranges) range_bytes += b.bytes;
  CHECK(has(m.lm_head));
  CHECK_FALSE(has(m.embed));
  int64_t experts_found = 0;
  for (const Layer& L : m.layers)
    for (const Mlp& e : L.moe.experts) experts_found += has(e.gate) && has(e.up) && has(e.down);
  CHECK(experts_found == 3 * c.n_routed_experts);
  CHECK(r.weights_read.bytes == range_bytes);
  CHECK(r.weights_read.bytes_per_second > 0);
  CHECK(r.weights_read_skipped.empty());

  // The model's description, against sizes computed here from the config.
  const int64_t H = c.hidden_size, V = c.vocab_size;
  CHECK(r.model.quant == "F8_E4M3");
  CHECK(r.model.threads == 2);
  CHECK(r.model.moe_layers == 3);
  CHECK(r.model.active.embedding_row == H * 2);  // BF16
  CHECK(r.model.active.head == V * H * 2);
  const int64_t dense_blocks = ((c.intermediate_size + 127) / 128) * ((H + 127) / 128);
  CHECK(r.model.active.dense_mlp == 3 * (c.intermediate_size * H + dense_blocks * 4));
  CHECK(r.model.active.indexer > 0);
  CHECK(r.model.params == int64_t(synthetic_model_size(tiny_options()).params));

  REQUIRE(r.results.size() == 6);
  for (const BenchResult& t : r.results) {
    CAPTURE(t.name);
    CHECK(t.tok_s.size() == 2);
    CHECK(t.mean > 0);
    CHECK(t.sd >= 0);
    REQUIRE(t.phase_seconds.has_value());
    if (!t.decode) {
      // A prefill is profiled too: the prompt's tokens, the time in attention and the
      // experts, none in sampling.
      CHECK(t.profiled_tokens == 2 * 16);
      CHECK((*t.phase_seconds)[size_t(Phase::kAttention)] > 0);
      CHECK((*t.phase_seconds)[size_t(Phase::kRoutedExperts)] > 0);
      CHECK((*t.phase_seconds)[size_t(Phase::kSampling)] == 0);
      CHECK(t.bandwidth == 0);  // no wall for a prefill
      continue;
    }
    CHECK(t.experts_per_layer >= double(c.num_experts_per_tok));
    CHECK(t.experts_per_layer <= double(std::min<int64_t>(c.n_routed_experts, t.batch * c.num_experts_per_tok)));
    if (t.batch == 1) {
      CHECK(t.experts_per_layer == double(c.num_experts_per_tok));
      CHECK(t.routed_bytes_per_step == double(3 * c.num_experts_per_tok * tiny_fp8_expert_bytes(c)));
    }
    CHECK(t.active_bytes_per_step == double(r.model.active.per_step(t.batch)));
    // Each decode test's wall comes from the bandwidth measured around it.
    CHECK(t.bandwidth > 0);
    CHECK(t.wall_tok_s == doctest::Approx(t.bandwidth / t.bytes_per_step() * double(t.batch)));
    CHECK(t.efficiency == doctest::Approx(t.mean / t.wall_tok_s));
    // ... and its second wall from the weights' own read rate, measured around it too.
    CHECK(t.weights_rate > 0);
    CHECK(t.weights_wall_tok_s == doctest::Approx(t.weights_rate / t.bytes_per_step() * double(t.batch)));
    CHECK(t.weights_efficiency == doctest::Approx(t.mean / t.weights_wall_tok_s));
    CHECK(t.profiled_tokens == 2 * 4 * t.batch);
  }

  const std::string md = bench_markdown(r);
  for (const std::string& name : bench_test_names(o)) CHECK(md.find("| " + name + " |") != std::string::npos);
  CHECK(md.find("read bandwidth:") != std::string::npos);
  CHECK(md.find("weights read where they lie:") != std::string::npos);
  CHECK(md.find("| efficiency vs weights |") != std::string::npos);
  CHECK(md.find("| routed experts |") != std::string::npos);
  const nlohmann::json j = bench_json(r);
  CHECK(j["tests"].size() == 6);
  CHECK(j["tests"][1]["profile"]["ms_per_token"].contains("routed_experts"));
  CHECK(j["weights_read"]["bytes"].get<uint64_t>() == range_bytes);
  CHECK(j["tests"][1].contains("weights_efficiency"));
  CHECK_FALSE(j["tests"][0].contains("weights_efficiency"));  // pp16: no wall

  // A prefill alone has no wall: the weights' pass is skipped, and the report says why.
  BenchOptions prefill_only = o;
  prefill_only.gens = {0};
  prefill_only.depths = {0};
  prefill_only.reps = 1;
  prefill_only.profile = false;
  const BenchReport pr = run_bench(m, pool, "tiny", prefill_only);
  CHECK(pr.weights_read.bytes == 0);
  CHECK(pr.weights_read_skipped == "no decode test");
  CHECK(bench_markdown(pr).find("weights read where they lie: not measured (no decode test)") != std::string::npos);

  // Sharded over two (synthetic) nodes: the routed experts are read from the shards, so
  // the model's own copy leaves the ranges and the nodes' slices join the pass.
  const NumaExperts numa(m, NumaLayout::synthetic("pack:2 numa:1 core:1 pu:1"), {1, 1});
  BenchOptions sharded = o;
  sharded.prompts = {0};
  sharded.gens = {2};
  sharded.batches = {1};
  sharded.depths = {0};
  sharded.reps = 1;
  sharded.profile = false;
  sharded.numa_experts = &numa;
  uint64_t rest = 0, experts = 0;
  for (const ByteRange& b : decode_weight_ranges(m, false)) rest += b.bytes;
  for (const Layer& L : m.layers)
    for (const Mlp& e : L.moe.experts) experts += uint64_t(e.gate.bytes() + e.up.bytes() + e.down.bytes());
  CHECK(rest + experts == range_bytes);
  const BenchReport sr = run_bench(m, pool, "tiny", sharded);
  CHECK(sr.weights_read_skipped.empty());
  CHECK(sr.weights_read.bytes == range_bytes);
  CHECK(sr.weights_read.bytes_per_second > 0);
  REQUIRE(sr.results.size() == 1);
  CHECK(sr.results[0].weights_rate > 0);

  BenchOptions bad = o;
  bad.batches = {0};
  CHECK_THROWS_AS(validate(bad), std::invalid_argument);
  bad = o;
  bad.prompts = {0};
  bad.gens = {0};
  CHECK_THROWS_AS(validate(bad), std::invalid_argument);
}

}  // namespace engine_bench_suite

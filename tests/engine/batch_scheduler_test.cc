// Continuous batching on the tiny synthetic model: batched runs give exactly the tokens of
// one-at-a-time runs and of the Generator, samples and later requests share prompt pages,
// the KV budget holds under a flood, cancel, the prefix cache, errors, the worker thread.
#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "engine/batch_scheduler.h"
#include "engine/forward.h"
#include "engine/prefix_cache.h"
#include "support/tiny_chat_model.h"

namespace engine_batch_scheduler_suite {

using namespace hearth;

namespace {

using Fixture = testing::TinyChat;

const char* kLongText =
    "In the middle of the night the old lighthouse keeper climbed the spiral stairs once more, counting each of the "
    "hundred and twelve steps as his father had taught him, and at the top he found the lamp";

GenerateRequest sampled(int64_t max_tokens, uint64_t seed) {
  GenerateRequest r;
  r.sampling.temperature = 0.9;
  r.sampling.top_p = 0.95;
  r.sampling.seed = seed;
  r.max_tokens = max_tokens;
  return r;
}

// What one request produced, as its callbacks saw it.
struct Outcome {
  std::vector<int32_t> streamed_tokens;
  std::string streamed;
  GenerationResult result;
  std::string error;
  int done_calls = 0;
};

// Collects every request's callbacks (thread-safe: the worker test calls them on another thread).
struct Recorder {
  std::mutex mu;
  std::condition_variable cv;
  std::map<RequestId, Outcome> out;
  int64_t done = 0;

  RequestCallbacks callbacks() {
    RequestCallbacks cb;
    cb.on_token = [this](RequestId id, int32_t token, std::string_view text) {
      std::lock_guard lock(mu);
      out[id].streamed_tokens.push_back(token);
      out[id].streamed += text;
    };
    cb.on_done = [this](RequestId id, const GenerationResult& r, const std::string& error) {
      std::lock_guard lock(mu);
      Outcome& o = out[id];
      o.result = r;
      o.error = error;
      ++o.done_calls;
      ++done;
      cv.notify_all();
    };
    return cb;
  }
  void wait_for(int64_t n) {
    std::unique_lock lock(mu);
    REQUIRE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return done >= n; }));
  }
};

BatchOptions options(int64_t max_running, int64_t page_tokens = 16, int64_t prefill_chunk = 8) {
  BatchOptions o;
  o.threads = 2;
  o.max_running = max_running;
  o.page_tokens = page_tokens;
  o.prefill_chunk = prefill_chunk;
  return o;
}

struct Job {
  std::vector<int32_t> prompt;
  GenerateRequest request;
  int n = 1;
};

// Submits the jobs (the later ones after `delay` steps each, joining a running batch)
// and runs until idle; returns the sample tokens of every job, in submit order.
std::vector<std::vector<int32_t>> run_jobs(const Fixture& f, const BatchOptions& o, const std::vector<Job>& jobs,
                                           int delay, SchedulerStats* stats = nullptr) {
  BatchScheduler sched(f.model, f.tok, o);
  Recorder rec;
  std::vector<RequestId> ids;
  for (size_t j = 0; j < jobs.size(); ++j) {
    const auto got = sched.submit(jobs[j].prompt, jobs[j].request, jobs[j].n, rec.callbacks());
    ids.insert(ids.end(), got.begin(), got.end());
    for (int s = 0; s < delay; ++s) sched.step();
  }
  sched.run_until_idle();
  std::vector<std::vector<int32_t>> tokens;
  for (RequestId id : ids) {
    const Outcome& out = rec.out[id];
    CHECK(out.done_calls == 1);
    CHECK(out.error.empty());
    CHECK(out.streamed_tokens == out.result.tokens);
    CHECK(out.streamed == out.result.text);
    tokens.push_back(out.result.tokens);
  }
  if (stats) *stats = sched.stats();
  return tokens;
}

}  // namespace

TEST_CASE("batch scheduler: a sequence's logits do not depend on the rest of the step or on prompt chunking") {
  Fixture f;
  ThreadPool pool(2);
  Forward fwd(f.model, pool);
  const int64_t V = f.model.config().vocab_size;
  const auto a = f.prompt(kLongText);
  const auto b = f.prompt("Another prompt entirely");
  REQUIRE(a.size() > 20);
  const std::span<const int32_t> as(a);

  // Alone, in one chunk on the expanded path.
  std::vector<float> alone(static_cast<size_t>(V));
  {
    KvCache cache(f.model.config(), 16);
    const SeqId s = cache.add_sequence();
    fwd.step(cache, {{s, as, AttentionPath::kPrefill}}, alone.data(), AttentionPath::kAuto, true);
  }
  auto same = [&](const float* row) { return std::memcmp(row, alone.data(), size_t(V) * sizeof(float)) == 0; };
  // In chunks of 7 + rest, and all but one + one: bit-identical on the same path.
  for (size_t cut : {size_t(7), a.size() - 1}) {
    KvCache cache(f.model.config(), 16);
    const SeqId s = cache.add_sequence();
    std::vector<float> row(static_cast<size_t>(V));
    fwd.step(cache, {{s, as.first(cut), AttentionPath::kPrefill}}, row.data(), AttentionPath::kAuto, true);
    fwd.step(cache, {{s, as.subspan(cut), AttentionPath::kPrefill}}, row.data(), AttentionPath::kAuto, true);
    CHECK(same(row.data()));
  }
  // Beside another sequence's decode token and a third one's prompt, in one step.
  {
    KvCache cache(f.model.config(), 16);
    const SeqId sb = cache.add_sequence(), sa = cache.add_sequence(), sc = cache.add_sequence();
    std::vector<float> rows(3 * size_t(V));
    fwd.step(cache, {{sb, b, AttentionPath::kPrefill}}, rows.data(), AttentionPath::kAuto, true);
    const int32_t t = 1234;
    fwd.step(cache, {{sb, std::span<const int32_t>(&t, 1), AttentionPath::kDecode}, {sa, as, AttentionPath::kPrefill},
                     {sc, std::span<const int32_t>(b).first(3), AttentionPath::kPrefill}},
             rows.data(), AttentionPath::kAuto, true);
    CHECK(same(rows.data() + V));
  }
  // The absorbed path rounds differently: a scheduler must not let chunking pick the path.
  {
    KvCache cache(f.model.config(), 16);
    const SeqId s = cache.add_sequence();
    std::vector<float> row(static_cast<size_t>(V));
    fwd.step(cache, {{s, as, AttentionPath::kDecode}}, row.data(), AttentionPath::kAuto, true);
    double diff = 0;
    for (int64_t i = 0; i < V; ++i) diff = std::max(diff, double(std::abs(row[size_t(i)] - alone[size_t(i)])));
    CHECK(diff < 1e-3);  // the same function, rounded another way
  }
}

TEST_CASE("batch scheduler: batched samples give the tokens of one-at-a-time runs and of the Generator") {
  Fixture f;
  const std::vector<Job> jobs = {
      {f.prompt(kLongText), sampled(6, 11), 3},           // 3 pages of 16, shared by 3 samples
      {f.prompt("Hello"), sampled(7, 5), 1},               // 2 tokens
      {f.prompt("The weather today is"), sampled(5, 3), 2},
      {f.prompt(std::string(kLongText) + " again"), sampled(4, 8), 1},  // extends the first prompt
  };
  SchedulerStats batched_stats, single_stats;
  const auto batched = run_jobs(f, options(8), jobs, 2, &batched_stats);
  const auto single = run_jobs(f, options(1), jobs, 0, &single_stats);
  CHECK(batched == single);

  // The Generator, sample i seeded with seed + i, gives the same tokens.
  Generator gen(f.model, f.tok, {2, 0});
  size_t k = 0;
  for (const Job& j : jobs)
    for (int i = 0; i < j.n; ++i, ++k) {
      GenerateRequest r = j.request;
      r.sampling.seed += uint64_t(i);
      gen.reset();
      CHECK(gen.generate(j.prompt, r).tokens == batched[k]);
    }
  // Samples of one prompt differ (their seeds do).
  CHECK(batched[0] != batched[1]);

  // Prompt tokens: the samples of job 0 prefilled it once (the others ran its last token).
  // One at a time, job 1 ("Hello": BOS + 1) forks the BOS kept from job 0, job 2 shares
  // too little with the others to fork (but its second sample forks its first), job 3
  // forks job 0's whole prompt.
  int64_t total = 0;
  for (const Job& j : jobs) total += int64_t(j.prompt.size()) * j.n;
  CHECK(batched_stats.prompt_tokens == total);
  CHECK(single_stats.prompt_tokens == total);
  CHECK(batched_stats.prefilled_tokens + batched_stats.shared_prefix_tokens == total);
  CHECK(single_stats.prefilled_tokens + single_stats.shared_prefix_tokens == total);
  const int64_t n0 = int64_t(jobs[0].prompt.size());
  const int64_t c03 = common_prefix(jobs[0].prompt, jobs[3].prompt);
  REQUIRE(c03 >= 16);
  CHECK(jobs[1].prompt.size() == 2);
  const int64_t n2 = int64_t(jobs[2].prompt.size());
  CHECK(single_stats.shared_prefix_tokens == 2 * (n0 - 1) + 1 + (n2 - 1) + c03);
  CHECK(batched_stats.shared_prefix_tokens >= 2 * (n0 - 1));
  CHECK(batched_stats.finished == 7);
  CHECK(batched_stats.decoded_tokens == single_stats.decoded_tokens);
  CHECK(batched_stats.steps < single_stats.steps);
  CHECK(batched_stats.queued == 0);
  CHECK(batched_stats.running == 0);
}

TEST_CASE("batch scheduler: samples fork the prompt pages of the first one") {
  Fixture f;
  BatchScheduler sched(f.model, f.tok, options(8, 16, 64));
  Recorder rec;
  const auto prompt = f.prompt(kLongText);
  const int64_t n = int64_t(prompt.size());
  REQUIRE(n % 16 != 0);
  const auto ids = sched.submit(prompt, sampled(3, 1), 4, rec.callbacks());
  REQUIRE(ids.size() == 4);
  CHECK(ids[1] == ids[0] + 1);
  sched.step();  // the first sample prefills the whole prompt (one chunk)
  SchedulerStats st = sched.stats();
  CHECK(st.running == 1);
  CHECK(st.queued == 3);
  CHECK(st.prefilled_tokens == n);
  const int64_t prompt_pages = (n + 15) / 16;
  CHECK(st.kv_pages_used == prompt_pages);
  sched.step();  // the other three fork it at n - 1 and run the last token
  st = sched.stats();
  CHECK(st.running == 4);
  CHECK(st.shared_prefix_tokens == 3 * (n - 1));
  CHECK(st.prefilled_tokens == n + 3);
  // The full pages are shared; the page holding the last prompt token was copied by each
  // writer but one (the first sample wrote position n, the others position n - 1).
  CHECK(st.kv_pages_used == (prompt_pages - 1) + 4);
  sched.run_until_idle();
  CHECK(rec.done == 4);
  for (RequestId id : ids) CHECK(rec.out[id].result.stats.reused_tokens == (id == ids[0] ? 0 : n - 1));
}

TEST_CASE("batch scheduler: a flood of requests stays within the KV budget and all finish") {
  Fixture f;
  BatchOptions o = options(64, 16, 16);
  const auto base = f.prompt("Count with me: one two three four five six seven eight nine ten eleven twelve");
  REQUIRE(base.size() >= 16);
  // Each request holds at most ceil((prompt + 3 - 1) / 16) pages; the budget fits three.
  const int64_t worst = int64_t(base.size()) + 2 + 2;
  const int64_t pages = (worst + 15) / 16;
  KvCache probe(f.model.config(), 16);
  o.kv_budget_bytes = 3 * pages * probe.page_bytes();
  o.prefix_cache_bytes = pages * probe.page_bytes();
  BatchScheduler sched(f.model, f.tok, o);
  Recorder rec;
  std::vector<Job> jobs;
  std::vector<RequestId> ids;
  for (int i = 0; i < 50; ++i) {
    std::vector<int32_t> p = base;
    p.push_back(1000 + i);  // a common first page, then its own tokens
    p.push_back(2000 + 7 * i);
    jobs.push_back({p, sampled(3, uint64_t(i)), 1});
    ids.push_back(sched.submit(p, jobs.back().request, 1, rec.callbacks())[0]);
  }
  int64_t steps = 0, most_running = 0;
  while (sched.step()) {
    const SchedulerStats st = sched.stats();
    CHECK(st.kv_pages_used <= 3 * pages);
    CHECK(st.kv_pages_budget == 3 * pages);
    most_running = std::max(most_running, st.running);
    REQUIRE(++steps < 2000);
  }
  CHECK(rec.done == 50);
  for (RequestId id : ids) {
    CHECK(rec.out[id].error.empty());
    CHECK(rec.out[id].result.tokens.size() == 3);
  }
  CHECK(most_running >= 3);  // shared first pages may let a fourth in
  CHECK(sched.stats().shared_prefix_tokens > 0);
  // Spot checks against the Generator.
  Generator gen(f.model, f.tok, {2, 0});
  for (int i : {17, 49}) {
    gen.reset();
    CHECK(rec.out[ids[size_t(i)]].result.tokens == gen.generate(jobs[size_t(i)].prompt, jobs[size_t(i)].request).tokens);
    CHECK(rec.out[ids[size_t(i)]].result.stats.stop == StopReason::kMaxTokens);
  }
}

TEST_CASE("batch scheduler: cancel ends queued and running requests") {
  Fixture f;
  BatchScheduler sched(f.model, f.tok, options(1));
  Recorder rec;
  const auto a = sched.submit(f.prompt("First request"), sampled(50, 1), 1, rec.callbacks())[0];
  const auto b = sched.submit(f.prompt("Second request"), sampled(50, 2), 1, rec.callbacks())[0];
  for (int i = 0; i < 4; ++i) sched.step();
  CHECK(sched.stats().running == 1);
  CHECK(sched.stats().queued == 1);
  sched.cancel(a);
  sched.cancel(b);
  sched.cancel(9999);  // unknown: ignored
  CHECK_FALSE(sched.step());
  REQUIRE(rec.done == 2);
  CHECK(rec.out[a].result.stats.stop == StopReason::kCancelled);
  CHECK(rec.out[a].result.tokens.size() == 4);  // one from the prefill step, one per decode step
  CHECK(rec.out[a].result.tokens == rec.out[a].streamed_tokens);
  CHECK(rec.out[b].result.stats.stop == StopReason::kCancelled);
  CHECK(rec.out[b].result.tokens.empty());
  CHECK(rec.out[b].done_calls == 1);
  CHECK(rec.out[a].error.empty());
  const SchedulerStats st = sched.stats();
  CHECK(st.running == 0);
  CHECK(st.queued == 0);
  CHECK(st.finished == 2);
  sched.cancel(a);  // finished: ignored
  CHECK_FALSE(sched.step());
  CHECK(rec.out[a].done_calls == 1);
}

TEST_CASE("batch scheduler: cancelling the sample that prefills hands the prompt to a sibling") {
  Fixture f;
  BatchScheduler sched(f.model, f.tok, options(8, 16, 8));
  Recorder rec;
  const auto prompt = f.prompt(kLongText);
  const auto ids = sched.submit(prompt, sampled(4, 20), 3, rec.callbacks());
  sched.step();
  sched.step();  // the first sample is 16 tokens into its prompt; the others wait for it
  CHECK(sched.stats().running == 1);
  sched.cancel(ids[0]);
  sched.run_until_idle();
  REQUIRE(rec.done == 3);
  CHECK(rec.out[ids[0]].result.stats.stop == StopReason::kCancelled);
  CHECK(rec.out[ids[0]].result.tokens.empty());
  Generator gen(f.model, f.tok, {2, 0});
  for (int i : {1, 2}) {
    gen.reset();
    CHECK(rec.out[ids[size_t(i)]].result.tokens == gen.generate(prompt, sampled(4, 20 + uint64_t(i))).tokens);
  }
  // The cancelled sample's 16 prompt positions were kept and forked by the new first
  // sample; the last one forked that one's whole prompt.
  CHECK(rec.out[ids[1]].result.stats.reused_tokens == 16);
  CHECK(rec.out[ids[2]].result.stats.reused_tokens == int64_t(prompt.size()) - 1);
}

TEST_CASE("batch scheduler: an identical prompt later reuses the kept prefix") {
  Fixture f;
  const auto prompt = f.prompt(kLongText);
  const int64_t n = int64_t(prompt.size());
  for (int64_t cache_bytes : {int64_t(-1), int64_t(0)}) {
    CAPTURE(cache_bytes);
    BatchOptions o = options(4);
    o.prefix_cache_bytes = cache_bytes;
    BatchScheduler sched(f.model, f.tok, o);
    Recorder rec;
    const auto first = sched.submit(prompt, sampled(4, 9), 1, rec.callbacks())[0];
    sched.run_until_idle();
    const SchedulerStats s1 = sched.stats();
    CHECK(s1.prefilled_tokens == n);
    CHECK(s1.kv_pages_used == (cache_bytes == 0 ? 0 : (n + 15) / 16));  // the kept prompt
    const auto second = sched.submit(prompt, sampled(4, 9), 1, rec.callbacks())[0];
    sched.run_until_idle();
    const SchedulerStats s2 = sched.stats();
    if (cache_bytes == 0) {
      CHECK(s2.prefilled_tokens - s1.prefilled_tokens == n);
      CHECK(s2.shared_prefix_tokens == 0);
    } else {
      CHECK(s2.prefilled_tokens - s1.prefilled_tokens == 1);
      CHECK(s2.shared_prefix_tokens == n - 1);
      CHECK(rec.out[second].result.stats.reused_tokens == n - 1);
    }
    CHECK(rec.out[second].result.tokens == rec.out[first].result.tokens);
    // A prompt that departs after the first page shares that page only.
    std::vector<int32_t> other(prompt.begin(), prompt.begin() + 20);
    other.push_back(4242);
    sched.submit(other, sampled(2, 1), 1, rec.callbacks());
    sched.run_until_idle();
    CHECK(sched.stats().shared_prefix_tokens - s2.shared_prefix_tokens == (cache_bytes == 0 ? 0 : 20));
  }
}

TEST_CASE("batch scheduler: stop strings and the context limit end requests as in the Generator") {
  Fixture f;
  const auto prompt = f.prompt("Write a story:");
  Generator gen(f.model, f.tok, {2, 0});
  GenerateRequest greedy;
  greedy.sampling.temperature = 0;
  greedy.max_tokens = 16;
  const GenerationResult full = gen.generate(prompt, greedy);
  REQUIRE(full.tokens.size() == 16);
  const std::string t5 = f.tok.token_bytes(full.tokens[5]), t6 = f.tok.token_bytes(full.tokens[6]);
  GenerateRequest with_stop = greedy;
  with_stop.stop = {t5.substr(t5.size() - 1) + t6.substr(0, 1)};

  BatchOptions o = options(4);
  o.context = int64_t(prompt.size()) + 3;
  BatchScheduler sched(f.model, f.tok, o);
  BatchScheduler wide(f.model, f.tok, options(4));
  Recorder rec, rec_wide;
  const RequestId stop_id = wide.submit(prompt, with_stop, 1, rec_wide.callbacks())[0];
  const RequestId ctx_id = sched.submit(prompt, greedy, 1, rec.callbacks())[0];
  wide.run_until_idle();
  sched.run_until_idle();

  gen.reset();
  const GenerationResult g_stop = gen.generate(prompt, with_stop);
  const Outcome& s = rec_wide.out[stop_id];
  CHECK(s.result.stats.stop == StopReason::kStopString);
  CHECK(s.result.text == g_stop.text);
  CHECK(s.result.tokens == g_stop.tokens);
  CHECK(s.streamed == s.result.text);
  CHECK(s.result.stats.generated_tokens == int64_t(g_stop.tokens.size()));

  Generator small(f.model, f.tok, {2, int64_t(prompt.size()) + 3});
  const GenerationResult g_ctx = small.generate(prompt, greedy);
  const Outcome& c = rec.out[ctx_id];
  CHECK(c.result.stats.stop == StopReason::kContextFull);
  CHECK(c.result.tokens.size() == 4);
  CHECK(c.result.tokens == g_ctx.tokens);
  CHECK(c.result.text == g_ctx.text);
  CHECK(c.result.stats.prompt_tokens == int64_t(prompt.size()));
  CHECK(c.result.stats.generated_tokens == 4);
  CHECK(c.result.stats.ttft_seconds > 0);
  CHECK(c.result.stats.prefill_seconds > 0);
  CHECK(c.result.stats.decode_tok_s > 0);

  // EOS handling itself is checked on TokenStream (token_stream_test.cc); here only that
  // the flag reaches it.
  GenerateRequest no_eos = greedy;
  no_eos.stop_at_eos = false;
  const RequestId ne = wide.submit(prompt, no_eos, 1, rec_wide.callbacks())[0];
  wide.run_until_idle();
  gen.reset();
  CHECK(rec_wide.out[ne].result.tokens == gen.generate(prompt, no_eos).tokens);
}

TEST_CASE("batch scheduler: bad submits and options throw and queue nothing") {
  Fixture f;
  BatchOptions o = options(4);
  o.context = 64;
  KvCache probe(f.model.config(), 16);
  o.kv_budget_bytes = 3 * probe.page_bytes();  // 48 positions
  BatchScheduler sched(f.model, f.tok, o);
  const auto p = f.prompt("Hello there");
  GenerateRequest ok = sampled(4, 0);
  CHECK_THROWS_WITH_AS(sched.submit({}, ok, 1, {}), doctest::Contains("empty"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(sched.submit({0, 200000}, ok, 1, {}), doctest::Contains("outside the vocabulary"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(sched.submit(std::vector<int32_t>(65, 100), ok, 1, {}), doctest::Contains("context holds only 64"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(sched.submit(p, ok, 0, {}), doctest::Contains("at least 1"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(sched.submit(p, sampled(0, 0), 1, {}), doctest::Contains("token budget"), std::invalid_argument);
  GenerateRequest bad_temp = ok;
  bad_temp.sampling.temperature = -1;
  CHECK_THROWS_AS(sched.submit(p, bad_temp, 1, {}), std::invalid_argument);
  GenerateRequest empty_stop = ok;
  empty_stop.stop = {""};
  CHECK_THROWS_WITH_AS(sched.submit(p, empty_stop, 1, {}), doctest::Contains("stop string"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(sched.submit(p, sampled(60, 0), 1, {}), doctest::Contains("KV budget holds only 3"), std::invalid_argument);
  const SchedulerStats st = sched.stats();
  CHECK(st.queued == 0);
  CHECK(st.prompt_tokens == 0);
  CHECK_FALSE(sched.step());
  CHECK(sched.context() == 64);

  auto bad = [&](auto edit, const char* what) {
    BatchOptions b = options(4);
    edit(b);
    CHECK_THROWS_WITH_AS(BatchScheduler(f.model, f.tok, b), doctest::Contains(what), std::invalid_argument);
  };
  bad([](BatchOptions& b) { b.max_running = 0; }, "max_running");
  bad([](BatchOptions& b) { b.prefill_chunk = 0; }, "prefill_chunk");
  bad([](BatchOptions& b) { b.page_tokens = 0; }, "page_tokens");
  bad([](BatchOptions& b) { b.prefix_cache_bytes = -2; }, "prefix_cache_bytes");
  bad([](BatchOptions& b) { b.kv_budget_bytes = 100; }, "less than one cache page");
}

TEST_CASE("batch scheduler: a worker thread serves requests submitted from other threads") {
  Fixture f;
  const std::vector<std::string> texts = {"Red", "Green light", "Blue sky over the sea", "Yellow"};
  std::vector<std::vector<int32_t>> expected;
  {
    Generator gen(f.model, f.tok, {2, 0});
    for (size_t i = 0; i < texts.size(); ++i) {
      gen.reset();
      expected.push_back(gen.generate(f.prompt(texts[i]), sampled(5, i)).tokens);
    }
  }
  Recorder rec;
  std::vector<RequestId> ids(texts.size());
  {
    BatchScheduler sched(f.model, f.tok, options(8));
    sched.start();
    sched.start();  // already running: nothing happens
    std::vector<std::thread> clients;
    for (size_t i = 0; i < texts.size(); ++i)
      clients.emplace_back([&, i] { ids[i] = sched.submit(f.prompt(texts[i]), sampled(5, i), 1, rec.callbacks())[0]; });
    for (auto& t : clients) t.join();
    rec.wait_for(int64_t(texts.size()));
    for (size_t i = 0; i < texts.size(); ++i) CHECK(rec.out[ids[i]].result.tokens == expected[i]);
    sched.stop();
    // Stopped: a request waits; start again and it is served.
    const RequestId late = sched.submit(f.prompt(texts[0]), sampled(5, 0), 1, rec.callbacks())[0];
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK(sched.stats().queued == 1);
    sched.start();
    rec.wait_for(int64_t(texts.size()) + 1);
    CHECK(rec.out[late].result.tokens == expected[0]);
    // Left running and queued at destruction: cancelled, on_done called.
    sched.stop();
    sched.submit(f.prompt(texts[1]), sampled(5, 1), 2, rec.callbacks());
  }
  CHECK(rec.done == int64_t(texts.size()) + 3);
  int cancelled = 0;
  for (auto& [id, o] : rec.out) cancelled += o.result.stats.stop == StopReason::kCancelled;
  CHECK(cancelled == 2);
}

TEST_CASE("batch scheduler: a failing callback ends only its own request") {
  Fixture f;
  BatchScheduler sched(f.model, f.tok, options(4));
  Recorder rec;
  RequestCallbacks failing = rec.callbacks();
  auto base = failing.on_token;
  failing.on_token = [base](RequestId id, int32_t t, std::string_view s) {
    base(id, t, s);
    throw std::runtime_error("client went away");
  };
  const RequestId bad = sched.submit(f.prompt("One"), sampled(5, 1), 1, failing)[0];
  const RequestId good = sched.submit(f.prompt("Two"), sampled(5, 2), 1, rec.callbacks())[0];
  sched.run_until_idle();
  CHECK(rec.out[bad].error.find("client went away") != std::string::npos);
  CHECK(rec.out[bad].result.tokens.size() == 1);
  CHECK(rec.out[good].error.empty());
  CHECK(rec.out[good].result.tokens.size() == 5);
  CHECK(sched.stats().running == 0);
  CHECK(sched.stats().kv_pages_used == 2);  // the two prompts kept for reuse, a page each
}

}  // namespace engine_batch_scheduler_suite

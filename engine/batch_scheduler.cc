#include "engine/batch_scheduler.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <optional>
#include <stdexcept>
#include <unordered_set>

#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "engine/prefix_cache.h"
#include "engine/sampler.h"
#include "engine/token_stream.h"
#include "offload/thread_pool.h"

namespace hearth {

namespace {

using Clock = std::chrono::steady_clock;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

int64_t default_kv_budget() {
  const int64_t cap = int64_t(8) << 30;
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page <= 0) return cap;
  return std::min(cap, int64_t(pages) * int64_t(page) / 4);
}

struct BatchScheduler::Impl {
  // What the samples of one submit() share.
  struct Group {
    std::vector<int32_t> prompt;
    GenerateRequest request;
    RequestCallbacks callbacks;
    int64_t queued = 0;              // samples not admitted yet
    bool leader_prefilling = false;  // one sample prefills the prompt; the others wait for it
    SeqId anchor = -1;               // the finished prompt, kept while samples are still queued
    // Prompt positions [0, expanded_end) take the expanded attention form (below
    // prefill_positions); the rest, generated tokens fed back by a resumed generation,
    // take the absorbed form they were first computed with. Only positions below it may be
    // shared with another request, whose own limit applies too.
    int64_t expanded_end = 0;
  };

  struct Request {
    Request(RequestId id_, int sample, std::shared_ptr<Group> group, const Tokenizer& tok, int64_t max_len_)
        : id(id_),
          g(std::move(group)),
          sampler([&] {
            SamplingParams p = g->request.sampling;
            p.seed += uint64_t(sample);
            return p;
          }(), tok.size()),
          stream(tok, g->request, int64_t(g->prompt.size())),
          max_len(max_len_) {}
    int64_t prompt_len() const { return int64_t(g->prompt.size()); }

    RequestId id;
    std::shared_ptr<Group> g;
    Sampler sampler;
    TokenStream stream;
    int64_t max_len;          // cache positions it may ever hold
    SeqId seq = -1;           // -1 while queued
    bool prefilling = false;  // admitted and still running its prompt
    bool leader = false;      // prefills the prompt its queued siblings will fork
    bool done = false;
    int32_t next = -1;        // the last sampled token, fed back in the next step
  };

  Impl(const Model& m, const Tokenizer& t, const BatchOptions& o);
  static const BatchOptions& checked(const BatchOptions& o, const Model& m, const Tokenizer& t);

  void take_inbox();
  void apply_cancels(const std::vector<RequestId>& ids);
  void admit();
  bool try_admit(Request& r);
  void run_batch();
  // A request's token from its sampler, or why there is none.
  struct SampledToken {
    int32_t token = -1;
    std::optional<std::string> error;  // set when the sampler threw
  };
  // Hands the request its sampled token (stop strings, callbacks, finishing).
  void sample(Request& r, const SampledToken& picked);
  void finish(Request& r, StopReason stop, const std::string& error = {}, bool keep_prompt = true);
  void drop_anchor(Group& g);
  void make_anchor(Request& leader);
  int64_t future_pages(const Request& r) const;
  int64_t demand(const Request* extra = nullptr) const;
  int64_t reclaimable_pages() const;
  bool evict_one();
  void publish_stats(double busy);

  const Model& model;
  const Tokenizer& tok;
  // The stepping thread's state (one step at a time: step_mu).
  BatchOptions opt;
  int64_t context, budget_bytes, prefill_positions;
  ThreadPool pool;
  Forward forward;
  KvCache cache;  // before prefix: its entries are sequences of this cache
  int64_t budget_pages;
  PrefixCache prefix;
  std::deque<std::unique_ptr<Request>> queue;
  std::vector<std::unique_ptr<Request>> running;  // in admission order
  std::vector<std::shared_ptr<Group>> anchored;
  std::vector<float> logits;
  std::mutex step_mu;

  // Shared with other threads (guarded by mu).
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::unique_ptr<Request>> inbox;
  std::vector<RequestId> cancels;
  RequestId next_id = 1;
  SchedulerStats counters;  // the counters; queued/running/pages refreshed after each step
  bool has_work = false, stopping = false;
  std::thread worker;
};

const BatchOptions& BatchScheduler::Impl::checked(const BatchOptions& o, const Model& m, const Tokenizer& t) {
  auto at_least = [](int64_t v, int64_t low, const char* name) {
    if (v < low)
      throw std::invalid_argument(std::string("BatchOptions.") + name + " must be at least " + std::to_string(low) + ", got " +
                                  std::to_string(v));
  };
  at_least(o.max_running, 1, "max_running");
  at_least(o.prefill_chunk, 1, "prefill_chunk");
  at_least(o.page_tokens, 1, "page_tokens");
  at_least(o.context, 0, "context");
  at_least(o.kv_budget_bytes, 0, "kv_budget_bytes");
  at_least(o.prefix_cache_bytes, -1, "prefix_cache_bytes");
  at_least(o.step_tokens, 0, "step_tokens");
  if (o.context == 0 && m.config().max_position_embeddings <= 0)
    throw std::invalid_argument("the model declares no context length (max_position_embeddings)");
  if (t.size() > m.config().vocab_size)
    throw std::invalid_argument("the tokenizer defines " + std::to_string(t.size()) + " ids but the model's vocabulary has only " +
                                std::to_string(m.config().vocab_size) + " (a model must cover its tokenizer)");
  return o;
}

BatchScheduler::Impl::Impl(const Model& m, const Tokenizer& t, const BatchOptions& o)
    : model(m),
      tok(t),
      opt(checked(o, m, t)),
      context(o.context > 0 ? o.context : m.config().max_position_embeddings),
      budget_bytes(o.kv_budget_bytes > 0 ? o.kv_budget_bytes : default_kv_budget()),
      prefill_positions(prefill_path_positions(m.config())),
      pool(o.threads),
      forward(m, pool),
      cache(m.config(), o.page_tokens),
      budget_pages(budget_bytes / cache.page_bytes()),
      prefix(cache, o.prefix_cache_bytes >= 0 ? o.prefix_cache_bytes : budget_bytes / 4) {
  if (budget_pages < 1)
    throw std::invalid_argument("the KV budget of " + std::to_string(budget_bytes) + " bytes is less than one cache page (" +
                                std::to_string(cache.page_bytes()) + " bytes)");
  cache.set_page_limit(budget_pages);  // a guard: admission keeps demand within it
  forward.set_offload(o.offload);
  forward.set_numa_experts(o.numa_experts);
  counters.kv_pages_budget = budget_pages;
}

// ---- budget ------------------------------------------------------------------------

// Pages `r` may still take: the rest of its page table up to max_len, plus a copy of the
// page it writes next when that page is shared.
int64_t BatchScheduler::Impl::future_pages(const Request& r) const {
  const int64_t P = cache.page_tokens(), len = cache.length(r.seq);
  const std::vector<int32_t>& table = cache.page_table(r.seq);
  int64_t n = std::max<int64_t>(0, ceil_div(r.max_len, P) - int64_t(table.size()));
  if (len % P != 0 && len < r.max_len && cache.page_refs(table[size_t(len / P)]) > 1) ++n;
  return n;
}

// Pages in use plus every running sequence's future pages (and `extra`'s, a request
// being admitted): admission keeps this within the budget, so admitted work never runs out.
int64_t BatchScheduler::Impl::demand(const Request* extra) const {
  int64_t d = cache.pages_in_use() + (extra ? future_pages(*extra) : 0);
  for (const auto& r : running)
    if (!r->done) d += future_pages(*r);  // ended in this step, not yet taken out
  return d;
}

// Pages that evicting every prefix-cache entry and anchor would give back: those no
// running sequence references (every other sequence is one of those).
int64_t BatchScheduler::Impl::reclaimable_pages() const {
  std::unordered_set<int32_t> held;
  for (const auto& r : running)
    if (!r->done) held.insert(cache.page_table(r->seq).begin(), cache.page_table(r->seq).end());
  return cache.pages_in_use() - int64_t(held.size());
}

bool BatchScheduler::Impl::evict_one() {
  if (prefix.evict_oldest()) return true;
  if (anchored.empty()) return false;
  drop_anchor(*anchored.front());
  return true;
}

// ---- groups ------------------------------------------------------------------------

void BatchScheduler::Impl::drop_anchor(Group& g) {
  if (g.anchor < 0) return;
  cache.remove_sequence(g.anchor);
  g.anchor = -1;
  std::erase_if(anchored, [&](const std::shared_ptr<Group>& a) { return a.get() == &g; });
}

// The leader finished the prompt: keep it for the samples still queued (they may only get
// in after the leader ends), unless that would break the page budget.
void BatchScheduler::Impl::make_anchor(Request& leader) {
  Group& g = *leader.g;
  if (g.queued == 0 || g.anchor >= 0) return;
  g.anchor = cache.fork(leader.seq, leader.prompt_len());
  anchored.push_back(leader.g);
  if (demand() > budget_pages) drop_anchor(g);
}

// ---- admission ---------------------------------------------------------------------

void BatchScheduler::Impl::admit() {
  for (auto it = queue.begin(); it != queue.end();) {
    if (int64_t(running.size()) >= opt.max_running) break;
    Request& r = **it;
    if (r.g->leader_prefilling) {  // a sibling is prefilling this very prompt: wait for it
      ++it;
      continue;
    }
    if (!try_admit(r)) break;  // arrival order: nothing overtakes a request that does not fit
    running.push_back(std::move(*it));
    it = queue.erase(it);
  }
}

bool BatchScheduler::Impl::try_admit(Request& r) {
  Group& g = *r.g;
  const std::span<const int32_t> prompt(g.prompt);
  const int64_t n = r.prompt_len();
  // The longest computed prompt prefix anywhere: running sequences (their prompt
  // positions only: generated ones came from the decode path), anchors, the prefix cache.
  SeqId source = -1;
  int64_t common = 0;
  bool from_prefix = false;
  for (const auto& q : running) {
    if (q->done) continue;
    const int64_t valid = std::min(cache.length(q->seq), q->g->expanded_end);
    const int64_t c = common_prefix(prompt, std::span<const int32_t>(q->g->prompt).first(size_t(valid)));
    if (c > common) source = q->seq, common = c, from_prefix = false;
  }
  for (const auto& a : anchored) {
    const int64_t c = std::min(common_prefix(prompt, a->prompt), a->expanded_end);
    if (c > common) source = a->anchor, common = c, from_prefix = false;
  }
  const PrefixCache::Match m = prefix.longest_prefix(prompt);
  if (m.common > common) source = m.seq, common = m.common, from_prefix = true;
  common = std::min(common, g.expanded_end);
  // At least the last prompt token runs (its logits start generation). Sharing a few
  // tokens of a page is not worth a fork unless that is all the prompt has.
  const int64_t shared = std::min(common, n - 1);
  const bool fork = source >= 0 && shared >= 1 && shared >= std::min(cache.page_tokens(), n - 1);

  r.seq = fork ? cache.fork(source, shared) : cache.add_sequence();
  // Room comes from the prefix cache and anchors (oldest first), but only when dropping
  // them all would be enough: otherwise the request waits and they stay.
  bool fits = demand(&r) <= budget_pages;
  if (!fits && demand(&r) - reclaimable_pages() <= budget_pages) {
    while (demand(&r) > budget_pages && evict_one()) {
    }
    fits = demand(&r) <= budget_pages;
  }
  if (!fits) {
    cache.remove_sequence(r.seq);
    r.seq = -1;
    return false;
  }
  if (fork && from_prefix) prefix.touch(source);
  r.prefilling = true;
  r.stream.admitted(fork ? shared : 0);
  if (--g.queued == 0) drop_anchor(g);
  if (g.queued > 0 && (fork ? shared : 0) < n - 1) {  // siblings will fork this one's prompt
    r.leader = true;
    g.leader_prefilling = true;
  }
  std::lock_guard lock(mu);
  counters.shared_prefix_tokens += fork ? shared : 0;
  return true;
}

// ---- ending requests ---------------------------------------------------------------

void BatchScheduler::Impl::finish(Request& r, StopReason stop, const std::string& error, bool keep_prompt) {
  if (r.done) return;
  r.done = true;
  Group& g = *r.g;
  if (r.leader) {
    r.leader = false;
    g.leader_prefilling = false;
  }
  if (r.seq >= 0) {
    if (keep_prompt) {
      const int64_t valid = std::min(cache.length(r.seq), g.expanded_end);
      if (valid >= 2) prefix.retain(r.seq, std::span<const int32_t>(g.prompt).first(size_t(valid)));
    }
    cache.remove_sequence(r.seq);
    r.seq = -1;
  } else if (--g.queued == 0) {  // never admitted
    drop_anchor(g);
  }
  GenerationResult result = r.stream.finish(stop);
  {
    std::lock_guard lock(mu);
    ++counters.finished;
  }
  if (g.callbacks.on_done) {
    try {
      g.callbacks.on_done(r.id, result, error);
    } catch (...) {
      // The request is over; a failing observer cannot be told anything more.
    }
  }
}

void BatchScheduler::Impl::take_inbox() {
  std::vector<std::unique_ptr<Request>> fresh;
  std::vector<RequestId> cancel_ids;
  {
    std::lock_guard lock(mu);
    fresh.swap(inbox);
    cancel_ids.swap(cancels);
  }
  for (auto& r : fresh) queue.push_back(std::move(r));
  if (!cancel_ids.empty()) apply_cancels(cancel_ids);
}

void BatchScheduler::Impl::apply_cancels(const std::vector<RequestId>& ids) {
  for (RequestId id : ids) {
    for (auto it = queue.begin(); it != queue.end(); ++it)
      if ((*it)->id == id) {
        std::unique_ptr<Request> r = std::move(*it);
        queue.erase(it);
        finish(*r, StopReason::kCancelled);
        break;
      }
    for (auto& r : running)
      if (r->id == id) finish(*r, StopReason::kCancelled);
  }
  std::erase_if(running, [](const std::unique_ptr<Request>& r) { return r->done; });
}

// ---- one step ----------------------------------------------------------------------

void BatchScheduler::Impl::sample(Request& r, const SampledToken& picked) {
  std::string text;
  std::optional<StopReason> stop;
  const int32_t token = picked.token;
  if (picked.error) {
    finish(r, StopReason::kCancelled, "sampling failed: " + *picked.error);
    return;
  }
  try {
    stop = r.stream.push(token, cache.length(r.seq), context, text);
  } catch (const std::exception& e) {
    finish(r, StopReason::kCancelled, std::string("sampling failed: ") + e.what());
    return;
  }
  {
    std::lock_guard lock(mu);
    ++counters.decoded_tokens;
  }
  if (r.g->callbacks.on_token) {
    try {
      r.g->callbacks.on_token(r.id, token, text);
    } catch (const std::exception& e) {
      finish(r, StopReason::kCancelled, std::string("on_token failed: ") + e.what());
      return;
    } catch (...) {
      finish(r, StopReason::kCancelled, "on_token failed");
      return;
    }
  }
  if (stop) finish(r, *stop);
  else r.next = token;
}

void BatchScheduler::Impl::run_batch() {
  // Every decoding sequence gets its token; prompt chunks share what room is left, in
  // admission order. A prompt position's attention path depends on the position alone
  // (expanded below prefill_positions, absorbed beyond, absorbed for every generated
  // token), never on how the prompt was cut into chunks: see the header's determinism.
  std::vector<SequenceChunk> chunks;
  std::vector<Request*> owners;
  int64_t decoding = 0;
  for (const auto& r : running) decoding += !r->prefilling;
  const int64_t step_rows = opt.step_tokens > 0 ? opt.step_tokens : opt.prefill_chunk + opt.max_running;
  int64_t room = std::max<int64_t>(1, step_rows - decoding), prompt_rows = 0;
  for (const auto& r : running) {
    if (!r->prefilling) {
      chunks.push_back({r->seq, std::span<const int32_t>(&r->next, 1), AttentionPath::kDecode});
      owners.push_back(r.get());
      continue;
    }
    if (room == 0) continue;
    const int64_t pos = cache.length(r->seq);
    int64_t take = std::min({r->prompt_len() - pos, opt.prefill_chunk, room});
    const int64_t edge = std::min(prefill_positions, r->g->expanded_end);
    if (pos < edge && pos + take > edge) take = edge - pos;
    room -= take;
    prompt_rows += take;
    chunks.push_back({r->seq, std::span<const int32_t>(r->g->prompt).subspan(size_t(pos), size_t(take)),
                      pos < edge ? AttentionPath::kPrefill : AttentionPath::kDecode});
    owners.push_back(r.get());
  }
  if (chunks.empty()) return;

  const int64_t V = model.config().vocab_size;
  logits.resize(chunks.size() * size_t(V));
  try {
    forward.step(cache, chunks, logits.data(), AttentionPath::kAuto, /*last_only=*/true);
  } catch (const std::exception& e) {
    // The step's positions may be half written: end its requests without keeping them.
    for (Request* r : owners) finish(*r, StopReason::kCancelled, std::string("forward pass failed: ") + e.what(), false);
    std::erase_if(running, [](const std::unique_ptr<Request>& r) { return r->done; });
    return;
  }
  {
    std::lock_guard lock(mu);
    counters.prefilled_tokens += prompt_rows;
  }
  std::vector<size_t> ready;  // owners whose prompt is done: each samples a token
  for (size_t i = 0; i < owners.size(); ++i) {
    Request& r = *owners[i];
    if (r.prefilling) {
      if (cache.length(r.seq) < r.prompt_len()) continue;
      r.prefilling = false;
      if (r.leader) {
        r.leader = false;
        r.g->leader_prefilling = false;
        make_anchor(r);
      }
    }
    ready.push_back(i);
  }
  // Every request has its own sampler, so the picks run side by side on the pool (up to
  // a millisecond each over a 129K vocabulary); what follows a pick (stop strings,
  // callbacks) stays in order on this thread.
  std::vector<SampledToken> picked(ready.size());
  pool.parallel_for(int64_t(ready.size()), [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const size_t i = ready[size_t(k)];
      try {
        picked[size_t(k)].token =
            owners[i]->sampler.sample(std::span<const float>(logits.data() + i * size_t(V), size_t(V)));
      } catch (const std::exception& e) {
        picked[size_t(k)].error = std::string(e.what());
      }
    }
  });
  for (size_t k = 0; k < ready.size(); ++k) sample(*owners[ready[k]], picked[k]);
  std::erase_if(running, [](const std::unique_ptr<Request>& r) { return r->done; });
}

void BatchScheduler::Impl::publish_stats(double busy) {
  std::lock_guard lock(mu);
  counters.queued = int64_t(queue.size());
  counters.running = int64_t(running.size());
  counters.kv_pages_used = cache.pages_in_use();
  counters.kv_pages_budget = budget_pages;
  counters.busy_seconds += busy;
  has_work = !queue.empty() || !running.empty();
}

// ---- public ------------------------------------------------------------------------

BatchScheduler::BatchScheduler(const Model& model, const Tokenizer& tokenizer, const BatchOptions& options)
    : impl_(std::make_unique<Impl>(model, tokenizer, options)) {}

BatchScheduler::~BatchScheduler() {
  stop();
  Impl& s = *impl_;
  std::lock_guard step_lock(s.step_mu);
  s.take_inbox();
  while (!s.queue.empty()) {
    std::unique_ptr<Impl::Request> r = std::move(s.queue.front());
    s.queue.pop_front();
    s.finish(*r, StopReason::kCancelled, {}, false);
  }
  for (auto& r : s.running) s.finish(*r, StopReason::kCancelled, {}, false);
  s.running.clear();
}

std::vector<RequestId> BatchScheduler::submit(std::vector<int32_t> prompt, const GenerateRequest& request, int n,
                                              RequestCallbacks callbacks, int64_t generated_from) {
  Impl& s = *impl_;
  if (n < 1) throw std::invalid_argument("the number of samples must be at least 1, got " + std::to_string(n));
  validate_generation(prompt, request, s.context, s.model.config().vocab_size);
  const int64_t len = int64_t(prompt.size());
  if (generated_from > len)
    throw std::invalid_argument("generated_from " + std::to_string(generated_from) + " is past the prompt's " +
                                std::to_string(len) + " tokens");
  // The last sampled token is never fed back: the cache holds at most prompt + max_tokens - 1.
  const int64_t max_len = std::min(len + request.max_tokens - 1, s.context);
  const int64_t pages = ceil_div(max_len, s.cache.page_tokens());
  if (pages > s.budget_pages)
    throw std::invalid_argument("the request needs up to " + std::to_string(pages) + " KV pages (" + std::to_string(max_len) +
                                " positions) but the KV budget holds only " + std::to_string(s.budget_pages) +
                                "; lower max_tokens or raise the budget");

  auto group = std::make_shared<Impl::Group>();
  group->prompt = std::move(prompt);
  group->expanded_end = generated_from >= 0 ? generated_from : len;
  group->request = request;
  group->callbacks = std::move(callbacks);
  group->queued = n;
  std::vector<std::unique_ptr<Impl::Request>> fresh;
  std::vector<RequestId> ids;
  std::lock_guard lock(s.mu);
  for (int i = 0; i < n; ++i) {
    fresh.push_back(std::make_unique<Impl::Request>(s.next_id, i, group, s.tok, max_len));
    ids.push_back(s.next_id++);
  }
  for (auto& r : fresh) s.inbox.push_back(std::move(r));
  s.counters.prompt_tokens += int64_t(n) * len;
  s.cv.notify_all();
  return ids;
}

void BatchScheduler::cancel(RequestId id) {
  Impl& s = *impl_;
  std::lock_guard lock(s.mu);
  s.cancels.push_back(id);
  s.cv.notify_all();
}

bool BatchScheduler::step() {
  Impl& s = *impl_;
  std::lock_guard step_lock(s.step_mu);
  const Clock::time_point t0 = Clock::now();
  s.take_inbox();
  if (s.queue.empty() && s.running.empty()) {
    s.publish_stats(0);
    return false;
  }
  bool ran = false;
  try {
    s.admit();
    ran = !s.running.empty();
    if (ran) {
      s.run_batch();
      std::lock_guard lock(s.mu);
      ++s.counters.steps;
    }
  } catch (const std::exception& e) {
    // Not the forward pass (run_batch handles that): something unexpected, such as memory
    // running out. End what runs so the scheduler stays usable; the queue waits.
    for (auto& r : s.running) s.finish(*r, StopReason::kCancelled, std::string("scheduler step failed: ") + e.what(), false);
    s.running.clear();
  }
  s.publish_stats(std::chrono::duration<double>(Clock::now() - t0).count());
  // Nothing runs and nothing could be admitted: stepping again would change nothing.
  return ran;
}

void BatchScheduler::run_until_idle() {
  while (step()) {
  }
}

void BatchScheduler::start() {
  Impl& s = *impl_;
  std::lock_guard lock(s.mu);
  if (s.worker.joinable()) return;
  s.stopping = false;
  s.worker = std::thread([this] {
    Impl& w = *impl_;
    for (;;) {
      {
        std::unique_lock lock(w.mu);
        w.cv.wait(lock, [&] { return w.stopping || !w.inbox.empty() || !w.cancels.empty() || w.has_work; });
        if (w.stopping) return;
      }
      if (!step()) {
        std::lock_guard lock(w.mu);
        w.has_work = false;  // stuck or idle: wait for a submit or cancel
      }
    }
  });
}

void BatchScheduler::stop() {
  Impl& s = *impl_;
  std::thread worker;
  {
    std::lock_guard lock(s.mu);
    s.stopping = true;
    worker.swap(s.worker);
  }
  s.cv.notify_all();
  if (worker.joinable()) worker.join();
  std::lock_guard lock(s.mu);
  s.stopping = false;
}

SchedulerStats BatchScheduler::stats() const {
  Impl& s = *impl_;
  std::lock_guard lock(s.mu);
  SchedulerStats st = s.counters;
  st.queued += int64_t(s.inbox.size());
  return st;
}

const Model& BatchScheduler::model() const { return impl_->model; }
const Tokenizer& BatchScheduler::tokenizer() const { return impl_->tok; }
int64_t BatchScheduler::context() const { return impl_->context; }

}  // namespace hearth

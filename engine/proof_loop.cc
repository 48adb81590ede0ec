#include "engine/proof_loop.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <stdexcept>
#include <unordered_map>

#include "engine/proof_parse.h"

namespace hearth {

namespace {

namespace fs = std::filesystem;

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::string gen_id(int round, int i) { return "r" + std::to_string(round) + ".g" + std::to_string(i); }
std::string verify_id(const std::string& proof, int j) { return proof + ".v" + std::to_string(j); }
std::string meta_id(const std::string& verification) { return verification + ".m"; }

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string score_text(std::optional<double> s) { return s ? fixed(*s, 3) : "-"; }

}  // namespace

void ProofLoopOptions::validate() const {
  if (samples < 1 || samples > 100000) throw std::invalid_argument("samples must be between 1 and 100000");
  if (verifications < 1 || verifications > 10000) throw std::invalid_argument("verifications must be between 1 and 10000");
  if (rounds < 1 || rounds > 10000) throw std::invalid_argument("rounds must be between 1 and 10000");
  if (max_tokens < 1) throw std::invalid_argument("max-tokens must be at least 1");
  if (refine_best < 1) throw std::invalid_argument("refine-best must be at least 1");
  if (!(journal_interval >= 0)) throw std::invalid_argument("journal interval must be >= 0");
  if (stop_after_samples < 0) throw std::invalid_argument("stop-after-samples must be >= 0");
  if (stop_after_tokens < 0) throw std::invalid_argument("stop-after-tokens must be >= 0");
  SamplingParams p;
  p.temperature = temperature;
  p.top_p = top_p;
  p.validate();
}

uint64_t proof_sample_seed(uint64_t base, int round, SampleKind kind, int group, int index) {
  uint64_t h = splitmix64(base);
  h = splitmix64(h ^ uint64_t(uint32_t(round)));
  h = splitmix64(h ^ (uint64_t(kind) + 1) * 0x1000193ull);
  h = splitmix64(h ^ uint64_t(uint32_t(group)));
  return h + uint64_t(index);
}

struct ProofLoop::Impl {
  SampleRunner& runner;
  ProofTemplates templates;
  std::string problem;
  ProofLoopOptions opt;
  fs::path dir;
  WarnFn warn;
  std::unique_ptr<ProofPool> pool;
  fs::path journal_file;
  Journal journal;  // partial samples not running now (loaded, or cancelled by an interrupt)
  int32_t eos = -1;

  // One run.
  struct Running {
    PoolRecord skeleton;   // what the record will say besides the outputs
    double prior_seconds;  // journaled time from earlier runs
    double started;        // when it was queued in this run
    int state = 0;         // 0 running, 1 finished, 2 ended unfinished
  };
  std::vector<SampleJob>* jobs = nullptr;
  std::vector<Running> running;  // parallel to *jobs
  const std::atomic<bool>* stop_ext = nullptr;
  bool stop_now = false;
  std::string failure;
  double last_journal = 0, last_progress = 0, run_start = 0;
  bool journal_dirty = false;
  ProofLoopResult result;
  ProgressFn progress;
  int round = 0;
  int64_t round_done = 0, round_known = 0, gens_pending = 0, gens_with_proof = 0, metas_known = 0;
  int64_t finished_tokens = 0;  // tokens of the samples finished in this run (for the ETA)

  Impl(SampleRunner& r, ProofTemplates t, std::string p, ProofLoopOptions o, fs::path d, WarnFn w)
      : runner(r), templates(std::move(t)), problem(std::move(p)), opt(o), dir(std::move(d)), warn(std::move(w)) {}

  void say(const std::string& msg) {
    if (warn) warn(msg);
  }

  SamplingParams sampling(uint64_t seed) const {
    SamplingParams s;
    s.temperature = opt.temperature;
    s.top_p = opt.top_p;
    s.seed = seed;
    return s;
  }

  PoolRecord skeleton(int r, SampleKind kind, int index, std::string id, std::string parent, uint64_t seed,
                      const std::vector<int32_t>& prompt) const {
    PoolRecord rec;
    rec.id = std::move(id);
    rec.round = r;
    rec.kind = kind;
    rec.index = index;
    rec.parent = std::move(parent);
    rec.seed = seed;
    rec.prompt_hash = prompt_hash(prompt);
    return rec;
  }

  // Queues a sample, or takes it from the pool (and queues what follows from it), or
  // finishes it from a journal entry that already holds all of it.
  void visit(PoolRecord skel, const std::vector<int32_t>& prompt, std::vector<SampleJob>& out) {
    ++round_known;
    if (skel.kind == SampleKind::kMeta) ++metas_known;
    if (const PoolRecord* rec = pool->find(skel.id)) {
      // A journal entry can outlive its sample by a moment (the run stopped between the
      // pool append and the next journal write): the pool's record wins.
      if (journal.erase(skel.id)) journal_dirty = true;
      ++result.samples_from_pool;
      counted_finished(*rec);
      for (auto& [next, ids] : followups(*rec)) visit(std::move(next), ids, out);
      return;
    }
    SampleJob job;
    job.id = skel.id;
    job.prompt = prompt;
    job.request.sampling = sampling(skel.seed);
    job.request.max_tokens = opt.max_tokens;
    double prior = 0;
    if (auto it = journal.find(skel.id); it != journal.end()) {
      if (it->second.prompt_hash != skel.prompt_hash) {
        say("journal: sample '" + skel.id + "' was journaled for another prompt; starting it over");
      } else if (!it->second.tokens.empty()) {
        job.generated = it->second.tokens;
        prior = it->second.seconds;
        ++result.samples_resumed;
      }
      journal.erase(it);
      journal_dirty = true;
    }
    out.push_back(std::move(job));
    running.push_back({std::move(skel), prior, now_seconds(), 0});
    SampleJob& j = out.back();
    // A journal entry may hold a whole sample (the run stopped between its last token and
    // its record): finish it here, the runner has nothing left to do.
    const bool ended_eos = !j.generated.empty() && j.generated.back() == eos;
    if (ended_eos || int64_t(j.generated.size()) >= opt.max_tokens) {
      j.stop = ended_eos ? StopReason::kEos : StopReason::kMaxTokens;
      const PoolRecord rec = finish(j, running.back());
      // The sample never goes to the runner (both were just pushed: they are the last).
      out.pop_back();
      running.pop_back();
      for (auto& [n, ids] : followups(rec)) visit(std::move(n), ids, out);
    }
  }

  void counted_finished(const PoolRecord& rec) {
    ++round_done;
    if (rec.kind == SampleKind::kGeneration) {
      --gens_pending;
      if (!rec.proof.empty()) ++gens_with_proof;
    }
  }

  // The samples that follow from a finished one, with their prompts.
  std::vector<std::pair<PoolRecord, std::vector<int32_t>>> followups(const PoolRecord& rec) {
    std::vector<std::pair<PoolRecord, std::vector<int32_t>>> out;
    if (rec.kind == SampleKind::kGeneration && !rec.proof.empty()) {
      const std::vector<int32_t> ids = runner.encode_prompt(verification_prompt(templates, problem, rec.proof), opt.thinking);
      for (int j = 0; j < opt.verifications; ++j)
        out.emplace_back(skeleton(rec.round, SampleKind::kVerification, j, verify_id(rec.id, j), rec.id,
                                  proof_sample_seed(opt.seed, rec.round, SampleKind::kVerification, rec.index, j), ids),
                         ids);
    } else if (rec.kind == SampleKind::kVerification && opt.meta_verify && rec.score && *rec.score < 1) {
      const PoolRecord* proof = pool->find(rec.parent);
      if (!proof) throw std::runtime_error(pool->file().string() + ": verification '" + rec.id + "' has no proof '" + rec.parent + "'");
      const std::string analysis = parse_rating(rec.text, opt.thinking).analysis;
      const std::vector<int32_t> ids = runner.encode_prompt(
          meta_verification_prompt(templates, problem, proof->proof, analysis, rec.score), opt.thinking);
      const int group = proof->index * opt.verifications + rec.index;
      out.emplace_back(skeleton(rec.round, SampleKind::kMeta, 0, meta_id(rec.id), rec.id,
                                proof_sample_seed(opt.seed, rec.round, SampleKind::kMeta, group, 0), ids),
                       ids);
    }
    return out;
  }

  // The record of a finished job, appended to the pool.
  PoolRecord finish(const SampleJob& job, Running& r) {
    PoolRecord rec = r.skeleton;
    std::vector<int32_t> text_ids = job.generated;
    if (job.stop == StopReason::kEos && !text_ids.empty() && text_ids.back() == eos) text_ids.pop_back();
    rec.text = valid_utf8(runner.decode(text_ids));
    rec.tokens = int64_t(job.generated.size());
    rec.seconds = r.prior_seconds + job.seconds;
    rec.stop = stop_reason_name(job.stop);
    switch (rec.kind) {
      case SampleKind::kGeneration: {
        const ParsedProof p = parse_proof(rec.text, opt.thinking);
        rec.proof = p.sections.solution;
        rec.score = p.self_score;
        break;
      }
      case SampleKind::kVerification:
        rec.score = parse_rating(rec.text, opt.thinking).score;
        break;
      case SampleKind::kMeta:
        rec.score = boxed_score(proof_answer(rec.text, opt.thinking));
        break;
    }
    pool->append(rec);
    r.state = 1;
    journal_dirty = true;
    ++result.samples_finished;
    finished_tokens += rec.tokens;
    counted_finished(rec);
    if (opt.stop_after_samples > 0 && result.samples_finished >= opt.stop_after_samples) stop_now = true;
    return rec;
  }

  bool should_stop() {
    if (stop_ext && stop_ext->load()) stop_now = true;
    return stop_now;
  }

  void save(bool force) {
    const double t = now_seconds();
    if (!force && (!journal_dirty || t - last_journal < opt.journal_interval)) return;
    Journal all = journal;
    if (jobs)
      for (size_t i = 0; i < jobs->size(); ++i) {
        const SampleJob& j = (*jobs)[i];
        if (running[i].state == 1 || j.generated.empty()) continue;
        all[j.id] = {running[i].skeleton.prompt_hash, j.generated, running[i].prior_seconds + (t - running[i].started)};
      }
    save_journal(journal_file, all);
    last_journal = t;
    journal_dirty = false;
  }

  void report(bool force) {
    if (!progress) return;
    const double t = now_seconds();
    if (!force && t - last_progress < 1.0) return;
    last_progress = t;
    ProofProgress p;
    p.round = round;
    p.rounds = opt.rounds;
    int64_t by_kind[3] = {0, 0, 0};
    if (jobs)
      for (size_t i = 0; i < jobs->size(); ++i)
        if (running[i].state == 0) ++by_kind[int(running[i].skeleton.kind)], ++p.running;
    const char* names[3] = {"generate", "verify", "meta-verify"};
    for (int k = 0; k < 3; ++k)
      if (by_kind[k]) {
        if (!p.stage.empty()) p.stage += '+';
        p.stage += names[k];
      }
    if (p.stage.empty()) p.stage = "done";
    p.done = round_done;
    // Samples still to come: the verifications of proofs not yet written are counted as V each.
    p.total = std::max(round_known, int64_t(opt.samples) + (gens_pending + gens_with_proof) * opt.verifications + metas_known);
    p.tokens = result.tokens;
    const double elapsed = t - run_start;
    p.tokens_per_s = elapsed > 0 ? double(result.tokens) / elapsed : 0;
    if (result.samples_finished > 0 && p.tokens_per_s > 0) {
      const double per_sample = double(finished_tokens) / double(result.samples_finished);
      p.eta_s = double(p.total - p.done) * per_sample / p.tokens_per_s;
    }
    progress(p);
  }

  // Proof scores from the pool: the generations of rounds <= last_round.
  std::vector<ProofScore> scores(int last_round) const {
    std::vector<ProofScore> out;
    for (const PoolRecord& g : pool->records()) {
      if (g.kind != SampleKind::kGeneration || g.round > last_round) continue;
      ProofScore s;
      s.id = g.id;
      s.round = g.round;
      s.proof = g.proof;
      s.self_score = g.score;
      s.tokens = g.tokens;
      double sum = 0;
      int counted = 0;
      for (int j = 0; j < opt.verifications; ++j) {
        const PoolRecord* v = pool->find(verify_id(g.id, j));
        if (!v) continue;
        const PoolRecord* m = pool->find(meta_id(v->id));
        s.ratings.push_back(v->score);
        s.verdicts.push_back(m ? m->score : std::nullopt);
        if (!v->score || (m && m->score && *m->score == 0)) continue;  // no score, or judged unsound
        sum += *v->score;
        ++counted;
      }
      if (counted) s.score = sum / counted;
      out.push_back(std::move(s));
    }
    rank_proofs(out);
    return out;
  }

  std::vector<RefineAttempt> attempts(const std::vector<ProofScore>& ranked, std::vector<std::string>& ids) const {
    std::vector<RefineAttempt> out;
    for (const ProofScore& s : ranked) {
      if (s.proof.empty()) continue;
      if (int(out.size()) >= opt.refine_best) break;
      RefineAttempt a;
      a.proof = s.proof;
      a.score = s.score;
      a.ratings = s.ratings;
      // The analyses of the lowest counted ratings below 1 are the findings worth passing on.
      std::vector<std::pair<double, std::string>> low;
      for (int j = 0; j < opt.verifications; ++j) {
        const PoolRecord* v = pool->find(verify_id(s.id, j));
        if (!v || !v->score || *v->score >= 1) continue;
        const PoolRecord* m = pool->find(meta_id(v->id));
        if (m && m->score && *m->score == 0) continue;
        low.emplace_back(*v->score, parse_rating(v->text, opt.thinking).analysis);
      }
      std::stable_sort(low.begin(), low.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
      for (auto& [score, text] : low)
        if (!text.empty() && a.findings.size() < kMaxFindingsPerAttempt) a.findings.push_back(std::move(text));
      ids.push_back(s.id);
      out.push_back(std::move(a));
    }
    return out;
  }

  void run_round(int r) {
    round = r;
    round_done = round_known = gens_with_proof = metas_known = 0;
    gens_pending = opt.samples;
    std::vector<SampleJob> batch;
    running.clear();
    jobs = &batch;
    std::vector<int32_t> ids;
    std::vector<std::string> context;
    if (r == 1) {
      ids = runner.encode_prompt(generation_prompt(templates, problem), opt.thinking);
    } else {
      const std::vector<RefineAttempt> a = attempts(scores(r - 1), context);
      ids = runner.encode_prompt(refinement_prompt(templates, problem, a), opt.thinking);
    }
    for (int i = 0; i < opt.samples; ++i) {
      PoolRecord skel = skeleton(r, SampleKind::kGeneration, i, gen_id(r, i), context.empty() ? "" : context.front(),
                                 proof_sample_seed(opt.seed, r, SampleKind::kGeneration, 0, i), ids);
      skel.context = context;
      visit(std::move(skel), ids, batch);
    }
    report(true);
    SampleEvents ev;
    ev.on_token = [&](size_t, int32_t) {
      ++result.tokens;
      if (opt.stop_after_tokens > 0 && result.tokens >= opt.stop_after_tokens) stop_now = true;
      journal_dirty = true;
      save(false);
      report(false);
    };
    ev.on_done = [&](size_t i) -> std::vector<SampleJob> {
      std::vector<SampleJob> next;
      SampleJob& job = batch[i];
      if (!job.error.empty()) {
        running[i].state = 2;
        if (failure.empty()) failure = "sample '" + job.id + "' failed: " + job.error;
        stop_now = true;
        return next;
      }
      if (job.stop == StopReason::kCancelled) {
        running[i].state = 2;
        return next;
      }
      const PoolRecord rec = finish(job, running[i]);
      if (!stop_now) {
        // visit() appends to `next`; their Running entries go after the batch's, in order.
        for (auto& [n, prompt] : followups(rec)) visit(std::move(n), prompt, next);
      }
      save(false);
      report(true);
      return next;
    };
    // visit() pushes Running entries for jobs it puts in `next`; the runner appends those
    // jobs to the batch in the same order, so the two vectors stay parallel.
    // The batch dies with this frame: whatever happens, save() must not look at it after.
    struct Detach {
      Impl& m;
      ~Detach() { m.jobs = nullptr; }
    } detach{*this};
    if (!batch.empty() && !should_stop()) runner.run(batch, ev, [&] { return should_stop(); });
    for (size_t i = 0; i < batch.size(); ++i)
      if (running[i].state != 1 && !batch[i].generated.empty())
        journal[batch[i].id] = {running[i].skeleton.prompt_hash, batch[i].generated,
                                running[i].prior_seconds + batch[i].seconds};
    jobs = nullptr;
    running.clear();
    journal_dirty = true;
    save(true);
    if (!failure.empty()) throw std::runtime_error(failure);
  }
};

ProofLoop::ProofLoop(SampleRunner& runner, ProofTemplates templates, std::string problem, ProofLoopOptions options,
                     std::filesystem::path out_dir, WarnFn warn)
    : impl_(std::make_unique<Impl>(runner, std::move(templates), std::move(problem), options, std::move(out_dir),
                                   std::move(warn))) {
  Impl& m = *impl_;
  try {
    m.opt.validate();
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("proof loop: ") + e.what());
  }
  if (m.problem.find_first_not_of(" \t\r\n") == std::string::npos) throw std::invalid_argument("proof loop: the problem is empty");
  m.templates.validate();
  m.eos = runner.eos_id();
  m.pool = std::make_unique<ProofPool>(m.dir / "pool.jsonl", m.warn);
  m.journal_file = m.dir / "journal.json";
  m.journal = load_journal(m.journal_file, m.warn);
}

ProofLoop::~ProofLoop() = default;

ProofLoopResult ProofLoop::run(const std::atomic<bool>* stop, const ProgressFn& progress) {
  Impl& m = *impl_;
  m.result = {};
  m.stop_ext = stop;
  m.stop_now = false;
  m.failure.clear();
  m.progress = progress;
  m.run_start = m.last_journal = m.last_progress = now_seconds();
  m.finished_tokens = 0;
  m.result.end = ProofLoopResult::End::kRoundsDone;
  for (int r = 1; r <= m.opt.rounds; ++r) {
    m.result.rounds_run = r;
    m.run_round(r);
    if (m.should_stop()) {
      m.result.end = ProofLoopResult::End::kInterrupted;
      break;
    }
    const std::vector<ProofScore> ranked = m.scores(r);
    if (!ranked.empty() && ranked.front().score && *ranked.front().score == 1) {
      m.result.end = ProofLoopResult::End::kSolved;
      break;
    }
  }
  m.result.proofs = m.scores(m.result.rounds_run);
  m.result.seconds = now_seconds() - m.run_start;
  if (m.result.end != ProofLoopResult::End::kInterrupted) {
    write_best_proof(m.dir / "best.md", m.problem, m.result);
    write_proof_summary_json(m.dir / "summary.json", m.result);
  }
  return m.result;
}

void rank_proofs(std::vector<ProofScore>& proofs) {
  const auto key = [](const std::optional<double>& s) { return s ? *s : -1.0; };
  std::stable_sort(proofs.begin(), proofs.end(), [&](const ProofScore& a, const ProofScore& b) {
    if (key(a.score) != key(b.score)) return key(a.score) > key(b.score);
    if (key(a.self_score) != key(b.self_score)) return key(a.self_score) > key(b.self_score);
    if (a.round != b.round) return a.round < b.round;
    return a.id < b.id;
  });
}

std::string proof_summary_table(const ProofLoopResult& res, size_t max_rows) {
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "%-12s %5s %6s %5s %7s  %s\n", "proof", "round", "score", "self", "tokens", "ratings");
  out += line;
  for (size_t i = 0; i < res.proofs.size() && i < max_rows; ++i) {
    const ProofScore& p = res.proofs[i];
    std::string ratings;
    for (size_t j = 0; j < p.ratings.size(); ++j) {
      if (j) ratings += ' ';
      ratings += format_score(p.ratings[j]);
      if (j < p.verdicts.size() && p.verdicts[j] && *p.verdicts[j] == 0) ratings += "(unsound)";
    }
    if (p.proof.empty()) ratings = "(no proof written)";
    std::snprintf(line, sizeof line, "%-12s %5d %6s %5s %7lld  %s\n", p.id.c_str(), p.round, score_text(p.score).c_str(),
                  format_score(p.self_score).c_str(), (long long)p.tokens, ratings.c_str());
    out += line;
  }
  if (res.proofs.size() > max_rows) out += "... " + std::to_string(res.proofs.size() - max_rows) + " more in summary.json\n";
  const char* end = res.end == ProofLoopResult::End::kSolved       ? "solved (a proof scored 1)"
                    : res.end == ProofLoopResult::End::kRoundsDone ? "all rounds done"
                                                                   : "interrupted";
  out += std::string(end) + " after " + std::to_string(res.rounds_run) + " round(s); " +
         std::to_string(res.samples_finished) + " samples finished in this run (" + std::to_string(res.samples_resumed) +
         " resumed from the journal), " + std::to_string(res.samples_from_pool) + " taken from the pool; " +
         std::to_string(res.tokens) + " tokens in " + fixed(res.seconds, 1) + " s\n";
  return out;
}

namespace {

void write_file_atomically(const fs::path& file, const std::string& text) {
  fs::path tmp = file;
  tmp += ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw std::runtime_error("cannot write '" + tmp.string() + "'");
    f << text;
    if (!f.flush()) throw std::runtime_error("cannot write '" + tmp.string() + "'");
  }
  fs::rename(tmp, file);
}

nlohmann::json score_json(std::optional<double> s) { return s ? nlohmann::json(*s) : nlohmann::json(nullptr); }

}  // namespace

const char* proof_loop_end_name(ProofLoopResult::End e) {
  switch (e) {
    case ProofLoopResult::End::kSolved: return "solved";
    case ProofLoopResult::End::kRoundsDone: return "rounds_done";
    case ProofLoopResult::End::kInterrupted: return "interrupted";
  }
  return "?";
}

void write_proof_summary_json(const std::filesystem::path& file, const ProofLoopResult& res) {
  nlohmann::json proofs = nlohmann::json::array();
  for (const ProofScore& p : res.proofs) {
    nlohmann::json ratings = nlohmann::json::array(), verdicts = nlohmann::json::array();
    for (const auto& r : p.ratings) ratings.push_back(score_json(r));
    for (const auto& v : p.verdicts) verdicts.push_back(score_json(v));
    proofs.push_back({{"id", p.id}, {"round", p.round}, {"score", score_json(p.score)},
                      {"self_score", score_json(p.self_score)}, {"ratings", ratings}, {"verdicts", verdicts},
                      {"tokens", p.tokens}, {"has_proof", !p.proof.empty()}});
  }
  const nlohmann::json j = {{"end", proof_loop_end_name(res.end)}, {"rounds_run", res.rounds_run}, {"proofs", proofs}};
  write_file_atomically(file, j.dump(2) + "\n");
}

void write_best_proof(const std::filesystem::path& file, const std::string& problem, const ProofLoopResult& res) {
  std::string md = "# Best proof\n\n## Problem\n\n" + problem + "\n\n";
  const ProofScore* best = nullptr;
  for (const ProofScore& p : res.proofs)
    if (!p.proof.empty()) {
      best = &p;
      break;
    }
  if (!best) {
    md += "No sample wrote a proof (a Solution section after the reasoning).\n";
  } else {
    std::string ratings;
    for (size_t j = 0; j < best->ratings.size(); ++j) {
      if (j) ratings += ", ";
      ratings += format_score(best->ratings[j]);
    }
    md += "Proof `" + best->id + "` (round " + std::to_string(best->round) + "): mean score " + score_text(best->score) +
          " from " + std::to_string(best->ratings.size()) + " rating(s)" + (ratings.empty() ? std::string() : " (" + ratings + ")") +
          "; self-evaluation " + format_score(best->self_score) + ".\n\n## Solution\n\n" + best->proof + "\n";
  }
  write_file_atomically(file, md);
}

}  // namespace hearth

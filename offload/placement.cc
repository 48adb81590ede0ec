#include "offload/placement.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <regex>
#include <sstream>
#include <stdexcept>

#include "offload/byte_size.h"

namespace hearth {

namespace {

constexpr TensorKind kAllKinds[kTensorKindCount] = {
    TensorKind::kKvCache,   TensorKind::kAttention, TensorKind::kSharedExpert, TensorKind::kDenseMlp,
    TensorKind::kEmbedding, TensorKind::kHead,      TensorKind::kRouter,       TensorKind::kRoutedExpert};

constexpr const char* kProfileFormat = "hearth-expert-profile";

}  // namespace

std::string_view tensor_kind_name(TensorKind k) {
  switch (k) {
    case TensorKind::kKvCache: return "KV cache";
    case TensorKind::kAttention: return "attention";
    case TensorKind::kSharedExpert: return "shared experts";
    case TensorKind::kDenseMlp: return "dense MLP";
    case TensorKind::kEmbedding: return "embeddings";
    case TensorKind::kHead: return "head";
    case TensorKind::kRouter: return "router";
    case TensorKind::kRoutedExpert: return "routed experts";
  }
  return "?";
}

std::string_view tensor_kind_key(TensorKind k) {
  switch (k) {
    case TensorKind::kKvCache: return "kv_cache";
    case TensorKind::kAttention: return "attention";
    case TensorKind::kSharedExpert: return "shared_experts";
    case TensorKind::kDenseMlp: return "dense_mlp";
    case TensorKind::kEmbedding: return "embeddings";
    case TensorKind::kHead: return "head";
    case TensorKind::kRouter: return "router";
    case TensorKind::kRoutedExpert: return "routed_experts";
  }
  return "?";
}

std::string_view where_name(Where w) { return w == Where::kGpu ? "gpu" : "cpu"; }

// ---------------------------------------------------------------------------------------
// Expert profiles

double ExpertProfile::at(int64_t layer, int64_t expert) const {
  if (layer < 0 || expert < 0 || size_t(layer) >= freq.size() || size_t(expert) >= freq[size_t(layer)].size()) return 0;
  return freq[size_t(layer)][size_t(expert)];
}

nlohmann::json ExpertProfile::to_json() const {
  return {{"format", kProfileFormat},
          {"version", 1},
          {"tokens", tokens},
          {"experts_per_tok", experts_per_tok},
          {"freq", freq}};
}

ExpertProfile ExpertProfile::from_json(const nlohmann::json& j, const std::string& source) {
  auto fail = [&](const std::string& what) { return std::runtime_error("expert profile '" + source + "': " + what); };
  if (!j.is_object()) throw fail("expected a JSON object");
  if (!j.contains("format") || j["format"] != kProfileFormat)
    throw fail(std::string("\"format\" is missing or not \"") + kProfileFormat + "\"");
  if (!j.contains("version") || j["version"] != 1) throw fail("\"version\" is missing or not 1");
  ExpertProfile p;
  p.source = source;
  for (const char* key : {"tokens", "experts_per_tok"}) {
    if (!j.contains(key) || !j[key].is_number_integer() || j[key].get<int64_t>() < 0)
      throw fail(std::string("\"") + key + "\" is missing or not a non-negative integer");
  }
  p.tokens = j["tokens"].get<int64_t>();
  p.experts_per_tok = j["experts_per_tok"].get<int64_t>();
  if (!j.contains("freq") || !j["freq"].is_array()) throw fail("\"freq\" is missing or not an array of layers");
  const nlohmann::json& rows = j["freq"];
  size_t width = 0;
  for (size_t l = 0; l < rows.size(); ++l) {
    const std::string key = "freq[" + std::to_string(l) + "]";
    if (!rows[l].is_array()) throw fail(key + " is not an array of expert frequencies");
    if (!rows[l].empty()) {
      if (width && rows[l].size() != width)
        throw fail(key + " has " + std::to_string(rows[l].size()) + " experts, earlier layers " + std::to_string(width));
      width = rows[l].size();
    }
    std::vector<double> row;
    for (size_t e = 0; e < rows[l].size(); ++e) {
      const nlohmann::json& v = rows[l][e];
      const double f = v.is_number() ? v.get<double>() : -1.0;
      if (!v.is_number() || !(f >= 0.0 && f <= 1.0))
        throw fail(key + "[" + std::to_string(e) + "] is " + v.dump() + ", not a fraction of tokens in [0, 1]");
      row.push_back(f);
    }
    p.freq.push_back(std::move(row));
  }
  return p;
}

ExpertProfile ExpertProfile::load(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw std::runtime_error("cannot read expert profile '" + path + "'");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read expert profile '" + path + "'");
  std::ostringstream ss;
  ss << f.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("expert profile '" + path + "' is not valid JSON: " + e.what());
  }
  return from_json(j, path);
}

void ExpertProfile::save(const std::string& path) const {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw std::runtime_error("cannot write expert profile '" + tmp + "'");
    f << to_json().dump(1) << "\n";
    f.flush();
    if (!f) {
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      throw std::runtime_error("cannot write expert profile '" + tmp + "'");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw std::runtime_error("cannot rename '" + tmp + "' to '" + path + "'");
  }
}

// ---------------------------------------------------------------------------------------
// Overrides

PlaceOverride parse_place_override(std::string_view text) {
  const std::string s(text);
  // The target follows the last '=' (a regex may itself contain '=', e.g. a lookahead).
  const size_t eq = s.rfind('=');
  if (eq == std::string::npos)
    throw std::invalid_argument("'" + s + "' is not REGEX=gpu or REGEX=cpu (no '=')");
  PlaceOverride o;
  o.pattern = s.substr(0, eq);
  std::string target = s.substr(eq + 1);
  for (char& c : target) c = char(std::tolower(static_cast<unsigned char>(c)));
  if (o.pattern.empty()) throw std::invalid_argument("'" + s + "' has an empty regex before '='");
  if (target == "gpu") o.where = Where::kGpu;
  else if (target == "cpu") o.where = Where::kCpu;
  else throw std::invalid_argument("'" + s + "': the target '" + s.substr(eq + 1) + "' is not gpu or cpu");
  try {
    std::regex re(o.pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    throw std::invalid_argument("'" + s + "': invalid regex '" + o.pattern + "': " + e.what());
  }
  return o;
}

// ---------------------------------------------------------------------------------------
// The plan

PlacementPlan::PlacementPlan(std::vector<PlacementDecision> decisions, int64_t gpu_budget_bytes)
    : decisions_(std::move(decisions)), budget_(gpu_budget_bytes) {
  by_name_.resize(decisions_.size());
  std::iota(by_name_.begin(), by_name_.end(), size_t(0));
  std::sort(by_name_.begin(), by_name_.end(),
            [&](size_t a, size_t b) { return decisions_[a].item.name < decisions_[b].item.name; });
  for (size_t i = 1; i < by_name_.size(); ++i)
    if (decisions_[by_name_[i]].item.name == decisions_[by_name_[i - 1]].item.name)
      throw std::invalid_argument("placement item '" + decisions_[by_name_[i]].item.name + "' is listed twice");
  for (const PlacementDecision& d : decisions_) {
    if (d.item.kind != TensorKind::kRoutedExpert || d.where != Where::kGpu) continue;
    if (d.item.layer < 0 || d.item.expert < 0)
      throw std::invalid_argument("routed expert item '" + d.item.name + "' has no layer or expert number");
    if (gpu_experts_.size() <= size_t(d.item.layer)) gpu_experts_.resize(size_t(d.item.layer) + 1);
    std::vector<bool>& row = gpu_experts_[size_t(d.item.layer)];
    if (row.size() <= size_t(d.item.expert)) row.resize(size_t(d.item.expert) + 1, false);
    row[size_t(d.item.expert)] = true;
  }
}

const PlacementDecision* PlacementPlan::find(std::string_view name) const {
  const auto it = std::lower_bound(by_name_.begin(), by_name_.end(), name,
                                   [&](size_t i, std::string_view n) { return decisions_[i].item.name < n; });
  if (it == by_name_.end() || decisions_[*it].item.name != name) return nullptr;
  return &decisions_[*it];
}

bool PlacementPlan::on_gpu(std::string_view name) const {
  const PlacementDecision* d = find(name);
  return d && d->where == Where::kGpu;
}

bool PlacementPlan::expert_on_gpu(int64_t layer, int64_t expert) const {
  if (layer < 0 || expert < 0 || size_t(layer) >= gpu_experts_.size()) return false;
  const std::vector<bool>& row = gpu_experts_[size_t(layer)];
  return size_t(expert) < row.size() && row[size_t(expert)];
}

int64_t PlacementPlan::bytes(Where w) const {
  int64_t n = 0;
  for (const PlacementDecision& d : decisions_)
    if (d.where == w) n += d.item.bytes;
  return n;
}

int64_t PlacementPlan::bytes(TensorKind k, Where w) const {
  int64_t n = 0;
  for (const PlacementDecision& d : decisions_)
    if (d.where == w && d.item.kind == k) n += d.item.bytes;
  return n;
}

int64_t PlacementPlan::count(TensorKind k, Where w) const {
  int64_t n = 0;
  for (const PlacementDecision& d : decisions_)
    if (d.where == w && d.item.kind == k) ++n;
  return n;
}

std::vector<int64_t> PlacementPlan::gpu_experts_per_layer() const {
  int64_t layers = 0;
  for (const PlacementDecision& d : decisions_) layers = std::max(layers, d.item.layer + 1);
  std::vector<int64_t> out(size_t(layers), 0);
  for (const PlacementDecision& d : decisions_)
    if (d.item.kind == TensorKind::kRoutedExpert && d.where == Where::kGpu && d.item.layer >= 0) ++out[size_t(d.item.layer)];
  return out;
}

bool PlacementPlan::all_on_gpu(TensorKind k) const { return count(k, Where::kCpu) == 0; }

std::string PlacementPlan::table() const {
  std::ostringstream s;
  char line[256];
  s << "| kind | GPU items | GPU | CPU items | CPU |\n| --- | ---: | ---: | ---: | ---: |\n";
  for (TensorKind k : kAllKinds) {
    const int64_t ng = count(k, Where::kGpu), nc = count(k, Where::kCpu);
    if (ng + nc == 0) continue;
    std::snprintf(line, sizeof line, "| %s | %lld | %s | %lld | %s |\n", std::string(tensor_kind_name(k)).c_str(),
                  (long long)ng, format_bytes(double(bytes(k, Where::kGpu))).c_str(), (long long)nc,
                  format_bytes(double(bytes(k, Where::kCpu))).c_str());
    s << line;
  }
  int64_t ng = 0, nc = 0;
  for (const PlacementDecision& d : decisions_) (d.where == Where::kGpu ? ng : nc) += 1;
  std::snprintf(line, sizeof line, "| **total** | %lld | %s | %lld | %s |\n", (long long)ng,
                format_bytes(double(bytes(Where::kGpu))).c_str(), (long long)nc,
                format_bytes(double(bytes(Where::kCpu))).c_str());
  s << line;
  return s.str();
}

nlohmann::json PlacementPlan::to_json() const {
  nlohmann::json kinds = nlohmann::json::object();
  for (TensorKind k : kAllKinds) {
    if (count(k, Where::kGpu) + count(k, Where::kCpu) == 0) continue;
    kinds[std::string(tensor_kind_key(k))] = {{"gpu_bytes", bytes(k, Where::kGpu)},
                                              {"cpu_bytes", bytes(k, Where::kCpu)},
                                              {"gpu_items", count(k, Where::kGpu)},
                                              {"cpu_items", count(k, Where::kCpu)}};
  }
  nlohmann::json items = nlohmann::json::array();
  for (const PlacementDecision& d : decisions_)
    items.push_back({{"name", d.item.name},
                     {"kind", std::string(tensor_kind_key(d.item.kind))},
                     {"layer", d.item.layer},
                     {"expert", d.item.expert},
                     {"bytes", d.item.bytes},
                     {"where", std::string(where_name(d.where))},
                     {"forced", d.forced}});
  return {{"gpu_budget_bytes", budget_},
          {"gpu_bytes", bytes(Where::kGpu)},
          {"cpu_bytes", bytes(Where::kCpu)},
          {"kinds", kinds},
          {"unmatched_overrides", unmatched_overrides},
          {"items", items}};
}

// ---------------------------------------------------------------------------------------
// Planning

namespace {

// The profile must describe exactly the routed experts the items have, layer by layer.
void check_profile_shape(const ExpertProfile& p, const std::vector<PlacementItem>& items) {
  std::map<int64_t, int64_t> experts;  // layer -> experts (max id + 1)
  for (const PlacementItem& it : items)
    if (it.kind == TensorKind::kRoutedExpert) experts[it.layer] = std::max(experts[it.layer], it.expert + 1);
  const std::string src = "expert profile '" + p.source + "'";
  for (const auto& [layer, n] : experts) {
    if (size_t(layer) >= p.freq.size())
      throw std::invalid_argument(src + " has no row for layer " + std::to_string(layer) + " (freq has " +
                                  std::to_string(p.freq.size()) + " layers)");
    if (int64_t(p.freq[size_t(layer)].size()) != n)
      throw std::invalid_argument(src + ": freq[" + std::to_string(layer) + "] has " +
                                  std::to_string(p.freq[size_t(layer)].size()) + " experts, the model " +
                                  std::to_string(n));
  }
  for (size_t l = 0; l < p.freq.size(); ++l)
    if (!p.freq[l].empty() && !experts.count(int64_t(l)))
      throw std::invalid_argument(src + ": freq[" + std::to_string(l) + "] has experts, the model's layer " +
                                  std::to_string(l) + " has none");
}

}  // namespace

PlacementPlan plan_placement(const PlanRequest& req) {
  const int64_t budget = req.gpu_budget_bytes;
  if (budget < 0) throw std::invalid_argument("the GPU budget is negative (" + std::to_string(budget) + " bytes)");
  for (const PlacementItem& it : req.items)
    if (it.bytes < 0) throw std::invalid_argument("placement item '" + it.name + "' has negative bytes");
  if (req.profile) check_profile_shape(*req.profile, req.items);

  const size_t n = req.items.size();
  std::vector<PlacementDecision> d(n);
  std::vector<bool> decided(n, false);
  for (size_t i = 0; i < n; ++i) d[i].item = req.items[i];

  // Overrides first: the first one whose regex matches a name decides that item.
  std::vector<std::regex> res;
  for (const PlaceOverride& o : req.overrides) {
    try {
      res.emplace_back(o.pattern, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      throw std::invalid_argument("invalid regex '" + o.pattern + "': " + e.what());
    }
  }
  std::vector<bool> matched(req.overrides.size(), false);
  int64_t used = 0, forced_gpu = 0;
  for (size_t i = 0; i < n; ++i) {
    for (size_t o = 0; o < res.size(); ++o) {
      if (!std::regex_search(d[i].item.name, res[o])) continue;
      matched[o] = true;
      d[i].where = req.overrides[o].where;
      d[i].forced = decided[i] = true;
      if (d[i].where == Where::kGpu) {
        used += d[i].item.bytes;
        ++forced_gpu;
      }
      break;
    }
  }
  if (forced_gpu > 0 && used > budget)
    throw std::invalid_argument("the overrides to gpu place " + std::to_string(forced_gpu) + " item(s) of " +
                                format_bytes(double(used)) + " (" + std::to_string(used) +
                                " bytes) on the GPU, over the GPU budget of " + format_bytes(double(budget)) + " (" +
                                std::to_string(budget) + " bytes)");

  auto place = [&](size_t i) {
    decided[i] = true;
    if (d[i].item.bytes <= budget - used) {
      d[i].where = Where::kGpu;
      used += d[i].item.bytes;
    } else {
      d[i].where = Where::kCpu;
    }
  };
  if (budget > 0) {
    // The KV cache must be on the GPU with the attention that reads it.
    for (size_t i = 0; i < n; ++i) {
      if (decided[i] || d[i].item.kind != TensorKind::kKvCache) continue;
      if (d[i].item.bytes > budget - used)
        throw std::invalid_argument("the KV cache (" + d[i].item.name + ") needs " + format_bytes(double(d[i].item.bytes)) +
                                    " but the GPU budget is " + format_bytes(double(budget)) +
                                    (used ? " (" + format_bytes(double(budget - used)) + " left after the overrides)" : ""));
      place(i);
    }
    for (TensorKind k : {TensorKind::kAttention, TensorKind::kSharedExpert, TensorKind::kDenseMlp, TensorKind::kHead,
                         TensorKind::kRouter})
      for (size_t i = 0; i < n; ++i)
        if (!decided[i] && d[i].item.kind == k) place(i);
    // Routed experts, the most used first; ties (and no profile) by layer, then expert.
    std::vector<size_t> experts;
    for (size_t i = 0; i < n; ++i)
      if (!decided[i] && d[i].item.kind == TensorKind::kRoutedExpert) experts.push_back(i);
    auto freq = [&](size_t i) { return req.profile ? req.profile->at(d[i].item.layer, d[i].item.expert) : 0.0; };
    std::stable_sort(experts.begin(), experts.end(), [&](size_t a, size_t b) {
      if (freq(a) != freq(b)) return freq(a) > freq(b);
      if (d[a].item.layer != d[b].item.layer) return d[a].item.layer < d[b].item.layer;
      return d[a].item.expert < d[b].item.expert;
    });
    for (size_t i : experts) place(i);
  }
  // Everything not decided (the embeddings by default; all of it without a budget): CPU.
  for (size_t i = 0; i < n; ++i)
    if (!decided[i]) d[i].where = Where::kCpu;

  PlacementPlan plan(std::move(d), budget);
  for (size_t o = 0; o < req.overrides.size(); ++o)
    if (!matched[o])
      plan.unmatched_overrides.push_back(req.overrides[o].pattern + "=" + std::string(where_name(req.overrides[o].where)));
  return plan;
}

// ---------------------------------------------------------------------------------------
// Roofline

double StepEstimate::tokens_per_s() const {
  const double s = seconds();
  return s > 0 ? double(tokens) / s : std::numeric_limits<double>::infinity();
}

namespace {

StepEstimate estimate_step(const PlacementPlan& plan, const Roofline& r, const ModelShape& shape, int64_t tokens,
                           const ExpertProfile* profile) {
  StepEstimate e;
  e.tokens = tokens;
  std::map<int64_t, std::pair<bool, bool>> sides;  // layer -> (has gpu items, has cpu items)
  for (const PlacementDecision& d : plan.decisions()) {
    const PlacementItem& it = d.item;
    if (it.kind == TensorKind::kKvCache || it.kind == TensorKind::kEmbedding) continue;
    double bytes = double(it.bytes);
    if (it.kind == TensorKind::kRoutedExpert) {
      double p = profile ? profile->at(it.layer, it.expert) : double(shape.experts_per_tok) / double(shape.n_routed);
      p = std::clamp(p, 0.0, 1.0);
      // Probability that at least one of the step's tokens picks this expert.
      bytes *= 1.0 - std::pow(1.0 - p, double(tokens));
    }
    (d.where == Where::kGpu ? e.gpu_bytes : e.cpu_bytes) += bytes;
    if (it.layer >= 0) {
      auto& s = sides[it.layer];
      (d.where == Where::kGpu ? s.first : s.second) = true;
    }
  }
  int64_t split = 0;
  for (const auto& [layer, s] : sides) split += s.first && s.second;
  e.link_transfers = 2 * split;
  e.link_bytes = double(e.link_transfers) * double(tokens) * double(shape.hidden) * 4.0;
  e.gpu_s = e.gpu_bytes / (r.gpu_read_gbps * 1e9);
  e.cpu_s = e.cpu_bytes / (r.cpu_read_gbps * 1e9);
  e.link_s = double(e.link_transfers) * r.link_latency_us * 1e-6 + e.link_bytes / (r.link_gbps * 1e9);
  return e;
}

}  // namespace

ThroughputEstimate predict(const PlacementPlan& plan, const Roofline& r, const ModelShape& shape, int64_t batch,
                           const ExpertProfile* profile, int64_t prefill_tokens) {
  if (!(r.cpu_read_gbps > 0) || !(r.gpu_read_gbps > 0) || !(r.link_gbps > 0))
    throw std::invalid_argument("roofline: the CPU, GPU and link bandwidths must be positive");
  if (!(r.link_latency_us >= 0)) throw std::invalid_argument("roofline: the link latency must not be negative");
  if (batch < 1) throw std::invalid_argument("roofline: the batch must be at least 1");
  if (prefill_tokens < 1) throw std::invalid_argument("roofline: the prefill chunk must be at least 1 token");
  if (shape.hidden < 1) throw std::invalid_argument("roofline: the hidden size must be positive");
  const bool has_experts = plan.count(TensorKind::kRoutedExpert, Where::kGpu) + plan.count(TensorKind::kRoutedExpert, Where::kCpu) > 0;
  if (has_experts && !profile && (shape.experts_per_tok < 1 || shape.n_routed < shape.experts_per_tok))
    throw std::invalid_argument("roofline: experts_per_tok and n_routed are needed without a profile");
  ThroughputEstimate t;
  t.decode = estimate_step(plan, r, shape, batch, profile);
  t.prefill = estimate_step(plan, r, shape, prefill_tokens, profile);
  return t;
}

}  // namespace hearth

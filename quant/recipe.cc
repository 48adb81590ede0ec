#include "quant/recipe.h"

#include <regex>
#include <stdexcept>

namespace hearth {

using Role = QuantRecipe::Role;
using Layers = QuantRecipe::Layers;
using Rule = QuantRecipe::Rule;

struct QuantRecipe::Override {
  std::string spec;
  std::regex pattern;
  DType type;
};

namespace {

// ---- the preset table ------------------------------------------------------------

struct Preset {
  std::string_view name;
  DType base;
  std::vector<Rule> rules;  // first match wins
};

constexpr Rule rule(Role role, DType type, Layers layers = Layers::kAll, int first_n = 0) {
  return Rule{role, layers, first_n, type};
}

// The mixes. Why these tensors: output and the value path feed every token's result
// directly; ffn_down's inputs have the heaviest outliers. Why these layers: the first and
// last layers are where quantization error costs the most perplexity.
const std::vector<Preset>& presets() {
  using enum DType;
  static const std::vector<Preset> table = {
      {"F32", F32, {}},
      {"F16", F16, {}},
      {"BF16", BF16, {}},
      {"Q8_0", Q8_0, {}},
      {"Q6_K", Q6_K, {}},
      {"Q5_K_M", Q5_K,
       {rule(Role::kOutput, Q6_K), rule(Role::kAttnValue, Q6_K, Layers::kMoreBits),
        rule(Role::kFfnDown, Q6_K, Layers::kMoreBits)}},
      {"Q5_K_S", Q5_K, {rule(Role::kOutput, Q6_K)}},
      {"Q4_K_M", Q4_K,
       {rule(Role::kOutput, Q6_K), rule(Role::kAttnValue, Q6_K, Layers::kMoreBits),
        rule(Role::kFfnDown, Q6_K, Layers::kMoreBits)}},
      {"Q4_K_S", Q4_K,
       {rule(Role::kOutput, Q6_K), rule(Role::kAttnValue, Q5_K, Layers::kFirstN, 4),
        rule(Role::kFfnDown, Q5_K, Layers::kFirstEighth)}},
      {"Q3_K_M", Q3_K,
       {rule(Role::kOutput, Q6_K), rule(Role::kAttnValue, Q5_K, Layers::kFirstN, 2),
        rule(Role::kAttnValue, Q4_K), rule(Role::kFfnDown, Q5_K, Layers::kFirstSixteenth),
        rule(Role::kFfnDown, Q4_K), rule(Role::kAttnOutput, Q4_K)}},
      {"Q3_K_S", Q3_K, {rule(Role::kOutput, Q6_K)}},
      {"Q2_K", Q2_K,
       {rule(Role::kOutput, Q6_K), rule(Role::kAttnValue, Q3_K), rule(Role::kFfnDown, Q3_K),
        rule(Role::kAttnOutput, Q3_K)}},
      // MoE splits: the routed experts are ~95% of DeepSeek's bytes, so they set the size;
      // everything else is small and stays near lossless.
      {"MOE_Q4_K", Q8_0, {rule(Role::kRoutedExperts, Q4_K)}},
      {"MOE_Q3_K", Q8_0, {rule(Role::kRoutedExperts, Q3_K)}},
      {"MOE_Q2_K", Q8_0, {rule(Role::kRoutedExperts, Q2_K)}},
  };
  return table;
}

// ---- reading a tensor name ---------------------------------------------------------

// "blk.12.ffn_down_exps.weight" -> layer 12, kind "ffn_down_exps"; "output.weight" ->
// layer -1, kind "output"; "blk.3.exp_probs_b.bias" -> kind "exp_probs_b", bias.
struct NameParts {
  int layer = -1;
  std::string_view kind;
  bool bias = false;
};

NameParts parse_name(std::string_view name) {
  NameParts p;
  std::string_view rest = name;
  if (rest.starts_with("blk.")) {
    size_t i = 4;
    int64_t n = 0;
    while (i < rest.size() && rest[i] >= '0' && rest[i] <= '9' && n < (1 << 24))
      n = n * 10 + (rest[i++] - '0');
    if (i > 4 && i < rest.size() && rest[i] == '.') {
      p.layer = int(n);
      rest.remove_prefix(i + 1);
    }
  }
  if (rest.ends_with(".weight")) {
    rest.remove_suffix(7);
  } else if (rest.ends_with(".bias")) {
    rest.remove_suffix(5);
    p.bias = true;
  }
  p.kind = rest;
  return p;
}

// Dimensions that count: trailing 1s do not make a vector a matrix.
int effective_dims(const std::vector<int64_t>& dims) {
  int n = int(dims.size());
  while (n > 1 && dims[size_t(n) - 1] == 1) --n;
  return n;
}

// Why a tensor is always F32, or "" if it is not one of those.
std::string always_f32_reason(const RecipeTensor& t, const NameParts& p) {
  if (effective_dims(t.dims) <= 1) return "one-dimensional (norm or bias)";
  if (p.bias) return "a bias";
  if (p.kind.ends_with("_norm")) return "a norm";
  if (p.kind == "ffn_gate_inp") return "the MoE router (ffn_gate_inp)";
  if (p.kind == "exp_probs_b") return "the routing bias (exp_probs_b)";
  if (p.kind == "indexer.proj") return "the indexer's head weights (indexer.proj)";
  return "";
}

bool has_role(std::string_view kind, Role role) {
  switch (role) {
    case Role::kOutput:
      return kind == "output" || kind == "nextn.shared_head_head";
    case Role::kTokenEmbd:
      return kind == "token_embd" || kind == "nextn.embed_tokens";
    case Role::kAttnValue:
      return kind == "attn_v" || kind == "attn_v_b" || kind == "attn_kv_b";
    case Role::kAttnOutput:
      return kind == "attn_output";
    case Role::kFfnDown:
      return kind == "ffn_down" || kind == "ffn_down_shexp" || kind == "ffn_down_exps";
    case Role::kRoutedExperts:
      return kind.ends_with("_exps");
  }
  return false;
}

std::string_view role_name(Role role) {
  switch (role) {
    case Role::kOutput: return "output";
    case Role::kTokenEmbd: return "token_embd";
    case Role::kAttnValue: return "attn_v/attn_v_b/attn_kv_b";
    case Role::kAttnOutput: return "attn_output";
    case Role::kFfnDown: return "ffn_down";
    case Role::kRoutedExperts: return "routed experts";
  }
  return "?";
}

// llama.cpp's "use more bits" pattern: the first and last eighth, and every third layer
// in between. Layers past the end (MTP) fall in the last eighth.
bool more_bits_layer(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

std::string layers_phrase(const Rule& r) {
  switch (r.layers) {
    case Layers::kAll: return "";
    case Layers::kMoreBits: return " in more-bits layers (first/last eighth, every third between)";
    case Layers::kFirstEighth: return " in the first eighth of the layers";
    case Layers::kFirstSixteenth: return " in the first sixteenth of the layers";
    case Layers::kFirstN: return " in the first " + std::to_string(r.first_n) + " layers";
  }
  return "";
}

bool layer_selected(const Rule& r, int layer, int n_layers) {
  switch (r.layers) {
    case Layers::kAll: return true;
    case Layers::kMoreBits: return more_bits_layer(layer, n_layers);
    case Layers::kFirstEighth: return layer < n_layers / 8;
    case Layers::kFirstSixteenth: return layer < n_layers / 16;
    case Layers::kFirstN: return layer < r.first_n;
  }
  return false;
}

// The K-quants and IQ4_XS: super-blocks of 256 values.
bool is_kquant(DType t) { return is_block_dtype(t) && dtype_block_elems(t) == 256; }

// The type a row of ne0 values can take: `want` if its blocks divide the row, else the
// next best that fits (K-quant or IQ4_XS -> Q8_0 -> F16).
DType fitting_type(DType want, int64_t ne0) {
  if (ne0 % dtype_block_elems(want) == 0) return want;
  if (is_kquant(want) && ne0 % dtype_block_elems(DType::Q8_0) == 0) return DType::Q8_0;
  return DType::F16;
}

// Every type a recipe may write: all but FP8, which GGUF has no type for.
bool storable(DType t) { return t != DType::F8_E4M3; }

std::string storable_types() {
  std::string s;
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0,
                  DType::Q5_1, DType::IQ4_NL, DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K,
                  DType::IQ4_XS}) {
    if (!s.empty()) s += ", ";
    s += dtype_name(t);
  }
  return s;
}

}  // namespace

QuantRecipe::QuantRecipe(std::string name, DType base, std::vector<Rule> rules)
    : name_(std::move(name)), base_(base), rules_(std::move(rules)) {}

std::vector<std::string> QuantRecipe::preset_names() {
  std::vector<std::string> names;
  for (const Preset& p : presets()) names.emplace_back(p.name);
  return names;
}

QuantRecipe QuantRecipe::preset(std::string_view name) {
  for (const Preset& p : presets())
    if (same_ignoring_case(p.name, name)) return QuantRecipe(std::string(p.name), p.base, p.rules);
  std::string list;
  for (const Preset& p : presets()) list += (list.empty() ? "" : ", ") + std::string(p.name);
  throw std::runtime_error("unknown quantization preset '" + std::string(name) + "' (presets: " + list + ")");
}

QuantRecipe QuantRecipe::moe(DType experts, DType rest) {
  for (DType t : {experts, rest})
    if (!storable(t))
      throw std::runtime_error("moe recipe: " + std::string(dtype_name(t)) + " cannot be stored in GGUF");
  return QuantRecipe("moe(" + std::string(dtype_name(experts)) + ", " + std::string(dtype_name(rest)) + ")", rest,
                     {rule(Role::kRoutedExperts, experts)});
}

void QuantRecipe::add_override(std::string_view spec) {
  const std::string quoted = "override '" + std::string(spec) + "'";
  const size_t eq = spec.rfind('=');
  if (eq == std::string_view::npos) throw std::runtime_error(quoted + ": expected REGEX=TYPE");
  const std::string_view pattern = spec.substr(0, eq), type_name = spec.substr(eq + 1);
  if (pattern.empty()) throw std::runtime_error(quoted + ": empty regex (expected REGEX=TYPE)");
  const std::optional<DType> type = find_dtype(type_name);
  if (!type || !storable(*type))
    throw std::runtime_error(quoted + ": unknown type '" + std::string(type_name) + "' (types: " +
                             storable_types() + ")");
  auto o = std::make_shared<Override>();
  o->spec = std::string(pattern) + "=" + std::string(dtype_name(*type));
  try {
    o->pattern = std::regex(std::string(pattern), std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    throw std::runtime_error(quoted + ": bad regular expression: " + e.what());
  }
  o->type = *type;
  overrides_.push_back(std::move(o));
}

RecipeChoice QuantRecipe::choose(const RecipeTensor& t) const {
  const NameParts parts = parse_name(t.name);
  RecipeChoice c;
  if (const std::string reason = always_f32_reason(t, parts); !reason.empty()) {
    c.type = c.wanted = DType::F32;
    c.why = "kept at F32: " + reason;
    return c;
  }

  const Override* hit = nullptr;
  for (const auto& o : overrides_) {
    if (std::regex_search(t.name.begin(), t.name.end(), o->pattern)) {
      hit = o.get();
      break;
    }
  }
  if (hit) {
    c.wanted = hit->type;
    c.why = "override '" + hit->spec + "'";
    c.overridden = true;
  } else {
    const int layer = t.layer >= 0 ? t.layer : parts.layer;
    const Rule* match = nullptr;
    for (const Rule& r : rules_) {
      if (!has_role(parts.kind, r.role)) continue;
      if (r.layers != Layers::kAll) {
        if (layer < 0) continue;  // a layer rule never applies outside the layers
        if (t.n_layers <= 0)
          throw std::invalid_argument("tensor '" + std::string(t.name) + "': recipe " + name_ +
                                      " picks by layer and needs the layer count");
      }
      if (layer_selected(r, layer, t.n_layers)) {
        match = &r;
        break;
      }
    }
    if (match) {
      c.wanted = match->type;
      c.why = name_ + ": " + std::string(role_name(match->role)) + layers_phrase(*match) + " -> " +
              std::string(dtype_name(match->type));
    } else {
      c.wanted = base_;
      c.why = name_ + ": base type " + std::string(dtype_name(base_));
    }
  }

  const int64_t ne0 = t.dims.empty() ? 1 : t.dims[0];
  c.type = fitting_type(c.wanted, ne0);
  if (c.type != c.wanted)
    c.why += "; rows of " + std::to_string(ne0) + " are not whole " + std::string(dtype_name(c.wanted)) +
             " blocks of " + std::to_string(dtype_block_elems(c.wanted)) + ": " +
             std::string(dtype_name(c.type)) + " instead";
  return c;
}

DType QuantRecipe::type_for(const RecipeTensor& t) const { return choose(t).type; }

std::string QuantRecipe::describe() const {
  std::string s = name_ + ": " + std::string(dtype_name(base_));
  for (const Rule& r : rules_)
    s += "; " + std::string(role_name(r.role)) + " " + std::string(dtype_name(r.type)) + layers_phrase(r);
  s += "; norms, biases, router, exp_probs_b, indexer.proj F32";
  if (!overrides_.empty()) {
    s += "; overrides (first match wins):";
    for (const auto& o : overrides_) s += " " + o->spec;
  }
  return s;
}

}  // namespace hearth

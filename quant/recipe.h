// Quantization recipes: which DType each tensor of a GGUF model gets when `hearth quantize`
// writes it. A recipe is a preset (a base type plus a few rules that give chosen tensors
// more bits) and the user's overrides; it answers per tensor, from the GGUF name, the
// shape and the layer, with no model I/O.
//
// The presets are named by what a user trades off: uniform F32/F16/BF16/Q8_0/Q6_K, the
// llama.cpp-style K-quant mixes (Q5_K_M ... Q2_K), and MoE splits (MOE_Q4_K, ...: routed
// experts low, everything else at Q8_0). The _M/_S mixes follow the idea of llama.cpp's
// tensor-type heuristics, restated for DeepSeek's tensor names as a table of rules:
//   - output (the LM head) at Q6_K: every token's logits go through it;
//   - the value path (attn_v, attn_v_b, attn_kv_b) and ffn_down (dense, shared and
//     routed experts) one or two steps up in selected layers. "More-bits layers" are the
//     first and last eighth of the model and every third layer in between, where
//     quantization error hurts most;
//   - the Q3_K/Q2_K mixes also lift attn_output;
//   - token_embd stays at the base type: each token reads one of its rows.
// Always, whatever the preset or override: tensors with one dimension (norms, biases), the
// MoE router (ffn_gate_inp), the routing bias (exp_probs_b) and the indexer's head weights
// (indexer.proj) stay F32; they are small and they make discrete choices (which experts,
// which keys), so their precision matters more than their bytes.
//
// Block fallback: a block format needs ne[0] (the row length) to be a whole number of
// blocks. When it is not (attn_k_b's rows are 128 values long, a K-quant block is 256),
// a K-quant (or IQ4_XS) falls back to Q8_0 if 32 divides the row and to F16 otherwise,
// and the 32-value formats (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL) fall back to F16. Overrides go through the same fallback. choose() reports what was
// asked for, what was given and why, so the caller can log fallbacks.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "quant/dtype.h"

namespace hearth {

// One tensor as the recipe sees it.
struct RecipeTensor {
  std::string_view name;      // GGUF name, e.g. "blk.3.ffn_down_exps.weight"
  std::vector<int64_t> dims;  // ne order: dims[0] is the row length
  // The layer index; -1 reads it from a "blk.N." prefix of the name (none: not in a
  // layer). Layers at or past n_layers (the MTP layer) count as the last layers.
  int layer = -1;
  // The model's block count without MTP layers (DeepSeek-V3: 61). Needed only by the
  // layer-dependent rules of the _M/_S/Q2_K/Q3_K mixes; 0 there is an error.
  int n_layers = 0;
};

// A recipe's answer for one tensor.
struct RecipeChoice {
  DType type = DType::F32;    // what to write
  DType wanted = DType::F32;  // what the preset or override asked for, before the block fallback
  std::string why;            // one line: the rule or override, and the fallback if any
  bool overridden = false;    // an override (add_override) chose it, not the preset
  bool fell_back() const { return type != wanted; }
};

class QuantRecipe {
 public:
  // The preset names in the order `--help` should list them.
  static std::vector<std::string> preset_names();
  // A preset by name, ignoring ASCII case; std::runtime_error listing the presets for an
  // unknown name.
  static QuantRecipe preset(std::string_view name);
  // Routed experts (the merged *_exps tensors) at `experts`, every other tensor of two or
  // more dimensions at `rest`. std::runtime_error for a type GGUF cannot hold (F8_E4M3).
  static QuantRecipe moe(DType experts, DType rest);

  // "REGEX=TYPE": tensors whose GGUF name the ECMAScript regex matches anywhere
  // (std::regex_search) get TYPE (any case). Overrides are tried in the order added and
  // the first match wins; they apply to every tensor except the always-F32 ones, and go
  // through the block fallback. The regex is everything before the last '='. A missing
  // '=', an empty regex, a bad regex or an unknown/unstorable type throws
  // std::runtime_error naming the spec.
  void add_override(std::string_view spec);

  // The final type (fallbacks applied), and the same with its reasons.
  // std::invalid_argument when a layer rule applies and t.n_layers is not positive.
  DType type_for(const RecipeTensor& t) const;
  RecipeChoice choose(const RecipeTensor& t) const;
  std::string why(const RecipeTensor& t) const { return choose(t).why; }

  // One line for logs: the preset, its rules and the overrides.
  std::string describe() const;
  // "Q4_K_M", "MOE_Q2_K", or "moe(Q4_K, Q8_0)" for a recipe made by moe().
  const std::string& name() const { return name_; }

  // Rule plumbing, public so the preset table in recipe.cc can name it.
  enum class Role : uint8_t { kOutput, kTokenEmbd, kAttnValue, kAttnOutput, kFfnDown, kRoutedExperts };
  enum class Layers : uint8_t { kAll, kMoreBits, kFirstEighth, kFirstSixteenth, kFirstN };
  struct Rule {
    Role role;
    Layers layers;
    int first_n;  // for kFirstN
    DType type;
  };

 private:
  struct Override;  // spec, compiled regex, type; shared so copies of a recipe are cheap
  QuantRecipe(std::string name, DType base, std::vector<Rule> rules);

  std::string name_;
  DType base_;
  std::vector<Rule> rules_;  // first match wins; no match: base_
  std::vector<std::shared_ptr<const Override>> overrides_;
};

}  // namespace hearth

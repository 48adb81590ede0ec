// The prompts of the proof loop (hearth prove): generation, verification,
// meta-verification and refinement, as user-turn texts for the chat template.
//
// The built-in texts are ours; what they share with DeepSeekMath-V2's is the format
// contract the parsers (engine/proof_parse.h) rely on:
//   - a generation ends with "## Solution" (the proof) and "## Self Evaluation", which
//     closes with a score in \boxed{...}: 0, 0.5 or 1;
//   - a verification starts its analysis with "Here is my evaluation of the solution:"
//     and ends with \boxed{0}, \boxed{0.5} or \boxed{1};
//   - a meta-verification judges one low rating and ends with a boxed 0, 0.5 or 1 (is the
//     rating sound?);
//   - a refinement carries the problem and the best proofs so far with their ratings and
//     the verifiers' findings, and asks for the same answer format as a generation.
//
// A template file (--templates FILE, JSON) replaces any of them: an object whose keys are
// template names and whose values are template texts. In a template, {name} is a
// placeholder ({{ and }} are literal braces); a brace around anything that is not an
// identifier ("\boxed{1}", "\boxed{}") is kept as written. Each template has placeholders
// it must use and some it may use; any other is an error naming the file and the key.
#pragma once
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hearth {

struct ProofTemplates {
  std::string generate;        // {problem}
  std::string verify;          // {problem} {proof}
  std::string meta_verify;     // {problem} {proof} {evaluation}, optional {rating}
  std::string refine;          // {problem} {attempts}
  std::string refine_attempt;  // {proof}, optional {number} {score} {ratings} {findings}: one attempt inside {attempts}
  std::string source = "built-in templates";  // where they came from, for errors

  static ProofTemplates defaults();
  // The defaults with the file's templates in their place. Throws std::runtime_error, one
  // line naming the file (and the key): unreadable file, bad JSON, not an object, an
  // unknown template name, a value that is not a string, an unknown placeholder, a
  // required placeholder missing.
  static ProofTemplates load(const std::filesystem::path& json_file);

  // Checks every template's placeholders (as load does).
  void validate() const;
};

// The template names, in the order above.
const std::vector<std::string>& proof_template_names();

// Fills `tmpl`'s placeholders from `values`. Throws std::runtime_error naming `where`
// (e.g. "templates.json: template 'verify'") on a placeholder without a value.
std::string fill_template(std::string_view tmpl, const std::map<std::string, std::string>& values,
                          const std::string& where);

// The placeholders a template uses, in order of first use.
std::vector<std::string> template_placeholders(std::string_view tmpl);

// One earlier proof shown to a refinement.
struct RefineAttempt {
  std::string proof;
  std::optional<double> score;                 // mean rating; nullopt: no valid rating
  std::vector<std::optional<double>> ratings;  // each verifier's score
  std::vector<std::string> findings;           // verifiers' analyses worth reading (the low ratings')
};

// Limits that keep a refinement prompt bounded however long the analyses were.
inline constexpr size_t kMaxFindingsPerAttempt = 2;
inline constexpr size_t kMaxFindingBytes = 6000;

std::string generation_prompt(const ProofTemplates& t, const std::string& problem);
std::string verification_prompt(const ProofTemplates& t, const std::string& problem, const std::string& proof);
std::string meta_verification_prompt(const ProofTemplates& t, const std::string& problem, const std::string& proof,
                                     const std::string& evaluation, std::optional<double> rating);
std::string refinement_prompt(const ProofTemplates& t, const std::string& problem,
                              const std::vector<RefineAttempt>& attempts);

}  // namespace hearth

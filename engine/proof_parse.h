// Reading what the model wrote in the proof loop: the answer after "</think>", the proof
// and its self-evaluation, a verifier's analysis, and the scores in \boxed{...}.
//
// Real model output is loose about format: headings come as "## Solution", "# Solution:",
// "**Solution**", "**Solution:**" or a bare "Solution:" line (possibly with text after the
// colon), with stray whitespace and any heading level; scores come as "1", "0.50", "1/2"
// or "\frac{1}{2}", inside boxes that may hold nested braces. The parsers accept all of
// these and report "no score" rather than guess when a box is missing or holds anything
// other than 0, 1/2 or 1.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace hearth {

// The text after "</think>" when `started_thinking` (empty when the model never finished
// thinking), else the whole text; trimmed.
std::string proof_answer(std::string_view generated, bool started_thinking);

struct ProofSections {
  std::string solution;         // the proof (trimmed); without a Solution heading: the text before the self-evaluation
  std::string self_evaluation;  // the text after the Self Evaluation heading (trimmed); empty without one
  bool has_solution_heading = false;
  bool has_evaluation_heading = false;
};

// Splits an answer at its Solution and Self Evaluation headings (the first Solution
// heading, the last Self Evaluation heading after it).
ProofSections split_proof(std::string_view answer);

// If `line` is a heading whose title is `title` (case-insensitive; "self evaluation",
// "self-evaluation" and "selfevaluation" are one title), the text after it on the same
// line (after a colon), else std::nullopt. Exposed for tests.
std::optional<std::string> heading_rest(std::string_view line, std::string_view title);

// The content of the last complete \boxed{...} in `text` (braces balanced; a box left
// open at the end of a truncated output does not count), or std::nullopt.
std::optional<std::string> last_boxed(std::string_view text);

// 0, 0.5 or 1 from a box's content: "0", "1", "0.5", ".5", "0.50", "1.0", "1/2",
// "\frac{1}{2}", "\dfrac12", optionally wrapped in $...$ or \text{...}; else std::nullopt.
std::optional<double> parse_score(std::string_view boxed);

// parse_score(last_boxed(text)).
std::optional<double> boxed_score(std::string_view text);

// A generation: the answer, its sections, and the self-evaluation's score.
struct ParsedProof {
  std::string answer;
  ProofSections sections;
  std::optional<double> self_score;
};
ParsedProof parse_proof(std::string_view generated, bool started_thinking);

// A verification: the analysis (from "Here is my evaluation of the solution:" when the
// model wrote it, else the whole answer) and its final score.
struct ParsedRating {
  std::string answer;
  std::string analysis;
  bool has_preamble = false;  // the analysis opened with the expected sentence
  std::optional<double> score;
};
inline constexpr std::string_view kEvaluationPreamble = "Here is my evaluation of the solution:";
ParsedRating parse_rating(std::string_view generated, bool started_thinking);

// "0", "0.5", "1"; "-" for no score.
std::string format_score(std::optional<double> score);

}  // namespace hearth

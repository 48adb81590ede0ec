// The proof-loop parsers on the shapes real model output takes (fixtures in our words).
#include <doctest/doctest.h>

#include <optional>
#include <string>

#include "engine/proof_parse.h"

namespace engine_proof_parse_suite {

using namespace hearth;

namespace {

// A thinking-mode generation: reasoning, then an answer with bold headings, uneven
// spacing, a box inside the proof and the self-evaluation's nested-fraction box.
const char* kBoldHeadings =
    "We want to show n^2 + n is even. Try small cases: 2, 6, 12.\n"
    "</think>\n"
    "\n"
    "**Solution**\n"
    "\n"
    "  Write n^2 + n = n(n+1). Of two consecutive integers one is even, so the product is even;\n"
    "hence $n^2+n \\in \\boxed{2\\mathbb{Z}}$.\n"
    "\n"
    "**Self-Evaluation:**   \n"
    "The argument covers every integer n, but I did not spell out negative n.\n"
    "Score: \\boxed{\\frac{1}{2}}\n";

// Markdown headings at other levels, a colon, and extra blank lines.
const char* kHashHeadings =
    "</think>### Solution:\n"
    "Suppose not. Then the sum of the angles exceeds 180 degrees, a contradiction.\n"
    "\n\n"
    "#   Self Evaluation\n"
    "Every step follows from the previous one.\n"
    "\\boxed{ 1 }";

// A bare "Solution:" line with text on it, and a "Self evaluation:" line.
const char* kColonHeadings =
    "</think>Solution: Let p be the smallest prime factor of N.\n"
    "Then p divides N!, so p <= N.\n"
    "Self evaluation: the bound is stated but never used. I would give this \\boxed{0}.";

}  // namespace

TEST_CASE("proof_parse: the answer is what follows </think>") {
  CHECK(proof_answer("reasoning here</think>  the answer \n", true) == "the answer");
  CHECK(proof_answer("still thinking when the budget ran out", true) == "");
  CHECK(proof_answer("  no reasoning at all  ", false) == "no reasoning at all");
  CHECK(proof_answer("<think>a</think>b", true) == "b");
}

TEST_CASE("proof_parse: headings in bold markdown and colon forms") {
  const ParsedProof bold = parse_proof(kBoldHeadings, true);
  CHECK(bold.sections.has_solution_heading);
  CHECK(bold.sections.has_evaluation_heading);
  CHECK(bold.sections.solution.starts_with("Write n^2 + n = n(n+1)."));
  CHECK(bold.sections.solution.ends_with("\\boxed{2\\mathbb{Z}}$."));
  CHECK(bold.sections.self_evaluation.starts_with("The argument covers every integer n"));
  REQUIRE(bold.self_score);
  CHECK(*bold.self_score == 0.5);  // the last box, with nested braces

  const ParsedProof hash = parse_proof(kHashHeadings, true);
  CHECK(hash.sections.solution == "Suppose not. Then the sum of the angles exceeds 180 degrees, a contradiction.");
  CHECK(hash.sections.self_evaluation == "Every step follows from the previous one.\n\\boxed{ 1 }");
  REQUIRE(hash.self_score);
  CHECK(*hash.self_score == 1);

  const ParsedProof colon = parse_proof(kColonHeadings, true);
  CHECK(colon.sections.solution == "Let p be the smallest prime factor of N.\nThen p divides N!, so p <= N.");
  CHECK(colon.sections.self_evaluation.starts_with("the bound is stated"));
  REQUIRE(colon.self_score);
  CHECK(*colon.self_score == 0);
}

TEST_CASE("proof_parse: what is not a heading") {
  CHECK(heading_rest("## Solution", "solution") == std::optional<std::string>(""));
  CHECK(heading_rest("**Solution:** first line", "solution") == std::optional<std::string>("first line"));
  CHECK(heading_rest("__Solution__", "solution") == std::optional<std::string>(""));
  CHECK(heading_rest("Solution", "solution") == std::optional<std::string>(""));
  CHECK(heading_rest("## Self-evaluation", "self evaluation") == std::optional<std::string>(""));
  CHECK(heading_rest("**SelfEvaluation**:", "self evaluation") == std::optional<std::string>(""));
  CHECK_FALSE(heading_rest("## Solutions of the equation", "solution"));
  CHECK_FALSE(heading_rest("## Solution to part (a)", "solution"));
  CHECK_FALSE(heading_rest("Solution of this kind exist", "solution"));
  CHECK_FALSE(heading_rest("**Solution", "solution"));  // emphasis never closed
  CHECK_FALSE(heading_rest("The solution: trivial", "solution"));
}

TEST_CASE("proof_parse: answers without the expected sections") {
  const ParsedProof none = parse_proof("</think>Just an argument with no headings. \\boxed{1}", true);
  CHECK_FALSE(none.sections.has_solution_heading);
  CHECK_FALSE(none.sections.has_evaluation_heading);
  CHECK(none.sections.solution == "Just an argument with no headings. \\boxed{1}");
  CHECK_FALSE(none.self_score);  // a box outside a self-evaluation is not a self-score

  const ParsedProof unfinished = parse_proof("## Solution\nwritten while still thinking", true);
  CHECK(unfinished.answer.empty());
  CHECK(unfinished.sections.solution.empty());

  // The first Solution heading opens the proof; the last Self Evaluation heading closes it.
  const ParsedProof twice = parse_proof(
      "</think>## Solution\nPart one.\n## Solution\nPart two.\n## Self Evaluation\ndraft\n## Self Evaluation\nfinal \\boxed{0.5}",
      true);
  CHECK(twice.sections.solution == "Part one.\n## Solution\nPart two.\n## Self Evaluation\ndraft");
  CHECK(twice.sections.self_evaluation == "final \\boxed{0.5}");
  CHECK(twice.self_score == std::optional<double>(0.5));
}

TEST_CASE("proof_parse: the last complete box") {
  CHECK(last_boxed("a \\boxed{1} b \\boxed{0}") == std::optional<std::string>("0"));
  CHECK(last_boxed("\\boxed{\\frac{1}{2}}") == std::optional<std::string>("\\frac{1}{2}"));
  CHECK(last_boxed("\\boxed {0.5} and then") == std::optional<std::string>("0.5"));
  CHECK(last_boxed("\\boxed{{a}{b}}") == std::optional<std::string>("{a}{b}"));
  // A box cut off by the token budget does not count; the one before it does.
  CHECK(last_boxed("\\boxed{1} then \\boxed{\\frac{1}{2") == std::optional<std::string>("1"));
  CHECK_FALSE(last_boxed("no box here"));
  CHECK_FALSE(last_boxed("\\boxed 1"));
  CHECK_FALSE(last_boxed("\\boxed{"));
}

TEST_CASE("proof_parse: scores") {
  const std::optional<double> half = 0.5, one = 1.0, zero = 0.0;
  for (const char* s : {"0.5", ".5", "0.50", "1/2", "2/4", "\\frac{1}{2}", "\\dfrac{1}{2}", "\\tfrac12", " $0.5$ ", "\\text{0.5}",
                        "\\(1/2\\)"})
    CHECK_MESSAGE(parse_score(s) == half, s);
  for (const char* s : {"1", "1.0", "01", "\\textbf{1}", "3/3"}) CHECK_MESSAGE(parse_score(s) == one, s);
  for (const char* s : {"0", "0.00", "0/5"}) CHECK_MESSAGE(parse_score(s) == zero, s);
  for (const char* s : {"", "2", "0.7", "-1", "1/3", "1/0", "\\frac{1}{3}", "one", "1.5", "0.5.0", "x", "\\frac{1}", "1 point"})
    CHECK_MESSAGE(!parse_score(s), s);
  CHECK(boxed_score("final: \\boxed{\\frac{1}{2}}") == half);
  CHECK_FALSE(boxed_score("final: 1"));
  CHECK(format_score(half) == "0.5");
  CHECK(format_score(std::nullopt) == "-");
}

TEST_CASE("proof_parse: verifier analyses") {
  const ParsedRating r = parse_rating(
      "I should read every line.</think>\n  here is my   evaluation of the\nsolution:\nThe base case is missing.\n"
      "Overall: \\boxed{0.5}",
      true);
  CHECK(r.has_preamble);
  CHECK(r.analysis == "The base case is missing.\nOverall: \\boxed{0.5}");
  CHECK(r.score == std::optional<double>(0.5));

  const ParsedRating bare = parse_rating("The proof is fine. \\boxed{1}", false);
  CHECK_FALSE(bare.has_preamble);
  CHECK(bare.analysis == "The proof is fine. \\boxed{1}");
  CHECK(bare.score == std::optional<double>(1.0));

  const ParsedRating unscored = parse_rating("</think>Here is my evaluation of the solution: unclear. \\boxed{B}", true);
  CHECK(unscored.has_preamble);
  CHECK(unscored.analysis == "unclear. \\boxed{B}");
  CHECK_FALSE(unscored.score);

  CHECK_FALSE(parse_rating("thinking forever", true).score);  // a box in unfinished reasoning is not a rating
}

}  // namespace engine_proof_parse_suite

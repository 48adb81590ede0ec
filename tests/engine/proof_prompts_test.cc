// The proof-loop prompts: the built-in texts keep the format contract, template files
// replace them, and every bad template file is a one-line error naming the file and key.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "engine/chat_template.h"
#include "engine/proof_parse.h"
#include "engine/proof_prompts.h"
#include "engine/tokenizer.h"
#include "support/errors.h"
#include "support/scratch.h"

namespace engine_proof_prompts_suite {

using namespace hearth;
using hearth::testing::check_error;
using hearth::testing::TempDir;

namespace {

const std::string kProblem = "Show that for every integer n >= 1, 3 divides n^3 - n.";

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::filesystem::path write(const TempDir& d, const std::string& name, const std::string& text) {
  const auto p = d.path / name;
  std::ofstream(p, std::ios::binary) << text;
  return p;
}

}  // namespace

TEST_CASE("proof_prompts: the built-in prompts keep the format contract") {
  const ProofTemplates t = ProofTemplates::defaults();
  CHECK_NOTHROW(t.validate());

  const std::string gen = generation_prompt(t, kProblem);
  CHECK(has(gen, kProblem));
  for (const char* part : {"## Solution", "## Self Evaluation", "\\boxed{1}", "\\boxed{0.5}", "\\boxed{0}"})
    CHECK_MESSAGE(has(gen, part), part);
  CHECK_FALSE(has(gen, "{problem}"));

  const std::string proof = "Since n^3 - n = (n-1)n(n+1) is a product of three consecutive integers, 3 divides it.";
  const std::string ver = verification_prompt(t, kProblem, proof);
  for (const std::string& part : {kProblem, proof, std::string(kEvaluationPreamble), std::string("\\boxed{0.5}")})
    CHECK_MESSAGE(has(ver, part), part);

  const std::string meta = meta_verification_prompt(t, kProblem, proof, "The factorization is not justified.", 0.5);
  for (const std::string& part : {kProblem, proof, std::string("The factorization is not justified."), std::string("score 0.5"),
                                  std::string("\\boxed{1}")})
    CHECK_MESSAGE(has(meta, part), part);

  RefineAttempt a{proof, 0.75, {1.0, 0.5, std::nullopt, 1.0}, {"The case n = 1 is not checked.", "No issue beyond style."}};
  RefineAttempt b{"Induction on n works as well.", std::nullopt, {}, {}};
  const std::string ref = refinement_prompt(t, kProblem, {a, b});
  for (const std::string& part :
       {kProblem, proof, std::string("Induction on n works as well."), std::string("Attempt 1 (mean score 0.75"),
        std::string("1, 0.5, -, 1"), std::string("- The case n = 1 is not checked."), std::string("Attempt 2 (mean score -"),
        std::string("(none recorded)"), std::string("## Solution"), std::string("## Self Evaluation")})
    CHECK_MESSAGE(has(ref, part), part);
  CHECK(ref.find(proof) < ref.find("Induction on n works as well."));  // best first, as given
  CHECK(has(refinement_prompt(t, kProblem, {}), "(none of the earlier samples wrote a proof)"));
}

TEST_CASE("proof_prompts: long findings are cut and counted") {
  const ProofTemplates t = ProofTemplates::defaults();
  // A 3-byte character straddling the cut: it must not be split.
  std::string finding = std::string(kMaxFindingBytes - 1, 'x') + "\xe2\x88\x80" + "tail";
  RefineAttempt a{"p", 0.0, {0.0}, {finding, "second", "third is beyond the limit"}};
  const std::string ref = refinement_prompt(t, kProblem, {a});
  CHECK(has(ref, std::string(kMaxFindingBytes - 1, 'x') + " [...]"));
  CHECK_FALSE(has(ref, "tail"));
  CHECK(has(ref, "- second"));
  CHECK_FALSE(has(ref, "third is beyond"));
}

TEST_CASE("proof_prompts: prompts render through the chat template in thinking mode") {
  const auto tok = Tokenizer::load(std::filesystem::path(HEARTH_TEST_DATA) / "tokenizer/tokenizer.json");
  const std::string gen = generation_prompt(ProofTemplates::defaults(), kProblem);
  const std::vector<int32_t> ids = encode_chat(tok, {{"user", gen, ""}}, true);
  CHECK(ids.front() == tok.bos_id());
  CHECK(tok.decode(ids) == std::string(kBosText) + std::string(kUserText) + gen + std::string(kAssistantText) +
                               std::string(kThinkText));
}

TEST_CASE("proof_prompts: placeholders and literal braces") {
  CHECK(fill_template("a {x} \\boxed{1} \\boxed{} {{x}} {0} }", {{"x", "X{y}"}}, "t") == "a X{y} \\boxed{1} \\boxed{} {x} {0} }");
  CHECK(template_placeholders("{b} {a} {b} {{c}} {1x} {d e}") == std::vector<std::string>{"b", "a"});
  check_error([] { fill_template("{missing}", {}, "here: template 'x'"); }, {"here: template 'x'", "{missing}"});
}

TEST_CASE("proof_prompts: a template file replaces some templates") {
  TempDir d("proof-templates");
  const auto file = write(d, "t.json",
                          R"({"verify": "Grade this.\nProblem: {problem}\nProof: {proof}\nEnd with \\boxed{{0}}, \\boxed{{0.5}} or \\boxed{1}.",
                              "generate": "Prove: {problem}"})");
  const ProofTemplates t = ProofTemplates::load(file);
  CHECK(generation_prompt(t, "P") == "Prove: P");
  CHECK(verification_prompt(t, "P", "Q") == "Grade this.\nProblem: P\nProof: Q\nEnd with \\boxed{0}, \\boxed{0.5} or \\boxed{1}.");
  CHECK(t.refine == ProofTemplates::defaults().refine);  // not in the file: the built-in one
  CHECK(t.source == file.string());
}

TEST_CASE("proof_prompts: bad template files") {
  TempDir d("proof-templates-bad");
  const auto check = [&](const std::string& name, const std::string& text, std::initializer_list<std::string> parts) {
    const auto file = write(d, name, text);
    std::vector<std::string> all = {file.string()};
    all.insert(all.end(), parts.begin(), parts.end());
    const std::string msg = hearth::testing::error_of([&] { ProofTemplates::load(file); });
    for (const std::string& p : all) CHECK_MESSAGE(msg.find(p) != std::string::npos, "'", p, "' not in: ", msg);
    CHECK_MESSAGE(msg.find('\n') == std::string::npos, msg);
  };
  check("syntax.json", "{\"generate\": ", {"not valid JSON"});
  check("array.json", "[1, 2]", {"JSON object"});
  check("unknown.json", R"({"generation": "{problem}"})", {"unknown template 'generation'", "generate, verify"});
  check("number.json", R"({"verify": 3})", {"template 'verify' must be a string"});
  check("placeholder.json", R"({"verify": "{problem} {proof} {answer}"})",
        {"template 'verify'", "unknown placeholder {answer}", "allowed: problem, proof"});
  check("missing.json", R"({"verify": "Only {problem} here."})", {"template 'verify'", "lacks the placeholder {proof}"});
  check("attempt.json", R"({"refine_attempt": "{number}: {score}"})", {"template 'refine_attempt'", "{proof}"});
  check_error([&] { ProofTemplates::load(d.path / "absent.json"); }, {(d.path / "absent.json").string(), "cannot read"});
}

}  // namespace engine_proof_prompts_suite

#include "engine/proof_prompts.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>

#include "engine/proof_parse.h"

namespace hearth {

namespace {

// What a generation and a refinement ask of the answer (the format the parsers read).
constexpr const char* kAnswerFormat =
    "### How to answer\n"
    "Write your complete proof under the heading `## Solution`. Then add the heading\n"
    "`## Self Evaluation` and check your own proof the way a strict grader would: go through it\n"
    "step by step and say plainly where it is incomplete or wrong, if it is. Close the self\n"
    "evaluation with your score for the proof in \\boxed{}: \\boxed{1} when the proof is complete and\n"
    "rigorous, \\boxed{0.5} when it is essentially right but has small gaps or slips, \\boxed{0} when\n"
    "it is wrong or leaves out something essential. Rate yourself honestly: a proof you score 1\n"
    "should leave a grader nothing to fix.";

const char* const kGenerate =
    "Prove the statement below. Your argument must be complete and rigorous: justify each step,\n"
    "treat every case, and do not lean on claims you have not proved (well-known theorems may be\n"
    "cited by name).\n"
    "\n"
    "### Problem\n"
    "{problem}\n"
    "\n";

const char* const kVerify =
    "You are grading a proof. Read the problem and the proposed solution below, then check the\n"
    "solution line by line: look for logical gaps, claims made without justification, mistakes in\n"
    "calculation and cases left out. Mention what is done well only briefly.\n"
    "\n"
    "### Problem\n"
    "{problem}\n"
    "\n"
    "### Proposed solution\n"
    "{proof}\n"
    "\n"
    "### How to answer\n"
    "Begin with the sentence \"Here is my evaluation of the solution:\" and then give your analysis,\n"
    "quoting the parts of the solution you discuss. End with your score in \\boxed{}: \\boxed{1} for a\n"
    "complete and rigorous proof, \\boxed{0.5} for a proof that is essentially right but has minor\n"
    "gaps or slips, \\boxed{0} for a proof that is wrong, misses an essential part, or does not\n"
    "address the problem.";

const char* const kMetaVerify =
    "Another grader has evaluated the proof below and gave it the score {rating}. Your task is to\n"
    "judge that evaluation, not to grade the proof again from scratch: for each issue the grader\n"
    "raised, decide whether it is a real flaw of the proof, and decide whether the score follows\n"
    "from the issues that are real.\n"
    "\n"
    "### Problem\n"
    "{problem}\n"
    "\n"
    "### Proof\n"
    "{proof}\n"
    "\n"
    "### The grader's evaluation\n"
    "{evaluation}\n"
    "\n"
    "### How to answer\n"
    "Go through the grader's claims one at a time and say whether each one holds. End with your\n"
    "verdict in \\boxed{}: \\boxed{1} if the evaluation is sound (its issues are real and its score is\n"
    "fair), \\boxed{0.5} if it is partly sound, \\boxed{0} if its criticism is mistaken or its score is\n"
    "not justified.";

const char* const kRefine =
    "Prove the statement below. Earlier attempts at it are listed after the problem, each with\n"
    "the scores graders gave it and the issues they found. Write a new, self-contained proof that\n"
    "keeps what is correct in them and repairs what the graders found wrong. Do not simply copy an\n"
    "attempt, and do not refer to the attempts in your proof.\n"
    "\n"
    "### Problem\n"
    "{problem}\n"
    "\n"
    "### Earlier attempts\n"
    "{attempts}\n"
    "\n";

const char* const kRefineAttempt =
    "#### Attempt {number} (mean score {score}; individual scores: {ratings})\n"
    "{proof}\n"
    "\n"
    "Issues the graders found:\n"
    "{findings}";

struct Spec {
  const char* name;
  std::string ProofTemplates::*field;
  std::vector<std::string> required, optional;
};

const std::vector<Spec>& specs() {
  static const std::vector<Spec> s = {
      {"generate", &ProofTemplates::generate, {"problem"}, {}},
      {"verify", &ProofTemplates::verify, {"problem", "proof"}, {}},
      {"meta_verify", &ProofTemplates::meta_verify, {"problem", "proof", "evaluation"}, {"rating"}},
      {"refine", &ProofTemplates::refine, {"problem", "attempts"}, {}},
      {"refine_attempt", &ProofTemplates::refine_attempt, {"proof"}, {"number", "score", "ratings", "findings"}},
  };
  return s;
}

bool ident_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool ident_char(char c) { return ident_start(c) || (c >= '0' && c <= '9'); }

// Walks a template: calls `text` for literal pieces and `field` for each placeholder.
template <class Text, class Field>
void walk(std::string_view t, Text&& text, Field&& field) {
  size_t i = 0, lit = 0;
  while (i < t.size()) {
    if ((t[i] == '{' || t[i] == '}') && i + 1 < t.size() && t[i + 1] == t[i]) {
      text(t.substr(lit, i - lit + 1));  // one brace of the pair
      i += 2, lit = i;
      continue;
    }
    if (t[i] == '{' && i + 1 < t.size() && ident_start(t[i + 1])) {
      size_t j = i + 1;
      while (j < t.size() && ident_char(t[j])) ++j;
      if (j < t.size() && t[j] == '}') {
        text(t.substr(lit, i - lit));
        field(std::string(t.substr(i + 1, j - i - 1)));
        i = j + 1, lit = i;
        continue;
      }
    }
    ++i;
  }
  text(t.substr(lit));
}

// Cuts `s` to at most `max` bytes on a UTF-8 character boundary.
std::string cut_utf8(const std::string& s, size_t max) {
  if (s.size() <= max) return s;
  size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n) + " [...]";
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += sep;
    out += v[i];
  }
  return out;
}

}  // namespace

const std::vector<std::string>& proof_template_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const Spec& s : specs()) n.push_back(s.name);
    return n;
  }();
  return names;
}

std::vector<std::string> template_placeholders(std::string_view tmpl) {
  std::vector<std::string> out;
  walk(tmpl, [](std::string_view) {}, [&](const std::string& name) {
    if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(name);
  });
  return out;
}

std::string fill_template(std::string_view tmpl, const std::map<std::string, std::string>& values,
                          const std::string& where) {
  std::string out;
  walk(tmpl, [&](std::string_view s) { out += s; }, [&](const std::string& name) {
    const auto it = values.find(name);
    if (it == values.end()) throw std::runtime_error(where + ": no value for the placeholder {" + name + "}");
    out += it->second;
  });
  return out;
}

ProofTemplates ProofTemplates::defaults() {
  ProofTemplates t;
  t.generate = std::string(kGenerate) + kAnswerFormat;
  t.verify = kVerify;
  t.meta_verify = kMetaVerify;
  t.refine = std::string(kRefine) + kAnswerFormat;
  t.refine_attempt = kRefineAttempt;
  return t;
}

void ProofTemplates::validate() const {
  for (const Spec& s : specs()) {
    const std::string where = source + ": template '" + s.name + "'";
    const std::vector<std::string> used = template_placeholders(this->*s.field);
    for (const std::string& name : used)
      if (std::find(s.required.begin(), s.required.end(), name) == s.required.end() &&
          std::find(s.optional.begin(), s.optional.end(), name) == s.optional.end()) {
        std::vector<std::string> allowed = s.required;
        allowed.insert(allowed.end(), s.optional.begin(), s.optional.end());
        throw std::runtime_error(where + ": unknown placeholder {" + name + "} (allowed: " + join(allowed, ", ") +
                                 "; write {{ and }} for literal braces)");
      }
    for (const std::string& name : s.required)
      if (std::find(used.begin(), used.end(), name) == used.end())
        throw std::runtime_error(where + " lacks the placeholder {" + name + "}");
  }
}

ProofTemplates ProofTemplates::load(const std::filesystem::path& json_file) {
  const std::string file = json_file.string();
  std::ifstream f(json_file, std::ios::binary);
  if (!f) throw std::runtime_error(file + ": cannot read the template file");
  std::stringstream ss;
  ss << f.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::parse_error& e) {
    std::string what = e.what();
    std::replace(what.begin(), what.end(), '\n', ' ');
    throw std::runtime_error(file + ": not valid JSON (" + what + ")");
  }
  if (!j.is_object()) throw std::runtime_error(file + ": expected a JSON object of named templates");
  ProofTemplates t = defaults();
  t.source = file;
  for (const auto& [key, value] : j.items()) {
    const auto it = std::find_if(specs().begin(), specs().end(), [&](const Spec& s) { return key == s.name; });
    if (it == specs().end())
      throw std::runtime_error(file + ": unknown template '" + key + "' (known: " + join(proof_template_names(), ", ") + ")");
    if (!value.is_string()) throw std::runtime_error(file + ": template '" + key + "' must be a string");
    t.*(it->field) = value.get<std::string>();
  }
  t.validate();
  return t;
}

std::string generation_prompt(const ProofTemplates& t, const std::string& problem) {
  return fill_template(t.generate, {{"problem", problem}}, t.source + ": template 'generate'");
}

std::string verification_prompt(const ProofTemplates& t, const std::string& problem, const std::string& proof) {
  return fill_template(t.verify, {{"problem", problem}, {"proof", proof}}, t.source + ": template 'verify'");
}

std::string meta_verification_prompt(const ProofTemplates& t, const std::string& problem, const std::string& proof,
                                     const std::string& evaluation, std::optional<double> rating) {
  return fill_template(t.meta_verify,
                       {{"problem", problem}, {"proof", proof}, {"evaluation", evaluation}, {"rating", format_score(rating)}},
                       t.source + ": template 'meta_verify'");
}

std::string refinement_prompt(const ProofTemplates& t, const std::string& problem,
                              const std::vector<RefineAttempt>& attempts) {
  std::vector<std::string> blocks;
  for (size_t i = 0; i < attempts.size(); ++i) {
    const RefineAttempt& a = attempts[i];
    std::vector<std::string> ratings;
    for (const auto& r : a.ratings) ratings.push_back(format_score(r));
    std::string findings;
    for (size_t k = 0; k < a.findings.size() && k < kMaxFindingsPerAttempt; ++k) {
      if (k) findings += "\n\n";
      findings += "- ";
      findings += cut_utf8(a.findings[k], kMaxFindingBytes);
    }
    if (findings.empty()) findings = "(none recorded)";
    std::string score = "-";
    if (a.score) {
      std::ostringstream s;
      s.precision(3);
      s << *a.score;
      score = s.str();
    }
    blocks.push_back(fill_template(t.refine_attempt,
                                   {{"number", std::to_string(i + 1)},
                                    {"proof", a.proof},
                                    {"score", score},
                                    {"ratings", ratings.empty() ? "none" : join(ratings, ", ")},
                                    {"findings", findings}},
                                   t.source + ": template 'refine_attempt'"));
  }
  const std::string all = blocks.empty() ? "(none of the earlier samples wrote a proof)" : join(blocks, "\n\n");
  return fill_template(t.refine, {{"problem", problem}, {"attempts", all}},
                       t.source + ": template 'refine'");
}

}  // namespace hearth

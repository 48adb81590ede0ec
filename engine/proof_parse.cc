#include "engine/proof_parse.h"

#include <cctype>
#include <cstdlib>
#include <vector>

#include "engine/chat_template.h"

namespace hearth {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

char lower(char c) { return char(std::tolower(static_cast<unsigned char>(c))); }

// Consumes `word` (case-insensitive) at the start of `s`.
bool eat_word(std::string_view& s, std::string_view word) {
  if (s.size() < word.size()) return false;
  for (size_t i = 0; i < word.size(); ++i)
    if (lower(s[i]) != word[i]) return false;
  s.remove_prefix(word.size());
  return true;
}

// Consumes the title at the start of `s`: "solution", or "self" + optional spaces or
// hyphens + "evaluation" for the self-evaluation title.
bool eat_title(std::string_view& s, std::string_view title) {
  if (title != "self evaluation") return eat_word(s, title);
  if (!eat_word(s, "self")) return false;
  while (!s.empty() && (s.front() == ' ' || s.front() == '-' || s.front() == '\t')) s.remove_prefix(1);
  return eat_word(s, "evaluation");
}

// Strips one run of emphasis markers ("**", "__", "*", "_") from the front.
std::string_view eat_emphasis(std::string_view& s) {
  size_t n = 0;
  while (n < s.size() && n < 3 && (s[n] == '*' || s[n] == '_') && s[n] == s[0]) ++n;
  const std::string_view mark = s.substr(0, n);
  s.remove_prefix(n);
  return mark;
}

struct Line {
  size_t begin, end;  // [begin, end) in the text, without the newline
};

std::vector<Line> split_lines(std::string_view text) {
  std::vector<Line> lines;
  size_t at = 0;
  while (at <= text.size()) {
    size_t nl = text.find('\n', at);
    if (nl == std::string_view::npos) nl = text.size();
    lines.push_back({at, nl});
    at = nl + 1;
  }
  return lines;
}

// `rest` (text on the heading's own line) followed by text[from, to).
std::string section(std::string_view rest, std::string_view text, size_t from, size_t to) {
  std::string out(trim(rest));
  const std::string_view body = trim(text.substr(from, to - from));
  if (!out.empty() && !body.empty()) out += "\n";
  out += body;
  return out;
}

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

// The content of a {...} group starting at s[0] == '{', advancing `s` past it.
std::optional<std::string_view> eat_group(std::string_view& s) {
  if (s.empty() || s.front() != '{') return std::nullopt;
  int depth = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '{') ++depth;
    else if (s[i] == '}' && --depth == 0) {
      const std::string_view inner = s.substr(1, i - 1);
      s.remove_prefix(i + 1);
      return inner;
    }
  }
  return std::nullopt;
}

// One argument of \frac: a {group} or a single character ("\frac12").
std::optional<std::string_view> eat_frac_arg(std::string_view& s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  if (s.empty()) return std::nullopt;
  if (s.front() == '{') return eat_group(s);
  const std::string_view one = s.substr(0, 1);
  s.remove_prefix(1);
  return one;
}

std::optional<double> score_value(double v) {
  if (v == 0 || v == 0.5 || v == 1) return v;
  return std::nullopt;
}

std::optional<double> ratio(std::string_view num, std::string_view den) {
  num = trim(num), den = trim(den);
  if (!all_digits(num) || !all_digits(den) || num.size() > 6 || den.size() > 6) return std::nullopt;
  const long n = std::strtol(std::string(num).c_str(), nullptr, 10), d = std::strtol(std::string(den).c_str(), nullptr, 10);
  if (d == 0) return std::nullopt;
  if (2 * n == d) return 0.5;
  if (n == 0) return 0.0;
  if (n == d) return 1.0;
  return std::nullopt;
}

}  // namespace

std::string proof_answer(std::string_view generated, bool started_thinking) {
  const ReasoningSplit split = split_reasoning(generated, started_thinking);
  if (started_thinking && !split.finished_thinking) return "";
  return std::string(trim(split.answer));
}

std::optional<std::string> heading_rest(std::string_view line, std::string_view title) {
  std::string_view s = trim(line);
  bool marked = false;  // a Markdown heading, emphasis or a colon makes it a heading
  while (!s.empty() && s.front() == '#') s.remove_prefix(1), marked = true;
  s = trim(s);
  const std::string_view open = eat_emphasis(s);
  marked = marked || !open.empty();
  s = trim(s);
  if (!eat_title(s, title)) return std::nullopt;
  // The title must end at a word boundary ("Solutions" is not "Solution").
  if (!s.empty() && (std::isalnum(static_cast<unsigned char>(s.front())) || s.front() == '-')) return std::nullopt;
  s = trim(s);
  bool colon = false;
  if (!s.empty() && s.front() == ':') s.remove_prefix(1), colon = true;
  s = trim(s);
  if (!open.empty()) {
    // The closing emphasis, possibly followed by the colon ("**Solution**:").
    if (!s.starts_with(open)) return std::nullopt;
    s.remove_prefix(open.size());
    s = trim(s);
    if (!colon && !s.empty() && s.front() == ':') s.remove_prefix(1), colon = true;
    s = trim(s);
  }
  // "## Solution to part (a)" is a different heading; a colon allows text to follow.
  if (!s.empty() && !colon) return std::nullopt;
  if (!marked && !colon && !s.empty()) return std::nullopt;
  return std::string(s);
}

ProofSections split_proof(std::string_view answer) {
  ProofSections out;
  const std::vector<Line> lines = split_lines(answer);
  size_t sol_line = lines.size(), eval_line = lines.size();
  std::string sol_rest, eval_rest;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string_view line = answer.substr(lines[i].begin, lines[i].end - lines[i].begin);
    if (sol_line == lines.size() && eval_line == lines.size()) {
      if (auto rest = heading_rest(line, "solution")) {
        sol_line = i, sol_rest = *rest;
        continue;
      }
    }
    if (auto rest = heading_rest(line, "self evaluation")) eval_line = i, eval_rest = *rest;
  }
  out.has_solution_heading = sol_line < lines.size();
  out.has_evaluation_heading = eval_line < lines.size();
  const size_t sol_from = out.has_solution_heading ? std::min(lines[sol_line].end + 1, answer.size()) : 0;
  const size_t sol_to = out.has_evaluation_heading ? lines[eval_line].begin : answer.size();
  out.solution = section(out.has_solution_heading ? sol_rest : "", answer, sol_from, std::max(sol_from, sol_to));
  if (out.has_evaluation_heading) {
    const size_t from = std::min(lines[eval_line].end + 1, answer.size());
    out.self_evaluation = section(eval_rest, answer, from, answer.size());
  }
  return out;
}

std::optional<std::string> last_boxed(std::string_view text) {
  static constexpr std::string_view kBox = "\\boxed";
  size_t at = text.size();
  while (at > 0) {
    const size_t found = text.rfind(kBox, at - 1);
    if (found == std::string_view::npos) break;
    std::string_view s = text.substr(found + kBox.size());
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    if (auto inner = eat_group(s)) return std::string(*inner);
    at = found;
  }
  return std::nullopt;
}

std::optional<double> parse_score(std::string_view boxed) {
  std::string_view s = trim(boxed);
  // Wrappers a model puts around the number: $...$, \(...\), \text{...}, \textbf{...}, \mathbf{...}.
  for (bool changed = true; changed;) {
    changed = false;
    if (s.size() >= 2 && s.front() == '$' && s.back() == '$') s = trim(s.substr(1, s.size() - 2)), changed = true;
    if (s.starts_with("\\(") && s.ends_with("\\)")) s = trim(s.substr(2, s.size() - 4)), changed = true;
    for (std::string_view cmd : {"\\text", "\\textbf", "\\mathbf", "\\mathrm"}) {
      std::string_view t = s;
      if (!t.starts_with(cmd)) continue;
      t.remove_prefix(cmd.size());
      t = trim(t);
      auto inner = eat_group(t);
      if (inner && trim(t).empty()) s = trim(*inner), changed = true;
    }
  }
  if (s.empty()) return std::nullopt;
  for (std::string_view cmd : {"\\frac", "\\dfrac", "\\tfrac"}) {
    if (!s.starts_with(cmd)) continue;
    std::string_view t = s.substr(cmd.size());
    const auto num = eat_frac_arg(t), den = eat_frac_arg(t);
    if (!num || !den || !trim(t).empty()) return std::nullopt;
    return ratio(*num, *den);
  }
  if (const size_t slash = s.find('/'); slash != std::string_view::npos) return ratio(s.substr(0, slash), s.substr(slash + 1));
  // A plain decimal: digits with at most one point.
  size_t digits = 0, points = 0;
  for (char c : s) {
    if (c >= '0' && c <= '9') ++digits;
    else if (c == '.') ++points;
    else return std::nullopt;
  }
  if (digits == 0 || points > 1 || s.size() > 12) return std::nullopt;
  return score_value(std::strtod(std::string(s).c_str(), nullptr));
}

std::optional<double> boxed_score(std::string_view text) {
  const auto box = last_boxed(text);
  if (!box) return std::nullopt;
  return parse_score(*box);
}

ParsedProof parse_proof(std::string_view generated, bool started_thinking) {
  ParsedProof p;
  p.answer = proof_answer(generated, started_thinking);
  p.sections = split_proof(p.answer);
  if (p.sections.has_evaluation_heading) p.self_score = boxed_score(p.sections.self_evaluation);
  return p;
}

ParsedRating parse_rating(std::string_view generated, bool started_thinking) {
  ParsedRating r;
  r.answer = proof_answer(generated, started_thinking);
  // The preamble, matched without regard to case or the spacing around it.
  std::string folded;
  std::vector<size_t> origin;  // folded index -> answer index
  for (size_t i = 0; i < r.answer.size(); ++i) {
    if (is_space(r.answer[i])) {
      if (!folded.empty() && folded.back() == ' ') continue;
      folded += ' ';
    } else {
      folded += lower(r.answer[i]);
    }
    origin.push_back(i);
  }
  std::string want;
  for (char c : kEvaluationPreamble) want += lower(c);
  const size_t at = folded.find(want);
  if (at != std::string::npos) {
    r.has_preamble = true;
    const size_t end = at + want.size() < origin.size() ? origin[at + want.size()] : r.answer.size();
    r.analysis = std::string(trim(std::string_view(r.answer).substr(end)));
  } else {
    r.analysis = r.answer;
  }
  r.score = boxed_score(r.answer);
  return r;
}

std::string format_score(std::optional<double> score) {
  if (!score) return "-";
  if (*score == 0.5) return "0.5";
  return *score == 0 ? "0" : "1";
}

}  // namespace hearth

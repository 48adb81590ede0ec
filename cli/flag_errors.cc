#include "cli/flag_errors.h"

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace hearth::cli {

namespace {

// cxxopts 3 quotes the value with U+2018 / U+2019 (with ASCII apostrophes on Windows).
struct Quotes {
  std::string_view prefix, suffix;
};
constexpr Quotes kQuotes[] = {{"Argument \u2018", "\u2019 failed to parse"}, {"Argument '", "' failed to parse"}};

std::optional<std::string> bad_value(std::string_view m) {
  for (const Quotes& q : kQuotes)
    if (m.size() >= q.prefix.size() + q.suffix.size() && m.substr(0, q.prefix.size()) == q.prefix &&
        m.substr(m.size() - q.suffix.size()) == q.suffix)
      return std::string(m.substr(q.prefix.size(), m.size() - q.prefix.size() - q.suffix.size()));
  return std::nullopt;
}

// A flag given `value` on the command line: its name as written and the arguments that
// give it the value (one, as in --flag=VALUE or -fVALUE, or two).
struct Given {
  std::string flag;
  std::vector<std::string> args;
};

std::vector<Given> flags_given(const std::string& value, int argc, const char* const* argv) {
  std::vector<Given> found;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.size() < 2 || a[0] != '-' || a == "--") continue;
    const bool next_is_value = i + 1 < argc && argv[i + 1] == value;
    if (a.compare(0, 2, "--") == 0) {
      const size_t eq = a.find('=');
      if (eq != std::string::npos) {
        if (a.substr(eq + 1) == value) found.push_back({a.substr(0, eq), {a}});
      } else if (next_is_value) {
        found.push_back({a, {a, value}});
      }
    } else if (a.size() > 2) {
      if (a.substr(2) == value) found.push_back({a.substr(0, 2), {a}});
    } else if (next_is_value) {
      found.push_back({a, {a, value}});
    }
  }
  return found;
}

// Whether opts refuses `args` alone (after a program name) as a value it cannot convert.
bool refuses(cxxopts::Options& opts, const char* prog, const std::vector<std::string>& args) {
  std::vector<const char*> argv{prog};
  for (const std::string& a : args) argv.push_back(a.c_str());
  try {
    opts.parse(int(argv.size()), argv.data());
  } catch (const cxxopts::exceptions::incorrect_argument_type&) {
    return true;
  } catch (const cxxopts::exceptions::exception&) {
  }
  return false;
}

}  // namespace

cxxopts::ParseResult parse_flags(cxxopts::Options& opts, int argc, const char* const* argv) {
  try {
    return opts.parse(argc, argv);
  } catch (const cxxopts::exceptions::incorrect_argument_type& e) {
    const std::optional<std::string> value = bad_value(e.what());
    if (!value) throw;
    for (const Given& g : flags_given(*value, argc, argv))
      if (refuses(opts, argc > 0 ? argv[0] : "hearth", g.args))
        throw std::invalid_argument(g.flag + ": '" + *value + "' is not a valid value (see --help)");
    throw;
  }
}

}  // namespace hearth::cli

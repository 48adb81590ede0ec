// Flag errors that name the flag (cli/flag_errors.h): cxxopts's own parse of options like
// the commands', against command lines written out by hand.
// GCC 12 reports a -Wrestrict false positive inside cxxopts's integer parser (libstdc++'s
// string copy inlined into SplitInteger) in this file, which parses integer options.
#pragma GCC diagnostic ignored "-Wrestrict"

#include <doctest/doctest.h>

#include <cxxopts.hpp>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/flag_errors.h"

namespace cli_flag_errors_suite {

using hearth::cli::parse_flags;

namespace {

cxxopts::Options options() {
  cxxopts::Options opts("hearth test");
  opts.add_options()("t,threads", "", cxxopts::value<int>())("seed", "", cxxopts::value<uint64_t>())(
      "temp", "", cxxopts::value<double>())("m,model", "", cxxopts::value<std::string>())("q,quiet", "");
  return opts;
}

// The message parse_flags throws for `line` ("" when it parses).
std::string message(std::vector<const char*> line) {
  cxxopts::Options opts = options();
  try {
    parse_flags(opts, int(line.size()), line.data());
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("flag errors: a value that does not convert names its flag as the user wrote it") {
  const std::string tail = " is not a valid value (see --help)";
  CHECK(message({"hearth", "-m", "x.gguf", "-t", "x"}) == "-t: 'x'" + tail);
  CHECK(message({"hearth", "--threads", "1.5"}) == "--threads: '1.5'" + tail);
  CHECK(message({"hearth", "--threads=two"}) == "--threads: 'two'" + tail);
  CHECK(message({"hearth", "-tx"}) == "-t: 'x'" + tail);
  CHECK(message({"hearth", "-t", "2", "--seed", "-1"}) == "--seed: '-1'" + tail);
  // The same text given to a flag that takes it: the flag that refuses it is named.
  CHECK(message({"hearth", "--model", "abc", "--temp", "abc"}) == "--temp: 'abc'" + tail);
  CHECK(message({"hearth", "--temp", "abc", "-m", "abc"}) == "--temp: 'abc'" + tail);
}

TEST_CASE("flag errors: good lines parse and other errors keep cxxopts's message") {
  {
    cxxopts::Options opts = options();
    const std::vector<const char*> line{"hearth", "-t", "3", "--temp=0.5", "-q"};
    const cxxopts::ParseResult r = parse_flags(opts, int(line.size()), line.data());
    CHECK(r["threads"].as<int>() == 3);
    CHECK(r["temp"].as<double>() == 0.5);
    CHECK(r.count("quiet") == 1);
  }
  const std::string unknown = message({"hearth", "--bogus"});
  CHECK(unknown.find("bogus") != std::string::npos);
  CHECK(unknown.find("not a valid value") == std::string::npos);
  const std::string missing = message({"hearth", "--threads"});
  CHECK(missing.find("threads") != std::string::npos);
  CHECK(missing.find("not a valid value") == std::string::npos);
}

}  // namespace cli_flag_errors_suite

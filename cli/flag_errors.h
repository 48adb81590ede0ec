// Parsing a command's flags with errors that name the flag.
#pragma once
#include <cxxopts.hpp>

namespace hearth::cli {

// opts.parse(argc, argv), except for a value cxxopts cannot convert to its option's type:
// cxxopts says only "Argument ‘VALUE’ failed to parse", so `-t x` and `--seed x` read the
// same. That becomes std::invalid_argument("FLAG: 'VALUE' is not a valid value (see
// --help)"), FLAG as the user wrote it (`-t`, `--seed`): of the flags given VALUE
// (`--flag VALUE`, `--flag=VALUE`, `-fVALUE`), the first that opts refuses with VALUE alone.
// Every other error propagates unchanged.
cxxopts::ParseResult parse_flags(cxxopts::Options& opts, int argc, const char* const* argv);

}  // namespace hearth::cli

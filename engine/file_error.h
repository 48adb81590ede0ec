// The error every reader and writer of a user's file throws for what is wrong with it:
// one line, "<file>: <what>", so the CLI can print it as it is.
#pragma once
#include <filesystem>
#include <string>

namespace hearth {

[[noreturn]] void fail(const std::filesystem::path& file, const std::string& what);

}  // namespace hearth

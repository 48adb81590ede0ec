// Checking the one-line errors that bad input must produce.
#pragma once
#include <doctest/doctest.h>

#include <functional>
#include <initializer_list>
#include <stdexcept>
#include <string>

namespace hearth::testing {

// The message of the std::runtime_error `f` throws, or "<no exception>".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "<no exception>";
}

// Asserts `f` throws std::runtime_error whose one-line message contains every part.
inline void check_error(const std::function<void()>& f, std::initializer_list<std::string> parts) {
  const std::string msg = error_of(f);
  for (const std::string& part : parts)
    CHECK_MESSAGE(msg.find(part) != std::string::npos, "'", part, "' not in: ", msg);
  CHECK_MESSAGE(msg.find('\n') == std::string::npos, "multi-line message: ", msg);
}

}  // namespace hearth::testing

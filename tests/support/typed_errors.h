// Checking one-line errors of a given exception type (errors.h checks std::runtime_error;
// library argument checks throw std::invalid_argument, a std::logic_error).
#pragma once
#include <doctest/doctest.h>

#include <functional>
#include <initializer_list>
#include <string>

namespace hearth::testing {

// Asserts `f` throws an E whose one-line message contains every part.
template <class E>
void check_error_as(const std::function<void()>& f, std::initializer_list<std::string> parts) {
  std::string msg = "<no exception>";
  try {
    f();
  } catch (const E& e) {
    msg = e.what();
  }
  for (const std::string& part : parts)
    CHECK_MESSAGE(msg.find(part) != std::string::npos, "'", part, "' not in: ", msg);
  CHECK_MESSAGE(msg.find('\n') == std::string::npos, "multi-line message: ", msg);
}

}  // namespace hearth::testing

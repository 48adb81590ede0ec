#include "engine/file_error.h"

#include <stdexcept>

namespace hearth {

void fail(const std::filesystem::path& file, const std::string& what) {
  // Appended in place: GCC 12 warns (-Wrestrict, a false positive) on path.string() + ": "
  // + what once this is compiled on its own.
  std::string message = file.string();
  message += ": ";
  message += what;
  throw std::runtime_error(message);
}

}  // namespace hearth

#include "engine/file_error.h"

#include <stdexcept>

namespace hearth {

void fail(const std::filesystem::path& file, const std::string& what) {
  throw std::runtime_error(file.string() + ": " + what);
}

}  // namespace hearth

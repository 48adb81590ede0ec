#include "offload/memory.h"

#include <fstream>
#include <iterator>
#include <sstream>

namespace hearth {

std::optional<uint64_t> parse_mem_available(const std::string& meminfo) {
  std::istringstream in(meminfo);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("MemAvailable:", 0) != 0) continue;
    std::istringstream fields(line.substr(13));
    uint64_t value = 0;
    std::string unit;
    if (!(fields >> value)) return std::nullopt;
    fields >> unit;
    if (unit.empty()) return value;  // bytes (the kernel always says kB; be lenient)
    if (unit == "kB") return value * 1024;
    return std::nullopt;
  }
  return std::nullopt;
}

std::optional<uint64_t> mem_available_bytes() {
  std::ifstream f("/proc/meminfo");
  if (!f) return std::nullopt;
  return parse_mem_available(std::string(std::istreambuf_iterator<char>(f), {}));
}

}  // namespace hearth

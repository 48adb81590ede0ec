#include "offload/byte_size.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace hearth {

int64_t parse_byte_size(std::string_view text) {
  const std::string s(text);
  auto bad = [&](const std::string& why) {
    return std::invalid_argument("'" + s + "' is not a byte size" + why + " (e.g. 24G, 512M, 1.5T)");
  };
  // The number: digits with at most one decimal point (no sign, no exponent).
  size_t i = 0;
  bool digits = false, point = false;
  for (; i < s.size(); ++i) {
    if (std::isdigit(static_cast<unsigned char>(s[i]))) digits = true;
    else if (s[i] == '.' && !point) point = true;
    else break;
  }
  if (!digits) throw bad(s.empty() || s[0] != '-' ? "" : ": it is negative");
  const double number = std::strtod(s.substr(0, i).c_str(), nullptr);
  std::string unit;
  for (char ch : s.substr(i)) unit += char(std::toupper(static_cast<unsigned char>(ch)));
  double mult = 0;
  const char* prefixes = "KMGT";
  if (unit.empty() || unit == "B") mult = 1;
  for (int p = 0; p < 4; ++p)
    for (const std::string suffix : {"", "B", "IB"})
      if (unit == std::string(1, prefixes[p]) + suffix) mult = std::ldexp(1.0, 10 * (p + 1));
  if (mult == 0) throw bad(": unknown unit '" + s.substr(i) + "'");
  const double bytes = std::floor(number * mult);
  if (!(bytes < 0x1p63)) throw bad(": too large");
  return int64_t(bytes);
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (std::fabs(bytes) >= 1024.0 && u < 4) {
    bytes /= 1024.0;
    ++u;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, u ? "%.2f %s" : "%.0f %s", bytes, units[u]);
  return buf;
}

}  // namespace hearth

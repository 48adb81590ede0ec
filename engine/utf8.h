// UTF-8 validation shared by the places that must not pass invalid text on (JSON output,
// user-supplied prompts).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace hearth {

// The length (1..4) of the well-formed UTF-8 sequence starting at s[i], or 0 when the
// bytes there are not one (a stray continuation byte, a truncated or overlong sequence,
// a surrogate, a code point above U+10FFFF).
inline size_t utf8_sequence_length(std::string_view s, size_t i) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  size_t len = 0;
  uint32_t cp = 0, min = 0;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F, min = 0x80;
  else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
  else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07, min = 0x10000;
  else return 0;
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    const unsigned char d = static_cast<unsigned char>(s[i + k]);
    if ((d & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (d & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

}  // namespace hearth

// Byte counts as people write them: "24G", "512M", "1.5T", "4096" (binary multiples:
// K = 1024, M = 1024^2, G = 1024^3, T = 1024^4; "GB"/"GiB" mean the same as "G").
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace hearth {

// Non-negative sizes only; the result is rounded down to whole bytes. Throws
// std::invalid_argument quoting the text for anything else (empty, negative, an unknown
// unit, trailing junk, or more than 2^63 bytes).
int64_t parse_byte_size(std::string_view text);

// "23.50 GiB", "512.00 MiB", "1.20 KiB", "17 B": the largest binary unit that keeps the
// number at or above 1.
std::string format_bytes(double bytes);

}  // namespace hearth

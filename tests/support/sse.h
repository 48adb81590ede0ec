// Reading a server-sent event stream (text/event-stream) the way an OpenAI client does:
// events end with a blank line; an event's "data:" lines are its payload; lines starting
// with ':' are comments (keep-alives) and carry nothing.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace hearth::testing {

struct SseParse {
  std::vector<std::string> data;  // one payload per event, in order
  bool complete = true;           // false: the stream ends inside an event
  int comments = 0;
};

inline SseParse parse_sse(std::string_view stream) {
  SseParse out;
  std::string payload;
  bool has_data = false, has_line = false;
  size_t pos = 0;
  while (pos < stream.size()) {
    const size_t nl = stream.find('\n', pos);
    if (nl == std::string_view::npos) {
      out.complete = false;
      break;
    }
    std::string_view line = stream.substr(pos, nl - pos);
    pos = nl + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) {  // end of an event
      if (has_data) out.data.push_back(payload);
      payload.clear();
      has_data = has_line = false;
      continue;
    }
    has_line = true;
    if (line.front() == ':') {
      ++out.comments;
    } else if (line.starts_with("data:")) {
      std::string_view v = line.substr(5);
      if (v.starts_with(' ')) v.remove_prefix(1);
      if (has_data) payload += '\n';
      payload += v;
      has_data = true;
    }
  }
  if (has_line) out.complete = false;
  return out;
}

}  // namespace hearth::testing

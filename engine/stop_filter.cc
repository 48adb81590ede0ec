#include "engine/stop_filter.h"

#include <algorithm>

namespace hearth {

bool StopFilter::push(std::string_view piece) {
  text_ += piece;
  if (stops_.empty()) {
    emit(text_.size());
    return false;
  }
  // A match cannot start before `emitted_`: everything earlier was released only once
  // no stop string could begin there.
  size_t first = std::string::npos;
  for (const std::string& s : stops_) {
    const size_t at = text_.find(s, emitted_);
    if (at != std::string::npos) first = std::min(first, at);
  }
  if (first != std::string::npos) {
    text_.resize(first);
    emit(first);
    return true;
  }
  // Hold back the longest tail that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const std::string& s : stops_)
    for (size_t k = std::min(s.size() - 1, text_.size() - emitted_); k > hold; --k)
      if (std::string_view(text_).substr(text_.size() - k) == std::string_view(s).substr(0, k)) {
        hold = k;
        break;
      }
  emit(text_.size() - hold);
  return false;
}

void StopFilter::emit(size_t upto) {
  if (upto > emitted_ && sink_) sink_(std::string_view(text_).substr(emitted_, upto - emitted_));
  emitted_ = std::max(emitted_, upto);
}

}  // namespace hearth

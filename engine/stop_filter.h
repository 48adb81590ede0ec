// Releasing generated text while stop strings may still be forming: text that could be
// the start of a stop string is held back until it either completes one (then generation
// ends and the stop string is never emitted) or can no longer become one.
// Shared by the Generator and the BatchScheduler so both stream the same text.
#pragma once
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace hearth {

class StopFilter {
 public:
  using Sink = std::function<void(std::string_view)>;

  // `text` receives everything pushed (cut before a stop string); `sink` (may be empty)
  // receives the text as it is released. All three must outlive the filter.
  StopFilter(const std::vector<std::string>& stops, std::string& text, const Sink& sink)
      : stops_(stops), text_(text), sink_(sink) {}

  // Appends `piece`; returns true when a stop string completed (the text is cut before it).
  bool push(std::string_view piece);
  // Releases whatever is held back (generation ended without a stop string).
  void finish() { emit(text_.size()); }

 private:
  void emit(size_t upto);

  const std::vector<std::string>& stops_;
  std::string& text_;
  const Sink& sink_;
  size_t emitted_ = 0;
};

}  // namespace hearth

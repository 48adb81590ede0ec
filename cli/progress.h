// A progress display for long byte-counted jobs (hearth quantize: tens to hundreds of
// GB). On a terminal it redraws one line in place, at most ~10 times a second:
//   quantize [########            ]  45%  1.23/2.71 GB  310 MB/s  ETA 0:05  blk.3.ffn_up_exps.weight
// Elsewhere (a log file, a pipe) it prints a plain line every few seconds, so logs stay
// readable. finish() prints the total, the time taken and the mean rate.
//
// Units are decimal (1 GB = 10^9 bytes), as in hearth's other size reports. The rate is
// measured over the last ~10 s (the job's mean before that), so the ETA follows changes
// in speed without jumping on every update.
//
// The formatting is pure functions, and the clock and the output are injectable, so both
// are tested without a terminal or waiting.
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

namespace hearth::cli {

// "512 B", "1.50 kB", "12.3 MB", "123 GB", "1.23 TB": three significant digits.
std::string format_bytes(double bytes);
// "1.23/2.71 GB": done and total in the total's unit.
std::string format_bytes_of(double done, double total);
// "310 MB/s"; "-- B/s" when unknown (not finite or negative).
std::string format_rate(double bytes_per_second);
// "0:05", "12:34", "1:02:03" (rounded to whole seconds); "--:--" when unknown (not finite,
// negative, or 100 hours and more).
std::string format_duration(double seconds);
// "[#####     ]" with `width` cells inside the brackets, fraction clamped to [0, 1].
std::string format_bar(double fraction, int width);

// What one progress line shows.
struct ProgressState {
  std::string_view label;
  uint64_t done = 0, total = 0;
  double rate = -1;         // bytes/s; negative: unknown
  double eta = -1;          // seconds; negative: unknown
  std::string_view item;    // what is being worked on
};
// The terminal line, at most `width` columns: the item is shortened from the left
// ("...ffn_up_exps.weight") to fit, and the whole line cut if even that is not enough.
std::string progress_line_tty(const ProgressState& s, int width);
// The line for logs (no bar, no width limit, no newline).
std::string progress_line_plain(const ProgressState& s);

class ProgressBar {
 public:
  struct Options {
    bool tty = false;                          // redraw in place, or plain lines
    int width = 80;                            // terminal columns
    double tty_interval = 0.1;                 // seconds between redraws on a terminal
    double plain_interval = 5.0;               // seconds between plain lines
    std::function<double()> clock;             // monotonic seconds; default steady_clock
    std::function<void(std::string_view)> out;  // default: stderr, flushed
  };
  // Options for stderr: tty and width from the terminal, if it is one.
  static Options stderr_options();

  ProgressBar(uint64_t total_bytes, std::string label);  // stderr_options()
  ProgressBar(uint64_t total_bytes, std::string label, Options options);
  ~ProgressBar();  // ends a half-drawn terminal line if finish() was not called
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // Records progress; draws if the interval has passed since the last draw (the first
  // call always draws).
  void update(uint64_t done_bytes, std::string_view current_item);
  // The final line: "LABEL: 2.71 GB in 0:09 (301 MB/s)". Idempotent.
  void finish();

  // The rate and ETA the next line would show (for tests and callers that log them).
  double rate() const;
  double eta() const;

 private:
  void draw(double now);

  uint64_t total_;
  std::string label_;
  Options opt_;
  double start_;
  double last_draw_ = -1;
  double last_now_ = 0;  // time of the latest update
  uint64_t done_ = 0;
  std::string item_;
  std::deque<std::pair<double, uint64_t>> samples_;  // (time, done) of recent updates
  bool drawn_tty_ = false;  // a terminal line is on screen without its newline
  bool finished_ = false;
};

}  // namespace hearth::cli

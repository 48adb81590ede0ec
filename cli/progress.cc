#include "cli/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

namespace hearth::cli {

namespace {

constexpr const char* kUnits[] = {"B", "kB", "MB", "GB", "TB", "PB"};
constexpr int kNumUnits = 6;

// The unit and decimals that show v bytes with three significant digits. Thresholds sit
// at the rounding points, so 999.7 MB shows as 1.00 GB, never "1000 MB".
struct Scale {
  int unit = 0;
  int decimals = 0;
  double div = 1;
};

Scale scale_for(double bytes) {
  Scale s;
  if (bytes < 999.5) return s;  // whole bytes
  double v = bytes;
  while (s.unit + 1 < kNumUnits && v >= 999.5) {
    v /= 1000;
    s.div *= 1000;
    ++s.unit;
  }
  s.decimals = v < 9.995 ? 2 : v < 99.95 ? 1 : 0;
  return s;
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

double fraction_of(uint64_t done, uint64_t total) {
  if (total == 0) return 1.0;
  return std::clamp(double(done) / double(total), 0.0, 1.0);
}

std::string percent(double fraction) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%3d%%", int(std::floor(fraction * 100 + 1e-9)));
  return buf;
}

// The part of a line both forms share: "1.23/2.71 GB  310 MB/s  ETA 0:05".
std::string amounts(const ProgressState& s) {
  return format_bytes_of(double(s.done), double(s.total)) + "  " + format_rate(s.rate) + "  ETA " +
         format_duration(s.eta);
}

}  // namespace

std::string format_bytes(double bytes) {
  if (!std::isfinite(bytes) || bytes < 0) return "-- B";
  const Scale s = scale_for(bytes);
  return fixed(bytes / s.div, s.decimals) + " " + kUnits[s.unit];
}

std::string format_bytes_of(double done, double total) {
  const Scale s = scale_for(std::max(total, 0.0));
  return fixed(done / s.div, s.decimals) + "/" + fixed(total / s.div, s.decimals) + " " + kUnits[s.unit];
}

std::string format_rate(double bytes_per_second) {
  if (!std::isfinite(bytes_per_second) || bytes_per_second < 0) return "-- B/s";
  return format_bytes(bytes_per_second) + "/s";
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0 || seconds >= 100 * 3600.0 - 0.5) return "--:--";
  const long long t = std::llround(seconds);
  const long long h = t / 3600, m = t % 3600 / 60, sec = t % 60;
  char buf[32];
  if (h > 0)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", h, m, sec);
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", m, sec);
  return buf;
}

std::string format_bar(double fraction, int width) {
  if (width < 0) width = 0;
  if (!std::isfinite(fraction)) fraction = 0;
  fraction = std::clamp(fraction, 0.0, 1.0);
  const int filled = std::min(width, int(std::floor(fraction * width + 1e-9)));
  std::string bar(size_t(width) + 2, ' ');
  bar.front() = '[';
  bar.back() = ']';
  std::fill_n(bar.begin() + 1, filled, '#');
  return bar;
}

std::string progress_line_tty(const ProgressState& s, int width) {
  const double f = fraction_of(s.done, s.total);
  std::string line = s.label.empty() ? "" : std::string(s.label) + " ";
  line += format_bar(f, 20) + " " + percent(f) + "  " + amounts(s);
  const int64_t room = int64_t(width) - int64_t(line.size()) - 2;
  if (!s.item.empty() && room > 3) {
    if (int64_t(s.item.size()) <= room)
      line += "  " + std::string(s.item);
    else  // the end of a tensor name says the most: "...ffn_up_exps.weight"
      line += "  ..." + std::string(s.item.substr(s.item.size() - size_t(room - 3)));
  }
  if (width >= 0 && line.size() > size_t(width)) line.resize(size_t(width));
  return line;
}

std::string progress_line_plain(const ProgressState& s) {
  std::string line = s.label.empty() ? "" : std::string(s.label) + ": ";
  line += percent(fraction_of(s.done, s.total)) + "  " + amounts(s);
  if (!s.item.empty()) line += "  " + std::string(s.item);
  return line;
}

// ---- ProgressBar -----------------------------------------------------------------

ProgressBar::Options ProgressBar::stderr_options() {
  Options o;
  o.tty = ::isatty(STDERR_FILENO) == 1;
  if (o.tty) {
    struct winsize ws{};
    if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) o.width = ws.ws_col;
  }
  return o;
}

ProgressBar::ProgressBar(uint64_t total_bytes, std::string label)
    : ProgressBar(total_bytes, std::move(label), stderr_options()) {}

ProgressBar::ProgressBar(uint64_t total_bytes, std::string label, Options options)
    : total_(total_bytes), label_(std::move(label)), opt_(std::move(options)) {
  if (!opt_.clock) {
    opt_.clock = [] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
    };
  }
  if (!opt_.out) {
    opt_.out = [](std::string_view s) {
      std::fwrite(s.data(), 1, s.size(), stderr);
      std::fflush(stderr);
    };
  }
  start_ = last_now_ = opt_.clock();
  samples_.emplace_back(start_, 0);
}

ProgressBar::~ProgressBar() {
  if (drawn_tty_ && !finished_) {
    try {
      opt_.out("\n");
    } catch (...) {  // a destructor must not throw; the line stays unterminated
    }
  }
}

void ProgressBar::update(uint64_t done_bytes, std::string_view current_item) {
  if (finished_) return;
  const double now = opt_.clock();
  done_ = done_bytes;
  item_.assign(current_item);
  // Samples every quarter second at most; keep ~10 s of them for the rate.
  if (now - samples_.back().first >= 0.25) samples_.emplace_back(now, done_bytes);
  while (samples_.size() > 2 && now - samples_[1].first >= 10.0) samples_.pop_front();
  last_now_ = now;
  const double interval = opt_.tty ? opt_.tty_interval : opt_.plain_interval;
  if (last_draw_ < 0 || now - last_draw_ >= interval) draw(now);
}

double ProgressBar::rate() const {
  const auto& [t0, d0] = samples_.front();
  const double window = last_now_ - t0;
  if (window >= 1.0 && done_ >= d0) return double(done_ - d0) / window;
  const double elapsed = last_now_ - start_;
  return elapsed >= 0.5 ? double(done_) / elapsed : -1;
}

double ProgressBar::eta() const {
  if (done_ >= total_) return 0;
  const double r = rate();
  return r > 0 ? double(total_ - done_) / r : -1;
}

void ProgressBar::draw(double now) {
  last_draw_ = now;
  const ProgressState s{label_, done_, total_, rate(), eta(), item_};
  if (opt_.tty) {
    // Leave the last column free: some terminals wrap when it is written.
    std::string line = "\r";
    line += progress_line_tty(s, std::max(opt_.width - 1, 1));
    line += "\x1b[K";
    opt_.out(line);
    drawn_tty_ = true;
  } else {
    opt_.out(progress_line_plain(s) + "\n");
  }
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  const double elapsed = opt_.clock() - start_;
  // Appended piece by piece: `"literal" + std::string&&` trips GCC 12's -Wrestrict.
  std::string line = opt_.tty ? "\r" : "";
  if (!label_.empty()) line.append(label_).append(": ");
  line.append(format_bytes(double(done_))).append(" in ").append(format_duration(elapsed));
  if (elapsed > 0) line.append(" (").append(format_rate(double(done_) / elapsed)).append(")");
  if (opt_.tty) line += "\x1b[K";
  line += '\n';
  opt_.out(line);
  drawn_tty_ = false;
}

}  // namespace hearth::cli

// The progress display (cli/progress.h): the pure formatters against strings written
// out by hand, and ProgressBar driven by a fake clock into a captured output.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cli/progress.h"

namespace cli_progress_suite {

using namespace hearth::cli;

TEST_CASE("progress: bytes with three significant digits in decimal units") {
  CHECK(format_bytes(0) == "0 B");
  CHECK(format_bytes(512) == "512 B");
  CHECK(format_bytes(999) == "999 B");
  CHECK(format_bytes(1000) == "1.00 kB");
  CHECK(format_bytes(1234) == "1.23 kB");
  CHECK(format_bytes(12345) == "12.3 kB");
  CHECK(format_bytes(123456) == "123 kB");
  CHECK(format_bytes(999400) == "999 kB");
  CHECK(format_bytes(999600) == "1.00 MB");  // never "1000 kB"
  CHECK(format_bytes(9996) == "10.0 kB");     // never "10.00 kB"
  CHECK(format_bytes(1.23e9) == "1.23 GB");
  CHECK(format_bytes(2.71e12) == "2.71 TB");
  CHECK(format_bytes(-1) == "-- B");
  CHECK(format_bytes_of(1.23e9, 2.71e9) == "1.23/2.71 GB");
  CHECK(format_bytes_of(5e8, 1.5e10) == "0.5/15.0 GB");
  CHECK(format_bytes_of(0, 512) == "0/512 B");
  CHECK(format_bytes_of(6.85e11, 6.85e11) == "685/685 GB");
}

TEST_CASE("progress: rates and durations") {
  CHECK(format_rate(310e6) == "310 MB/s");
  CHECK(format_rate(1.5e9) == "1.50 GB/s");
  CHECK(format_rate(0) == "0 B/s");
  CHECK(format_rate(-1) == "-- B/s");
  CHECK(format_rate(std::numeric_limits<double>::infinity()) == "-- B/s");
  CHECK(format_duration(0) == "0:00");
  CHECK(format_duration(5) == "0:05");
  CHECK(format_duration(4.4) == "0:04");
  CHECK(format_duration(59.6) == "1:00");
  CHECK(format_duration(754) == "12:34");
  CHECK(format_duration(3723) == "1:02:03");
  CHECK(format_duration(359999) == "99:59:59");
  CHECK(format_duration(360000) == "--:--");
  CHECK(format_duration(-1) == "--:--");
  CHECK(format_duration(std::nan("")) == "--:--");
}

TEST_CASE("progress: bars") {
  CHECK(format_bar(0.45, 10) == "[####      ]");
  CHECK(format_bar(0.5, 10) == "[#####     ]");
  CHECK(format_bar(1.0, 4) == "[####]");
  CHECK(format_bar(1.7, 4) == "[####]");
  CHECK(format_bar(-0.2, 4) == "[    ]");
  CHECK(format_bar(0.3, 0) == "[]");
}

TEST_CASE("progress: terminal and log lines") {
  ProgressState s{"quantize", 1230000000, 2710000000, 310e6, 5, "blk.3.ffn_up_exps.weight"};
  const std::string head = "quantize [#########           ]  45%  1.23/2.71 GB  310 MB/s  ETA 0:05";
  CHECK(progress_line_tty(s, 200) == head + "  blk.3.ffn_up_exps.weight");
  // Narrow: the item loses its beginning, then disappears, then the line is cut.
  CHECK(progress_line_tty(s, int(head.size()) + 12) == head + "  ....weight");
  CHECK(progress_line_tty(s, int(head.size()) + 4) == head);
  CHECK(progress_line_tty(s, 20) == head.substr(0, 20));
  CHECK(progress_line_plain(s) == "quantize:  45%  1.23/2.71 GB  310 MB/s  ETA 0:05  blk.3.ffn_up_exps.weight");
  const ProgressState unknown{"", 0, 1000, -1, -1, ""};
  CHECK(progress_line_plain(unknown) == "  0%  0.00/1.00 kB  -- B/s  ETA --:--");
}

namespace {

struct Fake {
  double now = 100.0;
  std::vector<std::string> out;
  ProgressBar::Options options(bool tty) {
    ProgressBar::Options o;
    o.tty = tty;
    o.width = 200;
    o.clock = [this] { return now; };
    o.out = [this](std::string_view s) { out.emplace_back(s); };
    return o;
  }
};

}  // namespace

TEST_CASE("progress: a terminal bar redraws at most every tenth of a second") {
  Fake f;
  {
    ProgressBar bar(1000000000, "quantize", f.options(true));
    bar.update(0, "blk.0.attn_q_a.weight");
    REQUIRE(f.out.size() == 1);  // the first update draws
    CHECK(f.out[0].starts_with("\rquantize [                    ]   0%  0.00/1.00 GB"));
    CHECK(f.out[0].ends_with("blk.0.attn_q_a.weight\x1b[K"));
    f.now += 0.05;
    bar.update(10000000, "blk.0.attn_q_b.weight");
    CHECK(f.out.size() == 1);
    f.now += 0.06;
    bar.update(20000000, "blk.0.attn_q_b.weight");
    CHECK(f.out.size() == 2);
    // 2 s in at 100 MB/s: rate 100 MB/s, ETA 8 s.
    f.now = 102.0;
    bar.update(200000000, "blk.1.ffn_up.weight");
    CHECK(bar.rate() == doctest::Approx(100e6));
    CHECK(bar.eta() == doctest::Approx(8.0));
    CHECK(f.out.back() == "\rquantize [####                ]  20%  0.20/1.00 GB  100 MB/s  ETA 0:08  blk.1.ffn_up.weight\x1b[K");
  }
  // Dropped without finish(): the half-drawn line gets its newline.
  CHECK(f.out.back() == "\n");
}

TEST_CASE("progress: the rate follows the last ten seconds") {
  Fake f;
  ProgressBar bar(10000000000, "q", f.options(true));
  double done = 0;
  for (int i = 0; i < 40; ++i) {  // 20 s at 100 MB/s
    f.now += 0.5;
    done += 50e6;
    bar.update(uint64_t(done), "");
  }
  CHECK(bar.rate() == doctest::Approx(100e6));
  for (int i = 0; i < 40; ++i) {  // then 20 s at 50 MB/s
    f.now += 0.5;
    done += 25e6;
    bar.update(uint64_t(done), "");
  }
  CHECK(bar.rate() == doctest::Approx(50e6));
  CHECK(bar.eta() == doctest::Approx((10e9 - done) / 50e6));
}

TEST_CASE("progress: plain lines every five seconds and a final summary") {
  Fake f;
  ProgressBar bar(2710000000, "quantize", f.options(false));
  for (int i = 0; i <= 9; ++i) {
    std::string item = "t";
    item += std::to_string(i);
    bar.update(uint64_t(i) * 301111111, item);
    if (i < 9) f.now += 1.0;
  }
  // Lines at 0 s and 5 s only.
  REQUIRE(f.out.size() == 2);
  CHECK(f.out[0] == "quantize:   0%  0.00/2.71 GB  -- B/s  ETA --:--  t0\n");
  CHECK(f.out[1] == "quantize:  55%  1.51/2.71 GB  301 MB/s  ETA 0:04  t5\n");
  bar.update(2710000000, "");
  bar.finish();
  CHECK(f.out.back() == "quantize: 2.71 GB in 0:09 (301 MB/s)\n");
  const size_t n = f.out.size();
  bar.finish();
  bar.update(5, "x");
  CHECK(f.out.size() == n);
}

TEST_CASE("progress: finish on a terminal overwrites the bar") {
  Fake f;
  ProgressBar bar(1000, "", f.options(true));
  bar.update(1000, "last");
  f.now += 2;
  bar.finish();
  CHECK(f.out.back() == "\r1.00 kB in 0:02 (500 B/s)\x1b[K\n");
}

}  // namespace cli_progress_suite

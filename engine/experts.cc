#include "engine/experts.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "engine/ops.h"
#include "quant/weight_matrix.h"

namespace hearth {

namespace {

// Weight bytes one work item streams: about a quarter of a thread's share of the region,
// so the last items still balance the threads, within [kMinItemBytes, kMaxItemBytes].
// Long items stream faster: every item starts a new stream (two for gate and up) that the
// prefetchers (and the kernels' 4 KB software prefetch) must first catch up with. The
// routed experts of a decode step on the bench preset (8 experts x 11 layers, Q8_0, two
// threads of a Xeon, a throwaway driver over experts_accumulate) streamed at 20-21 GB/s in
// 128 KB items and 25-26 GB/s in 2 MB items, where one long matrix streams at 27-28. On a
// Zen 5 EPYC at Q4_K, whole experts per item (a quarter of a thread's share: 2.4 MB for
// gate and up, 1.2 MB for down) streamed at 48.1-51.8 GB/s against 43.7-48.7 in items of
// an eighth capped at 2 MB, alternated in the same driver. A real V3.2 expert's gate and up
// are 16.5 MB at Q4_K, so the cap still cuts them in two.
constexpr int64_t kMinItemBytes = int64_t(128) << 10;
constexpr int64_t kMaxItemBytes = int64_t(8) << 20;
constexpr int64_t kItemsPerThread = 4;

int64_t item_bytes(int64_t region_bytes, int threads) {
  return std::clamp<int64_t>(region_bytes / (kItemsPerThread * std::max(1, threads)), kMinItemBytes, kMaxItemBytes);
}

int64_t rows_per_item(const WeightMatrix& w, int64_t matrices, int64_t bytes) {
  const int64_t per_row = std::max<int64_t>(1, w.bytes() / std::max<int64_t>(1, w.rows)) * matrices;
  return std::max<int64_t>(8, (bytes / per_row) & ~int64_t(7));
}

struct Slot {
  const Mlp* mlp;
  const int32_t* pick;  // rows of x (nullptr: rows 0..n-1)
  int64_t n;
  size_t gate_in, up_in;  // indices into Scratch::x_rows
  size_t h_off;           // [n][inter] in Scratch::h and Scratch::u
  float* y;               // [n][hidden]
  std::atomic<double>* busy = nullptr;  // ExpertWork::busy
};

struct Item {
  int32_t slot;
  int32_t r0, r1;
};

// Reused from call to call on the thread that drives the step: nothing is allocated
// once the buffers have grown to the largest step seen.
struct Scratch {
  std::vector<ActivationRows> x_rows;  // x prepared for each distinct activation format
  size_t x_used = 0;
  std::vector<ActivationRows> h_rows;  // per slot: SiLU(gate) * up prepared for down
  std::vector<Slot> slots;
  std::vector<Item> up_items, down_items;
  std::vector<float> h, u, y;
  // Per slot in the one-region pass: up items not finished yet, and whether down's input
  // is ready.
  std::vector<std::atomic<int>> up_left, ready;
};

Scratch& scratch() {
  static thread_local Scratch s;
  return s;
}

size_t prepared_x(Scratch& s, const WeightMatrix& w, const float* x, int64_t T) {
  for (size_t i = 0; i < s.x_used; ++i)
    if (s.x_rows[i].fits(w)) return i;
  if (s.x_rows.size() <= s.x_used) s.x_rows.resize(s.x_used + 1);
  s.x_rows[s.x_used].prepare(w.dtype, x, w.cols, T, w.cols);
  return s.x_used++;
}

// Runs fn(item) for every item, items handed out in order to whichever thread is free.
template <class Fn>
void for_items(ThreadPool& pool, int64_t count, Fn&& fn) {
  struct Shared {
    std::atomic<int64_t> next{0};
    int64_t count;
    std::remove_reference_t<Fn>* fn;
  } shared{{0}, count, &fn};
  // One captured pointer: fits std::function's small buffer, so no allocation per region.
  pool.parallel_for(pool.size(), [sh = &shared](int64_t, int64_t) {
    for (int64_t i; (i = sh->next.fetch_add(1, std::memory_order_relaxed)) < sh->count;) (*sh->fn)(i);
  });
}

// Every item of s.slots (already filled, with T rows of x behind them).
void run_slots(ThreadPool& pool, Scratch& s, const ActivationObserver* observe) {
  s.up_items.clear();
  s.down_items.clear();
  size_t h_total = 0;
  int64_t up_bytes = 0, down_bytes = 0;
  for (const Slot& sl : s.slots) {
    up_bytes += sl.mlp->gate.bytes() + sl.mlp->up.bytes();
    down_bytes += sl.mlp->down.bytes();
  }
  const int64_t up_item = item_bytes(up_bytes, pool.size()), down_item = item_bytes(down_bytes, pool.size());
  for (size_t k = 0; k < s.slots.size(); ++k) {
    Slot& sl = s.slots[k];
    const Mlp& m = *sl.mlp;
    sl.h_off = h_total;
    h_total += size_t(sl.n * m.gate.rows);
    const int64_t ru = rows_per_item(m.gate, 2, up_item), rd = rows_per_item(m.down, 1, down_item);
    for (int64_t r = 0; r < m.gate.rows; r += ru)
      s.up_items.push_back({int32_t(k), int32_t(r), int32_t(std::min(m.gate.rows, r + ru))});
    for (int64_t r = 0; r < m.down.rows; r += rd)
      s.down_items.push_back({int32_t(k), int32_t(r), int32_t(std::min(m.down.rows, r + rd))});
  }
  if (s.h.size() < h_total) {
    s.h.resize(h_total);
    s.u.resize(h_total);
  }

  // An item's work; the seconds it takes go to its slot's busy counter, if any.
  auto timed = [&](const Item& it, auto&& work) {
    std::atomic<double>* busy = s.slots[size_t(it.slot)].busy;
    if (!busy) return work();
    const auto t0 = std::chrono::steady_clock::now();
    work();
    busy->fetch_add(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                    std::memory_order_relaxed);
  };
  auto run_up = [&](const Item& it) {
    const Slot& sl = s.slots[size_t(it.slot)];
    const Mlp& m = *sl.mlp;
    const int64_t inter = m.gate.rows;
    float* h = s.h.data() + sl.h_off;
    float* u = s.u.data() + sl.h_off;
    matmul_rows(m.gate, s.x_rows[sl.gate_in], sl.pick, sl.n, h, inter, it.r0, it.r1);
    matmul_rows(m.up, s.x_rows[sl.up_in], sl.pick, sl.n, u, inter, it.r0, it.r1);
    for (int64_t t = 0; t < sl.n; ++t)
      for (int64_t r = it.r0; r < it.r1; ++r) h[t * inter + r] = silu(h[t * inter + r]) * u[t * inter + r];
  };
  // Down's input, quantized once per row.
  if (s.h_rows.size() < s.slots.size()) s.h_rows.resize(s.slots.size());
  auto prepare_h = [&](int64_t k) {
    const Slot& sl = s.slots[size_t(k)];
    const int64_t inter = sl.mlp->gate.rows;
    s.h_rows[size_t(k)].prepare(sl.mlp->down.dtype, s.h.data() + sl.h_off, inter, sl.n, inter);
  };
  auto run_down = [&](const Item& it) {
    const Slot& sl = s.slots[size_t(it.slot)];
    matmul_rows(sl.mlp->down, s.h_rows[size_t(it.slot)], nullptr, sl.n, sl.y, sl.mlp->down.rows, it.r0, it.r1);
  };

  if (observe) {
    // The observer sees every expert's whole hidden rows before down reads them: the
    // gates and ups first, then the downs, as two regions.
    for_items(pool, int64_t(s.up_items.size()), [&](int64_t i) {
      const Item& it = s.up_items[size_t(i)];
      timed(it, [&] { run_up(it); });
    });
    for (const Slot& sl : s.slots) (*observe)(&sl.mlp->down, s.h.data() + sl.h_off, sl.n, sl.mlp->gate.rows);
    for_items(pool, int64_t(s.slots.size()), prepare_h);
    for_items(pool, int64_t(s.down_items.size()), [&](int64_t i) {
      const Item& it = s.down_items[size_t(i)];
      timed(it, [&] { run_down(it); });
    });
    return;
  }

  // One region: the up items in slot order, then the down items. The thread that
  // finishes a slot's last up item quantizes the slot's hidden rows and marks it ready;
  // a down item waits until its slot is. Items are handed out in order, so when a down
  // item is handed out every up item already belongs to a running thread: the wait
  // ends. With a region for the ups and another for the downs, each thread waited at
  // the barrier for the other's last item, and one thread quantized down's inputs
  // between them (the bench preset's Q4_K decode, two threads of a Zen 5 EPYC:
  // docs/performance.md).
  const size_t S = s.slots.size();
  if (s.up_left.size() < S) {  // atomics cannot be moved: new vectors, not resize
    s.up_left = std::vector<std::atomic<int>>(S);
    s.ready = std::vector<std::atomic<int>>(S);
  }
  for (size_t k = 0; k < S; ++k) {
    s.up_left[k].store(0, std::memory_order_relaxed);
    s.ready[k].store(0, std::memory_order_relaxed);
  }
  for (const Item& it : s.up_items) s.up_left[size_t(it.slot)].fetch_add(1, std::memory_order_relaxed);
  const int64_t n_up = int64_t(s.up_items.size());
  for_items(pool, n_up + int64_t(s.down_items.size()), [&](int64_t i) {
    if (i < n_up) {
      const Item& it = s.up_items[size_t(i)];
      timed(it, [&] {
        run_up(it);
        // acq_rel: the last item to finish sees every other item's rows of h.
        if (s.up_left[size_t(it.slot)].fetch_sub(1, std::memory_order_acq_rel) == 1) {
          prepare_h(it.slot);
          s.ready[size_t(it.slot)].store(1, std::memory_order_release);
        }
      });
      return;
    }
    const Item& it = s.down_items[size_t(i - n_up)];
    while (!s.ready[size_t(it.slot)].load(std::memory_order_acquire)) cpu_relax();
    timed(it, [&] { run_down(it); });
  });
}

}  // namespace

namespace {

// experts_accumulate with expert i's weights given by mlp_of(i).
template <class MlpOf>
void accumulate(ThreadPool& pool, const std::vector<ExpertWork>& experts, MlpOf&& mlp_of, const float* x,
                int64_t hidden, float* out, const ActivationObserver* observe) {
  Scratch& s = scratch();
  s.slots.clear();
  s.x_used = 0;
  int64_t T = 0, y_total = 0;
  for (const ExpertWork& e : experts) {
    if (e.rows.empty()) continue;
    T = std::max<int64_t>(T, e.rows.back() + 1);
    y_total += int64_t(e.rows.size()) * hidden;
  }
  if (y_total == 0) return;
  if (s.y.size() < size_t(y_total)) s.y.resize(size_t(y_total));
  int64_t y_off = 0;
  for (size_t i = 0; i < experts.size(); ++i) {
    const ExpertWork& e = experts[i];
    if (e.rows.empty()) continue;
    const Mlp& m = mlp_of(i);
    const int64_t n = int64_t(e.rows.size());
    if (observe)
      for (int32_t r : e.rows) {
        (*observe)(&m.gate, x + int64_t(r) * hidden, 1, hidden);
        (*observe)(&m.up, x + int64_t(r) * hidden, 1, hidden);
      }
    const size_t gi = prepared_x(s, m.gate, x, T), ui = prepared_x(s, m.up, x, T);
    s.slots.push_back({&m, e.rows.data(), n, gi, ui, 0, s.y.data() + y_off, e.busy});
    y_off += n * hidden;
  }
  run_slots(pool, s, observe);

  // The weighted sum, in list order (the order a per-expert loop would add in).
  size_t k = 0;
  for (const ExpertWork& e : experts) {
    if (e.rows.empty()) continue;
    const float* y = s.slots[k++].y;
    for (size_t i = 0; i < e.rows.size(); ++i) {
      float* o = out + int64_t(e.rows[i]) * hidden;
      const float w = e.weights[i];
      const float* yi = y + int64_t(i) * hidden;
      for (int64_t d = 0; d < hidden; ++d) o[d] += w * yi[d];
    }
  }
}

}  // namespace

void experts_accumulate(ThreadPool& pool, const std::vector<ExpertWork>& experts, const float* x, int64_t hidden,
                        float* out, const ActivationObserver* observe) {
  accumulate(pool, experts, [&](size_t i) -> const Mlp& { return *experts[i].mlp; }, x, hidden, out, observe);
}

void experts_accumulate(ThreadPool& pool, const std::vector<ExpertWork>& experts, std::span<const Mlp> weights,
                        const float* x, int64_t hidden, float* out, const ActivationObserver* observe) {
  if (weights.size() != experts.size())
    throw std::invalid_argument("experts_accumulate: " + std::to_string(weights.size()) + " weight sets for " +
                                std::to_string(experts.size()) + " experts");
  accumulate(pool, experts, [&](size_t i) -> const Mlp& { return weights[i]; }, x, hidden, out, observe);
}

void mlp_rows(ThreadPool& pool, const Mlp& mlp, const float* x, int64_t rows, float* out,
              const ActivationObserver* observe) {
  if (rows <= 0) return;
  if (observe) {
    (*observe)(&mlp.gate, x, rows, mlp.gate.cols);
    (*observe)(&mlp.up, x, rows, mlp.up.cols);
  }
  Scratch& s = scratch();
  s.slots.clear();
  s.x_used = 0;
  const size_t gi = prepared_x(s, mlp.gate, x, rows), ui = prepared_x(s, mlp.up, x, rows);
  s.slots.push_back({&mlp, nullptr, rows, gi, ui, 0, out});
  run_slots(pool, s, observe);
}

}  // namespace hearth

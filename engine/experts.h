// Runs several SiLU-gated MLPs (the experts a MoE step hit, or one dense MLP) over their
// rows of one activation batch in one parallel region: the work items for the gate and up
// projections of every expert, then those for every down projection, each down item
// starting once its expert's hidden rows are ready (with an activation observer: a region
// for the gates and ups, then one for the downs).
//
// Each expert's input rows are quantized once per call (not once per projection and
// thread), gate and up are computed in the same work item so SiLU(gate) * up is formed
// without a second pass, and the work items (expert, block of output rows) are handed
// out dynamically so each thread streams whole weight blocks and a thread slowed by
// the machine does not hold the others back. Every output element is one dot product
// computed exactly as linear() computes it, so results are bit-identical to running
// linear() three times per expert, whatever the thread count.
#pragma once
#include <atomic>
#include <cstdint>
#include <span>
#include <vector>

#include "engine/model.h"
#include "engine/profile.h"
#include "offload/thread_pool.h"

namespace hearth {

struct ExpertWork {
  const Mlp* mlp = nullptr;
  std::vector<int32_t> rows;   // rows of x this expert sees, ascending
  std::vector<float> weights;  // the weight of its output in each of those rows
  // Optional (a profiler's): the seconds threads spend on this expert's work are added
  // here, summed over threads. Several experts may share one counter.
  std::atomic<double>* busy = nullptr;
};

// out[r] += sum over experts, in list order, of weight * mlp(x[r]) for each routed row r.
// x and out are [T][hidden]; hidden = each mlp's gate.cols = down.rows.
// observe (optional): sees each expert's gate/up input rows and its down input (the
// hidden SiLU(gate) * up rows) before they are multiplied (engine/profile.h).
void experts_accumulate(ThreadPool& pool, const std::vector<ExpertWork>& experts, const float* x, int64_t hidden,
                        float* out, const ActivationObserver* observe = nullptr);

// The same with other weights for the same experts: experts[i]'s rows go through
// weights[i] instead of *experts[i].mlp (which is not read), e.g. one NUMA node's slices
// of the experts (engine/expert_shards.h: gate and up [slice][hidden], down
// [hidden][slice]), whose outputs are partial sums of the experts' outputs.
// weights.size() must equal experts.size(); only the entries of experts with rows are read.
void experts_accumulate(ThreadPool& pool, const std::vector<ExpertWork>& experts, std::span<const Mlp> weights,
                        const float* x, int64_t hidden, float* out, const ActivationObserver* observe = nullptr);

// out = mlp(x) for `rows` rows (a dense MLP or the shared expert); the same work split.
void mlp_rows(ThreadPool& pool, const Mlp& mlp, const float* x, int64_t rows, float* out,
              const ActivationObserver* observe = nullptr);

}  // namespace hearth

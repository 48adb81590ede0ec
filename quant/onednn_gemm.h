// Float matrix products through oneDNN's sgemm: the many-token products (prefill) of
// weights stored as floats (F32, BF16, F16, FP8) under CpuGemm::kOnednn. hearth's own
// kernels (weight_matrix.cc) are dot-product tiles that keep each token's bits
// independent of the batch; sgemm, free of that, runs 2-4x their rate from 64 tokens on.
//
// oneDNN is called single-threaded from whichever thread calls here: hearth's own pool
// splits the rows between its pinned threads (each on the NUMA node of its rows), so
// oneDNN's OpenMP threads must not start a second set of workers beside them.
#pragma once
#include <cstdint>
#include <string>

namespace hearth {

// y[t * ldy + r] = sum_{c < k} x[t * ldx + c] * w[r * ldw + c]  for t < n, r < rows: the
// activations times the transposed weight rows. Writes exactly that n x rows block of y.
// std::runtime_error naming oneDNN's status if it refuses the call.
void onednn_gemm_xwt(int64_t n, int64_t rows, int64_t k, const float* x, int64_t ldx, const float* w, int64_t ldw,
                     float* y, int64_t ldy);

// "oneDNN 2.6.3 (cpu runtime: OpenMP)": the library that runs it, as loaded at run time.
std::string onednn_version();

}  // namespace hearth

#include "quant/onednn_gemm.h"

#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

#include <stdexcept>

namespace hearth {

namespace {

// oneDNN (OpenMP runtime) sizes its parallel regions from the calling thread's
// omp_get_max_threads(); limiting it to one, once per thread, keeps every call on the
// thread that made it.
void single_threaded_onednn() {
  static thread_local bool done = false;
  if (done) return;
  omp_set_num_threads(1);
  done = true;
}

const char* runtime_name(unsigned runtime) {
  switch (runtime) {
    case DNNL_RUNTIME_SEQ: return "sequential";
    case DNNL_RUNTIME_OMP: return "OpenMP";
    case DNNL_RUNTIME_TBB: return "TBB";
    case DNNL_RUNTIME_THREADPOOL: return "threadpool";
    default: return "other";
  }
}

}  // namespace

void onednn_gemm_xwt(int64_t n, int64_t rows, int64_t k, const float* x, int64_t ldx, const float* w, int64_t ldw,
                     float* y, int64_t ldy) {
  if (n <= 0 || rows <= 0) return;
  single_threaded_onednn();
  // Row-major: A = x (n x k), B^T = w (rows x k), C = y (n x rows).
  const dnnl_status_t st = dnnl_sgemm('N', 'T', n, rows, k, 1.0f, x, ldx, w, ldw, 0.0f, y, ldy);
  if (st != dnnl_success)
    throw std::runtime_error("oneDNN sgemm failed (status " + std::to_string(int(st)) + ") on " + std::to_string(n) +
                             " x " + std::to_string(k) + " times " + std::to_string(k) + " x " +
                             std::to_string(rows));
}

std::string onednn_version() {
  const dnnl_version_t* v = dnnl_version();
  return "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch) +
         " (cpu runtime: " + runtime_name(v->cpu_runtime) + ")";
}

}  // namespace hearth

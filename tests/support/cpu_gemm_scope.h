// Sets the process-wide CpuGemm (quant/weight_matrix.h) for one scope and puts the
// previous choice back after it, so a test of the oneDNN path leaves the default behind.
#pragma once
#include "quant/weight_matrix.h"

namespace hearth::testing {

class CpuGemmScope {
 public:
  explicit CpuGemmScope(CpuGemm g) : previous_(set_cpu_gemm(g)) {}
  ~CpuGemmScope() { set_cpu_gemm(previous_); }
  CpuGemmScope(const CpuGemmScope&) = delete;
  CpuGemmScope& operator=(const CpuGemmScope&) = delete;

 private:
  CpuGemm previous_;
};

}  // namespace hearth::testing

// A weight matrix for the CUDA kernel tests: its bytes in the stored layout on the host
// (HostWeight), and the same bytes on a device at a chosen misalignment (DeviceWeight).
#pragma once
#include <cstdint>
#include <vector>

#include "quant/weight_matrix.h"
#include "support/cuda.h"

namespace hearth::testing {

struct HostWeight {
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0, block = 128;
  std::vector<uint8_t> bytes;  // rows * row_bytes(dtype, cols)
  std::vector<float> scale;    // FP8: [ceil(rows / block)][ceil(cols / block)]

  int64_t row_bytes() const { return hearth::row_bytes(dtype, cols); }
  WeightMatrix view() const {
    WeightMatrix w;
    w.dtype = dtype;
    w.rows = rows;
    w.cols = cols;
    w.data = bytes.data();
    w.block = block;
    w.scale = dtype == DType::F8_E4M3 ? scale.data() : nullptr;
    return w;
  }
  // Every row decoded by the CPU (dequantize_row): the reference the kernels must match.
  std::vector<float> dequantized() const {
    std::vector<float> out(static_cast<size_t>(rows * cols));
    const WeightMatrix w = view();
    for (int64_t r = 0; r < rows; ++r) dequantize_row(w, r, 0, cols, out.data() + r * cols);
    return out;
  }
};

// The weight on the device, its data `offset` bytes past an aligned address.
struct DeviceWeight {
  DeviceBuffer data, scale;
  WeightMatrix view;
  DeviceWeight(Device& dev, const HostWeight& w, int64_t offset) {
    data = upload(dev, w.bytes, offset);
    view = w.view();
    view.data = data.as<uint8_t>() + offset;
    view.scale = nullptr;
    if (w.dtype == DType::F8_E4M3) {
      scale = upload(dev, w.scale);
      view.scale = scale.as<float>();
    }
  }
};

}  // namespace hearth::testing

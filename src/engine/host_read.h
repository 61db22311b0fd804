// Scalars of a step read back to the host together.
#pragma once

#include <vector>

#include <ATen/record_function.h>
#include <torch/types.h>

namespace mpq::engine {

// The values of one-element tensors (any dtype, any device) as doubles, in
// one transfer: on a GPU, one synchronisation for all of them. Recorded as
// mpq::read_scalars for profilers, and for the test that counts what a
// training step reads back (host_sync_test.cpp).
inline std::vector<double> read_scalars(const std::vector<torch::Tensor>& ts) {
  if (ts.empty()) return {};
  RECORD_FUNCTION("mpq::read_scalars", std::vector<c10::IValue>());
  // One dtype (the usual case): stacked as they are (views, one copy), then
  // converted once; mixed dtypes are converted one by one first.
  bool one_dtype = true;
  for (const auto& t : ts) one_dtype = one_dtype && t.scalar_type() == ts.front().scalar_type();
  std::vector<torch::Tensor> flat;
  flat.reserve(ts.size());
  for (const auto& t : ts) {
    const torch::Tensor v = t.detach().reshape({});
    flat.push_back(one_dtype ? v : v.to(torch::kDouble));
  }
  const torch::Tensor h = torch::stack(flat).to(torch::kCPU, torch::kDouble);
  const double* v = h.const_data_ptr<double>();
  return std::vector<double>(v, v + h.numel());
}

}  // namespace mpq::engine

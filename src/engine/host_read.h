// Scalars of a step read back to the host together.
#pragma once

#include <vector>

#include <torch/types.h>

namespace mpq::engine {

// The values of one-element tensors (any dtype, any device) as doubles, in
// one transfer: on a GPU, one synchronisation for all of them.
inline std::vector<double> read_scalars(const std::vector<torch::Tensor>& ts) {
  if (ts.empty()) return {};
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

// Scalars of a step read back to the host together.
#pragma once

#include <vector>

#include <torch/types.h>

namespace mpq::engine {

// The values of one-element tensors (any dtype, any device) as doubles, in
// one transfer: on a GPU, one synchronisation for all of them.
inline std::vector<double> read_scalars(const std::vector<torch::Tensor>& ts) {
  if (ts.empty()) return {};
  std::vector<torch::Tensor> flat;
  flat.reserve(ts.size());
  for (const auto& t : ts) flat.push_back(t.detach().reshape({}).to(torch::kDouble));
  const torch::Tensor h = torch::stack(flat).cpu();
  const double* v = h.const_data_ptr<double>();
  return std::vector<double>(v, v + h.numel());
}

}  // namespace mpq::engine

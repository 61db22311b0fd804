// Bitwise comparisons of float32 tensors, for the kernels' tests:
// torch::equal compares values, and -0 == +0 there.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace mpq::test {

// Whether a and b hold the same bits, element for element in logical order
// (either layout, either device).
inline bool same_bits(const torch::Tensor& a, const torch::Tensor& b) {
  return a.sizes() == b.sizes() && a.scalar_type() == torch::kFloat && b.scalar_type() == torch::kFloat &&
         torch::equal(a.cpu().contiguous().view(torch::kInt32), b.cpu().contiguous().view(torch::kInt32));
}

// How many elements are zeros in both with different signs.
inline int64_t zeros_of_other_sign(const torch::Tensor& a, const torch::Tensor& b) {
  const torch::Tensor ac = a.cpu(), bc = b.cpu();
  return ((ac == 0) & (bc == 0) & (torch::signbit(ac) != torch::signbit(bc))).sum().item<int64_t>();
}

}  // namespace mpq::test

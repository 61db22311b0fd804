#include "quant/lsq.h"

#include <ATen/record_function.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <mutex>
#include <string>

#include "mpq/common/error.h"
#include "quant/lsq_cpu.h"
#include "quant/lsq_scale.h"
#if MPQ_HAVE_CUDA
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "quant/lsq_cuda.h"
#endif

namespace mpq::quant {

Thresholds thresholds(int bits, bool all_positive, bool symmetric) {
  MPQ_CHECK(bits >= 1 && bits <= 31, "quantizer: bit-width ", bits, " is out of range");
  MPQ_CHECK(!(all_positive && symmetric), "quantizer: an unsigned quantizer cannot be symmetric");
  if (all_positive) return {0.0, std::ldexp(1.0, bits) - 1};
  const double half = std::ldexp(1.0, bits - 1);
  return {symmetric ? -half + 1 : -half, half - 1};
}

namespace {

#if MPQ_HAVE_CUDA
// The CUDA kernels on x's GPU and its current stream (lsq_cuda.h). s: the
// candidates' scales, contiguous float32 on that GPU; x, y, go, gx: dense
// float32 in one layout; gs: s's size.
void cuda_forward(const torch::Tensor& x, const torch::Tensor& s, int64_t index, const torch::Tensor& y, float n,
                  float p, bool clamp_scale) {
  const c10::cuda::CUDAGuard guard(x.device());
  C10_CUDA_CHECK(cuda::forward(x.const_data_ptr<float>(), y.mutable_data_ptr<float>(), x.numel(),
                               s.const_data_ptr<float>() + index, n, p, clamp_scale,
                               c10::cuda::getCurrentCUDAStream().stream()));
}

void cuda_backward(const torch::Tensor& x, const torch::Tensor& go, const torch::Tensor& s, int64_t index,
                   const torch::Tensor& gx, const torch::Tensor& gs, float n, float p, double g, bool clamp_scale,
                   bool relu) {
  const c10::cuda::CUDAGuard guard(x.device());
  const torch::Tensor partial = torch::empty({cuda::backward_partials(x.numel())}, x.options().dtype(torch::kDouble));
  C10_CUDA_CHECK(cuda::backward(x.const_data_ptr<float>(), go.const_data_ptr<float>(), gx.mutable_data_ptr<float>(),
                                x.numel(), s.const_data_ptr<float>(), index, s.numel(), n, p, g, clamp_scale, relu,
                                partial.mutable_data_ptr<double>(), gs.mutable_data_ptr<float>(),
                                c10::cuda::getCurrentCUDAStream().stream()));
}

// Empty where GPU `device` runs this build's kernels; else one line: the GPU,
// what the kernels were compiled for, what to do.
std::string kernels_missing(c10::DeviceIndex device) {
  const c10::cuda::CUDAGuard guard(device);
  const cudaError_t e = cuda::kernel_image();
  if (e == cudaSuccess) return {};
  (void)cudaGetLastError();  // not sticky: clear it, so no later check reports it
  if (e != cudaErrorNoKernelImageForDevice && e != cudaErrorInvalidDeviceFunction) C10_CUDA_CHECK(e);
  cudaDeviceProp p{};
  C10_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  return c10::str("cuda:", static_cast<int>(device), " (", p.name, ", compute capability ", p.major, ".", p.minor,
                  ") cannot run this mpq's CUDA kernels: they were compiled for ", cuda::compiled_for(),
                  " (TORCH_CUDA_ARCH_LIST at build time). Rebuild with TORCH_CUDA_ARCH_LIST unset (mpq's default "
                  "covers every GPU its LibTorch runs on) or naming ", p.major, ".", p.minor,
                  ", or set training_device: cpu");
}
#endif

// Whether two tensors of one shape lay their elements out in the same order
// (strides of size-1 dimensions do not matter).
bool same_layout(const torch::Tensor& a, const torch::Tensor& b) {
  for (int64_t d = 0; d < a.dim(); ++d)
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) return false;
  return true;
}

// The op's backward as an autograd node of its own, built the way PyTorch's
// generated operators build theirs (not through torch::autograd::Function,
// whose context keeps the op's arguments in a map of named values and
// wraps inputs and outputs generically): the op runs once per quantizer,
// forward and backward, in every step, and where the step is bound by
// the host's time to queue its work (a small network on a GPU), that
// bookkeeping is a share of the step.
struct LsqBackward final : torch::autograd::Node {
  torch::autograd::SavedVariable x, s;
  float neg = 0, pos = 0;
  double grad_scale = 0;
  bool clamp_scale = false, relu = false;
  int64_t index = 0;

  std::string name() const override { return "mpq::LsqBackward"; }
  void release_variables() override {
    const std::lock_guard<std::mutex> lock(mutex_);
    x.reset_data();
    s.reset_data();
  }
  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    const std::lock_guard<std::mutex> lock(mutex_);
    torch::autograd::variable_list out(2);
    if (!grads[0].defined()) return out;
    torch::Tensor xs = x.unpack();
    const torch::Tensor ss = s.unpack();
    // The gradient in the input's layout, so element i of each is the same
    // element; where the layout is ambiguous (one channel, 1x1), both NCHW.
    torch::Tensor go = grads[0].contiguous(xs.suggest_memory_format());
    if (!same_layout(go, xs)) {
      xs = xs.contiguous();
      go = grads[0].contiguous();
    }
    torch::Tensor gx = torch::empty_like(xs);
    torch::Tensor gs;
#if MPQ_HAVE_CUDA
    if (xs.is_cuda()) {
      gs = torch::empty_like(ss);
      cuda_backward(xs, go, ss, index, gx, gs, neg, pos, grad_scale, clamp_scale, relu);
    } else
#endif
    {
      const float s_raw = ss.data_ptr<float>()[index];
      const double sum = cpu::backward(xs.data_ptr<float>(), go.data_ptr<float>(), gx.data_ptr<float>(), xs.numel(),
                                       scale_used(s_raw, clamp_scale), neg, pos, relu, cpu::isa());
      gs = torch::empty_like(ss);
      float* const gp = gs.data_ptr<float>();
      std::fill(gp, gp + gs.numel(), 0.f);
      gp[index] = scale_gets_gradient(s_raw, clamp_scale) ? static_cast<float>(sum * grad_scale) : 0.f;
    }
    if (task_should_compute_output(0)) out[0] = std::move(gx);
    if (task_should_compute_output(1)) out[1] = std::move(gs);
    return out;
  }
};

torch::Tensor lsq_fused(const torch::Tensor& x, const torch::Tensor& s, Thresholds t, double grad_scale,
                        bool clamp_scale, bool relu, int64_t index) {
  RECORD_FUNCTION("mpq::lsq_quantize", std::vector<c10::IValue>());
  std::shared_ptr<LsqBackward> node;
  if (torch::autograd::compute_requires_grad(x, s)) {
    node = std::shared_ptr<LsqBackward>(new LsqBackward(), torch::autograd::deleteNode);
    node->set_next_edges(torch::autograd::collect_next_edges(x, s));
  }
  const auto neg = static_cast<float>(t.neg), pos = static_cast<float>(t.pos);
  torch::Tensor xc, y;
  {
    // The op's own tensors (a copy into one layout, the output) are no
    // operations autograd records.
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    // Any dense layout (NCHW or channels-last): the kernels walk memory.
    xc = x.contiguous(x.suggest_memory_format());
    y = torch::empty_like(xc);
#if MPQ_HAVE_CUDA
    if (xc.is_cuda()) {
      require_fused_kernels(xc.device());
      cuda_forward(xc, s, index, y, neg, pos, clamp_scale);
    } else
#endif
    {
      cpu::forward(xc.data_ptr<float>(), y.data_ptr<float>(), xc.numel(),
                   scale_used(s.data_ptr<float>()[index], clamp_scale), neg, pos, cpu::isa());
    }
  }
  if (node) {
    torch::autograd::set_history(y, node);
    node->x = torch::autograd::SavedVariable(xc, /*is_output=*/false);
    node->s = torch::autograd::SavedVariable(s, /*is_output=*/false);
    node->neg = neg;
    node->pos = pos;
    node->grad_scale = grad_scale;
    node->clamp_scale = clamp_scale;
    node->relu = relu;
    node->index = index;
  }
  return y;
}

#if MPQ_HAVE_CUDA
constexpr bool kHaveCudaKernels = true;
#else
constexpr bool kHaveCudaKernels = false;
#endif

}  // namespace

void require_fused_kernels(const torch::Device& d) {
#if MPQ_HAVE_CUDA
  if (!d.is_cuda()) return;
  // The GPUs seen to run the kernels, one bit each (the first 64; others
  // are asked each time): after the first call a load, not a CUDA call.
  static std::atomic<uint64_t> runs{0};
  const int i = d.has_index() ? d.index() : 0;
  const uint64_t bit = i < 64 ? uint64_t{1} << i : 0;
  if (bit != 0 && (runs.load(std::memory_order_relaxed) & bit) != 0) return;
  const std::string missing = kernels_missing(static_cast<c10::DeviceIndex>(i));
  if (!missing.empty()) throw RuntimeError(missing);
  runs.fetch_or(bit, std::memory_order_relaxed);
#else
  (void)d;
#endif
}

torch::Tensor lsq_quantize_reference(const torch::Tensor& x, const torch::Tensor& s, Thresholds t, double grad_scale,
                                     bool clamp_scale) {
  torch::Tensor sc = clamp_scale ? torch::clamp(s, kScaleMin, kScaleMax) : s;
  // grad_scale(s, g): the value of s, the gradient of s * g.
  const torch::Tensor s_grad = sc * grad_scale;
  sc = (sc - s_grad).detach() + s_grad;
  torch::Tensor v = torch::clamp(x / sc, t.neg, t.pos);
  v = (v.round() - v).detach() + v;  // round_pass
  return v * sc;
}

torch::Tensor lsq_quantize(const torch::Tensor& x, const torch::Tensor& s, Thresholds t, double grad_scale,
                           bool clamp_scale, bool relu, int64_t index) {
  MPQ_ASSERT(s.dim() <= 1 && index >= 0 && index < s.numel(), "lsq_quantize: scale index ", index, " of ", s.numel());
  MPQ_ASSERT(!relu || t.neg == 0, "lsq_quantize: relu with signed thresholds");
  const bool fused_device = x.device().is_cpu() || (kHaveCudaKernels && x.is_cuda());
  if (fused_device && x.scalar_type() == torch::kFloat && s.scalar_type() == torch::kFloat &&
      s.device() == x.device() && s.is_contiguous())
    return lsq_fused(x, s, t, grad_scale, clamp_scale, relu, index);
  return lsq_quantize_reference(relu ? torch::relu(x) : x, s.dim() == 0 ? s : s.narrow(0, index, 1), t, grad_scale,
                                clamp_scale);
}

LsqQuantizerImpl::LsqQuantizerImpl(LsqQuantizerOptions options) : options_(std::move(options)) {
  MPQ_CHECK(!options_.bits.empty(), "quantizer: no candidate bit-widths");
  const auto k = static_cast<int64_t>(options_.bits.size());
  s = register_parameter("s", torch::ones({k}));
  init_state = register_buffer("init_state", torch::zeros({k}));
}

int LsqQuantizerImpl::index_of(int bits) const {
  for (size_t i = 0; i < options_.bits.size(); ++i)
    if (options_.bits[i] == bits) return static_cast<int>(i);
  throw InputError(detail::concat("quantizer: ", bits, " bits is not one of its candidates"));
}

void LsqQuantizerImpl::init_from_weight(const torch::Tensor& w) {
  torch::NoGradGuard no_grad;
  const torch::Tensor wd = w.detach();
  const torch::Tensor mean = wd.mean(), std = wd.std(/*unbiased=*/true);
  const torch::Tensor m = torch::max((mean - 3 * std).abs(), (mean + 3 * std).abs());
  for (size_t i = 0; i < options_.bits.size(); ++i) {
    s[static_cast<int64_t>(i)].copy_(m / std::ldexp(1.0, options_.bits[i] - 1));
    init_state[static_cast<int64_t>(i)].fill_(1);
  }
}

bool LsqQuantizerImpl::initialised(int idx) {
  // init_state lives with the module (on the GPU there), but reading it each
  // forward would stall the stream: a host copy is kept, read again only
  // when init_state is another tensor (to(device), a new module) or has been
  // written since (a checkpoint loaded into it, init_from_weight).
  if (init_state.unsafeGetTensorImpl() != init_seen_impl_ || init_state._version() != init_seen_version_) {
    const torch::Tensor h = init_state.detach().to(torch::kCPU, torch::kFloat).contiguous();
    init_seen_.assign(static_cast<size_t>(h.numel()), 0);
    for (int64_t i = 0; i < h.numel(); ++i) init_seen_[static_cast<size_t>(i)] = h.data_ptr<float>()[i] != 0;
    init_seen_impl_ = init_state.unsafeGetTensorImpl();
    init_seen_version_ = init_state._version();
  }
  return init_seen_[static_cast<size_t>(idx)] != 0;
}

torch::Tensor LsqQuantizerImpl::forward(const torch::Tensor& x, int bits, bool relu) {
  MPQ_ASSERT(!relu || options_.all_positive, "quantizer: relu needs an unsigned quantizer");
  if (bits <= 0 || bits >= 32) return relu ? torch::relu(x) : x;
  const int idx = index_of(bits);
  const Thresholds t = thresholds(bits, options_.all_positive, options_.symmetric);
  if (is_training() && !initialised(idx)) {
    torch::NoGradGuard no_grad;
    // The mean in double: data-parallel ranks then agree with one process to the last bit.
    const torch::Tensor xd = relu ? x.detach().clamp_min(0) : x.detach().abs();
    torch::Tensor v = xd.to(torch::kDouble).mean() * 2 / std::sqrt(t.pos);
    if (all_reduce_mean) all_reduce_mean(v);
    s[idx].copy_(v);
    init_state[idx].fill_(1);
    init_seen_[static_cast<size_t>(idx)] = 1;
    init_seen_version_ = init_state._version();
  }
  const double g = 1.0 / std::sqrt(t.pos * static_cast<double>(x.numel()) * numel_factor);
  return lsq_quantize(x, s, t, g, options_.clamp_scale, relu, idx);
}

}  // namespace mpq::quant

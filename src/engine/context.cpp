#include "engine/context.h"

#include <algorithm>
#include <cstdlib>
#include <thread>

#include <ATen/Context.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/cuda.h>
#include <torch/torch.h>
#if MPQ_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "mpq/common/error.h"
#include "mpq/common/log.h"
#include "quant/lsq.h"

namespace mpq::engine {

namespace {

// Why CUDA has no device for this process although a driver is installed:
// a driver older than this LibTorch's CUDA, GPUs not ready (error 802: the
// fabric manager of an NVSwitch machine not running), and the like. Empty
// where there is no driver, no GPU or none visible (CUDA_VISIBLE_DEVICES),
// or CUDA works, and in a CPU build.
std::string cuda_unusable() {
#if MPQ_HAVE_CUDA
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaSuccess || e == cudaErrorNoDevice) return {};
  (void)cudaGetLastError();  // clear it for whoever asks next
  int runtime = 0;
  (void)cudaRuntimeGetVersion(&runtime);
  auto version = [](int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); };
  if (e == cudaErrorInsufficientDriver) {
    int driver = 0;
    if (cudaDriverGetVersion(&driver) != cudaSuccess || driver == 0) return {};  // no driver at all
    return "the NVIDIA driver supports CUDA " + version(driver) + " and this mpq's LibTorch needs CUDA " +
           version(runtime) + " (update the driver: nvidia-smi shows the CUDA version it supports)";
  }
  return std::string("CUDA ") + version(runtime) + " finds no usable GPU: error " +
         std::to_string(static_cast<int>(e)) + ", " + cudaGetErrorString(e) +
         " (nvidia-smi and the driver's log say more)";
#else
  return {};
#endif
}

// The device this process trains on (training_device): cuda:LOCAL_RANK
// where CUDA is, made the current device so that nothing lands on GPU 0 by
// default; the CPU where asked or where no GPU is, with a warning where GPUs
// are there but CUDA cannot use them.
torch::Device pick_device(const dist::Env& env, const std::string& training_device) {
  if (training_device == "cpu") return torch::kCPU;
  const bool want_gpu = training_device == "gpu" || training_device == "cuda";
  if (!torch::cuda::is_available()) {
    const bool built = at::detail::getCUDAHooks().isBuilt();
    const std::string unusable = cuda_unusable();
    MPQ_CHECK(!want_gpu, "training_device: ", training_device, ", but ",
              !built ? "this mpq's LibTorch is a CPU build (rebuild against the CUDA one scripts/install_torch.sh "
                       "installs)"
              : unusable.empty() ? "no CUDA device is visible to this process (check the driver with nvidia-smi, and "
                                   "CUDA_VISIBLE_DEVICES)"
                                 : "CUDA cannot be used here: " + unusable,
              "; or set training_device: auto or cpu");
    if (!unusable.empty() && env.rank == 0)
      mpq::log::warn("training_device: {}: training on the CPU, because CUDA cannot be used here: {}", training_device,
                     unusable);
    return torch::kCPU;
  }
  const auto n = static_cast<int>(torch::cuda::device_count());
  MPQ_CHECK(env.local_rank < n, "environment: LOCAL_RANK=", env.local_rank, " but this node has ", n,
            " CUDA device(s); start at most ", n, " processes per node (torchrun --nproc_per_node)");
  const torch::Device d(torch::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
  c10::impl::getDeviceGuardImpl(d.type())->setDevice(d);
  return d;
}

// dist_backend: auto takes NCCL for CUDA tensors where this build has it.
dist::Backend pick_backend(const config::ProcessOptions& c, const torch::Device& device, bool rank0) {
  if (c.dist_backend == "gloo") return dist::Backend::kGloo;
  if (c.dist_backend == "nccl") {
    MPQ_CHECK(dist::nccl_built(), "dist_backend: nccl, but this mpq was built without c10d's NCCL backend (a CPU "
              "LibTorch, or no nccl.h at build time: see the cmake output); use dist_backend: gloo");
    MPQ_CHECK(device.is_cuda(), "dist_backend: nccl needs CUDA tensors, and this process sees no CUDA device; use "
              "dist_backend: gloo");
    return dist::Backend::kNccl;
  }
  if (device.is_cuda() && dist::nccl_built()) return dist::Backend::kNccl;
  if (device.is_cuda() && rank0)
    mpq::log::warn("this mpq was built without c10d's NCCL backend: Gloo carries the CUDA tensors through host memory "
                 "(slower); rebuild against a LibTorch and nccl.h with NCCL for multi-GPU speed");
  return dist::Backend::kGloo;
}

}  // namespace

void apply_cudnn_mode(const std::string& mode) {
  at::Context& g = at::globalContext();
  if (mode == "benchmark") {
    g.setBenchmarkCuDNN(true);
    g.setDeterministicCuDNN(false);
  } else if (mode == "deterministic") {
    g.setBenchmarkCuDNN(false);
    g.setDeterministicCuDNN(true);
    // cuBLAS reproduces its results only with a fixed workspace split; read
    // when the first cuBLAS handle is made, after this. A user's own value stays.
    ::setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
  } else {
    MPQ_ASSERT(mode == "heuristic", "cudnn mode '", mode, "' passed validation");
    g.setBenchmarkCuDNN(false);
    g.setDeterministicCuDNN(false);
  }
}

void apply_tf32(bool allow) {
  // The setter of both cuDNN flags (convolutions and RNNs) at once: setting
  // one of them alone makes LibTorch refuse later reads of the pair.
  at::globalContext().setAllowTF32CuDNN(allow);
}

Context make_context(const config::ProcessOptions& c) {
  Context ctx;
  ctx.env = dist::env_from_environment();
  // Threads: the config's, else the machine's cores shared by the processes of this node.
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(c.threads > 0 ? c.threads : std::max(1, hw / ctx.env.local_world_size));
  ctx.device = pick_device(ctx.env, c.training_device);
  quant::require_fused_kernels(ctx.device);  // a GPU without code: now, not at the first forward
  apply_cudnn_mode(c.cudnn);
  apply_tf32(c.tf32);
  if (ctx.device.is_cuda() && ctx.rank0() && c.cudnn != "deterministic")
    mpq::log::info("cudnn: {}: GPU runs and resumes agree to float rounding, not bit for bit (cudnn: deterministic "
                   "for that, slower)", c.cudnn);
  if (ctx.device.is_cuda() && ctx.rank0() && c.tf32)
    mpq::log::info("tf32: cuDNN's float32 convolutions compute in TF32 on GPUs that have it (Ampere and later), as "
                   "PyTorch's default; tf32: false for full float32, as on the CPU");
  if (!ctx.rank0()) mpq::log::set_level(mpq::log::Level::warn);  // rank 0 logs for everyone
  // A group of one too where a backend is named under torchrun's variables:
  // a check of that backend on one device (auto makes none).
  if (ctx.env.distributed() || (ctx.env.launched && c.dist_backend != "auto")) {
    const dist::Backend backend = pick_backend(c, ctx.device, ctx.rank0());
    ctx.group = std::make_unique<dist::Group>(ctx.env, std::chrono::seconds(c.dist_timeout_s), backend, ctx.device);
    mpq::log::info("rank {}/{}: joined the group at {}:{} ({} on {})", ctx.env.rank, ctx.env.world_size,
                 ctx.env.master_addr, ctx.env.master_port, backend == dist::Backend::kNccl ? "NCCL" : "Gloo",
                 ctx.device.str());
  }
  torch::manual_seed(static_cast<uint64_t>(c.seed));
  return ctx;
}

void attach(Context& ctx, Model& m, bool sync_bn) {
  m.q.net->to(ctx.device);
  dist::Group* g = ctx.group.get();
  if (g) {
    torch::NoGradGuard no_grad;
    for (auto& p : m.q.net->parameters()) g->broadcast(p);
    for (auto& b : m.q.net->buffers()) g->broadcast(b);
    for (auto* q : quantizers(*m.q.net)) {
      q->all_reduce_mean = [g](torch::Tensor& t) { g->all_reduce_mean(t); };
      if (q->options().all_positive) q->numel_factor = g->env().world_size;  // activations: the batch is sharded
    }
  }
  if (sync_bn) {
    if (g) ctx.bn_sync.install([g](torch::Tensor& t) { g->all_reduce_sum(t); });
    else ctx.bn_sync.install([](torch::Tensor&) {});
  } else {
    ctx.bn_sync.install({});
  }
}

void average_bn_stats(Context& ctx, torch::nn::Module& net) {
  if (!ctx.group) return;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> ts;
  for (auto* b : batchnorms(net)) {
    ts.push_back(b->running_mean);
    ts.push_back(b->running_var);
  }
  if (!ts.empty()) ctx.group->all_reduce_mean_flat(ts);
}

}  // namespace mpq::engine

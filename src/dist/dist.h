// Multi-process training on PyTorch's own c10d, the torchrun way (METHOD.md §6).
//
// The environment torchrun (or any scheduler) sets: RANK, WORLD_SIZE,
// LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT. Without WORLD_SIZE
// (or with 1) the run is a single process and no group is made.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <c10/util/intrusive_ptr.h>
#include <torch/types.h>

namespace c10d {
class Backend;
class Store;
}  // namespace c10d

namespace mpq::dist {

struct Env {
  int rank = 0, world_size = 1, local_rank = 0, local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // torchrun's agent already serves the store at MASTER_ADDR:MASTER_PORT
  // (TORCHELASTIC_USE_AGENT_STORE=True): every rank joins it as a client,
  // under /worker/attempt_<TORCHELASTIC_RESTART_COUNT>/, as PyTorch's env://
  // rendezvous does. Otherwise rank 0 serves it.
  bool agent_store = false;
  int restart_count = 0;
  bool launched = false;  // WORLD_SIZE is set (torchrun, a scheduler), 1 included
  bool distributed() const { return world_size > 1; }
};

// Reads the torchrun variables; InputError naming a malformed one.
Env env_from_environment();

// c10d's backends: Gloo (CPU tensors, and CUDA tensors through host memory
// in a CUDA build) and NCCL (CUDA tensors; CUDA builds whose LibTorch has
// c10d NCCL, see src/dist/nccl.cpp).
enum class Backend { kGloo, kNccl };
bool nccl_built();

// ProcessGroupNCCL over `store`; defined only where nccl_built().
c10::intrusive_ptr<c10d::Backend> make_nccl_group(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                  std::chrono::milliseconds timeout);

// A process group over c10d's TCPStore. With NCCL, tensors elsewhere than
// `device` (the rank's GPU), such as CPU metrics, go through a copy on it.
// `timeout` bounds every rendezvous and collective, so a lost rank makes the
// others fail instead of hanging. Every rank writes a
// heartbeat into the store each second; when a collective fails, the ranks
// whose heartbeat stopped are named in the error (a RuntimeError).
class Group {
 public:
  Group(const Env& env, std::chrono::milliseconds timeout, Backend backend = Backend::kGloo,
        torch::Device device = torch::kCPU);
  ~Group();
  const Env& env() const { return env_; }

  // In-place sum over ranks, then divided by the world size.
  void all_reduce_mean(torch::Tensor& t);
  // In-place sum over ranks.
  void all_reduce_sum(torch::Tensor& t);
  // Averages every tensor over ranks with one flattened all-reduce per
  // bucket of about `bucket_bytes` (tensors of one dtype and device).
  void all_reduce_mean_flat(const std::vector<torch::Tensor>& ts, int64_t bucket_bytes = 25 << 20);
  // Rank 0's values everywhere, in place.
  void broadcast(torch::Tensor& t);

  // A sum over ranks started in the background: wait() blocks until `t`
  // (contiguous) holds it, and fails as the blocking calls do.
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual void wait() = 0;
  };
  std::unique_ptr<Pending> all_reduce_sum_async(torch::Tensor t);

 private:
  template <typename F>
  void guarded(const char* what, F&& f);
  template <typename F>
  void staged(torch::Tensor& t, F&& f);
  std::string lost_ranks();

  Env env_;
  std::chrono::milliseconds timeout_;
  Backend backend_;
  torch::Device device_;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::Backend> pg_;  // c10d's backend itself (Gloo or NCCL), no ProcessGroup around it
  // Shared with the heartbeat thread, which may outlive the Group when a
  // dead link leaves it blocked in a store call (it is then detached).
  struct Beat {
    std::atomic<bool> stop{false}, done{false};
  };
  std::shared_ptr<Beat> beat_ = std::make_shared<Beat>();
  std::thread heartbeat_;
};

// Gradient averaging overlapped with backward, as PyTorch's DDP does it:
// the parameters, in reverse order (the order backward produces their
// gradients), are cut into buckets (the first of about 1 MB, the others of
// about `bucket_bytes`); a hook on each parameter copies its gradient into
// its bucket's flat buffer as soon as autograd computes it, and a full
// bucket starts its all-reduce at once (buckets start in order, the same on
// every rank) while backward goes on. finish() starts what is left, waits,
// and writes the averages into the parameters' gradients.
//
// arm() before the backward that ends the step; with `accumulated` the
// gradients of earlier backwards of the step (the joint step's candidates)
// are added, as autograd will add them. Backwards while not armed (those
// earlier ones) are left alone. Parameters that get no gradient on this
// backward are averaged in finish() from what they hold; those without a
// gradient stay without one (every rank agrees: the graphs are the same).
class GradSync {
 public:
  GradSync(Group& group, std::vector<torch::Tensor> params, int64_t bucket_bytes = 25 << 20,
           int64_t first_bucket_bytes = 1 << 20);
  ~GradSync();
  GradSync(const GradSync&) = delete;
  GradSync& operator=(const GradSync&) = delete;
  void arm(bool accumulated);
  void finish();
  // Buckets whose all-reduce started before finish() in the last step.
  size_t launched_during_backward() const { return launched_early_; }

 private:
  struct State;
  Group& group_;
  std::shared_ptr<State> state_;
  std::vector<unsigned> hooks_;
  size_t launched_early_ = 0;
};

}  // namespace mpq::dist

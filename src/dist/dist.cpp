#define USE_C10D_GLOO 1
#include "dist/dist.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstdlib>
#include <string>

#include "mpq/common/error.h"

namespace mpq::dist {

namespace {

int env_int(const char* name, int fallback, int lo, int hi) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  MPQ_CHECK(*end == '\0' && x >= lo && x <= hi, "environment: ", name, "=", v, " is not an integer in [", lo, ", ", hi,
            "] (set by torchrun or your scheduler)");
  return static_cast<int>(x);
}

}  // namespace

Env env_from_environment() {
  Env e;
  e.world_size = env_int("WORLD_SIZE", 1, 1, 1 << 20);
  e.rank = env_int("RANK", 0, 0, e.world_size - 1);
  e.local_rank = env_int("LOCAL_RANK", 0, 0, 1 << 20);
  e.local_world_size = env_int("LOCAL_WORLD_SIZE", 1, 1, 1 << 20);
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) e.master_addr = a;
  e.master_port = env_int("MASTER_PORT", 29500, 1, 65535);
  MPQ_CHECK(!e.distributed() || std::getenv("MASTER_ADDR") != nullptr,
            "environment: WORLD_SIZE=", e.world_size, " but MASTER_ADDR is not set (launch with torchrun, or set "
            "MASTER_ADDR and MASTER_PORT)");
  return e;
}

Group::Group(const Env& env, std::chrono::milliseconds timeout) : env_(env) {
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(env.master_port);
  so.isServer = env.rank == 0;
  so.numWorkers = env.world_size;
  so.waitWorkers = true;
  so.timeout = timeout;
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
  } catch (const c10::Error& e) {
    throw RuntimeError(detail::concat("rank ", env.rank, ": cannot reach the master at ", env.master_addr, ":",
                                      env.master_port, " (", e.what_without_backtrace(), ")"));
  }
  auto opts = c10d::ProcessGroupGloo::Options::create();
  opts->timeout = timeout;
  opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(env.master_addr));
  pg_ = std::make_shared<c10d::ProcessGroupGloo>(store, env.rank, env.world_size, opts);
}

Group::~Group() = default;

void Group::all_reduce_mean(torch::Tensor& t) {
  std::vector<torch::Tensor> ts{t};
  pg_->allreduce(ts)->wait();
  t.div_(env_.world_size);
}

void Group::all_reduce_sum(torch::Tensor& t) {
  std::vector<torch::Tensor> ts{t};
  pg_->allreduce(ts)->wait();
}

void Group::all_reduce_mean_flat(const std::vector<torch::Tensor>& ts, int64_t bucket_bytes) {
  size_t i = 0;
  while (i < ts.size()) {
    std::vector<torch::Tensor> bucket;
    int64_t bytes = 0;
    while (i < ts.size() && (bucket.empty() || bytes + ts[i].nbytes() <= static_cast<size_t>(bucket_bytes))) {
      bytes += static_cast<int64_t>(ts[i].nbytes());
      bucket.push_back(ts[i++]);
    }
    std::vector<torch::Tensor> flat;
    for (const auto& t : bucket) flat.push_back(t.reshape({-1}));
    torch::Tensor buf = torch::cat(flat);
    all_reduce_mean(buf);
    int64_t off = 0;
    for (auto& t : bucket) {
      const int64_t n = t.numel();
      t.copy_(buf.slice(0, off, off + n).view_as(t));
      off += n;
    }
  }
}

void Group::broadcast(torch::Tensor& t) {
  std::vector<torch::Tensor> ts{t};
  c10d::BroadcastOptions o;
  o.rootRank = 0;
  pg_->broadcast(ts, o)->wait();
}

}  // namespace mpq::dist

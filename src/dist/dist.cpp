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

// The first line of an exception's text (c10 errors append backtraces).
std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

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

namespace {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

constexpr int kHeartbeatMs = 1000;

}  // namespace

Group::Group(const Env& env, std::chrono::milliseconds timeout) : env_(env), timeout_(timeout) {
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(env.master_port);
  so.isServer = env.rank == 0;
  so.numWorkers = env.world_size;
  so.waitWorkers = true;
  so.timeout = timeout;
  try {
    store_ = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
  } catch (const std::exception& e) {
    throw RuntimeError(detail::concat("rank ", env.rank, ": cannot reach the master at ", env.master_addr, ":",
                                      env.master_port, " within ", timeout.count() / 1000, " s (", first_line(e.what()),
                                      "); check MASTER_ADDR/MASTER_PORT and that rank 0 is running"));
  }
  auto opts = c10d::ProcessGroupGloo::Options::create();
  opts->timeout = timeout;
  opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(env.master_addr));
  pg_ = std::make_shared<c10d::ProcessGroupGloo>(store_, env.rank, env.world_size, opts);
  // The heartbeat has its own connection: a store client is not shared across threads.
  c10d::TCPStoreOptions ho = so;
  ho.isServer = false;
  ho.waitWorkers = false;
  auto hb = c10::make_intrusive<c10d::TCPStore>(env.master_addr, ho);
  heartbeat_ = std::thread([this, hb] {
    const std::string key = "mpq/heartbeat/" + std::to_string(env_.rank);
    while (!stop_.load()) {
      try {
        const std::string v = std::to_string(now_ms());
        hb->set(key, std::vector<uint8_t>(v.begin(), v.end()));
      } catch (...) {
        return;  // the master is gone; the next collective reports it
      }
      for (int i = 0; i < 10 && !stop_.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(kHeartbeatMs / 10));
    }
  });
}

Group::~Group() {
  stop_.store(true);
  if (heartbeat_.joinable()) heartbeat_.join();
}

// The ranks whose heartbeat is older than 2.5 periods, after waiting long
// enough for a fresh failure to show; the master's loss when the store is gone.
std::string Group::lost_ranks() {
  std::this_thread::sleep_for(std::chrono::milliseconds(3 * kHeartbeatMs));
  std::string lost;
  try {
    const int64_t now = now_ms();
    for (int r = 0; r < env_.world_size; ++r) {
      if (r == env_.rank) continue;
      const std::string key = "mpq/heartbeat/" + std::to_string(r);
      int64_t age = -1;
      if (store_->check({key})) {
        const std::vector<uint8_t> v = store_->get(key);
        age = now - std::stoll(std::string(v.begin(), v.end()));
      }
      if (age < 0 || age > kHeartbeatMs * 5 / 2) lost += (lost.empty() ? "" : ", ") + std::to_string(r);
    }
  } catch (const std::exception&) {
    return "rank 0 (the master, " + env_.master_addr + ":" + std::to_string(env_.master_port) + ")";
  }
  return lost.empty() ? "" : (lost.find(',') == std::string::npos ? "rank " : "ranks ") + lost;
}

template <typename F>
void Group::guarded(const char* what, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    const std::string lost = lost_ranks();
    throw RuntimeError(detail::concat("rank ", env_.rank, ": ", what, " failed: ",
                                      lost.empty() ? std::string("no rank is known lost") : "lost " + lost,
                                      " (", first_line(e.what()), "); resume from the last checkpoint with resume.path"));
  }
}

void Group::all_reduce_mean(torch::Tensor& t) {
  all_reduce_sum(t);
  t.div_(env_.world_size);
}

namespace {

// Gloo takes contiguous tensors only: a channels-last one goes through a copy.
template <typename F>
void on_contiguous(torch::Tensor& t, F&& f) {
  if (t.is_contiguous()) return f(t);
  torch::Tensor c = t.contiguous();
  f(c);
  t.copy_(c);
}

}  // namespace

void Group::all_reduce_sum(torch::Tensor& t) {
  guarded("all-reduce", [&] {
    on_contiguous(t, [&](torch::Tensor& c) {
      std::vector<torch::Tensor> ts{c};
      pg_->allreduce(ts)->wait();
    });
  });
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
  guarded("broadcast", [&] {
    on_contiguous(t, [&](torch::Tensor& c) {
      std::vector<torch::Tensor> ts{c};
      c10d::BroadcastOptions o;
      o.rootRank = 0;
      pg_->broadcast(ts, o)->wait();
    });
  });
}

}  // namespace mpq::dist

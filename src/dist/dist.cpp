#define USE_C10D_GLOO 1
#include "dist/dist.h"

#include <ATen/ops/_foreach_copy.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <functional>
#include <future>
#include <memory>
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
  if (const char* w = std::getenv("WORLD_SIZE")) e.launched = *w != '\0';
  e.rank = env_int("RANK", 0, 0, e.world_size - 1);
  e.local_rank = env_int("LOCAL_RANK", 0, 0, 1 << 20);
  e.local_world_size = env_int("LOCAL_WORLD_SIZE", 1, 1, 1 << 20);
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) e.master_addr = a;
  e.master_port = env_int("MASTER_PORT", 29500, 1, 65535);
  if (const char* a = std::getenv("TORCHELASTIC_USE_AGENT_STORE")) e.agent_store = std::string(a) == "True";
  e.restart_count = env_int("TORCHELASTIC_RESTART_COUNT", 0, 0, 1 << 20);
  MPQ_CHECK(!e.distributed() || std::getenv("MASTER_ADDR") != nullptr,
            "environment: WORLD_SIZE=", e.world_size, " but MASTER_ADDR is not set (launch with torchrun, or set "
            "MASTER_ADDR and MASTER_PORT)");
  return e;
}

namespace {

// The local address this host uses to reach `host` (the route's source
// address; a UDP connect sends nothing). Gloo's device must be bound to an
// address the other ranks can reach: the master's own address is not local
// on any other node, and the hostname may resolve to loopback or to an
// interface the ranks do not share.
std::string local_address_towards(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0 || res == nullptr) return "";
  std::string out;
  const int fd = ::socket(res->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_storage local{};
  socklen_t len = sizeof local;
  if (fd >= 0 && ::connect(fd, res->ai_addr, res->ai_addrlen) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
    char buf[INET6_ADDRSTRLEN] = {0};
    const void* a = local.ss_family == AF_INET6 ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr)
                                                : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&local)->sin_addr);
    if (::inet_ntop(local.ss_family, a, buf, sizeof buf) != nullptr) out = buf;
  }
  if (fd >= 0) ::close(fd);
  ::freeaddrinfo(res);
  return out;
}

// The Gloo device: GLOO_SOCKET_IFNAME's interface where set (PyTorch's
// variable), else the address that routes to the master.
std::shared_ptr<::gloo::transport::Device> gloo_device(const Env& env) {
  std::string where;
  try {
    if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
      const std::string first = std::string(ifname).substr(0, std::string(ifname).find(','));
      where = "interface " + first + " (GLOO_SOCKET_IFNAME)";
      return c10d::ProcessGroupGloo::createDeviceForInterface(first);
    }
    const std::string local = local_address_towards(env.master_addr, env.master_port);
    MPQ_CHECK_T(RuntimeError, !local.empty(), "rank ", env.rank, ": no route from this host to the master at ",
                env.master_addr, " (check MASTER_ADDR, or set GLOO_SOCKET_IFNAME to the interface to use)");
    where = "address " + local + " (the one that reaches the master " + env.master_addr + ")";
    return c10d::ProcessGroupGloo::createDeviceForHostname(local);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw RuntimeError(detail::concat("rank ", env.rank, ": cannot bind Gloo to ", where, " (", first_line(e.what()),
                                      "); set GLOO_SOCKET_IFNAME to the network interface the ranks share"));
  }
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

constexpr int kHeartbeatMs = 1000;

}  // namespace

bool nccl_built() {
#ifdef MPQ_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

Group::Group(const Env& env, std::chrono::milliseconds timeout, Backend backend, torch::Device device)
    : env_(env), timeout_(timeout), backend_(backend), device_(device) {
  MPQ_ASSERT(backend != Backend::kNccl || (nccl_built() && device.is_cuda()),
             "the NCCL backend needs a CUDA device and a build against a LibTorch with c10d NCCL");
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(env.master_port);
  so.isServer = env.rank == 0 && !env.agent_store;
  so.numWorkers = env.world_size;
  so.waitWorkers = true;
  so.timeout = timeout;
  // Under torchrun's agent store, this attempt's keys apart from earlier ones.
  const std::string prefix = env.agent_store ? "/worker/attempt_" + std::to_string(env.restart_count) : "";
  const auto scoped = [&prefix](c10::intrusive_ptr<c10d::Store> s) -> c10::intrusive_ptr<c10d::Store> {
    if (prefix.empty()) return s;
    return c10::make_intrusive<c10d::PrefixStore>(prefix, std::move(s));
  };
  try {
    store_ = scoped(c10::make_intrusive<c10d::TCPStore>(env.master_addr, so));
  } catch (const std::exception& e) {
    throw RuntimeError(detail::concat("rank ", env.rank, ": cannot reach the master at ", env.master_addr, ":",
                                      env.master_port, " within ", timeout.count() / 1000, " s (", first_line(e.what()),
                                      "); check MASTER_ADDR/MASTER_PORT and that ",
                                      env.agent_store ? "torchrun's agent" : "rank 0", " is running"));
  }
  if (backend == Backend::kNccl) {
#ifdef MPQ_HAVE_NCCL
    pg_ = make_nccl_group(store_, env.rank, env.world_size, timeout);
#endif
  } else {
    auto opts = c10d::ProcessGroupGloo::Options::create();
    opts->timeout = timeout;
    opts->devices.push_back(gloo_device(env));
    try {
      pg_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store_, env.rank, env.world_size, opts);
    } catch (const std::exception& e) {
      throw RuntimeError(detail::concat("rank ", env.rank, ": the ", env.world_size, " ranks did not connect within ",
                                        timeout.count() / 1000, " s (", first_line(e.what()),
                                        "); another rank failed to start (see its log) or cannot reach this host"));
    }
  }
  // The heartbeat has its own connection: a store client is not shared across threads.
  c10d::TCPStoreOptions ho = so;
  ho.isServer = false;
  ho.waitWorkers = false;
  auto hb = scoped(c10::make_intrusive<c10d::TCPStore>(env.master_addr, ho));
  // The first beat before the group is handed out: a rank is on record from
  // its start, however short its life (the thread's first beat may come
  // after a quick run has ended).
  const std::string key = "mpq/heartbeat/" + std::to_string(env.rank);
  {
    const std::string v = std::to_string(now_ms());
    hb->set(key, std::vector<uint8_t>(v.begin(), v.end()));
  }
  heartbeat_ = std::thread([beat = beat_, hb, key] {
    while (!beat->stop.load()) {
      try {
        const std::string v = std::to_string(now_ms());
        hb->set(key, std::vector<uint8_t>(v.begin(), v.end()));
      } catch (...) {
        break;  // the master is gone; the next collective reports it
      }
      for (int i = 0; i < 10 && !beat->stop.load(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(kHeartbeatMs / 10));
    }
    beat->done.store(true);
  });
}

Group::~Group() {
  beat_->stop.store(true);
  if (!heartbeat_.joinable()) return;
  // A heartbeat blocked in a store call on a dead link never returns: wait
  // a bounded time, then let it go (it owns what it uses).
  for (int i = 0; i < 30 && !beat_->done.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  if (beat_->done.load()) heartbeat_.join();
  else heartbeat_.detach();
}

// The ranks whose heartbeat is older than 2.5 periods, after waiting long
// enough for a fresh failure to show; the master's loss when the store is
// gone or does not answer within the timeout (a cut link leaves a store
// call blocked for good: it runs on a thread of its own, left behind then).
std::string Group::lost_ranks() {
  std::this_thread::sleep_for(std::chrono::milliseconds(3 * kHeartbeatMs));
  const std::string master = "rank 0 (the master, " + env_.master_addr + ":" + std::to_string(env_.master_port) + ")";
  auto answer = std::make_shared<std::promise<std::string>>();
  std::future<std::string> lost = answer->get_future();
  std::thread([store = store_, env = env_, answer] {
    std::string out;
    try {
      const int64_t now = now_ms();
      for (int r = 0; r < env.world_size; ++r) {
        if (r == env.rank) continue;
        const std::string key = "mpq/heartbeat/" + std::to_string(r);
        int64_t age = -1;
        if (store->check({key})) {
          const std::vector<uint8_t> v = store->get(key);
          age = now - std::stoll(std::string(v.begin(), v.end()));
        }
        if (age < 0 || age > kHeartbeatMs * 5 / 2) out += (out.empty() ? "" : ", ") + std::to_string(r);
      }
      if (!out.empty()) out = (out.find(',') == std::string::npos ? "rank " : "ranks ") + out;
    } catch (const std::exception&) {
      out = "\x01";  // the store is gone
    }
    answer->set_value(out);
  }).detach();
  if (lost.wait_for(timeout_) != std::future_status::ready) return master;
  const std::string r = lost.get();
  return r == "\x01" ? master : r;
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

// c10d takes contiguous tensors only: a channels-last one goes through a
// copy, as does, with NCCL, one that is not on the rank's GPU.
template <typename F>
void Group::staged(torch::Tensor& t, F&& f) {
  const bool move = backend_ == Backend::kNccl && t.device() != device_;
  if (!move && t.is_contiguous()) return f(t);
  torch::Tensor c = move ? t.to(device_).contiguous() : t.contiguous();
  f(c);
  t.copy_(c);
}

void Group::all_reduce_sum(torch::Tensor& t) {
  guarded("all-reduce", [&] {
    staged(t, [&](torch::Tensor& c) {
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

namespace {

class GlooPending : public Group::Pending {
 public:
  GlooPending(c10::intrusive_ptr<c10d::Work> w, std::function<void(std::exception_ptr)> fail)
      : work_(std::move(w)), fail_(std::move(fail)) {}
  void wait() override {
    try {
      work_->wait();
    } catch (...) {
      fail_(std::current_exception());
    }
  }

 private:
  c10::intrusive_ptr<c10d::Work> work_;
  std::function<void(std::exception_ptr)> fail_;
};

}  // namespace

std::unique_ptr<Group::Pending> Group::all_reduce_sum_async(torch::Tensor t) {
  MPQ_ASSERT(t.is_contiguous() && (backend_ != Backend::kNccl || t.device() == device_),
             "all_reduce_sum_async takes a contiguous tensor on the group's device");
  c10::intrusive_ptr<c10d::Work> w;
  guarded("all-reduce", [&] {
    std::vector<torch::Tensor> ts{std::move(t)};
    w = pg_->allreduce(ts);
  });
  // A failure shows in wait(): named there as the blocking calls name it.
  return std::make_unique<GlooPending>(std::move(w), [this](std::exception_ptr e) {
    guarded("all-reduce", [&] { std::rethrow_exception(e); });
  });
}

void Group::broadcast(torch::Tensor& t) {
  guarded("broadcast", [&] {
    staged(t, [&](torch::Tensor& c) {
      std::vector<torch::Tensor> ts{c};
      c10d::BroadcastOptions o;
      o.rootRank = 0;
      pg_->broadcast(ts, o)->wait();
    });
  });
}

struct GradSync::State {
  struct Bucket {
    torch::Tensor buf;
    std::vector<size_t> params;  // indices into State::params
    size_t waiting = 0;          // parameters not yet copied in
    std::unique_ptr<Group::Pending> pending;
  };
  Group* group = nullptr;
  std::vector<torch::Tensor> params;
  std::vector<size_t> bucket_of;
  std::vector<int64_t> offset;
  std::vector<char> ready;
  std::vector<Bucket> buckets;
  size_t next_launch = 0;
  bool armed = false, accumulated = false, repeated = false;

  // Starts every complete bucket from the next in order on.
  void launch_ready() {
    while (next_launch < buckets.size() && buckets[next_launch].waiting == 0) {
      Bucket& b = buckets[next_launch++];
      b.pending = group->all_reduce_sum_async(b.buf);
    }
  }
  // One strided copy whatever g's layout (reshape would first make a
  // channels-last gradient contiguous: a second kernel).
  void copy_in(size_t i, const torch::Tensor& g) {
    buckets[bucket_of[i]].buf.narrow(0, offset[i], params[i].numel()).view(params[i].sizes()).copy_(g);
  }
  void on_grad(size_t i, const torch::Tensor& grad) {
    if (!armed) return;
    if (ready[i]) {  // a second gradient in one backward: finish() averages the final ones
      repeated = true;
      return;
    }
    ready[i] = 1;
    const torch::Tensor& held = params[i].grad();
    copy_in(i, accumulated && held.defined() ? held + grad : grad);
    Bucket& b = buckets[bucket_of[i]];
    if (--b.waiting == 0 && !repeated) launch_ready();
  }
};

GradSync::GradSync(Group& group, std::vector<torch::Tensor> params, int64_t bucket_bytes, int64_t first_bucket_bytes)
    : group_(group), state_(std::make_shared<State>()) {
  State& st = *state_;
  st.group = &group;
  st.params = std::move(params);
  const size_t n = st.params.size();
  st.bucket_of.assign(n, 0);
  st.offset.assign(n, 0);
  st.ready.assign(n, 0);
  // Buckets in reverse parameter order; a parameter larger than a bucket gets one of its own.
  int64_t bytes = 0, numel = 0;
  auto close_bucket = [&] {
    if (!st.buckets.empty()) st.buckets.back().buf = torch::zeros({numel}, st.params[st.buckets.back().params.front()].options());
  };
  for (size_t k = n; k-- > 0;) {
    const torch::Tensor& p = st.params[k];
    bool start = st.buckets.empty();
    if (!start) {
      const torch::Tensor& head = st.params[st.buckets.back().params.front()];
      const int64_t cap = st.buckets.size() == 1 ? first_bucket_bytes : bucket_bytes;
      start = bytes + static_cast<int64_t>(p.nbytes()) > cap || head.scalar_type() != p.scalar_type() ||
              head.device() != p.device();
    }
    if (start) {
      close_bucket();
      st.buckets.emplace_back();
      bytes = numel = 0;
    }
    st.bucket_of[k] = st.buckets.size() - 1;
    st.offset[k] = numel;
    st.buckets.back().params.push_back(k);
    bytes += static_cast<int64_t>(p.nbytes());
    numel += p.numel();
  }
  close_bucket();
  std::weak_ptr<State> weak = state_;
  for (size_t k = 0; k < n; ++k) {
    hooks_.push_back(st.params[k].register_hook([weak, k](const torch::Tensor& grad) {
      if (auto s = weak.lock()) s->on_grad(k, grad);
    }));
  }
}

GradSync::~GradSync() {
  for (size_t k = 0; k < hooks_.size(); ++k) state_->params[k].remove_hook(hooks_[k]);
}

void GradSync::arm(bool accumulated) {
  State& st = *state_;
  st.armed = true;
  st.accumulated = accumulated;
  st.repeated = false;
  st.next_launch = 0;
  std::fill(st.ready.begin(), st.ready.end(), 0);
  for (auto& b : st.buckets) {
    b.waiting = b.params.size();
    b.pending.reset();
  }
}

void GradSync::finish() {
  State& st = *state_;
  if (!st.armed) return;
  st.armed = false;
  launched_early_ = st.next_launch;
  const int world = group_.env().world_size;
  if (st.repeated) {
    // Some parameter took part twice: what was sent may not be final. Wait
    // for it (every rank started the same buckets), then average afresh.
    for (auto& b : st.buckets)
      if (b.pending) b.pending->wait();
    std::fill(st.ready.begin(), st.ready.end(), 0);
    st.next_launch = 0;
    launched_early_ = 0;
  }
  std::vector<char> had(st.params.size(), 0);
  for (size_t i = 0; i < st.params.size(); ++i) {
    had[i] = st.ready[i] || st.params[i].grad().defined();
    if (st.ready[i]) continue;
    // No gradient this backward: what it holds, or zeros (not written back).
    if (had[i]) {
      st.copy_in(i, st.params[i].grad());
    } else {
      st.buckets[st.bucket_of[i]].buf.narrow(0, st.offset[i], st.params[i].numel()).zero_();
    }
    st.ready[i] = 1;
  }
  for (auto& b : st.buckets) b.waiting = 0;
  st.launch_ready();
  for (auto& b : st.buckets) {
    b.pending->wait();
    b.pending.reset();
    b.buf.div_(world);
  }
  torch::NoGradGuard no_grad;
  // The averages back into the gradients: those laid out as their bucket
  // slice (1-D ones, contiguous ones) in one multi-tensor copy (a few
  // kernels on a GPU, not one per parameter), the others (channels-last
  // weights) one by one.
  std::vector<torch::Tensor> dst, src;
  for (size_t i = 0; i < st.params.size(); ++i) {
    if (!had[i]) continue;
    torch::Tensor& p = st.params[i];
    const torch::Tensor avg = st.buckets[st.bucket_of[i]].buf.narrow(0, st.offset[i], p.numel()).view(p.sizes());
    if (!p.grad().defined()) {
      p.mutable_grad() = torch::empty_like(p).copy_(avg);
    } else if (p.grad().strides() == avg.strides()) {
      dst.push_back(p.grad());
      src.push_back(avg);
    } else {
      p.mutable_grad().copy_(avg);
    }
  }
  if (!dst.empty()) at::_foreach_copy_(dst, src);
}

}  // namespace mpq::dist

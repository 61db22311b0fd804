// c10d from C++: two processes (forked by the test, torchrun's variables set
// by hand) rendezvous through TCPStore and all-reduce over Gloo on loopback.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/torch.h>

#include "dist/dist.h"
#include "test_util.h"
#include "mpq/common/error.h"

using namespace mpq;

TEST(Dist, EnvironmentDefaultsAndErrors) {
  ::unsetenv("WORLD_SIZE");
  ::unsetenv("RANK");
  EXPECT_FALSE(dist::env_from_environment().distributed());
  EXPECT_FALSE(dist::env_from_environment().launched);
  ::setenv("WORLD_SIZE", "1", 1);  // torchrun --nproc_per_node=1: launched, not distributed
  EXPECT_TRUE(dist::env_from_environment().launched);
  EXPECT_FALSE(dist::env_from_environment().distributed());
  ::setenv("WORLD_SIZE", "2", 1);
  ::setenv("RANK", "5", 1);
  EXPECT_THROW(dist::env_from_environment(), InputError);
  ::unsetenv("WORLD_SIZE");
  ::unsetenv("RANK");
}

namespace {

// Runs `body(rank, group)` (returning its failure count) on two forked
// processes and expects none on either. `agent_store`: the parent also plays
// torchrun's agent, serving the store the ranks join as clients (restart
// count 3), and checks that their keys went under /worker/attempt_3/.
template <typename F>
void on_two_ranks(F body, bool agent_store = false) {
  const int port = mpq::test::free_port();  // a fresh one per test
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  const int rank = child == 0 ? 1 : 0;
  int failures = 0;
  c10::intrusive_ptr<c10d::TCPStore> agent;  // outlives both ranks' use of it
  try {
    if (agent_store && rank == 0) {
      c10d::TCPStoreOptions ao;
      ao.port = static_cast<uint16_t>(port);
      ao.isServer = true;
      ao.waitWorkers = false;
      agent = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", ao);
    }
    dist::Env env;
    env.rank = rank;
    env.world_size = 2;
    env.master_addr = "127.0.0.1";
    env.master_port = port;
    env.agent_store = agent_store;
    env.restart_count = 3;
    dist::Group g(env, std::chrono::seconds(30));
    failures += body(rank, g);
    // The heartbeats are written by a background thread: on a loaded machine
    // the first may land after the body is done, so wait for them (bounded).
    if (agent) {
      try {
        agent->wait({"/worker/attempt_3/mpq/heartbeat/0", "/worker/attempt_3/mpq/heartbeat/1"}, std::chrono::seconds(20));
      } catch (const std::exception& e) {
        std::fprintf(stderr, "rank 0: heartbeats not in the agent's store: %s\n", e.what());
        ++failures;
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
    ++failures;
  }
  if (child == 0) ::_exit(failures == 0 ? 0 : 1);
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_EQ(failures, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "rank 1 failed";
}

}  // namespace

TEST(Dist, TwoProcessesAllReduceOverGloo) {
  on_two_ranks([](int rank, dist::Group& g) {
    int failures = 0;
    torch::Tensor t = torch::full({4}, static_cast<float>(rank + 1));
    g.all_reduce_mean(t);
    failures += !torch::allclose(t, torch::full({4}, 1.5f));
    torch::Tensor b = torch::full({2}, static_cast<float>(rank * 10 + 3));
    g.broadcast(b);
    failures += !torch::equal(b, torch::full({2}, 3.0f));
    return failures;
  });
}

// Under torchrun the agent serves the store and rank 0 must not try to.
TEST(Dist, RanksJoinTorchrunsAgentStore) {
  on_two_ranks(
      [](int rank, dist::Group& g) {
        torch::Tensor t = torch::full({3}, static_cast<float>(rank + 1));
        g.all_reduce_sum(t);
        return static_cast<int>(!torch::equal(t, torch::full({3}, 3.0f)));
      },
      /*agent_store=*/true);
}

// Overlapped bucketed averaging gives what a plain all-reduce after backward
// gives, bit for bit: with many small buckets, gradients accumulated over
// two backwards, a parameter the last backward does not reach, one that never
// gets a gradient, and a channels-last one.
TEST(Dist, GradSyncAveragesAsAPlainAllReduce) {
  on_two_ranks([](int rank, dist::Group& g) {
    int failures = 0;
    torch::manual_seed(11);  // the same parameters on both ranks
    // Backward order is the reverse: ps[4], ps[3], ps[2] start early; ps[1]
    // (not reached by the last backward) holds the rest until finish().
    std::vector<torch::Tensor> ps = {
        torch::randn({2}).requires_grad_(),  // never used
        torch::randn({5}).requires_grad_(), torch::randn({7, 3}).requires_grad_(),
        torch::randn({6, 4, 3, 3}).contiguous(torch::MemoryFormat::ChannelsLast).requires_grad_(),
        torch::randn({3}).requires_grad_()};
    torch::manual_seed(100 + rank);  // different data per rank
    const torch::Tensor x = torch::randn({8, 4, 5, 5});
    auto backward = [&](bool last) {
      torch::Tensor y = torch::conv2d(x, ps[3]).mean({2, 3});  // [8, 6]
      torch::Tensor l = (y * y).sum() + ps[2].sum() * 0.1;
      if (!last) l = l + (ps[1] * ps[1]).sum() * y.mean();  // ps[1] only in the first backward
      l = l + (ps[4] * y.mean()).sum();
      l.backward();
    };
    auto run = [&](bool overlapped, int bucket_bytes) {
      for (auto& p : ps) p.mutable_grad() = torch::Tensor();
      std::unique_ptr<dist::GradSync> sync;
      if (overlapped) sync = std::make_unique<dist::GradSync>(g, ps, bucket_bytes, bucket_bytes);
      backward(false);
      if (sync) sync->arm(/*accumulated=*/true);
      backward(true);
      if (sync) {
        sync->finish();
      } else {
        std::vector<torch::Tensor> grads;
        for (auto& p : ps)
          if (p.grad().defined()) grads.push_back(p.mutable_grad());
        g.all_reduce_mean_flat(grads);
      }
      std::vector<torch::Tensor> out;
      for (auto& p : ps) out.push_back(p.grad().defined() ? p.grad().clone() : torch::Tensor());
      return std::make_pair(out, sync ? sync->launched_during_backward() : size_t{0});
    };
    const auto [plain, unused] = run(false, 0);
    for (int bucket : {16, 64, 1 << 20}) {
      const auto [overlapped, early] = run(true, bucket);
      for (size_t i = 0; i < ps.size(); ++i) {
        if (plain[i].defined() != overlapped[i].defined()) {
          std::fprintf(stderr, "rank %d bucket %d: parameter %zu defined differs\n", rank, bucket, i);
          ++failures;
        } else if (plain[i].defined() && !torch::equal(plain[i], overlapped[i])) {
          std::fprintf(stderr, "rank %d bucket %d: parameter %zu differs\n", rank, bucket, i);
          ++failures;
        }
      }
      // One parameter per bucket: the three reached first start before finish().
      if (bucket == 16 && early != 3) {
        std::fprintf(stderr, "rank %d: %zu buckets started during backward, not 3\n", rank, early);
        ++failures;
      }
    }
    if (ps[0].grad().defined()) ++failures;
    return failures;
  });
}

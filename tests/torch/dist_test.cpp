// c10d from C++: two processes (forked by the test, torchrun's variables set
// by hand) rendezvous through TCPStore and all-reduce over Gloo on loopback.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <torch/torch.h>

#include "dist/dist.h"
#include "mpq/common/error.h"

using namespace mpq;

TEST(Dist, EnvironmentDefaultsAndErrors) {
  ::unsetenv("WORLD_SIZE");
  ::unsetenv("RANK");
  EXPECT_FALSE(dist::env_from_environment().distributed());
  ::setenv("WORLD_SIZE", "2", 1);
  ::setenv("RANK", "5", 1);
  EXPECT_THROW(dist::env_from_environment(), InputError);
  ::unsetenv("WORLD_SIZE");
  ::unsetenv("RANK");
}

TEST(Dist, TwoProcessesAllReduceOverGloo) {
  const int port = 20000 + static_cast<int>(::getpid() % 20000);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  const int rank = child == 0 ? 1 : 0;
  int failures = 0;
  try {
    dist::Env env;
    env.rank = rank;
    env.world_size = 2;
    env.master_addr = "127.0.0.1";
    env.master_port = port;
    dist::Group g(env, std::chrono::seconds(30));
    torch::Tensor t = torch::full({4}, static_cast<float>(rank + 1));
    g.all_reduce_mean(t);
    failures += !torch::allclose(t, torch::full({4}, 1.5f));
    torch::Tensor b = torch::full({2}, static_cast<float>(rank * 10 + 3));
    g.broadcast(b);
    failures += !torch::equal(b, torch::full({2}, 3.0f));
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

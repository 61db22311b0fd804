// Data-parallel training across two "nodes" that are network namespaces with
// their own addresses, joined by a veth pair the test makes (Debian's
// iproute2; skipped with the reason where namespaces cannot be made). The
// ranks reach each other only through that link, so a lost process and a
// cut link are real network faults, not loopback ones:
//   1. two torchrun nodes train equal to one process with the global batch;
//   2. one node's process is killed mid-epoch: the other exits 1 within
//      dist_timeout naming the lost rank, its last checkpoint intact;
//   3. the link is cut mid-epoch: the same, and the run resumes from
//      last.pt on one process and finishes where it should;
//   4. a node that cannot reach the master names the address it tried.
// Every wait is bounded; the namespaces (and with them the veth pair) are
// deleted when the test ends.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>

#include "train_fixture.h"

namespace {

using namespace mpq::test::train;

std::string sh(const std::string& cmd) {
  const std::string out = "/tmp/mpq_netns_sh." + std::to_string(::getpid());
  const int rc = std::system((cmd + " >" + out + " 2>&1").c_str());
  std::string text = mpq::test::read_all(out);
  ::unlink(out.c_str());
  return rc == 0 ? "" : (text.empty() ? "exit " + std::to_string(rc) : text);
}

// Two namespaces a and b, addresses 10.213.N.1 and .2 on a veth pair.
class Nodes {
 public:
  Nodes() {
    const std::string id = std::to_string(::getpid() % 100000);
    a_ = "mpqa" + id, b_ = "mpqb" + id, va_ = "mpqva" + id, vb_ = "mpqvb" + id;
    if (::access("/usr/sbin/ip", X_OK) != 0) {
      why_ = "no /usr/sbin/ip (Debian's iproute2)";
      return;
    }
    const std::string net = "10.213." + std::to_string(::getpid() % 250) + ".";
    ip_a_ = net + "1", ip_b_ = net + "2";
    for (const std::string& c :
         {"ip netns add " + a_, "ip netns add " + b_, "ip link add " + va_ + " type veth peer name " + vb_,
          "ip link set " + va_ + " netns " + a_, "ip link set " + vb_ + " netns " + b_,
          "ip -n " + a_ + " addr add " + ip_a_ + "/24 dev " + va_, "ip -n " + b_ + " addr add " + ip_b_ + "/24 dev " + vb_,
          "ip -n " + a_ + " link set " + va_ + " up", "ip -n " + b_ + " link set " + vb_ + " up",
          "ip -n " + a_ + " link set lo up", "ip -n " + b_ + " link set lo up"}) {
      why_ = sh(c);
      if (!why_.empty()) {
        why_ = c + ": " + why_;
        return;
      }
    }
  }
  ~Nodes() {
    (void)sh("ip netns del " + a_);
    (void)sh("ip netns del " + b_);
  }
  const std::string& unavailable() const { return why_; }
  const std::string& master() const { return ip_a_; }
  // argv run inside node 0 (a) or node 1 (b); `ip netns exec` execs, so the pid is the command's.
  std::vector<std::string> in(int node, const std::vector<std::string>& argv) const {
    std::vector<std::string> v{"/usr/sbin/ip", "netns", "exec", node == 0 ? a_ : b_};
    v.insert(v.end(), argv.begin(), argv.end());
    return v;
  }
  std::string shell(int node) const { return "ip netns exec " + (node == 0 ? a_ : b_) + " "; }
  std::string cut() const { return sh("ip -n " + a_ + " link set " + va_ + " down"); }

 private:
  std::string a_, b_, va_, vb_, ip_a_, ip_b_, why_;
};

#define MPQ_NEED_NODES(n)                                                                                    \
  if (!(n).unavailable().empty())                                                                          \
  GTEST_SKIP() << "cannot make network namespaces here (needs root and iproute2): " << (n).unavailable()

int port() { return 30000 + static_cast<int>(::getpid() % 20000); }

// The torchrun variables of one process per node.
std::vector<std::string> env(int rank, const Nodes& n, int p) {
  return {"RANK=" + std::to_string(rank), "WORLD_SIZE=2", "LOCAL_RANK=0", "LOCAL_WORLD_SIZE=1",
          "MASTER_ADDR=" + n.master(), "MASTER_PORT=" + std::to_string(p)};
}

const std::string kSync = "sync_bn: true\nthreads: 1\nepochs: 1\ncheckpoint_steps: 0\nbn_calib_images: 0\n";

TEST(Nodes, TwoTorchrunNodesEqualOneProcessWithTheGlobalBatch) {
  Nodes n;
  MPQ_NEED_NODES(n);
  if (mpq::test::torchrun().empty()) GTEST_SKIP() << mpq::test::kNoTorchPython;
  Fixture f;
  const std::string sets = " --set dataloader.fraction=0.125";
  const Result one = mpq_run("finetune " + f.config("one", "finetune", kSync) + sets, f.dir);
  ASSERT_EQ(one.code, 0) << one.err;
  auto node = [&](int rank) {
    return n.shell(rank) + mpq::test::torchrun() + " --no-python --nnodes=2 --node_rank=" + std::to_string(rank) +
           " --nproc_per_node=1 --master_addr=" + n.master() + " --master_port=" + std::to_string(port()) + " " +
           MPQ_BINARY + " finetune " + f.config("nodes", "finetune", kSync) + sets +
           " --set dataloader.batch_size=16 >" + f.dir.file("node" + std::to_string(rank)) + " 2>&1";
  };
  const std::string both = "timeout 300 sh -c '" + node(0) + " & n0=$!; " + node(1) + "; n1=$?; wait $n0; exit $(( $? | n1 ))'";
  ASSERT_EQ(std::system(both.c_str()), 0) << mpq::test::read_all(f.dir.file("node0"))
                                          << mpq::test::read_all(f.dir.file("node1"));
  EXPECT_NE(mpq::test::read_all(f.dir.file("node0")).find("rank 0/2: joined the group at " + n.master()),
            std::string::npos)
      << mpq::test::read_all(f.dir.file("node0"));
  expect_same_state(f.run_dir("one") + "/last.pt", f.run_dir("nodes") + "/last.pt", 1e-5);
}

// Starts the two ranks of a 2-epoch finetune (a checkpoint every step), waits
// until rank 0 has written three, then applies `fault`. Returns rank 0's and
// rank 1's exit codes and the seconds rank 0 took to exit after the fault.
struct Outcome {
  int code0 = -1, code1 = -1;
  double secs0 = 0;
};
Outcome run_with_fault(const Nodes& n, const Fixture& f, const std::string& cfg, const std::function<void(pid_t)>& fault) {
  Outcome o;
  const int p = port() + 1;
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; ++r)
    pids.push_back(spawn(n.in(r, {MPQ_BINARY, "finetune", cfg, "--set", "dataloader.batch_size=16"}),
                         f.dir.file("rank" + std::to_string(r) + ".err"), env(r, n, p)));
  const int seen = wait_for_writes(f.run_dir("two") + "/last.pt", 3, std::chrono::seconds(90));
  if (seen == 3) fault(pids[1]);
  const auto at = std::chrono::steady_clock::now();
  auto wait_bounded = [](pid_t pid, int seconds) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    int status = 0;
    while (::waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > end) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        return -1;  // hung
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  };
  o.code0 = wait_bounded(pids[0], 120);
  o.secs0 = std::chrono::duration<double>(std::chrono::steady_clock::now() - at).count();
  o.code1 = wait_bounded(pids[1], 120);
  EXPECT_EQ(seen, 3) << mpq::test::read_all(f.dir.file("rank0.err")) << mpq::test::read_all(f.dir.file("rank1.err"));
  return o;
}

TEST(Nodes, AKilledNodeIsNamedWithinTheTimeoutAndTheCheckpointStaysIntact) {
  Nodes n;
  MPQ_NEED_NODES(n);
  Fixture f;
  const std::string cfg = f.config("two", "finetune", "sync_bn: true\nthreads: 1\ndist_timeout: 10\n");
  const Outcome o = run_with_fault(n, f, cfg, [](pid_t rank1) { ::kill(rank1, SIGKILL); });
  EXPECT_EQ(o.code0, 1);
  EXPECT_LT(o.secs0, 10.0 + 5);
  const std::string err = mpq::test::read_all(f.dir.file("rank0.err"));
  EXPECT_NE(err.find("rank 0: "), std::string::npos) << err;
  EXPECT_NE(err.find("failed: lost rank 1"), std::string::npos) << err;
  const auto ck = mpq::torchio::read_checkpoint(f.run_dir("two") + "/last.pt");  // never torn
  EXPECT_GE(ck.root.find("step")->as_int(), 3);
}

TEST(Nodes, ACutLinkIsNamedAndTheRunResumesFromItsCheckpoint) {
  Nodes n;
  MPQ_NEED_NODES(n);
  Fixture f;
  const std::string cfg = f.config("two", "finetune", "sync_bn: true\nthreads: 1\ndist_timeout: 10\n");
  std::string cut_error;
  const Outcome o = run_with_fault(n, f, cfg, [&](pid_t) { cut_error = n.cut(); });
  ASSERT_EQ(cut_error, "");
  EXPECT_EQ(o.code0, 1);
  EXPECT_LT(o.secs0, 10.0 + 5);
  EXPECT_EQ(o.code1, 1) << "rank 1 must end too, not hang";
  const std::string err0 = mpq::test::read_all(f.dir.file("rank0.err"));
  const std::string err1 = mpq::test::read_all(f.dir.file("rank1.err"));
  EXPECT_NE(err0.find("failed: lost rank 1"), std::string::npos) << err0;
  EXPECT_NE(err1.find("rank 1: "), std::string::npos) << err1;
  EXPECT_NE(err1.find("lost rank 0"), std::string::npos) << err1;
  // One process of batch 32 (the same global batch) continues at the same
  // sample and ends where the two-process run would have.
  expect_resume_finishes(f, cfg, f.run_dir("two") + "/last.pt", 2, 16);
}

TEST(Nodes, ANodeThatCannotReachTheMasterNamesTheAddressItTried) {
  Nodes n;
  MPQ_NEED_NODES(n);
  Fixture f;
  ASSERT_EQ(n.cut(), "");
  const int p = port() + 2;
  const pid_t pid = spawn(n.in(1, {MPQ_BINARY, "finetune", f.config("x", "fp", "dist_timeout: 3\n")}),
                          f.dir.file("x.err"), env(1, n, p));
  const auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (std::chrono::steady_clock::now() - t0 >= std::chrono::seconds(60)) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    FAIL() << "hung";
  }
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const std::string err = mpq::test::read_all(f.dir.file("x.err"));
  EXPECT_NE(err.find("rank 1: cannot reach the master at " + n.master() + ":" + std::to_string(p)), std::string::npos)
      << err;
}

}  // namespace

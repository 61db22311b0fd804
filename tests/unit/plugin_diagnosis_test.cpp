// Why the torch plugin did not load, from the loader's own messages (glibc's
// dlerror texts, as they read for each case).
#include <gtest/gtest.h>

#include "cli/plugin_diagnosis.h"

using mpq::cli::libtorch_mismatch;
using mpq::cli::plugin_load_failure;
using mpq::cli::TorchBuildInfo;

namespace {

const TorchBuildInfo kBuild{"2.11.0", "/venv/torch/lib"};
const std::string kPlugin = "/opt/mpq/libmpq_torch.so";

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(PluginDiagnosis, MissingLibTorchNamesTheBuildsLibTorchAndHowToGetIt) {
  const std::string m =
      plugin_load_failure(kPlugin, "libtorch.so: cannot open shared object file: No such file or directory", kBuild);
  EXPECT_EQ(m, "the torch plugin /opt/mpq/libmpq_torch.so needs LibTorch 2.11.0 (/venv/torch/lib), which is missing "
               "(libtorch.so not found): reinstall it with bash scripts/install_torch.sh, or put the lib/ folder of a "
               "LibTorch 2.11.0 on LD_LIBRARY_PATH");
  EXPECT_TRUE(has(plugin_load_failure(kPlugin, "libc10.so: cannot open shared object file: x", kBuild), "libc10.so not found"));
}

TEST(PluginDiagnosis, ACpuLibTorchWhereTheBuildWasCudaSaysSo) {
  const std::string m =
      plugin_load_failure(kPlugin, "libtorch_cuda.so: cannot open shared object file: No such file or directory", kBuild);
  EXPECT_TRUE(has(m, "was built against a CUDA LibTorch 2.11.0 (/venv/torch/lib)")) << m;
  EXPECT_TRUE(has(m, "is a CPU build or incomplete")) << m;
  EXPECT_TRUE(has(m, "first on LD_LIBRARY_PATH")) << m;
}

TEST(PluginDiagnosis, AMissingCudaLibrarySaysWhereToGetIt) {
  for (const char* lib : {"libcudart.so.13", "libcudnn.so.9", "libnccl.so.2", "libcublasLt.so.13", "libcupti.so.13", "libcufile.so.0"}) {
    const std::string m =
        plugin_load_failure(kPlugin, std::string(lib) + ": cannot open shared object file: No such file or directory", kBuild);
    EXPECT_TRUE(has(m, "a CUDA library that LibTorch 2.11.0 (/venv/torch/lib) needs is missing (" + std::string(lib)))
        << m;
    EXPECT_TRUE(has(m, "CUDA 13.0 toolkit") && has(m, "MPQ_TORCH_FULL=1")) << m;
  }
}

TEST(PluginDiagnosis, AnotherMissingLibraryPointsAtTheDependencies) {
  const std::string m =
      plugin_load_failure(kPlugin, "libyaml-cpp.so.0.7: cannot open shared object file: No such file or directory", kBuild);
  EXPECT_EQ(m, "the torch plugin /opt/mpq/libmpq_torch.so needs libyaml-cpp.so.0.7, which is not found: install mpq's "
               "dependencies (bash scripts/install_deps.sh), or add the folder holding it to LD_LIBRARY_PATH");
}

TEST(PluginDiagnosis, AnUndefinedSymbolIsAnotherLibTorchFirstOnThePath) {
  const std::string m = plugin_load_failure(
      kPlugin, "/opt/mpq/libmpq_torch.so: undefined symbol: _ZN2at4_ops5clamp4callERKNS_6TensorE", kBuild);
  EXPECT_TRUE(has(m, "undefined symbol at::_ops::clamp::call(at::Tensor const&)")) << m;
  EXPECT_TRUE(has(m, "another LibTorch than the one it was built against comes first")) << m;
  EXPECT_TRUE(has(m, "put the lib/ folder of LibTorch 2.11.0 (/venv/torch/lib) first on LD_LIBRARY_PATH")) << m;
  EXPECT_TRUE(has(m, "MPQ_LIBTORCH=")) << m;
  // A long symbol is cut at 120 characters, so the message stays readable.
  const std::string cut = plugin_load_failure(kPlugin, "p.so: undefined symbol: " + std::string(400, 'x'), kBuild);
  EXPECT_NE(cut.find(std::string(120, 'x') + "..."), std::string::npos) << cut;
  EXPECT_EQ(cut.find(std::string(121, 'x')), std::string::npos) << cut;
}

TEST(PluginDiagnosis, ThePluginItselfUnreadableOrAnOlderRuntimeKeepTheLoadersWords) {
  EXPECT_EQ(plugin_load_failure(kPlugin, "/opt/mpq/libmpq_torch.so: file too short", kBuild),
            "the torch plugin /opt/mpq/libmpq_torch.so could not be loaded (/opt/mpq/libmpq_torch.so: file too short)");
  EXPECT_EQ(plugin_load_failure(kPlugin, "/opt/mpq/libmpq_torch.so: cannot open shared object file: Permission denied",
                                kBuild),
            "the torch plugin /opt/mpq/libmpq_torch.so could not be loaded (/opt/mpq/libmpq_torch.so: cannot open "
            "shared object file: Permission denied)");
  const std::string m = plugin_load_failure(
      kPlugin, "/lib/x86_64-linux-gnu/libstdc++.so.6: version `GLIBCXX_3.4.30' not found (required by x)", kBuild);
  EXPECT_TRUE(has(m, "needs a newer C or C++ runtime")) << m;
}

TEST(PluginDiagnosis, UnknownBuildInfoStillGivesAVersionToLookFor) {
  const std::string m =
      plugin_load_failure(kPlugin, "libtorch_cpu.so: cannot open shared object file: No such file", TorchBuildInfo{});
  EXPECT_TRUE(has(m, "needs LibTorch 2.11, which is missing")) << m;
}

// A plugin that loaded can still run with another LibTorch release than its
// build's, where every symbol it uses happens to resolve: refused, as the
// classes' layouts behind those symbols may differ.
TEST(PluginDiagnosis, AnotherLibTorchReleaseAtRunTimeIsRefusedWithWhatToDo) {
  const std::string m = libtorch_mismatch(kPlugin, "2.12.1\t/other/torch/lib/libtorch_cpu.so", kBuild);
  EXPECT_EQ(m, "the torch plugin /opt/mpq/libmpq_torch.so was built against LibTorch 2.11.0 (/venv/torch/lib) but "
               "runs with LibTorch 2.12.1 (/other/torch/lib/libtorch_cpu.so), and LibTorch's C++ interface changes "
               "from one release to the next: put the lib/ folder of LibTorch 2.11.0 (/venv/torch/lib) first on "
               "LD_LIBRARY_PATH, or rebuild mpq against the one you want (MPQ_LIBTORCH=<its torch folder> bash "
               "scripts/build.sh)");
  EXPECT_TRUE(has(libtorch_mismatch(kPlugin, "2.10.0\t", kBuild), "runs with LibTorch 2.10.0, and"));
  EXPECT_TRUE(has(libtorch_mismatch(kPlugin, "3.11.0", kBuild), "runs with LibTorch 3.11.0, and"));
  // 2.1 is not 2.11: the release is compared as numbers up to the second dot, not as a prefix.
  EXPECT_FALSE(libtorch_mismatch(kPlugin, "2.1.2\t/x.so", kBuild).empty());
  EXPECT_FALSE(libtorch_mismatch(kPlugin, "2.110.0\t/x.so", kBuild).empty());
}

TEST(PluginDiagnosis, APatchReleaseOrAVersionNeitherSideCanTellRuns) {
  EXPECT_EQ(libtorch_mismatch(kPlugin, "2.11.0\t/venv/torch/lib/libtorch_cpu.so", kBuild), "");
  EXPECT_EQ(libtorch_mismatch(kPlugin, "2.11.1\t/elsewhere/libtorch_cpu.so", kBuild), "");
  EXPECT_EQ(libtorch_mismatch(kPlugin, "2.11.0a0+git70d99e9\t/src/build/lib/libtorch_cpu.so", kBuild), "");
  EXPECT_EQ(libtorch_mismatch(kPlugin, "2.11", kBuild), "");
  // The running LibTorch did not say (a build without the option), or said something that is no version.
  EXPECT_EQ(libtorch_mismatch(kPlugin, "\t/x/libtorch_cpu.so", kBuild), "");
  EXPECT_EQ(libtorch_mismatch(kPlugin, "", kBuild), "");
  EXPECT_EQ(libtorch_mismatch(kPlugin, "nightly\t/x.so", kBuild), "");
  EXPECT_EQ(libtorch_mismatch(kPlugin, "2.\t/x.so", kBuild), "");
  // mpq's build did not record its LibTorch.
  EXPECT_EQ(libtorch_mismatch(kPlugin, "2.12.0\t/x.so", TorchBuildInfo{}), "");
}

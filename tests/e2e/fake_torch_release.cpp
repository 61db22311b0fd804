// Preloaded (LD_PRELOAD) by the loader's test in its place: the function by
// which libtorch_cpu tells its own build options, here a LibTorch that says it
// is release 2.99.0, so that the plugin, built against the real one, runs with
// a LibTorch whose every symbol resolves but whose release differs.
#include <map>
#include <string>

namespace caffe2 {

__attribute__((visibility("default"))) const std::map<std::string, std::string>& GetBuildOptions() {
  static const std::map<std::string, std::string> options{{"TORCH_VERSION", "2.99.0"}};
  return options;
}

}  // namespace caffe2

#include "mpq/common/log.h"

#include <cstdlib>
#include <memory>
#include <vector>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include "mpq/common/error.h"

namespace mpq::log {

void setup(const std::string& level) {
  std::string name = level;
  if (name.empty()) {
    const char* env = std::getenv("SPDLOG_LEVEL");
    name = env && *env ? env : "info";
  }
  auto lvl = spdlog::level::from_str(name);
  // from_str maps unknown names to "off"; only the literal "off" may mean that.
  MPQ_CHECK(lvl != spdlog::level::off || name == "off",
            "--log-level: unknown level '", name, "' (expected trace, debug, info, warn, error or off)");
  spdlog::drop("mpq");  // setup may run more than once (tests)
  auto logger = spdlog::stderr_color_mt("mpq");
  logger->set_pattern("%^%l%$: %v");
  logger->set_level(lvl);
  spdlog::set_default_logger(logger);
}

void add_file(const std::string& path) {
  auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, /*truncate=*/false);
  sink->set_pattern("[%Y-%m-%d %H:%M:%S.%e] %l: %v");
  spdlog::default_logger()->sinks().push_back(sink);
}

}  // namespace mpq::log

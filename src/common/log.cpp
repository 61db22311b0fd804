#include "mpq/common/log.h"

#include <cstdlib>
#include <memory>
#include <vector>

#include <fmt/args.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

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

namespace {

spdlog::level::level_enum to_spdlog(Level l) {
  switch (l) {
    case Level::trace: return spdlog::level::trace;
    case Level::debug: return spdlog::level::debug;
    case Level::info: return spdlog::level::info;
    case Level::warn: return spdlog::level::warn;
    case Level::error: return spdlog::level::err;
    case Level::off: return spdlog::level::off;
  }
  return spdlog::level::info;
}

}  // namespace

void set_level(Level level) { spdlog::set_level(to_spdlog(level)); }

bool enabled(Level level) { return spdlog::default_logger_raw()->should_log(to_spdlog(level)); }

std::string vformat(std::string_view format, const std::vector<Arg>& args) {
  fmt::dynamic_format_arg_store<fmt::format_context> store;
  for (const Arg& a : args) {
    switch (a.kind()) {
      case Arg::Kind::i64: store.push_back(a.i64()); break;
      case Arg::Kind::u64: store.push_back(a.u64()); break;
      case Arg::Kind::f64: store.push_back(a.f64()); break;
      case Arg::Kind::boolean: store.push_back(a.boolean()); break;
      case Arg::Kind::str: store.push_back(a.str()); break;
    }
  }
  try {
    return fmt::vformat(fmt::string_view(format.data(), format.size()), store);
  } catch (const fmt::format_error& e) {  // a bug in a message's format: say so, keep the text
    return std::string(format) + " (bad log format: " + e.what() + ")";
  }
}

void write(Level level, std::string_view format, const std::vector<Arg>& args) {
  const auto lvl = to_spdlog(level);
  if (spdlog::should_log(lvl)) spdlog::log(lvl, "{}", vformat(format, args));
}

}  // namespace mpq::log

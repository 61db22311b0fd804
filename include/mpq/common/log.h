// One spdlog logger for the whole process, on stderr (stdout carries results).
//
// Both sides of the plugin boundary use spdlog's compiled library, so the
// default logger set up here is the one the torch plugin writes through too.
// This header does not include spdlog: LibTorch 2.x ships its own {fmt}
// (12.x) on its include path, which Debian's spdlog (built on fmt 9) cannot
// compile against, so translation units that include torch log through the
// functions here, which format with spdlog's fmt inside mpq_core.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace mpq::log {

// Sets up the default logger on stderr at `level` ("trace", "debug", "info",
// "warn", "error", "off"). An empty level reads SPDLOG_LEVEL, else "info".
// Throws InputError on an unknown level name.
void setup(const std::string& level);

// Adds a file sink (the run folder's log) to the default logger.
void add_file(const std::string& path);

enum class Level { trace, debug, info, warn, error, off };

// Only messages at `level` or above from now on (e.g. warn on ranks other than 0).
void set_level(Level level);
// Whether messages at `level` are shown now.
bool enabled(Level level);

// One argument of a log message: a number, a bool or a string.
class Arg {
 public:
  enum class Kind { i64, u64, f64, boolean, str };
  template <typename T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  Arg(T v) : kind_(std::is_signed_v<T> ? Kind::i64 : Kind::u64), i_(static_cast<int64_t>(v)), u_(static_cast<uint64_t>(v)) {}
  template <typename T, std::enable_if_t<std::is_floating_point_v<T>, int> = 0>
  Arg(T v) : kind_(Kind::f64), f_(static_cast<double>(v)) {}
  Arg(bool v) : kind_(Kind::boolean), b_(v) {}
  Arg(const char* v) : kind_(Kind::str), s_(v) {}
  Arg(std::string v) : kind_(Kind::str), s_(std::move(v)) {}
  Arg(std::string_view v) : kind_(Kind::str), s_(v) {}

  Kind kind() const { return kind_; }
  int64_t i64() const { return i_; }
  uint64_t u64() const { return u_; }
  double f64() const { return f_; }
  bool boolean() const { return b_; }
  const std::string& str() const { return s_; }

 private:
  Kind kind_;
  int64_t i_ = 0;
  uint64_t u_ = 0;
  double f_ = 0;
  bool b_ = false;
  std::string s_;
};

// `format` ({fmt} syntax: {}, {:.4f}, ...) with `args` filled in.
std::string vformat(std::string_view format, const std::vector<Arg>& args);
template <typename... A>
std::string format(std::string_view format, const A&... a) {
  return vformat(format, {Arg(a)...});
}

// Formats `format` with `args` and writes it at `level` through the default logger.
void write(Level level, std::string_view format, const std::vector<Arg>& args);

template <typename... A>
void debug(std::string_view format, const A&... a) {
  write(Level::debug, format, {Arg(a)...});
}
template <typename... A>
void info(std::string_view format, const A&... a) {
  write(Level::info, format, {Arg(a)...});
}
template <typename... A>
void warn(std::string_view format, const A&... a) {
  write(Level::warn, format, {Arg(a)...});
}

}  // namespace mpq::log

// Errors: user errors versus bugs.
//
// A user error (bad flag, malformed file, infeasible search) throws an
// mpq::Error subclass through MPQ_CHECK; its what() is one line that says the
// subject, what is wrong and what to do. A broken internal invariant is a bug:
// MPQ_ASSERT aborts in every build with "internal error ... please report".
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace mpq {

// Process exit codes, documented in the README.
enum class ExitCode : int {
  kOk = 0,
  kRuntime = 1,      // runtime failure (I/O, training diverged, internal error)
  kUsage = 2,        // bad command line, config, or input file
  kInfeasible = 3,   // search: no bit assignment meets the constraints
  kTimeLimit = 4,    // search: time limit reached without any solution
  kInterrupted = 5,  // training stopped by SIGINT/SIGTERM after saving a checkpoint
};

// Base of every error a user can cause. exit_code() says how main exits.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg, ExitCode code = ExitCode::kUsage)
      : std::runtime_error(msg), code_(code) {}
  ExitCode exit_code() const { return code_; }

 private:
  ExitCode code_;
};

// Malformed or unreadable input: files, configs, flags (exit 2).
class InputError : public Error {
 public:
  explicit InputError(const std::string& msg) : Error(msg, ExitCode::kUsage) {}
};

// A failure of the environment while doing valid work (exit 1).
class RuntimeError : public Error {
 public:
  explicit RuntimeError(const std::string& msg) : Error(msg, ExitCode::kRuntime) {}
};

namespace detail {
template <typename... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  return os.str();
}
[[noreturn]] void assert_fail(const char* cond, const char* file, int line, const std::string& msg);
}  // namespace detail

}  // namespace mpq

// Throws ErrorType(concat(parts...)) unless cond holds.
#define MPQ_CHECK_T(ErrorType, cond, ...)                          \
  do {                                                             \
    if (!(cond)) throw ErrorType(::mpq::detail::concat(__VA_ARGS__)); \
  } while (0)

// User-facing check: throws mpq::InputError (exit 2) with the message parts.
#define MPQ_CHECK(cond, ...) MPQ_CHECK_T(::mpq::InputError, cond, __VA_ARGS__)

// Internal invariant, on in every build: aborts with a request to report.
#define MPQ_ASSERT(cond, ...)                                                      \
  do {                                                                             \
    if (!(cond))                                                                   \
      ::mpq::detail::assert_fail(#cond, __FILE__, __LINE__,                        \
                                 ::mpq::detail::concat("" __VA_OPT__(, ) __VA_ARGS__)); \
  } while (0)

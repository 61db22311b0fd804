// mpq: mixed-precision quantization via learned layer-wise importance.
// Never links libtorch: --help, config validation and search start in ms.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "mpq/common/error.h"
#include "mpq/common/log.h"

namespace {

constexpr const char* kStdoutClosed = "mpq: the results could not be written: stdout is closed; redirect it to a file\n";

// A standard descriptor the caller closed (`mpq ... >&-`) would be reused by
// the next file mpq opens, and results or logs would land in a checkpoint or
// the -o file. Closed ones are reopened: stdin and stderr on /dev/null,
// stdout on /dev/full, so that results written there fail and are reported.
// Returns whether stdout was closed.
bool reopen_closed_standard_fds() {
  bool stdout_closed = false;
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    stdout_closed = stdout_closed || fd == 1;
    const int got = ::open(fd == 1 ? "/dev/full" : "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
    if (got >= 0 && got != fd) {
      ::dup2(got, fd);
      ::close(got);
    }
  }
  return stdout_closed;
}

// The results on stdout must have reached it: a full disk or a closed stdout
// is a failure (exit 1), not a success with the results lost.
int check_stdout(int code, bool stdout_closed) {
  errno = 0;
  if (std::fflush(stdout) == 0 && !std::ferror(stdout)) return code;
  const int err = errno;
  if (code != 0) return code;  // the command's own error was reported
  if (stdout_closed)
    std::fputs(kStdoutClosed, stderr);
  else
    std::fprintf(stderr, "mpq: the results could not be written to stdout (%s)\n",
                 err ? std::strerror(err) : "write error");
  return static_cast<int>(mpq::ExitCode::kRuntime);
}

int run(int argc, char** argv, bool stdout_closed) {
  CLI::App app{"mpq: mixed-precision quantization with learned layer-wise importance (LIMPQ, ECCV 2022)", "mpq"};
  app.set_version_flag("--version", "mpq 0.1.0");
  app.require_subcommand(1);
  app.fallthrough();
  std::string log_level;
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off (default: $SPDLOG_LEVEL or info)");
  app.footer(
      "Exit codes: 0 ok, 1 runtime failure, 2 usage or config error, 3 search infeasible,\n"
      "4 search time limit without a solution, 5 training interrupted (SIGINT/SIGTERM) after\n"
      "saving a checkpoint.");
  std::vector<mpq::cli::Command> commands;
  for (auto setup : {mpq::cli::setup_search, mpq::cli::setup_pretrain, mpq::cli::setup_extract,
                     mpq::cli::setup_finetune, mpq::cli::setup_eval, mpq::cli::setup_export,
                     mpq::cli::setup_importance})
    commands.push_back(setup(app));
  // The first word that is not an option or its value must be a command.
  std::string names;
  for (const auto& c : commands) names += (names.empty() ? "" : ", ") + c.sub->get_name();
  for (int i = 1; i < argc; ++i) {
    const std::string w = argv[i];
    if (w == "--log-level") {
      ++i;
      continue;
    }
    if (w.rfind("-", 0) == 0) continue;
    bool known = false;
    for (const auto& c : commands) known = known || c.sub->check_name(w);
    if (!known) {
      std::fprintf(stderr, "mpq: '%s' is not a command (%s); see 'mpq --help'\n", w.c_str(), names.c_str());
      return static_cast<int>(mpq::ExitCode::kUsage);
    }
    break;
  }

  try {
    app.parse(argc, argv);
    mpq::log::setup(log_level);
    for (const auto& c : commands)
      if (c.sub->parsed()) c.run();
  } catch (const CLI::CallForHelp&) {
    return app.exit(CLI::CallForHelp());
  } catch (const CLI::CallForAllHelp&) {
    return app.exit(CLI::CallForAllHelp());
  } catch (const CLI::CallForVersion& e) {
    std::printf("%s\n", e.what());
    return 0;
  } catch (const CLI::ParseError& e) {
    // One line, exit 2, whatever CLI11's own code would be.
    std::string sub;
    for (const auto* s : app.get_subcommands()) sub = " " + s->get_name();
    std::fprintf(stderr, "mpq%s: %s; see 'mpq%s --help'\n", sub.c_str(), e.what(), sub.c_str());
    return static_cast<int>(mpq::ExitCode::kUsage);
  } catch (const mpq::Error& e) {
    if (stdout_closed && std::strncmp(e.what(), "stdout: ", 8) == 0)
      std::fputs(kStdoutClosed, stderr);
    else
      std::fprintf(stderr, "mpq: %s\n", e.what());
    return static_cast<int>(e.exit_code());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "mpq: out of memory\n");
    return static_cast<int>(mpq::ExitCode::kRuntime);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpq: internal error: %s; please report this\n", e.what());
    return static_cast<int>(mpq::ExitCode::kRuntime);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const bool stdout_closed = reopen_closed_standard_fds();
  // Results held until the end when stdout is a file or a pipe, so that the
  // reason a write fails is the one the final flush reports.
  static char buffer[1 << 20];
  if (!::isatty(STDOUT_FILENO)) std::setvbuf(stdout, buffer, _IOFBF, sizeof buffer);
  return check_stdout(run(argc, argv, stdout_closed), stdout_closed);
}

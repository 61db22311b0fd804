// SIGINT and SIGTERM during a run: noted, so that the loop saves and stops.
#pragma once

#include <csignal>

namespace mpq::engine {

// Installs SIGINT/SIGTERM handlers for the life of a run (and restores the
// previous ones after it); the signal that arrived reads from signal_received().
class SignalScope {
 public:
  SignalScope();
  ~SignalScope();
  SignalScope(const SignalScope&) = delete;
  SignalScope& operator=(const SignalScope&) = delete;

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

// The signal received since the current SignalScope began; 0 for none.
int signal_received();

}  // namespace mpq::engine

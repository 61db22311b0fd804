// One spdlog logger for the whole process, on stderr (stdout carries results).
//
// Both sides of the plugin boundary use spdlog's compiled library, so the
// default logger set up here is the one the torch plugin writes through too.
#pragma once

#include <string>

#include <spdlog/spdlog.h>

namespace mpq::log {

// Sets up the default logger on stderr at `level` ("trace", "debug", "info",
// "warn", "error", "off"). An empty level reads SPDLOG_LEVEL, else "info".
// Throws InputError on an unknown level name.
void setup(const std::string& level);

// Adds a file sink (the run folder's log) to the default logger.
void add_file(const std::string& path);

}  // namespace mpq::log

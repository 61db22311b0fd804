// Small text helpers shared by the torch-free side: strict number parsing
// (the whole string, nothing after) and XML escaping for the SVG plots.
#pragma once

#include <optional>
#include <string>

namespace mpq {

// The whole of `s` as a finite number, or nothing ("1.5" yes; "1.5ms", "", "nan" no).
std::optional<double> parse_double(const std::string& s);

// The whole of `s` as an integer, or nothing ("12" yes; "12.0", "1e3", "" no).
std::optional<long long> parse_int(const std::string& s);

// `s` with <, > and & escaped, for SVG text.
std::string xml_escape(const std::string& s);

}  // namespace mpq

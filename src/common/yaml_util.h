// Strict YAML reading with errors that name the file, key path and line.
//
// yaml-cpp's own exceptions say only "bad conversion"; these helpers say
// `configs/r18.yaml:12:7: lr must be a number (got 'abc')`.
#pragma once

#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

namespace mpq::yaml {

// Parses YAML (or JSON) text; InputError naming `source` with line:column on a
// syntax error.
YAML::Node load_yaml_string(const std::string& text, const std::string& source);

// "path:line:col" of a node (1-based), or just the path when unknown.
std::string where(const std::string& file, const YAML::Node& node);

// The candidate closest to `word` by edit distance, or "" when none is close.
std::string close_match(const std::string& word, const std::vector<std::string>& candidates);

// Throws InputError for every key of `map` not in `known`, with a hint.
void check_keys(const std::string& file, const YAML::Node& map, const std::string& path,
                const std::vector<std::string>& known);

// Scalar readers: InputError "file:l:c: KEY must be TYPE (got 'x')".
double as_double(const std::string& file, const YAML::Node& n, const std::string& key);
int64_t as_int(const std::string& file, const YAML::Node& n, const std::string& key);
bool as_bool(const std::string& file, const YAML::Node& n, const std::string& key);
std::string as_string(const std::string& file, const YAML::Node& n, const std::string& key);

}  // namespace mpq::yaml

// The policy file `mpq search` writes and `mpq finetune` reads.
//
// YAML (default) or JSON with the same keys:
//   model, geometry, indicators {path, sha256}, candidates, alpha,
//   outlier_rule, constraints {bops, wb, ab, cr}, layers, weight_bits,
//   act_bits (one-line lists, pasteable into the original's finetune YAML),
//   solver {method, status, objective, bound, gap, time_s, ...}, report {...}.
#pragma once

#include <string>
#include <vector>

#include "mpq/search/search.h"
#include "mpq/search/sweep.h"

namespace mpq::search {

struct Policy {
  std::string model;
  std::string geometry;  // geometry file, "" for the zoo
  std::string indicators_path, indicators_sha256;
  std::string method;    // "exact" or "cbc"
  bool outlier_rule = true;
  const SearchProblem* problem = nullptr;
  const SearchResult* result = nullptr;
  Report report;
};

std::string policy_yaml(const Policy& p);
std::string policy_json(const Policy& p);

// A sweep's file: the problem as a policy file states it (`header.result`
// unused), then every point, the chosen budget and the uniform policies.
std::string sweep_yaml(const Policy& header, const Sweep& sw);
std::string sweep_json(const Policy& header, const Sweep& sw);

// A policy file read back: the model, layer names and bit-widths.
struct PolicyBits {
  std::string model;
  std::vector<std::string> layers;
  std::vector<int> weight_bits, act_bits;
};

// Reads a policy file written by `mpq search` (YAML or JSON); InputError
// naming the file and key on anything malformed.
PolicyBits load_policy(const std::string& path);
// The same from a policy's text; `source` names it in messages.
PolicyBits load_policy_text(const std::string& text, const std::string& source);

}  // namespace mpq::search

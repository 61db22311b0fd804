// A sweep of one budget: the trade-off between the indicator objective and
// BitOPs (or size), each point solved exactly.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "mpq/search/search.h"

namespace mpq::search {

struct SweepSpec {
  std::string resource;  // "bops": average W x A bits; "cr": compression ratio
  double from = 0, to = 0;
  int points = 50;
};

// Parses --sweep "bops=FROM:TO" or "cr=FROM:TO" with --points N; InputError
// on anything else, an empty or inverted range, or fewer than 1 point.
SweepSpec parse_sweep(const std::string& value, int points);

struct SweepPoint {
  double budget = 0;  // in the sweep's unit
  SearchResult result;
  Report report;
  // The budget the point's policy needs: its optimum is the optimum for every
  // budget between `used` and `budget` (the exact front there).
  double used = 0;
  std::string label;  // "W4A4" for a uniform policy
};

struct Sweep {
  std::string resource;
  double from = 0, to = 0;
  std::vector<SweepPoint> points;
  std::vector<SweepPoint> uniform;  // every allowed uniform W = A policy (and the chosen budget's pair)
  std::optional<SweepPoint> chosen; // the budget given with --bops/--wb/--ab (or --cr), solved as given
  double seconds = 0;               // all the points' solves together
  int count(Status s) const {
    int n = 0;
    for (const auto& p : points) n += p.result.status == s;
    return n;
  }
};

// The range the candidates (and the layer rules) reach in the sweep's unit.
std::pair<double, double> sweep_reach(const SearchProblem& p, const std::string& resource);

// Solves every point of the range (the other budgets of `base` kept);
// InputError when the range reaches beyond what the candidates allow.
Sweep run_sweep(const SearchProblem& base, const SweepSpec& spec, const SolveOptions& options);

// One row per point (and per uniform policy and the chosen budget).
std::string sweep_csv(const SearchProblem& p, const Sweep& sw);

// The objective against GBitOPs (or size): the exact front, uniform
// policies and the chosen budget marked.
std::string sweep_svg(const SearchProblem& p, const Sweep& sw, const std::string& title);

}  // namespace mpq::search

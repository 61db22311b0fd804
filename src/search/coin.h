// Solver-neutral MIP model and the CBC call mpq makes. The only file that
// includes COIN headers is coin.cpp.
#pragma once

#include <vector>

namespace mpq::search {

// min obj·x  s.t.  row_lb <= A x <= row_ub,  col_lb <= x <= col_ub.
// A is column-major: column c holds rows[starts[c]..starts[c+1]) with vals.
struct LinearModel {
  int num_rows = 0;
  std::vector<double> obj, col_lb, col_ub;
  std::vector<int> starts{0}, rows;
  std::vector<double> vals;
  std::vector<double> row_lb, row_ub;
  int num_cols() const { return static_cast<int>(obj.size()); }
};

struct MipResult {
  enum class Status { kOptimal, kInfeasible, kLimitWithSolution, kLimitNoSolution, kError } status = Status::kError;
  double objective = 0;   // valid with a solution
  double bound = 0;       // best proven lower bound
  std::vector<double> x;  // empty without a solution
  int nodes = 0;
};

// Solves with every column integer. `start` (may be empty) is a MIP start.
// No cutoff is offered: CBC 2.10.8 declared feasible problems infeasible
// when given one equal to the MIP start's value.
MipResult solve_mip(const LinearModel& m, const std::vector<double>& start, double time_limit_s);

// Solves the LP relaxation (every column continuous) with CLP's dual
// simplex; `duals` gets the row duals and `x` (when given) the columns.
// False unless CLP proves an optimum.
bool solve_lp(const LinearModel& m, std::vector<double>& duals, std::vector<double>* x = nullptr);

}  // namespace mpq::search

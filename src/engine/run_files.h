// A run's folder: the resolved config.yaml, metrics.csv (one row per
// epoch, never ahead of the checkpoint), TensorBoard scalars and the
// scoreboard of the best validations (log.num_best_scores).
#pragma once

#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/meters.h"
#include "mpq/config/options.h"
#include "mpq/io/tb_events.h"

namespace mpq::engine {

// The folder output_dir/name of a run; only rank 0 (`rank0`) writes.
class RunFiles {
 public:
  RunFiles(const config::RunFileOptions& o, bool rank0)
      : dir_(o.output_dir + "/" + o.name), yaml_(o.resolved_yaml), on_(rank0),
        best_n_(static_cast<size_t>(o.num_best_scores)) {}
  // Called once everything the run needs has been checked: a run that fails
  // on its inputs leaves an existing run folder as it was. Rows of epochs at
  // or past `next_epoch` (the checkpoint's position) are dropped, so the
  // metrics never run ahead of the checkpoint they belong to.
  void open(int next_epoch);
  const std::string& dir() const { return dir_; }
  // After the checkpoint that records epoch `e`: its metrics row, its
  // scalars and, with a validation `v`, the scoreboard.
  void epoch(int e, double lr, const Meter& t, const std::optional<Meter>& v, double ips, double secs);

 private:
  struct Score {
    double top1, top5;
    int epoch;
  };
  // A kept metrics row with a validation: onto the scoreboard.
  void remember(const std::string& line);
  // Best first by top-1, then top-5, then the later epoch, as the original's PerformanceScoreboard.
  void rank_board();

  std::string dir_, yaml_;
  bool on_;
  size_t best_n_;
  std::vector<Score> board_;
  std::ofstream csv_;
  std::unique_ptr<io::TensorBoardWriter> tb_;
};

}  // namespace mpq::engine

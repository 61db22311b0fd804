#include "engine/run_files.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <tuple>

#include "mpq/common/error.h"
#include "mpq/common/log.h"
#include "mpq/io/file_util.h"

namespace mpq::engine {

namespace fs = std::filesystem;

void RunFiles::open(int next_epoch) {
  if (!on_) return;
  std::error_code ec;
  fs::create_directories(dir_, ec);
  MPQ_CHECK_T(RuntimeError, !ec, dir_, ": cannot create the run folder (", ec.message(), ")");
  for (const std::string& p : io::remove_stale_temp_files(dir_))
    log::info("removed {}, a checkpoint half-written by a run that was killed", p);
  io::write_file_atomic(dir_ + "/config.yaml", yaml_);
  const std::string csv = dir_ + "/metrics.csv", header =
      "epoch,lr,train_loss,train_top1,train_top5,val_loss,val_top1,val_top5,images_per_s,seconds\n";
  std::string kept = header;
  bool dropped = !fs::exists(csv);
  if (!dropped) {
    std::ifstream in(csv);
    std::string line;
    std::getline(in, line);  // the header
    while (std::getline(in, line)) {
      char* end = nullptr;
      const long e = std::strtol(line.c_str(), &end, 10);
      if (end != line.c_str() && *end == ',' && e >= 0 && e < next_epoch) {
        kept += line + "\n";
        remember(line);
      } else {
        dropped = true;
      }
    }
  }
  if (dropped) io::write_file_atomic(csv, kept);
  csv_.open(csv, std::ios::app);
  MPQ_CHECK_T(RuntimeError, csv_.good(), csv, ": cannot write the metrics file");
  tb_ = std::make_unique<io::TensorBoardWriter>(dir_);
}

void RunFiles::epoch(int e, double lr, const Meter& t, const std::optional<Meter>& v, double ips, double secs) {
  if (!on_) return;
  char line[512];
  char val[128] = ",,";
  if (v) std::snprintf(val, sizeof val, "%.6f,%.4f,%.4f", v->loss(), v->top1(), v->top5());
  std::snprintf(line, sizeof line, "%d,%.8g,%.6f,%.4f,%.4f,%s,%.1f,%.2f\n", e, lr, t.loss(), t.top1(), t.top5(), val,
                ips, secs);
  csv_ << line;
  csv_.flush();
  MPQ_CHECK_T(RuntimeError, csv_.good(), dir_, "/metrics.csv: write failed (", std::strerror(errno), ")");
  tb_->scalar("train/loss", t.loss(), e);
  tb_->scalar("train/top1", t.top1(), e);
  tb_->scalar("train/top5", t.top5(), e);
  tb_->scalar("lr", lr, e);
  tb_->scalar("train/images_per_s", ips, e);
  if (v) {
    tb_->scalar("val/loss", v->loss(), e);
    tb_->scalar("val/top1", v->top1(), e);
    tb_->scalar("val/top5", v->top5(), e);
    // The scoreboard (log.num_best_scores): the best validations so far, as the original logs them.
    board_.push_back({v->top1(), v->top5(), e});
    rank_board();
    for (size_t k = 0; k < board_.size(); ++k)
      log::info("scoreboard {}: epoch {}, val top1 {:.3f}, top5 {:.3f}", k + 1, board_[k].epoch + 1, board_[k].top1,
                board_[k].top5);
  }
  tb_->flush();
}

void RunFiles::remember(const std::string& line) {
  std::vector<std::string> f;
  std::stringstream ss(line);
  for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
  if (f.size() < 8 || f[6].empty() || f[7].empty()) return;
  board_.push_back({std::atof(f[6].c_str()), std::atof(f[7].c_str()), std::atoi(f[0].c_str())});
  rank_board();
}

void RunFiles::rank_board() {
  std::sort(board_.begin(), board_.end(), [](const Score& a, const Score& b) {
    return std::tie(a.top1, a.top5, a.epoch) > std::tie(b.top1, b.top5, b.epoch);
  });
  if (board_.size() > best_n_) board_.resize(best_n_);
}

}  // namespace mpq::engine

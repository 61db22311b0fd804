// A sweep of one budget, its CSV and its plot.
#include "mpq/search/sweep.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <sstream>

#include <spdlog/spdlog.h>

#include "mpq/common/error.h"
#include "mpq/common/text.h"
#include "search/solvers.h"

namespace mpq::search {

namespace {

double number(const std::string& flag, const std::string& s) {
  const auto v = parse_double(s);
  MPQ_CHECK(v, flag, ": '", s, "' is not a number");
  return *v;
}

double sum_macs(const SearchProblem& p) {
  return std::accumulate(p.macs.begin(), p.macs.end(), 0.0, [](double s, int64_t m) { return s + static_cast<double>(m); });
}

double total_params(const SearchProblem& p) {
  return static_cast<double>(p.excepted_params + std::accumulate(p.params.begin(), p.params.end(), int64_t{0}));
}

// The BitOPs (searchable layers) and size bits of per-layer bits.
std::pair<double, double> use_of(const SearchProblem& p, const std::vector<int>& w, const std::vector<int>& a) {
  double bops = 0, size = 0;
  for (size_t l = 0; l < p.num_layers(); ++l) {
    bops += static_cast<double>(p.macs[l]) * w[l] * a[l];
    size += static_cast<double>(p.params[l]) * w[l];
  }
  return {bops, size};
}

// A policy's position in the sweep's unit.
double in_unit(const SearchProblem& p, const std::string& resource, const std::vector<int>& w,
               const std::vector<int>& a) {
  const auto [bops, size] = use_of(p, w, a);
  if (resource == "bops") return bops / sum_macs(p);
  return 32.0 * total_params(p) / (8.0 * static_cast<double>(p.excepted_params) + size);
}

SearchProblem at_budget(const SearchProblem& base, const std::string& resource, double v) {
  SearchProblem q = base;
  if (resource == "bops") {
    q.constraints.bops = true;
    q.constraints.bops_wa = v;
  } else {
    q.constraints.cr = v;
  }
  return q;
}

}  // namespace

SweepSpec parse_sweep(const std::string& value, int points) {
  SweepSpec s;
  const size_t eq = value.find('='), colon = value.find(':');
  MPQ_CHECK(eq != std::string::npos && colon != std::string::npos && colon > eq, "--sweep ", value,
            ": expected bops=FROM:TO (average W x A bits, e.g. bops=4:36) or cr=FROM:TO (compression ratio, e.g. "
            "cr=4:16)");
  s.resource = value.substr(0, eq);
  MPQ_CHECK(s.resource == "bops" || s.resource == "cr", "--sweep ", value, ": sweeps 'bops' or 'cr', not '",
            s.resource, "'");
  s.from = number("--sweep", value.substr(eq + 1, colon - eq - 1));
  s.to = number("--sweep", value.substr(colon + 1));
  s.points = points;
  MPQ_CHECK(points >= 1 && points <= 100000, "--points: ", points, " is out of range (1 to 100000)");
  MPQ_CHECK(s.from > 0, "--sweep ", value, ": budgets must be positive");
  MPQ_CHECK(s.from < s.to || (s.from == s.to && points == 1), "--sweep ", value,
            s.from > s.to ? ": the range is inverted; give FROM below TO" : ": the range is empty; give FROM below TO");
  return s;
}

std::pair<double, double> sweep_reach(const SearchProblem& p, const std::string& resource) {
  // Least and most BitOPs and size over the allowed pairs (rules applied;
  // ties do not change per-layer extremes of monotone resources).
  double bmin = 0, bmax = 0, smin = 0, smax = 0;
  for (size_t l = 0; l < p.num_layers(); ++l) {
    double lb = INFINITY, ub = 0, ls = INFINITY, us = 0;
    for (size_t i = 0; i < p.wbits.size(); ++i)
      for (size_t j = 0; j < p.abits.size(); ++j) {
        if (!p.pair_allowed(l, i * p.abits.size() + j)) continue;
        const double b = static_cast<double>(p.macs[l]) * p.wbits[i] * p.abits[j];
        const double s = static_cast<double>(p.params[l]) * p.wbits[i];
        lb = std::min(lb, b);
        ub = std::max(ub, b);
        ls = std::min(ls, s);
        us = std::max(us, s);
      }
    bmin += lb;
    bmax += ub;
    smin += ls;
    smax += us;
  }
  if (resource == "bops") return {bmin / sum_macs(p), bmax / sum_macs(p)};
  const double e = 8.0 * static_cast<double>(p.excepted_params);
  return {32.0 * total_params(p) / (e + smax), 32.0 * total_params(p) / (e + smin)};
}

Sweep run_sweep(const SearchProblem& base, const SweepSpec& spec, const SolveOptions& options) {
  const auto [lo, hi] = sweep_reach(base, spec.resource);
  const char* unit = spec.resource == "bops" ? "average W x A bits" : "compression ratio";
  const double tol = 1e-9 * hi;
  MPQ_CHECK(spec.from >= lo - tol && spec.to <= hi + tol, "--sweep ", spec.resource, "=", spec.from, ":", spec.to,
            ": beyond what the candidates", base.rules.empty() ? "" : " and layer rules", " reach (", unit, " from ",
            fmt::format("{:.4g}", std::ceil(lo * 1e4) / 1e4), " to ", fmt::format("{:.4g}", std::floor(hi * 1e4) / 1e4),
            "); sweep within that range");
  Sweep sw;
  sw.resource = spec.resource;
  sw.from = spec.from;
  sw.to = spec.to;
  const auto t0 = std::chrono::steady_clock::now();
  SolveOptions opt = options;
  auto solve_at = [&](const SearchProblem& q, double budget) {
    SweepPoint pt;
    pt.budget = budget;
    pt.result = solve(q, opt);
    if (has_solution(pt.result.status)) {
      pt.report = make_report(q, pt.result.w_bits, pt.result.a_bits);
      pt.used = in_unit(q, spec.resource, pt.result.w_bits, pt.result.a_bits);
    }
    return pt;
  };
  // From the tightest budget to the loosest (BitOPs up, compression ratio
  // down): each optimum fits the next budget and starts its search.
  const int n = spec.points;
  sw.points.resize(n);
  for (int step = 0; step < n; ++step) {
    const int k = spec.resource == "bops" ? step : n - 1 - step;
    const double v = n == 1 ? spec.from : spec.from + (spec.to - spec.from) * k / (n - 1);
    SweepPoint& pt = sw.points[k] = solve_at(at_budget(base, spec.resource, v), v);
    if (has_solution(pt.result.status)) {
      opt.start_w = pt.result.w_bits;
      opt.start_a = pt.result.a_bits;
    }
    spdlog::debug("sweep: {} = {:.6g}: {} {:.8f}", spec.resource, v, status_name(pt.result.status), pt.result.objective);
  }
  sw.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  opt = options;
  // The budget given beside the sweep, solved as given.
  const auto& c = base.constraints;
  if (spec.resource == "bops" && c.bops && c.bops_product() > 0) {
    sw.chosen = solve_at(base, c.bops_product());
    sw.chosen->label = fmt::format("--wb {:g} --ab {:g}", c.wb, c.ab);
  } else if (spec.resource == "cr" && c.cr > 0) {
    sw.chosen = solve_at(base, c.cr);
    sw.chosen->label = fmt::format("--cr {:g}", c.cr);
  }
  // Uniform policies the rules allow: W = A, and the chosen budget's pair.
  std::vector<std::pair<int, int>> uniform;
  for (int w : base.wbits)
    for (int a : base.abits)
      if (w == a || (spec.resource == "bops" && c.bops && w == c.wb && a == c.ab)) uniform.emplace_back(w, a);
  for (const auto& [w, a] : uniform) {
    const size_t i = std::find(base.wbits.begin(), base.wbits.end(), w) - base.wbits.begin();
    const size_t j = std::find(base.abits.begin(), base.abits.end(), a) - base.abits.begin();
    bool allowed = true;
    for (size_t l = 0; l < base.num_layers(); ++l) allowed &= base.pair_allowed(l, i * base.abits.size() + j);
    if (!allowed) continue;
    SweepPoint pt;
    pt.label = fmt::format("W{}A{}", w, a);
    pt.result.status = Status::kOptimal;
    pt.result.w_bits.assign(base.num_layers(), w);
    pt.result.a_bits.assign(base.num_layers(), a);
    for (size_t l = 0; l < base.num_layers(); ++l) pt.result.objective += base.a[l][j] + base.alpha * base.w[l][i];
    pt.result.bound = pt.result.objective;
    pt.report = make_report(base, pt.result.w_bits, pt.result.a_bits);
    pt.used = pt.budget = in_unit(base, spec.resource, pt.result.w_bits, pt.result.a_bits);
    sw.uniform.push_back(std::move(pt));
  }
  return sw;
}

std::string sweep_csv(const SearchProblem& p, const Sweep& sw) {
  std::ostringstream os;
  os << "kind,budget,status,objective,bound,exact_from,gbitops,size_mb,compression_ratio,avg_weight_bits,avg_act_bits";
  if (!p.cost.empty()) os << ",cost";
  if (!p.act_elems.empty()) os << ",peak_act_bytes";
  os << ",time_ms,weight_bits,act_bits\n";
  auto bits = [](const std::vector<int>& b) {
    std::string s;
    for (int x : b) s += (s.empty() ? "" : " ") + std::to_string(x);
    return s;
  };
  auto row = [&](const std::string& kind, const SweepPoint& pt) {
    const bool solved = has_solution(pt.result.status);
    os << kind << "," << fmt::format("{:.6g}", pt.budget) << "," << (kind == "point" || kind == "chosen" ? status_name(pt.result.status) : "uniform");
    if (solved) {
      const Report& r = pt.report;
      os << fmt::format(",{:.8f},{:.8f},{:.6g},{:.6f},{:.6f},{:.4f},{:.4f},{:.4f}", pt.result.objective, pt.result.bound,
                        pt.used, r.gbitops, r.size_mb, r.compression_ratio, r.avg_weight_bits, r.avg_act_bits);
      if (!p.cost.empty()) os << fmt::format(",{:.8g}", r.cost);
      if (!p.act_elems.empty()) os << "," << r.peak_act_bytes;
      os << fmt::format(",{:.3f},{},{}\n", pt.result.seconds * 1e3, bits(pt.result.w_bits), bits(pt.result.a_bits));
    } else {
      os << ",,,,,,,,";
      if (!p.cost.empty()) os << ",";
      if (!p.act_elems.empty()) os << ",";
      os << fmt::format(",{:.3f},,\n", pt.result.seconds * 1e3);
    }
  };
  for (const auto& pt : sw.points) row("point", pt);
  if (sw.chosen) row("chosen", *sw.chosen);
  for (const auto& pt : sw.uniform) row(pt.label, pt);
  return os.str();
}

namespace {

// Round tick steps: 1, 2 or 5 times a power of ten, about `n` of them.
std::vector<double> ticks(double lo, double hi, int n) {
  const double raw = (hi - lo) / n, mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> out;
  for (double v = std::ceil(lo / step) * step; v <= hi + 1e-9 * step; v += step) out.push_back(v);
  return out;
}

}  // namespace

std::string sweep_svg(const SearchProblem& p, const Sweep& sw, const std::string& title) {
  const bool bops = sw.resource == "bops";
  const double macs = sum_macs(p), fixed = static_cast<double>(p.excepted_macs) * 64.0, total = total_params(p);
  constexpr double kMB = 1024.0 * 1024.0 * 8.0;
  // x: GBitOPs or size in MB of a position in the sweep's unit.
  auto x_of = [&](double v) { return bops ? (v * macs + fixed) / 1e9 : 32.0 * total / v / kMB; };
  struct Seg {
    double x0, x1, y;
  };
  std::vector<Seg> segs;
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  auto extend = [&](double x, double y) {
    xmin = std::min(xmin, x);
    xmax = std::max(xmax, x);
    if (y < kOutlierCost) {
      ymin = std::min(ymin, y);
      ymax = std::max(ymax, y);
    }
  };
  for (const auto& pt : sw.points) {
    if (pt.result.status != Status::kOptimal) continue;
    const double y = pt.result.objective;
    if (y >= kOutlierCost) continue;
    segs.push_back({x_of(pt.used), x_of(pt.budget), y});
    extend(segs.back().x0, y);
    extend(segs.back().x1, y);
  }
  for (const auto& pt : sw.uniform)
    if (pt.result.objective < kOutlierCost) extend(x_of(pt.used), pt.result.objective);
  if (sw.chosen && sw.chosen->result.status == Status::kOptimal) extend(x_of(sw.chosen->budget), sw.chosen->result.objective);
  if (!std::isfinite(xmin)) xmin = 0, xmax = 1;
  if (!std::isfinite(ymin)) ymin = 0, ymax = 1;
  if (xmax - xmin < 1e-12) xmin -= 0.5, xmax += 0.5;
  if (ymax - ymin < 1e-12) ymin -= 0.5, ymax += 0.5;
  const double padx = 0.04 * (xmax - xmin), pady = 0.06 * (ymax - ymin);
  xmin -= padx, xmax += padx, ymin -= pady, ymax += pady;
  const double W = 760, H = 480, L = 80, R = 20, T = 40, B = 60;
  auto X = [&](double x) { return L + (x - xmin) / (xmax - xmin) * (W - L - R); };
  auto Y = [&](double y) { return H - B - (y - ymin) / (ymax - ymin) * (H - T - B); };
  std::ostringstream os;
  os << fmt::format("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
                    "font-family=\"sans-serif\" font-size=\"12\">\n", W, H, W, H);
  os << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  os << fmt::format("<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n", W / 2, xml_escape(title));
  for (double t : ticks(xmin, xmax, 8)) {
    os << fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#eee\"/>\n", X(t), T, H - B);
    os << fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{:g}</text>\n", X(t), H - B + 16, t);
  }
  for (double t : ticks(ymin, ymax, 6)) {
    os << fmt::format("<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#eee\"/>\n", L, Y(t), W - R);
    os << fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{:g}</text>\n", L - 6, Y(t) + 4, t);
  }
  os << fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n", L, T,
                    W - L - R, H - T - B);
  os << fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", (L + W - R) / 2, H - 18,
                    bops ? "GBitOPs (with the 8-bit first conv and fc)" : "model size (MB)");
  os << fmt::format("<text x=\"18\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {})\">"
                    "objective (indicator sum, lower is better)</text>\n", (T + H - B) / 2, (T + H - B) / 2);
  // The front: solid where exact (each optimum holds from its use to its
  // budget), dotted between points where only its bracket is known.
  std::sort(segs.begin(), segs.end(), [](const Seg& a, const Seg& b) { return std::min(a.x0, a.x1) < std::min(b.x0, b.x1); });
  for (size_t k = 0; k < segs.size(); ++k) {
    const Seg& s = segs[k];
    os << fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#1f77b4\" stroke-width=\"2.5\"/>\n",
                      X(s.x0), Y(s.y), X(s.x1), Y(s.y));
    os << fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"#1f77b4\"/>\n", X(s.x0), Y(s.y));
    if (k + 1 < segs.size()) {
      const Seg& n = segs[k + 1];
      os << fmt::format("<polyline points=\"{:.1f},{:.1f} {:.1f},{:.1f} {:.1f},{:.1f}\" fill=\"none\" stroke=\"#1f77b4\" "
                        "stroke-dasharray=\"2,3\"/>\n",
                        X(std::max(s.x0, s.x1)), Y(s.y), X(std::min(n.x0, n.x1)), Y(s.y), X(std::min(n.x0, n.x1)), Y(n.y));
    }
  }
  for (const auto& pt : sw.uniform) {
    if (pt.result.objective >= kOutlierCost) continue;
    const double x = X(x_of(pt.used)), y = Y(pt.result.objective);
    os << fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"8\" height=\"8\" fill=\"#d62728\"/>\n", x - 4, y - 4);
    os << fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" fill=\"#d62728\">{}</text>\n", x + 6, y - 6, pt.label);
  }
  if (sw.chosen) {
    const double x = X(x_of(sw.chosen->budget));
    os << fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#2ca02c\" stroke-dasharray=\"6,4\"/>\n",
                      x, T, H - B);
    os << fmt::format("<text x=\"{:.1f}\" y=\"{}\" fill=\"#2ca02c\">{}</text>\n", x + 4, T + 14, xml_escape(sw.chosen->label));
    if (sw.chosen->result.status == Status::kOptimal)
      os << fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"5\" fill=\"none\" stroke=\"#2ca02c\" stroke-width=\"2\"/>\n",
                        X(x_of(in_unit(p, sw.resource, sw.chosen->result.w_bits, sw.chosen->result.a_bits))),
                        Y(sw.chosen->result.objective));
  }
  // Uniform policies that take an erased outlier (objective 1e8 or more) are off the scale: say which.
  std::string off;
  for (const auto& pt : sw.uniform)
    if (pt.result.objective >= kOutlierCost) off += (off.empty() ? "" : ", ") + pt.label;
  if (!off.empty())
    os << fmt::format("<text x=\"{}\" y=\"{}\" fill=\"#d62728\" font-size=\"11\">off the scale (a layer's candidate "
                      "there is an outlier the rule erased): {}</text>\n", L, H - 4, xml_escape(off));
  // Legend.
  const double lx = W - R - 250, ly = T + 12;
  os << fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#1f77b4\" stroke-width=\"2.5\"/>"
                    "<text x=\"{}\" y=\"{}\">optimum, exact on the solid span</text>\n", lx, ly, lx + 24, ly, lx + 30, ly + 4);
  os << fmt::format("<rect x=\"{}\" y=\"{}\" width=\"8\" height=\"8\" fill=\"#d62728\"/>"
                    "<text x=\"{}\" y=\"{}\">uniform policy</text>\n", lx + 8, ly + 12, lx + 30, ly + 20);
  if (sw.chosen)
    os << fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#2ca02c\" stroke-dasharray=\"6,4\"/>"
                      "<text x=\"{}\" y=\"{}\">chosen budget</text>\n", lx, ly + 32, lx + 24, ly + 32, lx + 30, ly + 36);
  os << "</svg>\n";
  return os.str();
}

}  // namespace mpq::search

// Exact depth-first search around the LP optimum of the search ILP.
//
// For any multipliers mu >= 0 on the capacity rows, with
// u_l = min_p (c_p + mu . r_p) and d_p = c_p + mu . r_p - u_l >= 0, every
// assignment x satisfies the identity
//     cost(x) = L(mu) + sum_l d[x_l] + mu . slack(x),   slack(x) >= 0,
// where L(mu) = sum_l u_l - mu . cap is the Lagrangian bound (the LP bound
// at the LP's duals). A solution better than the incumbent therefore has
// sum d + mu . slack < G = incumbent - L(mu): only pairs with d < G can take
// part, and the chosen resources must nearly fill every priced capacity. The
// search fixes items in order of their resource range and prunes a node when
// the cheapest completion cannot fit, when even the largest completion
// leaves a slack that costs more than what is left of G, or when moving the
// free items' d = 0 choices to fill (or to fit) a capacity costs more, at
// the best price per unit of resource any free item offers.
#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <numeric>

#include <spdlog/spdlog.h>

#include "mpq/common/error.h"
#include "search/coin.h"
#include "search/solvers.h"

namespace mpq::search {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// The search over R active resources, their amounts compacted into arrays
// of R (the inner loop touches nothing else).
template <int R>
class LagrangianDfs {
  using V = std::array<double, R>;
  struct Choice {
    int pair;
    double d, cost;
    V r;
  };

 public:
  LagrangianDfs(const PairTable& t, const Lagrangian& lag, std::chrono::steady_clock::time_point deadline)
      : t_(t), lag_(lag), deadline_(deadline) {
    int n = 0;
    for (int k = 0; k < kResources; ++k)
      if (t.active(k)) {
        res_[n] = k;
        mu_[n] = lag.mu[k];
        cap_[n] = t.cap[k];
        ++n;
      }
    MPQ_ASSERT(n == R, "resource count mismatch");
    lagrangian_ = lag.bound;
  }

  // Improves (best_pick, best_cost) in place. Returns true when the search
  // completed (the result is optimal), false at the node limit or deadline.
  // `cutoff` below best_cost searches only for solutions cheaper than it.
  // One object serves every run of a search: its buffers are reused.
  bool run(std::vector<int>& best_pick, double& best_cost, double cutoff, int64_t node_limit) {
    node_limit_ = node_limit;
    nodes_ = choices_count_ = 0;
    found_ = false;
    base_d_ = base_c_ = 0;
    free_.clear();
    best_pick_ = best_pick;
    best_cost_ = std::min(best_cost, cutoff);
    tol_ = 1e-10 * std::max(1.0, std::abs(best_cost));
    const double gap = best_cost_ - lagrangian_;
    const bool keep_incumbent = cutoff >= best_cost;
    // Allowed choices: d below the gap. An item with one is fixed.
    const size_t L = t_.layers.size();
    pick_.assign(L, -1);
    auto& choices = scratch_;
    choices.resize(L);
    for (auto& c : choices) c.clear();
    base_r_.fill(0.0);
    for (size_t l = 0; l < L; ++l) {
      for (int k = 0; k < static_cast<int>(t_.layers[l].size()); ++k) {
        const Pair& q = t_.layers[l][k];
        const double d = lag_.d(t_, l, k);
        if (d < gap + tol_ || (keep_incumbent && k == best_pick[l])) {
          Choice c{k, d, q.cost, {}};
          for (int i = 0; i < R; ++i) c.r[i] = q.r[res_[i]];
          choices[l].push_back(c);
        }
      }
      if (choices[l].empty()) return true;  // an item without a choice: nothing below the cutoff
      std::sort(choices[l].begin(), choices[l].end(), [](const Choice& a, const Choice& b) { return a.d < b.d; });
      choices_count_ += static_cast<int64_t>(choices[l].size());
      if (choices[l].size() == 1) {
        const Choice& c = choices[l][0];
        pick_[l] = c.pair;
        base_d_ += c.d;
        for (int i = 0; i < R; ++i) base_r_[i] += c.r[i];
        base_c_ += c.cost;
      } else {
        free_.push_back(static_cast<int>(l));
      }
    }
    // Widest priced resource range first: the suffix bounds tighten fastest.
    auto range = [&](int l) {
      double lo = kInf, hi = -kInf;
      for (const Choice& c : choices[l]) {
        double v = 0;
        for (int i = 0; i < R; ++i) v += mu_[i] * c.r[i];
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
      return hi - lo;
    };
    std::stable_sort(free_.begin(), free_.end(), [&](int a, int b) { return range(a) > range(b); });
    const size_t F = free_.size();
    choices_.resize(F);
    for (size_t i = 0; i < F; ++i) choices_[i].swap(choices[free_[i]]);
    // Over each suffix of items: the least and largest amounts, the d = 0
    // choices' amounts, and the cheapest price (d per unit) of moving each
    // resource up or down from them.
    for (auto* v : {&suf_min_, &suf_max_, &suf0_}) v->assign(F + 1, V{});
    V inf;
    inf.fill(kInf);
    up_.assign(F + 1, inf);
    dn_.assign(F + 1, inf);
    for (size_t i = F; i-- > 0;) {
      const Choice& c0 = choices_[i][0];
      up_[i] = up_[i + 1];
      dn_[i] = dn_[i + 1];
      for (int k = 0; k < R; ++k) {
        double mn = kInf, mx = 0;
        for (const Choice& c : choices_[i]) {
          mn = std::min(mn, c.r[k]);
          mx = std::max(mx, c.r[k]);
          const double dr = c.r[k] - c0.r[k];
          if (dr > 0) up_[i][k] = std::min(up_[i][k], c.d / dr);
          if (dr < 0) dn_[i][k] = std::min(dn_[i][k], c.d / -dr);
        }
        suf_min_[i][k] = suf_min_[i + 1][k] + mn;
        suf_max_[i][k] = suf_max_[i + 1][k] + mx;
        suf0_[i][k] = suf0_[i + 1][k] + c0.r[k];
      }
    }
    build_fills();
    const bool done = dfs(0, base_d_, base_r_, base_c_);
    if (found_) {
      best_pick = best_pick_;
      best_cost = best_cost_;
    }
    return done;
  }

  int64_t nodes() const { return nodes_; }
  int64_t choices() const { return choices_count_; }

 private:
  // The least d that moving `x` units of one resource costs the items of a
  // suffix, as a fractional knapsack over their moves from their cheapest
  // choices (each item's moves taken as if independent: a relaxation).
  // Units not moved cost `rest` each: the slack's price, or +inf where the
  // capacity must be met.
  struct Fill {
    std::vector<double> rate, amount, cost;  // sorted by rate; amount and cost cumulative
    double cost_of(double x, double rest) const {
      if (x <= 0) return 0;
      if (!amount.empty() && x <= amount[0]) return x * std::min(rate[0], rest);  // within the cheapest move
      const size_t j = std::lower_bound(amount.begin(), amount.end(), x) - amount.begin();
      if (j == amount.size()) return (amount.empty() ? 0.0 : cost.back()) + (x - (amount.empty() ? 0.0 : amount.back())) * rest;
      const double before_amt = j ? amount[j - 1] : 0.0, before_cost = j ? cost[j - 1] : 0.0;
      return before_cost + (x - before_amt) * std::min(rate[j], rest);
    }
  };

  // Fills for suffixes starting at every `stride_`-th free item: a suffix
  // uses the fill of the checkpoint at or before it, which has more moves
  // and so bounds it from below. The stride keeps the tables near 4M moves.
  // Each item's moves are the segments of the lower convex hull of its
  // (amount moved, d) points, from the origin outwards, each direction
  // apart (their rates rise along the hull); the checkpoints are built from
  // the last one back, merging in the moves of the items between.
  void build_fills() {
    const size_t F = choices_.size();
    size_t moves = 0;
    for (const auto& cs : choices_) moves += cs.size() - 1;
    stride_ = std::max<size_t>(1, (F * moves) / 4'000'000 + 1);
    const size_t n = F / stride_ + 1;
    up_fill_.resize(n);
    dn_fill_.resize(n);
    for (auto* fills : {&up_fill_, &dn_fill_})
      for (auto& per_resource : *fills)
        for (Fill& f : per_resource) f.rate.clear(), f.amount.clear(), f.cost.clear();
    for (int k = 0; k < R; ++k) {
      std::vector<std::pair<double, double>> up, dn, fresh_up, fresh_dn, merged;
      for (size_t cp = n; cp-- > 0;) {
        fresh_up.clear();
        fresh_dn.clear();
        for (size_t i = cp * stride_; i < std::min(F, (cp + 1) * stride_); ++i) item_moves(i, k, fresh_up, fresh_dn);
        for (auto [list, fresh] : {std::pair{&up, &fresh_up}, {&dn, &fresh_dn}}) {
          std::sort(fresh->begin(), fresh->end());
          merged.clear();
          std::merge(list->begin(), list->end(), fresh->begin(), fresh->end(), std::back_inserter(merged));
          list->swap(merged);
        }
        for (auto [list, fill] : {std::pair{&up, &up_fill_[cp][k]}, {&dn, &dn_fill_[cp][k]}}) {
          double a = 0, cost = 0;
          fill->rate.reserve(list->size());
          fill->amount.reserve(list->size());
          fill->cost.reserve(list->size());
          for (const auto& [rate, amt] : *list) {
            a += amt;
            cost += rate * amt;
            fill->rate.push_back(rate);
            fill->amount.push_back(a);
            fill->cost.push_back(cost);
          }
        }
      }
    }
  }

  // Item i's moves in resource k as (rate, amount): up moves only where
  // cheaper than leaving the slack at the price mu.
  void item_moves(size_t i, int k, std::vector<std::pair<double, double>>& up,
                  std::vector<std::pair<double, double>>& dn) {
    const Choice& c0 = choices_[i][0];
    for (int dir : {1, -1}) {
      hull_.assign(1, {0.0, 0.0});
      pts_.clear();
      for (size_t j = 1; j < choices_[i].size(); ++j) {
        const double dr = dir * (choices_[i][j].r[k] - c0.r[k]);
        if (dr > 0) pts_.emplace_back(dr, choices_[i][j].d);
      }
      std::sort(pts_.begin(), pts_.end());
      for (const auto& b : pts_) {
        while (hull_.size() >= 2) {
          const auto &o = hull_[hull_.size() - 2], &a = hull_.back();
          if ((a.first - o.first) * (b.second - o.second) - (a.second - o.second) * (b.first - o.first) > 0) break;
          hull_.pop_back();
        }
        if (b.first > hull_.back().first) hull_.push_back(b);
        else if (b.second < hull_.back().second) hull_.back() = b;
      }
      for (size_t j = 1; j < hull_.size(); ++j) {
        const double amt = hull_[j].first - hull_[j - 1].first;
        const double rate = std::max(0.0, hull_[j].second - hull_[j - 1].second) / amt;
        if (dir > 0 && rate < mu_[k]) up.emplace_back(rate, amt);
        if (dir < 0) dn.emplace_back(rate, amt);
      }
    }
  }

  bool dfs(size_t i, double d, const V& r, double cost) {
    if (++nodes_ > node_limit_) return false;
    if ((nodes_ & 4095) == 0 && std::chrono::steady_clock::now() > deadline_) return false;
    const double gap = best_cost_ - lagrangian_ - tol_;
    if (d >= gap) return true;
    double slack_cost = 0, adjust = 0;
    V s0;
    for (int k = 0; k < R; ++k) {
      if (r[k] + suf_min_[i][k] > cap_[k]) return true;
      slack_cost += mu_[k] * std::max(0.0, cap_[k] - r[k] - suf_max_[i][k]);
      // Filling or fitting each capacity from the cheapest choices has a
      // price: at least the best rate any free item offers, ...
      s0[k] = cap_[k] - r[k] - suf0_[i][k];
      adjust = std::max(adjust, s0[k] >= 0 ? s0[k] * std::min(mu_[k], up_[i][k]) : -s0[k] * dn_[i][k]);
    }
    if (d + slack_cost >= gap || d + adjust >= gap) return true;
    // ... and at least the fractional knapsack of their moves.
    const size_t cp = i / stride_;
    for (int k = 0; k < R; ++k)
      if (d + (s0[k] >= 0 ? up_fill_[cp][k].cost_of(s0[k], mu_[k]) : dn_fill_[cp][k].cost_of(-s0[k], kInf)) >= gap)
        return true;
    if (i == choices_.size()) {  // a leaf: feasible by the checks above
      if (cost < best_cost_) {
        best_cost_ = cost;
        best_pick_ = pick_;
        found_ = true;
      }
      return true;
    }
    const int layer = free_[i];
    V next;
    for (const Choice& c : choices_[i]) {
      if (d + c.d >= best_cost_ - lagrangian_ - tol_) break;
      pick_[layer] = c.pair;
      for (int k = 0; k < R; ++k) next[k] = r[k] + c.r[k];
      if (!dfs(i + 1, d + c.d, next, cost + c.cost)) return false;
    }
    return true;
  }

  const PairTable& t_;
  const Lagrangian& lag_;
  std::chrono::steady_clock::time_point deadline_;
  int64_t node_limit_ = 0;
  std::array<int, R> res_{};  // the active resources
  V mu_{}, cap_{};
  double lagrangian_ = 0, tol_ = 0;
  std::vector<int> free_, pick_, best_pick_;
  std::vector<std::vector<Choice>> choices_, scratch_;
  std::vector<V> suf_min_, suf_max_, suf0_, up_, dn_;
  std::vector<std::array<Fill, R>> up_fill_, dn_fill_;
  std::vector<std::pair<double, double>> hull_, pts_;
  size_t stride_ = 1;
  V base_r_{};
  double base_d_ = 0, base_c_ = 0, best_cost_ = 0;
  int64_t nodes_ = 0, choices_count_ = 0;
  bool found_ = false;  // a leaf improved on the incumbent
};

// Evaluates the Lagrangian at prices mu: its value and the supergradient
// (resources of the per-item minimisers minus the capacities).
struct Eval {
  double value;
  Amounts g;
};

Eval evaluate_prices(const PairTable& t, const Amounts& mu) {
  Eval e{0.0, {}};
  for (int k = 0; k < kResources; ++k)
    if (t.active(k)) {
      e.value -= mu[k] * t.cap[k];
      e.g[k] = -t.cap[k];
    }
  for (const auto& ps : t.layers) {
    const Pair* best = &ps[0];
    double bv = kInf;
    for (const Pair& q : ps) {
      const double x = q.cost + mu[0] * q.r[0] + mu[1] * q.r[1] + mu[2] * q.r[2];
      // Ties go to the least resource, so a zero subgradient means "fits".
      if (x < bv || (x == bv && q.r[0] + q.r[1] + q.r[2] < best->r[0] + best->r[1] + best->r[2])) {
        bv = x;
        best = &q;
      }
    }
    e.value += bv;
    for (int k = 0; k < kResources; ++k)
      if (t.active(k)) e.g[k] += best->r[k];
  }
  return e;
}

// Bisection for the price where a nonincreasing subgradient g(price) turns
// non-positive; `f` maps a price to the evaluation at the best other price.
template <typename F, typename G>
double bisect_price(F f, G g, double scale, int iters) {
  if (g(f(0.0)) <= 0) return 0.0;
  double lo = 0, hi = scale;
  for (int i = 0; i < 200 && g(f(hi)) > 0; ++i) {
    lo = hi;
    hi *= 4;
  }
  for (int i = 0; i < iters; ++i) {
    const double mid = 0.5 * (lo + hi);
    (g(f(mid)) > 0 ? lo : hi) = mid;
  }
  return hi;
}

// The exact price of resource k with the other prices fixed: the LP
// optimum of the one-resource relaxation. Each item's (amount, priced cost)
// points have a lower convex hull; raising the price walks every item down
// its hull from its least-cost point, one vertex at a time, at the rate
// (cost added per unit saved) of each step. The price is the rate of the
// step that brings the total within the capacity.
struct Step {
  double rate, saved;
};

// `order`: each item's pairs by their amount of resource k.
double exact_price(const PairTable& t, const Amounts& mu, int k, const std::vector<std::vector<int>>& order,
                   std::vector<Step>& steps, std::vector<std::pair<double, double>>& pts) {
  steps.clear();
  double total = 0;
  for (size_t l = 0; l < t.layers.size(); ++l) {
    const auto& ps = t.layers[l];
    // Lower hull, left to right, one point per amount (the cheapest).
    pts.resize(ps.size());
    size_t h = 0;
    for (int idx : order[l]) {
      const Pair& q = ps[idx];
      double y = q.cost;
      for (int j = 0; j < kResources; ++j)
        if (j != k) y += mu[j] * q.r[j];
      const std::pair<double, double> b(q.r[k], y);
      if (h > 0 && b.first == pts[h - 1].first) {
        if (b.second >= pts[h - 1].second) continue;
        --h;
      }
      while (h >= 2) {
        const auto &o = pts[h - 2], &a = pts[h - 1];
        if ((a.first - o.first) * (b.second - o.second) - (a.second - o.second) * (b.first - o.first) > 0) break;
        --h;
      }
      pts[h++] = b;
    }
    // The least-cost vertex (the leftmost of ties) and the steps left of it.
    size_t m = 0;
    for (size_t i = 1; i < h; ++i)
      if (pts[i].second < pts[m].second) m = i;
    total += pts[m].first;
    for (size_t i = m; i-- > 0;) {
      const double saved = pts[i + 1].first - pts[i].first, added = pts[i].second - pts[i + 1].second;
      steps.push_back({std::max(0.0, added) / saved, saved});
    }
  }
  if (total <= t.cap[k]) return 0.0;
  // The lowest rates that save `need`: a weighted selection, linear on average.
  double need = total - t.cap[k];
  auto lo = steps.begin(), hi = steps.end();
  while (hi - lo > 16) {
    const auto mid = lo + (hi - lo) / 2;
    std::nth_element(lo, mid, hi, [](const Step& a, const Step& b) { return a.rate < b.rate; });
    double below = 0;
    for (auto it = lo; it != mid; ++it) below += it->saved;
    if (below >= need) {
      hi = mid;
    } else {
      need -= below;
      lo = mid;
    }
  }
  std::sort(lo, hi, [](const Step& a, const Step& b) { return a.rate < b.rate; });
  total = t.cap[k] + need;  // what is left to save, over the steps in [lo, hi)
  // Just above the rate, so that the item that takes the step has one
  // cheapest pair: at the rate itself two pairs cost alike, moving its
  // resource would be free, and the search's fill-and-fit bounds vanish.
  constexpr double kNudge = 1e-9;
  for (auto it = lo; it != hi; ++it) {
    total -= it->saved;
    if (total <= t.cap[k]) return it->rate * (1 + kNudge);
  }
  double steepest = 0;  // cannot fit: the steepest price
  for (const Step& st : steps) steepest = std::max(steepest, st.rate);
  return steepest;
}

// Prices for three budgets: Kelley's cutting planes on the Lagrangian dual.
// In prices per capacity (nu_k = mu_k * cap_k) the dual is concave and
// piecewise linear, L(nu) <= L(nu_i) + g_i . (nu - nu_i) for every point
// evaluated so far; the next point maximises that model (a linear program
// in R + 1 variables) within a box that grows when the point reaches it.
// Stops when the model's maximum is within a relative 1e-10 of the best
// value found (then the best point is optimal to that precision), after
// 200 points, or at the deadline. The full LP (CLP's simplex on every pair)
// is minutes at 10,000 layers; each point here is one pass over the pairs.
Amounts kelley_prices(const PairTable& t, std::chrono::steady_clock::time_point deadline) {
  std::vector<int> res;
  for (int k = 0; k < kResources; ++k)
    if (t.active(k)) res.push_back(k);
  const int R = static_cast<int>(res.size());
  double range = 0;  // objective spread: the scale of useful prices
  for (const auto& ps : t.layers) {
    double lo = kInf, hi = -kInf;
    for (const Pair& q : ps) {
      lo = std::min(lo, q.cost);
      hi = std::max(hi, q.cost);
    }
    range += hi - lo;
  }
  double box = std::max(1e-12, range);
  struct Cut {
    std::vector<double> nu, g;
    double value;
  };
  std::vector<Cut> cuts;
  auto eval = [&](const std::vector<double>& nu) {
    Amounts mu{};
    for (int i = 0; i < R; ++i) mu[res[i]] = nu[i] / t.cap[res[i]];
    const Eval e = evaluate_prices(t, mu);
    Cut c{nu, std::vector<double>(R), e.value};
    for (int i = 0; i < R; ++i) c.g[i] = e.g[res[i]] / t.cap[res[i]];
    return c;
  };
  cuts.push_back(eval(std::vector<double>(R, 0.0)));
  size_t best = 0;
  for (int iter = 0; iter < 200 && std::chrono::steady_clock::now() < deadline; ++iter) {
    // max z  s.t.  z - g_i . nu <= value_i - g_i . nu_i,  0 <= nu <= box.
    LinearModel lm;
    lm.num_rows = static_cast<int>(cuts.size());
    lm.row_lb.assign(cuts.size(), -kInf);
    for (const Cut& c : cuts) {
      double rhs = c.value;
      for (int i = 0; i < R; ++i) rhs -= c.g[i] * c.nu[i];
      lm.row_ub.push_back(rhs);
    }
    for (int i = 0; i <= R; ++i) {  // columns nu_0..nu_{R-1}, then z
      for (size_t r = 0; r < cuts.size(); ++r) {
        const double v = i < R ? -cuts[r].g[i] : 1.0;
        if (v != 0) {
          lm.rows.push_back(static_cast<int>(r));
          lm.vals.push_back(v);
        }
      }
      lm.starts.push_back(static_cast<int>(lm.rows.size()));
      lm.obj.push_back(i < R ? 0.0 : -1.0);
      lm.col_lb.push_back(i < R ? 0.0 : -kInf);
      lm.col_ub.push_back(i < R ? box : kInf);
    }
    std::vector<double> y, x;
    if (!solve_lp(lm, y, &x)) break;
    std::vector<double> nu(x.begin(), x.begin() + R);
    const double model = x[R];
    if (model - cuts[best].value <= 1e-10 * std::max(1.0, std::abs(cuts[best].value))) break;
    bool at_box = false;
    for (double v : nu) at_box |= v >= box * (1 - 1e-12);
    if (at_box) box *= 4;
    cuts.push_back(eval(nu));
    if (cuts.back().value > cuts[best].value) best = cuts.size() - 1;
  }
  Amounts mu{};
  for (int i = 0; i < R; ++i) mu[res[i]] = cuts[best].nu[i] / t.cap[res[i]];
  spdlog::debug("search: {} cutting-plane points for the prices", cuts.size());
  return mu;
}

}  // namespace

Lagrangian lagrangian_prices(const PairTable& t, std::chrono::steady_clock::time_point deadline) {
  std::vector<int> res;
  for (int k = 0; k < kResources; ++k)
    if (t.active(k)) res.push_back(k);
  Lagrangian lag;
  if (res.size() <= 2) {
    // One budget: its exact price. Two: bisection on the second budget's
    // price, the first's exact inside.
    std::vector<Step> steps;
    std::vector<std::pair<double, double>> pts;
    std::vector<std::vector<int>> order(t.layers.size());
    if (!res.empty())
      for (size_t l = 0; l < t.layers.size(); ++l) {
        order[l].resize(t.layers[l].size());
        std::iota(order[l].begin(), order[l].end(), 0);
        const int k = res[0];
        std::sort(order[l].begin(), order[l].end(),
                  [&](int a, int b) { return t.layers[l][a].r[k] < t.layers[l][b].r[k]; });
      }
    auto inner = [&](Amounts mu) {
      if (!res.empty()) mu[res[0]] = exact_price(t, mu, res[0], order, steps, pts);
      return mu;
    };
    Amounts mu{};
    if (res.size() == 2) {
      double cost = 0, total = 0;
      for (const auto& ps : t.layers)
        for (const Pair& q : ps) {
          cost += std::abs(q.cost);
          total += std::abs(q.r[res[1]]);
        }
      const int k = res[1];
      constexpr int kIters = 12;
      mu[k] = bisect_price(
          [&](double v) {
            Amounts m{};
            m[k] = v;
            return evaluate_prices(t, inner(m));
          },
          [k](const Eval& e) { return e.g[k]; }, total > 0 ? cost / total : 1.0, kIters);
    }
    lag.mu = inner(mu);
  } else {
    lag.mu = kelley_prices(t, deadline);
  }
  lag.bound = 0;
  for (int k : res) lag.bound -= lag.mu[k] * t.cap[k];
  for (const auto& ps : t.layers) {
    double u = kInf;
    for (const Pair& q : ps) u = std::min(u, lag.priced(q));
    lag.u.push_back(u);
    lag.bound += u;
  }
  return lag;
}

namespace {

template <int R>
bool widening_search(const PairTable& t, const Lagrangian& lag, std::chrono::steady_clock::time_point deadline,
                     int64_t node_limit, double rel_gap, std::vector<int>& best_pick, double& best_cost,
                     double& proven, int64_t& nodes, int64_t& choices) {
  LagrangianDfs<R> dfs(t, lag, deadline);
  // The tree grows steeply with the gap, and the optimum usually lies far
  // closer to the bound than the incumbent does. So search first below a
  // small cutoff over the bound, widening it while nothing is found under it
  // (each such search proves the optimum is at least its cutoff): a search
  // that finds a solution and completes has proved it optimal. The tree's
  // growth between the last two widenings sets the next one, aiming at about
  // four times the nodes. Restart with the better incumbent while it keeps
  // improving, and search longer when it does not.
  nodes = 0;
  proven = lag.bound;
  int64_t budget = 5'000;
  const double tol = 1e-12 * std::max(1.0, std::abs(best_cost));
  double widen = best_cost - lag.bound > tol ? (best_cost - lag.bound) / 64 : 0.0;
  double last_widen = 0, last_nodes = 0;
  for (;;) {
    if (best_cost - proven <= rel_gap * std::abs(best_cost)) return rel_gap == 0;
    const double before = best_cost;
    const double cutoff = widen > 0 ? lag.bound + widen : best_cost;
    const int64_t start = nodes;
    const bool done = dfs.run(best_pick, best_cost, cutoff, std::min(budget, node_limit - nodes));
    nodes += dfs.nodes();
    choices = dfs.choices();
    spdlog::trace("search: run below {:.8f}: {} nodes, {}, best {:.8f}", cutoff, nodes - start, done ? "done" : "stopped",
                  best_cost);
    if (done && (cutoff >= before || best_cost < before)) {
      proven = best_cost;
      return true;
    }
    if (nodes >= node_limit || std::chrono::steady_clock::now() > deadline) return false;
    if (done) {  // nothing below the cutoff: widen it
      proven = std::max(proven, cutoff);
      const double run_nodes = static_cast<double>(nodes - start);
      double factor = 1.5;
      if (last_nodes > 0 && run_nodes > last_nodes * 1.01 && widen > last_widen) {
        const double rate = std::log(run_nodes / last_nodes) / (widen - last_widen);  // ln(nodes) per unit of cutoff
        factor = std::clamp(1.0 + std::log(4.0) / rate / widen, 1.05, 2.0);
      }
      last_widen = widen;
      last_nodes = std::max(1.0, run_nodes);
      widen *= factor;
      if (lag.bound + widen >= best_cost) widen = 0;
      continue;
    }
    budget *= best_cost >= before ? 4 : 2;
  }
}

}  // namespace

bool lagrangian_dfs(const PairTable& t, const Lagrangian& lag, std::chrono::steady_clock::time_point deadline,
                    int64_t node_limit, double rel_gap, std::vector<int>& best_pick, double& best_cost,
                    double& proven, int64_t& nodes, int64_t& choices) {
  int n = 0;
  for (int k = 0; k < kResources; ++k) n += t.active(k);
  switch (n) {
    case 0: return widening_search<0>(t, lag, deadline, node_limit, rel_gap, best_pick, best_cost, proven, nodes, choices);
    case 1: return widening_search<1>(t, lag, deadline, node_limit, rel_gap, best_pick, best_cost, proven, nodes, choices);
    case 2: return widening_search<2>(t, lag, deadline, node_limit, rel_gap, best_pick, best_cost, proven, nodes, choices);
    default: return widening_search<3>(t, lag, deadline, node_limit, rel_gap, best_pick, best_cost, proven, nodes, choices);
  }
}

}  // namespace mpq::search

// Exact depth-first search around the LP optimum of the search ILP.
//
// For any multipliers mu >= 0 on the two capacity rows (scaled to 1), with
// u_l = min_p (c_p + mu . r_p) and d_p = c_p + mu . r_p - u_l >= 0, every
// assignment x satisfies the identity
//     cost(x) = L(mu) + sum_l d[x_l] + mu . slack(x),   slack(x) >= 0,
// where L(mu) = sum_l u_l - mu_b - mu_s is the Lagrangian bound (the LP bound
// at the LP's duals). A solution better than the incumbent therefore has
// sum d + mu . slack < G = incumbent - L(mu): only pairs with d < G can take
// part, and the chosen resources must nearly fill every priced capacity. The
// search fixes layers in order of their resource range and prunes a node when
// the cheapest completion cannot fit, when even the largest completion
// leaves a slack that costs more than what is left of G, or when moving the
// free layers' d = 0 choices to fill (or to fit) a capacity costs more, at
// the best price per unit of resource any free layer offers.
#include <algorithm>
#include <cmath>

#include "search/solvers.h"

namespace mpq::search {

namespace {

struct Choice {
  int pair;
  double d, bops, size, cost;
};

class LagrangianDfs {
 public:
  LagrangianDfs(const PairTable& t, const Lagrangian& lag, std::chrono::steady_clock::time_point deadline,
                int64_t node_limit)
      : t_(t), lag_(lag), deadline_(deadline), node_limit_(node_limit) {
    use_b_ = std::isfinite(t.bops_cap);
    use_s_ = std::isfinite(t.size_cap);
    wb_ = lag.wb;
    ws_ = lag.ws;
    cap_b_ = use_b_ ? t.bops_cap : 0.0;
    cap_s_ = use_s_ ? t.size_cap : 0.0;
    lagrangian_ = lag.bound;
  }

  // Improves (best_pick, best_cost) in place. Returns true when the search
  // completed (the result is optimal), false at the node limit or deadline.
  bool run(std::vector<int>& best_pick, double& best_cost) {
    best_pick_ = best_pick;
    best_cost_ = best_cost;
    tol_ = 1e-10 * std::max(1.0, std::abs(best_cost));
    const double gap = best_cost - lagrangian_;
    // Allowed choices: d below the gap. A layer with one is fixed.
    const size_t L = t_.layers.size();
    pick_.assign(L, -1);
    std::vector<std::vector<Choice>> choices(L);
    for (size_t l = 0; l < L; ++l) {
      for (int k = 0; k < static_cast<int>(t_.layers[l].size()); ++k) {
        const Pair& q = t_.layers[l][k];
        const double d = lag_.d(t_, l, k);
        if (d < gap + tol_ || k == best_pick[l]) choices[l].push_back({k, d, q.bops, q.size, q.cost});
      }
      std::sort(choices[l].begin(), choices[l].end(), [](const Choice& a, const Choice& b) { return a.d < b.d; });
      choices_count_ += static_cast<int64_t>(choices[l].size());
      if (choices[l].size() == 1) {
        const Choice& c = choices[l][0];
        pick_[l] = c.pair;
        base_d_ += c.d;
        base_b_ += c.bops;
        base_s_ += c.size;
        base_c_ += c.cost;
      } else {
        free_.push_back(static_cast<int>(l));
      }
    }
    // Widest resource range first: the suffix bounds tighten fastest.
    auto range = [&](int l) {
      double lo = INFINITY, hi = -INFINITY;
      for (const Choice& c : choices[l]) {
        lo = std::min(lo, wb_ * c.bops + ws_ * c.size);
        hi = std::max(hi, wb_ * c.bops + ws_ * c.size);
      }
      return hi - lo;
    };
    std::stable_sort(free_.begin(), free_.end(), [&](int a, int b) { return range(a) > range(b); });
    const size_t F = free_.size();
    choices_.resize(F);
    for (size_t i = 0; i < F; ++i) choices_[i] = std::move(choices[free_[i]]);
    // The d = 0 choices' resources, and the cheapest price (d per unit) of
    // moving a resource up or down from them, over each suffix of layers.
    suf0_b_.assign(F + 1, 0.0);
    suf0_s_.assign(F + 1, 0.0);
    for (auto* v : {&up_b_, &dn_b_, &up_s_, &dn_s_}) v->assign(F + 1, INFINITY);
    for (size_t i = F; i-- > 0;) {
      const Choice& c0 = choices_[i][0];
      suf0_b_[i] = suf0_b_[i + 1] + c0.bops;
      suf0_s_[i] = suf0_s_[i + 1] + c0.size;
      up_b_[i] = up_b_[i + 1];
      dn_b_[i] = dn_b_[i + 1];
      up_s_[i] = up_s_[i + 1];
      dn_s_[i] = dn_s_[i + 1];
      for (const Choice& c : choices_[i]) {
        const double db = c.bops - c0.bops, ds = c.size - c0.size;
        if (db > 0) up_b_[i] = std::min(up_b_[i], c.d / db);
        if (db < 0) dn_b_[i] = std::min(dn_b_[i], c.d / -db);
        if (ds > 0) up_s_[i] = std::min(up_s_[i], c.d / ds);
        if (ds < 0) dn_s_[i] = std::min(dn_s_[i], c.d / -ds);
      }
    }
    suf_min_b_.assign(F + 1, 0.0);
    suf_min_s_.assign(F + 1, 0.0);
    suf_max_b_.assign(F + 1, 0.0);
    suf_max_s_.assign(F + 1, 0.0);
    for (size_t i = F; i-- > 0;) {
      double mnb = INFINITY, mns = INFINITY, mxb = 0, mxs = 0;
      for (const Choice& c : choices_[i]) {
        mnb = std::min(mnb, c.bops);
        mns = std::min(mns, c.size);
        mxb = std::max(mxb, c.bops);
        mxs = std::max(mxs, c.size);
      }
      suf_min_b_[i] = suf_min_b_[i + 1] + mnb;
      suf_min_s_[i] = suf_min_s_[i + 1] + mns;
      suf_max_b_[i] = suf_max_b_[i + 1] + mxb;
      suf_max_s_[i] = suf_max_s_[i + 1] + mxs;
    }
    const bool done = dfs(0, base_d_, base_b_, base_s_, base_c_);
    best_pick = best_pick_;
    best_cost = best_cost_;
    return done;
  }

  int64_t nodes() const { return nodes_; }
  int64_t choices() const { return choices_count_; }

 private:
  bool dfs(size_t i, double d, double rb, double rs, double cost) {
    if (++nodes_ > node_limit_) return false;
    if ((nodes_ & 4095) == 0 && std::chrono::steady_clock::now() > deadline_) return false;
    const double gap = best_cost_ - lagrangian_ - tol_;
    if (d >= gap) return true;
    if ((use_b_ && rb + suf_min_b_[i] > cap_b_) || (use_s_ && rs + suf_min_s_[i] > cap_s_)) return true;
    const double slack_cost = (use_b_ ? wb_ * std::max(0.0, cap_b_ - rb - suf_max_b_[i]) : 0.0) +
                              (use_s_ ? ws_ * std::max(0.0, cap_s_ - rs - suf_max_s_[i]) : 0.0);
    if (d + slack_cost >= gap) return true;
    // Filling or fitting each capacity from the d = 0 choices has a price.
    double adjust = 0;
    if (use_b_) {
      const double s0 = cap_b_ - rb - suf0_b_[i];
      adjust = std::max(adjust, s0 >= 0 ? s0 * std::min(wb_, up_b_[i]) : -s0 * dn_b_[i]);
    }
    if (use_s_) {
      const double s0 = cap_s_ - rs - suf0_s_[i];
      adjust = std::max(adjust, s0 >= 0 ? s0 * std::min(ws_, up_s_[i]) : -s0 * dn_s_[i]);
    }
    if (d + adjust >= gap) return true;
    if (i == choices_.size()) {  // a leaf: feasible by the checks above
      if (cost < best_cost_) {
        best_cost_ = cost;
        best_pick_ = pick_;
      }
      return true;
    }
    const int layer = free_[i];
    for (const Choice& c : choices_[i]) {
      if (d + c.d >= best_cost_ - lagrangian_ - tol_) break;
      pick_[layer] = c.pair;
      if (!dfs(i + 1, d + c.d, rb + c.bops, rs + c.size, cost + c.cost)) return false;
    }
    return true;
  }

  const PairTable& t_;
  const Lagrangian& lag_;
  std::chrono::steady_clock::time_point deadline_;
  int64_t node_limit_;
  bool use_b_ = false, use_s_ = false;
  double wb_ = 0, ws_ = 0, cap_b_ = 0, cap_s_ = 0, lagrangian_ = 0, tol_ = 0;
  std::vector<int> free_, pick_, best_pick_;
  std::vector<std::vector<Choice>> choices_;
  std::vector<double> suf_min_b_, suf_min_s_, suf_max_b_, suf_max_s_;
  std::vector<double> suf0_b_, suf0_s_, up_b_, dn_b_, up_s_, dn_s_;
  double base_d_ = 0, base_b_ = 0, base_s_ = 0, base_c_ = 0, best_cost_ = 0;
  int64_t nodes_ = 0, choices_count_ = 0;
};

// Evaluates the Lagrangian at (wb, ws): its value and the supergradient
// (resources of the per-layer minimisers minus the capacities).
struct Eval {
  double value, g_bops, g_size;
};

Eval evaluate_prices(const PairTable& t, double wb, double ws) {
  const bool use_b = std::isfinite(t.bops_cap), use_s = std::isfinite(t.size_cap);
  double v = -(use_b ? wb * t.bops_cap : 0.0) - (use_s ? ws * t.size_cap : 0.0);
  double gb = use_b ? -t.bops_cap : 0.0, gs = use_s ? -t.size_cap : 0.0;
  for (const auto& ps : t.layers) {
    const Pair* best = &ps[0];
    double bv = INFINITY;
    for (const Pair& q : ps) {
      const double x = q.cost + wb * q.bops + ws * q.size;
      // Ties go to the least resource, so a zero subgradient means "fits".
      if (x < bv || (x == bv && q.bops + q.size < best->bops + best->size)) {
        bv = x;
        best = &q;
      }
    }
    v += bv;
    gb += best->bops;
    gs += best->size;
  }
  return {v, use_b ? gb : 0.0, use_s ? gs : 0.0};
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

}  // namespace

Lagrangian lagrangian_prices(const PairTable& t) {
  const bool use_b = std::isfinite(t.bops_cap), use_s = std::isfinite(t.size_cap);
  // Price scales: objective per unit of each resource, averaged.
  double cost = 0, bops = 0, size = 0;
  for (const auto& ps : t.layers)
    for (const Pair& q : ps) {
      cost += std::abs(q.cost);
      bops += q.bops;
      size += q.size;
    }
  const double scale_b = bops > 0 ? cost / bops : 1.0, scale_s = size > 0 ? cost / size : 1.0;
  constexpr int kIters = 24;
  auto best_wb = [&](double ws) {
    if (!use_b) return 0.0;
    return bisect_price([&](double wb) { return evaluate_prices(t, wb, ws); }, [](const Eval& e) { return e.g_bops; },
                        scale_b, kIters);
  };
  double ws = 0;
  if (use_s)
    ws = bisect_price([&](double s) { return evaluate_prices(t, best_wb(s), s); }, [](const Eval& e) { return e.g_size; },
                      scale_s, kIters);
  Lagrangian lag;
  lag.wb = best_wb(ws);
  lag.ws = ws;
  lag.bound = -(use_b ? lag.wb * t.bops_cap : 0.0) - (use_s ? lag.ws * t.size_cap : 0.0);
  for (const auto& ps : t.layers) {
    double u = INFINITY;
    for (const Pair& q : ps) u = std::min(u, q.cost + lag.wb * q.bops + lag.ws * q.size);
    lag.u.push_back(u);
    lag.bound += u;
  }
  return lag;
}

bool lagrangian_dfs(const PairTable& t, const Lagrangian& lag, std::chrono::steady_clock::time_point deadline,
                    int64_t node_limit, std::vector<int>& best_pick, double& best_cost, int64_t& nodes,
                    int64_t& choices) {
  // The first leaves usually improve the incumbent a lot, and a smaller gap
  // admits far fewer choices: restart with the better incumbent while it
  // keeps improving, and search longer when it does not.
  nodes = 0;
  int64_t budget = 5'000;
  for (;;) {
    const double before = best_cost;
    LagrangianDfs dfs(t, lag, deadline, std::min(budget, node_limit - nodes));
    const bool done = dfs.run(best_pick, best_cost);
    nodes += dfs.nodes();
    choices = dfs.choices();
    if (done) return true;
    if (nodes >= node_limit || std::chrono::steady_clock::now() > deadline) return false;
    if (best_cost >= before) budget *= 4;
  }
}

}  // namespace mpq::search

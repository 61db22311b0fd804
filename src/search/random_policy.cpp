// Random policies under the search's budgets: the baseline a searched policy
// has to beat. A draw is a saturating walk: every layer starts at its lowest
// allowed bits, then a uniformly chosen (layer, weight-or-activation) step
// up to the next allowed candidate is taken, among the steps that keep every
// budget, until none fits. A walk that ends more than `min_fill` under the
// binding budget is drawn again.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include <spdlog/fmt/fmt.h>

#include "mpq/common/error.h"
#include "mpq/search/search.h"

namespace mpq::search {

namespace {

struct Usage {
  double bops = 0, size = 0, cost = 0;
};

}  // namespace

SearchResult random_policy(const SearchProblem& p, uint64_t seed, double min_fill, int max_draws) {
  MPQ_CHECK(p.tie.empty(), "--random-policy: --tie is not supported (the walk moves one layer at a time)");
  MPQ_CHECK(min_fill >= 0 && min_fill <= 1, "--random-fill: must be in [0, 1] (got ", min_fill, ")");
  const auto t0 = std::chrono::steady_clock::now();
  const auto& c = p.constraints;
  const size_t L = p.num_layers(), na = p.abits.size();
  // Candidate indices in ascending bit order.
  auto ascending = [](const std::vector<int>& bits) {
    std::vector<size_t> o(bits.size());
    std::iota(o.begin(), o.end(), 0);
    std::sort(o.begin(), o.end(), [&](size_t x, size_t y) { return bits[x] < bits[y]; });
    return o;
  };
  const std::vector<size_t> wo = ascending(p.wbits), ao = ascending(p.abits);
  auto allowed = [&](size_t l, size_t wr, size_t ar) {
    const size_t pair = wo[wr] * na + ao[ar];
    if (!p.pair_allowed(l, pair)) return false;
    return c.max_act_bytes == 0 || static_cast<double>(p.act_bytes(l, p.abits[ao[ar]])) <= c.max_act_bytes;
  };
  auto use = [&](size_t l, size_t wr, size_t ar) {
    const double w = p.wbits[wo[wr]], a = p.abits[ao[ar]];
    Usage u;
    u.bops = static_cast<double>(p.macs[l]) * w * a;
    u.size = static_cast<double>(p.params[l]) * w;
    if (!p.cost.empty()) u.cost = p.cost[l][wo[wr] * na + ao[ar]];
    return u;
  };
  const double bops_cap = c.bops ? p.bops_budget() : INFINITY, size_cap = c.cr != 0 ? p.size_budget() : INFINITY,
               cost_cap = c.max_cost > 0 ? p.cost_budget() : INFINITY;
  auto fits = [&](const Usage& u) { return u.bops <= bops_cap && u.size <= size_cap && u.cost <= cost_cap; };
  // The share of the binding (most used) budget.
  auto fill = [&](const Usage& u) {
    double f = 0;
    if (std::isfinite(bops_cap)) f = std::max(f, u.bops / bops_cap);
    if (std::isfinite(size_cap)) f = std::max(f, u.size / size_cap);
    if (std::isfinite(cost_cap)) f = std::max(f, u.cost / cost_cap);
    return f;
  };
  MPQ_CHECK(std::isfinite(bops_cap) || std::isfinite(size_cap) || std::isfinite(cost_cap),
            "--random-policy: needs a budget that adds up over layers (--bops, --cr or --max-cost)");

  SearchResult r;
  r.pairs = static_cast<int64_t>(L * p.num_pairs());
  // Start: every layer at its lowest allowed pair (fewest weight bits, then activation bits).
  std::vector<size_t> w0(L), a0(L);
  Usage start;
  for (size_t l = 0; l < L; ++l) {
    bool found = false;
    for (size_t wr = 0; wr < wo.size() && !found; ++wr)
      for (size_t ar = 0; ar < ao.size() && !found; ++ar)
        if (allowed(l, wr, ar)) w0[l] = wr, a0[l] = ar, found = true;
    if (!found) {
      r.status = Status::kInfeasible;
      r.message = fmt::format("search: no random policy fits: layer '{}' has no pair within --max-act-mem {:.0f}; "
                              "raise --max-act-mem", p.names[l], c.max_act_bytes);
      return r;
    }
    const Usage u = use(l, w0[l], a0[l]);
    start.bops += u.bops, start.size += u.size, start.cost += u.cost;
  }
  if (!fits(start)) {
    r.status = Status::kInfeasible;
    r.message = "search: no random policy fits: the lowest allowed bits of every layer already exceed the budget; "
                "raise the budget or add lower bit-widths";
    return r;
  }
  std::mt19937_64 rng(seed);
  double best_fill = -1;
  for (int draw = 0; draw < max_draws; ++draw) {
    std::vector<size_t> w = w0, a = a0;
    Usage total = start;
    struct Step {
      size_t l, wr, ar;
    };
    std::vector<Step> steps;
    for (;;) {
      steps.clear();
      for (size_t l = 0; l < L; ++l) {
        const Usage now = use(l, w[l], a[l]);
        // The next allowed candidate up on each side, the other side kept.
        for (int side = 0; side < 2; ++side) {
          size_t wr = w[l], ar = a[l];
          for (;;) {
            if (side == 0 ? ++wr >= wo.size() : ++ar >= ao.size()) break;
            if (!allowed(l, wr, ar)) continue;
            const Usage u = use(l, wr, ar);
            const Usage t{total.bops - now.bops + u.bops, total.size - now.size + u.size, total.cost - now.cost + u.cost};
            if (fits(t)) steps.push_back({l, wr, ar});
            break;
          }
        }
      }
      if (steps.empty()) break;
      const Step s = steps[std::uniform_int_distribution<size_t>(0, steps.size() - 1)(rng)];
      const Usage now = use(s.l, w[s.l], a[s.l]), u = use(s.l, s.wr, s.ar);
      total = {total.bops - now.bops + u.bops, total.size - now.size + u.size, total.cost - now.cost + u.cost};
      w[s.l] = s.wr, a[s.l] = s.ar;
    }
    const double f = fill(total);
    best_fill = std::max(best_fill, f);
    if (f + 1e-12 < min_fill) continue;
    r.status = Status::kRandom;
    r.w_bits.resize(L);
    r.a_bits.resize(L);
    for (size_t l = 0; l < L; ++l) {
      r.w_bits[l] = p.wbits[wo[w[l]]];
      r.a_bits[l] = p.abits[ao[a[l]]];
      r.objective += p.a[l][ao[a[l]]] + p.alpha * p.w[l][wo[w[l]]];
    }
    r.bound = r.objective;  // not a bound: a random policy proves nothing
    r.dfs_nodes = draw + 1;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }
  r.status = Status::kInfeasible;
  r.message = fmt::format("search: no random policy within {:g}% of the budget in {} draws (the fullest used {:.2f}%); "
                          "lower --random-fill",
                          (1 - min_fill) * 100, max_draws, best_fill * 100);
  return r;
}

io::Indicators reverse_importance(const io::Indicators& ind, double alpha) {
  const size_t L = ind.layer_names.size();
  // A layer's sensitivity: how much its tables rise from its highest to its lowest bit-width.
  auto rise = [](const std::map<int, double>& t) { return t.begin()->second - t.rbegin()->second; };
  std::vector<double> score(L);
  for (size_t l = 0; l < L; ++l) {
    MPQ_CHECK(!ind.weight[l].empty() && !ind.act[l].empty(), "--reverse-indicators: layer '", ind.layer_names[l],
              "' has no indicators");
    score[l] = rise(ind.act[l]) + alpha * rise(ind.weight[l]);
  }
  std::vector<size_t> order(L);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return score[x] < score[y]; });
  // The k-th least sensitive layer takes the tables of the k-th most sensitive.
  io::Indicators out = ind;
  for (size_t k = 0; k < L; ++k) {
    out.weight[order[k]] = ind.weight[order[L - 1 - k]];
    out.act[order[k]] = ind.act[order[L - 1 - k]];
  }
  return out;
}

}  // namespace mpq::search

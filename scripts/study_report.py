#!/usr/bin/env python3
"""Writes docs/STUDY.md and its plots from the runs of scripts/study.sh.

Standard library only. Reads STUDY_DIR (out/study): policies/, ft/, ind/,
fp/ and writes DOCS/STUDY.md, DOCS/study/*.svg. Runs that are not finished
are left out and counted as missing; the tables say n for every mean.
"""
import argparse
import hashlib
import json
import math
import os
import pickle
import re
import statistics
import sys

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
KIND_ORDER = ["limpq_s0", "limpq_s1", "limpq_s2", "alpha", "uniform", "init", "qerror", "reversed", "random"]
KIND_LABEL = {
    "limpq_s0": "LIMPQ, indicator seed 0",
    "limpq_s1": "LIMPQ, indicator seed 1",
    "limpq_s2": "LIMPQ, indicator seed 2",
    "uniform": "uniform",
    "init": "initial scales (0 training steps)",
    "reversed": "reversed indicators (seed 0)",
    "qerror": "quantization error (`mpq importance`)",
}
COLORS = {"limpq": "#d62728", "uniform": "#1f77b4", "init": "#ff7f0e", "reversed": "#7f7f7f", "random": "#2ca02c",
          "qerror": "#9467bd"}


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"global {module}.{name} refused")


def load_indicators(path):
    with open(path, "rb") as f:
        d = SafeUnpickler(f).load()
    names = [n[len("module."):] if n.startswith("module.") else n for n in d["layer_name"]]
    w = [{int(k): float(v) for k, v in d["weight"][n].items()} for n in d["layer_name"]]
    a = [{int(k): float(v) for k, v in d["act"][n].items()} for n in d["layer_name"]]
    return names, w, a


def read_yaml_flat(path):
    """The `key: value` lines of a YAML file at any depth, the first of each key (eval output, a policy)."""
    out = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"^\s*([A-Za-z_0-9]+):\s*(.*)$", line.rstrip("\n"))
            if m and m.group(1) not in out:
                out[m.group(1)] = m.group(2).strip().strip('"')
    return out


def bits_of(policy_path):
    y = read_yaml_flat(policy_path)
    parse = lambda s: [int(x) for x in s.strip("[]").split(",") if x.strip()]
    return parse(y["weight_bits"]), parse(y["act_bits"])


def bits_key(policy_path):
    """Same key as study.sh's bits_key: the two bit lines, spaces and newlines removed."""
    with open(policy_path) as f:
        lines = [l for l in f if re.match(r"^(weight_bits|act_bits):", l)]
    text = "".join(lines).replace(" ", "").replace("\n", "")
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def seconds(run_dir):
    try:
        with open(os.path.join(run_dir, "done")) as f:
            return float(f.read().strip())
    except (OSError, ValueError):
        return None


def last_val_top1(metrics_csv):
    with open(metrics_csv) as f:
        rows = [l.strip().split(",") for l in f if l.strip()]
    head = rows[0]
    return float(rows[-1][head.index("val_top1")])


def mean_std(xs):
    if not xs:
        return None, None
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def ci95(diffs):
    """Mean and half-width of the t-interval of paired differences."""
    n = len(diffs)
    if n < 2:
        return (diffs[0] if diffs else None), None
    m, s = statistics.mean(diffs), statistics.stdev(diffs)
    return m, T975.get(n - 1, 1.96) * s / math.sqrt(n)


def kendall_tau(x, y):
    n, c, d = len(x), 0, 0
    for i in range(n):
        for j in range(i + 1, n):
            p = (x[i] - x[j]) * (y[i] - y[j])
            c += p > 0
            d += p < 0
    return (c - d) / (n * (n - 1) / 2)


def importance(w, a, alpha=2.0):
    """A layer's sensitivity as the search sees it: how much its tables rise from the highest to the lowest bits."""
    return [(a[l][min(a[l])] - a[l][max(a[l])]) + alpha * (w[l][min(w[l])] - w[l][max(w[l])]) for l in range(len(w))]


def fmt_pm(m, s, n):
    return "–" if m is None else f"{m:.2f} ± {s:.2f} (n={n})"


def fmt_ci(m, h):
    if m is None:
        return "–"
    if h is None:
        return f"{m:+.2f} (n=1)"
    mark = " **" if abs(m) > h else ""
    return f"{m:+.2f} ± {h:.2f}{mark}"


# ---- SVG ------------------------------------------------------------------
def svg_doc(w, h, body):
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
            f'font-family="sans-serif" font-size="11">\n<rect width="{w}" height="{h}" fill="white"/>\n'
            + "\n".join(body) + "\n</svg>\n")


def nice_ticks(lo, hi, n=5):
    if hi <= lo:
        hi = lo + 1
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    t = math.ceil(lo / step) * step
    out = []
    while t <= hi + 1e-12:
        out.append(round(t, 10))
        t += step
    return out


def panel(body, x0, y0, pw, ph, xr, yr, title, xlabel, ylabel, xticks=None, xlabel_dy=30):
    sx = lambda v: x0 + (v - xr[0]) / (xr[1] - xr[0]) * pw
    sy = lambda v: y0 + ph - (v - yr[0]) / (yr[1] - yr[0]) * ph
    body.append(f'<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
    body.append(f'<text x="{x0 + pw / 2}" y="{y0 - 6}" text-anchor="middle" font-weight="bold">{title}</text>')
    for t in xticks if xticks is not None else nice_ticks(*xr):
        body.append(f'<line x1="{sx(t):.1f}" y1="{y0 + ph}" x2="{sx(t):.1f}" y2="{y0 + ph + 4}" stroke="#444"/>')
        body.append(f'<text x="{sx(t):.1f}" y="{y0 + ph + 15}" text-anchor="middle">{t:g}</text>')
    for t in nice_ticks(*yr):
        body.append(f'<line x1="{x0}" y1="{sy(t):.1f}" x2="{x0 + pw}" y2="{sy(t):.1f}" stroke="#eee"/>')
        body.append(f'<text x="{x0 - 4}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    body.append(f'<text x="{x0 + pw / 2}" y="{y0 + ph + xlabel_dy}" text-anchor="middle">{xlabel}</text>')
    body.append(f'<text transform="translate({x0 - 38},{y0 + ph / 2}) rotate(-90)" text-anchor="middle">{ylabel}</text>')
    return sx, sy


def kind_of(name):
    if name.startswith("random"):
        return "random"
    return "limpq" if name.startswith("limpq") or name.startswith("alpha") else name


def accuracy_svg(budgets, results):
    """Per budget: test top-1 of every policy against its GBitOPs. Where a BitOPs budget puts every policy at the
    same GBitOPs, the policies stand side by side in the order of the table instead (the x axis says so)."""
    pw, ph, gap = 320, 240, 80
    body = []
    for k, b in enumerate(budgets):
        pts = [r for r in results if r["budget"] == b and r["test"]]
        if not pts:
            continue
        xs = [r["gbitops"] for r in pts]
        ys = [v for r in pts for v in r["test"]]
        categorical = max(xs) - min(xs) < 0.02 * statistics.mean(xs)
        if categorical:
            pos = {id(r): i for i, r in enumerate(pts)}
            xr = (-0.7, len(pts) - 0.3)
            xlabel = f"policies, all at {statistics.mean(xs):.4f} GBitOPs"
        else:
            xr = (min(xs) - 0.05 * (max(xs) - min(xs)), max(xs) + 0.05 * (max(xs) - min(xs)))
            xlabel = "GBitOPs"
        yr = (math.floor(min(ys) * 2) / 2 - 0.25, math.ceil(max(ys) * 2) / 2 + 0.25)
        x0 = 60 + k * (pw + gap)
        sx, sy = panel(body, x0, 40, pw, ph, xr, yr, f"budget {b}", xlabel, "test top-1 %",
                       xticks=[] if categorical else None, xlabel_dy=62 if categorical else 30)
        for r in pts:
            m = statistics.mean(r["test"])
            c = COLORS.get(kind_of(r["name"]), "#000")
            x = sx(pos[id(r)] if categorical else r["gbitops"])
            for v in r["test"]:
                body.append(f'<circle cx="{x:.1f}" cy="{sy(v):.1f}" r="1.8" fill="{c}" opacity="0.5"/>')
            if r["name"] == "uniform":
                body.append(f'<rect x="{x - 5:.1f}" y="{sy(m) - 5:.1f}" width="10" height="10" fill="{c}"/>')
            else:
                body.append(f'<circle cx="{x:.1f}" cy="{sy(m):.1f}" r="4.5" fill="{c}" stroke="black" stroke-width="0.6"/>')
            if categorical:
                body.append(f'<text transform="translate({x + 3:.1f},{40 + ph + 8}) rotate(60)" font-size="9">'
                            f'{r["name"]}</text>')
    y = 40 + ph + 80
    for i, (kname, c) in enumerate(COLORS.items()):
        body.append(f'<circle cx="{70 + i * 120}" cy="{y}" r="5" fill="{c}"/><text x="{80 + i * 120}" y="{y + 4}">{kname}</text>')
    body.append(f'<text x="60" y="{y + 22}">Big marks: mean over the finetuning seeds (uniform bits: a square); '
                f'small dots: single runs.</text>')
    return svg_doc(60 + len(budgets) * (pw + gap), y + 36, body)


def indicators_svg(names, trained, init):
    """Per layer: log10 scale against bit-width, trained (solid) and initial (dashed), weights and activations."""
    cols, pw, ph = 5, 150, 110
    rows = math.ceil(len(names) / cols)
    body = []
    allv = [v for t in (trained, init) for side in t for d in side for v in d.values()]
    yr = (math.floor(math.log10(min(allv)) * 2) / 2, math.ceil(math.log10(max(allv)) * 2) / 2)
    for l, n in enumerate(names):
        x0, y0 = 60 + (l % cols) * (pw + 50), 40 + (l // cols) * (ph + 60)
        bits = sorted(trained[0][l])
        sx, sy = panel(body, x0, y0, pw, ph, (min(bits) - 0.3, max(bits) + 0.3), yr, n, "bits", "log10 s", xticks=bits)
        for side, color in ((0, "#d62728"), (1, "#1f77b4")):
            for t, dash in ((trained, ""), (init, ' stroke-dasharray="4 3"')):
                pts = " ".join(f"{sx(b):.1f},{sy(math.log10(t[side][l][b])):.1f}" for b in bits)
                body.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.4"{dash}/>')
    y = 40 + rows * (ph + 60)
    body.append(f'<text x="60" y="{y}">red: weight scale, blue: activation scale; solid: trained (seed 0), '
                f'dashed: initial (no training step)</text>')
    return svg_doc(60 + cols * (pw + 50), y + 20, body)


# ---- levers -----------------------------------------------------------------
LEVERS = [
    ("seeds", "w2a3", "10 finetuning seeds (0..9) instead of 3"),
    ("seeds", "w3a3", "10 finetuning seeds (0..9) instead of 3"),
    ("nobn", "w2a3", "no BatchNorm recalibration (`bn_calib_images=0`) in the finetune's validation and the test"),
    ("ftlong", "w2a3", "finetune 2 epochs on 25% of the training set (5x the steps)"),
    ("cands432", "w2a3", "candidates 4, 3, 2 bits instead of 6..2"),
    ("cands432", "w3a3", "candidates 4, 3, 2 bits instead of 6..2"),
    ("indlong", "w2a3", "indicators: 2 epochs on 32% (4x the steps) at lr 0.1 (10x)"),
    ("indlong", "w3a3", "indicators: 2 epochs on 32% (4x the steps) at lr 0.1 (10x)"),
]


def paired(r, ref):
    """Paired differences r − ref over the seeds both have."""
    by = dict(zip(ref["seeds"], ref["test"]))
    return [t - by[sd] for sd, t in zip(r["seeds"], r["test"]) if sd in by]


def levers_section(P, S, ind, runs, runs_of):
    rows = []
    for lever, b, what in LEVERS:
        main = {n: os.path.join(S, "policies", b, n + ".yaml") for n in ("limpq_s0", "uniform", "reversed")}
        if not all(os.path.exists(p) for p in main.values()):
            continue
        if lever == "seeds":
            got = {n: runs(b, n) for n in main}
        elif lever in ("nobn", "ftlong"):
            got = {n: runs_of(p, f"{b}@{lever}", n) for n, p in main.items()}
        else:
            got = {"uniform": runs(b, "uniform")}
            for n in ("limpq_s0", "reversed"):
                p = os.path.join(S, "policies", f"{b}@{lever}", n + ".yaml")
                if not os.path.exists(p):
                    continue
                r = runs_of(p, f"{b}@{lever}", n)
                if not r["test"] and r["key"] == bits_key(main["limpq_s0"]):
                    r = runs_of(main["limpq_s0"], b, n)  # the lever lands on the main policy: its runs
                    r["same_as_main"] = True
                got[n] = r
        if not got.get("limpq_s0", {}).get("test"):
            continue
        rows.append((lever, b, what, got))
    if not rows:
        return
    P("## Levers: what might make the method help")
    P("")
    P("`bash scripts/study.sh --levers` runs them. One change at a time against the protocol above, each with the uniform policy and the reversed indicators "
      "under the same change (the levers that only change the search use the main uniform runs). Δ: paired "
      "differences in test top-1 points with the half-width of their 95% t-interval; ** marks an interval that "
      "excludes 0. The validation column is what a user could choose on.")
    P("")
    P("| lever | budget | LIMPQ (avg W / A) | LIMPQ test % | uniform test % | reversed test % | Δ LIMPQ − uniform | "
      "Δ LIMPQ − reversed | val LIMPQ / uniform |")
    P("|---|---|---|---|---|---|---|---|---|")
    base = {}
    for b in ("w2a3", "w3a3"):
        got = {n: runs(b, n) for n in ("limpq_s0", "uniform", "reversed")
               if os.path.exists(os.path.join(S, "policies", b, n + ".yaml"))}
        if "limpq_s0" in got:
            first3 = lambda r, k: [v for v, sd in zip(r[k], r["seeds"]) if sd < 3]
            base[b] = {n: {**r, "test": first3(r, "test"), "val": first3(r, "val"), "seeds": first3(r, "seeds")}
                       for n, r in got.items()}
    for b, got in base.items():
        rows.insert(0 if b == "w2a3" else 1, ("none (the protocol above, seeds 0..2)", b, "", got))
    for lever, b, what, got in rows:
        L, U, R = got.get("limpq_s0"), got.get("uniform"), got.get("reversed")
        cell = lambda r: fmt_pm(*mean_std(r["test"]), len(r["test"])) if r and r["test"] else "–"
        def dlt(r, ref):
            d = paired(r, ref) if r and ref else []
            return fmt_ci(*ci95(d)) if d else "–"

        vals = (f"{statistics.mean(L['val']):.2f} / {statistics.mean(U['val']):.2f}"
                if L and U and L["val"] and U["val"] else "–")
        bits = f"{L['avg_w']:.2f} / {L['avg_a']:.2f}" + (" (= main)" if L.get("same_as_main") else "")
        name = f"{lever}: {what}" if what else lever
        P(f"| {name} | {b} | {bits} | {cell(L)} | {cell(U)} | {cell(R)} | {dlt(L, U)} | {dlt(L, R)} | {vals} |")
    P("")
    if "long" in ind and "init" in ind and "s0" in ind:
        _, wl, al = ind["long"]
        _, wi, ai = ind["init"]
        _, w0, a0 = ind["s0"]
        bits = sorted(wl[0])
        mv = lambda t, ref: statistics.median(abs(math.log(t[l][bt] / ref[l][bt])) for l in range(len(t)) for bt in bits)
        rw = [wl[l][bt] / wi[l][bt] for l in range(len(wl)) for bt in bits]
        ra = [al[l][bt] / ai[l][bt] for l in range(len(al)) for bt in bits]
        tau = kendall_tau(importance(wl, al), importance(w0, a0))
        tau_i = kendall_tau(importance(wl, al), importance(wi, ai))
        cnt = lambda t: sum(1 for l in range(len(t)) for k in range(len(bits) - 1) if t[l][bits[k]] <= t[l][bits[k + 1]])
        P(f"The longer indicator training (`indlong`) moved the scales by a median |log(s / s_init)| of "
          f"{mv(wl, wi):.4f} (weights; {mv(w0, wi):.4f} in the main run) and {mv(al, ai):.4f} (activations; "
          f"{mv(a0, ai):.4f}); s / s_init spans [{min(rw):.3f}, {max(rw):.3f}] for weights and "
          f"[{min(ra):.3f}, {max(ra):.3f}] for activations. Kendall's τ of the layers' importance against the main "
          f"seed-0 indicators is {tau:.3f}, against the initial scales {tau_i:.3f}; scales that do not fall as the "
          f"bits rise: {cnt(wl)} weight and {cnt(al)} activation pairs of {len(wl) * (len(bits) - 1)}.")
        for b in ("w2a3", "w3a3"):
            p1, p2 = (os.path.join(S, "policies", x, "limpq_s0.yaml") for x in (b, f"{b}@indlong"))
            if os.path.exists(p1) and os.path.exists(p2):
                (wa, aa), (wb, ab) = bits_of(p1), bits_of(p2)
                P(f"At {b} its policy differs from the main one in "
                  f"{sum(1 for l in range(len(wa)) if wa[l] != wb[l] or aa[l] != ab[l])} of {len(wa)} layers.")
        P("")


# ---- main -------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("study_dir")
    ap.add_argument("docs_dir")
    ap.add_argument("--command", default="bash scripts/study.sh")
    ap.add_argument("--commit", default="?")
    ap.add_argument("--budget-flags", default="")
    ap.add_argument("--recipe", default="")
    args = ap.parse_args()
    S = args.study_dir
    flags = dict(kv.split("=", 1) for kv in args.budget_flags.split(";") if "=" in kv)
    budgets = [b for b in flags] or sorted(d for d in os.listdir(os.path.join(S, "policies")) if d != "calib")

    def policies(b):
        d = os.path.join(S, "policies", b)
        return sorted(f[:-5] for f in os.listdir(d) if f.endswith(".yaml")) if os.path.isdir(d) else []

    def runs(b, name):
        return runs_of(os.path.join(S, "policies", b, name + ".yaml"), b, name)

    def runs_of(pol, b, name):
        """The finished finetunes of the policy file POL under ft/B (B may be BUDGET@LEVER)."""
        key = bits_key(pol)
        base = os.path.join(S, "ft", b, key)
        out = {"budget": b, "name": name, "key": key, "test": [], "val": [], "seeds": [], "secs": []}
        w, a = bits_of(pol)
        out["w"], out["a"] = w, a
        y = read_yaml_flat(pol)
        out["gbitops"], out["size_mb"] = float(y["gbitops"]), float(y["size_mb"])
        out["avg_w"], out["avg_a"] = float(y["avg_weight_bits"]), float(y["avg_act_bits"])
        if os.path.isdir(base):
            for sd in sorted(os.listdir(base)):
                rd = os.path.join(base, sd)
                if not sd.startswith("seed") or seconds(rd) is None:
                    continue
                ev = read_yaml_flat(os.path.join(rd, "eval.yaml"))
                out["test"].append(float(ev["top1"]))
                out["val"].append(last_val_top1(os.path.join(rd, "run", "metrics.csv")))
                out["seeds"].append(int(sd[4:]))
                out["secs"].append(seconds(rd))
        return out

    lines = []
    P = lines.append
    total_s = 0.0
    for root, dirs, files in os.walk(S):
        if "done" in files:
            total_s += seconds(root) or 0
    P("# Study: do the learned indicators buy accuracy?")
    P("")
    P(f"Written by `{args.command}` (scripts/study_report.py) at commit `{args.commit}` from the runs in `{S}`; "
      f"the runs took {total_s / 60:.1f} min of wall time on this machine (2 CPU cores), all stages summed.")
    P("")
    P("ResNet-20 on Fashion-MNIST (Debian's `dataset-fashion-mnist`), candidates 6, 5, 4, 3, 2 bits for "
      "weights and activations, the first conv and the fc at 8 bits. Every policy is finetuned with the same recipe "
      f"from the same full-precision weights: configs/fashion_mnist_resnet20_finetune.yaml with `{args.recipe}`, "
      "3 seeds (the seed sets the data order, the train/validation split and the augmentation; at w2a3 and w3a3, LIMPQ, "
      "uniform and the reversed indicators have 10, the `seeds` lever below). "
      "Top-1 is on the 10,000 test images, evaluated once per run; choices (the budgets, the best random policy) "
      "read the validation split held out from the training set.")
    P("")

    # Calibration.
    P("## Calibration: what uniform quantization costs here")
    P("")
    fp_val = None
    fpm = os.path.join(S, "fp_train", "metrics.csv")
    if os.path.exists(fpm):
        fp_val = last_val_top1(fpm)
    P("| policy | GBitOPs | size MB | val top-1 % | test top-1 % |")
    P("|---|---|---|---|---|")
    if fp_val is not None:
        P(f"| full precision (3 epochs, the demo's run) | 31.99 | 1.032 | – | {fp_val:.2f} |")
    for name in policies("calib"):
        r = runs("calib", name)
        if r["test"]:
            P(f"| uniform {name.upper()} | {r['gbitops']:.4f} | {r['size_mb']:.4f} | {statistics.mean(r['val']):.2f} | "
              f"{statistics.mean(r['test']):.2f} |")
    P("")
    P("The full-precision run holds out no validation split (the demo's config), so its figure is its own "
      "evaluation of the test split; nothing was chosen on it. Budgets: the BitOPs of uniform W2A3 and of W3A3, where quantization visibly costs accuracy, "
      "and a size-only budget, a compression ratio of 14x (about 2.3 bits per weight element on average; 15.9x is the 2-bit "
      "limit with the first conv and fc at 8 bits).")
    P("")

    results = []
    for b in budgets:
        for name in policies(b):
            if name.startswith("len"):
                continue
            results.append(runs(b, name))

    def order(r):
        k = "random" if r["name"].startswith("random") else "alpha" if r["name"].startswith("alpha") else r["name"]
        return (KIND_ORDER.index(k) if k in KIND_ORDER else 99, r["name"])

    P("## Policies at each budget")
    P("")
    P("Mean ± standard deviation over the finetuning seeds. Δ: the paired difference (same finetuning seed) in test "
      "top-1 points, with the half-width of its 95% t-interval; ** marks a difference whose interval excludes 0. "
      "The best random policy is the one with the best mean validation top-1.")
    for b in budgets:
        rs = sorted([r for r in results if r["budget"] == b], key=order)
        if not rs:
            continue
        P("")
        P(f"### Budget {b} (`mpq search {flags.get(b, '')}`)")
        P("")
        uni = next((r for r in rs if r["name"] == "uniform"), None)
        rnd = [r for r in rs if r["name"].startswith("random") and r["val"]]
        best_rnd = max(rnd, key=lambda r: statistics.mean(r["val"])) if rnd else None
        P("| policy | avg W / A bits | GBitOPs | size MB | test top-1 % | Δ vs uniform | Δ vs best random |")
        P("|---|---|---|---|---|---|---|")
        seen = {}
        for r in rs:
            label = KIND_LABEL.get(r["name"], r["name"].replace("random", "random #").replace(
                "alpha", "LIMPQ, seed 0, alpha "))
            if r["key"] in seen:
                P(f"| {label} | same policy as {seen[r['key']]} | | | | | |")
                continue
            seen[r["key"]] = label
            m, s = mean_std(r["test"])

            def delta(ref):
                if ref is None or ref is r:
                    return "–"
                d = paired(r, ref)
                return fmt_ci(*ci95(d)) if d else "–"

            best = " (best random)" if r is best_rnd else ""
            P(f"| {label}{best} | {r['avg_w']:.2f} / {r['avg_a']:.2f} | {r['gbitops']:.4f} | {r['size_mb']:.4f} | "
              f"{fmt_pm(m, s, len(r['test']))} | {delta(uni)} | {delta(best_rnd)} |")
    P("")

    # Policies against each other: how far apart they are.
    P("## How much the searched policies differ")
    P("")
    P("Layers (of 20) whose weight or activation bits differ from the policy of the seed-0 indicators.")
    P("")
    names = ["limpq_s1", "limpq_s2", "init", "qerror", "reversed"]
    P("| budget | " + " | ".join(KIND_LABEL[n] for n in names) + " |")
    P("|---|" + "---|" * len(names))
    for b in budgets:
        base = os.path.join(S, "policies", b, "limpq_s0.yaml")
        if not os.path.exists(base):
            continue
        w0, a0 = bits_of(base)
        cells = []
        for n in names:
            p = os.path.join(S, "policies", b, n + ".yaml")
            if not os.path.exists(p):
                cells.append("–")
                continue
            w, a = bits_of(p)
            cells.append(str(sum(1 for l in range(len(w)) if w[l] != w0[l] or a[l] != a0[l])))
        P(f"| {b} | " + " | ".join(cells) + " |")
    P("")

    # Indicator properties.
    ind = {}
    for n in ["s0", "s1", "s2", "init", "long"] + [f for f in sorted(os.listdir(os.path.join(S, "ind"))) if f.startswith("len")
                                              and f.endswith(".pkl")]:
        n = n[:-4] if n.endswith(".pkl") else n
        p = os.path.join(S, "ind", n + ".pkl")
        if os.path.exists(p) and seconds(os.path.join(S, "ind", n)) is not None:
            ind[n] = load_indicators(p)
    if "s0" in ind and "init" in ind:
        P("## The indicators")
        P("")
        names_l, w0, a0 = ind["s0"]
        _, wi, ai = ind["init"]
        bits = sorted(w0[0], reverse=True)
        P("### How far training moved the scales")
        P("")
        P("s_trained / s_init of the seed-0 indicators (2 epochs on 8% of the training set), over the 20 layers: "
          "median [min, max].")
        P("")
        P("| bits | weight | activation |")
        P("|---|---|---|")
        for bt in bits:
            rw = [w0[l][bt] / wi[l][bt] for l in range(len(w0))]
            ra = [a0[l][bt] / ai[l][bt] for l in range(len(a0))]
            P(f"| {bt} | {statistics.median(rw):.3f} [{min(rw):.3f}, {max(rw):.3f}] | "
              f"{statistics.median(ra):.3f} [{min(ra):.3f}, {max(ra):.3f}] |")
        P("")
        P("Per layer (seed 0), s_trained / s_init at each bit-width:")
        P("")
        P("| layer | " + " | ".join(f"W{bt}" for bt in bits) + " | " + " | ".join(f"A{bt}" for bt in bits) + " |")
        P("|---|" + "---|" * (2 * len(bits)))
        for l, n in enumerate(names_l):
            P(f"| {n} | " + " | ".join(f"{w0[l][bt] / wi[l][bt]:.3f}" for bt in bits) + " | " +
              " | ".join(f"{a0[l][bt] / ai[l][bt]:.4f}" for bt in bits) + " |")
        P("")
        lens = sorted([(float(n[3:]), n) for n in ind if n.startswith("len")] + [(0.08, "s0")])
        if len(lens) > 1:
            P("### With the length of indicator training")
            P("")
            P("Seed 0, 2 epochs on a growing fraction of the training set. Moved: the median over layers and bits of "
              "|log(s_trained / s_init)|. Policy change: layers whose bits differ from the policy of the longest run, "
              "per budget.")
            P("")
            longest = lens[-1][1]
            P("| data fraction | steps | moved (weights) | moved (activations) | " +
              " | ".join(f"policy change {b}" for b in budgets) + " |")
            P("|---|---|---|---|" + "---|" * len(budgets))
            for f, n in lens:
                _, wl, al = ind[n]
                mw = statistics.median(abs(math.log(wl[l][bt] / wi[l][bt])) for l in range(len(wl)) for bt in bits)
                ma = statistics.median(abs(math.log(al[l][bt] / ai[l][bt])) for l in range(len(al)) for bt in bits)
                steps = "?"
                try:
                    with open(os.path.join(S, "ind", n, "log.txt")) as fh:
                        st = re.findall(r"step \d+/(\d+)", fh.read())
                    if st:
                        steps = str(2 * int(st[-1]))
                except OSError:
                    pass
                cells = []
                for b in budgets:
                    pn = "limpq_s0" if n == "s0" else n
                    pl = "limpq_s0" if longest == "s0" else longest
                    p1, p2 = (os.path.join(S, "policies", b, x + ".yaml") for x in (pn, pl))
                    if os.path.exists(p1) and os.path.exists(p2):
                        (wa, aa), (wb, ab) = bits_of(p1), bits_of(p2)
                        cells.append(str(sum(1 for l in range(len(wa)) if wa[l] != wb[l] or aa[l] != ab[l])))
                    else:
                        cells.append("–")
                P(f"| {f:g} | {steps} | {mw:.4f} | {ma:.4f} | " + " | ".join(cells) + " |")
            P("")
        P("### Scales that do not fall as the bits rise")
        P("")
        P("Adjacent candidate pairs (b, b−1) of every layer where the scale at b is not below the scale at b−1, the "
          "case the search's outlier rule erases.")
        P("")
        P("| indicators | weight pairs | activation pairs |")
        P("|---|---|---|")
        for n in [x for x in ("s0", "s1", "s2", "init") if x in ind]:
            _, w, a = ind[n]
            cnt = lambda t: sum(1 for l in range(len(t)) for k in range(len(bits) - 1) if t[l][bits[k]] >= t[l][bits[k + 1]])
            tot = len(w) * (len(bits) - 1)
            P(f"| {n} | {cnt(w)} of {tot} | {cnt(a)} of {tot} |")
        P("")
        seeds = [x for x in ("s0", "s1", "s2") if x in ind]
        if len(seeds) > 1:
            P("### Agreement of the layers' importance")
            P("")
            P("Kendall's τ between the layers' importance (how much a layer's tables rise from 6 to 2 bits, "
              "activation + 2 × weight, the quantity the search trades against cost).")
            P("")
            P("| pair | τ |")
            P("|---|---|")
            imp = {n: importance(ind[n][1], ind[n][2]) for n in seeds + ["init"]}
            for i in range(len(seeds)):
                for j in range(i + 1, len(seeds)):
                    P(f"| {seeds[i]} – {seeds[j]} | {kendall_tau(imp[seeds[i]], imp[seeds[j]]):.3f} |")
            for s in seeds:
                P(f"| {s} – init | {kendall_tau(imp[s], imp['init']):.3f} |")
            P("")
        os.makedirs(os.path.join(args.docs_dir, "study"), exist_ok=True)
        with open(os.path.join(args.docs_dir, "study", "indicators.svg"), "w") as f:
            f.write(indicators_svg(names_l, (w0, a0), (wi, ai)))

    # Cost.
    P("## Cost")
    P("")
    ind_s = [seconds(os.path.join(S, "ind", s)) for s in ("s0", "s1", "s2")]
    ind_s = [x for x in ind_s if x is not None]
    ft_s = [x for r in results for x in r["secs"]]
    if ind_s and ft_s:
        P(f"Indicator training (2 epochs on 8%, five forward/backward passes per step) takes "
          f"{statistics.median(ind_s):.0f} s (median of {len(ind_s)}); one finetuning run with its test evaluation "
          f"{statistics.median(ft_s):.0f} s (median of {len(ft_s)}): the indicators cost "
          f"{statistics.median(ind_s) / statistics.median(ft_s):.1f} finetuning runs.")
        P("")
    os.makedirs(os.path.join(args.docs_dir, "study"), exist_ok=True)
    # Machine-readable: what scripts/demo.sh compares its own difference with.
    summary = {}
    for b in budgets:
        pol = {r["name"]: {"test": r["test"], "val": r["val"], "seeds": r["seeds"], "avg_w": r["avg_w"],
                           "avg_a": r["avg_a"], "gbitops": r["gbitops"]} for r in results if r["budget"] == b}
        entry = {"flags": flags.get(b, ""), "policies": pol}
        def add_paired(name, key):
            if "uniform" in pol and name in pol:
                d = paired(pol[name], pol["uniform"])
                if len(d) > 1:
                    entry[key] = {"mean": statistics.mean(d), "sd": statistics.stdev(d), "n": len(d)}

        add_paired("limpq_s0", "limpq_minus_uniform")
        # The objective's alpha chosen on the validation split: the paper's 2 (limpq_s0) or a variant.
        cands = {"2": "limpq_s0", **{n[5:]: n for n in pol if n.startswith("alpha")}}
        cands = {a: n for a, n in cands.items() if n in pol and pol[n]["val"]}
        if cands:
            best = max(cands, key=lambda a: statistics.mean(pol[cands[a]]["val"]))
            entry["chosen_alpha"] = best
            add_paired(cands[best], "alpha_minus_uniform")
        summary[b] = entry
    with open(os.path.join(args.docs_dir, "study", "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    chosen = [(b, e["chosen_alpha"]) for b, e in summary.items() if "chosen_alpha" in e]
    if any(n.startswith("alpha") for b in budgets for n in summary[b]["policies"]):
        P("## The objective's alpha, chosen on the validation split")
        P("")
        P("The search weighs the weight indicators by alpha against the activation indicators (2 in the paper). "
          "Policies of the seed-0 indicators at alpha 0.5, 8 and 32 were finetuned like the others; the alpha with "
          "the best mean validation top-1 (never the test split) is:")
        P("")
        P("| budget | chosen alpha | its test top-1 − uniform (paired, mean ± sd) |")
        P("|---|---|---|")
        for b, a in chosen:
            e = summary[b].get("alpha_minus_uniform")
            P(f"| {b} | {a} | " + (f"{e['mean']:+.2f} ± {e['sd']:.2f} (n={e['n']})" if e else "–") + " |")
        P("")
    levers_section(P, S, ind, runs, runs_of)
    with open(os.path.join(args.docs_dir, "study", "top1_vs_gbitops.svg"), "w") as f:
        f.write(accuracy_svg(budgets, results))
    P("Plots: [top-1 against GBitOPs](study/top1_vs_gbitops.svg), "
      "[indicator scales against bit-width per layer](study/indicators.svg).")
    P("")
    missing = sum(1 for r in results for _ in range(max(0, 3 - len(r["test"]))))
    if missing:
        P(f"*{missing} finetuning runs of the plan are not finished yet; their means are over fewer seeds.*")
        P("")
    text = "\n".join(lines)
    marker = "<!-- study findings -->"
    path = os.path.join(args.docs_dir, "STUDY.md")
    # Keep the hand-written findings below the marker across regenerations.
    tail = ""
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
        if marker in old:
            tail = old[old.index(marker):]
    with open(path + ".tmp", "w") as f:
        f.write(text + "\n" + (tail or marker + "\n"))
    os.replace(path + ".tmp", path)
    print(f"study: wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()

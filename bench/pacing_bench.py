"""Pacing benchmark: every policy on the grid N x p, validation and realistic cases,
30 seeds of an 8-hour shift each, against the constrained-MDP optimum (LP, HiGHS).

    python bench/pacing_bench.py [--seeds 30] [--cases validation,realistic]
                                 [--agents 5,10,20,50,100] [--p 0.15,0.3,0.5]
                                 [--workers 2] [--out docs/pacing-grid.jsonl] [--chart docs/pacing.png]

Prints one JSON line per grid point and a final summary line. For the validation
case (where the LP is exact) each line carries the optimum at the 3 % cap, the
optimum at the predictive policy's own mean abandon rate, and the gaps. Needs scipy
and matplotlib (benchmark-only: pip install '.[bench]').
"""

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dialer.pacing.sim import GRID_AGENTS, GRID_P, GRID_POLICIES, run_grid_point  # noqa: E402

VICIDIAL = ("vicidial-hard", "vicidial-average", "vicidial-tapered")
LP_TIME_LIMIT = float(os.environ.get("PACING_LP_TIME_LIMIT", "900"))  # seconds per LP solve


def _point(task):
    case, n, p, seeds, policies, at_3pct, power_k = task
    t0 = time.perf_counter()
    out = run_grid_point(case, n, p, seeds, policies, power_k=power_k)
    out["sim_seconds"] = round(time.perf_counter() - t0, 1)
    pol = out["policies"]
    pred = pol.get("predictive")
    if pred is None:
        return out
    out["predictive_within_cap"] = f"{pred['seeds_within_cap']}/{pred['seeds']}"
    # the best VICIdial mode that is not a runaway (TAPERED with the shift end far away
    # drops most live answers: no one can run it); none of them keeps the cap
    usable = [pol[m] for m in VICIDIAL if m in pol and pol[m]["abandon_rate"] <= 0.10]
    best_vici = max(usable, key=lambda r: r["occupancy"]) if usable else None
    if best_vici:
        out["best_vicidial"] = best_vici["policy"]
        out["gain_over_best_vicidial"] = pred["occupancy"] - best_vici["occupancy"]
        out["vs_vicidial_abandon_lower_or_equal"] = pred["abandon_rate"] <= best_vici["abandon_rate"]
    if case == "validation":
        _lp(out, at_3pct)
    return out


def _lp(out, at_3pct=None):
    """The LP optimum at 3 %, at the predictive policy's and (when power ran) at power's
    own mean abandon rates, added to a validation point's result (``lp_error`` if a
    solve fails). ``at_3pct``: the optimum at 3 % known already (it depends on N and p
    only: the model, not the simulator), as (occupancy, edge time)."""
    from optimum import LPFailed, solve
    n, p, pol = out["agents"], out["p"], out["policies"]
    pred = pol["predictive"]
    out.pop("lp_error", None)
    t1 = time.perf_counter()
    try:
        at_cap = ({"occupancy": at_3pct[0], "edge_time": at_3pct[1]} if at_3pct is not None
                  else solve(n, p, 0.03, time_limit=LP_TIME_LIMIT))
        own = solve(n, p, pred["abandon_rate"], time_limit=LP_TIME_LIMIT)
        power_own = solve(n, p, pol["power"]["abandon_rate"], time_limit=LP_TIME_LIMIT) if "power" in pol else None
    except LPFailed as e:
        out["lp_error"] = str(e)
    else:
        out["optimum_at_3pct"] = at_cap["occupancy"]
        out["optimum_at_3pct_reused"] = at_3pct is not None
        out["optimum_at_predictive_rate"] = own["occupancy"]
        out["gap_to_optimum_at_own_rate"] = own["occupancy"] - pred["occupancy"]
        out["gap_to_3pct_optimum"] = at_cap["occupancy"] - pred["occupancy"]
        edges = [at_cap["edge_time"], own["edge_time"]]
        if power_own is not None:
            out["power_gap_to_optimum_at_own_rate"] = power_own["occupancy"] - pol["power"]["occupancy"]
            edges.append(power_own["edge_time"])
        # time share at the LP's truncation of dials in flight (0: it never binds)
        out["lp_edge_time"] = max(e for e in edges if e is not None) if any(e is not None for e in edges) else None
    out["lp_seconds"] = round(time.perf_counter() - t1, 1)
    return out


def known_optima(paths):
    """(agents, p) -> (occupancy, edge time) of the LP optimum at 3 % from earlier
    results files (validation points that have it)."""
    known = {}
    for path in paths:
        with open(path) as fh:
            for line in fh:
                pt = json.loads(line) if line.strip() else {}
                if pt.get("case") == "validation" and "optimum_at_3pct" in pt:
                    known[(pt["agents"], pt["p"])] = (pt["optimum_at_3pct"], pt.get("lp_edge_time"))
    return known


def known_power(paths):
    """(case, agents, p) -> the tuned power ratio k of earlier results files: the sweep
    for it runs the power policy alone (the predictive policy changes nothing there),
    so a rerun may take it instead of bisecting again."""
    known = {}
    for path in paths:
        with open(path) as fh:
            for line in fh:
                pt = json.loads(line) if line.strip() else {}
                pol = pt.get("policies")
                k = pol.get("power", {}).get("k") if isinstance(pol, dict) else None  # (not the summary line)
                if k is not None:
                    known[(pt["case"], pt["agents"], pt["p"])] = k
    return known


def _curve(n, p, alphas):
    from optimum import solve
    return [(a, solve(n, p, a)["occupancy"]) for a in alphas]


def chart(points, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    # 1. the trade-off at N=20, p=0.3: LP optimum and every policy (validation case)
    ax = axes[0]
    alphas = [0.0, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.05]
    curve = _curve(20, 0.3, alphas)
    ax.plot([100 * a for a, _ in curve], [o for _, o in curve], "k-", label="optimum (constrained MDP, LP)")
    ref = next((pt for pt in points if pt["case"] == "validation" and pt["agents"] == 20 and pt["p"] == 0.3), None)
    marks = {"progressive": "s", "power": "^", "vicidial-hard": "x", "vicidial-average": "+", "predictive": "o"}
    if ref:
        for name, m in marks.items():
            r = ref["policies"].get(name)
            if r is None:
                continue
            label = f"{name} k={r['k']:g}" if name == "power" else name
            ax.plot(100 * r["abandon_rate"], r["occupancy"], m, markersize=9, label=label)
    ax.axvline(3.0, color="grey", linestyle=":", label="3 % cap")
    ax.set_xlim(-0.2, 5.2)
    ax.set_xlabel("abandoned, % of live answers (mean of 30 shifts)")
    ax.set_ylabel("occupancy")
    ax.set_title("N=20 agents, p=0.3, validation model (VICIdial TAPERED off scale)")
    ax.legend(fontsize=8, loc="center right")
    # 2. every validation grid point: gap to the optimum at the policy's own abandon rate
    ax = axes[1]
    val = sorted((pt for pt in points if pt["case"] == "validation" and "gap_to_optimum_at_own_rate" in pt),
                 key=lambda pt: (pt["p"], pt["agents"]))
    labels = [f"N{pt['agents']}\np{pt['p']:g}" for pt in val]
    xs = range(len(val))
    ax.bar([x - 0.2 for x in xs], [pt["gap_to_optimum_at_own_rate"] for pt in val], width=0.4,
           label="predictive: optimum at own rate - occupancy")
    if all("power_gap_to_optimum_at_own_rate" in pt for pt in val):
        ax.bar([x + 0.2 for x in xs], [pt["power_gap_to_optimum_at_own_rate"] for pt in val], width=0.4,
               label="best power k: same")
    ax.axhline(0.01, color="red", linestyle=":", label="target 0.01")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("occupancy gap")
    ax.set_title("Gap to the best possible at the same mean abandon rate")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def summary(points, seeds, seconds):
    """The summary line over the grid points."""
    val = [pt for pt in points if pt["case"] == "validation" and "gap_to_optimum_at_own_rate" in pt]
    return {
        "summary": True, "seeds": seeds, "points": len(points),
        "policies": [p for p in GRID_POLICIES if any(p in pt["policies"] for pt in points)],
        "validation_points_all_seeds_within_cap": sum(
            1 for pt in points if pt["case"] == "validation" and pt["policies"]["predictive"]["seeds_within_cap"] == seeds),
        "validation_points": sum(1 for pt in points if pt["case"] == "validation"),
        "validation_points_with_lp": len(val),
        "validation_points_within_0.01_of_optimum_at_own_rate": sum(
            1 for pt in val if pt["gap_to_optimum_at_own_rate"] <= 0.01),
        "max_gap_to_optimum_at_own_rate": max((pt["gap_to_optimum_at_own_rate"] for pt in val), default=None),
        "mean_gap_to_optimum_at_own_rate": (sum(pt["gap_to_optimum_at_own_rate"] for pt in val) / len(val)) if val else None,
        "max_gap_to_3pct_optimum": max((pt["gap_to_3pct_optimum"] for pt in val), default=None),
        "points_beating_best_vicidial_by_0.03_at_lower_abandon": sum(
            1 for pt in points if pt.get("gain_over_best_vicidial", 0) >= 0.03 and pt.get("vs_vicidial_abandon_lower_or_equal")),
        "min_gain_over_best_vicidial": min((pt["gain_over_best_vicidial"] for pt in points if "gain_over_best_vicidial" in pt), default=None),
        "all_seeds_within_cap_realistic": sum(
            1 for pt in points if pt["case"] == "realistic" and pt["policies"]["predictive"]["seeds_within_cap"] == seeds),
        "realistic_points": sum(1 for pt in points if pt["case"] == "realistic"),
        "seconds": round(seconds, 1),
    }


def fill_lp(path, chart_path=None):
    """Re-solve the LP for the validation points of a results file that lack it (a
    solve that failed or hit the time limit), rewrite the file and its summary line."""
    with open(path) as fh:
        lines = [json.loads(x) for x in fh if x.strip()]
    points = [x for x in lines if not x.get("summary")]
    old = next((x for x in lines if x.get("summary")), {})
    for pt in points:
        if pt["case"] == "validation" and "gap_to_optimum_at_own_rate" not in pt:
            t0 = time.perf_counter()
            _lp(pt)
            print(json.dumps({"refilled": [pt["agents"], pt["p"]], "lp_error": pt.get("lp_error"),
                              "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    seeds = old.get("seeds", points[0]["seeds"] if points else 0)
    summ = summary(points, seeds, old.get("seconds", 0.0))
    if chart_path:
        chart(points, chart_path)
        summ["chart"] = chart_path
    with open(path, "w") as fh:
        for pt in points + [summ]:
            fh.write(json.dumps(pt) + "\n")
    print(json.dumps(summ), flush=True)


def power_equal(path, out_path, min_agents=50):
    """Power at the predictive policy's abandon rate, for the points of a results file
    with at least ``min_agents`` agents: power re-run on the same seeds at k x 0.95^i
    (or x 1.05^i when the best k ran below the predictive rate) until its mean abandon
    rate crosses the predictive policy's, then its occupancy interpolated linearly."""
    from dialer.pacing.sim import grid_scenario, run_seeds
    with open(path) as fh:
        points = [json.loads(x) for x in fh if x.strip()]
    points = [pt for pt in points if isinstance(pt.get("policies"), dict) and pt["agents"] >= min_agents]
    with open(out_path, "w") as fh:
        for pt in sorted(points, key=lambda q: (q["p"], q["agents"])):
            sc = grid_scenario(pt["case"], pt["agents"], pt["p"])
            pred, pw = pt["policies"]["predictive"], pt["policies"]["power"]
            target = pred["abandon_rate"]
            rows = [(pw["k"], pw["occupancy"], pw["abandon_rate"])]
            k, down = pw["k"], pw["abandon_rate"] > target
            while (rows[-1][2] > target) == down and 1.0 < k < 12.0:
                k = round(max(1.0, k * (0.95 if down else 1.05)), 2)
                r = run_seeds(sc, f"power:{k:g}", pt["seeds"])
                rows.append((k, r["occupancy"], r["abandon_rate"]))
            (k1, o1, a1), (k0, o0, a0) = rows[-2], rows[-1]
            occ = o0 + (o1 - o0) * (target - a0) / (a1 - a0) if a1 != a0 else o0
            line = {"case": pt["case"], "agents": pt["agents"], "p": pt["p"], "seeds": pt["seeds"],
                    "predictive_abandon_rate": target, "predictive_occupancy": pred["occupancy"],
                    "power_runs": [{"k": k, "occupancy": o, "abandon_rate": a} for k, o, a in rows],
                    "power_occupancy_at_predictive_rate": occ,
                    "predictive_minus_power_at_equal_abandon": pred["occupancy"] - occ}
            print(json.dumps(line), flush=True)
            fh.write(json.dumps(line) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--cases", default="validation,realistic")
    ap.add_argument("--agents", default=",".join(map(str, GRID_AGENTS)))
    ap.add_argument("--p", default=",".join(f"{x:g}" for x in GRID_P))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--policies", default=",".join(GRID_POLICIES),
                    help="the policies to run at each point (predictive is needed for the gaps)")
    ap.add_argument("--lp-from", default=None, metavar="FILES",
                    help="comma-separated earlier results: their LP optima at 3 %% are reused (not re-solved)")
    ap.add_argument("--power-k-from", default=None, metavar="FILES",
                    help="comma-separated earlier results: their tuned power ratio k is run on the seeds "
                         "instead of bisecting for it again (marked k_reused)")
    ap.add_argument("--out", default=None, help="also write the JSON lines to this file")
    ap.add_argument("--chart", default=None, help="write the PNG chart here")
    ap.add_argument("--fill-lp", default=None, metavar="FILE",
                    help="no runs: re-solve the missing LP optima of a results file (rewritten in place)")
    ap.add_argument("--power-equal", nargs=2, default=None, metavar=("RESULTS", "OUT"),
                    help="no grid: power re-run near the predictive policy's abandon rate for the N >= 50 "
                         "points of RESULTS, occupancy interpolated at that rate, lines to OUT")
    a = ap.parse_args(argv)
    if a.power_equal:
        return power_equal(*a.power_equal)
    if a.fill_lp:
        return fill_lp(a.fill_lp, a.chart)
    policies = tuple(x.strip() for x in a.policies.split(",") if x.strip())
    unknown = sorted(set(policies) - set(GRID_POLICIES))
    if unknown:
        ap.error(f"unknown policies {', '.join(unknown)} (known: {', '.join(GRID_POLICIES)})")
    known = known_optima(a.lp_from.split(",")) if a.lp_from else {}
    ks = known_power(a.power_k_from.split(",")) if a.power_k_from else {}
    tasks = [(c, int(n), float(p), a.seeds, policies, known.get((int(n), float(p))), ks.get((c, int(n), float(p))))
             for c in a.cases.split(",") for n in a.agents.split(",") for p in a.p.split(",")]
    tasks.sort(key=lambda t: -t[1] / t[2])  # the longest first
    t0 = time.perf_counter()
    points = []
    out = open(a.out, "w") if a.out else None
    from concurrent.futures import as_completed
    with ProcessPoolExecutor(max_workers=a.workers) as ex:
        for fut in as_completed([ex.submit(_point, t) for t in tasks]):
            pt = fut.result()
            points.append(pt)
            line = json.dumps(pt)
            print(line, flush=True)
            if out:
                out.write(line + "\n")
                out.flush()
    summ = summary(points, a.seeds, time.perf_counter() - t0)
    if a.chart:
        chart(points, a.chart)
        summ["chart"] = a.chart
    line = json.dumps(summ)
    print(line, flush=True)
    if out:
        out.write(line + "\n")
        out.close()


if __name__ == "__main__":
    main()

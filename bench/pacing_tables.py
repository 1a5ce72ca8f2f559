"""Markdown tables of docs/pacing.md from pacing_bench.py results files.

    python bench/pacing_tables.py validation NEW.jsonl [PREVIOUS.jsonl]
    python bench/pacing_tables.py realistic NEW.jsonl [PREVIOUS.jsonl]

Validation: the predictive policy, the LP optimum at its own rate and at 3 % with the
gaps, and (with PREVIOUS) the previous run's occupancy, abandon rate and gap.
Realistic: the predictive policy against the tuned power ratio (when it ran), and the
previous run's figures of both. Prints the table, then one JSON line of figures.
"""

import json
import sys


def load(path):
    points, summary = {}, None
    with open(path) as fh:
        for line in fh:
            if not line.strip():
                continue
            d = json.loads(line)
            if d.get("summary"):
                summary = d
            elif isinstance(d.get("policies"), dict):
                points[(d["agents"], d["p"])] = d
    return points, summary


def pct(x):
    return f"{100 * x:.2f} %"


def predictive_cell(pr):
    return (f"**{pr['occupancy']:.3f}** / {pct(pr['abandon_rate'])} / {pct(pr['worst_seed_abandon_rate'])} / "
            f"{pr['seeds_within_cap']}/{pr['seeds']}")


def validation(new, old):
    out = ["| N | p | **predictive**: occ / mean abandon / worst seed / seeds ≤ 3 % | optimum at predictive's rate "
           "(gap) | optimum at 3 % (gap) | previous run: occ / abandon (gap at own rate) |",
           "|---|---|---|---|---|---|"]
    for key in sorted(new, key=lambda k: (k[1], k[0])):
        d = new[key]
        o = old.get(key)
        prev = "—"
        if o and "predictive" in o["policies"]:
            op = o["policies"]["predictive"]
            gap = f" ({o['gap_to_optimum_at_own_rate']:+.4f})" if "gap_to_optimum_at_own_rate" in o else ""
            prev = f"{op['occupancy']:.3f} / {pct(op['abandon_rate'])}{gap}"
        lp = (f"{d['optimum_at_predictive_rate']:.3f} ({d['gap_to_optimum_at_own_rate']:+.4f}) | "
              f"{d['optimum_at_3pct']:.3f} ({d['gap_to_3pct_optimum']:+.4f})" if "gap_to_optimum_at_own_rate" in d
              else "— | —")
        out.append(f"| {key[0]} | {key[1]:.2f} | {predictive_cell(d['policies']['predictive'])} | {lp} | {prev} |")
    return "\n".join(out)


def realistic(new, old):
    out = ["| N | p | **predictive**: occ / mean abandon / worst seed / seeds ≤ 3 % | best power k: occ / abandon / "
           "seeds ≤ 3 % | predictive − power | previous run: predictive · power |",
           "|---|---|---|---|---|---|"]
    for key in sorted(new, key=lambda k: (k[1], k[0])):
        pol = new[key]["policies"]
        pr, w = pol["predictive"], pol.get("power")
        o = old.get(key)
        prev = "—"
        if o and "predictive" in o["policies"]:
            op, ow = o["policies"]["predictive"], o["policies"].get("power")
            prev = f"{op['occupancy']:.3f} / {pct(op['abandon_rate'])}"
            if ow:
                prev += f" · k={ow['k']:g}: {ow['occupancy']:.3f} / {pct(ow['abandon_rate'])}"
        pw = (f"k={w['k']:g}: {w['occupancy']:.3f} / {pct(w['abandon_rate'])} / {w['seeds_within_cap']}/{w['seeds']}"
              if w else "—")
        diff = (f"{pr['occupancy'] - w['occupancy']:+.4f} (at {100 * (pr['abandon_rate'] - w['abandon_rate']):+.2f} "
                f"points)" if w else "—")
        out.append(f"| {key[0]} | {key[1]:.2f} | {predictive_cell(pr)} | {pw} | {diff} | {prev} |")
    return "\n".join(out)


def figures(new, old):
    pred = {k: d["policies"]["predictive"] for k, d in new.items()}
    out = {"points": len(new),
           "points_all_seeds_within_cap": sum(1 for p in pred.values() if p["seeds_within_cap"] == p["seeds"]),
           "worst_seed_abandon_rate": max(p["worst_seed_abandon_rate"] for p in pred.values())}
    gaps = {k: d["gap_to_optimum_at_own_rate"] for k, d in new.items() if "gap_to_optimum_at_own_rate" in d}
    if gaps:
        worst = max(gaps, key=gaps.get)
        out.update(points_within_001=sum(1 for g in gaps.values() if g <= 0.01), max_gap=gaps[worst],
                   max_gap_at=list(worst), mean_gap=sum(gaps.values()) / len(gaps))
    both = [k for k in new if k in old and "predictive" in old[k]["policies"]]
    if both:
        occ = {k: abs(pred[k]["occupancy"] - old[k]["policies"]["predictive"]["occupancy"]) for k in both}
        worst = max(occ, key=occ.get)
        out.update(max_occupancy_move=occ[worst], max_occupancy_move_at=list(worst),
                   max_abandon_move=max(abs(pred[k]["abandon_rate"] - old[k]["policies"]["predictive"]["abandon_rate"])
                                        for k in both))
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (2, 3) or argv[0] not in ("validation", "realistic"):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    new, _ = load(argv[1])
    old, _ = load(argv[2]) if len(argv) == 3 else ({}, None)
    print(validation(new, old) if argv[0] == "validation" else realistic(new, old))
    print(json.dumps(figures(new, old)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

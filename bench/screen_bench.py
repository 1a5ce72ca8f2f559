"""Screening benchmark: N synthetic leads through the whole rules chain on one core.

Raw phone strings in mixed formats -> normalise -> every rule (emergency, special,
lifeline, number type, national/company/campaign DNC, hours in every zone of the
number and the lead, state rules and holidays, frequency caps against a call
history) -> batch multi-line run detection. Prints progress to stderr and one
JSON line of figures at the end.

    python bench/screen_bench.py [--n 1000000] [--seed 1]
"""

import argparse
import datetime as dt
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rules.engine import CampaignRules, Context, DncLists, Lead, Registry, Screener, screen  # noqa: E402
from rules.numbers import normalise  # noqa: E402
from rules.ruleset import validate  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMATS = ("+1{a}{x}{l}", "({a}) {x}-{l}", "{a}-{x}-{l}", "1{a}{x}{l}", "{a}.{x}.{l}", "{a}{x}{l}")
STATES = ("FL", "TX", "PA", "NY", "CA", "RI", None, None, None, None)


def make_exchanges(rng, n):
    """Valid US exchanges (NPA-NXX) with a known zone, as a list of (npa, nxx)."""
    out = []
    while len(out) < n:
        npa, nxx = rng.randint(201, 989), rng.randint(200, 999)
        f = normalise(f"+1{npa}{nxx}0000")
        if f.e164 and f.region == "US" and f.zones:
            out.append((npa, nxx))
    return out


def make_leads(n, seed):
    rng = random.Random(seed)
    exchanges = make_exchanges(rng, 3000)
    leads = []
    for i in range(n):
        r = rng.random()
        if r < 0.002:
            phone = rng.choice(["911", "1-411", "988", "+1 800 222 1222", "555-CALL", "12345"])
        elif r < 0.01:
            phone = f"1-8{rng.choice('0845')}{rng.choice('0845')}-{rng.randint(200, 999)}-{rng.randint(0, 9999):04d}"
        else:
            a, x = rng.choice(exchanges)
            phone = rng.choice(FORMATS).format(a=a, x=x, l="%04d" % rng.randint(0, 9999))
        leads.append(Lead(phone, state=rng.choice(STATES), region="US"))
    return leads, exchanges


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--registry", type=int, default=2_000_000, help="numbers on the synthetic national registry")
    args = ap.parse_args()
    from rules.registry import NumberSet
    import numpy as np

    rulesets = {j: validate(json.load(open(os.path.join(ROOT, "rules", "defaults", f"{j}.json"))), version=1)
                for j in ("US", "GB", "TR")}
    print(f"making {args.n} leads...", file=sys.stderr)
    leads, exchanges = make_leads(args.n, args.seed)
    rng = np.random.default_rng(args.seed)
    ex = np.array([1_000_0000_000 + a * 10_000_000 + x * 10_000 for a, x in exchanges], dtype=np.uint64)
    reg_vals = ex[rng.integers(0, len(ex), args.registry)] + rng.integers(0, 10_000, args.registry).astype(np.uint64)
    registry = NumberSet.from_array(reg_vals)
    company = frozenset(int(v) for v in reg_vals[:10_000] + np.uint64(1))
    at = dt.datetime(2026, 11, 24, 18, 0, tzinfo=dt.timezone.utc)  # Tuesday 13:00 New York
    history = {int(v): [(at - dt.timedelta(hours=h), "no-answer") for h in (2, 5, 9)] for v in reg_vals[:50_000] + np.uint64(2)}
    ctx = Context(rulesets=rulesets, dnc=DncLists(
        registries={"US": Registry("US", dt.date(2026, 11, 20), registry)}, company=company,
        company_prefixes=("1900",)), lifeline={"+18002221222": ("poison_control", "Poison Help")},
        campaign=CampaignRules("bench", caller_id="+12125559999", own_numbers=frozenset({"+12125559999"})),
        history=history)

    print("screening (raw strings, whole chain)...", file=sys.stderr)
    t0 = time.perf_counter()
    verdicts = screen(leads, at, ctx)  # the batch form: evaluate every lead, then the multi-line pass
    t2 = time.perf_counter()
    raw_rate = args.n / (t2 - t0)
    sc = Screener(ctx, at)

    # the dial-time path: facts were computed at import and stored with the lead
    print("screening (facts prepared at import)...", file=sys.stderr)
    prepared = [Lead(ld.phone, state=ld.state, region="US", facts=sc.facts(ld)) for ld in leads]
    t3 = time.perf_counter()
    v2 = screen(prepared, at, ctx)
    t4 = time.perf_counter()
    assert [v.reasons for v in v2] == [v.reasons for v in verdicts]

    from collections import Counter
    cats = Counter(c for v in verdicts for c in set(v.categories))
    out = {
        "bench": "screen", "n": args.n, "registry_numbers": len(registry),
        "leads_per_s": round(raw_rate), "seconds": round(t2 - t0, 3),
        "prepared_leads_per_s": round(args.n / (t4 - t3)),
        "allowed": sum(v.allowed for v in verdicts), "blocked_by_category": dict(cats.most_common()),
        "flagged_multiline": sum(1 for v in verdicts if v.flags),
        "goal_leads_per_s": 200_000, "meets_goal_from_raw_strings": raw_rate >= 200_000,
        "meets_goal_with_stored_facts": args.n / (t4 - t3) >= 200_000,
        "python": sys.version.split()[0],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()

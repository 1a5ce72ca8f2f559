"""List import benchmark: a generated N-row CSV imported end to end (read, map,
normalise, dedupe, per-row errors, chunked commits, groups, preview) into a fresh
SQLite file. Prints one JSON line.

    python bench/import_bench.py [--n 1000000] [--workdir DIR]
"""

import argparse
import datetime as dt
import json
import os
import random
import sys
import time
from common import workdir  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STATES = ["NY", "FL", "TX", "CA", "PA", "RI", "IL", "OH", "", ""]


def make_csv(path, n, seed=1):
    from rules.numbers import normalise
    rng = random.Random(seed)
    exchanges = []
    while len(exchanges) < 4000:
        a, x = rng.randint(201, 989), rng.randint(200, 999)
        f = normalise(f"+1{a}{x}0000")
        if f.e164 and f.zones and f.region == "US" and f.kind == "fixed_line_or_mobile":
            exchanges.append((a, x))
    fmts = ["({a}) {x}-{l}", "{a}-{x}-{l}", "+1{a}{x}{l}", "{a}{x}{l}"]
    with open(path, "w") as fh:
        fh.write("first_name,last_name,phone,state,company,zip,notes\n")
        for i in range(n):
            a, x = rng.choice(exchanges)
            phone = rng.choice(fmts).format(a=a, x=x, l="%04d" % rng.randint(0, 9999))
            if i % 500 == 0:
                phone = "555-CALL"  # a rejected row now and then
            fh.write(f"First{i},Last{i},{phone},{rng.choice(STATES)},,{10000 + i % 90000},note {i}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--workdir", default=workdir("import_bench"))
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    csv_path = os.path.join(args.workdir, f"leads-{args.n}.csv")
    if not os.path.exists(csv_path):
        print(f"writing {csv_path}...", file=sys.stderr)
        make_csv(csv_path, args.n)
    db = os.path.join(args.workdir, f"import-{args.n}.db")
    for s in ("", "-wal", "-shm"):
        if os.path.exists(db + s):
            os.remove(db + s)
    from campaigns.leads import import_list
    from campaigns.store import add_number, create_account, create_campaign
    from core.store import Store
    from rules import service
    now = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.timezone.utc)
    store = Store(db)
    service.ensure_defaults(store, now)
    create_account(store, "bench", now, "bench")
    add_number(store, "bench", "+12125559999", now, "bench")
    create_campaign(store, "bench", "bench", now, "bench", caller_id="+12125559999")
    reg = os.path.join(args.workdir, "registry.txt")
    with open(reg, "w") as fh:
        fh.write("212,5550199\n")
    service.import_dnc(store, reg, now, "bench", source="national", as_of="2026-11-20")
    print("importing...", file=sys.stderr)
    marks = {}

    def progress(rows, fraction):
        marks.setdefault("first_chunk_s", time.perf_counter() - t0)

    t0 = time.perf_counter()
    out = import_list(store, csv_path, "bench", now, "bench", progress=progress)
    total = time.perf_counter() - t0
    p = out["preview"]
    print(json.dumps({
        "bench": "import", "rows": out["rows"], "imported": out["imported"], "rejected": out["rejected"],
        "duplicates": out["duplicates"], "seconds": round(total, 2), "rows_per_s": round(out["rows"] / total),
        "file_mb": round(os.path.getsize(csv_path) / 1e6, 1), "db_mb": round(os.path.getsize(db) / 1e6, 1),
        "preview": {k: p[k] for k in ("dialable_now", "later_today", "later", "never", "blocked_campaign_wide",
                                       "multiline_groups", "by_reason")},
        "goal_seconds": 30, "meets_goal": total <= 30,
    }))


if __name__ == "__main__":
    main()

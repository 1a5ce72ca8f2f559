#!/usr/bin/env python3
"""Rating benchmark: N synthetic CDRs rated into the ledger against a deck of P prefixes.

    python bench/rating_bench.py [--cdrs 1000000] [--prefixes 100000] [--seed 7]
                                 [--order realistic|random] [--workdir DIR] [--chunk 50000]

Builds (once, cached in --workdir by cdrs/prefixes/seed/order) a database holding
one account and N answered CDRs in March 2026 (destinations drawn half from the
deck's prefixes plus random digits, half from random numbers, so look-ups end at
every prefix length; call ids UUIDv7 as the dialer makes them, rows written in the
order calls end, or with --order random random ids in random order), and a deck CSV of P distinct prefixes (1 in 10 with a second
row from a later effective date). Each run works on a fresh copy of that database
and times:

* the deck import (``billing.decks.import_deck``: parse, check, insert, one
  transaction) and loading its prefix index (``PrefixIndex.load``);
* ``billing.ledger.bill_run`` of the month: every CDR read, checked, rated and
  inserted into the ledger (the figure: CDRs per second, goal 100 000);
* the same run again (everything already rated: nothing to do);
* the checks and rating alone (``billing.calls.rate_batch`` on the CDRs in
  memory), to show how the time divides between Python and the store.

It checks the run charged every CDR once and that the ledger's sum equals the sum
of the rated amounts. Progress goes to stderr; one JSON line to stdout at the end.
"""

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from common import workdir  # noqa: E402

GEN_VERSION = 4  # bump when the generator changes: invalidates cached databases
GOAL_CDRS_PER_S = 100_000
NOW = dt.datetime(2026, 4, 2, 12, 0, tzinfo=dt.timezone.utc)
MONTH_START = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
T0 = time.perf_counter()


def log(msg):
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def gen_deck(path, n, rng):
    """P distinct prefixes: the 9 one-digit ones (so every number has a rate) and
    random ones of 2 to 8 digits; 1 in 10 with a second row from 15 March."""
    prefixes = {str(d) for d in range(1, 10)}
    while len(prefixes) < n:
        length = rng.choice((2, 3, 4, 4, 5, 5, 6, 6, 7, 8))
        prefixes.add(str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(length - 1)))
    prefixes = sorted(prefixes)
    with open(path, "w", encoding="utf-8") as f:
        f.write("prefix,destination,rate,initial,increment,connect_fee,effective_from,effective_to\n")
        for p in prefixes:
            rate = f"0.{rng.randint(1, 99999):05d}"
            scheme = rng.choice(("1,1", "6,6", "30,6", "60,60"))
            if rng.random() < 0.1:
                f.write(f"{p},dest {p},{rate},{scheme},,2026-01-01,\n")
                f.write(f"{p},dest {p},0.{rng.randint(1, 99999):05d},{scheme},0.001,2026-03-15,\n")
            else:
                f.write(f"{p},dest {p},{rate},{scheme},,,\n")
    return prefixes


def build(db, deck_csv, n_cdrs, n_prefixes, seed, order):
    from campaigns.store import create_account
    from core.store import Store
    from core.timeutil import to_iso, to_ms
    from dialer.ids import uuid7
    rng = random.Random(seed)
    prefixes = gen_deck(deck_csv, n_prefixes, rng)
    log(f"deck written: {n_prefixes} prefixes")
    store = Store(db)
    acc = create_account(store, "bench", NOW, "bench")
    cols = ("call_id, account_id, destination, started_at, answered_at, ended_at, duration_ms, ring_ms, "
            "billable_ms, billsec, disposition, abandoned, opted_out, sip_code, sip_reason, hangup_cause, hangup_by, "
            "created_at")
    sql = f"INSERT INTO cdrs ({cols}) VALUES ({', '.join('?' * 18)})"
    month_ms = 31 * 24 * 3600 * 1000
    calls = []
    for i in range(n_cdrs):
        if i % 2:
            p = prefixes[rng.randrange(len(prefixes))]
            digits = p + "".join(str(rng.randint(0, 9)) for _ in range(max(0, 11 - len(p))))
        else:
            digits = str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(10))
        start = MONTH_START + dt.timedelta(milliseconds=rng.randrange(month_ms - 4 * 3600 * 1000))
        ring = rng.randint(2000, 20000)
        talk = rng.randint(1, 600_000)
        calls.append((start, ring, talk, "+" + digits))
    # the dialer's call ids are UUIDv7 made at the call's start (time-ordered) and each CDR
    # is written when its call ends; --order random gives random ids written in random order
    calls.sort(key=lambda c: c[0])
    ids = [uuid7(to_ms(c[0])) for c in calls] if order == "realistic" else \
        [f"call-{rng.getrandbits(64):016x}" for _ in calls]
    rows = []
    for call_id, (start, ring, talk, dest) in zip(ids, calls):
        answered = start + dt.timedelta(milliseconds=ring)
        ended = answered + dt.timedelta(milliseconds=talk)
        rows.append((call_id, acc["id"], dest, to_iso(start), to_iso(answered), to_iso(ended), ring + talk, ring,
                     talk, -(-talk // 1000), "answered", 0, 0, 200, "OK", "NORMAL_CLEARING", "callee", to_iso(ended)))
    if order == "realistic":
        rows.sort(key=lambda r: r[5])
    else:
        rng.shuffle(rows)
    for k in range(0, len(rows), 100_000):
        with store.transaction():
            store.conn.executemany(sql, rows[k:k + 100_000])
        log(f"  {min(k + 100_000, len(rows))} CDRs written")
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cdrs", type=int, default=1_000_000)
    ap.add_argument("--prefixes", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--chunk", type=int, default=50_000, help="CDRs per transaction in the bill run")
    ap.add_argument("--order", choices=("realistic", "random"), default="realistic",
                    help="realistic: UUIDv7 call ids (as the dialer makes them), CDRs written in end order; "
                         "random: random ids written in random order (the worst case for the indexes)")
    ap.add_argument("--workdir", default=workdir("dialer-rating-bench"))
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    tag = f"v{GEN_VERSION}-{args.cdrs}-{args.prefixes}-{args.seed}-{args.order}"
    base = os.path.join(args.workdir, f"base-{tag}.db")
    deck_csv = os.path.join(args.workdir, f"deck-{tag}.csv")
    if not (os.path.exists(base) and os.path.exists(deck_csv)):
        log(f"building {base} (cached for later runs)")
        for s in ("", "-wal", "-shm"):
            if os.path.exists(base + s):
                os.remove(base + s)
        t = time.perf_counter()
        build(base + ".tmp", deck_csv, args.cdrs, args.prefixes, args.seed, args.order)
        os.replace(base + ".tmp", base)
        log(f"built in {time.perf_counter() - t:.1f} s")
    db = os.path.join(args.workdir, "run.db")
    for s in ("", "-wal", "-shm"):
        if os.path.exists(db + s):
            os.remove(db + s)
    shutil.copyfile(base, db)

    from billing import ledger
    from billing.calls import rate_batch
    from billing.decks import PrefixIndex, deck_in_force, import_deck
    from billing.plans import plan_row, service_tariff
    from core.store import Store
    store = Store(db)
    acc = store.query_one("SELECT id FROM accounts WHERE name = 'bench'")

    log("importing the deck")
    t = time.perf_counter()
    deck = import_deck(store, deck_csv, "bench", NOW, "bench")
    deck_import_s = time.perf_counter() - t
    t = time.perf_counter()
    index = PrefixIndex.load(store, deck_in_force(store, acc["id"]))
    index_load_s = time.perf_counter() - t
    log(f"deck: {deck['rows']} rows imported in {deck_import_s:.2f} s, index loaded in {index_load_s:.2f} s")

    log("bill run")
    t = time.perf_counter()
    out = ledger.bill_run(store, "bench", "2026-03", NOW, "bench", chunk=args.chunk)
    run_s = time.perf_counter() - t
    log(f"bill run: {out['charged']} charged in {run_s:.2f} s")
    t = time.perf_counter()
    again = ledger.bill_run(store, "bench", "2026-03", NOW, "bench", chunk=args.chunk)
    rerun_s = time.perf_counter() - t
    log(f"second run: {again['charged']} charged in {rerun_s:.2f} s")

    ledger_sum = store.execute("SELECT SUM(amount_micros), COUNT(*) FROM ledger_entries WHERE account_id = ?",
                               (acc["id"],)).fetchone()
    records = store.execute("SELECT call_id, destination, started_at, answered_at, ended_at, duration_ms, billable_ms "
                            "FROM cdrs WHERE account_id = ?", (acc["id"],)).fetchall()
    service = service_tariff(plan_row(store, acc["id"]))
    t = time.perf_counter()
    rated, free, refused = rate_batch(records, service, index)
    rate_only_s = time.perf_counter() - t
    store.close()
    ok = (out["charged"] == args.cdrs and again["charged"] == 0 and ledger_sum[1] == args.cdrs
          and -ledger_sum[0] == sum(r[4] + r[6] for r in rated) and not refused and not free)
    print(json.dumps({
        "bench": "rating", "cdrs": args.cdrs, "prefixes": args.prefixes, "deck_rows": deck["rows"],
        "deck_import_s": round(deck_import_s, 2), "deck_rows_per_s": round(deck["rows"] / deck_import_s),
        "index_load_s": round(index_load_s, 2),
        "bill_run_s": round(run_s, 2), "cdrs_per_s": round(out["charged"] / run_s),
        "charged": out["charged"], "refused": out["refused"], "total": str(out["total"]),
        "rerun_s": round(rerun_s, 2), "rate_only_s": round(rate_only_s, 2),
        "rate_only_cdrs_per_s": round(len(records) / rate_only_s), "chunk": args.chunk, "order": args.order,
        "db_mb": round(os.path.getsize(db) / 1e6, 1), "checks_ok": ok,
        "goal_cdrs_per_s": GOAL_CDRS_PER_S, "meets_goal": out["charged"] / run_s >= GOAL_CDRS_PER_S,
        "python": platform.python_version(), "cpus": os.cpu_count(),
    }))
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()

"""Hopper benchmark: batches of 100 leads claimed from a campaign of N leads (built
once by importing a generated list; cached in --workdir), each lead re-checked by the
rules engine at the instant of the claim and reserved. Prints one JSON line.

    python bench/hopper_bench.py [--n 1000000] [--batches 300] [--batch 100]
"""

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import time
import wave
from common import workdir  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def build(db, csv_path, now, workdir):
    from campaigns.leads import import_list
    from campaigns.store import add_number, change_state, create_account, create_campaign
    from core.store import Store
    from rules import service
    store = Store(db)
    service.ensure_defaults(store, now)
    reg = os.path.join(workdir, "registry.txt")
    with open(reg, "w") as fh:
        fh.write("212,5550199\n")
    service.import_dnc(store, reg, now, "bench", source="national", as_of="2026-11-20")
    create_account(store, "bench", now, "bench")
    add_number(store, "bench", "+12125559999", now, "bench")
    g = os.path.join(workdir, "greeting.wav")
    with wave.open(g, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000), w.writeframes(b"\0" * 16000)
    create_campaign(store, "bench", "bench", now, "bench", caller_id="+12125559999", greeting=g)
    import_list(store, csv_path, "bench", now, "bench")
    change_state(store, "bench", "start", now, "bench")
    store.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--workdir", default=workdir("hopper_bench"))
    args = ap.parse_args()
    import import_bench
    from campaigns.hopper import Hopper
    from core.store import Store
    os.makedirs(args.workdir, exist_ok=True)
    now = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.timezone.utc)  # Tuesday noon Eastern
    csv_path = os.path.join(args.workdir, f"leads-{args.n}.csv")
    if not os.path.exists(csv_path):
        print(f"writing {csv_path}...", file=sys.stderr)
        import_bench.make_csv(csv_path, args.n)
    pristine = os.path.join(args.workdir, f"hopper-{args.n}.db")
    if not os.path.exists(pristine):
        print("building the campaign (import)...", file=sys.stderr)
        build(pristine + ".tmp", csv_path, now, args.workdir)
        os.replace(pristine + ".tmp", pristine)  # its files dir is named after the stem: hopper-N.db.files
    db = os.path.join(args.workdir, "run.db")
    shutil.copyfile(pristine, db)
    src_files = os.path.join(args.workdir, f"hopper-{args.n}.db.files")
    run_files = os.path.join(args.workdir, "run.files")
    shutil.rmtree(run_files, ignore_errors=True)
    shutil.copytree(src_files, run_files)
    store = Store(db)
    h = Hopper(store, "bench")
    h.next_leads(1, now, "warmup")  # loads the rules context once, as a running dialer would
    times, got = [], 0
    t_all = time.perf_counter()
    for i in range(args.batches):
        t = time.perf_counter()
        batch = h.next_leads(args.batch, now + dt.timedelta(seconds=i), "bench")
        times.append((time.perf_counter() - t) * 1000)
        got += len(batch)
        # (untimed) the dialer calls them and they end: the hopper's live set stays at its real size
        with store.transaction():
            store.conn.executemany("UPDATE leads SET status = 'done' WHERE id = ?", [(r["id"],) for r, _ in batch])
    total = time.perf_counter() - t_all
    times.sort()
    n_leads = store.query_one("SELECT COUNT(*) AS n FROM leads")["n"]
    print(json.dumps({
        "bench": "hopper", "campaign_leads": n_leads, "batch": args.batch, "batches": args.batches, "claimed": got,
        "ms_per_batch_p50": round(statistics.median(times), 2),
        "ms_per_batch_p99": round(times[int(0.99 * (len(times) - 1))], 2), "ms_per_batch_max": round(times[-1], 2),
        "leads_per_s": round(got / total), "goal_ms_per_batch": 5,
        "meets_goal": statistics.median(times) <= 5,
    }))


if __name__ == "__main__":
    main()

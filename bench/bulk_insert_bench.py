"""Bulk insert benchmark: why the store does not use sqlite-utils (core/store.py).

N lead-like rows into a fresh SQLite file (WAL, synchronous=NORMAL, one
transaction, a UNIQUE key, duplicates ignored), two ways: the store's portable
``executemany`` of ``INSERT ... ON CONFLICT DO NOTHING`` in chunks of 5000, and
sqlite-utils' ``Table.insert_all(..., ignore=True, batch_size=5000)`` of the same
rows as dicts. Best of ``--repeat`` runs each. Needs sqlite-utils installed (it is
no longer a dependency). Prints one JSON line:
{"rows": ..., "executemany_s": ..., "insert_all_s": ..., "ratio": ...}.

    python bench/bulk_insert_bench.py [--n 200000] [--repeat 3] [--workdir DIR]
"""

import argparse
import json
import os
import sqlite3
import time
from common import workdir  # noqa: E402

COLS = ("campaign_id", "phone", "first_name", "state", "status", "created_at")


def fresh(path):
    for s in ("", "-wal", "-shm"):
        if os.path.exists(path + s):
            os.remove(path + s)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE leads (id INTEGER PRIMARY KEY, campaign_id INTEGER, phone TEXT, first_name TEXT, "
                 "state TEXT, status TEXT, created_at TEXT, UNIQUE (campaign_id, phone, first_name))")
    return conn


def with_executemany(path, rows):
    conn = fresh(path)
    t = time.perf_counter()
    conn.execute("BEGIN")
    for k in range(0, len(rows), 5000):
        conn.executemany(f"INSERT INTO leads ({', '.join(COLS)}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                         rows[k:k + 5000])
    conn.execute("COMMIT")
    took = time.perf_counter() - t
    n = conn.execute("SELECT COUNT(*) FROM leads").fetchone()[0]
    conn.close()
    return took, n


def with_insert_all(path, rows):
    import sqlite_utils
    conn = fresh(path)
    db = sqlite_utils.Database(conn)
    t = time.perf_counter()
    conn.execute("BEGIN")
    db["leads"].insert_all((dict(zip(COLS, r)) for r in rows), batch_size=5000, ignore=True)
    conn.execute("COMMIT")
    took = time.perf_counter() - t
    n = conn.execute("SELECT COUNT(*) FROM leads").fetchone()[0]
    conn.close()
    return took, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", default=workdir("bulk_insert_bench"))
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    # every 100th row repeats the one before it: the duplicates are ignored both ways
    rows = [(1, f"+1212{(i - (i % 100 == 99)):07d}", f"First{i - (i % 100 == 99)}", "NY", "new",
             "2026-11-24T17:00:00Z") for i in range(args.n)]
    a = min(with_executemany(os.path.join(args.workdir, "a.db"), rows) for _ in range(args.repeat))
    b = min(with_insert_all(os.path.join(args.workdir, "b.db"), rows) for _ in range(args.repeat))
    if a[1] != b[1]:
        raise SystemExit(f"the two ways kept different row counts: {a[1]} and {b[1]}")
    print(json.dumps({"rows": args.n, "kept": a[1], "executemany_s": round(a[0], 3), "insert_all_s": round(b[0], 3),
                      "ratio": round(b[0] / a[0], 2)}))


if __name__ == "__main__":
    main()

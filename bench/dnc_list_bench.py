#!/usr/bin/env python3
"""Benchmark a big company DNC list (issue 11, item 10): import, snapshot, checks.

Usage:
    python bench/dnc_list_bench.py [--n 10000000] [--workdir DIR] [--seed S] [--keep]

Writes a list file of N unique US numbers (10-digit lines from the exchanges of 60
busy area codes that libphonenumber calls valid, plus 3 wildcards and 1 junk line in
100,000) into a temporary directory (or --workdir), then measures on a fresh database:

* the import (``dialer dnc import --source company``: parse, one transaction, and the
  list's snapshot written after the commit), with the peak RSS of this process;
* the snapshot rebuilt from the table alone (the file deleted, memory cleared);
* a first check in a fresh process (cold: the snapshot file is read) and a second one
  (warm), with that process's RSS; the same after one more opt-out (the snapshot is
  brought up to date from the change, not re-read);
* for comparison, what every check did before: read the whole list into a set
  (in a fresh process: time and RSS).

Progress goes to stderr; exactly one JSON line with all figures goes to stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

NOW = dt.datetime(2026, 11, 27, 18, 0, tzinfo=dt.timezone.utc)
AT = "2026-11-24T17:00:00+00:00"
T0 = time.perf_counter()
AREAS = (201, 202, 203, 205, 206, 207, 208, 210, 212, 213, 214, 215, 216, 217, 218, 219, 301, 302, 303, 304,
         305, 307, 308, 309, 310, 312, 313, 314, 315, 316, 317, 318, 319, 401, 402, 404, 405, 406, 407, 408,
         409, 410, 412, 413, 414, 415, 417, 419, 501, 502, 503, 504, 505, 507, 508, 509, 510, 512, 513, 515)


def log(msg):
    print(f"[{time.perf_counter() - T0:8.1f}s] {msg}", file=sys.stderr, flush=True)


def rss():
    """VmRSS and VmHWM (peak) of this process, bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0]) * 1024
    return out


def reset_peak():
    """Reset VmHWM to the current RSS (Linux >= 4.0), so a phase's own peak is measured."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def valid_exchanges():
    from rules.numbers import normalise
    out = []
    for npa in AREAS:
        for nxx in range(200, 1000):
            if normalise(f"+1{npa}{nxx}0100").e164 is not None:
                out.append(npa * 1000 + nxx)
    return np.array(out, dtype=np.int64)


def write_list(path, n, seed):
    ex = valid_exchanges()
    log(f"{ex.size} valid exchanges in {len(AREAS)} area codes ({ex.size * 10_000:,} numbers)")
    rng = np.random.default_rng(seed)
    have = np.empty(0, dtype=np.int64)
    while have.size < n:
        m = int((n - have.size) * 1.1) + 1000
        draw = ex[rng.integers(0, ex.size, m)] * 10_000 + rng.integers(0, 10_000, m)
        have = np.unique(np.concatenate([have, draw]))
    have = rng.permutation(have)[:n]
    with open(path, "w") as f:
        f.write("phone\n")
        for i in range(0, n, 1_000_000):
            chunk = have[i:i + 1_000_000]
            lines = "\n".join(map(str, chunk.tolist())) + "\n"
            if i == 0:
                lines += "212555*\n+1646*\n+44 20 7946*\n"
            f.write(lines)
            f.write(f"junk line {i}\n" * (len(chunk) // 100_000))
    return have


CHILD = r"""
import json, sys, time, datetime as dt
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
from core.store import Store
from rules import service
t_import = time.perf_counter() - t0
s = Store(sys.argv[2])
mode, numbers, at = sys.argv[3], json.loads(sys.argv[4]), dt.datetime.fromisoformat(sys.argv[5])
now = dt.datetime(2026, 11, 27, 18, 0, tzinfo=dt.timezone.utc)

def status():
    out = {}
    for line in open("/proc/self/status"):
        if line.startswith(("VmRSS:", "VmHWM:")):
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0]) * 1024
    return out

base = status()
res = {"python_import_s": round(t_import, 3), "rss_before": base["VmRSS"]}
if mode == "check":
    times, verdicts = [], []
    for i in range(3):
        t = time.perf_counter()
        vs = service.check_numbers(s, numbers, now, at=at)
        times.append(time.perf_counter() - t)
        verdicts = [[r.rule for r in v.reasons if r.category == "dnc"] for v in vs]
    res.update(cold_check_s=round(times[0], 4), warm_check_s=round(min(times[1:]), 5), verdicts=verdicts)
    t = time.perf_counter()
    service.add_dnc(s, ["+1 415 555 0123"], now, "bench", reason="one more opt-out")
    res["add_one_s"] = round(time.perf_counter() - t, 4)
    t = time.perf_counter()
    v = service.check_numbers(s, ["+1 415 555 0123"], now, at=at)[0]
    res["check_after_opt_out_s"] = round(time.perf_counter() - t, 4)
    res["opt_out_seen"] = "DNC-COMPANY" in [r.rule for r in v.reasons]
    t = time.perf_counter()
    service.remove_dnc(s, ["+1 415 555 0123"], now, "bench", reason="bench cleanup")
    v = service.check_numbers(s, ["+1 415 555 0123"], now, at=at)[0]
    res["remove_then_check_s"] = round(time.perf_counter() - t, 4)
    res["removal_seen"] = "DNC-COMPANY" not in [r.rule for r in v.reasons]
else:  # what load_dnc did for every check before the snapshots: the whole list into sets
    t = time.perf_counter()
    company, prefixes = set(), []
    for scope, pattern, is_prefix in s.execute(
            "SELECT scope, pattern, is_prefix FROM dnc_entries WHERE scope IN ('account:1')"):
        (prefixes.append(pattern) if is_prefix else company.add(int(pattern)))
    company = frozenset(company)
    res.update(old_load_s=round(time.perf_counter() - t, 3), old_numbers=len(company))
st = status()
res.update(rss_after=st["VmRSS"], rss_peak=st["VmHWM"], rss_delta=st["VmRSS"] - base["VmRSS"])
print(json.dumps(res))
"""


def child(db, mode, numbers):
    p = subprocess.run([sys.executable, "-c", CHILD, ROOT, str(db), mode, json.dumps(numbers), AT],
                       capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--workdir")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv)
    work = args.workdir or tempfile.mkdtemp(prefix="dnc_list_bench-")
    os.makedirs(work, exist_ok=True)
    res = {"bench": "dnc_list", "n": args.n, "python": platform.python_version(), "workdir_kept": args.keep}
    try:
        from campaigns.store import create_account
        from core.store import Store
        from rules import service

        path = os.path.join(work, "optouts.txt")
        t = time.perf_counter()
        numbers = write_list(path, args.n, args.seed)[:5].copy()  # the probes; the rest is freed
        res["file_bytes"] = os.path.getsize(path)
        log(f"list file written: {res['file_bytes']:,} bytes in {time.perf_counter() - t:.1f} s")
        db = os.path.join(work, "bench.db")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.unlink(db + suffix)
        shutil.rmtree(os.path.join(work, "bench.files"), ignore_errors=True)
        store = Store(db)
        service.ensure_defaults(store, NOW)
        create_account(store, "acme", NOW, "bench")
        res["peak_reset"] = reset_peak()
        base = rss()
        t = time.perf_counter()
        out = service.import_dnc(store, path, NOW, "bench", source="company")
        res["import_s"] = round(time.perf_counter() - t, 1)
        res["import"] = {k: out[k] for k in ("lines", "numbers", "added", "junk", "wildcards_total", "may_block")}
        after = rss()
        res["import_rss_peak_over_start"] = after["VmHWM"] - base["VmRSS"]
        res["import_rss_delta"] = after["VmRSS"] - base["VmRSS"]
        log(f"imported in {res['import_s']} s: {res['import']}")
        snap = list(store.files_dir.glob("dnclist-*"))
        res["snapshot_bytes"] = snap[0].stat().st_size if snap else None
        res["db_bytes"] = os.path.getsize(db)

        for p in snap:  # the snapshot alone, rebuilt from the table
            p.unlink()
        service._list_cache.clear()
        reset_peak()
        base = rss()
        t = time.perf_counter()
        st = service._list_state(store, "account:1")
        res["snapshot_build_s"] = round(time.perf_counter() - t, 2)
        res["snapshot_build_rss_peak_over_start"] = rss()["VmHWM"] - base["VmRSS"]
        res["snapshot_numbers"] = len(st.numbers)
        res["snapshot_memory_bytes"] = st.numbers.memory_bytes()
        log(f"snapshot rebuilt from the table in {res['snapshot_build_s']} s")
        store.close()

        probe = ["+1" + str(v) for v in numbers[:5].tolist()] + ["+1 212 555 0199", "+1 646 555 0100",
                                                                   "+1 989 555 0100"]
        res["check"] = child(db, "check", probe)
        log(f"fresh process: cold check {res['check']['cold_check_s']} s, warm {res['check']['warm_check_s']} s")
        res["before_fix"] = child(db, "old", probe)
        log(f"before the fix every check read the list: {res['before_fix']['old_load_s']} s")
        ok = all("DNC-COMPANY" in v or "DNC-COMPANY-PREFIX" in v for v in res["check"]["verdicts"][:7]) and \
            not any(r.startswith("DNC-COMPANY") for r in res["check"]["verdicts"][7])
        res["verdicts_ok"] = bool(ok and res["check"]["opt_out_seen"] and res["check"]["removal_seen"])
        del res["check"]["verdicts"]
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(res), flush=True)
    return 0 if res.get("verdicts_ok") else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Benchmark the national DNC store (rules/registry.py) against SQLite.

Usage:
    python bench/dnc_bench.py [--n 250000000] [--lookups 1000000]
                              [--sqlite-n N] [--workdir DIR] [--seed S]
                              [--batch 500] [--skip-sqlite]
    python bench/dnc_bench.py --parse-lines M [--workdir DIR] [--seed S]

The first form generates N unique synthetic US numbers (NPA 201-989 with
first digit 2-9, NXX 200-999, line 0000-9999; seeded numpy RNG), builds a
NumberSet, and measures build time, memory (structure size and process RSS
delta), save/load and lookup rates; then it measures the same lookups on an
indexed SQLite table holding the same numbers (cached in --workdir, rebuilt
only when N, seed or the generator change).

The second form writes (and caches) a file of M FTC-format lines
(``212,5550100``, with a header line and 1 junk line in 10,000) and times
parse_registry_file on it.

Progress goes to stderr; exactly one JSON line with all figures goes to
stdout at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sqlite3
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from rules.registry import NumberSet, parse_registry_file  # noqa: E402
from common import workdir  # noqa: E402

GIB = 1 << 30
GEN_VERSION = 1  # bump when gen_numbers changes: invalidates cached files
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:8.1f}s] {msg}", file=sys.stderr, flush=True)


def proc_status() -> dict:
    """VmRSS / VmHWM of this process in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, val = line.split(":", 1)
                out[key] = int(val.split()[0]) * 1024
    return out


# ---------------------------------------------------------------------------
# synthetic data
# ---------------------------------------------------------------------------

_CHUNK = 1 << 24


def _draw(rng: np.random.Generator, m: int) -> np.ndarray:
    """m random NANP numbers as E.164 ints (1NPANXXXXXX), duplicates possible."""
    npa = rng.integers(201, 990, m, dtype=np.uint64)  # first digit 2-9
    v = npa * np.uint64(10_000_000)
    v += rng.integers(200, 1000, m, dtype=np.uint64) * np.uint64(10_000)
    v += rng.integers(0, 10_000, m, dtype=np.uint64)
    v += np.uint64(10_000_000_000)
    return v


def _sort_unique_inplace(a: np.ndarray) -> np.ndarray:
    # np.unique is pathologically slow on big uint64 arrays in numpy 2.4.
    a.sort()
    if a.size <= 1:
        return a
    keep = np.empty(a.size, dtype=bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def gen_numbers(n: int, seed: int) -> np.ndarray:
    """Exactly n unique synthetic US numbers, sorted, deterministic in seed."""
    rng = np.random.default_rng([seed, GEN_VERSION])
    have = np.empty(0, dtype=np.uint64)
    while have.size < n:
        need = n - have.size
        m = int(need * 1.03) + 1024  # ~2% of draws collide at 250M
        buf = np.empty(have.size + m, dtype=np.uint64)
        buf[:have.size] = have
        del have
        pos = buf.size - m
        for i in range(0, m, _CHUNK):
            k = min(_CHUNK, m - i)
            buf[pos + i:pos + i + k] = _draw(rng, k)
        have = _sort_unique_inplace(buf)
        del buf
    if have.size > n:
        drop = rng.choice(have.size, have.size - n, replace=False)
        keep = np.ones(have.size, dtype=bool)
        keep[drop] = False
        have = have[keep]
    return have


def make_queries(numbers: np.ndarray, count: int, seed: int) -> np.ndarray:
    """count lookups, half hits (sampled from numbers), half misses, shuffled."""
    rng = np.random.default_rng([seed, GEN_VERSION, 1])
    n_hit = count // 2
    hits = numbers[rng.integers(0, numbers.size, n_hit)]
    misses = np.empty(0, dtype=np.uint64)
    while misses.size < count - n_hit:
        cand = _draw(rng, (count - n_hit) * 2)
        idx = np.searchsorted(numbers, cand)
        idx[idx == numbers.size] = 0
        cand = cand[numbers[idx] != cand]
        misses = np.concatenate([misses, cand])
    q = np.concatenate([hits, misses[:count - n_hit]])
    rng.shuffle(q)
    return q


# ---------------------------------------------------------------------------
# SQLite baseline
# ---------------------------------------------------------------------------

SQLITE_LAYOUTS = {
    # The number is the rowid: one table B-tree keyed by integer, no index.
    "rowid": "CREATE TABLE dnc(number INTEGER PRIMARY KEY)",
    # Clustered index B-tree keyed by the number.
    "without_rowid": "CREATE TABLE dnc(number INTEGER PRIMARY KEY) WITHOUT ROWID",
}


def sqlite_path(workdir: str, n: int, seed: int, layout: str) -> str:
    suffix = "" if layout == "rowid" else f"_{layout}"
    return os.path.join(workdir, f"dnc_sqlite_n{n}_s{seed}_g{GEN_VERSION}{suffix}.db")


def sqlite_is_valid(path: str, n: int, seed: int) -> bool:
    if not os.path.exists(path):
        return False
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        finally:
            con.close()
    except sqlite3.Error:
        return False
    return (meta.get("n") == str(n) and meta.get("seed") == str(seed)
            and meta.get("gen_version") == str(GEN_VERSION)
            and meta.get("complete") == "1")


def build_sqlite(path: str, numbers: np.ndarray, seed: int, layout: str) -> float:
    tmp = path + ".tmp"
    for p in (tmp, tmp + "-journal"):
        if os.path.exists(p):
            os.unlink(p)
    t = time.perf_counter()
    con = sqlite3.connect(tmp, isolation_level=None)
    # Build-only settings; the lookup connection uses the defaults.
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-262144")  # 256 MiB while building
    con.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)")
    con.execute(SQLITE_LAYOUTS[layout])
    step = 5_000_000
    n = int(numbers.size)
    for i in range(0, n, step):
        con.execute("BEGIN")
        con.executemany("INSERT INTO dnc(number) VALUES (?)",
                        zip(numbers[i:i + step].tolist()))
        con.execute("COMMIT")
        log(f"sqlite build: {min(i + step, n):,}/{n:,} rows")
    con.execute("BEGIN")
    con.executemany("INSERT INTO meta VALUES (?, ?)", [
        ("n", str(n)), ("seed", str(seed)), ("gen_version", str(GEN_VERSION)),
        ("complete", "1")])
    con.execute("COMMIT")
    con.close()
    os.replace(tmp, path)
    return time.perf_counter() - t


def prewarm_file(path: str) -> None:
    """Read the file once so SQLite is measured with a warm OS page cache
    (the bitmap is in RAM, so this is the fair comparison)."""
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass


def sqlite_lookups(path: str, queries: np.ndarray, batch: int,
                   pragmas: tuple = ()) -> dict:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True,
                          check_same_thread=False, cached_statements=256)
    for p in pragmas:
        con.execute(p)
    cache_size = con.execute("PRAGMA cache_size").fetchone()[0]
    mmap_size = con.execute("PRAGMA mmap_size").fetchone()[0]
    ql = queries.tolist()
    single_sql = "SELECT 1 FROM dnc WHERE number=?"
    # One cursor reused for every query; the sqlite3 module keeps the
    # prepared statement in its statement cache, so each execute() only
    # rebinds and steps it.
    cur = con.cursor()
    execute = cur.execute
    for x in ql[:10_000]:  # warm-up
        execute(single_sql, (x,)).fetchone()
    t = time.perf_counter()
    hits_single = 0
    for x in ql:
        if execute(single_sql, (x,)).fetchone() is not None:
            hits_single += 1
    dt_single = time.perf_counter() - t

    in_sql = "SELECT number FROM dnc WHERE number IN (%s)" % ",".join("?" * batch)
    def run_batch(b):
        if len(b) == batch:
            found = {r[0] for r in execute(in_sql, b)}
        else:
            sql = "SELECT number FROM dnc WHERE number IN (%s)" % ",".join("?" * len(b))
            found = {r[0] for r in execute(sql, b)}
        return [x in found for x in b]
    for i in range(0, min(len(ql), 10_000), batch):
        run_batch(ql[i:i + batch])
    t = time.perf_counter()
    hits_batch = 0
    for i in range(0, len(ql), batch):
        hits_batch += sum(run_batch(ql[i:i + batch]))
    dt_batch = time.perf_counter() - t
    con.close()
    return {
        "single_per_s": len(ql) / dt_single,
        "batch_per_s": len(ql) / dt_batch,
        "hits_single": hits_single,
        "hits_batch": hits_batch,
        "cache_size": cache_size,
        "mmap_size": mmap_size,
    }


# ---------------------------------------------------------------------------
# main benchmark
# ---------------------------------------------------------------------------

def bench_numberset(args) -> dict:
    res: dict = {"mode": "store", "n": args.n, "seed": args.seed,
                 "lookups": args.lookups, "batch": args.batch}
    os.makedirs(args.workdir, exist_ok=True)
    gc.collect()
    st0 = proc_status()
    log(f"baseline RSS {st0['VmRSS'] / 1e6:.0f} MB; generating {args.n:,} numbers")
    t = time.perf_counter()
    numbers = gen_numbers(args.n, args.seed)
    res["gen_s"] = round(time.perf_counter() - t, 3)
    queries = make_queries(numbers, args.lookups, args.seed)
    st1 = proc_status()
    log(f"generated in {res['gen_s']}s; RSS {st1['VmRSS'] / 1e6:.0f} MB "
        f"(arrays {numbers.nbytes / 1e6:.0f} MB); building NumberSet")

    t = time.perf_counter()
    s = NumberSet.from_array(numbers)
    res["build_s"] = round(time.perf_counter() - t, 3)
    res["build_numbers_per_s"] = round(args.n / res["build_s"]) if res["build_s"] else None
    assert len(s) == args.n, (len(s), args.n)
    res["memory_bytes"] = s.memory_bytes()
    res["bytes_per_number"] = round(res["memory_bytes"] / max(args.n, 1), 3)
    log(f"built in {res['build_s']}s; memory_bytes {res['memory_bytes'] / 1e6:.1f} MB")

    # Free the generation array and measure what the structure really costs.
    del numbers
    gc.collect()
    st2 = proc_status()
    res["rss_base_bytes"] = st0["VmRSS"]
    res["rss_after_bytes"] = st2["VmRSS"]
    # queries (args.lookups uint64) were alive in st2 but not in st0
    res["rss_delta_bytes"] = st2["VmRSS"] - st0["VmRSS"] - queries.nbytes
    res["peak_rss_bytes"] = st2["VmHWM"]
    log(f"RSS after freeing generation arrays: {st2['VmRSS'] / 1e6:.0f} MB "
        f"(delta {res['rss_delta_bytes'] / 1e6:.0f} MB, peak {st2['VmHWM'] / 1e6:.0f} MB)")

    # save / load
    path = os.path.join(args.workdir, f"dnc_set_n{args.n}_s{args.seed}.bin")
    t = time.perf_counter()
    digest = s.save(path)
    res["save_s"] = round(time.perf_counter() - t, 3)
    res["file_bytes"] = os.path.getsize(path)
    t = time.perf_counter()
    loaded = NumberSet.load(path, expected_sha256=digest)
    res["load_s"] = round(time.perf_counter() - t, 3)
    assert len(loaded) == len(s)
    res["load_equal"] = bool(loaded == s)
    del loaded
    gc.collect()
    os.unlink(path)
    log(f"save {res['save_s']}s, load (sha256 verified) {res['load_s']}s, "
        f"file {res['file_bytes'] / 1e6:.1f} MB")

    # lookups
    ql = queries.tolist()
    for x in ql[:10_000]:
        x in s  # warm-up
    t = time.perf_counter()
    hits = 0
    for x in ql:
        if x in s:
            hits += 1
    dt = time.perf_counter() - t
    res["lookups_per_s_single"] = round(len(ql) / dt)
    res["hits_single"] = hits
    log(f"single lookups: {res['lookups_per_s_single']:,}/s ({hits:,} hits)")

    b = args.batch
    batches = [queries[i:i + b] for i in range(0, queries.size, b)]
    for q in batches[:20]:
        s.contains_many(q)
    t = time.perf_counter()
    hits_b = 0
    for q in batches:
        hits_b += sum(s.contains_many(q))
    dt = time.perf_counter() - t
    res["lookups_per_s_batch"] = round(queries.size / dt)
    res["hits_batch"] = hits_b
    t = time.perf_counter()
    hits_all = sum(s.contains_many(queries))
    dt = time.perf_counter() - t
    res["lookups_per_s_batch_all"] = round(queries.size / dt)
    assert hits_b == hits == hits_all, (hits, hits_b, hits_all)
    log(f"contains_many: {res['lookups_per_s_batch']:,}/s in batches of {b}, "
        f"{res['lookups_per_s_batch_all']:,}/s as one batch of {queries.size:,}")

    if args.skip_sqlite:
        return res
    del s
    gc.collect()

    # SQLite baseline
    sn = args.sqlite_n if args.sqlite_n else args.n
    res["sqlite_n"] = sn
    # With --sqlite-n != --n the ratios compare tables of different sizes.
    res["sqlite_same_numbers"] = sn == args.n
    res["sqlite_layout"] = args.sqlite_layout
    res["sqlite_schema"] = SQLITE_LAYOUTS[args.sqlite_layout]
    spath = sqlite_path(args.workdir, sn, args.seed, args.sqlite_layout)
    if sn == args.n:
        squeries = queries
    else:
        squeries = None
    if sqlite_is_valid(spath, sn, args.seed):
        log(f"reusing cached SQLite table {spath}")
        res["sqlite_build_s"] = None
        if squeries is None:
            squeries = make_queries(gen_numbers(sn, args.seed), args.lookups, args.seed)
    else:
        log(f"building SQLite table with {sn:,} rows at {spath}")
        nums = gen_numbers(sn, args.seed)
        if squeries is None:
            squeries = make_queries(nums, args.lookups, args.seed)
        res["sqlite_build_s"] = round(build_sqlite(spath, nums, args.seed, args.sqlite_layout), 1)
        del nums
        gc.collect()
        log(f"SQLite built in {res['sqlite_build_s']}s")
    res["sqlite_file_bytes"] = os.path.getsize(spath)
    log("pre-warming the OS page cache with the SQLite file")
    prewarm_file(spath)

    log("SQLite lookups, default connection settings")
    d = sqlite_lookups(spath, squeries, b)
    res["sqlite_lookups_per_s_single"] = round(d["single_per_s"])
    res["sqlite_lookups_per_s_batch"] = round(d["batch_per_s"])
    res["sqlite_default_cache_size"] = d["cache_size"]
    log(f"SQLite default: single {d['single_per_s']:,.0f}/s, IN({b}) {d['batch_per_s']:,.0f}/s")
    assert d["hits_single"] == d["hits_batch"]
    if sn == args.n:
        assert d["hits_single"] == res["hits_single"], (d["hits_single"], res["hits_single"])

    # A tuned connection: memory-map the whole file and give it a big page
    # cache.  Reported so that the headline ratio is not against a strawman.
    mm = res["sqlite_file_bytes"] + (64 << 20)
    tuned = (f"PRAGMA mmap_size={mm}", "PRAGMA cache_size=-1048576")
    log("SQLite lookups, tuned connection (mmap whole file, 1 GiB page cache)")
    d2 = sqlite_lookups(spath, squeries, b, tuned)
    res["sqlite_tuned_pragmas"] = list(tuned)
    res["sqlite_tuned_lookups_per_s_single"] = round(d2["single_per_s"])
    res["sqlite_tuned_lookups_per_s_batch"] = round(d2["batch_per_s"])
    log(f"SQLite tuned: single {d2['single_per_s']:,.0f}/s, IN({b}) {d2['batch_per_s']:,.0f}/s")

    best_single = max(res["sqlite_lookups_per_s_single"], res["sqlite_tuned_lookups_per_s_single"])
    best_batch = max(res["sqlite_lookups_per_s_batch"], res["sqlite_tuned_lookups_per_s_batch"])
    res["speedup_single"] = round(res["lookups_per_s_single"] / res["sqlite_lookups_per_s_single"], 2)
    res["speedup_batch"] = round(res["lookups_per_s_batch"] / res["sqlite_lookups_per_s_batch"], 2)
    res["speedup_single_vs_tuned"] = round(res["lookups_per_s_single"] / res["sqlite_tuned_lookups_per_s_single"], 2)
    res["speedup_batch_vs_tuned"] = round(res["lookups_per_s_batch"] / res["sqlite_tuned_lookups_per_s_batch"], 2)
    res["speedup_single_vs_best_sqlite"] = round(res["lookups_per_s_single"] / best_single, 2)
    res["speedup_batch_vs_best_sqlite"] = round(res["lookups_per_s_batch"] / best_batch, 2)
    return res


def finish_goals(res: dict) -> None:
    if "memory_bytes" in res:
        res["meets_memory_goal"] = bool(
            res["memory_bytes"] <= GIB and res["rss_delta_bytes"] <= GIB)
    if "speedup_single" in res:
        res["meets_speed_goal"] = bool(
            res["speedup_single"] >= 20 and res["speedup_batch"] >= 20)
        res["meets_speed_goal_vs_best_sqlite"] = bool(
            res["speedup_single_vs_best_sqlite"] >= 20
            and res["speedup_batch_vs_best_sqlite"] >= 20)


# ---------------------------------------------------------------------------
# parse benchmark
# ---------------------------------------------------------------------------

def write_ftc_file(path: str, m: int, seed: int) -> dict:
    """M lines: a header, FTC ``NPA,NXXXXXX`` lines, 1 junk line in 10,000."""
    rng = np.random.default_rng([seed, GEN_VERSION, 2])
    tmp = path + ".tmp"
    junk = 0
    with open(tmp, "wb") as f:
        f.write(b"AreaCode,PhoneNumber\n")
        done = 1
        while done < m:
            k = min(_CHUNK, m - done)
            nat = _draw(rng, k) - np.uint64(10_000_000_000)
            digits = np.empty((k, 10), dtype=np.uint8)
            for j in range(9, -1, -1):
                digits[:, j] = (nat % np.uint64(10)).astype(np.uint8) + 48
                nat //= np.uint64(10)
            rows = np.empty((k, 12), dtype=np.uint8)
            rows[:, 0:3] = digits[:, 0:3]
            rows[:, 3] = ord(",")
            rows[:, 4:11] = digits[:, 3:10]
            rows[:, 11] = ord("\n")
            bad = rng.random(k) < 1e-4
            rows[bad, 5] = ord("x")  # e.g. "212,5x50100": junk
            junk += int(bad.sum())
            f.write(rows.tobytes())
            done += k
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return {"junk": junk}


def bench_parse(args) -> dict:
    m = args.parse_lines
    os.makedirs(args.workdir, exist_ok=True)
    path = os.path.join(args.workdir, f"ftc_m{m}_s{args.seed}_g{GEN_VERSION}.txt")
    meta_path = path + ".json"
    if os.path.exists(path) and os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        log(f"reusing generated file {path}")
    else:
        log(f"writing {m:,} FTC-format lines to {path}")
        t = time.perf_counter()
        meta = write_ftc_file(path, m, args.seed)
        with open(meta_path, "w") as f:
            json.dump(meta, f)
        log(f"written in {time.perf_counter() - t:.1f}s")
    size = os.path.getsize(path)
    prewarm_file(path)
    st0 = proc_status()
    log("parsing")
    last = [0.0]

    def progress(done, total):
        now = time.perf_counter()
        if now - last[0] > 5:
            last[0] = now
            log(f"  parsed {done / 1e6:,.0f}/{total / 1e6:,.0f} MB")

    t = time.perf_counter()
    numbers, stats = parse_registry_file(path, progress=progress)
    dt = time.perf_counter() - t
    st1 = proc_status()
    res = {
        "mode": "parse",
        "parse_lines": stats["lines"],
        "parse_file_bytes": size,
        "parse_s": round(dt, 3),
        "parse_lines_per_s": round(stats["lines"] / dt),
        "parse_mb_per_s": round(size / dt / 1e6, 1),
        "parse_numbers": stats["numbers"],
        "parse_duplicates": stats["duplicates"],
        "parse_junk": stats["junk"],
        "parse_junk_expected": meta["junk"],
        "parse_header": stats["header"],
        "parse_peak_rss_bytes": st1["VmHWM"],
        "parse_rss_base_bytes": st0["VmRSS"],
        "memory_bytes": numbers.memory_bytes(),
        "meets_parse_goal": stats["lines"] / dt >= 2_000_000,
    }
    assert stats["junk"] == meta["junk"], (stats["junk"], meta["junk"])
    assert stats["lines"] == m, (stats["lines"], m)
    log(f"parsed {stats['lines']:,} lines in {dt:.2f}s = {stats['lines'] / dt:,.0f} lines/s")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=250_000_000,
                    help="numbers in the registry (default 250,000,000)")
    ap.add_argument("--lookups", type=int, default=1_000_000,
                    help="lookups to time, 50%% hits (default 1,000,000)")
    ap.add_argument("--sqlite-n", type=int, default=None,
                    help="rows in the SQLite table (default: same as --n)")
    ap.add_argument("--workdir", default=workdir("dnc_bench"),
                    help="cache dir for the SQLite file and generated files")
    ap.add_argument("--seed", type=int, default=20240501)
    ap.add_argument("--batch", type=int, default=500,
                    help="batch size for contains_many and SQLite IN (...) (default 500)")
    ap.add_argument("--sqlite-layout", choices=sorted(SQLITE_LAYOUTS), default="rowid",
                    help="SQLite table layout (default rowid: measured fastest)")
    ap.add_argument("--skip-sqlite", action="store_true",
                    help="measure only the NumberSet")
    ap.add_argument("--parse-lines", type=int, default=None, metavar="M",
                    help="instead: benchmark parse_registry_file on M FTC lines")
    args = ap.parse_args(argv)
    if args.parse_lines:
        res = bench_parse(args)
    else:
        if args.n < 2 or args.lookups < 2:
            ap.error("--n and --lookups must be at least 2")
        res = bench_numberset(args)
        finish_goals(res)
    res["python"] = platform.python_version()
    res["numpy"] = np.__version__
    try:
        import pyroaring
        res["pyroaring"] = getattr(pyroaring, "__version__", None)
    except Exception:  # pragma: no cover
        pass
    res["sqlite"] = sqlite3.sqlite_version
    res["glibc_tunables"] = os.environ.get("GLIBC_TUNABLES")
    res["cpus"] = os.cpu_count()
    res["total_s"] = round(time.perf_counter() - T0, 1)
    print(json.dumps(res, sort_keys=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Lead-file reading benchmark: a generated CSV through campaigns.files.open_table.

Writes N synthetic lead rows (phone, names, e-mail, address, quoted cells with
embedded commas, a few blank lines) to a temporary file, then times reading every
row through ``open_table`` (encoding and delimiter detection, csv parsing, blank
skipping, padding). Generation is not timed. Prints one JSON line:
{"rows": ..., "seconds": ..., "rows_per_s": ..., "mb": ...}.

    python bench/read_bench.py [--n 1000000] [--delimiter ,] [--encoding utf-8] [--keep PATH]
"""

import argparse
import json
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from campaigns.files import open_table  # noqa: E402

FIRST = ("James", "Mary", "José", "Zoë", "Ahmet", "Müller", "Li", "Fatima", "Søren", "Olivia")
LAST = ("Smith", "O'Brien", "García", "Nguyen", "Öztürk", "Kowalski", "Dubois", "Rossi")
STREETS = ("Main St", "Oak Ave", "Elm St, Apt 4", "Broadway", "Park Rd")


def generate(path, n, delimiter, encoding, seed=1):
    rng = random.Random(seed)
    d = delimiter
    with open(path, "w", encoding=encoding, newline="") as f:
        f.write(d.join(("phone", "first_name", "last_name", "email", "address", "state", "notes")) + "\r\n")
        for i in range(n):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            phone = f"+1{rng.randint(201, 989)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
            addr = f'"{rng.randint(1, 9999)} {rng.choice(STREETS)}"'
            notes = '"called twice, ""busy"""' if i % 7 == 0 else ""
            f.write(d.join((phone, first, last, f"{first[0].lower()}.{i}@example.com", addr,
                            rng.choice(("NY", "CA", "TX", "FL")), notes)) + "\r\n")
            if i % 1000 == 999:
                f.write("\r\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--delimiter", default=",")
    ap.add_argument("--encoding", default="utf-8")
    ap.add_argument("--keep", help="write the generated file here and keep it")
    args = ap.parse_args()
    args.delimiter = {"tab": "\t", "\\t": "\t"}.get(args.delimiter, args.delimiter)

    tmpdir = None
    if args.keep:
        path = args.keep
    else:
        tmpdir = tempfile.TemporaryDirectory()
        path = os.path.join(tmpdir.name, "leads.csv")
    print(f"generating {args.n} rows ...", file=sys.stderr)
    generate(path, args.n, args.delimiter, args.encoding)
    size = os.path.getsize(path)

    t0 = time.perf_counter()
    table = open_table(path)
    rows = 0
    for _n, _cells in table.rows:
        rows += 1
    seconds = time.perf_counter() - t0
    assert table.progress() == 1.0 and rows == args.n, (rows, table.progress())
    print(json.dumps({"rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds),
                      "mb": round(size / 1e6, 1)}))
    if tmpdir:
        tmpdir.cleanup()


if __name__ == "__main__":
    main()

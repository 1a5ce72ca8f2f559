"""Property-based tests of list import (issue 11): whatever bytes a user uploads as a
CSV or XLSX list, the import either ends ``done`` with counts that add up
(imported + rejected + duplicates == the file's data rows, each rejection and
duplicate in the report, each imported row one dialable lead) or is refused with one
InputError line, leaving nothing half-stored (no ``running`` import, no staged row,
no lead of the refused list). Any other exception fails the test.

Each suite runs a bounded number of examples (``settings(max_examples=...)``) against
one real SQLite file, a fresh campaign per example, and prints how many examples it
ran and how they ended (run with ``-s`` to see the lines; they are also attached to
the test report as user properties)."""

import collections
import csv
import datetime as dt
import io
import itertools
import random
import re
import time
import zipfile

import openpyxl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

from campaigns.files import open_table
from campaigns.leads import DEDUPE, import_errors, import_list
from campaigns.store import create_account, create_campaign
from core.errors import InputError
from core.store import Store
from rules import service

NOW = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.timezone.utc)
SETTINGS = dict(deadline=None, derandomize=False, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.data_too_large])


def _reason(msg):
    """A refusal's kind, for the statistics: its message without the file name and values."""
    msg = re.sub(r"upload\d+\.(csv|xlsx)", "FILE", msg)
    return re.sub(r"'[^']*'|\d+", "_", msg)[:60]


class Harness:
    """One database for a suite; each example imports into a new campaign."""

    def __init__(self, tmp_path):
        self.store = Store(tmp_path / "hyp.db")
        service.ensure_defaults(self.store, NOW)
        create_account(self.store, "acme", NOW, "t")
        self.dir = tmp_path
        self.n = itertools.count(1)
        self.stats = collections.Counter()
        self.reasons = collections.Counter()
        self.started = time.monotonic()

    def count(self, sql, args=()):
        return self.store.query_one(sql, args)["n"]

    def attempt(self, data: bytes, suffix: str, dedupe="campaign", chunk=50_000, interrupt_at=None):
        """Import ``data``; check the outcome either way. Returns 'imported' or 'refused'."""
        k = next(self.n)
        name = f"c{k}"
        create_campaign(self.store, name, "acme", NOW, "t")
        cid = self.store.query_one("SELECT id FROM campaigns WHERE name = ?", (name,))["id"]
        path = self.dir / f"upload{k}{suffix}"
        path.write_bytes(data)
        self.stats["examples"] += 1
        progress = None
        if interrupt_at is not None:
            def progress(rows, fraction):
                if rows >= interrupt_at:
                    raise KeyboardInterrupt
        try:
            try:
                out = import_list(self.store, path, name, NOW, "t", dedupe=dedupe, chunk=chunk, progress=progress)
            except KeyboardInterrupt:
                job = self.store.query_one("SELECT * FROM imports WHERE campaign_id = ?", (cid,))
                assert (job["status"], job["resumable"]) == ("failed", 1), job
                assert self.count("SELECT COUNT(*) AS n FROM leads WHERE campaign_id = ? AND status != 'staged'",
                                  (cid,)) == 0
                self.stats["interrupted then resumed"] += 1
                out = import_list(self.store, path, name, NOW, "t", resume=job["id"], chunk=chunk)
        except InputError as e:
            msg = str(e)
            assert msg.strip() and len(msg.splitlines()) == 1 and "Traceback" not in msg, repr(msg)
            assert self.count("SELECT COUNT(*) AS n FROM imports WHERE status = 'running'") == 0
            assert self.count("SELECT COUNT(*) AS n FROM leads WHERE status = 'staged'") == 0
            assert self.count("SELECT COUNT(*) AS n FROM leads WHERE campaign_id = ?", (cid,)) == 0
            self.stats["refused"] += 1
            self.reasons[_reason(msg)] += 1
            return "refused"
        with open_table(str(path)) as t:  # the file's data rows, counted apart from the import
            data_rows = sum(1 for _ in t.rows)
        assert out["rows"] == out["imported"] + out["rejected"] + out["duplicates"] == data_rows, (out, data_rows)
        job = self.store.query_one("SELECT * FROM imports WHERE id = ?", (out["import_id"],))
        assert job["status"] == "done" and job["runner"] is None
        assert (job["imported"], job["rejected"], job["duplicates"]) == (out["imported"], out["rejected"],
                                                                         out["duplicates"])
        live = self.store.query("SELECT phone FROM leads WHERE campaign_id = ? AND status != 'staged'", (cid,))
        assert len(live) == out["imported"]
        if dedupe != "none":
            assert len({r["phone"] for r in live}) == len(live)
        kinds = collections.Counter(e["kind"] for e in import_errors(self.store, out["import_id"]))
        assert (kinds["rejected"], kinds["duplicate"]) == (out["rejected"], out["duplicates"])
        assert self.count("SELECT COUNT(*) AS n FROM imports WHERE status = 'running'") == 0
        assert self.count("SELECT COUNT(*) AS n FROM leads WHERE status = 'staged'") == 0
        self.stats["imported"] += 1
        return "imported"

    def report(self, record_property, suite):
        seconds = time.monotonic() - self.started
        line = f"{suite}: {self.stats['examples']} examples in {seconds:.1f} s: " + \
            ", ".join(f"{k} {v}" for k, v in sorted(self.stats.items()) if k != "examples")
        print("\n" + line)
        print("  refusals: " + "; ".join(f"{n} {r}" for r, n in self.reasons.most_common(8)))
        record_property(suite, line)
        self.store.close()
        # neither outcome may be vacuous: the generators reach both
        assert self.stats["imported"] > 0 and self.stats["refused"] > 0, line


# ----------------------------------------------------------------------------- cells

PHONES = ["2125550100", "(212) 555-0101", "+1 212 555 0102", "212.555.0103", "1-305-555-0100", "911", "1-911",
          "988", "555-CALL", "+44 20 7946 0958", "0", "", "  ", "2125550100", "+12125550100", "1-800-555-0100",
          "212555010", "21255501000000", "=2125550100", "'2125550104"]
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
CELLS = st.one_of(
    st.sampled_from(PHONES),
    st.sampled_from(["NY", "ny", "Florida", "Atlantis", "", "America/Chicago", "Mars/Olympus", "UTC"]),
    st.sampled_from(['=HYPERLINK("http://evil.example","x")', "=1+1", "@SUM(A1)", "+1", "-2+3", " =cmd|' /C calc'!A0",
                     "\t=1", "\r\n=1", '"', '""', "a,b", "a;b", "a\tb", "a|b", "line\nbreak", "\x00", "\x1b[2J",
                     "\ufeff", "\u202e", "\x85", "\u2028", "Zoë Müller", "李", "🙂"]),
    TEXT,
)
HEADER_NAMES = ["phone", "name", "state", "zone", "company", "notes", "Mobile", "phone", "Phone", "tel", "first_name",
                "zip", "", " alt_phone ", "=evil()", "n\u00e4me", "ph\x85one", "a\u2028b"]


@st.composite
def tables(draw, max_rows=12):
    """A header (a permutation of some column names; usually with one phone column) and
    rows of cells (phone numbers mostly where the phone column is, anything elsewhere;
    rows shorter or longer than the header too)."""
    cols = draw(st.lists(st.sampled_from(HEADER_NAMES), min_size=0, max_size=5))
    if draw(st.integers(0, 3)):
        cols = [c for c in cols if c.lower() not in ("phone", "mobile", "tel")] + ["phone"]
    header = draw(st.permutations(cols or [""]))
    phone_at = header.index("phone") if "phone" in header else None
    rows = []
    for _ in range(draw(st.integers(0 if draw(st.integers(0, 9)) == 0 else 1, max_rows))):
        width = len(header) if draw(st.integers(0, 4)) else draw(st.integers(0, len(header) + 2))
        row = [draw(CELLS) for _ in range(width)]
        if phone_at is not None and phone_at < width and draw(st.integers(0, 3)):
            row[phone_at] = draw(st.sampled_from(PHONES))
        rows.append(row)
    return header, rows


# ----------------------------------------------------------------------------- CSV


ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "cp1252", "latin-1"]


@st.composite
def csv_files(draw):
    header, rows = draw(tables())
    delim = draw(st.sampled_from([",", ";", "\t", "|"]))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    buf = io.StringIO(newline="")
    if draw(st.booleans()):
        w = csv.writer(buf, delimiter=delim, lineterminator=newline)
        w.writerow(header)
        w.writerows(rows)
    else:  # naive: no quoting at all (what some exports do)
        for r in [header, *rows]:
            buf.write(delim.join(r) + newline)
    text = buf.getvalue()
    if draw(st.booleans()):
        text = f"sep={delim}{newline}" + text
    if draw(st.integers(0, 9)) == 0:
        text = newline * draw(st.integers(1, 3)) + text
    data = text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace")
    cut = draw(st.integers(0, 12))
    if cut == 0:  # truncated upload
        data = data[:draw(st.integers(0, len(data)))]
    elif cut == 1:  # a stray BOM of another encoding
        data = draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"])) + data
    return data


RAW_PIECES = st.sampled_from([b",", b";", b"\t", b"|", b'"', b"\n", b"\r\n", b"\r", b" ", b"\x00", b"\xff\xfe",
                              b"\xef\xbb\xbf", b"M\xfcller", "Zoë".encode(), b"2125550100", b"phone", b"PK\x03\x04",
                              b"%PDF-", b"sep=;", b"=1+1", b"911", b"state", b"NY", b"\x1a"])


def test_any_csv_bytes_import_with_counts_that_add_up_or_are_refused_in_one_line(tmp_path, record_property):
    h = Harness(tmp_path)

    @settings(max_examples=300, **SETTINGS)
    @given(prefix=st.sampled_from([b"", b"phone\n", b"phone,name\n", b"\xef\xbb\xbfphone;state\r\n", b"PHONE\t"]),
           body=st.one_of(st.binary(max_size=300), st.lists(RAW_PIECES, max_size=60).map(b"".join)),
           dedupe=st.sampled_from(DEDUPE))
    def run(prefix, body, dedupe):
        h.attempt(prefix + body, ".csv", dedupe=dedupe)

    run()
    h.report(record_property, "csv random bytes")


def test_generated_csv_lists_import_with_counts_that_add_up_or_are_refused(tmp_path, record_property):
    h = Harness(tmp_path)

    @settings(max_examples=300, **SETTINGS)
    @given(data=csv_files(), dedupe=st.sampled_from(DEDUPE), chunk=st.sampled_from([1, 2, 3, 50_000]),
           interrupt=st.one_of(st.none(), st.integers(2, 8)))
    def run(data, dedupe, chunk, interrupt):
        h.attempt(data, ".csv", dedupe=dedupe, chunk=chunk, interrupt_at=interrupt)

    run()
    h.report(record_property, "csv generated")


# ----------------------------------------------------------------------------- XLSX


def _xlsx_value(cell, rnd):
    kind = rnd.randrange(6)
    digits = cell.strip().lstrip("+").replace(" ", "")
    if kind == 0 and digits.isascii() and digits.isdigit():
        return int(digits)  # a number cell
    if kind == 1:
        return None
    if kind == 2:
        return dt.date(2024, 3, 5)
    return ILLEGAL_CHARACTERS_RE.sub("", cell)  # control characters cannot be in XML


def _workbook_bytes(header, rows, seed):
    rnd = random.Random(seed)
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append([ILLEGAL_CHARACTERS_RE.sub("", h) for h in header])
    for r in rows:
        ws.append([_xlsx_value(c, rnd) for c in r])
    buf = io.BytesIO()
    wb.save(buf)
    # the same draws must give the same bytes (hypothesis replays them): openpyxl stamps
    # the time of saving into docProps/core.xml and the ZIP entries
    src, out = zipfile.ZipFile(buf), io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for n in src.namelist():
            data = src.read(n)
            if n == "docProps/core.xml":
                data = re.sub(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", b"2024-01-01T00:00:00Z", data)
            z.writestr(zipfile.ZipInfo(n, date_time=(2024, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
    return out.getvalue()


@st.composite
def xlsx_files(draw):
    header, rows = draw(tables(max_rows=8))
    data = _workbook_bytes(header, rows, draw(st.integers(0, 1000)))
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip", "drop", "sheet"]))
    if damage == "truncate":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif damage == "flip":
        b = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(b) - 1))
            b[i] = draw(st.integers(0, 255))
        data = bytes(b)
    elif damage in ("drop", "sheet"):
        src = zipfile.ZipFile(io.BytesIO(data))
        names = src.namelist()
        victim = draw(st.sampled_from(names)) if damage == "drop" else "xl/worksheets/sheet1.xml"
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            for n in names:
                if n != victim:
                    z.writestr(n, src.read(n))
                elif damage == "sheet":  # the sheet's XML cut or garbled
                    xml = src.read(n)
                    z.writestr(n, xml[:draw(st.integers(0, len(xml)))] + draw(st.binary(max_size=20)))
        data = out.getvalue()
    return data


def test_generated_xlsx_lists_import_with_counts_that_add_up_or_are_refused(tmp_path, record_property):
    h = Harness(tmp_path)

    @settings(max_examples=200, **SETTINGS)
    @given(data=xlsx_files(), dedupe=st.sampled_from(DEDUPE), chunk=st.sampled_from([1, 3, 50_000]))
    def run(data, dedupe, chunk):
        h.attempt(data, ".xlsx", dedupe=dedupe, chunk=chunk)

    run()
    h.report(record_property, "xlsx generated and damaged")

"""Issue 11, lists: nothing a user types or uploads may corrupt a list, break the rules
or go unnoticed. One regression test per defect, named after it; each failed on the
code before its fix (see the commit messages). Real SQLite files, real threads and
processes; the XLSX bombs are made here, small, with zlib/struct."""

import datetime as dt
import csv
import hashlib
import io
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib

import openpyxl
import pytest
from click.testing import CliRunner

from campaigns.files import FileError, neutralise, open_table
from campaigns.leads import (cancel_import, errors_csv, import_errors, import_list, manual_outcome,
                             schedule_callback)
from campaigns.store import add_number, change_state, create_account, create_campaign
from cli import main
from core.errors import InputError, StoreError
from core.store import Store
from rules import service

NOW = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.timezone.utc)  # Tuesday 12:00 New York
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAIT = 60  # seconds an event may take before the test gives up (never reached when all is well)


@pytest.fixture
def camp(store):
    service.ensure_defaults(store, NOW)
    create_account(store, "acme", NOW, "t")
    add_number(store, "acme", "+1 212 555 9999", NOW, "t")
    create_campaign(store, "spring", "acme", NOW, "t", caller_id="+1 212 555 9999")
    return "spring"


def numbers_csv(path, start, n, extra=""):
    with open(path, "w") as fh:
        fh.write("phone,name\n")
        for i in range(n):
            fh.write(f"+1{start + i},n{i}\n")
        fh.write(extra)
    return path


def live_phones(store):
    return [r["phone"] for r in store.query("SELECT phone FROM leads WHERE status != 'staged'")]


def count(store, sql, args=()):
    return store.query_one(sql, args)["n"]


def no_half_import(store):
    assert count(store, "SELECT COUNT(*) AS n FROM imports WHERE status = 'running'") == 0
    assert count(store, "SELECT COUNT(*) AS n FROM leads WHERE status = 'staged'") == 0


# ============================================================================ 1. duplicates


def test_two_concurrent_imports_of_one_file_leave_no_duplicates(db_path, store, camp, tmp_path):
    """The second import of a file a running import holds is refused and names it."""
    f = numbers_csv(tmp_path / "big.csv", 2125550000, 6000)
    first_chunk, second_done = threading.Event(), threading.Event()
    result = {}

    def first():
        s = Store(db_path)

        def progress(rows, fraction):
            first_chunk.set()
            second_done.wait(WAIT)
        try:
            result["first"] = import_list(s, f, camp, NOW, "t", progress=progress, chunk=1000)
        except BaseException as e:  # reported below
            result["first"] = e
        finally:
            s.close()

    t = threading.Thread(target=first)
    t.start()
    assert first_chunk.wait(WAIT)
    try:
        with pytest.raises(InputError) as ei:
            import_list(store, f, camp, NOW, "t", chunk=1000)
    finally:
        second_done.set()
        t.join(WAIT)
    job = store.query_one("SELECT id FROM imports ORDER BY id LIMIT 1")["id"]
    msg = str(ei.value)
    assert f"import {job}" in msg and f"--resume {job}" in msg and f"dialer list cancel {job}" in msg
    assert "\n" not in msg
    out = result["first"]
    assert isinstance(out, dict), out
    assert (out["imported"], out["duplicates"]) == (6000, 0)
    phones = live_phones(store)
    assert len(phones) == len(set(phones)) == 6000
    no_half_import(store)


def test_rerun_of_an_interrupted_import_is_refused_and_names_the_job(db_path, store, camp, tmp_path):
    """A user reruns a killed import instead of resuming it: refused, with the id and
    both commands; resuming it later imports each number once."""
    f = numbers_csv(tmp_path / "big.csv", 2125550000, 5000)
    code = (
        "import sys, os, signal, datetime as dt\n"
        "from core.store import Store\n"
        "from campaigns.leads import import_list\n"
        "s = Store(sys.argv[1])\n"
        "def progress(rows, fraction):\n"
        "    if rows > 2000: os.kill(os.getpid(), signal.SIGKILL)\n"
        "import_list(s, sys.argv[2], 'spring', dt.datetime(2026, 11, 24, 17, tzinfo=dt.timezone.utc), 't',\n"
        "            progress=progress, chunk=1000)\n"
    )
    p = subprocess.run([sys.executable, "-c", code, str(db_path), str(f)], capture_output=True, timeout=120, cwd=ROOT)
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()
    job = store.query_one("SELECT * FROM imports")
    assert job["status"] == "running" and job["rows_done"] > 2000
    with pytest.raises(InputError) as ei:
        import_list(store, f, camp, NOW, "t")
    msg = str(ei.value)
    assert f"import {job['id']}" in msg and f"--resume {job['id']}" in msg and f"dialer list cancel {job['id']}" in msg
    assert count(store, "SELECT COUNT(*) AS n FROM imports") == 1  # the refusal changed nothing
    assert live_phones(store) == []
    out = import_list(store, f, camp, NOW, "t", resume=job["id"])
    assert (out["imported"], out["duplicates"], out["rejected"]) == (5000, 0, 0)
    phones = live_phones(store)
    assert len(phones) == len(set(phones)) == 5000
    no_half_import(store)


def test_overlapping_lists_imported_at_once_leave_no_duplicate_dialable_lead(db_path, store, camp, tmp_path):
    """Two different files sharing numbers, imported at the same time (the second runs
    whole while the first has staged its first chunk): dedupe sees the numbers the
    other list made live, at the last step, under the write lock."""
    a = numbers_csv(tmp_path / "a.csv", 2125550000, 3000)          # 0000..2999
    b = numbers_csv(tmp_path / "b.csv", 2125550000 + 2000, 3000)   # 2000..4999: 1000 shared
    staged, b_done = threading.Event(), threading.Event()
    result = {}

    def run_a():
        s = Store(db_path)

        def progress(rows, fraction):
            staged.set()
            b_done.wait(WAIT)
        try:
            result["a"] = import_list(s, a, camp, NOW, "t", progress=progress, chunk=500)
        except BaseException as e:
            result["a"] = e
        finally:
            s.close()

    t = threading.Thread(target=run_a)
    t.start()
    assert staged.wait(WAIT)
    try:
        out_b = import_list(store, b, camp, NOW, "t", chunk=500)
    finally:
        b_done.set()
        t.join(WAIT)
    out_a = result["a"]
    assert isinstance(out_a, dict), out_a
    assert (out_b["imported"], out_b["duplicates"]) == (3000, 0)
    assert (out_a["imported"], out_a["duplicates"]) == (2000, 1000)
    assert out_a["rows"] == out_a["imported"] + out_a["rejected"] + out_a["duplicates"] == 3000
    assert out_a["preview"]["leads"] == 2000
    phones = live_phones(store)
    assert len(phones) == len(set(phones)) == 5000
    late = [e for e in import_errors(store, out_a["import_id"]) if e["kind"] == "duplicate"]
    assert len(late) == 1000 and "already in this campaign" in late[0]["reason"]
    no_half_import(store)


def test_two_imports_of_one_file_and_a_rule_edit_at_once_end_with_the_right_counts(db_path, store, camp, tmp_path):
    """Issue 11, done-when: two imports of one file started at once (two threads, each
    with its own Store on the same SQLite file) and a rule edit at the same time."""
    f = numbers_csv(tmp_path / "list.csv", 2125550000, 8000, extra="911,emergency\n+12125550000,dup\n")
    before = service.show_ruleset(store, "US")["version"]
    go = threading.Barrier(3)
    results = [None, None, None]

    def importer(k):
        s = Store(db_path)
        try:
            go.wait(WAIT)
            results[k] = import_list(s, f, camp, NOW, f"t{k}", chunk=1000)
        except BaseException as e:
            results[k] = e
        finally:
            s.close()

    def rule_edit():
        s = Store(db_path)
        try:
            go.wait(WAIT)
            results[2] = service.set_rule(s, "US", "states.FL.frequency.max_calls", "2", NOW, "t2",
                                          "counsel: stricter")
        except BaseException as e:
            results[2] = e
        finally:
            s.close()

    threads = [threading.Thread(target=importer, args=(0,)), threading.Thread(target=importer, args=(1,)),
               threading.Thread(target=rule_edit)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not isinstance(results[2], BaseException), results[2]
    assert service.show_ruleset(store, "US")["version"] == before + 1
    done = [r for r in results[:2] if isinstance(r, dict)]
    refused = [r for r in results[:2] if isinstance(r, BaseException)]
    assert done, results
    for r in refused:  # started while the other ran: refused, naming it
        assert isinstance(r, InputError) and f"--resume {done[0]['import_id']}" in str(r), r
    for r in done:
        assert r["rows"] == r["imported"] + r["rejected"] + r["duplicates"] == 8002
    assert sum(r["imported"] for r in done) == 8000  # a second run after the first ended: all duplicates
    phones = live_phones(store)
    assert len(phones) == len(set(phones)) == 8000
    no_half_import(store)


def test_lock_timeout_mid_import_ends_failed_resumable_and_names_the_job(db_path, camp, tmp_path):
    """Another writer holds the database past the import's busy timeout: the import
    ends failed (not running) with its reason, keeps its staged rows, and the error
    names the import and the resume/cancel commands; resuming it completes the list."""
    f = numbers_csv(tmp_path / "l.csv", 2125550000, 600)
    s = Store(db_path, timeout=0.5)
    holder = Store(db_path)
    locked = threading.Event()

    def hold():
        holder.conn.execute("BEGIN IMMEDIATE")
        locked.set()
        # the scenario: a long transaction elsewhere, 1.3 s: longer than the importer's
        # 0.5 s busy timeout, shorter than the 4 x 0.5 s it gives its failure record
        threading.Timer(1.3, lambda: holder.conn.execute("ROLLBACK")).start()

    def progress(rows, fraction):
        if not locked.is_set():  # after the first chunk
            threading.Thread(target=hold).start()
            assert locked.wait(WAIT)

    with pytest.raises(StoreError) as ei:
        import_list(s, f, camp, NOW, "t", progress=progress, chunk=100)
    job = s.query_one("SELECT * FROM imports")
    msg = str(ei.value)
    assert f"import {job['id']}" in msg and f"--resume {job['id']}" in msg and f"dialer list cancel {job['id']}" in msg
    assert "locked" in msg and "\n" not in msg
    assert (job["status"], job["resumable"]) == ("failed", 1) and "locked" in job["reason"]
    assert count(s, "SELECT COUNT(*) AS n FROM leads WHERE status = 'staged'") == 100
    assert live_phones(s) == []
    out = import_list(s, f, camp, NOW, "t", resume=job["id"])
    assert (out["imported"], out["duplicates"]) == (600, 0)
    no_half_import(s)
    s.close()
    holder.close()


# ============================================================================ 2. snapshot


def test_file_changed_while_it_imports_is_not_mixed_into_the_list(store, camp, tmp_path):
    f = numbers_csv(tmp_path / "l.csv", 2125550000, 20_000)
    original = f.read_bytes()
    changed = []

    def progress(rows, fraction):
        if not changed:  # someone saves another list over the file half-way
            numbers_csv(f, 3125550000, 20_000)
            changed.append(rows)

    out = import_list(store, f, camp, NOW, "t", progress=progress, chunk=1000)
    assert changed and out["imported"] == 20_000
    phones = set(live_phones(store))
    assert phones == {f"+1{2125550000 + i}" for i in range(20_000)}  # only the file as it was read
    job = store.query_one("SELECT file_sha256 FROM imports")
    assert job["file_sha256"] == hashlib.sha256(original).hexdigest()


# ============================================================================ 3. XLSX bombs

_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"


def _template(tmp_path):
    wb = openpyxl.Workbook()
    wb.active.title = "Leads"
    wb.active.append(["phone", "notes"])
    wb.active.append(["2125550100", "x"])
    p = tmp_path / "template.xlsx"
    wb.save(p)
    with zipfile.ZipFile(p) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def _deflate(data):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(), zlib.crc32(data), len(data)


def _bomb(prefix, block, times, suffix):
    """A raw deflate stream of prefix + block * times + suffix, made from one
    compressed block (a full flush resets the compressor, so the block's bytes repeat)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    one = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.compress(suffix) + c.flush()
    crc = zlib.crc32(prefix)
    for _ in range(times):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(suffix, crc)
    return head + one * times + tail, crc, len(prefix) + len(block) * times + len(suffix)


def _zip(members):
    """A ZIP from (name, deflated, crc, size) members, written by hand so a member's
    data can be a ready-made bomb and its declared size anything."""
    out, central = io.BytesIO(), []
    for name, comp, crc, size in members:
        off, nb = out.tell(), name.encode()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(comp), size, len(nb), 0))
        out.write(nb + comp)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(comp), size,
                                   len(nb), 0, 0, 0, 0, 0, off) + nb)
    start = out.tell()
    for c in central:
        out.write(c)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), out.tell() - start, start, 0))
    return out.getvalue()


def _workbook(tmp_path, name, sheet=None, parts=None):
    """The template workbook with members replaced: ``sheet`` (the first worksheet) and
    ``parts`` (by name) are XML bytes or ready (deflated, crc, size) members."""
    new = dict(parts or {})
    if sheet is not None:
        new["xl/worksheets/sheet1.xml"] = sheet
    members = []
    template = _template(tmp_path)
    for n, data in [*template.items(), *((n, d) for n, d in new.items() if n not in template)]:
        data = new.get(n, data)
        members.append((n, *(data if isinstance(data, tuple) else _deflate(data))))
    p = tmp_path / name
    p.write_bytes(_zip(members))
    return p


def _sheet(rows_xml):
    return (f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{_MAIN}"><sheetData>'
            f"{rows_xml}</sheetData></worksheet>").encode()


def _row(r, *cells):
    return f'<row r="{r}">' + "".join(cells) + "</row>"


def _text(ref, text):
    return f'<c r="{ref}" t="inlineStr"><is><t>{text}</t></is></c>'


HEADER = _row(1, _text("A1", "phone"), _text("B1", "notes"))


def _run_limited(db_path, path, mem_bytes=1536 << 20, cpu_seconds=60):
    """import_list in a child process with its memory and CPU capped: prints the
    outcome as one JSON line."""
    code = (
        "import sys, json, resource, datetime as dt\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({mem_bytes}, {mem_bytes}))\n"
        f"resource.setrlimit(resource.RLIMIT_CPU, ({cpu_seconds}, {cpu_seconds}))\n"
        "from core.store import Store\n"
        "from core.errors import DialerError\n"
        "from campaigns.leads import import_list\n"
        "s = Store(sys.argv[1])\n"
        "try:\n"
        "    out = import_list(s, sys.argv[2], 'spring', dt.datetime(2026, 11, 24, 17, tzinfo=dt.timezone.utc), 't')\n"
        "    print(json.dumps({'imported': out['imported']}))\n"
        "except DialerError as e:\n"
        "    print(json.dumps({'error': type(e).__name__, 'message': str(e)}))\n"
        "r = resource.getrusage(resource.RUSAGE_SELF)\n"
        # the peak resident size of this process's own memory (VmHWM): ru_maxrss keeps the
        # peak of the memory it was started from (Linux carries it over exec; with vfork that is
        # the test runner's), which grows with the number of tests run before this one
        "hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
        "print(json.dumps({'maxrss_kb': hwm, 'cpu': r.ru_utime + r.ru_stime}))\n"
    )
    p = subprocess.run([sys.executable, "-c", code, str(db_path), str(path)], capture_output=True, timeout=300,
                       cwd=ROOT)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    out, usage = (json.loads(x) for x in p.stdout.decode().strip().splitlines()[-2:])
    return out, usage


def test_xlsx_cell_that_inflates_to_a_gibibyte_is_refused_before_it_inflates(db_path, store, camp, tmp_path):
    head = (f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{_MAIN}"><sheetData>{HEADER}'
            '<row r="2"><c r="A2" t="inlineStr"><is><t>2125550100</t></is></c><c r="B2" t="inlineStr"><is><t>'
            ).encode()
    tail = b"</t></is></c></row></sheetData></worksheet>"
    bomb = _bomb(head, b"A" * (1 << 20), 1024, tail)  # one cell of 1 GiB
    p = _workbook(tmp_path, "bomb.xlsx", sheet=bomb)
    assert p.stat().st_size < 2 << 20 and bomb[2] > 1 << 30
    out, usage = _run_limited(db_path, p)
    assert out["error"] == "FileError" and "bomb.xlsx would inflate to 1 GiB" in out["message"], out
    assert usage["maxrss_kb"] < 400_000 and usage["cpu"] < 20, usage
    assert count(store, "SELECT COUNT(*) AS n FROM imports") == 0  # refused before a job existed
    # the same cell under the total limit: the ratio gives it away (it compresses 1000 times)
    half = _bomb(head, b"A" * (1 << 20), 300, tail)
    with pytest.raises(FileError, match=r"xl/worksheets/sheet1.xml inflates \d{3,} times"):
        open_table(str(_workbook(tmp_path, "ratio.xlsx", sheet=half)))
    # a member that declares 64 KiB but inflates to 1 GiB: zipfile stops at the declared size
    liar = (bomb[0], bomb[1], 64 << 10)
    t = time.process_time()
    with pytest.raises(FileError, match="damaged"):
        list(open_table(str(_workbook(tmp_path, "liar.xlsx", sheet=liar))).rows)
    assert time.process_time() - t < 5
    no_half_import(store)


def test_xlsx_cell_longer_than_excel_allows_is_refused(tmp_path):
    long = "A" * 40_000
    p = _workbook(tmp_path, "long.xlsx", sheet=_sheet(HEADER + _row(2, _text("A2", "2125550100"),
                                                                    _text("B2", long))))
    with pytest.raises(FileError, match=r"sheet 'Leads': cell B2 is longer than 32767 characters"):
        open_table(str(p))
    shared = (f'<?xml version="1.0"?><sst xmlns="{_MAIN}" count="1" uniqueCount="1">'
              f"<si><r><t>{'B' * 20_000}</t></r><r><t>{'C' * 20_000}</t></r></si></sst>").encode()
    types = _template(tmp_path)["[Content_Types].xml"].replace(
        b"</Types>", b'<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-'
                     b'officedocument.spreadsheetml.sharedStrings+xml"/></Types>')
    p = _workbook(tmp_path, "shared.xlsx", parts={"xl/sharedStrings.xml": shared, "[Content_Types].xml": types})
    with pytest.raises(FileError, match="in its part xl/sharedStrings.xml, shared string 1 is longer than 32767"):
        open_table(str(p))


def test_xlsx_sheet_of_empty_cells_in_column_xfd_is_read_in_seconds(store, camp, tmp_path):
    """Formatted but empty cells far to the right (XFD) on every row used to be padded
    cell by cell: 16 384 cells a row. Only columns up to the last value are read now."""
    rows = "".join(_row(r, _text(f"A{r}", f"+1{2125550000 + r}"), f'<c r="XFD{r}" s="0"/>')
                   for r in range(2, 5002))
    p = _workbook(tmp_path, "xfd.xlsx", sheet=_sheet(_row(1, _text("A1", "phone")) + rows))
    t = time.process_time()
    out = import_list(store, p, camp, NOW, "t")
    assert time.process_time() - t < 5
    assert (out["imported"], out["rejected"], out.get("notes")) == (5000, 0, 0)


def test_xlsx_values_far_right_on_every_row_are_refused_before_reading(tmp_path):
    rows = "".join(_row(r, _text(f"A{r}", f"+1{2125550000 + r}"), _text(f"XFD{r}", "x")) for r in range(2, 2002))
    p = _workbook(tmp_path, "wide.xlsx", sheet=_sheet(_row(1, _text("A1", "phone")) + rows))
    t = time.process_time()
    with pytest.raises(FileError) as ei:
        open_table(str(p))
    assert time.process_time() - t < 5
    assert "1,221 rows by 16,384 columns (a value in column XFD)" in str(ei.value), str(ei.value)


@pytest.mark.parametrize("rows_xml, says", [
    (_row(2000000000, _text("A2000000000", "2125550100")), "row 2000000000 is beyond Excel's 1,048,576 rows"),
    (_row(2, _text("XFE2", "2125550100")), "cell XFE2 is beyond column XFD"),
    (_row(2, "".join(f'<c r="A2" s="{i}"/>' for i in range(100_001))), "row 2 is made of more than 100000 XML "
                                                                        "elements"),
    ('<!DOCTYPE x [<!ENTITY a "aaaa">]>', "document type declaration"),
], ids=["row-number", "column", "elements", "dtd"])
def test_xlsx_sheet_dimensions_beyond_excel_are_refused(tmp_path, rows_xml, says):
    sheet = _sheet(HEADER + rows_xml) if not rows_xml.startswith("<!DOCTYPE") else \
        _sheet(HEADER).replace(b"<worksheet", rows_xml.encode() + b"<worksheet")
    t = time.process_time()
    with pytest.raises(FileError, match=says.replace("(", r"\(")):
        open_table(str(_workbook(tmp_path, "dim.xlsx", sheet=sheet)))
    assert time.process_time() - t < 5


# ============================================================================ 4. orphans


def test_unclosed_quote_mid_import_ends_failed_with_its_reason(store, camp, tmp_path):
    f = numbers_csv(tmp_path / "q.csv", 2125550000, 3000, extra='+13125550100,"never closed\n' +
                    "+13125550101,x\n" * 20_000)
    with pytest.raises(FileError) as ei:
        import_list(store, f, camp, NOW, "t", chunk=500)
    job = store.query_one("SELECT * FROM imports")
    msg = str(ei.value)
    assert "never closed" in msg and f"import {job['id']} failed and kept nothing" in msg
    assert (job["status"], job["resumable"]) == ("failed", 0) and "never closed" in job["reason"]
    no_half_import(store)
    assert count(store, "SELECT COUNT(*) AS n FROM leads") == 0
    with pytest.raises(InputError, match="kept nothing"):
        import_list(store, f, camp, NOW, "t", resume=job["id"])


def test_interrupted_import_ends_failed_and_resumable(store, camp, tmp_path):
    """Ctrl-C (or any exception) half-way: failed with its reason, never left running;
    the staged rows wait for --resume."""
    f = numbers_csv(tmp_path / "l.csv", 2125550000, 3000)

    def progress(rows, fraction):
        if rows >= 1000:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        import_list(store, f, camp, NOW, "t", progress=progress, chunk=1000)
    job = store.query_one("SELECT * FROM imports")
    assert (job["status"], job["resumable"], job["reason"]) == ("failed", 1, "interrupted (KeyboardInterrupt)")
    assert live_phones(store) == []
    out = import_list(store, f, camp, NOW, "t", resume=job["id"])
    assert out["imported"] == 3000
    no_half_import(store)


@pytest.fixture
def run(db_path):
    def _run(*args):
        return CliRunner().invoke(main, ["--db", str(db_path), *args], catch_exceptions=False)
    return _run


def _interrupted_job(store, camp, f):
    def progress(rows, fraction):
        if rows >= 1000:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        import_list(store, f, camp, NOW, "t", progress=progress, chunk=1000)
    return store.query_one("SELECT * FROM imports ORDER BY id DESC LIMIT 1")


def test_list_cancel_removes_staged_rows_marks_the_job_cancelled_and_is_audited(store, camp, tmp_path, run):
    job = _interrupted_job(store, camp, numbers_csv(tmp_path / "l.csv", 2125550000, 3000))
    assert count(store, "SELECT COUNT(*) AS n FROM leads WHERE status = 'staged'") == 1000
    r = run("list", "cancel", str(job["id"]), "--reason", "wrong file", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"import_id": job["id"], "campaign": "spring", "file": "l.csv",
                                    "status": "cancelled", "was": "failed", "staged_removed": 1000}
    row = store.query_one("SELECT status, reason FROM imports WHERE id = ?", (job["id"],))
    assert (row["status"], row["reason"]) == ("cancelled", "wrong file")
    assert count(store, "SELECT COUNT(*) AS n FROM leads") == 0
    entry = store.query_one("SELECT * FROM audit_log WHERE action = 'list.cancel'")
    assert entry["reason"] == "wrong file" and json.loads(entry["detail"])["staged_removed"] == 1000
    assert run("rules", "verify").exit_code == 0
    r = run("list", "cancel", str(job["id"]))
    assert r.exit_code == 1 and r.output.strip() == f"Error: import {job['id']} is already cancelled"
    r = run("list", "show", str(job["id"]), "--json")
    assert json.loads(r.output)["status"] == "cancelled"
    r = run("list", "cancel", "999")
    assert r.exit_code == 1 and r.output.strip() == "Error: no import 999 in account 'acme'"


def test_list_cancel_stops_a_running_import_at_its_next_chunk(db_path, store, camp, tmp_path):
    f = numbers_csv(tmp_path / "l.csv", 2125550000, 3000)
    other = Store(db_path)

    def progress(rows, fraction):
        if rows == 1001:  # after the first chunk, someone cancels it
            cancel_import(other, 1, NOW, "bob", reason="stop it")
    with pytest.raises(InputError, match="import 1 was cancelled while it ran \\(stop it\\); nothing of it was kept"):
        import_list(store, f, camp, NOW, "t", progress=progress, chunk=1000)
    other.close()
    assert store.query_one("SELECT status FROM imports")["status"] == "cancelled"
    assert count(store, "SELECT COUNT(*) AS n FROM leads") == 0


def test_staged_leads_are_untouchable_by_lead_outcome_and_callback(store, camp, tmp_path, run):
    job = _interrupted_job(store, camp, numbers_csv(tmp_path / "l.csv", 2125550000, 3000))
    lead = store.query_one("SELECT * FROM leads WHERE status = 'staged' ORDER BY id LIMIT 1")
    for args in (["lead", "outcome", str(lead["id"]), "no-answer"], ["lead", "outcome", str(lead["id"]), "dnc-requested"],
                 ["lead", "callback", str(lead["id"]), "2026-11-25 10:00"]):
        r = run(*args)
        assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
        assert r.output.startswith(f"Error: lead {lead['id']} is not in its campaign yet: import {job['id']}")
    with pytest.raises(InputError):
        manual_outcome(store, lead["id"], "busy", NOW, "t")
    with pytest.raises(InputError):
        schedule_callback(store, lead["id"], "2026-11-25 10:00", NOW, "t")
    after = store.query_one("SELECT * FROM leads WHERE id = ?", (lead["id"],))
    assert after == lead  # nothing changed
    assert count(store, "SELECT COUNT(*) AS n FROM lead_events") == 0
    assert count(store, "SELECT COUNT(*) AS n FROM dnc_entries WHERE pattern = ?", (lead["phone"],)) == 0


def test_campaign_finish_is_refused_while_an_import_runs(db_path, store, camp, tmp_path):
    f = numbers_csv(tmp_path / "l.csv", 2125550000, 3000)
    other = Store(db_path)
    refused = []

    def progress(rows, fraction):
        if rows == 1001:  # after the first chunk
            try:
                change_state(other, camp, "finish", NOW, "bob")
            except InputError as e:
                refused.append(str(e))
    out = import_list(store, f, camp, NOW, "t", progress=progress, chunk=1000)
    assert refused == ["campaign 'spring' cannot finish while import 1 (l.csv, running) holds rows of a list: "
                       "let it end, or cancel it with: dialer list cancel 1"]
    assert out["imported"] == 3000
    assert store.query_one("SELECT state FROM campaigns")["state"] == "draft"
    # an interrupted import holds its rows too; once cancelled, the campaign can finish
    job = _interrupted_job(store, camp, numbers_csv(tmp_path / "m.csv", 3125550000, 3000))
    with pytest.raises(InputError, match=f"while import {job['id']}"):
        change_state(other, camp, "finish", NOW, "bob")
    cancel_import(store, job["id"], NOW, "t")
    assert change_state(other, camp, "finish", NOW, "bob")["state"] == "finished"
    assert count(store, "SELECT COUNT(*) AS n FROM leads WHERE status = 'new'") == 3000
    other.close()


def test_import_into_a_campaign_no_longer_open_stops_and_keeps_nothing(db_path, store, camp, tmp_path):
    """Defence in depth: whatever finishes the campaign while a list imports (finish is
    refused meanwhile; here an older dialer writes the state itself), no lead of the
    list lands in it."""
    f = numbers_csv(tmp_path / "l.csv", 2125550000, 3000)
    other = Store(db_path)

    def progress(rows, fraction):
        if rows == 1001:  # after the first chunk
            with other.transaction():
                other.execute("UPDATE campaigns SET state = 'finished'")
    with pytest.raises(InputError, match="campaign 'spring' was finished while import 1 ran"):
        import_list(store, f, camp, NOW, "t", progress=progress, chunk=1000)
    other.close()
    job = store.query_one("SELECT * FROM imports")
    assert (job["status"], job["resumable"]) == ("failed", 0)
    assert count(store, "SELECT COUNT(*) AS n FROM leads") == 0
    with pytest.raises(InputError, match="is finished: lists cannot be added"):
        import_list(store, f, camp, NOW, "t")
    no_half_import(store)


# ============================================================================ 5. the report


def test_cells_beyond_the_header_are_reported(store, camp, tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("phone,name\n2125550100,Ann\n2125550101,Smith, John\n2125550102,Cy,,\n")
    out = import_list(store, f, camp, NOW, "t")
    assert (out["rows"], out["imported"], out["rejected"]) == (3, 2, 1)
    errs = import_errors(store, out["import_id"])
    assert [(e["row"], e["column"], e["value"], e["kind"]) for e in errs] == [(3, "column_3", "John", "rejected")]
    assert "3 cells but the header has 2 columns" in errs[0]["reason"]
    wb = openpyxl.Workbook()
    wb.active.append(["phone", "name"])
    wb.active.append(["3125550100", "Dee", None, "stray note"])
    p = tmp_path / "x.xlsx"
    wb.save(p)
    out = import_list(store, p, camp, NOW, "t")
    assert (out["imported"], out["rejected"], out["notes"]) == (1, 0, 1)
    e = import_errors(store, out["import_id"])[0]
    assert (e["row"], e["column"], e["value"], e["kind"]) == (2, "D", "stray note", "note")
    assert "beyond the header's 2 columns (D)" in e["reason"]


def test_a_second_phone_column_is_not_silently_a_custom_field(store, camp, tmp_path):
    f = tmp_path / "two.csv"
    f.write_text("phone,name,phone\n2125550100,Ann,3125550100\n")
    with pytest.raises(InputError) as ei:
        import_list(store, f, camp, NOW, "t")
    assert "2 columns named 'phone' (columns 1, 3, read as 'phone', 'phone_2')" in str(ei.value)
    assert "--map phone=phone,alt_phones=phone_2" in str(ei.value)
    assert count(store, "SELECT COUNT(*) AS n FROM imports") == 0
    out = import_list(store, f, camp, NOW, "t", mapping="phone=phone,alt_phones=phone_2")
    lead = store.query_one("SELECT phone, alt_phones, custom FROM leads")
    assert (lead["phone"], json.loads(lead["alt_phones"]), lead["custom"]) == ("+12125550100", ["+13125550100"], None)
    assert out["imported"] == 1
    g = tmp_path / "syn.csv"
    g.write_text("Phone,Mobile\n2125550101,3125550101\n")
    with pytest.raises(InputError, match="several columns could be the phone: 'Phone', 'Mobile'"):
        import_list(store, g, camp, NOW, "t")
    assert import_list(store, g, camp, NOW, "t", mapping="alt_phones=Mobile")["imported"] == 1


def test_error_report_value_is_the_bad_cell_for_state_and_zone(store, camp, tmp_path):
    f = tmp_path / "sz.csv"
    f.write_text("phone,state,zone\n2125550100,Atlantis,\n2125550101,NY,Mars/Olympus\n")
    out = import_list(store, f, camp, NOW, "t")
    errs = import_errors(store, out["import_id"])
    assert [(e["column"], e["value"]) for e in errs] == [("state", "Atlantis"), ("zone", "Mars/Olympus")]


@pytest.mark.parametrize("cell", [" =1+1", "  @SUM(A1)", "\t=1", "\r=1", "\n=1", "\n-1", "\x00=1", " \t+1",
                                  "\u3000=1", "\xa0=1", "\n", "\tplain"])
def test_neutralise_follows_owasp_leading_blanks_and_control_characters(cell):
    assert neutralise(cell) == "'" + cell
    report = errors_csv([{"row": 2, "column": cell, "value": cell, "reason": cell}])
    header, row = csv.reader(io.StringIO(report, newline=""))
    assert header == ["row", "column", "value", "reason"] and row == ["2"] + ["'" + cell] * 3


@pytest.mark.parametrize("cell", ["Ann = Bob", "2125550100", "'=1", "", "a\n=1"])
def test_neutralise_leaves_plain_cells_alone(cell):
    assert neutralise(cell) == cell

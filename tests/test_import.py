"""List import: CSV and XLSX, mapping, normalisation, dedupe, per-row errors, crash
and resume, the screening preview."""

import datetime as dt
import json
import os
import subprocess
import sys

import pytest

from campaigns.leads import errors_csv, import_errors, import_list, preview
from campaigns.store import add_number, create_account, create_campaign
from core.errors import InputError
from rules import service

NOW = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.timezone.utc)  # Tuesday 12:00 New York
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def camp(store, tmp_path):
    service.ensure_defaults(store, NOW)
    reg = tmp_path / "reg.txt"
    reg.write_text("212,5550199\n")
    service.import_dnc(store, reg, NOW, "t", source="national", as_of="2026-11-20")
    create_account(store, "acme", NOW, "t")
    add_number(store, "acme", "+1 212 555 9999", NOW, "t")
    create_campaign(store, "spring", "acme", NOW, "t", caller_id="+1 212 555 9999")
    return "spring"


def write_csv(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


LIST = """Name;Mobile;State;Company;Zip;Notes
Ana Diaz;(212) 555-0100;NY;;10001;=HYPERLINK("http://evil","x")
Ben Cho;212-555-0101;;;;
Cara Lee;212-555-0102;ny;;;
Dup Ana;+1 212 555 0100;;;;
Emergency;911;;;;
Bad;555-CALL;;;;
Nowhere;212-555-0103;Atlantis;;;
Miami;305-555-0100;FL;Sun Co;;
Miami 2;305-555-0900;FL;Sun Co;;
Listed;212-555-0199;;;;
Tollfree;1-800-555-0100;;;;
"""


def test_import_csv_with_mapping_errors_and_preview(store, tmp_path, camp):
    f = write_csv(tmp_path / "list.csv", LIST)
    out = import_list(store, f, camp, NOW, "t", mapping="phone=Mobile,business=Company")
    assert (out["rows"], out["imported"], out["rejected"], out["duplicates"]) == (11, 7, 3, 1)
    errs = import_errors(store, out["import_id"])
    assert [(e["row"], e["column"]) for e in errs] == [(5, "Mobile"), (6, "Mobile"), (7, "Mobile"), (8, "State")]
    assert "911 is an emergency number" in errs[1]["reason"] and "letters" in errs[2]["reason"]
    assert "duplicate in this list" in errs[0]["reason"]
    assert "'Atlantis' is not a US state" in errs[3]["reason"]
    lead = store.query_one("SELECT * FROM leads WHERE phone = '+12125550100'")
    assert lead["name"] == "Ana Diaz" and lead["zones"] == "America/New_York" and lead["number_state"] == "NY"
    assert json.loads(lead["custom"]) == {"Notes": '=HYPERLINK("http://evil","x")'}  # kept as text
    assert lead["postal_code"] == "10001"
    assert store.query_one("SELECT state FROM leads WHERE phone = '+12125550102'")["state"] == "NY"
    # multi-line: 0100..0102 is a run; the two Sun Co numbers share a business
    groups = {r["phone"]: r["groups"] for r in store.query("SELECT phone, groups FROM leads")}
    assert groups["+12125550100"] == groups["+12125550101"] == "run:+12125550100"
    assert groups["+13055550100"] == groups["+13055550900"] == "business:sun co"
    p = out["preview"]
    assert p["leads"] == 7
    assert p["never"] == 2  # on the registry; toll-free
    assert p["dialable_now"] == 5
    assert p["multiline_groups"] == 2 and p["multiline_leads"] == 5
    report = errors_csv(errs)
    assert "'=HYPERLINK" not in report  # values in the report are neutralised...
    assert errs and all(not line.startswith("=") for line in report.splitlines())


def test_preview_later_today_and_later(store, tmp_path, camp):
    f = write_csv(tmp_path / "l.csv", "phone\n+1 212 555 0100\n+1 401 555 0100\n")
    import_list(store, f, camp, NOW, "t")
    at = dt.datetime(2026, 11, 24, 23, 30, tzinfo=dt.timezone.utc)  # 18:30 New York
    p = preview(store, camp, NOW, at=at)
    assert (p["dialable_now"], p["later_today"], p["later"]) == (1, 0, 1)  # RI closed at 18:00: tomorrow
    early = dt.datetime(2026, 11, 24, 12, 30, tzinfo=dt.timezone.utc)  # 07:30 New York
    p = preview(store, camp, NOW, at=early)
    assert (p["dialable_now"], p["later_today"]) == (0, 2)


@pytest.mark.parametrize("mode,expect", [("list", (3, 1)), ("campaign", (2, 2)), ("account", (1, 3)), ("none", (4, 0))])
def test_dedupe_modes(store, tmp_path, camp, mode, expect):
    create_campaign(store, "autumn", "acme", NOW, "t")
    import_list(store, write_csv(tmp_path / "a.csv", "phone\n2125550100\n"), camp, NOW, "t")
    import_list(store, write_csv(tmp_path / "b.csv", "phone\n2125550101\n"), "autumn", NOW, "t")
    # this list: 0102 twice, 0100 (already in spring), 0101 (already in autumn, same account)
    f = write_csv(tmp_path / "c.csv", "phone\n2125550102\n2125550102\n2125550100\n2125550101\n")
    out = import_list(store, f, camp, NOW, "t", dedupe=mode)
    assert (out["imported"], out["duplicates"]) == expect


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "latin-1"])
def test_encodings(store, tmp_path, camp, encoding):
    f = write_csv(tmp_path / "e.csv", "Name,Phone\nMüller Björn,212-555-0100\n", encoding)
    out = import_list(store, f, camp, NOW, "t")
    assert out["imported"] == 1
    assert store.query_one("SELECT name FROM leads")["name"] == "Müller Björn"


def test_xlsx(store, tmp_path, camp):
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["Phone", "Name", "Link"])
    ws.append([2125550100, "Numeric cell", '=HYPERLINK("http://x","y")'])
    ws.append(["(305) 555-0100", "Text cell", None])
    path = tmp_path / "list.xlsx"
    wb.save(path)
    out = import_list(store, path, camp, NOW, "t")
    assert out["imported"] == 2
    row = store.query_one("SELECT custom FROM leads WHERE phone = '+12125550100'")
    assert json.loads(row["custom"])["Link"] == '=HYPERLINK("http://x","y")'


@pytest.mark.parametrize("content,msg", [
    ("", "empty"), ("phone\n", "no data rows"), ("name,email\nA,a@b\n", "no phone column"),
])
def test_bad_files_change_nothing(store, tmp_path, camp, content, msg):
    f = write_csv(tmp_path / "bad.csv", content)
    with pytest.raises(InputError, match=msg):
        import_list(store, f, camp, NOW, "t")
    assert store.query_one("SELECT COUNT(*) AS n FROM leads")["n"] == 0


def test_mapping_names_a_missing_column(store, tmp_path, camp):
    f = write_csv(tmp_path / "m.csv", "Tel,Name\n2125550100,A\n")
    with pytest.raises(InputError, match="no column 'Mobile'"):
        import_list(store, f, camp, NOW, "t", mapping="phone=Mobile")
    with pytest.raises(InputError, match="unknown field 'fone'"):
        import_list(store, f, camp, NOW, "t", mapping="fone=Tel")
    assert import_list(store, f, camp, NOW, "t", mapping="phone=Tel")["imported"] == 1


def test_binary_junk(store, tmp_path, camp):
    f = tmp_path / "junk.csv"
    f.write_bytes(bytes(range(256)) * 50)
    with pytest.raises(InputError):
        import_list(store, f, camp, NOW, "t")


def test_killed_import_leaves_a_resumable_job_and_no_dialable_half(db_path, tmp_path):
    from core.store import Store
    s = Store(db_path)
    service.ensure_defaults(s, NOW)
    create_account(s, "acme", NOW, "t")
    create_campaign(s, "big", "acme", NOW, "t")
    s.close()
    f = tmp_path / "big.csv"
    with open(f, "w") as fh:
        fh.write("phone,name\n")
        for i in range(30_000):
            fh.write(f"+1212{5550000 + i},n{i}\n")
    code = (
        "import sys, os, signal, datetime as dt\n"
        "from core.store import Store\n"
        "from campaigns.leads import import_list\n"
        "s = Store(sys.argv[1])\n"
        "def progress(rows, fraction):\n"
        "    if rows > 10000: os.kill(os.getpid(), signal.SIGKILL)\n"
        "import_list(s, sys.argv[2], 'big', dt.datetime(2026, 11, 24, 17, tzinfo=dt.timezone.utc), 't',\n"
        "            progress=progress, chunk=5000)\n"
    )
    p = subprocess.run([sys.executable, "-c", code, str(db_path), str(f)], capture_output=True, timeout=120, cwd=ROOT)
    assert p.returncode == -9, p.stderr.decode()
    s = Store(db_path)
    job = s.query_one("SELECT * FROM imports")
    assert job["status"] == "running" and 10000 < job["rows_done"] < 30001
    counts = {r["status"]: r["n"] for r in s.query("SELECT status, COUNT(*) AS n FROM leads GROUP BY status")}
    assert set(counts) == {"staged"}  # nothing the hopper would see
    out = import_list(s, f, "big", NOW, "t", resume=job["id"])
    assert (out["imported"], out["duplicates"], out["rejected"]) == (30_000, 0, 0)
    assert s.query_one("SELECT COUNT(*) AS n FROM leads WHERE status = 'new'")["n"] == 30_000
    assert s.query_one("SELECT status FROM imports")["status"] == "done"
    with pytest.raises(InputError, match="not resumable"):
        import_list(s, f, "big", NOW, "t", resume=job["id"])
    s.close()

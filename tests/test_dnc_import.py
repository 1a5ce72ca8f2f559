"""DNC imports are all or nothing; a crash leaves the previous state in force."""

import datetime as dt
import os
import subprocess
import sys

import pytest

from core.errors import InputError
from core import audit
from rules import service

NOW = dt.datetime(2026, 11, 27, 18, 0, tzinfo=dt.timezone.utc)
AT = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.timezone.utc)


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_company_import_is_one_transaction(store, tmp_path, monkeypatch):
    from campaigns.store import create_account
    create_account(store, "acme", NOW, "t")
    f = write(tmp_path / "optouts.txt", [f"212555{i:04d}" for i in range(100)])
    real = audit.append

    def crash(*a, **kw):
        raise RuntimeError("power cut")

    monkeypatch.setattr(audit, "append", crash)
    with pytest.raises(RuntimeError):
        service.import_dnc(store, f, NOW, "t", source="company")
    assert store.query_one("SELECT COUNT(*) AS n FROM dnc_entries")["n"] == 0
    monkeypatch.setattr(audit, "append", real)
    out = service.import_dnc(store, f, NOW, "t", source="company")
    assert out["added"] == 100


def _registry(tmp_path, name, numbers, junk=()):
    return write(tmp_path / name, ["AreaCode,PhoneNumber"] + [f"{n[:3]},{n[3:]}" for n in numbers] + list(junk))


def test_national_registry_import_lookup_staleness(store, tmp_path):
    service.ensure_defaults(store, NOW)
    f = _registry(tmp_path, "ftc.txt", ["2125550100", "3055550100"], junk=["bogus line", "212,55501"])
    out = service.import_dnc(store, f, NOW, "t", source="national", as_of="2026-11-20")
    assert (out["numbers"], out["junk"]) == (2, 2)
    v1, v2 = service.check_numbers(store, ["212-555-0100", "212-555-0101"], NOW, at=AT)
    assert [r.rule for r in v1.reasons] == ["US-DNC-NAT"] and "as of 2026-11-20" in v1.reasons[0].detail
    assert v2.allowed
    # 32 days after the copy: every US number is blocked until a refresh
    late = dt.datetime(2026, 12, 22, 17, 0, tzinfo=dt.timezone.utc)
    v = service.check_numbers(store, ["212-555-0101"], late, at=late)[0]
    assert [r.rule for r in v.reasons] == ["US-DNC-NAT-STALE"]
    # a refresh replaces the registry in force
    f2 = _registry(tmp_path, "ftc2.txt", ["2125550101"])
    service.import_dnc(store, f2, late, "t", source="national", as_of="2026-12-21")
    a, b = service.check_numbers(store, ["212-555-0100", "212-555-0101"], late, at=late)
    assert a.allowed and [r.rule for r in b.reasons] == ["US-DNC-NAT"]


def test_national_import_needs_a_date_and_numbers(store, tmp_path):
    f = _registry(tmp_path, "ftc.txt", ["2125550100"])
    with pytest.raises(InputError, match="--as-of"):
        service.import_dnc(store, f, NOW, "t", source="national")
    with pytest.raises(InputError, match="in the future"):
        service.import_dnc(store, f, NOW, "t", source="national", as_of="2026-12-01")
    with pytest.raises(InputError, match="not a date"):
        service.import_dnc(store, f, NOW, "t", source="national", as_of="20/11/2026")
    junk = write(tmp_path / "junk.txt", ["hello", "world"])
    with pytest.raises(InputError, match="no numbers found"):
        service.import_dnc(store, junk, NOW, "t", source="national", as_of="2026-11-20")
    assert store.query("SELECT * FROM dnc_registries") == []


def test_crash_between_file_and_commit_keeps_previous_registry(store, tmp_path, monkeypatch):
    service.ensure_defaults(store, NOW)
    service.import_dnc(store, _registry(tmp_path, "a.txt", ["2125550100"]), NOW, "t", source="national",
                       as_of="2026-11-20")
    monkeypatch.setattr(audit, "append", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("crash")))
    with pytest.raises(RuntimeError):
        service.import_dnc(store, _registry(tmp_path, "b.txt", ["2125550101"]), NOW, "t", source="national",
                           as_of="2026-11-26")
    rows = store.query("SELECT as_of FROM dnc_registries")
    assert [r["as_of"] for r in rows] == ["2026-11-20"]
    assert len(list(store.files_dir.glob("registry-*"))) == 1  # the half-written snapshot is gone


def test_killed_import_process_leaves_previous_registry(db_path, tmp_path):
    """SIGKILL a real import process mid-way: the database still has the old registry
    and the next import works."""
    from core.store import Store
    s = Store(db_path)
    service.ensure_defaults(s, NOW)
    service.import_dnc(s, _registry(tmp_path, "a.txt", ["2125550100"]), NOW, "t", source="national",
                       as_of="2026-11-20")
    s.close()
    big = tmp_path / "big.txt"
    with open(big, "w") as fh:
        for i in range(3_000_000):
            fh.write(f"{201 + i % 700},{2000000 + i}\n")
    code = (
        "import sys, os, signal, datetime as dt\n"
        "from core.store import Store\n"
        "from rules import service\n"
        "s = Store(sys.argv[1])\n"
        "def progress(done, total=None):\n"
        "    if done > 0: os.kill(os.getpid(), signal.SIGKILL)\n"
        "service.import_dnc(s, sys.argv[2], dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc), 't',\n"
        "                   source='national', as_of='2026-11-26', progress=progress)\n"
    )
    p = subprocess.run([sys.executable, "-c", code, str(db_path), str(big)], capture_output=True, timeout=120,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert p.returncode == -9, p.stderr.decode()
    s = Store(db_path)
    assert [r["as_of"] for r in s.query("SELECT as_of FROM dnc_registries")] == ["2026-11-20"]
    v = service.check_numbers(s, ["212-555-0100"], NOW, at=AT)[0]
    assert [r.rule for r in v.reasons] == ["US-DNC-NAT"]
    out = service.import_dnc(s, _registry(tmp_path, "c.txt", ["2125550101"]), NOW, "t", source="national",
                             as_of="2026-11-26")
    assert out["numbers"] == 1
    s.close()


def test_unreadable_registry_blocks_with_a_reason(store, tmp_path):
    service.ensure_defaults(store, NOW)
    service.import_dnc(store, _registry(tmp_path, "a.txt", ["2125550100"]), NOW, "t", source="national",
                       as_of="2026-11-20")
    service._registry_cache.clear()
    for p in store.files_dir.glob("registry-*"):
        p.write_bytes(p.read_bytes()[:-3] + b"xyz")  # corrupted on disk
    v = service.check_numbers(store, ["212-555-0101"], NOW, at=AT)[0]
    assert [r.rule for r in v.reasons] == ["US-DNC-NAT-UNREADABLE"]


def test_uk_tps_registry(store, tmp_path):
    service.ensure_defaults(store, NOW)
    f = write(tmp_path / "tps.txt", ["02079460000", "+44 20 7946 0001", "447700900123", "not a number"])
    out = service.import_dnc(store, f, NOW, "t", source="national", as_of="2026-11-20", jurisdiction="GB")
    assert (out["jurisdiction"], out["numbers"], out["junk"]) == ("GB", 3, 1)
    at = dt.datetime(2026, 11, 24, 15, 0, tzinfo=dt.timezone.utc)  # 15:00 London, 10:00 New York
    a, b, c = service.check_numbers(store, ["+44 20 7946 0000", "+44 20 7946 0002", "212-555-0100"], NOW, at=at)
    assert [r.rule for r in a.reasons] == ["GB-DNC-NAT"]
    assert b.allowed
    assert [r.rule for r in c.reasons] == ["US-DNC-NAT-MISSING"]  # the US still has none
    # TPS copies older than 28 days block UK calls
    late = dt.datetime(2026, 12, 19, 15, 0, tzinfo=dt.timezone.utc)
    assert [r.rule for r in service.check_numbers(store, ["+44 20 7946 0002"], late, at=late)[0].reasons] == \
        ["GB-DNC-NAT-STALE"]

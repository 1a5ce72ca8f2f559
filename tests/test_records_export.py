"""A call's compliance evidence, recorded at dial time through the real Dialer (on a
``task.Clock``, a recording stand-in for the SIP pool and a real SQLite store), read
back and printed by the CLI; and the monthly records export (columns, one account
only, the manifest's checksums, recordings included or listed as missing)."""

import csv
import datetime as _dt
import hashlib
import io
import json
import os
import zipfile

import pytest
from click.testing import CliRunner
from twisted.internet import task

from billing import ledger
from billing.decks import import_deck
from billing.plans import set_plan
from billing_fixtures import write_deck
from campaigns.leads import import_list
from campaigns.store import add_number, change_state, create_account, create_campaign
from cli import main
from core.errors import InputError, NotFound
from core.store import Store
from core.timeutil import to_ms
from dialer import abandons
from dialer.calls import CallLeg
from dialer.cdr import Cdr, attach_recording, write_cdr
from dialer.engine import Dialer
from dialer.evidence import NOT_RECORDED, at_dial, call_evidence, describe
from dialer.export import COLUMNS, export_month
from rules import service
from sip_harness import write_tone

T0 = _dt.datetime(2026, 11, 24, 17, 0, tzinfo=_dt.timezone.utc)  # noon in New York, a Tuesday
T0_MS = to_ms(T0)
HOUR = 3_600_000


class FakePool:
    def __init__(self, clock):
        self.clock, self.dials = clock, []

    def dial(self, key, uri, **fields):
        self.dials.append(key)
        return 5060

    def hangup(self, key, code=None):
        pass


def _leg(account_id, campaign_id, call_id, kind, start_ms, verdict):
    leg = CallLeg(call_id, "+12125557000", now=start_ms, account_id=account_id, campaign_id=campaign_id,
                  caller_id="+12125559999", verdict=verdict)
    leg.answered(now=start_ms + 4000)
    if kind == "connected":
        leg.agent_assigned(7, now=start_ms + 4500)
    else:
        leg.window_expired(now=start_ms + 6000)
    leg.ended(200, "BYE", True, answered_ms=start_ms + 4000, ended_ms=start_ms + 64_000)
    return leg


OLD_VERDICT = {"allowed": True, "ruleset": "US@1", "zones": ["America/New_York"], "at": "2026-11-24T15:00:00Z",
               "reasons": [], "flags": []}  # what a call kept before evidence was recorded


@pytest.fixture
def world(tmp_path):
    """acme (billed in New York time) with campaign c: four calls in its abandon window
    before the loop starts (one abandoned, kept as calls were before evidence), then a
    Dialer on a clock places calls; beta, another account, with a call of its own."""
    store = Store(tmp_path / "d.db")
    service.ensure_defaults(store, T0)
    reg = tmp_path / "reg.txt"
    reg.write_text("2125550199\n")
    service.import_dnc(store, reg, T0, "t", source="national", as_of="2026-11-20")
    for name in ("acme", "beta"):
        create_account(store, name, T0, "t", connection="gshdsl", lines=10)
    add_number(store, "acme", "212 555 9999", T0, "t")
    add_number(store, "beta", "212 555 8888", T0, "t")
    set_plan(store, "acme", T0, "t", time_zone="America/New_York")
    service.add_dnc(store, ["2125550100"], T0, "t", account="acme", reason="asked")  # company list version 1
    create_campaign(store, "c", "acme", T0, "t", caller_id="212-555-9999", greeting=write_tone(tmp_path / "g.wav"),
                    dial_mode="power", power_ratio="1")
    create_campaign(store, "secret", "beta", T0, "t", caller_id="212-555-8888")
    ids = {r["name"]: r["id"] for r in store.query("SELECT id, name FROM accounts")}
    camps = {r["name"]: r["id"] for r in store.query("SELECT id, name FROM campaigns")}
    for i, kind in enumerate(("connected", "connected", "connected", "abandoned")):
        leg = _leg(ids["acme"], camps["c"], f"old-{i}", kind, T0_MS - 2 * HOUR + i * 120_000, OLD_VERDICT)
        write_cdr(store, Cdr.from_leg(leg), T0)
    write_cdr(store, Cdr.from_leg(_leg(ids["beta"], camps["secret"], "beta-1", "connected", T0_MS - HOUR,
                                       OLD_VERDICT)), T0)
    f = tmp_path / "list.csv"
    f.write_text("phone\n" + "\n".join(f"212555{1000 + 29 * i:04d}" for i in range(6)) + "\n")
    import_list(store, f, "c", T0, "t")
    change_state(store, "c", "start", T0, "t")
    clock = task.Clock()
    clock.advance(T0.timestamp())
    pool = FakePool(clock)
    d = Dialer(clock, store, "c", pool, route=lambda n: f"sip:{n[1:]}@carrier", tick=0.1, cps=4)
    for uid in (1, 2):
        d.floor.login(uid, d.cid, d.now())
    d.start()
    clock.advance(0.3)
    busy, no_answer = pool.dials[:2]
    d.on_event({"ev": "ended", "key": busy, "code": 486, "reason": "Busy Here"})
    clock.advance(20)
    d.on_event({"ev": "ended", "key": no_answer, "code": 487, "reason": "Request Terminated"})
    clock.advance(0.3)
    d.stop()
    return {"store": store, "dialer": d, "pool": pool, "busy": busy, "no_answer": no_answer, "ids": ids,
            "camps": camps, "tmp": tmp_path}


def test_evidence_is_recorded_when_the_call_is_placed(world):
    store, busy = world["store"], world["busy"]
    row = store.query_one("SELECT ruleset, verdict FROM cdrs WHERE call_id = ?", (busy,))
    assert row["ruleset"] == "US@1" and json.loads(row["verdict"])["evidence"] == 1
    ev = call_evidence(store, busy, "acme")
    assert ev["state"] == "ended" and ev["outcome"]["disposition"] == "busy" and ev["campaign"] == "c"
    assert ev["rules"] == {"ruleset": "US@1", "checked_at": "2026-11-24T17:00:00Z", "allowed": True, "reasons": [],
                           "flags": []}
    assert ev["callee"]["zones"] == ["America/New_York"]
    (w,) = ev["callee"]["local_time_and_windows"]
    assert (w["zone"], w["local"], w["windows"], w["rules"]) == ("America/New_York", "2026-11-24T12:00-0500",
                                                                 ["08:00-21:00"], ["US"])
    reg = ev["dnc"]["registry"]
    assert (reg["jurisdiction"], reg["as_of"], reg["age_days"], reg["readable"]) == ("US", "2026-11-20", 4, True)
    assert ev["dnc"]["registry_required"] is True and ev["dnc"]["registry_waived"] is False
    assert ev["dnc"]["company_list_version"] == 1
    # the window the loop started from: 4 live answers, 1 abandoned, in US's 720 h
    aw = ev["abandon_window"]
    assert (aw["live_answers"], aw["abandons"], aw["rate"], aw["hours"], aw["cap"], aw["ruleset"]) == \
        (4, 1, "0.2500", 720.0, "0.03", "US@1")
    assert ev["started_local"].endswith("-0500") and ev["account_time_zone"] == "America/New_York"
    # a call dialled later in the loop and still open when it stopped: its open row has it
    later = [k for k in world["pool"].dials if k not in (busy, world["no_answer"])]
    assert later
    ev2 = call_evidence(store, later[0], "acme")
    assert ev2["state"].startswith("open") and ev2["dnc"]["registry"]["as_of"] == "2026-11-20"


def test_a_call_interrupted_by_a_crash_keeps_its_evidence_in_the_cdr_recovery_writes(world):
    from dialer.opencalls import recover
    store = world["store"]
    open_ids = [r["call_id"] for r in store.query("SELECT call_id FROM open_calls")]
    assert open_ids
    recover(store, T0 + _dt.timedelta(minutes=5), node="local")
    ev = call_evidence(store, open_ids[0], "acme")
    assert ev["state"] == "ended" and ev["outcome"]["hangup_cause"] == "DIALER_STOPPED"
    assert ev["evidence_version"] == 1 and ev["dnc"]["registry"]["as_of"] == "2026-11-20"
    assert ev["abandon_window"]["live_answers"] == 4


def test_a_call_placed_before_evidence_says_what_was_not_recorded(world):
    ev = call_evidence(world["store"], "old-0", "acme")
    assert ev["evidence_version"] is None and ev["rules"]["ruleset"] == "US@1"
    assert ev["dnc"] == ev["abandon_window"] == ev["callee"]["local_time_and_windows"] == NOT_RECORDED
    assert NOT_RECORDED == "not recorded (before evidence v1)"
    assert ev["callee"]["zones"] == ["America/New_York"]  # recorded then already
    assert ev["callee"]["started_in_zones"]["America/New_York"].startswith("2026-11-24T10:00:00")
    text = "\n".join(describe(ev))
    assert "DNC: not recorded (before evidence v1)" in text and "abandon window at the dial: not recorded" in text


def test_the_abandon_state_is_the_windows_at_that_instant():
    w = abandons.AbandonWindow(24.0, [(T0.timestamp() - 3600, 10, 1)])
    v = at_dial({"allowed": True, "ruleset": "GB@1"}, w, T0.timestamp(), None)
    assert v["abandon_window"]["live_answers"] == 10 and v["abandon_window"]["rate"] == "0.1000"
    assert at_dial({"allowed": True}, w, T0.timestamp() + 24 * 3600, None)["abandon_window"]["live_answers"] == 0
    assert at_dial(None, w, T0.timestamp()) is None


def test_evidence_of_another_accounts_call_or_an_unknown_one_is_not_found(world):
    store = world["store"]
    with pytest.raises(NotFound, match="no call 'beta-1' in account 'acme'"):
        call_evidence(store, "beta-1", "acme")
    with pytest.raises(NotFound, match="no call"):
        call_evidence(store, world["busy"], "beta")
    with pytest.raises(NotFound, match="no call"):
        call_evidence(store, "nope", "acme")
    with pytest.raises(InputError, match="several accounts"):
        call_evidence(store, world["busy"])
    with pytest.raises(InputError, match="not a call id"):
        call_evidence(store, " ", "acme")


def _archive(path):
    zf = zipfile.ZipFile(path)
    folder = zf.namelist()[0].split("/")[0]
    return zf, folder, {n[len(folder) + 1:]: zf.read(n) for n in zf.namelist()}


def test_the_monthly_export(world):
    store, tmp = world["store"], world["tmp"]
    import_deck(store, write_deck(tmp / "deck.csv", ["1,US,0.002,6,6,,,"]), "carrier", T0, "t")
    ledger.bill_run(store, "acme", "2026-11", T0, "t")
    rec = tmp / "rec-old-0.wav"
    write_tone(rec)
    attach_recording(store, "old-0", str(rec), 60_000)
    attach_recording(store, "old-1", str(tmp / "gone.wav"), 60_000)  # its file is not there
    beta_rec = tmp / "beta.wav"
    write_tone(beta_rec)
    attach_recording(store, "beta-1", str(beta_rec), 60_000)
    out = export_month(store, "acme", "2026-11", tmp / "acme.zip", T0)
    # four calls from before and the two the loop saw end (the others were still open when it stopped)
    assert (out["calls"], out["recordings"], out["recordings_missing"]) == (6, 1, 1)
    zf, folder, files = _archive(tmp / "acme.zip")
    assert folder == "records-acme-2026-11"
    assert set(files) == {"README.txt", "cdrs.csv", "evidence.jsonl", "recordings/old-0.wav",
                          "recordings-missing.csv", "MANIFEST.sha256"}
    # the manifest covers every other file, and each checksum verifies
    listed = dict(reversed(line.split("  ", 1)) for line in files["MANIFEST.sha256"].decode().splitlines())
    assert set(listed) == set(files) - {"MANIFEST.sha256"}
    for name, digest in listed.items():
        assert hashlib.sha256(files[name]).hexdigest() == digest, name
    assert out["sha256"] == hashlib.sha256((tmp / "acme.zip").read_bytes()).hexdigest()
    assert files["recordings/old-0.wav"] == rec.read_bytes()
    # cdrs.csv: Asterisk's columns then ours; only acme's calls of the month, oldest first
    rows = list(csv.DictReader(io.StringIO(files["cdrs.csv"].decode())))
    assert list(rows[0]) == list(COLUMNS) and len(set(COLUMNS)) == len(COLUMNS)
    assert [r["uniqueid"] for r in rows] == ["old-0", "old-1", "old-2", "old-3", world["busy"], world["no_answer"]]
    by = {r["call_id"]: r for r in rows}
    b = by[world["busy"]]
    assert (b["accountcode"], b["dst"], b["src"], b["dcontext"], b["disposition"], b["userfield"]) == \
        ("acme", "+12125551000", "+12125559999", "c", "BUSY", "busy")
    assert b["start"] == "2026-11-24 17:00:00" and b["started_at"].startswith("2026-11-24T17:00:00")
    assert b["started_local"].startswith("2026-11-24T12:00:00") and b["started_local"].endswith("-0500")
    assert (b["ruleset"], b["evidence_version"], b["recording_status"], b["cost"]) == ("US@1", "1", "none", "")
    o = by["old-0"]
    assert (o["disposition"], o["billsec"], o["recording_file"], o["recording_status"]) == \
        ("ANSWERED", "60", "recordings/old-0.wav", "included")
    assert o["evidence_version"] == "" and o["telecom_cost"] == "0.002000" and o["cost"] == "0.020800"
    assert by["old-1"]["recording_status"] == "missing" and by["old-3"]["abandoned"] == "1"
    missing = list(csv.DictReader(io.StringIO(files["recordings-missing.csv"].decode())))
    assert [(m["call_id"], m["recording_path"]) for m in missing] == [("old-1", str(tmp / "gone.wav"))]
    # evidence.jsonl: one line per call, the same order
    evs = [json.loads(line) for line in files["evidence.jsonl"].decode().splitlines()]
    assert [e["call_id"] for e in evs] == [r["call_id"] for r in rows]
    assert evs[4]["dnc"]["registry"]["as_of"] == "2026-11-20" and evs[0]["dnc"] == NOT_RECORDED
    # nothing of beta's
    blob = b"".join(files.values())
    assert b"beta-1" not in blob and b"secret" not in blob and b"8888" not in blob
    assert b"MANIFEST.sha256" in files["README.txt"] and b"America/New_York" in files["README.txt"]
    # beta's own export has its call and recording only
    bout = export_month(store, "beta", "2026-11", tmp / "beta.zip", T0)
    _, _, bfiles = _archive(tmp / "beta.zip")
    assert bout["calls"] == 1 and "recordings/beta-1.wav" in bfiles
    assert b"old-0" not in b"".join(bfiles.values())


def test_export_refusals(world):
    store, tmp = world["store"], world["tmp"]
    export_month(store, "acme", "2026-10", tmp / "empty.zip", T0)  # an empty month is an archive with a header
    _, _, files = _archive(tmp / "empty.zip")
    assert files["cdrs.csv"].decode().count("\n") == 1 and files["evidence.jsonl"] == b""
    with pytest.raises(InputError, match="exists"):
        export_month(store, "acme", "2026-11", tmp / "empty.zip", T0)
    with pytest.raises(InputError, match="not a month"):
        export_month(store, "acme", "2026-1", tmp / "x.zip", T0)
    with pytest.raises(InputError, match="does not exist"):
        export_month(store, "acme", "2026-11", tmp / "no" / "x.zip", T0)
    with pytest.raises(NotFound):
        export_month(store, "nobody", "2026-11", tmp / "x.zip", T0)
    ro = tmp / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not os.access(ro, os.W_OK):  # (root writes anywhere)
            with pytest.raises(InputError, match="cannot write"):
                export_month(store, "acme", "2026-11", ro / "x.zip", T0)
    finally:
        ro.chmod(0o700)
    assert sorted(p.name for p in tmp.glob("*.zip")) == ["empty.zip"] and not list(tmp.glob(".*.part"))


def test_cli_call_evidence_and_records_export(world):
    store, tmp = world["store"], world["tmp"]
    db = str(store.path)

    def run(*args):
        return CliRunner().invoke(main, ["--db", db, *args], catch_exceptions=False)

    r = run("call", "evidence", world["busy"], "--account", "acme", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["dnc"]["registry"]["as_of"] == "2026-11-20" and out["abandon_window"]["abandons"] == 1
    r = run("call", "evidence", world["busy"], "--account", "acme")
    assert r.exit_code == 0, r.output
    assert "rule set: US@1" in r.output and "as of 2026-11-20" in r.output and "12:00-0500" in r.output
    assert "1 abandoned of 4 live answers in the last 720 h" in r.output
    for args, message in (((world["busy"], "--account", "beta"), "no call"), (("nope", "--account", "acme"), "no call"),
                          ((world["busy"],), "several accounts")):
        r = run("call", "evidence", *args)
        assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output
    r = run("records", "export", "--account", "acme", "--month", "2026-11", "--out", str(tmp / "c.zip"), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["calls"] == 6 and zipfile.is_zipfile(tmp / "c.zip")
    r = run("records", "export", "--account", "acme", "--month", "2026-11", "--out", str(tmp / "c.zip"))
    assert r.exit_code == 1 and "exists" in r.output
    r = run("records", "export", "--account", "acme", "--month", "november", "--out", str(tmp / "d.zip"))
    assert r.exit_code == 1 and "not a month" in r.output and "Traceback" not in r.output

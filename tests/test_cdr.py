"""Call detail records on a real SQLite file: idempotence with the call attempt,
millisecond instants, billable seconds, stats in Decimal, export."""

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest

from campaigns.leads import get_lead, import_list
from campaigns.store import create_account, create_campaign
from dialer.calls import CallLeg
from dialer.cdr import Cdr, attach_recording, campaign_stats, export_csv, list_cdrs, write_cdr
from core.errors import InputError, NotFound, StateError
from core.timeutil import to_ms
from rules import service

NOW = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.timezone.utc)
T0 = to_ms(NOW)


@pytest.fixture
def camp(store, tmp_path):
    service.ensure_defaults(store, NOW)
    acc = create_account(store, "acme", NOW, "t")
    c = create_campaign(store, "spring", "acme", NOW, "t")
    f = tmp_path / "list.csv"
    f.write_text("phone\n3055550100\n2125550100\n2125550177\n")
    import_list(store, f, "spring", NOW, "t")
    leads = {r["phone"]: r["id"] for r in store.query("SELECT id, phone FROM leads")}
    return {"account_id": acc["id"], "campaign_id": c["id"], "leads": leads}


def leg_for(camp, call_id, phone="+13055550100", start=T0, lead=True, **kw):
    return CallLeg(call_id, phone, now=start, account_id=camp["account_id"], campaign_id=camp["campaign_id"],
                   lead_id=camp["leads"][phone] if lead else None, caller_id="+12125559999", trunk="carrier-a",
                   worker_id="w1", verdict={"allowed": True, "ruleset": "US@1", "reasons": [], "flags": [],
                                           "zones": ["America/New_York"]}, **kw)


def connected(camp, call_id, start=T0, talk_ms=60_001, phone="+13055550100", **kw):
    leg = leg_for(camp, call_id, phone, start, **kw)
    leg.ringing(now=start + 1000)
    leg.answered(now=start + 4000)
    leg.agent_assigned(5, now=start + 4800)
    leg.ended(200, "BYE", True, started_ms=start + 10, answered_ms=start + 4000, ended_ms=start + 4000 + talk_ms)
    return leg


def abandoned(camp, call_id, start=T0, phone="+12125550100"):
    leg = leg_for(camp, call_id, phone, start)
    leg.answered(now=start + 3000)
    leg.window_expired(now=start + 5000)
    leg.ended(200, "BYE", True, ended_ms=start + 20_000)
    return leg


def unanswered(camp, call_id, code, reason="", start=T0, phone="+12125550177"):
    leg = leg_for(camp, call_id, phone, start)
    leg.ringing(now=start + 500)
    leg.ended(code, reason, ended_ms=start + 5000)
    return leg


def attempts(store, call_id=None):
    if call_id:
        return store.query("SELECT * FROM call_attempts WHERE call_id = ?", (call_id,))
    return store.query("SELECT * FROM call_attempts ORDER BY started_at")


def test_same_call_id_twice_is_one_row_and_one_attempt(store, camp):
    cdr = Cdr.from_leg(connected(camp, "call-1"))
    first = write_cdr(store, cdr, NOW)
    assert first["written"] and first["lead"]["status"] == "done"
    again = write_cdr(store, cdr, NOW + dt.timedelta(minutes=5))
    assert again == {"call_id": "call-1", "written": False, "same": True, "lead": None}
    assert len(store.query("SELECT * FROM cdrs")) == 1
    assert len(attempts(store)) == 1
    assert get_lead(store, camp["leads"]["+13055550100"])["attempts"] == 1
    assert store.query_one("SELECT created_at FROM cdrs")["created_at"] == "2026-11-24T17:00:00.000Z"
    other = Cdr.from_leg(connected(camp, "call-1", talk_ms=5000))  # same id, another story
    assert write_cdr(store, other, NOW)["same"] is False
    assert store.query_one("SELECT billsec FROM cdrs")["billsec"] == 61


def test_instants_keep_milliseconds_and_billsec_rounds_up(store, camp):
    write_cdr(store, Cdr.from_leg(connected(camp, "call-ms", talk_ms=60_001)), NOW)
    (row,) = list_cdrs(store)
    assert row["started_at"] == "2026-11-24T17:00:00.010Z"
    assert row["answered_at"] == "2026-11-24T17:00:04.000Z"
    assert row["bridged_at"] == "2026-11-24T17:00:04.800Z"
    assert row["ended_at"] == "2026-11-24T17:01:04.001Z"
    assert (row["duration_ms"], row["billable_ms"], row["billsec"], row["ring_ms"], row["connect_delay_ms"]) == \
           (63_991, 60_001, 61, 3990, 800)
    assert (row["disposition"], row["sip_code"], row["sip_reason"], row["hangup_cause"], row["hangup_by"]) == \
           ("connected", 200, "BYE", "NORMAL_CLEARING", "callee")
    assert (row["agent_id"], row["trunk"], row["caller_id"], row["destination"], row["worker_id"]) == \
           (5, "carrier-a", "+12125559999", "+13055550100", "w1")
    assert row["ruleset"] == "US@1" and row["verdict"]["allowed"] is True
    assert row["abandoned"] is False and row["lead_outcome"] == "answered-human"
    # the attempt the frequency caps read is at the call's start
    (att,) = attempts(store, "call-ms")
    assert att["started_at"] == "2026-11-24T17:00:00.010Z" and att["outcome"] == "answered-human"


def test_exact_billsec_boundaries_in_the_store(store, camp):
    for i, talk in enumerate((1, 1000, 1001)):
        write_cdr(store, Cdr.from_leg(connected(camp, f"b{i}", start=T0 + i * 100_000, talk_ms=talk)), NOW)
    assert [r["billsec"] for r in list_cdrs(store)] == [1, 1, 2]


def test_the_cdr_and_the_attempt_commit_together(store, camp):
    leg = connected(camp, "call-x")
    leg.lead_id = 999_999  # a lead that does not exist: the whole write is refused
    with pytest.raises(NotFound):
        write_cdr(store, Cdr.from_leg(leg), NOW)
    assert store.query("SELECT * FROM cdrs") == [] and attempts(store) == []


def test_a_call_without_a_lead_still_leaves_its_attempt(store, camp):
    leg = unanswered(camp, "manual-1", 486, "Busy Here")
    leg.lead_id = None
    write_cdr(store, Cdr.from_leg(leg), NOW)
    (att,) = attempts(store)
    assert (att["number"], att["outcome"], att["campaign_id"]) == ("+12125550177", "busy", camp["campaign_id"])
    # the engine's history loader sees it
    assert service.load_history(store, [12125550177], NOW + dt.timedelta(minutes=1), 24,
                                camp["account_id"])[12125550177][0][1] == "busy"
    assert att["account_id"] == camp["account_id"]


def test_worker_died_gives_a_failed_record_with_its_reason(store, camp):
    leg = unanswered(camp, "dead-1", 0, "worker died")
    out = write_cdr(store, Cdr.from_leg(leg), NOW)
    (row,) = list_cdrs(store)
    assert (row["disposition"], row["sip_code"], row["sip_reason"], row["hangup_cause"], row["hangup_by"]) == \
           ("failed", 0, "worker died", "CRASH", "worker")
    assert row["billsec"] == 0 and row["answered_at"] is None
    assert out["lead"]["status"] == "retry" and out["lead"]["disposition"] == "failed"


def test_abandon_is_recorded_for_the_lockouts(store, camp):
    write_cdr(store, Cdr.from_leg(abandoned(camp, "ab-1")), NOW)
    (row,) = list_cdrs(store)
    assert row["abandoned"] is True and row["disposition"] == "abandoned" and row["bridged_at"] is None
    assert attempts(store, "ab-1")[0]["outcome"] == "abandoned"


def test_invalid_number_finishes_the_lead(store, camp):
    out = write_cdr(store, Cdr.from_leg(unanswered(camp, "inv-1", 404, "Not Found")), NOW)
    assert out["lead"]["status"] == "done" and out["lead"]["disposition"] == "invalid-number"


def test_agent_wrap_up_decides_the_lead(store, camp):
    leg = connected(camp, "cb-1")
    with pytest.raises(InputError, match="needs the callback time"):
        Cdr.from_leg(leg, agent_disposition="callback")
    with pytest.raises(InputError, match="unknown disposition"):
        Cdr.from_leg(leg, agent_disposition="maybe")
    at = NOW + dt.timedelta(days=1)
    out = write_cdr(store, Cdr.from_leg(leg, agent_disposition="callback", callback_at=at), NOW)
    assert out["lead"]["status"] == "callback"
    leg = connected(camp, "dnc-1", phone="+12125550100", start=T0 + 200_000)
    out = write_cdr(store, Cdr.from_leg(leg, agent_disposition="dnc-requested"), NOW)
    assert out["lead"]["status"] == "dnc"
    assert store.query("SELECT pattern FROM dnc_entries WHERE scope = ?",
                       (f"account:{camp['account_id']}",))[0]["pattern"] == "12125550100"
    leg = connected(camp, "own-1", phone="+12125550177", start=T0 + 400_000)
    cdr = Cdr.from_leg(leg, agent_disposition="demo-booked", dispositions={"demo-booked": "answered-human"})
    assert cdr.agent_disposition == "demo-booked" and cdr.lead_outcome == "answered-human"
    with pytest.raises(InputError, match="reached no agent"):
        Cdr.from_leg(abandoned(camp, "ab-2"), agent_disposition="sale")


def test_a_record_needs_an_ended_call_and_an_account(camp):
    leg = leg_for(camp, "live-1")
    with pytest.raises(StateError, match="when it has ended"):
        Cdr.from_leg(leg)
    leg = unanswered(camp, "noacc", 486)
    leg.account_id = None
    with pytest.raises(InputError, match="no account"):
        Cdr.from_leg(leg)


def test_campaign_stats(store, camp):
    legs = [connected(camp, "s1", talk_ms=60_001), abandoned(camp, "s2", start=T0 + 1000),
            unanswered(camp, "s3", 486, start=T0 + 2000), unanswered(camp, "s4", 487, start=T0 + 3000),
            unanswered(camp, "s5", 0, "worker died", start=T0 + 4000)]
    inside = leg_for(camp, "s6", "+12125550177", T0 + 5000)
    inside.answered(now=T0 + 6000)
    inside.ended(200, "BYE", True, ended_ms=T0 + 7500)  # hung up inside the window: answered, not abandoned
    legs.append(inside)
    for leg in legs:
        write_cdr(store, Cdr.from_leg(leg), NOW)
    s = campaign_stats(store, "spring", NOW)
    assert (s["dials"], s["answers"], s["live_answers"], s["connects"], s["abandons"]) == (6, 3, 3, 1, 1)
    assert s["abandon_rate"] == Decimal("0.3334")  # 1/3 rounded up: never understated
    # 61 + 17 (abandoned: answered at +3 s, ended at +20 s) + 2 = 80 s
    assert s["billable_seconds"] == 80 and s["billable_minutes"] == Decimal("1.333334")
    assert isinstance(s["billable_minutes"], Decimal)
    assert s["by_disposition"] == {"abandoned": 1, "answered": 1, "busy": 1, "connected": 1, "failed": 1,
                                   "no-answer": 1}
    assert campaign_stats(store, camp["campaign_id"], NOW + dt.timedelta(hours=1))["dials"] == 0
    assert campaign_stats(store, "spring", NOW + dt.timedelta(hours=1))["abandon_rate"] is None
    assert campaign_stats(store, "spring", NOW, until=NOW + dt.timedelta(seconds=2))["dials"] == 2


def test_billable_minutes_are_exact_decimals(store, camp):
    for i in range(60):  # the float trap: 60 x 1 s at 0.0188/min
        write_cdr(store, Cdr.from_leg(connected(camp, f"m{i}", start=T0 + i * 100_000, talk_ms=1000)), NOW)
    s = campaign_stats(store, "spring", NOW)
    assert s["billable_minutes"] == Decimal("1") and s["billable_minutes"] * Decimal("0.0188") == Decimal("0.0188")


def test_list_filters(store, camp):
    for i in range(5):
        write_cdr(store, Cdr.from_leg(unanswered(camp, f"l{i}", 480, start=T0 + i * 60_000)), NOW)
    assert [r["call_id"] for r in list_cdrs(store, campaign="spring")] == ["l0", "l1", "l2", "l3", "l4"]
    assert len(list_cdrs(store, account="acme", limit=2)) == 2
    assert len(list_cdrs(store, account=camp["account_id"])) == 5
    got = list_cdrs(store, since=NOW + dt.timedelta(minutes=1), until=NOW + dt.timedelta(minutes=3))
    assert [r["call_id"] for r in got] == ["l1", "l2"]  # half-open
    assert got[0]["campaign"] == "spring" and got[0]["account"] == "acme"
    with pytest.raises(NotFound, match="no campaign named 'autumn'"):
        list_cdrs(store, campaign="autumn")
    with pytest.raises(InputError, match="limit"):
        list_cdrs(store, limit=0)


def test_recording_attached_after_the_record(store, camp):
    leg = connected(camp, "rec-1")
    write_cdr(store, Cdr.from_leg(leg), NOW)
    assert attach_recording(store, "rec-1", "rec/rec-1.wav", 64_000) is True
    assert attach_recording(store, "rec-1", "rec/rec-1.wav", 64_000) is False
    with pytest.raises(InputError, match="already has its recording"):
        attach_recording(store, "rec-1", "rec/other.wav")
    with pytest.raises(NotFound):
        attach_recording(store, "nope", "x.wav")
    assert list_cdrs(store)[0]["recording_path"] == "rec/rec-1.wav"
    # a recording that came before the record goes in with it
    leg = connected(camp, "rec-2", start=T0 + 100_000, phone="+12125550100")
    leg.recording_done("rec/rec-2.wav", 63.5, now=leg.ended_ms + 10)
    write_cdr(store, Cdr.from_leg(leg), NOW)
    assert list_cdrs(store)[1]["recording_ms"] == 63_500


def test_export_in_asterisk_columns(store, camp):
    write_cdr(store, Cdr.from_leg(connected(camp, "e1", talk_ms=60_001)), NOW)
    write_cdr(store, Cdr.from_leg(unanswered(camp, "e2", 603, "=Decline", start=T0 + 10_000)), NOW)
    write_cdr(store, Cdr.from_leg(unanswered(camp, "e3", 404, "Not Found", start=T0 + 20_000,
                                             phone="+12125550100")), NOW)
    rows = list(csv.DictReader(io.StringIO(export_csv(list_cdrs(store)))))
    assert list(rows[0])[:18] == ["accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel",
                                  "lastapp", "lastdata", "start", "answer", "end", "duration", "billsec",
                                  "disposition", "amaflags", "uniqueid", "userfield"]
    e1, e2, e3 = rows
    assert (e1["accountcode"], e1["src"], e1["dst"], e1["dcontext"], e1["channel"], e1["dstchannel"]) == \
           ("acme", "+12125559999", "+13055550100", "spring", "SIP/carrier-a", "agent/5")
    assert (e1["start"], e1["answer"], e1["end"]) == ("2026-11-24 17:00:00", "2026-11-24 17:00:04",
                                                      "2026-11-24 17:01:04")
    assert (e1["duration"], e1["billsec"], e1["disposition"], e1["uniqueid"], e1["userfield"]) == \
           ("64", "61", "ANSWERED", "e1", "connected")
    assert e1["started_at"] == "2026-11-24T17:00:00.010Z" and e1["billable_ms"] == "60001"
    assert (e2["disposition"], e2["userfield"], e2["sip_code"], e2["sip_reason"], e2["answer"]) == \
           ("BUSY", "busy", "603", "'=Decline", "")
    assert (e3["disposition"], e3["userfield"], e3["hangup_cause"]) == ("FAILED", "invalid-number",
                                                                        "UNALLOCATED_NUMBER")

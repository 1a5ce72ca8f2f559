"""The hopper: priority order, re-check at the instant, reservations, recycling,
callbacks across DST, opt-outs, two concurrent consumers."""

import datetime as dt
import threading
import wave

import pytest

from campaigns.hopper import Hopper, HopperBlocked
from campaigns.leads import import_list, record_outcome, schedule_callback
from campaigns.store import add_number, change_state, create_account, create_campaign
from core.errors import InputError
from core.store import Store
from rules import service

T0 = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.timezone.utc)  # Tuesday 12:00 New York


def wav(path):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00" * 1600)
    return path


@pytest.fixture
def setup(store, tmp_path):
    def _setup(numbers, retry=None, registry=("2125550199",), name="c"):
        service.ensure_defaults(store, T0)
        reg = tmp_path / "reg.txt"
        reg.write_text("\n".join(registry) + "\n")
        service.import_dnc(store, reg, T0, "t", source="national", as_of="2026-11-20")
        create_account(store, "acme", T0, "t")
        add_number(store, "acme", "212 555 9999", T0, "t")
        create_campaign(store, name, "acme", T0, "t", caller_id="212-555-9999", greeting=wav(tmp_path / "g.wav"),
                        retry=retry)
        f = tmp_path / "list.csv"
        f.write_text("phone\n" + "\n".join(numbers) + "\n")
        import_list(store, f, name, T0, "t")
        change_state(store, name, "start", T0, "t")
        return Hopper(store, name)
    return _setup


def phones(picked):
    return [row["phone"] for row, _ in picked]


def test_order_reservation_and_recheck(setup, store):
    h = setup(["2125550100", "2125550110", "2125550120", "2125550199", "18005550100", "4015550100"])
    got = h.next_leads(10, T0, "loop-a")
    assert phones(got) == ["+12125550100", "+12125550110", "+12125550120", "+14015550100"]
    assert all(v.allowed and v.ruleset == "US@1" for _, v in got)
    st = {r["phone"]: (r["status"], r["disposition"]) for r in store.query("SELECT phone, status, disposition FROM leads")}
    assert st["+12125550199"] == ("blocked", "dnc") and st["+18005550100"] == ("blocked", "toll_free")
    assert h.next_leads(10, T0, "loop-b") == []  # all reserved
    # reservations time out and the leads come back
    later = T0 + dt.timedelta(seconds=121)
    assert phones(h.next_leads(10, later, "loop-b")) == ["+12125550100", "+12125550110", "+12125550120",
                                                         "+14015550100"]


def test_hours_park_until_the_window_opens(setup, store):
    h = setup(["4015550100", "2125550100"])
    evening = dt.datetime(2026, 11, 24, 23, 30, tzinfo=dt.timezone.utc)  # 18:30: RI closed, NY open
    (ny, _), = h.next_leads(10, evening, "a")
    assert ny["phone"] == "+12125550100"
    record_outcome(store, ny["id"], "answered-human", evening)
    row = store.query_one("SELECT status, next_attempt_at FROM leads WHERE phone = '+14015550100'")
    assert row == {"status": "retry", "next_attempt_at": "2026-11-25T14:00:00.000Z"}  # 09:00 EST next day
    assert h.next_leads(10, dt.datetime(2026, 11, 25, 13, 59, tzinfo=dt.timezone.utc), "a") == []
    assert phones(h.next_leads(10, dt.datetime(2026, 11, 25, 14, 0, tzinfo=dt.timezone.utc), "a")) == ["+14015550100"]


def test_one_live_call_per_business_run(setup):
    h = setup(["2125550100", "2125550101", "2125550102", "2125550200"])
    got = h.next_leads(10, T0, "a")
    assert phones(got) == ["+12125550100", "+12125550200"]  # one of the run only
    # while 0100 is reserved/dialing, the rest of its run stays out
    assert h.next_leads(10, T0, "b") == []


def test_recycling_on_an_injected_clock(setup, store):
    h = setup(["2125550100"], retry="busy=20m/2")
    (row, _), = h.next_leads(1, T0, "a")
    h.mark_dialing([row["id"]], T0)
    record_outcome(store, row["id"], "busy", T0)
    assert h.next_leads(1, T0 + dt.timedelta(minutes=19, seconds=59), "a") == []
    (row, _), = h.next_leads(1, T0 + dt.timedelta(minutes=20), "a")
    out = record_outcome(store, row["id"], "busy", T0 + dt.timedelta(minutes=21))
    assert out["status"] == "done"  # max 2 attempts
    assert h.next_leads(1, T0 + dt.timedelta(days=1), "a") == []


def placed(store, row, t, outcome, call_id):
    """A call the dialer placed to this lead and its record (the CDR path: the only
    writer of call attempts)."""
    from dialer.cdr import Cdr, write_cdr
    from core.timeutil import to_ms
    lead = store.query_one("SELECT * FROM leads WHERE id = ?", (row["id"],))
    start = to_ms(t)
    cdr = Cdr(call_id=call_id, account_id=lead["account_id"], destination=lead["phone"], started_ms=start,
              ended_ms=start + 30_000, disposition=outcome, sip_code=480, sip_reason="Temporarily Unavailable",
              hangup_cause="NO_ANSWER", hangup_by="dialer", lead_outcome=outcome, campaign_id=lead["campaign_id"],
              lead_id=lead["id"], duration_ms=30_000, ring_ms=30_000)
    return write_cdr(store, cdr, t + dt.timedelta(seconds=30))


def test_frequency_cap_parks_the_lead(setup, store):
    h = setup(["3055550100"], retry="no-answer=10m/9")
    t = T0
    for i in range(3):
        (row, _), = h.next_leads(1, t, "a")
        placed(store, row, t, "no-answer", f"call-{i}")
        t += dt.timedelta(minutes=11)  # the retry is due 10 min after the call ended
    # a 4th call within 24 h breaks Florida's cap: parked until the first attempt is 24 h old
    assert h.next_leads(1, t, "a") == []
    row = store.query_one("SELECT status, next_attempt_at FROM leads")
    assert row["status"] == "retry" and row["next_attempt_at"] == "2026-11-25T17:00:01.000Z"


def test_callbacks_first_and_across_dst(setup, store):
    h = setup(["2125550100", "2125550300", "2125550500"])
    lid = store.query_one("SELECT id FROM leads WHERE phone = '+12125550500'")["id"]
    # set on Saturday 7 March 2026 for Monday 9 March 10:00 in New York: EDT by then
    sat = dt.datetime(2026, 3, 7, 15, 0, tzinfo=dt.timezone.utc)
    out = schedule_callback(store, lid, "2026-03-09 10:00", sat, "agent1", agent="alice")
    assert out["callback_at"] == "2026-03-09T14:00:00Z"  # 10:00 EDT, not 15:00 (EST)
    with pytest.raises(InputError, match="does not exist"):
        schedule_callback(store, lid, "2026-03-08 02:30", sat, "agent1")
    with pytest.raises(InputError, match="happens twice"):
        schedule_callback(store, lid, "2026-11-01 01:30", sat, "agent1")
    due = dt.datetime(2026, 3, 9, 14, 0, tzinfo=dt.timezone.utc)
    got = h.next_leads(3, due, "a")
    assert phones(got)[0] == "+12125550500"  # callbacks due come first


def test_opt_out_goes_to_company_dnc_at_once(setup, store):
    h = setup(["2125550100"])
    (row, _), = h.next_leads(1, T0, "a")
    record_outcome(store, row["id"], "dnc-requested", T0)
    v = service.check_numbers(store, ["212-555-0100"], T0)[0]
    assert "DNC-COMPANY" in [r.rule for r in v.reasons]


def test_campaign_wide_block_and_paused_campaign(setup, store):
    h = setup(["2125550100"])
    stale = dt.datetime(2026, 12, 30, 17, 0, tzinfo=dt.timezone.utc)
    with pytest.raises(HopperBlocked, match="days old"):
        h.next_leads(1, stale, "a")
    assert store.query_one("SELECT status FROM leads")["status"] == "new"  # untouched
    change_state(store, "c", "pause", T0, "t")
    with pytest.raises(InputError, match="paused"):
        h.next_leads(1, T0, "a")


def test_two_concurrent_consumers_never_share_a_lead(setup, db_path):
    numbers = [f"212555{1000 + 3 * i:04d}" for i in range(610)]
    setup(numbers)
    results = {}

    barrier = threading.Barrier(2, timeout=60)

    def consume(name):
        s = Store(db_path, timeout=30)
        h = Hopper(s, "c")
        got = []
        while True:
            try:
                barrier.wait()  # both loops claim at the same moment, every round
            except threading.BrokenBarrierError:
                pass  # the other loop has finished
            batch = h.next_leads(25, T0, name)
            got.extend(row["id"] for row, _ in batch)
            if not batch:
                barrier.abort()
                break
        results[name] = got
        s.close()

    threads = [threading.Thread(target=consume, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    a, b = results["a"], results["b"]
    assert a and b and not set(a) & set(b)
    assert len(a) + len(b) == 610


def test_priority_callbacks_then_fresh_then_recycled(setup, store):
    h = setup(["2125550100", "2125550200", "2125550300", "2125550400"], retry="busy=5m/5")
    rows = {r["phone"]: r["id"] for r in store.query("SELECT id, phone FROM leads")}
    # 0100 was called and was busy (recycled); 0400 gets a campaign-wide callback
    (first, _), = h.next_leads(1, T0, "a")
    assert first["phone"] == "+12125550100"
    record_outcome(store, first["id"], "busy", T0)
    schedule_callback(store, rows["+12125550400"], "2026-11-24 12:10", T0, "t")
    later = T0 + dt.timedelta(minutes=10)
    got = phones(h.next_leads(10, later, "a"))
    assert got == ["+12125550400", "+12125550200", "+12125550300", "+12125550100"]

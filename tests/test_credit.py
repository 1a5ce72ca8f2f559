"""The balance guard (dialer.credit) and live rating at CDR write (billing.live), on an
injected clock (task.Clock) with a recording stand-in for the SIP pool; the same over
real SIP: test_credit_sip.py.

Prices used throughout: telecom to +1 at $0.60 a minute, 1/1 (a cent a second);
service minutes at the default $0.0188, 60/60; slices of 60 s with a 5 s margin. A
first slice costs $0.60 + $0.0188 = $0.6188, and so does each further one."""

import datetime as _dt
import json
from decimal import Decimal

import pytest
from twisted.internet import defer, task

from billing import ledger, standing
from billing.decks import import_deck
from billing.live import rate_written_call
from billing.money import micros
from campaigns.store import create_account, create_campaign, change_state
from campaigns.leads import import_list
from dialer.credit import CreditGuard
from dialer.engine import Dialer, DirectWrites
from dialer.gate import AccountGate, AgentSessions, LoginGuard
from core.store import Store
from rules import service
from billing_fixtures import add_cdr, write_deck
from sip_harness import write_tone
from test_accounts_live import FakePool as _FakePool, sync_verify

T0 = _dt.datetime(2026, 11, 24, 17, 0, tzinfo=_dt.timezone.utc)  # noon in New York, a Tuesday
SLICE = micros(Decimal("0.6188"))  # one 60 s slice to +1, both components


class FakePool(_FakePool):
    def play(self, key, path):
        pass


def sync_run(store):
    def run(fn, *args):
        return defer.maybeDeferred(fn, store, *args)
    return run


def _campaign(store, tmp_path, name, account, first, n=40):
    create_campaign(store, name, account, T0, "t", caller_id="212-555-9999",
                    greeting=write_tone(tmp_path / f"{name}.wav"), dial_mode="power", power_ratio="3")
    f = tmp_path / f"{name}.csv"
    f.write_text("phone\n" + "\n".join(f"212555{first + 29 * i:04d}" for i in range(n)) + "\n")
    import_list(store, f, name, T0, "t")
    change_state(store, name, "start", T0, "t")


@pytest.fixture
def billed(tmp_path):
    """Account "acme" (30 lines) with two running power campaigns, billing enabled
    (no payment yet), the floor $100, a deck pricing +1; account "other" with its own
    campaign and billing not enabled. Returns (store, clock)."""
    store = Store(tmp_path / "d.db")
    service.ensure_defaults(store, T0)
    reg = tmp_path / "reg.txt"
    reg.write_text("2125550199\n")
    service.import_dnc(store, reg, T0, "t", source="national", as_of="2026-11-20")
    from campaigns.store import add_number
    for acc in ("acme", "other"):
        create_account(store, acc, T0, "t", connection="fiber", lines=30)
        add_number(store, acc, "212 555 9999", T0, "t")
    import_deck(store, write_deck(tmp_path / "deck.csv", ["1,USA,0.60,1,1,,,"]), "carrier", T0, "t")
    standing.enable(store, "acme", T0, "t")  # billing enabled (pending until its first payment)
    _campaign(store, tmp_path, "spring", "acme", 1000)
    _campaign(store, tmp_path, "autumn", "acme", 5000)
    _campaign(store, tmp_path, "other", "other", 7000)
    clock = task.Clock()
    clock.advance(T0.timestamp())
    return store, clock


def topup(store, amount, account="acme"):
    ledger.topup(store, account, amount, T0, "t")


def guard_on(store, clock, **kw):
    g = CreditGuard(clock, sync_run(store), **kw)
    g.track(1)
    return g


def loops(store, clock, pool, credit, names=("spring", "autumn")):
    gate = AccountGate()
    sessions, guard = AgentSessions(), LoginGuard()
    out = []
    for name in names:
        row = store.query_one("SELECT id, account_id FROM campaigns WHERE name = ?", (name,))
        gate.set_capacity(row["account_id"], 30)
        d = Dialer(clock, store, row["id"], pool, route=lambda n: f"sip:{n[1:]}@carrier", tick=0.1, cps=30,
                   gate=gate, sessions=sessions, login_guard=guard, verify=sync_verify,
                   consumer=f"dialer-{row['id']}", credit=credit, message_s=3600.0)
        # 4 ready agents (power 3 wants 12 calls); their phones are not here, so an answered
        # call gets the safe-harbor message (its timer is an hour: nothing else ends it)
        for uid in range(100 * row["id"], 100 * row["id"] + 4):
            d.floor.login(uid, d.cid, d.now())
        out.append(d)
    return out


def answer(d, key):
    d.on_event({"ev": "answered", "key": key, "code": 200})


def hang_up(d, key, clock, answered_s=None, code=200):
    """The call's end as the worker reports it (answered ``answered_s`` before now)."""
    now_ms = int(round(clock.seconds() * 1000))
    d.on_event({"ev": "ended", "key": key, "code": code, "reason": "OK", "answered": answered_s is not None,
                "started_ms": None, "answered_ms": None if answered_s is None else now_ms - int(answered_s * 1000),
                "ended_ms": now_ms, "cause": "remote"})


# ------------------------------------------------------------------------------- the guard alone

def test_reserve_then_refuse_under_the_floor(billed):
    store, clock = billed
    topup(store, "102.1658")  # the floor + 3.5 slices
    g = guard_on(store, clock)
    t = clock.seconds()
    assert g.available(1) == micros(Decimal("2.1658")) and g.room(1) == 3
    for i in range(3):
        assert g.refusal(1, "+12125550100", t) is None
        g.reserve(f"k{i}", 1, "+12125550100", t, hangup=lambda: None)
    why = g.refusal(1, "+12125550100", t)
    assert why is not None and not why.unpriced
    assert why.text == ("balance $102.165800 is at the floor $100.000000: no new calls "
                        "($1.856400 reserved for 3 call(s) in progress)")
    assert g.room(1) == 0 and g.blocked(1) == why.text
    assert g.available(1) == micros(Decimal("0.3094"))  # never below 0: the balance never under the floor
    with pytest.raises(Exception):
        g.reserve("k3", 1, "+12125550100", t, hangup=lambda: None)


def test_the_first_slice_holds_the_connect_fee_and_the_initial_block(billed, tmp_path):
    store, clock = billed
    # a 60/60 service and a destination at 30/6 with a connect fee: 60 s reserve 0.0188 + 0.05 + 0.60
    import_deck(store, write_deck(tmp_path / "d2.csv", ["1,USA,0.60,30,6,0.05,,"]), "fee", T0, "t")
    topup(store, "100.6688")
    g = guard_on(store, clock)
    assert g.refusal(1, "+12125550100", clock.seconds()) is None
    topup(store, "0.000001")
    g2 = guard_on(store, clock, slice_s=10, margin_s=1)  # a 10 s slice still pays the 30 s initial block
    assert g2.accounts[1].cheapest == micros(Decimal("0.0188") + Decimal("0.05") + Decimal("0.30"))


def test_a_call_in_progress_gets_its_next_slice_or_ends_at_the_boundary(billed):
    store, clock = billed
    topup(store, "102.7846")  # the floor + 4.5 slices
    g = guard_on(store, clock)
    ended = []
    t = clock.seconds()
    for k in ("a", "b", "c"):
        g.reserve(k, 1, "+12125550100", t, hangup=lambda k=k: ended.append((k, clock.seconds())))
    g.answered("a")
    clock.advance(1)
    g.answered("b")
    clock.advance(53.999)
    assert not ended and g.calls["a"].slices == 1
    clock.advance(0.001)  # 55 s after a's answer: 5 s before its first slice ends, its second is reserved
    assert g.calls["a"].slices == 2 and not ended
    assert g.available(1) == micros(Decimal("0.3094"))
    clock.advance(1)  # b's boundary: 0.3094 left, its next slice is 0.6188: it ends at the boundary
    assert ended == [("b", t + 56)]
    assert g.calls["b"].slices == 1  # (until its end is reported)
    clock.advance(58.999)
    assert len(ended) == 1
    clock.advance(0.001)  # a's second boundary (115 s after its answer): nothing left either
    assert [k for k, _ in ended] == ["b", "a"] and ended[1][1] == t + 115
    st = g.status(1)
    assert (st["extended"], st["ended_at_boundary"]) == (1, 2)
    # an unanswered call is never cut: its slices count from an answer
    assert "c" in g.calls and g.calls["c"].timer is None


def test_release_at_hang_up_is_replaced_by_the_rated_cost_until_the_ledger_holds_it(billed):
    store, clock = billed
    topup(store, "102.1658")
    g = guard_on(store, clock)
    t = clock.seconds()
    g.reserve("c1", 1, "+12125550100", t, hangup=lambda: None)
    g.answered("c1")
    clock.advance(30)
    before = g.available(1)
    g.ended("c1", 30_000)  # 30 s: $0.30 telecom + $0.0188 service
    cost = micros(Decimal("0.3188"))
    assert g.available(1) == before + SLICE - cost
    assert g.accounts[1].unposted == {"c1": cost}
    clock.advance(1)  # the read after the end: the CDR is not written yet, the cost stays counted
    assert g.accounts[1].unposted == {"c1": cost}
    # the CDR is written (and rated live into the ledger), then the next read holds it
    add_cdr(store, "c1", 1, "+12125550100", "2026-11-24T17:00:00Z", talk_s=30)
    with store.transaction():
        assert rate_written_call(store, "c1", T0)["charged"] == cost
    avail = g.available(1)
    g.refresh()
    assert g.accounts[1].unposted == {} and g.available(1) == avail  # not counted twice, nor lost
    assert ledger.balance(store, "acme")["balance"] == Decimal("102.1658") - Decimal("0.3188")


def test_a_top_up_or_a_new_floor_shows_at_the_next_read(billed):
    store, clock = billed
    topup(store, "100.5")
    g = guard_on(store, clock, refresh_s=10.0)
    assert g.room(1) == 0 and "at the floor" in g.blocked(1)
    topup(store, "10")
    clock.advance(10)
    assert g.room(1) == 16
    ledger.set_floor(store, "acme", "110", T0, "t")
    clock.advance(10)
    assert g.room(1) == 0


def test_a_destination_without_a_rate_is_refused_never_dialled_unpriced(billed):
    store, clock = billed
    topup(store, "200")
    g = guard_on(store, clock)
    why = g.refusal(1, "+442071234567", clock.seconds())
    assert why.unpriced and why.text == "no rate for +442071234567 in deck carrier: not dialled unpriced"
    with pytest.raises(Exception):
        g.reserve("k", 1, "+442071234567", clock.seconds(), hangup=lambda: None)
    assert g.calls == {}


def test_an_account_without_billing_is_not_guarded(billed):
    store, clock = billed
    g = CreditGuard(clock, sync_run(store))
    g.track(2)  # "other": no plan row
    assert not g.guarded(2) and g.room(2) > 1000 and g.refusal(2, "+442071234567", clock.seconds()) is None
    g.reserve("k", 2, "+12125550100", clock.seconds(), hangup=lambda: None)
    assert g.calls == {}


# ------------------------------------------------------------------------------- in the live loop

def test_two_campaigns_of_an_account_share_its_balance_and_another_account_is_unaffected(billed):
    store, clock = billed
    topup(store, "102.1658")  # 3 slices fit
    pool = FakePool(clock)
    g = CreditGuard(clock, sync_run(store))
    a, b, other = loops(store, clock, pool, g, names=("spring", "autumn", "other"))
    for d in (a, b, other):
        d.start()
    for _ in range(30):
        clock.advance(0.1)
        assert len(a.legs) + len(b.legs) <= 3
    assert len(a.legs) + len(b.legs) == 3  # power 3 x 4 agents x 2 campaigns wanted 24
    assert len(other.legs) == 12  # the account without billing dials as before
    reason = "balance $102.165800 is at the floor $100.000000: no new calls"
    assert all(d.blocked_reason.startswith(reason) for d in (a, b) if d.planner.last_seen is not None)
    assert g.status(1)["held_back"] > 0 and g.status(1)["dials"] == 3
    assert g.available(1) >= 0
    # the leads held back went back to the hopper (none lost, none marked dialling)
    n = store.query_one("SELECT COUNT(*) AS n FROM leads l JOIN campaigns c ON c.id = l.campaign_id "
                        "WHERE c.account_id = 1 AND l.status IN ('reserved', 'dialing')")["n"]
    assert n == 3


def test_calls_end_at_the_boundary_and_every_cdr_is_rated_once(billed):
    store, clock = billed
    topup(store, "102.1658")
    pool = FakePool(clock)
    g = CreditGuard(clock, sync_run(store))
    a, b = loops(store, clock, pool, g)
    a.start()
    b.start()
    clock.advance(0.5)
    keys = [(d, k) for d in (a, b) for k in list(d.legs)]
    assert len(keys) == 3
    for d, k in keys:
        answer(d, k)
    clock.advance(54.9)
    assert not pool.hangups
    clock.advance(0.2)  # 55 s after the answers: no next slice fits, all three end at the boundary
    assert sorted(k for k, _ in pool.hangups) == sorted(k for _, k in keys)
    for d, k in keys:
        hang_up(d, k, clock, answered_s=55.1)
    assert g.accounts[1].reserved == 0  # the CDRs are written, each rated into the ledger
    cdrs = store.query("SELECT call_id, billsec, hangup_by FROM cdrs WHERE account_id = 1")
    assert len(cdrs) == 3 and all(r["hangup_by"] == "balance" and r["billsec"] == 56 for r in cdrs)
    charges = store.query("SELECT call_id, amount_micros FROM ledger_entries WHERE kind = 'charge'")
    assert sorted(r["call_id"] for r in charges) == sorted(r["call_id"] for r in cdrs)
    assert all(r["amount_micros"] == -micros(Decimal("0.5788")) for r in charges)  # 0.56 + 0.0188
    run = ledger.bill_run(store, "acme", "2026-11", T0, "t")
    assert (run["charged"], run["cdrs"]) == (0, 0)  # already charged live: the bill run changes nothing
    bal = ledger.balance(store, "acme")
    assert bal["balance"] == Decimal("102.1658") - 3 * Decimal("0.5788") and not bal["below_floor"]
    g.refresh()
    assert g.accounts[1].unposted == {}
    assert g.available(1) == micros(Decimal("0.3094") + 3 * Decimal("0.04"))
    # what is left fits no first slice: the campaigns stay blocked
    clock.advance(1)
    assert len(pool.dials) == 3 and g.room(1) == 0


def test_leads_without_a_rate_are_parked_with_the_reason(billed, tmp_path):
    store, clock = billed
    import_deck(store, write_deck(tmp_path / "d2.csv", ["1999,Nowhere,0.10,1,1,,,"]), "narrow", T0, "t",
                account="acme")
    topup(store, "500")
    pool = FakePool(clock)
    g = CreditGuard(clock, sync_run(store))
    (a,) = loops(store, clock, pool, g, names=("spring",))
    a.start()
    clock.advance(0.5)
    assert pool.dials == []
    parked = store.query("SELECT l.status, l.next_attempt_at, e.detail FROM leads l JOIN lead_events e "
                         "ON e.lead_id = l.id WHERE e.event = 'not-dialled'")
    assert parked and all(r["status"] == "retry" for r in parked)
    assert json.loads(parked[0]["detail"])["reason"].startswith("no rate for +1212555")
    assert g.status(1)["unpriced"] == len(parked)


def test_a_cdr_that_cannot_be_rated_is_kept_unrated(billed, tmp_path):
    store, clock = billed
    topup(store, "500")
    add_cdr(store, "x1", 1, "+442071234567", "2026-11-24T17:00:00Z", talk_s=30)
    with store.transaction():
        out = rate_written_call(store, "x1", T0)
    assert out["charged"] == 0 and out["refused"].startswith("no rate for +442071234567")
    assert store.query_one("SELECT call_id FROM cdrs WHERE call_id = 'x1'")
    assert not store.query("SELECT * FROM ledger_entries WHERE call_id = 'x1'")
    # an account without billing: its calls are left to the bill run
    add_cdr(store, "y1", 2, "+12125550100", "2026-11-24T17:00:00Z", talk_s=30)
    with store.transaction():
        assert rate_written_call(store, "y1", T0) is None


def test_the_journal_rates_a_cdr_once_and_an_error_in_rating_keeps_the_cdr(billed, monkeypatch):
    store, clock = billed
    topup(store, "500")
    pool = FakePool(clock)
    (a,) = loops(store, clock, pool, None, names=("spring",))
    assert isinstance(a.journal, DirectWrites)
    a.start()
    clock.advance(0.2)
    key = next(iter(a.legs))
    answer(a, key)
    for k in list(a.legs):
        if k != key:
            hang_up(a, k, clock)
    clock.advance(20)
    import billing.live as live

    def broken(*args, **kw):
        raise RuntimeError("a bug in rating")
    monkeypatch.setattr(live, "_rate", broken)
    hang_up(a, key, clock, answered_s=20)
    a.close_wrapups()
    assert store.query_one("SELECT billsec FROM cdrs WHERE call_id = ?", (key,))["billsec"] == 20
    assert not store.query("SELECT * FROM ledger_entries WHERE call_id = ?", (key,))
    monkeypatch.undo()
    run = ledger.bill_run(store, "acme", "2026-11", T0, "t")
    assert run["charged"] == 1  # the bill run rates what the live rating could not


def test_an_account_whose_standing_forbids_dialing_starts_no_call(billed):
    store, clock = billed
    g = guard_on(store, clock)  # billing enabled, no payment yet: pending
    assert g.room(1) == 0 and g.blocked(1) == "account is pending: no payment yet: no new calls"
    assert g.refusal(1, "+12125550100", clock.seconds()).text == g.blocked(1)
    topup(store, "200")
    g.refresh()
    assert g.room(1) == 161 and g.blocked(1) is None


def test_thirty_calls_racing_cannot_all_pass_on_one_unit_of_credit(billed):
    """The trap of engines without reservations: 30 lines free, 60 calls wanted, the
    balance above the floor holds one first slice: one call starts."""
    store, clock = billed
    topup(store, "100.6188")
    pool = FakePool(clock)
    g = CreditGuard(clock, sync_run(store))
    a, b = loops(store, clock, pool, g)
    for d in (a, b):
        for uid in range(1000 * d.cid, 1000 * d.cid + 6):  # 10 ready agents each: power 3 wants 30 each
            d.floor.login(uid, d.cid, d.now())
        d.start()
    for _ in range(20):
        clock.advance(0.1)
    assert len(pool.dials) == 1 and g.available(1) == 0

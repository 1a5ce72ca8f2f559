"""Account-wide guarantees in the live loop, on an injected clock with a recording
stand-in for the SIP pool (the same guarantees over real SIP: test_accounts_sip.py):
lines per account across campaigns, CPS per trunk, unique call ids across restarts,
calls on record before their INVITE, one phone session per person, PIN back-off per
source address."""

import datetime as _dt

import pytest
from twisted.internet import defer, task

from campaigns.leads import import_list
from campaigns.store import add_number, add_user, change_state, create_account, create_campaign
from dialer.agents import set_pin, verify_pin
from dialer.cdr import Cdr, conflicts, write_cdr
from dialer.engine import Dialer
from dialer.gate import AccountGate, AgentSessions, LoginGuard
from dialer.opencalls import list_open, recover
from core.store import Store
from rules import service
from sip_harness import write_tone

T0 = _dt.datetime(2026, 11, 24, 17, 0, tzinfo=_dt.timezone.utc)  # noon in New York, a Tuesday


class FakePool:
    def __init__(self, clock):
        self.dials, self.hangups, self.clock = [], [], clock

    def dial(self, key, uri, **fields):
        self.dials.append((self.clock.seconds(), key, uri))
        return 5060

    def hangup(self, key, code=None):
        self.hangups.append((key, code))

    def connect(self, customer, agent, tie_key=None):
        return "bridge"

    def record(self, key, path):
        pass


def sync_verify(pin, stored):
    return defer.succeed(verify_pin(pin, stored))


def _campaign(store, tmp_path, name, first, n=40):
    create_campaign(store, name, "adsl", T0, "t", caller_id="212-555-9999", greeting=write_tone(tmp_path / f"{name}.wav"),
                    dial_mode="power", power_ratio="3")
    f = tmp_path / f"{name}.csv"
    f.write_text("phone\n" + "\n".join(f"212555{first + 29 * i:04d}" for i in range(n)) + "\n")
    import_list(store, f, name, T0, "t")
    change_state(store, name, "start", T0, "t")


@pytest.fixture
def adsl(tmp_path):
    """An ADSL account (3 lines) with two running power campaigns and two agents."""
    store = Store(tmp_path / "d.db")
    service.ensure_defaults(store, T0)
    reg = tmp_path / "reg.txt"
    reg.write_text("2125550199\n")
    service.import_dnc(store, reg, T0, "t", source="national", as_of="2026-11-20")
    create_account(store, "adsl", T0, "t", connection="adsl", lines=3)
    add_number(store, "adsl", "212 555 9999", T0, "t")
    for who, pin in (("alice", "7391"), ("bob", "5828")):
        add_user(store, "adsl", who, "agent", T0, "t")
        set_pin(store, "adsl", who, pin, T0, "t")
    _campaign(store, tmp_path, "spring", 1000)
    _campaign(store, tmp_path, "autumn", 5000)
    clock = task.Clock()
    clock.advance(T0.timestamp())
    return store, clock


def _loops(store, clock, pool, gate=None, sessions=None, guard=None, consumer="x"):
    gate = gate if gate is not None else AccountGate()
    gate.set_capacity(1, 3)
    sessions = sessions if sessions is not None else AgentSessions()
    guard = guard if guard is not None else LoginGuard()
    out = []
    for name in ("spring", "autumn"):
        cid = store.query_one("SELECT id FROM campaigns WHERE name = ?", (name,))["id"]
        out.append(Dialer(clock, store, cid, pool, route=lambda n: f"sip:{n[1:]}@carrier", tick=0.1, cps=10,
                          gate=gate, sessions=sessions, login_guard=guard, verify=sync_verify,
                          consumer=f"dialer-{cid}@{consumer}"))
    return out


def test_two_campaigns_never_exceed_the_accounts_lines(adsl):
    store, clock = adsl
    pool = FakePool(clock)
    a, b = _loops(store, clock, pool)
    for d, uids in ((a, range(101, 105)), (b, range(201, 205))):  # 4 ready agents each: power 3 wants 12 each
        for uid in uids:
            d.floor.login(uid, d.cid, d.now())
    a.start()
    b.start()
    for _ in range(100):
        clock.advance(0.1)
        assert len(a.legs) + len(b.legs) <= 3
    assert len(pool.dials) == 3 and a.gate.peak[1] == 3
    # a call of campaign a ends: its line goes to whichever loop asks next, never a 4th
    key = next(iter(a.legs))
    a.on_event({"ev": "ended", "key": key, "code": 486, "reason": "Busy Here", "answered": False,
                "started_ms": None, "answered_ms": None, "ended_ms": int(clock.seconds() * 1000), "cause": "remote"})
    for _ in range(10):
        clock.advance(0.1)
        assert len(a.legs) + len(b.legs) <= 3
    assert len(pool.dials) == 4 and a.gate.in_use(1) == 3
    # the policy of each loop sees the account's lines in use, not only its own
    assert a.state().lines_in_use == 3 and b.state().lines_in_use == 3 and a.state().free_lines == 0


def test_calls_per_second_hold_per_trunk_across_campaigns(adsl):
    store, clock = adsl
    store.execute("UPDATE accounts SET line_capacity = 30")
    pool = FakePool(clock)
    gate = AccountGate()
    gate.set_cps("route-shared", 4)
    a, b = _loops(store, clock, pool, gate=gate)
    gate.set_capacity(1, 30)
    for d in (a, b):
        d.trunk_key = "route-shared"  # both campaigns dial through one trunk
        for uid in range(d.cid * 100, d.cid * 100 + 8):
            d.floor.login(uid, d.cid, d.now())
    a.start()
    b.start()
    for _ in range(50):
        clock.advance(0.1)
    times = [t for t, _, _ in pool.dials]
    assert len(times) >= 16
    for t in times:
        assert sum(1 for u in times if t <= u < t + 1.0) <= 4


def test_call_ids_never_repeat_across_restarts_and_every_call_keeps_its_cdr(adsl):
    """Before: every process numbered its calls c<campaign>-<lead>-1, 2...; after a
    restart the same lead's next call reused an old key and its CDR was dropped."""
    store, clock = adsl
    keys = []
    for run in range(3):  # three runs of the dialer on one database, one call each
        pool = FakePool(clock)
        a, _ = _loops(store, clock, pool, consumer=f"run{run}")
        a.floor.login(1, a.cid, a.now())
        store.execute("UPDATE leads SET status = 'new', next_attempt_at = NULL WHERE phone = '+12125551000'")
        store.execute("UPDATE leads SET status = 'done' WHERE phone != '+12125551000'")
        a.tick()
        (_, key, _), = pool.dials
        keys.append(key)
        a.on_event({"ev": "ended", "key": key, "code": 480, "reason": "Temporarily Unavailable", "answered": False,
                    "started_ms": None, "answered_ms": None, "ended_ms": int(clock.seconds() * 1000),
                    "cause": "remote"})
        clock.advance(60)
    assert len(set(keys)) == 3
    rows = store.query("SELECT call_id FROM cdrs ORDER BY call_id")
    assert [r["call_id"] for r in rows] == sorted(keys)
    assert store.query_one("SELECT attempts FROM leads WHERE phone = '+12125551000'")["attempts"] == 3
    assert not list_open(store)


def test_a_cdr_meeting_a_kept_id_with_other_content_is_kept_aside(adsl):
    store, clock = adsl
    base = dict(call_id="same-id", account_id=1, destination="+12125550100", started_ms=1_700_000_000_000,
                ended_ms=1_700_000_010_000, disposition="no-answer", sip_code=480, sip_reason="x",
                hangup_cause="NO_USER_RESPONSE", hangup_by="callee", lead_outcome="no-answer")
    assert write_cdr(store, Cdr(**base), T0)["written"]
    again = write_cdr(store, Cdr(**base), T0)  # a replay: the same record, nothing to say
    assert not again["written"] and again["same"] and not conflicts(store)
    other = write_cdr(store, Cdr(**dict(base, destination="+12125550101", started_ms=1_700_000_500_000)), T0)
    assert not other["written"] and not other["same"]
    (c,) = conflicts(store)
    assert c["call_id"] == "same-id" and c["cdr"]["destination"] == "+12125550101"
    assert c["kept"]["destination"] == "+12125550100" and c["account_id"] == 1


def test_a_call_is_on_record_before_its_invite_and_a_crash_gets_its_cdr(adsl):
    store, clock = adsl
    pool = FakePool(clock)
    a, _ = _loops(store, clock, pool, consumer="local")
    for uid in (1, 2):
        a.floor.login(uid, a.cid, a.now())
    a.tick()
    assert len(pool.dials) == 3
    opened = {r["call_id"]: r for r in list_open(store)}
    assert set(opened) == {k for _, k, _ in pool.dials}  # written before the pool was asked to dial
    answered = pool.dials[0][1]
    a.on_event({"ev": "answered", "key": answered, "code": 200})
    assert opened[answered]["node"] == "local"
    reserved = store.query_one("SELECT COUNT(*) AS n FROM leads WHERE status = 'dialing'")["n"]
    assert reserved == 3
    # a lead reserved and never dialled (the crash came between the two)
    store.execute("UPDATE leads SET status = 'reserved', reserved_by = ? WHERE id = (SELECT MIN(id) FROM leads "
                  "WHERE status = 'new' AND campaign_id = ?)", (a.consumer, a.cid))
    # -- the process dies here: no 'ended' will ever come; the next start recovers
    later = T0 + _dt.timedelta(minutes=1)
    out = recover(store, later, node="local")
    assert out == {"calls": 3, "already_recorded": 0, "leads_released": 1}
    cdrs = {r["call_id"]: r for r in store.query("SELECT * FROM cdrs")}
    assert set(cdrs) == set(opened)
    for key, r in cdrs.items():
        assert (r["disposition"], r["sip_code"], r["sip_reason"]) == ("failed", 0, "dialer stopped during the call")
        assert r["ruleset"] == "US@1" and r["verdict"]
    assert cdrs[answered]["answered_at"] is not None
    leads = store.query("SELECT status, disposition, attempts FROM leads WHERE id IN (SELECT lead_id FROM cdrs)")
    assert all((ld["status"], ld["disposition"], ld["attempts"]) == ("retry", "failed", 1) for ld in leads)
    assert store.query_one("SELECT COUNT(*) AS n FROM leads WHERE status IN ('reserved', 'dialing')")["n"] == 0
    assert store.query_one("SELECT COUNT(*) AS n FROM call_attempts")["n"] == 3
    assert not list_open(store)
    assert recover(store, later, node="local") == {"calls": 0, "already_recorded": 0, "leads_released": 0}


def _phone_login(d, key, user, pin, source="127.0.0.1:5062"):
    d.on_event({"ev": "incoming", "key": key, "to_user": f"agent-{user}-{pin}", "source": source})
    d.on_event({"ev": "confirmed", "key": key})


def test_one_login_per_person_across_campaigns(adsl):
    store, clock = adsl
    pool = FakePool(clock)
    a, b = _loops(store, clock, pool)
    alice = store.query_one("SELECT id FROM users WHERE name = 'alice'")["id"]
    _phone_login(a, "in-1", "alice", "7391")
    assert a.floor.state_of(alice) == "ready" and a.sessions.holder(alice) == (a, "in-1")
    # a second phone of alice on the other campaign while she is ready: the first session ends
    _phone_login(b, "in-2", "alice", "7391")
    assert a.floor.state_of(alice) == "logged_out" and b.floor.state_of(alice) == "ready"
    assert ("in-1", None) in pool.hangups and "in-1" not in a.agent_legs
    a.on_event({"ev": "ended", "key": "in-1", "code": 200})  # the old phone's BYE changes nothing more
    assert b.floor.state_of(alice) == "ready" and b.sessions.holder(alice) == (b, "in-2")
    reasons = [r["reason"] for r in store.query("SELECT reason FROM agent_events WHERE user_id = ? AND state = "
                                                "'logged_out'", (alice,))]
    assert reasons and "logged in again on another phone" in reasons[0]
    # on a call: a third phone is refused (486), the call goes on
    b.start()
    clock.advance(0.2)
    key = pool.dials[-1][1]
    b.on_event({"ev": "answered", "key": key, "code": 200})
    assert b.floor.state_of(alice) == "on_call"
    _phone_login(a, "in-3", "alice", "7391")
    assert ("in-3", 486) in pool.hangups and b.floor.state_of(alice) == "on_call"
    assert a.floor.state_of(alice) == "logged_out" and "in-3" not in a.agent_legs
    refused = store.query("SELECT * FROM audit_log WHERE action = 'agent.login-refused'")
    assert len(refused) == 1


def test_wrong_pins_slow_their_source_and_never_lock_the_agent(adsl):
    store, clock = adsl
    pool = FakePool(clock)
    a, _ = _loops(store, clock, pool)
    alice = store.query_one("SELECT id FROM users WHERE name = 'alice'")["id"]
    for i in range(3):
        a.on_event({"ev": "incoming", "key": f"bad-{i}", "to_user": "agent-alice-0000", "source": "10.9.9.9:5060"})
        assert (f"bad-{i}", 403) in pool.hangups
    # the 4th try from that address is refused before any PIN check, even with the right PIN
    a.on_event({"ev": "incoming", "key": "bad-3", "to_user": "agent-alice-7391", "source": "10.9.9.9:5060"})
    assert ("bad-3", 403) in pool.hangups and "bad-3" not in a.pending_login
    # the real alice, from her own phone, logs in at once: she is not locked out
    _phone_login(a, "good", "alice", "7391", source="10.1.1.1:5060")
    assert a.floor.state_of(alice) == "ready"
    # unknown users cost the guesser the same back-off
    for i in range(3):
        a.on_event({"ev": "incoming", "key": f"who-{i}", "to_user": "agent-mallory-1111", "source": "10.8.8.8:5060"})
    assert a.login_guard.wait("10.8.8.8", clock.seconds()) > 0
    clock.advance(3)  # the back-off passes: the source may try again
    a.on_event({"ev": "incoming", "key": "bad-4", "to_user": "agent-bob-5828", "source": "10.9.9.9:5060"})
    assert "bad-4" in a.pending_login
    assert len(store.query("SELECT * FROM audit_log WHERE action = 'user.login-refused'")) == 6


def test_the_pin_check_runs_off_the_reactor_thread(adsl):
    """The default verifier runs scrypt in the reactor's thread pool: the loop only
    sees a Deferred (and a phone that hangs up meanwhile is forgotten)."""
    import threading
    store, clock = adsl
    pool = FakePool(clock)
    seen = {}

    class Reactor:  # the clock, plus the thread pool interface deferToThreadPool uses
        def __init__(self):
            from twisted.python.threadpool import ThreadPool
            self.tp = ThreadPool(1, 1)
            self.tp.start()
            self.calls = []

        def seconds(self):
            return clock.seconds()

        def callLater(self, *a, **kw):
            return clock.callLater(*a, **kw)

        def getThreadPool(self):
            return self.tp

        def callFromThread(self, f, *a, **kw):
            self.calls.append((f, a, kw))

    r = Reactor()
    cid = store.query_one("SELECT id FROM campaigns WHERE name = 'spring'")["id"]
    d = Dialer(r, store, cid, pool, route=lambda n: n, tick=0.1)
    import dialer.engine as engine

    real = engine.verify_pin

    def spy(pin, stored):
        seen["thread"] = threading.current_thread().name
        return real(pin, stored)
    engine.verify_pin = spy
    try:
        d.on_event({"ev": "incoming", "key": "p1", "to_user": "agent-alice-7391", "source": "127.0.0.1:1"})
        assert "p1" in d.checking and "p1" not in d.pending_login  # nothing decided on this thread yet
        r.tp.stop()  # joins the worker thread: the check has run
        assert seen["thread"] != threading.current_thread().name
        for f, a, kw in r.calls:  # the result comes back on the reactor thread
            f(*a, **kw)
        assert "p1" in d.pending_login
    finally:
        engine.verify_pin = real


def test_an_agent_login_finds_the_user_in_its_own_account_only(tmp_path):
    """Two accounts running here both have an alice: the bare login is ambiguous and
    refused (never resolved across accounts), ``alice.<account>`` picks the account."""
    from twisted.internet import task as _task
    from dialer.journal import Journal
    from dialer.service import Service, login_matches
    from dialer.trunks import add_trunk
    store = Store(tmp_path / "d.db")
    service.ensure_defaults(store, T0)
    for acc in ("acme", "zeta.example"):
        create_account(store, acc, T0, "t", lines=10)
        add_number(store, acc, "212 555 9999", T0, "t")
        add_user(store, acc, "alice", "agent", T0, "t")
        add_trunk(store, acc, "carrier", "127.0.0.1:5099", T0, "t")
        create_campaign(store, "spring", acc, T0, "t", caller_id="212-555-9999", dial_mode="preview")
        change_state(store, "spring", "start", T0, "t", account=acc)
    add_user(store, "acme", "bob", "agent", T0, "t")
    svc = Service(_task.Clock(), store, Journal(store.path), port=5070, workers=1)
    acme, zeta = sorted(svc.dialers.values(), key=lambda d: d.account_id)

    def login(to_user):  # the lookup (on the store thread when live), then the choice
        return svc._dialer_for_login(to_user, login_matches(store, to_user))
    assert login("agent-alice-7391") == (None, None)
    assert login("agent-alice.acme-7391") == (acme, "alice")
    assert login("agent-alice.zeta.example-7391-spring") == (zeta, "alice")
    assert login("agent-bob-7391") == (acme, "bob")  # unique: the bare name will do
    assert login("agent-bob.zeta.example-7391") == (None, None)  # no bob there
    assert login("agent-carol-7391") == (None, None)
    with pytest.raises(Exception, match="2 accounts have a campaign named 'spring': write ACCOUNT/spring"):
        svc._campaign_named("spring")
    assert svc._campaign_named("zeta.example/spring")["account_id"] == zeta.account_id

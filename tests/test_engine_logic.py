"""The dialer loop's own rules on an injected clock, with a recording stand-in for the
SIP pool (the real pool is exercised in test_engine_sip.py): line capacity and the
calls-per-second cap are never exceeded, and the rules engine is asked at dial time."""

import datetime as _dt

import pytest
from twisted.internet import task

from campaigns.leads import import_list
from campaigns.store import add_number, change_state, create_account, create_campaign
from dialer.engine import Dialer
from core.store import Store
from rules import service
from sip_harness import write_tone

T0 = _dt.datetime(2026, 11, 24, 17, 0, tzinfo=_dt.timezone.utc)  # noon in New York, a Tuesday


class FakePool:
    def __init__(self):
        self.dials = []  # (time, key, uri)
        self.hangups = []
        self.clock = None

    def dial(self, key, uri, **fields):
        self.dials.append((self.clock.seconds(), key, uri))
        return 5060

    def hangup(self, key, code=None):
        self.hangups.append(key)


@pytest.fixture
def dialer(tmp_path):
    store = Store(tmp_path / "d.db")
    service.ensure_defaults(store, T0)
    reg = tmp_path / "reg.txt"
    reg.write_text("2125550199\n")
    service.import_dnc(store, reg, T0, "t", source="national", as_of="2026-11-20")
    create_account(store, "acme", T0, "t", connection="gshdsl", lines=10)
    add_number(store, "acme", "212 555 9999", T0, "t")
    create_campaign(store, "c", "acme", T0, "t", caller_id="212-555-9999", greeting=write_tone(tmp_path / "g.wav"),
                    dial_mode="power", power_ratio="3")
    f = tmp_path / "list.csv"
    # 300 numbers, spaced so that no two are a multi-line run; one on the national DNC list
    f.write_text("phone\n2125550199\n" + "\n".join(f"212555{1000 + 29 * i:04d}" for i in range(300)) + "\n")
    import_list(store, f, "c", T0, "t")
    change_state(store, "c", "start", T0, "t")
    clock = task.Clock()
    clock.advance(T0.timestamp())
    pool = FakePool()
    pool.clock = clock
    d = Dialer(clock, store, "c", pool, route=lambda n: f"sip:{n[1:]}@carrier", tick=0.1, cps=4)
    for uid in range(1, 9):  # 8 agents ready (the floor directly: no SIP here)
        d.floor.login(uid, d.cid, d.now())
    return d, clock, pool, store


def test_line_capacity_and_cps_cap(dialer):
    d, clock, pool, store = dialer
    d.start()
    for _ in range(300):  # 30 s of the loop, nobody answers
        clock.advance(0.1)
        assert len(d.legs) <= d.lines == 10  # power 3 x 8 agents wants 24: the account has 10 lines
    # never more than 4 new calls in any second
    times = [t for t, _, _ in pool.dials]
    for t in times:
        assert sum(1 for u in times if t <= u < t + 1.0) <= 4
    assert len(pool.dials) == 10  # lines full, nothing ends: no more dials
    assert all(d.legs[k].verdict["allowed"] and d.legs[k].ruleset == "US@1" for _, k, _ in pool.dials)
    # the number on the national DNC list was never dialled
    assert not [u for _, _, u in pool.dials if "2125550199" in u]
    assert store.query_one("SELECT status FROM leads WHERE phone = '+12125550199'")["status"] == "blocked"


def test_rules_change_between_screening_and_dial_time(dialer):
    """A number put on the company DNC list after import is not dialled: the hopper asks
    the rules engine at the instant of each dial."""
    d, clock, pool, store = dialer
    first = store.query_one("SELECT phone FROM leads WHERE status = 'new' ORDER BY priority, id")["phone"]
    service.add_dnc(store, [first], d.now(), "t", reason="asked on another campaign")
    d.start()
    clock.advance(1.0)
    assert pool.dials and not [u for _, _, u in pool.dials if first[1:] in u]


# -- agent commands from the CLI, and a locked database ---------------------------------

class ConnectingPool(FakePool):
    def connect(self, customer, agent, tie_key=None):
        return "bridge"

    def record(self, key, path):
        pass


def _one_agent(tmp_path, store_timeout=5.0):
    from campaigns.store import add_user
    store = Store(tmp_path / "d.db", timeout=store_timeout)
    service.ensure_defaults(store, T0)
    service.import_dnc(store, _reg(tmp_path), T0, "t", source="national", as_of="2026-11-20")
    create_account(store, "acme", T0, "t", connection="gshdsl", lines=10)
    add_number(store, "acme", "212 555 9999", T0, "t")
    add_user(store, "acme", "bob", "agent", T0, "t")
    uid = store.query_one("SELECT id FROM users WHERE name = 'bob'")["id"]
    create_campaign(store, "c", "acme", T0, "t", caller_id="212-555-9999", greeting=write_tone(tmp_path / "g.wav"),
                    dial_mode="progressive")
    f = tmp_path / "list.csv"
    f.write_text("phone\n" + "\n".join(f"212555{1000 + 29 * i:04d}" for i in range(20)) + "\n")
    import_list(store, f, "c", T0, "t")
    change_state(store, "c", "start", T0, "t")
    clock = task.Clock()
    clock.advance(T0.timestamp())
    pool = ConnectingPool()
    pool.clock = clock
    d = Dialer(clock, store, "c", pool, route=lambda n: f"sip:{n[1:]}@carrier", tick=0.1, cps=4, wrap_limit_s=60)
    d.floor.login(uid, d.cid, d.now(), name="bob")
    d.agent_legs["leg-bob"] = uid
    d.agent_of_user[uid] = "leg-bob"
    return d, clock, pool, store, uid


def _reg(tmp_path):
    reg = tmp_path / "reg.txt"
    reg.write_text("2125550199\n")
    return reg


def _talk_and_hang_up(d, clock, pool):
    """The first dial answers, reaches bob, and the customer hangs up 30 s later."""
    _, key, _ = pool.dials[0]
    t = int(clock.seconds() * 1000)
    d.on_event({"ev": "answered", "key": key, "code": 200})
    assert d.legs[key].state == "bridged"
    clock.advance(30)
    d.on_event({"ev": "ended", "key": key, "code": 200, "reason": "BYE", "answered": True, "started_ms": t - 4000,
                "answered_ms": t, "ended_ms": t + 30000, "cause": "remote"})
    return key


def test_a_disposition_from_the_cli_ends_the_wrap_up(tmp_path):
    from dialer.commands import get, submit
    d, clock, pool, store, uid = _one_agent(tmp_path)
    d.start()
    clock.advance(0.2)
    key = _talk_and_hang_up(d, clock, pool)
    assert d.floor.state_of(uid) == "wrap_up" and not store.query("SELECT 1 FROM cdrs WHERE call_id = ?", (key,))
    cmd = submit(store, "acme", "bob", "dispose", d.now(), "sup", disposition="sale")
    clock.advance(1.1)  # the loop reads commands once a second
    assert d.floor.state_of(uid) == "ready"  # the next calls ring; nobody answers them here
    row = get(store, cmd["id"])
    assert row["result"] == "done: wrap-up ended with sale" and row["taken_at"]
    cdr = store.query_one("SELECT agent_disposition, lead_outcome, agent_id FROM cdrs WHERE call_id = ?", (key,))
    assert (cdr["agent_disposition"], cdr["lead_outcome"], cdr["agent_id"]) == ("sale", "answered-human", uid)
    pause = submit(store, "acme", "bob", "pause", d.now(), "sup", reason="coffee")
    clock.advance(1.1)
    assert get(store, pause["id"])["result"] == "done: paused" and d.floor.state_of(uid) == "paused"
    # a second disposition finds no wrap-up: refused, with the reason, and nothing changes
    late = submit(store, "acme", "bob", "dispose", d.now(), "sup", disposition="sale")
    clock.advance(1.1)
    assert get(store, late["id"])["result"].startswith("refused: ") and "paused" in get(store, late["id"])["result"]
    assert d.floor.state_of(uid) == "paused"
    ready = submit(store, "acme", "bob", "ready", d.now(), "sup")
    clock.advance(1.1)
    assert get(store, ready["id"])["result"] == "done: ready" and d.floor.state_of(uid) == "ready"
    states = [r["state"] for r in store.query("SELECT state FROM agent_events WHERE user_id = ? ORDER BY id", (uid,))]
    assert states[-4:] == ["wrap_up", "ready", "paused", "ready"]


def test_commands_are_checked_before_they_are_queued(tmp_path):
    from dialer.commands import submit
    from core.errors import InputError, NotFound
    d, clock, pool, store, uid = _one_agent(tmp_path)
    for kw, err in [(dict(user="nobody", command="pause"), NotFound),
                    (dict(user="bob", command="dispose"), InputError),
                    (dict(user="bob", command="dispose", disposition="bought-a-boat"), InputError),
                    (dict(user="bob", command="dispose", disposition="callback"), InputError),
                    (dict(user="bob", command="explode"), InputError),
                    (dict(user="bob", command="pause", disposition="sale"), InputError)]:
        with pytest.raises(err):
            submit(store, "acme", now=T0, actor="sup", **kw)
    assert store.query_one("SELECT COUNT(*) AS n FROM agent_commands")["n"] == 0


def test_a_command_nobody_takes_is_withdrawn(tmp_path):
    """No dialer has the agent: the CLI's wait ends with "expired", and a dialer that
    starts later never carries the stale command out."""
    from dialer.commands import submit, wait_result
    d, clock, pool, store, uid = _one_agent(tmp_path)
    cmd = submit(store, "acme", "bob", "pause", T0, "sup")
    fake = {"t": 0.0}
    out = wait_result(store, cmd["id"], 2.0, lambda: T0, sleep=lambda s: fake.__setitem__("t", fake["t"] + s),
                      clock=lambda: fake["t"])
    assert out == {"id": cmd["id"], "done": False, "result": "expired: no running dialer has this agent logged in"}
    d.start()
    clock.advance(1.1)
    assert d.floor.state_of(uid) == "ready"


def test_a_locked_database_pauses_dialing_with_one_reason(tmp_path):
    import sqlite3
    d, clock, pool, store, uid = _one_agent(tmp_path, store_timeout=0.02)
    other = sqlite3.connect(str(tmp_path / "d.db"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    d.start()
    for _ in range(20):
        clock.advance(0.1)
    assert pool.dials == []  # nothing can be checked by the rules engine: nothing is dialled
    assert "database is unavailable" in d.blocked_reason
    other.execute("ROLLBACK")
    other.close()
    clock.advance(0.1)
    assert len(pool.dials) == 1 and d.blocked_reason is None


def test_preview_dials_only_when_the_agent_asks_and_connects_that_agent(tmp_path):
    from campaigns.store import add_user
    from dialer.commands import get, submit
    d, clock, pool, store, uid = _one_agent(tmp_path)
    store.execute("UPDATE campaigns SET dial_mode = 'preview'")
    add_user(store, "acme", "carol", "agent", T0, "t")
    carol = store.query_one("SELECT id FROM users WHERE name = 'carol'")["id"]
    d = Dialer(clock, store, "c", pool, route=lambda n: f"sip:{n[1:]}@carrier", tick=0.1, cps=4, wrap_limit_s=60)
    d.floor.login(carol, d.cid, d.now(), name="carol")  # carol is idle longest
    clock.advance(5)
    d.floor.login(uid, d.cid, d.now(), name="bob")
    for who, key in ((carol, "leg-carol"), (uid, "leg-bob")):
        d.agent_legs[key] = who
        d.agent_of_user[who] = key
    d.start()
    for _ in range(30):
        clock.advance(0.1)
    assert pool.dials == []  # preview: nothing is dialled by itself
    cmd = submit(store, "acme", "bob", "dial", d.now(), "bob")
    clock.advance(1.1)
    res = get(store, cmd["id"])["result"]
    assert res.startswith("done: dialling +1212555") and len(pool.dials) == 1
    again = submit(store, "acme", "bob", "dial", d.now(), "bob")
    clock.advance(1.1)
    assert get(store, again["id"])["result"] == "refused: the agent's previous preview call is still in progress"
    assert len(pool.dials) == 1
    _, key, _ = pool.dials[0]
    d.on_event({"ev": "answered", "key": key, "code": 200})
    assert d.legs[key].agent == uid and d.floor.state_of(carol) == "ready"  # bob's call, though carol waited longer


def test_preview_dial_is_refused_on_a_campaign_that_dials_by_itself(tmp_path):
    d, clock, pool, store, uid = _one_agent(tmp_path)
    assert d.command(uid, "dial") == "refused: campaign c dials by itself (progressive)"

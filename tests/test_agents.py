"""Agents: PIN login, the state model, the floor (longest idle, counts, wrap-up),
agent events and occupancy on a real SQLite file."""

import datetime as dt

import pytest

from campaigns.store import add_user, create_account, create_campaign
from dialer import agents
from dialer.agents import (AgentCounts, AgentFloor, TRANSITIONS, agent_events, authenticate, campaign_dispositions,
                           disposition_outcome, occupancy, record_agent_events, set_pin)
from core.errors import InputError, NotFound, StateError
from core.timeutil import to_ms

NOW = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.timezone.utc)


def at(seconds):
    return NOW + dt.timedelta(seconds=seconds)


# -- PIN login --------------------------------------------------------------------------

@pytest.fixture
def acme(store):
    create_account(store, "acme", NOW, "t")
    add_user(store, "acme", "alice", "agent", NOW, "t")
    add_user(store, "acme", "bob", "agent", NOW, "t")
    return store


def test_pin_is_stored_as_a_salted_hash(acme):
    set_pin(acme, "acme", "alice", "4821", NOW, "sup")
    set_pin(acme, "acme", "bob", "4821", NOW, "sup")
    a, b = (acme.query_one("SELECT pin_hash FROM users WHERE name = ?", (n,))["pin_hash"] for n in ("alice", "bob"))
    assert a.startswith("scrypt$") and "4821" not in a and a != b  # salted: same PIN, different hashes
    entry = acme.query_one("SELECT * FROM audit_log WHERE action = 'user.pin'")
    assert "4821" not in entry["detail"]


def test_login_with_the_right_pin(acme):
    set_pin(acme, "acme", "alice", "4821", NOW, "sup")
    user = authenticate(acme, "acme", "alice", "4821", NOW)
    assert user["name"] == "alice" and user["role"] == "agent" and isinstance(user["user_id"], int)


def test_wrong_pins_are_refused_but_never_lock_the_user(acme):
    """Anyone who knows a user name could otherwise lock that agent out; the live dialer
    slows down the source address instead (test_gate.py, test_agent_login.py)."""
    set_pin(acme, "acme", "alice", "4821", NOW, "sup")
    for _ in range(8):
        with pytest.raises(InputError, match="wrong PIN for 'alice'"):
            authenticate(acme, "acme", "alice", "0000", NOW)
    assert acme.query_one("SELECT pin_failures FROM users WHERE name = 'alice'")["pin_failures"] == 8
    assert authenticate(acme, "acme", "alice", "4821", NOW)["name"] == "alice"  # the right PIN still works
    assert acme.query_one("SELECT pin_failures FROM users WHERE name = 'alice'")["pin_failures"] == 0
    assert len(acme.query("SELECT * FROM audit_log WHERE action = 'user.login-refused'")) == 8


def test_pin_rules_and_unknown_users(acme):
    for bad, msg in (("12a4", "4 to 12 digits"), ("123", "4 to 12 digits"), ("1" * 13, "4 to 12 digits"),
                     ("7777", "too easy"), ("1234", "too easy"), ("9876", "too easy"), ("", "4 to 12")):
        with pytest.raises(InputError, match=msg):
            set_pin(acme, "acme", "alice", bad, NOW, "sup")
    with pytest.raises(InputError, match="no PIN yet"):
        authenticate(acme, "acme", "bob", "4821", NOW)
    with pytest.raises(NotFound, match="no user 'carol'"):
        authenticate(acme, "acme", "carol", "4821", NOW)
    with pytest.raises(NotFound):
        set_pin(acme, "other", "alice", "4821", NOW, "sup")


def test_verify_pin_rejects_garbage():
    assert agents.verify_pin("4821", agents.hash_pin("4821"))
    assert not agents.verify_pin("4821", "plain")
    assert not agents.verify_pin("4821", "md5$1$2$3$00$00")


# -- the state model ----------------------------------------------------------------------

def floor_with(state, **kw):
    """A floor with agent 1 on campaign 10 in ``state``."""
    f = AgentFloor(**kw)
    if state == "logged_out":
        return f
    f.login(1, 10, at(0))
    if state == "paused":
        f.pause(1, at(1))
    elif state in ("on_call", "wrap_up"):
        f.assign(10, "call-1", at(1))
        if state == "wrap_up":
            f.call_ended(1, at(60))
    return f


def act(f, action, t):
    return {
        "login": lambda: f.login(1, 10, t),
        "pause": lambda: f.pause(1, t, "break"),
        "resume": lambda: f.resume(1, t),
        "assign": lambda: f.assign(10, "call-2", t, user_id=1),
        "call_ended": lambda: f.call_ended(1, t),
        "dispose": lambda: f.dispose(1, "sale", t),
        "logout": lambda: f.logout(1, t),
    }[action]()


ACTIONS = [a for a in TRANSITIONS if a != "wrap_timeout"]
LEGAL = [(a, s, d) for a in ACTIONS for s, d in TRANSITIONS[a].items()]
ILLEGAL = [(a, s) for a in ACTIONS for s in agents.AGENT_STATES if s not in TRANSITIONS[a]]


@pytest.mark.parametrize("action,src,dst", LEGAL)
def test_legal_agent_transition(action, src, dst):
    f = floor_with(src)
    ev = act(f, action, at(100))
    assert (ev.prev_state, ev.state, ev.at) == (src, dst, at(100))
    assert f.state_of(1) == dst
    if dst != "logged_out":
        assert f.agent(1).since == at(100)


@pytest.mark.parametrize("action,state", ILLEGAL)
def test_illegal_agent_transition_is_refused(action, state):
    f = floor_with(state)
    before = f.agents()
    with pytest.raises(StateError, match="cannot|already logged in"):
        act(f, action, at(100))
    assert f.agents() == before


def test_one_login_per_person():
    f = AgentFloor()
    f.login(1, 10, at(0), name="alice")
    with pytest.raises(StateError, match="alice is already logged in \\(campaign 10 .*one login per person"):
        f.login(1, 11, at(5))
    assert f.agent(1).campaign_id == 10


def test_longest_idle_agent_takes_the_call():
    f = AgentFloor()
    f.login(1, 10, at(0))
    f.login(2, 10, at(5))
    f.login(3, 10, at(10))
    f.login(4, 99, at(0))  # another campaign
    f.pause(1, at(20))
    f.resume(1, at(30))  # idle again only since 30
    assert f.pick(10) == 2
    ev = f.assign(10, "c-a", at(40))
    assert (ev.user_id, ev.call_id, ev.state) == (2, "c-a", "on_call")
    assert f.assign(10, "c-b", at(41)).user_id == 3
    assert f.assign(10, "c-c", at(42)).user_id == 1
    assert f.assign(10, "c-d", at(43)) is None and f.pick(10) is None
    # back from wrap-up, idle from the disposition on
    f.call_ended(3, at(50))
    f.call_ended(2, at(51))
    f.dispose(2, "sale", at(52))
    f.dispose(3, "not-interested", at(53))
    assert f.pick(10) == 2


def test_ties_go_to_the_lower_user_id():
    f = AgentFloor()
    f.login(7, 10, at(0))
    f.login(3, 10, at(0))
    assert f.pick(10) == 3


def test_counts_for_pacing():
    f = AgentFloor()
    for uid in range(1, 7):
        f.login(uid, 10, at(0))
    f.login(9, 11, at(0))
    f.pause(1, at(1))
    f.assign(10, "a", at(2), user_id=2)
    f.assign(10, "b", at(2), user_id=3)
    f.assign(10, "c", at(2), user_id=4)
    f.call_ended(4, at(3))
    assert f.counts(10) == AgentCounts(logged_in=6, agents=5, ready=2, busy=3, talking=2, wrap_up=1, paused=1)
    assert f.counts(11) == AgentCounts(logged_in=1, agents=1, ready=1, busy=0, talking=0, wrap_up=0, paused=0)
    assert f.counts(12) == AgentCounts(0, 0, 0, 0, 0, 0, 0)


def test_wrap_up_ends_with_a_disposition():
    f = floor_with("wrap_up", dispositions={10: ["demo-booked"]})
    with pytest.raises(InputError, match="unknown disposition 'maybe'"):
        f.dispose(1, "maybe", at(70))
    assert f.state_of(1) == "wrap_up"
    ev = f.dispose(1, "demo-booked", at(70), pause=True, reason="lunch")
    assert (ev.state, ev.disposition, ev.call_id, ev.reason) == ("paused", "demo-booked", "call-1", "lunch")
    f.resume(1, at(80))
    f.assign(10, "call-2", at(81))
    with pytest.raises(StateError, match="on call call-2, not call-9"):
        f.call_ended(1, at(90), call_id="call-9")
    f.call_ended(1, at(90), call_id="call-2")
    with pytest.raises(InputError, match="set by the dialer"):
        f.dispose(1, "wrap-timeout", at(91))
    assert f.dispose(1, "callback", at(92)).state == "ready"


def test_wrap_up_ends_by_itself_after_the_limit():
    f = AgentFloor(wrap_limit_s=30, wrap_limits={11: None})
    f.login(1, 10, at(0))
    f.login(2, 11, at(0))
    f.assign(10, "x", at(1))
    f.assign(11, "y", at(1))
    f.call_ended(1, at(10))
    f.call_ended(2, at(10))
    assert f.tick(at(39)) == []
    (ev,) = f.tick(at(45))  # late tick: the change is dated at the limit
    assert (ev.user_id, ev.prev_state, ev.state, ev.at, ev.disposition, ev.call_id) == \
           (1, "wrap_up", "ready", at(40), "wrap-timeout", "x")
    assert f.agent(1).since == at(40) and f.state_of(2) == "wrap_up"  # campaign 11: no limit
    assert f.tick(at(10_000)) == []


def test_dispositions_and_their_lead_outcomes():
    assert disposition_outcome("sale") == "answered-human"
    assert disposition_outcome("dnc-requested") == "dnc-requested"
    assert disposition_outcome("answering-machine") == "machine"
    assert disposition_outcome("callback") == "callback"
    assert disposition_outcome("interested", {"interested": "answered-human"}) == "answered-human"
    assert campaign_dispositions(["a-1"]) == {"a-1": "answered-human"}
    with pytest.raises(InputError, match="already a standard one"):
        campaign_dispositions(["sale"])
    with pytest.raises(InputError, match="lower-case"):
        campaign_dispositions(["Big Sale"])
    with pytest.raises(InputError, match="lead outcome 'busy'"):
        campaign_dispositions({"x": "busy"})


def test_time_checks():
    f = AgentFloor()
    f.login(1, 10, to_ms(at(10)))  # epoch ms are accepted
    assert f.agent(1).since == at(10)
    with pytest.raises(InputError, match="before the agent's last change"):
        f.pause(1, at(5))
    with pytest.raises(InputError, match="not an instant"):
        f.pause(1, "now")
    with pytest.raises(InputError, match="wrap-up limit"):
        AgentFloor(wrap_limit_s=0)
    with pytest.raises(NotFound):
        f.agent(2)


# -- agent events in the store ---------------------------------------------------------------

def test_agent_events_and_occupancy(acme):
    camp = create_campaign(acme, "spring", "acme", NOW, "t")["id"]
    alice = acme.query_one("SELECT id FROM users WHERE name = 'alice'")["id"]
    f = AgentFloor(wrap_limit_s=60)
    evs = [f.login(alice, camp, at(0)),  # ready 0-100
           f.assign(camp, "c1", at(100)),  # on call 100-400
           f.call_ended(alice, at(400)),  # wrap-up 400-430
           f.dispose(alice, "sale", at(430)),  # ready 430-500
           f.pause(alice, at(500), "break"),  # paused 500-600
           f.resume(alice, at(600)),  # ready 600-...
           f.logout(alice, at(700))]
    assert record_agent_events(acme, evs) == 7
    rows = agent_events(acme, campaign_id=camp)
    assert [(r["prev_state"], r["state"]) for r in rows] == [
        ("logged_out", "ready"), ("ready", "on_call"), ("on_call", "wrap_up"), ("wrap_up", "ready"),
        ("ready", "paused"), ("paused", "ready"), ("ready", "logged_out")]
    assert rows[1]["call_id"] == "c1" and rows[3]["disposition"] == "sale" and rows[4]["reason"] == "break"
    assert rows[0]["at"] == "2026-11-24T17:00:00.000Z"
    assert len(agent_events(acme, user_id=alice, since=at(100), until=at(500))) == 3
    occ = occupancy(acme, camp, at(0), at(1000))[alice]
    assert (occ["ready"], occ["on_call"], occ["wrap_up"], occ["paused"]) == (270.0, 300.0, 30.0, 100.0)
    assert occ["occupancy"] == round(330 / 600, 4)
    # a window that starts mid-call
    occ = occupancy(acme, camp, at(300), at(450))[alice]
    assert (occ["ready"], occ["on_call"], occ["wrap_up"]) == (20.0, 100.0, 30.0)

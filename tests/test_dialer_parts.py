"""The dialer loop's parts, each alone on a task.Clock: record keeping, call routing,
the agent desk, dial planning, the loop's ticker, and the simulator's heap clock."""

import datetime as _dt

import pytest
from twisted.internet import defer, task

from core.errors import StoreError
from dialer.agents import AgentFloor
from dialer.calls import CallLeg
from dialer.desk import AgentDesk
from dialer.engine import CongestionBrake, DialPlanner, Stats, Ticker
from dialer.gate import AccountGate, AgentSessions, LoginGuard
from dialer.pacing.policies import PacingState, Power, Predictive
from dialer.pacing.sim import HeapClock
from dialer.records import RecordKeeper
from dialer.routing import CallRouter

T0 = _dt.datetime(2026, 11, 24, 17, 0, tzinfo=_dt.timezone.utc)


class Journal:
    def __init__(self):
        self.puts = []

    def put(self, kind, payload):
        self.puts.append((kind, payload))

    def of(self, kind):
        return [p for k, p in self.puts if k == kind]


class Pool:
    def __init__(self):
        self.hangups, self.connects, self.plays = [], [], []

    def hangup(self, key, code=None):
        self.hangups.append((key, code))

    def connect(self, customer, agent, tie_key=None):
        self.connects.append((customer, agent))
        return "bridge"

    def play(self, key, wav, loop=False):
        self.plays.append(key)

    def record(self, key, path):
        pass


def clock_at_t0():
    clock = task.Clock()
    clock.advance(T0.timestamp())
    return clock


def leg(key, clock, n=1):
    return CallLeg(key, f"+1212555{1000 + n:04d}", int(clock.seconds() * 1000), account_id=1, campaign_id=7,
                   lead_id=n)


# -- record keeping ----------------------------------------------------------------------

def test_records_hold_a_connected_calls_cdr_until_the_wrap_up_ends():
    clock, journal = clock_at_t0(), Journal()
    rec = RecordKeeper(clock, journal, account_id=1, campaign_id=7)
    lone = leg("c-1", clock, 1)
    rec.call_open(lone, rec.now())
    lone.ended(486, "Busy Here", now=int(clock.seconds() * 1000) + 3000)
    rec.ended(lone, wrap_up=False)
    assert [p["cdr"]["disposition"] for p in journal.of("cdr")] == ["busy"]  # at once: no agent

    talked = leg("c-2", clock, 2)
    ms = int(clock.seconds() * 1000)
    talked.answered(now=ms + 1000)
    talked.agent_assigned(42, now=ms + 1100)
    talked.ended(200, "OK", answered=True, now=ms + 60_000)
    rec.ended(talked, wrap_up=True)
    assert len(journal.of("cdr")) == 1 and rec.held == {42: talked} and rec.owns("c-2")
    rec.wrap_ended(42, "sale")
    cdr = journal.of("cdr")[-1]["cdr"]
    assert cdr["call_id"] == "c-2" and cdr["agent_disposition"] == "sale" and cdr["lead_outcome"] == "answered-human"
    assert not rec.held and not rec.owns("c-2")
    assert journal.of("call_open")[0]["call"]["call_id"] == "c-1"


def test_records_attach_a_late_recording_to_the_written_cdr():
    clock, journal = clock_at_t0(), Journal()
    rec = RecordKeeper(clock, journal, account_id=1, campaign_id=7)
    call = leg("c-3", clock, 3)
    ms = int(clock.seconds() * 1000)
    call.answered(now=ms + 500)
    call.agent_assigned(5, now=ms + 600)
    call.ended(200, "OK", answered=True, now=ms + 9000)
    rec.ended(call, wrap_up=False, recording_expected=True)  # the agent had hung up first: "other"
    assert journal.of("cdr")[0]["cdr"]["agent_disposition"] == "other" and rec.owns("c-3")
    assert rec.recording("c-3", {"ev": "recording_done", "path": "/r/c-3.wav", "duration_s": 8.4}, ms + 9500)
    assert journal.of("recording") == [{"at": rec.at(), "call_id": "c-3", "path": "/r/c-3.wav", "duration_ms": 8400}]
    assert not rec.recording("c-3", {"ev": "recording_done", "path": "x"}, ms) and not rec.owns("c-3")


# -- call routing ------------------------------------------------------------------------

def router_on(clock, window_s=2.0):
    journal, pool, floor = Journal(), Pool(), AgentFloor(wrap_limit_s=None)
    gate = AccountGate()
    gate.set_capacity(1, 5)
    gate.set_cps("t", 100)
    rec = RecordKeeper(clock, journal, account_id=1, campaign_id=7)
    changes = []
    agents = {}
    router = CallRouter(clock, pool, floor, rec, Stats(), Power(2.0), gate, CongestionBrake(), 7, agents.get,
                        greeting="/m.wav", message_s=6.0, on_change=lambda: changes.append(clock.seconds()))
    return router, journal, pool, floor, gate, changes, agents


def place(router, gate, clock, key, n):
    lg = leg(key, clock, n)
    gate.take(key, 1, "t", clock.seconds())
    router.add(lg)
    return lg


def test_routing_a_live_answer_nobody_takes_plays_the_message_and_keeps_its_line():
    clock = clock_at_t0()
    router, journal, pool, floor, gate, changes, agents = router_on(clock)
    place(router, gate, clock, "c-1", 1)
    assert router.dialing == 1
    clock.advance(4)
    router.on_event("c-1", {"ev": "answered", "key": "c-1", "code": 200})
    assert router.waiting == ["c-1"] and router.dialing == 0 and changes  # a decision at once
    clock.advance(2.0)
    assert router.legs["c-1"].state == "safe_harbor" and pool.plays == ["c-1"] and router.stats.abandons == 1
    assert gate.in_use(1) == 1  # the message holds its line
    clock.advance(6.0)
    assert ("c-1", None) in pool.hangups
    router.on_event("c-1", {"ev": "ended", "key": "c-1", "code": 200, "answered": True})
    assert gate.in_use(1) == 0 and not router.legs
    cdr = journal.of("cdr")[0]["cdr"]
    assert cdr["abandoned"] and cdr["disposition"] == "abandoned"



def test_routing_tells_the_policy_of_a_live_answer_that_hung_up_while_waiting():
    # a person who hangs up inside the connect window is a live answer, not an
    # abandon (dialer.abandons): the policy counts it as its records and reports do
    clock = clock_at_t0()
    router, journal, pool, floor, gate, changes, agents = router_on(clock)
    router.policy = Predictive(connect_window=2.0)
    place(router, gate, clock, "c-9", 9)
    clock.advance(4)
    router.on_event("c-9", {"ev": "answered", "key": "c-9", "code": 200})
    clock.advance(1.0)
    router.on_event("c-9", {"ev": "ended", "key": "c-9", "code": 200, "answered": True})
    cdr = journal.of("cdr")[0]["cdr"]
    assert cdr["disposition"] == "answered" and not cdr["abandoned"]
    assert (router.policy.lives, router.policy.abandons) == (1, 0)
    assert router.stats.window.counts(None) == (1, 0)

def test_routing_bridges_a_live_answer_to_the_agent_idle_longest():
    clock = clock_at_t0()
    router, journal, pool, floor, gate, changes, agents = router_on(clock)
    for uid in (1, 2):
        floor.login(uid, 7, _dt.datetime.fromtimestamp(clock.seconds(), _dt.timezone.utc))
        agents[uid] = f"phone-{uid}"
        clock.advance(1)
    place(router, gate, clock, "c-2", 2)
    clock.advance(3)
    router.on_event("c-2", {"ev": "answered", "key": "c-2", "code": 200})
    assert pool.connects == [("c-2", "phone-1")] and floor.state_of(1) == "on_call" and not router.waiting
    router.on_event("c-2", {"ev": "ended", "key": "c-2", "code": 200, "answered": True})
    assert floor.state_of(1) == "wrap_up" and not journal.of("cdr")  # held for the wrap-up
    router.wrap_ended(1, "sale")
    assert journal.of("cdr")[0]["cdr"]["agent_disposition"] == "sale"


# -- the agent desk ----------------------------------------------------------------------

class Users:
    """A store stand-in with one user (login_user's one query)."""

    def __init__(self, rows):
        self.rows = rows

    def query_one(self, sql, params):
        return self.rows.get(params[1])


def desk_on(clock, run=None):
    journal, pool, floor = Journal(), Pool(), AgentFloor(wrap_limit_s=None)
    rec = RecordKeeper(clock, journal, account_id=1, campaign_id=7)
    store = Users({"alice": {"id": 11, "name": "alice", "role": "agent", "pin_hash": "h"}})
    run = run or (lambda fn, *a: defer.maybeDeferred(fn, store, *a))
    logins = []
    desk = AgentDesk(clock, pool, floor, rec, AgentSessions(), LoginGuard(),
                     lambda pin, stored: defer.succeed(pin == "1234"), run, {"id": 1, "name": "acme"},
                     {"id": 7, "name": "c"}, on_login=logins.append)
    return desk, journal, pool, floor, logins


def test_desk_logs_an_agent_in_after_the_pin_and_the_ack():
    clock = clock_at_t0()
    desk, journal, pool, floor, logins = desk_on(clock)
    desk.incoming({"ev": "incoming", "key": "in-1", "to_user": "agent-alice-1234", "source": "10.0.0.5:5062"})
    assert "in-1" in desk.pending_login and floor.state_of(11) == "logged_out"  # no ACK yet
    desk.on_event("in-1", {"ev": "confirmed", "key": "in-1"})
    assert floor.state_of(11) == "ready" and desk.agent_key(11) == "in-1" and logins == [11]
    assert desk.logout(11) == "done: logged out" and ("in-1", None) in pool.hangups
    desk.on_event("in-1", {"ev": "ended", "key": "in-1"})
    assert floor.state_of(11) == "logged_out" and desk.agent_key(11) is None


def test_desk_refuses_a_wrong_pin_with_an_audit_line():
    clock = clock_at_t0()
    desk, journal, pool, floor, logins = desk_on(clock)
    desk.incoming({"ev": "incoming", "key": "in-2", "to_user": "agent-alice-9999", "source": "10.0.0.5:5062"})
    assert ("in-2", 403) in pool.hangups and not desk.owns("in-2") and not logins
    assert journal.of("audit")[0]["reason"] == "wrong PIN"


def test_desk_forgets_a_phone_that_hung_up_while_its_user_was_looked_up():
    clock = clock_at_t0()
    pending = []
    desk, journal, pool, floor, logins = desk_on(clock, run=lambda fn, *a: pending.append(defer.Deferred()) or pending[-1])
    desk.incoming({"ev": "incoming", "key": "in-3", "to_user": "agent-alice-1234", "source": "10.0.0.5:5062"})
    assert desk.owns("in-3")
    desk.on_event("in-3", {"ev": "ended", "key": "in-3"})
    pending[0].callback({"id": 11, "name": "alice", "role": "agent", "pin_hash": "h"})
    assert not desk.owns("in-3") and floor.state_of(11) == "logged_out"


def test_desk_answers_503_when_the_store_is_unavailable():
    clock = clock_at_t0()
    desk, journal, pool, floor, logins = desk_on(clock, run=lambda fn, *a: defer.fail(StoreError("locked")))
    desk.incoming({"ev": "incoming", "key": "in-4", "to_user": "agent-alice-1234", "source": "10.0.0.5:5062"})
    assert ("in-4", 503) in pool.hangups and not desk.owns("in-4")


# -- dial planning -----------------------------------------------------------------------

class Leads:
    def __init__(self):
        self.claims, self.released = [], []

    def claim(self, n, now, consumer, live_numbers):
        d = defer.Deferred()
        self.claims.append((n, d))
        return d

    def release(self, ids, now):
        self.released.extend(ids)


class CountingPower(Power):
    def __init__(self, k):
        super().__init__(k)
        self.unplaced = 0

    def not_placed(self, n):
        self.unplaced += n


def planner_on(clock, ready=2):
    gate = AccountGate()
    gate.set_capacity(1, 10)
    gate.set_cps("t", 100)
    leads, dials, policy = Leads(), [], CountingPower(2.0)
    seen = {"ready": ready}

    def observe():
        r = seen["ready"]
        return (r, r, 0, 0, len(dials), 0, 10, gate.in_use(1))

    def dial(row, verdict, now):
        gate.take(f"k{row['id']}", 1, "t", clock.seconds())
        dials.append(row["id"])

    planner = DialPlanner(clock, policy, gate, CongestionBrake(), leads, 1, "t", observe, dial, lambda: set())
    return planner, leads, dials, gate, policy, seen


def rows(*ids):
    return [({"id": i, "phone": f"+1212555{1000 + i:04d}"}, None) for i in ids]


def test_planning_keeps_one_claim_in_flight_and_dials_what_it_brings():
    clock = clock_at_t0()
    planner, leads, dials, gate, policy, seen = planner_on(clock)
    planner.plan()
    planner.plan()
    assert [n for n, _ in leads.claims] == [4]  # power 2 x 2 ready agents; the second waits
    clock.advance(0.05)
    leads.claims[0][1].callback(rows(1, 2, 3, 4))
    assert dials == [1, 2, 3, 4] and not leads.released and policy.unplaced == 0


def test_planning_releases_leads_that_arrive_when_the_room_is_gone():
    clock = clock_at_t0()
    planner, leads, dials, gate, policy, seen = planner_on(clock)
    planner.plan()
    gate.set_capacity(1, 1)  # lines taken meanwhile (another campaign of the account)
    leads.claims[0][1].callback(rows(5, 6, 7, 8))
    assert dials == [5] and leads.released == [6, 7, 8] and policy.unplaced == 3
    planner.stopped = True
    gate.set_capacity(1, 10)
    planner.stopped = False
    planner.plan()
    planner.stopped = True  # the loop stops while the claim is out: nothing is dialled
    leads.claims[1][1].callback(rows(9))
    assert dials == [5] and leads.released == [6, 7, 8, 9]



def test_a_large_claim_is_dialled_in_slices_one_reactor_turn_each():
    for stop_between in (False, True):
        clock = clock_at_t0()
        planner, leads, dials, gate, policy, seen = planner_on(clock)
        gate.set_capacity(1, 100)
        policy.decide = lambda s: 24
        planner.plan()
        assert [n for n, _ in leads.claims] == [24]
        leads.claims[0][1].callback(rows(*range(1, 25)))
        assert dials == list(range(1, 11)) and clock.getDelayedCalls()  # one slice in this turn
        planner.plan()  # no new decision (or claim) while the claim is still being dialled
        assert len(leads.claims) == 1
        # the loop stopping between slices: the rest is released, not dialled
        planner.stopped = stop_between
        clock.advance(0)
        if stop_between:
            assert dials == list(range(1, 11)) and leads.released == list(range(11, 25)) and policy.unplaced == 14
        else:
            assert dials == list(range(1, 25)) and not leads.released and policy.unplaced == 0
        assert not planner.claiming

def test_the_periodic_tick_asks_again_only_when_something_changed():
    clock = clock_at_t0()
    asked = []
    planner, leads, dials, gate, policy, seen = planner_on(clock, ready=0)
    policy.decide = lambda s: asked.append(s) or 0
    planner.plan(periodic=True)
    planner.plan(periodic=True)
    assert len(asked) == 1  # nothing changed: the policy's answer would be the same
    seen["ready"] = 1
    planner.plan(periodic=True)
    planner.plan()  # an event's decision is always taken
    assert len(asked) == 3 and isinstance(asked[-1], PacingState) and asked[-1].ready == 1


def test_planning_asks_again_at_the_next_tick_when_dials_were_held_back():
    clock = clock_at_t0()
    planner, leads, dials, gate, policy, seen = planner_on(clock)
    gate.set_cps("t", 0)  # no room this second
    planner.plan(periodic=True)
    assert policy.unplaced == 4 and not leads.claims
    gate.set_cps("t", 100)
    planner.plan(periodic=True)  # same observation, but the last dials were held back
    assert [n for n, _ in leads.claims] == [4]


# -- clocks ------------------------------------------------------------------------------

def test_the_ticker_ticks_on_its_schedule_and_stops():
    clock = task.Clock()
    ticks = []
    t = Ticker(clock, lambda: ticks.append(clock.seconds()), 0.5)
    t.start(now=False)
    clock.pump([0.25] * 8)
    assert ticks == [0.5, 1.0, 1.5, 2.0]
    clock.advance(1.2)  # a late clock: one tick, then back on the schedule
    clock.advance(0.3)
    assert ticks[4:] == [3.2, 3.5]
    t.stop()
    clock.advance(5)
    assert len(ticks) == 6 and not t.running and not clock.getDelayedCalls()


def test_the_heap_clock_runs_calls_in_time_then_schedule_order():
    clock = HeapClock()
    out = []
    clock.callLater(2, out.append, "b")
    a = clock.callLater(1, out.append, "a")
    clock.callLater(2, out.append, "c")
    gone = clock.callLater(1.5, out.append, "gone")
    moved = clock.callLater(0.5, out.append, "moved")
    gone.cancel()
    moved.reset(2.5)
    clock.advance(2)
    assert out == ["a", "b", "c"] and clock.seconds() == 2 and not a.active()
    clock.run_until(10)
    assert out[-1] == "moved" and clock.seconds() == 10
    with pytest.raises(Exception):
        gone.cancel()


def test_records_write_agent_events_as_the_journal_keeps_them():
    from dialer.agents import agent_event_row
    clock, journal = clock_at_t0(), Journal()
    rec = RecordKeeper(clock, journal, account_id=1, campaign_id=7)
    floor = AgentFloor(wrap_limit_s=None)
    now = rec.now()
    events = [floor.login(3, 7, now, name="carol"), floor.pause(3, now, reason="coffee")]
    rec.agent_events(events + [None])
    assert journal.of("agent_events") == [{"at": rec.at(), "events": [agent_event_row(e) for e in events]}]
    assert rec.iso(now) == rec.at()


def test_planning_dials_nothing_that_arrives_after_the_loop_stopped_ticking():
    clock = clock_at_t0()
    planner, leads, dials, gate, policy, seen = planner_on(clock)
    ticking = {"on": True}
    planner.running = lambda: ticking["on"]
    planner.plan()
    ticking["on"] = False  # a wind-down stopped the loop's ticks while the claim was out
    leads.claims[0][1].callback(rows(1, 2))
    assert dials == [] and leads.released == [1, 2]

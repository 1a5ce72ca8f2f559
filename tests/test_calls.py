"""The customer call leg: every legal and illegal transition, the SIP code table,
the ring-timeout and connect-window rules, the figures of an ended call."""

import datetime as dt

import pytest

from dialer import calls
from dialer.calls import TRANSITIONS, CallLeg, billable_seconds, check_ring_timeout, code_disposition
from core.errors import InputError, StateError
from core.timeutil import to_ms

T0 = to_ms(dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.timezone.utc))


def new_leg(**kw):
    return CallLeg("c1", "+12125550100", now=T0, account_id=1, **kw)


def leg_in(state):
    """A leg driven to ``state`` through the usual path."""
    leg = new_leg()
    if state == "dialing":
        return leg
    leg.admitted(now=T0 + 100)
    leg.ringing(180, now=T0 + 1000)
    if state == "ringing":
        return leg
    leg.answered(200, now=T0 + 5000)
    if state == "answered":
        return leg
    if state == "bridged":
        leg.agent_assigned(7, now=T0 + 6000)
        return leg
    if state == "safe_harbor":
        leg.window_expired(now=T0 + 7000)
        return leg
    assert state == "ended"
    leg.agent_assigned(7, now=T0 + 6000)
    leg.ended(200, "BYE", True, now=T0 + 60000)
    return leg


def valid_args(name, leg):
    """Arguments and an instant that pass every check but the state one."""
    state = leg.state
    later = leg.last_ms + 100
    return {
        "admitted": ((), later),
        "ringing": ((183,), later),
        "media": ((), later),
        "answered": ((200,), later),
        "agent_assigned": ((7,), leg.answered_ms + 1000 if leg.answered_ms else later),
        "window_expired": ((), leg.window_deadline_ms if leg.answered_ms else later),
        "dtmf": (("5",), later),
        "ring_timeout": ((), max(later, leg.ring_deadline_ms)),
        "hangup": (("dialer", "test"), max(later, leg.ring_deadline_ms) if state in ("dialing", "ringing") else later),
        "ended": ((487, "Request Terminated"), later),
        "recording_done": (("/rec/c1.wav", 12.5), later),
    }[name]


def facts(leg):
    """What the leg knows (its public attributes)."""
    return {k: v for k, v in vars(leg).items() if not k.startswith("_")}


LEGAL = [(name, src, dst) for name, moves in TRANSITIONS.items() for src, dst in moves.items()]
ILLEGAL = [(name, s) for name, moves in TRANSITIONS.items() for s in calls.STATES if s not in moves]


def test_the_table_covers_every_state_and_input():
    assert set(calls.STATES) == {"dialing", "ringing", "answered", "bridged", "safe_harbor", "ended"}
    assert len(LEGAL) + len(ILLEGAL) == len(TRANSITIONS) * len(calls.STATES)
    assert {dst for moves in TRANSITIONS.values() for dst in moves.values()} <= set(calls.STATES)
    assert set(TRANSITIONS["ended"]) == set(calls.LIVE_STATES)


@pytest.mark.parametrize("name,src,dst", LEGAL)
def test_legal_transition(name, src, dst):
    leg = leg_in(src)
    args, at = valid_args(name, leg)
    assert getattr(leg, name)(*args, now=at) == dst
    assert leg.state == dst


@pytest.mark.parametrize("name,state", ILLEGAL)
def test_illegal_transition_is_refused_and_changes_nothing(name, state):
    leg = leg_in(state)
    before = facts(leg)
    args, at = valid_args(name, leg)
    with pytest.raises(StateError, match=f"is {state}: it cannot"):
        getattr(leg, name)(*args, now=at)
    assert leg.state == state
    assert facts(leg) == before


# -- the code table ------------------------------------------------------------------

CODE_TABLE = [
    (486, "busy", "busy"), (600, "busy", "busy"), (603, "busy", "busy"),
    (408, "no-answer", "no-answer"), (480, "no-answer", "no-answer"), (487, "no-answer", "no-answer"),
    (404, "invalid-number", "invalid-number"), (410, "invalid-number", "invalid-number"),
    (484, "invalid-number", "invalid-number"), (485, "invalid-number", "invalid-number"),
    (604, "invalid-number", "invalid-number"),
    (500, "congestion", "failed"), (502, "congestion", "failed"), (503, "congestion", "failed"),
    (504, "congestion", "failed"),
    (403, "failed", "failed"), (401, "failed", "failed"), (407, "failed", "failed"), (402, "failed", "failed"),
    (488, "failed", "failed"), (405, "failed", "failed"), (482, "failed", "failed"), (501, "failed", "failed"),
    (505, "failed", "failed"), (606, "failed", "failed"), (302, "failed", "failed"), (0, "failed", "failed"),
]


@pytest.mark.parametrize("code,disposition,outcome", CODE_TABLE)
def test_final_code_to_disposition_and_lead_outcome(code, disposition, outcome):
    if code:
        assert code_disposition(code) == disposition
    for path in ("dialing", "ringing"):
        leg = leg_in(path)
        leg.ended(code, "reason text", now=T0 + 9000)
        assert (leg.disposition, leg.lead_outcome(), leg.end_code, leg.end_reason) == \
               (disposition, outcome, code, "reason text")
        assert leg.answered_ms is None and leg.billsec == 0 and leg.abandoned is False


def test_code_disposition_2xx_is_answered():
    assert code_disposition(200) == "answered"
    leg = leg_in("ringing")
    leg.ended(200, "OK", answered=False, now=T0 + 9000)  # a 2xx nobody reported as answered: inconsistent
    assert leg.disposition == "failed"


def test_hangup_by_and_cause():
    leg = leg_in("ringing")
    leg.ended(486, "Busy Here", now=T0 + 3000)
    assert (leg.hangup_by, leg.hangup_cause) == ("callee", "USER_BUSY")
    leg = leg_in("ringing")
    leg.ended(404, "Not Found", now=T0 + 3000)
    assert (leg.hangup_by, leg.hangup_cause) == ("network", "UNALLOCATED_NUMBER")
    leg = leg_in("ringing")
    leg.ended(503, "Service Unavailable", now=T0 + 3000)
    assert leg.hangup_cause == "NORMAL_TEMPORARY_FAILURE"


# -- answered calls ------------------------------------------------------------------

def test_connected_call_figures():
    leg = leg_in("bridged")
    leg.dtmf("9", now=T0 + 8000)  # the opt-out key only counts in the safe-harbor message
    leg.hangup("agent", now=T0 + 65_400)
    leg.ended(200, "BYE", True, now=T0 + 65_500)
    assert leg.disposition == "connected" and leg.abandoned is False and leg.opted_out is False
    assert leg.connect_delay_ms == 1000 and leg.agent == 7
    assert leg.billable_ms == 60_500 and leg.billsec == 61 and leg.duration_ms == 65_400  # started at admission
    assert leg.ring_ms == 4900
    assert leg.hangup_by == "agent" and leg.hangup_cause == "NORMAL_CLEARING"
    assert leg.lead_outcome() == "answered-human" and leg.lead_outcome("callback") == "callback"


def test_safe_harbor_is_an_abandon_and_the_opt_out_key_is_a_dnc_request():
    leg = leg_in("safe_harbor")
    leg.dtmf("1", now=T0 + 9000)
    assert not leg.opted_out
    leg.dtmf("9", now=T0 + 10_000)
    assert leg.opted_out
    leg.hangup("dialer", "message played", now=T0 + 20_000)
    leg.ended(200, "BYE", True, now=T0 + 20_050)
    assert leg.disposition == "abandoned" and leg.abandoned is True
    assert leg.lead_outcome() == "dnc-requested" and leg.hangup_by == "dialer"
    assert [d for _, d in leg.dtmf_digits] == ["1", "9"]


def test_safe_harbor_without_opt_out_is_abandoned():
    leg = leg_in("safe_harbor")
    leg.ended(200, "BYE", True, now=T0 + 20_000)
    assert (leg.disposition, leg.lead_outcome(), leg.hangup_by) == ("abandoned", "abandoned", "callee")


def test_answer_with_no_agent_past_the_window_counts_as_abandoned():
    leg = leg_in("answered")
    leg.ended(200, "BYE", True, now=T0 + 5000 + 2001)
    assert leg.disposition == "abandoned" and leg.abandoned


def test_callee_hanging_up_inside_the_window_is_answered_not_abandoned():
    leg = leg_in("answered")
    leg.ended(200, "BYE", True, now=T0 + 5000 + 1500)
    assert leg.disposition == "answered" and not leg.abandoned
    assert leg.lead_outcome() == "no-answer" and leg.billsec == 2


def test_connect_window_rules():
    leg = leg_in("answered")
    with pytest.raises(StateError, match="connect window is open for another 500 ms"):
        leg.window_expired(now=T0 + 6500)
    with pytest.raises(StateError, match="closed at .*1 ms ago.*safe-harbor"):
        leg.agent_assigned(7, now=T0 + 7001)
    assert leg.state == "answered"
    assert leg.agent_assigned(7, now=T0 + 7000) == "bridged"  # the last millisecond of the window
    with pytest.raises(InputError, match="at most"):
        new_leg(connect_window_ms=2500)
    assert new_leg(connect_window_ms=1500).connect_window_ms == 1500


# -- ring timeout ----------------------------------------------------------------------

def test_ring_timeout_is_at_least_15_s_and_only_raised():
    assert check_ring_timeout(15) == 15_000
    assert check_ring_timeout(25) == 25_000
    assert check_ring_timeout("17.5") == 17_500
    with pytest.raises(InputError, match="below the minimum of 15 s.*only be raised"):
        check_ring_timeout(14.9)
    with pytest.raises(InputError, match="below the minimum of 20 s"):
        check_ring_timeout(15, minimum=20)
    assert check_ring_timeout(15, minimum=10) == 15_000  # a rule set cannot lower the floor
    with pytest.raises(InputError, match="above 300"):
        check_ring_timeout(301)
    with pytest.raises(InputError, match="not a number"):
        check_ring_timeout("soon")
    with pytest.raises(InputError, match="below the minimum"):
        new_leg(ring_timeout_s=10)


def test_ring_timeout_fires_only_after_ringing_long_enough():
    leg = new_leg(ring_timeout_s=20)
    leg.admitted(now=T0 + 200)
    leg.ringing(now=T0 + 1000)
    assert leg.ring_deadline_ms == T0 + 21_000  # counted from the first ringing report
    leg.ringing(183, now=T0 + 1500)
    assert leg.ring_deadline_ms == T0 + 21_000 and leg.ring_code == 183
    with pytest.raises(StateError, match="rung 19999 ms; the ring timeout is 20 s"):
        leg.ring_timeout(now=T0 + 20_999)
    with pytest.raises(StateError, match="rings at least 20 s"):
        leg.hangup("dialer", now=T0 + 5000)
    with pytest.raises(StateError, match="rings at least 20 s"):
        leg.hangup("agent", now=T0 + 5000)
    assert leg.hangup_request is None
    leg.ring_timeout(now=T0 + 21_000)
    with pytest.raises(StateError, match="already being hung up"):
        leg.ring_timeout(now=T0 + 21_100)
    leg.ended(487, "Request Terminated", now=T0 + 21_050)
    assert (leg.disposition, leg.lead_outcome(), leg.hangup_by, leg.hangup_cause) == \
           ("no-answer", "no-answer", "dialer", "ORIGINATOR_CANCEL")
    assert leg.ring_ms == 20_850  # from the worker's admission: the record proves the ring time


def test_an_operator_may_stop_an_unanswered_call_early():
    leg = leg_in("ringing")
    leg.hangup("operator", "campaign stopped", now=T0 + 2000)
    leg.ended(487, "Request Terminated", now=T0 + 2100)
    assert leg.hangup_by == "operator" and leg.disposition == "no-answer"


def test_hangup_requester_is_checked():
    with pytest.raises(InputError, match="hang-up by 'callee'"):
        leg_in("bridged").hangup("callee", now=T0 + 9000)


# -- worker reports ----------------------------------------------------------------------

def test_worker_died_before_answer_is_failed_with_reason():
    leg = leg_in("ringing")
    leg.ended(0, "worker died", now=T0 + 4000)
    assert (leg.disposition, leg.end_code, leg.end_reason, leg.hangup_by, leg.hangup_cause) == \
           ("failed", 0, "worker died", "worker", "CRASH")
    assert leg.lead_outcome() == "failed"


def test_worker_died_after_the_bridge_keeps_answer_and_billing():
    leg = leg_in("bridged")
    leg.ended(0, "worker died", now=T0 + 30_000)
    assert leg.disposition == "failed" and leg.billsec == 25 and leg.connect_delay_ms == 1000
    assert leg.lead_outcome() == "answered-human" and not leg.abandoned


def test_worker_died_inside_the_window_is_failed_not_abandoned():
    leg = leg_in("answered")
    leg.ended(0, "worker died", now=T0 + 5500)
    assert leg.disposition == "failed" and not leg.abandoned and leg.lead_outcome() == "failed"


def test_worker_instants_are_the_billing_truth_to_the_millisecond():
    leg = leg_in("bridged")
    leg.ended(200, "BYE", True, started_ms=T0 + 101, answered_ms=T0 + 4_999, ended_ms=T0 + 64_000, now=T0 + 64_010)
    assert (leg.started_ms, leg.answered_ms, leg.ended_ms) == (T0 + 101, T0 + 4_999, T0 + 64_000)
    assert leg.billable_ms == 59_001 and leg.billsec == 60 and leg.duration_ms == 63_899
    assert leg.connect_delay_ms == 1001


def test_an_answer_only_the_worker_saw():
    leg = leg_in("ringing")
    leg.ended(200, "BYE", True, answered_ms=T0 + 4000, ended_ms=T0 + 30_000, now=T0 + 30_000)
    assert leg.answered_ms == T0 + 4000 and leg.disposition == "abandoned" and leg.billsec == 26


def test_inconsistent_worker_times_are_refused():
    leg = leg_in("ringing")
    with pytest.raises(InputError, match="ends .* before it starts"):
        leg.ended(200, "", True, started_ms=T0 + 9000, ended_ms=T0 + 8000)
    with pytest.raises(InputError, match="outside the call"):
        leg.ended(200, "", True, started_ms=T0, answered_ms=T0 + 9000, ended_ms=T0 + 8000)
    with pytest.raises(InputError, match="not epoch milliseconds"):
        leg.ended(200, "", True, started_ms=1.5, now=T0 + 9000)
    with pytest.raises(InputError, match="not a status code"):
        leg.ended("busy", now=T0 + 9000)
    assert leg.state == "ringing"


def test_handle_worker_events_and_recording_after_the_end():
    leg = new_leg()
    for ev in ({"event": "admitted"}, {"event": "ringing", "code": 180}, {"event": "media"},
               {"event": "answered", "code": 200}):
        leg.handle(ev, now=T0 + 1000)
    leg.agent_assigned(3, now=T0 + 1000)
    leg.handle({"event": "dtmf", "digit": "#"}, now=T0 + 5000)
    leg.handle({"event": "ended", "code": 200, "reason": "BYE", "answered": True, "started_ms": T0,
                "answered_ms": T0 + 1000, "ended_ms": T0 + 10_000}, now=T0 + 10_001)
    leg.handle({"event": "recording_done", "path": "/rec/c1.wav", "duration": 9.0004}, now=T0 + 11_000)
    assert leg.recording_path == "/rec/c1.wav" and leg.recording_ms == 9000 and leg.media_ms == T0 + 1000
    with pytest.raises(InputError, match="unknown worker event 'hold'"):
        leg.handle({"event": "hold"}, now=T0 + 12_000)


def test_malformed_inputs():
    leg = leg_in("ringing")
    with pytest.raises(InputError, match="a 2xx is expected"):
        leg.answered(183, now=T0 + 2000)
    with pytest.raises(InputError, match="a 1xx is expected"):
        leg.ringing(200, now=T0 + 2000)
    with pytest.raises(InputError, match="before its last event"):
        leg.answered(200, now=T0 + 500)
    leg.answered(now=T0 + 2000)
    with pytest.raises(InputError, match="not a telephone key"):
        leg.dtmf("x", now=T0 + 2100)
    with pytest.raises(InputError, match="which agent"):
        leg.agent_assigned(None, now=T0 + 2100)
    assert leg.state == "answered"


def test_times_from_an_injected_clock_or_datetimes():
    ticks = iter([T0, T0 + 250, T0 + 1250])
    leg = CallLeg("c2", "+12125550100", clock=lambda: next(ticks), account_id=1)
    leg.ringing()
    leg.answered()
    assert (leg.created_ms, leg.ringing_ms, leg.answered_ms) == (T0, T0 + 250, T0 + 1250)
    leg.window_expired(now=dt.datetime(2026, 11, 24, 17, 0, 3, 250_000, tzinfo=dt.timezone.utc))
    assert leg.safe_harbor_ms == T0 + 3250
    with pytest.raises(InputError, match="no time given and no clock"):
        CallLeg("c3", "+12125550100")
    with pytest.raises(InputError, match="not an instant"):
        CallLeg("c3", "+12125550100", now=1.5)


def test_a_blocked_verdict_cannot_become_a_call():
    with pytest.raises(InputError, match="does not allow it .*US-HOURS"):
        new_leg(verdict={"allowed": False, "reasons": ["US-HOURS"], "ruleset": "US@3"})
    leg = new_leg(verdict={"allowed": True, "reasons": [], "ruleset": "US@3", "flags": []})
    assert leg.ruleset == "US@3"


def test_figures_wait_for_the_end():
    leg = leg_in("bridged")
    with pytest.raises(StateError, match="when it has ended"):
        leg.billsec
    with pytest.raises(StateError):
        leg.lead_outcome()


@pytest.mark.parametrize("ms,sec", [(None, 0), (0, 0), (-5, 0), (1, 1), (999, 1), (1000, 1), (1001, 2),
                                    (60_000, 60), (60_001, 61)])
def test_billable_seconds_round_up(ms, sec):
    assert billable_seconds(ms) == sec


def test_events_as_the_sip_worker_writes_them():
    leg = new_leg()
    for ev in ({"ev": "admitted", "t": 1.0, "ts": T0 + 50, "key": "c1", "waited_ms": 3.2},
               {"ev": "ringing", "t": 1.1, "ts": T0 + 900, "key": "c1", "code": 183},
               {"ev": "media", "t": 1.1, "ts": T0 + 950, "key": "c1", "dir": "sendrecv"}):
        leg.handle(ev)
    assert (leg.admitted_ms, leg.ringing_ms, leg.media_ms) == (T0 + 50, T0 + 900, T0 + 950)
    leg.handle({"ev": "ended", "t": 17.0, "ts": T0 + 16_000, "key": "c1", "code": 487, "reason": "Request Terminated",
                "answered": False, "started_ms": T0 + 40, "answered_ms": None, "ended_ms": T0 + 16_000,
                "cause": "ring timeout"})
    assert (leg.disposition, leg.hangup_by, leg.hangup_cause, leg.end_cause) == \
           ("no-answer", "dialer", "ORIGINATOR_CANCEL", "ring timeout")
    assert leg.ring_ms == 15_960

    leg = leg_in("bridged")
    leg.handle({"ev": "ended", "ts": T0 + 9000, "code": 0, "reason": "worker died", "answered": False,
                "started_ms": None, "answered_ms": None, "ended_ms": T0 + 9000, "cause": "worker died"})
    leg.handle({"ev": "recording_done", "ts": T0 + 9500, "path": "/rec/x.wav", "duration_s": 3.25})
    assert leg.disposition == "failed" and leg.hangup_by == "worker" and leg.recording_ms == 3250
    assert leg.answered_ms == T0 + 5000  # the worker's report lost it; the leg's own instant stays

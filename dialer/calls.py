"""A customer call leg as an explicit state machine, and what the end of a call means.

Pure: no I/O and no clock of its own. Every input takes ``now`` (an aware
datetime or epoch milliseconds); without it the leg asks the ``clock`` it was
given. Instants are kept as UTC epoch milliseconds.

States and inputs (:data:`TRANSITIONS` is the one table: an input is legal in the
states it lists and moves the leg to the state it names)::

    dialing --ringing--> ringing --answered--> answered --agent_assigned--> bridged
       |                    |                     '--window_expired--> safe_harbor
       '--answered----------+---------------------------------------------.
    any state but ended --ended--> ended

``answered`` is the 2-second connect window: a live answer waits there for an
agent. An agent assigned after the window closed is refused (the parent must
play the safe-harbor message instead: ``window_expired``); ``window_expired``
before the window closed is refused too. In ``safe_harbor`` the recorded message
plays and the callee may opt out with a key (``opt_out_digit``, default 9).

Inputs that do not move the leg (``admitted``, ``media``, ``dtmf``,
``ring_timeout``, ``hangup``, ``recording_done``, a second ``ringing``) are still
legal only in the states listed. ``ring_timeout`` and ``hangup`` are the parent's
*requests* (CANCEL / BYE); the leg ends when the worker reports ``ended``. An
illegal input raises :class:`~core.errors.StateError` and leaves the leg as it
was; a malformed one raises :class:`~core.errors.InputError`.

Ring timeout: an unanswered call rings at least 15 s (US TSR safe harbor, 47 CFR
64.1200(a)(6); Ofcom), counted from the first ringing report (else from the
worker's admission, else from the leg's creation: the latest, so the safest).
A rule set may ask for more (``min_ring_s``); the timeout can be raised, never
lowered below that, and ``ring_timeout`` / a dialer ``hangup`` before the deadline
are refused (only ``by="operator"``, a person stopping calls, may cut it short).

SIP final code -> disposition (see :func:`code_disposition`; the raw code and
reason are always kept)::

    200 (2xx), answered      connected (an agent was bridged)
                             abandoned (safe harbor, or no agent within the window)
                             answered  (the callee hung up inside the window)
    486 600 603              busy         (603 Decline: the person rejected the call now;
                                           like Twilio and most dialers, retried as busy)
    408 480 487              no-answer    (487 follows our own CANCEL at the ring timeout)
    404 410 484 485 604      invalid-number (never retried)
    500 502 503 504          congestion   (trunk/carrier trouble: transient)
    0                        failed       (no final response: the SIP worker died)
    anything else            failed       (403/401/407 refused by the trunk, 402, 488,
                                           other 4xx/5xx/6xx, 3xx redirects not followed)
"""

import math
from decimal import Decimal, InvalidOperation

from core.errors import InputError, StateError
from core.timeutil import ms_to_iso, to_ms

STATES = ("dialing", "ringing", "answered", "bridged", "safe_harbor", "ended")
LIVE_STATES = STATES[:-1]

RING_TIMEOUT_MIN_S = 15  # legal floor (US TSR safe harbor, Ofcom)
RING_TIMEOUT_MAX_S = 300  # beyond this a "ring timeout" is a configuration mistake
CONNECT_WINDOW_MS = 2000  # US-2SEC / UK-INFO: agent or message within 2 s of the answer
OPT_OUT_DIGIT = "9"
WORKER_DIED = "worker died"
DTMF_DIGITS = frozenset("0123456789*#ABCD")
# "balance": the balance guard ended the call at a slice boundary (dialer.credit)
HANGUP_REQUESTERS = ("dialer", "agent", "operator", "balance")

# input -> {from state: to state}
TRANSITIONS = {
    "admitted": {"dialing": "dialing"},
    "ringing": {"dialing": "ringing", "ringing": "ringing"},
    "media": {s: s for s in ("dialing", "ringing", "answered", "bridged", "safe_harbor")},
    "answered": {"dialing": "answered", "ringing": "answered"},
    "agent_assigned": {"answered": "bridged"},
    "window_expired": {"answered": "safe_harbor"},
    "dtmf": {s: s for s in ("answered", "bridged", "safe_harbor")},
    "ring_timeout": {"dialing": "dialing", "ringing": "ringing"},
    "hangup": {s: s for s in LIVE_STATES},
    "ended": {s: "ended" for s in LIVE_STATES},
    "recording_done": {s: s for s in ("answered", "bridged", "safe_harbor", "ended")},
}
_WHAT = {
    "admitted": "be admitted by a worker",
    "ringing": "start ringing",
    "media": "receive media",
    "answered": "be answered",
    "agent_assigned": "be bridged to an agent",
    "window_expired": "go to the safe-harbor message",
    "dtmf": "receive a key press",
    "ring_timeout": "be cancelled at the ring timeout",
    "hangup": "be hung up",
    "ended": "end",
    "recording_done": "get its recording",
}

# -- the code table ------------------------------------------------------------------
DISPOSITIONS = ("connected", "answered", "abandoned", "machine", "no-answer", "busy", "invalid-number",
                "congestion", "failed")
BUSY_CODES = frozenset({486, 600, 603})
NO_ANSWER_CODES = frozenset({408, 480, 487})
INVALID_NUMBER_CODES = frozenset({404, 410, 484, 485, 604})
CONGESTION_CODES = frozenset({500, 502, 503, 504})

# SIP final code -> Q.850-style hangup cause, as FreeSWITCH names them (for exports)
HANGUP_CAUSES = {
    401: "CALL_REJECTED", 402: "CALL_REJECTED", 403: "CALL_REJECTED", 407: "CALL_REJECTED",
    404: "UNALLOCATED_NUMBER", 408: "RECOVERY_ON_TIMER_EXPIRE", 410: "NUMBER_CHANGED",
    480: "NO_USER_RESPONSE", 484: "INVALID_NUMBER_FORMAT", 485: "NO_ROUTE_DESTINATION",
    486: "USER_BUSY", 487: "ORIGINATOR_CANCEL", 488: "INCOMPATIBLE_DESTINATION",
    500: "NORMAL_TEMPORARY_FAILURE", 502: "NETWORK_OUT_OF_ORDER", 503: "NORMAL_TEMPORARY_FAILURE",
    504: "RECOVERY_ON_TIMER_EXPIRE", 600: "USER_BUSY", 603: "CALL_REJECTED", 604: "NO_ROUTE_DESTINATION",
    606: "INCOMPATIBLE_DESTINATION",
}

# disposition of an unanswered call -> lead outcome (campaigns.model.OUTCOMES)
_UNANSWERED_OUTCOME = {"busy": "busy", "no-answer": "no-answer", "invalid-number": "invalid-number",
                       "congestion": "failed", "failed": "failed"}


def code_disposition(code):
    """The disposition of a call that ended with SIP final ``code`` before any answer
    (2xx gives "answered": what follows the answer is decided by :class:`CallLeg`)."""
    code = int(code)
    if 200 <= code < 300:
        return "answered"
    if code in BUSY_CODES:
        return "busy"
    if code in NO_ANSWER_CODES:
        return "no-answer"
    if code in INVALID_NUMBER_CODES:
        return "invalid-number"
    if code in CONGESTION_CODES:
        return "congestion"
    return "failed"


def hangup_cause(code, reason=""):
    code = int(code)
    if code == 0:
        return "CRASH" if reason == WORKER_DIED else "NORMAL_UNSPECIFIED"
    if 200 <= code < 300:
        return "NORMAL_CLEARING"
    return HANGUP_CAUSES.get(code, "NORMAL_UNSPECIFIED")


def billable_seconds(billable_ms):
    """Whole seconds from answer to hang-up, rounded up as carriers do (1/1 billing):
    0 ms -> 0, 1 ms -> 1, 1000 ms -> 1, 1001 ms -> 2."""
    if billable_ms is None or billable_ms <= 0:
        return 0
    return -(-int(billable_ms) // 1000)


def check_ring_timeout(seconds, minimum=RING_TIMEOUT_MIN_S):
    """A ring timeout in seconds -> milliseconds. At least ``minimum`` (itself never
    below the legal 15 s), at most 300 s."""
    floor = max(RING_TIMEOUT_MIN_S, int(math.ceil(minimum)))
    try:
        s = Decimal(str(seconds))
    except InvalidOperation:
        raise InputError(f"ring timeout {seconds!r} is not a number of seconds") from None
    if not s.is_finite():
        raise InputError(f"ring timeout {seconds!r} is not a number of seconds")
    if s < floor:
        raise InputError(f"ring timeout {seconds} s is below the minimum of {floor} s: an unanswered call must "
                         f"ring at least {floor} s (TSR safe harbor / Ofcom); the timeout can only be raised")
    if s > RING_TIMEOUT_MAX_S:
        raise InputError(f"ring timeout {seconds} s is above {RING_TIMEOUT_MAX_S} s")
    return int(s * 1000)


def _ms(now, clock, what):
    if now is None:
        if clock is None:
            raise InputError(f"{what}: no time given and no clock")
        now = clock()
    if isinstance(now, bool):
        raise InputError(f"{what}: {now!r} is not an instant")
    if isinstance(now, int):
        return now
    if hasattr(now, "tzinfo"):
        return to_ms(now)
    raise InputError(f"{what}: {now!r} is not an instant (datetime or epoch milliseconds)")


def _opt_ms(value, what):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{what} {value!r} is not epoch milliseconds (an integer)")
    return value


def verdict_summary(verdict):
    """What the rules said when the call was placed, compact: a dict from a
    :class:`rules.engine.Verdict` (a dict is taken as it is)."""
    if verdict is None or isinstance(verdict, dict):
        return verdict
    return {
        "allowed": verdict.allowed,
        "at": verdict.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ruleset": verdict.ruleset,
        "zones": list(verdict.zones),
        "reasons": [r.rule for r in verdict.reasons],
        "flags": [r.rule for r in verdict.flags],
    }


class CallLeg:
    """One customer call, from the dial decision to the worker's ``ended`` report."""

    def __init__(self, call_id, destination, now=None, *, clock=None, account_id=None, campaign_id=None,
                 lead_id=None, caller_id=None, trunk=None, worker_id=None, ruleset=None, verdict=None,
                 ring_timeout_s=RING_TIMEOUT_MIN_S, min_ring_s=RING_TIMEOUT_MIN_S,
                 connect_window_ms=CONNECT_WINDOW_MS, opt_out_digit=OPT_OUT_DIGIT):
        if not call_id:
            raise InputError("a call needs its call id")
        if not destination:
            raise InputError(f"call {call_id}: no destination number")
        self.call_id = str(call_id)
        self.destination = destination
        self.clock = clock
        self.ring_timeout_ms = check_ring_timeout(ring_timeout_s, min_ring_s)
        if not isinstance(connect_window_ms, int) or not 0 < connect_window_ms <= CONNECT_WINDOW_MS:
            raise InputError(f"connect window {connect_window_ms!r} ms: an agent or the safe-harbor message must "
                             f"follow the answer within {CONNECT_WINDOW_MS} ms (a whole number of ms, at most that)")
        self.connect_window_ms = connect_window_ms
        if opt_out_digit not in DTMF_DIGITS:
            raise InputError(f"opt-out key {opt_out_digit!r} is not a telephone key")
        self.opt_out_digit = opt_out_digit
        summary = verdict_summary(verdict)
        if summary is not None and not summary.get("allowed", False):
            raise InputError(f"call {call_id} to {destination}: the rules verdict does not allow it "
                             f"({', '.join(summary.get('reasons') or []) or 'blocked'})")
        self.verdict = summary
        self.ruleset = ruleset or (summary or {}).get("ruleset")
        self._state = "dialing"
        self.account_id, self.campaign_id, self.lead_id = account_id, campaign_id, lead_id
        self.caller_id, self.trunk, self.worker_id = caller_id, trunk, worker_id
        self.created_ms = _ms(now, clock, f"call {call_id}")
        self.last_ms = self.created_ms
        # instants (epoch ms) and facts, filled as the call goes
        self.admitted_ms = self.ringing_ms = self.media_ms = self.answered_ms = None
        self.bridged_ms = self.safe_harbor_ms = self.ended_ms = self.started_ms = None
        self.ring_code = self.answer_code = None
        self.agent = None
        self.dtmf_digits = []  # [(ms, digit)]
        self.opted_out = False
        self.hangup_request = None  # (by, reason, ms): our CANCEL/BYE
        self.recording_path = self.recording_ms = None
        self.end_code = self.end_reason = self.end_cause = None
        self.worker_answered = False
        # the outcome, set at ``ended``
        self.disposition = self.abandoned = self.hangup_by = self.hangup_cause = None

    # -- what each legal input records (run after its check, before the state moves) --
    def _on_admitted(self, at, data):
        self.admitted_ms = at

    def _on_ringing(self, at, data):
        if self.ringing_ms is None:
            self.ringing_ms = at
        self.ring_code = data["code"]

    def _on_media(self, at, data):
        if self.media_ms is None:
            self.media_ms = at

    def _on_answered(self, at, data):
        self.answered_ms = at
        self.answer_code = data["code"]

    def _on_agent_assigned(self, at, data):
        self.agent = data["agent"]
        self.bridged_ms = at

    def _on_window_expired(self, at, data):
        self.safe_harbor_ms = at

    def _on_dtmf(self, at, data):
        self.dtmf_digits.append((at, data["digit"]))
        if data["opt_out"]:
            self.opted_out = True

    def _on_ring_timeout(self, at, data):
        self.hangup_request = ("dialer", "ring timeout", at)

    def _on_hangup(self, at, data):
        self.hangup_request = (data["by"], data["reason"], at)

    def _on_ended(self, at, data):
        self._finish(at, data)

    def _on_recording_done(self, at, data):
        self.recording_path = data["path"]
        self.recording_ms = data["duration_ms"]

    # -- state --------------------------------------------------------------------------
    @property
    def state(self):
        return self._state

    @property
    def ring_deadline_ms(self):
        """When the ring timeout may fire: the latest known start of ringing + the timeout."""
        base = self.ringing_ms if self.ringing_ms is not None else (
            self.admitted_ms if self.admitted_ms is not None else self.created_ms)
        return base + self.ring_timeout_ms

    @property
    def window_deadline_ms(self):
        """End of the connect window (None before the answer)."""
        return None if self.answered_ms is None else self.answered_ms + self.connect_window_ms

    def _go(self, name, now, **data):
        state = self.state
        if state not in TRANSITIONS[name]:
            allowed = ", ".join(TRANSITIONS[name])
            raise StateError(f"call {self.call_id} is {state}: it cannot {_WHAT[name]} "
                             f"(only while {allowed})")
        if now is None and self.clock is None and name == "ended" and isinstance(data.get("ended_ms"), int):
            now = data["ended_ms"]  # the worker's own instant will do
        at = _ms(now, self.clock, f"call {self.call_id}")
        if at < self.last_ms and name != "ended":
            raise InputError(f"call {self.call_id}: {ms_to_iso(at)} is before its last event at "
                             f"{ms_to_iso(self.last_ms)} (the clock went backwards)")
        check = getattr(self, "_check_" + name, None)
        if check is not None:
            check(at, data, state)
        getattr(self, "_on_" + name)(at, data)
        self._state = TRANSITIONS[name][state]
        self.last_ms = max(self.last_ms, at)
        return self._state

    # -- checks (raise before anything changes) -----------------------------------------
    def _check_ringing(self, at, data, state):
        if not 100 <= data["code"] < 200:
            raise InputError(f"call {self.call_id}: ringing with SIP code {data['code']} (a 1xx is expected)")

    def _check_answered(self, at, data, state):
        if not 200 <= data["code"] < 300:
            raise InputError(f"call {self.call_id}: answered with SIP code {data['code']} (a 2xx is expected)")

    def _check_agent_assigned(self, at, data, state):
        if data["agent"] is None:
            raise InputError(f"call {self.call_id}: which agent?")
        if at > self.window_deadline_ms:
            raise StateError(f"call {self.call_id}: the {self.connect_window_ms} ms connect window closed at "
                             f"{ms_to_iso(self.window_deadline_ms)} ({at - self.window_deadline_ms} ms ago): "
                             f"play the safe-harbor message (window_expired), do not bridge an agent")

    def _check_window_expired(self, at, data, state):
        if at < self.window_deadline_ms:
            raise StateError(f"call {self.call_id}: the connect window is open for another "
                             f"{self.window_deadline_ms - at} ms")

    def _check_dtmf(self, at, data, state):
        if data["digit"] not in DTMF_DIGITS:
            raise InputError(f"call {self.call_id}: {data['digit']!r} is not a telephone key")
        data["opt_out"] = state == "safe_harbor" and data["digit"] == self.opt_out_digit

    def _check_ring_timeout(self, at, data, state):
        if self.hangup_request is not None:
            raise StateError(f"call {self.call_id}: already being hung up ({self.hangup_request[1] or 'by ' + self.hangup_request[0]})")
        if at < self.ring_deadline_ms:
            raise StateError(f"call {self.call_id}: it has rung {at - (self.ring_deadline_ms - self.ring_timeout_ms)} ms; "
                             f"the ring timeout is {self.ring_timeout_ms // 1000} s (at {ms_to_iso(self.ring_deadline_ms)})")

    def _check_hangup(self, at, data, state):
        by = data["by"]
        if by not in HANGUP_REQUESTERS:
            raise InputError(f"call {self.call_id}: hang-up by {by!r}? (one of {', '.join(HANGUP_REQUESTERS)}; "
                             f"the callee's hang-up comes as the worker's 'ended')")
        if self.hangup_request is not None:
            raise StateError(f"call {self.call_id}: already being hung up ({self.hangup_request[1] or 'by ' + self.hangup_request[0]})")
        if state in ("dialing", "ringing") and by != "operator" and at < self.ring_deadline_ms:
            raise StateError(f"call {self.call_id}: an unanswered call rings at least {self.ring_timeout_ms // 1000} s "
                             f"before it is cancelled (until {ms_to_iso(self.ring_deadline_ms)}); only an operator "
                             f"stopping calls may cut it short")

    def _check_ended(self, at, data, state):
        if isinstance(data["code"], bool) or not isinstance(data["code"], int) or data["code"] < 0:
            raise InputError(f"call {self.call_id}: final SIP code {data['code']!r} is not a status code")
        s, a, e = data["started_ms"], data["answered_ms"], data["ended_ms"]
        for v, what in ((s, "started_ms"), (a, "answered_ms"), (e, "ended_ms")):
            _opt_ms(v, f"call {self.call_id}: {what}")
        end = e if e is not None else at
        if s is not None and s > end:
            raise InputError(f"call {self.call_id}: it ends ({ms_to_iso(end)}) before it starts ({ms_to_iso(s)})")
        if a is not None and not ((s is None or s <= a) and a <= end):
            raise InputError(f"call {self.call_id}: answer time {ms_to_iso(a)} is outside the call")

    def _check_recording_done(self, at, data, state):
        if not data["path"]:
            raise InputError(f"call {self.call_id}: recording without a path")

    # -- the end --------------------------------------------------------------------------
    def _finish(self, at, data):
        code, reason = data["code"], data["reason"] or ""
        self.end_code, self.end_reason, self.end_cause = code, reason, data.get("cause")
        if self.hangup_request is None and self.end_cause == "ring timeout":  # the worker's own ring timer
            self.hangup_request = ("dialer", "ring timeout", at)
        self.worker_answered = bool(data["answered"])
        self.ended_ms = data["ended_ms"] if data["ended_ms"] is not None else max(at, self.last_ms)
        self.started_ms = data["started_ms"] if data["started_ms"] is not None else (
            self.admitted_ms if self.admitted_ms is not None else self.created_ms)
        self.started_ms = min(self.started_ms, self.ended_ms)
        if data["answered_ms"] is not None:  # the SIP worker's instant is the billing truth
            self.answered_ms = data["answered_ms"]
        elif self.worker_answered and self.answered_ms is None:
            self.answered_ms = self.ended_ms
        answered = self.answered_ms is not None
        bridged = self.bridged_ms is not None
        self.abandoned = answered and not bridged and (
            self.safe_harbor_ms is not None or self.ended_ms - self.answered_ms > self.connect_window_ms)
        if code == 0:
            self.disposition = "failed"
        elif bridged:
            self.disposition = "connected"
        elif answered:
            self.disposition = "abandoned" if self.abandoned else "answered"
        else:
            d = code_disposition(code)
            self.disposition = "failed" if d == "answered" else d  # a 2xx without an answer: inconsistent
        if code == 0:
            self.hangup_by = "worker"
        elif self.hangup_request is not None:
            self.hangup_by = self.hangup_request[0]
        elif answered or code in BUSY_CODES:
            self.hangup_by = "callee"
        else:
            self.hangup_by = "network"
        if code != 0 and not answered and self.hangup_request is not None:
            self.hangup_cause = "ORIGINATOR_CANCEL"
        elif code != 0 and answered:
            self.hangup_cause = "NORMAL_CLEARING"
        else:
            self.hangup_cause = hangup_cause(code, reason)
        self.last_ms = max(self.last_ms, self.ended_ms)

    # -- figures once ended ---------------------------------------------------------------
    def _need_end(self, what):
        if self.state != "ended":
            raise StateError(f"call {self.call_id} is {self.state}: its {what} is known when it has ended")

    @property
    def duration_ms(self):
        self._need_end("duration")
        return self.ended_ms - self.started_ms

    @property
    def billable_ms(self):
        self._need_end("billable time")
        return 0 if self.answered_ms is None else self.ended_ms - self.answered_ms

    @property
    def billsec(self):
        return billable_seconds(self.billable_ms)

    @property
    def ring_ms(self):
        """From the start to the answer, or to the end of an unanswered call (the
        record that proves the ring-time rule)."""
        self._need_end("ring time")
        return (self.answered_ms if self.answered_ms is not None else self.ended_ms) - self.started_ms

    @property
    def connect_delay_ms(self):
        if self.bridged_ms is None or self.answered_ms is None:
            return None
        return max(0, self.bridged_ms - self.answered_ms)

    def lead_outcome(self, agent_outcome=None):
        """The outcome for :func:`campaigns.leads.record_outcome`: an opt-out key in the
        safe-harbor message is a DNC request; an abandon is an abandon (the UK 72 h
        lockout reads it); a connected call takes the agent's wrap-up outcome (default
        answered-human); a live answer that hung up inside the window is retried as
        no-answer; unanswered calls by their disposition (congestion -> failed)."""
        self._need_end("outcome")
        if self.opted_out:
            return "dnc-requested"
        if self.abandoned:
            return "abandoned"
        if self.disposition == "connected" or self.bridged_ms is not None:
            return agent_outcome or "answered-human"
        if self.end_code == 0:
            return "failed"
        if self.disposition == "answered":
            return "no-answer"
        return _UNANSWERED_OUTCOME[self.disposition]

    # -- inputs ---------------------------------------------------------------------------
    def admitted(self, now=None):
        return self._go("admitted", now)

    def ringing(self, code=180, now=None):
        return self._go("ringing", now, code=int(code))

    def media(self, now=None):
        return self._go("media", now)

    def answered(self, code=200, now=None):
        return self._go("answered", now, code=int(code))

    def agent_assigned(self, agent, now=None):
        return self._go("agent_assigned", now, agent=agent)

    def window_expired(self, now=None):
        return self._go("window_expired", now)

    def dtmf(self, digit, now=None):
        return self._go("dtmf", now, digit=str(digit).upper())

    def ring_timeout(self, now=None):
        return self._go("ring_timeout", now)

    def hangup(self, by="dialer", reason="", now=None):
        return self._go("hangup", now, by=by, reason=reason or "")

    def ended(self, code, reason="", answered=False, started_ms=None, answered_ms=None, ended_ms=None, now=None,
              cause=None):
        """The worker's report. ``cause`` (dialer.sip.protocol: "remote", "hangup", "ring
        timeout", "worker died"...) is kept; "ring timeout" means the worker's own timer
        cancelled the call (hung up by the dialer)."""
        return self._go("ended", now, code=code, reason=reason, answered=answered, started_ms=started_ms,
                        answered_ms=answered_ms, ended_ms=ended_ms, cause=cause)

    def recording_done(self, path, duration=None, now=None):
        """``duration`` in seconds, as the worker reports it."""
        ms = None
        if duration is not None:
            try:
                ms = int((Decimal(str(duration)) * 1000).to_integral_value())
            except InvalidOperation:
                raise InputError(f"call {self.call_id}: recording duration {duration!r} is not seconds") from None
        return self._go("recording_done", now, path=str(path or ""), duration_ms=ms)

    _EVENTS = {"admitted": (), "ringing": ("code",), "answered": ("code",), "media": (), "dtmf": ("digit",),
               "ended": ("code", "reason", "answered", "started_ms", "answered_ms", "ended_ms", "cause"),
               "recording_done": ("path", "duration")}

    def handle(self, event, now=None):
        """Apply a worker's event as dialer.sip.protocol writes it (``{"ev": "ringing",
        "key": ..., "ts": epoch ms, "code": 180}``; ``"event"`` for ``"ev"`` works too).
        The instant: ``now``, else the leg's clock, else the event's ``ts``. Other
        fields (``t``, ``key``, ``dir``, ``waited_ms``) are ignored."""
        name = event.get("ev", event.get("event"))
        if name not in self._EVENTS:
            raise InputError(f"call {self.call_id}: unknown worker event {name!r} "
                             f"(one of {', '.join(self._EVENTS)})")
        args = {k: event[k] for k in self._EVENTS[name] if k in event}
        if name == "recording_done" and "duration" not in args and "duration_s" in event:
            args["duration"] = event["duration_s"]
        if now is None and self.clock is None and isinstance(event.get("ts"), int):
            now = event["ts"]
        return getattr(self, name)(now=now, **args)

    def __repr__(self):
        return f"<CallLeg {self.call_id} {self.destination} {self.state}>"

"""Record keeping of one dialer loop: what it writes, through its journal, and when.

- ``call_open`` before a call's INVITE leaves (a crash from there on still ends in
  a CDR), ``call_progress`` at the answer and at the bridge;
- a call's CDR when it ends, except a connected call's: that one is *held* until
  its agent's wrap-up ends (the wrap-up disposition is the lead's outcome), or
  written at once with "other" when the agent's phone hung up first;
- a recording that reports after its call's record went out is attached to it
  (``recording``); agent state changes, audit lines, opt-outs and command results.

Every write goes through ``journal.put(kind, payload)`` (``dialer.journal.Journal``
live, ``DirectWrites`` in tests, a counting sink in the simulator). The instant of
each record is the loop's clock (``clock.seconds()``); nothing here reads the wall
clock.
"""

import dataclasses
import datetime as _dt

from twisted.logger import Logger

from core.errors import DialerError
from core.timeutil import to_iso

from .cdr import Cdr

log = Logger(namespace="dialer.records")

_CDR_FIELDS = tuple(f.name for f in dataclasses.fields(Cdr))


def cdr_payload(cdr):
    """A CDR as the journal keeps it (JSON-ready)."""
    out = {name: getattr(cdr, name) for name in _CDR_FIELDS}
    if out["verdict"] is not None:
        out["verdict"] = dict(out["verdict"])
    if out["callback_at"] is not None:
        out["callback_at"] = to_iso(out["callback_at"])
    return out


class RecordKeeper:
    """The journal writes of one campaign loop, and the CDRs held until wrap-up ends."""

    def __init__(self, clock, journal, account_id, campaign_id, node="local", consumer="dialer-1"):
        self.clock, self.journal = clock, journal
        self.account_id, self.cid, self.node, self.consumer = account_id, campaign_id, node, consumer
        self.held = {}  # user id -> ended leg whose CDR waits for the agent's wrap-up to end
        self.finished = {}  # call key -> that leg (a recording may still report)
        self.written = set()  # keys whose CDR went out before their recording reported
        self._at = (None, None)  # (clock seconds, ISO text): records of one instant share it
        self._iso = (None, None)  # (datetime, ISO text): the last instant formatted

    def now(self):
        return _dt.datetime.fromtimestamp(self.clock.seconds(), _dt.timezone.utc)

    def at(self):
        """The clock's instant as ISO text (the records' ``at``)."""
        t = self.clock.seconds()
        if self._at[0] != t:
            self._at = (t, to_iso(_dt.datetime.fromtimestamp(t, _dt.timezone.utc)))
        return self._at[1]

    def iso(self, dt):
        """``to_iso(dt)``; the instants of one moment (a call's end, its agent's events)
        are formatted once."""
        if self._iso[0] != dt:
            self._iso = (dt, to_iso(dt))
        return self._iso[1]

    def _event_row(self, e):
        """``dialer.agents.agent_event_row`` (the journal's form of an agent event)."""
        return {"user_id": e.user_id, "campaign_id": e.campaign_id, "at": self.iso(e.at), "state": e.state,
                "prev_state": e.prev_state, "call_id": e.call_id, "disposition": e.disposition, "reason": e.reason}

    def owns(self, key):
        return key in self.finished or key in self.written

    # -- calls ------------------------------------------------------------------------
    def call_open(self, leg, now):
        at = self.iso(now)
        self.journal.put("call_open", {"at": at, "call": {
            "call_id": leg.call_id, "account_id": self.account_id, "campaign_id": self.cid,
            "lead_id": leg.lead_id, "destination": leg.destination, "trunk": leg.trunk,
            "caller_id": leg.caller_id, "started_at": at, "ruleset": leg.ruleset, "verdict": leg.verdict,
            "node": self.node, "consumer": self.consumer}})

    def answered(self, key):
        at = self.at()
        self.journal.put("call_progress", {"at": at, "call_id": key, "answered_at": at})

    def bridged(self, key, uid, now):
        at = self.iso(now)
        self.journal.put("call_progress", {"at": at, "call_id": key, "bridged_at": at, "agent_id": uid})

    def ended(self, leg, wrap_up, recording_expected=False):
        """A call ended. ``wrap_up``: its agent is in wrap-up now (the CDR waits for
        it); else a connected call's agent already left (written with "other")."""
        if leg.agent is None:
            self.write(leg)
        elif wrap_up:
            self.held[leg.agent] = leg
            self.finished[leg.call_id] = leg
        else:
            self.write(leg, "other")
            if recording_expected and leg.recording_path is None:
                self.written.add(leg.call_id)

    def wrap_ended(self, uid, disposition):
        """The agent's wrap-up ended: the call's record goes out with the disposition
        (none for a timeout or a stop)."""
        leg = self.held.pop(uid, None)
        if leg is not None:
            self.finished.pop(leg.call_id, None)
            self.write(leg, disposition if disposition not in (None, "wrap-timeout") else None)

    def write(self, leg, disposition=None):
        try:
            cdr = Cdr.from_leg(leg, agent_disposition=disposition)
        except DialerError as e:  # a bad disposition: the call's record is kept without it
            log.error("call {key}: {err}; its record is written without the disposition", key=leg.call_id,
                      err=str(e))
            cdr = Cdr.from_leg(leg)
        self.journal.put("cdr", {"at": self.at(), "cdr": cdr_payload(cdr)})

    def recording(self, key, ev, now_ms):
        """A ``recording_done`` for a call that has ended: kept on its held leg, or
        attached to the record already written. False if the key is not one of these."""
        if key in self.finished:
            self.finished[key].handle(ev, now=now_ms)
            return True
        if key in self.written:
            self.written.discard(key)
            ms = int(round(1000 * ev["duration_s"])) if ev.get("duration_s") is not None else None
            self.journal.put("recording", {"at": self.at(), "call_id": key, "path": ev.get("path"),
                                           "duration_ms": ms})
            return True
        return False

    # -- the rest ---------------------------------------------------------------------
    def agent_events(self, events):
        events = [e for e in events if e is not None]
        if events:
            self.journal.put("agent_events", {"at": self.at(),
                                              "events": [self._event_row(e) for e in events]})

    def audit(self, actor, action, subject, reason, detail):
        self.journal.put("audit", {"at": self.at(), "actor": actor, "action": action,
                                   "account_id": self.account_id, "subject": subject, "reason": reason,
                                   "detail": detail})

    def opt_out(self, key, number):
        self.journal.put("dnc", {"at": self.at(), "numbers": [number], "actor": "dialer",
                                 "account_id": self.account_id, "reason": f"opted out with a key on call {key}"})

    def command_done(self, command_id, result):
        self.journal.put("command_done", {"at": self.at(), "id": command_id, "result": result})

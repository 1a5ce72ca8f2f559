"""Call routing of one dialer loop: the customer legs from the dial to their end.

Worker events drive each customer leg's state machine (``dialer.calls.CallLeg``).
A live answer waits (``waiting``, oldest first) at most the leg's connect window for
the ready agent idle longest (a preview call: for the agent who asked for it); it is
bridged in the same worker or joined over a loopback tie leg. With nobody free
within the window it gets the campaign's recorded message (safe harbor), where the
opt-out key puts the number on the company DNC list at once; the message ends the
call, or a timer of ``message_s`` does. Every customer leg holds one line of the
account's gate from the dial until its ``ended`` (safe harbor included).

What the pacing policy learns comes from here (``on_dial_end``, ``on_connect``,
``on_abandon``, ``on_handle_end``); every change of the floor (an answer, a call
ending, an agent freeing) calls ``on_change`` so the loop can decide again at once.
"""

import pathlib

from twisted.logger import Logger

from core.errors import DialerError
from .abandons import is_live

log = Logger(namespace="dialer.routing")


class CallRouter:
    """The customer legs of one campaign loop. ``agent_key(uid)`` gives the SIP leg of
    a logged-in agent's phone (None if not logged in here)."""

    def __init__(self, clock, pool, floor, records, stats, policy, gate, brake, campaign_id, agent_key,
                 greeting=None, message_s=6.0, record_dir=None, on_change=None, name="campaign", credit=None):
        self.clock, self.pool, self.floor, self.records = clock, pool, floor, records
        self.stats, self.policy, self.gate, self.brake = stats, policy, gate, brake
        self.cid, self.agent_key, self.name = campaign_id, agent_key, name
        self.greeting, self.message_s, self.record_dir = greeting, message_s, record_dir
        self.on_change = on_change or (lambda: None)
        self.credit = credit  # the balance guard (``dialer.credit``): slices count from the answer
        self.legs = {}  # call key -> CallLeg (live)
        self.waiting = []  # answered keys waiting for an agent, oldest first
        self.timers = {}  # key -> IDelayedCall (connect window, message end)
        self.tie_of = {}  # customer key -> tie key
        self.reserved = {}  # call key -> user id: a preview call, for the agent who asked for it
        self.handles = {}  # user id -> bridged instant (s), for the policy's handle time
        self.opted_out = set()  # numbers opted out on this run's calls: never dialled again, even
        #                         before the journal has put them on the DNC list
        self.dialing = 0  # legs in "dialing" or "ringing"

    def ms(self):
        return int(round(self.clock.seconds() * 1000))

    # -- reading ----------------------------------------------------------------------
    def owns(self, key):
        return key in self.legs

    def live_numbers(self):
        """Numbers the hopper must not hand out now: those on a call, and this run's opt-outs."""
        live = {int(lg.destination[1:]) for lg in self.legs.values() if lg.destination.startswith("+")}
        return live | self.opted_out

    # -- changes ----------------------------------------------------------------------
    def add(self, leg):
        """A leg about to be dialled (its line is taken already)."""
        self.legs[leg.call_id] = leg
        self.dialing += 1

    def on_event(self, key, ev):
        leg = self.legs[key]
        name = ev["ev"]
        if name in ("admitted", "ringing", "media"):
            if name == "ringing" and leg.state not in ("dialing", "ringing"):
                return
            if name == "media" and leg.state == "ended":
                return
            leg.handle(ev, now=self.ms())
        elif name == "answered":
            leg.handle(ev, now=self.ms())
            self.dialing -= 1
            self.stats.answers += 1
            self.records.answered(key)
            if self.credit is not None:
                self.credit.answered(key)
            self.policy.on_dial_end(self.clock.seconds(), True,
                                    (leg.answered_ms - (leg.admitted_ms or leg.created_ms)) / 1000.0)
            self.waiting.append(key)
            self.timers[key] = self.clock.callLater(leg.connect_window_ms / 1000.0, self.window_expired, key)
            self.serve_waiting()
            self.on_change()
        elif name == "dtmf":
            if leg.state in ("answered", "bridged", "safe_harbor"):
                leg.handle(ev, now=self.ms())
                if leg.opted_out:
                    self._opt_out(key, leg)
        elif name == "recording_done":
            leg.handle(ev, now=self.ms())
        elif name == "play_done":
            if leg.state == "safe_harbor":
                self.hangup(key, "dialer")
        elif name == "ended":
            self._ended(key, ev)

    def serve_waiting(self):
        """Give the answered calls waiting, oldest first, to the agents free now."""
        if not self.waiting:
            return
        now = self.records.now()
        while self.waiting:
            key = self.waiting[0]
            leg = self.legs.get(key)
            if leg is None or leg.state != "answered":
                self.waiting.pop(0)
                continue
            mine = self.reserved.get(key)  # a preview call goes to the agent who asked for it
            if mine is not None:
                uid = mine if self.floor.state_of(mine) == "ready" and self.agent_key(mine) is not None else None
            else:
                uid = self.floor.pick(self.cid)
                if uid is not None and self.reserved and uid in self.reserved.values():
                    uid = None  # (preview: every ready agent waits for their own call)
            agent_leg = self.agent_key(uid) if uid is not None else None
            if agent_leg is None:
                return
            self.waiting.pop(0)
            timer = self.timers.pop(key, None)
            if timer and timer.active():
                timer.cancel()
            self.records.agent_events([self.floor.assign(self.cid, key, now, user_id=uid)])
            tie = f"tie-{key}"
            how = self.pool.connect(key, agent_leg, tie_key=tie)
            if how == "tie":
                self.tie_of[key] = tie
            leg.agent_assigned(uid, now=self.ms())
            self.records.bridged(key, uid, now)
            if self.record_dir is not None:
                path = pathlib.Path(self.record_dir)
                path.mkdir(parents=True, exist_ok=True)
                self.pool.record(key, str((path / f"{key}.wav").resolve()))
            t = self.clock.seconds()
            self.handles[uid] = t
            self.stats.connects += 1
            self.stats.connect_ms.append(leg.connect_delay_ms)
            self.policy.on_connect(t, (leg.connect_delay_ms or 0) / 1000.0)

    def window_expired(self, key):
        self.timers.pop(key, None)
        leg = self.legs.get(key)
        if leg is None or leg.state != "answered":
            return
        if key in self.waiting:
            self.waiting.remove(key)
        leg.window_expired(now=self.ms())
        self.stats.abandons += 1
        self.policy.on_abandon(self.clock.seconds())
        if self.greeting:
            self.pool.play(key, self.greeting)
        # the message ends the call (play_done), or this timer does
        self.timers[key] = self.clock.callLater(self.message_s, self.hangup, key, "dialer")

    def _opt_out(self, key, leg):
        # on the company DNC list through the journal (kept even with the database
        # locked); until then this run's own set keeps the number from being dialled
        self.opted_out.add(int(leg.destination[1:]))
        self.records.opt_out(key, leg.destination)
        self.stats.opt_outs += 1
        self.hangup(key, "dialer")

    def hangup(self, key, by):
        leg = self.legs.get(key)
        if leg is None or leg.state == "ended":
            return
        if leg.hangup_request is None:
            try:
                leg.hangup(by=by, now=self.ms())
            except DialerError:
                pass
        self.pool.hangup(key)

    def _ended(self, key, ev):
        leg = self.legs.pop(key)
        self.gate.release(key)
        self.reserved.pop(key, None)
        timer = self.timers.pop(key, None)
        if timer and timer.active():
            timer.cancel()
        if leg.state == "answered" and key in self.waiting:
            self.waiting.remove(key)
        tie = self.tie_of.pop(key, None)
        if tie is not None:
            try:
                self.pool.hangup(tie)
            except KeyError:
                pass
        was_answered = leg.answered_ms is not None
        was_waiting = leg.state == "answered"  # a live answer waiting for an agent
        if leg.state in ("dialing", "ringing"):
            self.dialing -= 1
        leg.handle(ev, now=self.ms())
        if self.credit is not None:  # its reservation replaced by its rated cost
            self.credit.ended(key, leg.billable_ms)
        t = self.clock.seconds()
        if not was_answered:
            self.policy.on_dial_end(t, False, (leg.duration_ms or 0) / 1000.0)
        elif was_waiting and is_live(leg) and not leg.abandoned:
            # the person hung up inside the connect window: a live answer, not
            # abandoned (``dialer.abandons``), which the policy counts like its records
            self.policy.on_live_hangup(t)
        if leg.end_code:  # the carrier's final answer (0: no answer from it at all, e.g. a worker died)
            pause = self.brake.record(t, leg.disposition == "congestion")
            if pause is not None:
                log.warn("campaign {name}: carrier congestion ({n} calls in a row ended {code} {reason}): "
                         "no dials on this trunk for {pause:g} s", name=self.name,
                         n=self.brake.in_a_row, code=leg.end_code, reason=leg.end_reason or "", pause=pause)
        self.stats.ended(leg)  # its disposition, and its place in the abandon window
        self.stats.billable_ms += leg.billable_ms or 0
        wrap_up = False
        if leg.agent is not None:
            uid = leg.agent
            if self.floor.state_of(uid) == "on_call":
                self.records.agent_events([self.floor.call_ended(uid, self.records.now(), call_id=key)])
            wrap_up = self.floor.state_of(uid) == "wrap_up"
            if not wrap_up:  # the agent's phone hung up first: their wrap-up is already closed ("other")
                self.handles.pop(uid, None)
        self.records.ended(leg, wrap_up, recording_expected=self.record_dir is not None)
        self.on_change()

    def agent_left(self, uid):
        """The agent's phone hung up: their call in progress is hung up too."""
        if self.floor.state_of(uid) == "on_call":
            call = self.floor.agent(uid).call_id
            if call in self.legs:
                self.hangup(call, "agent")

    def wrap_ended(self, uid, disposition):
        """An agent's wrap-up ended (disposition, timeout or stop): the handle time goes
        to the policy, the call's record out, and a waiting caller may take the agent."""
        start = self.handles.pop(uid, None)
        if start is not None:
            t = self.clock.seconds()
            self.policy.on_handle_end(t, t - start)
        self.records.wrap_ended(uid, disposition)

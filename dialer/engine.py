"""The dialer: one campaign's loop on a Twisted reactor (issue 5, first cut).

Every ``tick`` seconds of the reactor's clock the loop asks the pacing policy how
many calls to launch from what it observes (agents by state, calls ringing, answered
callers waiting), takes that many leads from the hopper (which re-checks each one
with the rules engine at that instant and reserves it), and places them through the
SIP worker pool. Worker events drive each customer leg's state machine
(``dialer.calls.CallLeg``): a live answer goes at once to the ready agent idle longest
(bridged in the same worker, or joined over a loopback tie call); with nobody free
within the connect window it gets the campaign's recorded message, where the opt-out
key puts the number on the company DNC list at once, and counts as abandoned. Every
attempt ends as a CDR (``dialer.cdr.write_cdr``, idempotent by call id) with the
lead's outcome; a connected call's record is written when its agent's wrap-up ends.

Agents log in by calling ``sip:agent-<user>-<pin>@<worker>`` and stay on the line;
the PIN is checked against the store. A worker that dies costs only its calls: the
pool reports them ended ("worker died"), they are recorded as failed, and their leads
are retried by the campaign's retry rules, never at once.

Time: the reactor's clock (``IReactorTime.seconds()``, epoch seconds) is the only
clock; nothing here reads the wall clock.
"""

import datetime as _dt
import itertools
import pathlib

from twisted.internet import task, threads
from twisted.logger import Logger

from campaigns.hopper import Hopper, HopperBlocked

from .agents import AgentFloor, agent_event_row, login_user, verify_pin
from .calls import CallLeg
from .cdr import Cdr
from core.errors import DialerError, StoreError
from .gate import AccountGate, AgentSessions, LoginGuard, source_host
from .ids import uuid7
from .jurisdiction import pacing_rules
from .journal import APPLIERS
from core.timeutil import to_iso
from .pacing.policies import PacingState, Power, Predictive, Preview, Progressive

log = Logger(namespace="dialer.engine")


def policy_for(campaign, pacing=None):
    """The pacing policy of a campaign's dial mode. ``pacing``
    (``dialer.jurisdiction.PacingRules``): the abandon cap and window of the campaign's
    rule set and the window's counts from the CDRs; without it, the campaign's own
    target and the policy's defaults. A cap of 0 (no abandon allowed) dials
    progressively: never more calls than free agents."""
    mode = campaign["dial_mode"]
    cap = float(campaign["abandon_target"])
    if mode == "predictive":
        if pacing is None:
            return Predictive(cap=cap, connect_window=2.0)
        if pacing.cap <= 0:
            return Progressive()
        return Predictive(cap=pacing.cap, window_hours=pacing.window_hours, history=pacing.history,
                          connect_window=2.0)
    if mode == "power":
        return Power(float(campaign["power_ratio"] or 2.0))
    if mode == "progressive":
        return Progressive()
    return Preview()


class CongestionBrake:
    """A carrier answering 5xx to call after call (a 503 storm) gets a rest instead of
    the campaign's leads: after ``threshold`` congestion failures in a row the trunk
    is paused ``pause_s``, then probed; another failure doubles the pause (up to
    ``max_pause_s``); any other final answer resets it. Pure: the caller gives ``now``."""

    def __init__(self, threshold=10, pause_s=5.0, max_pause_s=60.0):
        from core.retry import Backoff  # imported here: this class is all that uses it in this module

        self.threshold, self.pause_s, self.max_pause_s = threshold, pause_s, max_pause_s
        self.in_a_row = 0
        self.pauses = Backoff(pause_s, max_pause_s)
        self.until = None

    def record(self, now, congested):
        """A call's end; returns the pause (s) when this one engages the brake."""
        if not congested:
            self.in_a_row, self.until = 0, None
            self.pauses.reset()
            return None
        self.in_a_row += 1
        if self.in_a_row < self.threshold or self.paused(now):
            return None
        pause = self.pauses.next()
        self.until = now + pause
        return pause

    def paused(self, now):
        return self.until is not None and now < self.until


class Stats:
    """What the demo's live summary shows. ``dials``, ``answers``, ``connects``,
    ``abandons``, ``opt_outs``, ``dispositions`` count this run. ``abandon_rate`` is
    the jurisdiction's (``dialer.abandons``): abandoned live answers over live answers
    among the calls started in the last ``abandon_window_hours`` (the campaign's rule
    set's), earlier runs' CDRs included (``window``: an ``AbandonWindow``); each call
    counts when it ends (:meth:`ended`), by the same rules as its CDR."""

    def __init__(self, window=None, clock=None):
        from .abandons import AbandonWindow
        self.dials = self.answers = self.connects = self.abandons = self.opt_outs = 0
        self.dispositions = {}
        self.billable_ms = 0
        self.connect_ms = []  # answer -> agent bridged
        self.window = window if window is not None else AbandonWindow(720.0)
        self.clock = clock  # epoch seconds; without one, no call leaves the window

    def ended(self, leg):
        """An ended call: its disposition, and its place in the abandon window."""
        self.dispositions[leg.disposition] = self.dispositions.get(leg.disposition, 0) + 1
        self.window.add(leg)

    def as_dict(self):
        cms = sorted(self.connect_ms)
        lives, abandons = self.window.counts(self.clock() if self.clock is not None else None)
        return {"dials": self.dials, "answers": self.answers, "connects": self.connects,
                "abandons": self.abandons, "opt_outs": self.opt_outs, "dispositions": dict(self.dispositions),
                "billable_minutes": round(self.billable_ms / 60000.0, 2),
                "abandon_window_hours": self.window.hours, "window_live_answers": lives,
                "window_abandons": abandons, "abandon_rate": abandons / lives if lives else 0.0,
                "connect_ms_p50": cms[len(cms) // 2] if cms else None,
                "connect_ms_max": cms[-1] if cms else None}


class DirectWrites:
    """The journal's interface, applied at once on the caller's thread (unit tests
    and one-shot tools). The live dialer uses ``dialer.journal.Journal``, which never
    loses a write when the database is locked."""

    def __init__(self, store):
        self.store = store

    def put(self, kind, payload):
        with self.store.transaction():
            APPLIERS[kind](self.store, payload)

    backlog = 0


class Dialer:
    """One campaign's dialer loop. ``pool`` is a ``dialer.sip.pool.WorkerPool`` whose
    ``on_event`` is this object's ``on_event``; ``route(number)`` gives the SIP URI to
    dial a number through the campaign's trunk."""

    def __init__(self, reactor, store, campaign, pool, route, tick=0.5, cps=10.0, ring_timeout_s=15,
                 wrap_limit_s=30.0, greeting=None, policy=None, consumer="dialer-1", message_s=6.0,
                 record_dir=None, journal=None, registrar=None, brake=None, gate=None, sessions=None,
                 login_guard=None, verify=None, node="local"):
        self.reactor, self.store, self.pool, self.route = reactor, store, pool, route
        self.node = node  # which dialer service placed a call (kept with its open-call row)
        # every write of the loop goes through the journal (never lost, never blocking)
        self.journal = journal if journal is not None else DirectWrites(store)
        # the campaign's SIP trunk (dialer.trunks.TrunkRegistrar: registration, room,
        # dialing through it), or None: ``route`` gives the URI (the demo's carriers)
        self.registrar = registrar
        self.trunk = registrar.trunk if registrar is not None else None
        self.brake = brake or CongestionBrake()
        self.hopper = Hopper(store, campaign)
        self.campaign = self.hopper.campaign
        self.cid = self.campaign["id"]
        self.account = store.query_one("SELECT * FROM accounts WHERE id = ?", (self.campaign["account_id"],))
        self.account_id = self.account["id"]
        self.lines = int(self.account["line_capacity"])
        # the account-wide gate (lines across every campaign of the account, CPS per
        # trunk) and the service-wide agent sessions; a loop alone gets its own
        self.trunk_key = f"trunk-{self.trunk.id}" if self.trunk is not None else f"route-{self.cid}"
        if gate is None:
            gate = AccountGate()
            gate.set_capacity(self.account_id, self.lines)
            gate.set_cps(self.trunk_key, cps)
        elif self.trunk_key not in gate.cps:
            gate.set_cps(self.trunk_key, cps)
        self.gate = gate
        self.sessions = sessions if sessions is not None else AgentSessions()
        self.login_guard = login_guard if login_guard is not None else LoginGuard()
        # the PIN check (scrypt, tens of ms) never runs on the reactor thread
        self.verify = verify or (lambda pin, stored: threads.deferToThreadPool(
            reactor, reactor.getThreadPool(), verify_pin, pin, stored))
        self.checking = {}  # agent leg key -> user name: PIN being checked
        self.confirmed = set()  # of those, the legs whose ACK already came
        # the campaign's rule set: abandon cap and window (with the CDRs' counts), ring minima
        self.pacing = pacing_rules(store, self.campaign, self.now())
        self.policy = policy or policy_for(self.campaign, self.pacing)
        self.floor = AgentFloor(wrap_limit_s=wrap_limit_s)
        self.tick_s, self.cps, self.ring_timeout_s = tick, float(cps), ring_timeout_s
        # the campaign's message is kept under the store's files directory (relative path)
        stored = self.campaign["greeting"]
        self.greeting = greeting or (str((store.files_dir / stored).resolve()) if stored else None)
        self.message_s = message_s
        self.record_dir = record_dir  # connected calls are recorded there (WAV), referenced by the CDR
        self.finished = {}  # key -> leg: ended, CDR not written yet (a recording may still report)
        self.written = set()  # keys whose CDR was written before their recording reported
        self.consumer = consumer
        self.legs = {}  # call key -> CallLeg (live)
        self.waiting = []  # answered keys waiting for an agent, oldest first
        self.agent_legs = {}  # agent SIP leg key -> user id
        self.pending_login = {}  # agent SIP leg key -> (user id, name): PIN checked, waiting for the ACK
        self.agent_of_user = {}  # user id -> agent leg key
        self.pending_cdr = {}  # user id -> leg whose CDR is written when the wrap-up ends
        self.handles = {}  # user id -> bridged instant (s), for the policy's handle time
        self.tie_of = {}  # customer key -> tie key
        self.timers = {}  # key -> IDelayedCall (connect window, message end)
        self.stats = Stats(self.pacing.window(), clock=reactor.seconds)
        self.loop = None
        self.blocked_reason = None
        self.opted_out = set()  # numbers opted out on this run's calls: never dialled again, even
        #                         before the journal has put them on the DNC list
        self.next_poll = 0.0  # agent commands (CLI, web console) are read once a second
        self.reserved = {}  # call key -> user id: a preview call, for the agent who asked for it

    # -- time -------------------------------------------------------------------------
    def now(self):
        return _dt.datetime.fromtimestamp(self.reactor.seconds(), _dt.timezone.utc)

    def ms(self):
        return int(round(self.reactor.seconds() * 1000))

    # -- running ----------------------------------------------------------------------
    def start(self):
        self.loop = task.LoopingCall(self.tick)
        self.loop.clock = self.reactor
        self.loop.start(self.tick_s, now=False)

    def stop(self):
        if self.loop and self.loop.running:
            self.loop.stop()
        for key in list(self.legs):
            self.pool.hangup(key)

    def state(self):
        c = self.floor.counts(self.cid)
        dialing = sum(1 for lg in self.legs.values() if lg.state in ("dialing", "ringing"))
        # lines are the account's (every leg of every campaign holds one in the gate)
        return PacingState(now=self.reactor.seconds(), agents=c.agents, ready=c.ready, busy=c.busy,
                           talking=c.talking, dialing=dialing, waiting=len(self.waiting), lines=self.lines,
                           lines_in_use=self.gate.in_use(self.account_id))

    def tick_floor(self):
        """End the wrap-ups past their limit."""
        for ev in self.floor.tick(self.now()):
            self._wrap_ended(ev)

    def tick(self):
        now = self.now()
        self.tick_floor()
        t = self.reactor.seconds()
        room = self._trunk_room(t)
        if self.brake.paused(t):
            room = 0
        if t >= self.next_poll:
            self.next_poll = t + 1.0
            self.poll_commands()
        asked = self.policy.decide(self.state())
        want = min(asked, room)
        picked = []
        if want > 0:
            try:
                picked = self.hopper.next_leads(want, now, self.consumer, live_numbers=self._live_numbers())
                self._blocked(None)
            except HopperBlocked as e:
                self._blocked(str(e))
            except StoreError as e:  # store unreachable: nothing can be checked, so nothing is dialled
                self._blocked(f"dialing paused, the database is unavailable ({e})")
            except DialerError as e:
                self._blocked(f"no leads: {e}")
        if len(picked) < asked:  # the policy counted on these dials (CPS cap, no lead): they did not happen
            self.policy.not_placed(asked - len(picked))
        if not picked:
            return
        try:
            self.hopper.mark_dialing([row["id"] for row, _ in picked], now)
        except StoreError as e:  # the leads stay reserved (no other dialer takes them); the call goes on
            log.warn("leads {ids} not marked dialling ({err})", ids=[row["id"] for row, _ in picked], err=str(e))
        for row, verdict in picked:
            self._dial(row, verdict, now)

    def _trunk_room(self, t):
        """Calls that may start now: the account's free lines (across all its campaigns),
        the trunk's calls-per-second cap over any sliding second (across all campaigns
        on it), and none while the trunk is registered nowhere."""
        room = self.gate.room(self.account_id, self.trunk_key, t)
        if self.registrar is not None:
            room = min(room, self.registrar.room())
        return room

    def _live_numbers(self):
        """Numbers the hopper must not hand out now: those on a call, and this run's opt-outs."""
        live = {int(lg.destination[1:]) for lg in self.legs.values() if lg.destination.startswith("+")}
        return live | self.opted_out

    def _blocked(self, why):
        """One log line when the reason the campaign cannot dial changes (not one per tick)."""
        if why != self.blocked_reason:
            if why is not None:
                log.warn("campaign {name}: {why}", name=self.campaign["name"], why=why)
            elif self.blocked_reason is not None:
                log.info("campaign {name}: dialing again", name=self.campaign["name"])
            self.blocked_reason = why

    def preview_dial(self, uid):
        """Preview mode: the agent asks for the next lead; it is checked by the rules
        engine now and dialled for that agent. Returns the result text."""
        if self.campaign["dial_mode"] != "preview":
            return f"refused: campaign {self.campaign['name']} dials by itself ({self.campaign['dial_mode']})"
        state = self.floor.state_of(uid)
        if state != "ready":
            return f"refused: agent is {state.replace('_', ' ')}; a preview dial needs a ready agent"
        if uid in self.reserved.values():
            return "refused: the agent's previous preview call is still in progress"
        if self.gate.free_lines(self.account_id) < 1:
            return f"refused: all {self.lines} lines of the account are in use"
        if self._trunk_room(self.reactor.seconds()) < 1:
            return "refused: the trunk has no room this second; try again"
        now = self.now()
        try:
            picked = self.hopper.next_leads(1, now, self.consumer, live_numbers=self._live_numbers())
        except DialerError as e:
            return f"refused: {e}"
        if not picked:
            return "refused: no lead of the campaign may be called now"
        row, verdict = picked[0]
        self.hopper.mark_dialing([row["id"]], now)
        key = self._dial(row, verdict, now)
        self.reserved[key] = uid
        return f"done: dialling {row['phone']} (lead {row['id']})"

    def _dial(self, row, verdict, now):
        # a globally unique, time-ordered id: a restart never reuses an earlier call's
        key = uuid7(self.ms())
        caller_id = self.campaign["caller_id"] or (self.trunk.caller_id if self.trunk is not None else None)
        leg = CallLeg(key, row["phone"], now, account_id=self.campaign["account_id"], campaign_id=self.cid,
                      lead_id=row["id"], caller_id=caller_id,
                      trunk=self.trunk.name if self.trunk is not None else "default",
                      verdict=verdict, ring_timeout_s=self.pacing.ring_timeout_s(self.ring_timeout_s, verdict))
        self.gate.take(key, self.account_id, self.trunk_key, self.reactor.seconds())
        self.legs[key] = leg
        self.stats.dials += 1
        # journaled before the INVITE leaves: a crash from here on still ends in a CDR
        self.journal.put("call_open", {"at": to_iso(now), "call": {
            "call_id": key, "account_id": self.account_id, "campaign_id": self.cid, "lead_id": row["id"],
            "destination": row["phone"], "trunk": leg.trunk, "caller_id": caller_id, "started_at": to_iso(now),
            "ruleset": leg.ruleset, "verdict": leg.verdict, "node": self.node, "consumer": self.consumer}})
        if self.registrar is not None:
            port = self.registrar.dial(key, row["phone"], timeout_s=leg.ring_timeout_ms / 1000.0, caller_id=caller_id)
        else:
            port = self.pool.dial(key, self.route(row["phone"]), timeout_s=leg.ring_timeout_ms / 1000.0,
                                  caller_id=caller_id)
        leg.worker_id = port
        return key

    # -- worker events ----------------------------------------------------------------
    def on_event(self, ev):
        name, key = ev.get("ev"), ev.get("key")
        try:
            if name == "incoming":
                self._incoming(ev)
            elif key in self.checking:
                if name == "ended":
                    self.checking.pop(key, None)
                    self.confirmed.discard(key)
                elif name == "confirmed":  # the ACK came before the PIN check's answer
                    self.confirmed.add(key)
            elif key in self.pending_login:
                if name == "confirmed":
                    self._login(key)
                elif name == "ended":
                    uid, user = self.pending_login.pop(key)
                    log.warn("agent {user}: the phone never confirmed its call (no ACK: a NAT or firewall in the "
                             "way?); not logged in", user=user)
            elif key in self.agent_legs:
                if name == "ended":
                    self._agent_gone(key, ev)
            elif key in self.legs:
                self._customer(key, ev)
            elif name == "recording_done" and key in self.finished:
                self.finished[key].handle(ev, now=self.ms())
            elif name == "recording_done" and key in self.written:
                # the call's record went out before its recording reported: attach it there
                self.written.discard(key)
                ms = int(round(1000 * ev["duration_s"])) if ev.get("duration_s") is not None else None
                self.journal.put("recording", {"at": to_iso(self.now()), "call_id": key, "path": ev.get("path"),
                                               "duration_ms": ms})
            elif name == "worker_died":
                log.warn("SIP worker {w} died ({why}): its {n} call(s) recorded as failed", w=ev.get("worker"),
                         why=ev.get("why"), n=ev.get("calls") or 0)
            elif name == "refused":
                log.warn("agent phone {who} refused on port {w}: {why}", who=ev.get("to_user"), w=ev.get("worker"),
                         why=ev.get("reason"))
        except DialerError as e:  # one clear line per fault; the loop goes on
            log.warn("call {key}: {err}", key=key, err=str(e))

    def _incoming(self, ev):
        """An agent's phone calls ``agent-<user>-<pin>``: the user is looked up in this
        campaign's account, the PIN checked off the reactor thread. Wrong PINs slow down
        the caller's source address (``LoginGuard``), never lock the user out."""
        to = ev.get("to_user") or ""
        if ev.get("tie"):
            return
        key = ev["key"]
        parts = to.split("-", 3)  # agent-<user>-<pin>[-<campaign>] (the service picks the campaign)
        if len(parts) < 3 or parts[0] != "agent":
            self.pool.hangup(key, code=404)
            return
        user, pin = ev.get("agent_user") or parts[1], parts[2]
        if user.endswith("." + self.account["name"]) and not ev.get("agent_user"):
            user = user[:-len(self.account["name"]) - 1]  # agent-<user>.<account>-<pin>
        source = source_host(ev.get("source") or "")
        t = self.reactor.seconds()
        wait = self.login_guard.wait(source, t)
        if wait > 0:
            log.warn("agent login of {user} from {source} refused: too many wrong PINs from that address, "
                     "next try in {wait:.0f} s", user=user, source=source, wait=wait)
            self.pool.hangup(key, code=403)
            return
        try:
            u = login_user(self.store, self.account_id, user)
        except StoreError as e:
            log.warn("agent login of {user} not checked, the database is unavailable ({err})", user=user, err=str(e))
            self.pool.hangup(key, code=503)
            return
        if u is None or not u["pin_hash"]:
            # the same back-off as a wrong PIN: guessing user names costs as much as guessing PINs
            self._login_refused(key, user, source, "no such agent, or no PIN set" if u is None else "no PIN set",
                                u)
            return
        self.checking[key] = user
        d = self.verify(pin, u["pin_hash"])
        d.addCallback(self._pin_checked, key, u, source)
        d.addErrback(lambda f: log.failure("PIN check of {user}", f, user=user))

    def _pin_checked(self, ok, key, u, source):
        if self.checking.pop(key, None) is None:  # the phone hung up while its PIN was checked
            return
        if not ok:
            self.confirmed.discard(key)
            self._login_refused(key, u["name"], source, "wrong PIN", u)
            return
        self.login_guard.succeeded(source)
        held = self.sessions.holder(u["id"])
        if held is not None and held[0].floor.state_of(u["id"]) in ("on_call", "wrap_up"):
            loop, _ = held
            log.warn("agent login of {user} refused: already logged in on campaign {camp} and {state} there "
                     "(one login per person)", user=u["name"], camp=loop.campaign["name"],
                     state=loop.floor.state_of(u["id"]).replace("_", " "))
            self.journal.put("audit", {"at": to_iso(self.now()), "actor": f"agent:{u['name']}",
                                       "action": "agent.login-refused", "account_id": self.account_id,
                                       "subject": f"user:{u['name']}", "reason": "already logged in, on a call",
                                       "detail": {"source": source, "campaign": self.campaign["name"]}})
            self.confirmed.discard(key)
            self.pool.hangup(key, code=486)
            return
        # logged in once the phone's ACK confirms the call: a phone that cannot hear us
        # (no ACK) must never be given a customer
        self.pending_login[key] = (u["id"], u["name"])
        if key in self.confirmed:
            self.confirmed.discard(key)
            self._login(key)

    def _login_refused(self, key, user, source, why, u=None):
        n = self.login_guard.failed(source, self.reactor.seconds())
        log.warn("agent login of {user} from {source} refused: {why} ({n} failure(s) from that address)",
                 user=user, source=source, why=why, n=n)
        self.journal.put("audit", {"at": to_iso(self.now()), "actor": f"phone:{source}",
                                   "action": "user.login-refused", "account_id": self.account_id,
                                   "subject": f"user:{user}", "reason": why,
                                   "detail": {"source": source, "failures_from_source": n}})
        self.pool.hangup(key, code=403)

    def _login(self, key):
        uid, user = self.pending_login.pop(key)
        now = self.now()
        held = self.sessions.holder(uid)
        if held is not None and held[1] != key:
            loop, old = held
            if loop.floor.state_of(uid) in ("on_call", "wrap_up"):  # became busy while this one was checked
                log.warn("agent login of {user} refused: already on a call (one login per person)", user=user)
                self.pool.hangup(key, code=486)
                return
            loop.end_session(uid, f"logged in again on another phone (campaign {self.campaign['name']})")
        self._agent_events([self.floor.login(uid, self.cid, now, name=user)])
        self.agent_legs[key] = uid
        self.agent_of_user[uid] = key
        self.sessions.open(uid, self, key)
        self._serve_waiting()

    def end_session(self, uid, reason):
        """The user logged in on another phone: this session ends now (logged out with
        ``reason``, the old phone hung up; its ``ended`` later changes nothing)."""
        key = self.agent_of_user.pop(uid, None)
        if key is None:
            return
        self.agent_legs.pop(key, None)
        self.sessions.close(uid, key)
        if self.floor.state_of(uid) in ("ready", "paused"):
            self._agent_events([self.floor.logout(uid, self.now(), reason=reason)])
        log.warn("agent {uid}: session on campaign {camp} ended: {why}", uid=uid, camp=self.campaign["name"],
                 why=reason)
        try:
            self.pool.hangup(key)
        except KeyError:
            pass

    def owns(self, key):
        """Whether an event about ``key`` (a call, its tie leg, an agent phone) is this loop's."""
        k = key[4:] if key.startswith("tie-") else key
        return (k in self.legs or k in self.finished or k in self.written or key in self.agent_legs
                or key in self.pending_login or key in self.checking)

    def _agent_gone(self, key, ev):
        """The agent's phone hung up: a call in progress ends too, its wrap-up closes
        with "other", and the agent is logged out."""
        uid = self.agent_legs.pop(key)
        if self.agent_of_user.get(uid) == key:
            del self.agent_of_user[uid]
        self.sessions.close(uid, key)
        now = self.now()
        events = []
        if self.floor.state_of(uid) == "on_call":
            call = self.floor.agent(uid).call_id
            if call in self.legs:
                self._hangup(call, "agent")
            events.append(self.floor.call_ended(uid, now))
        if self.floor.state_of(uid) == "wrap_up":
            events.append(self.floor.dispose(uid, "other", now, reason="phone hung up"))
            self._finish_wrap(uid, "other", now)
        if self.floor.state_of(uid) != "logged_out":
            events.append(self.floor.logout(uid, now, reason="phone hung up"))
        self._agent_events(events)

    def _customer(self, key, ev):
        leg = self.legs[key]
        name = ev["ev"]
        t = self.reactor.seconds()
        if name in ("admitted", "ringing", "media"):
            if name == "ringing" and leg.state not in ("dialing", "ringing"):
                return
            if name == "media" and leg.state == "ended":
                return
            leg.handle(ev, now=self.ms())
        elif name == "answered":
            leg.handle(ev, now=self.ms())
            self.stats.answers += 1
            self.journal.put("call_progress", {"at": to_iso(self.now()), "call_id": key,
                                               "answered_at": to_iso(self.now())})
            self.policy.on_dial_end(t, True, (leg.answered_ms - (leg.admitted_ms or leg.created_ms)) / 1000.0)
            self.waiting.append(key)
            self.timers[key] = self.reactor.callLater(leg.connect_window_ms / 1000.0, self._window_expired, key)
            self._serve_waiting()
        elif name == "dtmf":
            if leg.state in ("answered", "bridged", "safe_harbor"):
                leg.handle(ev, now=self.ms())
                if leg.opted_out:
                    self._opt_out(key, leg)
        elif name == "recording_done":
            leg.handle(ev, now=self.ms())
        elif name == "play_done":
            if leg.state == "safe_harbor":
                self._hangup(key, "dialer")
        elif name == "ended":
            self._ended(key, ev)

    def _serve_waiting(self):
        now = self.now()
        while self.waiting:
            key = self.waiting[0]
            leg = self.legs.get(key)
            if leg is None or leg.state != "answered":
                self.waiting.pop(0)
                continue
            mine = self.reserved.get(key)  # a preview call goes to the agent who asked for it
            if mine is not None:
                uid = mine if self.floor.state_of(mine) == "ready" and mine in self.agent_of_user else None
            else:
                uid = self.floor.pick(self.cid)
                while uid is not None and uid in self.reserved.values():
                    uid = None  # (preview: every ready agent waits for their own call)
            if uid is None or uid not in self.agent_of_user:
                return
            self.waiting.pop(0)
            timer = self.timers.pop(key, None)
            if timer and timer.active():
                timer.cancel()
            self._agent_events([self.floor.assign(self.cid, key, now, user_id=uid)])
            tie = f"tie-{key}"
            how = self.pool.connect(key, self.agent_of_user[uid], tie_key=tie)
            if how == "tie":
                self.tie_of[key] = tie
            leg.agent_assigned(uid, now=self.ms())
            self.journal.put("call_progress", {"at": to_iso(now), "call_id": key, "bridged_at": to_iso(now),
                                               "agent_id": uid})
            if self.record_dir is not None:
                path = pathlib.Path(self.record_dir)
                path.mkdir(parents=True, exist_ok=True)
                self.pool.record(key, str((path / f"{key}.wav").resolve()))
            self.handles[uid] = self.reactor.seconds()
            self.stats.connects += 1
            self.stats.connect_ms.append(leg.connect_delay_ms)
            self.policy.on_connect(self.reactor.seconds(), (leg.connect_delay_ms or 0) / 1000.0)

    def _window_expired(self, key):
        self.timers.pop(key, None)
        leg = self.legs.get(key)
        if leg is None or leg.state != "answered":
            return
        if key in self.waiting:
            self.waiting.remove(key)
        leg.window_expired(now=self.ms())
        self.stats.abandons += 1
        self.policy.on_abandon(self.reactor.seconds())
        if self.greeting:
            self.pool.play(key, self.greeting)
        # the message ends the call (play_done), or this timer does
        self.timers[key] = self.reactor.callLater(self.message_s, self._hangup, key, "dialer")

    def _opt_out(self, key, leg):
        # on the company DNC list through the journal (kept even with the database
        # locked); until then this run's own set keeps the number from being dialled
        self.opted_out.add(int(leg.destination[1:]))
        self.journal.put("dnc", {"at": to_iso(self.now()), "numbers": [leg.destination], "actor": "dialer",
                                 "account_id": self.account_id,
                                 "reason": f"opted out with a key on call {key}"})
        self.stats.opt_outs += 1
        self._hangup(key, "dialer")

    def _hangup(self, key, by):
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
        if key in self.waiting:
            self.waiting.remove(key)
        tie = self.tie_of.pop(key, None)
        if tie is not None:
            try:
                self.pool.hangup(tie)
            except KeyError:
                pass
        was_answered = leg.answered_ms is not None
        leg.handle(ev, now=self.ms())
        if not was_answered:
            self.policy.on_dial_end(self.reactor.seconds(), False, (leg.duration_ms or 0) / 1000.0)
        if leg.end_code:  # the carrier's final answer (0: no answer from it at all, e.g. a worker died)
            pause = self.brake.record(self.reactor.seconds(), leg.disposition == "congestion")
            if pause is not None:
                log.warn("campaign {name}: carrier congestion ({n} calls in a row ended {code} {reason}): "
                         "no dials on this trunk for {pause:g} s", name=self.campaign["name"],
                         n=self.brake.in_a_row, code=leg.end_code, reason=leg.end_reason or "", pause=pause)
        self.stats.ended(leg)  # its disposition, and its place in the abandon window
        self.stats.billable_ms += leg.billable_ms or 0
        if leg.agent is not None:
            uid = leg.agent
            if self.floor.state_of(uid) == "on_call":
                self._agent_events([self.floor.call_ended(uid, self.now(), call_id=key)])
            if self.floor.state_of(uid) == "wrap_up":
                self.pending_cdr[uid] = leg
                self.finished[key] = leg
                return
            # the agent's phone hung up first: their wrap-up is already closed ("other")
            self._write(leg, "other")
            if self.record_dir is not None and leg.recording_path is None:
                self.written.add(key)  # its recording may still report
            return
        self._write(leg)

    def _write(self, leg, disposition=None):
        try:
            cdr = Cdr.from_leg(leg, agent_disposition=disposition)
        except DialerError as e:  # a bad disposition: the call's record is kept without it
            log.error("call {key}: {err}; its record is written without the disposition", key=leg.call_id, err=str(e))
            cdr = Cdr.from_leg(leg)
        self.journal.put("cdr", {"at": to_iso(self.now()), "cdr": cdr_payload(cdr)})

    def _agent_events(self, events):
        events = [e for e in events if e is not None]
        if events:
            self.journal.put("agent_events", {"at": to_iso(self.now()), "events": [agent_event_row(e) for e in events]})

    # -- commands (CLI, web console) -------------------------------------------------
    def poll_commands(self):
        """Carry out the agent commands queued for this dialer's agents (one dialer
        claims each); the result goes back through the journal."""
        from .commands import claim, open_commands
        if not self.agent_of_user:
            return
        now = self.now()
        try:
            rows = open_commands(self.store, self.agent_of_user)
            for row in rows:
                if not claim(self.store, row["id"], now):
                    continue
                result = self.command(row["user_id"], row["command"], row["disposition"], row["reason"])
                self.journal.put("command_done", {"at": to_iso(self.now()), "id": row["id"], "result": result})
        except StoreError as e:  # the next poll tries again
            log.debug("agent commands not read: {err}", err=str(e))

    def command(self, uid, command, disposition=None, reason=None):
        """One agent command; returns its result text ("done: ..." or "refused: ...")."""
        now = self.now()
        try:
            if command in ("dispose", "dispose-pause"):
                self.dispose(uid, disposition, pause=command == "dispose-pause")
                return f"done: wrap-up ended with {disposition}"
            if command == "pause":
                self._agent_events([self.floor.pause(uid, now, reason=reason)])
                return "done: paused"
            if command == "ready":
                self._agent_events([self.floor.resume(uid, now)])
                self._serve_waiting()
                return "done: ready"
            if command == "dial":
                return self.preview_dial(uid)
            if command == "logout":
                state = self.floor.state_of(uid)
                if state not in ("ready", "paused"):
                    return f"refused: agent is {state.replace('_', ' ')}; log out when ready or paused"
                key = self.agent_of_user.get(uid)
                if key is not None:
                    self.pool.hangup(key)  # the phone's leg ends: _agent_gone logs the agent out
                return "done: logged out"
        except DialerError as e:
            return f"refused: {e}"
        return f"refused: unknown command {command!r}"

    # -- wrap-up ----------------------------------------------------------------------
    def dispose(self, uid, disposition, pause=False):
        """An agent ends wrap-up with a disposition (CLI / web console)."""
        now = self.now()
        ev = self.floor.dispose(uid, disposition, now, pause=pause)
        self._agent_events([ev])
        self._finish_wrap(uid, disposition, now)
        self._serve_waiting()

    def close_wrapups(self, reason="dialer stopped"):
        """End every wrap-up now (the dialer is stopping): the calls' records are
        written without a disposition."""
        now = self.now()
        for uid in list(self.pending_cdr):
            if self.floor.state_of(uid) == "wrap_up":
                self._wrap_ended(self.floor.end_wrap(uid, now, reason))
            else:
                self._finish_wrap(uid, None, now)

    def _wrap_ended(self, ev):
        self._agent_events([ev])
        self._finish_wrap(ev.user_id, None, self.now())
        self._serve_waiting()

    def _finish_wrap(self, uid, disposition, now):
        leg = self.pending_cdr.pop(uid, None)
        start = self.handles.pop(uid, None)
        if start is not None:
            self.policy.on_handle_end(self.reactor.seconds(), self.reactor.seconds() - start)
        if leg is not None:
            self.finished.pop(leg.call_id, None)
            self._write(leg, disposition if disposition not in (None, "wrap-timeout") else None)


async def wind_down(reactor, dialers, drain_s=0.0, settle_s=20.0, journal=None):
    """End a shift: no new dials; calls in progress get ``drain_s`` seconds to finish,
    the rest are hung up (by the operator) and given ``settle_s`` to end; wrap-ups
    close; with a ``journal``, wait (15 s at most) until every record is written."""
    from twisted.internet import task as _task

    def pause(s):
        return _task.deferLater(reactor, s, lambda: None)

    for d in dialers:
        if d.loop is not None and d.loop.running:
            d.loop.stop()
    for limit, hang_up_first in ((drain_s, False), (settle_s, True)):
        if hang_up_first:
            for d in dialers:
                for key in list(d.legs):
                    d._hangup(key, "operator")
        t0 = reactor.seconds()
        while any(d.legs for d in dialers) and reactor.seconds() - t0 < limit:
            for d in dialers:
                d.tick_floor()
            await pause(0.2)
    for d in dialers:
        d.close_wrapups()
    t0 = reactor.seconds()
    while journal is not None and journal.backlog and reactor.seconds() - t0 < 15:
        await pause(0.1)


def cdr_payload(cdr):
    """A CDR as the journal keeps it (JSON-ready)."""
    import dataclasses
    out = dataclasses.asdict(cdr)
    if out.get("callback_at") is not None:
        out["callback_at"] = to_iso(out["callback_at"])
    return out


def route_by_odds(carriers, odds):
    """A carrier simulator's router: the outcome of a number is fixed by its digits
    (so a retry gets the same answer), with the given odds. ``carriers``: outcome ->
    "host:port"; ``odds``: [(outcome, weight)]."""
    total = float(sum(w for _, w in odds))
    edges = list(itertools.accumulate(w / total for _, w in odds))

    def route(number):
        digits = "".join(ch for ch in number if ch.isdigit())
        u = (int(digits[-6:] or 0) * 2654435761 % 2 ** 32) / 2 ** 32
        for (outcome, _), edge in zip(odds, edges):
            if u <= edge:
                return f"sip:{digits}@{carriers[outcome]}"
        return f"sip:{digits}@{carriers[odds[-1][0]]}"
    return route


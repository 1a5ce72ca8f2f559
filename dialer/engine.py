"""The dialer: one campaign's loop on a Twisted reactor (issue 5, first cut).

The pacing policy is asked how many calls to launch from what it observes (agents by
state, calls ringing, answered callers waiting, lines in use) at once when the floor
changes (an answer, a call ending, an agent freeing or logging in: one coalesced
decision) and at the ``tick`` (every 0.5 s) when it wants periodic decisions, what it
observes changed, or dials it asked for were held back. That many leads are claimed
from the hopper (which re-checks each one with the rules engine at that instant,
reserves it and marks it dialling), through the store hook ``run`` (off the reactor
thread live; one claim in flight), and placed through the SIP worker pool. Worker events drive each customer leg's state machine
(``dialer.calls.CallLeg``): a live answer goes at once to the ready agent idle longest
(bridged in the same worker, or joined over a loopback tie call); with nobody free
within the connect window it gets the campaign's recorded message, where the opt-out
key puts the number on the company DNC list at once, and counts as abandoned. Every
attempt ends as a CDR (``dialer.cdr.write_cdr``, idempotent by call id) with the
lead's outcome; a connected call's record is written when its agent's wrap-up ends.

Agents log in by calling ``sip:agent-<user>-<pin>@<worker>`` and stay on the line;
the user is looked up through ``run`` and the PIN checked off the reactor thread.

Parts: ``DialPlanner`` (here), ``dialer.desk.AgentDesk`` (agent phones, login,
sessions), ``dialer.routing.CallRouter`` (customer legs, connect window, bridging,
safe harbor, opt-out) and ``dialer.records.RecordKeeper`` (journal writes, CDRs held
until wrap-up ends); ``Dialer`` composes them. A worker that dies costs only its calls: the
pool reports them ended ("worker died"), they are recorded as failed, and their leads
are retried by the campaign's retry rules, never at once.

Time: the reactor's clock (``IReactorTime.seconds()``, epoch seconds) is the only
clock; nothing here reads the wall clock.
"""

import datetime as _dt
import itertools

from twisted.internet import defer, threads
from twisted.logger import Logger

from campaigns.hopper import Hopper, HopperBlocked

from .agents import AgentFloor, verify_pin
from .calls import CONNECT_WINDOW_MS, CallLeg
from core.errors import DialerError, StoreError
from .desk import AgentDesk
from .evidence import at_dial, dial_evidence
from .gate import AccountGate, AgentSessions, LoginGuard
from .ids import uuid7
from .jurisdiction import load_version, pacing_rules
from .journal import APPLIERS
from .records import RecordKeeper, cdr_payload  # noqa: F401 (cdr_payload: the journal's tests use it here)
from .routing import CallRouter
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
        return Predictive(cap=pacing.cap, window_hours=pacing.window_hours, history=pacing.minutes,
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


def _claim(store, hopper, n, now, consumer, live_numbers, pacing=None):
    """On the store's thread: reserve up to ``n`` leads and mark them dialling, in one
    call (the hopper works on the store the hook hands it); the ring minima of
    rule-set versions the loop has not met yet are read here too (``pacing``)."""
    hopper.store = store
    picked = hopper.next_leads(n, now, consumer, live_numbers=live_numbers)
    if picked and pacing is not None:
        pacing.preload([getattr(v, "ruleset", None) for _, v in picked], lambda label: load_version(store, label))
    if picked:
        # each verdict as the call keeps it, with what its rules context held (DNC lists'
        # as-of dates and versions): the call's evidence, made here, not on the reactor
        ctx = hopper.last_context
        picked = [(row, dial_evidence(v, ctx)) for row, v in picked]
        try:
            hopper.mark_dialing([row["id"] for row, _ in picked], now)
        except StoreError as e:  # the leads stay reserved (no other dialer takes them); the call goes on
            log.warn("leads {ids} not marked dialling ({err})", ids=[row["id"] for row, _ in picked], err=str(e))
    return picked


def _release(store, cid, lead_ids, now):
    """On the store's thread: leads claimed that were not dialled go back to the hopper."""
    with store.transaction():
        store.conn.executemany(
            "UPDATE leads SET status = 'new', reserved_by = NULL, reserved_until = NULL, updated_at = ? "
            "WHERE id = ? AND campaign_id = ? AND status IN ('reserved', 'dialing')",
            [(to_iso(now), i, cid) for i in lead_ids])


def _park_unpriced(store, cid, items, now, until):
    """On the store's thread: leads claimed whose destination has no rate go back to
    the hopper due at ``until``, each with a lead event giving the reason."""
    import json
    with store.transaction():
        store.conn.executemany(
            "UPDATE leads SET status = 'retry', next_attempt_at = ?, reserved_by = NULL, reserved_until = NULL, "
            "updated_at = ? WHERE id = ? AND campaign_id = ? AND status IN ('reserved', 'dialing')",
            [(to_iso(until), to_iso(now), i, cid) for i, _ in items])
        store.conn.executemany(
            "INSERT INTO lead_events (lead_id, at, event, detail) VALUES (?, ?, 'not-dialled', ?)",
            [(i, to_iso(now), json.dumps({"reason": why, "retry_at": to_iso(until)})) for i, why in items])


def _take_commands(store, user_ids, now):
    """On the store's thread: the open commands of these agents that this dialer claims."""
    from .commands import claim, open_commands
    return [dict(row) for row in open_commands(store, user_ids) if claim(store, row["id"], now)]


class HopperLeads:
    """The campaign's hopper as the loop's lead source, every store access through
    ``run``: ``claim`` (the rules engine's check at that instant, reserved and marked
    dialling) and ``release`` (leads that can no longer be dialled go back)."""

    def __init__(self, hopper, run, pacing=None):
        self.hopper, self.run, self.pacing = hopper, run, pacing

    def claim(self, n, now, consumer, live_numbers):
        """``live_numbers()``: the numbers on a call now (read here, on the reactor thread)."""
        return self.run(_claim, self.hopper, n, now, consumer, frozenset(live_numbers()), self.pacing)

    def release(self, lead_ids, now):
        d = self.run(_release, self.hopper.cid, list(lead_ids), now)
        d.addErrback(lambda f: log.warn("leads {ids} not released ({err}); their reservation lapses",
                                        ids=list(lead_ids), err=f.getErrorMessage()))
        return d

    def park(self, items, now, until):
        """Leads not dialled for a reason of their own ((lead id, reason)): due again at ``until``."""
        d = self.run(_park_unpriced, self.hopper.cid, list(items), now, until)
        d.addErrback(lambda f: log.warn("leads {ids} not parked ({err}); their reservation lapses",
                                        ids=[i for i, _ in items], err=f.getErrorMessage()))
        return d


DIAL_SLICE = 10  # dials per reactor turn (``DialPlanner._dial_slice``)


class DialPlanner:
    """Dial planning of one loop: the pacing policy's decision, held to the account's
    room (free lines, the trunk's CPS cap, its registration, the congestion brake),
    the lead claim (at most one in flight) and the dials. Leads that arrive when
    they can no longer be dialled (room gone, loop stopped) are released."""

    def __init__(self, clock, policy, gate, brake, leads, account_id, trunk_key, observe, dial, live_numbers,
                 registrar=None, consumer="dialer-1", name="campaign", running=None, credit=None):
        self.clock, self.policy, self.gate, self.brake, self.leads = clock, policy, gate, brake, leads
        # the service's balance guard (``dialer.credit.CreditGuard``), or None: no guard
        self.credit = credit
        self.running = running or (lambda: True)  # whether the loop still dials (a wind-down stops its ticks)
        self.account_id, self.trunk_key, self.registrar = account_id, trunk_key, registrar
        # observe() -> the PacingState fields after ``now`` (agents ... lines_in_use)
        self.observe, self.dial, self.live_numbers = observe, dial, live_numbers
        self.last_seen = None  # what the policy saw at its last decision
        self.held_back = True  # dials it asked for were not placed: ask again at the next tick
        self.consumer, self.name = consumer, name
        self.claiming = False
        self.stopped = False
        self.blocked_reason = None

    def now(self):
        return _dt.datetime.fromtimestamp(self.clock.seconds(), _dt.timezone.utc)

    def room(self, t):
        """Calls that may start now: the account's free lines (across all its campaigns),
        the trunk's calls-per-second cap over any sliding second (across all campaigns
        on it), none while the trunk is registered nowhere or the brake is on."""
        room = self.gate.room(self.account_id, self.trunk_key, t)
        if self.registrar is not None:
            room = min(room, self.registrar.room())
        if self.brake.paused(t):
            room = 0
        if self.credit is not None and room > 0:
            room = min(room, self.credit.room(self.account_id))
        return room

    def plan(self, periodic=False):
        """Ask the policy, claim that many leads (within the room) and dial them.

        ``periodic`` (the loop's tick): the policy is asked only when it wants a
        periodic decision (``policy.tick``), when what it observes has changed since
        its last decision, or when dials it asked for were held back (room, leads);
        else its answer would be the last one's, already acted on."""
        if self.claiming or self.stopped:
            return
        seen = self.observe()
        if periodic and seen == self.last_seen and not self.held_back and not self.policy.tick:
            return
        self.last_seen, self.held_back = seen, False
        asked = self.policy.decide(PacingState(self.clock.seconds(), *seen))
        if asked <= 0:
            return
        want = min(asked, self.room(self.clock.seconds()))
        if want <= 0:  # the policy counted on these dials (CPS cap, no line, balance): they did not happen
            self.policy.not_placed(asked)
            self.held_back = True
            if self.credit is not None:
                why = self.credit.blocked(self.account_id)
                if why is not None:
                    self.credit.held_back(self.account_id, asked)
                    self._blocked(why)
            return
        self.claiming = True
        d = self.leads.claim(want, self.now(), self.consumer, self.live_numbers)
        d.addCallbacks(self._claimed, self._claim_failed, callbackArgs=(asked,), errbackArgs=(asked,))
        d.addErrback(lambda f: log.failure("lead claim of campaign {name}", f, name=self.name))

    def _claimed(self, picked, asked):
        self._blocked(None)
        if len(picked) < asked:  # the policy counted on these dials (no lead): they did not happen
            self.policy.not_placed(asked - len(picked))
            self.held_back = True
        self._dial_slice(picked)

    def _dial_slice(self, picked):
        """Dial up to ``DIAL_SLICE`` of the claimed leads in this reactor turn and the
        rest in the next ones (a claim of hundreds would otherwise hold the reactor for
        tens of milliseconds, while answered calls wait inside their connect window).
        The room is checked again for every slice (other campaigns of the account share
        its lines); leads that can no longer be dialled (room gone, loop stopped) are
        released and the policy told. No new decision is taken before the last slice."""
        room = 0 if self.stopped or not self.running() else self.room(self.clock.seconds())
        use, rest = picked[:min(room, DIAL_SLICE)], picked[min(room, DIAL_SLICE):]
        unpriced, floor = [], None
        if use:
            now = self.now()
            try:
                for i, (row, verdict) in enumerate(use):
                    if self.credit is not None:  # the balance guard: this destination's first slice
                        why = self.credit.refusal(self.account_id, row["phone"], self.clock.seconds())
                        if why is not None and why.unpriced:
                            unpriced.append((row, why.text))
                            continue
                        if why is not None:  # under the floor: none of the rest either
                            floor, rest = why.text, use[i:] + rest
                            break
                    self.dial(row, verdict, now)
            except Exception:
                self.claiming = False
                raise
        if unpriced:
            self._unpriced(unpriced)
        if rest and len(use) == DIAL_SLICE and floor is None:
            self.clock.callLater(0, self._dial_slice, rest)
            return
        self.claiming = False
        if rest:  # the room ran out (CPS cap, lines, balance) or the loop stopped
            self.leads.release([row["id"] for row, _ in rest], self.now())
            self.policy.not_placed(len(rest))
            self.held_back = True
            if floor is not None:
                self.credit.held_back(self.account_id, len(rest))
                self._blocked(self.credit.blocked(self.account_id) or floor)

    def _unpriced(self, items):
        """Leads whose destination has no rate: never dialled unpriced; parked for an
        hour (``dialer.credit.UNPRICED_RETRY_S``) with the reason, the policy told."""
        from .credit import UNPRICED_RETRY_S
        now = self.now()
        for row, why in items:
            log.warn("campaign {name}: lead {lead} ({phone}) not dialled: {why}; tried again in {s} s",
                     name=self.name, lead=row["id"], phone=row["phone"], why=why, s=UNPRICED_RETRY_S)
        park = getattr(self.leads, "park", None)
        ids = [row["id"] for row, _ in items]
        if park is not None:
            park([(row["id"], why) for row, why in items], now, now + _dt.timedelta(seconds=UNPRICED_RETRY_S))
        else:
            self.leads.release(ids, now)
        self.credit.unpriced(self.account_id, len(items))
        self.policy.not_placed(len(items))
        self.held_back = True

    def _claim_failed(self, failure, asked):
        self.claiming = False
        self.policy.not_placed(asked)
        self.held_back = True
        e = failure.value
        if isinstance(e, HopperBlocked):
            self._blocked(str(e))
        elif isinstance(e, StoreError):  # store unreachable: nothing can be checked, so nothing is dialled
            self._blocked(f"dialing paused, the database is unavailable ({e})")
        elif isinstance(e, DialerError):
            self._blocked(f"no leads: {e}")
        else:
            return failure

    def _blocked(self, why):
        """One log line when the reason the campaign cannot dial changes (not one per tick)."""
        if why != self.blocked_reason:
            if why is not None:
                log.warn("campaign {name}: {why}", name=self.name, why=why)
            elif self.blocked_reason is not None:
                log.info("campaign {name}: dialing again", name=self.name)
            self.blocked_reason = why


class Ticker:
    """A periodic call on a clock, at ``start + k * interval`` (a tick that is due
    while the clock is late runs once, then the schedule goes on): what
    ``task.LoopingCall`` does for the loop, without a Deferred per tick."""

    def __init__(self, clock, fn, interval):
        self.clock, self.fn, self.interval = clock, fn, float(interval)
        self.running = False
        self.call = None
        self.start_t = self.k = None

    def start(self, now=False):
        self.running = True
        self.start_t, self.k = self.clock.seconds(), 0
        if now:
            self.fn()
        if self.running:
            self._next()

    def _next(self):
        t = self.clock.seconds()
        self.k = max(self.k + 1, int((t - self.start_t) // self.interval) + 1)
        self.call = self.clock.callLater(self.start_t + self.k * self.interval - t, self._run)

    def _run(self):
        self.call = None
        self.fn()
        if self.running:
            self._next()

    def stop(self):
        self.running = False
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None


def _sync_run(store):
    """The store hook's default: ``fn(store, *args)`` at once on the caller's thread."""
    def run(fn, *args):
        return defer.maybeDeferred(fn, store, *args)
    return run


class Dialer:
    """One campaign's dialer loop, composed of its parts: the agent desk
    (``dialer.desk.AgentDesk``), call routing (``dialer.routing.CallRouter``), record
    keeping (``dialer.records.RecordKeeper``) and dial planning (``DialPlanner``).

    ``pool`` is a ``dialer.sip.pool.WorkerPool`` whose ``on_event`` is this object's
    ``on_event``; ``route(number)`` gives the SIP URI to dial a number through the
    campaign's trunk. ``run(fn, *args) -> Deferred`` runs ``fn(store, *args)`` on the
    store's thread (default: at once, on the caller's); after construction every
    store access of the loop goes through it. Without a store (the simulator) give
    the campaign and ``account`` as rows (dicts) and a lead source ``leads``
    (``claim(n, now, consumer, live_numbers) -> Deferred [(row, verdict)]``, where
    ``live_numbers()`` gives the numbers on a call now;
    ``release(ids, now)``)."""

    def __init__(self, reactor, store, campaign, pool, route, tick=0.5, cps=10.0, ring_timeout_s=15,
                 wrap_limit_s=30.0, greeting=None, policy=None, consumer="dialer-1", message_s=6.0,
                 record_dir=None, journal=None, registrar=None, brake=None, gate=None, sessions=None,
                 login_guard=None, verify=None, node="local", run=None, account=None, leads=None,
                 connect_window_ms=CONNECT_WINDOW_MS, hopper=None, pacing=None, read=None, credit=None):
        self.reactor, self.store, self.pool, self.route = reactor, store, pool, route
        self.node = node  # which dialer service placed a call (kept with its open-call row)
        self.run = run if run is not None else _sync_run(store)
        # reads of what other processes write (an agent's user at login), which need
        # not wait for this loop's writes (``dialer.journal.Journal.read``)
        self.read = read if read is not None else self.run
        # every write of the loop goes through the journal (never lost, never blocking)
        self.journal = journal if journal is not None else DirectWrites(store)
        # the campaign's SIP trunk (dialer.trunks.TrunkRegistrar: registration, room,
        # dialing through it), or None: ``route`` gives the URI (the demo's carriers)
        self.registrar = registrar
        self.trunk = registrar.trunk if registrar is not None else None
        self.brake = brake or CongestionBrake()
        if leads is None:
            hopper = hopper if hopper is not None else Hopper(store, campaign)
            self.campaign = hopper.campaign
        else:
            self.campaign = campaign
        self.cid = self.campaign["id"]
        if account is None:
            account = store.query_one("SELECT * FROM accounts WHERE id = ?", (self.campaign["account_id"],))
        self.account = account
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
        # the service's balance guard (``dialer.credit.CreditGuard``): reservations
        # against the account's balance, shared by its campaigns; None: no guard
        self.credit = credit
        if credit is not None:
            credit.track(self.account_id)
        sessions = sessions if sessions is not None else AgentSessions()
        login_guard = login_guard if login_guard is not None else LoginGuard()
        # the PIN check (scrypt, tens of ms) never runs on the reactor thread
        verify = verify or (lambda pin, stored: threads.deferToThreadPool(
            reactor, reactor.getThreadPool(), verify_pin, pin, stored))
        # the campaign's rule set: abandon cap and window (with the CDRs' counts), ring
        # minima; ``pacing`` and ``hopper`` (with ``account``) as the service reads them
        # on the store thread (``dialer.service.campaign_setup``), so nothing here reads
        self.pacing = pacing if pacing is not None else pacing_rules(store, self.campaign, self.now())
        if leads is None:
            # the ring minima of rule-set versions first met while running are read
            # with the claim that brings them, on the store's thread
            leads = HopperLeads(hopper, self.run, self.pacing)
        self.leads = leads
        self.policy = policy or policy_for(self.campaign, self.pacing)
        self.floor = AgentFloor(wrap_limit_s=wrap_limit_s)
        self.tick_s, self.cps, self.ring_timeout_s = tick, float(cps), ring_timeout_s
        self.connect_window_ms = connect_window_ms
        # the campaign's message is kept under the store's files directory (relative path)
        stored = self.campaign.get("greeting") if isinstance(self.campaign, dict) else self.campaign["greeting"]
        self.greeting = greeting or (str((store.files_dir / stored).resolve()) if stored and store is not None
                                     else None)
        self.message_s = message_s
        self.record_dir = record_dir  # connected calls are recorded there (WAV), referenced by the CDR
        self.consumer = consumer
        self.stats = Stats(self.pacing.window(), clock=reactor.seconds)
        name = self.campaign["name"]
        self.records = RecordKeeper(reactor, self.journal, self.account_id, self.cid, node=node, consumer=consumer)
        self.desk = AgentDesk(reactor, pool, self.floor, self.records, sessions, login_guard, verify, self.read,
                              self.account, self.campaign, owner=self, on_login=self._agent_freed,
                              on_gone=self._agent_gone)
        self.router = CallRouter(reactor, pool, self.floor, self.records, self.stats, self.policy, self.gate,
                                 self.brake, self.cid, self.desk.agent_key, greeting=self.greeting,
                                 message_s=message_s, record_dir=record_dir, on_change=self.kick, name=name,
                                 credit=credit)
        self.planner = DialPlanner(reactor, self.policy, self.gate, self.brake, leads, self.account_id,
                                   self.trunk_key, self._observed, lambda *a: self._dial(*a), self.router.live_numbers,
                                   registrar=registrar, consumer=consumer, name=name,
                                   running=lambda: self.loop is None or self.loop.running, credit=credit)
        self.loop = None
        self._kick = None  # the coalesced immediate decision, when one is scheduled
        self.next_poll = 0.0  # agent commands (CLI, web console) are read once a second
        self.polling = False

    # -- the parts' state, by the names the service, the demo and the tests use ------
    sessions = property(lambda self: self.desk.sessions)
    login_guard = property(lambda self: self.desk.login_guard)
    verify = property(lambda self: self.desk.verify)
    checking = property(lambda self: self.desk.checking)
    confirmed = property(lambda self: self.desk.confirmed)
    pending_login = property(lambda self: self.desk.pending_login)
    agent_legs = property(lambda self: self.desk.agent_legs)
    agent_of_user = property(lambda self: self.desk.agent_of_user)
    legs = property(lambda self: self.router.legs)
    waiting = property(lambda self: self.router.waiting)
    timers = property(lambda self: self.router.timers)
    tie_of = property(lambda self: self.router.tie_of)
    reserved = property(lambda self: self.router.reserved)
    handles = property(lambda self: self.router.handles)
    opted_out = property(lambda self: self.router.opted_out)
    pending_cdr = property(lambda self: self.records.held)
    finished = property(lambda self: self.records.finished)
    written = property(lambda self: self.records.written)
    blocked_reason = property(lambda self: self.planner.blocked_reason)

    @property
    def trunk_key(self):
        return self._trunk_key

    @trunk_key.setter
    def trunk_key(self, key):  # (tests put two loops on one trunk)
        self._trunk_key = key
        if getattr(self, "planner", None) is not None:
            self.planner.trunk_key = key

    # -- time -------------------------------------------------------------------------
    def now(self):
        return _dt.datetime.fromtimestamp(self.reactor.seconds(), _dt.timezone.utc)

    def ms(self):
        return int(round(self.reactor.seconds() * 1000))

    # -- running ----------------------------------------------------------------------
    def start(self):
        self.planner.stopped, self.planner.held_back = False, True
        self.loop = Ticker(self.reactor, self.tick, self.tick_s)
        self.loop.start(now=False)

    def stop(self):
        if self.loop and self.loop.running:
            self.loop.stop()
        self.planner.stopped = True
        if self._kick is not None and self._kick.active():
            self._kick.cancel()
        self._kick = None
        for key in list(self.legs):
            self.pool.hangup(key)

    def state(self):
        """What the pacing policy observes now."""
        return PacingState(self.reactor.seconds(), *self._observed())

    def _observed(self):
        n = self.floor.tally(self.cid)
        on_call, wrap_up, ready = n["on_call"], n["wrap_up"], n["ready"]
        # lines are the account's (every leg of every campaign holds one in the gate)
        return (ready + on_call + wrap_up, ready, on_call + wrap_up, on_call, self.router.dialing,
                len(self.router.waiting), self.lines, self.gate.in_use(self.account_id))

    def tick_floor(self):
        """End the wrap-ups past their limit."""
        if not self.floor.wrap_ups:
            return
        for ev in self.floor.tick(self.now()):
            self._wrap_ended(ev)

    def tick(self):
        self.tick_floor()
        t = self.reactor.seconds()
        if t >= self.next_poll:
            self.next_poll = t + 1.0
            self.poll_commands()
        self.planner.plan(periodic=True)

    def kick(self):
        """Something changed on the floor (an agent freed or logged in, a dial ended, an
        answer): one decision at once (coalesced), besides the periodic tick."""
        if self._kick is None and self.loop is not None and self.loop.running:
            self._kick = self.reactor.callLater(0, self._kicked)

    def _kicked(self):
        self._kick = None
        self.planner.plan()

    def _trunk_room(self, t):
        return self.planner.room(t)

    def _live_numbers(self):
        return self.router.live_numbers()

    def _hangup(self, key, by):
        self.router.hangup(key, by)

    def preview_dial(self, uid):
        """Preview mode: the agent asks for the next lead; it is checked by the rules
        engine now and dialled for that agent. Returns the result text, or a Deferred
        of it once the lead has been claimed."""
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
        if self.credit is not None and self.credit.room(self.account_id) < 1:
            return f"refused: {self.credit.blocked(self.account_id) or 'the balance of the account is not read yet'}"

        def claimed(picked):
            if not picked:
                return "refused: no lead of the campaign may be called now"
            row, verdict = picked[0]
            if (self.floor.state_of(uid) != "ready" or uid in self.reserved.values()
                    or self._trunk_room(self.reactor.seconds()) < 1):
                self.leads.release([row["id"]], self.now())
                return "refused: the agent or the trunk is no longer free; try again"
            why = self.credit.refusal(self.account_id, row["phone"], self.reactor.seconds()) \
                if self.credit is not None else None
            if why is not None:
                self.leads.release([row["id"]], self.now())
                return f"refused: {why.text}"
            key = self._dial(row, verdict, self.now())
            self.reserved[key] = uid
            return f"done: dialling {row['phone']} (lead {row['id']})"

        def failed(f):
            f.trap(DialerError)
            return f"refused: {f.value}"
        d = self.leads.claim(1, self.now(), self.consumer, self._live_numbers)
        return d.addCallbacks(claimed, failed)

    def _dial(self, row, verdict, now):
        # a globally unique, time-ordered id: a restart never reuses an earlier call's
        key = uuid7(self.ms())
        # the abandon window's state as the call is placed (kept with its verdict: evidence)
        verdict = at_dial(verdict, self.stats.window, self.reactor.seconds(), self.pacing)
        caller_id = self.campaign["caller_id"] or (self.trunk.caller_id if self.trunk is not None else None)
        leg = CallLeg(key, row["phone"], now, account_id=self.campaign["account_id"], campaign_id=self.cid,
                      lead_id=row["id"], caller_id=caller_id,
                      trunk=self.trunk.name if self.trunk is not None else "default",
                      verdict=verdict, ring_timeout_s=self.pacing.ring_timeout_s(self.ring_timeout_s, verdict),
                      connect_window_ms=self.connect_window_ms)
        self.gate.take(key, self.account_id, self.trunk_key, self.reactor.seconds())
        if self.credit is not None:  # its first slice, against the account's balance
            try:
                self.credit.reserve(key, self.account_id, row["phone"], self.reactor.seconds(),
                                    hangup=lambda: self.router.hangup(key, "balance"))
            except Exception:
                self.gate.release(key)
                raise
        self.router.add(leg)
        self.stats.dials += 1
        # journaled before the INVITE leaves: a crash from here on still ends in a CDR
        self.records.call_open(leg, now)
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
                self.desk.incoming(ev)
            elif self.desk.owns(key):
                self.desk.on_event(key, ev)
            elif key in self.router.legs:
                self.router.on_event(key, ev)
            elif name == "recording_done" and self.records.recording(key, ev, self.ms()):
                pass
            elif name == "worker_died":
                log.warn("SIP worker {w} died ({why}): its {n} call(s) recorded as failed", w=ev.get("worker"),
                         why=ev.get("why"), n=ev.get("calls") or 0)
            elif name == "refused":
                log.warn("agent phone {who} refused on port {w}: {why}", who=ev.get("to_user"), w=ev.get("worker"),
                         why=ev.get("reason"))
        except DialerError as e:  # one clear line per fault; the loop goes on
            log.warn("call {key}: {err}", key=key, err=str(e))

    def owns(self, key):
        """Whether an event about ``key`` (a call, its tie leg, an agent phone) is this loop's."""
        k = key[4:] if key.startswith("tie-") else key
        return self.router.owns(k) or self.records.owns(k) or self.desk.owns(key)

    def end_session(self, uid, reason):
        """The user logged in on another phone: this session ends now."""
        self.desk.end_session(uid, reason)

    def _agent_freed(self, uid=None):
        self.router.serve_waiting()
        self.kick()

    def _agent_gone(self, uid, key):
        """The agent's phone hung up: a call in progress ends too and their wrap-up
        closes with "other" (the desk then logs the agent out)."""
        now = self.now()
        self.router.agent_left(uid)
        if self.floor.state_of(uid) == "on_call":
            self.records.agent_events([self.floor.call_ended(uid, now)])
        if self.floor.state_of(uid) == "wrap_up":
            self.records.agent_events([self.floor.dispose(uid, "other", now, reason="phone hung up")])
            self.router.wrap_ended(uid, "other")
        self.kick()

    # -- commands (CLI, web console) -------------------------------------------------
    def poll_commands(self):
        """Carry out the agent commands queued for this dialer's agents (one dialer
        claims each, through the store hook; one poll at a time); the result goes
        back through the journal."""
        if not self.agent_of_user or self.polling or self.store is None:
            return
        self.polling = True

        def done(rows):
            self.polling = False
            for row in rows:
                result = defer.maybeDeferred(self.command, row["user_id"], row["command"], row["disposition"],
                                             row["reason"])
                result.addCallback(lambda text, cid=row["id"]: self.records.command_done(cid, text))
                result.addErrback(lambda f: log.failure("agent command", f))

        def failed(f):  # the next poll tries again
            self.polling = False
            f.trap(StoreError)
            log.debug("agent commands not read: {err}", err=f.getErrorMessage())
        d = self.run(_take_commands, sorted(self.agent_of_user), self.now())
        d.addCallbacks(done, failed)
        d.addErrback(lambda f: log.failure("agent commands", f))

    def command(self, uid, command, disposition=None, reason=None):
        """One agent command; returns its result text ("done: ..." or "refused: ..."),
        or a Deferred of it (a preview dial)."""
        now = self.now()
        try:
            if command in ("dispose", "dispose-pause"):
                self.dispose(uid, disposition, pause=command == "dispose-pause")
                return f"done: wrap-up ended with {disposition}"
            if command == "pause":
                self.records.agent_events([self.floor.pause(uid, now, reason=reason)])
                return "done: paused"
            if command == "ready":
                self.records.agent_events([self.floor.resume(uid, now)])
                self._agent_freed(uid)
                return "done: ready"
            if command == "dial":
                return self.preview_dial(uid)
            if command == "logout":
                return self.desk.logout(uid)
        except DialerError as e:
            return f"refused: {e}"
        return f"refused: unknown command {command!r}"

    # -- wrap-up ----------------------------------------------------------------------
    def dispose(self, uid, disposition, pause=False):
        """An agent ends wrap-up with a disposition (CLI / web console)."""
        ev = self.floor.dispose(uid, disposition, self.now(), pause=pause)
        self.records.agent_events([ev])
        self.router.wrap_ended(uid, disposition)
        self._agent_freed(uid)

    def close_wrapups(self, reason="dialer stopped"):
        """End every wrap-up now (the dialer is stopping): the calls' records are
        written without a disposition."""
        now = self.now()
        for uid in list(self.pending_cdr):
            if self.floor.state_of(uid) == "wrap_up":
                self._wrap_ended(self.floor.end_wrap(uid, now, reason))
            else:
                self.router.wrap_ended(uid, None)

    def _wrap_ended(self, ev):
        self.records.agent_events([ev])
        self.router.wrap_ended(ev.user_id, None)
        self._agent_freed(ev.user_id)


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


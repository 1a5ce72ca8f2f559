"""A simulated calling floor around the real dialer loop: ``simulate`` runs
``dialer.engine.Dialer`` (its pacing policy, dial planning, call routing, agent desk
and record keeping) on a virtual clock (``HeapClock``), with a simulated SIP worker
pool (``SimPool``: callee outcomes from the scenario), synthetic leads
(``SimLeads``), a team that logs in through the Dialer's login path and disposes
through ``Dialer.dispose`` (``_Floor``), and a journal that counts what the Dialer
wrote (``RecordSink``). The figures come from the Dialer's records: a live answer
is a call answered by a person, abandoned when no agent was bridged within the
connect window (the CDR's ``abandoned``).

Callee outcomes use common random numbers: lead ``i`` has the same uniforms (is it a
live answer, how long it rings, how long the talk and wrap-up last) under every
policy at a given seed, so policy comparisons are paired.
"""

import heapq
import json
import math
import statistics
from dataclasses import dataclass, field

import numpy as np

from twisted.internet import defer

from core.errors import InputError

from ..calls import RING_TIMEOUT_MAX_S
from ..abandons import is_live
from ..engine import Dialer

_NORMAL = statistics.NormalDist()


# ---------------------------------------------------------------------------------
# distributions, sampled by inverse CDF from given uniforms (so they stay coupled)
# ---------------------------------------------------------------------------------

def make_dist(spec, what="distribution"):
    """A sampler u -> seconds from a JSON spec: exponential{mean}, uniform{low,high},
    lognormal{mean,cv}, constant{value}, empirical{values}, mixture{parts: [{weight, dist}]}."""
    if isinstance(spec, (int, float)):
        return lambda u, v=float(spec): v
    if not isinstance(spec, dict) or "type" not in spec:
        raise InputError(f"{what}: give a mapping with a 'type' (exponential, uniform, lognormal, constant, empirical, mixture)")
    t = spec["type"]
    try:
        if t == "exponential":
            mean = float(spec["mean"])
            return lambda u: -mean * math.log(1.0 - u)
        if t == "uniform":
            lo, hi = float(spec["low"]), float(spec["high"])
            return lambda u: lo + (hi - lo) * u
        if t == "constant":
            v = float(spec["value"])
            return lambda u: v
        if t == "lognormal":
            mean, cv = float(spec["mean"]), float(spec["cv"])
            sigma = math.sqrt(math.log(1 + cv * cv))
            mu = math.log(mean) - sigma * sigma / 2
            return lambda u: math.exp(mu + sigma * _NORMAL.inv_cdf(min(max(u, 1e-12), 1 - 1e-12)))
        if t == "empirical":
            vals = sorted(float(x) for x in spec["values"])
            if not vals:
                raise ValueError("no values")
            return lambda u: vals[min(int(u * len(vals)), len(vals) - 1)]
        if t == "mixture":
            parts = [(float(p["weight"]), make_dist(p["dist"], what)) for p in spec["parts"]]
            total = sum(w for w, _ in parts)
            cum, acc = [], 0.0
            for w, d in parts:
                acc += w / total
                cum.append((acc, w / total, d))

            def sample(u):
                lo = 0.0
                for edge, w, d in cum:
                    if u <= edge or edge == cum[-1][0]:
                        return d(min((u - lo) / w, 1 - 1e-12))
                    lo = edge
            return sample
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{what}: bad {t} parameters ({e})") from None
    raise InputError(f"{what}: unknown type {t!r}")


def _schedule(spec, what):
    """A constant, or a list of [t_seconds, value] steps -> value at time t."""
    if isinstance(spec, (int, float)):
        return lambda t, v=spec: v
    try:
        steps = sorted((float(a), float(b)) for a, b in spec)
    except (TypeError, ValueError):
        raise InputError(f"{what}: a number or a list of [seconds, value] steps") from None
    if not steps:
        raise InputError(f"{what}: empty")

    def at(t):
        v = steps[0][1]
        for a, b in steps:
            if a <= t:
                v = b
            else:
                break
        return v
    return at


@dataclass
class Scenario:
    """What the simulator runs (see ``load_scenario`` for the JSON form)."""

    agents: object = 20  # number or [[t, n], ...]
    p_live: object = 0.3  # number or [[t, p], ...]
    live_ring: dict = field(default_factory=lambda: {"type": "exponential", "mean": 20})
    nonlive: dict = field(default_factory=lambda: {"type": "exponential", "mean": 20})
    talk: dict = field(default_factory=lambda: {"type": "exponential", "mean": 210})
    wrap: object = 0.0
    handle_scale: object = 1.0  # number or [[t, x], ...]: talk and wrap times x this from t on
    connect_window: float = 0.0  # seconds a live answer may wait for an agent (2 for the 2-second rule)
    abandon_cap: float = 0.03
    abandon_window_hours: float = 720.0
    shift_hours: float = 8.0
    lines: int = 10_000
    seed: int = 1
    name: str = "scenario"


def load_scenario(path_or_dict):
    if isinstance(path_or_dict, dict):
        data = path_or_dict
    else:
        try:
            with open(path_or_dict, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            raise InputError(f"scenario file not found: {path_or_dict}") from None
        except json.JSONDecodeError as e:
            raise InputError(f"scenario {path_or_dict} is not JSON: line {e.lineno}: {e.msg}") from None
    known = set(Scenario.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"scenario: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    sc = Scenario(**data)
    # validate now, not mid-run
    for name in ("live_ring", "nonlive", "talk", "wrap"):
        make_dist(getattr(sc, name), name)
    _schedule(sc.agents, "agents")
    _schedule(sc.p_live, "p_live")
    _schedule(sc.handle_scale, "handle_scale")
    factors = [x for _, x in sc.handle_scale] if isinstance(sc.handle_scale, list) else [sc.handle_scale]
    if any(float(x) <= 0 for x in factors):
        raise InputError("handle_scale: the factors must be positive")
    return sc


VALIDATION = {"live_ring": {"type": "exponential", "mean": 20}, "nonlive": {"type": "exponential", "mean": 20},
              "talk": {"type": "exponential", "mean": 210}, "wrap": 0.0, "connect_window": 0.0}
REALISTIC = {"live_ring": {"type": "uniform", "low": 4, "high": 12},
             "nonlive": {"type": "mixture", "parts": [{"weight": 0.75, "dist": {"type": "constant", "value": 20}},
                                                      {"weight": 0.25, "dist": {"type": "constant", "value": 4}}]},
             "talk": {"type": "lognormal", "mean": 180, "cv": 1.0}, "wrap": {"type": "uniform", "low": 20, "high": 40},
             "connect_window": 2.0}


class _Leads:
    """Per-lead uniforms, in blocks, from (seed, block): the same for every policy."""

    BLOCK = 4096

    def __init__(self, seed):
        self.seed = seed
        self.blocks = {}

    def __getitem__(self, i):
        b, k = divmod(i, self.BLOCK)
        blk = self.blocks.get(b)
        if blk is None:
            blk = self.blocks[b] = np.random.default_rng([self.seed, b]).random((self.BLOCK, 5)).tolist()
        return blk[k]


@dataclass
class Result:
    policy: str
    seed: int
    hours: float
    occupancy: float
    talk_minutes_per_agent_hour: float
    abandon_rate: float
    worst_window_abandon_rate: float
    live_answers: int
    abandons: int
    dials: int
    dials_per_agent_hour: float
    leads_consumed: int
    mean_agent_wait_s: float

    def as_dict(self):
        return dict(self.__dict__)


# ---------------------------------------------------------------------------------
# the simulated world around the real Dialer
# ---------------------------------------------------------------------------------

class _Call:
    """A scheduled call of ``HeapClock`` (``IDelayedCall``)."""

    __slots__ = ("time", "fn", "args", "kw", "cancelled", "called", "clock")

    def __init__(self, clock, time, fn, args, kw):
        self.clock, self.time, self.fn, self.args, self.kw = clock, time, fn, args, kw
        self.cancelled = self.called = False

    def getTime(self):
        return self.time

    def active(self):
        return not (self.cancelled or self.called)

    def _check(self):
        if not self.active():
            from twisted.internet.error import AlreadyCalled, AlreadyCancelled
            raise AlreadyCancelled() if self.cancelled else AlreadyCalled()

    def cancel(self):
        self._check()
        self.cancelled = True

    def reset(self, seconds_later):
        self._check()
        self.clock._push(self, self.clock.now + max(0.0, seconds_later))

    def delay(self, seconds):
        self._check()
        self.clock._push(self, self.time + seconds)


class HeapClock:
    """A virtual ``IReactorTime`` on a heap (``task.Clock`` re-sorts its whole list of
    calls at every ``callLater``): ``callLater``, ``seconds``, ``getDelayedCalls``, and
    ``advance``/``run_until`` to move time. Calls at one instant run in the order they
    were scheduled."""

    def __init__(self, start=0.0):
        self.now = float(start)
        self.heap = []  # (time, seq, call); a moved call leaves a stale entry behind
        self.seq = 0

    def seconds(self):
        return self.now

    def _push(self, call, time):
        call.time = time
        self.seq += 1
        heapq.heappush(self.heap, (time, self.seq, call))

    def callLater(self, delay, fn, *args, **kw):
        call = _Call(self, 0.0, fn, args, kw)
        self._push(call, self.now + (delay if delay > 0 else 0.0))
        return call

    def getDelayedCalls(self):
        return [c for t, _, c in self.heap if c.active() and c.time == t]

    def run_until(self, end):
        """Run every call due up to ``end`` (in time order), then stand at ``end``."""
        heap = self.heap
        pop = heapq.heappop
        while heap and heap[0][0] <= end:
            t, _, call = pop(heap)
            if call.cancelled or call.called or call.time != t:
                continue
            self.now = t
            call.called = True
            call.fn(*call.args, **call.kw)
        if end > self.now:
            self.now = end

    def advance(self, seconds):
        self.run_until(self.now + seconds)


_PHONE_BASE = 10_000_000_000  # lead i is "+1000000000i": an E.164-looking number the loop can parse


class SimLeads:
    """The lead source of a simulated campaign: lead ``i`` is the ``i``-th synthetic
    number; released leads are handed out again first (same lead, same callee)."""

    def __init__(self):
        self.next = 0
        self.back = []

    def claim(self, n, now, consumer, live_numbers):
        out = []
        while len(out) < n and self.back:
            out.append(self.back.pop())
        while len(out) < n:
            out.append(self.next)
            self.next += 1
        return defer.succeed([({"id": i + 1, "phone": f"+{_PHONE_BASE + i}"}, None) for i in out])

    def release(self, lead_ids, now):
        self.back.extend(sorted((i - 1 for i in lead_ids), reverse=True))
        return defer.succeed(None)


class SimPool:
    """What the Dialer calls on a SIP worker pool (dial, hangup, connect, play, record),
    answered with the worker events it expects (``dialer.sip.protocol``). The callee
    of lead ``i`` answers (a person, with probability p_live at the dial) or ends
    unanswered after the ring time the scenario draws from the lead's uniforms; an
    answered callee talks to the agent it is bridged to for the talk time, or waits in
    silence until the loop hangs up. The agent of a call that ended disposes at the
    end of the wrap time, through ``Dialer.dispose``."""

    def __init__(self, clock, leads_u, p_at, ring_d, nonlive_d, talk_d, wrap_d, scale_at=lambda t: 1.0):
        self.clock, self.u, self.p_at = clock, leads_u, p_at
        self.ring_d, self.nonlive_d, self.talk_d, self.wrap_d = ring_d, nonlive_d, talk_d, wrap_d
        self.scale_at = scale_at  # handle times (talk, wrap) x scale_at(t)
        self.dialer = None
        self.calls = {}  # key -> [lead index, started ms, answered ms or None, pending IDelayedCall, agent uid]
        self.agents = {}  # agent leg key -> user id
        self.on_free = None  # (uid) -> None: an agent disposed (the floor's schedule may retire them)

    def _ms(self):
        return int(round(self.clock.now * 1000))

    def dial(self, key, uri, timeout_s=None, caller_id=None, **fields):
        i = int(uri[1:]) - _PHONE_BASE
        u = self.u[i]
        t = self.clock.now
        call = [i, self._ms(), None, None, None]
        self.calls[key] = call
        if u[0] < self.p_at(t):
            d = self.ring_d(u[1])
            if timeout_s is None or d < timeout_s:
                call[3] = self.clock.callLater(d, self._answer, key)
                return 0
        else:
            d = self.nonlive_d(u[1])
            if timeout_s is None or d < timeout_s:
                call[3] = self.clock.callLater(d, self._end, key, 480, "Temporarily Unavailable", "remote")
                return 0
        call[3] = self.clock.callLater(timeout_s, self._end, key, 487, "Request Terminated", "ring timeout")
        return 0

    def _answer(self, key):
        call = self.calls[key]
        call[2] = self._ms()
        call[3] = None
        self.dialer.on_event({"ev": "answered", "key": key, "code": 200})

    def _end(self, key, code, reason, cause):
        call = self.calls.pop(key, None)
        if call is None:
            return
        i, started, answered, _, uid = call
        self.dialer.on_event({"ev": "ended", "key": key, "code": code, "reason": reason,
                              "answered": answered is not None, "started_ms": started, "answered_ms": answered,
                              "ended_ms": self._ms(), "cause": cause})
        if uid is not None and self.dialer.floor.state_of(uid) == "wrap_up":
            wrap = self.wrap_d(self.u[i][3]) * self.scale_at(self.clock.seconds())
            if wrap > 0:
                self.clock.callLater(wrap, self._dispose, uid)
            else:
                self._dispose(uid)

    def _dispose(self, uid):
        if self.dialer.floor.state_of(uid) == "wrap_up":
            self.on_free(uid)

    def connect(self, customer, agent, tie_key=None):
        call = self.calls[customer]
        call[4] = self.agents[agent]
        talk = self.talk_d(self.u[call[0]][2]) * self.scale_at(self.clock.seconds())
        call[3] = self.clock.callLater(talk, self._end, customer, 200, "OK", "remote")
        return "bridge"

    def hangup(self, key, code=None):
        if key in self.agents:
            uid = self.agents.pop(key)
            self.clock.callLater(0, self.dialer.on_event, {"ev": "ended", "key": key, "code": 200, "reason": "OK",
                                                           "answered": True, "cause": "hangup", "user": uid})
            return
        call = self.calls.get(key)
        if call is None:
            raise KeyError(f"no call {key!r}")
        if call[3] is not None and call[3].active():
            call[3].cancel()
        answered = call[2] is not None
        call[3] = self.clock.callLater(0, self._end, key, 200 if answered else 487,
                                       "OK" if answered else "Request Terminated", "hangup")

    def play(self, key, wav, loop=False):
        pass

    def record(self, key, path):
        pass


class RecordSink:
    """The journal of a simulated shift: nothing is stored; what the Dialer wrote is
    counted. From its CDRs (and, at the end, the calls still live): live answers and
    abandons; from its agent events: agent time per state and how long agents waited
    ready before each call."""

    def __init__(self, clock, record=None):
        self.clock, self.record = clock, record
        self.kinds = {}
        self.live = self.abandons = 0
        self.live_log = []  # (answer instant s, abandoned?)
        self.state = {}  # user id -> (state, since s)
        self.counts = {"ready": 0, "on_call": 0, "wrap_up": 0}
        self.last = 0.0
        self.agents_area = self.busy_area = self.talk_area = 0.0
        self.waits = []
        self.backlog = 0

    def put(self, kind, payload):
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if self.record is not None:
            self.record(kind, payload)
        if kind == "cdr":
            cdr = payload["cdr"]
            if is_live(cdr):  # the product's one definition (dialer.abandons)
                self.answer(cdr["answered_ms"], cdr["abandoned"])
        elif kind == "agent_events":
            self.advance()
            t = self.clock.now
            counts = self.counts
            for row in payload["events"]:
                prev, new, uid = row["prev_state"], row["state"], row["user_id"]
                if prev in counts:
                    counts[prev] -= 1
                if new in counts:
                    counts[new] += 1
                if prev == "ready" and new == "on_call":
                    self.waits.append(t - self.state[uid][1])
                self.state[uid] = (new, t)

    def answer(self, answered_ms, abandoned):
        self.live += 1
        self.abandons += bool(abandoned)
        self.live_log.append((answered_ms / 1000.0, bool(abandoned)))

    def advance(self):
        t = self.clock.now
        dt = t - self.last
        if dt > 0:
            c = self.counts
            busy = c["on_call"] + c["wrap_up"]
            self.busy_area += busy * dt
            self.agents_area += (busy + c["ready"]) * dt
            self.talk_area += c["on_call"] * dt
            self.last = t


class _Floor:
    """The simulated team: agents log in through the Dialer's login path (after the PIN
    step: the phone's leg, a right PIN, the ACK), follow the scenario's schedule (more
    agents log in; fewer: the free ones pause and log out, the busy ones when their
    wrap-up ends) and dispose at the end of their wrap time."""

    def __init__(self, dialer, pool):
        self.d, self.pool = dialer, pool
        self.on = []  # user ids logged in (or logging in), oldest first
        self.retiring = set()
        self.next_uid = 1
        pool.on_free = self.freed

    def set(self, target):
        have = len(self.on) - len(self.retiring)
        while have < target and self.retiring:
            self.retiring.discard(next(u for u in self.on if u in self.retiring))
            have += 1
        while have < target:
            self.login()
            have += 1
        if have > target:
            floor = self.d.floor
            # the free ones first, the most recent first; then the busy ones at their next wrap-up end
            free = [u for u in reversed(self.on) if u not in self.retiring and floor.state_of(u) == "ready"]
            busy = [u for u in reversed(self.on) if u not in self.retiring and floor.state_of(u) != "ready"]
            for uid in (free + busy)[:have - target]:
                if floor.state_of(uid) == "ready":
                    self.leave(uid, "pause")
                else:
                    self.retiring.add(uid)

    def login(self):
        uid = self.next_uid
        self.next_uid += 1
        key = f"agent-{uid}"
        self.pool.agents[key] = uid
        self.on.append(uid)
        self.d.desk.pin_accepted(key, {"id": uid, "name": f"agent{uid}"}, "sim")
        self.d.on_event({"ev": "confirmed", "key": key})

    def leave(self, uid, how):
        if how == "pause":
            self.d.command(uid, "pause", reason="end of shift")
        self.d.command(uid, "logout")
        self.on.remove(uid)
        self.retiring.discard(uid)

    def freed(self, uid):
        if uid in self.retiring:
            self.d.dispose(uid, "sale", pause=True)
            self.leave(uid, "paused")
        else:
            self.d.dispose(uid, "sale")


def simulate(scenario, policy, seed=None, record=None):
    """Run one shift of the real ``dialer.engine.Dialer`` (its pacing policy ``policy``)
    on a virtual clock, against simulated callees and agents. Returns a Result.
    ``record(kind, payload)``, if given, sees every journal write of the Dialer."""
    sc = scenario
    seed = sc.seed if seed is None else seed
    agents_at = _schedule(sc.agents, "agents")
    p_at = _schedule(sc.p_live, "p_live")
    end = sc.shift_hours * 3600.0
    window_ms = int(round(max(0.0, float(sc.connect_window)) * 1000)) or 1  # no window: the shortest the leg takes
    clock = HeapClock()
    leads = SimLeads()
    pool = SimPool(clock, _Leads(seed), p_at, make_dist(sc.live_ring), make_dist(sc.nonlive), make_dist(sc.talk),
                   make_dist(sc.wrap), _schedule(sc.handle_scale, "handle_scale"))
    sink = RecordSink(clock, record)
    campaign = {"id": 1, "account_id": 1, "name": sc.name, "dial_mode": policy.name, "caller_id": "+12125550100",
                "greeting": None, "abandon_target": sc.abandon_cap, "power_ratio": None}
    account = {"id": 1, "name": "sim", "line_capacity": sc.lines}
    # the scenario's ring times are the callees' (a ring timeout of the legal maximum
    # cuts none of them short), its lines the account's; no calls-per-second cap
    d = Dialer(clock, None, campaign, pool, route=str, tick=0.5, cps=1e9, ring_timeout_s=RING_TIMEOUT_MAX_S,
               wrap_limit_s=None, policy=policy, journal=sink, account=account, leads=leads,
               connect_window_ms=window_ms, consumer="sim")
    pool.dialer = d
    team = _Floor(d, pool)
    d.start()
    team.set(int(agents_at(0.0)))
    for t_change, _ in (sc.agents if isinstance(sc.agents, list) else []):
        if 0 < float(t_change) < end:
            clock.callLater(float(t_change), lambda t=float(t_change): team.set(int(agents_at(t))))
    clock.run_until(end)
    sink.advance()
    d.loop.stop()
    # calls answered and still going at the end: live answers (abandoned if in the message)
    for leg in d.legs.values():
        if leg.answered_ms is not None:
            sink.answer(leg.answered_ms, leg.state == "safe_harbor")
    for leg in d.pending_cdr.values():
        sink.answer(leg.answered_ms, leg.abandoned)
    hours = end / 3600.0
    agent_hours = sink.agents_area / 3600.0
    live, abandons = sink.live, sink.abandons
    worst = _worst_window(sink.live_log, sc.abandon_window_hours * 3600.0, abandons, live)
    dials = sink.kinds.get("call_open", 0)
    return Result(
        policy=policy.name, seed=seed, hours=hours,
        occupancy=sink.busy_area / sink.agents_area if sink.agents_area else 0.0,
        talk_minutes_per_agent_hour=(sink.talk_area / 60.0) / agent_hours if agent_hours else 0.0,
        abandon_rate=abandons / live if live else 0.0, worst_window_abandon_rate=worst,
        live_answers=live, abandons=abandons, dials=dials,
        dials_per_agent_hour=dials / agent_hours if agent_hours else 0.0, leads_consumed=leads.next,
        mean_agent_wait_s=statistics.fmean(sink.waits) if sink.waits else 0.0,
    )


def _worst_window(log, window_s, abandons, live):
    """Worst abandon rate over any window of ``window_s`` ending at a live answer, once
    the window has seen at least 100 live answers (the whole run when it is shorter)."""
    if not log:
        return 0.0
    log = sorted(log)
    if log[-1][0] - log[0][0] <= window_s:
        return abandons / live if live else 0.0
    worst, lo, drops = 0.0, 0, 0
    for hi, (t, d) in enumerate(log):
        drops += d
        while log[lo][0] < t - window_s:
            drops -= log[lo][1]
            lo += 1
        n = hi - lo + 1
        if n >= 100:
            worst = max(worst, drops / n)
    return worst


def make_policy(name, scenario=None):
    """'progressive', 'preview', 'power:2.0', 'predictive', 'vicidial-hard',
    'vicidial-average', 'vicidial-tapered'. The scenario gives the predictive policy its
    campaign settings (abandon cap and window, connect window) and TAPERED its shift end."""
    from .policies import Power, Predictive, Preview, Progressive, Vicidial
    sc = scenario or Scenario()
    n = (name or "").strip().lower()
    if n == "progressive":
        return Progressive()
    if n == "preview":
        return Preview()
    if n == "predictive":
        return Predictive(cap=sc.abandon_cap, window_hours=sc.abandon_window_hours, connect_window=sc.connect_window)
    if n.startswith("power"):
        try:
            return Power(float(n.split(":", 1)[1]))
        except (IndexError, ValueError):
            raise InputError("power needs its ratio of at least 1: power:2.0") from None
    modes = {"vicidial-hard": "HARD_LIMIT", "vicidial-average": "AVERAGE", "vicidial-tapered": "TAPERED"}
    if n in modes:
        # TAPERED's shift end is a wall-clock HHMM far away here (the reference's "shift end far away")
        return Vicidial(modes[n])
    raise InputError(f"unknown policy {name!r} (progressive, preview, power:K, predictive, {', '.join(modes)})")


def summarise(scenario, runs):
    """Mean figures over runs of one policy, with the per-seed abandon extremes."""
    cap = scenario.abandon_cap
    return {
        "scenario": scenario.name, "policy": runs[0].policy, "seeds": len(runs),
        "occupancy": statistics.fmean(r.occupancy for r in runs),
        "talk_minutes_per_agent_hour": statistics.fmean(r.talk_minutes_per_agent_hour for r in runs),
        "abandon_rate": statistics.fmean(r.abandon_rate for r in runs),
        "worst_seed_abandon_rate": max(r.abandon_rate for r in runs),
        "worst_window_abandon_rate": max(r.worst_window_abandon_rate for r in runs),
        "seeds_within_cap": sum(1 for r in runs if r.abandon_rate <= cap),
        "dials_per_agent_hour": statistics.fmean(r.dials_per_agent_hour for r in runs),
        "leads_consumed": statistics.fmean(r.leads_consumed for r in runs),
        "mean_agent_wait_s": statistics.fmean(r.mean_agent_wait_s for r in runs),
        "runs": [r.as_dict() for r in runs],
    }


def run_seeds(scenario, policy_name, seeds):
    """Run ``seeds`` shifts (seeds scenario.seed, +1, ...) and summarise them."""
    if seeds < 1:
        raise InputError("--seeds must be at least 1")
    make_policy(policy_name, scenario)  # a bad name fails before any run
    runs = [simulate(scenario, make_policy(policy_name, scenario), scenario.seed + i) for i in range(seeds)]
    return summarise(scenario, runs)


# ---------------------------------------------------------------------------------
# the benchmark grid
# ---------------------------------------------------------------------------------

GRID_AGENTS = (5, 10, 20, 50, 100)
GRID_P = (0.15, 0.30, 0.50)
GRID_POLICIES = ("progressive", "power", "vicidial-hard", "vicidial-average", "vicidial-tapered", "predictive")
CASES = {"validation": VALIDATION, "realistic": REALISTIC}


def grid_scenario(case, agents, p):
    if case not in CASES:
        raise InputError(f"unknown case {case!r} (validation, realistic)")
    return load_scenario({**CASES[case], "agents": agents, "p_live": p, "name": f"{case}-N{agents}-p{p:g}"})


def best_power(scenario, seeds, sweep_seeds=8, lo=1.0, hi=12.0, step=0.05):
    """The power ratio k with the highest occupancy whose mean abandon rate stays within
    the cap: abandonment grows with k, so bisect on k over ``sweep_seeds`` seeds to the
    largest k within the cap (to ``step``), then run it on ``seeds`` seeds."""
    cap = scenario.abandon_cap

    def mean_abandon(k):
        return statistics.fmean(simulate(scenario, make_policy(f"power:{k:g}"), scenario.seed + i).abandon_rate
                                for i in range(sweep_seeds))
    if mean_abandon(lo) > cap:
        k = lo
    else:
        while hi - lo > step:
            mid = round((lo + hi) / 2, 4)
            if mean_abandon(mid) <= cap:
                lo = mid
            else:
                hi = mid
        k = round(lo, 2)
    out = run_seeds(scenario, f"power:{k:g}", seeds)
    out["k"] = k
    return out


def run_grid_point(case, agents, p, seeds, policies=GRID_POLICIES, power_k=None):
    """Every policy at one grid point, on the same seeds (common random numbers).
    ``power_k``: the tuned power ratio known already (no sweep; marked ``k_reused``)."""
    sc = grid_scenario(case, agents, p)
    out = {"case": case, "agents": agents, "p": p, "seeds": seeds, "policies": {}}
    for name in policies:
        if name == "power" and power_k is not None:
            res = run_seeds(sc, f"power:{power_k:g}", seeds)
            res["k"], res["k_reused"] = power_k, True
        else:
            res = best_power(sc, seeds) if name == "power" else run_seeds(sc, name, seeds)
        res.pop("runs", None)
        out["policies"][name] = res
    return out


def run_grid(seeds=30, cases=("validation", "realistic"), agents=GRID_AGENTS, ps=GRID_P, policies=GRID_POLICIES):
    """The benchmark grid without the LP optimum (that needs scipy: bench/pacing_bench.py):
    yields one result per (case, agents, p), every policy on the same seeds."""
    if seeds < 1:
        raise InputError("--seeds must be at least 1")
    for case in cases:
        for n in agents:
            for p in ps:
                if not (isinstance(n, int) and n > 0) or not 0 < p < 1:
                    raise InputError(f"grid point N={n} p={p}: agents must be positive and p between 0 and 1")
                yield run_grid_point(case, n, p, seeds, policies)

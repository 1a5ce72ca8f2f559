"""A discrete-event simulator of a calling floor that drives the real pacing
policies (``dialer.pacing.policies``) on a virtual clock.

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

from core.errors import InputError

from .policies import PacingState

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


def simulate(scenario, policy, seed=None):
    """Run one shift. Returns a Result."""
    sc = scenario
    seed = sc.seed if seed is None else seed
    agents_at = _schedule(sc.agents, "agents")
    p_at = _schedule(sc.p_live, "p_live")
    ring_d, nonlive_d = make_dist(sc.live_ring), make_dist(sc.nonlive)
    talk_d, wrap_d = make_dist(sc.talk), make_dist(sc.wrap)
    leads = _Leads(seed)
    end = sc.shift_hours * 3600.0
    window = max(0.0, float(sc.connect_window))

    heap = []  # (time, seq, kind, payload)
    seq = 0

    def push(t, kind, payload=None):
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (t, seq, kind, payload))

    n_agents = int(agents_at(0.0))
    free = n_agents  # idle agents
    busy = 0
    talking = 0
    dialing = 0
    waiting = []  # (answer time, lead)
    next_lead = 0
    dials = live = abandons = 0
    busy_area = agents_area = talk_area = 0.0
    last_t = 0.0
    idle_since = [0.0] * n_agents  # stack of idle start times, for agent wait
    waits = []
    live_log = []  # (time, abandoned?) for the rolling window
    retiring = 0  # agents to log out when they free up

    def advance(t):
        nonlocal last_t, busy_area, agents_area, talk_area
        dt = t - last_t
        if dt > 0:
            busy_area += busy * dt
            agents_area += (free + busy) * dt
            talk_area += talking * dt
            last_t = t

    def connect(t, lead_u):
        nonlocal free, busy, talking
        free -= 1
        busy += 1
        talking += 1
        waits.append(t - idle_since.pop())
        talk = talk_d(lead_u[2])
        wrap = wrap_d(lead_u[3])
        push(t + talk, "talk_end")
        push(t + talk + wrap, "agent_free", talk + wrap)

    def state(t):
        return PacingState(now=t, agents=free + busy, ready=free, busy=busy, talking=talking, dialing=dialing,
                           waiting=len(waiting), lines=sc.lines, lines_in_use=dialing + len(waiting) + talking)

    def launch(t):
        nonlocal dialing, next_lead, dials
        n = policy.decide(state(t))
        for _ in range(max(0, int(n))):
            u = leads[next_lead]
            is_live = u[0] < p_at(t)
            d = ring_d(u[1]) if is_live else nonlive_d(u[1])
            push(t + d, "dial_end", (next_lead, is_live, d))
            next_lead += 1
            dialing += 1
            dials += 1

    if policy.tick:
        push(0.0, "tick")
    for t_change, _ in (sc.agents if isinstance(sc.agents, list) else []):
        if 0 < float(t_change) < end:
            push(float(t_change), "agents")
    launch(0.0)
    while heap:
        t, _, kind, payload = heapq.heappop(heap)
        if t > end:
            break
        advance(t)
        if kind == "dial_end":
            lead_i, is_live, d = payload
            dialing -= 1
            policy.on_dial_end(t, is_live, d)
            if is_live:
                live += 1
                if free > 0:
                    connect(t, leads[lead_i])
                    policy.on_connect(t, 0.0)
                    live_log.append((t, False))
                elif window > 0:
                    waiting.append((t, lead_i))
                    push(t + window, "give_up", lead_i)
                else:
                    abandons += 1
                    policy.on_abandon(t)
                    live_log.append((t, True))
        elif kind == "give_up":
            for k, (ta, li) in enumerate(waiting):
                if li == payload:
                    del waiting[k]
                    abandons += 1
                    policy.on_abandon(t)
                    live_log.append((ta, True))
                    break
        elif kind == "talk_end":
            talking -= 1
        elif kind == "agent_free":
            busy -= 1
            policy.on_handle_end(t, payload)
            if retiring > 0:
                retiring -= 1
            else:
                free += 1
                idle_since.append(t)
                if waiting:
                    ta, li = waiting.pop(0)
                    connect(t, leads[li])
                    policy.on_connect(t, t - ta)
                    live_log.append((ta, False))
        elif kind == "agents":
            target = int(agents_at(t))
            have = free + busy - retiring
            if target > have:
                for _ in range(target - have):
                    if retiring:
                        retiring -= 1
                    else:
                        free += 1
                        idle_since.append(t)
            elif target < have:
                drop = have - target
                while drop and free:
                    free -= 1
                    idle_since.pop()
                    drop -= 1
                retiring += drop
        elif kind == "tick":
            push(t + policy.tick, "tick")
        launch(t)
    advance(end)
    hours = end / 3600.0
    agent_hours = agents_area / 3600.0 if agents_area else 0.0
    worst = _worst_window(live_log, sc.abandon_window_hours * 3600.0, abandons, live)
    return Result(
        policy=policy.name, seed=seed, hours=hours,
        occupancy=busy_area / agents_area if agents_area else 0.0,
        talk_minutes_per_agent_hour=(talk_area / 60.0) / agent_hours if agent_hours else 0.0,
        abandon_rate=abandons / live if live else 0.0, worst_window_abandon_rate=worst,
        live_answers=live, abandons=abandons, dials=dials,
        dials_per_agent_hour=dials / agent_hours if agent_hours else 0.0, leads_consumed=next_lead,
        mean_agent_wait_s=statistics.fmean(waits) if waits else 0.0,
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


def run_grid_point(case, agents, p, seeds, policies=GRID_POLICIES):
    """Every policy at one grid point, on the same seeds (common random numbers)."""
    sc = grid_scenario(case, agents, p)
    out = {"case": case, "agents": agents, "p": p, "seeds": seeds, "policies": {}}
    for name in policies:
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

"""How late the reactor runs while the dialer works hard: a ``LoopingCall`` every
10 ms measures its own lateness (when it ran minus when it was due) while

  (a) a real ``dialer.engine.Dialer`` claims leads at full speed from a 1M-lead
      campaign in a real SQLite file (the hopper's claim: ``BEGIN IMMEDIATE`` and a
      rules check of every lead), through a stand-in SIP pool whose calls all end at
      once, unanswered (so the loop claims again at once), with the write journal
      applying every call's records; no calls-per-second cap, lines to spare, and a
      policy asking ``--batch`` leads per decision (20; in production the trunk's
      calls-per-second cap bounds a decision's dials), and
  (b) 20 agents' phones log in at once (20 ``incoming`` events with the right PINs,
      each ACK at once): the user looked up in the store, the PIN's scrypt check in
      the reactor's thread pool.

Runs on fresh copies of the same campaign: ``store-thread`` (the live wiring:
``run=journal.call``, every store access of the loop on the journal's thread) and
``on-reactor`` (``run`` left at its default: the claims and lookups on the reactor
thread, as before issue 12). Each run's campaign clock is set to a Tuesday noon in
New York (2026-11-24 17:00 UTC), so the calling-hours rules let the leads through
whatever the hour here; delays are real.

The campaign is built once (import of a generated 1M-row list, as
``bench/hopper_bench.py`` does; about a minute) and cached in ``--workdir``.

    python bench/reactor_latency.py [--n 1000000] [--seconds 20] [--batch 20]
        [--paths idle,store-thread,on-reactor] [--switch-ms 1] [--pin-checks 1] [--cps N]

``idle`` is the probe alone (how late this machine lets a reactor with nothing to do
run, right now). The PIN checks run one fewer than the cores at a time and the GIL
switch interval is 1 ms, as ``dialer run`` has them (``dialer.service``); each run's
JSON says what the process did during its worst stall (``worst``).

Prints one JSON line.
"""

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from twisted.internet import defer, task  # noqa: E402
from twisted.internet.epollreactor import EPollReactor  # noqa: E402

from dialer.pacing.policies import Policy  # noqa: E402

from common import pins, workdir  # noqa: E402

NOW = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.timezone.utc)  # Tuesday noon Eastern
AGENTS = 20
PROBE_S = 0.010


def build(workdir, n):
    """The pristine campaign: hopper_bench's 1M-lead campaign, 20 agents with PINs, and
    lines and calls per second no claim runs out of. Cached."""
    import hopper_bench
    import import_bench
    from campaigns.store import add_user
    from core.store import Store
    from dialer.agents import set_pin
    pristine = os.path.join(workdir, f"latency-{n}.db")
    if os.path.exists(pristine):
        return pristine
    csv_path = os.path.join(workdir, f"leads-{n}.csv")
    if not os.path.exists(csv_path):
        print(f"writing {csv_path}...", file=sys.stderr)
        import_bench.make_csv(csv_path, n)
    print("building the campaign (import)...", file=sys.stderr)
    tmp = os.path.join(workdir, "building.db")
    for p in (tmp, tmp + "-wal", tmp + "-shm"):
        if os.path.exists(p):
            os.remove(p)
    hopper_bench.build(tmp, csv_path, NOW, workdir)
    store = Store(tmp)
    for k, pin in enumerate(pins(AGENTS)):
        add_user(store, "bench", f"a{k}", "agent", NOW, "bench")
        set_pin(store, "bench", f"a{k}", pin, NOW, "bench")
    store.execute("UPDATE accounts SET line_capacity = 100000 WHERE name = 'bench'")
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    shutil.rmtree(pristine[:-3] + ".files", ignore_errors=True)
    shutil.copytree(tmp[:-3] + ".files", pristine[:-3] + ".files")
    shutil.rmtree(tmp[:-3] + ".files", ignore_errors=True)
    os.replace(tmp, pristine)
    return pristine


def fresh_copy(pristine, workdir):
    db = os.path.join(workdir, "run.db")
    for p in (db, db + "-wal", db + "-shm", db + ".dialer.journal"):
        if os.path.exists(p):
            os.remove(p)
    shutil.copyfile(pristine, db)
    shutil.rmtree(db[:-3] + ".files", ignore_errors=True)
    shutil.copytree(pristine[:-3] + ".files", db[:-3] + ".files")
    return db


class Shifted:
    """The reactor, its clock moved to the campaign's instant (delays are real)."""

    def __init__(self, reactor, offset):
        self._reactor, self._offset = reactor, offset

    def seconds(self):
        return self._reactor.seconds() + self._offset

    def __getattr__(self, name):
        return getattr(self._reactor, name)


class Flood(Policy):
    """Every decision asks for ``batch`` dials (lines permitting): claims back to back."""

    name = "flood"

    def __init__(self, batch):
        self.batch = batch

    def decide(self, s):
        return self.clamp(self.batch, s)


class NoAnswerPool:
    """A stand-in SIP pool: every call ends at once, unanswered (480)."""

    def __init__(self, clock):
        self.clock, self.on_event, self.hangups = clock, None, 0

    def dial(self, key, uri, timeout_s=None, caller_id=None):
        ms = int(self.clock.seconds() * 1000)
        self.clock.callLater(0, self.on_event, {
            "ev": "ended", "key": key, "code": 480, "reason": "Temporarily Unavailable", "answered": False,
            "started_ms": ms, "answered_ms": None, "ended_ms": ms, "cause": "remote"})
        return 5060

    def hangup(self, key, code=None):
        self.hangups += 1

    def __getattr__(self, name):  # recordings, bridges, ...: nothing happens in this bench
        return lambda *a, **kw: None


def pct(xs, q):
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 2) if xs else None


class Probe:
    """A ``LoopingCall`` every 10 ms on ``reactor``: each call's lateness (when it ran
    minus when it was due; after a stall, due at the first instant it missed). For the
    latest one, what the process did meanwhile: the time since the call before it and
    the CPU the reactor thread and the whole process used (little of both: the machine
    gave the process no CPU; the process's but not the reactor's: the GIL)."""

    def __init__(self, reactor, also=None):
        self.reactor, self.also = reactor, also or (lambda: None)
        self.late, self.worst = [], {"late_ms": -1.0}
        self.lc = task.LoopingCall.withCount(self._tick)
        self.lc.clock = reactor

    def start(self):
        self.k, self.t0 = 0, self.reactor.seconds()
        self.last = (self.t0, time.thread_time(), time.process_time())
        self.lc.start(PROBE_S, now=False)

    def stop(self):
        self.lc.stop()

    def _tick(self, count):
        due = self.t0 + (self.k + 1) * PROBE_S
        self.k += count
        now, cpu_me, cpu_all = self.reactor.seconds(), time.thread_time(), time.process_time()
        ms = 1000.0 * (now - due)
        self.late.append(ms)
        if ms > self.worst["late_ms"]:
            self.worst = {"late_ms": ms, "at_s": now - self.t0, "gap_ms": 1000 * (now - self.last[0]),
                          "reactor_cpu_ms": 1000 * (cpu_me - self.last[1]),
                          "process_cpu_ms": 1000 * (cpu_all - self.last[2])}
        self.last = (now, cpu_me, cpu_all)
        self.also()

    def figures(self):
        lat = sorted(self.late)
        return {"lateness_ms_p50": pct(lat, 0.50), "lateness_ms_p95": pct(lat, 0.95),
                "lateness_ms_p99": pct(lat, 0.99), "lateness_ms_max": round(lat[-1], 2) if lat else None,
                "probes": len(lat), "worst": {k: round(v, 1) for k, v in self.worst.items()}}


def run_idle(seconds):
    """The probe alone: how late this machine lets an idle reactor run right now."""
    reactor = EPollReactor()
    probe = Probe(reactor)
    result = {}

    def stop():
        probe.stop()
        result.update(probe.figures(), load_average_1min=round(os.getloadavg()[0], 2))
        reactor.stop()
    reactor.callWhenRunning(probe.start)
    reactor.callLater(seconds, stop)
    reactor.run()
    return result


def run_one(db, path, seconds, batch, logins_at, cps, pin_checks=None):
    from core.store import Store
    from dialer.engine import Dialer
    from dialer.journal import Journal
    reactor = EPollReactor()
    clock = Shifted(reactor, NOW.timestamp() - reactor.seconds())
    store = Store(db, timeout=0.2, migrate=False)  # the reactor's reads, as ``dialer run`` opens them
    journal = Journal(db, reactor=reactor)
    journal.start()
    pool = NoAnswerPool(clock)
    kw = {"run": journal.call} if path == "store-thread" else {}
    if pin_checks:  # at most this many scrypt checks at once, as ``dialer run`` does (0: the Dialer's
        #             default, every check in the reactor's thread pool at once, 10 threads)
        from dialer.service import pin_checker
        kw["verify"] = pin_checker(reactor, pin_checks)
    d = Dialer(clock, store, "bench", pool, route=lambda n: f"sip:{n}@carrier.invalid", tick=0.5, cps=cps,
               journal=journal, policy=Flood(batch), consumer="bench", **kw)
    users = [(f"a{k}", pin) for k, pin in enumerate(pins(AGENTS))]
    login_t, login_done = {}, {}
    backlog = {"max": 0}
    probe = Probe(reactor, also=lambda: backlog.update(max=max(backlog["max"], journal.backlog)))
    result = {}

    real_login = d.floor.login

    def login(uid, cid, now, name=None):  # the instant each agent is logged in
        login_done[name] = reactor.seconds()
        return real_login(uid, cid, now, name=name)
    d.floor.login = login
    claims = []  # (ms from asking to the answer, leads)
    real_claim = d.leads.claim

    def claim(*args):
        t = time.perf_counter()
        return real_claim(*args).addCallback(lambda picked: claims.append((1000 * (time.perf_counter() - t),
                                                                           len(picked))) or picked)
    d.leads.claim = claim
    # where the reactor thread's time goes: dialling a claim's leads, and calls' ends
    busy = {"dial_ms": [], "end_ms": 0.0, "ends": 0}
    real_claimed = d.planner._claimed

    def claimed(picked, asked):
        t = time.perf_counter()
        try:
            return real_claimed(picked, asked)
        finally:
            busy["dial_ms"].append((1000 * (time.perf_counter() - t), len(picked)))
    d.planner._claimed = claimed

    def on_event(ev):
        t = time.perf_counter()
        try:
            d.on_event(ev)
        finally:
            if ev.get("ev") == "ended":
                busy["end_ms"] += 1000 * (time.perf_counter() - t)
                busy["ends"] += 1
    pool.on_event = on_event

    async def main():
        t_start = time.perf_counter()
        d.start()
        d.kick()
        while d.stats.dials == 0 and time.perf_counter() - t_start < 300:  # the first claim loads the rules
            await task.deferLater(reactor, 0.05, lambda: None)
        result["first_claim_s"] = round(time.perf_counter() - t_start, 2)
        probe.start()
        dials0, t0, claims0 = d.stats.dials, time.perf_counter(), len(claims)
        busy["dial_ms"].clear()
        busy.update(end_ms=0.0, ends=0)
        cpu0 = os.times()
        await task.deferLater(reactor, logins_at, lambda: None)
        for i, (name, pin) in enumerate(users):  # every phone at once, each ACK at once
            key = f"phone-{i}"
            login_t[name] = reactor.seconds()
            d.on_event({"ev": "incoming", "key": key, "to_user": f"agent-{name}-{pin}", "source": f"10.0.0.{i}:5060"})
            d.on_event({"ev": "confirmed", "key": key})
        await task.deferLater(reactor, seconds - logins_at, lambda: None)
        probe.stop()
        elapsed = time.perf_counter() - t0
        cpu1 = os.times()
        dials = d.stats.dials - dials0
        d.stop()
        while d.planner.claiming:  # the claim in flight comes back (its leads are released)
            await task.deferLater(reactor, 0.05, lambda: None)
        cl = sorted(ms for ms, _ in claims[claims0:])
        took = sorted(1000.0 * (login_done[u] - login_t[u]) for u in login_done if u in login_t)
        result.update(probe.figures())
        result.update({
            "leads_claimed_per_s": round(dials / elapsed), "leads_claimed": dials, "claims": len(cl),
            "claim_ms_p50": pct(cl, 0.5), "claim_ms_max": round(cl[-1], 1) if cl else None,
            "logins_completed": len(took), "login_ms_p50": round(statistics.median(took), 1) if took else None,
            "login_ms_max": round(took[-1], 1) if took else None,
            "journal_backlog_max": backlog["max"], "blocked": d.blocked_reason,
            # the reactor thread's own work per call (not the store's): the dials of one
            # claim run in one callback, so the longest of those is one long turn
            "reactor_us_per_dial": round(1000 * sum(ms for ms, _ in busy["dial_ms"])
                                         / max(1, sum(n for _, n in busy["dial_ms"]))),
            "reactor_ms_dialling_a_claim_max": round(max((ms for ms, _ in busy["dial_ms"]), default=0), 1),
            "reactor_us_per_call_end": round(1000 * busy["end_ms"] / max(1, busy["ends"])),
            "process_cpu_s": round((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), 1),
            "load_average_1min": round(os.getloadavg()[0], 2),
        })

    def finish(r):
        if hasattr(r, "getTraceback"):
            print(r.getTraceback(), file=sys.stderr)
            result["error"] = r.getErrorMessage()
        reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(main()).addBoth(finish))
    reactor.run()
    left = journal.stop(timeout=120)
    store.close()
    result["journal_left"] = left
    return result


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run")
    ap.add_argument("--batch", type=int, default=20, help="leads asked for per decision (one claim)")
    ap.add_argument("--logins-at", type=float, default=5.0, help="when the 20 phones log in (s into the run)")
    ap.add_argument("--paths", default="idle,store-thread,on-reactor",
                    help="idle: the probe alone (this machine's noise now); store-thread: the live wiring; "
                         "on-reactor: the store work on the reactor thread, as before")
    ap.add_argument("--cps", type=float, default=1e6, help="the trunk's calls-per-second cap (default: none)")
    ap.add_argument("--pin-checks", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                    help="PIN checks (scrypt) at once, as dialer run does (default: cores - 1, at least 1); "
                         "0: the Dialer's default, all at once in the reactor's thread pool")
    ap.add_argument("--switch-ms", type=float, default=None,
                    help="sys.setswitchinterval in ms (default: as dialer run sets it, "
                         "dialer.service.SWITCH_INTERVAL_S; Python's own: 5)")
    ap.add_argument("--workdir", default=workdir("reactor_latency"))
    a = ap.parse_args(argv)
    from dialer.service import SWITCH_INTERVAL_S
    sys.setswitchinterval(a.switch_ms / 1000.0 if a.switch_ms is not None else SWITCH_INTERVAL_S)
    os.makedirs(a.workdir, exist_ok=True)
    pristine = build(a.workdir, a.n)
    out = {"bench": "reactor_latency", "batch": a.batch, "cps_cap": a.cps if a.cps < 1e6 else None,
           "pin_checks_at_once": a.pin_checks,
           "seconds": a.seconds, "agents": AGENTS,
           "probe_ms": PROBE_S * 1000, "switch_interval_ms": round(sys.getswitchinterval() * 1000, 3)}
    for path in a.paths.split(","):
        if path == "idle":
            print("run: idle...", file=sys.stderr)
            out[path] = run_idle(a.seconds)
            continue
        db = fresh_copy(pristine, a.workdir)
        if "campaign_leads" not in out:
            from core.store import Store
            s = Store(db, migrate=False)
            out["campaign_leads"] = s.query_one("SELECT COUNT(*) AS n FROM leads")["n"]
            s.close()
        print(f"run: {path}...", file=sys.stderr)
        out[path] = run_one(db, path, a.seconds, a.batch, a.logins_at, a.cps, a.pin_checks)
    new = out.get("store-thread")
    if new and new.get("lateness_ms_p99") is not None:
        out["goal"] = {"lateness_ms_p99": 20, "lateness_ms_max": 100}
        out["meets_goal"] = new["lateness_ms_p99"] < 20 and new["lateness_ms_max"] < 100
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

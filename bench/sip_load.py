"""SIP load on this machine: the worker pool under a Twisted parent against SIPp on
loopback. Dials at a target rate for a while; the SIPp carrier answers at once, echoes
the audio (-rtp_echo) and hangs up after the hold time. Measures sustained calls per
second (answered calls per second of the run), peak concurrent answered calls, the
share of them with RTP flowing both ways (worker stats at the peak), and the
answer-to-agent connect time (agents logged in from SIPp phones; every Nth answered
call is connected to a free agent: "answered" event to "bridged" event, through the
pool, in one worker or over a tie call).

    python bench/sip_load.py [--cps 50] [--seconds 20] [--hold 5] [--workers 10] [--agents 4]

Prints one JSON line.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from twisted.internet import defer, task  # noqa: E402
from twisted.internet.epollreactor import EPollReactor  # noqa: E402

from dialer.sip.pool import WorkerPool  # noqa: E402
from sip_harness import Sipp, free_udp_port  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--cps", type=float, default=50.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--hold", type=float, default=5.0, help="seconds the carrier holds each answered call")
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument("--agents", type=int, default=4)
    ap.add_argument("--connect-every", type=int, default=10, help="connect every Nth answered call to an agent")
    a = ap.parse_args(argv)
    import tempfile
    tmp = tempfile.mkdtemp(prefix="sip-load-")
    carrier = Sipp("uas_answer_hold.xml", "-d", str(int(a.hold * 1000)), echo=True, tmp=tmp, timeout=int(a.seconds + 120))
    reactor = EPollReactor()
    ev_log = {"answered": {}, "ended": {}, "bridged": {}, "stats": [], "errors": 0, "incoming": []}
    live = set()
    peak = {"n": 0, "at": None}
    pending_connect = {}

    def on_event(ev):
        name, key = ev.get("ev"), ev.get("key")
        now = time.monotonic()
        if name == "answered":
            ev_log["answered"][key] = now
            live.add(key)
            if len(live) > peak["n"]:
                peak["n"], peak["at"] = len(live), now
            if len(ev_log["answered"]) % a.connect_every == 0 and free_agents:
                agent = free_agents.pop()
                pending_connect[key] = agent
                pool.connect(key, agent, tie_key=f"tie-{key}")
        elif name == "bridged":
            k = ev.get("b") if ev.get("a", "").startswith("tie-") else ev.get("a")
            if k in pending_connect and k not in ev_log["bridged"]:
                ev_log["bridged"][k] = now
        elif name == "ended":
            ev_log["ended"][key] = (now, ev.get("code"), ev.get("answered"))
            live.discard(key)
            if key in pending_connect:
                free_agents.append(pending_connect.pop(key))
        elif name == "incoming" and not ev.get("tie"):
            ev_log["incoming"].append(key)
            free_agents.append(key)
        elif name == "stats":
            ev_log["stats"].append(ev)
        elif name == "error":
            ev_log["errors"] += 1
            ev_log.setdefault("error_messages", {}).setdefault(ev.get("message", "?")[:120], 0)
            ev_log["error_messages"][ev.get("message", "?")[:120]] += 1

    free_agents = []
    ports = [free_udp_port() for _ in range(a.workers)]
    pool = WorkerPool(reactor, on_event, ports, max_workers=a.workers)
    agents = []
    result = {}

    async def run():
        pool.start(a.workers)
        while sum(1 for w in pool.workers.values() if w.ready) < a.workers:
            await task.deferLater(reactor, 0.1, lambda: None)
        first = next(iter(pool.workers))
        for i in range(a.agents):
            agents.append(Sipp("uac_agent.xml", f"127.0.0.1:{first}", echo=True, service=f"agent-a{i}-1234",
                               calls=1, tmp=tmp, timeout=int(a.seconds + 120)))
        while len(ev_log["incoming"]) < a.agents:
            await task.deferLater(reactor, 0.1, lambda: None)
        t0 = time.monotonic()
        n = int(a.cps * a.seconds)
        interval = 1.0 / a.cps
        cpu0 = os.times()
        for i in range(n):
            target = t0 + i * interval
            delay = target - time.monotonic()
            if delay > 0:
                await task.deferLater(reactor, delay, lambda: None)
            pool.dial(f"L{i}", carrier.uri)
            if i == n - 1 or (i and i % int(a.cps * a.hold) == 0):
                pool.stats()
        t_last_dial = time.monotonic()
        while len(ev_log["ended"]) < n and time.monotonic() - t_last_dial < a.hold + 30:
            await task.deferLater(reactor, 0.2, lambda: None)
        t_end = time.monotonic()
        answered = [k for k, (_, code, ans) in ev_log["ended"].items() if ans]
        connect = sorted(1000 * (ev_log["bridged"][k] - ev_log["answered"][k]) for k in ev_log["bridged"])
        # RTP both ways on the calls live at the last stats taken while the load ran
        rtp_calls = rtp_both = 0
        for st in ev_log["stats"]:
            for k, c in (st.get("calls") or {}).items():
                if c.get("answered") and k.startswith("L"):
                    rtp_calls += 1
                    rtp_both += 1 if c.get("rtp_rx", 0) > 0 and c.get("rtp_tx", 0) > 0 else 0
        first_answer = min(ev_log["answered"].values()) if ev_log["answered"] else t0
        last_answer = max(ev_log["answered"].values()) if ev_log["answered"] else t0
        result.update({
            "target_cps": a.cps, "seconds": a.seconds, "hold_s": a.hold, "workers": a.workers,
            "dials": n, "answered": len(answered), "failed": n - len(answered),
            "sustained_answered_cps": round(len(answered) / max(last_answer - first_answer, 1e-9), 1),
            "peak_concurrent_answered": peak["n"],
            "rtp_both_ways_share": round(rtp_both / rtp_calls, 4) if rtp_calls else None,
            "rtp_calls_sampled": rtp_calls,
            "connects": len(connect),
            "connect_ms_p50": round(statistics.median(connect), 1) if connect else None,
            "connect_ms_p99": round(connect[min(len(connect) - 1, int(0.99 * len(connect)))], 1) if connect else None,
            "connect_ms_max": round(connect[-1], 1) if connect else None,
            "wall_s": round(t_end - t0, 1), "worker_errors": ev_log["errors"],
            "worker_error_messages": ev_log.get("error_messages", {}),
        })
        await pool.stop()
        cpu1 = os.times()  # the workers have been reaped: their CPU time is counted
        result["parent_cpu_s"] = round((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), 1)
        result["workers_cpu_s"] = round((cpu1.children_user - cpu0.children_user)
                                        + (cpu1.children_system - cpu0.children_system), 1)

    def finish(_):
        reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(run()).addBoth(finish))
    reactor.run()
    carrier.stop()
    for s in agents:
        s.stop()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

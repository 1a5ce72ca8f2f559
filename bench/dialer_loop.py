"""The whole dialer loop under load, over real SIP on loopback: a campaign in a real
SQLite file (journal and all), the predictive policy, pjsua2 workers under the Twisted
parent, SIPp agents logged in from their "phones" and SIPp carriers (one answering
after a short ring and holding the call, one ringing until our 15-s timeout, one busy),
numbers routed to them by fixed odds.

Measures what the product promises: answer-to-agent connect time (the worker's
"answered" event to its "bridged" event, both stamped with the system's monotonic
clock, so it covers the parent's decision and the bridge or tie call), the abandon
rate, agent occupancy, dials per second, and that every attempt has its CDR.

    python bench/dialer_loop.py [--agents 30] [--seconds 120] [--hold 6] [--answer 40]

Prints one JSON line.
"""

import argparse
import datetime as _dt
import json
import os
import pathlib
import statistics
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from twisted.internet import defer, task  # noqa: E402
from twisted.internet.epollreactor import EPollReactor  # noqa: E402

from campaigns.leads import import_list  # noqa: E402
from campaigns.store import add_number, add_user, change_state, create_account, create_campaign  # noqa: E402
from dialer.agents import occupancy, set_pin  # noqa: E402
from dialer.demo import callable_area  # noqa: E402
from dialer.engine import Dialer, route_by_odds, wind_down  # noqa: E402
from dialer.journal import Journal  # noqa: E402
from dialer.sip.pool import WorkerPool  # noqa: E402
from core.store import Store  # noqa: E402
from rules import service  # noqa: E402
from sip_harness import Sipp, free_udp_port, write_tone  # noqa: E402

from common import pins  # noqa: E402


def setup(tmp, now, agents, leads):
    store = Store(tmp / "bench.db")
    service.ensure_defaults(store, now)
    reg = tmp / "registry.txt"
    reg.write_text("2025550199\n")  # a national DNC registry copy of today (the rules demand one)
    service.import_dnc(store, reg, now, "bench", source="national", as_of=now.date().isoformat())
    area = callable_area(now)
    if area is None:
        raise SystemExit("no zone of the bench's area codes is inside calling hours now")
    create_account(store, "bench", now, "bench", lines=120)
    add_number(store, "bench", "212 555 9999", now, "bench")
    users = []
    for k, pin in enumerate(pins(agents)):
        add_user(store, "bench", f"a{k}", "agent", now, "bench")
        set_pin(store, "bench", f"a{k}", pin, now, "bench")
        users.append((f"a{k}", pin))
    create_campaign(store, "load", "bench", now, "bench", caller_id="212-555-9999",
                    greeting=write_tone(tmp / "greeting.wav", seconds=1.0))
    f = tmp / "list.csv"
    f.write_text("phone\n" + "\n".join(f"{area}{200 + i // 250}{(37 * i) % 10000:04d}" for i in range(leads)) + "\n")
    import_list(store, f, "load", now, "bench")
    change_state(store, "load", "start", now, "bench")
    store.close()
    return users


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--hold", type=float, default=6.0, help="seconds the answering carrier talks")
    ap.add_argument("--answer", type=float, default=40.0, help="percent of numbers a person answers")
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--cps", type=float, default=20.0)
    ap.add_argument("--wrap", type=float, default=1.0, help="agents' wrap-up (the wrap limit), seconds")
    a = ap.parse_args(argv)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="dialer-loop-"))
    now = _dt.datetime.now(_dt.timezone.utc)
    users = setup(tmp, now, a.agents, leads=int(a.cps * a.seconds * 2))
    store = Store(tmp / "bench.db", timeout=0.2)
    life = int(a.seconds + 180)
    carriers = {"answer": Sipp("uas_answer_hold.xml", "-d", str(int(a.hold * 1000)), echo=True, tmp=tmp, timeout=life),
                "no-answer": Sipp("uas_ring_forever.xml", tmp=tmp, timeout=life),
                "busy": Sipp("uas_busy.xml", tmp=tmp, timeout=life)}
    rest = 100.0 - a.answer
    odds = [("answer", a.answer), ("no-answer", 0.7 * rest), ("busy", 0.3 * rest)]
    route = route_by_odds({k: s.uri.split("@")[1] for k, s in carriers.items()}, odds)
    reactor = EPollReactor()
    journal = Journal(tmp / "bench.db", reactor=reactor)  # the one store thread (its Deferreds fire here)
    journal.start()
    answered_t, bridged_t = {}, {}
    backlog = {"max": 0}
    holder = {}

    def on_event(ev):
        name = ev.get("ev")
        if name == "answered":
            answered_t[ev["key"]] = ev["t"]
        elif name == "bridged":
            for key in (ev.get("a", ""), ev.get("b", "")):  # the customer's leg, whichever side
                if key in answered_t and key not in bridged_t and not key.startswith("tie-"):
                    bridged_t[key] = ev["t"]
        holder["d"].on_event(ev)

    ports = [free_udp_port() for _ in range(a.workers)]
    pool = WorkerPool(reactor, on_event, ports, max_workers=a.workers)
    d = holder["d"] = Dialer(reactor, store, "load", pool, route, tick=0.25, cps=a.cps, wrap_limit_s=a.wrap,
                             journal=journal, run=journal.call)
    phones = []
    result = {}

    async def run():
        pool.start(a.workers)
        while sum(1 for w in pool.workers.values() if w.ready) < a.workers:
            await task.deferLater(reactor, 0.1, lambda: None)
        for i, (name, pin) in enumerate(users):  # phones spread over the workers' ports (12 at most each)
            phones.append(Sipp("uac_agent.xml", f"127.0.0.1:{ports[i % a.workers]}", echo=True,
                               service=f"agent-{name}-{pin}", calls=1, tmp=tmp, timeout=life))
        t_login = reactor.seconds()
        while d.floor.counts(d.cid).agents < len(users) and reactor.seconds() - t_login < 60:
            await task.deferLater(reactor, 0.1, lambda: None)
        logged = d.floor.counts(d.cid).agents
        t0 = reactor.seconds()
        cpu0 = os.times()
        d.start()

        def watch():
            backlog["max"] = max(backlog["max"], journal.backlog)
        w = task.LoopingCall(watch)
        w.clock = reactor
        w.start(0.5)
        await task.deferLater(reactor, a.seconds, lambda: None)
        t1 = reactor.seconds()
        await wind_down(reactor, [d], drain_s=30, settle_s=15, journal=journal)
        w.stop()
        cpu1 = os.times()
        connect = sorted(1000 * (bridged_t[k] - answered_t[k]) for k in bridged_t)
        st = d.stats.as_dict()
        since = _dt.datetime.fromtimestamp(t0, _dt.timezone.utc)
        until = _dt.datetime.fromtimestamp(t1, _dt.timezone.utc)
        occ = [v["occupancy"] for v in occupancy(store, d.cid, since, until).values() if v["occupancy"] is not None]
        cdrs = store.query_one("SELECT COUNT(*) AS n FROM cdrs WHERE campaign_id = ?", (d.cid,))["n"]

        def pct(q):
            return round(connect[min(len(connect) - 1, int(q * len(connect)))], 1) if connect else None
        result.update({
            "agents": logged, "seconds": a.seconds, "answer_pct": a.answer, "hold_s": a.hold, "cps_cap": a.cps,
            "dials": st["dials"], "dials_per_s": round(st["dials"] / a.seconds, 2), "answers": st["answers"],
            "connects": st["connects"], "abandons": st["abandons"],
            "abandon_rate": round(st["abandon_rate"], 4),
            "occupancy": round(sum(occ) / len(occ), 4) if occ else None,
            "connect_samples": len(connect),
            "connect_ms_p50": round(statistics.median(connect), 1) if connect else None,
            "connect_ms_p95": pct(0.95), "connect_ms_p99": pct(0.99),
            "connect_ms_max": round(connect[-1], 1) if connect else None,
            "cdrs": cdrs, "cdrs_missing": st["dials"] - cdrs, "journal_backlog_max": backlog["max"],
            "parent_cpu_s": round((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), 1),
            "blocked": d.blocked_reason,
        })
        await pool.stop()

    def finish(r):
        if isinstance(r, Exception) or hasattr(r, "getTraceback"):
            print(r.getTraceback() if hasattr(r, "getTraceback") else r, file=sys.stderr)
        reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(run()).addBoth(finish))
    reactor.run()
    journal.stop()
    for s in list(carriers.values()) + phones:
        s.stop()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

"""The dialer loop end to end: a real campaign in a real SQLite file, real SIP workers
(pjsua2) under the Twisted parent, SIPp as the carrier and as the agent's phone."""

import datetime as _dt

from twisted.internet import defer
from twisted.internet.epollreactor import EPollReactor

from campaigns.leads import import_list
from campaigns.store import add_number, add_user, change_state, create_account, create_campaign
from dialer.agents import set_pin
from dialer.cdr import list_cdrs
from dialer.clock import ShiftedReactor
from dialer.demo import callable_area, callable_offset
from dialer.engine import Dialer
from dialer.sip.pool import WorkerPool
from core.store import Store
from core.timeutil import to_iso
from rules import service
from sip_harness import free_udp_port, needs_sip, write_tone

pytestmark = needs_sip

def when_to_test():
    """``(now, area, offset_s)``: when the test happens, whatever the wall clock says.
    ``offset_s`` is the least forward shift of the wall clock that puts one of the
    demo's area codes inside calling hours (0 when one is now: dialer.demo's
    callable_offset), ``now`` the wall clock shifted by it, ``area`` that area code.
    The test builds its database at ``now`` and runs its components on the same clock:
    ``run(..., offset_s=offset_s)`` (processes: ``test_service.dialer(..., offset_s=)``).
    The rules are the shipped ones: only the instant is chosen."""
    wall = _dt.datetime.now(_dt.timezone.utc)
    offset = callable_offset(wall)
    now = wall + _dt.timedelta(seconds=offset)
    return now, callable_area(now), offset


def shifted_now(offset_s):
    """The test's clock now: the wall clock shifted by ``offset_s``."""
    return _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=offset_s)


def run(test, timeout=90, offset_s=0):
    """Run ``test(reactor)`` on a fresh reactor; with ``offset_s``, the test gets the
    reactor on a clock shifted that far (``dialer.clock.ShiftedReactor``: its processes,
    sockets and timers still run in real time). The deadline is real seconds."""
    reactor = EPollReactor()
    clock = ShiftedReactor(reactor, offset_s) if offset_s else reactor
    outcome = {}

    def go():
        d = defer.ensureDeferred(test(clock))
        d.addCallbacks(lambda r: outcome.setdefault("ok", r), lambda f: outcome.setdefault("fail", f))
        d.addBoth(lambda _: reactor.stop())
    reactor.callWhenRunning(go)
    deadline = reactor.callLater(timeout, lambda: (outcome.setdefault("timeout", True), reactor.stop()))
    reactor.run()  # signal handlers: SIGCHLD tells Twisted a worker process ended
    if deadline.active():
        deadline.cancel()
    if "fail" in outcome:
        outcome["fail"].raiseException()
    assert "timeout" not in outcome, "the reactor test ran past its deadline"
    return outcome.get("ok")


def until(reactor, pred, timeout, what):
    """A Deferred that fires when ``pred()`` holds (checked every 50 ms of the reactor's
    clock: an event wait with a deadline, not a sleep standing in for one)."""
    d = defer.Deferred()
    start = reactor.seconds()

    def check():
        if pred():
            d.callback(None)
        elif reactor.seconds() - start > timeout:
            d.errback(AssertionError(f"timed out waiting for {what}"))
        else:
            reactor.callLater(0.05, check)
    check()
    return d


def setup_campaign(tmp_path, now, numbers, mode="power", ratio="3"):
    store = Store(tmp_path / "d.db")
    service.ensure_defaults(store, now)
    reg = tmp_path / "reg.txt"
    reg.write_text("2025550199\n")
    service.import_dnc(store, reg, now, "t", source="national", as_of=now.date().isoformat())
    create_account(store, "acme", now, "t", lines=10)
    add_number(store, "acme", "212 555 9999", now, "t")
    add_user(store, "acme", "alice", "agent", now, "t")
    set_pin(store, "acme", "alice", "7391", now, "t")
    greeting = write_tone(tmp_path / "greeting.wav", seconds=1.0)
    create_campaign(store, "c", "acme", now, "t", caller_id="212-555-9999", greeting=greeting, dial_mode=mode,
                    power_ratio=ratio)
    f = tmp_path / "list.csv"
    f.write_text("phone\n" + "\n".join(numbers) + "\n")
    import_list(store, f, "c", now, "t")
    change_state(store, "c", "start", now, "t")
    return store


def test_connect_safe_harbor_busy_and_cdrs(tmp_path, sipp):
    now, area, offset = when_to_test()
    answer_numbers = [f"{area}5550{n}" for n in (142, 367, 581)]
    busy_number = f"{area}5550{724}"
    store = setup_campaign(tmp_path, now, answer_numbers + [busy_number])
    answer = sipp("uas_answer_hold.xml", "-d", "3000")
    busy = sipp("uas_busy.xml")
    routes = {"+1" + n: answer for n in answer_numbers}
    routes["+1" + busy_number] = busy

    async def body(reactor):
        ports = [free_udp_port() for _ in range(2)]
        holder = {}
        pool = WorkerPool(reactor, lambda ev: holder["d"].on_event(ev), ports, max_workers=2)
        d = holder["d"] = Dialer(reactor, store, "c", pool,
                                 route=lambda number: f"sip:{number[1:]}@{routes[number].uri.split('@')[1]}",
                                 tick=0.2, wrap_limit_s=1.0, message_s=3.0, record_dir=tmp_path / "rec")
        pool.start(1)
        await until(reactor, lambda: any(w.ready for w in pool.workers.values()), 20, "a ready worker")
        agent_port = next(iter(pool.workers))
        sipp("uac_agent.xml", f"127.0.0.1:{agent_port}", echo=True, service="agent-alice-7391", calls=1)
        await until(reactor, lambda: d.floor.counts(d.cid).agents == 1, 20, "the agent's login")
        d.start()
        await until(reactor, lambda: sum(d.stats.dispositions.values()) >= 4 and not d.pending_cdr, 60,
                    "four calls to end and be recorded")
        d.stop()
        await pool.stop()
        return d

    d = run(body, offset_s=offset)
    cdrs = {r["destination"]: r for r in list_cdrs(store, campaign="c")}
    print({k: (r["disposition"], r["sip_code"], r["billsec"], r["connect_delay_ms"], r["hangup_by"]) for k, r in cdrs.items()}, d.stats.as_dict())
    assert len(cdrs) == 4
    # every instant of a call on the test's clock (the SIP workers' own, wall-clock times too)
    assert all(to_iso(now) < r["started_at"] <= r["ended_at"] <= to_iso(shifted_now(offset)) for r in cdrs.values())
    assert cdrs["+1" + busy_number]["disposition"] == "busy" and cdrs["+1" + busy_number]["sip_code"] == 486
    answered = [cdrs["+1" + n] for n in answer_numbers]
    assert sorted(r["disposition"] for r in answered) == ["abandoned", "abandoned", "connected"]
    conn = next(r for r in answered if r["disposition"] == "connected")
    assert conn["agent_id"] is not None and conn["billsec"] >= 3 and conn["connect_delay_ms"] < 2000
    # the connected call was recorded, and its CDR points at the WAV
    import wave
    assert conn["recording_path"] and conn["recording_ms"] > 2000
    with wave.open(conn["recording_path"]) as w:
        assert w.getnframes() / w.getframerate() > 2.0
    for r in answered:
        assert r["ruleset"] == "US@1" and r["sip_code"] == 200
    assert all(r["abandoned"] for r in answered if r["disposition"] == "abandoned")
    assert d.stats.abandons == 2 and d.stats.connects == 1
    # the CDRs fed the leads and the frequency-cap history
    assert store.query_one("SELECT COUNT(*) AS n FROM call_attempts")["n"] == 4


def test_safe_harbor_opt_out_goes_to_the_company_dnc(tmp_path, sipp):
    """The callee is a pjsua2 worker of its own (it answers, and presses 9 over RFC 2833
    2.5 s later): the safe-harbor message plays, the key puts the number on the company
    DNC list at once, and the CDR says so."""
    now, area, offset = when_to_test()
    numbers = [f"{area}5550{n}" for n in (142, 367)]
    store = setup_campaign(tmp_path, now, numbers, ratio="2")

    async def body(reactor):
        holder = {}
        seen = []
        callee_port = free_udp_port()

        def callee_event(ev):
            if ev.get("ev") == "incoming":  # a person answers, listens, presses 9
                reactor.callLater(2.5, lambda k=ev["key"]: callee.command("dtmf", k, digits="9"))
        callee = WorkerPool(reactor, callee_event, [callee_port], max_workers=1)
        callee.start(1)
        ports = [free_udp_port() for _ in range(2)]
        pool = WorkerPool(reactor, lambda ev: (seen.append(ev), holder["d"].on_event(ev)), ports, max_workers=2)
        d = holder["d"] = Dialer(reactor, store, "c", pool, route=lambda number: f"sip:{number[1:]}@127.0.0.1:{callee_port}",
                                 tick=0.2, wrap_limit_s=1.0, message_s=10.0)
        pool.start(1)
        await until(reactor, lambda: all(any(w.ready for w in p.workers.values()) for p in (pool, callee)), 20,
                    "ready workers")
        sipp("uac_agent.xml", f"127.0.0.1:{next(iter(pool.workers))}", echo=True, service="agent-alice-7391",
              calls=1)
        await until(reactor, lambda: d.floor.counts(d.cid).agents == 1, 20, "the agent's login")
        d.start()
        try:
            await until(reactor, lambda: d.stats.opt_outs == 1 and d.stats.dispositions.get("abandoned"), 30,
                        "the opt-out on the safe-harbor call")
        except AssertionError:
            print([{k: v for k, v in e.items() if k != "t"} for e in seen if e.get("ev") != "stats"])
            raise
        d.stop()
        await until(reactor, lambda: not d.legs, 20, "the calls to end")
        await pool.stop()
        await callee.stop()
        return seen

    seen = run(body, offset_s=offset)
    rows = list_cdrs(store, campaign="c")
    out = next(r for r in rows if r["disposition"] == "abandoned")
    assert out["opted_out"] and out["lead_outcome"] == "dnc-requested"
    # the message was played to the caller (no "no such file" from the worker)
    assert not [e for e in seen if e.get("ev") == "error"]
    # the number is on the company list at once: the rules engine blocks it now
    v = service.check_numbers(store, [out["destination"]], shifted_now(offset))[0]
    assert not v.allowed and any(r.category == "dnc" for r in v.reasons)


def test_a_worker_killed_mid_call_costs_only_its_calls(tmp_path, sipp):
    """SIGKILL the worker holding two ringing calls: both become failed CDRs ("worker
    died"), their leads wait for their retry time (never redialled at once), a new
    worker comes up and the loop keeps running."""
    import os
    import signal
    now, area, offset = when_to_test()
    numbers = [f"{area}5550{n}" for n in (142, 367)]
    store = setup_campaign(tmp_path, now, numbers, ratio="2")
    carrier = sipp("uas_ring_forever.xml")

    async def body(reactor):
        holder, seen = {}, []
        ports = [free_udp_port() for _ in range(2)]
        pool = WorkerPool(reactor, lambda ev: (seen.append(ev), holder["d"].on_event(ev)), ports, max_workers=2)
        d = holder["d"] = Dialer(reactor, store, "c", pool,
                                 route=lambda number: f"sip:{number[1:]}@{carrier.uri.split('@')[1]}", tick=0.2)
        pool.start(1)
        await until(reactor, lambda: any(w.ready for w in pool.workers.values()), 20, "a ready worker")
        first = next(iter(pool.workers.values()))
        sipp("uac_agent.xml", f"127.0.0.1:{first.port}", echo=True, service="agent-alice-7391", calls=1)
        await until(reactor, lambda: d.floor.counts(d.cid).agents == 1, 20, "the agent's login")
        d.start()
        await until(reactor, lambda: sum(1 for e in seen if e.get("ev") == "ringing") >= 2, 20, "two ringing calls")
        os.kill(first.pid, signal.SIGKILL)
        await until(reactor, lambda: sum(d.stats.dispositions.values()) == 2, 20, "both calls recorded")
        await until(reactor, lambda: any(w.ready and w is not first for w in pool.workers.values()), 20,
                    "a replacement worker")
        assert d.loop.running  # the campaign keeps running
        d.stop()
        await pool.stop()
        return seen

    seen = run(body, offset_s=offset)
    assert [e for e in seen if e.get("ev") == "worker_died"]
    rows = list_cdrs(store, campaign="c")
    assert len(rows) == 2
    for r in rows:
        assert r["disposition"] == "failed" and r["sip_code"] == 0 and "worker died" in r["sip_reason"]
    later = shifted_now(offset)
    for lead in store.query("SELECT status, next_attempt_at FROM leads"):
        assert lead["status"] == "retry" and lead["next_attempt_at"] > to_iso(later)


def test_the_database_locked_mid_call_loses_no_cdr(tmp_path, sipp):
    """Another process holds the database's write lock while calls ring, answer and end:
    the loop keeps running (it dials nothing it cannot check), the records wait in the
    journal, and all of them are in the database once the lock is gone."""
    import sqlite3
    from dialer.journal import Journal
    now, area, offset = when_to_test()
    answer_numbers = [f"{area}5550{n}" for n in (142, 367)]
    busy_number = f"{area}5550{724}"
    setup_campaign(tmp_path, now, answer_numbers + [busy_number]).close()
    store = Store(tmp_path / "d.db", timeout=0.1)  # the reactor's connection: a lock answers at once
    answer = sipp("uas_answer_hold.xml", "-d", "5000")  # answered calls stay up well past the lock, even on a loaded machine
    busy = sipp("uas_busy.xml")
    routes = {"+1" + n: answer for n in answer_numbers}
    routes["+1" + busy_number] = busy
    lock, holder = {}, {}

    async def body(reactor):
        # wired as dialer run wires it: every store access of the loop on the journal's thread
        journal = holder["journal"] = Journal(tmp_path / "d.db", reactor=reactor)
        journal.start(retry_min=0.05, retry_max=0.2)
        ports = [free_udp_port() for _ in range(2)]
        pool = WorkerPool(reactor, lambda ev: holder["d"].on_event(ev), ports, max_workers=2)
        d = holder["d"] = Dialer(reactor, store, "c", pool,
                                 route=lambda number: f"sip:{number[1:]}@{routes[number].uri.split('@')[1]}",
                                 tick=0.2, wrap_limit_s=0.5, message_s=2.0, journal=journal, run=journal.call)
        pool.start(1)
        await until(reactor, lambda: any(w.ready for w in pool.workers.values()), 20, "a ready worker")
        sipp("uac_agent.xml", f"127.0.0.1:{next(iter(pool.workers))}", echo=True, service="agent-alice-7391",
             calls=1)
        await until(reactor, lambda: d.floor.counts(d.cid).agents == 1, 20, "the agent's login")
        await until(reactor, lambda: not journal.backlog, 10, "the login in the database")
        d.start()
        await until(reactor, lambda: d.stats.dials == 3, 20, "three dials")
        other = lock["conn"] = sqlite3.connect(str(tmp_path / "d.db"), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        before = len(list_cdrs(store, campaign="c"))  # a call that ended (busy) before the lock was taken
        await until(reactor, lambda: sum(d.stats.dispositions.values()) == 3 and not d.pending_cdr, 30,
                    "the three calls to end and their wrap-up")
        held = journal.backlog
        in_db = len(list_cdrs(store, campaign="c"))
        assert d.loop.running and journal.failing
        assert "database is unavailable" in (d.blocked_reason or "")  # nothing it cannot check is dialled
        other.execute("ROLLBACK")
        other.close()
        await until(reactor, lambda: not journal.backlog, 20, "the journal to catch up")
        d.stop()
        await pool.stop()
        return held, in_db, before

    held, in_db, before = run(body, offset_s=offset)
    holder["journal"].stop()
    assert in_db == before and held >= 3 - before  # nothing reached the file while it was locked ...
    rows = list_cdrs(store, campaign="c")
    assert len(rows) == 3  # ... and nothing was lost
    assert sorted(r["disposition"] for r in rows) == ["abandoned", "busy", "connected"]
    assert store.query_one("SELECT COUNT(*) AS n FROM call_attempts")["n"] == 3
    states = [r["state"] for r in store.query("SELECT state FROM agent_events ORDER BY id")]
    assert "on_call" in states and "wrap_up" in states


def test_line_capacity_and_cps_caps_hold_over_real_sip(tmp_path, sipp):
    """An ADSL account (3 lines) in power mode 3 with 2 agents wants 6 calls in flight:
    over real SIP, the calls up at once (the workers' own admitted/ended events) never
    exceed 3, and no second sees more than 2 new calls (the trunk's cps cap)."""
    now, area, offset = when_to_test()
    numbers = [f"{area}555{1000 + 37 * i:04d}" for i in range(12)]
    store = setup_campaign(tmp_path, now, numbers, ratio="3")
    store.execute("UPDATE accounts SET connection = 'adsl', line_capacity = 3")
    add_user(store, "acme", "bob", "agent", now, "t")
    set_pin(store, "acme", "bob", "8264", now, "t")
    busy = sipp("uas_busy.xml")  # ends each call quickly: the loop keeps dialing
    ring = sipp("uas_ring_forever.xml")
    events, sent = [], []

    async def body(reactor):
        ports = [free_udp_port() for _ in range(2)]
        holder = {}
        pool = WorkerPool(reactor, lambda ev: (events.append(ev), holder["d"].on_event(ev)), ports, max_workers=2)
        carriers = [busy, ring]
        d = holder["d"] = Dialer(reactor, store, "c", pool, ring_timeout_s=15,
                                 route=lambda n: f"sip:{n[1:]}@{carriers[int(n[-1]) % 2].uri.split('@')[1]}",
                                 tick=0.1, cps=2)
        dial = d._dial
        d._dial = lambda *a: (sent.append(reactor.seconds()), dial(*a))[1]
        pool.start(1)
        await until(reactor, lambda: any(w.ready for w in pool.workers.values()), 20, "a ready worker")
        port = next(iter(pool.workers))
        for who in ("agent-alice-7391", "agent-bob-8264"):
            sipp("uac_agent.xml", f"127.0.0.1:{port}", echo=True, service=who, calls=1)
        await until(reactor, lambda: d.floor.counts(d.cid).agents == 2, 20, "two logins")
        d.start()
        await until(reactor, lambda: d.stats.dials >= 8, 40, "eight dials")
        d.stop()
        await until(reactor, lambda: not d.legs, 20, "the calls to end")
        await pool.stop()
        return d

    run(body, offset_s=offset)
    up, peak, admitted = set(), 0, 0
    for ev in events:  # in the order the workers reported them
        key = ev.get("key") or ""
        if key.startswith(("in-", "tie-")) or not key:  # customer legs only
            continue
        if ev["ev"] == "admitted":
            up.add(key)
            admitted += 1
            peak = max(peak, len(up))
        elif ev["ev"] == "ended":
            up.discard(key)
    assert admitted >= 8 and peak == 3  # the lines were full, never over
    assert len(sent) == admitted
    for t in sent:  # the INVITEs the loop sent: never more than 2 in any second
        assert sum(1 for u in sent if t <= u < t + 1.0) <= 2

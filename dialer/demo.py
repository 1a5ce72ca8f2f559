"""The embedded default: what `dialer demo` shows on a fresh machine.

The shipped rule sets, a sample national DNC registry and an opt-out, `check` on
sample numbers, the screening of a sample list, a campaign with its list and dry run
(:func:`run`); the demo account's users of the browser, one per role (:func:`web_users`);
a predictive campaign over real SIP on loopback, SIPp as the carrier, the agents' phones
and a trunk's registrar (:func:`run_live`), or, without SIP, the web pages alone
(:func:`serve`), until Ctrl-C or ``seconds``; then the calls rated and the draft invoice
(:func:`billing_summary`).
"""

import pathlib

from core.timeutil import utc

SAMPLES = pathlib.Path(__file__).resolve().parent.parent / "samples"
SAMPLE_NUMBERS = ("(212) 555-0142", "212-555-0150", "+1 305 555 0110", "911", "1-411", "1-800-222-1222",
                  "+1 208 555 0166", "401-555-0133", "555-CALL-NOW", "+44 20 7946 0000")


def run(store, now, echo, samples=SAMPLES):
    """Run the demo against ``store`` (a fresh database is best) and print with ``echo``."""
    from rules import service
    from campaigns.screening import screen_file

    now = utc(now)
    service.ensure_defaults(store, now)
    echo(f"== rule sets: {', '.join(sorted(service.load_rulesets(store)))} (shipped defaults, version 1)")
    out = service.import_dnc(store, samples / "national-dnc-sample.txt", now, "demo", source="national",
                             as_of=now.date().isoformat(), jurisdiction="US")
    echo(f"== national DNC registry (sample): {out['numbers']} numbers, {out['junk']} junk line(s) reported")
    from campaigns.store import create_account
    create_account(store, "demo", now, "demo", connection="gshdsl", lines=10, operator=True)
    service.add_dnc(store, ["212-555-0150"], now, "demo", reason="opted out on a call", account="demo")
    echo("== account demo (G.SHDSL, 10 lines; the installation's operator); its company DNC list: "
         "212-555-0150 opted out")
    echo(f"== dialer check at {now:%Y-%m-%d %H:%M}Z")
    for v in service.check_numbers(store, SAMPLE_NUMBERS, now):
        d = v.as_dict()
        status = "ALLOWED" if d["allowed"] else "BLOCKED"
        local = "; ".join(f"{w['zone']} {w['local'][11:16]} window {', '.join(w['windows']) or 'none'}"
                          for w in d["window"])
        echo(f"  {d['input']:<18} {status:<8} {local}")
        for r in d["reasons"]:
            echo(f"      {r['category']}: {r['detail']}")
    echo(f"== screening {samples / 'leads.csv'}")
    s = screen_file(store, samples / "leads.csv", now)
    echo(f"  {s['leads']} leads: {s['allowed']} may be called now, {s['blocked']} blocked")
    for cat, n in s["blocked_by_category"].items():
        echo(f"    {cat:<17} {n}")
    echo(f"  multi-line groups: {s['multiline_groups']} ({s['multiline_leads']} leads; one live call per group)")
    _campaign(store, now, echo, samples)
    return s


WEB_ROLES = ("owner", "manager", "compliance", "supervisor", "agent")


def web_users(store, now, account="demo"):
    """One user of the demo account per role, named after it, each with a random
    16-character password made for this run (set, not one-time: the demo's logins work
    at once; the database is made afresh each run and the server listens on loopback).
    Returns ``[(user, role, password)]``: printed once, never stored in clear."""
    from campaigns.store import add_user
    from campaigns.users import new_one_time_password, set_password
    out = []
    for role in WEB_ROLES:
        password = new_one_time_password()
        add_user(store, account, role, role, now, "demo")
        set_password(store, account, role, password, now, "demo")
        out.append((role, role, password))
    return out


def _stop_on_signals(reactor, stop):
    """SIGINT/SIGTERM call ``stop()``; a second one stops the reactor at once."""
    import signal

    def handler(*_):
        reactor.callFromThread(stop)
    reactor.callWhenRunning(lambda: (signal.signal(signal.SIGINT, handler), signal.signal(signal.SIGTERM, handler)))


def serve(reactor, echo, seconds=None):
    """Run ``reactor`` (the web server listening on it) until Ctrl-C/SIGTERM or
    ``seconds``: the demo without its live part."""
    state = {"stopping": False}

    def stop(why="signal"):
        if state["stopping"]:
            return
        state["stopping"] = True
        echo(f"== stopping ({why})")
        reactor.stop()
    _stop_on_signals(reactor, stop)
    if seconds is not None:
        reactor.callLater(seconds, stop, "time")
    reactor.run()


def billing_summary(store, now, echo, samples=SAMPLES):
    """The demo's end: the demo account's calls rated into the ledger with a sample
    rate deck, its balance, and the draft invoice of the current period."""
    from billing.decks import import_deck, load_index
    from billing.invoices import period_of, run as bill_run, to_text
    from billing.ledger import balance
    from billing.money import fmt
    from billing.plans import plan_row
    now = utc(now)
    acc = store.query_one("SELECT id FROM accounts WHERE name = 'demo'")
    if acc is None:
        return None
    if load_index(store, acc["id"]) is None:
        import_deck(store, samples / "rate-deck-sample.csv", "demo-sample", now, "demo")
    period = period_of(now, plan_row(store, acc["id"])["time_zone"])
    out = bill_run(store, "demo", period, now, "demo")
    bal = balance(store, "demo")
    echo(f"== billing: {period} rated with the sample rate deck: {out['charged']} calls charged, {out['free']} free, "
         f"{out['refused']} refused")
    echo(f"  balance of account demo: {fmt(bal['balance'])} (floor {fmt(bal['floor'])}; no payment recorded)")
    for line in to_text(out["invoice"]).splitlines():
        echo("  " + line)
    return {"bill_run": out, "balance": bal}


def _tone_wav(path, seconds=1.0, rate=8000):
    import math
    import struct
    import wave
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                               for i in range(int(rate * seconds))))
    return path


def _campaign(store, now, echo, samples):
    import datetime as _dt
    from campaigns.dryrun import dry_run
    from campaigns.leads import import_list
    from campaigns.store import add_number, change_state, create_campaign
    add_number(store, "demo", "+1 212 555 0000", now, "demo")
    greeting = _tone_wav(store.files_dir / "demo-greeting.wav")
    create_campaign(store, "demo", "demo", now, "demo", caller_id="+1 212 555 0000", greeting=greeting,
                    hours="mon-sat=09:00-20:00;sun=")
    echo("== campaign demo (account demo, G.SHDSL 10 lines, predictive, caller ID +12125550000)")
    out = import_list(store, samples / "leads.csv", "demo", now, "demo")
    echo(f"  list import {out['import_id']}: {out['rows']} rows, {out['imported']} imported, "
         f"{out['rejected']} rejected, {out['duplicates']} duplicates")
    for reason, n in out["rejected_by_reason"].items():
        echo(f"    rejected {n}: {reason}")
    p = out["preview"]
    echo(f"  preview: dialable now {p['dialable_now']}, later today {p['later_today']}, later {p['later']}, "
         f"never {p['never']}; multi-line groups {p['multiline_groups']}")
    change_state(store, "demo", "start", now, "demo")
    run = dry_run(store, "demo", now.replace(minute=0, second=0, microsecond=0),
                  now.replace(minute=0, second=0, microsecond=0) + _dt.timedelta(hours=24), now)
    echo("  dry run, next 24 h (UTC hour: dialable leads):")
    echo("    " + "  ".join(f"{h['at'][11:13]}h:{h['dialable']}" for h in run["hours"]))



# ---------------------------------------------------------------------------------
# the live part: a predictive campaign over real SIP on loopback
# ---------------------------------------------------------------------------------

# area codes by zone, from New York westwards to Guam: one of them is inside the demo's
# calling hours (10-19 h local) at most hours of the day, not from about 09:00 to 14:00
# UTC (15:00 in northern winter): ``callable_offset`` says how far a clock must be shifted
AREAS = [("212", "America/New_York"), ("312", "America/Chicago"), ("303", "America/Denver"),
         ("213", "America/Los_Angeles"), ("907", "America/Anchorage"), ("808", "Pacific/Honolulu"),
         ("671", "Pacific/Guam")]
# the carrier simulator's odds, per number (fixed by its digits, so a retry meets the same person)
CARRIER_ODDS = [("answer", 35), ("no-answer", 35), ("busy", 18), ("invalid", 6), ("congestion", 6)]
CARRIER_SCENARIOS = {"answer": "carrier_answer.xml", "no-answer": "uas_ring_forever.xml", "busy": "uas_busy.xml",
                     "invalid": "uas_not_found.xml", "congestion": "uas_unavailable.xml"}
SCENARIO_DIR = pathlib.Path(__file__).resolve().parent / "sip" / "scenarios"


def callable_area(now):
    """An area code whose local time is well inside calling hours at ``now``
    (a weekday when one is available), or None."""
    import zoneinfo
    fallback = None
    for area, zone in AREAS:
        local = now.astimezone(zoneinfo.ZoneInfo(zone))
        if 10 <= local.hour < 19:
            if local.weekday() < 5:
                return area
            fallback = fallback or area
    return fallback


def callable_offset(now, horizon_h=48):
    """The smallest forward shift of ``now`` (whole seconds) at which ``callable_area``
    has an area: 0 when it has one at ``now``, else to the start of the first hour when
    it has (a weekday zone preferred there, as ever). A test and demo aid (``dialer demo
    --clock-offset auto``, the SIP tests): they run the dialer on a clock shifted by it
    (``dialer.clock.ShiftedReactor``); ``dialer run`` never shifts its clock."""
    import datetime as _dt
    import math
    if callable_area(now) is not None:
        return 0
    top = now.replace(minute=0, second=0, microsecond=0)
    t = next(t for t in (top + _dt.timedelta(hours=h) for h in range(1, horizon_h + 1)) if callable_area(t))
    return math.ceil((t - now).total_seconds())


def sip_missing():
    """Why the live part cannot run here, or None."""
    import shutil
    try:
        import pjsua2  # noqa: F401
    except ImportError:
        return "pjsua2 is not installed (pip install pjsua2-python==2.10.post6; Linux x86_64, Python 3.9-3.12)"
    if not shutil.which("sipp"):
        return "SIPp is not installed (Debian package sip-tester: scripts/demo.sh installs it)"
    return None


def _free_port():
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _sipp(scenario, workdir, *args):
    import shutil
    import subprocess
    port = _free_port()
    cmd = [shutil.which("sipp"), "-sf", str(SCENARIO_DIR / scenario), "-i", "127.0.0.1", "-p", str(port),
           "-mi", "127.0.0.1", "-mp", str(_free_port()), "-nostdin", *map(str, args)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=str(workdir))
    return proc, port


def _live_setup(store, now, echo, agents, leads):
    from campaigns.leads import import_list
    from campaigns.store import add_user, change_state, create_campaign
    from dialer.agents import set_pin
    area = callable_area(now)
    if area is None:
        return None
    users = []
    for k in range(1, agents + 1):
        name, pin = f"agent{k}", f"{4817 + 1111 * k}"
        add_user(store, "demo", name, "agent", now, "demo")
        set_pin(store, "demo", name, pin, now, "demo")
        users.append((name, pin))
    greeting = _tone_wav(store.files_dir / "demo-greeting.wav", seconds=3.0)
    create_campaign(store, "demo-live", "demo", now, "demo", caller_id="+1 212 555 0000", greeting=greeting)
    path = store.files_dir / "demo-live.csv"
    # first some that must never be dialled (they show in the "blocked by rule" figures:
    # company DNC, national DNC, toll-free), then the list, spaced so no two are a run
    rows = ["212 555 0150", "212 555 0142", "1-800-222-1222"]
    rows += [f"{area}555{(1000 + 37 * i) % 10000:04d}" for i in range(leads)]
    path.write_text("phone\n" + "\n".join(rows) + "\n")
    out = import_list(store, path, "demo-live", now, "demo")
    change_state(store, "demo-live", "start", now, "demo")
    echo(f"== live campaign demo-live: predictive, {out['imported']} leads in area {area} (+ numbers that must "
         f"never be dialled), {agents} agents, G.SHDSL 10 lines")
    return users


def run_live(store, echo, seconds=None, agents=4, leads=400, reactor=None):
    """Run a predictive campaign over real SIP on loopback until Ctrl-C/SIGTERM, or for
    ``seconds``: SIPp as the carrier (one process per outcome, numbers routed by odds),
    as the agents' phones and as the registrar of the account's trunk ``demo-carrier``
    (for the browser's "check registration"), pjsua2 workers under this Twisted reactor
    (whatever else listens on it, e.g. the web server, is served meanwhile). Returns
    the final figures, or None when it was skipped (the reactor did not run)."""
    import datetime as _dt
    import tempfile

    from twisted.internet import defer, task

    from dialer.engine import Dialer, route_by_odds, wind_down
    from dialer.journal import Journal
    from dialer.sip.pool import WorkerPool

    why = sip_missing()
    if why:
        echo(f"== live dialing skipped: {why}")
        return None
    if reactor is None:
        from twisted.internet import reactor
    now = _dt.datetime.fromtimestamp(reactor.seconds(), _dt.timezone.utc)
    users = _live_setup(store, now, echo, agents, leads)
    if users is None:
        echo("== live dialing skipped: no demo time zone is inside calling hours right now")
        return None
    work = pathlib.Path(tempfile.mkdtemp(prefix="dialer-demo-"))
    procs, carriers = [], {}
    for outcome, scenario in CARRIER_SCENARIOS.items():
        extra = ["-rtp_echo"] if outcome == "answer" else []
        proc, port = _sipp(scenario, work, *extra)
        procs.append(proc)
        carriers[outcome] = f"127.0.0.1:{port}"
    echo("== carrier simulator (SIPp on loopback): " + ", ".join(f"{o} {w}%" for o, w in CARRIER_ODDS))
    _demo_trunk(store, now, work, procs, echo)
    ports = [_free_port() for _ in range(4)]
    holder = {}
    journal = Journal(store.path, reactor=reactor)  # the dialer's writes and reads: one store thread
    journal.start()
    pool = WorkerPool(reactor, lambda ev: holder["d"].on_event(ev), ports, max_workers=4)
    dialer = holder["d"] = Dialer(reactor, store, "demo-live", pool, route_by_odds(carriers, CARRIER_ODDS),
                                  tick=0.5, cps=5, wrap_limit_s=8.0, record_dir=store.files_dir / "recordings",
                                  journal=journal, run=journal.call)
    result = {}
    stop = defer.Deferred()

    def request_stop(why="signal"):
        if not stop.called:
            stop.callback(why)
        elif reactor.running:
            echo("== stopped at once (asked twice)")
            reactor.stop()
    _stop_on_signals(reactor, request_stop)
    if seconds is not None:
        reactor.callLater(seconds, lambda: stop.called or stop.callback("time"))

    def line(t0):
        st = dialer.stats.as_dict()
        c = dialer.floor.counts(dialer.cid)
        echo(f"  {reactor.seconds() - t0:5.0f} s  agents {c.agents} (ready {c.ready}, talking {c.talking}, "
             f"wrap-up {c.wrap_up})  dials {st['dials']}  answers {st['answers']}  connects {st['connects']}  "
             f"abandons {st['abandons']} ({100 * st['abandon_rate']:.1f} % of live answers in "
             f"{st['abandon_window_hours']:g} h)  billable {st['billable_minutes']} min")

    async def main():
        pool.start(1)
        while not any(w.ready for w in pool.workers.values()):
            await task.deferLater(reactor, 0.1, lambda: None)
        agent_port = next(iter(pool.workers))
        for name, pin in users:
            procs.append(_sipp("uac_agent.xml", work, f"127.0.0.1:{agent_port}", "-s", f"agent-{name}-{pin}",
                               "-m", "1", "-rtp_echo")[0])
        t_login = reactor.seconds()
        while dialer.floor.counts(dialer.cid).agents < len(users) and reactor.seconds() - t_login < 20:
            await task.deferLater(reactor, 0.1, lambda: None)
        echo(f"== {dialer.floor.counts(dialer.cid).agents} agents logged in over SIP; dialing "
             + (f"for {seconds} s" if seconds is not None else "until Ctrl-C"))
        t0 = reactor.seconds()
        ticker = task.LoopingCall(line, t0)
        ticker.clock = reactor
        ticker.start(10.0, now=False)
        dialer.start()
        why = await stop
        echo(f"== stopping ({why}): no new dials, the calls in progress end")
        reactor.callLater(90, overdue)  # the demo never hangs
        ticker.stop()
        # the shift is over: calls in progress end now, every record in the database
        await wind_down(reactor, [dialer], drain_s=0, settle_s=30, journal=journal)
        line(t0)
        result.update(_summary(store, dialer, t0, reactor.seconds()))
        await pool.stop()

    def done(_):
        if reactor.running:
            reactor.stop()

    def failed(f):
        echo(f"== live dialing failed: {f.getErrorMessage()}")
        done(None)

    reactor.callWhenRunning(lambda: defer.ensureDeferred(main()).addCallbacks(done, failed))

    def overdue():
        echo("== live dialing did not wind down in time: stopped")
        done(None)
    try:
        reactor.run()  # signal handlers: SIGCHLD tells Twisted a worker process ended
    finally:
        journal.stop()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    if result:
        _print_summary(result, echo)
    return result


def _demo_trunk(store, now, work, procs, echo):
    """A SIPp registrar (digest, answers every REGISTER) and the demo account's trunk
    ``demo-carrier`` registering there: the browser's "check registration" measures it.
    The live campaign dials the carrier simulator directly, not through this trunk."""
    from dialer.trunks import add_trunk
    from campaigns.users import new_one_time_password
    password = new_one_time_password()
    proc, port = _sipp("uas_registrar.xml", work, "-key", "user", "demo", "-key", "password", password)
    procs.append(proc)
    add_trunk(store, "demo", "demo-carrier", f"127.0.0.1:{port}", now, "demo", username="demo", password=password,
              register=True, cps=5, caller_id="+1 212 555 0000")
    echo(f"== trunk demo-carrier: registers at a SIPp registrar on 127.0.0.1:{port} (check it in the browser: "
         f"Account, Trunks)")


def _summary(store, dialer, t0, t1):
    import datetime as _dt
    from dialer.agents import occupancy
    from dialer.cdr import campaign_stats
    since = _dt.datetime.fromtimestamp(t0, _dt.timezone.utc)
    until = _dt.datetime.fromtimestamp(t1, _dt.timezone.utc)
    occ = occupancy(store, dialer.cid, since, until)
    vals = [v["occupancy"] for v in occ.values() if v["occupancy"] is not None]
    blocked = {r["disposition"]: r["n"] for r in store.query(
        "SELECT disposition, COUNT(*) AS n FROM leads WHERE campaign_id = ? AND status = 'blocked' "
        "GROUP BY disposition ORDER BY disposition", (dialer.cid,))}
    return {"stats": dialer.stats.as_dict(), "cdr": campaign_stats(store, "demo-live", since - _dt.timedelta(minutes=1)),
            "blocked_by_rule": blocked, "occupancy": (sum(vals) / len(vals)) if vals else None,
            "cdrs": store.query_one("SELECT COUNT(*) AS n FROM cdrs WHERE campaign_id = ?", (dialer.cid,))["n"]}


def _print_summary(r, echo):
    st = r["stats"]
    echo("== summary")
    echo(f"  dials {st['dials']}, live answers {st['answers']}, connected to agents {st['connects']}, "
         f"abandoned {st['abandons']}, opt-outs {st['opt_outs']}")
    echo(f"  abandon rate {100 * st['abandon_rate']:.1f} %: {st['window_abandons']} abandoned of "
         f"{st['window_live_answers']} live answers in the rule set's {st['abandon_window_hours']:g} h window "
         f"(dialer.abandons)")
    echo("  dispositions: " + ", ".join(f"{k} {v}" for k, v in sorted(st["dispositions"].items())))
    occ = r["occupancy"]
    echo(f"  agent occupancy {100 * occ:.0f} %" if occ is not None else "  agent occupancy: n/a")
    echo(f"  CDRs written {r['cdrs']}; billable minutes {st['billable_minutes']}; answer-to-agent connect "
         f"p50 {st['connect_ms_p50']} ms, max {st['connect_ms_max']} ms")
    echo("  blocked by rule (never dialled): " + (", ".join(f"{k} {v}" for k, v in r["blocked_by_rule"].items()) or "none"))

"""``dialer run``: the real service, from the configured database.

One process: the Twisted reactor owns every campaign that is running (a
``dialer.engine.Dialer`` each), one pool of SIP workers on consecutive UDP ports
(agents' phones call the first: ``sip:agent-<user>-<pin>@<ip>:<port>``, or
``agent-<user>-<pin>-<campaign>`` to choose among their account's campaigns),
each campaign's SIP trunk (registered when the trunk requires it, the time
measured, an alert above 100 ms), and the write journal (every CDR, agent event,
opt-out and registration goes through it: nothing is lost while the database is
locked, and the reactor never waits on it).

It stops after ``seconds`` or at SIGINT/SIGTERM: no new dials, calls in progress
may finish for ``drain_s``, then the rest are hung up, wrap-ups close, every CDR
is written (or kept in the journal for the next start).
"""

import datetime as _dt

from twisted.internet import defer, task
from twisted.logger import Logger

from .engine import wind_down
from core.errors import DialerError, InputError

log = Logger(namespace="dialer.service")

# Python's GIL switch interval while ``dialer run`` runs (the default is 5 ms): when
# the store thread is busy in Python (a claim's rules checks, the journal's writes)
# the reactor thread gets the GIL back sooner. bench/reactor_latency.py, 4 pairs of
# runs on 2 shared cores: max lateness 31-41 ms at 1 ms against 46-80 ms at 5 ms,
# p99 15.5-19.1 ms against 17.3-21.9 ms, the same leads claimed per second.
SWITCH_INTERVAL_S = 0.001


class Service:
    """The running dialer: campaigns, their trunks, the worker pool, the journal."""

    def __init__(self, reactor, store, journal, campaigns=None, ip="127.0.0.1", port=5070, workers=4,
                 record_dir=None, tick=0.5, registrar_options=None, node="local", credit_slice_s=None,
                 credit_margin_s=None):
        from .credit import SLICE_S, CreditGuard
        from .gate import AccountGate, AgentSessions, LoginGuard
        from .sip.pool import WorkerPool
        self.reactor, self.store, self.journal = reactor, store, journal
        self.node = node
        # account-wide guarantees, shared by every campaign loop: lines per account,
        # CPS per trunk, one phone session per user, the back-off of wrong PINs
        self.gate, self.sessions, self.login_guard = AccountGate(), AgentSessions(), LoginGuard()
        # the balance guard: each call's slices reserved against its account's balance,
        # across every campaign of the account (dialer.credit; its reads on the store thread)
        self.credit = CreditGuard(reactor, journal.call, slice_s=credit_slice_s or SLICE_S,
                                  margin_s=credit_margin_s)
        self.verify = pin_checker(reactor)  # the PIN checks of every campaign, a few at a time
        self.names = campaigns
        rows = self._campaigns(campaigns)
        self.pool = WorkerPool(reactor, self.on_event, range(port, port + workers), max_workers=workers, ip=ip)
        self.ip, self.port = ip, port
        self.tick, self.record_dir, self.registrar_options = tick, record_dir, registrar_options or {}
        self.dialers = {}  # campaign id -> Dialer
        self.registrars = {}  # trunk id -> TrunkRegistrar
        self.owner = {}  # agent leg key -> Dialer
        for row in rows:
            self._add(row)
        self.stopping = False
        self.watcher = None
        self.skipped = set()  # campaigns that could not join (logged once)
        self.looking = {}  # agent phone key -> its events that came while its user was looked up

    def _add(self, row, setup=None):
        """A Dialer for a running campaign, through its trunk (registered if new).
        ``setup``: what ``campaign_setup`` read for it (on the store thread); read here
        when None (at start, before the reactor runs)."""
        from .engine import Dialer
        from .trunks import TrunkRegistrar
        if setup is None:
            setup = campaign_setup(self.store, row, self._now())
        trunk, account, hopper, pacing = setup
        new_trunk = trunk.id not in self.registrars
        if new_trunk:
            self.registrars[trunk.id] = TrunkRegistrar(self.reactor, self.pool, trunk, on_result=self._registration,
                                                       **self.registrar_options)
        self.gate.set_capacity(account["id"], account["line_capacity"])
        d = self.dialers[row["id"]] = Dialer(
            self.reactor, self.store, row["id"], self.pool, route=trunk.uri, tick=self.tick, cps=trunk.cps,
            record_dir=self.record_dir, journal=self.journal, registrar=self.registrars[trunk.id],
            consumer=f"dialer-{row['id']}@{self.node}", gate=self.gate, sessions=self.sessions,
            login_guard=self.login_guard, verify=self.verify, node=self.node, run=self.journal.call,
            read=self.journal.read,
            account=account, hopper=hopper, pacing=pacing, credit=self.credit)
        return d, new_trunk

    def _now(self):
        return _dt.datetime.fromtimestamp(self.reactor.seconds(), _dt.timezone.utc)

    def look_for_campaigns(self):
        """Campaigns started while the service runs join it (checked every few seconds,
        the campaigns read on the store thread). Returns a Deferred (None when there is
        nothing to look for)."""
        if self.stopping or self.names:
            return None
        d = self.journal.call(campaigns_to_join, frozenset(self.dialers), self._now())
        d.addCallbacks(self._join, self._not_looked)
        return d

    def _not_looked(self, f):
        if f.check(DialerError):  # the database is unavailable: the next look tries again
            log.debug("running campaigns not read: {err}", err=f.getErrorMessage())
        else:
            log.failure("looking for running campaigns", f)

    def _join(self, found):
        for row, setup, err in found:
            if self.stopping or row["id"] in self.dialers:
                continue
            try:
                if err is not None:
                    raise err
                d, new_trunk = self._add(row, setup)
            except DialerError as e:
                if row["id"] not in self.skipped:
                    log.warn("campaign {name} cannot join the running dialer: {err}", name=row["name"], err=str(e))
                    self.skipped.add(row["id"])
                continue
            if new_trunk:
                self.registrars[d.trunk.id].start()
            d.start()
            log.info("campaign {name} started: it joins the running dialer", name=row["name"])

    def _campaigns(self, names):
        if names:
            rows = []
            for name in names:
                row = self._campaign_named(name)
                if row["state"] != "running":
                    raise InputError(f"campaign {name!r} is {row['state']}: start it first "
                                     f"('dialer campaign start {name}')")
                rows.append(row)
            return rows
        rows = self.store.query("SELECT * FROM campaigns WHERE state = 'running' ORDER BY id")
        if not rows:
            raise InputError("no campaign is running: start one with 'dialer campaign start NAME'")
        return rows

    def _campaign_named(self, name):
        """A campaign by ``NAME`` (unique across accounts) or ``ACCOUNT/NAME``."""
        if "/" in name:
            acc, camp = name.split("/", 1)
            rows = self.store.query("SELECT c.* FROM campaigns c JOIN accounts a ON a.id = c.account_id "
                                    "WHERE a.name = ? AND c.name = ?", (acc, camp))
        else:
            rows = self.store.query("SELECT * FROM campaigns WHERE name = ?", (name,))
        if not rows:
            raise InputError(f"no campaign named {name!r}")
        if len(rows) > 1:
            raise InputError(f"{len(rows)} accounts have a campaign named {name!r}: write ACCOUNT/{name}")
        return rows[0]

    # -- events -----------------------------------------------------------------------
    def on_event(self, ev):
        name, key = ev.get("ev"), ev.get("key")
        if name == "refused":
            log.warn("agent phone {who} refused on port {w}: {why}; give it another worker's port "
                     "({ip}:{first}-{last})", who=ev.get("to_user"), w=ev.get("worker"), why=ev.get("reason"),
                     ip=self.ip, first=self.port, last=self.port + len(self.pool.ports) - 1)
            return
        if name == "worker_died":
            for d in self.dialers.values():
                d.on_event(ev)
            return
        if name == "incoming":
            if ev.get("tie"):
                return
            # the user is looked up on the store thread; the phone's events that come
            # meanwhile (its ACK, its hang-up) wait for the answer
            self.looking[key] = []
            d = self.journal.read(login_matches, ev.get("to_user") or "")
            d.addCallbacks(self._route_login, self._login_not_looked, callbackArgs=(ev,), errbackArgs=(ev,))
            return
        if key in self.looking:
            self.looking[key].append(ev)
            return
        d = self.owner.get(key) or self._dialer_for_key(key)
        if d is not None:
            d.on_event(ev)
            if name == "ended":
                self.owner.pop(key, None)

    def _route_login(self, matches, ev):
        """The agent login's user is known: hand the phone to its campaign loop, then
        the events that came while it was looked up."""
        key = ev["key"]
        later = self.looking.pop(key, [])
        if any(e.get("ev") == "ended" for e in later):  # the phone hung up meanwhile
            return
        d, user = self._dialer_for_login(ev.get("to_user") or "", matches)
        if d is None:
            self.pool.hangup(key, code=404)
            return
        d.on_event(dict(ev, agent_user=user))
        if d.owns(key):
            self.owner[key] = d
        for e in later:
            self.on_event(e)

    def _login_not_looked(self, f, ev):
        key = ev["key"]
        later = self.looking.pop(key, [])
        log.warn("agent login {who!r} not checked, the database is unavailable ({err})", who=ev.get("to_user"),
                 err=f.getErrorMessage())
        if not any(e.get("ev") == "ended" for e in later):
            self.pool.hangup(key, code=503)

    def _dialer_for_key(self, key):
        """The campaign loop an event belongs to (call ids are unique: each loop knows its own)."""
        if not key:
            return None
        for d in self.dialers.values():
            if d.owns(key):
                return d
        return None

    def _dialer_for_login(self, to_user, found):
        """The campaign an agent's phone logs in to, and the user name: ``agent-<user>-<pin>``
        joins the running campaign of the user's account (the only one, else the one
        named by a fourth part ``-<campaign>``). User names are unique per account only:
        ``<user>.<account>`` names the account, and is needed when accounts running here
        share the user name. ``found``: what ``login_matches`` read for ``to_user``.
        Returns (Dialer, user) or (None, None)."""
        parts = to_user.split("-", 3)
        if len(parts) < 3 or parts[0] != "agent":
            log.warn("a call to {who!r} is not an agent login (agent-<user>-<pin>): refused", who=to_user)
            return None, None
        ident = parts[1]
        running = {d.account_id for d in self.dialers.values()}
        qualified, matches = found
        matches = [m for m in matches if m[0] in running]
        if len(matches) > 1:
            log.warn("agent login of {user!r}: {n} accounts running here have that user; dial "
                     "agent-{user}.<account>-<pin>", user=ident, n=len(matches))
            return None, None
        mine = [d for d in self.dialers.values() if matches and d.account_id == matches[0][0]]
        if len(parts) == 4:
            mine = [d for d in mine if d.campaign["name"] == parts[3]]
        if len(mine) == 1:
            return mine[0], matches[0][1]
        who = ident if not qualified else f"{matches[0][1]} of that account" if matches else ident
        if not mine:
            log.warn("agent login of {user!r}: no running campaign of the user's account here", user=who)
        else:
            log.warn("agent login of {user!r}: the account runs {n} campaigns here; dial agent-<user>-<pin>-<campaign>",
                     user=who, n=len(mine))
        return None, None

    # -- running ----------------------------------------------------------------------
    async def start(self):
        # every worker now: agents' phones log in on any of their ports (12 phones each)
        self.pool.start(len(self.pool.ports))
        t0 = self.reactor.seconds()
        while not all(w.ready for w in self.pool.workers.values()) or not self.pool.workers:
            if self.reactor.seconds() - t0 > 30:
                down = sorted(set(self.pool.ports) - {w.port for w in self.pool.workers.values() if w.ready})
                raise DialerError(f"the SIP workers on {self.ip} port(s) {', '.join(map(str, down))} did not start "
                                  f"(port in use?)")
            await task.deferLater(self.reactor, 0.05, lambda: None)
        for reg in self.registrars.values():
            reg.start()
        for d in self.dialers.values():
            d.start()
        self.watcher = task.LoopingCall(self.look_for_campaigns)
        self.watcher.clock = self.reactor
        self.watcher.start(5.0, now=False)
        log.info("dialer running: {n} campaign(s); agents log in at sip:agent-<user>-<pin>@{ip}:{port} "
                 "(or ports up to {last}, 12 phones each)", n=len(self.dialers), ip=self.ip, port=self.port,
                 last=self.port + len(self.pool.ports) - 1)

    def _registration(self, result):
        r = {k: result[k] for k in ("trunk_id", "worker", "code", "reason", "ms", "alert")}
        self.journal.put("registration", {"at": _iso(self.reactor.seconds()), "registration": r})

    async def stop(self, drain_s=30.0):
        """No new dials; calls in progress get ``drain_s`` to finish, then are hung up;
        wrap-ups close; the workers exit."""
        self.stopping = True
        if self.watcher is not None and self.watcher.running:
            self.watcher.stop()
        await wind_down(self.reactor, list(self.dialers.values()), drain_s)
        for d in self.dialers.values():  # the agents' phones: the shift is over
            for key in list(d.agent_legs):
                self.pool.hangup(key)
        t2 = self.reactor.seconds()
        while any(d.agent_legs for d in self.dialers.values()) and self.reactor.seconds() - t2 < 10:
            await task.deferLater(self.reactor, 0.1, lambda: None)
        for reg in self.registrars.values():
            reg.stop()
        self.credit.stop()
        await self.pool.stop()

    def status(self):
        names = {d.account_id: d.account["name"] for d in self.dialers.values()}
        return {"campaigns": {d.campaign["name"]: d.stats.as_dict() for d in self.dialers.values()},
                "trunks": {reg.trunk.name: _plain(reg.status()) for reg in self.registrars.values()},
                "balances": {names.get(acc, acc): st for acc, st in self.credit.status().items() if st["guarded"]},
                "journal_backlog": self.journal.backlog}


def pin_checker(reactor, at_once=None, check=None):
    """``verify(pin, stored) -> Deferred``: the PIN's scrypt check (about 0.1 s of CPU)
    in the reactor's thread pool, at most ``at_once`` at a time (default: one fewer
    than the machine's cores, at least one); ``check(pin, stored) -> Deferred`` replaces
    the thread pool's (tests). Twenty phones logging in together would
    otherwise run twenty checks at once, and on a small machine the reactor thread
    waits for a core (bench/reactor_latency.py: on 2 cores, the probe's p99 lateness
    during 20 logins was 27-43 ms with 10 at once, 6-9 ms with one)."""
    import os

    from twisted.internet import defer, threads

    from .agents import verify_pin
    sem = defer.DeferredSemaphore(at_once or max(1, (os.cpu_count() or 2) - 1))
    if check is None:
        def check(pin, stored):
            return threads.deferToThreadPool(reactor, reactor.getThreadPool(), verify_pin, pin, stored)

    def verify(pin, stored):
        return sem.run(check, pin, stored)
    return verify


def campaign_setup(store, row, now):
    """What a running campaign's loop reads from the store before it can start, read
    here (on the store thread once the service runs) so that the Dialer's
    construction reads nothing: (trunk, account row, its hopper, its pacing rules at
    ``now``, an aware datetime)."""
    from campaigns.hopper import Hopper

    from .jurisdiction import pacing_rules
    from .trunks import campaign_trunk
    trunk = campaign_trunk(store, row)
    if trunk is None:
        raise InputError(f"campaign {row['name']!r} has no SIP trunk: add one to its account with "
                         f"'dialer trunk add NAME --account ACCOUNT --proxy HOST:PORT'")
    account = store.query_one("SELECT * FROM accounts WHERE id = ?", (row["account_id"],))
    hopper = Hopper(store, row["id"])
    return trunk, account, hopper, pacing_rules(store, hopper.campaign, now)


def campaigns_to_join(store, known, now):
    """On the store thread: the running campaigns whose id is not in ``known``, each as
    (row, its ``campaign_setup`` at ``now`` or None, the DialerError that keeps it out
    or None)."""
    out = []
    for row in store.query("SELECT * FROM campaigns WHERE state = 'running' ORDER BY id"):
        if row["id"] in known:
            continue
        try:
            out.append((row, campaign_setup(store, row, now), None))
        except DialerError as e:
            out.append((row, None, e))
    return out


def login_matches(store, to_user):
    """On the store thread: the users an agent login ``agent-<ident>-<pin>...`` may
    name, as (qualified, [(account id, user name)]): ``<user>.<account>`` names the
    account (qualified); else every account's user of that name."""
    parts = to_user.split("-", 3)
    if len(parts) < 3 or parts[0] != "agent":
        return False, []
    ident = parts[1]
    matches = []
    for i, ch in enumerate(ident):
        if ch == ".":
            matches += [(r["account_id"], r["name"]) for r in store.query(
                "SELECT u.account_id, u.name FROM users u JOIN accounts a ON a.id = u.account_id "
                "WHERE a.name = ? AND u.name = ?", (ident[i + 1:], ident[:i]))]
    if matches:
        return True, matches
    return False, [(r["account_id"], r["name"]) for r in store.query(
        "SELECT account_id, name FROM users WHERE name = ?", (ident,))]


def _plain(obj):
    """JSON-ready (instants as ISO text)."""
    import json
    return json.loads(json.dumps(obj, default=str))


def _iso(seconds):
    from core.timeutil import to_iso
    return to_iso(_dt.datetime.fromtimestamp(seconds, _dt.timezone.utc))


def recover_unclean_stop(journal, db_path, now, node="local"):
    """Before dialing: the journal of the last run applied (all of it, or the service
    does not start), then every call an unclean stop interrupted gets its CDR and the
    leads held without a call go back (``dialer.opencalls.recover``)."""
    from .opencalls import recover
    from core.store import Store
    journal.apply_pending()
    if journal.backlog:
        raise DialerError(f"not starting: {journal.backlog} write(s) of the last run could not be applied "
                          f"({journal.failing}); nothing is dialled until they are")
    store = Store(db_path, timeout=5.0)
    try:
        return recover(store, now, node)
    finally:
        store.close()


def run_service(db_path, echo, campaigns=None, ip="127.0.0.1", port=5070, workers=4, seconds=None,
                record_dir=None, drain_s=30.0, status_every=30.0, reactor=None, node="local"):
    """``dialer run``: run the running campaigns until ``seconds`` pass or SIGINT/SIGTERM.
    Returns the final status (dict)."""
    from twisted.logger import globalLogBeginner, textFileLogObserver
    import sys

    from .journal import Journal
    from core.store import Store
    if reactor is None:
        from twisted.internet import reactor
    store = Store(db_path, timeout=0.2)  # reads at start and as a campaign's loop is built
    journal = Journal(store.path, reactor=reactor)  # the one store thread: every write, and the loop's reads
    recovered = recover_unclean_stop(journal, store.path, _dt.datetime.fromtimestamp(reactor.seconds(), _dt.timezone.utc),
                                     node)
    if recovered["calls"] or recovered["leads_released"]:
        echo(f"== recovered after an unclean stop: {recovered['calls']} interrupted call(s) recorded as failed, "
             f"{recovered['leads_released']} lead(s) given back to the hopper")
    svc = Service(reactor, store, journal, campaigns=campaigns, ip=ip, port=port, workers=workers,
                  record_dir=record_dir, node=node)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    journal.start()
    # webhooks: the outbox's deliveries, claimed and recorded on the journal's store thread
    from .webhooks import Deliverer
    hooks = Deliverer(reactor, journal.call)
    result = {}

    def line():
        st = svc.status()
        for name, c in st["campaigns"].items():
            echo(f"  {name}: dials {c['dials']}, answers {c['answers']}, connects {c['connects']}, abandons "
                 f"{c['abandons']}; abandoned {c['window_abandons']} of {c['window_live_answers']} live answers "
                 f"({100 * c['abandon_rate']:.1f} %) in the last {c['abandon_window_hours']:g} h; "
                 f"billable {c['billable_minutes']} min")
        from billing.money import fmt
        for name, b in st["balances"].items():
            echo(f"  account {name}: balance {fmt(b['balance'])} (floor {fmt(b['floor'])}), {fmt(b['reserved'])} "
                 f"reserved for {b['calls_in_progress']} call(s) in progress, {fmt(b['available'])} available; "
                 f"{b['held_back']} dial(s) held back, {b['ended_at_boundary']} call(s) ended at a slice boundary"
                 + (f"; {b['blocked']}" if b["blocked"] else ""))
        if st["journal_backlog"]:
            echo(f"  {st['journal_backlog']} write(s) waiting for the database")

    async def main():
        hooks.start()
        await svc.start()
        echo(f"== dialer running: {', '.join(d.campaign['name'] for d in svc.dialers.values())}; agents log in at "
             f"sip:agent-<user>-<pin>@{ip}:{port}" + (f" (or ports up to {port + workers - 1}; 12 phones per port)"
                                                       if workers > 1 else " (12 phones at most)"))
        ticker = task.LoopingCall(line)
        ticker.clock = reactor
        ticker.start(status_every, now=False)
        done = defer.Deferred()
        svc.stop_requested = done
        if seconds is not None:
            reactor.callLater(seconds, lambda: done.called or done.callback("time"))
        why = await done
        echo(f"== stopping ({why}): no new dials, calls in progress may finish for {drain_s:g} s")
        ticker.stop()
        await svc.stop(drain_s)
        await hooks.stop()  # the attempts in flight end (each within its 10 s time-out) and are recorded
        result.update(svc.status())

    def request_stop(*_):
        d = getattr(svc, "stop_requested", None)
        if d is not None and not d.called:
            d.callback("signal")
        elif d is None:
            reactor.callLater(0, reactor.stop)

    def finished(_):
        if reactor.running:
            reactor.stop()

    def failed(f):
        result["error"] = f.getErrorMessage()
        finished(None)

    import signal
    reactor.callWhenRunning(lambda: defer.ensureDeferred(main()).addCallbacks(finished, failed))
    reactor.callWhenRunning(lambda: (signal.signal(signal.SIGINT, lambda *a: reactor.callFromThread(request_stop)),
                                     signal.signal(signal.SIGTERM, lambda *a: reactor.callFromThread(request_stop))))
    switch = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        reactor.run()
    finally:
        sys.setswitchinterval(switch)
    left = journal.stop(timeout=30)
    store.close()
    if "error" in result:
        raise DialerError(result["error"])
    result["journal_left"] = left
    line_out = result.get("campaigns", {})
    for name, c in line_out.items():
        echo(f"== {name}: dials {c['dials']}, live answers {c['answers']}, connected {c['connects']}, abandoned "
             f"{c['abandons']}, dispositions {c['dispositions']}, billable {c['billable_minutes']} min")
    for name, b in result.get("balances", {}).items():
        echo(f"== account {name}: balance guard: {b['dials']} call(s) reserved for, {b['held_back']} dial request(s) "
             f"held back at the floor, {b['extended']} slice(s) added to calls in progress, "
             f"{b['ended_at_boundary']} call(s) ended at a slice boundary, {b['unpriced']} lead(s) without a rate")
    if left:
        echo(f"== {left} write(s) kept in the journal for the next start (the database was unavailable)")
    return result

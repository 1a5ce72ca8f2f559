"""SIP trunks per account (proxy, credentials, caller ID), their registration, measured.

Store side (pure functions of ``store``, ``now``, ``actor``, like ``campaigns.store``):
``add_trunk``, ``list_trunks``, ``show_trunk``, ``remove_trunk``, ``use_trunk``,
``get_trunk`` / ``campaign_trunk`` (a ``Trunk``, password included, for the dialer),
``record_registration`` / ``registrations``. Passwords are stored (digest needs them)
and never returned, printed or audited.

Twisted side: ``TrunkRegistrar`` registers a trunk through a ``WorkerPool``, applies
its own deadline, retries with a back-off, logs one line per fault and an alert when
the measured registration time is above the terms of service's 100 ms.
``check_trunk`` registers once with a worker of its own (``dialer trunk check``);
``register_once`` is its part on a reactor that is already running (the web server's).
"""

import dataclasses
import datetime as _dt
import re
import socket
from decimal import Decimal, InvalidOperation

from twisted.logger import Logger

from core.errors import DialerError, InputError, NotFound
from core.timeutil import to_iso
from core.retry import Backoff
from core import audit
from rules.numbers import normalise

log = Logger(namespace="dialer.trunks")

ALERT_MS = 100.0          # the terms of service: registration above this harms voice quality
MAX_CPS = Decimal(1000)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


# --------------------------------------------------------------------------------- the trunk

@dataclasses.dataclass(frozen=True)
class Trunk:
    id: int
    account_id: int
    name: str
    proxy: str                      # host[:port], no scheme
    username: object = None
    password: object = dataclasses.field(default=None, repr=False)
    realm: object = None
    register: bool = False
    cps: float = 10.0
    caller_id: object = None

    def uri(self, number):
        """The request URI of a call to ``number`` (E.164, e.g. +12125550100)."""
        return f"sip:{number}@{self.proxy}"

    @property
    def registrar_uri(self):
        return f"sip:{self.proxy}"

    @property
    def pool_account(self):
        """The name of this trunk's account in the SIP workers (unique across accounts),
        or None when calls need no account of their own (no registration, no credentials)."""
        if not self.register and not self.username:
            return None
        return f"{self.name}#{self.id}"

    @classmethod
    def from_row(cls, row):
        return cls(id=row["id"], account_id=row["account_id"], name=row["name"], proxy=row["proxy"],
                   username=row["username"], password=row["password"], realm=row["realm"],
                   register=bool(row["register"]), cps=float(row["cps"]), caller_id=row["caller_id"])


def parse_proxy(text):
    """'sip:host:5060' / 'host' / '10.0.0.1:5099' -> 'host[:port]' (InputError otherwise)."""
    raw = (text or "").strip()
    value = raw[4:] if raw.lower().startswith("sip:") else raw
    if not value:
        raise InputError("proxy is empty: give HOST or HOST:PORT (e.g. sip.carrier.example:5060)")
    host, port = value, None
    if value.count(":") == 1:
        host, port = value.split(":")
    if not _HOST.match(host) or len(host) > 253:
        raise InputError(f"proxy {raw!r} is not HOST[:PORT] (e.g. sip.carrier.example:5060 or 192.0.2.10)")
    if port is not None:
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise InputError(f"proxy {raw!r}: the port must be a number from 1 to 65535")
        return f"{host}:{int(port)}"
    return host


def _cps(value):
    try:
        v = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise InputError(f"cps {value!r} is not a number (calls per second, e.g. 10)") from None
    if not v.is_finite() or v <= 0 or v > MAX_CPS:
        raise InputError(f"cps {value} must be above 0 and at most {MAX_CPS} calls per second")
    return v.normalize() if v == v.to_integral_value() else v


def _public(row, account=None):
    """A trunk row as shown: never the password."""
    out = {"account": account, "name": row["name"], "proxy": row["proxy"], "username": row["username"],
           "password_set": bool(row["password"]), "realm": row["realm"], "register": bool(row["register"]),
           "cps": float(row["cps"]), "caller_id": row["caller_id"], "created_at": row["created_at"],
           "updated_at": row["updated_at"]}
    if account is None:
        out.pop("account")
    return out


def _account(store, account):
    """The account row: ``account`` is a name, an id, or None for the installation's only account."""
    from core.tenancy import resolve_account
    return resolve_account(store, account)


def _row(store, account_id, account, name):
    row = store.query_one("SELECT * FROM trunks WHERE account_id = ? AND name = ?", (account_id, name))
    if row is None:
        raise NotFound(f"no trunk named {name!r} in account {account!r} "
                       f"(add one with: dialer trunk add NAME --account {account} --proxy HOST:PORT)")
    return row


# --------------------------------------------------------------------------------- store

def add_trunk(store, account, name, proxy, now, actor, username=None, password=None, realm=None,
              register=False, cps=10, caller_id=None, region="US"):
    """Add a trunk to an account. Returns it as shown (without the password)."""
    from core.tenancy import account_numbers
    acc = _account(store, account)
    account = acc["name"]
    name = (name or "").strip()
    if not name:
        raise InputError("trunk name is empty")
    if not _NAME.match(name):
        raise InputError(f"trunk name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    proxy = parse_proxy(proxy)
    rate = _cps(cps)
    username = (username or "").strip() or None
    password = password or None
    realm = (realm or "").strip() or None
    if register and not (username and password):
        missing = " and ".join(w for w, v in (("a user name", username), ("a password", password)) if not v)
        raise InputError(f"trunk {name!r} registers (--register), so it needs {missing} "
                         f"(--user, --password or --password-env)")
    if password and not username:
        raise InputError(f"trunk {name!r}: a password needs a user name (--user)")
    cid = None
    if caller_id:
        f = normalise(str(caller_id), region)
        if f.e164 is None:
            raise InputError(f"caller ID {caller_id!r} is not a valid phone number: {f.error}")
        if f.e164 not in account_numbers(store, acc["id"]):
            raise InputError(f"caller ID {f.e164} is not a number of account {account!r} "
                             f"(add it with: dialer number add {f.e164} --account {account})")
        cid = f.e164
    with store.transaction():
        if store.query_one("SELECT id FROM trunks WHERE account_id = ? AND name = ?", (acc["id"], name)):
            raise InputError(f"trunk {name!r} already exists in account {account!r}")
        store.execute(
            "INSERT INTO trunks (account_id, name, proxy, username, password, realm, register, cps, caller_id, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (acc["id"], name, proxy, username, password, realm, 1 if register else 0, str(rate), cid, to_iso(now)))
        audit.append(store, now, actor, "trunk.add", f"account:{account}", "",
                     {"trunk": name, "proxy": proxy, "username": username, "password_set": bool(password),
                      "realm": realm, "register": bool(register), "cps": str(rate), "caller_id": cid},
                     account_id=acc["id"])
    return _public(_row(store, acc["id"], account, name), account)


def list_trunks(store, account=None):
    acc = _account(store, account)
    account = acc["name"]
    rows = store.query("SELECT * FROM trunks WHERE account_id = ? ORDER BY name", (acc["id"],))
    out = []
    for r in rows:
        t = _public(r, account)
        last = registrations(store, r["id"], limit=1)
        t["last_registration"] = last[0] if last else None
        out.append(t)
    return out


def show_trunk(store, account, name, last=10):
    acc = _account(store, account)
    account = acc["name"]
    row = _row(store, acc["id"], account, name)
    out = _public(row, account)
    out["campaigns"] = [r["name"] for r in store.query(
        "SELECT name FROM campaigns WHERE account_id = ? AND trunk = ? ORDER BY name", (acc["id"], name))]
    out["registrations"] = registrations(store, row["id"], limit=last)
    return out


def remove_trunk(store, account, name, now, actor):
    """Remove a trunk (and its registration history). Refused while a campaign uses it."""
    acc = _account(store, account)
    account = acc["name"]
    with store.transaction():
        row = _row(store, acc["id"], account, name)
        users = [r["name"] for r in store.query(
            "SELECT name FROM campaigns WHERE account_id = ? AND trunk = ? ORDER BY name", (acc["id"], name))]
        if users:
            raise InputError(f"trunk {name!r} is used by campaign(s) {', '.join(users)}: "
                             f"choose another with: dialer trunk use OTHER --campaign NAME")
        store.execute("DELETE FROM trunk_registrations WHERE trunk_id = ?", (row["id"],))
        store.execute("DELETE FROM trunks WHERE id = ?", (row["id"],))
        audit.append(store, now, actor, "trunk.remove", f"account:{account}", "", {"trunk": name},
                     account_id=acc["id"])
    return {"account": account, "trunk": name, "removed": True}


def get_trunk(store, account, name):
    """The ``Trunk`` (password included: for the SIP side only, never to print)."""
    acc = _account(store, account)
    return Trunk.from_row(_row(store, acc["id"], acc["name"], name))


def use_trunk(store, campaign, trunk_name, now, actor, account=None):
    """Make a campaign (id, or name within ``account``) dial through one of its account's trunks."""
    from campaigns.store import get_campaign
    camp = get_campaign(store, campaign, account)
    campaign = camp["name"]
    acc = store.query_one("SELECT name FROM accounts WHERE id = ?", (camp["account_id"],))
    with store.transaction():
        _row(store, camp["account_id"], acc["name"], trunk_name)
        store.execute("UPDATE campaigns SET trunk = ?, updated_at = ? WHERE id = ?",
                      (trunk_name, to_iso(now), camp["id"]))
        audit.append(store, now, actor, "campaign.trunk", f"campaign:{campaign}", "",
                     {"from": camp.get("trunk"), "to": trunk_name}, account_id=camp["account_id"])
    return {"campaign": campaign, "account": acc["name"], "trunk": trunk_name, "was": camp.get("trunk")}


def campaign_trunk(store, campaign_row):
    """The campaign's ``Trunk``: its chosen one, else its account's only trunk, else None."""
    account_id = campaign_row["account_id"]
    chosen = campaign_row.get("trunk")
    if chosen:
        row = store.query_one("SELECT * FROM trunks WHERE account_id = ? AND name = ?", (account_id, chosen))
        if row is None:
            raise NotFound(f"campaign {campaign_row['name']!r} dials through trunk {chosen!r}, which no longer "
                           f"exists: pick another with: dialer trunk use NAME --campaign {campaign_row['name']}")
        return Trunk.from_row(row)
    rows = store.query("SELECT * FROM trunks WHERE account_id = ? ORDER BY name", (account_id,))
    if not rows:
        return None
    if len(rows) == 1:
        return Trunk.from_row(rows[0])
    raise InputError(f"campaign {campaign_row['name']!r}: its account has {len(rows)} trunks "
                     f"({', '.join(r['name'] for r in rows)}); pick one with: "
                     f"dialer trunk use NAME --campaign {campaign_row['name']}")


def record_registration(store, trunk_id, at, worker, code, reason, ms, alert):
    """Journal one registration outcome (``ms``: measured, null when none was)."""
    with store.transaction():
        cur = store.execute(
            "INSERT INTO trunk_registrations (trunk_id, at, worker, code, reason, ms, alert) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (trunk_id, to_iso(at) if isinstance(at, _dt.datetime) else at,
             None if worker is None else str(worker), int(code or 0), str(reason or ""),
             None if ms is None else round(float(ms), 2), 1 if alert else 0))
    return cur.lastrowid


def record_result(store, result):
    """``record_registration`` from a ``TrunkRegistrar`` result dict."""
    return record_registration(store, result["trunk_id"], result["at"], result["worker"], result["code"],
                               result["reason"], result["ms"], result["alert"])


def registrations(store, trunk_id, limit=10):
    """The last registrations of a trunk, newest first."""
    rows = store.query("SELECT at, worker, code, reason, ms, alert FROM trunk_registrations WHERE trunk_id = ? "
                       "ORDER BY at DESC, id DESC LIMIT ?", (trunk_id, int(limit)))
    for r in rows:
        r["alert"] = bool(r["alert"])
    return rows


# --------------------------------------------------------------------------------- registering

def describe_failure(code, reason, proxy, deadline_s=None):
    """The cause of a failed registration, in words an operator can act on."""
    code = int(code or 0)
    what = f"{code} {reason}".strip() if code else (reason or "no answer")
    if deadline_s is not None:
        return f"registration timed out after {deadline_s:g} s: proxy {proxy} unreachable?"
    if code in (401, 403, 407):
        return f"registration to {proxy} refused: {what} \u2014 check the user name and password"
    if code == 408:
        return f"registration to {proxy} timed out ({what}): proxy {proxy} unreachable?"
    if code == 0:
        return f"registration to {proxy} impossible: {reason}"
    if 500 <= code < 600:
        return f"registration to {proxy} failed: {what} \u2014 the carrier's registrar is in trouble"
    return f"registration to {proxy} failed: {what}"


class TrunkRegistrar:
    """Keeps one trunk registered through a ``WorkerPool``.

    ``on_result(dict)`` gets every measured outcome, per worker::

        {"trunk", "trunk_id", "account" (the pool account), "proxy", "worker" (SIP port),
         "at" (aware UTC datetime, from the reactor), "ok", "code", "reason",
         "ms" (measured in the worker, REGISTER + digest challenge; None if none),
         "alert" (ms above ``alert_ms``), "cause" (None, or the failure in words),
         "attempt" (1, 2, ... per worker), "retry_in" (s, or None)}

    Failures (no answer by ``deadline_s``, 401/403/407, 5xx, ...) give ONE log line per
    fault (the same fault again on a retry is not logged again) and a retry after
    ``backoff_s``, doubling to ``backoff_max_s`` (``backoff_s=None``: no retry).
    """

    def __init__(self, reactor, pool, trunk, on_result=None, deadline_s=5.0, backoff_s=30.0,
                 backoff_max_s=300.0, alert_ms=ALERT_MS, expires=300):
        self.reactor, self.pool, self.trunk = reactor, pool, trunk
        self.on_result = on_result
        self.deadline_s, self.backoff_s, self.backoff_max_s = deadline_s, backoff_s, backoff_max_s
        self.alert_ms = alert_ms
        self.expires = expires
        self.account = trunk.pool_account
        self.timers = {}            # worker port -> IDelayedCall (deadline of its REGISTER)
        self.attempts = {}          # worker port -> attempts so far
        self.timed_out = set()      # ports whose attempt passed the deadline (a late failure is stale)
        self.failures = 0           # consecutive failed results (all workers)
        self.backoff = None if backoff_s is None else Backoff(backoff_s, backoff_max_s)  # since the last success
        self.retry = None           # IDelayedCall
        self.logged_cause = None
        self.last = None            # the last result dict
        self.started = False

    # -- life cycle -------------------------------------------------------------------

    def start(self):
        self.started = True
        if self.account is None:
            return
        t = self.trunk
        self.pool.add_registration(self.account, t.registrar_uri, t.username, t.password, realm=t.realm,
                                   expires=self.expires, register=t.register, listener=self._event)

    def stop(self):
        self.started = False
        for call in list(self.timers.values()) + [self.retry]:
            if call is not None and call.active():
                call.cancel()
        self.timers.clear()
        self.retry = None
        if self.account is not None:
            self.pool.remove_registration(self.account)

    @property
    def registered(self):
        """True when calls can go through the trunk: registered in at least one worker
        (a trunk that does not register: always)."""
        if not self.trunk.register:
            return True
        return bool(self.pool.registered_in(self.account))

    def room(self):
        """Calls that can be placed through the trunk now (``pool.room``)."""
        if self.account is None:
            return self.pool.room()
        return self.pool.room(account=self.account)

    def dial(self, key, number, **fields):
        """Dial ``number`` (E.164) through the trunk; returns the worker's port."""
        if self.account is not None:
            fields["account"] = self.account
        if self.trunk.caller_id and "caller_id" not in fields:
            fields["caller_id"] = self.trunk.caller_id
        return self.pool.dial(key, self.trunk.uri(number), **fields)

    def status(self):
        workers = self.pool.account_states(self.account) if self.account else {}
        return {"trunk": self.trunk.name, "proxy": self.trunk.proxy, "register": self.trunk.register,
                "registered": self.registered, "account": self.account, "workers": workers,
                "failures": self.failures, "retry_pending": self.retry is not None and self.retry.active(),
                "last": self.last}

    # -- pool events ------------------------------------------------------------------

    def _event(self, ev):
        name, port = ev.get("ev"), ev.get("worker")
        if name == "registering":
            self._cancel_timer(port)
            self.timed_out.discard(port)
            self.attempts[port] = self.attempts.get(port, 0) + 1
            if self.trunk.register and self.deadline_s:
                self.timers[port] = self.reactor.callLater(self.deadline_s, self._deadline, port)
        elif name == "registered":
            self._cancel_timer(port)
            if int(ev.get("code") or 0) == 200:
                self.timed_out.discard(port)
                self._succeeded(port, ev)
            elif port in self.timed_out:
                log.debug("trunk {trunk}: late answer {code} from worker {port} ignored (already timed out)",
                          trunk=self.trunk.name, code=ev.get("code"), port=port)
            else:
                self._failed(port, int(ev.get("code") or 0), ev.get("reason") or "",
                             describe_failure(ev.get("code"), ev.get("reason") or "", self.trunk.proxy))
        elif name == "registration_lost":
            self._cancel_timer(port)
            self.timed_out.discard(port)

    def _cancel_timer(self, port):
        call = self.timers.pop(port, None)
        if call is not None and call.active():
            call.cancel()

    def _deadline(self, port):
        self.timers.pop(port, None)
        state = self.pool.account_states(self.account).get(port)
        if state is None or state.get("code") is not None:
            return                                  # the worker is gone, or it answered
        self.timed_out.add(port)
        self._failed(port, 408, f"no answer within {self.deadline_s:g} s",
                     describe_failure(408, "", self.trunk.proxy, deadline_s=self.deadline_s))

    # -- outcomes ---------------------------------------------------------------------

    def _now(self):
        return _dt.datetime.fromtimestamp(self.reactor.seconds(), _dt.timezone.utc)

    def _result(self, port, ok, code, reason, ms, alert, cause, retry_in=None):
        r = {"trunk": self.trunk.name, "trunk_id": self.trunk.id, "account": self.account,
             "proxy": self.trunk.proxy, "worker": port, "at": self._now(), "ok": ok, "code": code,
             "reason": reason, "ms": ms, "alert": alert, "cause": cause,
             "attempt": self.attempts.get(port, 1), "retry_in": retry_in}
        self.last = r
        if self.on_result is not None:
            try:
                self.on_result(r)
            except Exception:
                log.failure("on_result raised for trunk {trunk}", trunk=self.trunk.name)
        return r

    def _succeeded(self, port, ev):
        ms = ev.get("ms")
        was_failing = self.failures > 0
        if ms is None and not was_failing and self.trunk.register:
            return                                  # a refresh: nothing new to say
        self.failures = 0
        if self.backoff is not None:
            self.backoff.reset()
        self.logged_cause = None
        if self.retry is not None and self.retry.active() and not self._failing_workers():
            self.retry.cancel()
            self.retry = None
        alert = ms is not None and ms > self.alert_ms
        if alert:
            log.warn("ALERT trunk {trunk}: registration took {ms:.0f} ms, above the {limit:.0f} ms the terms "
                     "of service require for good voice quality (registrar {proxy}, worker {port})",
                     trunk=self.trunk.name, ms=ms, limit=self.alert_ms, proxy=self.trunk.proxy, port=port)
        elif was_failing:
            log.info("trunk {trunk}: registered again at {proxy} ({ms} ms)", trunk=self.trunk.name,
                     proxy=self.trunk.proxy, ms=ms)
        self._result(port, True, int(ev.get("code") or 200), ev.get("reason") or "OK", ms, alert, None)

    def _failing_workers(self):
        return [p for p, st in self.pool.account_states(self.account).items() if st.get("code") != 200]

    def _failed(self, port, code, reason, cause):
        self.failures += 1
        retry_in = None
        if self.backoff is not None and self.started:
            if self.retry is None or not self.retry.active():
                retry_in = self.backoff.next()
                self.retry = self.reactor.callLater(retry_in, self._retry)
            else:
                retry_in = max(0.0, self.retry.getTime() - self.reactor.seconds())
        if cause != self.logged_cause:
            self.logged_cause = cause
            then = f"; retrying in {retry_in:g} s" if retry_in is not None else ""
            log.error("trunk {trunk}: {cause}{then}", trunk=self.trunk.name, cause=cause, then=then)
        self._result(port, False, code, reason, None, False, cause, retry_in)

    def _retry(self):
        self.retry = None
        if not self.started:
            return
        try:
            self.pool.reregister(self.account)
        except KeyError:
            pass


# --------------------------------------------------------------------------------- check (CLI)

def _free_udp_port(ip="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((ip, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def register_once(reactor, trunk, timeout=5.0, port=None, alert_ms=ALERT_MS):
    """Register ``trunk`` once from a SIP worker of its own (a free loopback port) on
    ``reactor``, which must be running (or about to run). A Deferred that fires, once
    the worker has exited, with ``("result", r)`` (the ``TrunkRegistrar`` result dict,
    ok or not) or ``("error", why)`` (the worker could not start). Nothing blocks: the
    worker is a child process of the reactor (``spawnProcess``), so the web server calls
    this on its own reactor while it serves."""
    from twisted.internet import defer
    from dialer.sip.pool import WorkerPool

    done = defer.Deferred()
    outcome = {}

    def finish(key, value):
        if outcome:
            return
        outcome[key] = value
        if guard.active():
            guard.cancel()
        d = pool.stop(timeout=5)
        d.addBoth(lambda _: done.callback((key, value)))

    def on_event(ev):
        if ev.get("ev") == "worker_died" and not outcome:
            finish("error", f"the SIP worker could not start: {ev.get('why')}")

    pool = WorkerPool(reactor, on_event, [port or _free_udp_port()], max_workers=1)
    reg = TrunkRegistrar(reactor, pool, trunk, on_result=lambda r: finish("result", r), deadline_s=timeout,
                         backoff_s=None, alert_ms=alert_ms)
    guard = reactor.callLater(timeout + 30, finish, "error", "the SIP worker did not start in time")

    def go():
        try:
            reg.start()
            pool.start(1)
        except DialerError as e:                    # the port was taken meanwhile (PortInUse)
            finish("error", str(e))
    reactor.callWhenRunning(go)
    return done


def check_trunk_prepare(store, account, name):
    """What a check needs, read from the store: ``(account name, Trunk)``."""
    account = _account(store, account)["name"]
    return account, get_trunk(store, account, name)


def check_trunk_finish(store, account, trunk, outcome, alert_ms=ALERT_MS):
    """Record the outcome of :func:`register_once` and return it as ``dialer trunk
    check`` shows it; a failure is recorded, then raised as a ``DialerError`` with the
    cause (a worker that could not start records nothing)."""
    key, value = outcome
    if key == "error":
        raise DialerError(f"trunk {trunk.name}: {value}", code="sip-worker")
    r = value
    record_result(store, r)
    if not r["ok"]:
        raise DialerError(f"trunk {trunk.name}: {r['cause']}", code="trunk-registration")
    return {"account": account, "trunk": trunk.name, "proxy": trunk.proxy, "registered": True, "ok": True,
            "ms": r["ms"], "alert": r["alert"], "alert_ms": alert_ms, "code": r["code"], "reason": r["reason"],
            "worker": r["worker"], "at": to_iso(r["at"])}


def not_registering(account, trunk):
    """The answer of a check of a trunk that does not register (nothing to measure)."""
    return {"account": account, "trunk": trunk.name, "proxy": trunk.proxy, "registered": None, "ok": True,
            "ms": None, "alert": False, "code": None,
            "reason": "this trunk does not register (no --register): nothing to check"}


def check_trunk(store, account, name, now, actor, timeout=5.0, port=None, alert_ms=ALERT_MS):
    """``dialer trunk check``: register the trunk once from a worker of its own (a free
    loopback port, a reactor of its own, run here: the main thread of a process without
    a reactor of its own), record the outcome and return it. A failure is recorded, then
    raised as a ``DialerError`` with the cause. A server already running a reactor calls
    :func:`check_trunk_prepare`, :func:`register_once` on its reactor and
    :func:`check_trunk_finish` instead (the web's "check registration")."""
    account, trunk = check_trunk_prepare(store, account, name)
    if not trunk.register:
        return not_registering(account, trunk)
    from twisted.internet.epollreactor import EPollReactor

    reactor = EPollReactor()
    box = {}

    def got(outcome):
        box["outcome"] = outcome
        reactor.stop()
    register_once(reactor, trunk, timeout=timeout, port=port, alert_ms=alert_ms).addCallback(got)
    reactor.run()
    return check_trunk_finish(store, account, trunk, box["outcome"], alert_ms=alert_ms)

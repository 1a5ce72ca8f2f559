"""SIP trunks: the store (validation, no password ever shown), the registrar against
real SIPp registrars and real pjsua2 workers (measured time, alert, wrong credentials,
unreachable proxy, worker replacement), dialing through a trunk, and the CLI."""

import datetime as dt
import json
import os
import signal

import pytest
from click.testing import CliRunner
from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher

from campaigns.store import add_number, create_account, create_campaign
from dialer import trunks
from core.errors import InputError, NotFound
from dialer.sip import protocol
from dialer.sip.pool import NotRegistered, WorkerPool
from core import audit
from sip_harness import IP, free_udp_port, needs_sip

NOW = dt.datetime(2026, 11, 27, 15, 0, tzinfo=dt.timezone.utc)
SECRET = "s3cret-Pa55"


@pytest.fixture
def acct(store):
    create_account(store, "acme", NOW, "tester")
    add_number(store, "acme", "+1 212 555 0100", NOW, "tester")
    return "acme"


def _snapshot(store):
    return (store.query("SELECT * FROM trunks ORDER BY id"), store.query("SELECT COUNT(*) AS n FROM audit_log"))


# --------------------------------------------------------------------------------- store

def test_add_list_show_never_give_the_password(store, acct):
    out = trunks.add_trunk(store, acct, "carrier-a", "sip:sip.carrier.example:5060", NOW, "tester",
                           username="acme1", password=SECRET, register=True, cps="12.5",
                           caller_id="(212) 555-0100")
    assert out["proxy"] == "sip.carrier.example:5060" and out["register"] is True
    assert out["cps"] == 12.5 and out["caller_id"] == "+12125550100" and out["password_set"] is True
    assert "password" not in out
    listed = trunks.list_trunks(store, acct)
    shown = trunks.show_trunk(store, acct, "carrier-a")
    for obj in (out, listed, shown, audit.entries(store)):
        assert SECRET not in json.dumps(obj, default=str)
    assert [t["name"] for t in listed] == ["carrier-a"]
    assert shown["registrations"] == [] and shown["campaigns"] == []
    (entry,) = audit.entries(store, action_prefix="trunk.")
    assert entry["action"] == "trunk.add" and entry["detail"]["password_set"] is True
    t = trunks.get_trunk(store, acct, "carrier-a")
    assert t.password == SECRET and SECRET not in repr(t)
    assert t.uri("+12125550199") == "sip:+12125550199@sip.carrier.example:5060"
    assert t.cps == 12.5


@pytest.mark.parametrize("kw, message", [
    (dict(proxy="sip.example.com:0"), "the port must be a number from 1 to 65535"),
    (dict(proxy="sip.example.com:70000"), "the port must be a number from 1 to 65535"),
    (dict(proxy="bad host:5060"), "is not HOST[:PORT]"),
    (dict(proxy=""), "proxy is empty"),
    (dict(register=True, username="u"), "needs a password"),
    (dict(register=True), "needs a user name and a password"),
    (dict(password="p"), "a password needs a user name"),
    (dict(cps="0"), "must be above 0 and at most 1000"),
    (dict(cps="1001"), "must be above 0 and at most 1000"),
    (dict(cps="fast"), "is not a number"),
    (dict(caller_id="+1 212 555 0199"), "caller ID +12125550199 is not a number of account 'acme'"),
    (dict(caller_id="12"), "is not a valid phone number"),
    (dict(name="no spaces"), "use letters, digits"),
])
def test_add_trunk_refuses_bad_input_and_changes_nothing(store, acct, kw, message):
    args = dict(name="t1", proxy="127.0.0.1:5060")
    args.update(kw)
    before = _snapshot(store)
    with pytest.raises(InputError) as e:
        trunks.add_trunk(store, acct, args.pop("name"), args.pop("proxy"), NOW, "tester", **args)
    assert message in str(e.value)
    assert _snapshot(store) == before


def test_duplicate_and_unknown(store, acct):
    trunks.add_trunk(store, acct, "t1", "127.0.0.1", NOW, "tester")
    with pytest.raises(InputError, match="already exists"):
        trunks.add_trunk(store, acct, "t1", "127.0.0.1", NOW, "tester")
    with pytest.raises(NotFound, match="no trunk named 'nope' in account 'acme'"):
        trunks.show_trunk(store, acct, "nope")
    with pytest.raises(NotFound, match="no account named"):
        trunks.list_trunks(store, "nobody")


def test_campaign_trunk_choice(store, acct):
    create_account(store, "other", NOW, "tester")
    trunks.add_trunk(store, "other", "theirs", "10.0.0.1", NOW, "tester")
    create_campaign(store, "spring", acct, NOW, "tester")
    camp = lambda: store.query_one("SELECT * FROM campaigns WHERE name = 'spring'")  # noqa: E731
    assert trunks.campaign_trunk(store, camp()) is None
    trunks.add_trunk(store, acct, "a", "10.0.0.2:5060", NOW, "tester")
    assert trunks.campaign_trunk(store, camp()).name == "a"          # the account's only trunk
    trunks.add_trunk(store, acct, "b", "10.0.0.3", NOW, "tester")
    with pytest.raises(InputError, match="pick one with: dialer trunk use NAME --campaign spring"):
        trunks.campaign_trunk(store, camp())
    with pytest.raises(NotFound, match="no trunk named 'theirs' in account 'acme'"):
        trunks.use_trunk(store, "spring", "theirs", NOW, "tester")     # another account's trunk
    out = trunks.use_trunk(store, "spring", "b", NOW, "tester")
    assert out == {"campaign": "spring", "account": "acme", "trunk": "b", "was": None}
    assert trunks.campaign_trunk(store, camp()).proxy == "10.0.0.3"
    with pytest.raises(InputError, match="used by campaign"):
        trunks.remove_trunk(store, acct, "b", NOW, "tester")
    assert trunks.remove_trunk(store, acct, "a", NOW, "tester")["removed"]


def test_record_registration_and_read_back(store, acct):
    trunks.add_trunk(store, acct, "t1", "127.0.0.1:5099", NOW, "tester", username="u", password="p", register=True)
    t = trunks.get_trunk(store, acct, "t1")
    trunks.record_registration(store, t.id, NOW, 5070, 200, "OK", 143.27, True)
    trunks.record_registration(store, t.id, NOW + dt.timedelta(seconds=30), 5070, 403, "Forbidden", None, False)
    regs = trunks.show_trunk(store, acct, "t1")["registrations"]
    assert [(r["code"], r["ms"], r["alert"]) for r in regs] == [(403, None, False), (200, 143.27, True)]
    assert trunks.list_trunks(store, acct)[0]["last_registration"]["code"] == 403


# --------------------------------------------------------------------------------- SIP: registrar

def _run(test, timeout=60):
    from test_sip_pool import run
    return run(test, timeout)


def _events(reactor):
    from test_sip_pool import Events
    return Events(reactor)


@pytest.fixture
def trunk_log():
    lines = []

    def observer(event):
        if event.get("log_namespace") == "dialer.trunks":
            lines.append(formatEvent(event))
    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


def _trunk(proxy, user="trunk1", password="s3cret", register=True, name="carrier-a", tid=1, caller_id=None):
    return trunks.Trunk(id=tid, account_id=1, name=name, proxy=proxy, username=user, password=password,
                        register=register, cps=10.0, caller_id=caller_id)


class Results:
    """on_result collector; ``wait(pred)`` gives a Deferred for the next matching result."""

    def __init__(self, reactor):
        self.reactor, self.seen, self.waiters = reactor, [], []

    def __call__(self, r):
        self.seen.append(r)
        for w in list(self.waiters):
            pred, d, timer = w
            if pred(r):
                self.waiters.remove(w)
                timer.cancel()
                d.callback(r)

    def wait(self, pred=lambda r: True, timeout=10):
        d = defer.Deferred()

        def expire():
            self.waiters.remove(entry)
            d.errback(AssertionError(f"no matching result within {timeout}s; seen {self.seen}"))
        entry = (pred, d, self.reactor.callLater(timeout, expire))
        self.waiters.append(entry)
        return d


def _registrar_args(user="trunk1", password="s3cret"):
    return ("-key", "user", user, "-key", "password", password)


@needs_sip
def test_registration_is_measured_and_recorded(sipp, store, acct, trunk_log):
    reg_sipp = sipp("uas_registrar.xml", *_registrar_args(), calls=1)
    trunks.add_trunk(store, acct, "carrier-a", f"{IP}:{reg_sipp.port}", NOW, "tester", username="trunk1",
                     password="s3cret", register=True)
    trunk = trunks.get_trunk(store, acct, "carrier-a")
    seen = {}

    async def scenario(reactor, events):
        results = Results(reactor)
        pool = WorkerPool(reactor, events, [free_udp_port()], max_workers=1)
        reg = trunks.TrunkRegistrar(reactor, pool, trunk, on_result=results)
        try:
            assert reg.registered is False
            reg.start()
            pool.start(1)
            r = await results.wait()
            seen["r"], seen["registered"], seen["status"] = r, reg.registered, reg.status()
            seen["room"] = reg.room()
        finally:
            reg.stop()
            await pool.stop()

    _run(scenario)
    r = seen["r"]
    assert r["ok"] and r["code"] == 200 and r["alert"] is False and r["cause"] is None
    assert 0 < r["ms"] < 100, r                      # REGISTER, 401, REGISTER again, 200 on loopback
    assert r["trunk"] == "carrier-a" and r["trunk_id"] == trunk.id and r["attempt"] == 1
    assert seen["registered"] is True and seen["room"] == 30
    assert seen["status"]["registered"] and seen["status"]["workers"][r["worker"]]["code"] == 200
    trunks.record_result(store, r)
    (row,) = trunks.show_trunk(store, acct, "carrier-a")["registrations"]
    assert row["code"] == 200 and row["ms"] == pytest.approx(r["ms"], abs=0.01) and row["worker"] == str(r["worker"])
    assert not any("refused" in line or "ALERT" in line for line in trunk_log)
    print(f"registration time: {r['ms']} ms")


@needs_sip
def test_wrong_credentials_fail_once_in_the_log_and_are_retried(sipp, trunk_log):
    reg_sipp = sipp("uas_registrar_401.xml", *_registrar_args())     # no -m: it answers every attempt
    trunk = _trunk(f"{IP}:{reg_sipp.port}", password="wrong")
    seen = {}

    async def scenario(reactor, events):
        results = Results(reactor)
        pool = WorkerPool(reactor, events, [free_udp_port()], max_workers=1)
        reg = trunks.TrunkRegistrar(reactor, pool, trunk, on_result=results, backoff_s=0.3, backoff_max_s=1.0)
        try:
            reg.start()
            pool.start(1)
            first = await results.wait()
            seen["registered"] = reg.registered
            t0 = reactor.seconds()
            second = await results.wait()
            seen["gap"] = reactor.seconds() - t0
            seen["first"], seen["second"] = first, second
            seen["status"] = reg.status()
            with pytest.raises(NotRegistered):
                pool.dial("x", "sip:+12125550100@127.0.0.1", account=trunk.pool_account)
            seen["room"] = pool.room(account=trunk.pool_account)
        finally:
            reg.stop()
            await pool.stop()

    _run(scenario)
    first, second = seen["first"], seen["second"]
    assert (first["ok"], first["code"], first["reason"]) == (False, 401, "Unauthorized")
    assert first["cause"] == (f"registration to {trunk.proxy} refused: 401 Unauthorized \u2014 "
                              f"check the user name and password")
    assert first["retry_in"] == pytest.approx(0.3)
    assert (second["code"], second["attempt"], second["retry_in"]) == (401, 2, pytest.approx(0.6))
    assert seen["gap"] >= 0.25                        # the retry waited for its back-off
    assert seen["registered"] is False and seen["status"]["registered"] is False
    assert seen["status"]["failures"] >= 2 and seen["room"] == 0
    faults = [line for line in trunk_log if "refused" in line]
    assert faults == [f"trunk carrier-a: registration to {trunk.proxy} refused: 401 Unauthorized \u2014 check "
                      f"the user name and password; retrying in 0.3 s"], trunk_log
    assert "wrong" not in " ".join(trunk_log)         # never the password


@needs_sip
def test_403_is_a_clear_refusal_too(sipp, trunk_log):
    reg_sipp = sipp("uas_registrar.xml", *_registrar_args(), calls=1)
    trunk = _trunk(f"{IP}:{reg_sipp.port}", password="wrong")
    seen = {}

    async def scenario(reactor, events):
        results = Results(reactor)
        pool = WorkerPool(reactor, events, [free_udp_port()], max_workers=1)
        reg = trunks.TrunkRegistrar(reactor, pool, trunk, on_result=results, backoff_s=30)
        try:
            reg.start()
            pool.start(1)
            seen["r"] = await results.wait()
        finally:
            reg.stop()
            await pool.stop()

    _run(scenario)
    assert seen["r"]["code"] == 403 and seen["r"]["retry_in"] == 30
    assert [line for line in trunk_log if "refused" in line] == [
        f"trunk carrier-a: registration to {trunk.proxy} refused: 403 Forbidden \u2014 check the user name "
        f"and password; retrying in 30 s"]


@needs_sip
def test_unreachable_proxy_times_out_at_the_deadline(trunk_log):
    dead = free_udp_port()                             # nothing listens there
    trunk = _trunk(f"{IP}:{dead}")
    seen = {}

    async def scenario(reactor, events):
        results = Results(reactor)
        pool = WorkerPool(reactor, events, [free_udp_port()], max_workers=1)
        reg = trunks.TrunkRegistrar(reactor, pool, trunk, on_result=results, deadline_s=0.5, backoff_s=0.2)
        try:
            reg.start()
            pool.start(1)
            await events.wait("ready")
            t0 = reactor.seconds()
            first = await results.wait()
            seen["elapsed"] = reactor.seconds() - t0
            seen["second"] = await results.wait()           # the retry times out too
            seen["first"], seen["registered"] = first, reg.registered
        finally:
            reg.stop()
            await pool.stop()

    _run(scenario)
    first = seen["first"]
    assert (first["ok"], first["code"]) == (False, 408)
    assert first["cause"] == f"registration timed out after 0.5 s: proxy {trunk.proxy} unreachable?"
    assert 0.45 <= seen["elapsed"] < 3
    assert seen["second"]["attempt"] == 2 and seen["registered"] is False
    assert [line for line in trunk_log if "timed out" in line] == [
        f"trunk carrier-a: registration timed out after 0.5 s: proxy {trunk.proxy} unreachable?; retrying in 0.2 s"]


@needs_sip
def test_a_slow_registrar_raises_the_alert(sipp, trunk_log):
    reg_sipp = sipp("uas_registrar_slow.xml", *_registrar_args(), calls=1)
    trunk = _trunk(f"{IP}:{reg_sipp.port}")
    seen = {}

    async def scenario(reactor, events):
        results = Results(reactor)
        pool = WorkerPool(reactor, events, [free_udp_port()], max_workers=1)
        reg = trunks.TrunkRegistrar(reactor, pool, trunk, on_result=results)
        try:
            reg.start()
            pool.start(1)
            seen["r"] = await results.wait()
            seen["registered"] = reg.registered
        finally:
            reg.stop()
            await pool.stop()

    _run(scenario)
    r = seen["r"]
    assert r["ok"] and r["alert"] is True and 150 <= r["ms"] < 1000 and seen["registered"]
    alerts = [line for line in trunk_log if "ALERT" in line]
    assert len(alerts) == 1
    assert (f"trunk carrier-a: registration took {r['ms']:.0f} ms, above the 100 ms the terms of service "
            f"require for good voice quality") in alerts[0]
    print(f"slow registration time: {r['ms']} ms")


@needs_sip
def test_a_replacement_worker_registers_again(sipp):
    reg_sipp = sipp("uas_registrar.xml", *_registrar_args())         # answers every registration
    trunk = _trunk(f"{IP}:{reg_sipp.port}")
    port = free_udp_port()
    seen = {}

    async def scenario(reactor, events):
        results = Results(reactor)
        pool = WorkerPool(reactor, events, [port], max_workers=1)
        reg = trunks.TrunkRegistrar(reactor, pool, trunk, on_result=results)
        try:
            reg.start()
            pool.start(1)
            await events.wait("ready", worker=port)
            first = await results.wait()
            victim = pool.workers[port].pid
            os.kill(victim, signal.SIGKILL)
            await events.wait("worker_died")
            seen["during"] = reg.registered
            again = await events.wait("ready", worker=port)
            second = await results.wait()
            seen.update(first=first, second=second, victim=victim, new_pid=again["pid"],
                        registered=reg.registered)
        finally:
            reg.stop()
            await pool.stop()

    _run(scenario)
    assert seen["first"]["ok"] and seen["second"]["ok"] and seen["second"]["ms"] is not None
    assert seen["during"] is False and seen["registered"] is True
    assert seen["new_pid"] != seen["victim"] and seen["second"]["worker"] == port


# --------------------------------------------------------------------------------- SIP: dialing

@needs_sip
def test_dials_through_an_account_go_only_to_registered_workers(sipp):
    # -m 1: the registrar answers one registration only; the second worker's goes unanswered
    reg_sipp = sipp("uas_registrar.xml", *_registrar_args(), calls=1)
    carrier = sipp("uas_answer.xml", calls=4)
    trunk = _trunk(f"{IP}:{reg_sipp.port}")
    ports = [free_udp_port(), free_udp_port()]
    seen = {}

    async def scenario(reactor, events):
        results = Results(reactor)
        pool = WorkerPool(reactor, events, ports, max_workers=2, calls_per_worker=3)
        reg = trunks.TrunkRegistrar(reactor, pool, trunk, on_result=results, deadline_s=30)
        acc = trunk.pool_account
        try:
            pool.start(1)
            await events.wait("ready", worker=ports[0])
            reg.start()
            ok = await results.wait()
            assert ok["worker"] == ports[0]
            pool.start(2)                                   # the second worker registers, unanswered
            await events.wait("ready", worker=ports[1])
            assert pool.registered_in(acc) == [ports[0]]
            assert pool.room() == 6 and pool.room(account=acc) == 3
            placed = [pool.dial(f"t{i}", carrier.uri, account=acc) for i in range(3)]
            assert placed == [ports[0]] * 3                 # never the idle, unregistered worker
            assert pool.room(account=acc) == 0
            assert len(pool.workers) == 2                   # no spawn: a worker is still registering
            assert pool.dial("plain", carrier.uri) == ports[1]   # dials without account: unchanged
            for key in ("t0", "t1", "t2", "plain"):
                await events.wait("answered", key=key)
            for key in ("t0", "t1", "t2", "plain"):
                pool.hangup(key)
                await events.wait("ended", key=key)
            seen["ok"] = True
        finally:
            reg.stop()
            await pool.stop()

    _run(scenario)
    assert seen["ok"]


@needs_sip
def test_room_starts_a_worker_when_the_registered_ones_are_full(sipp):
    reg_sipp = sipp("uas_registrar.xml", *_registrar_args())
    carrier = sipp("uas_answer.xml", calls=2)
    trunk = _trunk(f"{IP}:{reg_sipp.port}")
    ports = [free_udp_port(), free_udp_port()]
    seen = {}

    async def scenario(reactor, events):
        results = Results(reactor)
        pool = WorkerPool(reactor, events, ports, max_workers=2, calls_per_worker=1)
        reg = trunks.TrunkRegistrar(reactor, pool, trunk, on_result=results)
        acc = trunk.pool_account
        try:
            reg.start()
            pool.start(1)
            await results.wait()
            pool.dial("a", carrier.uri, account=acc)
            assert pool.room(account=acc) == 0                 # full: a second worker is started
            assert len(pool.workers) == 2
            assert pool.room(account=acc) == 0 and len(pool.workers) == 2   # only one
            r = await results.wait()
            assert r["ok"] and r["worker"] == ports[1]
            seen["room"] = pool.room(account=acc)
            assert pool.dial("b", carrier.uri, account=acc) == ports[1]
            for key in "ab":
                await events.wait("answered", key=key)
                pool.hangup(key)
                await events.wait("ended", key=key)
        finally:
            reg.stop()
            await pool.stop()

    _run(scenario)
    assert seen["room"] == 1


@needs_sip
@pytest.mark.parametrize("password, code, answered", [("s3cret", 200, True), ("wrong", 403, False)])
def test_invite_challenged_by_the_trunk_is_authenticated(sipp, password, code, answered):
    carrier = sipp("uas_invite_auth.xml", *_registrar_args(), calls=1)
    trunk = _trunk(f"{IP}:{carrier.port}", password=password, register=False, caller_id="+12125550100")
    seen = {}

    async def scenario(reactor, events):
        results = Results(reactor)
        pool = WorkerPool(reactor, events, [free_udp_port()], max_workers=1)
        reg = trunks.TrunkRegistrar(reactor, pool, trunk, on_result=results)
        try:
            reg.start()
            pool.start(1)
            await events.wait("registered", account=trunk.pool_account)
            assert reg.registered and reg.room() == 30
            reg.dial("call-1", "+12125550199", timeout_s=10)
            if answered:
                await events.wait("answered", key="call-1")
                pool.hangup("call-1")
            seen["ended"] = await events.wait("ended", key="call-1")
        finally:
            reg.stop()
            await pool.stop()

    _run(scenario)
    ended = seen["ended"]
    assert ended["code"] == code and ended["answered"] is answered
    assert protocol.disposition(ended) == ("answered" if answered else "failed")
    assert carrier.wait(10) == 0


# --------------------------------------------------------------------------------- CLI

def _cli(db_path, *args, env=None):
    from cli import main
    return CliRunner().invoke(main, ["--db", str(db_path), *args], env=env,
                              catch_exceptions=False)


def test_cli_trunk_add_list_show_use(db_path, store, acct):
    create_campaign(store, "spring", acct, NOW, "tester")
    r = _cli(db_path, "trunk", "add", "carrier-a", "--account", acct, "--proxy", "sip:127.0.0.1:5099",
             "--user", "acme1", "--password-env", "TRUNK_PW", "--register", "--cps", "5",
             "--caller-id", "2125550100", "--json", env={"TRUNK_PW": SECRET})
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["name"] == "carrier-a" and out["register"] and out["caller_id"] == "+12125550100"
    r = _cli(db_path, "trunk", "add", "carrier-b", "--account", acct, "--proxy", "10.0.0.1:99999")
    assert r.exit_code == 1
    assert r.output == "Error: proxy '10.0.0.1:99999': the port must be a number from 1 to 65535\n"
    r = _cli(db_path, "trunk", "add", "carrier-b", "--account", acct, "--proxy", "10.0.0.1", "--register",
             "--user", "u")
    assert r.exit_code == 1 and r.output.startswith("Error: trunk 'carrier-b' registers (--register), so it needs")
    r = _cli(db_path, "trunk", "list", "--account", acct)
    assert r.exit_code == 0 and "carrier-a" in r.output and "127.0.0.1:5099" in r.output
    r = _cli(db_path, "trunk", "list", "--account", acct, "--json")
    assert [json.loads(line)["name"] for line in r.output.splitlines()] == ["carrier-a"]
    r = _cli(db_path, "trunk", "show", "carrier-a", "--account", acct, "--json")
    assert json.loads(r.output)["registrations"] == []
    r = _cli(db_path, "trunk", "use", "carrier-a", "--campaign", "spring", "--json")
    assert json.loads(r.output)["trunk"] == "carrier-a"
    every = "".join(_cli(db_path, *a).output for a in (
        ("trunk", "list", "--account", acct), ("trunk", "list", "--account", acct, "--json"),
        ("trunk", "show", "carrier-a", "--account", acct), ("trunk", "show", "carrier-a", "--account", acct, "--json")))
    assert SECRET not in every


@needs_sip
def test_cli_trunk_check(db_path, store, acct, sipp):
    reg_sipp = sipp("uas_registrar.xml", *_registrar_args(), calls=1)
    trunks.add_trunk(store, acct, "good", f"{IP}:{reg_sipp.port}", NOW, "tester", username="trunk1",
                     password="s3cret", register=True)
    trunks.add_trunk(store, acct, "dead", f"{IP}:{free_udp_port()}", NOW, "tester", username="trunk1",
                     password="s3cret", register=True)
    r = _cli(db_path, "trunk", "check", "good", "--account", acct, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["ok"] and out["code"] == 200 and out["ms"] < 100 and out["alert"] is False
    r = _cli(db_path, "trunk", "check", "dead", "--account", acct, "--timeout", "0.5")
    assert r.exit_code == 1
    assert r.output == (f"Error: trunk dead: registration timed out after 0.5 s: proxy "
                        f"{trunks.get_trunk(store, acct, 'dead').proxy} unreachable?\n")
    regs = {name: trunks.show_trunk(store, acct, name)["registrations"] for name in ("good", "dead")}
    assert regs["good"][0]["code"] == 200 and regs["dead"][0]["code"] == 408
    print(f"trunk check registration time: {out['ms']} ms")

"""The running service's own store reads go through the store thread (the journal's
``call``), never the reactor: an agent login's user lookup, with the phone's events
held until it is known, and the look for campaigns started while the service runs.
Driven synchronously: the journal's ``process`` plays the store thread and fires the
Deferreds at once; the reactor is a ``task.Clock``."""

import datetime as _dt
import sqlite3

from twisted.internet import task

from campaigns.store import add_number, add_user, change_state, create_account, create_campaign
from core.store import Store
from dialer.journal import Journal
from dialer.service import Service
from dialer.trunks import add_trunk
from rules import service
from test_accounts_live import adsl  # noqa: F401 - the fixture

T0 = _dt.datetime(2026, 11, 24, 17, 0, tzinfo=_dt.timezone.utc)


class AtOnce:
    def callFromThread(self, f, *args, **kw):
        f(*args, **kw)


def setup(tmp_path):
    store = Store(tmp_path / "d.db")
    service.ensure_defaults(store, T0)
    for acc in ("acme", "zeta"):
        create_account(store, acc, T0, "t", lines=10)
        add_number(store, acc, "212 555 9999", T0, "t")
        add_user(store, acc, "alice", "agent", T0, "t")
        add_trunk(store, acc, "carrier", "127.0.0.1:5099", T0, "t")
    create_campaign(store, "spring", "acme", T0, "t", caller_id="212-555-9999", dial_mode="preview")
    change_state(store, "spring", "start", T0, "t", account="acme")
    add_user(store, "acme", "bob", "agent", T0, "t")
    journal = Journal(store.path, reactor=AtOnce(),
                      open_store=lambda: Store(store.path, timeout=0.05, migrate=False))
    svc = Service(task.Clock(), store, journal, port=5070, workers=1)
    svc.pool.hangups = []
    svc.pool.hangup = lambda key, code=None: svc.pool.hangups.append((key, code))
    return store, journal, svc


class NoReads:
    """The service's store, where any database access from the reactor fails the test."""

    def __init__(self, store):
        self.files_dir, self.path = store.files_dir, store.path

    def __getattr__(self, name):
        raise AssertionError(f"store.{name} used on the reactor thread")


def spy(dialer):
    """The events a campaign loop receives (and nothing else done with them)."""
    seen = []
    dialer.on_event = seen.append
    dialer.owns = lambda key: any(e.get("key") == key for e in seen)
    return seen


def test_a_login_is_looked_up_on_the_store_thread_and_the_phones_ack_waits_for_it(tmp_path):
    store, journal, svc = setup(tmp_path)
    (spring,) = svc.dialers.values()
    seen = spy(spring)
    svc.on_event({"ev": "incoming", "key": "p1", "to_user": "agent-bob-5828", "source": "127.0.0.1:1"})
    svc.on_event({"ev": "confirmed", "key": "p1"})  # the phone's ACK, before the lookup's answer
    assert seen == []  # nothing was read on the reactor thread
    journal.process()  # the store thread answers
    assert [(e["ev"], e.get("agent_user")) for e in seen] == [("incoming", "bob"), ("confirmed", None)]
    assert svc.owner["p1"] is spring and svc.looking == {}
    svc.on_event({"ev": "ended", "key": "p1"})  # routed as before once known
    assert seen[-1]["ev"] == "ended" and "p1" not in svc.owner


def test_a_phone_that_hangs_up_while_its_user_is_looked_up_reaches_no_loop(tmp_path):
    store, journal, svc = setup(tmp_path)
    (spring,) = svc.dialers.values()
    seen = spy(spring)
    svc.on_event({"ev": "incoming", "key": "p1", "to_user": "agent-bob-5828", "source": "127.0.0.1:1"})
    svc.on_event({"ev": "ended", "key": "p1"})
    journal.process()
    assert seen == [] and svc.pool.hangups == [] and svc.looking == {}


def test_an_unknown_agent_is_refused_with_404(tmp_path):
    store, journal, svc = setup(tmp_path)
    (spring,) = svc.dialers.values()
    seen = spy(spring)
    svc.on_event({"ev": "incoming", "key": "p1", "to_user": "agent-carol-1111", "source": "127.0.0.1:1"})
    journal.process()
    assert seen == [] and svc.pool.hangups == [("p1", 404)]


def test_a_login_goes_through_while_another_process_holds_the_write_lock(tmp_path):
    store, journal, svc = setup(tmp_path)
    (spring,) = svc.dialers.values()
    seen = spy(spring)
    other = sqlite3.connect(str(store.path), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock (a CLI import)
    svc._registration({"trunk_id": 1, "worker": 5070, "code": 200, "reason": "OK", "ms": 3, "alert": False})
    svc.on_event({"ev": "incoming", "key": "p1", "to_user": "agent-bob-5828", "source": "127.0.0.1:1"})
    journal.process()  # the registration's write waits for the lock; the user is read all the same
    assert [e["key"] for e in seen] == ["p1"] and svc.pool.hangups == []
    assert journal.backlog >= 1
    other.execute("ROLLBACK")
    other.close()


def test_a_login_the_database_cannot_check_is_refused_with_503(tmp_path):
    from core.errors import StoreError
    store, journal, svc = setup(tmp_path)
    (spring,) = svc.dialers.values()
    seen = spy(spring)

    def gone():
        raise StoreError("database d.db: unable to open database file")
    journal._store, journal._open_store = None, gone  # the database cannot be opened
    svc.on_event({"ev": "incoming", "key": "p1", "to_user": "agent-bob-5828", "source": "127.0.0.1:1"})
    journal.process()
    assert seen == [] and svc.pool.hangups == [("p1", 503)]


def test_a_campaign_started_while_the_service_runs_is_read_on_the_store_thread(tmp_path):
    store, journal, svc = setup(tmp_path)
    create_campaign(store, "autumn", "zeta", T0, "t", caller_id="212-555-9999", dial_mode="preview")
    change_state(store, "autumn", "start", T0, "t", account="zeta")
    create_account(store, "lone", T0, "t", lines=10)  # no trunk: its campaign cannot join
    add_number(store, "lone", "212 555 9998", T0, "t")
    create_campaign(store, "nowhere", "lone", T0, "t", caller_id="212-555-9998", dial_mode="preview")
    change_state(store, "nowhere", "start", T0, "t", account="lone")
    d = svc.look_for_campaigns()
    assert sorted(c.campaign["name"] for c in svc.dialers.values()) == ["spring"]  # not read yet
    # the new loop is built on the reactor from what the store thread read: its
    # construction reads nothing (campaign, account, rule sets, the window's CDRs)
    svc.store = NoReads(store)
    journal.process()
    assert d.called
    assert sorted(c.campaign["name"] for c in svc.dialers.values()) == ["autumn", "spring"]
    nowhere = store.query_one("SELECT id FROM campaigns WHERE name = 'nowhere'")["id"]
    assert svc.skipped == {nowhere}
    for dl in svc.dialers.values():
        dl.stop()


def test_pin_checks_run_a_few_at_a_time():
    """Twenty phones logging in together: their scrypt checks queue, at most
    ``at_once`` running, so the reactor thread keeps a core."""
    from twisted.internet import defer
    from dialer.service import pin_checker
    running = []

    def check(pin, stored):
        d = defer.Deferred()
        running.append((pin, d))
        return d

    verify = pin_checker(task.Clock(), at_once=2, check=check)
    results = [verify(str(1000 + i), "hash") for i in range(5)]
    assert [p for p, _ in running] == ["1000", "1001"]
    running[0][1].callback(True)
    assert [p for p, _ in running] == ["1000", "1001", "1002"]  # one ended, the next began
    running[1][1].callback(False)
    running[2][1].callback(False)
    assert len(running) == 5
    running[3][1].callback(True)
    running[4][1].callback(False)
    outcomes = []
    for r in results:
        r.addCallback(outcomes.append)
    assert outcomes == [True, False, False, True, False]


def test_a_loop_claims_on_the_store_thread_and_blocks_while_the_database_is_locked(adsl):
    """A campaign loop wired as ``dialer run`` wires it (``run=journal.call``): its claim
    waits for the store thread (nothing is read on the reactor's), and with the
    database locked the claim fails at once and the campaign dials nothing, with the
    reason; once the lock is gone it dials again."""
    from dialer.engine import Dialer
    from test_accounts_live import FakePool, sync_verify
    store, clock = adsl
    journal = Journal(store.path, reactor=AtOnce(),
                      open_store=lambda: Store(store.path, timeout=0.05, migrate=False))
    cid = store.query_one("SELECT id FROM campaigns WHERE name = 'spring'")["id"]
    pool = FakePool(clock)
    d = Dialer(clock, store, cid, pool, route=lambda n: f"sip:{n[1:]}@carrier", tick=0.1, cps=10,
               verify=sync_verify, journal=journal, run=journal.call)
    d.floor.login(101, cid, d.now())
    d.start()
    clock.advance(0.1)
    assert pool.dials == []  # the claim is queued for the store thread
    journal.process()
    assert len(pool.dials) == 3  # power 3, one ready agent, the account's 3 lines
    other = sqlite3.connect(str(store.path), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    for _, key, _ in pool.dials:  # the calls end unanswered: their records wait in the journal
        d.on_event({"ev": "ended", "key": key, "code": 480, "reason": "Temporarily Unavailable", "answered": False,
                    "started_ms": None, "answered_ms": None, "ended_ms": int(clock.seconds() * 1000),
                    "cause": "remote"})
    clock.advance(0.1)
    journal.process()
    assert "database is unavailable" in (d.blocked_reason or "")
    assert len(pool.dials) == 3 and journal.backlog > 0
    other.execute("ROLLBACK")
    other.close()
    clock.advance(0.1)
    journal.process()
    assert journal.backlog == 0 and d.blocked_reason is None
    assert len(pool.dials) == 6
    d.stop()

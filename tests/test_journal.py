"""The dialer's write journal on a real SQLite file: writes kept while the database
is locked, applied once it is free, replayed exactly once after a crash, a bad write
set aside (never dropped), the writer thread drained on stop; calls on the store
thread in order with the writes, failing with StoreError when the database is locked
or the journal stopped."""

import datetime as dt
import json
import pathlib
import sqlite3
import threading

import pytest
from twisted.internet import defer
from twisted.trial import unittest as trial

from campaigns.store import create_account
from dialer.cdr import Cdr
from dialer.engine import cdr_payload
from dialer.journal import Journal
from core.timeutil import to_iso, to_ms

NOW = dt.datetime(2026, 11, 27, 17, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def account(store):
    return create_account(store, "acme", NOW, "t")["id"]


def cdr_item(account_id, n):
    t0 = to_ms(NOW) + 1000 * n
    cdr = Cdr(call_id=f"call-{n}", account_id=account_id, destination="+12125550100", started_ms=t0,
              ended_ms=t0 + 5000, disposition="busy", sip_code=486, sip_reason="Busy Here", hangup_cause="busy",
              hangup_by="callee", lead_outcome="busy", duration_ms=5000)
    return {"at": to_iso(NOW), "cdr": cdr_payload(cdr)}


def cdr_ids(store):
    return [r["call_id"] for r in store.query("SELECT call_id FROM cdrs ORDER BY call_id")]


def lock(db_path):
    """Another process's connection holding the write lock."""
    other = sqlite3.connect(str(db_path), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


def journal(db_path, **kw):
    # a short busy timeout so a locked database answers in a fraction of a second
    from core.store import Store
    return Journal(db_path, open_store=lambda: Store(db_path, timeout=0.05, migrate=False), **kw)


def test_applied_in_order_and_the_spool_starts_afresh(store, db_path, account):
    j = journal(db_path)
    for n in range(3):
        j.put("cdr", cdr_item(account, n))
    assert j.spool_path.read_text().count("\n") == 3
    assert j.apply_pending() == 3
    assert cdr_ids(store) == ["call-0", "call-1", "call-2"]
    assert j.spool_path.read_text() == ""
    assert store.query_one("SELECT applied_seq FROM journal_state WHERE name = 'dialer'")["applied_seq"] == 3
    # the attempt went in with the record (frequency caps read it)
    assert store.query_one("SELECT COUNT(*) AS n FROM call_attempts")["n"] == 3


def test_a_locked_database_keeps_the_writes_until_it_is_free(store, db_path, account):
    j = journal(db_path)
    other = lock(db_path)
    j.put("cdr", cdr_item(account, 1))
    j.put("agent_events", {"at": to_iso(NOW), "events": []})
    assert j.apply_pending() == 0
    assert j.failing and "locked" in j.failing
    assert j.backlog == 2 and cdr_ids(store) == []
    j.put("cdr", cdr_item(account, 2))
    assert j.apply_pending() == 0
    other.execute("ROLLBACK")
    other.close()
    assert j.apply_pending() == 3
    assert j.failing is None and j.backlog == 0
    assert cdr_ids(store) == ["call-1", "call-2"]


def test_after_a_crash_the_spool_is_replayed_exactly_once(store, db_path, account):
    j = journal(db_path)
    j.put("cdr", cdr_item(account, 1))
    j.put("cdr", cdr_item(account, 2))
    assert j.apply_pending() == 2
    other = lock(db_path)
    j.put("cdr", cdr_item(account, 3))
    j.put("dnc", {"at": to_iso(NOW), "numbers": ["+12125550177"], "reason": "opted out with a key",
                    "account_id": account})
    assert j.apply_pending() == 0
    j._spool.close()  # the process dies here: two writes only in the spool
    other.execute("ROLLBACK")
    other.close()

    again = journal(db_path)
    assert again.backlog == 2  # the two applied before are skipped by the high-water mark
    assert again.apply_pending() == 2
    assert cdr_ids(store) == ["call-1", "call-2", "call-3"]
    assert store.query_one("SELECT COUNT(*) AS n FROM dnc_entries WHERE pattern = '12125550177'")["n"] == 1
    assert journal(db_path).backlog == 0
    # numbering goes on after the replay: a new write is not mistaken for an applied one
    again.put("cdr", cdr_item(account, 4))
    assert again.apply_pending() == 1
    assert cdr_ids(store)[-1] == "call-4"


def test_a_line_cut_short_by_a_crash_is_skipped(store, db_path, account):
    j = journal(db_path)
    other = lock(db_path)
    j.put("cdr", cdr_item(account, 1))
    j._spool.write('[2,"cdr",{"at":')  # half a line
    j._spool.close()
    other.execute("ROLLBACK")
    other.close()
    again = journal(db_path)
    assert again.backlog == 1
    assert again.apply_pending() == 1
    assert cdr_ids(store) == ["call-1"]


def test_a_bad_write_is_set_aside_and_the_rest_goes_in(store, db_path, account):
    j = journal(db_path)
    j.put("cdr", cdr_item(account, 1))
    bad = cdr_item(account + 99, 2)  # no such account: the foreign key refuses it
    j.put("cdr", bad)
    j.put("cdr", cdr_item(account, 3))
    assert j.apply_pending() == 3
    assert cdr_ids(store) == ["call-1", "call-3"]
    kept = [json.loads(line) for line in j.failed_path.read_text().splitlines()]
    assert [k["payload"]["cdr"]["call_id"] for k in kept] == ["call-2"]
    assert "FOREIGN KEY" in kept[0]["error"]
    assert j.failed_total == 1


def test_unknown_kind_is_refused_at_put(db_path, store):
    j = journal(db_path)
    with pytest.raises(ValueError):
        j.put("nonsense", {})
    assert j.backlog == 0


def test_the_writer_thread_drains_on_stop(store, db_path, account):
    j = journal(db_path)
    j.start(retry_min=0.01, retry_max=0.05)
    for n in range(50):
        j.put("cdr", cdr_item(account, n))
    assert j.stop(timeout=20) == 0
    assert len(cdr_ids(store)) == 50


def test_stop_while_locked_leaves_the_writes_for_the_next_start(store, db_path, account):
    j = journal(db_path)
    other = lock(db_path)
    j.start(retry_min=0.01, retry_max=0.05)
    j.put("cdr", cdr_item(account, 1))
    assert j.stop(timeout=0.5) == 1
    other.execute("ROLLBACK")
    other.close()
    again = journal(db_path)
    assert again.apply_pending() == 1
    assert cdr_ids(store) == ["call-1"]


# -- the store thread: calls in order with the writes ------------------------------------
class AtOnce:
    """A reactor stand-in whose ``callFromThread`` runs at once: ``process`` fires the
    calls' Deferreds on the test's thread."""

    def callFromThread(self, f, *args, **kw):
        f(*args, **kw)


def outcome(d):
    """The value or Failure a Deferred fired with (it must have fired); the Deferred is
    left holding None."""
    out = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    return out[0]


def count_cdrs(store):
    return store.query_one("SELECT COUNT(*) AS n FROM cdrs")["n"]


def test_a_call_sees_the_writes_put_before_it_and_not_those_after(store, db_path, account):
    j = journal(db_path, reactor=AtOnce(), batch=2)
    first = j.call(count_cdrs)  # before any write
    for n in range(5):
        j.put("cdr", cdr_item(account, n))
    middle = j.call(count_cdrs)
    j.put("cdr", cdr_item(account, 5))
    last = j.call(lambda s, extra: count_cdrs(s) + extra, extra=100)
    assert not first.called  # nothing runs until the store thread does
    j.process()
    assert (outcome(first), outcome(middle), outcome(last)) == (0, 5, 106)
    assert j.backlog == 0 and count_cdrs(store) == 6


def test_a_call_runs_on_the_writers_connection(store, db_path, account):
    j = journal(db_path, reactor=AtOnce())
    d = j.call(lambda s: s)
    j.process()
    assert outcome(d) is j._store_conn()


def test_a_call_behind_writes_the_locked_database_refuses_fails_with_store_error(store, db_path, account):
    from core.errors import StoreError
    j = journal(db_path, reactor=AtOnce())
    other = lock(db_path)
    j.put("cdr", cdr_item(account, 1))
    d = j.call(count_cdrs)
    j.process()
    f = outcome(d)
    assert f.check(StoreError) and "database unavailable" in f.getErrorMessage()
    assert j.backlog == 1 and j.failing
    other.execute("ROLLBACK")
    other.close()
    again = j.call(count_cdrs)
    j.process()
    assert outcome(again) == 1 and j.backlog == 0 and j.failing is None


def test_a_read_runs_while_writes_are_held_back_by_another_process(store, db_path, account):
    # an agent's login while a CLI import holds the write lock: the user is read (WAL
    # lets readers through); an ordered call behind the held-back write fails
    from core.errors import StoreError
    j = journal(db_path, reactor=AtOnce())
    other = lock(db_path)
    j.put("cdr", cdr_item(account, 1))
    ordered = j.call(count_cdrs)
    read = j.read(lambda s: s.query_one("SELECT name FROM accounts WHERE id = ?", (account,))["name"])
    j.process()
    assert outcome(ordered).check(StoreError)
    assert outcome(read) == "acme"
    assert j.backlog == 1  # the write waits for the lock, kept
    other.execute("ROLLBACK")
    other.close()
    j.process()
    assert j.backlog == 0 and cdr_ids(store) == ["call-1"]

def test_a_call_that_finds_the_database_locked_fails_with_store_error(store, db_path, account):
    from core.errors import StoreError
    j = journal(db_path, reactor=AtOnce())
    other = lock(db_path)

    def claim(s):  # BEGIN IMMEDIATE, as the hopper's claim
        with s.transaction():
            return "claimed"

    def raw_insert(s):  # sqlite3's own error: the store thread turns it into StoreError too
        s.conn.execute("INSERT INTO accounts (name, created_at) VALUES ('x', 'now')")

    a, b = j.call(claim), j.call(raw_insert)
    j.process()
    for f in (outcome(a), outcome(b)):
        assert f.check(StoreError) and "locked" in f.getErrorMessage()
    other.execute("ROLLBACK")
    other.close()
    c = j.call(claim)
    j.process()
    assert outcome(c) == "claimed"


def test_a_disk_that_refuses_the_spool_keeps_the_writes_and_fails_the_calls_behind(store, db_path, account,
                                                                                   monkeypatch):
    import os
    from core.errors import StoreError
    j = journal(db_path, reactor=AtOnce())
    j.put("cdr", cdr_item(account, 1))
    d = j.call(count_cdrs)

    def no_disk(fd):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(os, "fsync", no_disk)
    j.process()  # neither raises nor applies: the write stays in the journal
    f = outcome(d)
    assert f.check(StoreError) and "Input/output error" in f.getErrorMessage()
    assert j.backlog == 1 and "Input/output error" in j.failing and count_cdrs(store) == 0
    monkeypatch.undo()
    again = j.call(count_cdrs)
    j.process()
    assert outcome(again) == 1 and j.failing is None


def test_a_failing_call_reaches_its_caller_and_the_journal_goes_on(store, db_path, account):
    j = journal(db_path, reactor=AtOnce())
    bad = j.call(lambda s: 1 / 0)
    j.put("cdr", cdr_item(account, 1))
    after = j.call(count_cdrs)
    j.process()
    assert outcome(bad).check(ZeroDivisionError)
    assert outcome(after) == 1


def test_a_call_that_leaves_a_transaction_open_is_rolled_back(store, db_path, account):
    from core.errors import DialerError
    j = journal(db_path, reactor=AtOnce())

    def sloppy(s):
        s.conn.execute("BEGIN IMMEDIATE")
        s.conn.execute("INSERT INTO accounts (name, created_at) VALUES ('sloppy', 'now')")

    d = j.call(sloppy)
    j.put("cdr", cdr_item(account, 1))  # must not join (and commit) the open transaction
    j.process()
    f = outcome(d)
    assert f.check(DialerError) and "left a transaction open" in f.getErrorMessage()
    assert store.query("SELECT name FROM accounts WHERE name = 'sloppy'") == []
    assert count_cdrs(store) == 1


def test_calls_fail_cleanly_once_the_journal_stops(store, db_path, account):
    from core.errors import StoreError
    j = journal(db_path, reactor=AtOnce())
    queued = j.call(count_cdrs)  # the writer never ran (not started)
    j.stop()
    assert outcome(queued).check(StoreError)
    late = outcome(j.call(count_cdrs))
    assert late.check(StoreError) and "stopped" in late.getErrorMessage()


class StoreThreadTest(trial.TestCase):
    """The writer thread under the real reactor: calls run there, in order with the
    writes, and their Deferreds fire on the reactor thread."""

    def setUp(self):
        import shutil
        import tempfile
        from core.store import Store
        tmp = tempfile.mkdtemp(prefix="journal-")
        self.addCleanup(shutil.rmtree, tmp, True)
        self.path = pathlib.Path(tmp) / "dialer.db"
        s = Store(self.path)
        self.account = create_account(s, "acme", NOW, "t")["id"]
        s.close()
        self.j = journal(self.path)

    @defer.inlineCallbacks
    def test_calls_run_on_the_writer_thread_after_the_writes_before_them(self):
        self.j.start(retry_min=0.01, retry_max=0.05)
        self.addCleanup(self.j.stop)
        for n in range(120):
            self.j.put("cdr", cdr_item(self.account, n))
        where = []

        def count(store):
            where.append(threading.get_ident())
            return count_cdrs(store)

        counts = yield defer.gatherResults([self.j.call(count) for _ in range(3)])
        self.assertEqual(counts, [120, 120, 120])
        self.assertEqual(set(where), {self.j._thread.ident})
        self.assertNotEqual(self.j._thread.ident, threading.get_ident())
        fired_on = yield self.j.call(count).addCallback(lambda _: threading.get_ident())
        self.assertEqual(fired_on, threading.get_ident())  # the reactor's thread, this one

    @defer.inlineCallbacks
    def test_stop_fails_the_calls_still_queued(self):
        from core.errors import StoreError
        started, release = threading.Event(), threading.Event()

        def slow(store):
            started.set()
            release.wait()
            return "slow done"

        self.j.start(retry_min=0.01, retry_max=0.05)
        running = self.j.call(slow)
        queued = self.j.call(count_cdrs)
        started.wait()
        self.j.stop(timeout=0.01)  # the writer is inside ``slow``: the queued call cannot run
        with self.assertRaises(StoreError):
            yield queued
        release.set()
        self.assertEqual((yield running), "slow done")  # the call already running ends normally
        self.j._thread.join()
        self.j._store_conn().close()
        self.j._spool.close()

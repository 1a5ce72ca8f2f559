"""The store: WAL, migrations, transactions, and the one-writer service under the reactor."""

import threading

import pytest
from twisted.internet import defer, reactor
from twisted.trial import unittest as trial

from core import migrations
from core.errors import StoreError
from core.store import Store
from core.writer import StoreService


def test_wal_and_migrations_are_idempotent(db_path):
    s = Store(db_path)
    assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    first = migrations.applied(s)
    s.close()
    s = Store(db_path)  # second open applies nothing new
    assert migrations.applied(s) == first == [name for name, _ in migrations._MIGRATIONS]
    s.close()


def test_transaction_rolls_back_on_error(store):
    with pytest.raises(ZeroDivisionError):
        with store.transaction():
            store.execute("INSERT INTO accounts (name, created_at) VALUES ('a', 'x')")
            1 / 0
    assert store.query("SELECT * FROM accounts") == []


def test_locked_database_is_a_clear_error(db_path):
    a = Store(db_path)
    b = Store(db_path, timeout=0.05)
    a.conn.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="busy or locked"):
            with b.transaction():
                pass
    finally:
        a.conn.execute("ROLLBACK")
        a.close()
        b.close()


def test_unwritable_location_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot"):
        Store(blocker / "sub" / "dialer.db")


class StoreServiceTest(trial.TestCase):
    """Writes from many callers are serialised on one thread; reads run beside them."""

    def setUp(self):
        self.path = self.mktemp() + ".db"
        self.svc = StoreService(reactor, self.path, readers=2)
        self.svc.start()
        self.addCleanup(self.svc.stop)

    @defer.inlineCallbacks
    def test_writes_are_serialised_on_one_thread(self):
        threads = set()

        def insert(store, i):
            threads.add(threading.get_ident())
            store.execute("INSERT INTO accounts (name, created_at) VALUES (?, 'now')", (f"acc{i}",))
            return i

        results = yield defer.gatherResults([self.svc.write(insert, i) for i in range(50)])
        self.assertEqual(sorted(results), list(range(50)))
        self.assertEqual(len(threads), 1)
        n = yield self.svc.read(lambda s: s.query_one("SELECT COUNT(*) AS n FROM accounts")["n"])
        self.assertEqual(n, 50)

    @defer.inlineCallbacks
    def test_failed_write_changes_nothing(self):
        def bad(store):
            store.execute("INSERT INTO accounts (name, created_at) VALUES ('x', 'now')")
            raise ValueError("boom")

        with self.assertRaises(ValueError):
            yield self.svc.write(bad)
        n = yield self.svc.read(lambda s: s.query_one("SELECT COUNT(*) AS n FROM accounts")["n"])
        self.assertEqual(n, 0)

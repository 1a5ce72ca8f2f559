"""The store: WAL, migrations, transactions, clear errors."""

import pytest

from core import migrations
from core.errors import StoreError
from core.store import Store


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


@pytest.mark.parametrize("count", [0, 1, 2, 6, 7, 8, 15, 16, 17])
def test_insert_many_inserts_every_row_once_in_several_row_statements(store, count):
    store.conn.execute("CREATE TABLE t (k TEXT NOT NULL UNIQUE, v INTEGER, tag TEXT)")
    rows = [(f"k{i}", i) for i in range(count)]
    with store.transaction():
        assert store.insert_many("INSERT INTO t (k, v, tag)", "(?, ?, 'x')", rows, "ON CONFLICT (k) DO NOTHING",
                                 per_statement=8) == count
    # again, with one new row among them: only it is inserted
    with store.transaction():
        assert store.insert_many("INSERT INTO t (k, v, tag)", "(?, ?, 'y')", rows + [("new", -1)],
                                 "ON CONFLICT (k) DO NOTHING", per_statement=8) == 1
    got = store.conn.execute("SELECT k, v, tag FROM t ORDER BY v").fetchall()
    assert got == [("new", -1, "y")] + [(k, v, "x") for k, v in rows]

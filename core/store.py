"""The one store layer: a SQLite file in WAL mode, migrations, transactions.

Portable SQL only (no SQLite-only syntax in queries outside this module), so a
PostgreSQL backend can be added beside it. Times are ISO 8601 UTC text; money
(later) is Decimal text.

The store's queries do not go through sqlite-utils: it is SQLite-only, so portable
SQL cannot go through it, and its ``insert_all`` is slower than ``executemany`` for
lead rows (measured by ``bench/bulk_insert_bench.py``). It serves where SQLite-only
is the point: ``core.schema`` describes the file (``dialer db info``).

Writes go through one writer: in the CLI that is the process itself; under the
reactor it is the write journal's thread (``dialer.journal.Journal``), which also
runs the live loop's reads (``Journal.call``).
"""

import contextlib
import itertools
import os
import pathlib
import sqlite3

from .errors import StoreError
from . import migrations

ENV_DB = "DIALER_DB"
ROWS_PER_INSERT = 200  # rows per multi-row INSERT in Store.insert_many (bench/rating_bench.py: 50 -> 200 still paid)
ENV_DATA_DIR = "DIALER_DATA_DIR"


def data_dir():
    """Where the default database lives: $DIALER_DATA_DIR, else $XDG_DATA_HOME/dialer."""
    explicit = os.environ.get(ENV_DATA_DIR)
    if explicit:
        return pathlib.Path(explicit)
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return pathlib.Path(base) / "dialer"


def default_db_path():
    explicit = os.environ.get(ENV_DB)
    if explicit:
        return pathlib.Path(explicit)
    return data_dir() / "dialer.db"


def connect(path, timeout=5.0):
    """Open a connection with the project's pragmas. Autocommit: we BEGIN ourselves."""
    try:
        conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA cache_size=-65536")  # 64 MiB: million-row lists keep their indexes in memory
        conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    except sqlite3.Error as e:
        raise StoreError(f"cannot open database {path}: {e}") from None
    return conn


class Store:
    """A database file and the files that live beside it (DNC registry snapshots)."""

    def __init__(self, path=None, timeout=5.0, migrate=True):
        self.path = pathlib.Path(path) if path is not None else default_db_path()
        if str(self.path) != ":memory:":
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create data directory {self.path.parent}: {e.strerror}") from None
        self.conn = connect(self.path, timeout)
        if migrate:
            self.migrate()

    # -- files beside the database -------------------------------------------------
    @property
    def files_dir(self):
        d = self.path.parent / (self.path.stem + ".files")
        d.mkdir(parents=True, exist_ok=True)
        return d

    # -- transactions -----------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self):
        """BEGIN IMMEDIATE ... COMMIT; ROLLBACK on any exception. Not re-entrant-safe
        across threads: one writer per file."""
        if self.conn.in_transaction:
            # nested use inside an open transaction: join it
            yield self.conn
            return
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise StoreError(f"database {self.path} is busy or locked ({e}); try again") from None
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.OperationalError as e:
                self.conn.execute("ROLLBACK")
                raise StoreError(f"could not commit to {self.path}: {e}") from None

    @contextlib.contextmanager
    def read_view(self):
        """One consistent view of the database for several reads: a read transaction
        (BEGIN ... COMMIT), unless the caller is already in one."""
        if self.conn.in_transaction:
            yield
            return
        self.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    def execute(self, sql, params=()):
        try:
            return self.conn.execute(sql, params)
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise StoreError(f"database {self.path} is locked ({e}); try again") from None
            raise

    def insert_many(self, head, values, rows, tail="", per_statement=ROWS_PER_INSERT):
        """Insert ``rows`` (tuples of parameters, all of one length) with multi-row
        ``INSERT`` statements (standard SQL: ``head VALUES values, values, ... tail``):
        ``head`` is e.g. ``INSERT INTO t (a, b, c)``, ``values`` one row's ``(?, ?, 0)``
        (its placeholders take a row's parameters in order; constants may stand
        beside them), ``tail`` e.g. ``ON CONFLICT (a) DO NOTHING``. Several rows a
        statement (as many as the parameter limit allows, at most ``per_statement``)
        instead of ``executemany`` of one row each: that per-row statement cost was
        half the cost of inserting a bill run's charges (bench/rating_bench.py).
        Inside the caller's transaction (or autocommitted per statement). Returns the
        number of rows the statements changed (a row skipped ON CONFLICT is not one)."""
        rows = rows if isinstance(rows, list) else list(rows)
        if not rows:
            return 0
        width = len(rows[0])
        n = max(1, min(per_statement, self.conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // max(1, width)))
        flat = itertools.chain.from_iterable
        full = len(rows) - len(rows) % n
        changed = 0
        if full:
            sql = f"{head} VALUES {', '.join([values] * n)} {tail}"
            changed += self.conn.executemany(sql, (tuple(flat(rows[k:k + n])) for k in range(0, full, n))).rowcount
        if full < len(rows):
            sql = f"{head} VALUES {', '.join([values] * (len(rows) - full))} {tail}"
            changed += self.conn.execute(sql, tuple(flat(rows[full:]))).rowcount
        return changed

    def query(self, sql, params=()):
        cur = self.execute(sql, params)
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]

    def query_one(self, sql, params=()):
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def migrate(self):
        migrations.apply(self)

    def close(self):
        self.conn.close()

"""The dialer's write journal: nothing it must keep is lost, and the reactor never
waits for the database.

Every write the live dialer makes (call records, agent state changes, opt-outs,
trunk registrations) is first appended to a spool file beside the database (one
JSON line, numbered) and handed to one writer thread, which applies it in a
transaction together with the journal's high-water mark (``journal_state``).
When the database is locked or unreachable, writes wait in the spool and in
memory, the writer retries with a growing delay, and one log line says so (and
one more when it is back). After a crash, the next start replays the spool: the
high-water mark, committed with the writes themselves, makes each write apply
exactly once. A write that fails for another reason (a bug, bad data) is moved
to ``<spool>.failed`` with its error and the journal goes on: it is kept, never
dropped.

The writer thread is also the live loop's one store thread: ``call(fn, ...)``
runs ``fn(store, ...)`` there, on the writer's connection, in order with the
journaled writes (a call sees every write ``put`` before it applied), and returns a
Deferred fired on the reactor thread. Code that does its store work through
``call`` keeps the reactor thread off the database, and the file has one writer.

``apply_pending`` and ``process`` are the synchronous core (tests drive them
directly); ``start``/``stop`` run them on the writer thread under a reactor.
"""

import collections
import itertools
import json
import os
import pathlib
import sqlite3
import threading

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from core.errors import DialerError, StoreError
from core.retry import Backoff

log = Logger(namespace="dialer.journal")

APPLIERS = {}


def applier(kind):
    def deco(fn):
        APPLIERS[kind] = fn
        return fn
    return deco


def _now(payload):
    from core.timeutil import from_iso
    return from_iso(payload["at"])


@applier("cdr")
def _apply_cdr(store, payload):
    from .cdr import Cdr, write_cdr
    fields = dict(payload["cdr"])
    if fields.get("callback_at"):
        from core.timeutil import from_iso
        fields["callback_at"] = from_iso(fields["callback_at"])
    now = _now(payload)
    if write_cdr(store, Cdr(**fields), now)["written"]:
        # live usage: the call rated into its account's ledger in the same transaction
        # (billing.live: accounts with billing enabled; charged once per call id, so a
        # later bill run changes nothing; a call that cannot be rated stays unrated,
        # its CDR kept)
        from billing.live import rate_written_call
        rated = rate_written_call(store, fields["call_id"], now)
        if rated is not None and rated["refused"] is not None:
            (log.error if rated.get("error") else log.warn)(
                "call {key}: not rated at its CDR's write ({why}); a bill run rates it once it can",
                key=fields["call_id"], why=rated["refused"])


@applier("agent_events")
def _apply_agent_events(store, payload):
    from .agents import record_agent_rows
    record_agent_rows(store, payload["events"])


@applier("dnc")
def _apply_dnc(store, payload):
    from rules.service import add_dnc
    add_dnc(store, payload["numbers"], _now(payload), payload.get("actor", "dialer"), reason=payload.get("reason", ""),
            account=payload.get("account_id"))


@applier("call_open")
def _apply_call_open(store, payload):
    from .opencalls import open_call
    open_call(store, payload["call"], payload["at"])


@applier("call_progress")
def _apply_call_progress(store, payload):
    from .opencalls import progress
    progress(store, payload["call_id"], answered_at=payload.get("answered_at"), bridged_at=payload.get("bridged_at"),
             agent_id=payload.get("agent_id"), at=payload["at"])


@applier("audit")
def _apply_audit(store, payload):
    from core import audit
    audit.append(store, _now(payload), payload["actor"], payload["action"], payload["subject"],
                 payload.get("reason", ""), payload.get("detail", {}), account_id=payload.get("account_id"))


@applier("registration")
def _apply_registration(store, payload):
    from .trunks import record_registration
    r = payload["registration"]
    record_registration(store, r["trunk_id"], _now(payload), r.get("worker"), r["code"], r["reason"], r.get("ms"),
                        r.get("alert", False))


@applier("recording")
def _apply_recording(store, payload):
    from .cdr import attach_recording
    attach_recording(store, payload["call_id"], payload["path"], payload.get("duration_ms"))


@applier("command_done")
def _apply_command_done(store, payload):
    store.execute("UPDATE agent_commands SET taken_at = ?, result = ? WHERE id = ?",
                  (payload["at"], payload["result"], payload["id"]))


class _Call:
    """A function queued for the store thread: ``after`` is the last write put before it
    (None: a read that waits for no write, ``Journal.read``)."""
    __slots__ = ("after", "fn", "args", "kw", "d")

    def __init__(self, after, fn, args, kw, d):
        self.after, self.fn, self.args, self.kw, self.d = after, fn, args, kw, d


class Journal:
    """An outbox of writes for one database, and its one store thread. ``put`` and
    ``call`` are called on the reactor thread. ``reactor`` fires the calls' Deferreds
    (``callFromThread``); the global reactor when None."""

    def __init__(self, store_path, spool_path=None, name="dialer", batch=50, open_store=None, reactor=None):
        self.store_path = pathlib.Path(store_path)
        self.spool_path = pathlib.Path(spool_path) if spool_path else self.store_path.with_name(
            self.store_path.name + f".{name}.journal")
        self.failed_path = self.spool_path.with_name(self.spool_path.name + ".failed")
        self.name = name
        self.batch = batch
        self._open_store = open_store
        self._store = None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending = collections.deque()  # (seq, kind, payload), not yet committed
        self._calls = collections.deque()  # _Call, in the order they were made
        self._reactor = reactor
        self._closed = False  # stop() began: new calls fail at once
        self._seq = 0
        self._applied = 0
        self._spool = None
        self._thread = None
        self._stopping = False
        self.failing = None  # the error text while the store refuses writes
        self.applied_total = 0
        self.failed_total = 0
        self._recover()

    # -- the spool --------------------------------------------------------------------
    def _store_conn(self):
        if self._store is None:
            if self._open_store is not None:
                self._store = self._open_store()
            else:
                from core.store import Store
                self._store = Store(self.store_path, timeout=1.0, migrate=False)
        return self._store

    def _read_applied(self, store):
        row = store.query_one("SELECT applied_seq FROM journal_state WHERE name = ?", (self.name,))
        return row["applied_seq"] if row else 0

    def _recover(self):
        """Load what the spool holds beyond the high-water mark (a crash, or a database
        that was locked when the last run stopped)."""
        items = []
        if self.spool_path.exists():
            with open(self.spool_path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        seq, kind, payload = json.loads(line)
                    except ValueError:  # a line cut short by a crash: nothing after it was acknowledged
                        log.warn("journal {path}: line {n} is cut short; ignored", path=str(self.spool_path), n=n)
                        continue
                    items.append((int(seq), kind, payload))
        try:
            self._applied = self._read_applied(self._store_conn())
        except (DialerError, OSError) as e:
            self._applied = 0
            self.failing = str(e)
        self._seq = max([self._applied] + [s for s, _, _ in items])
        self._pending.extend(i for i in items if i[0] > self._applied)
        if self._pending:
            log.info("journal {path}: {n} write(s) from an earlier run to apply", path=str(self.spool_path),
                     n=len(self._pending))
        self._spool = open(self.spool_path, "a", encoding="utf-8")

    def put(self, kind, payload):
        """Keep a write: appended to the spool now, applied by the writer soon."""
        if kind not in APPLIERS:
            raise ValueError(f"unknown journal kind {kind!r}")
        with self._lock:
            self._seq += 1
            item = (self._seq, kind, payload)
            self._spool.write(json.dumps(item, separators=(",", ":"), default=str) + "\n")
            self._spool.flush()  # in the OS's hands: survives this process dying
            self._pending.append(item)
            self._wake.notify()
        return self._seq

    @property
    def backlog(self):
        with self._lock:
            return len(self._pending)

    # -- applying ---------------------------------------------------------------------
    def apply_pending(self, upto=None):
        """Apply what is pending (the writes numbered ``upto`` or less, when given), in
        order, in batches. Returns how many were applied; raises nothing: a locked store
        leaves the writes pending (``failing`` says why)."""
        done = 0
        while True:
            n = self._apply_one_batch(upto)
            if n is None:
                return done
            done += n

    def _apply_one_batch(self, upto=None):
        """One batch of pending writes (numbered ``upto`` or less): how many were applied,
        None when there was nothing to apply or the store refused."""
        with self._lock:
            batch = list(itertools.takewhile(lambda item: upto is None or item[0] <= upto,
                                             itertools.islice(self._pending, self.batch)))
        if not batch:
            return None
        try:
            store = self._store_conn()
            os.fsync(self._spool.fileno())  # on disk before the database says applied
            applied = self._apply_batch(store, batch)
        except (StoreError, sqlite3.Error, OSError) as e:  # the database or the disk, not a write
            if isinstance(e, sqlite3.Error):
                e = StoreError(f"database {self.store_path}: {e}")
            elif isinstance(e, OSError):  # the spool's fsync
                e = StoreError(f"journal spool {self.spool_path}: {e}")
            if self.failing is None:
                log.warn("database unavailable ({err}): {n} write(s) kept in the journal {path}, retrying",
                         err=str(e), n=self.backlog, path=str(self.spool_path))
            self.failing = str(e)
            return None
        if self.failing is not None:
            log.info("database available again: the journal is catching up ({n} write(s) waiting)",
                     n=self.backlog)
            self.failing = None
        with self._lock:
            for _ in range(applied):
                self._pending.popleft()
            self._applied = batch[applied - 1][0]
            if not self._pending:  # everything is in the database: the spool starts afresh
                self._spool.seek(0)
                self._spool.truncate()
        self.applied_total += applied
        return applied

    def _apply_batch(self, store, batch):
        """One transaction: the writes and the new high-water mark. A write that fails
        for a reason other than the store is set aside (``.failed``) and the batch is
        retried without it. Returns how many items of ``batch`` were consumed."""
        bad = None
        try:
            with store.transaction():
                for i, (seq, kind, payload) in enumerate(batch):
                    try:
                        APPLIERS[kind](store, payload)
                    except StoreError:
                        raise
                    except sqlite3.OperationalError as e:  # locked, busy, I/O: the store, not the write
                        raise StoreError(f"database {self.store_path}: {e}") from None
                    except Exception as e:  # noqa: BLE001 - kept aside, never dropped
                        bad = (i, e)
                        raise
                store.execute("INSERT INTO journal_state (name, applied_seq) VALUES (?, ?) "
                              "ON CONFLICT (name) DO UPDATE SET applied_seq = excluded.applied_seq",
                              (self.name, batch[-1][0]))
            return len(batch)
        except StoreError:
            raise
        except Exception:  # noqa: BLE001
            if bad is None:
                raise
        i, err = bad
        if i > 0:  # the writes before the bad one go in on their own
            return self._apply_batch(store, batch[:i])
        seq, kind, payload = batch[0]
        with open(self.failed_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"seq": seq, "kind": kind, "payload": payload, "error": f"{type(err).__name__}: {err}"},
                               default=str) + "\n")
        log.error("journal write {seq} ({kind}) failed ({err}); kept in {path}", seq=seq, kind=kind, err=str(err),
                  path=str(self.failed_path))
        self.failed_total += 1
        with store.transaction():
            store.execute("INSERT INTO journal_state (name, applied_seq) VALUES (?, ?) "
                          "ON CONFLICT (name) DO UPDATE SET applied_seq = excluded.applied_seq", (self.name, seq))
        return 1

    # -- calls on the store thread -----------------------------------------------------
    def call(self, fn, *args, **kw):
        """Run ``fn(store, *args, **kw)`` on the store thread, with the writer's
        connection, after every write ``put`` before this call; a Deferred fired on the
        reactor thread with its result or its failure. When the database is locked or
        unavailable (a write before it cannot be applied, or ``fn`` finds it locked) the
        Deferred fails with ``StoreError``: nothing waits for the database for ever.
        Once ``stop`` began, a call fails at once (``StoreError``)."""
        return self._queue(True, fn, args, kw)

    def read(self, fn, *args, **kw):
        """Like ``call``, for a function that only reads what other processes write
        (an agent login's user): it does not wait for this journal's earlier writes,
        so it runs even while they are held back (another process holding the
        database's write lock: SQLite's WAL lets readers through). The Deferred fails
        with ``StoreError`` only when the database cannot be read."""
        return self._queue(False, fn, args, kw)

    def _queue(self, ordered, fn, args, kw):
        """Queue ``fn`` for the store thread (after the writes put so far when
        ``ordered``); its Deferred, failed at once once ``stop`` began."""
        d = defer.Deferred()
        with self._lock:
            if not self._closed:
                self._calls.append(_Call(self._seq if ordered else None, fn, args, kw, d))
                self._wake.notify()
                return d
        d.errback(StoreError("the dialer's store thread is stopped"))
        return d

    def process(self):
        """Apply the pending writes and run the queued calls, in the order they were
        made, until nothing is left or the store refuses a write. A call behind a write
        the store refused fails with ``StoreError``. Runs on the store thread (tests
        call it directly)."""
        while True:
            with self._lock:
                call = self._calls[0] if self._calls else None
            if call is None:
                if self._apply_one_batch() is None:
                    return
                continue
            if call.after is not None and self._apply_one_batch(call.after) is not None:
                continue  # one batch at a time: a call made meanwhile is not kept waiting
            with self._lock:
                if not self._calls or self._calls[0] is not call:  # failed by stop() meanwhile
                    continue
                self._calls.popleft()
                # (a read, ``after`` None, waits for no write)
                behind = call.after is not None and bool(self._pending) and self._pending[0][0] <= call.after
            if behind:
                self._settle(call, Failure(StoreError(
                    f"database unavailable ({self.failing}): {self.backlog} write(s) waiting in the journal")))
            else:
                self._settle(call, *self._run_call(call))

    def _run_call(self, call):
        """(result, None) or (None, Failure)."""
        try:
            store = self._store_conn()
        except Exception:  # noqa: BLE001 - the database cannot be opened: handed to the caller
            return None, Failure()
        try:
            out = call.fn(store, *call.args, **call.kw), None
        except sqlite3.OperationalError as e:  # locked, busy, I/O: the store, not the call
            out = None, Failure(StoreError(f"database {self.store_path}: {e}"))
        except Exception:  # noqa: BLE001 - handed to the caller
            out = None, Failure()
        if store.conn.in_transaction:  # never left open for the next writes to join
            store.conn.execute("ROLLBACK")
            if out[1] is None:
                name = getattr(call.fn, "__qualname__", repr(call.fn))
                out = None, Failure(DialerError(f"{name} left a transaction open on the store thread; rolled back"))
        return out

    def _settle(self, call, result, failure=None):
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        if failure is None:
            reactor.callFromThread(call.d.callback, result)
        else:
            reactor.callFromThread(call.d.errback, failure)

    def _fail_calls(self, why):
        with self._lock:
            calls = list(self._calls)
            self._calls.clear()
        for c in calls:
            self._settle(c, None, Failure(StoreError(why)))

    # -- the writer thread ------------------------------------------------------------
    def start(self, retry_min=0.25, retry_max=5.0):
        backoff = Backoff(retry_min, retry_max)  # a bad setting is refused here, not in the thread
        self._thread = threading.Thread(target=self._run, args=(backoff,), name=f"journal-{self.name}", daemon=True)
        self._thread.start()

    def _run(self, backoff):
        while True:
            with self._lock:
                while not self._pending and not self._calls and not self._stopping:
                    self._wake.wait()
                if self._stopping and not self._pending and not self._calls:
                    return
            try:
                self.process()
            except Exception as e:  # noqa: BLE001 - the store thread must not end: calls would wait for ever
                log.failure("journal {path}: the store thread failed; retrying", path=str(self.spool_path))
                self.failing = f"{type(e).__name__}: {e}"
            if self.failing is None:
                backoff.reset()
                continue
            with self._lock:  # the store refused: wait, then try again (a stop ends the wait)
                if self._stopping:
                    return
                self._wake.wait(backoff.next())

    def stop(self, timeout=10.0):
        """Let the writer finish what it can within ``timeout`` s; what is left stays in
        the spool for the next start. Calls made from now on fail at once; calls still
        queued when the writer ends (or the time is up) fail with ``StoreError``."""
        with self._lock:
            self._stopping = True
            self._closed = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._fail_calls("the dialer's store thread stopped before this call ran")
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                self._spool.close()
            if self._store is not None:
                self._store.close()
                self._store = None
        left = self.backlog
        if left:
            log.warn("journal: {n} write(s) not yet in the database are kept in {path} for the next start", n=left,
                     path=str(self.spool_path))
        return left

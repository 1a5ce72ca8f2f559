"""One writer, many readers, for code running under the Twisted reactor.

SQLite has one writer per file: every write is handed to a single-thread pool
that owns the write connection and runs each job in ``BEGIN IMMEDIATE``.
Reads go to a small pool whose threads each hold their own connection (WAL lets
them read while the writer writes).
"""

import threading

from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from .store import Store


class StoreService:
    def __init__(self, reactor, path, readers=2):
        self._reactor = reactor
        self.path = path
        self._write_pool = ThreadPool(minthreads=1, maxthreads=1, name="store-writer")
        self._read_pool = ThreadPool(minthreads=1, maxthreads=max(1, readers), name="store-reader")
        self._writer_store = None
        self._local = threading.local()
        self._stores = []
        self._lock = threading.Lock()
        Store(path).close()  # migrate once, before any thread starts

    def start(self):
        self._write_pool.start()
        self._read_pool.start()

    def stop(self):
        self._write_pool.stop()
        self._read_pool.stop()
        with self._lock:
            for s in self._stores:
                s.close()
            self._stores.clear()

    def _thread_store(self):
        s = getattr(self._local, "store", None)
        if s is None:
            s = Store(self.path, migrate=False)
            self._local.store = s
            with self._lock:
                self._stores.append(s)
        return s

    def _run_write(self, fn, args, kwargs):
        store = self._thread_store()
        with store.transaction():
            return fn(store, *args, **kwargs)

    def _run_read(self, fn, args, kwargs):
        return fn(self._thread_store(), *args, **kwargs)

    def write(self, fn, *args, **kwargs):
        """Run ``fn(store, ...)`` in one transaction on the writer thread; a Deferred."""
        return deferToThreadPool(self._reactor, self._write_pool, self._run_write, fn, args, kwargs)

    def read(self, fn, *args, **kwargs):
        """Run ``fn(store, ...)`` on a reader thread; a Deferred."""
        return deferToThreadPool(self._reactor, self._read_pool, self._run_read, fn, args, kwargs)

"""The store, off the reactor thread. Pages never wait on SQLite or on a password hash
on the reactor: every library call runs in a thread pool, each thread with its own
connection (``core.store.Store``, WAL: readers never block the writer).

* ``read``: reads and CPU work (password checks), a few threads;
* ``write``: every short write (a library call's one ``BEGIN IMMEDIATE`` transaction),
  one thread: the web's writes queue here, not on SQLite's lock;
* ``long``: list imports (minutes for a million rows), one thread, committing in chunks
  so the writes of the other two threads and of the dialer get the lock between them.
"""

import threading

from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from core.store import Store


class Stores:
    def __init__(self, reactor, path, readers=2):
        self.reactor, self.path = reactor, path
        Store(path).close()  # migrations applied once, before any page
        self.pools = {"read": ThreadPool(1, readers, "web-read"), "write": ThreadPool(1, 1, "web-write"),
                      "long": ThreadPool(1, 1, "web-import")}
        self._local = threading.local()
        self._opened = []
        self._lock = threading.Lock()
        for pool in self.pools.values():
            pool.start()
        self._trigger = reactor.addSystemEventTrigger("during", "shutdown", self.stop)

    def _store(self):
        s = getattr(self._local, "store", None)
        if s is None:
            s = self._local.store = Store(self.path, migrate=False)
            with self._lock:
                self._opened.append(s)
        return s

    def _run(self, pool, fn, args, kw):
        return deferToThreadPool(self.reactor, self.pools[pool], lambda: fn(self._store(), *args, **kw))

    def read(self, fn, *args, **kw):
        """``fn(store, *args, **kw)`` on a reader thread; a Deferred of its result."""
        return self._run("read", fn, args, kw)

    def write(self, fn, *args, **kw):
        return self._run("write", fn, args, kw)

    def long(self, fn, *args, **kw):
        return self._run("long", fn, args, kw)

    def stop(self):
        for pool in self.pools.values():
            pool.stop()
        with self._lock:
            for s in self._opened:
                s.close()
            self._opened.clear()

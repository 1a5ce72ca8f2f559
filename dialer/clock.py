"""A reactor whose clock is shifted: a test and demo aid, never used by ``dialer run``.

Every component takes its clock (the reactor's ``seconds()``); this wrapper lets a
test (or the demo, ``dialer demo --clock-offset``) run the dialer at another instant
than the wall clock's, e.g. one when a test area code is inside calling hours, while
the real reactor still runs the processes, sockets and timers in real time::

    clock = ShiftedReactor(reactor, 3600)     # an hour ahead
    Dialer(clock, store, "c", WorkerPool(clock, ...))

``seconds()`` is the reactor's plus ``offset_s``. ``callLater`` delays are relative,
so they run on the reactor as ever; a delayed call's ``getTime()`` is on the shifted
clock (what a component compares with ``seconds()``). Everything else (``spawnProcess``,
``listenTCP``, ``callFromThread``, ``run``, ``stop``...) is the reactor's own.
"""


class _ShiftedCall:
    """An ``IDelayedCall`` of the reactor, its ``getTime()`` on the shifted clock."""

    def __init__(self, call, offset_s):
        self._call, self._offset_s = call, offset_s

    def getTime(self):
        return self._call.getTime() + self._offset_s

    def __getattr__(self, name):
        return getattr(self._call, name)


class ShiftedReactor:
    def __init__(self, reactor, offset_s):
        self._reactor = reactor
        self.offset_s = offset_s

    def seconds(self):
        return self._reactor.seconds() + self.offset_s

    def callLater(self, delay, f, *args, **kw):
        return _ShiftedCall(self._reactor.callLater(delay, f, *args, **kw), self.offset_s)

    def getDelayedCalls(self):
        return [_ShiftedCall(c, self.offset_s) for c in self._reactor.getDelayedCalls()]

    def __getattr__(self, name):
        return getattr(self._reactor, name)

    def __repr__(self):
        return f"<ShiftedReactor {self.offset_s:+g} s of {self._reactor!r}>"

"""One back-off for everything that retries: the journal's writer waiting out a
locked database, a trunk's registration retries, the congestion brake's pauses.

Pure: it only counts. It hands out delays (seconds); the caller waits them with its
own clock (``reactor.callLater``, ``Condition.wait``, a ``now`` it compares with).
"""

from core.errors import InputError


class Backoff:
    """Delays ``first``, ``first * factor``, ``first * factor**2``, ... never above
    ``maximum``; :meth:`reset` (after a success) starts again from ``first``.

    >>> b = Backoff(0.25, 1.0)
    >>> [b.next() for _ in range(5)]
    [0.25, 0.5, 1.0, 1.0, 1.0]
    >>> b.reset(); b.next()
    0.25
    """

    __slots__ = ("first", "maximum", "factor", "tries", "_next")

    def __init__(self, first, maximum, factor=2.0):
        for value, what in ((first, "first delay"), (maximum, "maximum delay")):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise InputError(f"back-off {what} {value!r}: a number of seconds above 0")
        if maximum < first:
            raise InputError(f"back-off maximum delay {maximum!r} s is below the first delay {first!r} s")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 1 <= factor < float("inf"):
            raise InputError(f"back-off factor {factor!r}: a number of at least 1")
        self.first, self.maximum, self.factor = first, maximum, factor
        self.tries = 0  # delays handed out since the last reset
        self._next = first

    def next(self):
        """The delay before the next try (and count the try)."""
        delay = self._next
        self._next = min(self.maximum, delay * self.factor)
        self.tries += 1
        return delay

    def reset(self):
        """A success: the next delay is ``first`` again."""
        self._next = self.first
        self.tries = 0

    def __repr__(self):
        return f"<Backoff {self.first:g}..{self.maximum:g} s x{self.factor:g}, next {self._next:g} s>"

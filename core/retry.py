"""One back-off for everything that retries or slows down: the journal's writer
waiting out a locked database, a trunk's registration retries, the congestion
brake's pauses, a SIP worker that dies before it is ready, wrong PINs from one
source address.

Pure: it only counts. It hands out delays (seconds); the caller waits them with its
own clock (``reactor.callLater``, ``Condition.wait``, a ``now`` it compares with).
"""

import math

from core.errors import InputError


class Backoff:
    """Delays ``first``, ``first * factor``, ``first * factor**2``, ... never above
    ``maximum``. :meth:`next` hands them out in turn and :meth:`reset` (after a
    success) starts again from ``first``; :meth:`delay` is the n-th of them, for
    callers that keep their own count (per worker, per source address).

    >>> b = Backoff(0.25, 1.0)
    >>> [b.next() for _ in range(5)]
    [0.25, 0.5, 1.0, 1.0, 1.0]
    >>> b.reset(); b.next()
    0.25
    >>> b.delay(0), b.delay(1), b.delay(10**9)
    (0.25, 0.5, 1.0)
    """

    __slots__ = ("first", "maximum", "factor", "tries", "_top")

    def __init__(self, first, maximum, factor=2.0):
        for value, what in ((first, "first delay"), (maximum, "maximum delay")):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise InputError(f"back-off {what} {value!r}: a number of seconds above 0")
        if maximum < first:
            raise InputError(f"back-off maximum delay {maximum!r} s is below the first delay {first!r} s")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 1 <= factor < math.inf:
            raise InputError(f"back-off factor {factor!r}: a number of at least 1")
        self.first, self.maximum, self.factor = first, maximum, factor
        self.tries = 0  # delays handed out by next() since the last reset
        # from this n on, every delay is the maximum (keeps factor ** n finite)
        self._top = 1 if factor == 1 else math.ceil(math.log(maximum / first, factor)) + 1

    def delay(self, n):
        """The n-th delay (0 for the first; a negative n counts as 0), without counting."""
        if n <= 0 or self.factor == 1:
            return self.first
        if n >= self._top:
            return self.maximum
        return min(self.maximum, self.first * self.factor ** n)

    def next(self):
        """The delay before the next try (and count the try)."""
        d = self.delay(self.tries)
        self.tries += 1
        return d

    def reset(self):
        """A success: the next delay is ``first`` again."""
        self.tries = 0

    def __repr__(self):
        return f"<Backoff {self.first:g}..{self.maximum:g} s x{self.factor:g}, next {self.delay(self.tries):g} s>"

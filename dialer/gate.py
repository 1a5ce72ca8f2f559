"""Account-wide guarantees of a dialer service: the gate every call passes.

The terms of service promise each account its own line capacity (ADSL <= 3
concurrent calls, G.SHDSL <= 10, fiber more), a calls-per-second cap per SIP trunk,
and one agent session per person. These hold across all the account's campaigns,
so they live here, owned by the service (``dialer.service.Service``) and shared by
every campaign loop (``dialer.engine.Dialer``), not inside one campaign's loop.

- :class:`AccountGate`: lines in use per account (customer legs from the dial
  decision until their ``ended``: ringing, waiting for an agent, connected, playing
  the safe-harbor message; the loopback tie legs between two SIP workers are not
  lines, the carrier never sees them) and dial instants per trunk over a sliding
  second. A dial ``take``s a line and a CPS slot before its INVITE leaves, and
  ``release``s the line when the leg ends.
- :class:`AgentSessions`: which loop holds each user's phone session, service-wide.
  A second login of a user who is ready or paused ends the first session (the old
  phone is hung up, the agent logged out of its campaign with the reason, one log
  line); a second login while the first one is on a call or in wrap-up is refused
  (the new phone is hung up with 486 Busy Here), so no customer is ever cut off.
- :class:`LoginGuard`: wrong agent PINs slow down their *source address* (a
  doubling back-off after a few free tries), never the user: nobody who merely
  knows a user name can lock that agent out.

All three are pure: the caller gives the instant (the reactor's seconds). The
shape (``room``/``take``/``release`` by call key) is what a multi-node gate on
PostgreSQL implements with leased rows; this one holds one process's state.
"""

import collections

from core.errors import StateError
from core.retry import Backoff


class AccountGate:
    """Lines per account and calls per second per trunk, for one dialer service."""

    def __init__(self):
        self.capacity = {}  # account id -> lines
        self.lines = {}  # account id -> {call key}
        self.owner = {}  # call key -> account id
        self.stamps = {}  # trunk key -> deque of dial instants (s)
        self.cps = {}  # trunk key -> calls per second
        self.peak = {}  # account id -> most lines in use at once (for reports and tests)

    def set_capacity(self, account_id, lines):
        self.capacity[account_id] = int(lines)
        self.lines.setdefault(account_id, set())

    def set_cps(self, trunk, cps):
        self.cps[trunk] = float(cps)
        self.stamps.setdefault(trunk, collections.deque())

    def in_use(self, account_id):
        return len(self.lines.get(account_id, ()))

    def free_lines(self, account_id):
        return max(0, self.capacity.get(account_id, 0) - self.in_use(account_id))

    def cps_room(self, trunk, t):
        """Dials the trunk takes at ``t``: its cap over any sliding second."""
        if trunk not in self.cps:
            return 0
        q = self.stamps[trunk]
        while q and q[0] <= t - 1.0:
            q.popleft()
        return max(0, int(self.cps[trunk]) - len(q))

    def room(self, account_id, trunk, t):
        """Calls that may start now: the account's free lines and the trunk's CPS room."""
        return min(self.free_lines(account_id), self.cps_room(trunk, t))

    def take(self, key, account_id, trunk, t):
        """A dial is about to leave: one line of the account and one CPS slot of the trunk."""
        if key in self.owner:
            raise StateError(f"call {key} already holds a line")
        if self.free_lines(account_id) < 1:
            raise StateError(f"all {self.capacity.get(account_id, 0)} lines of account {account_id} are in use")
        if self.cps_room(trunk, t) < 1:
            raise StateError(f"trunk {trunk} is at its cap of {self.cps.get(trunk, 0):g} calls per second")
        self.lines[account_id].add(key)
        self.owner[key] = account_id
        self.stamps[trunk].append(t)
        self.peak[account_id] = max(self.peak.get(account_id, 0), self.in_use(account_id))

    def release(self, key):
        """The customer leg ended: its line is free (unknown keys are ignored)."""
        acc = self.owner.pop(key, None)
        if acc is not None:
            self.lines[acc].discard(key)


class AgentSessions:
    """One phone session per user across every campaign loop of the service."""

    def __init__(self):
        self.by_user = {}  # user id -> (loop, agent leg key)

    def holder(self, user_id):
        return self.by_user.get(user_id)

    def open(self, user_id, loop, key):
        self.by_user[user_id] = (loop, key)

    def close(self, user_id, key):
        cur = self.by_user.get(user_id)
        if cur is not None and cur[1] == key:
            del self.by_user[user_id]


class LoginGuard:
    """Back-off per source address after wrong PINs: ``free`` wrong tries cost nothing,
    then each further try must wait ``base_s`` doubling per failure (at most ``max_s``)
    after the last failure. A right PIN clears the source; a source quiet for ``max_s``
    is forgotten."""

    def __init__(self, free=3, base_s=2.0, max_s=300.0):
        self.free, self.base_s, self.max_s = free, base_s, max_s
        self.backoff = Backoff(base_s, max_s)
        self.failures = {}  # source -> (count, last failure instant)

    def wait(self, source, t):
        """Seconds the source must still wait before its next try (0: it may try now)."""
        n, last = self.failures.get(source, (0, None))
        if n < self.free or last is None:
            return 0.0
        if t - last >= self.max_s:
            del self.failures[source]
            return 0.0
        delay = self.backoff.delay(n - self.free)
        return max(0.0, last + delay - t)

    def failed(self, source, t):
        n, _ = self.failures.get(source, (0, None))
        self.failures[source] = (n + 1, t)
        return n + 1

    def succeeded(self, source):
        self.failures.pop(source, None)


def source_host(source):
    """'127.0.0.1:5062' -> '127.0.0.1'; '[::1]:5062' -> '::1' (the back-off is per host:
    a softphone's port changes)."""
    s = (source or "").strip()
    if s.startswith("["):
        return s[1:].split("]", 1)[0]
    if s.count(":") == 1:
        return s.split(":", 1)[0]
    return s or "unknown"

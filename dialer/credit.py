"""The balance guard of a dialer service: no call starts on credit the account does
not have, and no call runs on past it (issue 13).

One :class:`CreditGuard` per service, shared by every campaign loop (as the
``dialer.gate.AccountGate``), on the reactor thread; its store reads go through
``run`` (the journal's ``call``: the store thread), never on the reactor thread.

**Available** = the ledger's balance (as last read) - the rated cost of calls that
ended but whose charge the balance read does not hold yet (``unposted``) - the
reservations of calls in progress - the account's floor ($100 unless set).

- **Before each dial** the worst-case cost of the call's first *slice* (``slice_s``
  billable seconds, 60 by default) is reserved: service minutes at the account's
  plan plus telecom at the destination's rate-deck row (longest prefix in force),
  each by the rating rule of ``billing.rating`` (connect fee, initial block and
  increments included). If that would take the available balance below 0 (the
  balance under the floor), the dial does not happen: the loop's room is 0, the
  lead goes back, the policy is told, the campaign's blocked reason says "balance
  $X is at the floor $Y: no new calls". All of an account's campaigns draw on one
  available balance, so calls racing for the last dollars cannot all pass on one
  unit of credit: they are reserved one by one on one thread.
- **A destination without a rate** (none in the deck in force, or no deck) is never
  dialled unpriced: the lead is parked for an hour with the reason.
- **Calls in progress**: a slice is counted from the answer (ringing is not billed).
  ``margin_s`` before each slice boundary the call's next slice is reserved if the
  available balance allows it; else the call is **ended at the boundary** (hung up
  ``margin_s`` early, so its billable time stays within the slices reserved; the
  CDR says ``hangup_by`` "balance"). There is no extra slice of grace: the balance
  goes under the floor only by what a hang-up that takes longer than ``margin_s``
  adds (at most one increment of each component per such call).
- **At hang-up** the reservation is released and replaced by the call's rated cost
  (the same rule), counted as unposted until a balance read made after its CDR was
  written holds its charge (``billing.live`` rates each CDR into the ledger when the
  journal writes it).

The balance is read when an account joins, every ``refresh_s`` seconds (a top-up
or a new floor shows within that time) and soon after calls end. Only an account
whose billing is enabled (``dialer bill enable``: ``billing.standing``) is guarded;
one without (the demo's, accounts made before billing) dials as before. The same
read gives the account's standing: a pending (no payment yet), suspended or closed
account starts no new call ("account is suspended: ...: no new calls"); its calls
in progress go on under the guard's slices.

Money is integer micro-units here (no float, no true division); time is the
reactor clock's (``clock.seconds()``, ``clock.callLater``).
"""

import datetime as _dt

from twisted.logger import Logger

from billing.live import guard_state, slice_cost
from billing.money import fmt, from_micros
from billing.rating import billable_seconds
from core.errors import StateError, StoreError
from core.timeutil import to_iso

log = Logger(namespace="dialer.credit")

SLICE_S = 60           # billable seconds reserved at a time
REFRESH_S = 10.0       # the balance read at least this often
REFRESH_GAP_S = 0.5    # after a call ends, at most one read per this many seconds
UNPRICED_RETRY_S = 3600  # a lead whose destination has no rate is parked this long
UNLIMITED = 1 << 30    # the room of an account that is not guarded


class Refusal:
    """Why a dial is refused: ``unpriced`` (no rate for the destination) or the floor."""
    __slots__ = ("unpriced", "text")

    def __init__(self, unpriced, text):
        self.unpriced, self.text = unpriced, text

    def __repr__(self):
        return f"Refusal({'unpriced' if self.unpriced else 'floor'}: {self.text})"


class _Account:
    __slots__ = ("loaded", "enabled", "may_dial", "standing", "last_id", "balance", "floor", "service", "deck",
                 "deck_name", "index",
                 "cheapest", "reserved", "calls", "unposted", "held", "unpriced", "ended", "extended", "dials")

    def __init__(self):
        self.loaded = self.enabled = False
        self.may_dial, self.standing = True, None  # billing.standing: pending, suspended, closed start no call
        self.last_id = self.balance = self.floor = 0
        self.service = self.deck = self.deck_name = self.index = self.cheapest = None
        self.reserved = 0  # micro-units reserved for the calls in progress
        self.calls = set()  # their keys
        self.unposted = {}  # call key -> rated cost of an ended call the balance read may not hold yet
        self.held = self.unpriced = self.ended = self.extended = self.dials = 0  # counts, for status()


class _Call:
    __slots__ = ("key", "account_id", "telecom", "service", "prefix", "slices", "reserved", "timer", "hangup",
                 "answered_t")

    def __init__(self, key, account_id, telecom, service, prefix, reserved, hangup):
        self.key, self.account_id, self.telecom, self.service = key, account_id, telecom, service
        self.prefix, self.reserved, self.hangup = prefix, reserved, hangup
        self.slices = 1
        self.timer = self.answered_t = None


def _digits(number):
    n = str(number)
    return n[1:] if n.startswith("+") else n


class CreditGuard:
    """Reservations against each account's balance, for one dialer service. ``run(fn,
    *args) -> Deferred`` runs ``fn(store, *args)`` on the store thread."""

    def __init__(self, clock, run, slice_s=SLICE_S, margin_s=None, refresh_s=REFRESH_S, refresh_gap_s=REFRESH_GAP_S):
        if isinstance(slice_s, bool) or not isinstance(slice_s, int) or slice_s < 1:
            raise ValueError(f"the slice is a whole number of seconds (not {slice_s!r})")
        self.clock, self.run = clock, run
        self.slice_s = slice_s
        # the hang-up at a boundary leaves this early (its BYE and the worker's report take time)
        self.margin_s = min(5.0, slice_s * 0.25) if margin_s is None else float(margin_s)
        if not 0 <= self.margin_s < slice_s:
            raise ValueError(f"the margin ({self.margin_s} s) must be shorter than the slice ({slice_s} s)")
        self.refresh_s, self.refresh_gap_s = refresh_s, refresh_gap_s
        self.accounts = {}  # account id -> _Account
        self.calls = {}  # call key -> _Call
        self._inflight = False
        self._again = False
        self._scheduled = None
        self._periodic = None
        self._last_start = None
        self.stopped = False

    # -- reading ----------------------------------------------------------------------
    def available(self, account_id):
        """Micro-units above the floor not yet spoken for (None: not read yet, or the
        account is not guarded)."""
        a = self.accounts.get(account_id)
        if a is None or not a.loaded or not a.enabled:
            return None
        return a.balance - sum(a.unposted.values()) - a.reserved - a.floor

    def guarded(self, account_id):
        a = self.accounts.get(account_id)
        return a is not None and a.loaded and a.enabled

    def room(self, account_id):
        """Calls that may start now as far as the balance goes: 0 until the balance is
        read; unlimited for an account that is not guarded; else how many of the
        cheapest first slices (any destination of the deck) the available balance holds
        (each dial is then checked at its own destination's rate)."""
        a = self.accounts.get(account_id)
        if a is None or not a.loaded:
            return 0
        if not a.enabled:
            return UNLIMITED
        avail = self.available(account_id)
        if not a.may_dial or a.cheapest is None or avail < 0:
            return 0
        if a.cheapest == 0:
            return UNLIMITED
        return avail // a.cheapest

    def blocked(self, account_id):
        """Why the account cannot start a call now (None: it can, or its balance is not
        read yet)."""
        a = self.accounts.get(account_id)
        if a is None or not a.loaded or not a.enabled or self.room(account_id) > 0:
            return None
        if not a.may_dial:
            return f"account is {a.standing}: no new calls"
        if a.cheapest is None:
            return "no rate deck in force: no call is dialled unpriced (import one with: dialer rates import)"
        return self._floor_text(a)

    def _floor_text(self, a):
        live = a.balance - sum(a.unposted.values())
        text = f"balance {fmt(from_micros(live))} is at the floor {fmt(from_micros(a.floor))}: no new calls"
        if a.calls:
            text += f" ({fmt(from_micros(a.reserved))} reserved for {len(a.calls)} call(s) in progress)"
        return text

    def _quote(self, a, number, t):
        """(telecom Tariff, prefix, first slice cost) of a call to ``number`` at ``t``, or a Refusal."""
        digits = _digits(number)
        if a.index is None:
            return Refusal(True, "no rate deck in force: no call is dialled unpriced")
        at = to_iso(_dt.datetime.fromtimestamp(t, _dt.timezone.utc))
        hit = a.index.tariff(digits, at) if digits.isdigit() else None
        if hit is None:
            return Refusal(True, f"no rate for +{digits} in deck {a.deck_name}: not dialled unpriced")
        prefix, _dest, telecom = hit
        return telecom, prefix, slice_cost(self.slice_s, a.service, telecom)

    def refusal(self, account_id, number, t):
        """None when a call to ``number`` may start now, else a Refusal."""
        a = self.accounts.get(account_id)
        if a is None or not a.loaded:
            return Refusal(False, "the account's balance is not read yet")
        if not a.enabled:
            return None
        if not a.may_dial:
            return Refusal(False, f"account is {a.standing}: no new calls")
        q = self._quote(a, number, t)
        if isinstance(q, Refusal):
            return q
        if q[2] > self.available(account_id):
            return Refusal(False, self._floor_text(a))
        return None

    # -- calls ------------------------------------------------------------------------
    def reserve(self, key, account_id, number, t, hangup):
        """A dial is about to leave: its first slice is reserved (StateError if it does
        not fit: ask :meth:`refusal` first, in the same reactor turn). ``hangup()``
        ends the call (at a slice boundary the balance does not cover)."""
        a = self.accounts.get(account_id)
        if a is None or not a.loaded:
            raise StateError(f"call {key}: the balance of account {account_id} is not read yet")
        if not a.enabled:
            return
        if not a.may_dial:
            raise StateError(f"call {key}: account is {a.standing}: no new calls")
        q = self._quote(a, number, t)
        if isinstance(q, Refusal):
            raise StateError(f"call {key}: {q.text}")
        telecom, prefix, cost = q
        if cost > self.available(account_id):
            raise StateError(f"call {key}: {self._floor_text(a)}")
        if key in self.calls:
            raise StateError(f"call {key} already holds a reservation")
        self.calls[key] = _Call(key, account_id, telecom, a.service, prefix, cost, hangup)
        a.reserved += cost
        a.calls.add(key)
        a.dials += 1

    def held_back(self, account_id, n):
        """``n`` dials the policy asked for did not happen for lack of balance."""
        a = self.accounts.get(account_id)
        if a is not None:
            a.held += n

    def unpriced(self, account_id, n):
        a = self.accounts.get(account_id)
        if a is not None:
            a.unpriced += n

    def _cost(self, c, slices):
        return slice_cost(slices * self.slice_s, c.service, c.telecom)

    def answered(self, key):
        """The call was answered: its slices count from now."""
        c = self.calls.get(key)
        if c is None or c.answered_t is not None:
            return
        c.answered_t = self.clock.seconds()
        c.timer = self.clock.callLater(self.slice_s - self.margin_s, self._boundary, key)

    def _boundary(self, key):
        """``margin_s`` before the end of the call's reserved slices: one slice more if
        the balance allows it, else the call ends."""
        c = self.calls.get(key)
        if c is None:
            return
        c.timer = None
        a = self.accounts[c.account_id]
        need = self._cost(c, c.slices + 1) - c.reserved
        avail = self.available(c.account_id)
        if avail is not None and need <= avail:
            c.reserved += need
            a.reserved += need
            c.slices += 1
            a.extended += 1
            due = c.answered_t + c.slices * self.slice_s - self.margin_s
            c.timer = self.clock.callLater(max(0.0, due - self.clock.seconds()), self._boundary, key)
            return
        a.ended += 1
        log.warn("call {key} ended at its slice boundary ({s} s billable reserved): the balance above the floor "
                 "({avail}) does not cover its next slice ({need})", key=key, s=c.slices * self.slice_s,
                 avail=fmt(from_micros(avail if avail is not None else 0)), need=fmt(from_micros(need)))
        c.hangup()

    def ended(self, key, billable_ms):
        """The call ended: its reservation is replaced by its rated cost (counted until
        the balance read holds its charge)."""
        c = self.calls.pop(key, None)
        if c is None:
            return
        if c.timer is not None and c.timer.active():
            c.timer.cancel()
        a = self.accounts[c.account_id]
        a.reserved -= c.reserved
        a.calls.discard(key)
        billsec = billable_seconds(billable_ms or 0)
        cost = slice_cost(billsec, c.service, c.telecom) if billsec > 0 else 0
        if cost:
            a.unposted[key] = cost
            if cost > c.reserved:
                log.warn("call {key} cost {cost}, more than the {res} reserved for it ({s} s billable)", key=key,
                         cost=fmt(from_micros(cost)), res=fmt(from_micros(c.reserved)), s=billsec)
            self.request_refresh()

    # -- the balance ------------------------------------------------------------------
    def track(self, account_id):
        """An account whose campaign joins the service: its balance is read now."""
        if account_id not in self.accounts:
            self.accounts[account_id] = _Account()
            self.request_refresh(at_once=True)
        if self._periodic is None and not self.stopped:
            self._periodic = self.clock.callLater(self.refresh_s, self._tick)

    def _tick(self):
        self._periodic = None
        if self.stopped:
            return
        self.request_refresh(at_once=True)
        self._periodic = self.clock.callLater(self.refresh_s, self._tick)

    def request_refresh(self, at_once=False):
        """Read the balances soon (at most one read in flight; one per ``refresh_gap_s``
        after calls end)."""
        if self.stopped:
            return
        if self._inflight:
            self._again = True
            return
        if self._scheduled is not None:
            return
        wait = 0.0
        if not at_once and self._last_start is not None:
            wait = max(0.0, self._last_start + self.refresh_gap_s - self.clock.seconds())
        if wait <= 0:
            self.refresh()  # (through ``run``: the store thread's work, whose answer comes later)
            return
        self._scheduled = self.clock.callLater(wait, self.refresh)

    def refresh(self):
        """Read every tracked account's balance, plan and deck on the store thread."""
        if self._scheduled is not None and self._scheduled.active():
            self._scheduled.cancel()
        self._scheduled = None
        if self._inflight or self.stopped:
            return None
        self._inflight, self._again = True, False
        self._last_start = self.clock.seconds()
        asked = {acc: (a.last_id, a.balance, a.deck) for acc, a in self.accounts.items()}
        unposted = {key: acc for acc, a in self.accounts.items() for key in a.unposted}
        now = _dt.datetime.fromtimestamp(self._last_start, _dt.timezone.utc)
        d = self.run(guard_state, asked, self.slice_s, frozenset(unposted), now)
        d.addCallbacks(self._refreshed, self._not_refreshed, callbackArgs=(asked, unposted))
        d.addErrback(lambda f: log.failure("balance guard", f))
        return d

    def _refreshed(self, result, asked, unposted):
        self._inflight = False
        for acc, st in result["accounts"].items():
            a = self.accounts.get(acc)
            if a is None:
                continue
            if a.last_id != asked[acc][0]:
                continue  # (never: one read at a time)
            if not st["enabled"]:
                a.loaded, a.enabled = True, False
                continue
            if not a.enabled and a.loaded:
                log.info("account {acc}: billing enabled; the balance guard applies to its new calls", acc=acc)
            a.loaded, a.enabled = True, True
            a.last_id, a.balance, a.floor, a.service = st["last_id"], st["balance"], st["floor"], st["service"]
            a.may_dial, a.standing = st["may_dial"], st["standing"]
            if st["deck"] != a.deck:
                a.deck, a.deck_name, a.index = st["deck"], st["deck_name"], st["index"]
            a.cheapest = st["cheapest"]
        for key in result["written"]:
            a = self.accounts.get(unposted.get(key))
            if a is not None:
                a.unposted.pop(key, None)
        if self._again:
            self.request_refresh()

    def _not_refreshed(self, f):
        self._inflight = False
        f.trap(StoreError)
        log.debug("balances not read ({err}); the next read tries again", err=f.getErrorMessage())
        if self._again:
            self.request_refresh()

    def stop(self):
        self.stopped = True
        for call in (self._periodic, self._scheduled):
            if call is not None and call.active():
                call.cancel()
        self._periodic = self._scheduled = None
        for c in self.calls.values():
            if c.timer is not None and c.timer.active():
                c.timer.cancel()
            c.timer = None

    # -- reports ----------------------------------------------------------------------
    def status(self, account_id=None):
        """The guard's state per account (amounts as Decimal)."""
        out = {}
        for acc, a in self.accounts.items():
            if account_id is not None and acc != account_id:
                continue
            if not a.loaded or not a.enabled:
                out[acc] = {"guarded": False, "loaded": a.loaded}
                continue
            out[acc] = {"guarded": True, "standing": a.standing,
                        "balance": from_micros(a.balance - sum(a.unposted.values())),
                        "ledger_balance": from_micros(a.balance), "floor": from_micros(a.floor),
                        "reserved": from_micros(a.reserved), "calls_in_progress": len(a.calls),
                        "available": from_micros(self.available(acc)), "deck": a.deck_name,
                        "slice_s": self.slice_s, "dials": a.dials, "held_back": a.held, "unpriced": a.unpriced,
                        "extended": a.extended, "ended_at_boundary": a.ended,
                        "blocked": self.blocked(acc)}
        return out if account_id is None else out.get(account_id)

"""The abandon rate: one definition, read by the pacing policy's start-up window
(``dialer.jurisdiction``), the reports (``dialer.cdr.campaign_stats``) and the live
summary (``dialer.engine.Stats``, what the demo prints).

The jurisdictions' rule (US-ABANDON, UK-ABANDON: abandoned calls at most a share of
the live-answered calls of a campaign over a period) is read from the call records so:

- a **live answer** is a call a person answered: its record has an answer instant
  (``answered_at``, the carrier's 2xx) and is not classed as an answering machine
  (disposition ``machine``; no call is classed so until the dialer has AMD). Its
  disposition is then ``connected`` (an agent was bridged), ``abandoned`` (no agent
  within the connect window), ``answered`` (the person hung up inside the connect
  window) or, rarely, ``failed`` (the SIP worker died after the answer).
- an **abandon** is a live answer whose ``abandoned`` flag is set: no agent was
  bridged and the safe-harbor message started, or the call outlived the connect
  window (``dialer.calls.CallLeg``).
- the **window** of ``hours`` at instant t holds the calls that started
  (``started_at``) at or after the beginning of the UTC minute in which t - hours
  falls, and not after t. Whole minutes, so that a count kept in memory by the
  minute (:class:`AbandonWindow`) drops a call at the same instant as the count
  from the database (:func:`window_counts`).
- the **rate** is abandons / live answers (none without a live answer).
"""

import heapq
import math
from decimal import ROUND_UP, Decimal

from core.timeutil import from_ms, to_iso

# the definition above as SQL over the cdrs table
LIVE_SQL = "(answered_at IS NOT NULL AND disposition <> 'machine')"
ABANDON_SQL = f"({LIVE_SQL} AND abandoned = 1)"


def _get(record, name):
    return record[name] if isinstance(record, dict) else getattr(record, name)


def is_live(record):
    """Whether a call is a live answer: a ``dialer.cdr.Cdr``, an ended ``CallLeg``, or
    a CDR as the journal carries it (``dialer.records.cdr_payload``)."""
    return _get(record, "answered_ms") is not None and _get(record, "disposition") != "machine"


def is_abandon(record):
    """Whether a call (as for :func:`is_live`) is an abandoned live answer."""
    return is_live(record) and bool(_get(record, "abandoned"))


def rate(lives, abandons):
    """abandons / live answers as a float, None without live answers."""
    return abandons / lives if lives else None


def rate_decimal(lives, abandons):
    """The rate as a Decimal rounded up to 4 places (a report never understates it)."""
    if not lives:
        return None
    return (Decimal(abandons) / Decimal(lives)).quantize(Decimal("0.0001"), rounding=ROUND_UP)


def window_start(now_s, hours):
    """Epoch seconds where the window of ``hours`` ending at ``now_s`` begins: the
    start of the UTC minute in which now - hours falls."""
    return math.floor((now_s - float(hours) * 3600.0) / 60.0) * 60.0


def _bounds(now, hours):
    now_s = now.timestamp()
    return to_iso(from_ms(int(window_start(now_s, hours) * 1000))), to_iso(now)


def window_counts(store, campaign_id, now, hours):
    """(live answers, abandons) of a campaign in the window of ``hours`` ending at
    ``now`` (an aware datetime), from its CDRs."""
    since, until = _bounds(now, hours)
    row = store.query_one(
        f"SELECT SUM(CASE WHEN {LIVE_SQL} THEN 1 ELSE 0 END) AS lives, "
        f"SUM(CASE WHEN {ABANDON_SQL} THEN 1 ELSE 0 END) AS abandons "
        "FROM cdrs WHERE campaign_id = ? AND started_at >= ? AND started_at <= ?", (campaign_id, since, until))
    return int(row["lives"] or 0), int(row["abandons"] or 0)


def window_minutes(store, campaign_id, now, hours):
    """The same counts by minute of call start: [(minute start in epoch seconds, live
    answers, abandons)], oldest first (what :class:`AbandonWindow` starts from)."""
    import datetime as _dt
    since, until = _bounds(now, hours)
    rows = store.query(
        f"SELECT substr(started_at, 1, 16) AS minute, SUM(CASE WHEN {LIVE_SQL} THEN 1 ELSE 0 END) AS lives, "
        f"SUM(CASE WHEN {ABANDON_SQL} THEN 1 ELSE 0 END) AS abandons "
        "FROM cdrs WHERE campaign_id = ? AND started_at >= ? AND started_at <= ? "
        "GROUP BY minute ORDER BY minute", (campaign_id, since, until))
    out = []
    for r in rows:
        if not r["lives"]:
            continue
        t = _dt.datetime.strptime(r["minute"], "%Y-%m-%dT%H:%M").replace(tzinfo=_dt.timezone.utc).timestamp()
        out.append((t, int(r["lives"]), int(r["abandons"] or 0)))
    return out


class AbandonWindow:
    """The live answers and abandons of the last ``hours``, kept in memory by the
    minute of call start, by the definition above. ``history``: the counts by minute
    the CDRs already hold (:func:`window_minutes`); then :meth:`add` each call as it
    ends. Pure: the caller gives every instant (epoch seconds)."""

    def __init__(self, hours, history=()):
        self.hours = float(hours)
        self.minutes = {}  # minute start (s) -> [live answers, abandons]
        # the sums over ``minutes`` and a heap of its keys (the oldest minute leaves
        # first): :meth:`counts` costs no walk over a 30-day window's 43 200 minutes,
        # so the loop can read it at every dial (the call's evidence, dialer.evidence)
        self._lives = self._abandons = 0
        self._heap = []
        self._newest = None
        for t, lives, abandons in history:
            self._bucket(float(t), int(lives), int(abandons))

    def _bucket(self, t, lives, abandons):
        b = self.minutes.get(t)
        if b is None:
            b = self.minutes[t] = [0, 0]
            heapq.heappush(self._heap, t)
            if self._newest is None or t > self._newest:
                self._newest = t
        b[0] += lives
        b[1] += abandons
        self._lives += lives
        self._abandons += abandons

    def add(self, record):
        """An ended call (as for :func:`is_live`): counted by the minute of its start."""
        if not is_live(record):
            return
        t = math.floor(_get(record, "started_ms") / 60000.0) * 60.0
        self._bucket(t, 1, 1 if is_abandon(record) else 0)

    def counts(self, now_s):
        """(live answers, abandons) in the window ending at ``now_s`` (None: every call
        kept, none dropped)."""
        if now_s is None:
            return self._lives, self._abandons
        start = window_start(now_s, self.hours)
        heap = self._heap
        while heap and heap[0] < start:
            lv, ab = self.minutes.pop(heapq.heappop(heap))
            self._lives -= lv
            self._abandons -= ab
        if not heap:
            self._newest = None
        lives, abandons = self._lives, self._abandons
        if self._newest is not None and self._newest > now_s:  # minutes after now_s (a clock behind): not counted
            for t, (lv, ab) in self.minutes.items():
                if t > now_s:
                    lives -= lv
                    abandons -= ab
        return lives, abandons

    def rate(self, now_s):
        return rate(*self.counts(now_s))

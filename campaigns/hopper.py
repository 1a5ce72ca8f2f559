"""The lead hopper: the next leads a dialer loop may call, in priority order
(callbacks due, then fresh, then recycled), each re-checked by the rules engine at
that instant and reserved so two loops never take the same lead.

Layout (see shared storage notes): only leads that are due carry status 'new' and
sit in the hot partial index; leads waiting for a retry or a callback are parked
('retry'/'callback') and promoted when due; leads the rules block until later are
parked until the instant they may be called; leads that may never be called leave
the hopper for good. So a claim never wades through leads that are not due.
"""

import datetime as _dt

from core.errors import InputError
from core.timeutil import to_iso, utc
from rules.engine import NEVER_CATEGORIES as NEVER, Screener, is_campaign_wide, next_allowed

from .leads import lead_of
from .store import get_campaign

_COLS = ("id, phone, phone_raw, region, number_type, zones, number_state, state, zone, groups, priority, attempts, "
         "status, campaign_id")


class HopperBlocked(InputError):
    """Nothing can be dialled in this campaign until something campaign-wide is fixed
    (registry missing or stale, caller ID not the account's)."""
    code = "campaign-blocked"


class Hopper:
    """One campaign's hopper over one store. ``campaign``: its id (what the live dialer
    passes), its row, or its name (unique across the installation, else give
    ``account``). ``reservation`` is how long a claimed lead stays reserved without
    being dialled before it returns to the hopper. The rules see the campaign's
    account: its company DNC list and its own call history (frequency caps and
    lockouts are per caller)."""

    def __init__(self, store, campaign, reservation_seconds=120, scan_limit=2000, account=None):
        self.store = store
        self.campaign = get_campaign(store, campaign, account)
        self.cid = self.campaign["id"]
        self.account_id = self.campaign["account_id"]
        self.reservation = _dt.timedelta(seconds=reservation_seconds)
        self.scan_limit = scan_limit
        self._ctx = None
        self._ctx_mark = None
        self._last_screener = None

    def context(self, now):
        """The rules context, reloaded only when something changed (every rule, DNC or
        campaign change appends to the audit log, so its head is the change mark)."""
        from rules.service import history_hours, load_context
        mark = self.store.conn.execute("SELECT MAX(id) FROM audit_log").fetchone()[0]
        if self._ctx is None or mark != self._ctx_mark:
            self._ctx = load_context(self.store, now, self.campaign["region"], self.cid)
            self._ctx_mark = mark
            self._history_hours = history_hours(self._ctx.rulesets)
        return self._ctx

    @property
    def last_context(self):
        """The rules context of the last claim (its rule sets, the DNC lists' as-of dates
        and versions), or None before the first: what a dial's evidence records."""
        return self._ctx

    def _maintain(self, at):
        ts = to_iso(at)
        ex = self.store.execute
        ex("UPDATE leads SET status = 'new' WHERE campaign_id = ? AND status IN ('retry', 'callback') "
           "AND next_attempt_at <= ?", (self.cid, ts))
        ex("UPDATE leads SET status = 'new', reserved_by = NULL, reserved_until = NULL WHERE campaign_id = ? "
           "AND status = 'reserved' AND reserved_until <= ?", (self.cid, ts))

    def next_leads(self, n, at, consumer, live_numbers=frozenset(), live_groups=frozenset()):
        """Reserve and return up to ``n`` leads dialable at ``at``: [(lead_row, verdict)].
        ``live_numbers`` / ``live_groups``: calls ringing or connected now (the dialer's),
        on top of the leads already reserved or dialling in this campaign."""
        from rules.service import load_history
        at = utc(at)
        store = self.store
        with store.transaction():
            if self.campaign_state() != "running":
                raise InputError(f"campaign {self.campaign['name']!r} is {self.campaign_state()}: start it first")
            self._maintain(at)
            base = self.context(at)
            busy = store.query("SELECT phone, groups FROM leads WHERE campaign_id = ? AND status IN ('reserved', 'dialing')",
                               (self.cid,))
            live_n = set(live_numbers) | {int(r["phone"][1:]) for r in busy}
            live_g = set(live_groups) | {g for r in busy for g in (r["groups"] or "").split(",") if g}
            picked, parks, blocks = [], [], []
            last = (-1, -1)
            scanned = 0
            ctx = None
            while len(picked) < n and scanned < self.scan_limit:
                rows = store.query(
                    f"SELECT {_COLS} FROM leads WHERE campaign_id = ? AND status = 'new' AND (priority > ? OR "
                    f"(priority = ? AND id > ?)) ORDER BY priority, id LIMIT ?",
                    (self.cid, last[0], last[0], last[1], max(2 * (n - len(picked)), 16)))
                if not rows:
                    break
                leads = [lead_of(r) for r in rows]
                hist = load_history(store, [ld.facts.value for ld in leads], at, self._history_hours, self.account_id)
                if ctx is None:
                    ctx = base.with_(history=hist, live_numbers=live_n, live_groups=live_g)
                else:
                    ctx.history = hist
                sc = self._screener(ctx, at)
                for row, lead in zip(rows, leads):
                    scanned += 1
                    last = (row["priority"], row["id"])
                    if len(picked) >= n:
                        break
                    v = sc.evaluate(lead)
                    if v.allowed:
                        picked.append((row, v))
                        ctx.mark_live(lead.facts.value, lead.groups)  # later candidates see it as live
                        continue
                    cats = set(v.categories)
                    wide = [r for r in v.reasons if is_campaign_wide(r)]
                    if wide:
                        if not picked:
                            raise HopperBlocked(f"campaign {self.campaign['name']!r} cannot dial: " +
                                                "; ".join(sorted({r.detail for r in wide})))
                        break
                    listed = any(r.category == "dnc" for r in v.reasons)
                    if cats & NEVER or listed:
                        blocks.append((row["id"], next(r.category for r in v.reasons), v))
                    elif cats == {"multiline"}:
                        continue  # another line of the business is live: leave it due
                    else:
                        t = next_allowed(lead, at, ctx)
                        parks.append((row["id"], t or at + _dt.timedelta(days=1), v))
            ts = to_iso(at)
            if picked:
                until = to_iso(at + self.reservation)
                store.conn.executemany(
                    "UPDATE leads SET status = 'reserved', reserved_by = ?, reserved_until = ?, updated_at = ? WHERE id = ?",
                    [(consumer, until, ts, row["id"]) for row, _ in picked])
            if parks:
                store.conn.executemany(
                    "UPDATE leads SET status = 'retry', next_attempt_at = ?, updated_at = ? WHERE id = ?",
                    [(to_iso(t), ts, lid) for lid, t, _ in parks])
            if blocks:
                store.conn.executemany(
                    "UPDATE leads SET status = 'blocked', disposition = ?, updated_at = ? WHERE id = ?",
                    [(cat, ts, lid) for lid, cat, _ in blocks])
                store.conn.executemany(
                    "INSERT INTO lead_events (lead_id, at, event, detail) VALUES (?, ?, 'blocked', ?)",
                    [(lid, ts, _reasons_json(v)) for lid, _, v in blocks])
        return picked

    def _screener(self, ctx, at):
        """A screener for this batch; the previous one's per-exchange caches are kept while
        the rules context is the same and the instant falls in the same minute."""
        sc = self._last_screener
        if sc is not None and sc.ctx.dnc is ctx.dnc and sc.ctx.rulesets is ctx.rulesets and sc.same_minute(at):
            sc.ctx = ctx
            return sc
        sc = self._last_screener = Screener(ctx, at)
        return sc

    def campaign_state(self):
        return self.store.conn.execute("SELECT state FROM campaigns WHERE id = ?", (self.cid,)).fetchone()[0]

    def mark_dialing(self, lead_ids, at):
        with self.store.transaction():
            self.store.conn.executemany(
                "UPDATE leads SET status = 'dialing', reserved_until = NULL, updated_at = ? WHERE id = ? AND status = 'reserved'",
                [(to_iso(at), i) for i in lead_ids])

    def release(self, lead_ids, at):
        """Give reserved leads back (e.g. the dialer stopped before calling them)."""
        with self.store.transaction():
            self.store.conn.executemany(
                "UPDATE leads SET status = 'new', reserved_by = NULL, reserved_until = NULL, updated_at = ? "
                "WHERE id = ? AND status = 'reserved'", [(to_iso(at), i) for i in lead_ids])


def _reasons_json(v):
    import json
    return json.dumps({"reasons": [r.as_dict() for r in v.reasons], "ruleset": v.ruleset})

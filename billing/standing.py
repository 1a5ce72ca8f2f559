"""An account's standing: may it dial? pending / active / notice / suspended / closed.

**Billing enabled.** The standing applies only to accounts whose billing was enabled
(``dialer bill enable``, :func:`enable`: an ``account_standing`` row exists). An
account without one is ``active`` with reason None and since None: the accounts made
before billing existed, the tests' and the demo's, dial as they always did.

States and transitions (each dated, stored in ``account_standing_events`` and audited
as ``billing.standing``):

* ``pending`` (reason "no payment yet"): billing enabled, no payment received. The
  terms: service starts only after payment. -> ``active`` at the first payment or
  prepayment (dated at the payment).
* ``active``: -> ``notice`` when an issued invoice is overdue (its amount due not
  covered by the payments and credits received since its period ended, at its due
  date): the notice is given at the evaluation that finds it, and runs 7 days
  (``notice_until``).
* ``notice``: may still dial. -> ``active`` when the overdue amount is paid; ->
  ``suspended`` at ``notice_until`` if it is still overdue then (dated at
  ``notice_until``, even when evaluated later).
* ``suspended``: may not dial; its campaigns cannot start and the live loop stops
  dialing (``standing(...).may_dial``). -> ``active`` when the overdue amount is paid.
* ``closed``: by the customer (from any state) or by the operator after suspension
  (:func:`close`). Final. Its numbers are kept 30 days (``number_holds``), during which
  they may be ported out (:func:`port_out`), then released (:func:`release_due`); its
  records (CDRs, ledger, invoices) are kept for the contract period (one year from
  closing: ``records_until``); nothing here deletes them.

:func:`decide` is the pure rule (the facts and ``now`` in, the next transition out);
:func:`evaluate` gathers the facts, applies the transitions and stores them.
:func:`standing` reads the state for the dialer: it does not write, but a notice whose
deadline has passed reads as ``suspended`` from its deadline even before an
evaluation stores it.
"""

import dataclasses
import datetime as _dt
from typing import Optional

from core import audit
from core.errors import InputError, NotFound, StateError
from core.tenancy import resolve_account
from core.timeutil import from_iso, shown, system_now, to_iso, utc

from .money import from_micros

STATES = ("pending", "active", "notice", "suspended", "closed")
MAY_DIAL = ("active", "notice")
NOTICE_DAYS = 7
NUMBERS_KEPT_DAYS = 30
RECORDS_KEPT_DAYS = 365   # the contract period: payment is annual

NO_PAYMENT = "no payment yet"


@dataclasses.dataclass(frozen=True)
class Standing:
    """An account's standing. ``state`` one of STATES; ``reason`` why (None when
    active without a reason to tell); ``since`` when it took effect (aware UTC; None
    for an account whose billing is not enabled)."""
    state: str
    reason: Optional[str]
    since: Optional[_dt.datetime]
    enabled: bool = False
    notice_until: Optional[_dt.datetime] = None
    closed_at: Optional[_dt.datetime] = None
    numbers_until: Optional[_dt.datetime] = None
    records_until: Optional[_dt.datetime] = None

    @property
    def may_dial(self):
        return self.state in MAY_DIAL

    def as_dict(self):
        out = {"state": self.state, "reason": self.reason, "may_dial": self.may_dial, "billing_enabled": self.enabled}
        for k in ("since", "notice_until", "closed_at", "numbers_until", "records_until"):
            v = getattr(self, k)
            out[k] = to_iso(v) if v is not None else None
        return out


_COLS = ("state", "reason", "since", "enabled_at", "activated_at", "notice_at", "notice_until", "closed_at",
         "closed_by", "numbers_until", "records_until")


def _row(store, account_id):
    return store.query_one(f"SELECT {', '.join(_COLS)} FROM account_standing WHERE account_id = ?",
                           (int(account_id),))


def _t(text):
    return from_iso(text) if text else None


def _account_id(account):
    if isinstance(account, dict):
        return int(account["id"])
    return int(account)


def from_row(row, now=None):
    """The Standing of a stored row (None: billing not enabled) at ``now``: a notice
    past its deadline reads as suspended from the deadline (pure)."""
    if row is None:
        return Standing("active", None, None)
    state, reason, since = row["state"], row["reason"], _t(row["since"])
    until = _t(row["notice_until"])
    if state == "notice" and now is not None and until is not None and utc(now) >= until:
        state, reason, since = "suspended", _suspension_reason(row["reason"]), until
    return Standing(state, reason, since, True, until if state == "notice" else None, _t(row["closed_at"]),
                    _t(row["numbers_until"]), _t(row["records_until"]))


def standing(store, account_id, now=None):
    """The standing of an account (its id, or its row): state, reason, since, and
    ``may_dial`` (True for active and notice). Reads only; ``now`` defaults to the
    wall clock (a notice past its deadline reads as suspended)."""
    return from_row(_row(store, _account_id(account_id)), now if now is not None else system_now())


# ------------------------------------------------------------------------- the rule (pure)

@dataclasses.dataclass(frozen=True)
class Facts:
    """What the rule needs about an account at ``now``: its stored state row (dict of
    _COLS, or None: billing not enabled), its first payment's instant (or None), the
    amount overdue now (micro-units, >= 0) and the invoice it comes from."""
    row: Optional[dict]
    first_payment_at: Optional[_dt.datetime]
    overdue_micros: int = 0
    overdue_invoice: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Transition:
    to: str
    reason: Optional[str]
    effective_at: _dt.datetime
    notice_until: Optional[_dt.datetime] = None


def _overdue_reason(facts):
    return f"invoice {facts.overdue_invoice} overdue: {from_micros(facts.overdue_micros)} unpaid"


def _suspension_reason(notice_reason):
    return f"not paid after a {NOTICE_DAYS}-day notice ({notice_reason})" if notice_reason else \
        f"not paid after a {NOTICE_DAYS}-day notice"


def decide(facts, now):
    """The next transition of an account's standing at ``now``, or None. Pure."""
    row = facts.row
    now = utc(now)
    if row is None or row["state"] == "closed":
        return None
    state = row["state"]
    if state == "pending":
        if facts.first_payment_at is not None and facts.first_payment_at <= now:
            return Transition("active", "payment received", facts.first_payment_at)
        return None
    overdue = facts.overdue_micros > 0
    if state == "active":
        if overdue:
            return Transition("notice", _overdue_reason(facts), now, now + _dt.timedelta(days=NOTICE_DAYS))
        return None
    if state in ("notice", "suspended"):
        if not overdue:
            return Transition("active", "overdue amount paid", now)
        if state == "notice":
            until = _t(row["notice_until"])
            if until is not None and now >= until:
                return Transition("suspended", _suspension_reason(row["reason"]), until)
        return None
    raise ValueError(f"unknown standing {state!r}")


# ------------------------------------------------------------------------- facts from the store

def first_payment_at(store, account_id):
    row = store.query_one("SELECT MIN(at) AS at FROM ledger_entries WHERE account_id = ? AND kind = 'payment'",
                          (int(account_id),))
    return _t(row["at"]) if row else None


def overdue(store, account_id, now):
    """The amount overdue at ``now`` (micro-units) and the invoice it comes from: the
    latest issued invoice whose due date has passed, its amount due less the payments
    and credits received since its period ended, up to ``now`` included (never below 0). Earlier invoices are
    in it: an invoice's amount due comes from its closing balance."""
    at = to_iso(now)
    inv = store.query_one("SELECT number, period_end, due_micros FROM invoices WHERE account_id = ? "
                          "AND status = 'issued' AND due_at <= ? ORDER BY period_end DESC LIMIT 1",
                          (int(account_id), at))
    if inv is None or inv["due_micros"] <= 0:
        return 0, None
    paid = store.query_one("SELECT SUM(amount_micros) AS s FROM ledger_entries WHERE account_id = ? "
                           "AND kind IN ('payment', 'credit') AND at >= ? AND at <= ?",
                           (int(account_id), inv["period_end"], at))["s"] or 0
    return max(0, inv["due_micros"] - paid), inv["number"]


def facts(store, account_id, now):
    row = _row(store, account_id)
    if row is None or row["state"] == "closed":
        return Facts(row, None)
    owed, number = overdue(store, account_id, now)
    return Facts(row, first_payment_at(store, account_id), owed, number)


# ------------------------------------------------------------------------- writes

def _record(store, account_id, frm, tr, now, actor, extra=None):
    """Store one transition (inside the caller's transaction), its event and audit row."""
    sets = {"state": tr.to, "reason": tr.reason, "since": to_iso(tr.effective_at), "updated_at": to_iso(now)}
    if tr.to == "notice":
        sets.update(notice_at=to_iso(tr.effective_at), notice_until=to_iso(tr.notice_until))
    elif tr.to == "active":
        sets.update(notice_at=None, notice_until=None)
    sets.update(extra or {})
    store.execute(f"UPDATE account_standing SET {', '.join(f'{k} = ?' for k in sets)} WHERE account_id = ?",
                  (*sets.values(), int(account_id)))
    store.execute("INSERT INTO account_standing_events (account_id, at, effective_at, from_state, to_state, reason, "
                  "actor) VALUES (?, ?, ?, ?, ?, ?, ?)",
                  (int(account_id), to_iso(now), to_iso(tr.effective_at), frm, tr.to, tr.reason, actor))
    detail = {"from": frm, "to": tr.to, "effective_at": to_iso(tr.effective_at)}
    if tr.notice_until is not None:
        detail["notice_until"] = to_iso(tr.notice_until)
    detail.update({k: v for k, v in (extra or {}).items() if v is not None})
    audit.append(store, now, actor, "billing.standing", f"account:{int(account_id)}", tr.reason or "", detail,
                 account_id=int(account_id))


def evaluate(store, account, now, actor):
    """Apply every transition due at ``now`` (pending -> active -> notice in one go if
    so) and store them. Returns the Standing and the transitions made. An account
    whose billing is not enabled is left alone."""
    acc = resolve_account(store, account)
    now = utc(now)
    made = []
    with store.transaction():
        for _ in range(len(STATES) + 1):
            f = facts(store, acc["id"], now)
            tr = decide(f, now)
            if tr is None:
                break
            extra = {"activated_at": to_iso(tr.effective_at)} if f.row["state"] == "pending" else None
            _record(store, acc["id"], f.row["state"], tr, now, actor, extra)
            made.append({"from": f.row["state"], "to": tr.to, "reason": tr.reason,
                         "effective_at": to_iso(tr.effective_at)})
        row = _row(store, acc["id"])
    return {"account": acc["name"], **from_row(row, now).as_dict(), "transitions": made}


def enable(store, account, now, actor, reason=""):
    """Enable billing for an account: its standing starts ``pending`` (no payment yet)
    and becomes active at its first payment (at once if it already has one). Audited.
    Enabling twice changes nothing."""
    acc = resolve_account(store, account)
    now = utc(now)
    with store.transaction():
        if _row(store, acc["id"]) is None:
            store.execute("INSERT INTO account_standing (account_id, state, reason, since, enabled_at, updated_at) "
                          "VALUES (?, 'pending', ?, ?, ?, ?)", (acc["id"], NO_PAYMENT, to_iso(now), to_iso(now),
                                                                 to_iso(now)))
            store.execute("INSERT INTO account_standing_events (account_id, at, effective_at, from_state, to_state, "
                          "reason, actor) VALUES (?, ?, ?, NULL, 'pending', ?, ?)",
                          (acc["id"], to_iso(now), to_iso(now), NO_PAYMENT, actor))
            audit.append(store, now, actor, "billing.enable", f"account:{acc['id']}", reason,
                         {"to": "pending"}, account_id=acc["id"])
            enabled = True
        else:
            enabled = False
    out = evaluate(store, acc, now, actor)
    return {**out, "changed": enabled or bool(out["transitions"])}


def show(store, account, now):
    """The standing (at ``now``, as stored plus a passed notice deadline) and its
    history of transitions."""
    acc = resolve_account(store, account)
    st = standing(store, acc["id"], now)
    owed, number = overdue(store, acc["id"], now) if st.enabled else (0, None)
    events = store.query("SELECT at, effective_at, from_state, to_state, reason, actor FROM account_standing_events "
                         "WHERE account_id = ? ORDER BY id", (acc["id"],))
    holds = store.query("SELECT number, closed_at, keep_until, ported_at, ported_to, released_at FROM number_holds "
                        "WHERE account_id = ? ORDER BY number", (acc["id"],))
    return {"account": acc["name"], **st.as_dict(), "overdue": from_micros(owed), "overdue_invoice": number,
            "events": events, "numbers_held": holds}


def dial_problems(store, account_id, now=None):
    """Why an account may not dial now ([] when it may): for a campaign start."""
    st = standing(store, account_id, now)
    if st.may_dial:
        return []
    return [f"account is {st.state}" + (f": {st.reason}" if st.reason else "")]


def change_state(store, name, action, now, actor, reason="", account=None):
    """A campaign's start / pause / finish (``campaigns.store.change_state``), a start
    refused while its account may not dial (pending, suspended, closed)."""
    from campaigns.store import change_state as _change
    return _change(store, name, action, now, actor, reason, account=account,
                   start_check=lambda st, camp: dial_problems(st, camp["account_id"], now))


# ------------------------------------------------------------------------- closing, numbers

def close(store, account, now, actor, reason="", terminated=False):
    """Close an account: by the customer (from any state), or ``terminated`` by the
    operator after suspension (the account must be suspended). Its numbers are kept
    NUMBERS_KEPT_DAYS days (``number_holds``), its records RECORDS_KEPT_DAYS. Final."""
    acc = resolve_account(store, account)
    now = utc(now)
    with store.transaction():
        row = _row(store, acc["id"])
        current = from_row(row, now)
        if current.state == "closed":
            raise StateError(f"account {acc['name']!r} is already closed (since {to_iso(current.since)})")
        if terminated and current.state != "suspended":
            raise StateError(f"account {acc['name']!r} is {current.state}, not suspended: only a suspended account "
                             f"is closed by termination; nothing was changed")
        if row is None:
            store.execute("INSERT INTO account_standing (account_id, state, reason, since, enabled_at, updated_at) "
                          "VALUES (?, 'active', NULL, ?, ?, ?)", (acc["id"], to_iso(now), to_iso(now), to_iso(now)))
        keep = now + _dt.timedelta(days=NUMBERS_KEPT_DAYS)
        records = now + _dt.timedelta(days=RECORDS_KEPT_DAYS)
        by = "operator" if terminated else "customer"
        why = (f"terminated after suspension" if terminated else "closed by the customer") + (
            f": {reason}" if reason else "")
        numbers = store.query("SELECT number, label FROM account_numbers WHERE account_id = ? ORDER BY number",
                              (acc["id"],))
        for n in numbers:
            store.execute("INSERT INTO number_holds (account_id, number, label, closed_at, keep_until) "
                          "VALUES (?, ?, ?, ?, ?) ON CONFLICT (account_id, number) DO NOTHING",
                          (acc["id"], n["number"], n["label"], to_iso(now), to_iso(keep)))
        _record(store, acc["id"], current.state if row is not None else None,
                Transition("closed", why, now), now, actor,
                {"closed_at": to_iso(now), "closed_by": by, "numbers_until": to_iso(keep),
                 "records_until": to_iso(records), "notice_at": None, "notice_until": None})
    return {**show(store, acc, now), "numbers_kept": [n["number"] for n in numbers]}


def _candidates(number):
    """The number as typed and as E.164 (numbers without a country code taken as US)."""
    from rules.numbers import normalise
    return [c for c in dict.fromkeys((str(number).strip(), normalise(str(number), "US").e164)) if c]


def _hold(store, acc, number):
    for candidate in _candidates(number):
        if candidate:
            row = store.query_one("SELECT * FROM number_holds WHERE account_id = ? AND number = ?",
                                  (acc["id"], candidate))
            if row is not None:
                return row
    return None


def port_out(store, number, account, now, actor, to=None):
    """Port a number of a closed account out (to carrier ``to``), within the 30 days
    its numbers are kept. Recorded with the date, audited; the number leaves the
    account. Refused (nothing changed) for a number not the account's, an account not
    closed, a number already ported or released, or after the 30 days."""
    acc = resolve_account(store, account)
    now = utc(now)
    carrier = (str(to).strip()[:100] or None) if to is not None else None
    with store.transaction():
        st = from_row(_row(store, acc["id"]), now)
        hold = _hold(store, acc, number)
        if hold is None:
            owned = any(store.query_one("SELECT 1 AS x FROM account_numbers WHERE account_id = ? AND number = ?",
                                        (acc["id"], c)) for c in _candidates(number))
            if owned and st.state != "closed":
                raise StateError(f"number {shown(number)} can be ported out only after account {acc['name']!r} "
                                 f"is closed (it is {st.state}); nothing was changed")
            raise NotFound(f"number {shown(number)} is not a number of account {acc['name']!r}; nothing was changed")
        if hold["ported_at"]:
            raise StateError(f"number {hold['number']} was already ported out on {hold['ported_at'][:10]}"
                             + (f" to {hold['ported_to']}" if hold["ported_to"] else ""))
        if hold["released_at"]:
            raise StateError(f"number {hold['number']} was released on {hold['released_at'][:10]}; it can no longer "
                             f"be ported out")
        if now >= from_iso(hold["keep_until"]):
            raise StateError(f"number {hold['number']} was kept until {hold['keep_until'][:10]} "
                             f"({NUMBERS_KEPT_DAYS} days after closing); it can no longer be ported out")
        store.execute("UPDATE number_holds SET ported_at = ?, ported_to = ? WHERE id = ?",
                      (to_iso(now), carrier, hold["id"]))
        store.execute("DELETE FROM account_numbers WHERE account_id = ? AND number = ?", (acc["id"], hold["number"]))
        audit.append(store, now, actor, "number.port-out", f"account:{acc['id']}", "",
                     {"number": hold["number"], "to": carrier}, account_id=acc["id"])
    return {"account": acc["name"], "number": hold["number"], "ported_at": to_iso(now), "ported_to": carrier}


def release_due(store, now, actor, account=None):
    """Release the held numbers whose 30 days have passed (of one account, or all):
    each leaves its account, dated and audited. Returns the numbers released."""
    now = utc(now)
    params = [to_iso(now)]
    sql = "SELECT * FROM number_holds WHERE ported_at IS NULL AND released_at IS NULL AND keep_until <= ?"
    acc = None
    if account is not None:
        acc = resolve_account(store, account)
        sql += " AND account_id = ?"
        params.append(acc["id"])
    out = []
    with store.transaction():
        for h in store.query(sql + " ORDER BY account_id, number", params):
            store.execute("UPDATE number_holds SET released_at = ? WHERE id = ?", (to_iso(now), h["id"]))
            store.execute("DELETE FROM account_numbers WHERE account_id = ? AND number = ?",
                          (h["account_id"], h["number"]))
            audit.append(store, now, actor, "number.release", f"account:{h['account_id']}", "",
                         {"number": h["number"], "kept_until": h["keep_until"]}, account_id=h["account_id"])
            out.append({"account_id": h["account_id"], "number": h["number"], "released_at": to_iso(now)})
    return {"released": out}


def evaluate_all(store, now, actor):
    """Evaluate every billing-enabled account and release the numbers due (a cron job:
    ``dialer bill evaluate``)."""
    ids = [r["account_id"] for r in store.query("SELECT account_id FROM account_standing ORDER BY account_id")]
    results = [evaluate(store, i, now, actor) for i in ids]
    released = release_due(store, now, actor)["released"]
    return {"accounts": results, "released": released}


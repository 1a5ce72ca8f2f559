"""An account's ledger: charges, payments, credits, interest and reversals.

Every entry is a signed INTEGER of micro-units (``amount_micros``): payments and
credits are positive, charges and interest negative, and a reversal is the
negation of the entry it reverses. The balance is the sum of an account's entries
(an SQL SUM over integers, exact), and the ledger is append-only: a correction is
a reversal plus a new entry, never an edit (a trigger refuses UPDATE and DELETE).

A call is charged once: its first charge is rating 1 and ``UNIQUE (call_id,
rating, kind)`` makes a second insert of it (a rerun, or two processes rating at
once) change nothing. A rerate (:func:`rerate`) reverses the call's current
charge (rating n) and charges it anew (rating n + 1), in one transaction.

A charge's ``at`` is the call's start (the instant that puts it in a billing
period); ``service_micros``/``telecom_micros`` are its two rated components, whose
sum is the charge.
"""

import uuid

from core import audit
from core.errors import InputError, StateError
from core.tenancy import resolve_account
from core.timeutil import shown, to_iso

from .calls import check_stored, rate_batch, reason_kind
from .decks import load_index
from .money import from_micros, micros, parse_amount
from .plans import ensure_plan, month_bounds, plan_row, service_tariff, set_plan

KINDS = ("charge", "payment", "credit", "interest", "reversal")
CHUNK = 50_000              # CDRs per transaction in a bill run
MAX_PAYMENT = "100000000"   # one payment or credit: more is a typo
REFUSED_SHOWN = 20

_CHARGE_COLUMNS = ("account_id", "kind", "amount_micros", "at", "created_at", "actor", "call_id", "rating", "reverses",
                   "billsec", "service_seconds", "service_micros", "telecom_seconds", "telecom_micros", "deck_id",
                   "prefix", "reference")
_INSERT = (f"INSERT INTO ledger_entries ({', '.join(_CHARGE_COLUMNS)}) VALUES ({', '.join('?' * len(_CHARGE_COLUMNS))}) "
           f"ON CONFLICT (call_id, rating, kind) DO NOTHING")
_CDR_COLUMNS = "c.call_id, c.destination, c.started_at, c.answered_at, c.ended_at, c.duration_ms, c.billable_ms"


# ------------------------------------------------------------------------- payments, credits, interest

def post(store, account, kind, amount, now, actor, reference=""):
    """Record a payment, a credit or interest (``amount``: a positive decimal; interest
    is entered negative). Audited. Returns the entry and the new balance."""
    if kind not in ("payment", "credit", "interest"):
        raise InputError(f"a ledger entry posted by hand is a payment, a credit or interest, not {shown(kind)}")
    acc = resolve_account(store, account)
    value = parse_amount(amount, f"{kind} amount", allow_zero=False, maximum=parse_amount(MAX_PAYMENT))
    signed = micros(value) if kind != "interest" else -micros(value)
    reference = str(reference or "").strip()[:200]
    at = to_iso(now)
    with store.transaction():
        ensure_plan(store, acc["id"], now)
        cur = store.execute(
            "INSERT INTO ledger_entries (account_id, kind, amount_micros, at, created_at, actor, reference) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", (acc["id"], kind, signed, at, at, actor, reference or None))
        entry_id = cur.lastrowid
        audit.append(store, now, actor, f"billing.{kind}", f"account:{acc['id']}", reference,
                     {"entry": entry_id, "amount_micros": signed}, account_id=acc["id"])
    return {"account": acc["name"], "entry": entry_id, "kind": kind, "amount": from_micros(signed),
            "reference": reference, "balance": balance(store, acc)["balance"]}


def topup(store, account, amount, now, actor, reference=""):
    """A payment received (``dialer balance topup``)."""
    return post(store, account, "payment", amount, now, actor, reference)


def set_floor(store, account, amount, now, actor, reason=""):
    """The balance the account must keep (``dialer balance floor``)."""
    out = set_plan(store, account, now, actor, floor=amount, reason=reason)
    return {"account": out["account"], "floor": out["floor"], "changed": bool(out["changed"])}


# ------------------------------------------------------------------------- the balance

def balance(store, account):
    """The account's balance (the sum of its ledger), its floor, what is left above
    the floor, and the entries and sums per kind. Every amount a Decimal."""
    acc = resolve_account(store, account)
    plan = plan_row(store, acc["id"])
    rows = store.execute("SELECT kind, COUNT(*), SUM(amount_micros) FROM ledger_entries WHERE account_id = ? "
                         "GROUP BY kind", (acc["id"],)).fetchall()
    by_kind = {k: {"entries": 0, "amount": from_micros(0)} for k in KINDS}
    total = 0
    for kind, n, s in rows:
        total += s
        by_kind[kind] = {"entries": n, "amount": from_micros(s)}
    floor = plan["floor_micros"]
    return {"account": acc["name"], "balance": from_micros(total), "floor": from_micros(floor),
            "above_floor": from_micros(total - floor), "below_floor": total < floor, "by_kind": by_kind}


def entries(store, account, call_id=None, limit=None):
    """Ledger entries of an account (of one call), oldest first, amounts Decimal."""
    acc = resolve_account(store, account)
    sql = ("SELECT id, kind, amount_micros, at, created_at, actor, call_id, rating, reverses, billsec, "
           "service_seconds, service_micros, telecom_seconds, telecom_micros, deck_id, prefix, reference "
           "FROM ledger_entries WHERE account_id = ?")
    params = [acc["id"]]
    if call_id is not None:
        sql += " AND call_id = ?"
        params.append(call_id)
    sql += " ORDER BY id"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    out = []
    for r in store.query(sql, params):
        for k in ("amount_micros", "service_micros", "telecom_micros"):
            r[k[:-len("_micros")]] = from_micros(r.pop(k))
        out.append(r)
    return out


# ------------------------------------------------------------------------- rating into the ledger

def _charge_rows(account_id, rated, deck_id, at, actor, reference):
    return [(account_id, "charge", -(s_cost + t_cost), started, at, actor, call_id, 1, None, billsec, s_sec, s_cost,
             t_sec, t_cost, deck_id, prefix, reference)
            for call_id, started, billsec, s_sec, s_cost, t_sec, t_cost, prefix, _dest in rated]


def charge(store, account_id, rated, deck_id, now, actor, reference=None):
    """Insert first charges (rating 1) for rated calls, in one transaction; a call
    already charged is left alone. Returns how many were inserted."""
    rows = _charge_rows(account_id, rated, deck_id, to_iso(now), actor, reference)
    with store.transaction():
        cur = store.conn.executemany(_INSERT, rows)
    return cur.rowcount


def _checked(rows, refused):
    """Stored CDR rows -> records for rate_batch; refusals appended."""
    out = []
    for call_id, destination, started, answered, ended, duration_ms, billable_ms in rows:
        reason = check_stored(started, answered, ended, duration_ms, billable_ms)
        if reason is not None:
            refused.append((call_id, reason))
        else:
            out.append((call_id, destination, started, billable_ms))
    return out


def _summary(refused):
    """Refused CDRs for a report: counts per kind of reason, and the first few."""
    by_reason = {}
    for _cid, reason in refused:
        key = reason_kind(reason)
        by_reason[key] = by_reason.get(key, 0) + 1
    return {"refused_by_reason": by_reason,
            "refused_examples": [{"call_id": c, "reason": r} for c, r in refused[:REFUSED_SHOWN]]}


def bill_run(store, account, period, now, actor, chunk=CHUNK):
    """Rate into the ledger every unrated CDR of the account whose start falls in
    ``period`` (YYYY-MM, a half-open month in the account's time zone). Idempotent: a
    second run charges nothing new. Invoices are not built yet. Returns counts,
    totals (Decimal) and the refused CDRs with their reasons."""
    acc = resolve_account(store, account)
    start, end = month_bounds(period, plan_row(store, acc["id"])["time_zone"])  # checked before anything is stored
    with store.transaction():
        ensure_plan(store, acc["id"], now)
    plan = plan_row(store, acc["id"])
    lo, hi = to_iso(start), to_iso(end)
    service = service_tariff(plan)
    index = load_index(store, acc["id"])
    deck = index.deck if index is not None else None
    token = f"bill-run:{str(period).strip()}:{uuid.uuid4().hex[:12]}"
    at = to_iso(now)
    counts = {"cdrs": 0, "charged": 0, "already": 0, "free": 0, "refused": 0}
    totals = [0, 0]
    refused_all = []
    last = (lo, "")
    while True:
        rows = store.execute(
            f"SELECT {_CDR_COLUMNS} FROM cdrs c WHERE c.account_id = ? AND c.started_at >= ? AND c.started_at < ? "
            f"AND (c.started_at > ? OR (c.started_at = ? AND c.call_id > ?)) "
            f"AND NOT EXISTS (SELECT 1 FROM ledger_entries l WHERE l.call_id = c.call_id) "
            f"ORDER BY c.started_at, c.call_id LIMIT ?",
            (acc["id"], lo, hi, last[0], last[0], last[1], chunk)).fetchall()
        if not rows:
            break
        last = (rows[-1][2], rows[-1][0])
        refused = []
        records = _checked(rows, refused)
        rated, free, more = rate_batch(records, service, index)
        refused.extend(more)
        inserted = charge(store, acc["id"], rated, deck["id"] if deck else None, now, actor, token) if rated else 0
        counts["cdrs"] += len(rows)
        counts["charged"] += inserted
        counts["already"] += len(rated) - inserted
        counts["free"] += len(free)
        counts["refused"] += len(refused)
        if inserted == len(rated):
            for r in rated:
                totals[0] += r[4]
                totals[1] += r[6]
        refused_all.extend(refused)
        if len(rows) < chunk:
            break
    if counts["already"]:
        # another process charged some of these calls meanwhile: count what this run inserted
        s, t = store.execute("SELECT SUM(service_micros), SUM(telecom_micros) FROM ledger_entries "
                             "WHERE account_id = ? AND reference = ? AND kind = 'charge'", (acc["id"], token)).fetchone()
        totals = [s or 0, t or 0]
    return {
        "account": acc["name"], "period": str(period).strip(), "time_zone": plan["time_zone"],
        "from": lo, "to": hi, "deck": ({"deck_id": deck["id"], "deck": deck["name"],
                                        "scope": "own" if deck["account_id"] is not None else "default"}
                                       if deck else None),
        **counts,
        "service": from_micros(totals[0]), "telecom": from_micros(totals[1]),
        "total": from_micros(totals[0] + totals[1]),
        **_summary(refused_all),
        "invoice": None,
    }


def rerate(store, account, now, actor, period=None, call_ids=None, reason=""):
    """Rate again the charged calls of ``period`` (or the ``call_ids``) with the
    account's plan and deck in force now. A call whose figures changed (seconds,
    costs, prefix) gets a reversal of its current charge and a new charge (rating
    n + 1) in one transaction; an unchanged one is left alone (even when a new deck
    priced it the same); one that cannot be rated now keeps
    its charge and is reported. Returns counts and the net change (Decimal)."""
    acc = resolve_account(store, account)
    if (period is None) == (call_ids is None):
        raise InputError("rerate needs a period (YYYY-MM) or call ids, not both")
    plan = plan_row(store, acc["id"])
    service = service_tariff(plan)
    index = load_index(store, acc["id"])
    deck_id = index.deck["id"] if index is not None else None
    cond, params = "", []
    if period is not None:
        start, end = month_bounds(period, plan["time_zone"])
        cond, params = " AND l.at >= ? AND l.at < ?", [to_iso(start), to_iso(end)]
    else:
        ids = [str(c) for c in call_ids]
        if not ids:
            raise InputError("no call ids to rerate")
        cond, params = f" AND l.call_id IN ({', '.join('?' * len(ids))})", ids
    at = to_iso(now)
    token = f"rerate:{uuid.uuid4().hex[:12]}"
    out = {"account": acc["name"], "calls": 0, "rerated": 0, "unchanged": 0, "refused": 0}
    net = 0
    refused_all = []
    with store.transaction():
        current = store.execute(
            "SELECT l.id, l.call_id, l.rating, l.amount_micros, l.at, l.billsec, l.service_seconds, l.service_micros, "
            "l.telecom_seconds, l.telecom_micros, l.deck_id, l.prefix FROM ledger_entries l "
            "WHERE l.account_id = ? AND l.kind = 'charge'" + cond +
            " AND NOT EXISTS (SELECT 1 FROM ledger_entries r WHERE r.call_id = l.call_id AND r.rating = l.rating "
            "AND r.kind = 'reversal') ORDER BY l.id", [acc["id"], *params]).fetchall()
        if not current:
            return {**out, "net": from_micros(0), "reference": None, **_summary([])}
        by_call = {r[1]: r for r in current}
        cdrs = []
        ids = list(by_call)
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            cdrs.extend(store.execute(
                f"SELECT {_CDR_COLUMNS} FROM cdrs c WHERE c.account_id = ? AND c.call_id IN "
                f"({', '.join('?' * len(part))})", [acc["id"], *part]).fetchall())
        refused = []
        rated, free, more = rate_batch(_checked(cdrs, refused), service, index)
        refused.extend(more)
        refused.extend((cid, "rates at 0 now (0 billable seconds)") for cid in free)
        rows = []
        for call_id, started, billsec, s_sec, s_cost, t_sec, t_cost, prefix, _dest in rated:
            old = by_call[call_id]
            (oid, _cid, rating, amount, _at, o_billsec, o_ssec, o_scost, o_tsec, o_tcost, o_deck, o_prefix) = old
            if (o_billsec, o_ssec, o_scost, o_tsec, o_tcost, o_prefix) == \
                    (billsec, s_sec, s_cost, t_sec, t_cost, prefix):  # same figures (perhaps from a new deck)
                out["unchanged"] += 1
                continue
            rows.append((acc["id"], "reversal", -amount, started, at, actor, call_id, rating, oid, -o_billsec, -o_ssec,
                         -o_scost, -o_tsec, -o_tcost, o_deck, o_prefix, token))
            rows.append((acc["id"], "charge", -(s_cost + t_cost), started, at, actor, call_id, rating + 1, None,
                         billsec, s_sec, s_cost, t_sec, t_cost, deck_id, prefix, token))
            net += -amount - (s_cost + t_cost)
        if rows:
            cur = store.conn.executemany(_INSERT, rows)
            if cur.rowcount != len(rows):
                raise StateError("another rerate of these calls ran at the same time; nothing was changed, try again")
            audit.append(store, now, actor, "billing.rerate", f"account:{acc['id']}", reason,
                         {"reference": token, "calls": len(rows) // 2, "net_micros": net}, account_id=acc["id"])
        out["calls"] = len(current)
        out["rerated"] = len(rows) // 2
        out["refused"] = len(refused)
        refused_all = refused
    return {**out, "net": from_micros(net), "reference": token if out["rerated"] else None, **_summary(refused_all)}

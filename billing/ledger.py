"""An account's ledger: charges, payments, credits, interest and reversals.

Every entry is a signed INTEGER of micro-units (``amount_micros``): payments and
credits are positive, charges and interest negative, and a reversal is the
negation of the entry it reverses. The balance is the sum of an account's entries
(an SQL SUM over integers, exact), and the ledger is append-only: a correction is
a reversal plus a new entry, never an edit (a trigger refuses UPDATE and DELETE).

A call is charged once: ``seq`` numbers a call's entries, its first charge is seq
1, and ``UNIQUE (call_id, seq)`` makes a second insert of it (a rerun, or two
processes rating at once) change nothing. A rerate (:func:`rerate`) of a call whose
last entry is seq n adds the reversal of its current charge (n + 1) and a new
charge (n + 2), in one transaction.

Each posting (a bill run, a rerate, a payment, a credit, interest) is a
``ledger_batches`` row: who, when, why, with which deck; its entries point to it.
A charge's ``at`` is the call's start (the instant that puts it in a billing
period); ``service_micros``/``telecom_micros`` are its two rated components, whose
sum is the charge.
"""

import contextlib
import gc

from core import audit
from core.errors import InputError, StateError
from core.tenancy import resolve_account
from core.timeutil import shown, to_iso

from .calls import rate_batch, reason_kind
from .decks import load_index
from .money import from_micros, micros, parse_amount
from .plans import ensure_plan, month_bounds, plan_row, service_tariff, set_plan

KINDS = ("charge", "payment", "credit", "interest", "reversal", "fee")  # fee: an invoice's account fee and users
CHUNK = 50_000              # CDRs per transaction in a bill run
MAX_PAYMENT = "100000000"   # one payment or credit: more is a typo
REFUSED_SHOWN = 20

# a first charge: the rated rows of calls.rate_batch are its parameters as they are; the
# account, the batch, the kind and seq 1 are constants of the statement (integers we format);
# many rows a statement (Store.insert_many)
_INSERT_CHARGE = ("INSERT INTO ledger_entries (account_id, batch_id, kind, seq, call_id, at, billsec, service_seconds, "
                  "service_micros, telecom_seconds, telecom_micros, amount_micros, prefix)",
                  "({account:d}, {batch:d}, 'charge', 1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  "ON CONFLICT (call_id, seq) DO NOTHING")
_INSERT_ENTRY = ("INSERT INTO ledger_entries (account_id, batch_id, kind, amount_micros, at, call_id, seq, reverses, "
                 "billsec, service_seconds, service_micros, telecom_seconds, telecom_micros, prefix) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (call_id, seq) DO NOTHING")
_CDR_COLUMNS = "c.call_id, c.destination, c.started_at, c.answered_at, c.ended_at, c.duration_ms, c.billable_ms"


def _batch(store, account_id, kind, now, actor, reference=None, period=None, deck_id=None):
    """A posting's row (inside the caller's transaction); returns its id."""
    cur = store.execute("INSERT INTO ledger_batches (account_id, kind, created_at, actor, reference, period, deck_id) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (account_id, kind, to_iso(now), actor, reference or None, period, deck_id))
    return cur.lastrowid


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
    with store.transaction():
        ensure_plan(store, acc["id"], now)
        batch = _batch(store, acc["id"], kind, now, actor, reference)
        cur = store.execute("INSERT INTO ledger_entries (account_id, batch_id, kind, amount_micros, at) "
                            "VALUES (?, ?, ?, ?, ?)", (acc["id"], batch, kind, signed, to_iso(now)))
        entry_id = cur.lastrowid
        audit.append(store, now, actor, f"billing.{kind}", f"account:{acc['id']}", reference,
                     {"entry": entry_id, "amount_micros": signed}, account_id=acc["id"])
    if kind != "interest":
        from .standing import evaluate  # a payment starts the service, or ends a notice or a suspension
        evaluate(store, acc, now, actor)
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
    """Ledger entries of an account (of one call), oldest first, amounts Decimal,
    with their posting's time, actor, reference and deck."""
    acc = resolve_account(store, account)
    sql = ("SELECT e.id, e.kind, e.amount_micros, e.at, e.call_id, e.seq, e.reverses, e.billsec, e.service_seconds, "
           "e.service_micros, e.telecom_seconds, e.telecom_micros, e.prefix, e.batch_id, b.kind AS posting, "
           "b.created_at, b.actor, b.reference, b.deck_id FROM ledger_entries e "
           "JOIN ledger_batches b ON b.id = e.batch_id WHERE e.account_id = ?")
    params = [acc["id"]]
    if call_id is not None:
        sql += " AND e.call_id = ?"
        params.append(call_id)
    sql += " ORDER BY e.id"
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

def charge(store, account_id, rated, batch, now=None, actor=None, deck_id=None, period=None):
    """Insert first charges (seq 1) for rated calls, in one transaction; a call
    already charged is left alone. ``batch``: a ledger_batches id, or None to open a
    'bill-run' batch in the same transaction (``now``, ``actor``, ``deck_id``,
    ``period`` describe it). Returns (inserted, batch id)."""
    with store.transaction():
        if batch is None:
            batch = _batch(store, account_id, "bill-run", now, actor, period=period, deck_id=deck_id)
        head, values, tail = _INSERT_CHARGE
        inserted = store.insert_many(head, values.format(account=int(account_id), batch=int(batch)), rated, tail)
    return inserted, batch


def _summary(refused):
    """Refused CDRs for a report: counts per kind of reason, and the first few."""
    by_reason = {}
    for _cid, reason in refused:
        key = reason_kind(reason)
        by_reason[key] = by_reason.get(key, 0) + 1
    return {"refused_by_reason": by_reason,
            "refused_examples": [{"call_id": c, "reason": r} for c, r in refused[:REFUSED_SHOWN]]}


@contextlib.contextmanager
def _gc_paused():
    """The cyclic garbage collector paused while a bill run rates its chunks (and
    restored as it was): the run makes millions of tuples and no reference cycle, and
    the collector's passes over them cost about 7 % of the run (bench/rating_bench.py)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _unrated(store, account_id, lo, hi, chunk):
    """The account's unrated CDRs that started in [lo, hi), in chunks of about
    ``chunk``, in start order (the order of the ``cdrs_billing`` index: no sort).
    Each chunk is to be rated before the next is asked for (the next query skips
    what the ledger holds). A chunk never ends inside one instant: the calls of the
    chunk's last instant are left to the next chunk, which starts at that instant
    (or, if a whole chunk started at one instant, they are taken at once)."""
    sql = (f"SELECT {_CDR_COLUMNS} FROM cdrs c WHERE c.account_id = ? AND c.started_at {{op}} ? AND c.started_at < ? "
           f"AND NOT EXISTS (SELECT 1 FROM ledger_entries l WHERE l.call_id = c.call_id) ORDER BY c.started_at")
    start, op = lo, ">="
    while True:
        rows = store.execute(sql.format(op=op) + " LIMIT ?", (account_id, start, hi, chunk)).fetchall()
        if len(rows) < chunk:
            if rows:
                yield rows
            return
        edge = rows[-1][2]
        cut = len(rows)
        while cut and rows[cut - 1][2] == edge:
            cut -= 1
        if cut:
            yield rows[:cut]
            start, op = edge, ">="
        else:
            yield store.execute(
                f"SELECT {_CDR_COLUMNS} FROM cdrs c WHERE c.account_id = ? AND c.started_at = ? "
                f"AND NOT EXISTS (SELECT 1 FROM ledger_entries l WHERE l.call_id = c.call_id)",
                (account_id, edge)).fetchall()
            start, op = edge, ">"


def bill_run(store, account, period, now, actor, chunk=CHUNK):
    """Rate into the ledger every unrated CDR of the account whose start falls in
    ``period`` (YYYY-MM, a half-open month in the account's time zone). Idempotent: a
    second run charges nothing new. Invoices are not built yet. Returns counts,
    totals (Decimal) and the refused CDRs with their reasons. The CDRs go in chunks
    of ``chunk``, one transaction each (the dialer's writer waits one chunk at most)."""
    acc = resolve_account(store, account)
    period = str(period).strip()
    start, end = month_bounds(period, plan_row(store, acc["id"])["time_zone"])  # checked before anything is stored
    with store.transaction():
        ensure_plan(store, acc["id"], now)
    plan = plan_row(store, acc["id"])
    lo, hi = to_iso(start), to_iso(end)
    service = service_tariff(plan)
    index = load_index(store, acc["id"])
    deck = index.deck if index is not None else None
    counts = {"cdrs": 0, "charged": 0, "already": 0, "free": 0, "refused": 0}
    totals = [0, 0]
    refused_all = []
    batch = None
    with _gc_paused():
        for rows in _unrated(store, acc["id"], lo, hi, chunk):
            rated, free, refused = rate_batch(rows, service, index)
            inserted = 0
            if rated:
                inserted, batch = charge(store, acc["id"], rated, batch, now, actor, deck["id"] if deck else None,
                                         period)
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
    if counts["already"]:
        # another process charged some of these calls meanwhile: count what this run inserted
        s, t = store.execute("SELECT SUM(service_micros), SUM(telecom_micros) FROM ledger_entries "
                             "WHERE batch_id = ?", (batch,)).fetchone()
        totals = [s or 0, t or 0]
    return {
        "account": acc["name"], "period": period, "time_zone": plan["time_zone"],
        "from": lo, "to": hi, "deck": ({"deck_id": deck["id"], "deck": deck["name"],
                                        "scope": "own" if deck["account_id"] is not None else "default"}
                                       if deck else None),
        "batch": batch, **counts,
        "service": from_micros(totals[0]), "telecom": from_micros(totals[1]),
        "total": from_micros(totals[0] + totals[1]),
        **_summary(refused_all),
        "invoice": None,
    }


def rerate(store, account, now, actor, period=None, call_ids=None, reason=""):
    """Rate again the charged calls of ``period`` (or the ``call_ids``) with the
    account's plan and deck in force now. A call whose figures changed (seconds,
    costs, prefix) gets a reversal of its current charge and a new charge, in one
    transaction; an unchanged one is left alone (even when a new deck priced it the
    same); one that cannot be rated now keeps its charge and is reported. Returns
    counts and the net change of the balance (Decimal)."""
    acc = resolve_account(store, account)
    if (period is None) == (call_ids is None):
        raise InputError("rerate needs a period (YYYY-MM) or call ids, not both")
    plan = plan_row(store, acc["id"])
    if period is not None:
        start, end = month_bounds(period, plan["time_zone"])
        cond, params = " AND l.at >= ? AND l.at < ?", [to_iso(start), to_iso(end)]
    else:
        ids = [str(c) for c in call_ids]
        if not ids:
            raise InputError("no call ids to rerate")
        cond, params = f" AND l.call_id IN ({', '.join('?' * len(ids))})", ids
    service = service_tariff(plan)
    index = load_index(store, acc["id"])
    deck_id = index.deck["id"] if index is not None else None
    out = {"account": acc["name"], "calls": 0, "rerated": 0, "unchanged": 0, "refused": 0}
    net = 0
    refused = []
    batch = None
    with store.transaction():
        # each call's current charge: the charge that is its last entry
        current = store.execute(
            "SELECT l.id, l.call_id, l.seq, l.amount_micros, l.billsec, l.service_seconds, l.service_micros, "
            "l.telecom_seconds, l.telecom_micros, l.prefix FROM ledger_entries l "
            "WHERE l.account_id = ? AND l.kind = 'charge'" + cond +
            " AND NOT EXISTS (SELECT 1 FROM ledger_entries n WHERE n.call_id = l.call_id AND n.seq > l.seq) "
            "ORDER BY l.id", [acc["id"], *params]).fetchall()
        by_call = {r[1]: r for r in current}
        ids = list(by_call)
        cdrs = []
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            cdrs.extend(store.execute(
                f"SELECT {_CDR_COLUMNS} FROM cdrs c WHERE c.account_id = ? AND c.call_id IN "
                f"({', '.join('?' * len(part))})", [acc["id"], *part]).fetchall())
        rated, free, refused = rate_batch(cdrs, service, index)
        refused.extend((cid, "rates at 0 now (0 billable seconds)") for cid in free)
        rows = []
        for call_id, started, billsec, s_sec, s_cost, t_sec, t_cost, _amount, prefix in rated:
            oid, _cid, seq, amount, o_billsec, o_ssec, o_scost, o_tsec, o_tcost, o_prefix = by_call[call_id]
            if (o_billsec, o_ssec, o_scost, o_tsec, o_tcost, o_prefix) == (billsec, s_sec, s_cost, t_sec, t_cost,
                                                                           prefix):
                out["unchanged"] += 1
                continue
            if batch is None:
                batch = _batch(store, acc["id"], "rerate", now, actor, reason, period, deck_id)
            rows.append((acc["id"], batch, "reversal", -amount, started, call_id, seq + 1, oid, -o_billsec, -o_ssec,
                         -o_scost, -o_tsec, -o_tcost, o_prefix))
            rows.append((acc["id"], batch, "charge", -(s_cost + t_cost), started, call_id, seq + 2, None, billsec,
                         s_sec, s_cost, t_sec, t_cost, prefix))
            net += -amount - (s_cost + t_cost)
        if rows:
            cur = store.conn.executemany(_INSERT_ENTRY, rows)
            if cur.rowcount != len(rows):
                raise StateError("another rerate of these calls ran at the same time; nothing was changed, try again")
            audit.append(store, now, actor, "billing.rerate", f"account:{acc['id']}", reason,
                         {"batch": batch, "calls": len(rows) // 2, "net_micros": net}, account_id=acc["id"])
        out["calls"] = len(current)
        out["rerated"] = len(rows) // 2
        out["refused"] = len(refused)
    return {**out, "net": from_micros(net), "batch": batch, **_summary(refused)}

"""Invoices: one per account and billing period (a month in the account's time zone).

**The period** is ``[start, end)``: local midnight of the 1st to local midnight of the
next 1st in the plan's time zone (``plans.month_bounds``), converted to UTC for the
ledger and the CDRs. A DST month is still exactly the local calendar month (March in
New York has 743 hours, November 745); its days are local days (23 or 25 hours on the
change days). No instant is in two periods, none in neither.

**Lines** (amounts in micro-units; on the invoice a charge is positive and a payment or
credit negative, the ledger's signs reversed):

* ``account-fee``: $100 a month (``ACCOUNT_FEE``), prorated by days: the local days of
  the period on which the account was in service, over the days of the month.
* ``users``: $88 a user a month (``USER_FEE``), prorated the same way: each user counts
  on every local day of the period on which it existed while the account was in
  service (a user added on the 10th of a 30-day month counts 21/30). Users are never
  removed yet (no command removes one), so a user counts to the end of the month, or
  to the day the account closed.
* In service: from the account's creation, or, for an account whose billing is
  enabled (``billing.standing``), from its activation (the first payment: "service
  starts only after payment"); up to and including the day it closed. A day counts
  when the account (user) existed at any instant of it.
* ``service``: the service minutes rated in the period (the ledger's charges and
  reversals whose call started in it: ``service_micros``).
* ``telecom``: the telecom pass-through, one line per destination prefix (the deck
  row that rated it; its destination name from the deck).
* ``interest`` (see below), any interest posted by hand, and ``payment`` / ``credit``
  lines for what was received in the period; ``correction``: entries dated in an
  earlier, already issued period (a rerate after the issue) that were not on it.

Each line is rounded once, up, to a micro-unit (the rule of ``billing.rating``): a
prorated fee is ``ceil(fee x days / days in month)`` on integers.

**Draft and issued.** :func:`build` (run by ``dialer bill run``) rebuilds the invoice
as a draft while the period lasts and for ``ISSUE_GRACE`` after it (a call in progress
at midnight gets its CDR when it ends; the CDR checks allow 24 hours). From then on the
first build issues it: in one transaction, the account fee, the users and the interest
are posted to the ledger (entries of kind ``fee`` and ``interest``, dated at the
period's start, one posting per invoice: the invoice goes from draft to issued once)
and the invoice and its lines become immutable (database triggers). A later build of
an issued period returns it unchanged; corrections are credits and reversals, which
land on a later invoice.

**Amount due** is what the closing balance is below zero (``max(0, -closing)``); the
balance floor is the live guard's business, not the invoice's. It is due ``DUE_DAYS``
days after the period's end (local midnight); unpaid then, the account's standing goes
to notice (``billing.standing``).

**Interest**: 0.5 % a month on the overdue amount, simple (never on interest), prorated
by days: for each local day of the period, the amount overdue at the day's end (the
latest issued invoice past its due date: its charges-only amount due, less the payments
and credits received since its period ended, payments settling charges before interest);
interest = ceil(sum of those daily amounts x 0.005 / days in the month). Posted once,
when the period's invoice is issued.

**Annual prepayment** (:func:`prepay`): a payment entry that pays ``months`` (12)
months of the account fee and of the account's users at the time, from a first period;
recorded in ``prepayments``. The invoices of those months still carry the fee and the
users (posted as every month, so the balance tells the truth) and mark them "prepaid";
the prepayment itself is on the invoice of the month it was received.
"""

import csv
import datetime as _dt
import html
import io
import json
from decimal import Decimal

from core import audit
from core.errors import InputError, NotFound, StateError
from core.tenancy import resolve_account
from core.timeutil import from_iso, shown, to_iso, utc

from . import standing as _standing
from .ledger import _batch, bill_run
from .money import from_micros, micros, parse_amount
from .plans import ensure_plan, month_bounds, plan_row, zone

ACCOUNT_FEE = Decimal("100")
USER_FEE = Decimal("88")
INTEREST_PER_MONTH = Decimal("0.005")
DUE_DAYS = 10
ISSUE_GRACE = _dt.timedelta(hours=24)
PREPAY_MONTHS = 12


def _ceil_div(a, b):
    return -(-a // b)


def _period(period):
    text = str(period).strip()
    month_bounds(text, "UTC")  # checks YYYY-MM
    return text


def _next_period(period, k=1):
    y, m = int(period[:4]), int(period[5:7])
    n = y * 12 + (m - 1) + k
    return f"{n // 12:04d}-{n % 12 + 1:02d}"


def bounds(period, tz_name):
    """The period's half-open UTC interval [start, end)."""
    return month_bounds(period, tz_name)


def local_days(period, tz_name):
    """The local days of the month: [(date, start UTC, end UTC)], each half-open; a DST
    change day is 23 or 25 hours long."""
    tz = zone({"time_zone": tz_name})
    y, m = int(period[:4]), int(period[5:7])
    d = _dt.date(y, m, 1)
    out = []
    while d.month == m:
        nxt = d + _dt.timedelta(days=1)
        out.append((d, tz.localize(_dt.datetime(d.year, d.month, d.day)).astimezone(_dt.timezone.utc),
                    tz.localize(_dt.datetime(nxt.year, nxt.month, nxt.day)).astimezone(_dt.timezone.utc)))
        d = nxt
    return out


def due_at(period, tz_name):
    """Local midnight DUE_DAYS days after the period's end (UTC)."""
    tz = zone({"time_zone": tz_name})
    y, m = int(period[:4]), int(period[5:7])
    first_next = _dt.date(y + m // 12, m % 12 + 1, 1)
    d = first_next + _dt.timedelta(days=DUE_DAYS)
    return tz.localize(_dt.datetime(d.year, d.month, d.day)).astimezone(_dt.timezone.utc)


def days_in_service(days, frm, to):
    """How many of ``days`` (local_days) meet [frm, to) (``to`` None: open)."""
    if frm is None:
        return 0
    return sum(1 for _d, s, e in days if e > frm and (to is None or s < to))


def _minutes(seconds):
    """Seconds as ``M:SS`` (minutes and seconds; no division)."""
    q, r = divmod(int(seconds), 60)
    return f"{q}:{r:02d}"


def prorate(monthly_micros, days, n_days):
    """``monthly x days / n_days``, rounded once, up, to a micro-unit (integers)."""
    return _ceil_div(monthly_micros * days, n_days)


# ------------------------------------------------------------------------- interest (pure core)

def interest_micros(days, invoices, received, rate=INTEREST_PER_MONTH, upto=None):
    """Interest for the ``days`` of a month (local_days), simple and prorated by day.

    ``invoices``: the issued invoices as (period_end, due_at, interest_base_micros);
    ``received``: payments and credits as (at, amount_micros). For each day ending at
    ``e`` (and not after ``upto``), the overdue amount is that of the latest invoice
    whose due date is before ``e``: its base less what was received from its period's
    end until ``e``, at least 0. Returns (interest, the sum of the daily amounts)."""
    n = len(days)
    total = 0
    for _d, _s, e in days:
        if upto is not None and e > upto:
            break
        inv = None
        for item in invoices:
            if item[1] < e and (inv is None or item[0] > inv[0]):
                inv = item
        if inv is None or inv[2] <= 0:
            continue
        paid = sum(a for at, a in received if inv[0] <= at < e)
        total += max(0, inv[2] - paid)
    num, den = rate.as_integer_ratio()
    return _ceil_div(total * num, den * n), total


# ------------------------------------------------------------------------- building

def _sum(store, sql, params):
    return store.execute(sql, params).fetchone()[0] or 0


def _service_window(store, acc, st_row):
    """[from, to) of the account's service: creation (or activation when billing is
    enabled) to closing."""
    if st_row is None:
        return from_iso(acc["created_at"]), None
    frm = from_iso(st_row["activated_at"]) if st_row["activated_at"] else None
    to = from_iso(st_row["closed_at"]) if st_row["closed_at"] else None
    return frm, to


def _prepayment(store, account_id, period):
    for p in store.query("SELECT id, entry_id, first_period, months, monthly_micros, created_at FROM prepayments "
                         "WHERE account_id = ? AND first_period <= ? ORDER BY id", (account_id, period)):
        if period < _next_period(p["first_period"], p["months"]):
            y0, m0 = int(p["first_period"][:4]), int(p["first_period"][5:7])
            k = (int(period[:4]) - y0) * 12 + int(period[5:7]) - m0 + 1
            return {**p, "month": k}
    return None


def _lines(store, acc, plan, period, now, issuing):
    """The invoice's lines and totals, computed (nothing stored)."""
    tz = plan["time_zone"]
    start, end = bounds(period, tz)
    lo, hi = to_iso(start), to_iso(end)
    days = local_days(period, tz)
    n = len(days)
    st_row = _standing._row(store, acc["id"])
    frm, to = _service_window(store, acc, st_row)
    lines = []
    prepaid = _prepayment(store, acc["id"], period)
    note = (f" (prepaid: prepayment of {prepaid['created_at'][:10]}, month {prepaid['month']} of {prepaid['months']})"
            if prepaid else "")

    fee_days = days_in_service(days, frm, to)
    if fee_days:
        lines.append({"kind": "account-fee", "description": f"account fee, {fee_days} of {n} days" + note,
                      "quantity": f"{fee_days}/{n}", "unit_micros": micros(ACCOUNT_FEE),
                      "amount_micros": prorate(micros(ACCOUNT_FEE), fee_days, n), "post": "fee",
                      "detail": {"days": fee_days, "days_in_month": n, "prepaid": bool(prepaid)}})
    user_days, per_user = 0, []
    for u in store.query("SELECT name, created_at FROM users WHERE account_id = ? ORDER BY name", (acc["id"],)):
        u_from = from_iso(u["created_at"])
        k = days_in_service(days, max(u_from, frm) if frm is not None else None, to)
        if k:
            user_days += k
            per_user.append({"user": u["name"], "days": k})
    if user_days:
        lines.append({"kind": "users", "description": f"users: {len(per_user)}, {user_days} user-days of {n}" + note,
                      "quantity": f"{user_days}/{n}", "unit_micros": micros(USER_FEE),
                      "amount_micros": prorate(micros(USER_FEE), user_days, n), "post": "fee",
                      "detail": {"users": per_user, "days_in_month": n, "prepaid": bool(prepaid)}})

    in_period = "e.account_id = ? AND e.at >= ? AND e.at < ?"
    p = (acc["id"], lo, hi)
    s_micros, s_seconds, calls = store.execute(
        f"SELECT SUM(e.service_micros), SUM(e.service_seconds), COUNT(CASE WHEN e.kind = 'charge' THEN 1 END) - "
        f"COUNT(CASE WHEN e.kind = 'reversal' THEN 1 END) FROM ledger_entries e "
        f"WHERE {in_period} AND e.kind IN ('charge', 'reversal')", p).fetchone()
    if calls:
        lines.append({"kind": "service", "description": f"service minutes: {calls} calls",
                      "quantity": _minutes(s_seconds or 0),
                      "unit_micros": plan["price_micros"], "amount_micros": s_micros or 0,
                      "detail": {"calls": calls, "seconds": s_seconds or 0}})
    for prefix, t_micros, t_seconds, deck_id in store.execute(
            f"SELECT e.prefix, SUM(e.telecom_micros), SUM(e.telecom_seconds), MAX(b.deck_id) FROM ledger_entries e "
            f"JOIN ledger_batches b ON b.id = e.batch_id WHERE {in_period} AND e.kind IN ('charge', 'reversal') "
            f"GROUP BY e.prefix ORDER BY e.prefix", p).fetchall():
        if not t_micros and not t_seconds:
            continue
        dest = store.query_one("SELECT destination FROM rate_deck_rows WHERE deck_id = ? AND prefix = ? "
                               "ORDER BY id DESC LIMIT 1", (deck_id, prefix)) if deck_id is not None else None
        name = dest["destination"] if dest and dest["destination"] else None
        lines.append({"kind": "telecom", "description": f"telecom +{prefix}" + (f" {name}" if name else ""),
                      "quantity": _minutes(t_seconds or 0), "unit_micros": None,
                      "amount_micros": t_micros or 0, "prefix": prefix, "destination": name,
                      "detail": {"seconds": t_seconds or 0}})
    for kind, amount, at, ref in store.execute(
            f"SELECT e.kind, e.amount_micros, e.at, b.reference FROM ledger_entries e JOIN ledger_batches b "
            f"ON b.id = e.batch_id WHERE {in_period} AND e.kind IN ('interest', 'payment', 'credit', 'fee') "
            f"ORDER BY e.at, e.id", p).fetchall():
        if kind == "fee":
            continue  # posted by this invoice when it is issued: its lines above
        what = {"interest": "interest posted", "payment": "payment received", "credit": "credit"}[kind]
        lines.append({"kind": kind, "description": f"{what} {at[:10]}" + (f" ({ref})" if ref else ""),
                      "quantity": None, "unit_micros": None, "amount_micros": -amount, "detail": {"at": at}})

    # interest on what was overdue during the period (to now for a draft)
    invs = [(from_iso(r["period_end"]), from_iso(r["due_at"]), r["interest_base_micros"]) for r in store.query(
        "SELECT period_end, due_at, interest_base_micros FROM invoices WHERE account_id = ? AND status = 'issued' "
        "AND period_end <= ?", (acc["id"], lo))]
    if invs:
        since = to_iso(min(i[0] for i in invs))
        received = [(from_iso(at), a) for at, a in store.execute(
            "SELECT at, amount_micros FROM ledger_entries WHERE account_id = ? AND kind IN ('payment', 'credit') "
            "AND at >= ? AND at < ?", (acc["id"], since, hi)).fetchall()]
        interest, daily = interest_micros(days, invs, received, upto=None if issuing else utc(now))
        if interest:
            lines.append({"kind": "interest", "description": f"interest {(INTEREST_PER_MONTH * 100).normalize()} % a month on the "
                                                             f"overdue amount" + ("" if issuing else " (so far)"),
                          "quantity": None, "unit_micros": None, "amount_micros": interest, "post": "interest",
                          "detail": {"overdue_day_micros": daily, "days_in_month": n}})

    opening = _sum(store, "SELECT SUM(amount_micros) FROM ledger_entries WHERE account_id = ? AND at < ?",
                   (acc["id"], lo))
    prev = store.query_one("SELECT number, closing_micros FROM invoices WHERE account_id = ? AND status = 'issued' "
                           "AND period_end <= ? ORDER BY period_end DESC LIMIT 1", (acc["id"], lo))
    if prev is not None and prev["closing_micros"] != opening:
        lines.append({"kind": "correction", "description": f"corrections dated in periods already invoiced "
                                                           f"(after {prev['number']})",
                      "quantity": None, "unit_micros": None, "amount_micros": prev["closing_micros"] - opening,
                      "detail": {}})
        opening = prev["closing_micros"]
    charges = sum(li["amount_micros"] for li in lines if li["kind"] not in ("payment", "credit"))
    received_total = -sum(li["amount_micros"] for li in lines if li["kind"] in ("payment", "credit"))
    closing = opening - charges + received_total
    interest_all = sum(li["amount_micros"] for li in lines if li["kind"] == "interest") + _sum(
        store, "SELECT SUM(amount_micros) FROM ledger_entries WHERE account_id = ? AND kind = 'interest' AND at < ?",
        (acc["id"], lo)) * -1
    for i, li in enumerate(lines, 1):
        li["seq"] = i
    return {"start": start, "end": end, "lines": lines, "opening": opening, "charges": charges,
            "received": received_total, "closing": closing, "due": max(0, -closing),
            "interest_base": max(0, -(closing + interest_all)), "days": n}


def _number(acc, period):
    return f"A{acc['id']}-{period}"


def _store_invoice(store, acc, plan, period, calc, now, status):
    """Insert or refresh the draft (inside the caller's transaction); returns its id."""
    tz = plan["time_zone"]
    row = store.query_one("SELECT id, status FROM invoices WHERE account_id = ? AND period = ?", (acc["id"], period))
    values = dict(time_zone=tz, period_start=to_iso(calc["start"]), period_end=to_iso(calc["end"]),
                  built_at=to_iso(now), due_at=to_iso(due_at(period, tz)), opening_micros=calc["opening"],
                  charges_micros=calc["charges"], received_micros=calc["received"], closing_micros=calc["closing"],
                  due_micros=calc["due"], interest_base_micros=calc["interest_base"])
    if row is None:
        cur = store.execute(
            f"INSERT INTO invoices (account_id, period, number, status, {', '.join(values)}) "
            f"VALUES (?, ?, ?, 'draft', {', '.join('?' * len(values))})",
            (acc["id"], period, _number(acc, period), *values.values()))
        inv_id = cur.lastrowid
    else:
        inv_id = row["id"]
        store.execute(f"UPDATE invoices SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?",
                      (*values.values(), inv_id))
        store.execute("DELETE FROM invoice_lines WHERE invoice_id = ?", (inv_id,))
    for li in calc["lines"]:
        store.execute("INSERT INTO invoice_lines (invoice_id, seq, kind, description, quantity, unit_micros, "
                      "amount_micros, prefix, destination, entry_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (inv_id, li["seq"], li["kind"], li["description"], li["quantity"], li["unit_micros"],
                       li["amount_micros"], li.get("prefix"), li.get("destination"), li.get("entry_id"),
                       json.dumps(li.get("detail") or {}, sort_keys=True)))
    return inv_id


def build(store, account, period, now, actor):
    """Build or refresh the account's invoice of ``period`` (YYYY-MM): a draft until
    ISSUE_GRACE after the period's end, then issued (fees, users and interest posted to
    the ledger once; immutable). An issued invoice is returned unchanged. Returns the
    invoice (:func:`show`'s shape) with ``changed``."""
    acc = resolve_account(store, account)
    period = _period(period)
    now = utc(now)
    _standing.evaluate(store, acc, now, actor)  # a payment since the last evaluation starts the service
    with store.transaction():
        ensure_plan(store, acc["id"], now)
        plan = plan_row(store, acc["id"])
        existing = store.query_one("SELECT status FROM invoices WHERE account_id = ? AND period = ?",
                                   (acc["id"], period))
        if existing is not None and existing["status"] == "issued":
            return {**show(store, acc, period), "changed": False}
        start, end = bounds(period, plan["time_zone"])
        issuing = now >= end + ISSUE_GRACE
        calc = _lines(store, acc, plan, period, now, issuing)
        if issuing:
            batch = None
            for li in calc["lines"]:
                kind = li.get("post")
                if kind and li["amount_micros"] > 0:
                    if batch is None:
                        batch = _batch(store, acc["id"], "bill-run", now, actor, f"invoice {_number(acc, period)}",
                                       period=period)
                    cur = store.execute("INSERT INTO ledger_entries (account_id, batch_id, kind, amount_micros, at) "
                                        "VALUES (?, ?, ?, ?, ?)",
                                        (acc["id"], batch, kind, -li["amount_micros"], to_iso(start)))
                    li["entry_id"] = cur.lastrowid
        inv_id = _store_invoice(store, acc, plan, period, calc, now, "draft")
        if issuing:
            store.execute("UPDATE invoices SET status = 'issued', issued_at = ? WHERE id = ?", (to_iso(now), inv_id))
            audit.append(store, now, actor, "billing.invoice.issue", f"account:{acc['id']}", "",
                         {"invoice": _number(acc, period), "charges_micros": calc["charges"],
                          "closing_micros": calc["closing"], "due_micros": calc["due"]}, account_id=acc["id"])
    if issuing:
        _standing.evaluate(store, acc, now, actor)
    return {**show(store, acc, period), "changed": True}


def run(store, account, period, now, actor):
    """``dialer bill run``: rate the period's CDRs into the ledger, then build (or
    refresh, or issue) its invoice. An issued period changes nothing: no CDR is rated
    into it (a CDR of it still unrated is counted, not charged)."""
    acc = resolve_account(store, account)
    period = _period(period)
    inv = store.query_one("SELECT status FROM invoices WHERE account_id = ? AND period = ?", (acc["id"], period))
    if inv is not None and inv["status"] == "issued":
        plan = plan_row(store, acc["id"])
        start, end = bounds(period, plan["time_zone"])
        left = store.execute("SELECT COUNT(*) FROM cdrs c WHERE c.account_id = ? AND c.started_at >= ? "
                             "AND c.started_at < ? AND c.billable_ms > 0 AND NOT EXISTS "
                             "(SELECT 1 FROM ledger_entries l WHERE l.call_id = c.call_id)",
                             (acc["id"], to_iso(start), to_iso(end))).fetchone()[0]
        zero = from_micros(0)
        return {"account": acc["name"], "period": period, "time_zone": plan["time_zone"], "from": to_iso(start),
                "to": to_iso(end), "deck": None, "batch": None, "cdrs": 0, "charged": 0, "already": 0, "free": 0,
                "refused": 0, "service": zero, "telecom": zero, "total": zero, "refused_by_reason": {},
                "refused_examples": [], "unrated_after_issue": left,
                "invoice": {**show(store, acc, period), "changed": False}}
    out = bill_run(store, acc, period, now, actor)
    out["invoice"] = build(store, acc, period, now, actor)
    return out


# ------------------------------------------------------------------------- reading, exporting

def _find(store, acc, period):
    period = _period(period)
    inv = store.query_one("SELECT * FROM invoices WHERE account_id = ? AND period = ?", (acc["id"], period))
    if inv is None:
        raise NotFound(f"account {acc['name']!r} has no invoice for {period} (make it with: dialer bill run "
                       f"--account {acc['name']} --period {period})")
    return inv


def show(store, account, period):
    """An invoice with its lines; amounts Decimal (invoice signs: charges positive)."""
    acc = resolve_account(store, account)
    inv = _find(store, acc, period)
    lines = store.query("SELECT seq, kind, description, quantity, unit_micros, amount_micros, prefix, destination, "
                        "entry_id, detail FROM invoice_lines WHERE invoice_id = ? ORDER BY seq", (inv["id"],))
    for li in lines:
        li["unit_price"] = from_micros(li.pop("unit_micros"))
        li["amount"] = from_micros(li.pop("amount_micros"))
        li["detail"] = json.loads(li["detail"]) if li["detail"] else {}
    return {"account": acc["name"], "invoice": inv["number"], "period": inv["period"], "status": inv["status"],
            "time_zone": inv["time_zone"], "from": inv["period_start"], "to": inv["period_end"],
            "built_at": inv["built_at"], "issued_at": inv["issued_at"], "due_at": inv["due_at"],
            "opening_balance": from_micros(inv["opening_micros"]), "charges": from_micros(inv["charges_micros"]),
            "received": from_micros(inv["received_micros"]), "closing_balance": from_micros(inv["closing_micros"]),
            "amount_due": from_micros(inv["due_micros"]), "lines": lines}


CSV_COLUMNS = ("invoice", "period", "status", "seq", "kind", "description", "quantity", "unit_price", "amount",
               "prefix", "destination")


def to_csv(inv):
    """The invoice's lines as CSV, then its totals as lines of kind ``total``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for li in inv["lines"]:
        w.writerow([inv["invoice"], inv["period"], inv["status"], li["seq"], li["kind"], li["description"],
                    li["quantity"] or "", li["unit_price"] if li["unit_price"] is not None else "", li["amount"],
                    li["prefix"] or "", li["destination"] or ""])
    for key in ("opening_balance", "charges", "received", "closing_balance", "amount_due"):
        w.writerow([inv["invoice"], inv["period"], inv["status"], "", "total", key, "", "", inv[key], "", ""])
    return buf.getvalue()


def to_text(inv):
    """The invoice for a terminal: a header, one line per invoice line, the totals."""
    from .money import fmt
    out = [f"invoice {inv['invoice']} ({inv['status'].upper()}), {inv['account']} {inv['period']} "
           f"({inv['time_zone']}), due {inv['due_at'][:10]}"]
    for li in inv["lines"]:
        qty = f" [{li['quantity']}]" if li["quantity"] else ""
        out.append(f"  {li['description'] + qty:<64} {fmt(li['amount']):>16}")
    for key, label in (("opening_balance", "opening balance"), ("charges", "charges"),
                       ("received", "payments and credits"), ("closing_balance", "closing balance"),
                       ("amount_due", "amount due")):
        out.append(f"  {label:<64} {fmt(inv[key]):>16}")
    return "\n".join(out)


def to_json(inv):
    return json.dumps(inv, ensure_ascii=False, indent=2, default=str)


def to_html(inv):
    """A readable, self-contained HTML page (every value escaped)."""
    e = html.escape
    rows = "\n".join(
        f"<tr><td>{e(li['kind'])}</td><td>{e(li['description'])}</td><td class=n>{e(li['quantity'] or '')}</td>"
        f"<td class=n>{e(str(li['unit_price']) if li['unit_price'] is not None else '')}</td>"
        f"<td class=n>{e(str(li['amount']))}</td></tr>" for li in inv["lines"])
    totals = "\n".join(f"<tr><th colspan=4>{e(label)}</th><td class=n>{e(str(inv[key]))}</td></tr>" for key, label in (
        ("opening_balance", "Opening balance"), ("charges", "Charges"), ("received", "Payments and credits"),
        ("closing_balance", "Closing balance"), ("amount_due", "Amount due")))
    status = "DRAFT" if inv["status"] == "draft" else "issued " + (inv["issued_at"] or "")[:10]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Invoice {e(inv['invoice'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:4px 8px;text-align:left}}.n{{text-align:right;font-variant-numeric:tabular-nums}}</style></head>
<body><h1>Invoice {e(inv['invoice'])} ({e(status)})</h1>
<p>Account {e(inv['account'])}, period {e(inv['period'])} ({e(inv['time_zone'])}: {e(inv['from'])} to
{e(inv['to'])}, half-open); due {e(inv['due_at'][:10])}. Amounts in USD.</p>
<table><tr><th>kind</th><th>description</th><th>quantity</th><th>unit price</th><th>amount</th></tr>
{rows}
{totals}
</table></body></html>
"""


FORMATS = {"json": to_json, "csv": to_csv, "html": to_html}


def period_of(instant, tz_name):
    """The period (YYYY-MM) an instant falls in, in the time zone ``tz_name``."""
    local = utc(instant).astimezone(zone({"time_zone": tz_name}))
    return f"{local.year:04d}-{local.month:02d}"


def export(store, account, period, fmt="json"):
    """The invoice as text in ``fmt`` (json, csv, html)."""
    if fmt not in FORMATS:
        raise InputError(f"format {shown(fmt)} is not one of {', '.join(FORMATS)}")
    return FORMATS[fmt](show(store, account, period))


def list_invoices(store, account):
    acc = resolve_account(store, account)
    rows = store.query("SELECT number, period, status, issued_at, due_at, charges_micros, closing_micros, due_micros "
                       "FROM invoices WHERE account_id = ? ORDER BY period", (acc["id"],))
    return {"account": acc["name"], "invoices": [
        {"invoice": r["number"], "period": r["period"], "status": r["status"], "issued_at": r["issued_at"],
         "due_at": r["due_at"], "charges": from_micros(r["charges_micros"]),
         "closing_balance": from_micros(r["closing_micros"]), "amount_due": from_micros(r["due_micros"])}
        for r in rows]}


# ------------------------------------------------------------------------- annual prepayment

def prepay(store, account, first_period, now, actor, months=PREPAY_MONTHS, amount=None, reference=""):
    """An annual prepayment: a payment of ``months`` x (account fee + $88 x the
    account's users now), or ``amount`` if given (at least that), covering the fees of
    ``months`` periods from ``first_period``. Audited; the standing is evaluated (a
    pending account becomes active). Refused if a prepayment already covers one of
    those periods."""
    acc = resolve_account(store, account)
    first = _period(first_period)
    if isinstance(months, bool) or not isinstance(months, int) or not 1 <= months <= 36:
        raise InputError(f"months {shown(months)} must be a whole number from 1 to 36")
    now = utc(now)
    users = store.query_one("SELECT COUNT(*) AS n FROM users WHERE account_id = ?", (acc["id"],))["n"]
    monthly = micros(ACCOUNT_FEE) + users * micros(USER_FEE)
    total = monthly * months
    if amount is not None:
        paid = micros(parse_amount(amount, "prepayment amount", allow_zero=False))
        if paid < total:
            raise InputError(f"a prepayment of {months} months is at least {from_micros(total)} (account fee "
                             f"{ACCOUNT_FEE} + {users} users x {USER_FEE}, a month); {from_micros(paid)} is short")
        total = paid
    last = _next_period(first, months - 1)
    reference = str(reference or "").strip()[:200] or f"annual prepayment {first} to {last}"
    with store.transaction():
        for p in store.query("SELECT first_period, months FROM prepayments WHERE account_id = ?", (acc["id"],)):
            p_last = _next_period(p["first_period"], p["months"] - 1)
            if not (last < p["first_period"] or first > p_last):
                raise StateError(f"a prepayment already covers {p['first_period']} to {p_last}; nothing was changed")
        ensure_plan(store, acc["id"], now)
        batch = _batch(store, acc["id"], "payment", now, actor, reference)
        entry = store.execute("INSERT INTO ledger_entries (account_id, batch_id, kind, amount_micros, at) "
                              "VALUES (?, ?, 'payment', ?, ?)", (acc["id"], batch, total, to_iso(now))).lastrowid
        store.execute("INSERT INTO prepayments (account_id, entry_id, first_period, months, monthly_micros, "
                      "created_at, actor) VALUES (?, ?, ?, ?, ?, ?, ?)",
                      (acc["id"], entry, first, months, monthly, to_iso(now), actor))
        audit.append(store, now, actor, "billing.prepayment", f"account:{acc['id']}", reference,
                     {"entry": entry, "amount_micros": total, "first_period": first, "months": months,
                      "monthly_micros": monthly}, account_id=acc["id"])
    st = _standing.evaluate(store, acc, now, actor)
    return {"account": acc["name"], "entry": entry, "amount": from_micros(total), "first_period": first,
            "last_period": last, "months": months, "monthly": from_micros(monthly), "standing": st["state"]}

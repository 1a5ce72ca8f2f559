"""Helpers for the billing tests: CDR rows as the dialer stores them, deck files."""

import datetime as dt

from core.timeutil import parse_instant, to_iso, to_ms

NOW = dt.datetime(2026, 3, 20, 12, 0, tzinfo=dt.timezone.utc)
HEADER = "prefix,destination,rate,initial,increment,connect_fee,effective_from,effective_to"

_COLS = ("call_id", "account_id", "destination", "started_at", "answered_at", "ended_at", "duration_ms", "ring_ms",
         "billable_ms", "billsec", "disposition", "abandoned", "opted_out", "sip_code", "sip_reason", "hangup_cause",
         "hangup_by", "created_at")


def add_cdr(store, call_id, account_id, destination, started, answered=None, ended=None, talk_s=None,
            billable_ms=None, duration_ms=None):
    """Insert a CDR row as dialer.cdr.write_cdr would (the columns billing reads are
    the real ones; the others hold plausible values). ``talk_s``: seconds from answer
    to end, answer 5 s after the start."""
    st = parse_instant(started)
    if talk_s is not None:
        an = st + dt.timedelta(seconds=5)
        en = an + dt.timedelta(seconds=talk_s)
    else:
        an = parse_instant(answered) if answered else None
        en = parse_instant(ended)
    if billable_ms is None:
        billable_ms = (to_ms(en) - to_ms(an)) if an is not None else 0
    if duration_ms is None:
        duration_ms = to_ms(en) - to_ms(st)
    billsec = -(-billable_ms // 1000) if billable_ms > 0 else 0
    values = (call_id, account_id, destination, to_iso(st), to_iso(an) if an else None, to_iso(en), duration_ms, 0,
              billable_ms, billsec, "answered" if an else "no-answer", 0, 0, 200 if an else 480,
              "OK" if an else "Temporarily Unavailable", "NORMAL_CLEARING", "callee", to_iso(st))
    store.execute(f"INSERT INTO cdrs ({', '.join(_COLS)}) VALUES ({', '.join('?' * len(_COLS))})", values)


def write_deck(path, lines, header=HEADER):
    path.write_text(header + "\n" + "".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def dump(store, *tables):
    """Every row of the tables, to show that a refused action changed nothing."""
    return {t: store.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in tables}


BILLING_TABLES = ("billing_accounts", "rate_decks", "rate_deck_rows", "ledger_entries", "audit_log")

"""Call records checked before they are rated, and rated in batches.

A CDR is refused, with its reason, never billed silently, when it ends before it
was answered (or is answered before it started), when it lasts more than 24 hours
(start to end, or answer to end), when its destination is not a number, when its
account is unknown, or when no rate is in force for its destination at its start.
A refused CDR is reported and stays unrated (a later run after a deck is fixed
rates it); a call of 0 billable seconds is free (no ledger entry).

Two sources: the ``cdrs`` table (read by ``billing.ledger``'s bill run through the
store; the dialer's own module is not imported, billing sits below it) and a
what-if CSV (``dialer rate FILE``), whose columns are

``call_id``, ``destination`` (E.164, e.g. +442071234567), ``started_at``,
``answered_at`` (empty: not answered), ``ended_at`` (ISO 8601 instants, UTC unless
they say otherwise; milliseconds kept), and optionally ``account`` (an account's
name; empty or absent: the account given with --account).
"""

import csv
import io
import os
from bisect import bisect_right

from core.errors import InputError
from core.timeutil import parse_instant, shown, to_iso, to_ms

from .rating import cost_micros

MAX_CALL_MS = 24 * 3600 * 1000  # a call longer than a day is a broken record
CSV_REQUIRED = ("call_id", "destination", "started_at", "answered_at", "ended_at")
CSV_OPTIONAL = ("account",)
MAX_CSV_BYTES = 512 << 20


def _iso_ok(s):
    # storage form, as core.timeutil.to_iso writes it: 2026-03-01T12:00:00.000Z (sorts as text)
    return s is not None and len(s) == 24 and s[-1] == "Z" and s[10] == "T"


def _norm(s):
    return s if s is None or _iso_ok(s) else to_iso(parse_instant(s))


def check_stored(started, answered, ended, duration_ms, billable_ms):
    """The reason a stored CDR cannot be billed, or None. Instants are storage-form
    ISO UTC text (compared as text); durations integer milliseconds."""
    if not (_iso_ok(started) and _iso_ok(ended) and (answered is None or _iso_ok(answered))):
        try:
            started, answered, ended = _norm(started), _norm(answered), _norm(ended)
        except InputError:
            return "an instant is not ISO 8601"
    if ended < started:
        return f"ends ({ended}) before it started ({started})"
    if answered is not None:
        if answered < started:
            return f"answered ({answered}) before it started ({started})"
        if ended < answered:
            return f"ends ({ended}) before it was answered ({answered})"
    if billable_ms < 0:
        return f"negative billable time ({billable_ms} ms)"
    if answered is None and billable_ms > 0:
        return f"billable time without an answer ({billable_ms} ms)"
    if duration_ms > MAX_CALL_MS or billable_ms > MAX_CALL_MS:
        return f"absurd duration ({max(duration_ms, billable_ms) // 1000} s, more than 24 h)"
    return None


def reason_kind(reason):
    """A refusal's reason without its particulars (the call's instants, number or
    deck), to count refusals by kind."""
    for head in ("ends (", "answered (", "absurd duration", "negative billable", "an instant", "destination ",
                 "no rate deck", "no rate for", "billable time without an answer"):
        if reason.startswith(head):
            return {"ends (": "ends before it started or was answered", "answered (": "answered before it started",
                    "destination ": "destination is not a number", "no rate for": "no rate for the destination",
                    }.get(head, head.strip(" ("))
    return reason


def rate_batch(rows, service, index, deck_name=None):
    """Check and rate call records. ``rows``: (call_id, destination, started_at,
    answered_at, ended_at, duration_ms, billable_ms), instants in storage form (as
    the ``cdrs`` table holds them; :func:`check_csv_row` makes them from a CSV row);
    ``service``: the account's Tariff; ``index``: its PrefixIndex (or None: no deck).
    Returns (rated, free, refused): rated rows (call_id, started_at, billsec,
    service_seconds, service_micros, telecom_seconds, telecom_micros, charge_micros
    (the negated sum), prefix), in the order ``billing.ledger`` inserts them; free
    call ids (0 billable seconds); refused (call_id, reason)."""
    rated, free, refused = [], [], []
    append = rated.append
    if index is not None:  # the longest-prefix look-up of PrefixIndex.lookup, inline (a million calls a run)
        get, lengths = index._index.get, index._lengths
    service_costs = {}  # billsec -> (seconds, cost): one account, one service tariff, few distinct durations
    for call_id, destination, started, answered, ended, duration_ms, billable_ms in rows:
        # the common case, an answered call in storage form, is checked inline (the same checks
        # as check_stored, which is asked whenever one fails, and gives the reason)
        if not (answered is not None and 0 < billable_ms <= MAX_CALL_MS and duration_ms <= MAX_CALL_MS
                and len(started) == 24 == len(answered) == len(ended)
                and started[-1] == answered[-1] == ended[-1] == "Z"
                and started[10] == answered[10] == ended[10] == "T"
                and started <= answered <= ended):
            reason = check_stored(started, answered, ended, duration_ms, billable_ms)
            if reason is not None:
                refused.append((call_id, reason))
                continue
            if billable_ms <= 0:
                free.append(call_id)
                continue
            started = _norm(started)
        billsec = -(-billable_ms // 1000)  # billable_seconds(), inline
        digits = destination[1:] if destination[:1] == "+" else destination
        if not digits.isdigit() or not digits.isascii():
            refused.append((call_id, f"destination {shown(destination)} is not a number"))
            continue
        if index is None:
            refused.append((call_id, "no rate deck in force (import one with: dialer rates import FILE --deck NAME)"))
            continue
        # PrefixIndex.lookup(digits, started), the same steps without its call (tests check they agree)
        n = len(digits)
        for length in lengths:
            if length > n:
                continue
            key = digits[:length]
            e = get(key)
            if e is None:
                continue
            if e.__class__ is tuple:
                row = e
                if row[0] > started:
                    continue
            else:
                i = bisect_right(e[0], started) - 1
                if i < 0:
                    continue
                row = e[1][i]
            if row[1] is not None and started >= row[1]:
                continue
            break
        else:
            refused.append((call_id, f"no rate for +{digits} at {started} in deck {deck_name or index.deck['name']}"))
            continue
        svc = service_costs.get(billsec)
        if svc is None:
            svc = service_costs[billsec] = cost_micros(billsec, service)
        t = row[2]
        if t.min_micros is None and t.max_micros is None:
            # cost_micros(billsec, t) for billsec > 0 without a minimum or maximum (a deck's rows
            # have none), inline: the charged seconds, then the exact cost x 60 rounded up once
            ini = t.initial
            t_sec = ini if billsec <= ini else ini + -(-(billsec - ini) // t.increment) * t.increment
            t_cost = -(-(t.connect_micros * 60 + t_sec * t.rate_micros) // 60)
        else:
            t_sec, t_cost = cost_micros(billsec, t)
        append((call_id, started, billsec, svc[0], svc[1], t_sec, t_cost, -(svc[1] + t_cost), key))
    return rated, free, refused


def read_cdr_csv(path):
    """Rows of a what-if CDR file: (line, fields dict, problem or None). A file
    without the columns is an InputError; a bad row is reported with its line."""
    name = os.fspath(path)
    try:
        if os.path.getsize(name) > MAX_CSV_BYTES:
            raise InputError(f"CDR file {name} is larger than {MAX_CSV_BYTES >> 20} MiB")
        with open(name, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InputError(f"cannot read CDR file {name}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise InputError(f"CDR file {name}: line {line} is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = None
    out = []
    try:
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if header is None:
                header = [c.strip().lower() for c in cells]
                missing = [c for c in CSV_REQUIRED if c not in header]
                unknown = [c for c in header if c not in CSV_REQUIRED + CSV_OPTIONAL]
                if missing or unknown or len(set(header)) != len(header):
                    raise InputError(
                        f"CDR file {name}: line {line}: the header needs the columns {', '.join(CSV_REQUIRED)} "
                        f"(optionally {', '.join(CSV_OPTIONAL)}), each once"
                        + (f"; missing {', '.join(missing)}" if missing else "")
                        + (f"; unknown {', '.join(map(shown, unknown))}" if unknown else ""))
                continue
            if len(cells) != len(header):
                out.append((line, None, f"{len(cells)} cells where the header has {len(header)}"))
                continue
            out.append((line, {c: cells[i].strip() for i, c in enumerate(header)}, None))
    except csv.Error as e:
        raise InputError(f"CDR file {name}: line {reader.line_num}: not CSV ({e})") from None
    if header is None:
        raise InputError(f"CDR file {name} is empty: it needs a header line ({', '.join(CSV_REQUIRED)})")
    return out


def check_csv_row(fields):
    """A what-if row as a record for :func:`rate_batch` (call_id, destination,
    started_at, answered_at, ended_at, duration_ms, billable_ms), instants in storage
    form, or InputError with the reason a field cannot be read (``rate_batch`` then
    checks the call itself, as it checks a stored one)."""
    call_id = fields["call_id"]
    if not call_id:
        raise InputError("no call_id")
    if not fields["destination"]:
        raise InputError("no destination")
    started = parse_instant(fields["started_at"], "started_at", bounded=True)
    ended = parse_instant(fields["ended_at"], "ended_at", bounded=True)
    answered = (parse_instant(fields["answered_at"], "answered_at", bounded=True)
                if fields["answered_at"] else None)
    s_ms, e_ms = to_ms(started), to_ms(ended)
    billable = e_ms - to_ms(answered) if answered is not None else 0
    return (call_id, fields["destination"], to_iso(started), to_iso(answered) if answered else None, to_iso(ended),
            e_ms - s_ms, billable)

"""Telecom rate decks: imported from CSV all-or-nothing, looked up by longest prefix.

A deck is the operator's default (used by every account without its own) or an
account's own, which takes precedence as a whole: an account that has its own deck
is rated by it alone, the default deck is not consulted for it (a destination its
deck lacks is refused, not priced at the operator's rate). Importing a deck makes it
the deck in force of its scope; the one it replaces is kept (marked
``replaced_at``) because the ledger's charges name the deck that rated them.

The file: CSV (UTF-8, a BOM allowed), a header line naming the columns, in any order:

``prefix`` (digits, an optional leading +), ``rate`` (per minute), ``initial`` and
``increment`` (seconds) are required; ``destination`` (a name), ``connect_fee``
(empty: 0), ``effective_from`` and ``effective_to`` (an ISO 8601 date or instant,
UTC unless it says otherwise; empty: always, and until the prefix's next row) are
optional. Amounts are plain decimals of at most 6 places, not negative.

A prefix may have several rows with different effective dates: a row is in force
over [effective_from, effective_to), half-open; a row without ``effective_to`` ends
where the prefix's next row starts. Two rows of a prefix with the same
``effective_from`` are a duplicate; a row whose ``effective_to`` runs past the next
row's ``effective_from`` overlaps it: both are errors.

Import is all-or-nothing: every line is checked first and every problem reported
with its line number in one error, then the rows go in with the deck in one
transaction; on any problem nothing is stored and the deck in force stays in force.

Look-up (:class:`PrefixIndex`): the destination's longest prefix that has a row in
force at the call's start, found by trying the deck's prefix lengths longest first
in a dict (no SQL per call); a longer prefix whose rows are not in force at that
instant (not yet, or no longer) gives way to a shorter one.
"""

import bisect
import csv
import hashlib
import io
import os
import re

from core import audit
from core.errors import InputError, NotFound
from core.tenancy import resolve_account
from core.timeutil import parse_instant, shown, to_iso

from .money import MICRO, PLACES, micros
from .rating import MAX_INCREMENT_S, Tariff

REQUIRED = ("prefix", "rate", "initial", "increment")
OPTIONAL = ("destination", "connect_fee", "effective_from", "effective_to")
MAX_RATE = 1000            # per minute: more is a typo
MAX_PREFIX_DIGITS = 15     # E.164
MAX_REPORTED = 20          # problems listed in the error (all are counted)
MAX_FILE_BYTES = 512 << 20

_PREFIX = re.compile(r"\+?([0-9]{1,%d})" % MAX_PREFIX_DIGITS)
_AMOUNT = re.compile(r"([0-9]{1,9})(?:\.([0-9]+))?")
_INT = re.compile(r"[0-9]{1,9}")


class _Problems:
    def __init__(self, name):
        self.name = name
        self.items = []

    def add(self, line, text):
        self.items.append((line, text))

    def raise_if_any(self):
        if not self.items:
            return
        self.items.sort(key=lambda x: x[0])
        shown_items = [f"  line {line}: {text}" for line, text in self.items[:MAX_REPORTED]]
        more = len(self.items) - MAX_REPORTED
        raise InputError(
            f"rate deck {self.name}: {len(self.items)} problem(s); nothing was imported and the deck in force "
            f"stays in force:\n" + "\n".join(shown_items) + (f"\n  ... and {more} more" if more > 0 else ""))


def _amount(cell, what, problems, line, maximum):
    """A non-negative plain decimal of at most 6 places as micro-units, or None
    (the problem recorded)."""
    text = cell.strip()
    m = _AMOUNT.fullmatch(text)
    if m is None:
        neg = text.startswith("-") and _AMOUNT.fullmatch(text[1:].strip())
        problems.add(line, f"{what} {shown(cell)} is negative" if neg else
                     f"{what} {shown(cell)} is not a number (a plain decimal such as 0.0188)")
        return None
    whole, frac = m.group(1), (m.group(2) or "")
    if len(frac.rstrip("0")) > PLACES:
        problems.add(line, f"{what} {shown(cell)} has more than {PLACES} decimal places (the smallest unit is {MICRO})")
        return None
    value = int(whole) * 1_000_000 + int((frac.rstrip("0") or "0").ljust(PLACES, "0"))
    if value > maximum * 1_000_000:
        problems.add(line, f"{what} {shown(cell)} is above {maximum}")
        return None
    return value


def _seconds(cell, what, problems, line, low):
    text = cell.strip()
    if not _INT.fullmatch(text) or not low <= int(text) <= MAX_INCREMENT_S:
        problems.add(line, f"{what} {shown(cell)} is not a whole number of seconds from {low} to {MAX_INCREMENT_S}")
        return None
    return int(text)


def _instant(cell, what, problems, line):
    text = cell.strip()
    if not text:
        return None
    try:
        return to_iso(parse_instant(text, what, bounded=True))
    except InputError as e:
        problems.add(line, str(e))
        return None


def parse_deck(path):
    """Read and check a deck file. Returns (rows, sha256); each row a dict with its
    ``line``. Raises InputError naming every problem with its line number."""
    name = os.fspath(path)
    try:
        size = os.path.getsize(name)
        if size > MAX_FILE_BYTES:
            raise InputError(f"rate deck {name}: {size} bytes, more than the {MAX_FILE_BYTES >> 20} MiB accepted")
        with open(name, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InputError(f"cannot read rate deck {name}: {e.strerror or e}") from None
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise InputError(f"rate deck {name}: line {line} is not UTF-8 text; nothing was imported") from None
    problems = _Problems(name)
    reader = csv.reader(io.StringIO(text, newline=""))
    header, cols = None, None
    rows = []
    try:
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue  # a blank line
            if header is None:
                header = [c.strip().lower() for c in cells]
                unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
                missing = [c for c in REQUIRED if c not in header]
                dup = sorted({c for c in header if header.count(c) > 1})
                if unknown or missing or dup:
                    parts = ([f"unknown column(s) {', '.join(map(shown, unknown))}"] if unknown else []) + \
                            ([f"missing column(s) {', '.join(missing)}"] if missing else []) + \
                            ([f"column(s) named twice: {', '.join(dup)}"] if dup else [])
                    problems.add(line, "header: " + "; ".join(parts) + f" (columns: {', '.join(REQUIRED)}, and "
                                 f"optionally {', '.join(OPTIONAL)})")
                    problems.raise_if_any()
                cols = {c: i for i, c in enumerate(header)}
                continue
            if len(cells) != len(header):
                problems.add(line, f"{len(cells)} cells where the header has {len(header)} (a junk line?)")
                continue
            before = len(problems.items)

            def cell(col):
                i = cols.get(col)
                return cells[i] if i is not None else ""

            p = _PREFIX.fullmatch(cell("prefix").strip())
            if p is None:
                problems.add(line, f"prefix {shown(cell('prefix'))} is not 1 to {MAX_PREFIX_DIGITS} digits")
            rate = _amount(cell("rate"), "rate", problems, line, MAX_RATE)
            initial = _seconds(cell("initial"), "initial", problems, line, 0)
            increment = _seconds(cell("increment"), "increment", problems, line, 1)
            fee = _amount(cell("connect_fee"), "connect_fee", problems, line, MAX_RATE) \
                if cell("connect_fee").strip() else 0
            frm = _instant(cell("effective_from"), "effective_from", problems, line)
            to = _instant(cell("effective_to"), "effective_to", problems, line)
            if frm is not None and to is not None and to <= frm:
                problems.add(line, f"effective_to {cell('effective_to').strip()} is not after effective_from "
                                   f"{cell('effective_from').strip()}")
            if len(problems.items) > before:
                continue
            rows.append({"line": line, "prefix": p.group(1), "destination": cell("destination").strip()[:200],
                         "rate_micros": rate, "initial_s": initial, "increment_s": increment,
                         "connect_micros": fee, "effective_from": frm, "effective_to": to})
    except csv.Error as e:
        problems.add(reader.line_num, f"not CSV ({e})")
    if header is None and not problems.items:
        raise InputError(f"rate deck {name} is empty: it needs a header line ({', '.join(REQUIRED)}, ...) and rows")
    if header is not None and not rows and not problems.items:
        problems.add(reader.line_num, "no rates after the header")
    _check_dates(rows, problems)
    problems.raise_if_any()
    return rows, digest


def _check_dates(rows, problems):
    """Duplicate prefixes (same effective_from) and overlapping effective dates."""
    by_prefix = {}
    for r in rows:
        by_prefix.setdefault(r["prefix"], []).append(r)
    for prefix, rs in by_prefix.items():
        if len(rs) == 1:
            continue
        rs.sort(key=lambda r: (r["effective_from"] or "", r["line"]))
        for a, b in zip(rs, rs[1:]):
            if (a["effective_from"] or "") == (b["effective_from"] or ""):
                problems.add(b["line"], f"duplicate prefix {prefix} (line {a['line']} has it with the same "
                                        f"effective_from: {a['effective_from'] or 'always'})")
            elif a["effective_to"] is not None and a["effective_to"] > b["effective_from"]:
                problems.add(b["line"], f"prefix {prefix} from {b['effective_from']} overlaps line {a['line']}, "
                                        f"in force until {a['effective_to']}")


def _scope(store, account):
    """(account row or None, SQL condition, params) of a deck scope: None is the
    operator's default deck."""
    if account is None or (isinstance(account, str) and not account.strip()):
        return None, "account_id IS NULL", ()
    acc = resolve_account(store, account)
    return acc, "account_id = ?", (acc["id"],)


def import_deck(store, path, deck_name, now, actor, account=None):
    """Import a deck file as the deck in force of the operator's default
    (``account`` None) or of an account. All or nothing (see the module)."""
    name = str(deck_name or "").strip()
    if not name or len(name) > 100:
        raise InputError("--deck: give the deck a name of 1 to 100 characters (e.g. carrier-a-2026-03)")
    acc, cond, params = _scope(store, account)
    rows, digest = parse_deck(path)
    at = to_iso(now)
    with store.transaction():
        old = store.query_one(f"SELECT id, name FROM rate_decks WHERE {cond} AND replaced_at IS NULL", params)
        cur = store.execute(
            "INSERT INTO rate_decks (name, account_id, source_file, sha256, rows, imported_at, actor) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (name, acc["id"] if acc else None, os.path.basename(os.fspath(path)), digest, len(rows), at, actor))
        deck_id = cur.lastrowid
        store.conn.executemany(
            "INSERT INTO rate_deck_rows (deck_id, line, prefix, destination, rate_micros, initial_s, increment_s, "
            "connect_micros, effective_from, effective_to) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(deck_id, r["line"], r["prefix"], r["destination"], r["rate_micros"], r["initial_s"], r["increment_s"],
              r["connect_micros"], r["effective_from"], r["effective_to"]) for r in rows])
        if old is not None:
            store.execute("UPDATE rate_decks SET replaced_at = ? WHERE id = ?", (at, old["id"]))
        audit.append(store, now, actor, "billing.deck.import", f"deck:{deck_id}", "",
                     {"name": name, "rows": len(rows), "sha256": digest, "replaces": old["id"] if old else None,
                      "scope": acc["name"] if acc else "default"}, account_id=acc["id"] if acc else None)
    return {"deck_id": deck_id, "deck": name, "scope": acc["name"] if acc else "default", "rows": len(rows),
            "prefixes": len({r["prefix"] for r in rows}), "sha256": digest,
            "replaces": ({"deck_id": old["id"], "deck": old["name"]} if old else None)}


def deck_in_force(store, account_id):
    """The deck row that rates an account's calls: its own deck in force, else the
    operator's default deck in force, else None."""
    own = store.query_one("SELECT * FROM rate_decks WHERE account_id = ? AND replaced_at IS NULL ORDER BY id DESC",
                          (account_id,))
    if own is not None:
        return own
    return store.query_one("SELECT * FROM rate_decks WHERE account_id IS NULL AND replaced_at IS NULL "
                           "ORDER BY id DESC")


class PrefixIndex:
    """A deck in memory: prefix -> (effective_from list, rows), rows sorted by
    effective_from ("" for always); each row (from, to, Tariff, destination name)."""

    __slots__ = ("deck", "_index", "_lengths", "rows")

    def __init__(self, deck, rows):
        self.deck = deck
        by = {}
        tariffs = {}  # one Tariff per distinct price (decks repeat a few prices many times)
        for prefix, dest, rate, initial, increment, fee, frm, to in rows:
            key = (rate, initial, increment, fee)
            tariff = tariffs.get(key)
            if tariff is None:
                tariff = tariffs[key] = Tariff(rate, initial, increment, fee)
            by.setdefault(prefix, []).append((frm or "", to, tariff, dest))
        self._index = {}
        for prefix, rs in by.items():
            if len(rs) == 1:
                self._index[prefix] = rs[0]  # a tuple: the prefix's only row
            else:
                rs.sort(key=lambda r: r[0])
                self._index[prefix] = [[r[0] for r in rs], rs]  # a list: effective_from list, rows
        self._lengths = sorted({len(p) for p in self._index}, reverse=True)
        self.rows = len(rows)

    @classmethod
    def load(cls, store, deck):
        cur = store.execute(
            "SELECT prefix, destination, rate_micros, initial_s, increment_s, connect_micros, effective_from, "
            "effective_to FROM rate_deck_rows WHERE deck_id = ?", (deck["id"],))
        return cls(deck, cur.fetchall())

    def lookup(self, digits, at_iso):
        """(prefix, row) of the longest prefix of ``digits`` with a row in force at
        ``at_iso`` (storage-form ISO UTC), or None. A row is (from, to, Tariff,
        destination name)."""
        n = len(digits)
        get = self._index.get
        for length in self._lengths:
            if length > n:
                continue
            key = digits[:length]
            e = get(key)
            if e is None:
                continue
            if e.__class__ is tuple:
                row = e
                if row[0] > at_iso:
                    continue
            else:
                i = bisect.bisect_right(e[0], at_iso) - 1
                if i < 0:
                    continue
                row = e[1][i]
            if row[1] is not None and at_iso >= row[1]:
                continue
            return key, row
        return None

    def tariff(self, digits, at_iso):
        """(prefix, destination name, Tariff) in force, or None."""
        hit = self.lookup(digits, at_iso)
        if hit is None:
            return None
        key, (_frm, _to, tariff, dest) = hit
        return key, dest, tariff


def load_index(store, account_id):
    """The PrefixIndex of the deck that rates an account, or None without a deck."""
    deck = deck_in_force(store, account_id)
    return PrefixIndex.load(store, deck) if deck is not None else None


def show_decks(store, account=None):
    """The decks in force: the default's and, with ``account``, the account's own
    (and which one rates its calls)."""
    out = {"default": store.query_one("SELECT id, name, rows, imported_at, actor FROM rate_decks "
                                      "WHERE account_id IS NULL AND replaced_at IS NULL ORDER BY id DESC")}
    if account is not None:
        acc = resolve_account(store, account)
        out["account"] = acc["name"]
        out["own"] = store.query_one("SELECT id, name, rows, imported_at, actor FROM rate_decks "
                                     "WHERE account_id = ? AND replaced_at IS NULL ORDER BY id DESC", (acc["id"],))
        out["rates_with"] = "own" if out["own"] else ("default" if out["default"] else None)
    if out["default"] is None and out.get("own") is None:
        raise NotFound("no rate deck yet: import one with: dialer rates import FILE --deck NAME")
    return out

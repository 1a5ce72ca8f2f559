"""Live billing: a call rated into the ledger when its CDR is written, and what the
dialer's balance guard reads (the account's balance, floor, prices and deck).

**Billing enabled** is ``billing.standing``'s notion: ``dialer bill enable`` stores
the account's standing row. Only such an account is billed live and guarded; an
account without one (made before billing existed, the demo's, the tests') is not
billed live and the guard lets its calls through; its CDRs are rated by ``dialer
bill run`` as before.

**Rating at CDR write** (:func:`rate_written_call`): in the transaction that writes
the CDR (the dialer's journal applier), the call is rated by the one rounding rule
(``billing.rating``) with the account's plan and deck in force, and charged as seq 1
(``UNIQUE (call_id, seq)``: a later ``dialer bill run`` finds it charged and changes
nothing). The charges go in a posting per account, month and deck (kind
``bill-run``, actor ``dialer``, reference ``live``). A call that cannot be rated (no
rate for its destination, a broken record) is left unrated, as a bill run leaves it,
with its reason; the CDR is never lost: the rating runs inside a savepoint, so even
an error in it undoes the rating only.

**What the guard reads** (:func:`guard_state`, on the store thread): per account,
whether billing is enabled, the ledger's balance (read incrementally: the ledger is
append-only and its ids grow in commit order, so the sum of the entries after the
last id read is added), the floor, the service tariff, the deck in force (its
PrefixIndex loaded once per deck) and the cheapest first slice of any destination,
and which of the calls the guard still counts as unposted have their CDR written.

Money is integer micro-units throughout (no float, no true division).
"""

import collections

from core.timeutil import from_iso

from .calls import rate_batch
from .decks import PrefixIndex, deck_in_force
from .ledger import _batch, charge
from .plans import plan_row, service_tariff, zone
from .rating import Tariff, cost_micros
from .standing import standing

LIVE_REFERENCE = "live"
LIVE_ACTOR = "dialer"
_INDEX_CACHE_SIZE = 8

_indexes = collections.OrderedDict()  # (database path, deck id) -> PrefixIndex: a deck's rows never change
_batches = {}  # (database path, account id, period, deck id) -> ledger_batches id
_cheapest = {}  # (database path, deck id, service Tariff, slice s) -> the cheapest first slice (micro-units)


def _key(store):
    return str(getattr(store, "path", id(store)))


def deck_index(store, deck):
    """The PrefixIndex of a deck row, loaded once per database and deck (a deck's rows
    are never changed: a new price list is a new deck)."""
    k = (_key(store), deck["id"])
    index = _indexes.get(k)
    if index is None:
        index = PrefixIndex.load(store, deck)
        _indexes[k] = index
        while len(_indexes) > _INDEX_CACHE_SIZE:
            _indexes.popitem(last=False)
    else:
        _indexes.move_to_end(k)
    return index


def billing_enabled(store, account_id):
    """Whether the account's billing is enabled (``billing.standing``: a standing row)."""
    return store.query_one("SELECT 1 FROM account_standing WHERE account_id = ?", (account_id,)) is not None


def _live_batch(store, account_id, period, deck_id, now):
    k = (_key(store), account_id, period, deck_id)
    batch = _batches.get(k)
    if batch is not None and store.query_one("SELECT 1 FROM ledger_batches WHERE id = ? AND account_id = ?",
                                             (batch, account_id)) is not None:
        return batch
    row = store.query_one("SELECT id FROM ledger_batches WHERE account_id = ? AND kind = 'bill-run' AND actor = ? "
                          "AND reference = ? AND period = ? AND deck_id IS ? ORDER BY id DESC",
                          (account_id, LIVE_ACTOR, LIVE_REFERENCE, period, deck_id))
    batch = row["id"] if row is not None else _batch(store, account_id, "bill-run", now, LIVE_ACTOR,
                                                      LIVE_REFERENCE, period, deck_id)
    _batches[k] = batch
    return batch


def rate_written_call(store, call_id, now):
    """Rate a call whose CDR is in ``cdrs`` into its account's ledger, in the caller's
    transaction (the journal's CDR applier). Returns None when the account is not
    billed live, else a dict: ``charged`` (micro-units charged now, 0 when free or
    already charged), ``refused`` (the reason it could not be rated, or None). Any
    error in the rating is contained in a savepoint (``error``): the CDR stays."""
    row = store.query_one("SELECT account_id, destination, started_at, answered_at, ended_at, duration_ms, "
                          "billable_ms FROM cdrs WHERE call_id = ?", (call_id,))
    if row is None or row["account_id"] is None:
        return None
    account_id = row["account_id"]
    if not billing_enabled(store, account_id):
        return None
    conn = store.conn
    conn.execute("SAVEPOINT live_rating")
    try:
        out = _rate(store, call_id, account_id, row, now)
    except Exception as e:  # noqa: BLE001 - the CDR must stay; the rating is undone and reported
        conn.execute("ROLLBACK TO live_rating")
        conn.execute("RELEASE live_rating")
        return {"charged": 0, "refused": f"rating failed: {type(e).__name__}: {e}", "error": True}
    conn.execute("RELEASE live_rating")
    return out


def _rate(store, call_id, account_id, row, now):
    plan = plan_row(store, account_id)
    deck = deck_in_force(store, account_id)
    index = deck_index(store, deck) if deck is not None else None
    record = (call_id, row["destination"], row["started_at"], row["answered_at"], row["ended_at"],
              row["duration_ms"], row["billable_ms"])
    rated, free, refused = rate_batch([record], service_tariff(plan), index)
    if refused:
        return {"charged": 0, "refused": refused[0][1]}
    if free:
        return {"charged": 0, "refused": None}
    started = rated[0][1]
    period = from_iso(started).astimezone(zone(plan)).strftime("%Y-%m")
    batch = _live_batch(store, account_id, period, deck["id"] if deck is not None else None, now)
    inserted, _ = charge(store, account_id, rated, batch)
    return {"charged": -rated[0][7] if inserted else 0, "refused": None}


# ------------------------------------------------------------------------- what the guard reads

def slice_cost(seconds, service, telecom):
    """Micro-units the first ``seconds`` of a call cost at most (both components, the
    rounding rule's cost of that many billable seconds: connect fee and initial block
    included)."""
    return cost_micros(seconds, service)[1] + cost_micros(seconds, telecom)[1]


def _cheapest_first_slice(store, deck_id, service, slice_s):
    k = (_key(store), deck_id, service, slice_s)
    if k in _cheapest:
        return _cheapest[k]
    rows = store.execute("SELECT DISTINCT rate_micros, initial_s, increment_s, connect_micros FROM rate_deck_rows "
                         "WHERE deck_id = ?", (deck_id,)).fetchall()
    costs = [slice_cost(slice_s, service, Tariff(r[0], r[1], r[2], r[3])) for r in rows]
    if len(_cheapest) > 64:
        _cheapest.clear()
    out = _cheapest[k] = min(costs) if costs else None
    return out


def guard_state(store, accounts, slice_s, unposted=(), now=None):
    """On the store thread: what the balance guard needs at ``now``. ``accounts``: {account id:
    (last ledger entry id read, balance up to it, deck id loaded or None)}; returns
    {account id: dict} with ``enabled``, ``last_id``, ``balance`` (micro-units),
    ``floor``, ``service`` (Tariff), ``may_dial`` and ``standing`` (the account's
    standing, ``billing.standing``: a pending, suspended or closed account starts no
    call), ``deck`` (id or None), ``index`` (a PrefixIndex
    when the deck changed, else None), ``cheapest`` (the cheapest first slice, micro-
    units, None without a deck), and ``written`` (the call ids of ``unposted`` whose
    CDR is written: the balance read here holds their charge)."""
    out = {}
    for account_id, (last_id, balance, deck_loaded) in accounts.items():
        st = standing(store, account_id, now)
        if not st.enabled:
            out[account_id] = {"enabled": False}
            continue
        plan = plan_row(store, account_id)
        s, top = store.execute("SELECT SUM(amount_micros), MAX(id) FROM ledger_entries WHERE account_id = ? "
                               "AND id > ?", (account_id, last_id or 0)).fetchone()
        service = service_tariff(plan)
        deck = deck_in_force(store, account_id)
        entry = {"enabled": True, "last_id": top if top is not None else (last_id or 0),
                 "balance": (balance if last_id else 0) + (s or 0), "floor": plan["floor_micros"],
                 "service": service, "may_dial": st.may_dial,
                 "standing": st.state + (f": {st.reason}" if st.reason else ""),
                 "deck": deck["id"] if deck is not None else None, "index": None,
                 "deck_name": deck["name"] if deck is not None else None, "cheapest": None}
        if deck is not None:
            if deck["id"] != deck_loaded:
                entry["index"] = deck_index(store, deck)
            entry["cheapest"] = _cheapest_first_slice(store, deck["id"], service, slice_s)
        out[account_id] = entry
    ids = list(unposted)
    written = set()
    for i in range(0, len(ids), 500):
        part = ids[i:i + 500]
        written.update(r[0] for r in store.execute(
            f"SELECT call_id FROM cdrs WHERE call_id IN ({', '.join('?' * len(part))})", part).fetchall())
    return {"accounts": out, "written": written}

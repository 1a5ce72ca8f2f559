"""The high-cost destination report of a billing cycle (``dialer report high-cost``).

The terms of service: calls routed to high-cost destinations are monitored and
reported each billing cycle. A destination is **high-cost** when the telecom rate
per minute of the deck row that rated the call is **over** the threshold (strictly
above; default ``DEFAULT_THRESHOLD``, $0.10 a minute). For each campaign of the
account, the report gives the calls, minutes and telecom cost of every high-cost
destination, and their **share** of the campaign's telecom cost (and of the
account's). A campaign is **flagged** when its high-cost share is above the limit
(strictly; default ``DEFAULT_LIMIT``, 10 %), or, with ``cost_limit``, when its
high-cost telecom cost is above that amount; the account as a whole likewise.

What is counted: the account's **ledger** (``billing.ledger``), so the report is the
bill: each call's current charge (its last entry, a charge: a rerated call counts
with its new figures) whose call started in the period, a half-open month in the
account's time zone (``billing.plans.month_bounds``, the bill run's period). The
rate of each call is the row, in force at the call's start, of the prefix that
rated it in the deck its posting names. Calls of the period not rated yet (no bill
run since they ended) are not in it: they are counted (``unrated_calls``) so a
report before the bill run says so.

Minutes are charged telecom seconds / 60, rounded up to 2 places for display; money
is Decimal from integer micro-units; shares are Decimal fractions rounded half-up to
4 places (0.1234 = 12.34 %) for display, while the flags compare exact integers.
Only the account's own rows are read (every query is bound to its id).
"""

from decimal import Decimal

from core.tenancy import resolve_account
from core.timeutil import to_iso

from .decks import PrefixIndex
from .money import from_micros, micros, parse_amount
from .plans import month_bounds, plan_row

DEFAULT_THRESHOLD = Decimal("0.10")  # per minute: a destination above it is high-cost
DEFAULT_LIMIT = Decimal("0.10")      # a campaign whose high-cost share of telecom is above it is flagged
SHARE_PLACES = 4

# each call's current charge (its last entry is a charge), of calls that started in [lo, hi)
_CHARGES = (
    "SELECT l.call_id, l.at, l.prefix, l.telecom_seconds, l.telecom_micros, b.deck_id, c.campaign_id "
    "FROM ledger_entries l JOIN ledger_batches b ON b.id = l.batch_id AND b.account_id = l.account_id "
    "LEFT JOIN cdrs c ON c.call_id = l.call_id AND c.account_id = l.account_id "
    "WHERE l.account_id = ? AND l.kind = 'charge' AND l.at >= ? AND l.at < ? "
    "AND NOT EXISTS (SELECT 1 FROM ledger_entries n WHERE n.call_id = l.call_id AND n.seq > l.seq)")
_UNRATED = (
    "SELECT COUNT(*) FROM cdrs c WHERE c.account_id = ? AND c.started_at >= ? AND c.started_at < ? "
    "AND c.billable_ms > 0 AND NOT EXISTS (SELECT 1 FROM ledger_entries l WHERE l.call_id = c.call_id)")


def minutes(seconds):
    """Whole seconds as minutes, a Decimal rounded up to 2 places (no float, no /)."""
    return Decimal(-(-seconds * 100 // 60)).scaleb(-2)


def share(part, whole):
    """``part / whole`` (integers) as a Decimal rounded half-up to 4 places; None
    when ``whole`` is 0."""
    if not whole:
        return None
    scale = 10 ** SHARE_PLACES
    return Decimal((2 * part * scale + whole) // (2 * whole)).scaleb(-SHARE_PLACES)


def _over(part, whole, limit):
    """Whether part / whole > limit, exactly (integers and a Decimal, no division)."""
    return whole > 0 and Decimal(part) > limit * Decimal(whole)


def parse_share(text, what="--limit"):
    """A share: a decimal fraction from 0 to 1 (``0.05``) or a percentage (``5%``)."""
    raw = str(text).strip()
    pct = raw.endswith("%")
    value = parse_amount(raw[:-1] if pct else raw, what, maximum=Decimal(100) if pct else Decimal(1))
    return value.scaleb(-2) if pct else value


def _bucket():
    return {"calls": 0, "seconds": 0, "telecom": 0}


def _add(b, seconds, cost):
    b["calls"] += 1
    b["seconds"] += seconds
    b["telecom"] += cost


def _shown(b):
    return {"calls": b["calls"], "minutes": minutes(b["seconds"]), "telecom": from_micros(b["telecom"])}


def high_cost(store, period, account=None, threshold=None, limit=None, cost_limit=None):
    """The high-cost report of ``account`` for ``period`` (YYYY-MM in its time zone).
    ``threshold``: rate per minute above which a destination is high-cost (default
    $0.10); ``limit``: the high-cost share of telecom cost above which a campaign is
    flagged (default 0.10, a fraction or ``N%``); ``cost_limit``: optionally, a
    high-cost telecom cost above which it is flagged too."""
    acc = resolve_account(store, account)
    period = str(period).strip()
    tz = plan_row(store, acc["id"])["time_zone"]
    start, end = month_bounds(period, tz)
    thr = DEFAULT_THRESHOLD if threshold is None else parse_amount(threshold, "--threshold (rate per minute)")
    lim = DEFAULT_LIMIT if limit is None else parse_share(limit)
    cost_lim = None if cost_limit is None else parse_amount(cost_limit, "--cost-limit")
    thr_micros = micros(thr)
    cost_lim_micros = micros(cost_lim) if cost_lim is not None else None
    lo, hi = to_iso(start), to_iso(end)

    decks = {}  # deck id -> PrefixIndex (a period has one or a few)
    account_all = _bucket()
    account_high = _bucket()
    camps = {}  # campaign id -> {"all": bucket, "high": bucket, "dest": {(prefix, rate, name): bucket}}
    unknown = 0
    cur = store.execute(_CHARGES, (acc["id"], lo, hi))
    while True:
        rows = cur.fetchmany(5000)
        if not rows:
            break
        for _call, at, prefix, seconds, cost, deck_id, campaign_id in rows:
            seconds, cost = seconds or 0, cost or 0
            camp = camps.get(campaign_id)
            if camp is None:
                camp = camps[campaign_id] = {"all": _bucket(), "high": _bucket(), "dest": {}}
            _add(account_all, seconds, cost)
            _add(camp["all"], seconds, cost)
            hit = None
            if deck_id is not None and prefix:
                index = decks.get(deck_id)
                if index is None:
                    deck = store.query_one("SELECT * FROM rate_decks WHERE id = ? AND (account_id IS NULL OR "
                                           "account_id = ?)", (deck_id, acc["id"]))
                    index = decks[deck_id] = PrefixIndex.load(store, deck) if deck is not None else False
                if index:
                    hit = index.lookup(prefix, at)
            if hit is None:
                unknown += 1
                continue
            key_prefix, (_frm, _to, tariff, name) = hit
            if tariff.rate_micros <= thr_micros:
                continue
            _add(account_high, seconds, cost)
            _add(camp["high"], seconds, cost)
            d = camp["dest"].get((key_prefix, tariff.rate_micros, name))
            if d is None:
                d = camp["dest"][(key_prefix, tariff.rate_micros, name)] = _bucket()
            _add(d, seconds, cost)
    unrated = store.execute(_UNRATED, (acc["id"], lo, hi)).fetchone()[0]
    names = {r["id"]: r["name"] for r in store.query("SELECT id, name FROM campaigns WHERE account_id = ?",
                                                      (acc["id"],))}

    def flagged(high, whole):
        return _over(high, whole, lim) or (cost_lim_micros is not None and high > cost_lim_micros)

    campaigns = []
    for cid, c in camps.items():
        whole, high = c["all"]["telecom"], c["high"]["telecom"]
        dests = [{"prefix": p, "destination": name, "rate": from_micros(rate), **_shown(b),
                  "share_of_campaign": share(b["telecom"], whole),
                  "share_of_account": share(b["telecom"], account_all["telecom"])}
                 for (p, rate, name), b in c["dest"].items()]
        dests.sort(key=lambda d: (-d["telecom"], d["prefix"], d["rate"]))
        campaigns.append({
            "campaign": names.get(cid) if cid is not None else None, "campaign_id": cid,
            "all": _shown(c["all"]), "high_cost": _shown(c["high"]),
            "share": share(high, whole), "share_of_account": share(high, account_all["telecom"]),
            "flagged": flagged(high, whole), "destinations": dests,
        })
    campaigns.sort(key=lambda c: (not c["flagged"], -c["high_cost"]["telecom"], c["campaign"] or ""))
    return {
        "account": acc["name"], "period": period, "time_zone": tz, "from": lo, "to": hi,
        "threshold": thr, "limit": lim, "cost_limit": cost_lim,
        "all": _shown(account_all), "high_cost": _shown(account_high),
        "share": share(account_high["telecom"], account_all["telecom"]),
        "flagged": flagged(account_high["telecom"], account_all["telecom"]),
        "campaigns": campaigns, "unrated_calls": unrated, "unknown_rate_calls": unknown,
    }


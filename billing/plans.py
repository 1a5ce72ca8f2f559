"""An account's billing plan: its service price and increment scheme, the time
zone its billing periods are cut in, and its balance floor.

Defaults (the product's terms of service): service minutes at $0.0188 a minute,
charged per started minute (60/60), no connect fee, no minimum or maximum cost,
periods in UTC, a balance floor of $100. An account without a row has the
defaults; its first billing write (a bill run, a top-up, a floor or plan change)
stores them (``billing_accounts``), and every change is audited.
"""

import datetime as _dt
from decimal import Decimal

import pytz

from core import audit
from core.errors import InputError
from core.tenancy import resolve_account
from core.timeutil import shown, to_iso

from .money import from_micros, micros, parse_amount
from .rating import MAX_INCREMENT_S, Tariff

DEFAULT_PRICE = Decimal("0.0188")     # per minute
DEFAULT_INITIAL_S = 60
DEFAULT_INCREMENT_S = 60
DEFAULT_FLOOR = Decimal("100")
DEFAULT_TIME_ZONE = "UTC"
MAX_PRICE = Decimal("1000")           # per minute, or per call for a fee: more is a typo

_COLUMNS = ("price_micros", "initial_s", "increment_s", "connect_micros", "min_micros", "max_micros",
            "floor_micros", "time_zone")


def _defaults():
    return {"price_micros": micros(DEFAULT_PRICE), "initial_s": DEFAULT_INITIAL_S,
            "increment_s": DEFAULT_INCREMENT_S, "connect_micros": 0, "min_micros": None, "max_micros": None,
            "floor_micros": micros(DEFAULT_FLOOR), "time_zone": DEFAULT_TIME_ZONE}


def plan_row(store, account_id):
    """The stored plan of an account id, or the defaults (``stored`` False)."""
    row = store.query_one(f"SELECT {', '.join(_COLUMNS)} FROM billing_accounts WHERE account_id = ?",
                          (account_id,))
    out = dict(row) if row is not None else _defaults()
    out["stored"] = row is not None
    return out


def ensure_plan(store, account_id, now):
    """Store the defaults for an account that has no plan yet (inside the caller's
    transaction); an existing plan is left as it is."""
    d = _defaults()
    store.execute(
        f"INSERT INTO billing_accounts (account_id, {', '.join(_COLUMNS)}, updated_at) "
        f"VALUES (?, {', '.join('?' * len(_COLUMNS))}, ?) ON CONFLICT (account_id) DO NOTHING",
        (account_id, *(d[c] for c in _COLUMNS), to_iso(now)))


def service_tariff(plan):
    """The account's service-minute price as a rating Tariff."""
    return Tariff(plan["price_micros"], plan["initial_s"], plan["increment_s"], plan["connect_micros"],
                  plan["min_micros"], plan["max_micros"])


def zone(plan):
    return pytz.timezone(plan["time_zone"])


def describe(account, plan):
    """A plan for output: amounts as Decimal, the scheme as ``initial/increment``."""
    return {
        "account": account["name"],
        "price_per_minute": from_micros(plan["price_micros"]),
        "increment": f"{plan['initial_s']}/{plan['increment_s']}",
        "connect_fee": from_micros(plan["connect_micros"]),
        "min_cost": from_micros(plan["min_micros"]),
        "max_cost": from_micros(plan["max_micros"]),
        "floor": from_micros(plan["floor_micros"]),
        "time_zone": plan["time_zone"],
        "stored": plan["stored"],
    }


def show_plan(store, account=None):
    acc = resolve_account(store, account)
    return describe(acc, plan_row(store, acc["id"]))


def parse_scheme(text, what="increment"):
    """``"30/6"`` -> (30, 6): initial block 0..3600 s, increment 1..3600 s."""
    parts = str(text).strip().split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise InputError(f"{what} {shown(text)} is not INITIAL/INCREMENT in seconds (e.g. 60/60, 30/6, 1/1)")
    initial, increment = (int(p) for p in parts)
    if not 1 <= increment <= MAX_INCREMENT_S or initial > MAX_INCREMENT_S:
        raise InputError(f"{what} {shown(text)}: the initial block must be 0 to {MAX_INCREMENT_S} s and the "
                         f"increment 1 to {MAX_INCREMENT_S} s")
    return initial, increment


def parse_time_zone(text):
    name = str(text).strip()
    if name not in pytz.all_timezones_set:
        raise InputError(f"time zone {shown(text)} is not an IANA time zone (e.g. America/New_York, UTC)")
    return name


_UNSET = object()
_SHOWN = {"price_micros": "price_per_minute", "initial_s": "increment", "increment_s": "increment",
          "connect_micros": "connect_fee", "min_micros": "min_cost", "max_micros": "max_cost",
          "floor_micros": "floor", "time_zone": "time_zone"}


def set_plan(store, account, now, actor, price=None, increment=None, connect_fee=None, min_cost=_UNSET,
             max_cost=_UNSET, time_zone=None, floor=None, reason=""):
    """Change an account's plan (only what is given; ``min_cost``/``max_cost`` None
    or "" remove a limit). Checked whole before anything is stored; audited.
    Returns the plan and the fields changed."""
    acc = resolve_account(store, account)
    new = {}
    if price is not None:
        new["price_micros"] = micros(parse_amount(price, "price per minute", maximum=MAX_PRICE))
    if increment is not None:
        new["initial_s"], new["increment_s"] = parse_scheme(increment)
    if connect_fee is not None:
        new["connect_micros"] = micros(parse_amount(connect_fee, "connect fee", maximum=MAX_PRICE))
    for key, value, what in (("min_micros", min_cost, "minimum cost"), ("max_micros", max_cost, "maximum cost")):
        if value is _UNSET:
            continue
        new[key] = None if value is None or str(value).strip() == "" else micros(
            parse_amount(value, what, maximum=MAX_PRICE))
    if time_zone is not None:
        new["time_zone"] = parse_time_zone(time_zone)
    if floor is not None:
        new["floor_micros"] = micros(parse_amount(floor, "balance floor"))
    with store.transaction():
        ensure_plan(store, acc["id"], now)
        old = plan_row(store, acc["id"])
        merged = {**old, **new}
        if merged["min_micros"] is not None and merged["max_micros"] is not None \
                and merged["min_micros"] > merged["max_micros"]:
            raise InputError(f"the minimum cost ({from_micros(merged['min_micros'])}) is above the maximum cost "
                             f"({from_micros(merged['max_micros'])}); nothing was changed")
        changed = {k: v for k, v in new.items() if old[k] != v}
        if changed:
            store.execute(f"UPDATE billing_accounts SET {', '.join(f'{k} = ?' for k in changed)}, updated_at = ? "
                          f"WHERE account_id = ?", (*changed.values(), to_iso(now), acc["id"]))
            audit.append(store, now, actor, "billing.plan", f"account:{acc['id']}", reason,
                         {k: {"old": old[k], "new": v} for k, v in changed.items()}, account_id=acc["id"])
        plan = plan_row(store, acc["id"])
    return {**describe(acc, plan), "changed": sorted({_SHOWN[k] for k in changed})}


def month_bounds(period, tz_name):
    """The half-open UTC interval [start, end) of month ``YYYY-MM`` in the time zone
    ``tz_name``: from local midnight on the 1st to local midnight on the 1st of the
    next month (so no instant is in two periods, none in neither)."""
    text = str(period).strip()
    try:
        first = _dt.datetime.strptime(text, "%Y-%m")
    except ValueError:
        first = None
    if first is None or len(text) != 7 or not 2000 <= first.year <= 2099:
        raise InputError(f"period {shown(period)} is not a month (YYYY-MM, 2000-01 to 2099-12)")
    nxt = first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
    tz = pytz.timezone(tz_name)
    return (tz.localize(first).astimezone(pytz.utc), tz.localize(nxt).astimezone(pytz.utc))

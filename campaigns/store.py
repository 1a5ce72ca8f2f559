"""Accounts, their own numbers (DIDs) and campaigns, as far as the rules need them.

The full campaign life cycle (lists, hopper, dial modes) builds on these tables.
"""

import json

from dialer.errors import InputError, NotFound
from dialer.timeutil import to_iso
from rules import audit
from rules.numbers import normalise
from rules.ruleset import DAYS, compile_windows, _Errors, RuleSetError


def create_account(store, name, now, actor):
    name = (name or "").strip()
    if not name:
        raise InputError("account name is empty")
    with store.transaction():
        if store.query_one("SELECT id FROM accounts WHERE name = ?", (name,)):
            raise InputError(f"account {name!r} already exists")
        cur = store.execute("INSERT INTO accounts (name, created_at) VALUES (?, ?)", (name, to_iso(now)))
        audit.append(store, now, actor, "account.create", f"account:{name}", "", {"name": name})
    return {"id": cur.lastrowid, "name": name}


def get_account(store, name):
    row = store.query_one("SELECT * FROM accounts WHERE name = ?", (name,))
    if row is None:
        raise NotFound(f"no account named {name!r} (create it with: dialer account create NAME)")
    return row


def add_number(store, account, number, now, actor, region="US", label=None):
    acc = get_account(store, account)
    f = normalise(number, region)
    if f.e164 is None:
        raise InputError(f"{number!r} is not a valid phone number: {f.error}")
    with store.transaction():
        if store.query_one("SELECT id FROM account_numbers WHERE account_id = ? AND number = ?", (acc["id"], f.e164)):
            raise InputError(f"{f.e164} is already a number of account {account!r}")
        store.execute(
            "INSERT INTO account_numbers (account_id, number, label, created_at) VALUES (?, ?, ?, ?)",
            (acc["id"], f.e164, label, to_iso(now)),
        )
        audit.append(store, now, actor, "number.add", f"account:{account}", "", {"number": f.e164})
    return {"account": account, "number": f.e164}


def account_numbers(store, account_id):
    return frozenset(r["number"] for r in store.query(
        "SELECT number FROM account_numbers WHERE account_id = ?", (account_id,)))


def parse_hours(text):
    """'mon-fri=09:00-17:00,18:00-20:00;sat=10:00-14:00;sun=' -> windows mapping."""
    if text is None or not str(text).strip():
        return None
    spec = {}
    for part in str(text).split(";"):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise InputError(f"campaign hours {part!r}: write DAYS=HH:MM-HH:MM[,HH:MM-HH:MM] (e.g. mon-fri=09:00-17:00)")
        days, wins = part.split("=", 1)
        spec[days.strip()] = [w.strip() for w in wins.split(",") if w.strip()]
    errors = _Errors({})
    compile_windows(spec, errors, ("hours",))
    if errors.items:
        raise InputError("campaign hours not accepted: " + "; ".join(errors.items))
    return spec


def create_campaign(store, name, account, now, actor, region="US", caller_id=None, hours=None):
    name = (name or "").strip()
    if not name:
        raise InputError("campaign name is empty")
    acc = get_account(store, account)
    spec = parse_hours(hours) if isinstance(hours, str) or hours is None else hours
    cid = None
    if caller_id:
        f = normalise(caller_id, region)
        if f.e164 is None:
            raise InputError(f"caller ID {caller_id!r} is not a valid phone number: {f.error}")
        cid = f.e164
    with store.transaction():
        if store.query_one("SELECT id FROM campaigns WHERE name = ?", (name,)):
            raise InputError(f"campaign {name!r} already exists")
        cur = store.execute(
            "INSERT INTO campaigns (account_id, name, region, caller_id, hours, state, created_at) "
            "VALUES (?, ?, ?, ?, ?, 'draft', ?)",
            (acc["id"], name, region.upper(), cid, json.dumps(spec) if spec else None, to_iso(now)),
        )
        audit.append(store, now, actor, "campaign.create", f"campaign:{name}", "",
                     {"account": account, "region": region, "caller_id": cid, "hours": spec})
    return get_campaign(store, name)


def get_campaign(store, name):
    row = store.query_one("SELECT * FROM campaigns WHERE name = ?", (name,))
    if row is None:
        raise NotFound(f"no campaign named {name!r}")
    row["hours"] = json.loads(row["hours"]) if row["hours"] else None
    return row

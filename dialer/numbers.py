"""An account's own numbers (its caller IDs) as its owner manages them: each with what
uses it (campaigns, trunks) and, for a closed account, its port-out hold; add; remove.

A number is removed only while nothing needs it: refused (nothing changed, one message
naming what holds it) while a campaign that is not finished uses it as its caller ID,
while a trunk presents it as its caller ID, or while it is kept for a port-out after
the account was closed (``billing.standing``: ``dialer number port-out``). The calls
already made keep the number they showed (their records hold it as text).

``dialer number list|add|remove`` and the owner's numbers page call these functions.
"""

from core import audit
from core.errors import InputError, NotFound
from core.tenancy import resolve_account
from core.timeutil import to_iso
from rules.numbers import normalise

LABEL_MAX = 80


def _label(label):
    text = " ".join(str(label or "").split())
    if len(text) > LABEL_MAX:
        raise InputError(f"a number's label has at most {LABEL_MAX} characters")
    return text or None


def _e164(number, region="US"):
    f = normalise(str(number or ""), region or "US")
    if f.e164 is None:
        raise InputError(f"{str(number or '')!r} is not a valid phone number: {f.error}")
    return f.e164


def _uses(store, account_id, number):
    campaigns = [r["name"] for r in store.query(
        "SELECT name FROM campaigns WHERE account_id = ? AND caller_id = ? AND state != 'finished' ORDER BY name",
        (account_id, number))]
    trunks = [r["name"] for r in store.query(
        "SELECT name FROM trunks WHERE account_id = ? AND caller_id = ? ORDER BY name", (account_id, number))]
    return campaigns, trunks


def _hold(store, account_id, number):
    """The port-out hold of a number still kept (not ported, not released), or None."""
    return store.query_one("SELECT closed_at, keep_until FROM number_holds WHERE account_id = ? AND number = ? "
                           "AND ported_at IS NULL AND released_at IS NULL", (account_id, number))


def numbers_view(store, account=None):
    """The account's numbers, each with the campaigns (not finished) and trunks using it
    as their caller ID and its port-out hold (or None); then the numbers of the account
    held after closing (ported, released or still kept)."""
    acc = resolve_account(store, account)
    rows = store.query("SELECT number, label, created_at FROM account_numbers WHERE account_id = ? ORDER BY number",
                       (acc["id"],))
    for r in rows:
        r["campaigns"], r["trunks"] = _uses(store, acc["id"], r["number"])
        r["hold"] = _hold(store, acc["id"], r["number"])
    holds = store.query("SELECT number, closed_at, keep_until, ported_at, ported_to, released_at FROM number_holds "
                        "WHERE account_id = ? ORDER BY number", (acc["id"],))
    return {"account": acc["name"], "numbers": rows, "holds": holds}


def add_number(store, account, number, now, actor, region="US", label=None):
    """Add a number (a DID) to the account, with an optional label (``campaigns.store.add_number``)."""
    from campaigns.store import add_number as _add
    return _add(store, account, number, now, actor, region=region, label=_label(label))


def remove_number(store, account, number, now, actor, region="US"):
    """Remove a number from the account; refused while something needs it (see the
    module). Audited."""
    acc = resolve_account(store, account)
    e164 = _e164(number, region)
    with store.transaction():
        row = store.query_one("SELECT id FROM account_numbers WHERE account_id = ? AND number = ?", (acc["id"], e164))
        if row is None:
            raise NotFound(f"{e164} is not a number of account {acc['name']!r}; nothing was changed")
        campaigns, trunks = _uses(store, acc["id"], e164)
        why = []
        if campaigns:
            why.append(f"campaign(s) {', '.join(campaigns)} call with it as their caller ID (give them another, "
                       f"or finish them, first)")
        if trunks:
            why.append(f"trunk(s) {', '.join(trunks)} present it as their caller ID")
        hold = _hold(store, acc["id"], e164)
        if hold is not None:
            why.append(f"it is kept until {hold['keep_until'][:10]} for a port-out after the account was closed "
                       f"(dialer number port-out)")
        if why:
            raise InputError(f"{e164} cannot be removed: " + "; ".join(why) + "; nothing was changed")
        store.execute("DELETE FROM account_numbers WHERE id = ?", (row["id"],))
        audit.append(store, now, actor, "number.remove", f"account:{acc['name']}", "", {"number": e164},
                     account_id=acc["id"])
    return {"account": acc["name"], "number": e164, "removed": True, "at": to_iso(now)}

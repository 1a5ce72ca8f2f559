"""What-if rating of a CDR file (``dialer rate FILE``): nothing is stored.

The file's columns are ``billing.calls``'s (call_id, destination, started_at,
answered_at, ended_at, optionally account). Each row is rated as a bill run would
rate it (the account's plan and the deck in force for it) or refused with its line
and reason; a call id twice in the file is refused the second time.
"""

import os

from core.errors import InputError, NotFound
from core.tenancy import get_account, resolve_account
from core.timeutil import shown

from .calls import check_csv_row, rate_batch, read_cdr_csv, reason_kind
from .decks import load_index
from .money import from_micros
from .plans import plan_row, service_tariff


def rate_file(store, path, account=None):
    """Rate the CDRs of a CSV file for ``account`` (rows naming another account in an
    ``account`` column are rated for that one). Returns one result per rated row,
    the refused rows with their line and reason, and totals (Decimal)."""
    default = resolve_account(store, account)
    accounts = {default["name"]: default}
    pricing = {}
    seen = {}
    refused = []
    groups = {}  # account id -> [(line, record)]
    for line, fields, problem in read_cdr_csv(path):
        if problem is not None:
            refused.append({"line": line, "call_id": None, "reason": problem})
            continue
        call_id = fields["call_id"] or None
        name = fields.get("account") or default["name"]
        if name not in accounts:
            try:
                accounts[name] = get_account(store, name)
            except NotFound:
                accounts[name] = None
        acc = accounts[name]
        if acc is None:
            refused.append({"line": line, "call_id": call_id, "reason": f"unknown account {shown(name)}"})
            continue
        try:
            record = check_csv_row(fields)
        except InputError as e:
            refused.append({"line": line, "call_id": call_id, "reason": str(e)})
            continue
        if record[0] in seen:
            refused.append({"line": line, "call_id": call_id, "reason": f"call_id {shown(record[0])} is also on "
                                                                         f"line {seen[record[0]]}"})
            continue
        seen[record[0]] = line
        groups.setdefault(acc["id"], []).append((line, acc, record))
    results = []
    totals = {"service": 0, "telecom": 0}
    decks = {}
    for account_id, items in groups.items():
        if account_id not in pricing:
            plan = plan_row(store, account_id)
            pricing[account_id] = (service_tariff(plan), load_index(store, account_id))
        service, index = pricing[account_id]
        acc_name = items[0][1]["name"]
        decks[acc_name] = ({"deck_id": index.deck["id"], "deck": index.deck["name"],
                            "scope": "own" if index.deck["account_id"] is not None else "default"}
                           if index is not None else None)
        by_id = {rec[0]: line for line, _acc, rec in items}
        rated, free, bad = rate_batch([rec for _l, _a, rec in items], service, index)
        for call_id, started, billsec, s_sec, s_cost, t_sec, t_cost, _amount, prefix in rated:
            dest = index.lookup(prefix, started)[1][3]  # the destination's name, for the report
            totals["service"] += s_cost
            totals["telecom"] += t_cost
            results.append({"line": by_id[call_id], "call_id": call_id, "account": acc_name, "started_at": started,
                            "billsec": billsec, "service_seconds": s_sec, "service": from_micros(s_cost),
                            "telecom_seconds": t_sec, "telecom": from_micros(t_cost), "prefix": prefix,
                            "destination": dest, "total": from_micros(s_cost + t_cost), "free": False})
        for call_id in free:
            results.append({"line": by_id[call_id], "call_id": call_id, "account": acc_name, "billsec": 0,
                            "service_seconds": 0, "service": from_micros(0), "telecom_seconds": 0,
                            "telecom": from_micros(0), "prefix": None, "destination": None,
                            "total": from_micros(0), "free": True})
        for call_id, reason in bad:
            refused.append({"line": by_id[call_id], "call_id": call_id, "reason": reason})
    results.sort(key=lambda r: r["line"])
    refused.sort(key=lambda r: r["line"])
    by_reason = {}
    for r in refused:
        k = reason_kind(r["reason"])
        by_reason[k] = by_reason.get(k, 0) + 1
    return {
        "account": default["name"], "file": os.fspath(path), "stored": False, "decks": decks,
        "cdrs": results, "refused": refused,
        "totals": {"rated": sum(1 for r in results if not r["free"]), "free": sum(1 for r in results if r["free"]),
                   "refused": len(refused), "refused_by_reason": by_reason,
                   "service": from_micros(totals["service"]), "telecom": from_micros(totals["telecom"]),
                   "total": from_micros(totals["service"] + totals["telecom"])},
    }

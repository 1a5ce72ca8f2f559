"""An account's billing at a glance, for its owner (read only): the balance and its
floor (``ledger.balance``), the standing (``standing.show``: active, notice, suspended,
pending, closed, with its reason and history), the plan's time zone, and the invoices
with their lines, newest first (``invoices.list_invoices`` and ``invoices.show``: drafts
and issued ones alike). ``dialer balance overview`` and the owner's billing page call
:func:`overview`; nothing here writes.
"""

from core.tenancy import resolve_account

from . import invoices, ledger, standing
from .plans import plan_row

INVOICES_SHOWN = 12


def overview(store, account, now, last=INVOICES_SHOWN):
    """Balance, floor, standing and the ``last`` invoices (newest first) with their
    lines; ``older`` counts the invoices not shown. Amounts are Decimal."""
    acc = resolve_account(store, account)
    bal = ledger.balance(store, acc)
    st = standing.show(store, acc, now)
    listed = invoices.list_invoices(store, acc)["invoices"]
    newest = list(reversed(listed))[:max(0, int(last))]
    shown = [invoices.show(store, acc, inv["period"]) for inv in newest]
    plan = plan_row(store, acc["id"])
    return {"account": acc["name"], "balance": bal["balance"], "floor": bal["floor"],
            "above_floor": bal["above_floor"], "below_floor": bal["below_floor"], "by_kind": bal["by_kind"],
            "time_zone": plan["time_zone"], "standing": st, "invoices": shown, "older": len(listed) - len(shown)}


def overview_text(out):
    """The overview for a terminal."""
    from .money import fmt
    st = out["standing"]
    lines = [f"{out['account']}: balance {fmt(out['balance'])}, floor {fmt(out['floor'])}"
             + (" (BELOW the floor)" if out["below_floor"] else ""),
             f"  standing: {st['state']}" + (f" ({st['reason']})" if st["reason"] else "")
             + (f" since {st['since']}" if st["since"] else "")
             + (f"; notice until {st['notice_until']}" if st["notice_until"] else "")
             + ("" if st["billing_enabled"] else "; billing not enabled")]
    if st["overdue"]:
        lines.append(f"  overdue: {fmt(st['overdue'])} (invoice {st['overdue_invoice']})")
    for inv in out["invoices"]:
        lines.append(f"  invoice {inv['invoice']} {inv['period']} {inv['status'].upper()}: "
                     f"{len(inv['lines'])} line(s), charges {fmt(inv['charges'])}, amount due {fmt(inv['amount_due'])}")
    if out["older"]:
        lines.append(f"  ({out['older']} older invoice(s) not shown: dialer invoice show --period YYYY-MM)")
    return "\n".join(lines)

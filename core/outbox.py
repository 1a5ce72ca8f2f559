"""The webhooks' transactional outbox: an event is stored in the same transaction as
the change it reports (a call's record, a lead's outcome, an opt-out), so it exists
exactly when the change was committed: a rollback leaves neither.

:func:`emit` is called by the writers inside their own transaction (``dialer.cdr.
write_cdr``, ``campaigns.leads.record_outcome``): it looks up the account's active
subscriptions to that event type (one indexed read; an account without webhooks pays
that and nothing else) and, only when there are some, stores the event once
(``webhook_events``: a stable id, its type, its JSON payload, when) and one delivery
per subscription (``webhook_deliveries``, due at once). The delivery worker
(``dialer.webhooks``) sends them.

The tables are made by migration ``m018_webhooks``. This module lives in ``core`` so
that every layer that writes an event can import it.
"""

import json
import secrets

from .timeutil import to_iso

EVENT_TYPES = ("call.ended", "call.disposition", "lead.opted_out")
TEST_EVENT = "webhook.test"  # sent by an owner to one subscription ("send a test event")


def new_event_id():
    """A stable, unguessable event id (``Webhook-Id``): receivers dedupe on it."""
    return "evt_" + secrets.token_hex(16)


def subscribed(store, account_id, event_type):
    """Ids of the account's active subscriptions to ``event_type`` (the hot path's
    one read: ``webhook_subscriptions`` is indexed by account)."""
    if account_id is None:
        return []
    # the event types are matched here, not with LIKE: SQLite prepares a LIKE with a bound
    # pattern again at each run (45 us against 5 us for this read, measured)
    cur = store.execute("SELECT id, events FROM webhook_subscriptions WHERE account_id = ? AND active = 1 "
                        "AND removed_at IS NULL", (int(account_id),))
    key = f",{event_type},"
    return [r[0] for r in cur.fetchall() if key in r[1]]


def emit(store, account_id, event_type, now, payload):
    """Store an event for the account's subscribers to ``event_type``, inside the
    caller's transaction. ``payload``: a dict, or a function returning one (built only
    when someone subscribed). Returns the event id, or None when nobody subscribed."""
    subs = subscribed(store, account_id, event_type)
    if not subs:
        return None
    data = payload() if callable(payload) else payload
    return store_event(store, account_id, event_type, now, data, subs)


def store_event(store, account_id, event_type, now, data, subscription_ids, event_id=None):
    """The event row and one due delivery per subscription (inside the caller's
    transaction, or its own). Returns the event id."""
    event_id = event_id or new_event_id()
    at = to_iso(now)
    with store.transaction():
        cur = store.execute("INSERT INTO webhook_events (event_id, account_id, type, payload, created_at) "
                            "VALUES (?, ?, ?, ?, ?)",
                            (event_id, int(account_id), event_type,
                             json.dumps(data, sort_keys=True, separators=(",", ":"), default=str), at))
        row_id = cur.lastrowid
        for sid in subscription_ids:
            store.execute("INSERT INTO webhook_deliveries (event_row, subscription_id, account_id, state, attempts, "
                          "next_attempt_at, created_at) VALUES (?, ?, ?, 'pending', 0, ?, ?)",
                          (row_id, sid, int(account_id), at, at))
    return event_id

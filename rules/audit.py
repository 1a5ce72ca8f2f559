"""Append-only, hash-chained audit log: who changed what, when, why.

Each row holds the hash of the row before it; ``verify`` recomputes the chain,
so an edit or deletion made behind the application's back is detected.

``account_id`` is the account an entry is about (NULL for installation-wide
entries: rule sets, national registries, life-line numbers). It is part of the
hashed payload only when it is set, so rows written before the column existed
(migration m005) hash exactly as they did.
"""

import hashlib
import json

from dialer.timeutil import to_iso

GENESIS = "0" * 64


def _row_hash(prev_hash, at, actor, action, subject, reason, detail, account_id=None):
    fields = [prev_hash, at, actor, action, subject, reason, detail]
    if account_id is not None:
        fields.append(int(account_id))
    payload = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def append(store, now, actor, action, subject, reason, detail, account_id=None):
    """Append one row; call inside the caller's transaction. ``account_id``: the
    account the change concerns (None for installation-wide changes)."""
    last = store.conn.execute("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
    prev = last[0] if last else GENESIS
    at = to_iso(now)
    detail_s = json.dumps(detail, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    account_id = int(account_id) if account_id is not None else None
    h = _row_hash(prev, at, actor, action, subject, reason, detail_s, account_id)
    store.conn.execute(
        "INSERT INTO audit_log (at, actor, action, subject, reason, detail, prev_hash, hash, account_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (at, actor, action, subject, reason, detail_s, prev, h, account_id),
    )
    return h


def entries(store, subject=None, action_prefix=None, account_id=None):
    """Rows oldest first; ``account_id`` keeps only the entries about that account."""
    sql = "SELECT id, at, actor, action, subject, reason, detail, hash, account_id FROM audit_log"
    where, params = [], []
    if subject is not None:
        where.append("subject = ?")
        params.append(subject)
    if action_prefix is not None:
        where.append("action LIKE ?")
        params.append(action_prefix + "%")
    if account_id is not None:
        where.append("account_id = ?")
        params.append(int(account_id))
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = store.query(sql + " ORDER BY id", params)
    for r in rows:
        r["detail"] = json.loads(r["detail"])
    return rows


def verify(store):
    """Recompute the chain. Returns {"ok", "rows", "errors": [..]}."""
    errors = []
    prev = GENESIS
    n = 0
    for row in store.conn.execute(
        "SELECT id, at, actor, action, subject, reason, detail, prev_hash, hash, account_id FROM audit_log ORDER BY id"
    ):
        n += 1
        rid, at, actor, action, subject, reason, detail, prev_hash, h, account_id = row
        if prev_hash != prev:
            errors.append(f"row {rid}: prev_hash does not match the hash of the row before it (a row was removed or changed)")
        if _row_hash(prev_hash, at, actor, action, subject, reason, detail, account_id) != h:
            errors.append(f"row {rid}: content does not match its hash (the row was altered)")
        prev = h
    return {"ok": not errors, "rows": n, "errors": errors, "head": prev}

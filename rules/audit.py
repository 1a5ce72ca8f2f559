"""Append-only, hash-chained audit log: who changed what, when, why.

Each row holds the hash of the row before it; ``verify`` recomputes the chain,
so an edit or deletion made behind the application's back is detected.
"""

import hashlib
import json

from dialer.timeutil import to_iso

GENESIS = "0" * 64


def _row_hash(prev_hash, at, actor, action, subject, reason, detail):
    payload = json.dumps([prev_hash, at, actor, action, subject, reason, detail],
                         ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def append(store, now, actor, action, subject, reason, detail):
    """Append one row; call inside the caller's transaction."""
    last = store.conn.execute("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
    prev = last[0] if last else GENESIS
    at = to_iso(now)
    detail_s = json.dumps(detail, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    h = _row_hash(prev, at, actor, action, subject, reason, detail_s)
    store.conn.execute(
        "INSERT INTO audit_log (at, actor, action, subject, reason, detail, prev_hash, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (at, actor, action, subject, reason, detail_s, prev, h),
    )
    return h


def entries(store, subject=None, action_prefix=None):
    sql = "SELECT id, at, actor, action, subject, reason, detail, hash FROM audit_log"
    where, params = [], []
    if subject is not None:
        where.append("subject = ?")
        params.append(subject)
    if action_prefix is not None:
        where.append("action LIKE ?")
        params.append(action_prefix + "%")
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
        "SELECT id, at, actor, action, subject, reason, detail, prev_hash, hash FROM audit_log ORDER BY id"
    ):
        n += 1
        rid, at, actor, action, subject, reason, detail, prev_hash, h = row
        if prev_hash != prev:
            errors.append(f"row {rid}: prev_hash does not match the hash of the row before it (a row was removed or changed)")
        if _row_hash(prev_hash, at, actor, action, subject, reason, detail) != h:
            errors.append(f"row {rid}: content does not match its hash (the row was altered)")
        prev = h
    return {"ok": not errors, "rows": n, "errors": errors, "head": prev}

"""Append-only, hash-chained audit log: who changed what, when, why.

Each row holds the hash of the row before it; ``verify`` recomputes the chain,
so an edit or deletion made behind the application's back is detected; rows
removed from the end are detected against the head (hash and row count) the
operator kept from an earlier verify.

``account_id`` is the account an entry is about (NULL for installation-wide
entries: rule sets, national registries, life-line numbers). It is part of the
hashed payload only when it is set, so rows written before the column existed
(migration m005) hash exactly as they did.
"""

import hashlib
import json
import re

from core.errors import InputError
from core.timeutil import to_iso

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


def trail(store, account_id, installation_actions=(), limit=100, before=None):
    """One account's view of the log, newest first: the entries about ``account_id``
    plus the installation-wide entries (``account_id`` NULL) whose action is one of
    ``installation_actions`` (rule-set versions, national registries...), never another
    account's. At most ``limit`` rows with ids below ``before`` (the next page)."""
    where = "(account_id = ?"
    params = [int(account_id)]
    if installation_actions:
        where += f" OR (account_id IS NULL AND action IN ({','.join('?' * len(installation_actions))}))"
        params += list(installation_actions)
    where += ")"
    if before is not None:
        where += " AND id < ?"
        params.append(int(before))
    rows = store.query("SELECT id, at, actor, action, subject, reason, detail, hash, account_id FROM audit_log "
                       f"WHERE {where} ORDER BY id DESC LIMIT ?", params + [int(limit)])
    for r in rows:
        r["detail"] = json.loads(r["detail"])
    return rows


def verify(store, expect_head=None, expect_rows=None):
    """Recompute the chain. Returns {"ok", "rows", "head", "errors": [..]}.

    The chain alone cannot show that rows were removed from its end (or that the whole
    log was rewritten by someone who recomputed every hash), so the operator keeps the
    head hash and row count printed by an earlier verify outside the database and
    passes them back: ``expect_head`` must be the hash of row ``expect_rows`` (counted
    from the first row; with ``expect_head`` alone, of some row), and the log must
    hold at least ``expect_rows`` rows."""
    if expect_head is not None:
        expect_head = str(expect_head).strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", expect_head):
            raise InputError("the expected head must be the 64 hexadecimal digits printed by dialer rules verify")
    if expect_rows is not None and (isinstance(expect_rows, bool) or not isinstance(expect_rows, int) or expect_rows < 0):
        raise InputError("the expected row count must be a whole number, 0 or more")
    errors = []
    prev = GENESIS
    n = 0
    found_at = 0 if expect_head == GENESIS else None
    at_expected = GENESIS if expect_rows == 0 else None
    for row in store.conn.execute(
        "SELECT id, at, actor, action, subject, reason, detail, prev_hash, hash, account_id FROM audit_log ORDER BY id"
    ):
        n += 1
        rid, at, actor, action, subject, reason, detail, prev_hash, h, account_id = row
        if prev_hash != prev:
            errors.append(f"row {rid}: prev_hash does not match the hash of the row before it (a row was removed or changed)")
        try:
            ok = _row_hash(prev_hash, at, actor, action, subject, reason, detail, account_id) == h
        except (TypeError, ValueError):
            ok = False
        if not ok:
            errors.append(f"row {rid}: content does not match its hash (the row was altered)")
        if found_at is None and h == expect_head:
            found_at = n
        if n == expect_rows:
            at_expected = h
        prev = h
    if expect_rows is not None and n < expect_rows:
        errors.append(f"the log has {n} rows, fewer than the {expect_rows} recorded with its head: "
                      f"rows were removed from its end")
    elif expect_head is not None and expect_rows is not None and at_expected != expect_head:
        errors.append(f"row {expect_rows} of the log is not the recorded head {expect_head}: "
                      f"the log was rewritten up to there")
    elif expect_head is not None and expect_rows is None and found_at is None:
        errors.append(f"the recorded head {expect_head} is not in the log: rows were removed from its end, "
                      f"or the log was rewritten")
    return {"ok": not errors, "rows": n, "errors": errors, "head": prev}

"""API tokens: how a program (a CRM, a script) reaches the JSON API of one account.

A token is ``dk_<public id>_<secret>``: 64 random bits of public id (16 hex digits) that
find the row, and 256 random bits of secret (``secrets.token_urlsafe(32)``). The store
keeps only the SHA-256 of the secret, compared in constant time, so a copy of the
database opens nothing. A token is made by an owner (the web's tokens page, or
``dialer account token create``), is shown once, is scoped to one role of the account
(the same roles, and the same permissions table, as a person in the browser), and can
be revoked (for good: a revoked token is refused, its row is kept with who revoked it
and when). ``last_used_at`` is written at most once a minute. Every creation and
revocation is in the audit log.

The web server calls :func:`authenticate` and :func:`touch` off its reactor thread.
"""

import hashlib
import hmac
import re
import secrets

from core import audit
from core.errors import InputError, NotFound
from core.tenancy import resolve_account
from core.timeutil import from_iso, to_iso

from . import model

PREFIX = "dk_"
TOUCH_EVERY_S = 60
MAX_NAME = 80
_TOKEN = re.compile(r"dk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})", re.ASCII)
_NAME = re.compile(r"[\w .@()+-]{1,80}")


def _hash(secret):
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _name(name):
    name = str(name if name is not None else "").strip()
    if not name:
        raise InputError("a token needs a name (what uses it, e.g. 'crm-sync')")
    if len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise InputError(f"token name {name[:MAX_NAME]!r}: at most {MAX_NAME} letters, digits, spaces and "
                         f"._@()+- characters")
    return name


def _public(row):
    return {"id": row["id"], "name": row["name"], "role": row["role"], "prefix": f"{PREFIX}{row['public_id']}",
            "created_at": row["created_at"], "created_by": row["created_by"], "last_used_at": row["last_used_at"],
            "revoked_at": row["revoked_at"], "revoked_by": row["revoked_by"]}


def create_token(store, account, name, role, now, actor):
    """A new token of ``account`` (name, id, or None for the only account) for ``role``.
    Returns its public fields and, this once, ``token``. A name is unique among the
    account's tokens that are not revoked."""
    acc = resolve_account(store, account)
    name = _name(name)
    if role not in model.ROLES:
        raise InputError(f"role must be one of {', '.join(model.ROLES)}")
    public_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    with store.transaction():
        if store.query_one("SELECT id FROM api_tokens WHERE account_id = ? AND name = ? AND revoked_at IS NULL",
                           (acc["id"], name)):
            raise InputError(f"account {acc['name']!r} already has a token named {name!r} (revoke it first, or "
                             f"choose another name)")
        cur = store.execute("INSERT INTO api_tokens (public_id, secret_hash, account_id, name, role, created_at, "
                            "created_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (public_id, _hash(secret), acc["id"], name, role, to_iso(now), actor))
        audit.append(store, now, actor, "api-token.create", f"account:{acc['name']}", "",
                     {"token": cur.lastrowid, "name": name, "role": role, "prefix": PREFIX + public_id},
                     account_id=acc["id"])
        row = store.query_one("SELECT * FROM api_tokens WHERE id = ?", (cur.lastrowid,))
    return {**_public(row), "account": acc["name"], "token": f"{PREFIX}{public_id}_{secret}"}


def list_tokens(store, account):
    """The account's tokens, newest first: id, name, role, prefix, created (when, by
    whom), last used, revoked (when, by whom). Never a secret or its hash."""
    acc = resolve_account(store, account)
    return [_public(r) for r in store.query("SELECT * FROM api_tokens WHERE account_id = ? ORDER BY id DESC",
                                            (acc["id"],))]


def revoke_token(store, account, token, now, actor, reason=""):
    """Revoke a token of ``account``: by id (an int, or digits) or by the name of a token
    that is not revoked. Another account's token is NotFound. Audited."""
    acc = resolve_account(store, account)
    key = token.strip() if isinstance(token, str) else token
    with store.transaction():
        by_id = (isinstance(key, int) and not isinstance(key, bool)) or (
            isinstance(key, str) and key.isdigit() and len(key) < 19)
        if by_id:
            row = store.query_one("SELECT * FROM api_tokens WHERE id = ? AND account_id = ?", (int(key), acc["id"]))
        else:
            row = store.query_one("SELECT * FROM api_tokens WHERE name = ? AND account_id = ? AND revoked_at IS NULL",
                                  (str(key or ""), acc["id"]))
        if row is None:
            raise NotFound(f"no token {key!r} in account {acc['name']!r}")
        if row["revoked_at"]:
            raise InputError(f"token {row['name']!r} was already revoked at {row['revoked_at']}")
        store.execute("UPDATE api_tokens SET revoked_at = ?, revoked_by = ? WHERE id = ?", (to_iso(now), actor, row["id"]))
        audit.append(store, now, actor, "api-token.revoke", f"account:{acc['name']}", reason or "",
                     {"token": row["id"], "name": row["name"], "role": row["role"]}, account_id=acc["id"])
        row = store.query_one("SELECT * FROM api_tokens WHERE id = ?", (row["id"],))
    return {**_public(row), "account": acc["name"]}


def authenticate(store, token):
    """The token's row with its account's name (id, name, role, account_id,
    account_name, last_used_at), or None: malformed, unknown, wrong secret, or
    revoked, alike. Reads only."""
    m = _TOKEN.fullmatch(token) if isinstance(token, str) else None
    if m is None:
        return None
    row = store.query_one("SELECT t.id, t.public_id, t.secret_hash, t.name, t.role, t.account_id, t.revoked_at, "
                          "t.last_used_at, a.name AS account_name FROM api_tokens t "
                          "JOIN accounts a ON a.id = t.account_id WHERE t.public_id = ?", (m.group(1),))
    if row is None or not hmac.compare_digest(row.pop("secret_hash"), _hash(m.group(2))) or row["revoked_at"]:
        return None
    return row


def needs_touch(row, now):
    return row["last_used_at"] is None or (now - from_iso(row["last_used_at"])).total_seconds() >= TOUCH_EVERY_S


def touch(store, token_id, now):
    """Record a use (at most once a minute: the caller asks :func:`needs_touch` first)."""
    with store.transaction():
        store.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ? AND revoked_at IS NULL",
                      (to_iso(now), token_id))

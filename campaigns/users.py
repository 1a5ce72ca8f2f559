"""The people of an account who log in: passwords, roles, invitations, disabling.

Passwords are kept as argon2id hashes (argon2-cffi's ``PasswordHasher``, its RFC 9106
parameters); a hash made with older parameters is replaced at the next good login.
A password set by someone else (an invitation, an owner's reset) is a one-time
password: it must be changed at the next login. Web sessions live in
``user_sessions`` (``web.sessions`` opens them); a new password, a disabled user or a
new role ends the user's open sessions here, with the reason, so the browser that
held one can be told why.

Hashing and checking a password costs tens of milliseconds of CPU: the web server
calls these functions off its reactor thread.
"""

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from core import audit
from core.errors import InputError, NotFound
from core.tenancy import resolve_account
from core.timeutil import to_iso

from . import model
from .store import _user_name, add_user

PASSWORD_MIN, PASSWORD_MAX = 12, 1024
_HASHER = PasswordHasher()  # argon2id; the library's defaults follow RFC 9106's recommendation
# checked against when the user does not exist, so an unknown name costs the same time
_DUMMY = _HASHER.hash(secrets.token_urlsafe(16))


def check_password(password):
    """A password a user may choose: 12 to 1024 characters, not one character repeated."""
    password = password if isinstance(password, str) else ""
    if len(password) < PASSWORD_MIN:
        raise InputError(f"a password has at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise InputError(f"a password has at most {PASSWORD_MAX} characters")
    if len(set(password)) < 4:
        raise InputError("password too easy to guess (almost one character repeated): choose another")
    return password


def hash_password(password):
    return _HASHER.hash(check_password(password))


def _user(store, acc, name):
    row = store.query_one("SELECT * FROM users WHERE account_id = ? AND name = ?", (acc["id"], _user_name(name)))
    if row is None:
        raise NotFound(f"no user {name!r} in account {acc['name']!r}")
    return row


def user_by_id(store, account, user_id):
    """A user of ``account`` by id (NotFound for another account's user: no oracle)."""
    acc = resolve_account(store, account)
    row = store.query_one("SELECT * FROM users WHERE id = ? AND account_id = ?", (user_id, acc["id"]))
    if row is None:
        raise NotFound(f"no user {user_id} in account {acc['name']!r}")
    return _public(row, acc)


def _public(row, acc):
    return {"id": row["id"], "account": acc["name"], "name": row["name"], "role": row["role"],
            "pin_set": row["pin_hash"] is not None, "password_set": row["password_hash"] is not None,
            "must_change_password": bool(row["must_change_password"]), "disabled_at": row["disabled_at"],
            "created_at": row["created_at"]}


def people(store, account):
    """An account's users for the owner's screen: id, name, role, PIN set, password set,
    must change it, disabled since (never a hash)."""
    acc = resolve_account(store, account)
    return [_public(r, acc) for r in store.query("SELECT * FROM users WHERE account_id = ? ORDER BY name",
                                                 (acc["id"],))]


def end_sessions(store, user_id, reason, now, keep=None):
    """End the user's open web sessions (inside the caller's transaction), all but the
    session id ``keep``; returns how many."""
    sql = "UPDATE user_sessions SET ended_at = ?, end_reason = ? WHERE user_id = ? AND ended_at IS NULL"
    params = [to_iso(now), reason, user_id]
    if keep is not None:
        sql += " AND id != ?"
        params.append(keep)
    return store.execute(sql, params).rowcount


def set_password(store, account, user, password, now, actor, one_time=False, keep_session=None):
    """Set a user's password (argon2id). ``one_time``: set by someone else, to be
    changed at the next login. Ends the user's open web sessions (but ``keep_session``,
    the session of a user changing their own password). Audited (never the password)."""
    acc = resolve_account(store, account)
    hashed = hash_password(password)  # before the write lock: hashing takes a while
    with store.transaction():
        row = _user(store, acc, user)
        store.execute("UPDATE users SET password_hash = ?, must_change_password = ? WHERE id = ?",
                      (hashed, 1 if one_time else 0, row["id"]))
        ended = end_sessions(store, row["id"], "password-changed", now, keep=keep_session)
        audit.append(store, now, actor, "user.password", f"account:{acc['name']}", "",
                     {"user": row["name"], "one_time": bool(one_time), "sessions_ended": ended}, account_id=acc["id"])
    return {"account": acc["name"], "user": row["name"], "password": "set", "one_time": bool(one_time)}


def new_one_time_password():
    return secrets.token_urlsafe(12)  # 16 characters, 96 bits


def invite_user(store, account, name, role, now, actor):
    """A new user with a one-time password (returned once, to hand over; changed at the
    first login). User and password in one transaction."""
    acc = resolve_account(store, account)
    otp = new_one_time_password()
    hashed = hash_password(otp)
    with store.transaction():
        out = add_user(store, acc["id"], name, role, now, actor)
        store.execute("UPDATE users SET password_hash = ?, must_change_password = 1 WHERE account_id = ? AND name = ?",
                      (hashed, acc["id"], out["user"]))
        audit.append(store, now, actor, "user.invite", f"account:{acc['name']}", "", {"user": out["user"]},
                     account_id=acc["id"])
    return {**out, "one_time_password": otp}


def reset_password(store, account, user, now, actor):
    """An owner's reset: a new one-time password (returned once), open sessions ended."""
    otp = new_one_time_password()
    out = set_password(store, account, user, otp, now, actor, one_time=True)
    return {**out, "one_time_password": otp}


def _owners_left(store, account_id, without):
    return store.query_one("SELECT COUNT(*) AS n FROM users WHERE account_id = ? AND role = 'owner' "
                           "AND disabled_at IS NULL AND id != ?", (account_id, without))["n"]


def set_role(store, account, user, role, now, actor):
    """Change a user's role; the last enabled owner stays an owner. The user's open
    sessions end (what they may see changed)."""
    if role not in model.ROLES:
        raise InputError(f"role must be one of {', '.join(model.ROLES)}")
    acc = resolve_account(store, account)
    with store.transaction():
        row = _user(store, acc, user)
        if row["role"] == role:
            return {"account": acc["name"], "user": row["name"], "role": role, "was": role}
        if row["role"] == "owner" and not _owners_left(store, acc["id"], row["id"]):
            raise InputError(f"{row['name']} is the account's last owner: make another user owner first")
        store.execute("UPDATE users SET role = ? WHERE id = ?", (role, row["id"]))
        end_sessions(store, row["id"], "role-changed", now)
        audit.append(store, now, actor, "user.role", f"account:{acc['name']}", "",
                     {"user": row["name"], "from": row["role"], "to": role}, account_id=acc["id"])
    return {"account": acc["name"], "user": row["name"], "role": role, "was": row["role"]}


def disable_user(store, account, user, now, actor, reason=""):
    """Disable a user: no web login, the agent PIN cleared (no phone login either), open
    sessions ended. The last enabled owner cannot be disabled. Audited."""
    acc = resolve_account(store, account)
    with store.transaction():
        row = _user(store, acc, user)
        if row["disabled_at"]:
            raise InputError(f"user {row['name']!r} is already disabled (since {row['disabled_at']})")
        if row["role"] == "owner" and not _owners_left(store, acc["id"], row["id"]):
            raise InputError(f"{row['name']} is the account's last owner: it cannot be disabled")
        store.execute("UPDATE users SET disabled_at = ?, pin_hash = NULL WHERE id = ?", (to_iso(now), row["id"]))
        ended = end_sessions(store, row["id"], "disabled", now)
        audit.append(store, now, actor, "user.disable", f"account:{acc['name']}", reason or "",
                     {"user": row["name"], "sessions_ended": ended}, account_id=acc["id"])
    return {"account": acc["name"], "user": row["name"], "disabled": True}


def enable_user(store, account, user, now, actor):
    """Enable a disabled user again (its agent PIN must be set anew)."""
    acc = resolve_account(store, account)
    with store.transaction():
        row = _user(store, acc, user)
        if not row["disabled_at"]:
            raise InputError(f"user {row['name']!r} is not disabled")
        store.execute("UPDATE users SET disabled_at = NULL WHERE id = ?", (row["id"],))
        audit.append(store, now, actor, "user.enable", f"account:{acc['name']}", "", {"user": row["name"]},
                     account_id=acc["id"])
    return {"account": acc["name"], "user": row["name"], "disabled": False}


def check_login(store, account_name, user_name, password):
    """The user row when ``password`` is right for an enabled user of the account named
    ``account_name``, else None (the same answer and about the same time for an
    unknown account, an unknown or disabled user, no password, a wrong password).
    ``row['rehash']`` holds a new hash when the stored one used older parameters.
    Reads only."""
    acc = store.query_one("SELECT id, name FROM accounts WHERE name = ?", (str(account_name or "").strip(),))
    row = acc and store.query_one("SELECT * FROM users WHERE account_id = ? AND name = ?",
                                  (acc["id"], str(user_name or "").strip()))
    stored = row["password_hash"] if row and row["password_hash"] and not row["disabled_at"] else None
    password = password if isinstance(password, str) else ""
    if len(password) > PASSWORD_MAX:
        return None
    try:
        _HASHER.verify(stored or _DUMMY, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if stored is None:
        return None
    row["account_name"] = acc["name"]
    row["rehash"] = _HASHER.hash(password) if _HASHER.check_needs_rehash(stored) else None
    return row

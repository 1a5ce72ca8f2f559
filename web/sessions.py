"""Web sessions in the store, and the back-off of wrong passwords.

A session id is 256 random bits, handed to the browser once in an ``HttpOnly`` cookie;
the store keeps only its SHA-256, so a copy of the database opens no session. A login
makes a new id (no fixation) and ends the user's other open sessions: one login is one
person (terms of service); the ended session keeps the reason (``elsewhere``) so its
browser is told, and both the login and the ending are in the audit log. Sessions end
after ``IDLE_S`` without a request and ``ABSOLUTE_S`` after the login, whatever
happens; logging out ends it in the store.

The store functions here run off the reactor (``web.db.Stores``); :class:`LoginThrottle`
runs on it (memory only, a few dicts).
"""

import hashlib
import hmac
import secrets

from core import audit
from core.timeutil import from_iso, to_iso
from campaigns.users import end_sessions
from dialer.gate import LoginGuard

IDLE_S = 30 * 60
ABSOLUTE_S = 12 * 3600
TOUCH_EVERY_S = 60  # last_seen_at is written at most once a minute per session

# why a session ended -> what its browser is told (a fixed table: nothing from the URL is shown)
ENDED = {
    "elsewhere": "You were logged out because you logged in elsewhere (one login is one person).",
    "expired": "Your session expired. Please log in again.",
    "logout": "You logged out.",
    "password-changed": "Your password was changed. Please log in with the new one.",
    "role-changed": "Your role was changed. Please log in again.",
    "disabled": "Your user was disabled by an owner of the account.",
}


def token_hash(token):
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def actor(sess):
    """What the audit log records for a change made in the browser."""
    return f"web:{sess['account_name']}/{sess['user_name']}"


def open_session(store, user, source, now):
    """Log ``user`` (a row from ``campaigns.users.check_login``) in: a new session, the
    user's other open sessions ended (reason ``elsewhere``), a newer password hash kept
    when ``user['rehash']`` has one. Returns (token, session dict)."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    at = to_iso(now)
    who = f"web:{user['account_name']}/{user['name']}"
    with store.transaction():
        if user.get("rehash"):
            store.execute("UPDATE users SET password_hash = ? WHERE id = ?", (user["rehash"], user["id"]))
        ended = end_sessions(store, user["id"], "elsewhere", now)
        cur = store.execute("INSERT INTO user_sessions (token_hash, user_id, account_id, csrf_token, source, created_at, "
                            "last_seen_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (token_hash(token), user["id"], user["account_id"], csrf, source, at, at))
        subject = f"account:{user['account_name']}"
        audit.append(store, now, who, "user.login", subject, "", {"user": user["name"], "source": source},
                     account_id=user["account_id"])
        if ended:
            audit.append(store, now, who, "user.session-ended", subject, "logged in elsewhere",
                         {"user": user["name"], "sessions": ended, "new_source": source}, account_id=user["account_id"])
    return token, find_session(store, token)


def find_session(store, token):
    """The session of ``token`` with its user and account (or None): id, user_id,
    user_name, role, account_id, account_name, account_operator (the installation's
    operator account: 1, else 0), csrf_token, created_at, last_seen_at, ended_at,
    end_reason, must_change_password, disabled_at. Reads only."""
    if not token or len(token) > 200:
        return None
    return store.query_one(
        "SELECT s.id, s.user_id, u.name AS user_name, u.role, s.account_id, a.name AS account_name, "
        "a.operator AS account_operator, s.csrf_token, "
        "s.source, s.created_at, s.last_seen_at, s.ended_at, s.end_reason, u.must_change_password, u.disabled_at "
        "FROM user_sessions s JOIN users u ON u.id = s.user_id JOIN accounts a ON a.id = s.account_id "
        "WHERE s.token_hash = ?", (token_hash(token),))


def state(sess, now, idle_s=IDLE_S, absolute_s=ABSOLUTE_S):
    """'open', 'expired' (an open session past a timeout: to be ended), or the reason
    an ended session ended. Pure."""
    if sess is None:
        return "none"
    if sess["ended_at"]:
        return sess["end_reason"] or "logout"
    created, seen = from_iso(sess["created_at"]), from_iso(sess["last_seen_at"])
    if (now - seen).total_seconds() > idle_s or (now - created).total_seconds() > absolute_s:
        return "expired"
    return "open"


def needs_touch(sess, now):
    return (now - from_iso(sess["last_seen_at"])).total_seconds() >= TOUCH_EVERY_S


def touch(store, session_id, now):
    with store.transaction():
        store.execute("UPDATE user_sessions SET last_seen_at = ? WHERE id = ? AND ended_at IS NULL",
                      (to_iso(now), session_id))


def end(store, sess, reason, now):
    """End one session (logout, or a timeout found); a logout is audited."""
    with store.transaction():
        n = store.execute("UPDATE user_sessions SET ended_at = ?, end_reason = ? WHERE id = ? AND ended_at IS NULL",
                          (to_iso(now), reason, sess["id"])).rowcount
        if n and reason == "logout":
            audit.append(store, now, actor(sess), "user.logout", f"account:{sess['account_name']}", "",
                         {"user": sess["user_name"]}, account_id=sess["account_id"])
    return n


def csrf_ok(expected, given):
    return bool(expected) and isinstance(given, str) and hmac.compare_digest(expected.encode(), given.encode())


class LoginThrottle:
    """Wrong passwords slow down their source address and the user name they tried:
    after ``free`` wrong tries, each further try waits a doubling delay after the last
    failure (``dialer.gate.LoginGuard``, the back-off of wrong agent PINs), at most 5
    minutes for a source and 30 s for a user name: a stranger who knows a name can slow
    its owner down to one try every 30 s, never lock them out. A good password clears
    both. Memory only (a restart forgets it)."""

    def __init__(self, free=5, source_max_s=300.0, user_max_s=30.0):
        self.sources = LoginGuard(free=free, base_s=1.0, max_s=source_max_s)
        self.users = LoginGuard(free=free, base_s=1.0, max_s=user_max_s)

    @staticmethod
    def user_key(account, user):
        return f"{str(account or '').strip().lower()}/{str(user or '').strip().lower()}"

    def wait(self, source, user_key, t):
        return max(self.sources.wait(source, t), self.users.wait(user_key, t))

    def failed(self, source, user_key, t):
        self.sources.failed(source, t)
        self.users.failed(user_key, t)

    def succeeded(self, source, user_key):
        self.sources.succeeded(source)
        self.users.succeeded(user_key)

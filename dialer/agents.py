"""Agents: PIN login, the agent state model, and the floor of agents per campaign.

:class:`AgentFloor` is pure (no I/O, no clock: every change takes ``now``) and
answers what the dialer asks of it: which agent takes this answered call (the
one idle longest), and the counts the pacing policy needs. Each change returns
:class:`AgentEvent` values for :func:`record_agent_events` to keep in
``agent_events`` (supervisors, occupancy figures).

Agent states and the actions between them (:data:`TRANSITIONS`)::

    logged_out --login--> ready <--pause/resume--> paused --logout--> logged_out
    ready --assign--> on_call --call_ended--> wrap_up --dispose--> ready (or paused)
                                              wrap_up --wrap_timeout--> ready

Wrap-up ends with a disposition from :data:`DISPOSITIONS` or one the campaign
defines. It ends by itself after the wrap limit (default 60 s, per floor and per
campaign, ``None`` for none), as inbound/outbound ACDs do ("after-call work
timeout"): an agent who forgets the disposition screen would otherwise sit
outside the pool while the pacing counts them as busy. The call then gets the
disposition ``wrap-timeout`` (its lead: answered-human) and the agent is ready.
One login per person: a user logged in on one campaign cannot log in on another.
"""

import datetime as _dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, replace

from core import audit

from core.pins import check_pin, hash_pin, verify_pin  # noqa: F401 (used by callers)
from core.errors import InputError, NotFound, StateError
from core.timeutil import from_iso, from_ms, to_iso, utc

AGENT_STATES = ("logged_out", "ready", "paused", "on_call", "wrap_up")
TRANSITIONS = {  # action -> {from: to}
    "login": {"logged_out": "ready"},
    "pause": {"ready": "paused"},
    "resume": {"paused": "ready"},
    "assign": {"ready": "on_call"},
    "call_ended": {"on_call": "wrap_up"},
    "dispose": {"wrap_up": "ready"},  # or paused, when the agent asks for a pause with it
    "wrap_timeout": {"wrap_up": "ready"},
    "logout": {"ready": "logged_out", "paused": "logged_out"},
}
# the fixed wrap-up vocabulary -> lead outcome (campaigns.model.OUTCOMES)
DISPOSITIONS = {
    "sale": "answered-human",
    "not-interested": "answered-human",
    "wrong-number": "answered-human",
    "other": "answered-human",
    "callback": "callback",
    "dnc-requested": "dnc-requested",
    "answering-machine": "machine",
    "dead-air": "no-answer",
    "wrap-timeout": "answered-human",
}
CAMPAIGN_OUTCOMES = ("answered-human", "callback", "dnc-requested", "machine", "no-answer")
WRAP_LIMIT_S = 60
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


def _instant(now, what="time"):
    if isinstance(now, bool) or now is None:
        raise InputError(f"{what}: no instant given")
    if isinstance(now, int):
        return from_ms(now)
    if isinstance(now, _dt.datetime):
        return utc(now)
    raise InputError(f"{what}: {now!r} is not an instant (datetime or epoch milliseconds)")


def campaign_dispositions(extra):
    """A campaign's own wrap-up dispositions: a list of names (lead outcome
    answered-human) or a mapping name -> lead outcome. Checked: names are lower-case
    words with dashes, none shadows a fixed one."""
    if not extra:
        return {}
    items = extra.items() if isinstance(extra, dict) else ((n, "answered-human") for n in extra)
    out = {}
    for name, outcome in items:
        if not isinstance(name, str) or not _NAME.match(name):
            raise InputError(f"disposition {name!r}: use lower-case letters, digits and dashes (at most 32)")
        if name in DISPOSITIONS:
            raise InputError(f"disposition {name!r} is already a standard one")
        if outcome not in CAMPAIGN_OUTCOMES:
            raise InputError(f"disposition {name!r}: lead outcome {outcome!r} is not one of {', '.join(CAMPAIGN_OUTCOMES)}")
        out[name] = outcome
    return out


def disposition_outcome(disposition, extra=None):
    """The lead outcome of a wrap-up disposition."""
    if disposition in DISPOSITIONS:
        return DISPOSITIONS[disposition]
    extra = extra or {}
    if disposition in extra:
        return extra[disposition]
    raise InputError(f"unknown disposition {disposition!r} (one of {', '.join(list(DISPOSITIONS) + list(extra))})")


@dataclass(frozen=True)
class AgentEvent:
    user_id: int
    campaign_id: object
    at: _dt.datetime
    prev_state: str
    state: str
    call_id: object = None
    disposition: object = None
    reason: object = None


@dataclass(frozen=True)
class Agent:
    user_id: int
    campaign_id: object
    state: str
    since: _dt.datetime
    name: object = None
    call_id: object = None


@dataclass(frozen=True)
class AgentCounts:
    """What pacing reads (see dialer.pacing.policies.PacingState)."""

    logged_in: int  # every state but logged_out
    agents: int  # logged in and not paused: ready + on_call + wrap_up
    ready: int
    busy: int  # on_call + wrap_up
    talking: int  # on_call
    wrap_up: int
    paused: int


class AgentFloor:
    """The logged-in agents, per campaign, with their state and since when."""

    def __init__(self, wrap_limit_s=WRAP_LIMIT_S, wrap_limits=None, dispositions=None):
        self.wrap_limit_s = self._check_limit(wrap_limit_s)
        self.wrap_limits = {c: self._check_limit(v) for c, v in (wrap_limits or {}).items()}
        self.dispositions = {c: campaign_dispositions(v) for c, v in (dispositions or {}).items()}
        self._agents = {}  # user id -> Agent (logged in only)
        self._counts = {}  # campaign id -> {state: agents} (kept with every change: pacing reads it often)
        self._wrapping = set()  # user ids in wrap-up (the limit's check looks at these only)

    @staticmethod
    def _check_limit(v):
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise InputError(f"wrap-up limit {v!r}: a number of seconds above 0 (or none)")
        return v

    # -- reading ---------------------------------------------------------------------
    def agent(self, user_id):
        a = self._agents.get(user_id)
        if a is None:
            raise NotFound(f"agent {user_id} is not logged in")
        return a

    def state_of(self, user_id):
        a = self._agents.get(user_id)
        return a.state if a else "logged_out"

    def agents(self, campaign_id=None):
        return sorted((a for a in self._agents.values() if campaign_id is None or a.campaign_id == campaign_id),
                      key=lambda a: a.user_id)

    def pick(self, campaign_id):
        """The ready agent idle longest (earliest ``since``; ties by user id), or None."""
        ready = [a for a in self._agents.values() if a.campaign_id == campaign_id and a.state == "ready"]
        if not ready:
            return None
        return min(ready, key=lambda a: (a.since, a.user_id)).user_id

    def tally(self, campaign_id):
        """Agents per state of a campaign: {state: n} (read it, do not change it)."""
        return self._counts.get(campaign_id) or dict.fromkeys(AGENT_STATES, 0)

    def counts(self, campaign_id):
        n = self._counts.get(campaign_id) or dict.fromkeys(AGENT_STATES, 0)
        return AgentCounts(logged_in=n["ready"] + n["paused"] + n["on_call"] + n["wrap_up"],
                           agents=n["ready"] + n["on_call"] + n["wrap_up"], ready=n["ready"],
                           busy=n["on_call"] + n["wrap_up"], talking=n["on_call"], wrap_up=n["wrap_up"],
                           paused=n["paused"])

    @property
    def wrap_ups(self):
        """How many agents are in wrap-up (any campaign)."""
        return len(self._wrapping)

    def wrap_limit(self, campaign_id):
        return self.wrap_limits.get(campaign_id, self.wrap_limit_s)

    # -- changes ---------------------------------------------------------------------
    def _move(self, user_id, action, now, to=None, **detail):
        at = _instant(now, f"agent {user_id}")
        a = self._agents.get(user_id)
        state = a.state if a else "logged_out"
        moves = TRANSITIONS[action]
        if state not in moves:
            raise StateError(f"agent {user_id} is {state.replace('_', ' ')}: cannot {action.replace('_', ' ')} "
                             f"(only when {' or '.join(s.replace('_', ' ') for s in moves)})")
        if a is not None and at < a.since:
            raise InputError(f"agent {user_id}: {to_iso(at)} is before the agent's last change at {to_iso(a.since)}")
        return at, a, state, to or moves[state]

    def login(self, user_id, campaign_id, now, name=None):
        if user_id in self._agents:
            a = self._agents[user_id]
            raise StateError(f"agent {a.name or user_id} is already logged in (campaign {a.campaign_id} since "
                             f"{to_iso(a.since)}): one login per person")
        at, _, prev, to = self._move(user_id, "login", now)
        self._agents[user_id] = Agent(user_id, campaign_id, to, at, name)
        self._count(campaign_id, prev, to, user_id)
        return AgentEvent(user_id, campaign_id, at, prev, to)

    def _set(self, a, at, prev, to, call_id=None, disposition=None, reason=None):
        if to == "logged_out":
            del self._agents[a.user_id]
        else:
            self._agents[a.user_id] = replace(a, state=to, since=at, call_id=call_id)
        self._count(a.campaign_id, prev, to, a.user_id)
        return AgentEvent(a.user_id, a.campaign_id, at, prev, to, call_id, disposition, reason or None)

    def _count(self, campaign_id, prev, to, user_id):
        n = self._counts.get(campaign_id)
        if n is None:
            n = self._counts[campaign_id] = dict.fromkeys(AGENT_STATES, 0)
        n[prev] -= 1
        n[to] += 1
        if to == "wrap_up":
            self._wrapping.add(user_id)
        else:
            self._wrapping.discard(user_id)

    def pause(self, user_id, now, reason=None):
        at, a, prev, to = self._move(user_id, "pause", now)
        return self._set(a, at, prev, to, reason=reason)

    def resume(self, user_id, now):
        at, a, prev, to = self._move(user_id, "resume", now)
        return self._set(a, at, prev, to)

    def logout(self, user_id, now, reason=None):
        at, a, prev, to = self._move(user_id, "logout", now)
        return self._set(a, at, prev, to, reason=reason)

    def assign(self, campaign_id, call_id, now, user_id=None):
        """Give an answered call to an agent: ``user_id`` (a preview or callback call
        meant for that agent) or the ready one idle longest. None if nobody is ready."""
        if user_id is None:
            user_id = self.pick(campaign_id)
            if user_id is None:
                return None
        at, a, prev, to = self._move(user_id, "assign", now)
        if a.campaign_id != campaign_id:
            raise StateError(f"agent {user_id} works on campaign {a.campaign_id}, not {campaign_id}")
        return self._set(a, at, prev, to, call_id=call_id)

    def call_ended(self, user_id, now, call_id=None):
        at, a, prev, to = self._move(user_id, "call_ended", now)
        if call_id is not None and call_id != a.call_id:
            raise StateError(f"agent {user_id} is on call {a.call_id}, not {call_id}")
        return self._set(a, at, prev, to, call_id=a.call_id)

    def dispose(self, user_id, disposition, now, pause=False, reason=None):
        """End wrap-up with a disposition; the agent is ready again (paused if asked)."""
        a = self._agents.get(user_id)
        extra = self.dispositions.get(a.campaign_id) if a else None
        if disposition == "wrap-timeout":
            raise InputError("wrap-timeout is set by the dialer when the wrap-up limit passes")
        at, a, prev, to = self._move(user_id, "dispose", now, to="paused" if pause else None)
        disposition_outcome(disposition, extra)
        return self._set(a, at, prev, to, call_id=a.call_id, disposition=disposition, reason=reason)

    def end_wrap(self, user_id, now, reason):
        """End a wrap-up now without the agent's disposition (the dialer is stopping)."""
        at, a, prev, to = self._move(user_id, "wrap_timeout", now)
        return self._set(a, at, prev, to, call_id=a.call_id, disposition="wrap-timeout", reason=reason)

    def tick(self, now):
        """End every wrap-up that has passed its limit (at the limit's instant)."""
        at = _instant(now)
        out = []
        if not self._wrapping or (self.wrap_limit_s is None and all(v is None for v in self.wrap_limits.values())):
            return out
        for a in sorted((self._agents[u] for u in self._wrapping), key=lambda a: (a.since, a.user_id)):
            limit = self.wrap_limit(a.campaign_id)
            if a.state != "wrap_up" or limit is None:
                continue
            deadline = a.since + _dt.timedelta(seconds=limit)
            if at >= deadline:
                _, a, prev, to = self._move(a.user_id, "wrap_timeout", deadline)
                out.append(self._set(a, deadline, prev, to, call_id=a.call_id, disposition="wrap-timeout",
                                     reason=f"wrap-up limit {limit:g} s"))
        return out


# ---------------------------------------------------------------------------------
# PINs and login (store)
# ---------------------------------------------------------------------------------



def _user(store, account, user):
    """The user row of ``user`` in ``account`` (its name, or its id as an int)."""
    by_id = isinstance(account, int) and not isinstance(account, bool)
    row = store.query_one("SELECT u.* FROM users u JOIN accounts a ON a.id = u.account_id "
                          f"WHERE {'a.id' if by_id else 'a.name'} = ? AND u.name = ?", (account, user))
    if row is None:
        raise NotFound(f"no user {user!r} in account {account!r}")
    return row


def set_pin(store, account, user, pin, now, actor):
    """Set a user's agent PIN: only a salted scrypt hash is kept; clears a lockout.
    ``account``: name, id, or None for the installation's only account."""
    from core.tenancy import resolve_account
    pin = check_pin(pin)
    acc = resolve_account(store, account)
    row = _user(store, acc["name"], user)
    with store.transaction():
        store.execute("UPDATE users SET pin_hash = ?, pin_failures = 0 WHERE id = ?", (hash_pin(pin), row["id"]))
        audit.append(store, now, actor, "user.pin", f"account:{acc['name']}", "", {"user": user},
                     account_id=acc["id"])
    return {"account": acc["name"], "user": user, "pin": "set"}


def authenticate(store, account, user, pin, now):
    """An agent's PIN check outside the live dialer (tools, tests): the user row (id,
    name, role, account_id) if the PIN matches. Refused: unknown user, no PIN set,
    wrong PIN. A wrong PIN is counted (``pin_failures``, audited) but never locks the
    user: the live dialer slows down the *source address* of repeated wrong PINs
    (``dialer.gate.LoginGuard``), so nobody who merely knows a user name can lock that
    agent out."""
    row = _user(store, account, user)
    if not row["pin_hash"]:
        raise InputError(f"user {user!r} has no PIN yet (a supervisor sets one)")
    ok = verify_pin(str(pin or ""), row["pin_hash"])
    with store.transaction():
        if ok:
            store.execute("UPDATE users SET pin_failures = 0 WHERE id = ?", (row["id"],))
        else:
            store.execute("UPDATE users SET pin_failures = pin_failures + 1 WHERE id = ?", (row["id"],))
            audit.append(store, now, user, "user.login-refused", f"account:{account}", "wrong PIN", {"user": user},
                         account_id=row["account_id"])
    if not ok:
        raise InputError(f"wrong PIN for {user!r}")
    return {"user_id": row["id"], "name": row["name"], "role": row["role"], "account_id": row["account_id"]}


def login_user(store, account_id, name):
    """The live dialer's look-up of an agent's phone login: the user of that account
    (id, name, role, pin_hash), or None. One indexed read; the PIN is checked apart
    (``verify_pin``, off the reactor thread)."""
    return store.query_one("SELECT id, name, role, pin_hash FROM users WHERE account_id = ? AND name = ?",
                           (account_id, name))


# ---------------------------------------------------------------------------------
# agent events (store)
# ---------------------------------------------------------------------------------

def agent_event_row(e):
    """An agent event as a plain dict (what the dialer's journal keeps)."""
    return {"user_id": e.user_id, "campaign_id": e.campaign_id, "at": to_iso(e.at), "state": e.state,
            "prev_state": e.prev_state, "call_id": e.call_id, "disposition": e.disposition, "reason": e.reason}


def record_agent_rows(store, rows):
    """Keep agent state changes given as dicts (``agent_event_row``), in one transaction."""
    rows = list(rows)
    with store.transaction():
        for r in rows:
            store.execute("INSERT INTO agent_events (user_id, account_id, campaign_id, at, state, prev_state, call_id, "
                          "disposition, reason) SELECT ?, account_id, ?, ?, ?, ?, ?, ?, ? FROM users WHERE id = ?",
                          (r["user_id"], r["campaign_id"], r["at"], r["state"], r["prev_state"], r["call_id"],
                           r["disposition"], r["reason"], r["user_id"])).rowcount or _no_user(r["user_id"])
    return len(rows)


def _no_user(user_id):
    raise NotFound(f"agent event of user {user_id}: no such user")


def record_agent_events(store, events):
    """Keep agent state changes (in one transaction); returns how many."""
    return record_agent_rows(store, [agent_event_row(e) for e in events])


def agent_events(store, campaign_id=None, user_id=None, since=None, until=None):
    where, params = [], []
    if campaign_id is not None:
        where.append("campaign_id = ?")
        params.append(campaign_id)
    if user_id is not None:
        where.append("user_id = ?")
        params.append(user_id)
    if since is not None:
        where.append("at >= ?")
        params.append(to_iso(since))
    if until is not None:
        where.append("at < ?")
        params.append(to_iso(until))
    sql = "SELECT * FROM agent_events" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY at, id"
    return store.query(sql, params)


def occupancy(store, campaign_id, since, until):
    """Seconds per agent in each state over [since, until) from ``agent_events``, and
    occupancy = (on call + wrap-up) / (ready + on call + wrap-up), None without time."""
    since, until = utc(since), utc(until)
    rows = store.query("SELECT user_id, at, state FROM agent_events WHERE campaign_id = ? AND at < ? "
                       "ORDER BY user_id, at, id", (campaign_id, to_iso(until)))
    per = {}
    by_user = {}
    for r in rows:
        by_user.setdefault(r["user_id"], []).append((from_iso(r["at"]), r["state"]))
    for uid, evs in by_user.items():
        secs = {s: 0.0 for s in AGENT_STATES if s != "logged_out"}
        for i, (t, state) in enumerate(evs):
            end = evs[i + 1][0] if i + 1 < len(evs) else until
            a, b = max(t, since), min(end, until)
            if b > a and state in secs:
                secs[state] += (b - a).total_seconds()
        work = secs["on_call"] + secs["wrap_up"]
        avail = work + secs["ready"]
        per[uid] = {**{k: round(v, 3) for k, v in secs.items()},
                    "occupancy": round(work / avail, 4) if avail else None}
    return per

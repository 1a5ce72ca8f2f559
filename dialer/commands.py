"""Commands for a running dialer, through the store: an agent's wrap-up disposition,
pause, ready and logout, given from the CLI now and the web console later.

``submit`` queues one (checked first: the user is an agent of the account, the
disposition is known); the running dialer that has the agent logged in claims it
within a second (``claim``: one dialer only), carries it out and writes the result.
``wait_result`` is the CLI's side: it waits a bounded time and, when no dialer
took the command, withdraws it (``expire``) so it can never fire later by surprise.
"""

import time

from .agents import disposition_outcome
from core.errors import InputError, NotFound
from core.timeutil import to_iso

COMMANDS = ("dispose", "pause", "ready", "logout", "dial")


def _agent(store, account, user):
    """The agent ``user`` of ``account`` (name, id, or None for the installation's only
    account): its user row and the account row."""
    from core.tenancy import resolve_account
    acc = resolve_account(store, account)
    row = store.query_one("SELECT id, name, role, account_id FROM users WHERE account_id = ? AND name = ?",
                          (acc["id"], user))
    if row is None:
        raise NotFound(f"no user {user!r} in account {acc['name']!r}")
    if row["role"] != "agent":
        raise InputError(f"user {user!r} is a {row['role']}, not an agent")
    return row, acc


def submit(store, account, user, command, now, actor, disposition=None, pause=False, reason=None):
    """Queue a command for the dialer that has ``user`` logged in; returns its id."""
    if command not in COMMANDS:
        raise InputError(f"unknown command {command!r} (one of {', '.join(COMMANDS)})")
    u, acc = _agent(store, account, user)
    if command == "dispose":
        if not disposition:
            raise InputError("give the wrap-up disposition (--disposition), e.g. sale or not-interested")
        if disposition == "wrap-timeout":
            raise InputError("wrap-timeout is set by the dialer when the wrap-up limit passes")
        if disposition == "callback":
            raise InputError("a callback needs its time: dispose with 'other' and schedule it with "
                             "'dialer lead callback LEAD WHEN'")
        disposition_outcome(disposition)  # known (the fixed vocabulary)
        if pause:
            command = "dispose-pause"
    elif disposition:
        raise InputError(f"--disposition goes with dispose, not {command}")
    with store.transaction():
        cur = store.execute(
            "INSERT INTO agent_commands (user_id, command, disposition, reason, created_at, created_by, account_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", (u["id"], command, disposition, reason, to_iso(now), actor, acc["id"]))
    return {"id": cur.lastrowid, "user": user, "account": acc["name"], "command": command, "disposition": disposition}


def open_commands(store, user_ids):
    """Commands not yet taken for these users, oldest first."""
    ids = sorted(set(user_ids))
    if not ids:
        return []
    marks = ", ".join("?" * len(ids))
    return store.query(f"SELECT id, user_id, command, disposition, reason, created_at FROM agent_commands "
                       f"WHERE taken_at IS NULL AND user_id IN ({marks}) ORDER BY id", tuple(ids))


def claim(store, command_id, now):
    """Take a command (one dialer only): True if this caller got it."""
    with store.transaction():
        cur = store.execute("UPDATE agent_commands SET taken_at = ?, result = 'taken' "
                            "WHERE id = ? AND taken_at IS NULL", (to_iso(now), command_id))
    return cur.rowcount == 1


def expire(store, command_id, now):
    """Withdraw a command no dialer took; False if a dialer took it meanwhile."""
    with store.transaction():
        cur = store.execute("UPDATE agent_commands SET taken_at = ?, result = ? WHERE id = ? AND taken_at IS NULL",
                            (to_iso(now), "expired: no running dialer has this agent logged in", command_id))
    return cur.rowcount == 1


def get(store, command_id):
    row = store.query_one("SELECT * FROM agent_commands WHERE id = ?", (command_id,))
    if row is None:
        raise NotFound(f"no agent command {command_id}")
    return row


def wait_result(store, command_id, timeout, now, sleep=time.sleep, clock=time.monotonic):
    """The CLI's wait: the command's final result within ``timeout`` s, or it is
    withdrawn. Returns {"id", "done": bool, "result"}."""
    end = clock() + max(0.0, timeout)
    while True:
        row = get(store, command_id)
        if row["result"] not in (None, "taken"):
            return {"id": command_id, "done": not row["result"].startswith(("refused", "expired")),
                    "result": row["result"]}
        if clock() >= end:
            if row["result"] is None and expire(store, command_id, now()):
                return {"id": command_id, "done": False,
                        "result": "expired: no running dialer has this agent logged in"}
            if row["result"] == "taken" and clock() >= end + 5.0:
                return {"id": command_id, "done": False, "result": "taken by a dialer; no result yet"}
        sleep(0.1)



def submit_and_wait(store, account, user, command, now, actor, wait, disposition=None, pause=False, reason=None):
    """The CLI's ``dialer agent COMMAND``: queue it, wait for the running dialer's result."""
    out = submit(store, account, user, command, now(), actor, disposition=disposition, pause=pause, reason=reason)
    res = wait_result(store, out["id"], wait, now)
    return dict(out, **res)

"""Open calls: every call is on record before its INVITE leaves.

The dialer loop journals an ``open_calls`` row for a call the instant before it
asks a SIP worker to dial (``dialer.journal`` spools it to disk first, so a
SIGKILL a microsecond later still leaves it), updates it when the callee answers
and when an agent is bridged, and the call's CDR removes it in the same
transaction that writes the CDR. So after a crash the rows left are exactly the
calls the crash interrupted.

On start, before it dials anything, the service (``dialer.service``) replays the
journal and then :func:`recover`: each open call of this node gets its CDR
(disposition ``failed``, SIP code 0, reason "dialer stopped during the call",
hang-up cause ``DIALER_STOPPED``, with what is known of it: start, answer, bridge,
agent, the verdict it was dialled under; it ends at the last instant known, since
the instant the dialer died is not), its attempt counts for the frequency caps,
and its lead goes back to its retry schedule (outcome ``failed``). Leads this node
reserved or marked dialling that never got a call go back to the hopper.

A call journaled just before a crash whose INVITE never left is recorded the same
way: an attempt that may not have happened counts against the caps, the safe side.
"""

import json

from twisted.logger import Logger

from core.timeutil import from_iso, to_iso, to_ms

log = Logger(namespace="dialer.opencalls")

STOPPED_REASON = "dialer stopped during the call"
_OPEN_COLUMNS = ("call_id", "account_id", "campaign_id", "lead_id", "destination", "trunk", "caller_id",
                 "started_at", "ruleset", "verdict", "node", "consumer")


def open_call(store, call, at):
    """Keep a call about to be dialled (journal kind ``call_open``); once per call id."""
    values = [call.get(c) for c in _OPEN_COLUMNS]
    values[_OPEN_COLUMNS.index("verdict")] = (json.dumps(call["verdict"], sort_keys=True, separators=(",", ":"))
                                              if call.get("verdict") is not None else None)
    cols = ", ".join(_OPEN_COLUMNS + ("updated_at",))
    marks = ", ".join("?" * (len(_OPEN_COLUMNS) + 1))
    # the journal applies writes in order, so a call's open row always precedes its CDR
    return store.execute(f"INSERT INTO open_calls ({cols}) VALUES ({marks}) ON CONFLICT (call_id) DO NOTHING",
                         values + [at]).rowcount == 1


def progress(store, call_id, answered_at=None, bridged_at=None, agent_id=None, at=None):
    """What happened since (journal kind ``call_progress``): the answer, the agent."""
    sets, params = [], []
    for col, v in (("answered_at", answered_at), ("bridged_at", bridged_at), ("agent_id", agent_id)):
        if v is not None:
            sets.append(f"{col} = ?")
            params.append(v)
    if not sets:
        return False
    sets.append("updated_at = ?")
    params.append(at)
    return store.execute(f"UPDATE open_calls SET {', '.join(sets)} WHERE call_id = ?",
                         params + [call_id]).rowcount == 1


def close(store, call_id):
    """The call's CDR is written (same transaction): it is no longer open."""
    store.execute("DELETE FROM open_calls WHERE call_id = ?", (call_id,))


def list_open(store, node=None):
    sql = "SELECT * FROM open_calls" + (" WHERE node = ?" if node is not None else "") + " ORDER BY call_id"
    return store.query(sql, (node,) if node is not None else ())


def _cdr_of(row):
    from .cdr import Cdr
    started = to_ms(from_iso(row["started_at"]))
    answered = to_ms(from_iso(row["answered_at"])) if row["answered_at"] else None
    bridged = to_ms(from_iso(row["bridged_at"])) if row["bridged_at"] else None
    ended = max(t for t in (started, answered, bridged) if t is not None)  # the last instant known
    return Cdr(call_id=row["call_id"], account_id=row["account_id"], destination=row["destination"],
               started_ms=started, ended_ms=ended, disposition="failed", sip_code=0, sip_reason=STOPPED_REASON,
               hangup_cause="DIALER_STOPPED", hangup_by="dialer", lead_outcome="failed",
               campaign_id=row["campaign_id"], lead_id=row["lead_id"], agent_id=row["agent_id"], trunk=row["trunk"],
               caller_id=row["caller_id"], answered_ms=answered, bridged_ms=bridged, duration_ms=ended - started,
               ring_ms=(answered if answered is not None else ended) - started, ruleset=row["ruleset"],
               verdict=json.loads(row["verdict"]) if row["verdict"] else None, worker_id=None)


def recover(store, now, node="local"):
    """After a crash: a CDR for every call of ``node`` still open, and the leads this
    node held without a call back in the hopper. Returns counts."""
    from .cdr import write_cdr
    rows = list_open(store, node)
    written = 0
    for row in rows:
        out = write_cdr(store, _cdr_of(row), now)
        if out["written"]:
            written += 1
        else:  # its CDR was there already (the crash came between the two): just close it
            with store.transaction():
                close(store, row["call_id"])
    with store.transaction():
        released = store.execute(
            "UPDATE leads SET status = 'new', reserved_by = NULL, reserved_until = NULL, updated_at = ? "
            "WHERE status IN ('reserved', 'dialing') AND reserved_by LIKE ? "
            "AND id NOT IN (SELECT lead_id FROM open_calls WHERE lead_id IS NOT NULL)",
            (to_iso(now), f"%@{node}")).rowcount
    if rows or released:
        log.warn("recovered after an unclean stop: {n} call(s) interrupted by it recorded as failed "
                 "('{why}'), {r} lead(s) held without a call given back", n=written, why=STOPPED_REASON,
                 r=released)
    return {"calls": written, "already_recorded": len(rows) - written, "leads_released": released}



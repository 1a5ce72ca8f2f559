"""Call detail records: one row per call id, written with the call's attempt.

A :class:`Cdr` is built from an ended :class:`dialer.calls.CallLeg`.
:func:`write_cdr` stores it idempotently (a second write of the same call id
changes nothing and says so) in the same transaction as the lead's outcome and
the ``call_attempts`` row the frequency caps read (through
:func:`campaigns.leads.record_outcome` / :func:`campaigns.leads.record_attempt`,
the one writer of that table).

A connected call's lead outcome comes from the agent's wrap-up disposition, so
its CDR is written when the wrap-up ends (bounded by the floor's wrap limit);
other calls are written when they end.

Instants are ISO 8601 UTC text with milliseconds (as everywhere in the store);
durations are integer milliseconds; ``billsec`` is whole seconds from answer to
hang-up rounded up when above zero (1/1 carrier billing: 0 ms -> 0, 1 ms -> 1,
60 001 ms -> 61). Minutes and rates are Decimal, never float.
"""

import csv
import io
import json
import re
from dataclasses import dataclass, field
from decimal import ROUND_UP, Decimal

from core.errors import InputError, NotFound, StateError
from core.outbox import emit
from core.timeutil import from_ms, ms_to_iso, to_iso, utc

_COLUMNS = ("call_id", "account_id", "campaign_id", "lead_id", "agent_id", "trunk", "caller_id", "destination",
            "started_at", "answered_at", "bridged_at", "ended_at", "duration_ms", "ring_ms", "billable_ms", "billsec",
            "connect_delay_ms", "disposition", "abandoned", "opted_out", "agent_disposition", "lead_outcome",
            "sip_code", "sip_reason", "hangup_cause", "hangup_by", "recording_path", "recording_ms", "ruleset",
            "verdict", "worker_id", "created_at")


@dataclass(frozen=True)
class Cdr:
    """One finished call. Instants are epoch milliseconds (UTC)."""

    call_id: str
    account_id: int
    destination: str
    started_ms: int
    ended_ms: int
    disposition: str
    sip_code: int
    sip_reason: str
    hangup_cause: str
    hangup_by: str
    lead_outcome: str
    campaign_id: object = None
    lead_id: object = None
    agent_id: object = None
    trunk: object = None
    caller_id: object = None
    answered_ms: object = None
    bridged_ms: object = None
    duration_ms: int = 0
    ring_ms: int = 0
    billable_ms: int = 0
    billsec: int = 0
    connect_delay_ms: object = None
    abandoned: bool = False
    opted_out: bool = False
    agent_disposition: object = None
    callback_at: object = None  # datetime, for a "callback" wrap-up (goes to the lead, not the CDR)
    recording_path: object = None
    recording_ms: object = None
    ruleset: object = None
    verdict: dict = field(default=None)
    worker_id: object = None

    @classmethod
    def from_leg(cls, leg, agent_disposition=None, callback_at=None, dispositions=None):
        """The record of an ended call leg. ``agent_disposition`` is the wrap-up of a
        connected call (``dispositions``: the campaign's own, see dialer.agents)."""
        from .agents import disposition_outcome
        if leg.state != "ended":
            raise StateError(f"call {leg.call_id} is {leg.state}: its record is written when it has ended")
        if leg.account_id is None:
            raise InputError(f"call {leg.call_id}: no account to bill")
        agent_outcome = None
        if agent_disposition is not None:
            if leg.bridged_ms is None:
                raise InputError(f"call {leg.call_id} reached no agent: it has no wrap-up disposition")
            agent_outcome = disposition_outcome(agent_disposition, dispositions)
        outcome = leg.lead_outcome(agent_outcome)
        if outcome == "callback" and callback_at is None:
            raise InputError(f"call {leg.call_id}: a callback disposition needs the callback time")
        return cls(
            call_id=leg.call_id, account_id=leg.account_id, destination=leg.destination,
            started_ms=leg.started_ms, ended_ms=leg.ended_ms, disposition=leg.disposition,
            sip_code=leg.end_code, sip_reason=leg.end_reason or "", hangup_cause=leg.hangup_cause,
            hangup_by=leg.hangup_by, lead_outcome=outcome, campaign_id=leg.campaign_id, lead_id=leg.lead_id,
            agent_id=leg.agent, trunk=leg.trunk, caller_id=leg.caller_id, answered_ms=leg.answered_ms,
            bridged_ms=leg.bridged_ms, duration_ms=leg.duration_ms, ring_ms=leg.ring_ms,
            billable_ms=leg.billable_ms, billsec=leg.billsec, connect_delay_ms=leg.connect_delay_ms,
            abandoned=bool(leg.abandoned), opted_out=leg.opted_out, agent_disposition=agent_disposition,
            callback_at=callback_at, recording_path=leg.recording_path, recording_ms=leg.recording_ms,
            ruleset=leg.ruleset, verdict=leg.verdict, worker_id=leg.worker_id,
        )

    def row(self, now):
        return (self.call_id, self.account_id, self.campaign_id, self.lead_id, self.agent_id, self.trunk,
                self.caller_id, self.destination, ms_to_iso(self.started_ms), ms_to_iso(self.answered_ms),
                ms_to_iso(self.bridged_ms), ms_to_iso(self.ended_ms), self.duration_ms, self.ring_ms,
                self.billable_ms, self.billsec, self.connect_delay_ms, self.disposition, int(self.abandoned),
                int(self.opted_out), self.agent_disposition, self.lead_outcome, self.sip_code, self.sip_reason,
                self.hangup_cause, self.hangup_by, self.recording_path, self.recording_ms, self.ruleset,
                json.dumps(self.verdict, sort_keys=True, separators=(",", ":")) if self.verdict is not None else None,
                self.worker_id, to_iso(now))


def write_cdr(store, cdr, now, actor="dialer"):
    """Store a call's record with its attempt, in one transaction, once per call id.
    A lead's outcome goes through ``record_outcome`` (counts the attempt, recycles the
    lead, writes ``call_attempts``); a call without a lead writes ``call_attempts``
    only. A second write of the same call id changes nothing: ``written`` is False and
    ``same`` says whether the record given matches the one kept (a replay). A record
    that differs from the one kept is another call under the same id: it is logged as
    an error and kept aside in ``cdr_conflicts`` (:func:`conflicts`), never dropped.
    The call's ``open_calls`` row (dialer.opencalls) goes in the same transaction."""
    from campaigns.leads import record_attempt, record_outcome
    cols = ", ".join(_COLUMNS)
    marks = ", ".join("?" * len(_COLUMNS))
    values = cdr.row(now)
    with store.transaction():
        cur = store.execute(f"INSERT INTO cdrs ({cols}) VALUES ({marks}) ON CONFLICT (call_id) DO NOTHING", values)
        if cur.rowcount != 1:
            kept = store.query_one(f"SELECT {cols} FROM cdrs WHERE call_id = ?", (cdr.call_id,))
            same = tuple(kept[c] for c in _COLUMNS[:-1]) == values[:-1]
            if not same:  # another call under a kept id: an error, logged and kept aside, never dropped
                _conflict(store, cdr, values, kept, now)
            return {"call_id": cdr.call_id, "written": False, "same": same, "lead": None}
        from .opencalls import close
        close(store, cdr.call_id)  # the call is on record: no longer open
        # webhooks: the event in this transaction (one indexed read for an account without them)
        emit(store, cdr.account_id, "call.ended", now, lambda: call_ended_payload(store, cdr))
        started, ended = from_ms(cdr.started_ms), from_ms(cdr.ended_ms)
        lead = None
        if cdr.lead_id is not None:
            lead = record_outcome(store, cdr.lead_id, cdr.lead_outcome, ended, actor=actor, call_id=cdr.call_id,
                                  callback_at=cdr.callback_at,
                                  agent=str(cdr.agent_id) if cdr.agent_id is not None else None, started_at=started)
        else:
            record_attempt(store, cdr.call_id, cdr.destination, cdr.campaign_id, started, cdr.lead_outcome,
                           cdr.account_id)
    return {"call_id": cdr.call_id, "written": True, "same": True, "lead": lead}


def call_ended_payload(store, cdr):
    """The ``call.ended`` webhook's data: the call's record (ids, times, outcome)."""
    camp = store.query_one("SELECT name FROM campaigns WHERE id = ?", (cdr.campaign_id,)) \
        if cdr.campaign_id is not None else None
    return {"call_id": cdr.call_id, "campaign_id": cdr.campaign_id, "campaign": camp["name"] if camp else None,
            "lead_id": cdr.lead_id, "agent_id": cdr.agent_id, "destination": cdr.destination,
            "caller_id": cdr.caller_id, "started_at": ms_to_iso(cdr.started_ms), "answered_at": ms_to_iso(cdr.answered_ms),
            "bridged_at": ms_to_iso(cdr.bridged_ms), "ended_at": ms_to_iso(cdr.ended_ms), "duration_ms": cdr.duration_ms,
            "billsec": cdr.billsec, "disposition": cdr.disposition, "abandoned": bool(cdr.abandoned),
            "opted_out": bool(cdr.opted_out), "agent_disposition": cdr.agent_disposition,
            "lead_outcome": cdr.lead_outcome, "sip_code": cdr.sip_code, "sip_reason": cdr.sip_reason,
            "hangup_by": cdr.hangup_by, "recorded": cdr.recording_path is not None}


def _conflict(store, cdr, values, kept, now):
    from twisted.logger import Logger
    record = dict(zip(_COLUMNS, values))
    store.execute("INSERT INTO cdr_conflicts (call_id, account_id, at, cdr, kept) VALUES (?, ?, ?, ?, ?)",
                  (cdr.call_id, cdr.account_id, to_iso(now), json.dumps(record, sort_keys=True, default=str),
                   json.dumps(kept, sort_keys=True, default=str)))
    Logger(namespace="dialer.cdr").error(
        "call record {call_id} conflicts with the one kept under that id (destination {new} vs {old}, started "
        "{t_new} vs {t_old}): kept aside in cdr_conflicts, not dropped", call_id=cdr.call_id,
        new=record["destination"], old=kept["destination"], t_new=record["started_at"], t_old=kept["started_at"])


def conflicts(store, account_id=None):
    """CDRs that met an existing call id with different content (kept aside)."""
    sql = "SELECT * FROM cdr_conflicts" + (" WHERE account_id = ?" if account_id is not None else "") + " ORDER BY id"
    rows = store.query(sql, (account_id,) if account_id is not None else ())
    for r in rows:
        r["cdr"], r["kept"] = json.loads(r["cdr"]), json.loads(r["kept"])
    return rows


def attach_recording(store, call_id, path, duration_ms=None):
    """A recording finished after the record was written: attach it (once)."""
    with store.transaction():
        row = store.query_one("SELECT recording_path FROM cdrs WHERE call_id = ?", (call_id,))
        if row is None:
            raise NotFound(f"no call record {call_id!r}")
        if row["recording_path"] is not None:
            if row["recording_path"] == str(path):
                return False
            raise InputError(f"call {call_id} already has its recording {row['recording_path']}")
        store.execute("UPDATE cdrs SET recording_path = ?, recording_ms = ? WHERE call_id = ?",
                      (str(path), duration_ms, call_id))
    return True


def _resolve(store, campaign=None, account=None):
    """(campaign id or None, account id): a campaign (id, or name within ``account``)
    and its account; without one, ``account`` (name, id, or None for the
    installation's only account)."""
    from campaigns.store import get_campaign, resolve_account
    if campaign is not None:
        camp = get_campaign(store, campaign, account)
        return camp["id"], camp["account_id"]
    return None, resolve_account(store, account)["id"]


def _decode(row):
    row["abandoned"], row["opted_out"] = bool(row["abandoned"]), bool(row["opted_out"])
    row["verdict"] = json.loads(row["verdict"]) if row["verdict"] else None
    return row


def list_cdrs(store, campaign=None, account=None, since=None, until=None, limit=1000, after=None):
    """One account's records by call start, oldest first, over the half-open
    [since, until): a campaign's (id, or name within ``account``), else the account's
    (name, id, or None for the installation's only account). ``after``: the
    (started_at as stored, call_id) of the previous page's last record: the next page
    starts after it (the order is by that pair, which is unique)."""
    if not isinstance(limit, int) or limit < 1:
        raise InputError("limit must be a whole number of at least 1")
    campaign_id, account_id = _resolve(store, campaign, account)
    where, params = ["c.account_id = ?"], [account_id]
    if campaign_id is not None:
        where.append("c.campaign_id = ?")
        params.append(campaign_id)
    if since is not None:
        where.append("c.started_at >= ?")
        params.append(to_iso(utc(since)))
    if until is not None:
        where.append("c.started_at < ?")
        params.append(to_iso(utc(until)))
    if after is not None:
        at, call_id = after
        where.append("(c.started_at > ? OR (c.started_at = ? AND c.call_id > ?))")
        params += [str(at), str(at), str(call_id)]
    sql = ("SELECT c.*, a.name AS account, p.name AS campaign FROM cdrs c "
           "JOIN accounts a ON a.id = c.account_id LEFT JOIN campaigns p ON p.id = c.campaign_id"
           " WHERE " + " AND ".join(where)
           + " ORDER BY c.started_at, c.call_id LIMIT ?")
    return [_decode(r) for r in store.query(sql, params + [limit])]


def campaign_stats(store, campaign, since, until=None, account=None):
    """Dials, answers, live answers, connects, abandons over [since, until) for a
    campaign (id, or name within ``account``). Live answers, abandons and
    ``abandon_rate`` (abandons over live answers, rounded up to 4 decimals so it never
    understates) are by the one definition of ``dialer.abandons``; ``billable_minutes``
    is the sum of billsec / 60 as Decimal, rounded up to 6 decimals."""
    if campaign is None:
        raise InputError("campaign_stats needs a campaign")
    campaign_id, _ = _resolve(store, campaign, account)
    params = [campaign_id, to_iso(utc(since))]
    sql_until = ""
    if until is not None:
        sql_until = " AND started_at < ?"
        params.append(to_iso(utc(until)))
    from .abandons import ABANDON_SQL, LIVE_SQL, rate_decimal
    row = store.query_one(
        "SELECT COUNT(*) AS dials, "
        "SUM(CASE WHEN answered_at IS NOT NULL THEN 1 ELSE 0 END) AS answers, "
        f"SUM(CASE WHEN {LIVE_SQL} THEN 1 ELSE 0 END) AS live_answers, "
        "SUM(CASE WHEN bridged_at IS NOT NULL THEN 1 ELSE 0 END) AS connects, "
        f"SUM(CASE WHEN {ABANDON_SQL} THEN 1 ELSE 0 END) AS abandons, SUM(billsec) AS billsec "
        f"FROM cdrs WHERE campaign_id = ? AND started_at >= ?{sql_until}", params)
    by = {r["disposition"]: r["n"] for r in store.query(
        f"SELECT disposition, COUNT(*) AS n FROM cdrs WHERE campaign_id = ? AND started_at >= ?{sql_until} "
        "GROUP BY disposition ORDER BY disposition", params)}
    n = {k: int(row[k] or 0) for k in ("dials", "answers", "live_answers", "connects", "abandons", "billsec")}
    rate = rate_decimal(n["live_answers"], n["abandons"])
    return {"campaign_id": campaign_id, "since": to_iso(utc(since)), "until": to_iso(utc(until)) if until else None,
            "dials": n["dials"], "answers": n["answers"], "live_answers": n["live_answers"], "connects": n["connects"],
            "abandons": n["abandons"], "abandon_rate": rate, "billable_seconds": n["billsec"],
            "billable_minutes": (Decimal(n["billsec"]) / Decimal(60)).quantize(Decimal("0.000001"), rounding=ROUND_UP),
            "by_disposition": by}


# ---------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------

ASTERISK_DISPOSITION = {"connected": "ANSWERED", "answered": "ANSWERED", "abandoned": "ANSWERED",
                        "machine": "ANSWERED", "no-answer": "NO ANSWER", "busy": "BUSY", "congestion": "CONGESTION",
                        "failed": "FAILED", "invalid-number": "FAILED"}
ASTERISK_COLUMNS = ("accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata",
                    "start", "answer", "end", "duration", "billsec", "disposition", "amaflags", "uniqueid",
                    "userfield")
EXTRA_COLUMNS = ("campaign_id", "lead_id", "agent_id", "started_at", "answered_at", "ended_at", "duration_ms",
                 "billable_ms", "sip_code", "sip_reason", "hangup_cause", "hangup_by", "abandoned",
                 "connect_delay_ms", "ruleset", "recording_path")
_E164 = re.compile(r"^\+[0-9]{1,15}$")


def _stamp(iso):
    """Asterisk's 'YYYY-MM-DD HH:MM:SS' (UTC here) from our stored ISO text."""
    return "" if not iso else iso[:10] + " " + iso[11:19]


def export_csv(rows, out=None):
    """Records (from :func:`list_cdrs`) as CSV: Asterisk's cdr-csv columns first
    (times in UTC to the second; duration and billsec whole seconds rounded up;
    ``userfield`` holds our finer disposition), then the exact figures. Free-text
    cells are neutralised against formula injection; E.164 numbers are kept as they are."""
    from campaigns.files import neutralise
    buf = out if out is not None else io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(ASTERISK_COLUMNS + EXTRA_COLUMNS)

    def num(v):
        return v if v and _E164.match(v) else neutralise(v)

    for r in rows:
        w.writerow([
            neutralise(r.get("account") or str(r["account_id"])), num(r["caller_id"]), num(r["destination"]),
            neutralise(r.get("campaign") or ""), num(r["caller_id"]),
            neutralise(f"SIP/{r['trunk']}" if r["trunk"] else ""),
            f"agent/{r['agent_id']}" if r["agent_id"] is not None else "", "Dial", num(r["destination"]),
            _stamp(r["started_at"]), _stamp(r["answered_at"]), _stamp(r["ended_at"]),
            -(-r["duration_ms"] // 1000), r["billsec"], ASTERISK_DISPOSITION.get(r["disposition"], "FAILED"),
            "DOCUMENTATION", neutralise(r["call_id"]), r["disposition"],
            r["campaign_id"] if r["campaign_id"] is not None else "", r["lead_id"] if r["lead_id"] is not None else "",
            r["agent_id"] if r["agent_id"] is not None else "", r["started_at"], r["answered_at"] or "",
            r["ended_at"], r["duration_ms"], r["billable_ms"], r["sip_code"], neutralise(r["sip_reason"]),
            r["hangup_cause"], r["hangup_by"], int(bool(r["abandoned"])),
            r["connect_delay_ms"] if r["connect_delay_ms"] is not None else "", neutralise(r["ruleset"] or ""),
            neutralise(r["recording_path"] or ""),
        ])
    return buf.getvalue() if out is None else None

"""A call's compliance evidence: what the dialer knew when it placed the call.

What a lawyer needs to answer a TCPA or Ofcom complaint about one call: which
rule-set version allowed it and when it was checked, which DNC lists were consulted
(the national registry's as-of date, the company and campaign lists' versions), the
callee's time zones and local time with the calling windows that applied, and the
campaign's abandon rate over the jurisdiction's window at that instant.

**Recorded at dial time** (evidence version ``EVIDENCE_VERSION``), in the call's
verdict (``open_calls.verdict`` when the call opens, ``cdrs.verdict`` with its CDR),
through the journal like every write of the loop; nothing is recomputed later:

- on the store's thread, with the claim (:func:`dial_evidence`): the hopper's
  verdict (``rules.engine.Verdict``: rule-set version, instant, zones, local time
  and windows per zone, reasons, flags) and its rules context (the registry of the
  rule set's jurisdiction with its as-of date, the company and campaign DNC list
  versions);
- on the reactor, at the dial (:func:`at_dial`): the abandon window's counts the
  loop keeps in memory (``dialer.abandons.AbandonWindow``: the CDRs of the window
  when the loop started plus every call it has seen end), the cap and the window's
  length. Reading them costs no walk over the window (O(1)).

**Read** (:func:`call_evidence`, ``dialer call evidence CALL_ID``; the records
export's ``evidence.jsonl``): one account's call, from its CDR, or its open-call
row while it is in progress. A call placed before evidence was recorded shows
``not recorded (before evidence v1)`` for what it lacks, never an invented value;
the rule-set version and zones were recorded before (they are shown when present).
"""

import datetime as _dt
import functools
import json

import pytz

from core.errors import InputError, NotFound
from core.tenancy import resolve_account
from core.timeutil import from_iso, shown

from .abandons import rate_decimal
from .calls import verdict_summary

EVIDENCE_VERSION = 1
NOT_RECORDED = f"not recorded (before evidence v{EVIDENCE_VERSION})"


# ------------------------------------------------------------------------- at dial time

def dial_evidence(verdict, ctx):
    """On the store's thread, with the claim: the verdict's summary (what the call
    keeps, ``dialer.calls.verdict_summary``) with the evidence the rules context
    holds. ``verdict``: a ``rules.engine.Verdict`` (a dict or None is returned as it
    is); ``ctx``: the ``rules.engine.Context`` it was decided in (None: no evidence)."""
    if verdict is None or isinstance(verdict, dict) or ctx is None:
        return verdict_summary(verdict)
    out = verdict_summary(verdict)
    jur = (verdict.ruleset or "").rpartition("@")[0]
    rs = ctx.rulesets.get(jur) if jur else None
    reg = ctx.dnc.registries.get(jur) if jur else None
    camp = ctx.campaign
    registry = None
    if reg is not None:
        registry = {"jurisdiction": jur, "label": reg.label, "as_of": reg.as_of.isoformat(),
                    "age_days": (verdict.at.date() - reg.as_of).days, "readable": reg.error is None}
    out["evidence"] = EVIDENCE_VERSION
    out["number"] = verdict.number
    out["local"] = [dict(w) for w in verdict.window]
    out["dnc"] = {
        "registry": registry,
        "registry_required": rs.registry_required if rs is not None else None,
        "registry_max_age_days": rs.registry_max_age_days if rs is not None else None,
        "registry_waived": bool(camp is not None and jur in camp.registry_waived),
        "company_list_version": ctx.dnc.company_version,
        "campaign_list_version": ctx.dnc.campaign_version,
    }
    return out


def at_dial(verdict, window, now_s, pacing=None):
    """On the reactor, as the call is placed: the verdict's summary (a new dict) with
    the abandon window's state now (``window``: the loop's ``AbandonWindow``;
    ``pacing``: its ``dialer.jurisdiction.PacingRules``, for the cap). None stays None."""
    if verdict is None:
        return None
    out = dict(verdict_summary(verdict))
    lives, abandons = window.counts(now_s)
    rate = rate_decimal(lives, abandons)
    out["abandon_window"] = {
        "hours": window.hours, "live_answers": lives, "abandons": abandons,
        "rate": str(rate) if rate is not None else None,
        "cap": repr(pacing.cap) if pacing is not None else None,
        "ruleset": pacing.ruleset if pacing is not None else None,
    }
    return out


# ------------------------------------------------------------------------- reading it back

CALL_COLUMNS = ("call_id, account_id, campaign_id, lead_id, agent_id, trunk, caller_id, destination, started_at, "
                "answered_at, bridged_at, ended_at, disposition, abandoned, opted_out, agent_disposition, "
                "lead_outcome, sip_code, sip_reason, hangup_cause, hangup_by, recording_path, recording_ms, "
                "ruleset, verdict")


@functools.lru_cache(maxsize=256)
def _zone(name):
    return pytz.timezone(name)


def instant(iso):
    """A stored instant (ISO UTC text) as an aware datetime; the storage form
    (``2026-03-10T10:00:00.000Z``) without the general parser."""
    if len(iso) == 24 and iso[-1] == "Z":
        return _dt.datetime.fromisoformat(iso[:-1]).replace(tzinfo=_dt.timezone.utc)
    return from_iso(iso)


def _local(iso, zone):
    try:
        return instant(iso).astimezone(_zone(zone)).strftime("%Y-%m-%dT%H:%M:%S%z")
    except (pytz.UnknownTimeZoneError, ValueError):
        return None


def evidence_of(row, account_name, campaign_name=None, time_zone="UTC", state="ended"):
    """A call's evidence from its CDR row (``CALL_COLUMNS``; ``verdict`` as stored:
    JSON text or a dict) and its account's billing time zone."""
    v = row["verdict"]
    if isinstance(v, str):
        v = json.loads(v) if v else None
    v = v or {}
    recorded = isinstance(v.get("evidence"), int) and v["evidence"] >= 1
    zones = v.get("zones") or None
    started = row["started_at"]
    return {
        "call_id": row["call_id"], "account": account_name, "campaign": campaign_name,
        "campaign_id": row["campaign_id"], "lead_id": row["lead_id"], "state": state,
        "destination": row["destination"], "caller_id": row["caller_id"], "trunk": row["trunk"],
        "started_at": started, "answered_at": row.get("answered_at"), "bridged_at": row.get("bridged_at"),
        "ended_at": row.get("ended_at"), "account_time_zone": time_zone,
        "started_local": _local(started, time_zone),
        "outcome": {k: (bool(row[k]) if k in ("abandoned", "opted_out") and row.get(k) is not None else row.get(k))
                    for k in ("disposition", "abandoned", "opted_out", "agent_id", "agent_disposition",
                              "lead_outcome", "sip_code", "sip_reason", "hangup_cause", "hangup_by")},
        "recording": row.get("recording_path"),
        "evidence_version": v["evidence"] if recorded else None,
        "rules": {
            "ruleset": row["ruleset"] or v.get("ruleset") or NOT_RECORDED,
            "checked_at": v.get("at") or NOT_RECORDED,
            "allowed": v.get("allowed") if "allowed" in v else NOT_RECORDED,
            "reasons": v.get("reasons", []), "flags": v.get("flags", []),
        },
        "callee": {
            "zones": zones if zones is not None else NOT_RECORDED,
            # the call's start in each recorded zone: computed from two recorded facts
            "started_in_zones": ({z: _local(started, z) for z in zones} if zones else NOT_RECORDED),
            "local_time_and_windows": v["local"] if recorded and "local" in v else NOT_RECORDED,
        },
        "dnc": v["dnc"] if recorded and "dnc" in v else NOT_RECORDED,
        "abandon_window": v["abandon_window"] if recorded and "abandon_window" in v else NOT_RECORDED,
    }


def call_evidence(store, call_id, account=None):
    """One call's evidence, within ``account`` (name or id; None: the installation's
    only account). A call of another account is not found, as an unknown one."""
    from billing.plans import plan_row
    cid = str(call_id or "").strip()
    if not cid or len(cid) > 100:
        raise InputError(f"call id {shown(call_id)} is not a call id")
    acc = resolve_account(store, account)
    tz = plan_row(store, acc["id"])["time_zone"]
    row = store.query_one(f"SELECT {CALL_COLUMNS} FROM cdrs WHERE call_id = ? AND account_id = ?", (cid, acc["id"]))
    state = "ended"
    if row is None:
        row = store.query_one(
            "SELECT call_id, account_id, campaign_id, lead_id, agent_id, trunk, caller_id, destination, started_at, "
            "answered_at, bridged_at, ruleset, verdict FROM open_calls WHERE call_id = ? AND account_id = ?",
            (cid, acc["id"]))
        if row is None:
            raise NotFound(f"no call {shown(cid)} in account {acc['name']!r}")
        state = "open (in progress, or interrupted by a crash and not recovered yet)"
    camp = None
    if row["campaign_id"] is not None:
        c = store.query_one("SELECT name FROM campaigns WHERE id = ? AND account_id = ?",
                            (row["campaign_id"], acc["id"]))
        camp = c["name"] if c else None
    return evidence_of(row, acc["name"], camp, tz, state)


def describe(ev):
    """A call's evidence as lines of text."""
    def val(x):
        return x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)

    o, r, c = ev["outcome"], ev["rules"], ev["callee"]
    lines = [
        f"call {ev['call_id']} ({ev['state']}), account {ev['account']}, campaign {ev['campaign'] or '-'}, "
        f"lead {ev['lead_id'] if ev['lead_id'] is not None else '-'}",
        f"  {ev['caller_id'] or '-'} -> {ev['destination']} via {ev['trunk'] or '-'}",
        f"  started {ev['started_at']} ({ev['started_local'] or '?'} {ev['account_time_zone']}), "
        f"answered {ev['answered_at'] or '-'}, ended {ev['ended_at'] or '-'}",
    ]
    if o.get("disposition") is not None:
        lines.append(f"  outcome: {o['disposition']}" + (", abandoned" if o.get("abandoned") else "")
                     + (", opted out" if o.get("opted_out") else "")
                     + f", hang-up {o.get('hangup_cause')} by {o.get('hangup_by')} (SIP {o.get('sip_code')})"
                     + (f", agent {o['agent_id']}" if o.get("agent_id") is not None else "")
                     + (f", disposition {o['agent_disposition']}" if o.get("agent_disposition") else ""))
    lines.append(f"  recording: {ev['recording'] or 'none'}")
    lines.append(f"  evidence version: {ev['evidence_version'] or NOT_RECORDED}")
    lines.append(f"  rule set: {r['ruleset']}, checked at {r['checked_at']}, allowed: {val(r['allowed'])}"
                 + (f", flags {', '.join(r['flags'])}" if r["flags"] else ""))
    lines.append(f"  callee zones: {val(c['zones'])}")
    if isinstance(c["started_in_zones"], dict):
        for z, t in c["started_in_zones"].items():
            lines.append(f"    call start in {z}: {t}")
    if isinstance(c["local_time_and_windows"], list):
        for w in c["local_time_and_windows"]:
            wins = ", ".join(w.get("windows") or []) or "any time"
            lines.append(f"    at the check in {w['zone']}: {w['local']}, calling windows {wins} "
                         f"({', '.join(w.get('rules') or []) or 'no rule'})")
    else:
        lines.append(f"    local time and windows at the check: {c['local_time_and_windows']}")
    d = ev["dnc"]
    if isinstance(d, dict):
        reg = d["registry"]
        lines.append("  DNC: " + (f"{reg['jurisdiction']} {reg['label']} as of {reg['as_of']} ({reg['age_days']} days "
                                  f"old at the check" + ("" if reg["readable"] else ", UNREADABLE") + ")"
                                  if reg else "no national registry imported")
                     + f"; required {val(d['registry_required'])}, max age {val(d['registry_max_age_days'])} days"
                     + (", WAIVED for the campaign" if d["registry_waived"] else "")
                     + f"; company list version {val(d['company_list_version'])}, campaign list version "
                       f"{val(d['campaign_list_version'])}")
    else:
        lines.append(f"  DNC: {d}")
    a = ev["abandon_window"]
    if isinstance(a, dict):
        lines.append(f"  abandon window at the dial: {a['abandons']} abandoned of {a['live_answers']} live answers in "
                     f"the last {a['hours']:g} h (rate {a['rate'] or 'none'}, cap {a['cap']}, rule set "
                     f"{a['ruleset'] or '-'})")
    else:
        lines.append(f"  abandon window at the dial: {a}")
    return lines

"""Lead lists: import (mapped, normalised, deduplicated, resumable), the screening
preview, the lead life cycle (outcomes, recycling, callbacks, opt-outs)."""

import datetime as _dt
import hashlib
import json
import os

import pytz

from dialer.errors import InputError, NotFound
from dialer.timeutil import to_iso, utc
from rules import audit
from rules.engine import (NEVER_CATEGORIES, Lead, Screener, business_group, find_runs, is_campaign_wide,
                          next_allowed, run_group)
from rules.numbers import NumberFacts, US_STATES, STATE_CODES, normalise

from . import model
from .store import get_campaign, resolve_account

FIELDS = {
    "phone": ("phone", "phone_number", "number", "telephone", "tel", "mobile", "phone1"),
    "alt_phones": ("alt_phone", "alternate", "alternates", "phone2", "alt_phones", "other_phone"),
    "name": ("name", "full_name", "contact", "contact_name"),
    "first_name": ("first_name", "firstname", "first"),
    "last_name": ("last_name", "lastname", "last", "surname"),
    "business": ("business", "company", "company_name", "business_id", "organisation", "organization"),
    "state": ("state", "st", "province"),
    "postal_code": ("postal_code", "zip", "zipcode", "zip_code", "postcode"),
    "zone": ("zone", "timezone", "time_zone", "tz"),
}
DEDUPE = ("list", "campaign", "account", "none")
CHUNK = 50_000
_STATE_NAMES = {k.lower(): v for k, v in US_STATES.items()}


def _norm_header(h):
    return "_".join(str(h).strip().lower().replace("-", " ").split())


def resolve_mapping(header, given=None):
    """Field -> list of column indexes. ``given`` is 'phone=COL,name=COL,...' or a dict;
    unmapped fields are found by common header names. Unknown fields or columns are errors."""
    norm = [_norm_header(h) for h in header]
    out = {}
    if given:
        items = given.items() if isinstance(given, dict) else \
            [p.split("=", 1) if "=" in p else (p, None) for p in str(given).split(",") if p.strip()]
        for field, col in items:
            field = field.strip()
            if field not in FIELDS:
                raise InputError(f"--map: unknown field {field!r} (fields: {', '.join(FIELDS)})")
            if col is None:
                raise InputError(f"--map: write {field}=COLUMN")
            cols = []
            for c in str(col).split("+"):
                c = c.strip()
                if c in header:
                    cols.append(header.index(c))
                elif _norm_header(c) in norm:
                    cols.append(norm.index(_norm_header(c)))
                else:
                    raise InputError(f"--map {field}={c}: the file has no column {c!r} (columns: {', '.join(header)})")
            out[field] = cols
    for field, names in FIELDS.items():
        if field in out:
            continue
        for n in names:
            if n in norm:
                out[field] = [norm.index(n)]
                break
    if "phone" not in out:
        raise InputError(f"no phone column: map one with --map phone=COLUMN (columns: {', '.join(header)})")
    return out


def _file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _clean_state(text, region):
    s = text.strip()
    if not s:
        return None, None
    if region == "US":
        code = s.upper() if s.upper() in STATE_CODES else _STATE_NAMES.get(s.lower())
        if code is None:
            return None, f"{s!r} is not a US state"
        return code, None
    return s.upper(), None


def facts_of(row):
    """NumberFacts from a stored lead row: computed once at import, never again."""
    return NumberFacts(row["phone_raw"], row["phone"], int(row["phone"][1:]), row["region"], row["number_type"],
                       tuple(row["zones"].split(",")) if row["zones"] else (), row["number_state"], False)


def lead_of(row):
    groups = tuple(row["groups"].split(",")) if row.get("groups") else ()
    return Lead(row["phone"], state=row["state"], zone=row["zone"], business=None, region=row["region"],
                facts=facts_of(row), groups=groups)


# ---------------------------------------------------------------------------------
# import
# ---------------------------------------------------------------------------------

def import_list(store, path, campaign, now, actor, mapping=None, region="US", dedupe="campaign",
                progress=None, resume=None, chunk=CHUNK, account=None):
    """Import a CSV/XLSX list into a campaign. Rows commit in chunks as *staged* leads
    (invisible to the hopper) with a checkpoint; the last step makes them dialable in
    one transaction. A crash leaves a resumable job (``resume=IMPORT_ID``), never half a
    list that looks complete. Returns the summary with the screening preview.
    ``campaign``: id, row, or name (within ``account`` when given)."""
    from .files import open_table
    from rules.service import load_context
    if dedupe not in DEDUPE:
        raise InputError(f"--dedupe must be one of {', '.join(DEDUPE)}")
    region = region.upper()
    camp = get_campaign(store, campaign, account)
    campaign = camp["name"]
    if camp["state"] == "finished":
        raise InputError(f"campaign {campaign!r} is finished: lists cannot be added")
    table = open_table(str(path))
    fmap = resolve_mapping(table.header, mapping)
    sha = _file_sha256(path)
    ctx = load_context(store, now, region, camp["id"])
    special = ctx.special_codes
    if resume is not None:
        job = store.query_one("SELECT * FROM imports WHERE id = ?", (resume,))
        if job is None or job["campaign_id"] != camp["id"]:
            raise NotFound(f"no import {resume} for campaign {campaign!r}")
        if job["status"] != "running":
            raise InputError(f"import {resume} is {job['status']}, not resumable")
        if job["file_sha256"] != sha:
            raise InputError(f"import {resume} was of another file (checksum differs): give the same file to resume")
        import_id, rows_done = job["id"], job["rows_done"]
        dedupe, region = job["dedupe"], job["region"]
        counts = {"imported": job["imported"], "rejected": job["rejected"], "duplicates": job["duplicates"]}
    else:
        with store.transaction():
            cur = store.execute(
                "INSERT INTO imports (campaign_id, file_name, file_sha256, kind, mapping, region, dedupe, status, "
                "started_at, actor, account_id) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                (camp["id"], os.path.basename(str(path)), sha, table.kind,
                 json.dumps({k: [table.header[i] for i in v] for k, v in fmap.items()}), region, dedupe,
                 to_iso(now), actor, camp["account_id"]))
            import_id, rows_done = cur.lastrowid, 0
        counts = {"imported": 0, "rejected": 0, "duplicates": 0}
    # numbers already taken: this file's staged rows, and the campaign's or account's leads
    seen = set(r["phone"] for r in store.query(
        "SELECT phone FROM leads WHERE campaign_id = ? AND status = 'staged' AND import_id = ?",
        (camp["id"], import_id)))
    if dedupe == "campaign":
        existing = set(r["phone"] for r in store.query(
            "SELECT phone FROM leads WHERE campaign_id = ? AND status != 'staged'", (camp["id"],)))
    elif dedupe == "account":
        existing = set(r["phone"] for r in store.query(
            "SELECT phone FROM leads WHERE account_id = ? AND status != 'staged'", (camp["account_id"],)))
    else:
        existing = set()
    if dedupe == "none":
        seen = set()
    ts = to_iso(now)
    tally = None
    if resume is None:  # a fresh import screens as it goes; a resumed one re-reads the campaign at the end
        from rules.service import load_recent_history
        ctx.history = load_recent_history(store, now, 720, camp["account_id"])
        tally = PreviewTally(ctx, utc(now))
    mapped = {i for cols in fmap.values() for i in cols}
    custom_cols = [(i, h) for i, h in enumerate(table.header) if i not in mapped]
    phone_col = table.header[fmap["phone"][0]]
    leads, errors = [], []
    last_row = rows_done

    def flush():
        nonlocal leads, errors
        with store.transaction():
            if leads:
                store.conn.executemany(
                    "INSERT INTO leads (campaign_id, account_id, import_id, row_no, phone, phone_raw, alt_phones, name, "
                    "business, state, postal_code, zone, region, number_state, zones, number_type, groups, custom, "
                    "status, attempts, priority, created_at, updated_at) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'staged', 0, 1, ?, ?)", leads)
            if errors:
                store.conn.executemany(
                    "INSERT INTO import_errors (import_id, row_no, col, value, reason) VALUES (?, ?, ?, ?, ?)", errors)
            store.execute("UPDATE imports SET rows_done = ?, imported = ?, rejected = ?, duplicates = ? WHERE id = ?",
                          (last_row, counts["imported"], counts["rejected"], counts["duplicates"], import_id))
        if progress is not None:
            progress(last_row, table.progress())
        leads, errors = [], []

    cid, aid = camp["id"], camp["account_id"]
    state_col = table.header[fmap["state"][0]] if "state" in fmap else None
    zone_col = table.header[fmap["zone"][0]] if "zone" in fmap else None
    has = {k: k in fmap for k in FIELDS}
    state_cache = {}
    encode = json.JSONEncoder(ensure_ascii=False).encode

    def getter(field):
        """cells -> the field's text (stripped; several columns joined by a space)."""
        cols = fmap.get(field)
        if not cols:
            return lambda cells: ""
        if len(cols) == 1:
            i = cols[0]
            return lambda cells: cells[i].strip()
        return lambda cells: " ".join(cells[i].strip() for i in cols if cells[i].strip())

    get_name, get_first, get_last = getter("name"), getter("first_name"), getter("last_name")
    get_business, get_postal, get_alts = getter("business"), getter("postal_code"), getter("alt_phones")
    get_phone, get_state, get_zone = getter("phone"), getter("state"), getter("zone")
    for row_no, cells in table.rows:
        if row_no <= rows_done:
            continue
        last_row = row_no
        raw = get_phone(cells)
        if not raw:
            errors.append((import_id, row_no, phone_col, "", "no phone number"))
            counts["rejected"] += 1
            continue
        f = normalise(raw, region, special)
        problem = None
        col = phone_col
        if f.e164 is None:
            problem = (f"{f.short_code} is an emergency number" if f.emergency and f.short_code else
                       f"{f.short_code} is a service code, not a subscriber number" if f.short_code else
                       f.error + (" (it reaches an emergency number)" if f.emergency else ""))
        elif f.emergency:
            problem = "reaches an emergency number"
        state = None
        if has["state"]:
            st_raw = get_state(cells)
            hit = state_cache.get((st_raw, f.region))
            if hit is None:
                hit = state_cache[(st_raw, f.region)] = _clean_state(st_raw, f.region or region)
            state, serr = hit
            if problem is None and serr:
                problem, col = serr, state_col
        zone = None
        if has["zone"]:
            zone = get_zone(cells) or None
            if problem is None and zone and zone not in pytz.all_timezones_set:
                problem, col = f"{zone!r} is not a time zone name (e.g. America/Chicago)", zone_col
        if problem is not None:
            errors.append((import_id, row_no, col, raw, problem))
            counts["rejected"] += 1
        elif f.e164 in seen or f.e164 in existing:
            errors.append((import_id, row_no, phone_col, raw,
                           "duplicate in this list" if f.e164 in seen else f"already in this {dedupe}"))
            counts["duplicates"] += 1
        else:
            if dedupe != "none":
                seen.add(f.e164)
            alts = None
            if has["alt_phones"]:
                alts = []
                for a in get_alts(cells).replace(";", ",").split(","):
                    if a.strip():
                        af = normalise(a, region, special)
                        if af.e164 is None or af.emergency:
                            errors.append((import_id, row_no, table.header[fmap["alt_phones"][0]], a,
                                           f"alternate number ignored: {af.error or 'emergency'}"))
                        else:
                            alts.append(af.e164)
                alts = json.dumps(alts) if alts else None
            if has["name"]:
                name = get_name(cells)
            elif has["first_name"] or has["last_name"]:
                first, last = get_first(cells), get_last(cells)
                name = f"{first} {last}" if first and last else first or last
            else:
                name = None
            business = get_business(cells) or None
            custom = None
            if custom_cols:
                c = {h: cells[i] for i, h in custom_cols if cells[i] != ""}
                if c:
                    custom = encode(c)
            leads.append((cid, aid, import_id, row_no, f.e164, raw, alts, name or None, business, state,
                          get_postal(cells) or None, zone, f.region,
                          f.state, ",".join(f.zones), f.kind, business_group(business) if business else None,
                          custom, ts, ts))
            counts["imported"] += 1
            if tally is not None:
                tally.add(Lead(f.e164, state=state, zone=zone, region=f.region, facts=f), row_no)
        if len(leads) + len(errors) >= chunk:
            flush()
    flush()
    if counts["imported"] + counts["rejected"] + counts["duplicates"] == 0:
        with store.transaction():
            store.execute("UPDATE imports SET status = 'failed', finished_at = ? WHERE id = ?", (to_iso(now), import_id))
        raise InputError(f"{path} has no data rows")
    return _finish_import(store, camp, import_id, counts, now, actor, tally)


def _finish_import(store, camp, import_id, counts, now, actor, tally=None):
    """Make the staged leads dialable, compute multi-line groups, record the summary."""
    with store.transaction():
        store.execute("UPDATE leads SET status = 'new' WHERE campaign_id = ? AND status = 'staged' AND import_id = ?",
                      (camp["id"], import_id))
        n_groups = assign_run_groups(store, camp["id"])
        job = store.query_one("SELECT * FROM imports WHERE id = ?", (import_id,))
        summary = {
            "import_id": import_id, "campaign": camp["name"], "file": job["file_name"], "rows": counts["imported"] + counts["rejected"] + counts["duplicates"],
            "imported": counts["imported"], "rejected": counts["rejected"], "duplicates": counts["duplicates"],
            "rejected_by_reason": {r["reason"]: r["n"] for r in store.query(
                "SELECT reason, COUNT(*) AS n FROM import_errors WHERE import_id = ? AND reason NOT LIKE 'duplicate%' "
                "AND reason NOT LIKE 'already in%' AND reason NOT LIKE 'alternate%' GROUP BY reason ORDER BY n DESC",
                (import_id,))},
            "multiline_runs": n_groups,
        }
        store.execute("UPDATE imports SET status = 'done', finished_at = ?, summary = ? WHERE id = ?",
                      (to_iso(now), json.dumps(summary), import_id))
        audit.append(store, now, actor, "list.import", f"campaign:{camp['name']}", summary["file"],
                     {k: summary[k] for k in ("import_id", "rows", "imported", "rejected", "duplicates")},
                     account_id=camp["account_id"])
    summary["preview"] = tally.result(_group_sizes(store, camp["id"])) if tally is not None else \
        preview(store, camp["id"], now)
    return summary


def assign_run_groups(store, campaign_id):
    """Runs of near-consecutive numbers across the whole campaign get a group key, so
    the hopper keeps one live call per multi-line business."""
    from rules.service import load_rulesets
    rulesets = load_rulesets(store)
    rows = store.query("SELECT id, phone, region, groups FROM leads WHERE campaign_id + 0 = ? AND status != 'staged'",
                       (campaign_id,))
    by_region = {}
    for r in rows:
        by_region.setdefault(r["region"], []).append(r)
    updates = []
    n_runs = 0
    for region, rs_rows in by_region.items():
        rs = next((x for x in rulesets.values() if region in x.regions), None)
        stride, run = (rs.multiline_stride, rs.multiline_run) if rs else (1, 3)
        values = {int(r["phone"][1:]): r for r in rs_rows}
        runs = find_runs(values.keys(), stride, run)
        n_runs += len({v[0] for v in runs.values()})
        for val, r in values.items():
            old = [g for g in (r["groups"] or "").split(",") if g and not g.startswith("run:")]
            if val in runs:
                old.append(run_group(runs[val][0]))
            new = ",".join(old) or None
            if new != r["groups"]:
                updates.append((new, r["id"]))
    if updates:
        store.conn.executemany("UPDATE leads SET groups = ? WHERE id = ?", updates)
    return n_runs


def import_errors(store, import_id, account=None):
    """The per-row report of an import of ``account`` (name, id, or None for the
    installation's only account)."""
    acc = resolve_account(store, account)
    job = store.query_one("SELECT id FROM imports WHERE id = ? AND account_id = ?", (import_id, acc["id"]))
    if job is None:
        raise NotFound(f"no import {import_id}")
    return store.query("SELECT row_no AS row, col AS column, value, reason FROM import_errors WHERE import_id = ? "
                       "ORDER BY row_no, id", (import_id,))


def errors_csv(rows):
    """The per-row error report as CSV, cells neutralised against formula injection."""
    import csv
    import io
    from .files import neutralise
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["row", "column", "value", "reason"])
    for r in rows:
        w.writerow([r["row"], neutralise(str(r["column"])), neutralise(str(r["value"])), neutralise(str(r["reason"]))])
    return buf.getvalue()


# ---------------------------------------------------------------------------------
# screening preview
# ---------------------------------------------------------------------------------



def _lead_rows(store, campaign_id, statuses=("new", "retry", "callback")):
    marks = ",".join("?" * len(statuses))
    # "+ 0": a scan in table order beats the (campaign_id, phone) index for a whole campaign
    return store.query(f"SELECT id, row_no, phone, phone_raw, region, number_type, zones, number_state, state, zone, "
                       f"groups FROM leads WHERE campaign_id + 0 = ? AND status IN ({marks})", (campaign_id, *statuses))


class PreviewTally:
    """Counts for the screening preview, one lead at a time: dialable now, later today,
    later, never, blocked campaign-wide (registry, caller ID), by reason, examples."""

    def __init__(self, ctx, at, examples=3):
        self.ctx, self.at, self.examples = ctx, at, examples
        self.sc = Screener(ctx, at)
        self.later_cache = {}
        self.out = {"at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "leads": 0, "dialable_now": 0, "later_today": 0,
                    "later": 0, "never": 0, "blocked_campaign_wide": 0, "by_reason": {}, "examples": {}}

    def add(self, lead, row_no):
        out = self.out
        out["leads"] += 1
        v = self.sc.evaluate(lead)
        if v.allowed:
            out["dialable_now"] += 1
            return
        cats = set()
        wide = listed = False
        for r in v.reasons:
            cats.add(r.category)
            out["by_reason"][r.category] = out["by_reason"].get(r.category, 0) + 1
            ex = out["examples"].setdefault(r.category, [])
            if len(ex) < self.examples:
                ex.append({"phone": v.number or v.input, "row": row_no, "rule": r.rule, "detail": r.detail})
            campaign_wide = is_campaign_wide(r)
            wide = wide or campaign_wide
            listed = listed or (r.category == "dnc" and not campaign_wide)
        if cats & NEVER_CATEGORIES or listed:
            out["never"] += 1
        elif wide:
            out["blocked_campaign_wide"] += 1
        else:
            own_history = lead.facts.value in self.ctx.history
            key = (v.zones, lead.facts.state, lead.state, lead.zone)
            t = None if own_history else self.later_cache.get(key, False)
            if t is False or own_history:
                t = next_allowed(lead, self.at, self.ctx)
                if not own_history:
                    self.later_cache[key] = t
            if t is not None and _same_local_day(self.at, t, v.zones):
                out["later_today"] += 1
            else:
                out["later"] += 1

    def result(self, groups):
        self.out["multiline_groups"], self.out["multiline_leads"] = groups
        return self.out


def _group_sizes(store, campaign_id):
    rows = store.query("SELECT groups FROM leads WHERE campaign_id + 0 = ? AND groups IS NOT NULL "
                       "AND status IN ('new', 'retry', 'callback')", (campaign_id,))
    sizes = {}
    for r in rows:
        for g in r["groups"].split(","):
            sizes[g] = sizes.get(g, 0) + 1
    multi = [n for n in sizes.values() if n > 1]
    return len(multi), sum(multi)


def preview(store, campaign, now, at=None, examples=3, account=None):
    """How many of the campaign's pending leads may be called now, later today, only
    later, never, and why."""
    from rules.service import load_context, load_recent_history
    camp = get_campaign(store, campaign, account)
    at = utc(at or now)
    ctx = load_context(store, now, camp["region"], camp["id"])
    rows = _lead_rows(store, camp["id"])
    ctx.history = load_recent_history(store, at, 720, camp["account_id"])
    tally = PreviewTally(ctx, at, examples)
    for row in rows:
        tally.add(lead_of(row), row["row_no"])
    return tally.result(_group_sizes(store, camp["id"]))


def _same_local_day(a, b, zones):
    zone = pytz.timezone(zones[0]) if zones else pytz.utc
    return a.astimezone(zone).date() == b.astimezone(zone).date()


# ---------------------------------------------------------------------------------
# life cycle
# ---------------------------------------------------------------------------------

def get_lead(store, lead_id, account=None):
    """A lead by id; with ``account`` (name or id), only a lead of that account."""
    row = store.query_one("SELECT * FROM leads WHERE id = ?", (lead_id,))
    if account is not None:
        acc = resolve_account(store, account)
        if row is None or row["account_id"] != acc["id"]:
            raise NotFound(f"no lead {lead_id} in account {acc['name']!r}")
    if row is None:
        raise NotFound(f"no lead {lead_id}")
    return row


def _event(store, lead_id, at, event, detail):
    store.execute("INSERT INTO lead_events (lead_id, at, event, detail) VALUES (?, ?, ?, ?)",
                  (lead_id, to_iso(at), event, json.dumps(detail, ensure_ascii=False, default=str)))


def record_attempt(store, call_id, number, campaign_id, started_at, outcome, account_id):
    """The one writer of ``call_attempts``, the history the frequency caps and lockouts
    read (per account: per caller). Only calls that were placed are attempts: its
    callers are the CDR path (:func:`dialer.cdr.write_cdr`, directly or through
    :func:`record_outcome` with the call's id). Idempotent by call id: True if the row
    is new."""
    if account_id is None:
        raise InputError(f"call attempt {call_id}: no account (every call is placed by an account)")
    cur = store.execute("INSERT INTO call_attempts (call_id, number, campaign_id, started_at, outcome, account_id) "
                        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (call_id) DO NOTHING",
                        (call_id, number, campaign_id, to_iso(started_at), outcome, int(account_id)))
    return cur.rowcount == 1


def _placed_call(store, call_id, lead):
    """The CDR of a placed call to this lead (its account's; of this lead or of none)."""
    row = store.query_one("SELECT call_id, account_id, lead_id, destination FROM cdrs WHERE call_id = ?", (call_id,))
    if row is None or row["account_id"] != lead["account_id"]:
        raise NotFound(f"no call record {call_id!r} of lead {lead['id']}'s account: an outcome with a call id "
                       f"needs the record of a call that was placed")
    if row["lead_id"] is not None and row["lead_id"] != lead["id"]:
        raise InputError(f"call {call_id} was a call to lead {row['lead_id']}, not to lead {lead['id']}")
    return row


def record_outcome(store, lead_id, outcome, at, actor="dialer", call_id=None, callback_at=None, agent=None,
                   started_at=None, account=None):
    """This lead's last contact ended with ``outcome``: count it on the lead, recycle or
    finish the lead, and put an opt-out on the lead's account's company DNC list at once.

    With ``call_id``, the record of a placed call (a CDR of the lead's account, written
    first: :func:`dialer.cdr.write_cdr` does so in the same transaction), the call is
    also kept in ``call_attempts`` at its start (``started_at``, else ``at``): the
    history the frequency caps and lockouts read. Without one it is a *manual* outcome
    (a person recording how a lead stands): no call was placed through the dialer, so
    nothing is added to ``call_attempts``. ``account`` (name or id): only a lead of
    that account."""
    from rules.service import add_dnc
    at = utc(at)
    with store.transaction():
        lead = get_lead(store, lead_id, account)
        cdr = _placed_call(store, call_id, lead) if call_id is not None else None
        camp = store.query_one("SELECT * FROM campaigns WHERE id = ?", (lead["campaign_id"],))
        rules = json.loads(camp["retry_rules"]) if camp["retry_rules"] else model.DEFAULT_RETRY
        attempts = lead["attempts"] + 1
        ch = model.after_outcome(outcome, attempts, at, rules, callback_at=callback_at)
        store.execute(
            "UPDATE leads SET status = ?, disposition = ?, attempts = ?, priority = ?, next_attempt_at = ?, "
            "reserved_by = NULL, reserved_until = NULL, last_attempt_at = ?, callback_at = ?, callback_agent = ?, "
            "updated_at = ? WHERE id = ?",
            (ch.status, ch.disposition, attempts, ch.priority, to_iso(ch.next_attempt_at) if ch.next_attempt_at else None,
             to_iso(at), to_iso(callback_at) if callback_at else None, agent if outcome == "callback" else None,
             to_iso(at), lead_id))
        if cdr is not None:
            record_attempt(store, call_id, cdr["destination"], lead["campaign_id"], started_at or at, outcome,
                           lead["account_id"])
        _event(store, lead_id, at, "outcome", {"outcome": outcome, "attempt": attempts, "status": ch.status,
                                               "next_attempt_at": ch.next_attempt_at, "call_id": call_id,
                                               "agent": agent, **({"manual": True, "by": actor} if cdr is None else {})})
        if ch.add_to_dnc:
            add_dnc(store, [lead["phone"]], at, actor, source="company", account=lead["account_id"],
                    reason=f"opt-out on call {call_id}" if call_id else f"opt-out recorded by {actor}")
    return {"lead": lead_id, "status": ch.status, "disposition": ch.disposition, "attempts": attempts,
            "next_attempt_at": ch.next_attempt_at.strftime("%Y-%m-%dT%H:%M:%SZ") if ch.next_attempt_at else None,
            "call_attempt": cdr is not None}


def manual_outcome(store, lead_id, outcome, now, actor, call_id=None, account=None):
    """`dialer lead outcome`: a person records how a lead of ``account`` (name, id, or
    None for the installation's only account) stands. Without ``call_id`` it is not a
    call: the lead is recycled or finished by the campaign's rules (and an opt-out goes
    on the account's DNC list), but no call attempt is written, so frequency caps and
    lockouts are not touched. With the call id of a placed call's record, that call is
    kept as an attempt (once: the dialer may have kept it already)."""
    acc = resolve_account(store, account)
    return record_outcome(store, lead_id, outcome, now, actor, call_id=call_id, account=acc["id"])


def schedule_callback(store, lead_id, when_local, now, actor, agent=None, zone=None, account=None):
    """A callback at a wall-clock time in the lead's own zone (its list zone, else the
    zone of its number): '2026-03-09 10:00'. DST is resolved by the zone database; a
    time that does not exist or is ambiguous that day is refused. Scheduling is not a
    call: the lead's attempts and the call history (``call_attempts``) are untouched.
    ``account``: name, id, or None for the installation's only account."""
    acc = resolve_account(store, account)
    lead = get_lead(store, lead_id, acc["id"])
    zone = zone or lead["zone"] or (lead["zones"].split(",")[0] if lead["zones"] else None)
    if not zone:
        raise InputError(f"lead {lead_id} has no known time zone: give --zone")
    try:
        tz = pytz.timezone(zone)
    except pytz.UnknownTimeZoneError:
        raise InputError(f"{zone!r} is not a time zone name") from None
    try:
        naive = _dt.datetime.fromisoformat(str(when_local).strip().replace("T", " "))
    except ValueError:
        raise InputError(f"callback time {when_local!r} is not a local date and time (YYYY-MM-DD HH:MM)") from None
    if naive.tzinfo is not None:
        t = naive.astimezone(_dt.timezone.utc)
    else:
        try:
            t = tz.localize(naive, is_dst=None).astimezone(_dt.timezone.utc)
        except pytz.NonExistentTimeError:
            raise InputError(f"{naive:%H:%M} does not exist on {naive:%Y-%m-%d} in {zone} (clocks go forward)") from None
        except pytz.AmbiguousTimeError:
            raise InputError(f"{naive:%H:%M} happens twice on {naive:%Y-%m-%d} in {zone} (clocks go back): pick another time") from None
    now = utc(now)
    if t <= now:
        raise InputError(f"callback time {when_local} ({zone}) is in the past")
    with store.transaction():
        lead = get_lead(store, lead_id, acc["id"])
        ch = model.after_outcome("callback", lead["attempts"], now, model.DEFAULT_RETRY, callback_at=t)
        store.execute(
            "UPDATE leads SET status = ?, priority = ?, next_attempt_at = ?, reserved_by = NULL, reserved_until = NULL, "
            "callback_at = ?, callback_agent = ?, updated_at = ? WHERE id = ?",
            (ch.status, ch.priority, to_iso(t), to_iso(t), agent, to_iso(now), lead_id))
        _event(store, lead_id, now, "callback", {"callback_at": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "agent": agent,
                                                 "by": actor})
    return {"lead": lead_id, "status": ch.status, "disposition": lead["disposition"], "attempts": lead["attempts"],
            "next_attempt_at": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "callback_at": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "callback_local": t.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")}


def find_leads(store, number, region="US", account=None):
    """The leads of ``account`` (name, id, or None for the installation's only account)
    with this number."""
    acc = resolve_account(store, account)
    f = normalise(number, region)
    if f.e164 is None:
        raise InputError(f"{number!r} is not a valid phone number: {f.error}")
    rows = store.query("SELECT l.*, c.name AS campaign FROM leads l JOIN campaigns c ON c.id = l.campaign_id "
                       "WHERE l.phone = ? AND l.account_id = ? ORDER BY l.id", (f.e164, acc["id"]))
    if not rows:
        raise NotFound(f"no lead with number {f.e164} in account {acc['name']!r}")
    return rows


def lead_history(store, number, region="US", account=None):
    out = []
    for row in find_leads(store, number, region, account):
        events = store.query("SELECT at, event, detail FROM lead_events WHERE lead_id = ? ORDER BY id", (row["id"],))
        for e in events:
            e["detail"] = json.loads(e["detail"])
        out.append({"lead": row["id"], "campaign": row["campaign"], "phone": row["phone"], "status": row["status"],
                    "attempts": row["attempts"], "events": events})
    return out

"""Library functions behind the CLI (and later the web console): each command calls
one of these. They load what the pure engine needs from the store, and record
every change in the audit log."""

import array
import csv
import datetime as _dt
import hashlib
import io
import json
import os
import pathlib
import re
import sqlite3
import uuid
from dataclasses import dataclass, replace

import numpy as np

from core.errors import DialerError, InputError, NotFound
from core.timeutil import check_instant, from_iso, parse_date, shown, to_iso, utc

from core import audit
from .engine import CampaignRules, Context, DncLists, Lead, Registry, Screener, is_campaign_wide, screen
from .numbers import (asciify, country_code_of, malformed, normalise, prefix_reach, split_country_code,
                      well_formed)
from .ruleset import (RuleSetError, canonical, compile_windows, decode_text, diff, load_yaml, parse_text, read_limited,
                      set_field, validate, _Errors, _show)

DEFAULTS_DIR = pathlib.Path(__file__).parent / "defaults"
SHIPPED = ("US", "GB", "TR")


# ---------------------------------------------------------------------------------
# rule sets
# ---------------------------------------------------------------------------------

def ensure_defaults(store, now):
    """Seed the shipped rule sets and lifeline list on first use (audited)."""
    have = {r["jurisdiction"] for r in store.query("SELECT DISTINCT jurisdiction FROM rule_set_versions")}
    missing = [j for j in SHIPPED if j not in have]
    if not missing:
        return
    with store.transaction():
        have = {r["jurisdiction"] for r in store.query("SELECT DISTINCT jurisdiction FROM rule_set_versions")}
        for j in missing:
            if j in have:
                continue
            data = json.loads((DEFAULTS_DIR / f"{j}.json").read_text(encoding="utf-8"))
            validate(data, version=1)
            _insert_version(store, j, 1, data, now, "system", "shipped defaults")
        if not store.query_one("SELECT id FROM lifeline_numbers LIMIT 1"):
            _import_lifeline_rows(store, _read_lifeline_csv(DEFAULTS_DIR / "lifeline.csv"), now, "system",
                                  "shipped defaults")


def _insert_version(store, jur, version, data, now, actor, reason, old=None):
    text = canonical(data)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    store.execute(
        "INSERT INTO rule_set_versions (jurisdiction, version, data, digest, created_at, author, reason) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (jur, version, text, digest, to_iso(now), actor, reason),
    )
    audit.append(store, now, actor, "rules.version", f"ruleset:{jur}", reason,
                 {"version": version, "digest": digest, "changes": diff(old or {}, data)})


def _latest(store, jur):
    return store.query_one(
        "SELECT * FROM rule_set_versions WHERE jurisdiction = ? ORDER BY version DESC LIMIT 1", (jur,))


def _in_force(store):
    """The current version of every rule set (rows, by jurisdiction)."""
    return store.query(
        "SELECT v.* FROM rule_set_versions v JOIN (SELECT jurisdiction, MAX(version) AS version "
        "FROM rule_set_versions GROUP BY jurisdiction) m ON v.jurisdiction = m.jurisdiction AND v.version = m.version "
        "ORDER BY v.jurisdiction")


def _compile_in_force(row):
    """A stored version compiled, or RuleSetError in one line saying which version and
    how to correct it (a version saved before the current limits, or edited outside)."""
    label = f"{row['jurisdiction']}@{row['version']}"
    try:
        data = json.loads(row["data"])
    except ValueError:
        raise RuleSetError(f"rule set {label} in force is not readable JSON (changed outside the application?): "
                           f"run dialer rules verify") from None
    try:
        return validate(data, version=row["version"])
    except RuleSetError as e:
        text = str(e).replace("rule set not accepted:", "", 1)
        problems = "; ".join(x.strip() for x in text.splitlines() if x.strip())
        raise RuleSetError(f"rule set {label} in force is not accepted by the current rules ({problems}): "
                           f"correct it with dialer rules set or dialer rules edit") from None


def _region_owners(rows):
    """{region: [jurisdiction, ...]} over stored versions (their ``regions`` lists)."""
    owners = {}
    for row in rows:
        try:
            regions = json.loads(row["data"]).get("regions")
        except (ValueError, AttributeError):
            continue
        for r in regions if isinstance(regions, list) else ():
            if isinstance(r, str) and row["jurisdiction"] not in owners.setdefault(r, []):
                owners[r].append(row["jurisdiction"])
    return owners


def load_rulesets(store):
    """The compiled rule sets in force. A version that the current validation refuses,
    or two rule sets claiming one region, is an error (fail closed: no verdict is
    better than one from the wrong rules)."""
    rows = _in_force(store)
    out = {row["jurisdiction"]: _compile_in_force(row) for row in rows}
    for region, jurs in sorted(_region_owners(rows).items()):
        if len(jurs) > 1:
            raise RuleSetError(f"region {region} is claimed by " + " and ".join(
                f"{j}@{out[j].version}" for j in jurs) + f": a region belongs to one rule set; remove it from one "
                f"of them with dialer rules set JURISDICTION regions ...")
    return out


def _jurisdiction(text):
    """A jurisdiction argument (US, gb, ...) as its code; anything else refused in one line."""
    jur = str(text).strip().upper()
    if not re.fullmatch(r"[A-Z]{2}[A-Z0-9-]{0,14}", jur):
        raise InputError(f"{_show(text)} is not a jurisdiction code (US, GB, TR, ...)")
    return jur


def show_ruleset(store, jurisdiction, version=None):
    jur = _jurisdiction(jurisdiction)
    if version is None:
        row = _latest(store, jur)
    else:
        row = store.query_one("SELECT * FROM rule_set_versions WHERE jurisdiction = ? AND version = ?", (jur, version))
    if row is None:
        known = ", ".join(r["jurisdiction"] for r in store.query("SELECT DISTINCT jurisdiction FROM rule_set_versions ORDER BY 1"))
        raise NotFound(f"no rule set {jur}" + (f" version {version}" if version else "") + f" (known: {known})")
    return {"jurisdiction": jur, "version": row["version"], "created_at": row["created_at"], "author": row["author"],
            "reason": row["reason"], "digest": row["digest"], "data": json.loads(row["data"])}


def _require_reason(reason):
    if not reason or not reason.strip():
        raise InputError("say why (--reason TEXT): every rule change is recorded with its reason")
    return reason.strip()


def _save_new_version(store, jur, data, lines, now, actor, reason, create=False, dry_run=False, expect_version=None):
    with (store.read_view() if dry_run else store.transaction()):
        row = _latest(store, jur)
        if row is None and not create:
            raise NotFound(f"no rule set {jur}; to add one, use: dialer rules edit {jur} FILE --create")
        if expect_version is not None and (row["version"] if row else 0) != expect_version:
            raise InputError(f"{jur} changed since this change was previewed against version {expect_version} (it is "
                             f"version {row['version'] if row else 0} now): preview the change again")
        version = (row["version"] if row else 0) + 1
        compiled = validate(data, lines, version)
        if data.get("jurisdiction") != jur:
            raise RuleSetError(f"the file is for jurisdiction {data.get('jurisdiction')!r}, not {jur}")
        others = [r for r in _in_force(store) if r["jurisdiction"] != jur]
        owners = _region_owners(others)
        for region in sorted(compiled.regions):
            if region in owners:
                held = owners[region][0]
                held_v = next(r["version"] for r in others if r["jurisdiction"] == held)
                raise RuleSetError(f"region {region} belongs to rule set {held} (version {held_v}); {jur} cannot claim "
                                   f"it too: a region belongs to one rule set (remove it from {held} first, or leave "
                                   f"it out of {jur})")
        old = json.loads(row["data"]) if row else {}
        if row is not None and canonical(old) == canonical(data):
            raise InputError(f"no change: the file is the same as {jur} version {row['version']}")
        if dry_run:
            return {"jurisdiction": jur, "version": version, "base_version": row["version"] if row else 0,
                    "changes": diff(old, data), "dry_run": True, "reason": reason}
        _insert_version(store, jur, version, data, now, actor, reason, old=old)
    return {"jurisdiction": jur, "version": version, "changes": diff(old, data)}


def edit_ruleset(store, jurisdiction, text, now, actor, reason, create=False, dry_run=False, expect_version=None):
    """Replace a rule set with the text given (JSON or YAML: a str, bytes, or an open
    binary file, of which at most 256 KiB are read; bytes are UTF-8, or UTF-16/32 with
    a BOM). Invalid data is refused with the line and field that is wrong, hostile
    text (anchors, deep nesting, other encodings, too long) in one line; the old
    version stays in force. ``dry_run``: everything checked, nothing saved; the result
    has the changes and ``base_version``, the version they were computed against.
    ``expect_version``: refuse if the rule set is no longer that version (a change
    previewed, then saved)."""
    reason = _require_reason(reason)
    data, lines = parse_text(read_limited(text))
    return _save_new_version(store, _jurisdiction(jurisdiction), data, lines, now, actor, reason, create=create,
                             dry_run=dry_run, expect_version=expect_version)


def set_rule(store, jurisdiction, field, value_text, now, actor, reason, dry_run=False, expect_version=None):
    """Set one field (dotted path) of the current rule set: ``states.FL.hours.windows.sun``
    to ``["09:00-20:00"]``. The value is JSON/YAML ("null" removes the field).
    ``dry_run`` and ``expect_version``: as :func:`edit_ruleset`."""
    reason = _require_reason(reason)
    jur = _jurisdiction(jurisdiction)
    cur = show_ruleset(store, jur)
    if isinstance(value_text, (str, bytes)):
        text = decode_text(value_text, name="the value")
        value = load_yaml(text, what=f"value {_show(text)}")[1] if text.strip() else None
    else:
        value = value_text
    top = str(field).split(".")[0]
    if top not in ("rules", "states", "regions", "name", "holiday_calendar", "note"):
        raise RuleSetError(f"unknown field {_show(field)}: paths start with rules., states., regions, name or "
                           f"holiday_calendar")
    data = set_field(cur["data"], field, value)
    return _save_new_version(store, jur, data, None, now, actor, reason, dry_run=dry_run,
                             expect_version=expect_version)


def history(store, jurisdiction):
    jur = _jurisdiction(jurisdiction)
    rows = audit.entries(store, subject=f"ruleset:{jur}")
    if not rows:
        raise NotFound(f"no rule set {jur}")
    return [{"version": r["detail"]["version"], "at": r["at"], "actor": r["actor"], "reason": r["reason"],
             "changes": r["detail"]["changes"] if r["detail"]["version"] > 1 else
             [{"field": "(all)", "old": None, "new": "initial version"}]} for r in rows]


def _digest(text):
    raw = text if isinstance(text, bytes) else str(text).encode("utf-8")
    return hashlib.sha256(raw).hexdigest()


def verify(store, expect_head=None, expect_rows=None):
    """`dialer rules verify`: the audit log's hash chain (and the head kept outside the
    database: ``expect_head``/``expect_rows``, see audit.verify), every rule-set version
    against its digest and its audit entry (rules.version with that version and
    digest), and the versions in force usable (valid, one rule set per region).
    Returns {"ok", "rows", "head", "versions", "errors": [one line per problem]}."""
    out = audit.verify(store, expect_head, expect_rows)
    problems = list(out["errors"])
    audited = {}
    for r in store.query("SELECT id, subject, detail FROM audit_log WHERE action = 'rules.version' ORDER BY id"):
        try:
            detail = json.loads(r["detail"])
            key = (r["subject"].split(":", 1)[1], int(detail["version"]))
            digest = str(detail["digest"])
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            problems.append(f"audit row {r['id']}: not a readable rules.version entry")
            continue
        audited.setdefault(key, []).append((r["id"], digest))
    versions = store.query("SELECT jurisdiction, version, data, digest FROM rule_set_versions "
                           "ORDER BY jurisdiction, version")
    for v in versions:
        label = f"{v['jurisdiction']} version {v['version']}"
        actual = _digest(v["data"])
        if actual != v["digest"]:
            problems.append(f"{label}: its data does not match its digest (changed after it was saved)")
        entries = audited.pop((v["jurisdiction"], v["version"]), [])
        if not entries:
            problems.append(f"{label}: no audit entry records it (added outside the application)")
        elif not any(d == actual for _, d in entries):
            problems.append(f"{label}: its data is not the data the audit log recorded (audit row {entries[-1][0]}, "
                            f"digest {entries[-1][1][:16]}; the data's digest is {actual[:16]})")
    for (jur, ver), entries in sorted(audited.items()):
        problems.append(f"{jur} version {ver}: recorded in the audit log (row {entries[0][0]}) but missing from "
                        f"the rule-set table (deleted)")
    rows = _in_force(store)
    for row in rows:
        try:
            _compile_in_force(row)
        except RuleSetError as e:
            problems.append(str(e))
    for region, jurs in sorted(_region_owners(rows).items()):
        if len(jurs) > 1:
            problems.append(f"region {region} is claimed by rule sets {' and '.join(jurs)}: a region belongs to one")
    return {"ok": not problems, "rows": out["rows"], "head": out["head"], "versions": len(versions),
            "errors": problems}


# ---------------------------------------------------------------------------------
# lifeline list
# ---------------------------------------------------------------------------------

def _read_lifeline_csv(path):
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"file not found: {path}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text))
    rows = list(reader)
    if not rows:
        raise InputError(f"{path} is empty")
    header = [h.strip().lower() for h in rows[0]]
    if "number" not in header:
        raise InputError(f"{path}: the first line must be a header with at least number,category,name")
    idx = {h: i for i, h in enumerate(header)}
    out = []
    for n, r in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in r):
            continue
        get = lambda k, d="": (r[idx[k]].strip() if k in idx and idx[k] < len(r) else d)
        out.append({"line": n, "number": get("number"), "category": get("category", "lifeline") or "lifeline",
                    "name": get("name"), "region": get("region").upper() or None, "source": get("source")})
    return out


def _lifeline_key(number, region, special):
    f = normalise(number, region or "US", special)
    if f.e164 is not None:
        return f.e164, None
    digits = "".join(c for c in number if c.isdigit())
    if f.short_code or (digits and len(digits) <= 6):
        return f"{f.region or region or 'US'}:{f.short_code or digits}", None
    return None, f.error


def _import_lifeline_rows(store, rows, now, actor, reason, default_region="US"):
    rulesets = load_rulesets(store)
    special = {r: rs.special_codes for rs in rulesets.values() for r in rs.regions}
    added, rejected = 0, []
    for row in rows:
        key, err = _lifeline_key(row["number"], row["region"] or default_region, special)
        if key is None:
            rejected.append({"line": row["line"], "number": row["number"], "reason": err})
            continue
        cur = store.execute(
            "INSERT INTO lifeline_numbers (number, category, name, source, added_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (number) DO UPDATE SET category = excluded.category, name = excluded.name, source = excluded.source",
            (key, row["category"], row["name"] or row["category"], row["source"] or reason, to_iso(now)),
        )
        added += cur.rowcount
    audit.append(store, now, actor, "lifeline.import", "lifeline", reason, {"added": added, "rejected": len(rejected)})
    return {"added": added, "rejected": rejected}


def import_lifeline(store, path, now, actor, region="US", reason="lifeline import"):
    rows = _read_lifeline_csv(path)
    with store.transaction():
        return _import_lifeline_rows(store, rows, now, actor, reason, region)


def load_lifeline(store):
    return {r["number"]: (r["category"], r["name"]) for r in store.query("SELECT number, category, name FROM lifeline_numbers")}


# ---------------------------------------------------------------------------------
# DNC
# ---------------------------------------------------------------------------------

SOURCES = ("national", "company", "campaign")
_registry_cache = {}


def _campaign_row(store, name, account=None):
    """The campaign's row with its calling hours decoded (what the rules read of it)."""
    from core.tenancy import campaign_row
    row = campaign_row(store, name, account)
    row["hours"] = json.loads(row["hours"]) if row.get("hours") else None
    return row


def _scope(store, source, campaign, account=None):
    """The DNC list written: (scope, account id). ``company`` is the account's own list
    (``account:<id>``), ``campaign`` a campaign's list (``campaign:<id>``)."""
    from core.tenancy import resolve_account
    if source == "campaign":
        if not campaign:
            raise InputError("--source campaign needs --campaign NAME: the campaign whose own DNC list this is "
                             "(for the account-wide list, use --source company)")
        camp = _campaign_row(store, campaign, account)
        return f"campaign:{camp['id']}", camp["account_id"]
    if campaign and source == "company":
        raise InputError("the company DNC list is account-wide: drop --campaign, or use --source campaign")
    acc = resolve_account(store, account)
    return f"account:{acc['id']}", acc["id"]


def _wildcard_digits(text, body, region):
    """The E.164 digits (no '+') of a wildcard's part before the '*'."""
    example = "e.g. +1212* or 212555*"
    if not body:
        raise InputError(f"{shown(text)} is not a number prefix ({example})")
    if not body.isascii():
        body, why = asciify(body)
        if why is not None:
            raise InputError(f"{shown(text)} is not a number prefix: {why}")
    if not well_formed(body):
        raise InputError(f"{shown(text)} is not a number prefix ({malformed(body)}; {example})")
    digits = body.translate(_PREFIX_STRIP)
    plus = digits.startswith("+")
    digits = digits.lstrip("+")
    if not plus:
        cc = country_code_of(region)
        if digits.startswith("00"):
            digits = digits[2:]
        elif cc == 1 and digits.startswith("011"):
            digits = digits[3:]
        elif cc == 1 and len(digits) in (3, 6) and digits[0] in "23456789":
            digits = "1" + digits
        elif cc == 1 and digits.startswith("1") and len(digits) in (4, 7):
            pass
        else:
            raise InputError(f"{shown(text)}: write a prefix with its country code (+44 20*) "
                             f"or, for North America, an area code (212*) or area code and exchange (212555*)")
    if len(digits) < 2 or digits.startswith("0"):
        raise InputError(f"{shown(text)}: a prefix needs a country code and at least one more digit")
    if len(digits) > 15:
        raise InputError(f"{shown(text)}: longer than any phone number (E.164 has at most 15 digits)")
    if split_country_code(digits)[0] is None and len(digits) >= 3:
        raise InputError(f"{shown(text)}: no country has a code that starts +{digits[:3]}")
    return digits


def wildcard_width(digits):
    """Why a prefix (E.164 digits without '+') is too wide to add without --wide, or
    None: it must be at least a North American area code (+1NPA), elsewhere the
    country code and two more digits."""
    cc = split_country_code(digits)[0]
    if cc is None:
        return "it spans several country codes"
    if cc == "1":
        return "wider than a North American area code" if len(digits) < 4 else None
    if len(digits) < len(cc) + 2:
        return f"shorter than the country code +{cc} and two more digits"
    return None


def _wildcard_info(pattern):
    return {"entry": f"+{pattern}*", "may_block": prefix_reach(pattern)}


def _too_wide(text, pattern, where=""):
    return InputError(f"{where}{shown(text)}: the wildcard +{pattern}* may block up to {prefix_reach(pattern):,} "
                      f"numbers ({wildcard_width(pattern)}); add --wide to confirm")


def parse_dnc_pattern(text, region="US", wide=False):
    """A number or a wildcard ('+1212*', '212*', '1212555*') -> (pattern, is_prefix).
    Patterns are E.164 digits without '+'. A wildcard wider than a North American area
    code (+1 and fewer than 3 more digits) or, outside +1, shorter than its country
    code and two more digits may block millions or billions of numbers: it needs
    ``wide`` (--wide). Raises InputError."""
    s = str(text).strip()
    if s.endswith("*"):
        digits = _wildcard_digits(text, s[:-1].strip(), region)
        if not wide and wildcard_width(digits):
            raise _too_wide(text, digits)
        return digits, True
    f = normalise(s, region)
    if f.e164 is None:
        raise InputError(f"{shown(text)} is not a valid phone number: {f.error}")
    return f.e164[1:], False


def bump_list_version(store, scope):
    """The list's next version, in the caller's transaction: every add, remove and
    import bumps it, so a snapshot of the list knows what it lacks."""
    row = store.query_one("SELECT version FROM dnc_lists WHERE scope = ?", (scope,))
    if row is None:
        store.execute("INSERT INTO dnc_lists (scope, version, token) VALUES (?, 1, ?)", (scope, uuid.uuid4().hex))
        return 1
    store.execute("UPDATE dnc_lists SET version = version + 1 WHERE scope = ?", (scope,))
    return row["version"] + 1


_INSERT_ENTRY = ("INSERT INTO dnc_entries (scope, pattern, is_prefix, added_at, added_by, reason, version) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (scope, pattern) DO NOTHING")


def add_dnc(store, numbers, now, actor, source="company", campaign=None, region="US", reason="", account=None,
            wide=False):
    """Put numbers (or prefix wildcards) on an account's company list (``source="company"``:
    the account's own list; ``account`` a name, an id, or None for the installation's
    only account) or on a campaign's list; effective at once. Wildcards wider than an
    area code need ``wide``; the result says how many numbers each may block."""
    if not numbers:
        raise InputError("give at least one number")
    parsed = [parse_dnc_pattern(n, region, wide=wide) for n in numbers]  # all or nothing
    wild = [_wildcard_info(p) for p, x in parsed if x]
    with store.transaction():
        scope, account_id = _scope(store, source, campaign, account)
        version = bump_list_version(store, scope)
        added = 0
        for pattern, is_prefix in parsed:
            cur = store.execute(_INSERT_ENTRY, (scope, pattern, int(is_prefix), to_iso(now), actor, reason or "",
                                                version))
            added += cur.rowcount
        detail = {"patterns": ["+" + p + ("*" if x else "") for p, x in parsed], "added": added}
        if wild:
            detail["wildcards"] = wild
        audit.append(store, now, actor, "dnc.add", f"dnc:{scope}", reason or "", detail, account_id=account_id)
    return {"scope": scope, "added": added, "already": len(parsed) - added,
            "entries": ["+" + p + ("*" if x else "") for p, x in parsed], "wildcards": wild}


def remove_dnc(store, numbers, now, actor, source="company", campaign=None, region="US", reason="", account=None):
    if not numbers:
        raise InputError("give at least one number")
    if not reason or not reason.strip():
        raise InputError("say why (--reason TEXT): removing a number from a DNC list is recorded with its reason")
    parsed = [parse_dnc_pattern(n, region, wide=True) for n in numbers]  # removing a wide wildcard needs no --wide
    with store.transaction():
        scope, account_id = _scope(store, source, campaign, account)
        version = bump_list_version(store, scope)
        removed = 0
        for pattern, is_prefix in parsed:
            n = store.execute("DELETE FROM dnc_entries WHERE scope = ? AND pattern = ?", (scope, pattern)).rowcount
            if n:
                store.execute("INSERT INTO dnc_removals (scope, pattern, is_prefix, version) VALUES (?, ?, ?, ?)",
                              (scope, pattern, int(is_prefix), version))
            removed += n
        audit.append(store, now, actor, "dnc.remove", f"dnc:{scope}", reason, {
            "patterns": ["+" + p + ("*" if x else "") for p, x in parsed], "removed": removed}, account_id=account_id)
    return {"scope": scope, "removed": removed, "not_listed": len(parsed) - removed}


def _iter_lines(path):
    """(line number, text) of a DNC list file, read as it goes (a 10M-line list is
    never held whole): UTF-8, UTF-16 with a BOM, else Latin-1 line by line."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory, not a file") from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    with fh:
        head = fh.read(4096)
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            fh.seek(0)
            text = io.TextIOWrapper(fh, encoding="utf-16", errors="replace", newline=None)
            n = 0
            for line in text:
                for part in line.splitlines() or [""]:
                    n += 1
                    yield n, part
            return
        if b"\x00" in head:
            raise InputError(f"{path} looks binary, not a text list of numbers")
        fh.seek(3 if head.startswith(b"\xef\xbb\xbf") else 0)
        n = 0
        for raw in fh:
            for part in raw.splitlines() or [b""]:
                n += 1
                try:
                    yield n, part.decode("utf-8")
                except UnicodeDecodeError:
                    yield n, part.decode("latin-1")


_FTC_AREA = re.compile(r"[0-9]{3}", re.ASCII)
_FTC_NUMBER = re.compile(r"[0-9]{7}", re.ASCII)
_PREFIX_STRIP = str.maketrans("", "", " -.()/\t\u00a0")
_IMPORT_CHUNK = 50_000


def _dnc_cell(line):
    """The number or wildcard of one list line: an FTC 'area,number' line (212,5550100)
    is the 10-digit US number; any other CSV line, its first cell."""
    if "," not in line:
        return line.strip()
    cells = line.split(",", 2)
    area = cells[0].strip().strip('"').strip()
    number = cells[1].strip().strip('"').strip()
    if _FTC_AREA.fullmatch(area) and _FTC_NUMBER.fullmatch(number):
        return f"+1{area}{number}"
    return area


def import_dnc(store, path, now, actor, source="company", campaign=None, as_of=None, jurisdiction="US",
               region="US", progress=None, account=None, wide=False):
    """Import a DNC file. ``national``: a registry snapshot with its ``as_of`` date,
    kept as a compact bitmap file beside the database (written whole, then recorded in
    one transaction: a crash leaves the previous registry in force). ``company`` /
    ``campaign``: numbers, FTC 'area,number' lines and wildcards (those wider than an
    area code need ``wide``), one transaction, then the list's snapshot is rebuilt.
    Junk lines are counted and reported; the rest is imported. ``company`` is the
    account's own list (``account``: name, id, or None for the installation's only
    account); national registries are shared by every account."""
    if source not in SOURCES:
        raise InputError(f"--source must be one of {', '.join(SOURCES)}")
    if source == "national":
        if account is not None or campaign is not None:
            raise InputError("a national registry is shared by every account: drop --account and --campaign")
        return _import_national(store, path, now, actor, as_of, jurisdiction, progress)
    _scope(store, source, campaign, account)  # before the file is read: a missing --campaign or account comes first
    numbers, prefixes, junk = array.array("Q"), {}, []
    lines = junk_count = 0
    for n, line in _iter_lines(path):
        lines = n
        cell = _dnc_cell(line)
        if not cell or cell.startswith("#"):
            continue
        try:
            pattern, is_prefix = parse_dnc_pattern(cell, region, wide=True)
        except InputError as e:
            if n == 1 and any(c.isalpha() for c in cell):
                continue  # header
            junk_count += 1
            if len(junk) < 10:
                junk.append({"line": n, "text": line[:80], "reason": str(e)})
            continue
        if is_prefix:
            if not wide and wildcard_width(pattern):
                raise _too_wide(cell, pattern, where=f"{os.path.basename(str(path))} line {n}: ")
            prefixes.setdefault(pattern, n)
        else:
            numbers.append(int(pattern))
    parsed = len(numbers) + len(prefixes)
    if not parsed:
        raise InputError(f"no numbers found in {path} ({junk_count} junk lines); nothing imported")
    wild = [_wildcard_info(p) for p in prefixes]
    name = f"import {os.path.basename(str(path))}"
    # in order and once each: a B-tree filled in key order writes each page once (10M
    # numbers in random order took minutes), and the rows lie in the order a rebuild reads
    values = np.sort(np.frombuffer(numbers, dtype=np.uint64)) if numbers else np.empty(0, np.uint64)
    del numbers
    if values.size > 1:
        values = values[np.r_[True, values[1:] != values[:-1]]]
    with store.transaction():
        scope, account_id = _scope(store, source, campaign, account)
        version = bump_list_version(store, scope)
        at = to_iso(now)
        added = 0
        for i in range(0, values.size, _IMPORT_CHUNK):
            added += store.conn.executemany(_INSERT_ENTRY, ((scope, str(v), 0, at, actor, name, version)
                                                            for v in values[i:i + _IMPORT_CHUNK].tolist())).rowcount
        if prefixes:
            added += store.conn.executemany(_INSERT_ENTRY, ((scope, p, 1, at, actor, name, version)
                                                            for p in prefixes)).rowcount
        detail = {"lines": lines, "numbers": parsed, "added": added, "junk": junk_count}
        if wild:
            detail["wildcards"] = wild[:20]
        audit.append(store, now, actor, "dnc.import", f"dnc:{scope}", name, detail, account_id=account_id)
    try:
        _list_state(store, scope)  # the snapshot now, not in the live dialer's next claim
    except (OSError, sqlite3.Error, DialerError):
        pass  # the import stands; the next check builds the snapshot (or fails, and blocks)
    return {"source": source, "scope": scope, "lines": lines, "numbers": parsed, "added": added,
            "duplicates": parsed - added, "junk": junk_count, "junk_examples": junk, "wildcards": wild[:20],
            "wildcards_total": len(wild), "may_block": sum(w["may_block"] for w in wild)}


def _import_national(store, path, now, actor, as_of, jurisdiction, progress):
    from .registry import RegistryError, parse_registry_file
    if as_of is None:
        raise InputError("a national registry needs its date: --as-of YYYY-MM-DD (the day the copy was downloaded)")
    as_of = parse_date(as_of, "--as-of")
    if as_of > utc(now).date():
        raise InputError(f"--as-of {as_of} is in the future")
    jur = jurisdiction.upper()
    ensure_defaults(store, now)
    rulesets = load_rulesets(store)
    rs = rulesets.get(jur)
    if rs is None:
        raise NotFound(f"no rule set {jur}: a registry belongs to a jurisdiction with rules")
    region = sorted(rs.regions)[0] if "US" not in rs.regions else "US"
    cc = str(country_code_of(jur if jur in rs.regions else region))
    if not os.path.isfile(path):
        raise InputError(f"file not found: {path}")
    try:
        numbers, stats = parse_registry_file(str(path), country_code=cc, progress=progress)
    except RegistryError as e:
        raise InputError(str(e)) from None
    if stats["numbers"] == 0:
        raise InputError(f"no numbers found in {path} ({stats['junk']} junk lines); the registry in force is unchanged")
    _remove_orphans(store)
    target = store.files_dir / f"registry-{jur}-{as_of}-{uuid.uuid4().hex[:8]}.roaring"
    sha = numbers.save(str(target))
    try:
        with store.transaction():
            cur = store.execute(
                "INSERT INTO dnc_registries (jurisdiction, as_of, imported_at, path, sha256, numbers, junk, source_file, actor) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (jur, as_of.isoformat(), to_iso(now), target.name, sha, stats["numbers"], stats["junk"],
                 os.path.basename(str(path)), actor),
            )
            audit.append(store, now, actor, "dnc.registry", f"registry:{jur}", f"import {os.path.basename(str(path))}",
                         {"as_of": as_of.isoformat(), "numbers": stats["numbers"], "junk": stats["junk"], "sha256": sha})
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return {"source": "national", "jurisdiction": jur, "as_of": as_of.isoformat(), "id": cur.lastrowid,
            "lines": stats["lines"], "numbers": stats["numbers"], "duplicates": stats.get("duplicates", 0),
            "junk": stats["junk"], "junk_examples": stats.get("junk_examples", [])[:10],
            "bytes": numbers.memory_bytes()}


def _remove_orphans(store):
    """Registry files not recorded in the table (a crash between write and commit)."""
    known = {r["path"] for r in store.query("SELECT path FROM dnc_registries")}
    for p in store.files_dir.glob("registry-*"):
        if p.name not in known:
            p.unlink(missing_ok=True)


def current_registries(store):
    """The newest registry per jurisdiction: {jur: Registry}. A file that is missing or
    corrupt gives a Registry with ``error`` set: the engine then blocks every number of
    that jurisdiction with that reason (never silently skipped)."""
    out = {}
    for row in store.query(
        "SELECT r.* FROM dnc_registries r WHERE r.id = (SELECT r2.id FROM dnc_registries r2 WHERE "
        "r2.jurisdiction = r.jurisdiction ORDER BY r2.as_of DESC, r2.id DESC LIMIT 1)"
    ):
        key = (str(store.path), row["id"], row["sha256"], row["jurisdiction"])
        ns = _registry_cache.get(key)
        as_of = _dt.date.fromisoformat(row["as_of"])
        if ns is None:
            from .registry import NumberSet, RegistryError
            try:
                ns = NumberSet.load(str(store.files_dir / row["path"]), expected_sha256=row["sha256"])
            except RegistryError as e:
                out[row["jurisdiction"]] = Registry(row["jurisdiction"], as_of, None, error=str(e))
                continue
            for k in [k for k in _registry_cache if k[0] == key[0] and k[3] == key[3]]:
                del _registry_cache[k]  # one snapshot per jurisdiction in memory
            _registry_cache[key] = ns
        out[row["jurisdiction"]] = Registry(row["jurisdiction"], as_of, ns)
    return out


# Company and campaign lists: a snapshot per list (a bitmap of its numbers and its
# prefixes), in memory and in a file beside the database, labelled with the list's
# version. A check reads one row (the version); a list that changed is brought up to
# date from the entries and removals of the versions its snapshot lacks (an index
# range), or rebuilt whole when those are many, or when the file is missing or
# corrupt (never skipped: without its list a number is not checked).
_list_cache = {}  # (database path, scope) -> _ListState
DELTA_MAX = 200_000  # changes since a snapshot beyond which the list is read whole
DELTA_SAVE = 20_000  # changes since a snapshot file beyond which a new file is written


@dataclass(frozen=True)
class _ListState:
    scope: str
    token: str
    version: int
    numbers: object  # NumberSet of the exact numbers
    prefixes: frozenset  # digit strings


def _snapshot_name(scope, version):
    return f"dnclist-{scope.replace(':', '-')}-v{version}.snap"


def _list_files(store, scope):
    """This list's snapshot files, newest version first: [(version, path)]."""
    stem = f"dnclist-{scope.replace(':', '-')}-v"
    out = []
    for p in store.files_dir.glob(stem + "*.snap"):
        v = p.name[len(stem):-5]
        if v.isdigit():
            out.append((int(v), p))
    return sorted(out, reverse=True)


def _read_whole(store, scope):
    """(numbers, prefixes) of a list straight from its entries."""
    from .registry import NumberSet
    cur = store.execute("SELECT pattern FROM dnc_entries WHERE scope = ? AND is_prefix = 0", (scope,))
    values = array.array("Q")
    while True:
        rows = cur.fetchmany(100_000)
        if not rows:
            break
        values.extend(int(r[0]) for r in rows)
    prefixes = frozenset(r["pattern"] for r in store.query(
        "SELECT pattern FROM dnc_entries WHERE scope = ? AND is_prefix = 1", (scope,)))
    return NumberSet.from_array(np.frombuffer(values, dtype=np.uint64) if values else np.empty(0, np.uint64),
                                allow_dense=False), prefixes


def _catch_up(store, st, version):
    """``st`` brought to ``version`` from the entries and removals it lacks, or None when
    they are more than DELTA_MAX (then the list is read whole). Returns (state, changes)."""
    added = store.query("SELECT pattern, is_prefix FROM dnc_entries WHERE scope = ? AND version > ? LIMIT ?",
                        (st.scope, st.version, DELTA_MAX + 1))
    removed = store.query("SELECT pattern, is_prefix FROM dnc_removals WHERE scope = ? AND version > ? LIMIT ?",
                          (st.scope, st.version, DELTA_MAX + 1))
    if len(added) + len(removed) > DELTA_MAX:
        return None, 0
    # what is listed now and was added after the snapshot, plus what the snapshot had
    # and was not removed since (a number removed and added again is in ``added``)
    numbers = st.numbers.with_changes(add=[int(r["pattern"]) for r in added if not r["is_prefix"]],
                                      remove=[int(r["pattern"]) for r in removed if not r["is_prefix"]])
    prefixes = (st.prefixes - {r["pattern"] for r in removed if r["is_prefix"]}) | \
        {r["pattern"] for r in added if r["is_prefix"]}
    return _ListState(st.scope, st.token, version, numbers, frozenset(prefixes)), len(added) + len(removed)


def _save_state(store, st):
    """Write the state's snapshot file (best effort: a check never fails for want of a
    cache file) and remove this list's older ones."""
    from .registry import save_list_snapshot
    target = store.files_dir / _snapshot_name(st.scope, st.version)
    try:
        save_list_snapshot(target, st.numbers, st.prefixes, {"scope": st.scope, "version": st.version,
                                                             "token": st.token})
    except OSError:
        return
    for v, p in _list_files(store, st.scope):
        if v != st.version:
            p.unlink(missing_ok=True)


def _from_files(store, scope, token, version):
    """The newest valid snapshot file of this list at or below ``version``, caught up;
    None when there is none (a corrupt or foreign file is removed, never trusted)."""
    from .registry import RegistryError, load_list_snapshot
    for v, path in _list_files(store, scope):
        if v > version:
            continue  # from a later state of the database (restored from a backup?)
        try:
            numbers, prefixes, _ = load_list_snapshot(path, {"scope": scope, "version": v, "token": token})
        except RegistryError:
            path.unlink(missing_ok=True)
            continue
        st = _ListState(scope, token, v, numbers, frozenset(prefixes))
        if v == version:
            return st
        st, changes = _catch_up(store, st, version)
        if st is not None:
            if changes >= DELTA_SAVE:
                _save_state(store, st)
            return st
    return None


def _list_state(store, scope):
    """A company or campaign list as it stands: from memory while its version is the
    same, else caught up or loaded from its snapshot file, else read whole (and saved)."""
    key = (str(store.path), scope)
    with store.read_view():
        row = store.query_one("SELECT version, token FROM dnc_lists WHERE scope = ?", (scope,))
        if row is None:  # no versioned write yet (an opt-out list a new account took over): read it whole
            numbers, prefixes = _read_whole(store, scope)
            return _ListState(scope, "", 0, numbers, prefixes)
        version, token = row["version"], row["token"]
        st = _list_cache.get(key)
        if st is not None and st.token == token and st.version == version:
            return st
        new = None
        if st is not None and st.token == token and st.version < version:
            new, _ = _catch_up(store, st, version)
        if new is None:
            new = _from_files(store, scope, token, version)
        if new is None:
            numbers, prefixes = _read_whole(store, scope)
            new = _ListState(scope, token, version, numbers, prefixes)
            _save_state(store, new)
    _list_cache[key] = new
    return new


def load_dnc(store, campaign_id=None, account_id=None):
    """The DNC lists that apply: the national registries (shared), the account's own
    company list (``account:<id>``; a campaign's account when only ``campaign_id`` is
    given) and the campaign's list. No account: no company list. Each list comes from
    its snapshot (see _list_state): a check never reads a whole list."""
    if campaign_id is not None and account_id is None:
        row = store.query_one("SELECT account_id FROM campaigns WHERE id = ?", (campaign_id,))
        account_id = row["account_id"] if row else None
    company = _list_state(store, f"account:{int(account_id)}") if account_id is not None else None
    camp = _list_state(store, f"campaign:{int(campaign_id)}") if campaign_id is not None else None
    return DncLists(registries=current_registries(store),
                    company=company.numbers if company else frozenset(),
                    company_prefixes=tuple(sorted(company.prefixes)) if company else (),
                    campaign=camp.numbers if camp else frozenset(),
                    campaign_prefixes=tuple(sorted(camp.prefixes)) if camp else (),
                    company_version=company.version if company else None,
                    campaign_version=camp.version if camp else None)


def waive_registry(store, campaign, jurisdiction, now, actor, reason, revoke=False, account=None):
    """A compliance officer waives (or revokes the waiver of) the national-registry
    requirement for one campaign. Audited."""
    reason = _require_reason(reason)
    jur = jurisdiction.upper()
    with store.transaction():
        camp = _campaign_row(store, campaign, account)
        campaign = camp["name"]
        active = store.query_one("SELECT id FROM dnc_waivers WHERE campaign_id = ? AND jurisdiction = ? AND revoked_at IS NULL",
                                 (camp["id"], jur))
        if revoke:
            if not active:
                raise InputError(f"campaign {campaign!r} has no {jur} registry waiver to revoke")
            store.execute("UPDATE dnc_waivers SET revoked_at = ?, revoked_by = ? WHERE id = ?", (to_iso(now), actor, active["id"]))
        else:
            if active:
                raise InputError(f"campaign {campaign!r} already has a {jur} registry waiver")
            store.execute("INSERT INTO dnc_waivers (campaign_id, jurisdiction, waived_at, waived_by, reason, account_id) "
                          "VALUES (?, ?, ?, ?, ?, ?)", (camp["id"], jur, to_iso(now), actor, reason, camp["account_id"]))
        audit.append(store, now, actor, "dnc.waiver.revoke" if revoke else "dnc.waiver", f"campaign:{campaign}", reason,
                     {"jurisdiction": jur}, account_id=camp["account_id"])
    return {"campaign": campaign, "jurisdiction": jur, "waived": not revoke}


# ---------------------------------------------------------------------------------
# context and checks
# ---------------------------------------------------------------------------------

_ACCOUNT_ROWS = "(account_id = ? OR account_id IS NULL)"


def _account_filter(account_id):
    """Call attempts of one caller: the account's, plus the few no one could attribute
    when accounts were separated (migration m005), which count for every account (when
    in doubt, block). ``None``: only those."""
    if account_id is None:
        return "account_id IS NULL", []
    return _ACCOUNT_ROWS, [int(account_id)]


def load_history(store, values, at, hours, account_id):
    """Call attempts per number of one account (frequency caps and lockouts are per
    caller) in the last ``hours`` before ``at``: {value: [(t, outcome)]}."""
    if not values:
        return {}
    since = to_iso(utc(at) - _dt.timedelta(hours=hours))
    cond, cparams = _account_filter(account_id)
    out = {}
    numbers = ["+%d" % v for v in values]
    for i in range(0, len(numbers), 500):
        chunk = numbers[i:i + 500]
        marks = ",".join("?" * len(chunk))
        for r in store.query(f"SELECT number, started_at, outcome FROM call_attempts WHERE number IN ({marks}) "
                             f"AND started_at > ? AND {cond} ORDER BY started_at", chunk + [since] + cparams):
            out.setdefault(int(r["number"][1:]), []).append((from_iso(r["started_at"]), r["outcome"]))
    return out


def load_recent_history(store, at, hours, account_id):
    """Every call attempt of one account in the last ``hours`` before ``at`` (for
    whole-list screening)."""
    since = to_iso(utc(at) - _dt.timedelta(hours=hours))
    cond, cparams = _account_filter(account_id)
    out = {}
    for number, started, outcome in store.execute(
            f"SELECT number, started_at, outcome FROM call_attempts WHERE started_at > ? AND {cond} "
            f"ORDER BY started_at", [since] + cparams):
        out.setdefault(int(number[1:]), []).append((from_iso(started), outcome))
    return out


def resolve_scope(store, campaign=None, account=None, required=False):
    """(campaign row or None, account id or None) for a check: the campaign's account;
    else ``account``; else the installation's only account (None while there is none,
    unless ``required``; several accounts: InputError asking for --account)."""
    from core.tenancy import resolve_account
    if campaign is not None:
        camp = _campaign_row(store, campaign, account)
        return camp, camp["account_id"]
    if account is not None or required or store.query_one("SELECT id FROM accounts LIMIT 1"):
        return None, resolve_account(store, account)["id"]
    return None, None


def load_context(store, now, region="US", campaign=None, account=None):
    """Everything the engine needs, read from the store at one instant (history is
    added per batch by :func:`check_numbers`). ``campaign`` (id, row or name within
    ``account``) brings its hours, waivers, caller ID, its list and its account's
    company list; without one, ``account`` (name or id) brings that account's list;
    with neither, no company list applies."""
    ensure_defaults(store, now)
    rulesets = load_rulesets(store)
    camp_rules = None
    camp_id = None
    account_id = None
    if campaign is not None:
        camp = _campaign_row(store, campaign, account)
        camp_id, account_id = camp["id"], camp["account_id"]
        region = camp["region"] or region
        from core.tenancy import account_numbers
        waived = frozenset(r["jurisdiction"] for r in store.query(
            "SELECT jurisdiction FROM dnc_waivers WHERE campaign_id = ? AND revoked_at IS NULL", (camp_id,)))
        hours = None
        if camp["hours"]:
            errs = _Errors({})
            hours = compile_windows(camp["hours"], errs)
        camp_rules = CampaignRules(name=camp["name"], hours=hours, registry_waived=waived,
                                   caller_id=camp["caller_id"], own_numbers=account_numbers(store, camp["account_id"]))
    elif account is not None:
        from core.tenancy import resolve_account
        account_id = resolve_account(store, account)["id"]
    return Context(rulesets=rulesets, default_region=region.upper(), dnc=load_dnc(store, camp_id, account_id),
                   lifeline=load_lifeline(store), campaign=camp_rules)


def history_hours(rulesets):
    """How far back call history matters: the longest frequency window or lockout of
    any rule set, and at least the 30 days of the abandon window."""
    hours = [720.0]
    for rs in rulesets.values():
        hours += [rs.abandon_lockout_hours or 0, rs.machine_lockout_hours or 0,
                  rs.frequency.window_hours if rs.frequency else 0]
        hours += [st.frequency.window_hours for st in rs.states.values() if st.frequency]
    return float(max(hours))


def check_numbers(store, numbers, now, at=None, region="US", campaign=None, leads=None, account=None):
    """`dialer check`: verdicts for numbers (or Lead objects) at ``at`` (default now),
    with multi-line findings across them, as the caller sees them: ``campaign`` (id,
    row, or name within ``account``), else ``account`` (name or id), else the
    installation's only account (its company list and call history; none while no
    account exists)."""
    at = check_instant(at, "--at") if at is not None else utc(now)
    camp, account_id = resolve_scope(store, campaign, account)
    ctx = load_context(store, now, region, camp["id"] if camp else None, account_id)
    sc = Screener(ctx, at)
    items = [replace(ld, facts=sc.facts(ld)) for ld in (leads if leads is not None else [Lead(n) for n in numbers])]
    ctx.history = load_history(store, [ld.facts.value for ld in items if ld.facts.value is not None], at,
                               history_hours(ctx.rulesets), account_id)
    return screen(items, at, ctx)


def check_dnc(store, numbers, now, region="US", campaign=None, account=None):
    """`dialer dnc check`: which DNC sources list each number (and the registry status)."""
    verdicts = check_numbers(store, numbers, now, region=region, campaign=campaign, account=account)
    out = []
    for v in verdicts:
        dnc = [r for r in v.reasons if r.category == "dnc"]
        out.append({"input": v.input, "number": v.number, "listed": any(
            not is_campaign_wide(r) for r in dnc), "reasons": [r.as_dict() for r in dnc],
            "error": next((r.detail for r in v.reasons if r.category == "invalid"), None)})
    return out


# ---------------------------------------------------------------------------------
# what the compliance screens read (the browser; the CLI has dnc check and rules show)
# ---------------------------------------------------------------------------------

def registry_status(store, now):
    """Every jurisdiction with a rule set or a registry: its newest national registry
    (as-of date, age in days, numbers, when and by whom imported, whether it can be
    read) against the rule set's limit (``registry.max_age_days``): fresh, stale,
    missing (a required registry never imported), unreadable, or not required."""
    ensure_defaults(store, now)
    today = utc(now).date()
    try:
        rulesets = load_rulesets(store)
    except RuleSetError:
        rulesets = {}
    loaded = current_registries(store)
    rows = {r["jurisdiction"]: r for r in store.query(
        "SELECT r.* FROM dnc_registries r WHERE r.id = (SELECT r2.id FROM dnc_registries r2 WHERE "
        "r2.jurisdiction = r.jurisdiction ORDER BY r2.as_of DESC, r2.id DESC LIMIT 1)")}
    out = []
    for jur in sorted(set(rulesets) | set(rows)):
        rs, row = rulesets.get(jur), rows.get(jur)
        item = {"jurisdiction": jur, "required": bool(rs and rs.registry_required),
                "max_age_days": rs.registry_max_age_days if rs else None, "as_of": None, "age_days": None,
                "numbers": None, "imported_at": None, "actor": None, "source_file": None, "error": None}
        if row is not None:
            as_of = _dt.date.fromisoformat(row["as_of"])
            item.update(as_of=row["as_of"], age_days=(today - as_of).days, numbers=row["numbers"],
                        imported_at=row["imported_at"], actor=row["actor"], source_file=row["source_file"],
                        error=getattr(loaded.get(jur), "error", None))
        if row is None:
            item["state"] = "missing" if item["required"] else "none"
        elif item["error"]:
            item["state"] = "unreadable"
        elif item["max_age_days"] is not None and item["age_days"] > item["max_age_days"]:
            item["state"] = "stale"
        else:
            item["state"] = "fresh"
        out.append(item)
    return out


def dnc_list(store, account, campaign=None, limit=200, like=None, before=None):
    """The entries of an account's company list, or (``campaign``: id or name within
    ``account``) of a campaign's list: {scope, campaign, total, entries: [{entry,
    added_at, added_by, reason}], next_before}, newest first, at most ``limit``;
    ``like``: only entries containing those digits. ``before``: the ``next_before``
    of the previous page (None on the last page)."""
    source = "campaign" if campaign is not None else "company"
    scope, _ = _scope(store, source, campaign, account)
    total = store.query_one("SELECT COUNT(*) AS n FROM dnc_entries WHERE scope = ?", (scope,))["n"]
    where, params = "scope = ?", [scope]
    digits = "".join(c for c in str(like or "") if c.isdigit())
    if digits:
        where += " AND pattern LIKE ?"
        params.append(f"%{digits}%")
    if before is not None:
        where += " AND id < ?"
        params.append(int(before))
    rows = store.query(f"SELECT id, pattern, is_prefix, added_at, added_by, reason FROM dnc_entries WHERE {where} "
                       f"ORDER BY id DESC LIMIT ?", params + [int(limit) + 1])
    more = len(rows) > int(limit)
    rows = rows[:int(limit)]
    return {"scope": scope, "campaign": campaign, "total": total,
            "entries": [{"entry": "+" + r["pattern"] + ("*" if r["is_prefix"] else ""), "added_at": r["added_at"],
                         "added_by": r["added_by"], "reason": r["reason"]} for r in rows],
            "next_before": rows[-1]["id"] if more else None}


def waivers(store, account):
    """The registry waivers of an account's campaigns (active and revoked), newest first."""
    from core.tenancy import resolve_account
    acc = resolve_account(store, account)
    return store.query(
        "SELECT w.id, c.id AS campaign_id, c.name AS campaign, w.jurisdiction, w.waived_at, w.waived_by, w.reason, "
        "w.revoked_at, w.revoked_by FROM dnc_waivers w JOIN campaigns c ON c.id = w.campaign_id "
        "WHERE c.account_id = ? ORDER BY w.id DESC", (acc["id"],))

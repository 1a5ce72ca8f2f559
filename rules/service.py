"""Library functions behind the CLI (and later the web console): each command calls
one of these. They load what the pure engine needs from the store, and record
every change in the audit log."""

import csv
import datetime as _dt
import hashlib
import io
import json
import os
import pathlib
import re
import uuid
from dataclasses import replace

from dialer.errors import InputError, NotFound
from dialer.timeutil import from_iso, parse_date, to_iso, utc

from . import audit
from .engine import CampaignRules, Context, DncLists, Lead, Registry, Screener, is_campaign_wide, screen
from .numbers import country_code_of, normalise
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


def _save_new_version(store, jur, data, lines, now, actor, reason, create=False):
    with store.transaction():
        row = _latest(store, jur)
        if row is None and not create:
            raise NotFound(f"no rule set {jur}; to add one, use: dialer rules edit {jur} FILE --create")
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
        _insert_version(store, jur, version, data, now, actor, reason, old=old)
    return {"jurisdiction": jur, "version": version, "changes": diff(old, data)}


def edit_ruleset(store, jurisdiction, text, now, actor, reason, create=False):
    """Replace a rule set with the text given (JSON or YAML: a str, bytes, or an open
    binary file, of which at most 256 KiB are read; bytes are UTF-8, or UTF-16/32 with
    a BOM). Invalid data is refused with the line and field that is wrong, hostile
    text (anchors, deep nesting, other encodings, too long) in one line; the old
    version stays in force."""
    reason = _require_reason(reason)
    data, lines = parse_text(read_limited(text))
    return _save_new_version(store, _jurisdiction(jurisdiction), data, lines, now, actor, reason, create=create)


def set_rule(store, jurisdiction, field, value_text, now, actor, reason):
    """Set one field (dotted path) of the current rule set: ``states.FL.hours.windows.sun``
    to ``["09:00-20:00"]``. The value is JSON/YAML ("null" removes the field)."""
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
    return _save_new_version(store, jur, data, None, now, actor, reason)


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
    from campaigns.store import get_campaign
    return get_campaign(store, name, account)


def _scope(store, source, campaign, account=None):
    """The DNC list written: (scope, account id). ``company`` is the account's own list
    (``account:<id>``), ``campaign`` a campaign's list (``campaign:<id>``)."""
    from campaigns.store import resolve_account
    if source == "campaign":
        if not campaign:
            raise InputError("--campaign NAME is needed for the campaign DNC list")
        camp = _campaign_row(store, campaign, account)
        return f"campaign:{camp['id']}", camp["account_id"]
    if campaign and source == "company":
        raise InputError("the company DNC list is account-wide: drop --campaign, or use --source campaign")
    acc = resolve_account(store, account)
    return f"account:{acc['id']}", acc["id"]


def parse_dnc_pattern(text, region="US"):
    """A number or a wildcard ('+1212*', '212*', '1212555*') -> (pattern, is_prefix).
    Patterns are E.164 digits without '+'. Raises InputError."""
    s = str(text).strip()
    if s.endswith("*"):
        body = s[:-1].strip()
        digits = "".join(c for c in body if c.isdigit())
        if not digits or any(c.isalpha() for c in body):
            raise InputError(f"{text!r} is not a number prefix (e.g. +1212* or 212555*)")
        if not body.startswith("+"):
            cc = country_code_of(region)
            if body.startswith("00"):
                digits = digits[2:]
            elif cc == 1 and len(digits) in (3, 6) and digits[0] in "23456789":
                digits = "1" + digits
            elif cc == 1 and digits.startswith("1") and len(digits) in (4, 7):
                pass
            else:
                raise InputError(f"{text!r}: write a prefix with its country code (+44 20*) "
                                 f"or, for North America, an area code (212*) or area code and exchange (212555*)")
        if len(digits) < 2:
            raise InputError(f"{text!r}: a prefix needs a country code and at least one more digit")
        return digits, True
    f = normalise(s, region)
    if f.e164 is None:
        raise InputError(f"{text!r} is not a valid phone number: {f.error}")
    return f.e164[1:], False


def add_dnc(store, numbers, now, actor, source="company", campaign=None, region="US", reason="", account=None):
    """Put numbers (or prefix wildcards) on an account's company list (``source="company"``:
    the account's own list; ``account`` a name, an id, or None for the installation's
    only account) or on a campaign's list; effective at once."""
    if not numbers:
        raise InputError("give at least one number")
    parsed = [parse_dnc_pattern(n, region) for n in numbers]  # all or nothing
    with store.transaction():
        scope, account_id = _scope(store, source, campaign, account)
        added = 0
        for pattern, is_prefix in parsed:
            cur = store.execute(
                "INSERT INTO dnc_entries (scope, pattern, is_prefix, added_at, added_by, reason) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (scope, pattern) DO NOTHING",
                (scope, pattern, int(is_prefix), to_iso(now), actor, reason or ""),
            )
            added += cur.rowcount
        audit.append(store, now, actor, "dnc.add", f"dnc:{scope}", reason or "",
                     {"patterns": ["+" + p + ("*" if x else "") for p, x in parsed], "added": added},
                     account_id=account_id)
    return {"scope": scope, "added": added, "already": len(parsed) - added,
            "entries": ["+" + p + ("*" if x else "") for p, x in parsed]}


def remove_dnc(store, numbers, now, actor, source="company", campaign=None, region="US", reason="", account=None):
    if not numbers:
        raise InputError("give at least one number")
    if not reason or not reason.strip():
        raise InputError("say why (--reason TEXT): removing a number from a DNC list is recorded with its reason")
    parsed = [parse_dnc_pattern(n, region) for n in numbers]
    with store.transaction():
        scope, account_id = _scope(store, source, campaign, account)
        removed = 0
        for pattern, _ in parsed:
            removed += store.execute("DELETE FROM dnc_entries WHERE scope = ? AND pattern = ?", (scope, pattern)).rowcount
        audit.append(store, now, actor, "dnc.remove", f"dnc:{scope}", reason, {
            "patterns": ["+" + p + ("*" if x else "") for p, x in parsed], "removed": removed}, account_id=account_id)
    return {"scope": scope, "removed": removed, "not_listed": len(parsed) - removed}


def _read_lines(path):
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise InputError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory, not a file") from None
    if b"\x00" in raw[:4096] and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(f"{path} looks binary, not a text list of numbers")
    for enc in ("utf-8-sig", "utf-16", "latin-1"):
        try:
            text = raw.decode(enc) if not (enc == "utf-16" and not raw.startswith((b"\xff\xfe", b"\xfe\xff"))) else None
        except UnicodeDecodeError:
            continue
        if text is not None:
            return text.splitlines()
    return raw.decode("latin-1").splitlines()


def import_dnc(store, path, now, actor, source="company", campaign=None, as_of=None, jurisdiction="US",
               region="US", progress=None, account=None):
    """Import a DNC file. ``national``: a registry snapshot with its ``as_of`` date,
    kept as a compact bitmap file beside the database (written whole, then recorded in
    one transaction: a crash leaves the previous registry in force). ``company`` /
    ``campaign``: numbers and wildcards, one transaction. Junk lines are counted and
    reported; the rest is imported. ``company`` is the account's own list (``account``:
    name, id, or None for the installation's only account); national registries are
    shared by every account."""
    if source not in SOURCES:
        raise InputError(f"--source must be one of {', '.join(SOURCES)}")
    if source == "national":
        if account is not None or campaign is not None:
            raise InputError("a national registry is shared by every account: drop --account and --campaign")
        return _import_national(store, path, now, actor, as_of, jurisdiction, progress)
    if source == "company" and not campaign:
        from campaigns.store import resolve_account
        resolve_account(store, account)  # before the file is read: a missing account is the first error
    lines = _read_lines(path)
    parsed, junk = [], []
    for n, line in enumerate(lines, start=1):
        cell = line.split(",")[0].strip().strip('"') if "," in line else line.strip()
        if not cell or cell.startswith("#"):
            continue
        try:
            parsed.append(parse_dnc_pattern(cell, region))
        except InputError as e:
            if n == 1 and any(c.isalpha() for c in cell):
                continue  # header
            junk.append({"line": n, "text": line[:80], "reason": str(e)})
    if not parsed:
        raise InputError(f"no numbers found in {path} ({len(junk)} junk lines); nothing imported")
    with store.transaction():
        scope, account_id = _scope(store, source, campaign, account)
        added = 0
        for pattern, is_prefix in parsed:
            added += store.execute(
                "INSERT INTO dnc_entries (scope, pattern, is_prefix, added_at, added_by, reason) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (scope, pattern) DO NOTHING",
                (scope, pattern, int(is_prefix), to_iso(now), actor, f"import {os.path.basename(str(path))}"),
            ).rowcount
        audit.append(store, now, actor, "dnc.import", f"dnc:{scope}", f"import {os.path.basename(str(path))}",
                     {"lines": len(lines), "numbers": len(parsed), "added": added, "junk": len(junk)},
                     account_id=account_id)
    return {"source": source, "scope": scope, "lines": len(lines), "numbers": len(parsed), "added": added,
            "duplicates": len(parsed) - added, "junk": len(junk), "junk_examples": junk[:10]}


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


def load_dnc(store, campaign_id=None, account_id=None):
    """The DNC lists that apply: the national registries (shared), the account's own
    company list (``account:<id>``; a campaign's account when only ``campaign_id`` is
    given) and the campaign's list. No account: no company list."""
    company, cprefix, camp, camp_prefix = set(), [], set(), []
    if campaign_id is not None and account_id is None:
        row = store.query_one("SELECT account_id FROM campaigns WHERE id = ?", (campaign_id,))
        account_id = row["account_id"] if row else None
    account_scope = f"account:{int(account_id)}" if account_id is not None else None
    scopes = ([account_scope] if account_scope else []) + ([f"campaign:{campaign_id}"] if campaign_id else [])
    if not scopes:
        scopes = [""]  # no list: nothing matches
    marks = ",".join("?" * len(scopes))
    for r in store.query(f"SELECT scope, pattern, is_prefix FROM dnc_entries WHERE scope IN ({marks})", scopes):
        if r["scope"] == account_scope:
            (cprefix.append(r["pattern"]) if r["is_prefix"] else company.add(int(r["pattern"])))
        else:
            (camp_prefix.append(r["pattern"]) if r["is_prefix"] else camp.add(int(r["pattern"])))
    return DncLists(registries=current_registries(store), company=frozenset(company),
                    company_prefixes=tuple(sorted(cprefix)), campaign=frozenset(camp),
                    campaign_prefixes=tuple(sorted(camp_prefix)))


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
    from campaigns.store import resolve_account
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
        from campaigns.store import account_numbers
        waived = frozenset(r["jurisdiction"] for r in store.query(
            "SELECT jurisdiction FROM dnc_waivers WHERE campaign_id = ? AND revoked_at IS NULL", (camp_id,)))
        hours = None
        if camp["hours"]:
            errs = _Errors({})
            hours = compile_windows(camp["hours"], errs)
        camp_rules = CampaignRules(name=camp["name"], hours=hours, registry_waived=waived,
                                   caller_id=camp["caller_id"], own_numbers=account_numbers(store, camp["account_id"]))
    elif account is not None:
        from campaigns.store import resolve_account
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
    at = utc(at) if at is not None else utc(now)
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

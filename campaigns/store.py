"""Accounts, their users and own numbers (DIDs), and campaigns with their life cycle.

Accounts are the boundary: every tenant row belongs to one, and every look-up of a
tenant's data is scoped by one. :func:`resolve_account` is the one place an account
is found from what a user typed (a name, an id, or nothing while the installation
has exactly one account, in ``core.tenancy``); :func:`get_campaign` finds a campaign by
id, or by name within an account."""

import hashlib
import json
import shutil
import wave
from decimal import Decimal, InvalidOperation

from core.errors import InputError, NotFound, StateError
from core.timeutil import shown, to_iso
from core import audit
from rules.numbers import normalise
from rules.ruleset import _Errors, compile_windows

from core.tenancy import account_numbers, campaign_row, get_account, resolve_account  # noqa: F401 (re-used here)

from . import model


def create_account(store, name, now, actor, connection="fiber", lines=30, operator=False):
    """A new account. The first account of an installation takes over the company DNC
    entries recorded before any account existed (see migration m005). ``operator``:
    the installation's operator (see :func:`set_operator`)."""
    name = (name or "").strip()
    if not name:
        raise InputError("account name is empty")
    if "/" in name:
        raise InputError(f"account name {name!r}: '/' separates account and user (ACCOUNT/USER); leave it out")
    model.check_capacity(connection, lines)
    with store.transaction():
        if store.query_one("SELECT id FROM accounts WHERE name = ?", (name,)):
            raise InputError(f"account {name!r} already exists")
        first = store.query_one("SELECT id FROM accounts LIMIT 1") is None
        cur = store.execute("INSERT INTO accounts (name, created_at, connection, line_capacity, operator) "
                            "VALUES (?, ?, ?, ?, ?)", (name, to_iso(now), connection, lines, int(bool(operator))))
        acc_id = cur.lastrowid
        adopted = 0
        if first:
            adopted = store.execute(
                "INSERT INTO dnc_entries (scope, pattern, is_prefix, added_at, added_by, reason) "
                "SELECT ?, pattern, is_prefix, added_at, added_by, reason FROM dnc_entries WHERE scope = 'company' "
                "ON CONFLICT (scope, pattern) DO NOTHING", (f"account:{acc_id}",)).rowcount
            store.execute("DELETE FROM dnc_entries WHERE scope = 'company'")
            if adopted:
                from rules.service import bump_list_version
                bump_list_version(store, f"account:{acc_id}")  # its snapshot is built from these entries
        detail = {"name": name, "connection": connection, "line_capacity": lines}
        if operator:
            detail["operator"] = True
        if adopted:
            detail["dnc_taken_over"] = adopted
        audit.append(store, now, actor, "account.create", f"account:{name}", "", detail, account_id=acc_id)
    return show_account(store, name)


def set_operator(store, name, now, actor, operator=True, reason=""):
    """Mark an account as the installation's operator (or no longer): the compliance
    officers and owners of an operator account may change what every account is held
    to (rule sets, life-line numbers, national registries) from the browser. Only the
    terminal does this (``dialer account operator NAME``); audited."""
    with store.transaction():
        acc = resolve_account(store, name)
        if bool(acc["operator"]) == bool(operator):
            raise InputError(f"account {acc['name']!r} is {'already' if operator else 'not'} the installation's operator")
        store.execute("UPDATE accounts SET operator = ? WHERE id = ?", (int(bool(operator)), acc["id"]))
        audit.append(store, now, actor, "account.operator", f"account:{acc['name']}", reason or "",
                     {"operator": bool(operator)}, account_id=acc["id"])
    return {"account": acc["name"], "operator": bool(operator)}


def _account_list(store):
    return store.query("SELECT * FROM accounts ORDER BY name")


def show_account(store, name):
    acc = resolve_account(store, name)
    acc["numbers"] = sorted(account_numbers(store, acc["id"]))
    acc["users"] = store.query("SELECT name, role FROM users WHERE account_id = ? ORDER BY name", (acc["id"],))
    acc["campaigns"] = [r["name"] for r in store.query("SELECT name FROM campaigns WHERE account_id = ? ORDER BY name",
                                                       (acc["id"],))]
    return acc


def _user_name(name):
    name = (name or "").strip()
    if not name:
        raise InputError("user name is empty")
    if "/" in name or any(c.isspace() for c in name):
        raise InputError(f"user name {name!r}: no '/' or spaces ('/' separates account and user: ACCOUNT/USER)")
    return name


def add_user(store, account, name, role, now, actor, pin=None):
    """Add a user to an account; with ``pin``, also its agent PIN (checked before
    anything is written; user and PIN in one transaction, only a hash is kept)."""
    from core.pins import check_pin, hash_pin
    acc = resolve_account(store, account)
    if role not in model.ROLES:
        raise InputError(f"role must be one of {', '.join(model.ROLES)}")
    name = _user_name(name)
    pin_hash = hash_pin(check_pin(pin)) if pin is not None else None
    with store.transaction():
        if store.query_one("SELECT id FROM users WHERE account_id = ? AND name = ?", (acc["id"], name)):
            raise InputError(f"user {name!r} already exists in account {acc['name']!r}")
        store.execute("INSERT INTO users (account_id, name, role, created_at, pin_hash) VALUES (?, ?, ?, ?, ?)",
                      (acc["id"], name, role, to_iso(now), pin_hash))
        audit.append(store, now, actor, "user.add", f"account:{acc['name']}", "",
                     {"user": name, "role": role, "pin": "set" if pin_hash else None}, account_id=acc["id"])
    return {"account": acc["name"], "user": name, "role": role, "pin_set": pin_hash is not None}


def list_users(store, account=None):
    """An account's users: name, role, whether a PIN is set, created_at (never the hash)."""
    acc = resolve_account(store, account)
    rows = store.query("SELECT name, role, pin_hash IS NOT NULL AS pin_set, created_at FROM users "
                       "WHERE account_id = ? ORDER BY name", (acc["id"],))
    for r in rows:
        r["pin_set"] = bool(r["pin_set"])
        r["account"] = acc["name"]
    return rows


def find_user(store, spec):
    """The user named by ``ACCOUNT/USER``, or ``USER`` when only one account has a user
    of that name: (account row, user row). InputError/NotFound otherwise."""
    spec = (spec or "").strip()
    if not spec:
        raise InputError("--user is empty: give ACCOUNT/USER")
    if "/" in spec:
        acc_name, name = (p.strip() for p in spec.split("/", 1))
        acc = store.query_one("SELECT * FROM accounts WHERE name = ?", (acc_name,))
        user = acc and store.query_one("SELECT * FROM users WHERE account_id = ? AND name = ?", (acc["id"], name))
        if not user:
            raise InputError(f"--user {spec}: no user {name!r} in account {acc_name!r}" if acc else
                             f"--user {spec}: no account named {acc_name!r}")
        return acc, user
    rows = store.query("SELECT u.*, a.name AS account_name FROM users u JOIN accounts a ON a.id = u.account_id "
                       "WHERE u.name = ? ORDER BY a.name", (spec,))
    if not rows:
        raise InputError(f"--user {spec}: no such user (give ACCOUNT/USER of an existing user)")
    if len(rows) > 1:
        raise InputError(f"--user {spec}: a user of that name is in several accounts "
                         f"({', '.join(r['account_name'] for r in rows)}): write ACCOUNT/USER")
    acc = store.query_one("SELECT * FROM accounts WHERE id = ?", (rows[0]["account_id"],))
    return acc, rows[0]


def add_number(store, account, number, now, actor, region="US", label=None):
    acc = resolve_account(store, account)
    f = normalise(number, region)
    if f.e164 is None:
        raise InputError(f"{number!r} is not a valid phone number: {f.error}")
    with store.transaction():
        if store.query_one("SELECT id FROM account_numbers WHERE account_id = ? AND number = ?", (acc["id"], f.e164)):
            raise InputError(f"{f.e164} is already a number of account {acc['name']!r}")
        store.execute(
            "INSERT INTO account_numbers (account_id, number, label, created_at) VALUES (?, ?, ?, ?)",
            (acc["id"], f.e164, label, to_iso(now)),
        )
        audit.append(store, now, actor, "number.add", f"account:{acc['name']}", "", {"number": f.e164},
                     account_id=acc["id"])
    return {"account": acc["name"], "number": f.e164}


def list_numbers(store, account=None):
    acc = resolve_account(store, account)
    return store.query("SELECT number, label, created_at FROM account_numbers WHERE account_id = ? ORDER BY number",
                       (acc["id"],))


def parse_hours(text):
    """'mon-fri=09:00-17:00,18:00-20:00;sat=10:00-14:00;sun=' -> windows mapping."""
    if text is None or not str(text).strip():
        return None
    spec = {}
    for part in str(text).split(";"):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise InputError(f"campaign hours {part!r}: write DAYS=HH:MM-HH:MM[,HH:MM-HH:MM] (e.g. mon-fri=09:00-17:00)")
        days, wins = part.split("=", 1)
        spec[days.strip()] = [w.strip() for w in wins.split(",") if w.strip()]
    errors = _Errors({})
    compile_windows(spec, errors, ("hours",))
    if errors.items:
        raise InputError("campaign hours not accepted: " + "; ".join(errors.items))
    return spec


def check_greeting(path):
    """The customer's own safe-harbor message: WAV, 8 or 16 kHz, mono, 16-bit PCM."""
    try:
        with wave.open(str(path), "rb") as w:
            ch, rate, width, frames = w.getnchannels(), w.getframerate(), w.getsampwidth(), w.getnframes()
    except FileNotFoundError:
        raise InputError(f"greeting file not found: {path}") from None
    except (wave.Error, EOFError) as e:
        raise InputError(f"greeting {path} is not a WAV file the dialer can play ({e}); "
                         f"use WAV, 8 or 16 kHz, mono, 16-bit PCM") from None
    problems = []
    if rate not in (8000, 16000):
        problems.append(f"{rate} Hz (need 8000 or 16000)")
    if ch != 1:
        problems.append(f"{ch} channels (need mono)")
    if width != 2:
        problems.append(f"{8 * width}-bit samples (need 16-bit PCM)")
    if frames == 0:
        problems.append("no audio")
    if problems:
        raise InputError(f"greeting {path} refused: " + ", ".join(problems))
    return {"rate": rate, "seconds": round(frames / rate, 2)}


def _decimal_option(text, option, example):
    """A finite decimal number from a user's option value; InputError naming the option."""
    try:
        v = Decimal(str(text).strip())
    except (InvalidOperation, ValueError):
        v = None
    if v is None or not v.is_finite():
        raise InputError(f"{option} {shown(text)} is not a finite number (e.g. {example})")
    return v


def _abandon_target(text):
    """--abandon-target: a fraction 0..0.03, or a percentage above 1 (2.5 = 2.5 %)."""
    v = _decimal_option(text, "--abandon-target", "0.03 for 3 %")
    if v < 0:
        raise InputError(f"--abandon-target {shown(text)} is negative: give a fraction between 0 and 0.03 "
                         f"(or a percentage up to 3)")
    if v > 1:
        v = v / 100  # given in percent
    if v > Decimal("0.03"):
        raise InputError(f"--abandon-target {shown(text)} is above the legal cap of 3 %: give a fraction between 0 "
                         f"and 0.03 (or a percentage up to 3)")
    return v


def _power_ratio(text):
    """--ratio: lines per free agent in power mode, 1..5."""
    if text is None or not str(text).strip():
        raise InputError("power mode needs --ratio, a number of lines per free agent between 1 and 5 (e.g. 1.5)")
    v = _decimal_option(text, "--ratio", "1.5")
    if not Decimal(1) <= v <= Decimal(5):
        raise InputError(f"--ratio {shown(text)}: the power ratio must be between 1 and 5 lines per free agent")
    return v


def create_campaign(store, name, account, now, actor, region="US", caller_id=None, hours=None,
                    dial_mode="predictive", power_ratio=None, abandon_target="0.03", retry=None, greeting=None):
    """A draft campaign of ``account`` (name, id, or None for the only account); its
    name is unique within the account."""
    name = (name or "").strip()
    if not name:
        raise InputError("campaign name is empty")
    acc = resolve_account(store, account)
    spec = parse_hours(hours) if isinstance(hours, str) or hours is None else hours
    if dial_mode not in model.DIAL_MODES:
        raise InputError(f"dial mode must be one of {', '.join(model.DIAL_MODES)}")
    ratio = None
    if dial_mode == "power":
        ratio = _power_ratio(power_ratio)
    elif power_ratio is not None:
        _power_ratio(power_ratio)  # checked even when unused: a typo is still a typo
    target = _abandon_target(abandon_target)
    retry_rules = model.parse_retry(retry) if isinstance(retry, str) or retry is None else retry
    cid = None
    if caller_id:
        f = normalise(caller_id, region)
        if f.e164 is None:
            raise InputError(f"caller ID {caller_id!r} is not a valid phone number: {f.error}")
        cid = f.e164
    if greeting:
        check_greeting(greeting)  # refused before anything is created
    with store.transaction():
        if store.query_one("SELECT id FROM campaigns WHERE account_id = ? AND name = ?", (acc["id"], name)):
            raise InputError(f"campaign {name!r} already exists in account {acc['name']!r}")
        cur = store.execute(
            "INSERT INTO campaigns (account_id, name, region, caller_id, hours, state, created_at, dial_mode, "
            "power_ratio, abandon_target, retry_rules, updated_at) VALUES (?, ?, ?, ?, ?, 'draft', ?, ?, ?, ?, ?, ?)",
            (acc["id"], name, region.upper(), cid, json.dumps(spec) if spec else None, to_iso(now), dial_mode,
             str(ratio) if ratio is not None else None, str(target), json.dumps(retry_rules), to_iso(now)),
        )
        camp_id = cur.lastrowid
        audit.append(store, now, actor, "campaign.create", f"campaign:{name}", "",
                     {"account": acc["name"], "region": region, "caller_id": cid, "hours": spec,
                      "dial_mode": dial_mode, "abandon_target": str(target), "retry": retry_rules},
                     account_id=acc["id"])
    if greeting:
        set_greeting(store, camp_id, greeting, now, actor)
    return get_campaign(store, camp_id)


EDITABLE_STATES = ("draft", "paused")


class NotEditable(InputError, StateError):
    """A change the campaign's state does not allow: one message to the CLI and the
    pages (an InputError), a conflict to the JSON API (a StateError)."""


def update_campaign(store, name, now, actor, account=None, caller_id=None, hours=None, dial_mode=None,
                    power_ratio=None, abandon_target=None, retry=None):
    """Edit a draft or paused campaign (a running one is paused first; a finished one
    stays as it ended). Only the settings given change, checked as at creation;
    ``hours`` or ``caller_id`` given as "" clear them. Audited with what changed."""
    camp = get_campaign(store, name, account)
    if camp["state"] not in EDITABLE_STATES:
        raise NotEditable(f"campaign {camp['name']!r} is {camp['state']}: only a draft or paused campaign can be "
                          f"edited" + (" (pause it first)" if camp["state"] == "running" else ""))
    changes = {}
    if caller_id is not None:
        cid = None
        if str(caller_id).strip():
            f = normalise(caller_id, camp["region"])
            if f.e164 is None:
                raise InputError(f"caller ID {caller_id!r} is not a valid phone number: {f.error}")
            cid = f.e164
        changes["caller_id"] = cid
    if hours is not None:
        spec = parse_hours(hours) if isinstance(hours, str) else hours
        changes["hours"] = json.dumps(spec) if spec else None
    mode = dial_mode if dial_mode is not None else camp["dial_mode"]
    if dial_mode is not None:
        if dial_mode not in model.DIAL_MODES:
            raise InputError(f"dial mode must be one of {', '.join(model.DIAL_MODES)}")
        changes["dial_mode"] = dial_mode
    if mode == "power" and (power_ratio is not None or camp["power_ratio"] is None):
        changes["power_ratio"] = str(_power_ratio(power_ratio))
    elif mode != "power" and camp["power_ratio"] is not None:
        changes["power_ratio"] = None
    if abandon_target is not None:
        changes["abandon_target"] = str(_abandon_target(abandon_target))
    if retry is not None:
        changes["retry_rules"] = json.dumps(model.parse_retry(retry) if isinstance(retry, str) else retry)
    with store.transaction():
        current = get_campaign(store, camp["id"])
        if current["state"] not in EDITABLE_STATES:
            raise NotEditable(f"campaign {camp['name']!r} is {current['state']}: only a draft or paused campaign "
                              f"can be edited")
        if changes:
            sets = ", ".join(f"{k} = ?" for k in changes)
            store.execute(f"UPDATE campaigns SET {sets}, updated_at = ? WHERE id = ?",
                          (*changes.values(), to_iso(now), camp["id"]))
            audit.append(store, now, actor, "campaign.edit", f"campaign:{camp['name']}", "", changes,
                         account_id=camp["account_id"])
    return get_campaign(store, camp["id"])


def set_greeting(store, name, path, now, actor, account=None):
    camp = get_campaign(store, name, account)
    info = check_greeting(path)
    data = open(path, "rb").read()
    sha = hashlib.sha256(data).hexdigest()
    target = store.files_dir / "greetings" / f"{camp['id']}-{sha[:16]}.wav"
    target.parent.mkdir(exist_ok=True)
    shutil.copyfile(path, target)
    with store.transaction():
        store.execute("UPDATE campaigns SET greeting = ?, updated_at = ? WHERE id = ?",
                      (str(target.relative_to(store.files_dir)), to_iso(now), camp["id"]))
        audit.append(store, now, actor, "campaign.greeting", f"campaign:{camp['name']}", "", {"sha256": sha, **info},
                     account_id=camp["account_id"])
    return {"campaign": camp["name"], "greeting": target.name, **info}


def get_campaign(store, name_or_id, account=None):
    """A campaign row with its hours and retry rules decoded (``core.tenancy.campaign_row``
    says how it is found)."""
    return _decode_campaign(campaign_row(store, name_or_id, account))


def _decode_campaign(row):
    row["hours"] = json.loads(row["hours"]) if row["hours"] else None
    row["retry_rules"] = json.loads(row["retry_rules"]) if row.get("retry_rules") else dict(model.DEFAULT_RETRY)
    return row


def list_campaigns(store, account=None):
    """The campaigns of one account (``account``: name, id, or None for the only one)."""
    acc = resolve_account(store, account)
    sql = ("SELECT c.id, c.name, a.name AS account, c.state, c.dial_mode, c.region, c.caller_id, "
           "(SELECT COUNT(*) FROM leads l WHERE l.campaign_id = c.id AND l.status != 'staged') AS leads "
           "FROM campaigns c JOIN accounts a ON a.id = c.account_id WHERE c.account_id = ? ORDER BY c.name")
    return store.query(sql, (acc["id"],))


def show_campaign(store, name, account=None):
    camp = get_campaign(store, name, account)
    counts = {r["status"]: r["n"] for r in store.query(
        "SELECT status, COUNT(*) AS n FROM leads WHERE campaign_id = ? GROUP BY status", (camp["id"],))}
    camp["leads"] = counts
    return camp


def change_state(store, name, action, now, actor, reason="", account=None, start_check=None):
    """start / pause / finish, with only legal transitions. Starting needs a caller ID
    the rules accept and, for predictive and power modes, the safe-harbor greeting;
    ``start_check(store, campaign_row)``, when given, adds its own reasons to refuse a
    start (the billing layer's account standing: ``billing.standing.change_state``).
    Finishing is refused while an import of the campaign holds staged rows (running,
    interrupted, or failed and resumable): its list would land in a finished campaign,
    or be stranded there. The message names the import; let it end, or cancel it
    (``dialer list cancel ID``), then finish."""
    from rules.service import load_context
    from rules.engine import caller_id_reasons
    with store.transaction():
        camp = get_campaign(store, name, account)
        label = camp["name"]
        to = model.transition(camp["state"], action, f"campaign {label!r}")
        if action == "finish":
            from .files import one_line
            from .leads import _holding
            held = _holding(store, camp["id"])
            if held:
                j = held[0]
                raise InputError(f"campaign {label!r} cannot finish while import {j['id']} ({one_line(j['file_name'])}, "
                                 f"{j['status']}) holds rows of a list: let it end, or cancel it with: "
                                 f"dialer list cancel {j['id']}")
        if action == "start":
            ctx = load_context(store, now, campaign=camp["id"])
            problems = [r.detail for r in caller_id_reasons(camp["caller_id"], ctx.campaign.own_numbers, ctx)]
            if camp["dial_mode"] in ("predictive", "power") and not camp["greeting"]:
                problems.append("a predictive or power campaign needs its safe-harbor greeting (dialer campaign greeting NAME FILE.wav)")
            if start_check is not None:
                problems.extend(start_check(store, camp))
            if problems:
                raise InputError(f"campaign {label!r} cannot start: " + "; ".join(problems))
        store.execute("UPDATE campaigns SET state = ?, updated_at = ? WHERE id = ?", (to, to_iso(now), camp["id"]))
        audit.append(store, now, actor, f"campaign.{action}", f"campaign:{label}", reason or "",
                     {"from": camp["state"], "to": to}, account_id=camp["account_id"])
    return {"campaign": label, "state": to, "was": camp["state"]}


def cli_actor(store, login, user=None):
    """Who the audit log records for a command-line change: ``cli:<login>`` (the
    operating-system login running the command), and ``cli:<login> as ACCOUNT/USER``
    when ``user`` names an existing user (``ACCOUNT/USER``, or ``USER`` when unique);
    an unknown user is refused (InputError) before anything changes."""
    actor = f"cli:{login}"
    if user is None:
        return actor
    acc, row = find_user(store, user)
    return f"{actor} as {acc['name']}/{row['name']}"

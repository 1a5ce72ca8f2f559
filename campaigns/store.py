"""Accounts, their users and own numbers (DIDs), and campaigns with their life cycle."""

import hashlib
import json
import shutil
import wave
from decimal import Decimal, InvalidOperation

from dialer.errors import InputError, NotFound
from dialer.timeutil import to_iso
from rules import audit
from rules.numbers import normalise
from rules.ruleset import _Errors, compile_windows

from . import model


def create_account(store, name, now, actor, connection="fiber", lines=30):
    name = (name or "").strip()
    if not name:
        raise InputError("account name is empty")
    model.check_capacity(connection, lines)
    with store.transaction():
        if store.query_one("SELECT id FROM accounts WHERE name = ?", (name,)):
            raise InputError(f"account {name!r} already exists")
        store.execute("INSERT INTO accounts (name, created_at, connection, line_capacity) VALUES (?, ?, ?, ?)",
                            (name, to_iso(now), connection, lines))
        audit.append(store, now, actor, "account.create", f"account:{name}", "",
                     {"name": name, "connection": connection, "line_capacity": lines})
    return show_account(store, name)


def get_account(store, name):
    row = store.query_one("SELECT * FROM accounts WHERE name = ?", (name,))
    if row is None:
        raise NotFound(f"no account named {name!r} (create it with: dialer account create NAME)")
    return row


def show_account(store, name):
    acc = get_account(store, name)
    acc["numbers"] = sorted(account_numbers(store, acc["id"]))
    acc["users"] = store.query("SELECT name, role FROM users WHERE account_id = ? ORDER BY name", (acc["id"],))
    acc["campaigns"] = [r["name"] for r in store.query("SELECT name FROM campaigns WHERE account_id = ? ORDER BY name",
                                                       (acc["id"],))]
    return acc


def add_user(store, account, name, role, now, actor):
    acc = get_account(store, account)
    if role not in model.ROLES:
        raise InputError(f"role must be one of {', '.join(model.ROLES)}")
    name = (name or "").strip()
    if not name:
        raise InputError("user name is empty")
    with store.transaction():
        if store.query_one("SELECT id FROM users WHERE account_id = ? AND name = ?", (acc["id"], name)):
            raise InputError(f"user {name!r} already exists in account {account!r}")
        store.execute("INSERT INTO users (account_id, name, role, created_at) VALUES (?, ?, ?, ?)",
                      (acc["id"], name, role, to_iso(now)))
        audit.append(store, now, actor, "user.add", f"account:{account}", "", {"user": name, "role": role})
    return {"account": account, "user": name, "role": role}


def add_number(store, account, number, now, actor, region="US", label=None):
    acc = get_account(store, account)
    f = normalise(number, region)
    if f.e164 is None:
        raise InputError(f"{number!r} is not a valid phone number: {f.error}")
    with store.transaction():
        if store.query_one("SELECT id FROM account_numbers WHERE account_id = ? AND number = ?", (acc["id"], f.e164)):
            raise InputError(f"{f.e164} is already a number of account {account!r}")
        store.execute(
            "INSERT INTO account_numbers (account_id, number, label, created_at) VALUES (?, ?, ?, ?)",
            (acc["id"], f.e164, label, to_iso(now)),
        )
        audit.append(store, now, actor, "number.add", f"account:{account}", "", {"number": f.e164})
    return {"account": account, "number": f.e164}


def list_numbers(store, account):
    acc = get_account(store, account)
    return store.query("SELECT number, label, created_at FROM account_numbers WHERE account_id = ? ORDER BY number",
                       (acc["id"],))


def account_numbers(store, account_id):
    return frozenset(r["number"] for r in store.query(
        "SELECT number FROM account_numbers WHERE account_id = ?", (account_id,)))


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


def _abandon_target(text):
    try:
        v = Decimal(str(text))
    except InvalidOperation:
        raise InputError(f"abandon target {text!r} is not a number (e.g. 0.03 for 3 %)") from None
    if v > 1:
        v = v / 100  # given in percent
    if not Decimal(0) <= v <= Decimal("0.03"):
        raise InputError(f"abandon target {text} is above the legal cap of 3 %")
    return v


def create_campaign(store, name, account, now, actor, region="US", caller_id=None, hours=None,
                    dial_mode="predictive", power_ratio=None, abandon_target="0.03", retry=None, greeting=None):
    name = (name or "").strip()
    if not name:
        raise InputError("campaign name is empty")
    acc = get_account(store, account)
    spec = parse_hours(hours) if isinstance(hours, str) or hours is None else hours
    if dial_mode not in model.DIAL_MODES:
        raise InputError(f"dial mode must be one of {', '.join(model.DIAL_MODES)}")
    ratio = None
    if dial_mode == "power":
        try:
            ratio = Decimal(str(power_ratio))
        except InvalidOperation:
            raise InputError("power mode needs --ratio, a number of lines per free agent (e.g. 1.5)") from None
        if not Decimal(1) <= ratio <= Decimal(5):
            raise InputError("power ratio must be between 1 and 5 lines per free agent")
    target = _abandon_target(abandon_target)
    retry_rules = model.parse_retry(retry) if isinstance(retry, str) or retry is None else retry
    cid = None
    if caller_id:
        f = normalise(caller_id, region)
        if f.e164 is None:
            raise InputError(f"caller ID {caller_id!r} is not a valid phone number: {f.error}")
        cid = f.e164
    with store.transaction():
        if store.query_one("SELECT id FROM campaigns WHERE name = ?", (name,)):
            raise InputError(f"campaign {name!r} already exists")
        store.execute(
            "INSERT INTO campaigns (account_id, name, region, caller_id, hours, state, created_at, dial_mode, "
            "power_ratio, abandon_target, retry_rules, updated_at) VALUES (?, ?, ?, ?, ?, 'draft', ?, ?, ?, ?, ?, ?)",
            (acc["id"], name, region.upper(), cid, json.dumps(spec) if spec else None, to_iso(now), dial_mode,
             str(ratio) if ratio is not None else None, str(target), json.dumps(retry_rules), to_iso(now)),
        )
        audit.append(store, now, actor, "campaign.create", f"campaign:{name}", "",
                     {"account": account, "region": region, "caller_id": cid, "hours": spec, "dial_mode": dial_mode,
                      "abandon_target": str(target), "retry": retry_rules})
    if greeting:
        set_greeting(store, name, greeting, now, actor)
    return get_campaign(store, name)


def set_greeting(store, name, path, now, actor):
    camp = get_campaign(store, name)
    info = check_greeting(path)
    data = open(path, "rb").read()
    sha = hashlib.sha256(data).hexdigest()
    target = store.files_dir / "greetings" / f"{camp['id']}-{sha[:16]}.wav"
    target.parent.mkdir(exist_ok=True)
    shutil.copyfile(path, target)
    with store.transaction():
        store.execute("UPDATE campaigns SET greeting = ?, updated_at = ? WHERE id = ?",
                      (str(target.relative_to(store.files_dir)), to_iso(now), camp["id"]))
        audit.append(store, now, actor, "campaign.greeting", f"campaign:{name}", "", {"sha256": sha, **info})
    return {"campaign": name, "greeting": target.name, **info}


def get_campaign(store, name):
    row = store.query_one("SELECT * FROM campaigns WHERE name = ?", (name,))
    if row is None:
        raise NotFound(f"no campaign named {name!r}")
    row["hours"] = json.loads(row["hours"]) if row["hours"] else None
    row["retry_rules"] = json.loads(row["retry_rules"]) if row.get("retry_rules") else dict(model.DEFAULT_RETRY)
    return row


def list_campaigns(store, account=None):
    sql = ("SELECT c.name, a.name AS account, c.state, c.dial_mode, c.region, c.caller_id, "
           "(SELECT COUNT(*) FROM leads l WHERE l.campaign_id = c.id AND l.status != 'staged') AS leads "
           "FROM campaigns c JOIN accounts a ON a.id = c.account_id")
    params = ()
    if account:
        sql += " WHERE a.name = ?"
        params = (account,)
    return store.query(sql + " ORDER BY c.name", params)


def show_campaign(store, name):
    camp = get_campaign(store, name)
    counts = {r["status"]: r["n"] for r in store.query(
        "SELECT status, COUNT(*) AS n FROM leads WHERE campaign_id = ? GROUP BY status", (camp["id"],))}
    camp["leads"] = counts
    return camp


def change_state(store, name, action, now, actor, reason=""):
    """start / pause / finish, with only legal transitions. Starting needs a caller ID
    the rules accept and, for predictive and power modes, the safe-harbor greeting."""
    from rules.service import load_context
    from rules.engine import caller_id_reasons
    with store.transaction():
        camp = get_campaign(store, name)
        to = model.transition(camp["state"], action, f"campaign {name!r}")
        if action == "start":
            ctx = load_context(store, now, campaign=name)
            problems = [r.detail for r in caller_id_reasons(camp["caller_id"], ctx.campaign.own_numbers, ctx)]
            if camp["dial_mode"] in ("predictive", "power") and not camp["greeting"]:
                problems.append("a predictive or power campaign needs its safe-harbor greeting (dialer campaign greeting NAME FILE.wav)")
            if problems:
                raise InputError(f"campaign {name!r} cannot start: " + "; ".join(problems))
        store.execute("UPDATE campaigns SET state = ?, updated_at = ? WHERE id = ?", (to, to_iso(now), camp["id"]))
        audit.append(store, now, actor, f"campaign.{action}", f"campaign:{name}", reason or "",
                     {"from": camp["state"], "to": to})
    return {"campaign": name, "state": to, "was": camp["state"]}

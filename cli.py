"""The `dialer` command. Thin: each command parses its options, calls one library
function and prints the result (JSON with --json). Library errors become one
``Error: ...`` line and a non-zero exit."""

import json
import os
import pwd
import sqlite3
import sys

import click

from core.errors import DialerError
from core.store import Store, default_db_path
from core.timeutil import parse_instant, system_now


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DialerError as e:
            raise click.ClickException(str(e)) from None
        except sqlite3.DatabaseError as e:
            raise click.ClickException(f"database error: {e}") from None


def login_name():
    """The operating-system login running this process (from its uid, not from the
    environment, which anyone can set)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid{os.getuid()}"


class App:
    """What every command gets: the database, the acting user, and the clock. The clock is
    the wall clock, or the ``reactor`` a Python caller hands ``main`` (``main(args,
    obj={"reactor": r})``: the tests run ``dialer run`` on a shifted clock that way, see
    ``dialer.clock``); no option or environment variable sets it."""

    def __init__(self, db, user, reactor=None):
        self.reactor = reactor
        self.db_path = db
        self.user_spec = user
        self._store = None
        self._actor = None

    @property
    def store(self):
        """The database; opening it checks --user (an unknown user is refused before
        any command reads or changes anything)."""
        if self._store is None:
            from campaigns.store import cli_actor
            store = Store(self.db_path)
            try:
                self._actor = cli_actor(store, login_name(), self.user_spec)
            except BaseException:
                store.close()
                raise
            self._store = store
        return self._store

    @property
    def user(self):
        """The actor the audit log records: cli:<login> [as ACCOUNT/USER]."""
        self.store
        return self._actor

    def now(self):
        if self.reactor is not None:
            import datetime as _dt
            return _dt.datetime.fromtimestamp(self.reactor.seconds(), _dt.timezone.utc)
        return system_now()

    def the_reactor(self):
        """The reactor the commands run on: the one given, else Twisted's."""
        if self.reactor is None:
            from twisted.internet import reactor
            self.reactor = reactor
        return self.reactor


pass_app = click.make_pass_decorator(App)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(f)


def _emit(obj, as_json, text=None):
    if as_json:
        click.echo(json.dumps(obj, ensure_ascii=False, default=str))
    elif text is not None:
        click.echo(text)
    else:
        click.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


@click.group(cls=_Group)
@click.option("--db", type=click.Path(dir_okay=False), envvar="DIALER_DB", default=None,
              help="Database file (default: $DIALER_DB, else $DIALER_DATA_DIR/dialer.db, else ~/.local/share/dialer/dialer.db).")
@click.option("--user", envvar="DIALER_USER", default=None,
              help="Act as this user of an account: ACCOUNT/USER (or USER when only one account has it). The audit "
                   "log records cli:<login> as ACCOUNT/USER; without it, cli:<login> (the login running the command).")
@click.version_option("0.1.0", prog_name="dialer")
@click.pass_context
def main(ctx, db, user):
    """Outbound campaign dialer with compliance guardrails."""
    given = ctx.obj.get("reactor") if isinstance(ctx.obj, dict) else None  # main(args, obj={"reactor": r})
    ctx.obj = App(db or str(default_db_path()), user, reactor=given)


# --------------------------------------------------------------------------------- check

def _at(at):
    """--at as an instant; absent means now, but an empty value is a mistake, not now."""
    return parse_instant(at, "--at", bounded=True) if at is not None else None


def _verdict_text(v):
    status = "ALLOWED" if v["allowed"] else "BLOCKED"
    head = f"{v['input']:<20} {v['number'] or '-':<16} {status}"
    lines = [head]
    for w in v["window"]:
        wins = ", ".join(w["windows"]) if w["windows"] else ("no calls" if w["windows"] == [] else "any time")
        lines.append(f"    {w['zone']}: local {w['local'][11:16]}, window {wins} ({' + '.join(w['rules'])})")
    for r in v["reasons"]:
        lines.append(f"    {r['category']:<16} {r['rule']:<18} {r['detail']}")
    for r in v["flags"]:
        lines.append(f"    note: {r['category']:<10} {r['rule']:<18} {r['detail']}")
    return "\n".join(lines)


@main.command()
@click.argument("numbers", nargs=-1, required=True)
@click.option("--at", help="Instant to judge (ISO 8601; naive = UTC). Default: now.")
@click.option("--region", default="US", show_default=True, help="Region for numbers written without a country code.")
@click.option("--campaign", help="Apply this campaign's hours, DNC list, waivers and caller ID.")
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def check(app, numbers, at, region, campaign, account, as_json):
    """May these numbers be called now (or --at) by the account? One verdict per
    number, with every rule that blocks it. Exit 0 whatever the verdicts."""
    from rules.service import check_numbers
    verdicts = check_numbers(app.store, numbers, app.now(), at=_at(at), region=region, campaign=campaign,
                             account=account)
    for v in verdicts:
        d = v.as_dict()
        _emit(d, as_json, _verdict_text(d))


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--at", help="Instant to judge (ISO 8601; naive = UTC). Default: now.")
@click.option("--region", default="US", show_default=True)
@click.option("--campaign")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--examples", default=3, show_default=True, help="Blocked examples to show per reason.")
@click.option("--map", "mapping", help="Columns for fields, e.g. phone=Mobile,state=St.")
@json_option
@pass_app
def screen(app, file, at, region, campaign, account, examples, mapping, as_json):
    """Screen a CSV/XLSX list without importing it (columns phone, and optionally state,
    zone, business): how many may be called now, and why the others may not."""
    from campaigns.screening import screen_file
    out = screen_file(app.store, file, app.now(), at=_at(at), region=region, campaign=campaign, examples=examples,
                      mapping=mapping, account=account)
    if as_json:
        _emit(out, True)
        return
    click.echo(f"{out['leads']} leads screened at {out['at']}: {out['allowed']} may be called now, {out['blocked']} blocked")
    for cat, n in out["blocked_by_category"].items():
        click.echo(f"  {cat:<17} {n}")
    if out["multiline_groups"]:
        click.echo(f"  multi-line groups: {out['multiline_groups']} ({out['multiline_leads']} leads, one live call per group)")
    for cat, exs in out["examples"].items():
        click.echo(f"  e.g. {cat}:")
        for e in exs:
            click.echo(f"    {e['input']}: {e['detail']}")


# --------------------------------------------------------------------------------- dnc

@main.group(cls=_Group)
def dnc():
    """Do-not-call lists: national registries (shared), each account's company list, campaign lists."""


@dnc.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--source", type=click.Choice(["national", "company", "campaign"]), required=True)
@click.option("--campaign")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--as-of", help="Date of a national registry copy (YYYY-MM-DD).")
@click.option("--jurisdiction", default="US", show_default=True, help="Jurisdiction of a national registry.")
@click.option("--region", default="US", show_default=True, help="Region for numbers without a country code.")
@click.option("--wide", is_flag=True, help="Confirm wildcards wider than an area code (+1 2*, +44*): each may block "
                                           "millions of numbers.")
@json_option
@pass_app
def dnc_import(app, file, source, campaign, account, as_of, jurisdiction, region, wide, as_json):
    """Import a DNC file (one number or wildcard a line; FTC 'area,number' lines too):
    a national registry (shared by every account), the account's company list, or a
    campaign's list (--source campaign --campaign NAME)."""
    from rules.service import import_dnc
    out = import_dnc(app.store, file, app.now(), app.user, source=source, campaign=campaign, as_of=as_of,
                     jurisdiction=jurisdiction, region=region, account=account, wide=wide)
    text = (f"imported {out['numbers']} numbers ({out.get('added', out['numbers'])} new) from {out['lines']} lines; "
            f"{out['junk']} junk lines")
    if out.get("wildcards_total"):
        text += (f"\n{out['wildcards_total']} wildcards, which may block up to {out['may_block']:,} numbers: "
                 + ", ".join(f"{w['entry']} ({w['may_block']:,})" for w in out["wildcards"][:5])
                 + (", ..." if out["wildcards_total"] > 5 else ""))
    if out["junk_examples"]:
        text += "\n" + "\n".join(f"  line {j['line']}: {j['text']}" for j in out["junk_examples"])
    _emit(out, as_json, text)


def _dnc_scope_options(f):
    f = click.option("--campaign", help="The campaign's DNC list instead of the account's company list.")(f)
    f = click.option("--account", help="The account (needed once the installation has several).")(f)
    f = click.option("--region", default="US", show_default=True)(f)
    f = click.option("--reason", default="", help="Why (recorded in the audit log).")(f)
    return f


@dnc.command("add")
@click.argument("numbers", nargs=-1, required=True)
@_dnc_scope_options
@click.option("--wide", is_flag=True, help="Confirm wildcards wider than an area code (+1 2*, +44*): each may block "
                                           "millions of numbers.")
@json_option
@pass_app
def dnc_add(app, numbers, campaign, account, region, reason, wide, as_json):
    """Add numbers or wildcards (+1212*, 212555*) to the account's company (or a campaign's) DNC list."""
    from rules.service import add_dnc
    out = add_dnc(app.store, numbers, app.now(), app.user, source="campaign" if campaign else "company",
                  campaign=campaign, region=region, reason=reason, account=account, wide=wide)
    _emit(out, as_json, f"added {out['added']} to {out['scope']} DNC ({out['already']} already listed)" + "".join(
        f"\n  wildcard {w['entry']} may block up to {w['may_block']:,} numbers" for w in out["wildcards"]))


@dnc.command("remove")
@click.argument("numbers", nargs=-1, required=True)
@_dnc_scope_options
@json_option
@pass_app
def dnc_remove(app, numbers, campaign, account, region, reason, as_json):
    """Remove numbers or wildcards from the account's company (or a campaign's) DNC list (--reason required)."""
    from rules.service import remove_dnc
    out = remove_dnc(app.store, numbers, app.now(), app.user, source="campaign" if campaign else "company",
                     campaign=campaign, region=region, reason=reason, account=account)
    _emit(out, as_json, f"removed {out['removed']} from {out['scope']} DNC ({out['not_listed']} were not listed)")


@dnc.command("check")
@click.argument("numbers", nargs=-1, required=True)
@click.option("--campaign")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--region", default="US", show_default=True)
@json_option
@pass_app
def dnc_check(app, numbers, campaign, account, region, as_json):
    """Is a number on any DNC list that applies to the account (or campaign)?"""
    from rules.service import check_dnc
    for r in check_dnc(app.store, numbers, app.now(), region=region, campaign=campaign, account=account):
        if r["error"]:
            text = f"{r['input']:<20} invalid: {r['error']}"
        else:
            text = f"{r['input']:<20} {r['number']:<16} {'LISTED' if r['listed'] else 'not listed'}"
            text += "".join(f"\n    {x['rule']}: {x['detail']}" for x in r["reasons"])
        _emit(r, as_json, text)


@dnc.command("waive")
@click.option("--campaign", required=True)
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--jurisdiction", default="US", show_default=True)
@click.option("--reason", required=True, help="Why the registry requirement is waived (audited).")
@click.option("--revoke", is_flag=True, help="Revoke the waiver.")
@json_option
@pass_app
def dnc_waive(app, campaign, account, jurisdiction, reason, revoke, as_json):
    """Waive (or --revoke) the national-registry requirement for one campaign."""
    from rules.service import waive_registry
    out = waive_registry(app.store, campaign, jurisdiction, app.now(), app.user, reason, revoke=revoke,
                         account=account)
    _emit(out, as_json, f"{'waived' if out['waived'] else 'revoked the waiver of'} the {out['jurisdiction']} "
                        f"registry requirement for campaign {campaign}")


# --------------------------------------------------------------------------------- rules

@main.group(cls=_Group)
def rules():
    """Rule sets per jurisdiction: show, edit, set, history, verify."""


@rules.command("show")
@click.argument("jurisdiction", default="US")
@click.option("--version", type=int, help="An older version.")
@json_option
@pass_app
def rules_show(app, jurisdiction, version, as_json):
    """Show a rule set (current version unless --version)."""
    from rules.service import ensure_defaults, show_ruleset
    ensure_defaults(app.store, app.now())
    out = show_ruleset(app.store, jurisdiction, version)
    if as_json:
        _emit(out, True)
    else:
        click.echo(f"# {out['jurisdiction']} version {out['version']} ({out['created_at']}, {out['author']}: {out['reason']})")
        click.echo(json.dumps(out["data"], indent=2, ensure_ascii=False))


@rules.command("edit")
@click.argument("jurisdiction")
@click.argument("file", type=click.File("rb"), default="-")
@click.option("--reason", required=True, help="Why (recorded with the new version).")
@click.option("--create", is_flag=True, help="Add a new jurisdiction.")
@click.option("--dry-run", is_flag=True, help="Check the file and show what would change; save nothing.")
@json_option
@pass_app
def rules_edit(app, jurisdiction, file, reason, create, dry_run, as_json):
    """Replace a rule set with FILE (JSON or YAML, UTF-8 or UTF-16/32 with a BOM, at most
    256 KiB; '-' for stdin). Invalid data is refused with the line and field; the old
    version stays in force."""
    from rules.service import edit_ruleset, ensure_defaults
    ensure_defaults(app.store, app.now())
    out = edit_ruleset(app.store, jurisdiction, file, app.now(), app.user, reason, create=create, dry_run=dry_run)
    if dry_run:
        _emit(out, as_json, _dry_run_text(out))
        return
    _emit(out, as_json, f"{out['jurisdiction']} is now version {out['version']} ({len(out['changes'])} fields changed)")


def _dry_run_text(out):
    return (f"dry run: {out['jurisdiction']} would become version {out['version']} (nothing saved):" +
            "".join(f"\n  {c['field']}: {json.dumps(c['old'])} -> {json.dumps(c['new'])}" for c in out["changes"]))


@rules.command("set")
@click.argument("jurisdiction")
@click.argument("field")
@click.argument("value")
@click.option("--reason", required=True)
@click.option("--dry-run", is_flag=True, help="Check the value and show what would change; save nothing.")
@json_option
@pass_app
def rules_set(app, jurisdiction, field, value, reason, dry_run, as_json):
    """Set one field, e.g.: dialer rules set US states.FL.hours.windows '{daily: ["08:00-20:00"]}' --reason ..."""
    from rules.service import ensure_defaults, set_rule
    ensure_defaults(app.store, app.now())
    out = set_rule(app.store, jurisdiction, field, value, app.now(), app.user, reason, dry_run=dry_run)
    if dry_run:
        _emit(out, as_json, _dry_run_text(out))
        return
    _emit(out, as_json, f"{out['jurisdiction']} is now version {out['version']}: " +
          "; ".join(f"{c['field']}: {json.dumps(c['old'])} -> {json.dumps(c['new'])}" for c in out["changes"]))


@rules.command("history")
@click.argument("jurisdiction", default="US")
@json_option
@pass_app
def rules_history(app, jurisdiction, as_json):
    """Every version of a rule set: who, when, why, what changed."""
    from rules.service import ensure_defaults, history
    ensure_defaults(app.store, app.now())
    rows = history(app.store, jurisdiction)
    if as_json:
        for r in rows:
            _emit(r, True)
        return
    for r in rows:
        click.echo(f"v{r['version']}  {r['at']}  {r['actor']}: {r['reason']}")
        for c in r["changes"][:20]:
            click.echo(f"    {c['field']}: {json.dumps(c['old'])} -> {json.dumps(c['new'])}")


@rules.command("verify")
@click.option("--expect-head", metavar="HASH", help="The head hash an earlier verify printed (kept outside the database).")
@click.option("--expect-rows", type=int, metavar="N", help="The row count printed with that head.")
@json_option
@pass_app
def rules_verify(app, expect_head, expect_rows, as_json):
    """Check the audit log's hash chain (and that it still holds the head you kept),
    every rule-set version against its digest and its audit entry, and the versions in
    force. Prints the head to keep outside the database. Exit 1 if not intact."""
    from rules.service import verify
    out = verify(app.store, expect_head, expect_rows)
    head = (f"audit log: {out['rows']} rows, head {out['head']}; rule-set versions: {out['versions']} checked\n")
    _emit(out, as_json, head + (
        f"intact. Keep the head outside the database and check it later with: dialer rules verify "
        f"--expect-head {out['head']} --expect-rows {out['rows']}" if out["ok"] else
        f"NOT INTACT ({len(out['errors'])} problems):" + "".join(f"\n  {e}" for e in out["errors"])))
    if not out["ok"]:
        sys.exit(1)


@rules.command("lifeline-import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--region", default="US", show_default=True)
@click.option("--reason", default="lifeline import")
@json_option
@pass_app
def rules_lifeline_import(app, file, region, reason, as_json):
    """Import life-line numbers from CSV (number,category,name[,region,source])."""
    from rules.service import ensure_defaults, import_lifeline
    ensure_defaults(app.store, app.now())
    out = import_lifeline(app.store, file, app.now(), app.user, region=region, reason=reason)
    _emit(out, as_json, f"{out['added']} life-line numbers added or updated; {len(out['rejected'])} rejected" +
          "".join(f"\n  line {r['line']}: {r['number']!r}: {r['reason']}" for r in out["rejected"]))


# --------------------------------------------------------------------------------- accounts, campaigns

@main.group(cls=_Group)
def account():
    """Accounts (customers): connection, line capacity, users."""


@account.command("create")
@click.argument("name")
@click.option("--connection", type=click.Choice(["adsl", "gshdsl", "fiber"]), default="fiber", show_default=True)
@click.option("--lines", type=int, default=None, help="Concurrent calls (ADSL at most 3, G.SHDSL 10). Default: the connection's most, 30 on fiber.")
@click.option("--operator", is_flag=True, help="The installation's operator: its compliance officers and owners may "
                                               "change rule sets, life-line numbers and national registries in the browser.")
@json_option
@pass_app
def account_create(app, name, connection, lines, operator, as_json):
    from campaigns.model import CONNECTIONS
    from campaigns.store import create_account
    out = create_account(app.store, name, app.now(), app.user, connection=connection,
                         lines=lines if lines is not None else (CONNECTIONS[connection] or 30), operator=operator)
    _emit(out, as_json, f"account {out['name']} created ({out['connection']}, {out['line_capacity']} lines)"
                        + (", the installation's operator" if operator else ""))


@account.command("operator")
@click.argument("name")
@click.option("--off", is_flag=True, help="No longer the operator.")
@click.option("--reason", default="", help="Why (kept in the audit log).")
@json_option
@pass_app
def account_operator(app, name, off, reason, as_json):
    """Mark an account as the installation's operator (terminal only): its compliance
    officers and owners may change in the browser what every account is held to (rule
    sets, life-line numbers, national registries). --off takes it back."""
    from campaigns.store import set_operator
    out = set_operator(app.store, name, app.now(), app.user, operator=not off, reason=reason)
    _emit(out, as_json, f"account {out['account']} is {'now' if out['operator'] else 'no longer'} the "
                        f"installation's operator")


@account.command("show")
@click.argument("name")
@json_option
@pass_app
def account_show(app, name, as_json):
    from campaigns.store import show_account
    _emit(show_account(app.store, name), as_json)


def _pin_from_env(var):
    """The PIN from the environment variable named ``var`` (never from the command line,
    which other users can read); missing or empty is an error."""
    pin = os.environ.get(var)
    if not pin:
        raise DialerError(f"--pin-env {var}: that environment variable is not set or empty")
    return pin


@account.command("user")
@click.argument("name")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--role", type=click.Choice(["owner", "manager", "compliance", "supervisor", "agent"]), required=True)
@click.option("--pin-env", help="Name of an environment variable holding the agent PIN (4 to 12 digits) to set too.")
@json_option
@pass_app
def account_user(app, name, account, role, pin_env, as_json):
    """Add a user to an account (with --pin-env, its agent PIN too; nothing is created
    if the PIN is missing or refused)."""
    from campaigns.store import add_user
    pin = _pin_from_env(pin_env) if pin_env else None
    out = add_user(app.store, account, name, role, app.now(), app.user, pin=pin)
    _emit(out, as_json, f"user {out['user']} ({out['role']}) added to {out['account']}"
                        + (", PIN set" if out["pin_set"] else ""))


@account.command("pin")
@click.argument("user")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--pin-env", required=True, help="Name of an environment variable holding the new PIN (4 to 12 digits).")
@json_option
@pass_app
def account_pin(app, user, account, pin_env, as_json):
    """Set (or reset) a user's agent PIN; only a salted hash is kept; clears a lockout."""
    from dialer.agents import set_pin
    out = set_pin(app.store, account, user, _pin_from_env(pin_env), app.now(), app.user)
    _emit(out, as_json, f"PIN of {out['account']}/{out['user']} set")


@account.command("users")
@click.argument("account", required=False)
@json_option
@pass_app
def account_users(app, account, as_json):
    """An account's users: name, role, whether a PIN is set, when created."""
    from campaigns.store import list_users
    for r in list_users(app.store, account):
        _emit(r, as_json, f"{r['name']:<16} {r['role']:<11} {'PIN set' if r['pin_set'] else 'no PIN':<8} "
                          f"{r['created_at']}")


@account.command("password")
@click.argument("user")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the password from the first line of standard input "
                                                         "(for scripts) instead of prompting.")
@json_option
@pass_app
def account_password(app, user, account, from_stdin, as_json):
    """Set a user's web password (prompted twice, not echoed; at least 12 characters).
    Only an argon2id hash is kept; the user's open web sessions end."""
    from campaigns.users import set_password
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True, err=True)
    out = set_password(app.store, account, user, password, app.now(), app.user)
    _emit(out, as_json, f"password of {out['account']}/{out['user']} set")


@account.command("role")
@click.argument("user")
@click.argument("role", type=click.Choice(["owner", "manager", "compliance", "supervisor", "agent"]))
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def account_role(app, user, role, account, as_json):
    """Change a user's role (the account's last owner stays an owner); their web sessions end."""
    from campaigns.users import set_role
    out = set_role(app.store, account, user, role, app.now(), app.user)
    _emit(out, as_json, f"{out['account']}/{out['user']}: {out['was']} -> {out['role']}")


@account.command("disable")
@click.argument("user")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--reason", default="", help="Why (kept in the audit log).")
@json_option
@pass_app
def account_disable(app, user, account, reason, as_json):
    """Disable a user: no web login, agent PIN cleared, web sessions ended."""
    from campaigns.users import disable_user
    out = disable_user(app.store, account, user, app.now(), app.user, reason)
    _emit(out, as_json, f"{out['account']}/{out['user']} disabled")


@account.group("token", cls=_Group)
def account_token():
    """API tokens of an account: programs (a CRM) use the JSON API with one (each acts
    with one role of the account; only a hash is kept; revocable)."""


@account_token.command("create")
@click.argument("name")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--role", type=click.Choice(["owner", "manager", "compliance", "supervisor", "agent"]), required=True,
              help="What the token may do: the role's permissions, as in the browser.")
@json_option
@pass_app
def account_token_create(app, name, account, role, as_json):
    """Make a token NAME (what uses it, e.g. crm-sync); printed once, keep it now."""
    from campaigns.tokens import create_token
    out = create_token(app.store, account, name, role, app.now(), app.user)
    _emit(out, as_json, f"token {out['name']} ({out['role']}) of {out['account']}, id {out['id']}:\n{out['token']}\n"
                        f"(shown once: only a hash of it is kept)")


@account_token.command("list")
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def account_token_list(app, account, as_json):
    """The account's tokens: id, name, role, created, last used, revoked (never a secret)."""
    from campaigns.tokens import list_tokens
    for t in list_tokens(app.store, account):
        _emit(t, as_json, f"{t['id']:>4}  {t['name']:<20} {t['role']:<11} {t['prefix']}_...  created {t['created_at']}"
                          f"  last used {t['last_used_at'] or 'never'}"
                          + (f"  REVOKED {t['revoked_at']}" if t["revoked_at"] else ""))


@account_token.command("revoke")
@click.argument("token")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--reason", default="", help="Why (kept in the audit log).")
@json_option
@pass_app
def account_token_revoke(app, token, account, reason, as_json):
    """Revoke a token (its id, or the name of an active one): refused from then on."""
    from campaigns.tokens import revoke_token
    out = revoke_token(app.store, account, token, app.now(), app.user, reason)
    _emit(out, as_json, f"token {out['name']} (id {out['id']}) of {out['account']} revoked")


@main.group(cls=_Group)
def number():
    """The account's own numbers (DIDs), usable as caller IDs."""


@number.command("add")
@click.argument("phone")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--region", default="US", show_default=True)
@click.option("--label", help="What the number is for (at most 80 characters).")
@json_option
@pass_app
def number_add(app, phone, account, region, label, as_json):
    from dialer.numbers import add_number
    out = add_number(app.store, account, phone, app.now(), app.user, region=region, label=label)
    _emit(out, as_json, f"{out['number']} added to account {out['account']}")


@number.command("list")
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def number_list(app, account, as_json):
    """The account's numbers, with the campaigns (not finished) and trunks using each as
    their caller ID, and a closed account's port-out holds."""
    from dialer.numbers import numbers_view
    rows = numbers_view(app.store, account)["numbers"]
    if as_json:
        for r in rows:
            _emit(r, True)
    else:
        for r in rows:
            uses = [f"campaign {c}" for c in r["campaigns"]] + [f"trunk {t}" for t in r["trunks"]]
            click.echo(f"{r['number']}  {r['label'] or ''}" + (f"  caller ID of {', '.join(uses)}" if uses else "")
                       + (f"  kept until {r['hold']['keep_until'][:10]} for a port-out" if r["hold"] else ""))


@number.command("remove")
@click.argument("phone")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--region", default="US", show_default=True)
@json_option
@pass_app
def number_remove(app, phone, account, region, as_json):
    """Remove a number from the account: refused while a campaign (not finished) or a
    trunk uses it as its caller ID, or while it is kept for a port-out."""
    from dialer.numbers import remove_number
    out = remove_number(app.store, account, phone, app.now(), app.user, region=region)
    _emit(out, as_json, f"{out['number']} removed from account {out['account']}")


@main.group(cls=_Group)
def campaign():
    """Campaigns: create, show, list, start, pause, finish, dry-run."""


@campaign.command("create")
@click.argument("name")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--region", default="US", show_default=True, help="Rule-set region and default region of its lists.")
@click.option("--caller-id")
@click.option("--hours", help="Narrow the legal window, e.g. 'mon-fri=09:00-17:00;sat=10:00-14:00;sun='.")
@click.option("--mode", "dial_mode", type=click.Choice(["preview", "progressive", "predictive", "power"]),
              default="predictive", show_default=True)
@click.option("--ratio", "power_ratio", help="Lines per free agent in power mode.")
@click.option("--abandon-target", default="0.03", show_default=True, help="At most 0.03 (3 %).")
@click.option("--retry", help="Recycling per outcome, e.g. 'busy=20m/5,no-answer=2h/4'.")
@click.option("--greeting", type=click.Path(dir_okay=False), help="Safe-harbor message: WAV, 8/16 kHz mono.")
@json_option
@pass_app
def campaign_create(app, name, account, region, caller_id, hours, dial_mode, power_ratio, abandon_target, retry,
                    greeting, as_json):
    from campaigns.store import create_campaign
    out = create_campaign(app.store, name, account, app.now(), app.user, region=region, caller_id=caller_id,
                          hours=hours, dial_mode=dial_mode, power_ratio=power_ratio, abandon_target=abandon_target,
                          retry=retry, greeting=greeting)
    _emit(out, as_json, f"campaign {out['name']} created ({out['state']}, {out['dial_mode']})")


@campaign.command("greeting")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def campaign_greeting(app, name, file, account, as_json):
    """Set the campaign's safe-harbor message (WAV, 8/16 kHz mono, 16-bit)."""
    from campaigns.store import set_greeting
    out = set_greeting(app.store, name, file, app.now(), app.user, account=account)
    _emit(out, as_json, f"greeting of {name}: {out['seconds']} s at {out['rate']} Hz")


@campaign.command("edit")
@click.argument("name")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--caller-id", help="A new caller ID ('' clears it).")
@click.option("--hours", help="New campaign hours ('' clears them).")
@click.option("--mode", "dial_mode", type=click.Choice(["preview", "progressive", "predictive", "power"]))
@click.option("--ratio", "power_ratio", help="Lines per free agent in power mode.")
@click.option("--abandon-target", help="At most 0.03 (3 %).")
@click.option("--retry", help="Recycling per outcome, e.g. 'busy=20m/5,no-answer=2h/4'.")
@json_option
@pass_app
def campaign_edit(app, name, account, caller_id, hours, dial_mode, power_ratio, abandon_target, retry, as_json):
    """Change a draft or paused campaign's settings (only those given)."""
    from campaigns.store import update_campaign
    out = update_campaign(app.store, name, app.now(), app.user, account=account, caller_id=caller_id, hours=hours,
                          dial_mode=dial_mode, power_ratio=power_ratio, abandon_target=abandon_target, retry=retry)
    _emit(out, as_json, f"campaign {out['name']} edited ({out['state']}, {out['dial_mode']})")


@campaign.command("show")
@click.argument("name")
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def campaign_show(app, name, account, as_json):
    from campaigns.store import show_campaign
    _emit(show_campaign(app.store, name, account), as_json)


@campaign.command("list")
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def campaign_list(app, account, as_json):
    from campaigns.store import list_campaigns
    rows = list_campaigns(app.store, account)
    if as_json:
        for r in rows:
            _emit(r, True)
        return
    for r in rows:
        click.echo(f"{r['name']:<20} {r['account']:<12} {r['state']:<9} {r['dial_mode']:<12} {r['leads']} leads")


def _state_command(action, doc):
    @campaign.command(action, help=doc)
    @click.argument("name")
    @click.option("--account", help="The account (needed when several have a campaign of that name).")
    @click.option("--reason", default="")
    @json_option
    @pass_app
    def cmd(app, name, account, reason, as_json):
        from billing.standing import change_state
        out = change_state(app.store, name, action, app.now(), app.user, reason, account=account)
        _emit(out, as_json, f"campaign {name}: {out['was']} -> {out['state']}")
    return cmd


_state_command("start", "Start (or resume) a campaign. Refused while its caller ID or greeting is not in order, "
                        "or while its account may not dial (billing: pending, suspended or closed).")
_state_command("pause", "Pause a running campaign.")
_state_command("finish", "Finish a campaign for good.")


@campaign.command("dry-run")
@click.argument("name")
@click.option("--from", "frm", required=True, help="ISO 8601 start (naive = UTC).")
@click.option("--to", "to", required=True, help="ISO 8601 end.")
@click.option("--step", default="60", show_default=True, help="Minutes between samples (whole minutes, 1 to 1440).")
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def campaign_dry_run(app, name, frm, to, step, account, as_json):
    """Walk the campaign through virtual time: per hour, how many leads would be
    dialable and why the others would not."""
    from campaigns.dryrun import dry_run
    out = dry_run(app.store, name, parse_instant(frm, "--from", bounded=True), parse_instant(to, "--to", bounded=True),
                  app.now(), step, account=account)
    if as_json:
        _emit(out, True)
        return
    click.echo(f"{out['leads']} leads of {name}, {out['from']} to {out['to']}")
    for h in out["hours"]:
        why = ", ".join(f"{k} {v}" for k, v in h["blocked"].items())
        click.echo(f"  {h['at']}  dialable {h['dialable']:>8}   {why}")


# --------------------------------------------------------------------------------- lists and leads

@main.group(name="list", cls=_Group)
def list_():
    """Lead lists: import, errors, show, cancel."""


@list_.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--campaign", required=True)
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--map", "mapping", help="Columns for fields, e.g. phone=Mobile,name=Customer,business=Company.")
@click.option("--region", default="US", show_default=True, help="Region for numbers without a country code.")
@click.option("--dedupe", type=click.Choice(["list", "campaign", "account", "none"]), default="campaign", show_default=True)
@click.option("--resume", type=int, help="Resume an interrupted or failed import (its id; give the same file).")
@json_option
@pass_app
def list_import(app, file, campaign, account, mapping, region, dedupe, resume, as_json):
    """Import a CSV or XLSX list into a campaign, then show its screening preview."""
    from campaigns.leads import import_list
    bar = None

    def progress(rows, fraction):
        bar.update(int(fraction * 1000) - bar.pos)

    if not as_json and sys.stderr.isatty():
        bar = click.progressbar(length=1000, label="importing", file=sys.stderr)
        bar.__enter__()
    try:
        out = import_list(app.store, file, campaign, app.now(), app.user, mapping=mapping, region=region,
                          dedupe=dedupe, progress=progress if bar is not None else None, resume=resume,
                          account=account)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if as_json:
        _emit(out, True)
        return
    p = out["preview"]
    click.echo(f"import {out['import_id']}: {out['rows']} rows, {out['imported']} imported, "
               f"{out['rejected']} rejected, {out['duplicates']} duplicates")
    for reason, n in out["rejected_by_reason"].items():
        click.echo(f"  rejected {n:>6}  {reason}")
    click.echo(f"dialable now {p['dialable_now']}, later today {p['later_today']}, later {p['later']}, "
               f"never {p['never']}, blocked campaign-wide {p['blocked_campaign_wide']}; "
               f"multi-line groups {p['multiline_groups']} ({p['multiline_leads']} leads)")
    for cat, exs in p["examples"].items():
        click.echo(f"  e.g. {cat}: " + "; ".join(f"{e['phone']} (row {e['row']}): {e['detail']}" for e in exs[:2]))
    if out.get("notes"):
        click.echo(f"  notes  {out['notes']:>6}  rows imported with a remark (e.g. cells beyond the header)")
    if out["rejected"] or out["duplicates"] or out.get("notes"):
        click.echo(f"per-row report: dialer list errors {out['import_id']} [--csv]")


@list_.command("errors")
@click.argument("import_id", type=int)
@click.option("--csv", "as_csv", is_flag=True, help="CSV (cells neutralised against formula injection).")
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def list_errors(app, import_id, as_csv, account, as_json):
    """The per-row error report of an import."""
    from campaigns.leads import errors_csv, import_errors
    rows = import_errors(app.store, import_id, account)
    if as_csv:
        click.echo(errors_csv(rows), nl=False)
    elif as_json:
        for r in rows:
            _emit(r, True)
    else:
        from campaigns.files import one_line
        for r in rows:
            click.echo(f"row {r['row']:>7}  {one_line(r['column']):<14} {r['value']!r:<24} {one_line(r['reason'])}")


@list_.command("show")
@click.argument("import_id", type=int)
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def list_show(app, import_id, account, as_json):
    """An import: its status (running, done, failed, cancelled), counts and reason."""
    from campaigns.leads import import_status
    from campaigns.files import one_line
    j = import_status(app.store, import_id, account)
    _emit(j, as_json, f"import {j['import_id']} ({one_line(j['file'])} into {j['campaign']}): {j['status']}, "
                      f"{j['rows_done']} rows read, {j['imported']} imported, {j['rejected']} rejected, "
                      f"{j['duplicates']} duplicates" + (f"; {one_line(j['reason'])}" if j["reason"] else "")
                      + ("; resumable (--resume)" if j["resumable"] and j["status"] != "done" else ""))


@list_.command("cancel")
@click.argument("import_id", type=int)
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--reason", default="", help="Why (kept in the audit log).")
@json_option
@pass_app
def list_cancel(app, import_id, account, reason, as_json):
    """Cancel an import that is running, was interrupted or failed: its staged rows
    (never dialable) are removed, the import is marked cancelled (audited). A run still
    going stops at its next chunk."""
    from campaigns.leads import cancel_import
    out = cancel_import(app.store, import_id, app.now(), app.user, account=account, reason=reason)
    _emit(out, as_json, f"import {import_id}: cancelled (was {out['was']}), {out['staged_removed']} staged rows "
                        f"removed")


@main.group(cls=_Group)
def lead():
    """Leads: show, history, outcome, callback."""


@lead.command("show")
@click.argument("number")
@click.option("--region", default="US", show_default=True)
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def lead_show(app, number, region, account, as_json):
    """The account's leads with this number."""
    from campaigns.leads import find_leads
    for r in find_leads(app.store, number, region, account):
        _emit(r, as_json, json.dumps(r, indent=2, ensure_ascii=False, default=str) if not as_json else None)


@lead.command("history")
@click.argument("number")
@click.option("--region", default="US", show_default=True)
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def lead_history_cmd(app, number, region, account, as_json):
    """The account's leads with this number and everything that happened to them."""
    from campaigns.leads import lead_history
    for h in lead_history(app.store, number, region, account):
        if as_json:
            _emit(h, True)
            continue
        click.echo(f"lead {h['lead']} ({h['campaign']}) {h['phone']}: {h['status']}, {h['attempts']} attempts")
        for e in h["events"]:
            click.echo(f"  {e['at']}  {e['event']}  {json.dumps(e['detail'], default=str)}")


@lead.command("outcome")
@click.argument("lead_id", type=int)
@click.argument("outcome", type=click.Choice(["answered-human", "machine", "busy", "no-answer", "failed", "abandoned",
                                              "dnc-requested"]))
@click.option("--call-id", help="The call record (CDR) of a call the dialer placed: the call then counts as an "
                                "attempt for the frequency caps (once).")
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def lead_outcome(app, lead_id, outcome, call_id, account, as_json):
    """Record how a lead stands (the dialer does this for its calls). Without --call-id
    it is a manual outcome, not a call: the lead is recycled or finished by the
    campaign's rules, dnc-requested goes on the account's DNC list, but no call
    attempt is recorded (frequency caps count only calls that were placed)."""
    from campaigns.leads import manual_outcome
    out = manual_outcome(app.store, lead_id, outcome, app.now(), app.user, call_id=call_id, account=account)
    _emit(out, as_json, f"lead {lead_id}: {out['status']} ({out['disposition']}, {out['attempts']} attempts)")


@lead.command("callback")
@click.argument("lead_id", type=int)
@click.argument("when")
@click.option("--agent", help="Owning agent (default: campaign-wide).")
@click.option("--zone", help="Zone of WHEN (default: the lead's).")
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def lead_callback(app, lead_id, when, agent, zone, account, as_json):
    """Schedule a callback at WHEN, a local time of the lead ('2026-03-09 10:00').
    Scheduling is not a call: no attempt is counted."""
    from campaigns.leads import schedule_callback
    out = schedule_callback(app.store, lead_id, when, app.now(), app.user, agent=agent, zone=zone, account=account)
    _emit(out, as_json, f"lead {lead_id}: callback at {out['callback_local']} ({out['callback_at']})")


@lead.command("list")
@click.option("--campaign", help="Only this campaign's leads.")
@click.option("--status", type=click.Choice(["new", "retry", "callback", "reserved", "dialing", "done", "dnc",
                                             "blocked"]), help="Only leads in this status.")
@click.option("--after", type=int, help="Start after this lead id (the last id of the previous page).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000))
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def lead_list(app, campaign, status, after, limit, account, as_json):
    """The account's leads by id, a page at a time (as the JSON API's /leads)."""
    from campaigns.leads import list_leads
    out = list_leads(app.store, account, campaign=campaign, status=status, after=after, limit=limit)
    for r in out["items"]:
        _emit(r, as_json, f"{r['id']:>8}  {r['campaign']:<16} {r['phone']:<16} {r['status']:<9} "
                          f"{r['disposition'] or '-':<15} {r['attempts']} attempts")
    if out["next_after"] is not None and not as_json:
        click.echo(f"more: --after {out['next_after']}")


@lead.command("callbacks")
@click.option("--campaign", help="Only this campaign's callbacks.")
@click.option("--from", "frm", help="From this instant (ISO 8601; naive = UTC).")
@click.option("--to", "to", help="Until this instant, excluded.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000))
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def lead_callbacks(app, campaign, frm, to, limit, account, as_json):
    """Scheduled callbacks, soonest first (as the JSON API's /callbacks)."""
    from campaigns.leads import list_callbacks
    out = list_callbacks(app.store, account, campaign=campaign,
                         since=parse_instant(frm, "--from", bounded=True) if frm is not None else None,
                         until=parse_instant(to, "--to", bounded=True) if to is not None else None, limit=limit)
    for r in out["items"]:
        _emit(r, as_json, f"{r['callback_at']}  lead {r['lead']:<8} {r['campaign']:<16} {r['phone']:<16} "
                          f"{r['agent'] or 'campaign-wide'}")


# --------------------------------------------------------------------------------- trunks

@main.group(cls=_Group)
def trunk():
    """SIP trunks per account: proxy, credentials, caller ID; registration checked and measured."""


def _trunk_text(t):
    auth = f"user {t['username']}" + (" (password set)" if t["password_set"] else "") if t["username"] else "no credentials"
    text = (f"{t['name']:<16} {t['proxy']:<28} {'registers' if t['register'] else 'no REGISTER':<12} "
            f"{auth}, {t['cps']:g} calls/s, caller ID {t['caller_id'] or '-'}")
    last = t.get("last_registration")
    if last:
        text += (f"\n    last registration {last['at']}: {last['code']} {last['reason']}"
                 + (f", {last['ms']} ms" if last["ms"] is not None else "") + (" ALERT" if last["alert"] else ""))
    return text


@trunk.command("add")
@click.argument("name")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--proxy", required=True, help="HOST[:PORT] (or sip:HOST[:PORT]) of the carrier's proxy.")
@click.option("--user", "username", help="User name for digest authentication.")
@click.option("--password", help="Password (prefer --password-env: a command line is visible to others).")
@click.option("--password-env", help="Name of an environment variable holding the password.")
@click.option("--realm", help="Digest realm (default: any).")
@click.option("--register", is_flag=True, help="The carrier requires REGISTER (needs --user and a password).")
@click.option("--cps", default="10", show_default=True, help="Calls per second the carrier accepts (at most 1000).")
@click.option("--caller-id", help="Caller ID on this trunk: one of the account's numbers.")
@click.option("--region", default="US", show_default=True, help="Region of a caller ID without a country code.")
@json_option
@pass_app
def trunk_add(app, name, account, proxy, username, password, password_env, realm, register, cps, caller_id, region,
              as_json):
    """Add a SIP trunk to an account. The password is stored, never shown."""
    from dialer.trunks import add_trunk
    if password is not None and password_env:
        raise DialerError("give --password or --password-env, not both")
    if password_env:
        import os
        password = os.environ.get(password_env)
        if not password:
            raise DialerError(f"--password-env {password_env}: that environment variable is not set or empty")
    out = add_trunk(app.store, account, name, proxy, app.now(), app.user, username=username, password=password,
                    realm=realm, register=register, cps=cps, caller_id=caller_id, region=region)
    _emit(out, as_json, f"trunk {out['name']} added to account {out['account']}: {out['proxy']}"
                        f"{', registers' if out['register'] else ''}")


@trunk.command("list")
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def trunk_list(app, account, as_json):
    """An account's trunks, with their last registration."""
    from dialer.trunks import list_trunks
    for t in list_trunks(app.store, account):
        _emit(t, as_json, _trunk_text(t))


@trunk.command("show")
@click.argument("name")
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def trunk_show(app, name, account, as_json):
    """One trunk, the campaigns using it and its last registrations (measured times)."""
    from dialer.trunks import show_trunk
    t = show_trunk(app.store, account, name)
    text = _trunk_text(t) + f"\n    campaigns: {', '.join(t['campaigns']) or '-'}"
    for r in t["registrations"]:
        text += (f"\n    {r['at']}  worker {r['worker'] or '-'}  {r['code']} {r['reason']}"
                 + (f"  {r['ms']} ms" if r["ms"] is not None else "") + ("  ALERT" if r["alert"] else ""))
    _emit(t, as_json, text)


@trunk.command("use")
@click.argument("name")
@click.option("--campaign", required=True)
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def trunk_use(app, name, campaign, account, as_json):
    """Make a campaign dial through this trunk of its account."""
    from dialer.trunks import use_trunk
    out = use_trunk(app.store, campaign, name, app.now(), app.user, account=account)
    _emit(out, as_json, f"campaign {campaign} dials through trunk {name}" +
          (f" (was {out['was']})" if out["was"] and out["was"] != name else ""))


@trunk.command("check")
@click.argument("name")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(0.1, 60),
              help="Seconds to wait for the registrar's answer.")
@json_option
@pass_app
def trunk_check(app, name, account, timeout, as_json):
    """Register once from a SIP worker of its own (loopback, a free port): print the
    measured registration time and whether it is above the 100 ms the terms of service
    require; record it. Exit 1 with the cause when the registration fails."""
    from dialer.trunks import check_trunk
    out = check_trunk(app.store, account, name, app.now(), app.user, timeout=timeout)
    if out.get("registered") is None:
        text = f"trunk {name}: {out['reason']}"
    else:
        text = (f"trunk {name}: registered at {out['proxy']} in {out['ms']} ms "
                + (f"\u2014 ALERT: above the {out['alert_ms']:g} ms the terms of service require for good voice quality"
                   if out["alert"] else f"(within {out['alert_ms']:g} ms)"))
    _emit(out, as_json, text)


@main.command()
@click.argument("scenario", type=click.Path(dir_okay=False), required=False)
@click.option("--policy", default="progressive", show_default=True,
              help="progressive, preview, power:K, predictive, vicidial-hard, vicidial-average, vicidial-tapered.")
@click.option("--seeds", default=30, show_default=True, help="Shifts to run (seeds from the scenario's seed on).")
@click.option("--grid", is_flag=True, help="Run the benchmark grid (every policy, N x p, validation and realistic) "
                                           "instead of one scenario; bench/pacing_bench.py adds the LP optimum.")
@click.option("--agents", "grid_agents", default="5,10,20,50,100", show_default=True, help="Grid: team sizes.")
@click.option("--p", "grid_p", default="0.15,0.3,0.5", show_default=True, help="Grid: live-answer probabilities.")
@click.option("--cases", default="validation,realistic", show_default=True, help="Grid: cases.")
@json_option
@pass_app
def simulate(app, scenario, policy, seeds, grid, grid_agents, grid_p, cases, as_json):
    """Run a pacing policy on a simulated floor (SCENARIO is a JSON file, see scenarios/),
    or the benchmark grid with --grid."""
    from dialer.pacing.sim import load_scenario, run_grid, run_seeds
    if grid:
        try:
            agents = [int(x) for x in grid_agents.split(",")]
            ps = [float(x) for x in grid_p.split(",")]
        except ValueError:
            raise DialerError("--agents takes whole numbers and --p fractions, comma-separated") from None
        for pt in run_grid(seeds, tuple(c.strip() for c in cases.split(",")), agents, ps):
            if as_json:
                click.echo(json.dumps(pt))
                continue
            click.echo(f"{pt['case']} N={pt['agents']} p={pt['p']:g} ({pt['seeds']} seeds): " + "; ".join(
                f"{name}{' k=%g' % r['k'] if 'k' in r else ''} {r['occupancy']:.3f}/{100 * r['abandon_rate']:.2f}%"
                f" ({r['seeds_within_cap']}/{r['seeds']} in cap)" for name, r in pt["policies"].items()))
        return
    if not scenario:
        raise DialerError("give a SCENARIO file, or --grid")
    out = run_seeds(load_scenario(scenario), policy, seeds)
    if as_json:
        _emit({k: v for k, v in out.items() if k != "runs"}, True)
        return
    click.echo(f"{out['scenario']}: {out['policy']}, {out['seeds']} seeds")
    click.echo(f"  occupancy {out['occupancy']:.3f}  talk {out['talk_minutes_per_agent_hour']:.1f} min/agent-hour  "
               f"dials {out['dials_per_agent_hour']:.1f}/agent-hour  agent wait {out['mean_agent_wait_s']:.1f} s")
    click.echo(f"  abandoned {100 * out['abandon_rate']:.2f} % (worst seed {100 * out['worst_seed_abandon_rate']:.2f} %, "
               f"worst window {100 * out['worst_window_abandon_rate']:.2f} %); within the cap in "
               f"{out['seeds_within_cap']}/{out['seeds']} seeds")


def _clock_offset(ctx, param, value):
    if value is None or value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter("seconds, or auto") from None


@main.command()
@click.option("--fresh/--keep", default=True, help="Start from an empty demo database (default).")
@click.option("--seconds", default=None, type=click.IntRange(1, None),
              help="Stop after this many seconds (default: at Ctrl-C).")
@click.option("--agents", default=4, show_default=True, type=click.IntRange(1, 20), help="Simulated agents.")
@click.option("--sip/--no-sip", default=True, help="Run the live campaign over SIP on loopback (needs SIPp).")
@click.option("--web/--no-web", default=True, help="Serve the browser's pages on 127.0.0.1 meanwhile (default).")
@click.option("--web-port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port of the web server (0: any free port).")
@click.option("--clock-offset", default=None, hidden=True, callback=_clock_offset,
              help="A test and demo aid: run the whole demo on a clock this many seconds ahead of the wall "
                   "clock, or 'auto': the least shift that puts a demo zone inside calling hours "
                   "(dialer.demo.callable_offset). Only the demo has it.")
@pass_app
def demo(app, fresh, seconds, agents, sip, web, web_port, clock_offset):
    """Run the embedded demo on a demo database beside the default one: the rules, a
    campaign and its list; then, until Ctrl-C (or --seconds), the web server on
    127.0.0.1 with the demo account's users (one per role, passwords printed) and a
    predictive campaign dialing over real SIP on loopback (SIPp as the carrier and as
    the agents' phones); at the end the calls rated and the draft invoice."""
    from dialer.demo import billing_summary, run, run_live, serve, web_users
    from core.store import Store
    import pathlib
    path = pathlib.Path(app.db_path).with_name("demo.db")
    if fresh:
        for suffix in ("", "-wal", "-shm"):
            pathlib.Path(str(path) + suffix).unlink(missing_ok=True)
    click.echo(f"demo database: {path}")
    reactor = app.reactor
    if clock_offset is not None:
        from dialer.clock import ShiftedReactor
        from dialer.demo import callable_offset
        offset = callable_offset(app.now()) if clock_offset == "auto" else clock_offset
        reactor = app.reactor = ShiftedReactor(app.the_reactor(), offset)
        click.echo(f"== demo clock: {offset:+g} s from the wall clock, {app.now():%Y-%m-%d %H:%M}Z (--clock-offset)")
    if web:
        reactor = app.the_reactor()
        from twisted.internet.error import CannotListenError
        from web.server import listen
        try:
            port = listen(reactor, path, web_port, "127.0.0.1")  # bound now: a busy port stops the demo here
        except CannotListenError as e:
            why = getattr(e.socketError, "strerror", None) or str(e.socketError)
            raise DialerError(f"the web server cannot listen on 127.0.0.1:{web_port} ({why}): choose another port "
                              f"with --web-port PORT (0: any free port), or --no-web") from None
    store = Store(path)
    run(store, app.now(), click.echo)
    if web:
        logins = web_users(store, app.now())
        addr = port.getHost()
        click.echo(f"== web: http://{addr.host}:{addr.port}/  account demo; its users, one per role (passwords "
                   f"made for this run, shown once):")
        for user, role, password in logins:
            click.echo(f"     user {user:<11} password {password}  ({role})")
        click.echo("   Ctrl-C stops the demo" + (f" (or it stops after {seconds} s)" if seconds else ""))
    ran = None
    if sip:
        ran = run_live(store, click.echo, seconds=seconds, agents=agents, reactor=reactor)
    if ran is None and web:
        serve(reactor, click.echo, seconds=seconds)
    billing_summary(store, app.now(), click.echo)


# --------------------------------------------------------------------------------- the service

@main.command()
@click.option("--campaign", "campaigns", multiple=True, help="Run only this campaign (repeatable). Default: every running one.")
@click.option("--ip", default="127.0.0.1", show_default=True, help="Address the SIP workers listen on.")
@click.option("--sip-port", default=5070, show_default=True, type=click.IntRange(1024, 65000),
              help="First SIP port; agents' phones call this one.")
@click.option("--workers", default=4, show_default=True, type=click.IntRange(1, 16),
              help="SIP worker processes at most (30 calls each), on consecutive ports.")
@click.option("--seconds", type=click.IntRange(1, None), default=None, help="Stop after this long (default: at SIGINT/SIGTERM).")
@click.option("--drain", default=30, show_default=True, type=click.IntRange(0, 3600),
              help="At stop, seconds calls in progress may take to finish before they are hung up.")
@click.option("--record-dir", type=click.Path(file_okay=False), default=None,
              help="Record connected calls (WAV) here; the CDR references each file.")
@click.option("--web", "web_port", type=click.IntRange(0, 65535), default=None,
              help="Also serve the web application on this port, on the dialer's reactor.")
@click.option("--web-host", default="127.0.0.1", show_default=True, help="Address the web application listens on.")
@click.option("--tls-cert", type=click.Path(dir_okay=False), default=None,
              help="Serve the web application over HTTPS with this PEM certificate (chain).")
@click.option("--tls-key", type=click.Path(dir_okay=False), default=None,
              help="Its PEM private key (default: in the --tls-cert file).")
@json_option
@pass_app
def run(app, campaigns, ip, sip_port, workers, seconds, drain, record_dir, web_port, web_host, tls_cert, tls_key,
        as_json):
    """Run the dialer: every running campaign over its SIP trunk, agents logging in
    from their SIP phones, until SIGINT/SIGTERM (or --seconds). With --web PORT, the
    browser's pages are served beside it by the same reactor."""
    from dialer.service import run_service
    if tls_key and not tls_cert:
        from core.errors import InputError
        raise InputError("--tls-key needs --tls-cert")
    if web_port is not None:
        from web.server import listen, tls_options, url
        tls = tls_options(tls_cert, tls_key) if tls_cert else None
        port = listen(app.the_reactor(), app.db_path, web_port, web_host, tls=tls)
        if not as_json:
            click.echo(f"== web: {url(port, tls)}")
    out = run_service(app.db_path, (lambda _t: None) if as_json else click.echo, campaigns=list(campaigns) or None,
                      ip=ip, port=sip_port, workers=workers, seconds=seconds, record_dir=record_dir, drain_s=drain,
                      reactor=app.reactor)
    if as_json:
        _emit(out, True)


@main.command("web")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="0: any free port.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--tls-cert", type=click.Path(dir_okay=False), default=None,
              help="Serve HTTPS with this PEM certificate (chain); session cookies are then Secure.")
@click.option("--tls-key", type=click.Path(dir_okay=False), default=None,
              help="Its PEM private key (default: in the --tls-cert file).")
@pass_app
def web_cmd(app, port, host, tls_cert, tls_key):
    """Serve the web application alone (no dialing), until SIGINT/SIGTERM. Users log in
    with a password set by an owner, or by: dialer account password USER."""
    from web.server import serve, tls_options
    if tls_key and not tls_cert:
        from core.errors import InputError
        raise InputError("--tls-key needs --tls-cert")
    serve(app.db_path, click.echo, port=port, host=host, tls=tls_options(tls_cert, tls_key) if tls_cert else None)


# --------------------------------------------------------------------------------- webhooks

@main.group(cls=_Group)
def webhook():
    """Webhooks: signed POSTs of call events to an account's URLs (call.ended,
    call.disposition, lead.opted_out), retried with back-off; their delivery log."""


def _webhook_line(w):
    state = "active" if w["active"] else f"disabled ({w['disabled_reason']})"
    return (f"{w['id']:>4}  {w['url']}  [{','.join(w['events'])}]  {state}"
            + (f"  {w['label']}" if w["label"] else ""))


@webhook.command("add")
@click.argument("url")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--events", required=True, help="Event types, comma-separated: call.ended,call.disposition,lead.opted_out.")
@click.option("--label", default="", help="A name for it (e.g. the CRM it feeds).")
@json_option
@pass_app
def webhook_add(app, url, account, events, label, as_json):
    """Subscribe URL (https://; http:// only to loopback or private addresses when
    DIALER_WEBHOOK_ALLOW_PRIVATE=1) to events. The signing secret is printed once."""
    from dialer.webhooks import add_subscription
    out = add_subscription(app.store, account, url, events, app.now(), app.user, label=label)
    _emit(out, as_json, f"webhook {out['id']} added for {out['account']}: {out['url']} [{','.join(out['events'])}]\n"
                        f"signing secret (shown once, keep it): {out['secret']}")


@webhook.command("list")
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def webhook_list(app, account, as_json):
    """The account's webhooks (never their secrets) and their deliveries by state."""
    from dialer.webhooks import list_subscriptions
    rows = list_subscriptions(app.store, account)
    if as_json:
        _emit(rows, True)
        return
    if not rows:
        click.echo("no webhooks (add one with: dialer webhook add URL --events ...)")
    for w in rows:
        d = w["deliveries"]
        click.echo(_webhook_line(w) + f"  delivered {d['delivered']}, pending {d['pending']}, failed {d['failed']}")


@webhook.command("remove")
@click.argument("webhook_id", type=int)
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def webhook_remove(app, webhook_id, account, as_json):
    """Remove a webhook: its pending deliveries are cancelled; its log stays."""
    from dialer.webhooks import remove_subscription
    out = remove_subscription(app.store, account, webhook_id, app.now(), app.user)
    _emit(out, as_json, f"webhook {out['id']} removed ({out['cancelled']} pending deliveries cancelled)")


@webhook.command("disable")
@click.argument("webhook_id", type=int)
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--reason", default="", help="Why (kept in the audit log).")
@json_option
@pass_app
def webhook_disable(app, webhook_id, account, reason, as_json):
    """Stop sending to a webhook; its deliveries wait until it is enabled."""
    from dialer.webhooks import set_active
    out = set_active(app.store, account, webhook_id, False, app.now(), app.user, reason)
    _emit(out, as_json, _webhook_line(out))


@webhook.command("enable")
@click.argument("webhook_id", type=int)
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def webhook_enable(app, webhook_id, account, as_json):
    from dialer.webhooks import set_active
    out = set_active(app.store, account, webhook_id, True, app.now(), app.user)
    _emit(out, as_json, _webhook_line(out))


@webhook.command("rotate")
@click.argument("webhook_id", type=int)
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def webhook_rotate(app, webhook_id, account, as_json):
    """A new signing secret (printed once); for 24 h deliveries carry a signature made
    with the previous one too."""
    from dialer.webhooks import rotate_secret
    out = rotate_secret(app.store, account, webhook_id, app.now(), app.user)
    _emit(out, as_json, f"webhook {out['id']}: new signing secret (shown once, keep it): {out['secret']}\n"
                        f"the previous one also signs until {out['rotated_overlap_until']}")


@webhook.command("test")
@click.argument("webhook_id", type=int)
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def webhook_test(app, webhook_id, account, as_json):
    """Queue a webhook.test event to this webhook (sent by a running dialer run or dialer web)."""
    from dialer.webhooks import send_test
    out = send_test(app.store, account, webhook_id, app.now(), app.user)
    _emit(out, as_json, f"test event {out['event_id']} queued for webhook {out['id']}")


@webhook.command("redeliver")
@click.argument("delivery_id", type=int)
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def webhook_redeliver(app, delivery_id, account, as_json):
    """Send a delivered or failed delivery's event again (same event id)."""
    from dialer.webhooks import redeliver
    out = redeliver(app.store, account, delivery_id, app.now(), app.user)
    _emit(out, as_json, f"event {out['event_id']} queued again as delivery {out['delivery']}")


@webhook.command("log")
@click.argument("webhook_id", type=int, required=False)
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000), help="Deliveries, newest first.")
@json_option
@pass_app
def webhook_log(app, webhook_id, account, limit, as_json):
    """The delivery log: each delivery (event, webhook, state) and its attempts (status
    code, latency, error, next retry)."""
    from dialer.webhooks import delivery_log
    rows = delivery_log(app.store, account, webhook_id, limit)
    if as_json:
        _emit(rows, True)
        return
    if not rows:
        click.echo("no deliveries yet")
    for d in rows:
        click.echo(f"delivery {d['id']}  {d['type']}  {d['event_id']}  webhook {d['subscription_id']}  {d['state']}"
                   + (f", next attempt {d['next_attempt_at']}" if d["next_attempt_at"] else "")
                   + (f"  (redelivery of {d['redelivery_of']})" if d["redelivery_of"] else ""))
        for a in d["attempt_log"]:
            click.echo(f"    #{a['attempt']} {a['at']}  {a['status_code'] if a['status_code'] is not None else '-'}"
                       f"  {a['latency_ms']} ms  {a['outcome']}" + (f"  {a['error']}" if a["error"] else "")
                       + (f"  retry at {a['next_retry_at']}" if a["next_retry_at"] else ""))


@main.group(cls=_Group)
def agent():
    """Agents on a running dialer: wrap-up dispositions, pause, ready, logout."""


def _agent_command(name, doc):
    @agent.command(name, help=doc)
    @click.argument("user")
    @click.option("--account", help="The user's account (needed once the installation has several).")
    @click.option("--reason", default=None)
    @click.option("--wait", default=5.0, show_default=True, type=click.FloatRange(0, 120),
                  help="Seconds to wait for the running dialer to carry it out.")
    @json_option
    @pass_app
    def cmd(app, user, account, reason, wait, as_json, **kw):
        from dialer.commands import submit_and_wait
        out = submit_and_wait(app.store, account, user, name, app.now, app.user, wait, reason=reason, **kw)
        _emit(out, as_json, f"agent {user}: {out['result']}")
        if not out["done"]:
            sys.exit(1)
    return cmd


_dispose = _agent_command("dispose", "End the agent's wrap-up with a disposition (sale, not-interested, wrong-number, "
                                     "other, dnc-requested, answering-machine, dead-air).")
click.option("--disposition", required=True)(_dispose)
click.option("--pause", is_flag=True, help="Pause the agent after the wrap-up.")(_dispose)
_agent_command("pause", "Pause a ready agent (no calls until ready).")
_agent_command("ready", "Make a paused agent ready for calls.")
_agent_command("logout", "Log a ready or paused agent out (the phone's call ends).")
_agent_command("dial", "Preview campaigns: dial the next lead for this ready agent (checked by the rules now).")


# --------------------------------------------------------------------------------- billing

def _money(d):
    from billing.money import fmt
    return fmt(d)


def _refused_text(out):
    lines = [f"  {n} refused: {reason}" for reason, n in out["refused_by_reason"].items()]
    lines += [f"    {r['call_id']}: {r['reason']}" for r in out["refused_examples"]]
    return "".join("\n" + x for x in lines)


@main.group(cls=_Group)
def rates():
    """Telecom rate decks: the operator's default deck, or an account's own (which then rates its calls alone)."""


@rates.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--deck", "deck", required=True, help="The deck's name (e.g. carrier-a-2026-03).")
@click.option("--account", help="An account's own deck (it takes precedence over the default deck for that account, "
                                "as a whole). Without it: the operator's default deck, used by every other account.")
@json_option
@pass_app
def rates_import(app, file, deck, account, as_json):
    """Import a rate deck from CSV: columns prefix, rate (per minute), initial, increment (seconds), and optionally
    destination, connect_fee, effective_from, effective_to. All or nothing: any bad line is reported with its line
    number and the deck in force stays in force."""
    from billing.decks import import_deck
    out = import_deck(app.store, file, deck, app.now(), app.user, account=account)
    _emit(out, as_json, f"deck {out['deck']} imported for {out['scope']}: {out['rows']} rows, {out['prefixes']} "
                        f"prefixes" + (f" (replaces deck {out['replaces']['deck']})" if out["replaces"] else ""))


@rates.command("show")
@click.option("--account", help="Also the account's own deck, and which deck rates its calls.")
@json_option
@pass_app
def rates_show(app, account, as_json):
    """The decks in force."""
    from billing.decks import show_decks
    out = show_decks(app.store, account)
    text = [f"default deck: {out['default']['name']} ({out['default']['rows']} rows, {out['default']['imported_at']})"
            if out["default"] else "default deck: none"]
    if "account" in out:
        own = out["own"]
        text.append(f"{out['account']}'s own deck: {own['name']} ({own['rows']} rows, {own['imported_at']})"
                    if own else f"{out['account']}'s own deck: none")
        text.append(f"{out['account']}'s calls are rated with: {out['rates_with'] or 'no deck'}")
    _emit(out, as_json, "\n".join(text))


@main.command("rate")
@click.argument("cdr_file", type=click.Path(dir_okay=False))
@click.option("--account", help="The account (needed once the installation has several); a row's account column, "
                                "when the file has one, names another.")
@json_option
@pass_app
def rate_cmd(app, cdr_file, account, as_json):
    """What-if: rate a CSV of CDRs (call_id, destination, started_at, answered_at, ended_at[, account]) with the
    account's plan and deck in force, storing nothing. Refused rows are listed with their line and reason."""
    from billing.service import rate_file
    out = rate_file(app.store, cdr_file, account)
    if as_json:
        _emit(out, True)
        return
    for r in out["cdrs"]:
        click.echo(f"line {r['line']:<6} {r['call_id']:<20} {r['billsec']:>6} s  service {_money(r['service'])}  "
                   f"telecom {_money(r['telecom'])}" + (f" (+{r['prefix']} {r['destination']})" if r["prefix"] else
                                                        " (free)") + f"  total {_money(r['total'])}")
    for r in out["refused"]:
        click.echo(f"line {r['line']:<6} refused: {r['reason']}")
    t = out["totals"]
    click.echo(f"{t['rated']} rated, {t['free']} free, {t['refused']} refused: service {_money(t['service'])}, "
               f"telecom {_money(t['telecom'])}, total {_money(t['total'])} (nothing stored)")


@main.group(cls=_Group)
def bill():
    """Billing runs (rate CDRs into the ledger, build the period's invoice), billing's start, prepayments and the
    accounts' standing."""


@bill.command("run")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--period", required=True, help="The month, YYYY-MM, in the account's time zone (half-open).")
@json_option
@pass_app
def bill_run_cmd(app, account, period, as_json):
    """Rate every unrated CDR of the account that started in the period into its ledger (once per call: a rerun
    charges nothing twice), then build the period's invoice: a draft until a day after the period's end, then
    issued (the account fee, users and interest posted once; immutable). An issued period changes nothing."""
    from billing.invoices import run as bill_run
    out = bill_run(app.store, account, period, app.now(), app.user)
    deck = out["deck"]
    _emit(out, as_json, (
        f"{out['account']} {out['period']} ({out['time_zone']}: {out['from']} .. {out['to']}), deck "
        f"{deck['deck'] + ' (' + deck['scope'] + ')' if deck else 'none'}: {out['cdrs']} unrated CDRs read, "
        f"{out['charged']} charged, {out['free']} free, {out['refused']} refused, {out['already']} charged meanwhile "
        f"by another run\n  service {_money(out['service'])}, telecom {_money(out['telecom'])}, "
        f"total {_money(out['total'])}" + _refused_text(out)
        + (f"\n  {out['unrated_after_issue']} CDRs of the period are unrated: the invoice was issued before"
           if out.get("unrated_after_issue") else "")
        + "\n" + _invoice_text(out["invoice"])))


@bill.command("rerate")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--period", help="Every charged call that started in this month (YYYY-MM).")
@click.option("--call-id", "call_ids", multiple=True, help="A charged call (repeatable).")
@click.option("--reason", default="", help="Why (recorded in the audit log).")
@json_option
@pass_app
def bill_rerate_cmd(app, account, period, call_ids, reason, as_json):
    """Rate charged calls again with the plan and deck in force now: each changed call gets a reversal of its
    charge and a new charge (never an edit)."""
    from billing.ledger import rerate
    out = rerate(app.store, account, app.now(), app.user, period=period, call_ids=list(call_ids) or None,
                 reason=reason)
    _emit(out, as_json, f"{out['account']}: {out['calls']} charged calls, {out['rerated']} rerated, "
                        f"{out['unchanged']} unchanged, {out['refused']} refused; net change {_money(out['net'])}"
                        + _refused_text(out))


@bill.command("plan")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--price", help="Service price per minute (default 0.0188).")
@click.option("--increment", help="INITIAL/INCREMENT seconds: 60/60, 30/6, 6/6, 1/1 (default 60/60).")
@click.option("--connect-fee", help="Per answered call.")
@click.option("--min-cost", help="Minimum service cost of an answered call ('' removes it).")
@click.option("--max-cost", help="Maximum service cost of a call ('' removes it).")
@click.option("--time-zone", help="IANA zone the billing periods are cut in (default UTC).")
@click.option("--reason", default="", help="Why (recorded in the audit log).")
@json_option
@pass_app
def bill_plan_cmd(app, account, price, increment, connect_fee, min_cost, max_cost, time_zone, reason, as_json):
    """Show the account's service price, increment scheme, limits, time zone and floor, or change them."""
    from billing.plans import set_plan, show_plan
    kw = {k: v for k, v in (("min_cost", min_cost), ("max_cost", max_cost)) if v is not None}
    if any(v is not None for v in (price, increment, connect_fee, time_zone)) or kw:
        out = set_plan(app.store, account, app.now(), app.user, price=price, increment=increment,
                       connect_fee=connect_fee, time_zone=time_zone, reason=reason, **kw)
    else:
        out = show_plan(app.store, account)
    _emit(out, as_json, (
        f"{out['account']}: service {_money(out['price_per_minute'])}/min, {out['increment']}, connect fee "
        f"{_money(out['connect_fee'])}, min {_money(out['min_cost']) if out['min_cost'] is not None else 'none'}, "
        f"max {_money(out['max_cost']) if out['max_cost'] is not None else 'none'}, periods in {out['time_zone']}, "
        f"floor {_money(out['floor'])}" + (f" (changed: {', '.join(out['changed'])})" if out.get("changed") else "")))


# --------------------------------------------------------------------------------- invoices, standing, life cycle

def _invoice_text(inv):
    from billing.invoices import to_text
    return to_text(inv)


def _standing_text(out):
    text = f"{out['account']}: {out['state']}" + (f" ({out['reason']})" if out["reason"] else "")
    if out["since"]:
        text += f" since {out['since']}"
    if not out["billing_enabled"]:
        text += " (billing not enabled)"
    text += "; may dial" if out["may_dial"] else "; may NOT dial"
    if out.get("notice_until"):
        text += f"; suspended at {out['notice_until']} unless paid"
    if out.get("numbers_until"):
        text += f"; numbers kept until {out['numbers_until']}, records until {out['records_until']}"
    return text


@bill.command("enable")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--reason", default="", help="Why (recorded in the audit log).")
@json_option
@pass_app
def bill_enable_cmd(app, account, reason, as_json):
    """Enable billing for the account: it may not dial until its first payment (pending), and an overdue invoice
    puts it on notice, then suspends it. Accounts without billing enabled dial as before."""
    from billing.standing import enable
    out = enable(app.store, account, app.now(), app.user, reason)
    _emit(out, as_json, _standing_text(out) + ("" if out["changed"] else " (unchanged)"))


@bill.command("prepay", context_settings={"ignore_unknown_options": True})
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--from", "first", required=True, help="The first month the prepayment covers (YYYY-MM).")
@click.option("--months", default=12, show_default=True, type=click.IntRange(1, 36))
@click.option("--amount", help="The amount paid (default: months x (account fee + 88 x users)); not less.")
@click.option("--reference", default="", help="The payment's reference.")
@json_option
@pass_app
def bill_prepay_cmd(app, account, first, months, amount, reference, as_json):
    """Record an annual prepayment: a payment of the account fee and users for MONTHS months in advance."""
    from billing.invoices import prepay
    out = prepay(app.store, account, first, app.now(), app.user, months=months, amount=amount, reference=reference)
    _emit(out, as_json, f"{out['account']}: prepayment of {_money(out['amount'])} recorded (entry {out['entry']}), "
                        f"{out['first_period']} to {out['last_period']} at {_money(out['monthly'])} a month; "
                        f"standing {out['standing']}")


@bill.command("evaluate")
@click.option("--account", help="One account (default: every account whose billing is enabled).")
@json_option
@pass_app
def bill_evaluate_cmd(app, account, as_json):
    """Apply the standing's transitions due now (payment -> active, overdue -> notice, notice over -> suspended)
    and release the numbers of closed accounts whose 30 days are over. Run it daily."""
    from billing.standing import evaluate, evaluate_all, release_due
    if account:
        out = evaluate(app.store, account, app.now(), app.user)
        out["released"] = release_due(app.store, app.now(), app.user, account)["released"]
        _emit(out, as_json, _standing_text(out) + "".join(
            f"\n  {t['from']} -> {t['to']} at {t['effective_at']}: {t['reason']}" for t in out["transitions"])
            + "".join(f"\n  released {r['number']}" for r in out["released"]))
        return
    out = evaluate_all(app.store, app.now(), app.user)
    _emit(out, as_json, "\n".join([_standing_text(a) for a in out["accounts"]]
                                   + [f"released {r['number']} (account id {r['account_id']})" for r in out["released"]])
          or "no account has billing enabled")


@main.group(cls=_Group)
def invoice():
    """Invoices: one per account and month (in the account's time zone), built by dialer bill run."""


@invoice.command("show")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--period", help="The month, YYYY-MM. Without it: the account's invoices, listed.")
@json_option
@pass_app
def invoice_show(app, account, period, as_json):
    """Show an invoice and its lines (or list the account's invoices)."""
    from billing.invoices import list_invoices, show
    if period is None:
        out = list_invoices(app.store, account)
        _emit(out, as_json, "\n".join(
            f"{i['invoice']:<16} {i['status']:<7} due {i['due_at'][:10]}  charges {_money(i['charges'])}  "
            f"due {_money(i['amount_due'])}" for i in out["invoices"]) or f"{out['account']}: no invoice yet")
        return
    out = show(app.store, account, period)
    _emit(out, as_json, _invoice_text(out))


@invoice.command("export")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--period", required=True, help="The month, YYYY-MM.")
@click.option("--format", "fmt", type=click.Choice(["json", "csv", "html"]), default="json", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to this file (default: print).")
@pass_app
def invoice_export(app, account, period, fmt, output):
    """Export an invoice as JSON, CSV (its lines, then its totals) or HTML (a readable page)."""
    from billing.invoices import export
    text = export(app.store, account, period, fmt)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        with open(output, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    except OSError as e:
        raise click.ClickException(f"cannot write {output}: {e.strerror}") from None
    click.echo(f"invoice written to {output} ({fmt})")


@account.command("standing")
@click.option("--account", "name", help="The account (needed once the installation has several).")
@json_option
@pass_app
def account_standing(app, name, as_json):
    """The account's standing (active, pending, notice, suspended, closed), why and since when, its history and
    its numbers held after closing."""
    from billing.standing import show
    out = show(app.store, name, app.now())
    _emit(out, as_json, _standing_text(out) + "".join(
        f"\n  {e['effective_at']}  {(e['from_state'] or '-') + ' -> ' + e['to_state']:<22} {e['reason'] or ''}"
        for e in out["events"]) + "".join(
        f"\n  number {h['number']}: kept until {h['keep_until'][:10]}"
        + (f", ported out {h['ported_at'][:10]}" + (f" to {h['ported_to']}" if h["ported_to"] else "")
           if h["ported_at"] else "") + (f", released {h['released_at'][:10]}" if h["released_at"] else "")
        for h in out["numbers_held"]))


@account.command("close")
@click.option("--account", "name", help="The account (needed once the installation has several).")
@click.option("--terminate", is_flag=True, help="The operator closes a suspended account (not the customer).")
@click.option("--reason", default="", help="Why (recorded in the audit log).")
@json_option
@pass_app
def account_close(app, name, terminate, reason, as_json):
    """Close the account (for good): it may no longer dial; its numbers are kept 30 days, during which they can be
    ported out (dialer number port-out), then released; its records stay for the contract period."""
    from billing.standing import close
    out = close(app.store, name, app.now(), app.user, reason, terminated=terminate)
    _emit(out, as_json, _standing_text(out) + (f"\n  numbers kept: {', '.join(out['numbers_kept'])}"
                                               if out["numbers_kept"] else ""))


@number.command("port-out")
@click.argument("phone")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--to", "carrier", help="The carrier the number goes to (recorded).")
@json_option
@pass_app
def number_port_out(app, phone, account, carrier, as_json):
    """Port a number of a closed account out, within the 30 days its numbers are kept (recorded with the date)."""
    from billing.standing import port_out
    out = port_out(app.store, phone, account, app.now(), app.user, to=carrier)
    _emit(out, as_json, f"{out['number']} ported out of account {out['account']} on {out['ported_at'][:10]}"
                        + (f" to {out['ported_to']}" if out["ported_to"] else ""))


@main.group(cls=_Group)
def balance():
    """An account's balance (the sum of its ledger), top-ups and its floor."""


@balance.command("show")
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def balance_show(app, account, as_json):
    """Balance, floor, what is left above the floor, and the ledger's sums per kind."""
    from billing.ledger import balance as balance_of
    out = balance_of(app.store, account)
    _emit(out, as_json, f"{out['account']}: balance {_money(out['balance'])}, floor {_money(out['floor'])}, "
                        f"{'BELOW the floor by ' + _money(-out['above_floor']) if out['below_floor'] else _money(out['above_floor']) + ' above the floor'}"
                        + "".join(f"\n  {k:<9} {v['entries']:>8} entries  {_money(v['amount'])}"
                                  for k, v in out["by_kind"].items() if v["entries"]))


@balance.command("overview")
@click.option("--account", help="The account (needed once the installation has several).")
@json_option
@pass_app
def balance_overview(app, account, as_json):
    """Balance, floor, standing and the last invoices with their lines (the owner's billing page)."""
    from billing.overview import overview, overview_text
    out = overview(app.store, account, app.now())
    _emit(out, as_json, overview_text(out))


@balance.command("topup", context_settings={"ignore_unknown_options": True})  # -5: refused as negative, not as an option
@click.argument("amount")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--reference", default="", help="The payment's reference (e.g. the bank transfer's).")
@json_option
@pass_app
def balance_topup(app, amount, account, reference, as_json):
    """Record a payment of AMOUNT (e.g. 500 or 500.00)."""
    from billing.ledger import topup
    out = topup(app.store, account, amount, app.now(), app.user, reference)
    _emit(out, as_json, f"{out['account']}: payment of {_money(out['amount'])} recorded (entry {out['entry']}); "
                        f"balance {_money(out['balance'])}")


@balance.command("floor", context_settings={"ignore_unknown_options": True})  # -5: refused as negative, not as an option
@click.argument("amount")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--reason", default="", help="Why (recorded in the audit log).")
@json_option
@pass_app
def balance_floor(app, amount, account, reason, as_json):
    """Set the balance the account must keep (AMOUNT, default 100)."""
    from billing.ledger import set_floor
    out = set_floor(app.store, account, amount, app.now(), app.user, reason)
    _emit(out, as_json, f"{out['account']}: floor {_money(out['floor'])}" + ("" if out["changed"] else " (unchanged)"))


# --------------------------------------------------------------------------------- reports, records, evidence

def _share(x):
    """A Decimal share (0.1234) as a percentage (12.34 %)."""
    return "-" if x is None else f"{x.scaleb(2):.2f} %"


@main.group(cls=_Group)
def report():
    """Billing-cycle reports."""


@report.command("high-cost")
@click.option("--period", required=True, help="The billing cycle, YYYY-MM, in the account's time zone (half-open).")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--threshold", help="Rate per minute above which a destination is high-cost (default 0.10).")
@click.option("--limit", help="High-cost share of a campaign's telecom cost above which it is flagged: a fraction "
                              "(0.1) or a percentage (10%%). Default 0.10.")
@click.option("--cost-limit", help="Also flag a campaign whose high-cost telecom cost is above this amount.")
@json_option
@pass_app
def report_high_cost(app, period, account, threshold, limit, cost_limit, as_json):
    """Traffic to high-cost destinations per campaign (calls, minutes, telecom cost and share, from the ledger:
    run `dialer bill run` for the period first), flagged above the limit."""
    from billing.reports import high_cost
    out = high_cost(app.store, period, account, threshold=threshold, limit=limit, cost_limit=cost_limit)
    if as_json:
        _emit(out, True)
        return
    lines = [f"{out['account']} {out['period']} ({out['time_zone']}: {out['from']} .. {out['to']}): destinations "
             f"over {_money(out['threshold'])}/min; flagged above {_share(out['limit'])} of telecom"
             + (f" or {_money(out['cost_limit'])}" if out["cost_limit"] is not None else ""),
             f"  account: {out['high_cost']['calls']} high-cost calls, {out['high_cost']['minutes']} min, "
             f"{_money(out['high_cost']['telecom'])} of {_money(out['all']['telecom'])} telecom "
             f"({_share(out['share'])})" + ("  FLAGGED" if out["flagged"] else "")]
    for c in out["campaigns"]:
        lines.append(f"  campaign {c['campaign'] or '(none)'}: {c['high_cost']['calls']} calls, "
                     f"{c['high_cost']['minutes']} min, {_money(c['high_cost']['telecom'])} of "
                     f"{_money(c['all']['telecom'])} ({_share(c['share'])})" + ("  FLAGGED" if c["flagged"] else ""))
        for d in c["destinations"]:
            lines.append(f"    +{d['prefix']} {d['destination'] or ''} at {_money(d['rate'])}/min: {d['calls']} calls, "
                         f"{d['minutes']} min, {_money(d['telecom'])} ({_share(d['share_of_campaign'])})")
    if out["unrated_calls"]:
        lines.append(f"  {out['unrated_calls']} billable call(s) of the period are not rated yet (not counted): "
                     f"run dialer bill run --period {out['period']}")
    _emit(out, False, "\n".join(lines))


@main.group(cls=_Group)
def records():
    """Call records of an account."""


@records.command("export")
@click.option("--account", help="The account (needed once the installation has several).")
@click.option("--month", required=True, help="YYYY-MM, in the account's billing time zone (half-open).")
@click.option("--out", "out", type=click.Path(dir_okay=False), help="The archive to write (a .zip; default "
                                                                    "records-ACCOUNT-MONTH.zip here). Never overwritten.")
@json_option
@pass_app
def records_export(app, account, month, out, as_json):
    """One archive of the month's calls: cdrs.csv (Asterisk's CDR columns and ours), evidence.jsonl (each call's
    compliance evidence), the recordings, a README and MANIFEST.sha256."""
    from dialer.export import export_month
    res = export_month(app.store, account, month, out, app.now())
    _emit(res, as_json, f"{res['archive']}: {res['calls']} calls of {res['account']} {res['month']} "
                        f"({res['time_zone']}), {res['recordings']} recording(s)"
                        + (f", {res['recordings_missing']} missing (listed in recordings-missing.csv)"
                           if res["recordings_missing"] else "")
                        + f"; {res['files']} files; sha256 {res['sha256']}")


@main.group(cls=_Group)
def call():
    """One call."""


@call.command("evidence")
@click.argument("call_id")
@click.option("--account", help="The call's account (needed once the installation has several).")
@json_option
@pass_app
def call_evidence_cmd(app, call_id, account, as_json):
    """What the dialer recorded when it placed the call: rule-set version, DNC registry as-of date and list versions,
    the callee's zones and local time, the abandon window's state."""
    from dialer.evidence import call_evidence, describe
    out = call_evidence(app.store, call_id, account)
    _emit(out, as_json, "\n".join(describe(out)))


# --------------------------------------------------------------------------------- db
@main.group(cls=_Group)
def db():
    """The database file itself (the installation operator's view)."""


@db.command("info")
@click.option("--no-counts", is_flag=True, help="Skip the row counts (a full scan of each table).")
@json_option
@pass_app
def db_info(app, no_counts, as_json):
    """Journal mode, migrations applied and pending, integrity and foreign-key checks,
    and each table's columns, indexes, foreign keys and rows."""
    from core.schema import describe, describe_text
    info = describe(app.store, counts=not no_counts)
    _emit(info, as_json, describe_text(info))


if __name__ == "__main__":
    main()

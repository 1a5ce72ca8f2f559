"""The `dialer` command. Thin: each command parses its options, calls one library
function and prints the result (JSON with --json). Library errors become one
``Error: ...`` line and a non-zero exit."""

import getpass
import json
import os
import sqlite3
import sys

import click

from dialer.errors import DialerError
from dialer.store import Store, default_db_path
from dialer.timeutil import parse_instant, system_now


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DialerError as e:
            raise click.ClickException(str(e)) from None
        except sqlite3.DatabaseError as e:
            raise click.ClickException(f"database error: {e}") from None


class App:
    def __init__(self, db, user):
        self.db_path = db
        self.user = user
        self._store = None

    @property
    def store(self):
        if self._store is None:
            self._store = Store(self.db_path)
        return self._store

    def now(self):
        return system_now()


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
@click.option("--user", envvar="DIALER_USER", default=None, help="Who is acting (recorded in the audit log); default: $DIALER_USER or the login name.")
@click.version_option("0.1.0", prog_name="dialer")
@click.pass_context
def main(ctx, db, user):
    """Outbound campaign dialer with compliance guardrails."""
    if user is None:
        try:
            user = getpass.getuser()
        except Exception:
            user = "unknown"
    ctx.obj = App(db or str(default_db_path()), user)


# --------------------------------------------------------------------------------- check

def _at(at):
    return parse_instant(at, "--at") if at else None


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
@json_option
@pass_app
def check(app, numbers, at, region, campaign, as_json):
    """May these numbers be called now (or --at)? One verdict per number, with every
    rule that blocks it. Exit 0 whatever the verdicts."""
    from rules.service import check_numbers
    verdicts = check_numbers(app.store, numbers, app.now(), at=_at(at), region=region, campaign=campaign)
    for v in verdicts:
        d = v.as_dict()
        _emit(d, as_json, _verdict_text(d))


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--at", help="Instant to judge (ISO 8601; naive = UTC). Default: now.")
@click.option("--region", default="US", show_default=True)
@click.option("--campaign")
@click.option("--examples", default=3, show_default=True, help="Blocked examples to show per reason.")
@json_option
@pass_app
def screen(app, file, at, region, campaign, examples, as_json):
    """Screen a CSV list (columns phone, and optionally state, zone, business):
    how many may be called now, and why the others may not."""
    from rules.screening import screen_file
    out = screen_file(app.store, file, app.now(), at=_at(at), region=region, campaign=campaign, examples=examples)
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
    """Do-not-call lists: national registries, the company list, campaign lists."""


@dnc.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--source", type=click.Choice(["national", "company", "campaign"]), required=True)
@click.option("--campaign")
@click.option("--as-of", help="Date of a national registry copy (YYYY-MM-DD).")
@click.option("--jurisdiction", default="US", show_default=True, help="Jurisdiction of a national registry.")
@click.option("--region", default="US", show_default=True, help="Region for numbers without a country code.")
@json_option
@pass_app
def dnc_import(app, file, source, campaign, as_of, jurisdiction, region, as_json):
    """Import a DNC file (one number or wildcard a line; FTC 'area,number' lines too)."""
    from rules.service import import_dnc
    out = import_dnc(app.store, file, app.now(), app.user, source=source, campaign=campaign, as_of=as_of,
                     jurisdiction=jurisdiction, region=region)
    text = (f"imported {out['numbers']} numbers ({out.get('added', out['numbers'])} new) from {out['lines']} lines; "
            f"{out['junk']} junk lines")
    if out["junk_examples"]:
        text += "\n" + "\n".join(f"  line {j['line']}: {j['text']}" for j in out["junk_examples"])
    _emit(out, as_json, text)


def _dnc_scope_options(f):
    f = click.option("--campaign", help="The campaign's DNC list instead of the company list.")(f)
    f = click.option("--region", default="US", show_default=True)(f)
    f = click.option("--reason", default="", help="Why (recorded in the audit log).")(f)
    return f


@dnc.command("add")
@click.argument("numbers", nargs=-1, required=True)
@_dnc_scope_options
@json_option
@pass_app
def dnc_add(app, numbers, campaign, region, reason, as_json):
    """Add numbers or wildcards (+1212*, 212555*) to the company (or campaign) DNC list."""
    from rules.service import add_dnc
    out = add_dnc(app.store, numbers, app.now(), app.user, source="campaign" if campaign else "company",
                  campaign=campaign, region=region, reason=reason)
    _emit(out, as_json, f"added {out['added']} to {out['scope']} DNC ({out['already']} already listed)")


@dnc.command("remove")
@click.argument("numbers", nargs=-1, required=True)
@_dnc_scope_options
@json_option
@pass_app
def dnc_remove(app, numbers, campaign, region, reason, as_json):
    """Remove numbers or wildcards from the company (or campaign) DNC list (--reason required)."""
    from rules.service import remove_dnc
    out = remove_dnc(app.store, numbers, app.now(), app.user, source="campaign" if campaign else "company",
                     campaign=campaign, region=region, reason=reason)
    _emit(out, as_json, f"removed {out['removed']} from {out['scope']} DNC ({out['not_listed']} were not listed)")


@dnc.command("check")
@click.argument("numbers", nargs=-1, required=True)
@click.option("--campaign")
@click.option("--region", default="US", show_default=True)
@json_option
@pass_app
def dnc_check(app, numbers, campaign, region, as_json):
    """Is a number on any DNC list that applies?"""
    from rules.service import check_dnc
    for r in check_dnc(app.store, numbers, app.now(), region=region, campaign=campaign):
        if r["error"]:
            text = f"{r['input']:<20} invalid: {r['error']}"
        else:
            text = f"{r['input']:<20} {r['number']:<16} {'LISTED' if r['listed'] else 'not listed'}"
            text += "".join(f"\n    {x['rule']}: {x['detail']}" for x in r["reasons"])
        _emit(r, as_json, text)


@dnc.command("waive")
@click.option("--campaign", required=True)
@click.option("--jurisdiction", default="US", show_default=True)
@click.option("--reason", required=True, help="Why the registry requirement is waived (audited).")
@click.option("--revoke", is_flag=True, help="Revoke the waiver.")
@json_option
@pass_app
def dnc_waive(app, campaign, jurisdiction, reason, revoke, as_json):
    """Waive (or --revoke) the national-registry requirement for one campaign."""
    from rules.service import waive_registry
    out = waive_registry(app.store, campaign, jurisdiction, app.now(), app.user, reason, revoke=revoke)
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
@click.argument("file", type=click.File("r", encoding="utf-8"), default="-")
@click.option("--reason", required=True, help="Why (recorded with the new version).")
@click.option("--create", is_flag=True, help="Add a new jurisdiction.")
@json_option
@pass_app
def rules_edit(app, jurisdiction, file, reason, create, as_json):
    """Replace a rule set with FILE (JSON or YAML; '-' for stdin). Invalid data is
    refused with the line and field; the old version stays in force."""
    from rules.service import edit_ruleset, ensure_defaults
    ensure_defaults(app.store, app.now())
    out = edit_ruleset(app.store, jurisdiction, file.read(), app.now(), app.user, reason, create=create)
    _emit(out, as_json, f"{out['jurisdiction']} is now version {out['version']} ({len(out['changes'])} fields changed)")


@rules.command("set")
@click.argument("jurisdiction")
@click.argument("field")
@click.argument("value")
@click.option("--reason", required=True)
@json_option
@pass_app
def rules_set(app, jurisdiction, field, value, reason, as_json):
    """Set one field, e.g.: dialer rules set US states.FL.hours.windows '{daily: ["08:00-20:00"]}' --reason ..."""
    from rules.service import ensure_defaults, set_rule
    ensure_defaults(app.store, app.now())
    out = set_rule(app.store, jurisdiction, field, value, app.now(), app.user, reason)
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
@json_option
@pass_app
def rules_verify(app, as_json):
    """Check the audit log's hash chain. Exit 1 if it was tampered with."""
    from rules.service import verify
    out = verify(app.store)
    _emit(out, as_json, f"audit log: {out['rows']} rows, chain {'intact' if out['ok'] else 'BROKEN'}" +
          "".join(f"\n  {e}" for e in out["errors"]))
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
    """Accounts (customers)."""


@account.command("create")
@click.argument("name")
@json_option
@pass_app
def account_create(app, name, as_json):
    from campaigns.store import create_account
    out = create_account(app.store, name, app.now(), app.user)
    _emit(out, as_json, f"account {out['name']} created")


@main.group(cls=_Group)
def number():
    """The account's own numbers (DIDs), usable as caller IDs."""


@number.command("add")
@click.argument("phone")
@click.option("--account", required=True)
@click.option("--region", default="US", show_default=True)
@json_option
@pass_app
def number_add(app, phone, account, region, as_json):
    from campaigns.store import add_number
    out = add_number(app.store, account, phone, app.now(), app.user, region=region)
    _emit(out, as_json, f"{out['number']} added to account {out['account']}")


@main.group(cls=_Group)
def campaign():
    """Campaigns."""


@campaign.command("create")
@click.argument("name")
@click.option("--account", required=True)
@click.option("--region", default="US", show_default=True)
@click.option("--caller-id")
@click.option("--hours", help="Narrow the legal window, e.g. 'mon-fri=09:00-17:00;sat=10:00-14:00;sun='.")
@json_option
@pass_app
def campaign_create(app, name, account, region, caller_id, hours, as_json):
    from campaigns.store import create_campaign
    out = create_campaign(app.store, name, account, app.now(), app.user, region=region, caller_id=caller_id, hours=hours)
    _emit(out, as_json, f"campaign {out['name']} created ({out['state']})")


@campaign.command("show")
@click.argument("name")
@json_option
@pass_app
def campaign_show(app, name, as_json):
    from campaigns.store import get_campaign
    _emit(get_campaign(app.store, name), as_json)


@main.command()
@click.option("--fresh/--keep", default=True, help="Start from an empty demo database (default).")
@pass_app
def demo(app, fresh):
    """Run the embedded demo on a demo database beside the default one."""
    from dialer.demo import run
    from dialer.store import Store
    import pathlib
    path = pathlib.Path(app.db_path).with_name("demo.db")
    if fresh:
        for suffix in ("", "-wal", "-shm"):
            pathlib.Path(str(path) + suffix).unlink(missing_ok=True)
    click.echo(f"demo database: {path}")
    run(Store(path), app.now(), click.echo)


if __name__ == "__main__":
    main()

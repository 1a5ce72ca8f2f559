"""The compliance officer's screens (issue 14): rule sets with the legal source of each
value, validated edits (a preview of the diff, then the save, with a required reason),
the DNC registries' freshness, the account's own DNC lists and registry waivers, the
audit trail with the chain's verification, and "may this number be called now".

Rule sets, life-line numbers and national registries are the installation's, shared
by every account: only the compliance officers and owners of the operator account
(``accounts.operator``, set from the terminal) may change them (permission
``rules.edit``); every other account sees them read-only. Each account manages its own
company list, its campaigns' lists and waivers. Every campaign is looked up within the
session's account: another account's id answers 404 and changes nothing.

Handlers are thin: each calls the library function the matching CLI command calls
(``rules.service.set_rule`` / ``edit_ruleset`` with ``dry_run`` for the preview,
``add_dnc``, ``remove_dnc``, ``import_dnc``, ``waive_registry``, ``import_lifeline``,
``check_numbers``, ``verify``; ``core.audit.trail``), off the reactor.
"""

import json
import shutil
import tempfile

from core.errors import InputError, NotFound

from . import roles, sessions
from .base import Refused, _arg, app, guard

# the installation-wide entries (account_id NULL) an account's audit trail shows beside its own
INSTALLATION_ACTIONS = ("rules.version", "dnc.registry", "lifeline.import")
TAGS = {"P": "primary text", "S": "secondary source", "I": "inference"}
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MAX_CHECK = 20  # numbers per check from the page
AUDIT_PAGE = 100


class ComplianceScreens:
    """The mixin of :class:`web.app.WebApp` with the compliance screens."""

    # ------------------------------------------------------------------ rule sets
    @app.route("/compliance", methods=["GET"])
    @guard("compliance")
    async def compliance_home(self, request, sess):
        return self.redirect(request, "/compliance/rules")

    @app.route("/compliance/rules", methods=["GET"])
    @guard("compliance")
    async def compliance_rules(self, request, sess):
        rows = await self.stores.read(_rulesets, self.now())
        return self.render(request, "compliance_rules.html", sess, rulesets=rows, may_edit=_may_edit(sess))

    @app.route("/compliance/rules/<jur>", methods=["GET"])
    @guard("compliance")
    async def compliance_ruleset(self, request, sess, jur):
        version = _arg(request, "version")
        try:
            version = int(version) if version else None
        except ValueError:
            raise NotFound(version) from None
        saved = _arg(request, "saved")
        return await self._ruleset_page(request, sess, jur, version=version,
                                        notice=f"Saved: version {saved} is in force; its audit entry is in the "
                                               f"audit trail." if saved and saved.isdigit() else None)

    async def _ruleset_page(self, request, sess, jur, version=None, status=200, error=None, notice=None, form=None):
        page = await self.stores.read(_ruleset_page, jur, version, self.now())
        form = form or {}
        if not form.get("text"):
            form["text"] = json.dumps(page["rs"]["data"], indent=2, ensure_ascii=False)
        return self.render(request, "compliance_ruleset.html", sess, status, rs=page["rs"], latest=page["latest"],
                           groups=ruleset_groups(page["rs"]["data"]), history=page["history"],
                           fields=field_paths(page["rs"]["data"]), may_edit=_may_edit(sess), error=error,
                           notice=notice, form=form, tags=TAGS)

    def _edit_form(self, request):
        return {k: _arg(request, k, "") for k in ("mode", "field", "value", "text", "reason", "base_version")}

    @app.route("/compliance/rules/<jur>/preview", methods=["POST"])
    @guard("rules.edit")
    async def compliance_rule_preview(self, request, sess, jur):
        """Validate the change and show its diff; nothing is saved (the library's dry run)."""
        f = self._edit_form(request)
        try:
            out = await self.stores.read(_rule_change, f, jur, self.now(), sessions.actor(sess), dry_run=True)
        except InputError as e:
            return await self._ruleset_page(request, sess, jur, status=400, error=str(e), form=f)
        return self.render(request, "compliance_confirm.html", sess, preview=out, changes=shown_changes(out["changes"]),
                           form=f)

    @app.route("/compliance/rules/<jur>/save", methods=["POST"])
    @guard("rules.edit")
    async def compliance_rule_save(self, request, sess, jur):
        f = self._edit_form(request)
        try:
            out = await self.stores.write(_rule_change, f, jur, self.now(), sessions.actor(sess), dry_run=False)
        except InputError as e:
            return await self._ruleset_page(request, sess, jur, status=400, error=str(e), form=f)
        return self.redirect(request, f"/compliance/rules/{out['jurisdiction']}?saved={out['version']}")

    @app.route("/compliance/lifeline/import", methods=["POST"])
    @guard("rules.edit")
    async def compliance_lifeline_import(self, request, sess):
        from rules.service import import_lifeline
        data = _upload(request)
        try:
            if not _reason(request):
                raise InputError("say why (the reason is kept in the audit log)")
            out = await self.stores.long(_with_upload, data, "lifeline.csv", import_lifeline, self.now(),
                                         sessions.actor(sess), region=(_arg(request, "region", "US") or "US"),
                                         reason=_reason(request))
        except InputError as e:
            return await self._dnc_page(request, sess, status=400, error=f"Life-line import: {e}")
        return await self._dnc_page(request, sess, notice=f"Life-line numbers: {out['added']} added or updated, "
                                                          f"{len(out['rejected'])} rejected.", result=out)

    # ------------------------------------------------------------------ DNC
    @app.route("/compliance/dnc", methods=["GET"])
    @guard("compliance")
    async def compliance_dnc(self, request, sess):
        return await self._dnc_page(request, sess)

    async def _dnc_page(self, request, sess, status=200, error=None, notice=None, result=None):
        campaign = _campaign_arg(request)
        page = await self.stores.read(_dnc_page, sess["account_id"], campaign, _arg(request, "q", ""), self.now())
        return self.render(request, "compliance_dnc.html", sess, status, error=error, notice=notice, result=result,
                           may_edit=_may_edit(sess), q=_arg(request, "q", ""), **page)

    @app.route("/compliance/dnc/<any(add,remove):action>", methods=["POST"])
    @guard("compliance")
    async def compliance_dnc_change(self, request, sess, action):
        from rules.service import add_dnc, remove_dnc
        campaign = _campaign_arg(request)
        numbers = [n.strip() for n in _arg(request, "numbers", "").replace(",", "\n").splitlines() if n.strip()]
        kw = dict(source="campaign" if campaign is not None else "company", campaign=campaign,
                  region=(_arg(request, "region", "US") or "US"), reason=_reason(request), account=sess["account_id"])
        try:
            if action == "add":
                if not kw["reason"]:
                    raise InputError("say why (the reason is kept with the entries and in the audit log)")
                out = await self.stores.write(add_dnc, numbers, self.now(), sessions.actor(sess),
                                              wide=_arg(request, "wide") == "yes", **kw)
                notice = f"Added {out['added']} ({out['already']} already listed)."
            else:
                out = await self.stores.write(remove_dnc, numbers, self.now(), sessions.actor(sess), **kw)
                notice = f"Removed {out['removed']} ({out['not_listed']} were not listed)."
        except InputError as e:
            return await self._dnc_page(request, sess, status=400, error=str(e))
        return await self._dnc_page(request, sess, notice=notice, result=out)

    @app.route("/compliance/dnc/import", methods=["POST"])
    @guard("compliance")
    async def compliance_dnc_import(self, request, sess):
        from rules.service import import_dnc
        campaign = _campaign_arg(request)
        source = "campaign" if campaign is not None else "company"
        data = _upload(request)
        try:
            await self.stores.read(_dnc_scope, source, campaign, sess["account_id"])  # 404 before the file is saved
            out = await self.stores.long(_with_upload, data, "dnc-list.csv", import_dnc, self.now(),
                                         sessions.actor(sess), source=source, campaign=campaign,
                                         region=(_arg(request, "region", "US") or "US"), account=sess["account_id"],
                                         wide=_arg(request, "wide") == "yes")
        except InputError as e:
            return await self._dnc_page(request, sess, status=400, error=str(e))
        return await self._dnc_page(request, sess, result=out,
                                    notice=f"Imported {out['numbers']} entries ({out['added']} new) from {out['lines']} "
                                           f"lines; {out['junk']} junk lines.")

    @app.route("/compliance/registries/import", methods=["POST"])
    @guard("rules.edit")
    async def compliance_registry_import(self, request, sess):
        from rules.service import import_dnc
        data = _upload(request)
        jur = (_arg(request, "jurisdiction", "US") or "US").strip().upper()
        try:
            out = await self.stores.long(_with_upload, data, "registry.txt", import_dnc, self.now(),
                                         sessions.actor(sess), source="national", as_of=_arg(request, "as_of", "") or None,
                                         jurisdiction=jur)
        except InputError as e:
            return await self._dnc_page(request, sess, status=400, error=f"Registry import: {e}")
        return await self._dnc_page(request, sess, notice=f"The {out['jurisdiction']} registry as of {out['as_of']}: "
                                                          f"{out['numbers']} numbers, {out['junk']} junk lines.")

    @app.route("/compliance/waivers", methods=["POST"])
    @guard("compliance")
    async def compliance_waiver(self, request, sess):
        from rules.service import waive_registry
        campaign = _campaign_arg(request, "waiver_campaign")
        if campaign is None:
            return await self._dnc_page(request, sess, status=400, error="choose the campaign to waive")
        revoke = _arg(request, "revoke") == "yes"
        jur = (_arg(request, "jurisdiction", "US") or "US").strip().upper()
        try:
            out = await self.stores.write(waive_registry, campaign, jur, self.now(), sessions.actor(sess),
                                          _reason(request), revoke=revoke, account=sess["account_id"])
        except InputError as e:
            return await self._dnc_page(request, sess, status=400, error=str(e))
        return await self._dnc_page(request, sess, notice=(
            f"{'Waived' if out['waived'] else 'Revoked the waiver of'} the {out['jurisdiction']} registry requirement "
            f"for campaign {out['campaign']}."))

    # ------------------------------------------------------------------ audit trail
    @app.route("/compliance/audit", methods=["GET"])
    @guard("compliance")
    async def compliance_audit(self, request, sess):
        from core.audit import trail
        before = _arg(request, "before")
        try:
            before = int(before) if before else None
        except ValueError:
            raise Refused(400, "before must be an entry number") from None
        rows = await self.stores.read(trail, sess["account_id"], INSTALLATION_ACTIONS, AUDIT_PAGE + 1, before)
        more = len(rows) > AUDIT_PAGE
        rows = rows[:AUDIT_PAGE]
        for r in rows:
            if r["action"] == "rules.version" and isinstance(r["detail"], dict):
                r["changes"] = shown_changes(r["detail"].get("changes") or [])
            text = json.dumps(r["detail"], ensure_ascii=False, sort_keys=True)
            r["detail_text"] = text if len(text) <= 400 else text[:397] + "..."
        verified = None
        if _arg(request, "verify") == "1":
            from rules.service import verify
            verified = await self.stores.read(verify)
        return self.render(request, "compliance_audit.html", sess, entries=rows, verified=verified,
                           next_before=rows[-1]["id"] if more and rows else None)

    # ------------------------------------------------------------------ may this number be called
    @app.route("/compliance/check", methods=["GET"])
    @guard("compliance")
    async def compliance_check(self, request, sess):
        from campaigns.store import list_campaigns
        from core.timeutil import parse_instant
        from rules.service import check_numbers
        campaigns = await self.stores.read(list_campaigns, sess["account_id"])
        form = {k: _arg(request, k, "") for k in ("numbers", "campaign", "at", "region")}
        numbers = [n.strip() for n in form["numbers"].replace(",", "\n").splitlines() if n.strip()]
        verdicts, error = None, None
        if numbers:
            try:
                if len(numbers) > MAX_CHECK:
                    raise InputError(f"at most {MAX_CHECK} numbers at a time (screen a list with the preview)")
                at = parse_instant(form["at"], "the instant", bounded=True) if form["at"].strip() else None
                campaign = _campaign_arg(request)
                out = await self.stores.read(check_numbers, numbers, self.now(), at=at, region=form["region"] or "US",
                                             campaign=campaign, account=sess["account_id"])
                verdicts = [v.as_dict() for v in out]
            except InputError as e:
                error = str(e)
        return self.render(request, "compliance_check.html", sess, 400 if error else 200, form=form,
                           campaigns=campaigns, verdicts=verdicts, error=error, now=self.now())


# ---------------------------------------------------------------------------------- helpers

def _may_edit(sess):
    return roles.may(sess["role"], "rules.edit", sess.get("account_operator"))


def _reason(request):
    return (_arg(request, "reason", "") or "").strip()


def _campaign_arg(request, name="campaign"):
    """A campaign id from the form or query (None when absent); anything else: 404."""
    v = (_arg(request, name, "") or "").strip()
    if not v:
        return None
    if not v.isdigit() or len(v) > 18:
        raise NotFound(v)
    return int(v)


def _upload(request):
    """The file of a multipart form (field ``file``)."""
    data = request.args.get(b"file", [b""])[0]
    if not data:
        raise Refused(400, "Choose a file to import.")
    return data


def _with_upload(store, data, name, fn, *args, **kw):
    """``fn(store, path, *args, **kw)`` with the uploaded ``data`` saved as ``name`` in a
    folder beside the database, removed afterwards."""
    base = store.files_dir / "uploads"
    base.mkdir(exist_ok=True)
    folder = tempfile.mkdtemp(dir=base)
    try:
        path = f"{folder}/{name}"
        with open(path, "wb") as f:
            f.write(data)
        return fn(store, path, *args, **kw)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _dnc_scope(store, source, campaign, account_id):
    from rules.service import _scope
    return _scope(store, source, campaign, account_id)


def _rulesets(store, now):
    """Every rule set in force: jurisdiction, version, name, when, by whom, why."""
    from rules.service import ensure_defaults, show_ruleset
    ensure_defaults(store, now)
    out = []
    for r in store.query("SELECT DISTINCT jurisdiction FROM rule_set_versions ORDER BY jurisdiction"):
        rs = show_ruleset(store, r["jurisdiction"])
        out.append({k: rs[k] for k in ("jurisdiction", "version", "created_at", "author", "reason")} |
                   {"name": rs["data"].get("name", ""), "regions": rs["data"].get("regions", [])})
    return out


def _ruleset_page(store, jur, version, now):
    from rules.service import ensure_defaults, history, show_ruleset
    ensure_defaults(store, now)
    rs = show_ruleset(store, jur, version)
    latest = show_ruleset(store, jur)["version"] if version is not None else rs["version"]
    hist = list(reversed(history(store, jur)))
    for h in hist:
        h["changes"] = shown_changes(h["changes"])
    return {"rs": rs, "latest": latest, "history": hist}


def shown_changes(changes):
    """The diff's old and new values as JSON text (escaped by the template like any text)."""
    return [{"field": c["field"], "old": json.dumps(c["old"], ensure_ascii=False),
             "new": json.dumps(c["new"], ensure_ascii=False)} for c in changes]


def _rule_change(store, f, jur, now, actor, dry_run):
    """A change from the rule-set page's forms: one field (``set_rule``) or the whole
    rule set as JSON or YAML (``edit_ruleset``), against the version previewed."""
    from rules.service import edit_ruleset, set_rule
    base = f.get("base_version") or ""
    expect = int(base) if base.isdigit() else None
    if f.get("mode") == "whole":
        if not f.get("text", "").strip():
            raise InputError("the rule set is empty: paste it as JSON or YAML")
        return edit_ruleset(store, jur, f["text"], now, actor, f.get("reason", ""), dry_run=dry_run,
                            expect_version=expect)
    if not f.get("field", "").strip():
        raise InputError("say which field to change (e.g. rules.abandon.max_rate)")
    return set_rule(store, jur, f["field"].strip(), f.get("value", ""), now, actor, f.get("reason", ""),
                    dry_run=dry_run, expect_version=expect)


def _dnc_page(store, account_id, campaign, q, now):
    from campaigns.store import list_campaigns
    from rules.service import dnc_list, registry_status, waivers
    return {"registries": registry_status(store, now), "campaigns": list_campaigns(store, account_id),
            "dnc": dnc_list(store, account_id, campaign, like=q), "waivers": waivers(store, account_id),
            "campaign": campaign}


# ---------------------------------------------------------------------------------- rule-set display

def _value(v):
    """A parameter as the page shows it."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float, str)):
        return str(v)
    return json.dumps(v, ensure_ascii=False)


def _week(windows):
    """{day spec: [windows]} -> the 7 weekdays' windows as text ("any time" where open)."""
    from rules.ruleset import _Errors, compile_windows, fmt_window
    try:
        errs = _Errors({})
        week = compile_windows(windows, errs)
        if errs.items:
            return None
    except (ValueError, TypeError, AttributeError):
        return None
    return [("any time" if w is None else ", ".join(fmt_window(x) for x in w) or "no calls") for w in week]


def _rows(block, path, skip=()):
    """One row per parameter of a rule block: field path, value, the block's source and tag."""
    out = []
    if not isinstance(block, dict):
        return [{"field": path, "value": _value(block), "source": "", "tag": ""}]
    for k, v in block.items():
        if k in ("source", "tag", "note") or k in skip:
            continue
        out.append({"field": f"{path}.{k}", "value": _value(v), "source": block.get("source", ""),
                    "tag": block.get("tag", "")})
    return out


GROUPS = (
    ("Holidays", ("holidays",)),
    ("Frequency caps", ("frequency",)),
    ("Abandoned calls: cap, window and lockouts", ("abandon", "abandon_lockout", "machine_lockout")),
    ("Ring minimum", ("ring",)),
    ("National DNC registry", ("registry",)),
    ("Life-line, emergency and high-cost numbers", ("emergency", "special_codes", "lifeline", "number_types")),
    ("Caller ID", ("caller_id",)),
    ("Multi-line businesses", ("multiline",)),
)


def _state_cell(key, b):
    """One cell of the state table: the state's hours, holiday ban or frequency cap as
    text, with its source; None when the state has no such rule (the jurisdiction's applies)."""
    if not isinstance(b, dict):
        return None
    if key == "hours":
        parts = []
        for d, w in (b.get("windows") or {}).items():
            w = [w] if isinstance(w, str) else w
            parts.append(f"{d} {', '.join(map(str, w)) if w else 'no calls'}")
        text = "; ".join(parts)
    elif key == "holidays":
        text = "no calls on holidays" if b.get("ban") else "holidays allowed"
    else:
        text = f"{b.get('max_calls')} calls per {b.get('window_hours')} h" if b.get("max_calls") else "no cap"
    return {"text": text, "source": b.get("source", ""), "tag": b.get("tag", "")}


def ruleset_groups(data):
    """The rule set's values grouped as a compliance officer reads them, each with its
    legal source: {"windows": [per scope: field, days (7), source, tag], "states": the
    state table, "groups": [(title, rows)]}."""
    rules = data.get("rules") or {}
    states = data.get("states") or {}
    windows = []
    hours = rules.get("hours") or {}
    windows.append({"scope": "everywhere (" + ", ".join(map(str, data.get("regions") or [])) + ")",
                    "field": "rules.hours.windows", "days": _week(hours.get("windows", {})),
                    "raw": _value(hours.get("windows")), "source": hours.get("source", ""), "tag": hours.get("tag", "")})
    for code, st in sorted(states.items()):
        if isinstance(st, dict) and isinstance(st.get("hours"), dict):
            h = st["hours"]
            windows.append({"scope": code, "field": f"states.{code}.hours.windows", "days": _week(h.get("windows", {})),
                            "raw": _value(h.get("windows")), "source": h.get("source", ""), "tag": h.get("tag", "")})
    table = []
    for code, st in sorted(states.items()):
        if isinstance(st, dict):
            table.append({"state": code, "cells": [_state_cell(key, st.get(key))
                                                   for key in ("hours", "holidays", "frequency")]})
    groups, seen = [], {"hours"}
    for title, keys in GROUPS:
        rows = []
        for k in keys:
            if k in rules:
                rows += _rows(rules[k], f"rules.{k}")
                seen.add(k)
        if title == "Holidays":
            rows.insert(0, {"field": "holiday_calendar", "value": _value(data.get("holiday_calendar")),
                            "source": "the public holidays of this calendar", "tag": ""})
        if title in ("Holidays", "Frequency caps"):
            key = "holidays" if title == "Holidays" else "frequency"
            for code, st in sorted(states.items()):
                if isinstance(st, dict) and key in st:
                    rows += _rows(st[key], f"states.{code}.{key}")
        if rows:
            groups.append((title, rows))
    other = [r for k, b in rules.items() if k not in seen for r in _rows(b, f"rules.{k}")]
    if other:
        groups.append(("Other rules", other))
    return {"windows": windows, "states": table, "groups": groups, "days": DAY_NAMES}


def field_paths(data):
    """Every parameter's dotted path (the edit form's suggestions)."""
    out = ["name", "regions", "holiday_calendar"]

    def walk(node, path):
        for k, v in node.items():
            if k in ("source", "tag", "note"):
                continue
            p = f"{path}.{k}"
            if isinstance(v, dict) and not p.endswith((".windows", ".block")):
                walk(v, p)
            else:
                out.append(p)
    walk(data.get("rules") or {}, "rules")
    walk(data.get("states") or {}, "states")
    return out

"""The compliance screens over real HTTP: a ``dialer web`` process on a real database.

acme is the installation's operator (``accounts.operator``): its compliance officer
carla and its owner olive may change rule sets; globex's compliance officer gina and
owner gus see them read-only and manage globex's own DNC lists and waivers. Bad rule
values change nothing (the version stays), good ones are previewed as a diff, need a
reason and leave an audit entry; another account's campaign ids answer 404 and change
nothing; markup in a DNC reason or a campaign name is shown as text; a missing or
forged CSRF token is refused."""

import html
import json
import re
import uuid

import pytest
from click.testing import CliRunner

import cli
from campaigns.store import add_user, create_campaign, set_operator
from campaigns.users import set_password
from core.store import Store

from web_harness import NOW, PASSWORD, Server, logged_in, query, seed

EVIL = '<script>alert("x")</script>'


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    db = tmp_path_factory.mktemp("compliance") / "dialer.db"
    ids = seed(db)
    s = Store(db)
    try:
        set_operator(s, "acme", NOW, "test")
        for acc, name in (("acme", "carla"), ("globex", "gina")):
            add_user(s, acc, name, "compliance", NOW, "test")
            set_password(s, acc, name, PASSWORD, NOW, "test")
        ids["evil"] = create_campaign(s, EVIL, "globex", NOW, "test", dial_mode="progressive")["id"]
    finally:
        s.close()
    server = Server(db)
    yield server, db, ids
    server.stop()


def version(db, jur="US"):
    return query(db, "SELECT MAX(version) AS v FROM rule_set_versions WHERE jurisdiction = ?", (jur,))[0]["v"]


def dnc_rows(db):
    return query(db, "SELECT scope, pattern, reason FROM dnc_entries ORDER BY id")


def waiver_rows(db):
    return query(db, "SELECT * FROM dnc_waivers ORDER BY id")


def audit_count(db):
    """Audit entries other than logins (each login is audited)."""
    return query(db, "SELECT COUNT(*) AS n FROM audit_log WHERE action NOT LIKE 'user.%'")[0]["n"]


def multipart(fields, file_bytes, filename="list.csv"):
    """A multipart/form-data body (the browser's file form) and its content type."""
    boundary = uuid.uuid4().hex
    out = b""
    for k, v in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    out += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f'Content-Type: text/csv\r\n\r\n').encode() + file_bytes + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def field_change(token, field, value, reason="tighter than the law", base=None):
    d = {"csrf_token": token, "mode": "field", "field": field, "value": value, "reason": reason}
    if base is not None:
        d["base_version"] = str(base)
    return d


def test_roles_and_the_operator_account(site):
    server, db, _ = site
    carla = logged_in(server, "acme", "carla")
    page = carla.get("/compliance/rules/US").text
    assert 'id="field-form"' in page and 'id="read-only-note"' not in page
    # sources beside the values: the federal calling window and Florida's state row
    assert "47 CFR 64.1200(c)(1)" in page and "Fla. Stat. 501.616(6)(a)" in page
    assert 'id="windows"' in page and 'id="states"' in page and "Abandoned calls" in page
    olive = logged_in(server, "acme", "olive")
    assert 'id="field-form"' in olive.get("/compliance/rules/US").text
    before, n = version(db), audit_count(db)
    for acc, user in (("globex", "gina"), ("globex", "gus")):
        c = logged_in(server, acc, user)
        r = c.get("/compliance/rules/US")
        assert r.status == 200 and 'id="field-form"' not in r.text and 'id="read-only-note"' in r.text
        assert "Fla. Stat. 501.616(6)(a)" in r.text  # they see the rules and their sources
        token = c.csrf("/compliance/rules")
        for path in ("/compliance/rules/US/preview", "/compliance/rules/US/save"):
            r = c.post(path, field_change(token, "rules.abandon.max_rate", "0.02"))
            assert r.status == 403 and "operator account" in r.text, (user, path)
        body, ctype = multipart({"csrf_token": token, "as_of": NOW.date().isoformat(), "jurisdiction": "US"},
                                b"2125550111\n")
        assert c.post("/compliance/registries/import", body=body, headers={"Content-Type": ctype}).status == 403
        body, ctype = multipart({"csrf_token": token, "reason": "x"}, b"number,category,name\n2125550112,x,y\n")
        assert c.post("/compliance/lifeline/import", body=body, headers={"Content-Type": ctype}).status == 403
        assert c.get("/compliance/dnc").status == 200 and c.get("/compliance/audit").status == 200
    assert version(db) == before and audit_count(db) == n
    # managers, supervisors and agents have no compliance screens
    for user in ("max", "sue", "alan"):
        c = logged_in(server, "acme", user)
        for path in ("/compliance/rules", "/compliance/rules/US", "/compliance/dnc", "/compliance/audit",
                     "/compliance/check"):
            assert c.get(path).status == 403, (user, path)
    assert 'id="compliance-link"' in carla.get("/compliance/rules").text
    assert 'id="compliance-link"' not in logged_in(server, "acme", "max").get("/campaigns").text


def test_a_bad_value_changes_nothing_a_good_one_is_previewed_then_saved_with_its_reason(site):
    server, db, _ = site
    c = logged_in(server, "acme", "carla")
    token = c.csrf("/compliance/rules")
    v0, n0 = version(db), audit_count(db)
    # above the legal 3 %: one clear message naming the field; the version is unchanged
    r = c.post("/compliance/rules/US/preview", field_change(token, "rules.abandon.max_rate", "0.05", base=v0))
    assert r.status == 400
    error = re.search(r'id="error">([^<]*)<', r.text).group(1)
    assert "rules.abandon.max_rate" in error and "at most 0.03" in error
    assert 'value="0.05"' in r.text  # the form keeps what was typed
    for bad in (field_change(token, "rules.hours.windows", '{daily: ["25:00-26:00"]}', base=v0),
                field_change(token, "rules.nothing.here", "1", base=v0),
                field_change(token, "rules.abandon.max_rate", "0.02", reason="  ", base=v0),
                {"csrf_token": token, "mode": "whole", "text": "{not json", "reason": "x", "base_version": v0}):
        r = c.post("/compliance/rules/US/preview", bad)
        assert r.status == 400 and re.search(r'id="error">[^<]+<', r.text), bad
    r = c.post("/compliance/rules/US/save", field_change(token, "rules.abandon.max_rate", "0.05", base=v0))
    assert r.status == 400 and "at most 0.03" in r.text
    r = c.post("/compliance/rules/US/preview", field_change(token, "rules.abandon.max_rate", "0.02", reason="", base=v0))
    assert r.status == 400 and "say why" in r.text
    assert version(db) == v0 and audit_count(db) == n0
    # a good value: the diff first (old -> new), nothing saved yet
    r = c.post("/compliance/rules/US/preview", field_change(token, "rules.abandon.max_rate", "0.02",
                                                            reason="our policy: 2 %", base=v0))
    assert r.status == 200 and 'id="valid"' in r.text
    diff = re.search(r'<table id="diff">(.*?)</table>', r.text, re.S).group(1)
    assert "rules.abandon.max_rate" in diff and '<td class="old">0.03</td>' in diff and '<td class="new">0.02</td>' in diff
    assert f"Save version {v0 + 1}" in r.text
    assert version(db) == v0 and audit_count(db) == n0
    # the confirm form carries the change: saving it makes the version, with its audit entry
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">',
                             r.text.split('action="/compliance/rules/US/save"')[1]))
    assert hidden["field"] == "rules.abandon.max_rate" and hidden["base_version"] == str(v0)
    r = c.post("/compliance/rules/US/save", hidden)
    assert r.status == 303 and r.header("location") == f"/compliance/rules/US?saved={v0 + 1}"
    assert version(db) == v0 + 1
    entry = query(db, "SELECT * FROM audit_log WHERE action = 'rules.version' ORDER BY id DESC LIMIT 1")[0]
    assert entry["actor"] == "web:acme/carla" and entry["reason"] == "our policy: 2 %"
    assert json.loads(entry["detail"])["changes"] == [{"field": "rules.abandon.max_rate", "old": 0.03, "new": 0.02}]
    page = c.get(r.header("location")).text
    assert 'id="notice"' in page and f"version {v0 + 1}" in page and "our policy: 2 %" in page
    # the same confirm form again: the rule set moved on since its preview; refused, nothing saved
    r = c.post("/compliance/rules/US/save", hidden)
    assert r.status == 400 and "changed since" in r.text and version(db) == v0 + 1
    # the audit trail shows the entry with its diff, to every account (installation-wide)
    for who in (c, logged_in(server, "globex", "gina")):
        trail = who.get("/compliance/audit").text
        row = re.search(rf'<tr id="entry-{entry["id"]}">(.*?)</tr>', trail, re.S).group(1)
        assert "rules.version" in row and "our policy: 2 %" in row and "0.03 → 0.02" in row
    # the whole rule set as JSON: previewed with its diff, then saved
    page = c.get("/compliance/rules/US").text  # the whole-rule-set form holds the version in force
    data = json.loads(html.unescape(re.search(r'<textarea name="text" id="rule-text"[^>]*>(.*?)</textarea>', page,
                                              re.S).group(1)))
    assert data["rules"]["abandon"]["max_rate"] == 0.02
    data["rules"]["ring"]["min_seconds"] = 20
    form = {"csrf_token": token, "mode": "whole", "text": json.dumps(data), "reason": "ring longer",
            "base_version": str(v0 + 1)}
    r = c.post("/compliance/rules/US/preview", form)
    assert r.status == 200 and "rules.ring.min_seconds" in r.text and '<td class="new">20</td>' in r.text
    assert c.post("/compliance/rules/US/save", form).status == 303 and version(db) == v0 + 2


def test_dnc_lists_and_waivers_stay_within_the_account(site):
    server, db, ids = site
    gina = logged_in(server, "globex", "gina")
    token = gina.csrf("/compliance/dnc")
    r = gina.post("/compliance/dnc/add", {"csrf_token": token, "numbers": "212-555-0177\n+1305*", "reason": EVIL})
    assert r.status == 200 and "Added 2" in r.text
    assert "&lt;script&gt;" in r.text and "<script>alert" not in r.text
    globex_scope = next(row["scope"] for row in dnc_rows(db) if row["pattern"] == "12125550177")
    assert globex_scope.startswith("account:")
    # a reason is required to add and to remove
    r = gina.post("/compliance/dnc/add", {"csrf_token": token, "numbers": "212-555-0178", "reason": ""})
    assert r.status == 400 and "say why" in r.text
    r = gina.post("/compliance/dnc/remove", {"csrf_token": token, "numbers": "212-555-0177", "reason": ""})
    assert r.status == 400 and "say why" in r.text
    # the campaign's own list and a file import into it
    body, ctype = multipart({"csrf_token": token, "campaign": str(ids["rival"])},
                            b"212,5550180\n2125550181\nnot a number\n")
    r = gina.post("/compliance/dnc/import", body=body, headers={"Content-Type": ctype})
    assert r.status == 200 and "Imported 2 entries" in r.text and "1 junk lines" in r.text
    page = gina.get(f"/compliance/dnc?campaign={ids['rival']}").text
    assert "+12125550180" in page and "+12125550177" not in page  # the campaign's list, not the company list
    # waivers: granted with a reason, listed, revoked
    r = gina.post("/compliance/waivers", {"csrf_token": token, "waiver_campaign": str(ids["rival"]),
                                          "jurisdiction": "US", "reason": "existing customers only"})
    assert r.status == 200 and "Waived the US registry requirement for campaign rival" in r.text
    assert "existing customers only" in gina.get("/compliance/dnc").text
    # acme's compliance officer: globex's lists, campaigns and waivers answer 404 and change nothing
    carla = logged_in(server, "acme", "carla")
    ctoken = carla.csrf("/compliance/dnc")
    assert "+12125550177" not in carla.get("/compliance/dnc").text
    before_dnc, before_waivers, n = dnc_rows(db), waiver_rows(db), audit_count(db)
    bodies = set()
    for cid in (ids["rival"], ids["evil"], 999999):
        r = carla.get(f"/compliance/dnc?campaign={cid}")
        assert r.status == 404
        bodies.add(r.body)
        for path, data in (("/compliance/dnc/add", {"numbers": "2125550190", "reason": "x", "campaign": cid}),
                           ("/compliance/dnc/remove", {"numbers": "2125550180", "reason": "x", "campaign": cid}),
                           ("/compliance/waivers", {"waiver_campaign": cid, "jurisdiction": "US", "reason": "x"}),
                           ("/compliance/waivers", {"waiver_campaign": cid, "jurisdiction": "US", "reason": "x",
                                                    "revoke": "yes"})):
            r = carla.post(path, {"csrf_token": ctoken, **data})
            assert r.status == 404, (path, cid)
        body, ctype = multipart({"csrf_token": ctoken, "campaign": str(cid)}, b"2125550191\n")
        assert carla.post("/compliance/dnc/import", body=body, headers={"Content-Type": ctype}).status == 404
        assert carla.get(f"/compliance/check?numbers=2125550100&campaign={cid}").status == 404
    assert len(bodies) == 1  # the same answer whether the campaign is another account's or no one's
    assert dnc_rows(db) == before_dnc and waiver_rows(db) == before_waivers and audit_count(db) == n
    # gina revokes her waiver
    r = gina.post("/compliance/waivers", {"csrf_token": token, "waiver_campaign": str(ids["rival"]),
                                          "jurisdiction": "US", "reason": "campaign widened", "revoke": "yes"})
    assert r.status == 200 and "Revoked the waiver" in r.text
    assert waiver_rows(db)[-1]["revoked_by"] == "web:globex/gina"
    r = gina.post("/compliance/dnc/remove", {"csrf_token": token, "numbers": "212-555-0177", "reason": "asked back"})
    assert r.status == 200 and "Removed 1" in r.text


def test_markup_is_text_on_every_compliance_screen(site):
    server, db, ids = site
    gina = logged_in(server, "globex", "gina")
    token = gina.csrf("/compliance/dnc")
    gina.post("/compliance/dnc/add", {"csrf_token": token, "numbers": "212-555-0199", "reason": EVIL,
                                      "campaign": str(ids["evil"])})
    gina.post("/compliance/waivers", {"csrf_token": token, "waiver_campaign": str(ids["evil"]), "jurisdiction": "US",
                                      "reason": EVIL})
    pages = ["/compliance/rules", "/compliance/rules/US", "/compliance/dnc", f"/compliance/dnc?campaign={ids['evil']}",
             "/compliance/audit", "/compliance/audit?verify=1", f"/compliance/check?numbers=2125550199&campaign={ids['evil']}",
             "/compliance/check?numbers=%3Cscript%3E"]
    for p in pages:
        r = gina.get(p)
        assert r.status in (200, 400), p
        assert "<script>" not in r.text.replace('<script src="/static/', ""), p
    assert "&lt;script&gt;" in gina.get(f"/compliance/dnc?campaign={ids['evil']}").text
    assert "&lt;script&gt;" in gina.get("/compliance/audit").text


def test_the_audit_trail_is_the_accounts_own_and_the_chain_is_verified(site):
    server, db, _ = site
    carla = logged_in(server, "acme", "carla")
    token = carla.csrf("/compliance/dnc")
    assert carla.post("/compliance/dnc/add", {"csrf_token": token, "numbers": "212-555-0166",
                                              "reason": "acme-only opt-out"}).status == 200
    acme_entry = query(db, "SELECT id FROM audit_log WHERE reason = 'acme-only opt-out'")[0]["id"]
    gina = logged_in(server, "globex", "gina")
    page = gina.get("/compliance/audit").text
    assert f'id="entry-{acme_entry}"' not in page and "acme-only opt-out" not in page
    ids_shown = [int(i) for i in re.findall(r'<tr id="entry-(\d+)">', page)]
    rows = query(db, f"SELECT id, account_id, action FROM audit_log WHERE id IN ({','.join(map(str, ids_shown))})")
    globex = query(db, "SELECT id FROM accounts WHERE name = 'globex'")[0]["id"]
    assert rows and all(r["account_id"] == globex or (r["account_id"] is None and r["action"] in
                                                       ("rules.version", "dnc.registry", "lifeline.import"))
                        for r in rows)
    page = carla.get("/compliance/audit").text
    assert f'id="entry-{acme_entry}"' in page
    page = gina.get("/compliance/audit?verify=1").text
    assert "The chain is intact." in page
    head = re.search(r'id="chain-head">([0-9a-f]{64})<', page).group(1)
    assert head == query(db, "SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1")[0]["hash"]
    assert gina.get("/compliance/audit?before=junk").status == 400


def test_may_this_number_be_called_now(site):
    server, db, ids = site
    c = logged_in(server, "acme", "carla")
    # 2026-11-24 03:00 UTC is 22:00 in New York: outside the calling window, with the rule set used
    r = c.get(f"/compliance/check?numbers=212-555-0100%0A911&at=2026-11-24T03:00Z&campaign={ids['spring']}")
    assert r.status == 200
    first = re.search(r'id="verdict-1">(.*?)</section>', r.text, re.S).group(1)
    assert "may NOT be called" in first and "US-HOURS" in first and re.search(r'id="ruleset-1">US@\d+<', first)
    second = re.search(r'id="verdict-2">(.*?)</section>', r.text, re.S).group(1)
    assert "may NOT be called" in second and "EMERG" in second
    r = c.get("/compliance/check?numbers=212-555-0100&at=2026-11-24T17:00Z")
    assert 'id="answer-1">may be called<' in r.text
    r = c.get("/compliance/check?numbers=212-555-0100&at=not-a-time")
    assert r.status == 400 and "not an ISO 8601 time" in r.text
    r = c.get("/compliance/check?numbers=" + "%0A".join(["2125550100"] * 21))
    assert r.status == 400 and "at most 20" in r.text


def test_forged_or_missing_csrf_tokens_change_nothing(site):
    server, db, ids = site
    c = logged_in(server, "acme", "carla")
    token = c.csrf("/compliance/dnc")
    before = (version(db), dnc_rows(db), waiver_rows(db), audit_count(db))
    forged = "forged" + token[6:]
    for path, data in (("/compliance/rules/US/preview", field_change(None, "rules.ring.min_seconds", "30")),
                       ("/compliance/rules/US/save", field_change(None, "rules.ring.min_seconds", "30")),
                       ("/compliance/dnc/add", {"numbers": "2125550123", "reason": "x"}),
                       ("/compliance/dnc/remove", {"numbers": "2125550166", "reason": "x"}),
                       ("/compliance/waivers", {"waiver_campaign": ids["spring"], "jurisdiction": "US", "reason": "x"})):
        data = {k: v for k, v in data.items() if k != "csrf_token"}
        for extra, headers in (({}, {}), ({"csrf_token": forged}, {}),
                               ({"csrf_token": token}, {"Origin": "http://evil.example"})):
            r = c.post(path, {**data, **extra}, headers=headers)
            assert r.status == 403, (path, extra, headers)
    body, ctype = multipart({"csrf_token": forged}, b"2125550124\n")
    assert c.post("/compliance/dnc/import", body=body, headers={"Content-Type": ctype}).status == 403
    assert (version(db), dnc_rows(db), waiver_rows(db), audit_count(db)) == before


def test_the_operator_imports_a_registry_and_sees_its_freshness(site):
    server, db, _ = site
    c = logged_in(server, "acme", "carla")
    page = c.get("/compliance/dnc").text
    row = re.search(r'<tr id="registry-US">(.*?)</tr>', page, re.S).group(1)
    assert "fresh" in row and "31" in row  # imported today by the seed; the US limit is 31 days
    token = c.csrf("/compliance/dnc")
    body, ctype = multipart({"csrf_token": token, "as_of": "2026-01-02", "jurisdiction": "GB"}, b"+442079460000\n")
    r = c.post("/compliance/registries/import", body=body, headers={"Content-Type": ctype})
    assert r.status == 200 and "The GB registry as of 2026-01-02" in r.text
    row = re.search(r'<tr id="registry-GB">(.*?)</tr>', r.text, re.S).group(1)
    assert "stale" in row and "28" in row
    body, ctype = multipart({"csrf_token": token, "as_of": "2999-01-01", "jurisdiction": "GB"}, b"+442079460000\n")
    r = c.post("/compliance/registries/import", body=body, headers={"Content-Type": ctype})
    assert r.status == 400 and "in the future" in r.text
    # life-line numbers: with a reason, bad lines reported
    csv = b"number,category,name\n+1 212 555 0123,hospital,General Hospital\nnot a number,hospital,Bad\n"
    body, ctype = multipart({"csrf_token": token, "reason": ""}, csv)
    r = c.post("/compliance/lifeline/import", body=body, headers={"Content-Type": ctype})
    assert r.status == 400 and "say why" in r.text
    body, ctype = multipart({"csrf_token": token, "reason": "the county's hospitals"}, csv)
    r = c.post("/compliance/lifeline/import", body=body, headers={"Content-Type": ctype})
    assert r.status == 200 and "1 added or updated, 1 rejected" in r.text
    r = c.get("/compliance/check?numbers=212-555-0123&at=2026-11-24T17:00Z")
    assert "may NOT be called" in r.text and "General Hospital" in r.text


def test_cli_operator_and_dry_run(tmp_path):
    db = tmp_path / "d.db"
    seed(db)

    def run(*args):
        return CliRunner().invoke(cli.main, ["--db", str(db), *args])

    r = run("account", "operator", "globex")
    assert r.exit_code == 0 and "globex is now the installation's operator" in r.output
    assert run("account", "operator", "globex").exit_code == 1
    assert run("account", "operator", "globex", "--off", "--reason", "handed over").exit_code == 0
    r = run("account", "create", "opco", "--operator", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["operator"] == 1
    r = run("rules", "set", "US", "rules.ring.min_seconds", "20", "--reason", "x", "--dry-run")
    assert r.exit_code == 0 and "would become version 2" in r.output and "rules.ring.min_seconds: 15 -> 20" in r.output
    r = run("rules", "set", "US", "rules.ring.min_seconds", "5", "--reason", "x", "--dry-run")
    assert r.exit_code == 1 and "rules.ring.min_seconds" in r.output
    assert version(db) == 1
    actions = [row["action"] for row in query(db, "SELECT action FROM audit_log WHERE action = 'account.operator'")]
    assert actions == ["account.operator", "account.operator"]

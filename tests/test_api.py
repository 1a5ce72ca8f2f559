"""The JSON API over real HTTP (a ``dialer web`` process on a real database): each
endpoint's happy path, API tokens (stored hashed, roles, revoked, never the session
cookie), the account boundary (another account's ids answer 404 and change nothing,
checked in the store), markup returned verbatim as JSON, bad input answered 400 with
its code and field, unknown paths and methods, paging, the owner's tokens page and the
``dialer account token`` commands."""

import datetime as dt
import json
import re

import pytest
import pytz
from click.testing import CliRunner

import cli
from campaigns.leads import import_list
from campaigns.tokens import authenticate, create_token
from core.store import Store
from dialer.cdr import Cdr, write_cdr
from web.api import RateLimit, decode_cursor, encode_cursor, ApiError

from web_harness import NOW, Client, Server, seed, until

EVIL = '<script>alert("x")</script>'
ROLES = ("owner", "manager", "compliance", "supervisor", "agent")


def _cdr(call_id, account_id, campaign_id, minute, destination="+12125550150"):
    start = int(dt.datetime(2026, 11, 24, 15, minute, tzinfo=dt.timezone.utc).timestamp() * 1000)
    return Cdr(call_id=call_id, account_id=account_id, destination=destination, started_ms=start,
               ended_ms=start + 30_000, disposition="no-answer", sip_code=487, sip_reason="Request Terminated",
               hangup_cause="timeout", hangup_by="dialer", lead_outcome="no-answer", campaign_id=campaign_id,
               duration_ms=30_000, ring_ms=30_000)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    d = tmp_path_factory.mktemp("api")
    db = d / "dialer.db"
    ids = seed(db)
    s = Store(db)
    try:
        tokens = {role: create_token(s, "acme", f"t-{role}", role, NOW, "test")["token"] for role in ROLES}
        tokens["globex"] = create_token(s, "globex", "gx", "owner", NOW, "test")["token"]
        f = d / "spring.csv"
        f.write_text(f"phone,name,note\n2125550101,Ann,{EVIL}\n2125550102,{EVIL},b\n2125550103,Cy,c\n"
                     "2125550104,Di,d\nnot a phone,Ed,e\n555-CALL,Fi,f\n", encoding="utf-8")
        ids["spring_import"] = import_list(s, str(f), ids["spring"], NOW, "test", account="acme")["import_id"]
        g = d / "rival.csv"
        g.write_text("phone,name\n2125550201,Gil\nbad,Hal\n", encoding="utf-8")
        ids["rival_import"] = import_list(s, str(g), ids["rival"], NOW, "test", account="globex")["import_id"]
        ids["acme_leads"] = [r["id"] for r in s.query("SELECT id FROM leads WHERE account_id = "
                                                      "(SELECT id FROM accounts WHERE name = 'acme') ORDER BY id")]
        ids["rival_lead"] = s.query_one("SELECT id FROM leads WHERE campaign_id = ?", (ids["rival"],))["id"]
        acme = s.query_one("SELECT id FROM accounts WHERE name = 'acme'")["id"]
        globex = s.query_one("SELECT id FROM accounts WHERE name = 'globex'")["id"]
        ids["acme"], ids["globex"] = acme, globex
        for i in range(5):
            write_cdr(s, _cdr(f"acme-{i}", acme, ids["spring"], 10 + i), NOW)
        write_cdr(s, _cdr("globex-0", globex, ids["rival"], 12), NOW)
    finally:
        s.close()
    server = Server(db)
    yield server, db, ids, tokens
    server.stop()


class Api:
    """A program with an API token (no cookies)."""

    def __init__(self, server, token):
        self.client, self.token = Client(server), token

    def call(self, method, path, body=None, headers=None, raw=None):
        h = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        r = self.client.request(method, "/api/v1" + path, body=data, headers=h)
        assert r.status == 204 or r.header("content-type").startswith(("application/json", "text/csv")), r.headers
        assert not self.client.cookies  # the API sets no cookie
        return r

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body, **kw)


def api(site, role="manager"):
    server, _, _, tokens = site
    return Api(server, tokens[role])


def one(db, sql, params=()):
    s = Store(db)
    try:
        return s.query_one(sql, params)
    finally:
        s.close()


def rows(db, sql, params=()):
    s = Store(db)
    try:
        return s.query(sql, params)
    finally:
        s.close()


def err(r, status, code):
    assert r.status == status, (r.status, r.text)
    assert r.header("content-type") == "application/json"
    body = r.json()["error"]
    assert body["code"] == code and body["message"], body
    return body


# ------------------------------------------------------------------------------ tokens and auth

def test_tokens_are_stored_hashed_and_shown_once(site):
    server, db, _, tokens = site
    t = tokens["manager"]
    assert t.startswith("dk_") and len(t) == 3 + 16 + 1 + 43
    public_id, secret = t[3:19], t[20:]
    row = one(db, "SELECT * FROM api_tokens WHERE public_id = ?", (public_id,))
    assert row["role"] == "manager" and secret not in json.dumps(row) and t not in json.dumps(row)
    assert len(row["secret_hash"]) == 64
    s = Store(db)
    try:
        assert authenticate(s, t)["name"] == "t-manager"
        assert authenticate(s, t[:-1] + ("A" if t[-1] != "A" else "B")) is None  # one character off
        assert authenticate(s, "dk_" + public_id) is None and authenticate(s, "") is None
    finally:
        s.close()


def test_api_refuses_missing_bad_revoked_tokens_and_the_session_cookie(site):
    server, db, ids, tokens = site
    anon = Client(server)
    body = err(anon.get("/api/v1/me"), 401, "unauthorized")
    assert body["field"] == "authorization"
    assert anon.get("/api/v1/me").header("www-authenticate") == 'Bearer realm="dialer"'
    for header in ("Basic b2xpdmU6eA==", "Bearer", "Bearer dk_nope", "Bearer " + tokens["manager"][:-2]):
        err(anon.get("/api/v1/campaigns", headers={"Authorization": header}), 401, "unauthorized")
    # a logged-in browser: its session cookie opens no API call (CSRF-safe by construction)
    browser = Client(server)
    assert browser.login("acme", "olive").status == 303 and browser.cookies.get("dialer_session")
    body = err(browser.get("/api/v1/campaigns"), 401, "unauthorized")
    assert "cookie" in body["message"]
    before = one(db, "SELECT COUNT(*) AS n FROM campaigns")["n"]
    r = browser.post("/api/v1/campaigns", body=json.dumps({"name": "via-cookie"}),
                     headers={"Content-Type": "application/json", "X-CSRF-Token": browser.csrf()})
    err(r, 401, "unauthorized")
    assert one(db, "SELECT COUNT(*) AS n FROM campaigns")["n"] == before
    # a revoked token: 401 from then on
    s = Store(db)
    try:
        spare = create_token(s, "acme", "spare", "owner", NOW, "test")
    finally:
        s.close()
    a = Api(server, spare["token"])
    assert a.get("/me").status == 200
    r = CliRunner().invoke(cli.main, ["--db", str(db), "account", "token", "revoke", "spare", "--account", "acme",
                                      "--reason", "left the CRM", "--json"])
    assert r.exit_code == 0, r.output
    err(a.get("/me"), 401, "unauthorized")
    err(a.post("/campaigns", {"name": "after-revoke"}), 401, "unauthorized")
    assert one(db, "SELECT COUNT(*) AS n FROM campaigns WHERE name = 'after-revoke'")["n"] == 0


def test_me_and_last_used_written_at_most_once_a_minute(site):
    server, db, _, tokens = site
    a = api(site, "supervisor")
    me = a.get("/me").json()
    assert me["account"] == "acme" and me["token"]["role"] == "supervisor"
    assert "campaigns.view" in me["permissions"] and "campaigns.edit" not in me["permissions"]
    first = one(db, "SELECT last_used_at FROM api_tokens WHERE name = 't-supervisor'")["last_used_at"]
    assert first is not None
    a.get("/campaigns")
    assert one(db, "SELECT last_used_at FROM api_tokens WHERE name = 't-supervisor'")["last_used_at"] == first


@pytest.mark.parametrize("role", ["supervisor", "agent", "compliance"])
def test_a_token_of_one_role_cannot_do_anothers_work(site, role):
    server, db, ids, _ = site
    a = api(site, role)
    before = (one(db, "SELECT COUNT(*) AS n FROM campaigns")["n"], one(db, "SELECT COUNT(*) AS n FROM dnc_entries")["n"])
    err(a.post("/campaigns", {"name": f"by-{role}"}), 403, "forbidden")
    err(a.post(f"/campaigns/{ids['spring']}/start"), 403, "forbidden")
    err(a.call("PATCH", f"/campaigns/{ids['spring']}", {"caller_id": "+12125550000"}), 403, "forbidden")
    err(a.post(f"/campaigns/{ids['spring']}/lists", raw=b"phone\n2125550111\n"), 403, "forbidden")
    if role != "compliance":
        err(a.post("/dnc", {"numbers": ["2125550177"]}), 403, "forbidden")
        err(a.post("/dnc/remove", {"numbers": ["2125550177"], "reason": "x"}), 403, "forbidden")
        err(a.post(f"/campaigns/{ids['spring']}/dnc", {"numbers": ["2125550177"]}), 403, "forbidden")
        err(a.get("/dnc"), 403, "forbidden")
    if role == "agent":
        err(a.get("/campaigns"), 403, "forbidden")
        err(a.get("/leads"), 403, "forbidden")
        err(a.get("/cdrs"), 403, "forbidden")
    if role == "compliance":
        err(a.post(f"/leads/{ids['acme_leads'][0]}/outcome", {"outcome": "busy"}), 403, "forbidden")
    after = (one(db, "SELECT COUNT(*) AS n FROM campaigns")["n"], one(db, "SELECT COUNT(*) AS n FROM dnc_entries")["n"])
    assert after == before


# ------------------------------------------------------------------------------ happy paths

def test_campaigns_create_edit_start_pause_finish(site):
    server, db, ids, _ = site
    a = api(site, "manager")
    r = a.post("/campaigns", {"name": EVIL, "dial_mode": "progressive", "hours": "mon-sun=09:00-20:00",
                              "abandon_target": 0.02, "retry": "busy=20m/5"})
    assert r.status == 201 and r.header("content-type") == "application/json"
    assert b"<script>alert(" in r.body  # verbatim in JSON (only JSON's own escapes); the type is JSON, never HTML
    camp = r.json()
    assert r.header("location") == f"/api/v1/campaigns/{camp['id']}"
    assert (camp["name"], camp["state"], camp["abandon_target"]) == (EVIL, "draft", "0.02")
    assert camp["hours"] == {"mon-sun": ["09:00-20:00"]} and camp["retry_rules"]["busy"]["delay_minutes"] == 20
    cid = camp["id"]
    assert any(c["id"] == cid and c["name"] == EVIL for c in a.get("/campaigns").json()["items"])
    assert a.get(f"/campaigns/{cid}").json()["leads"] == {}
    body = err(a.post(f"/campaigns/{cid}/start"), 409, "conflict")
    assert "no caller ID" in body["message"]
    r = a.call("PATCH", f"/campaigns/{cid}", {"caller_id": "+1 212 555 0000"})
    assert r.status == 200 and r.json()["caller_id"] == "+12125550000"
    r = a.post(f"/campaigns/{cid}/start", {"reason": "go"})
    assert r.status == 200 and r.json() == {"campaign": EVIL, "state": "running", "was": "draft"}
    body = err(a.call("PATCH", f"/campaigns/{cid}", {"hours": ""}), 409, "conflict")
    assert "pause it first" in body["message"]
    assert a.post(f"/campaigns/{cid}/pause").json()["state"] == "paused"
    assert a.call("PATCH", f"/campaigns/{cid}", {"hours": None}).json()["hours"] is None
    assert a.post(f"/campaigns/{cid}/finish").json()["state"] == "finished"
    err(a.post(f"/campaigns/{cid}/start"), 409, "conflict")
    audit = rows(db, "SELECT action, actor FROM audit_log WHERE subject = ? ORDER BY id", (f"campaign:{EVIL}",))
    assert [x["action"] for x in audit] == ["campaign.create", "campaign.edit", "campaign.start", "campaign.pause",
                                            "campaign.edit", "campaign.finish"]
    assert all(x["actor"].startswith("api:acme/t-manager#") for x in audit)


def test_list_upload_import_status_and_error_rows(site):
    server, db, ids, _ = site
    a = api(site, "manager")
    csv = b"phone,name\n2125550301,Jo\n2125550302,Kim\nnot a number,Lu\n555-CALL,Mo\n2125550301,Dup\n"
    r = a.post(f"/campaigns/{ids['spring']}/lists?name=crm%20export.csv&dedupe=list", raw=csv,
               headers={"Content-Type": "text/csv"})
    assert r.status == 202, r.text
    job = r.json()
    assert job["file"] == "crm export.csv" and job["status_url"].startswith("/api/v1/campaigns/")
    job = until(lambda: (lambda j: j if j["state"] in ("done", "failed") else None)(
        a.client.request("GET", job["status_url"], headers={"Authorization": f"Bearer {a.token}"}).json()),
        what="the import")
    assert job["state"] == "done" and job["import_url"] == f"/api/v1/imports/{job['import_id']}"
    iid = job["import_id"]
    imp = a.get(f"/imports/{iid}").json()
    assert (imp["status"], imp["imported"], imp["rejected"], imp["duplicates"]) == ("done", 2, 2, 1)
    assert any(x["import_id"] == iid for x in a.get(f"/campaigns/{ids['spring']}/imports").json()["items"])
    page1 = a.get(f"/imports/{iid}/errors?limit=2").json()
    assert len(page1["items"]) == 2 and page1["next_cursor"]
    page2 = a.get(f"/imports/{iid}/errors?limit=2&cursor={page1['next_cursor']}").json()
    assert page2["next_cursor"] is None
    got = page1["items"] + page2["items"]
    assert [e["row"] for e in got] == [4, 5, 6] and all(e["reason"] for e in got)
    r = a.get(f"/imports/{iid}/errors.csv")
    assert r.status == 200 and r.header("content-type").startswith("text/csv")
    assert r.text.splitlines()[0] == "row,column,value,reason" and len(r.text.splitlines()) == 4
    err(a.post(f"/campaigns/{ids['spring']}/lists", raw=b""), 400, "invalid_input")
    err(a.post(f"/campaigns/{ids['spring']}/lists?dedupe=never", raw=csv), 400, "invalid_input")
    err(a.get(f"/campaigns/{ids['spring']}/lists/nosuchjob"), 404, "not_found")


def test_leads_paged_outcome_callback_and_callbacks(site):
    server, db, ids, _ = site
    a = api(site, "manager")
    seen, cursor = [], None
    while True:
        r = a.get(f"/leads?campaign_id={ids['spring']}&limit=2" + (f"&cursor={cursor}" if cursor else ""))
        page = r.json()
        assert len(page["items"]) <= 2
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [x["id"] for x in seen] == sorted(x["id"] for x in seen)
    assert {x["campaign_id"] for x in seen} == {ids["spring"]} and len(seen) >= 4
    evil_lead = next(x for x in seen if x["name"] == EVIL)
    assert a.get(f"/leads/{evil_lead['id']}").json()["name"] == EVIL
    ann = next(x for x in seen if x["name"] == "Ann")
    assert ann["custom"] == {"note": EVIL}
    # an agent records a disposition, a supervisor schedules a callback
    r = api(site, "agent").post(f"/leads/{ann['id']}/outcome", {"outcome": "busy"})
    assert r.status == 200 and r.json()["status"] == "retry" and r.json()["call_attempt"] is False
    day = dt.date.today() + dt.timedelta(days=7)  # the server's clock is the system's
    r = api(site, "supervisor").post(f"/leads/{ann['id']}/callback", {"when": f"{day} 10:00"})
    assert r.status == 200, r.text
    at = pytz.timezone("America/New_York").localize(dt.datetime.combine(day, dt.time(10))).astimezone(pytz.utc)
    assert r.json()["status"] == "callback" and r.json()["callback_at"] == at.strftime("%Y-%m-%dT%H:%M:%SZ")
    lead = a.get(f"/leads/{ann['id']}").json()
    assert lead["status"] == "callback" and [e["event"] for e in lead["events"]][-2:] == ["outcome", "callback"]
    cbs = a.get(f"/callbacks?from={day}T00:00:00Z&to={day + dt.timedelta(days=1)}T00:00:00Z").json()["items"]
    assert [c["lead"] for c in cbs] == [ann["id"]]
    assert a.get(f"/callbacks?from={day + dt.timedelta(days=1)}T00:00:00Z").json()["items"] == []
    assert all(x["status"] == "callback" for x in a.get("/leads?status=callback").json()["items"])
    err(a.post(f"/leads/{ann['id']}/callback", {"when": f"{day} 25:00"}), 400, "invalid_input")
    err(a.post(f"/leads/{ann['id']}/callback", {"when": "2020-01-01 10:00"}), 400, "invalid_input")  # past
    err(a.post(f"/leads/{ann['id']}/outcome", {"outcome": "teleported"}), 400, "invalid_input")


def test_dnc_add_check_list_remove_company_and_campaign(site):
    server, db, ids, _ = site
    a = api(site, "compliance")
    r = a.post("/dnc", {"numbers": ["212-555-0401", "+1 212 555 0402"], "reason": "asked by phone"})
    assert r.status == 200 and r.json()["added"] == 2
    checks = a.post("/dnc/check", {"numbers": ["2125550401", "2125550499"]}).json()["items"]
    assert [c["listed"] for c in checks] == [True, False]
    listed = a.get("/dnc?limit=1").json()
    assert listed["total"] >= 2 and len(listed["items"]) == 1 and listed["next_cursor"]
    nxt = a.get(f"/dnc?limit=1&cursor={listed['next_cursor']}").json()
    assert nxt["items"][0]["entry"] != listed["items"][0]["entry"]
    body = err(a.post("/dnc/remove", {"numbers": ["2125550401"]}), 400, "invalid_input")
    assert body["field"] == "reason"
    r = a.post("/dnc/remove", {"numbers": ["2125550401"], "reason": "added by mistake"})
    assert r.json()["removed"] == 1
    r = a.post(f"/campaigns/{ids['spring']}/dnc", {"numbers": ["2125550403"]})
    assert r.json()["scope"] == f"campaign:{ids['spring']}"
    assert [e["entry"] for e in a.get(f"/campaigns/{ids['spring']}/dnc").json()["items"]] == ["+12125550403"]
    check = a.post("/dnc/check", {"numbers": ["2125550403"], "campaign_id": ids["spring"]}).json()["items"][0]
    assert check["listed"] is True
    assert a.post(f"/campaigns/{ids['spring']}/dnc/remove",
                  {"numbers": ["2125550403"], "reason": "test"}).json()["removed"] == 1
    # all or nothing: one bad number refuses the request, nothing added
    before = one(db, "SELECT COUNT(*) AS n FROM dnc_entries")["n"]
    err(a.post("/dnc", {"numbers": ["2125550405", "not a number"]}), 400, "invalid_input")
    assert one(db, "SELECT COUNT(*) AS n FROM dnc_entries")["n"] == before


def test_rule_checks_give_every_reason_and_the_ruleset_version(site):
    a = api(site, "agent")
    r = a.post("/checks", {"numbers": ["212 555 0199", "2125550150"], "at": "2026-11-24T12:00:00Z"})
    assert r.status == 200, r.text
    v1, v2 = r.json()["items"]
    assert v1["allowed"] is False and v1["ruleset"].startswith("US@")
    assert {x["category"] for x in v1["reasons"]} >= {"dnc", "hours"}  # registry, and 07:00 in New York
    assert v2["number"] == "+12125550150" and any(x["category"] == "hours" for x in v2["reasons"])
    assert v1["window"][0]["zone"] == "America/New_York"
    body = err(a.post("/checks", {"numbers": ["2125550150"], "at": "yesterday"}), 400, "invalid_input")
    assert body["field"] == "at"
    err(a.post("/checks", {"numbers": []}), 400, "invalid_input")


def test_cdrs_by_time_range_with_cursor_paging(site):
    server, db, ids, _ = site
    a = api(site, "supervisor")
    got, cursor = [], None
    while True:
        page = a.get("/cdrs?limit=2" + (f"&cursor={cursor}" if cursor else "")).json()
        got += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert [c["call_id"] for c in got] == [f"acme-{i}" for i in range(5)]  # globex's record never appears
    assert got[0]["started_at"] == "2026-11-24T15:10:00.000Z" and got[0]["abandoned"] is False
    r = a.get("/cdrs?from=2026-11-24T15:11:00Z&to=2026-11-24T15:13:00Z").json()
    assert [c["call_id"] for c in r["items"]] == ["acme-1", "acme-2"]
    assert [c["call_id"] for c in a.get(f"/cdrs?campaign_id={ids['spring']}&limit=1000").json()["items"]][:1] == \
        ["acme-0"]
    body = err(a.get("/cdrs?cursor=garbage"), 400, "invalid_input")
    assert body["field"] == "cursor"
    err(a.get("/cdrs?from=noon"), 400, "invalid_input")


# ------------------------------------------------------------------------------ the account boundary

def test_another_accounts_ids_answer_404_and_change_nothing(site):
    server, db, ids, _ = site
    a = api(site, "owner")
    rival, rlead, rimport = ids["rival"], ids["rival_lead"], ids["rival_import"]

    def state():
        return (one(db, "SELECT * FROM campaigns WHERE id = ?", (rival,)),
                one(db, "SELECT * FROM leads WHERE id = ?", (rlead,)),
                one(db, "SELECT COUNT(*) AS n FROM dnc_entries WHERE scope = ?", (f"campaign:{rival}",))["n"],
                one(db, "SELECT COUNT(*) AS n FROM audit_log WHERE account_id = ?", (ids["globex"],))["n"],
                one(db, "SELECT COUNT(*) AS n FROM imports WHERE campaign_id = ?", (rival,))["n"])
    before = state()
    bodies = {}
    for cid in (rival, 987654):
        calls = [("GET", f"/campaigns/{cid}", None), ("PATCH", f"/campaigns/{cid}", {"caller_id": ""}),
                 ("POST", f"/campaigns/{cid}/start", None), ("POST", f"/campaigns/{cid}/pause", None),
                 ("POST", f"/campaigns/{cid}/finish", None), ("GET", f"/campaigns/{cid}/imports", None),
                 ("GET", f"/campaigns/{cid}/dnc", None),
                 ("POST", f"/campaigns/{cid}/dnc", {"numbers": ["2125550999"]}),
                 ("POST", f"/campaigns/{cid}/dnc/remove", {"numbers": ["2125550999"], "reason": "x"}),
                 ("GET", f"/leads?campaign_id={cid}", None), ("GET", f"/callbacks?campaign_id={cid}", None),
                 ("GET", f"/cdrs?campaign_id={cid}", None),
                 ("POST", "/checks", {"numbers": ["2125550150"], "campaign_id": cid}),
                 ("POST", "/dnc/check", {"numbers": ["2125550150"], "campaign_id": cid})]
        for method, path, body in calls:
            r = a.call(method, path, body)
            err(r, 404, "not_found")
            bodies.setdefault((method, path.replace(str(cid), "ID")), set()).add(
                r.json()["error"]["message"].replace(str(cid), "ID"))
        err(a.post(f"/campaigns/{cid}/lists", raw=b"phone\n2125550998\n"), 404, "not_found")
    for lid in (rlead, 987654):
        for method, path, body in (("GET", f"/leads/{lid}", None), ("POST", f"/leads/{lid}/outcome", {"outcome": "busy"}),
                                   ("POST", f"/leads/{lid}/callback", {"when": "2026-12-01 10:00"})):
            err(a.call(method, path, body), 404, "not_found")
    for iid in (rimport, 987654):
        for path in (f"/imports/{iid}", f"/imports/{iid}/errors", f"/imports/{iid}/errors.csv"):
            err(a.get(path), 404, "not_found")
    assert all(len(v) == 1 for v in bodies.values()), bodies  # no oracle: the same answer either way
    assert state() == before
    assert not any(c["id"] == rival for c in a.get("/campaigns").json()["items"])
    assert all(x["campaign_id"] != rival for x in a.get("/leads?limit=1000").json()["items"])
    # globex's own token sees its campaign
    assert api(site, "globex").get(f"/campaigns/{rival}").status == 200


# ------------------------------------------------------------------------------ bad input

def test_bad_input_answers_400_naming_the_field_and_changes_nothing(site):
    server, db, ids, _ = site
    a = api(site, "manager")
    count = one(db, "SELECT COUNT(*) AS n FROM campaigns")["n"]
    cases = [
        (b"{not json", {"Content-Type": "application/json"}, "body"),
        (b'{"name": 5}', {"Content-Type": "application/json"}, "name"),
        (b'{"name": "x", "colour": "red"}', {"Content-Type": "application/json"}, "colour"),
        (b'{"dial_mode": "progressive"}', {"Content-Type": "application/json"}, "name"),
        (b'{"name": "x", "dial_mode": "warp"}', {"Content-Type": "application/json"}, "dial_mode"),
        (b'{"name": "x", "abandon_target": NaN}', {"Content-Type": "application/json"}, "body"),
        (b'["name"]', {"Content-Type": "application/json"}, ""),
        (b'{"name": "x", "region": "USA"}', {"Content-Type": "application/json"}, "region"),
    ]
    for raw, headers, field in cases:
        body = err(a.post("/campaigns", raw=raw, headers=headers), 400, "invalid_input")
        assert body.get("field", "") == field or (field == "" and body.get("field") in (None, "body")), (raw, body)
    body = err(a.post("/campaigns", {"name": "x", "abandon_target": "0.5"}), 400, "invalid_input")
    assert "0.03" in body["message"] or "3 %" in body["message"]
    err(a.post("/campaigns", raw=b"name=x", headers={"Content-Type": "application/x-www-form-urlencoded"}), 415,
        "unsupported_media_type")
    err(a.post("/campaigns", raw=b'{"name": "' + b"x" * (1024 * 1024 + 10) + b'"}',
               headers={"Content-Type": "application/json"}), 413, "too_large")
    err(a.post("/campaigns", {"name": "spring"}), 400, "invalid_input")  # the name is taken
    assert one(db, "SELECT COUNT(*) AS n FROM campaigns")["n"] == count
    for q in ("limit=0", "limit=1001", "limit=ten", "status=gone", "campaign_id=abc", "sttus=new"):
        body = err(a.get(f"/leads?{q}"), 400, "invalid_input")
        assert body["field"] == q.split("=")[0]
    err(a.post("/checks", {"numbers": ["1"] * 1001}), 400, "invalid_input")
    body = err(a.get("/campaigns?page=2"), 400, "invalid_input")  # no parameter at all
    assert body["field"] == "page" and "takes none" in body["message"]


def test_unknown_paths_and_methods_answer_json(site):
    a = api(site, "manager")
    err(a.get("/nowhere"), 404, "not_found")
    err(a.get("/campaigns/abc"), 404, "not_found")
    err(a.get("/campaigns/0"), 404, "not_found")
    err(a.get("/campaigns/99999999999999999999999"), 404, "not_found")
    r = a.call("DELETE", "/campaigns")
    err(r, 405, "method_not_allowed")
    assert r.header("allow") == "GET, POST"
    r = a.call("PUT", "/campaigns/1")
    assert r.status == 405 and r.header("allow") == "GET, PATCH"
    r = a.call("OPTIONS", "/campaigns")
    assert r.status == 204 and r.header("allow") == "GET, POST"
    anon = Client(site[0])
    r = anon.get("/api/v1/campaigns")
    assert r.header("content-type") == "application/json" and "<" not in r.text
    doc = anon.get("/api/openapi.json")
    assert doc.status == 200 and doc.json()["openapi"] == "3.1.0"


def test_too_many_requests_answer_429_with_retry_after(tmp_path, monkeypatch):
    db = tmp_path / "dialer.db"
    seed(db)
    s = Store(db)
    try:
        token = create_token(s, "acme", "busy", "supervisor", NOW, "test")["token"]
    finally:
        s.close()
    monkeypatch.setenv("DIALER_API_RATE", "0.1/3")  # 3 at once, then one every 10 s
    server = Server(db)
    try:
        a = Api(server, token)
        assert [a.get("/me").status for _ in range(3)] == [200, 200, 200]
        r = a.get("/campaigns")
        body = err(r, 429, "rate_limited")
        assert 1 <= int(r.header("retry-after")) <= 10 and "retry in" in body["message"]
        other = create_token_in(db, "globex", "calm")
        assert Api(server, other).get("/me").status == 200  # per token
    finally:
        server.stop()


def create_token_in(db, account, name):
    s = Store(db)
    try:
        return create_token(s, account, name, "owner", NOW, "test")["token"]
    finally:
        s.close()


def test_cursor_round_trip_and_rate_limit():
    c = encode_cursor(["2026-11-24T15:10:00.000Z", "call-1"])
    assert decode_cursor(c, (str, str)) == ("2026-11-24T15:10:00.000Z", "call-1")
    assert decode_cursor(encode_cursor([7]), (int,)) == 7
    for bad, shape in ((c, (int,)), ("!!", (int,)), (encode_cursor([True]), (int,)), (encode_cursor({"a": 1}), (int,))):
        with pytest.raises(ApiError):
            decode_cursor(bad, shape)
    limit = RateLimit(rate=2, burst=3)
    assert [limit.take("t", 0.0) for _ in range(3)] == [0, 0, 0]
    wait = limit.take("t", 0.0)
    assert wait == pytest.approx(0.5)
    assert limit.take("other", 0.0) == 0  # per token
    assert limit.take("t", 0.5) == 0  # refilled at 2 a second


# ------------------------------------------------------------------------------ the owner's page, the CLI

def test_owner_makes_and_revokes_tokens_in_the_browser(site):
    server, db, ids, _ = site
    owner = Client(server)
    assert owner.login("acme", "olive").status == 303
    page = owner.get("/tokens")
    assert page.status == 200 and "t-manager" in page.text and "dk_" in page.text
    assert "secret_hash" not in page.text
    r = owner.post("/tokens", {"csrf_token": owner.csrf("/tokens"), "name": EVIL[:20].replace('"', ""), "role": "agent"})
    assert r.status == 400 and "token name" in r.text  # the name's characters are checked
    r = owner.post("/tokens", {"csrf_token": owner.csrf("/tokens"), "name": "crm sync", "role": "supervisor"})
    assert r.status == 201
    secret = re.search(r'<code id="secret">(dk_[^<]+)</code>', r.text).group(1)
    assert Api(server, secret).get("/me").json()["token"]["name"] == "crm sync"
    assert secret not in owner.get("/tokens").text  # shown once
    row = one(db, "SELECT id FROM api_tokens WHERE name = 'crm sync'")
    # without the CSRF token: refused; another account's token id: 404, nothing changed
    assert owner.post(f"/tokens/{row['id']}/revoke", {}).status == 403
    gx = one(db, "SELECT id FROM api_tokens WHERE name = 'gx'")["id"]
    assert owner.post(f"/tokens/{gx}/revoke", {"csrf_token": owner.csrf("/tokens")}).status == 404
    assert one(db, "SELECT revoked_at FROM api_tokens WHERE id = ?", (gx,))["revoked_at"] is None
    assert owner.post(f"/tokens/{row['id']}/revoke", {"csrf_token": owner.csrf("/tokens")}).status == 303
    err(Api(server, secret).get("/me"), 401, "unauthorized")
    entries = rows(db, "SELECT action, actor, account_id FROM audit_log WHERE action LIKE 'api-token.%' "
                       "AND detail LIKE '%crm sync%' ORDER BY id")
    assert [(e["action"], e["actor"], e["account_id"]) for e in entries] == [
        ("api-token.create", "web:acme/olive", ids["acme"]), ("api-token.revoke", "web:acme/olive", ids["acme"])]
    manager = Client(server)
    assert manager.login("acme", "max").status == 303
    assert manager.get("/tokens").status == 403


def test_cli_token_create_list_revoke_and_lead_lists(site):
    server, db, ids, _ = site
    run = lambda *a: CliRunner().invoke(cli.main, ["--db", str(db), *a])  # noqa: E731
    r = run("account", "token", "create", "nightly", "--account", "acme", "--role", "compliance", "--json")
    assert r.exit_code == 0, r.output
    made = json.loads(r.output)
    assert made["token"].startswith("dk_") and made["role"] == "compliance"
    r = run("account", "token", "list", "--account", "acme", "--json")
    listed = [json.loads(x) for x in r.output.splitlines()]
    assert any(t["name"] == "nightly" and t["revoked_at"] is None for t in listed)
    assert made["token"] not in r.output and all("secret_hash" not in t and "token" not in t for t in listed)
    r = run("account", "token", "create", "nightly", "--account", "acme", "--role", "agent")
    assert r.exit_code == 1 and "already has a token named 'nightly'" in r.output
    r = run("account", "token", "revoke", str(made["id"]), "--account", "globex")
    assert r.exit_code == 1 and "no token" in r.output  # another account's id
    assert run("account", "token", "revoke", str(made["id"]), "--account", "acme").exit_code == 0
    r = run("account", "token", "revoke", str(made["id"]), "--account", "acme")
    assert r.exit_code == 1 and "already revoked" in r.output
    r = run("lead", "list", "--account", "acme", "--campaign", "spring", "--limit", "2")
    assert r.exit_code == 0 and "more: --after" in r.output
    r = run("lead", "callbacks", "--account", "acme", "--json")
    assert r.exit_code == 0

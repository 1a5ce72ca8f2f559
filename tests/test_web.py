"""The web application over real HTTP: a ``dialer web`` process on a real database.

Logins and sessions (cookies, one login = one person, timeouts, back-off), CSRF and
Origin, roles, the account boundary (another account's ids answer 404 and change
nothing), output escaping, and the manager's screens (campaigns, list upload with its
progress and error report, preview, dry run, results)."""

import json
import re

import pytest
from click.testing import CliRunner

import cli
from core.store import Store
from web.sessions import LoginThrottle, token_hash

from web_harness import PASSWORD, Client, Server, seed, until, logged_in


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    db = tmp_path_factory.mktemp("web") / "dialer.db"
    ids = seed(db)
    server = Server(db)
    yield server, db, ids
    server.stop()


def campaign_row(db, cid):
    s = Store(db)
    try:
        return s.query_one("SELECT * FROM campaigns WHERE id = ?", (cid,))
    finally:
        s.close()


def test_login_cookie_headers_and_stored_hash(site):
    server, db, _ = site
    c = Client(server)
    r = c.get("/login")
    assert r.status == 200
    csp = r.header("content-security-policy")
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert r.header("x-content-type-options") == "nosniff"
    r = c.login("acme", "olive")
    assert r.status == 303 and r.header("location") == "/campaigns"
    cookie = next(h for h in c.set_cookie_headers if h.startswith("dialer_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie  # plain HTTP here
    token = c.cookies["dialer_session"]
    assert len(token) >= 43  # 256 bits, url-safe base64
    s = Store(db)
    try:
        assert s.query_one("SELECT COUNT(*) AS n FROM user_sessions WHERE token_hash = ?", (token,))["n"] == 0
        assert s.query_one("SELECT COUNT(*) AS n FROM user_sessions WHERE token_hash = ?",
                           (token_hash(token),))["n"] == 1
    finally:
        s.close()
    assert c.get("/campaigns").status == 200
    # logout ends it server-side: the old cookie opens nothing
    old = dict(c.cookies)
    assert c.post("/logout", {"csrf_token": c.csrf()}).status == 303
    stale = Client(server)
    stale.cookies = old
    r = stale.get("/campaigns")
    assert r.status == 303 and r.header("location") == "/login?ended=logout"


def test_wrong_passwords_answer_the_same(site):
    server, _, _ = site
    c = Client(server)
    for account, user, pw in (("acme", "olive", "wrong password!"), ("acme", "nobody", PASSWORD),
                              ("nowhere", "olive", PASSWORD)):
        r = c.login(account, user, pw)
        assert r.status == 401 and "Wrong account, user or password." in r.text
        assert "dialer_session" not in c.cookies


def test_login_without_its_csrf_token_or_from_another_site_is_refused(site):
    server, _, _ = site
    c = Client(server)
    token, _ = c.login_token()
    r = c.post("/login", {"account": "acme", "user": "olive", "password": PASSWORD})
    assert r.status == 403 and "dialer_session" not in c.cookies
    r = c.post("/login", {"login_csrf": token, "account": "acme", "user": "olive", "password": PASSWORD},
               headers={"Origin": "http://evil.example"})
    assert r.status == 403 and "dialer_session" not in c.cookies


def test_one_login_is_one_person(site):
    server, db, _ = site
    first = logged_in(server, user="max")
    assert first.get("/campaigns").status == 200
    second = logged_in(server, user="max")
    r = first.get("/campaigns")
    assert r.status == 303 and r.header("location") == "/login?ended=elsewhere"
    assert "logged in elsewhere" in first.get("/login?ended=elsewhere").text
    assert first.get("/session/state").json() == {"state": "none"}  # its cookie was cleared
    assert second.get("/session/state").json() == {"state": "open"}
    assert second.get("/campaigns").status == 200
    s = Store(db)
    try:
        row = s.query_one("SELECT * FROM audit_log WHERE action = 'user.session-ended' ORDER BY id DESC LIMIT 1")
        assert row["actor"] == "web:acme/max" and row["reason"] == "logged in elsewhere"
        assert json.loads(row["detail"])["user"] == "max"
    finally:
        s.close()


def test_an_expired_session_goes_to_the_login_page(site):
    server, db, _ = site
    for column, age in (("last_seen_at", "2000-01-01T00:00:00.000Z"), ("created_at", "2000-01-01T00:00:00.000Z")):
        c = logged_in(server, user="sue")
        s = Store(db)
        try:
            with s.transaction():
                s.execute(f"UPDATE user_sessions SET {column} = ? WHERE token_hash = ?",
                          (age, token_hash(c.cookies["dialer_session"])))
        finally:
            s.close()
        r = c.get("/campaigns")
        assert r.status == 303 and r.header("location") == "/login?ended=expired", column
        assert "session expired" in c.get(r.header("location")).text
        r = c.get("/campaigns", headers={"X-Requested-With": "fetch"})
        assert r.status == 401


def test_csrf_token_missing_forged_or_foreign_origin_changes_nothing(site):
    server, db, ids = site
    c = logged_in(server, user="max")
    token = c.csrf()
    before = campaign_row(db, ids["spring"])
    path = f"/campaigns/{ids['spring']}/finish"
    for data, headers in (({}, {}), ({"csrf_token": "forged" + token[6:]}, {}),
                          ({"csrf_token": token}, {"Origin": "http://evil.example"}),
                          ({"csrf_token": token}, {"Referer": "http://evil.example/page"})):
        r = c.post(path, data, headers=headers)
        assert r.status == 403, (data, headers)
    r = c.post("/campaigns/new", {"name": "sneaky"})
    assert r.status == 403
    assert campaign_row(db, ids["spring"]) == before
    assert "sneaky" not in c.get("/campaigns").text
    # the upload's script sends the token as a header; without it: refused
    r = c.post(f"/campaigns/{ids['spring']}/uploads?name=x.csv", body=b"phone\n2125550100\n",
               headers={"X-Requested-With": "fetch"})
    assert r.status == 403 and "security token" in r.json()["error"]


def test_another_accounts_ids_answer_404_and_change_nothing(site):
    server, db, ids = site
    gus = logged_in(server, "globex", "gus")
    csv = b"phone\n2125550100\nnot a number\n"
    r = gus.post(f"/campaigns/{ids['rival']}/uploads?name=r.csv", body=csv,
                 headers={"X-CSRF-Token": gus.csrf(), "X-Requested-With": "fetch"})
    assert r.status == 202
    job = until(lambda: (lambda j: j if j["state"] in ("done", "failed") else None)(gus.get(r.json()["status_url"]).json()),
                what="globex's import")
    rival_import = job["import_id"]
    c = logged_in(server, user="olive")
    token = c.csrf()
    rival, missing = ids["rival"], 999999
    before = campaign_row(db, rival)
    bodies = {}
    for cid in (rival, missing):
        for path in (f"/campaigns/{cid}", f"/campaigns/{cid}/edit", f"/campaigns/{cid}/results",
                     f"/campaigns/{cid}/preview", f"/campaigns/{cid}/dry-run", f"/campaigns/{cid}/upload",
                     f"/campaigns/{cid}/imports/{rival_import}", f"/campaigns/{cid}/imports/{rival_import}/errors.csv",
                     f"/campaigns/{ids['spring']}/imports/{rival_import}",
                     f"/campaigns/{ids['spring']}/imports/{rival_import}/errors.csv"):
            r = c.get(path)
            assert r.status == 404, path
            bodies.setdefault(path.replace(str(cid), "ID"), set()).add(r.body)
        for action, data in (("start", {}), ("pause", {}), ("finish", {}), ("edit", {"caller_id": "+12125550000"})):
            r = c.post(f"/campaigns/{cid}/{action}", {"csrf_token": token, **data})
            assert r.status == 404, action
        r = c.post(f"/campaigns/{cid}/uploads?name=x.csv", body=csv, headers={"X-CSRF-Token": token})
        assert r.status == 404
        r = c.get(f"/campaigns/{cid}/uploads/{job['token']}", headers={"X-Requested-With": "fetch"})
        assert r.status == 404
    # the same answer whether the id is another account's or no one's: no oracle
    assert all(len(b) == 1 for b in bodies.values()), bodies
    # globex's owner is not acme's user
    for action in ("disable", "password", "role", "pin", "enable"):
        r = c.post(f"/users/gus/{action}", {"csrf_token": token, "role": "agent", "pin": "4821"})
        assert r.status == 404, action
    assert campaign_row(db, rival) == before
    assert gus.get(f"/campaigns/{rival}").status == 200


def test_markup_in_names_is_shown_as_text_everywhere(site):
    server, db, ids = site
    evil = '<script>alert("x")</script>'
    c = logged_in(server, user="olive")
    token = c.csrf()
    r = c.post("/campaigns/new", {"csrf_token": token, "name": evil, "dial_mode": "progressive",
                                  "abandon_target": "0.03", "region": "US"})
    assert r.status == 303
    cid = int(r.header("location").rsplit("/", 1)[1])
    csv = ('phone,name,note\n2125550100,"%s","%s"\n<script>,x,y\n' % (evil.replace('"', '""'), evil.replace('"', '""'))).encode()
    r = c.post(f"/campaigns/{cid}/uploads?name={'%3Cscript%3E.csv'}", body=csv,
               headers={"X-CSRF-Token": token, "X-Requested-With": "fetch"})
    assert r.status == 202
    job = until(lambda: (lambda j: j if j["state"] in ("done", "failed") else None)(c.get(r.json()["status_url"]).json()),
                what="the import")
    assert job["state"] == "done", job
    r = c.post("/users/invite", {"csrf_token": token, "name": "<script>x", "role": "agent"})
    assert r.status == 200
    pages = ["/campaigns", "/campaigns/new", f"/campaigns/{cid}", f"/campaigns/{cid}/edit", f"/campaigns/{cid}/results",
             f"/campaigns/{cid}/preview", f"/campaigns/{cid}/dry-run", f"/campaigns/{cid}/upload",
             f"/campaigns/{cid}/imports/{job['import_id']}", "/users"]
    for p in pages:
        r = c.get(p)
        assert r.status == 200, p
        assert "<script>" not in r.text.replace('<script src="/static/', "").replace(
            '<script type="application/json" id="dryrun-data">', ""), p
    assert "&lt;script&gt;" in c.get("/campaigns").text and "&lt;script&gt;x" in c.get("/users").text
    # the report is a download, its cells neutralised
    r = c.get(f"/campaigns/{cid}/imports/{job['import_id']}/errors.csv")
    assert r.header("content-disposition").startswith("attachment;") and r.header("content-type").startswith("text/csv")


def test_roles_see_only_what_they_may(site):
    server, db, ids = site
    agent = logged_in(server, user="alan")
    assert agent.get("/").header("location") == "/me"
    assert agent.get("/me").status == 200
    assert agent.get("/campaigns").status == 403
    assert agent.get(f"/campaigns/{ids['spring']}").status == 403
    sup = logged_in(server, user="sue")
    assert sup.get("/campaigns").status == 200 and sup.get(f"/campaigns/{ids['spring']}/results").status == 200
    assert sup.get(f"/campaigns/{ids['spring']}/preview").status == 403
    before = campaign_row(db, ids["spring"])
    assert sup.post(f"/campaigns/{ids['spring']}/finish", {"csrf_token": sup.csrf()}).status == 403
    assert campaign_row(db, ids["spring"]) == before
    mgr = logged_in(server, user="max")
    assert mgr.get("/users").status == 403
    assert mgr.get(f"/campaigns/{ids['spring']}/preview").status == 200


def test_manager_screens_upload_report_preview_dry_run_start(site):
    server, db, ids = site
    c = logged_in(server, user="max")
    token = c.csrf()
    r = c.post("/campaigns/new", {"csrf_token": token, "name": "autumn", "dial_mode": "progressive",
                                  "abandon_target": "0.03", "region": "US"})
    cid = int(r.header("location").rsplit("/", 1)[1])
    r = c.post(f"/campaigns/{cid}/start", {"csrf_token": token})
    assert r.status == 409 and "cannot start" in r.text and "caller ID" in r.text
    assert campaign_row(db, cid)["state"] == "draft"
    csv = b"Mobile,Who\n212-555-0100,A\n305-555-0101,B\n555-CALL,C\n=HYPERLINK(1),D\n212-555-0100,E\n"
    r = c.post(f"/campaigns/{cid}/uploads?name=list.csv&map=phone%3DMobile%2Cname%3DWho", body=csv,
               headers={"X-CSRF-Token": token, "X-Requested-With": "fetch"})
    assert r.status == 202
    job = until(lambda: (lambda j: j if j["state"] in ("done", "failed") else None)(c.get(r.json()["status_url"]).json()),
                what="the import")
    assert job["state"] == "done" and job["fraction"] == 1.0, job
    page = c.get(job["import_url"]).text
    assert re.search(r'id="imported">2<', page) and re.search(r'id="rejected">2<', page)
    report = c.get(f"{job['import_url']}/errors.csv").text.splitlines()
    assert report[0] == "row,column,value,reason" and len(report) == 4
    assert any(line.split(",")[2] == "'=HYPERLINK(1)" for line in report[1:])  # neutralised
    preview = c.get(f"/campaigns/{cid}/preview").text
    assert re.search(r'id="dialable-now">\d+<', preview) and "Never" in preview
    def dry_run():
        page = c.get(f"/campaigns/{cid}/dry-run?from=2026-11-24T12:00Z&to=2026-11-24T15:00Z").text
        return json.loads(re.search(r'id="dryrun-data">(.*?)</script>', page, re.S).group(1))["hours"]

    assert [(h["dialable"], h["blocked"].get("caller_id")) for h in dry_run()] == [(0, 2)] * 3
    assert c.get(f"/campaigns/{cid}/dry-run?from=junk").status == 400
    r = c.post(f"/campaigns/{cid}/edit", {"csrf_token": token, "caller_id": "212 555 0000", "dial_mode": "progressive",
                                          "abandon_target": "0.03", "hours": "", "retry": ""})
    assert r.status == 303
    # 07:00, 08:00, 09:00 in New York: 212 opens at 08:00, 305 (Florida) too
    assert [h["dialable"] for h in dry_run()] == [0, 2, 2]
    r = c.post(f"/campaigns/{cid}/start", {"csrf_token": token})
    assert r.status == 303 and campaign_row(db, cid)["state"] == "running"
    assert 'id="state">running<' in c.get(f"/campaigns/{cid}").text
    r = c.post(f"/campaigns/{cid}/edit", {"csrf_token": token, "caller_id": ""})
    assert r.status == 400 and "pause it first" in r.text
    results = c.get(f"/campaigns/{cid}/results").text
    assert 'id="dials">0<' in results and "new" in results


def test_owner_invites_resets_and_disables(site):
    server, db, _ = site
    owner = logged_in(server, user="olive")
    token = owner.csrf()
    r = owner.post("/users/invite", {"csrf_token": token, "name": "nina", "role": "manager"})
    otp = re.search(r'id="otp">([^<]+)<', r.text).group(1)
    nina = Client(server)
    r = nina.login("acme", "nina", otp)
    assert r.status == 303 and r.header("location") == "/password"
    assert nina.get("/campaigns").header("location") == "/password"  # nothing else before a new password
    ntoken = nina.csrf()
    r = nina.post("/password", {"csrf_token": ntoken, "current": otp, "new": "nina's own passphrase",
                                "again": "nina's own passphrase"})
    assert r.status == 303 and nina.get("/campaigns").status == 200
    r = owner.post("/users/nina/role", {"csrf_token": token, "role": "supervisor"})
    assert r.status == 200
    assert nina.get("/campaigns").header("location") == "/login?ended=role-changed"
    assert Client(server).login("acme", "nina", "nina's own passphrase").status == 303
    r = owner.post("/users/nina/pin", {"csrf_token": token, "pin": "1234"})
    assert r.status == 400 and "too easy" in r.text
    assert owner.post("/users/nina/pin", {"csrf_token": token, "pin": "4821"}).status == 200
    r = owner.post("/users/olive/disable", {"csrf_token": token})
    assert r.status == 400 and "last owner" in r.text
    assert owner.post("/users/nina/disable", {"csrf_token": token}).status == 200
    r = Client(server).login("acme", "nina", "nina's own passphrase")
    assert r.status == 401
    s = Store(db)
    try:
        row = s.query_one("SELECT pin_hash, disabled_at FROM users WHERE name = 'nina'")
        assert row["pin_hash"] is None and row["disabled_at"]
        actions = [r["action"] for r in s.query("SELECT action FROM audit_log WHERE detail LIKE '%nina%' ORDER BY id")]
        assert actions[:2] == ["user.add", "user.invite"] and "user.disable" in actions and "user.role" in actions
    finally:
        s.close()


def test_wrong_passwords_slow_down_their_source_and_user(tmp_path):
    db = tmp_path / "d.db"
    seed(db)
    server = Server(db)
    try:
        c = Client(server)
        for _ in range(5):
            assert c.login("acme", "olive", "not the password").status == 401
        c.login("acme", "olive", "not the password")
        r = c.login("acme", "olive")  # the right password, during the back-off
        assert r.status == 429 and "try again in" in r.text
        assert "dialer_session" not in c.cookies
    finally:
        server.stop()


def test_login_throttle_backs_off_never_locks():
    t = LoginThrottle(free=2, source_max_s=300, user_max_s=30)
    key = t.user_key("acme", "olive")
    for i in range(2):
        assert t.wait("10.0.0.1", key, 100.0) == 0
        t.failed("10.0.0.1", key, 100.0)
    assert t.wait("10.0.0.1", key, 100.0) == 1.0
    for _ in range(20):
        t.failed("10.0.0.9", key, 200.0)  # a stranger hammering olive's name
    assert t.wait("10.0.0.2", key, 200.0) == 30.0  # olive, elsewhere: slowed, at most 30 s
    assert t.wait("10.0.0.2", key, 230.0) == 0
    assert t.wait("10.0.0.9", key, 230.0) > 0  # the stranger's own address waits longer
    t.succeeded("10.0.0.2", key)
    assert t.wait("10.0.0.2", key, 230.0) == 0


def test_cli_password_role_disable_and_campaign_edit(tmp_path):
    db = tmp_path / "d.db"
    seed(db)

    def run(*args, input=None):
        return CliRunner().invoke(cli.main, ["--db", str(db), *args], input=input)

    r = run("account", "password", "max", "--account", "acme", "--stdin", input="short\n")
    assert r.exit_code == 1 and "at least 12 characters" in r.output
    r = run("account", "password", "max", "--account", "acme", input="a long new passphrase\na long new passphrase\n")
    assert r.exit_code == 0 and "password of acme/max set" in r.output and "a long new passphrase" not in r.output
    r = run("account", "password", "nobody", "--account", "acme", "--stdin", input="a long new passphrase\n")
    assert r.exit_code == 1 and "no user 'nobody'" in r.output
    r = run("account", "role", "olive", "agent", "--account", "acme")
    assert r.exit_code == 1 and "last owner" in r.output
    assert run("account", "role", "max", "owner", "--account", "acme").exit_code == 0
    assert run("account", "disable", "alan", "--account", "acme", "--reason", "left").exit_code == 0
    r = run("account", "disable", "alan", "--account", "acme")
    assert r.exit_code == 1 and "already disabled" in r.output
    r = run("campaign", "edit", "spring", "--account", "acme", "--caller-id", "212 555 0000", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["caller_id"] == "+12125550000"
    r = run("campaign", "edit", "spring", "--account", "acme", "--mode", "power")
    assert r.exit_code == 1 and "--ratio" in r.output


def test_run_serves_the_web_beside_the_dialer(tmp_path):
    """``dialer run --web 0``: the pages answer while the same reactor runs a campaign."""
    pytest.importorskip("pjsua2", reason="the dialer's SIP workers need pjsua2")
    import subprocess
    import sys
    from web_harness import ROOT, Client
    db = tmp_path / "d.db"
    ids = seed(db)

    def run(*args):
        r = CliRunner().invoke(cli.main, ["--db", str(db), *args])
        assert r.exit_code == 0, r.output

    run("trunk", "add", "t1", "--account", "acme", "--proxy", "127.0.0.1:5999", "--cps", "1")
    run("trunk", "use", "t1", "--campaign", "spring", "--account", "acme")
    run("campaign", "edit", "spring", "--account", "acme", "--caller-id", "+12125550000")
    run("campaign", "start", "spring", "--account", "acme")
    proc = subprocess.Popen([sys.executable, "-c", "import cli; cli.main()", "--db", str(db), "run", "--web", "0",
                             "--sip-port", "5290", "--workers", "1", "--seconds", "5", "--drain", "0"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(re.search(r"127\.0\.0\.1:(\d+)/", proc.stdout.readline()).group(1))
        assert "dialer running: spring" in proc.stdout.readline()

        class _At:
            pass
        at = _At()
        at.port = port
        c = Client(at)
        assert c.login("acme", "max").status == 303
        assert 'id="state">running<' in c.get(f"/campaigns/{ids['spring']}").text
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

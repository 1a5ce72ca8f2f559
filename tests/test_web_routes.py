"""Every route of the web application, enumerated from its route table, against the
account boundary: each route that names an object in its path is called by acme's
owner with globex's object in its place (every method it accepts; the session's CSRF
token on the browser's routes, acme's owner token on the API's). Each answers 404, the
same answer as for an id nobody has, and globex's rows are unchanged after all of them.

A route added without saying here what its path parameters name fails the test, so a
new screen or API operation cannot skip the check."""

import hashlib
import json

import pytest

from core.store import Store
from web.app import WebApp

from web_harness import NOW, Client, Server, seed, until

# Routes whose path names no object of an account, each with why.
NOT_ACCOUNT_OBJECTS = {
    "/static/<path:__rest__>": "the static files (the same for everyone)",
    "/api/<api_rest:rest>": "the API's answer to unknown paths (JSON 404/405)",
    "/compliance/rules/<jur>": "rule sets are the installation's (jurisdictions, not account objects)",
    "/compliance/rules/<jur>/preview": "rule sets are the installation's (rules.edit: the operator account only)",
    "/compliance/rules/<jur>/save": "rule sets are the installation's (rules.edit: the operator account only)",
}

# What each path parameter names, by route prefix (first match): the key into the other
# account's objects made by the fixture.
PARAMS = [
    ("/account/trunks/", "name", "trunk"),
    ("/users/", "name", "user"),
    ("", "cid", "campaign"),
    ("", "iid", "import"),
    ("", "lid", "lead"),
    ("", "tid", "api_token"),
    ("", "sid", "webhook"),
    ("", "did", "delivery"),
    ("/campaigns/", "token", "upload"),
    ("/api/v1/campaigns/", "token", "api_upload"),
]
# A valid body for the API operations that check theirs before looking up the object (so
# the look-up, not the body check, is what answers).
API_BODIES = {"/outcome": {"outcome": "busy"}, "/callback": {"when": "2026-12-09 10:00"},
              "/dnc": {"numbers": ["+12125550123"], "reason": "x"},
              "/dnc/remove": {"numbers": ["+12125550123"], "reason": "x"}}
MISSING = {"trunk": "no-such-trunk", "user": "nobody", "upload": "x" * 22, "api_upload": "x" * 22}


def _object_for(rule, arg):
    for prefix, name, key in PARAMS:
        if name == arg and rule.startswith(prefix):
            return key
    return None


def _routes():
    """(rule text, methods, {argument: converter}) of every route in the table."""
    out = []
    for r in WebApp.app.url_map.iter_rules():
        methods = sorted((r.methods or {"GET"}) - {"HEAD", "OPTIONS"})
        out.append((r.rule, methods, dict(r._converters)))
    return out


def test_every_route_says_what_its_path_names():
    unknown = []
    for rule, _methods, convs in _routes():
        if rule in NOT_ACCOUNT_OBJECTS:
            continue
        for arg, conv in convs.items():
            if type(conv).__name__ == "AnyConverter":
                continue
            if _object_for(rule, arg) is None:
                unknown.append(f"{rule}: <{arg}>")
    assert not unknown, ("routes whose path parameters this test does not know (say which account object each "
                         "names in PARAMS, or why it is none in NOT_ACCOUNT_OBJECTS): " + ", ".join(unknown))


GLOBEX_TABLES = ("campaigns", "leads", "imports", "trunks", "users", "api_tokens", "webhook_subscriptions",
                 "webhook_deliveries", "dnc_entries", "lead_events")


def _globex_digest(db, account_id):
    """A digest per table of every row of globex in the tables a route could change."""
    s = Store(db)
    try:
        out = {}
        for table in GLOBEX_TABLES:
            cols = [r["name"] for r in s.query(f"PRAGMA table_info({table})")]
            if not cols:
                continue
            if "account_id" in cols:
                rows = s.query(f"SELECT * FROM {table} WHERE account_id = ? ORDER BY 1", (account_id,))
            elif "campaign_id" in cols:
                rows = s.query(f"SELECT * FROM {table} WHERE campaign_id IN "
                               f"(SELECT id FROM campaigns WHERE account_id = ?) ORDER BY 1", (account_id,))
            elif "lead_id" in cols:
                rows = s.query(f"SELECT * FROM {table} WHERE lead_id IN (SELECT l.id FROM leads l JOIN campaigns c "
                               f"ON c.id = l.campaign_id WHERE c.account_id = ?) ORDER BY 1", (account_id,))
            elif "subscription_id" in cols:
                rows = s.query(f"SELECT * FROM {table} WHERE subscription_id IN "
                               f"(SELECT id FROM webhook_subscriptions WHERE account_id = ?) ORDER BY 1", (account_id,))
            else:
                rows = s.query(f"SELECT * FROM {table} ORDER BY 1")
            out[table] = hashlib.sha256(json.dumps([dict(r) for r in rows], default=str, sort_keys=True).encode()
                                        ).hexdigest()
        return out
    finally:
        s.close()


@pytest.fixture(scope="module")
def two_accounts(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("DIALER_WEBHOOK_ALLOW_PRIVATE", "1")
    tmp = tmp_path_factory.mktemp("routes")
    db = tmp / "dialer.db"
    ids = seed(db)
    from campaigns.leads import import_list
    from campaigns.tokens import create_token
    from dialer.trunks import add_trunk
    from dialer.webhooks import add_subscription, send_test
    s = Store(db)
    try:
        globex = s.query_one("SELECT id FROM accounts WHERE name = 'globex'")["id"]
        lst = tmp / "rival.csv"
        lst.write_text("phone,first_name\n2125550123,Ann\n2125550187,Bob\n")
        imp = import_list(s, lst, ids["rival"], NOW, "test", account="globex")
        lead = s.query_one("SELECT id FROM leads WHERE campaign_id = ? ORDER BY id LIMIT 1", (ids["rival"],))["id"]
        add_trunk(s, "globex", "globex-carrier", "127.0.0.1:5090", NOW, "test")
        tok = create_token(s, "globex", "crm", "manager", NOW, "test")
        hook = add_subscription(s, "globex", "http://127.0.0.1:9/hook", ["call.ended"], NOW, "test",
                                allow_private=True)
        send_test(s, "globex", hook["id"], NOW, "test")
        delivery = s.query_one("SELECT id FROM webhook_deliveries WHERE subscription_id = ?", (hook["id"],))["id"]
        acme_token = create_token(s, "acme", "everything", "owner", NOW, "test")["token"]
    finally:
        s.close()
    server = Server(db)
    gus = Client(server)
    assert gus.login("globex", "gus").status == 303
    up = gus.post(f"/campaigns/{ids['rival']}/uploads?name=r.csv", body=b"phone\n2125550144\n",
                  headers={"X-CSRF-Token": gus.csrf(), "X-Requested-With": "fetch"})
    assert up.status == 202, up.text
    api_up = Client(server).request("POST", f"/api/v1/campaigns/{ids['rival']}/lists?name=r.csv",
                                    body=b"phone\n2125550155\n",
                                    headers={"Authorization": f"Bearer {tok['token']}", "Content-Type": "text/csv"})
    assert api_up.status == 202, api_up.text
    # both imports finished before anything is compared
    until(lambda: gus.get(up.json()["status_url"], headers={"X-Requested-With": "fetch"}).json()["state"]
          in ("done", "failed"), what="globex's upload")
    until(lambda: Client(server).get(f"/api/v1/campaigns/{ids['rival']}/lists/{api_up.json()['token']}",
                                     headers={"Authorization": f"Bearer {tok['token']}"}).json()["state"]
          in ("done", "failed"), what="globex's API upload")
    objects = {"campaign": ids["rival"], "import": imp["import_id"], "lead": lead, "trunk": "globex-carrier",
               "user": "gus", "api_token": tok["id"], "webhook": hook["id"], "delivery": delivery,
               "upload": up.json()["token"], "api_upload": api_up.json()["token"]}
    yield server, db, globex, objects, acme_token
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _fill(rule, convs, pick):
    """The path of ``rule`` with each parameter replaced: ``pick(key)`` for objects,
    every value of an ``any(...)`` in turn."""
    paths = [rule]
    for arg, conv in convs.items():
        pattern = next(p for p in _placeholders(rule) if p[1] == arg)[0]
        if type(conv).__name__ == "AnyConverter":
            paths = [p.replace(pattern, v) for p in paths for v in conv.items]
        else:
            paths = [p.replace(pattern, str(pick(_object_for(rule, arg)))) for p in paths]
    return paths


def _placeholders(rule):
    import re
    return [(m.group(0), m.group(1).split(":")[-1]) for m in re.finditer(r"<([^>]+)>", rule)]


def test_another_accounts_objects_answer_404_on_every_route(two_accounts):
    server, db, globex, objects, acme_token = two_accounts
    before = _globex_digest(db, globex)
    olive = Client(server)
    assert olive.login("acme", "olive").status == 303
    csrf = olive.csrf()
    api = Client(server)
    called, wrong = [], []
    for rule, methods, convs in _routes():
        if rule in NOT_ACCOUNT_OBJECTS or not any(type(c).__name__ != "AnyConverter" for c in convs.values()):
            continue
        for pick, label in ((objects.__getitem__, "globex's"),
                            (lambda k: MISSING.get(k, 987654), "nobody's")):
            for path in _fill(rule, convs, pick):
                for method in methods:
                    if rule.startswith("/api/"):
                        h = {"Authorization": f"Bearer {acme_token}"}
                        body = None
                        if path.endswith("/lists"):
                            h["Content-Type"] = "text/csv"
                            body = b"phone\n2125550166\n"
                        elif method in ("POST", "PATCH"):
                            h["Content-Type"] = "application/json"
                            body = json.dumps(next((b for k, b in API_BODIES.items() if path.endswith(k)), {})).encode()
                        r = api.request(method, path, body=body, headers=h)
                    elif method == "GET":
                        r = olive.get(path)
                    else:
                        r = olive.post(path, {"csrf_token": csrf, "reason": "x", "role": "agent", "pin": "4821"})
                    called.append((method, path))
                    if r.status != 404:
                        wrong.append(f"{method} {path} ({label}): {r.status}")
    assert not wrong, "answered other than 404: " + "; ".join(wrong)
    assert len(called) >= 60, called  # every route with an object, both kinds of id
    after = _globex_digest(db, globex)
    assert after == before, f"a call with another account's id changed: {[t for t in after if after[t] != before[t]]}"
    # the objects are real: globex's own owner reaches them
    gus = Client(server)
    gus.login("globex", "gus")
    assert gus.get(f"/campaigns/{objects['campaign']}").status == 200
    assert gus.get(f"/webhooks/{objects['webhook']}").status == 200
    assert gus.get(f"/account/trunks/{objects['trunk']}").status == 200

"""The owner's Webhooks screen over real HTTP: a ``dialer web`` process on a real
database (loopback destinations allowed, as an installation may), whose own worker
delivers to a receiver in this test (the stdlib's HTTP server on loopback), which
checks each signature with an independent HMAC. Roles, CSRF and Origin, the account
boundary (another account's webhooks and deliveries answer 404 and change nothing),
markup shown as text, the secret shown once, URL refusals."""

import hashlib
import hmac
import http.server
import json
import re
import threading

import pytest

from core.store import Store
from dialer import webhooks as wh
from web_harness import NOW, Client, Server, seed, until, query


class Receiver:
    """A loopback HTTP receiver answering 200 and keeping what it got."""

    def __init__(self):
        self.got = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.got.append({"headers": {k: v for k, v in self.headers.items()}, "body": body})
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv(wh.ENV_ALLOW_PRIVATE, "1")  # the server process inherits it
    db = tmp_path_factory.mktemp("webhooks") / "dialer.db"
    seed(db)
    receiver = Receiver()
    server = Server(db)
    yield server, db, receiver
    server.stop()
    receiver.stop()
    mp.undo()


def logged_in(server, account="acme", user="olive"):
    c = Client(server)
    assert c.login(account, user).status == 303
    return c


def signed_ok(secret, got):
    h = got["headers"]
    signed = f"{h['Webhook-Id']}.{h['Webhook-Timestamp']}.".encode() + got["body"]
    want = "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, h["Webhook-Signature"])


def test_owner_adds_a_webhook_sends_a_test_event_and_redelivers(site):
    server, db, receiver = site
    c = logged_in(server)
    r = c.get("/webhooks")
    assert r.status == 200 and "No webhook yet" in r.text and 'id="webhooks-link"' in r.text
    token = c.csrf("/webhooks")
    # a refused URL: one message, shown as text, nothing created
    r = c.post("/webhooks", {"csrf_token": token, "url": "ftp://<script>alert(1)</script>", "events": "call.ended"})
    assert r.status == 400 and "must start with https://" in r.text
    assert "<script>alert(1)" not in r.text and "&lt;script&gt;" in r.text
    r = c.post("/webhooks", {"csrf_token": token, "url": "https://169.254.169.254/latest", "events": "call.ended"})
    assert r.status == 400 and "link-local" in r.text
    assert query(db, "SELECT * FROM webhook_subscriptions") == []
    # added: the secret shown once, markup in the label and the URL shown as text
    r = c.post("/webhooks", [("csrf_token", token), ("url", receiver.url + "?q=<script>x</script>"),
                             ("label", "<script>alert(2)</script>"), ("events", "call.ended"),
                             ("events", "lead.opted_out")])
    assert r.status == 200, r.text
    secret = re.search(r'<code id="secret">(whsec_[A-Za-z0-9_-]+)</code>', r.text).group(1)
    assert "<script>" not in r.text.split("</header>", 1)[1] and "&lt;script&gt;alert(2)" in r.text
    (row,) = query(db, "SELECT * FROM webhook_subscriptions")
    assert row["secret"] == secret and row["events"] == ",call.ended,lead.opted_out,"
    assert secret not in c.get("/webhooks").text and secret not in c.get(f"/webhooks/{row['id']}").text
    # a test event: the server's worker posts it to the receiver, signed
    r = c.post(f"/webhooks/{row['id']}/test", {"csrf_token": token})
    assert r.status == 200 and "Test event evt_" in r.text
    until(lambda: receiver.got, what="the test event at the receiver")
    got = receiver.got[0]
    assert signed_ok(secret, got)
    body = json.loads(got["body"])
    assert body["type"] == "webhook.test" and body["account"] == "acme" and got["headers"]["Webhook-Id"] == body["id"]
    (d,) = until(lambda: [d for d in query(db, "SELECT * FROM webhook_deliveries") if d["state"] == "delivered"],
                 what="the delivery recorded")
    page = c.get(f"/webhooks/{row['id']}").text
    assert "delivered" in page and body["id"] in page and "ms</td>" in page
    # redeliver: the same event id again
    r = c.post(f"/webhooks/deliveries/{d['id']}/redeliver", {"csrf_token": token})
    assert r.status == 200 and "queued again" in r.text
    until(lambda: len(receiver.got) == 2, what="the redelivery")
    assert receiver.got[1]["headers"]["Webhook-Id"] == body["id"] and signed_ok(secret, receiver.got[1])
    # rotate: a new secret shown once; the next delivery carries both signatures
    r = c.post(f"/webhooks/{row['id']}/rotate", {"csrf_token": token})
    new = re.search(r'<code id="secret">(whsec_[A-Za-z0-9_-]+)</code>', r.text).group(1)
    assert new != secret and "previous secret also signs until" in r.text
    # disable, enable, remove
    assert c.post(f"/webhooks/{row['id']}/disable", {"csrf_token": token}).status == 200
    r = c.post(f"/webhooks/{row['id']}/test", {"csrf_token": token})
    assert r.status == 409 and "is disabled: enable it first" in r.text
    assert c.post(f"/webhooks/{row['id']}/enable", {"csrf_token": token}).status == 200
    r = c.post(f"/webhooks/{row['id']}/remove", {"csrf_token": token})
    assert r.status == 200 and "removed" in r.text and "No webhook yet" in r.text
    assert c.get(f"/webhooks/{row['id']}").status == 404


def test_another_account_roles_and_csrf(site):
    server, db, receiver = site
    s = Store(db)
    try:
        sub = wh.add_subscription(s, "acme", receiver.url, "call.ended", NOW, "t")
        wh.send_test(s, "acme", sub["id"], NOW, "t")
    finally:
        s.close()
    (d,) = until(lambda: [d for d in query(db, "SELECT * FROM webhook_deliveries WHERE subscription_id = ?",
                                           (sub["id"],)) if d["state"] == "delivered"], what="acme's delivery")
    gus = logged_in(server, "globex", "gus")
    token = gus.csrf("/webhooks")
    before = (query(db, "SELECT * FROM webhook_subscriptions WHERE id = ?", (sub["id"],)),
              query(db, "SELECT * FROM webhook_deliveries"), query(db, "SELECT COUNT(*) AS n FROM audit_log"))
    page = gus.get("/webhooks").text
    assert receiver.url not in page and "No webhook yet" in page and "No delivery yet" in page
    missing = gus.get("/webhooks/999999")
    r = gus.get(f"/webhooks/{sub['id']}")
    assert r.status == 404 and r.body == missing.body
    for action in ("test", "rotate", "disable", "enable", "remove"):
        assert gus.post(f"/webhooks/{sub['id']}/{action}", {"csrf_token": token}).status == 404, action
    assert gus.post(f"/webhooks/deliveries/{d['id']}/redeliver", {"csrf_token": token}).status == 404
    after = (query(db, "SELECT * FROM webhook_subscriptions WHERE id = ?", (sub["id"],)),
             query(db, "SELECT * FROM webhook_deliveries"), query(db, "SELECT COUNT(*) AS n FROM audit_log"))
    assert after == before
    # roles: webhooks are the owner's
    for user in ("max", "sue", "alan"):
        r = logged_in(server, "acme", user).get("/webhooks")
        assert r.status == 403 and "may not use this page" in r.text
    # CSRF and Origin
    olive = logged_in(server)
    tok = olive.csrf("/webhooks")
    n = len(query(db, "SELECT * FROM webhook_subscriptions"))
    for data, headers in (({}, {}), ({"csrf_token": "forged" + tok[6:]}, {}),
                          ({"csrf_token": tok}, {"Origin": "http://evil.example"})):
        r = olive.post("/webhooks", {**data, "url": receiver.url, "events": "call.ended"}, headers=headers)
        assert r.status == 403
        assert olive.post(f"/webhooks/{sub['id']}/remove", data, headers=headers).status == 403
    assert len(query(db, "SELECT * FROM webhook_subscriptions")) == n
    assert query(db, "SELECT removed_at FROM webhook_subscriptions WHERE id = ?", (sub["id"],))[0]["removed_at"] is None

"""The owner's account screens over real HTTP (a ``dialer web`` process on a real
database): the account page, numbers (caller IDs), trunks with "check registration"
(over real SIP: SIPp as the registrar, the server's own SIP worker), the billing
overview. Roles (only owners), the account boundary (another account's numbers and
trunks answer 404 and change nothing), CSRF and Origin, escaping."""

import datetime as dt
import re
import threading
import time

import pytest

from core.store import Store
from dialer import trunks
from web_harness import NOW, Client, Server, seed, logged_in, query as q

from sip_harness import IP, free_udp_port, needs_sip

SECRET = "tr0mb0ne-s3cret"
XSS = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from billing.invoices import run
    from billing.ledger import topup
    db = tmp_path_factory.mktemp("account") / "dialer.db"
    ids = seed(db)
    s = Store(db)
    try:
        # globex's own trunk and number: the names acme must never reach
        from campaigns.store import add_number
        add_number(s, "globex", "+1 303 555 0199", NOW, "test")
        trunks.add_trunk(s, "globex", "globex-carrier", "10.9.9.9:5060", NOW, "test", username="gx", password=SECRET,
                         register=True)
        # acme: a payment, an issued invoice (October) and the draft of November
        topup(s, "acme", "250", NOW - dt.timedelta(days=40), "test", "wire 42")
        run(s, "acme", "2026-10", NOW, "test")
        run(s, "acme", "2026-11", NOW, "test")
        # the campaign 'spring' calls with acme's number
        s.execute("UPDATE campaigns SET caller_id = '+12125550000' WHERE id = ?", (ids["spring"],))
    finally:
        s.close()
    server = Server(db)
    yield server, db, ids
    server.stop()


PAGES = ("/account", "/account/numbers", "/account/trunks", "/account/billing")


def test_only_owners_see_and_change_the_account(site):
    server, db, _ = site
    owner = logged_in(server)
    for path in PAGES:
        r = owner.get(path)
        assert r.status == 200, (path, r.text)
    assert 'href="/account"' in owner.get("/campaigns").text
    home = owner.get("/account").text
    for link in ("/users", "/account/numbers", "/account/trunks", "/account/billing"):
        assert f'href="{link}"' in home
    before = q(db, "SELECT COUNT(*) AS n FROM account_numbers")[0]["n"], q(db, "SELECT COUNT(*) AS n FROM trunks")[0]["n"]
    for user in ("max", "sue", "alan"):  # manager, supervisor, agent
        c = logged_in(server, "acme", user)
        assert 'href="/account"' not in c.get("/me").text
        for path in PAGES + ("/account/trunks/nope",):
            r = c.get(path)
            assert r.status == 403 and "may not use this page" in r.text, (user, path)
        token = c.csrf("/me")
        for path, data in (("/account/numbers", {"number": "+1 212 555 0177"}),
                           ("/account/numbers/remove", {"number": "+1 212 555 0000"}),
                           ("/account/trunks", {"name": "sneaky", "proxy": "10.0.0.1"}),
                           ("/account/trunks/globex-carrier/check", {})):
            r = c.post(path, {"csrf_token": token, **data})
            assert r.status == 403, (user, path, r.status)
    after = q(db, "SELECT COUNT(*) AS n FROM account_numbers")[0]["n"], q(db, "SELECT COUNT(*) AS n FROM trunks")[0]["n"]
    assert after == before


def test_numbers_add_label_escaped_and_safe_remove(site):
    server, db, _ = site
    c = logged_in(server)
    token = c.csrf("/account/numbers")
    r = c.post("/account/numbers", {"csrf_token": token, "number": "(212) 555-0123", "label": XSS, "region": "US"})
    assert r.status == 200 and "+12125550123 added." in r.text
    assert XSS not in r.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    assert q(db, "SELECT label FROM account_numbers WHERE number = '+12125550123'")[0]["label"] == XSS
    # a bad number: one message, nothing added
    n = len(q(db, "SELECT id FROM account_numbers"))
    r = c.post("/account/numbers", {"csrf_token": token, "number": "555-CALL-NOW"})
    assert r.status == 400 and "is not a valid phone number" in r.text
    assert len(q(db, "SELECT id FROM account_numbers")) == n
    # the campaign's caller ID cannot go: the page says who uses it
    page = c.get("/account/numbers").text
    assert re.search(r"\+12125550000</td>\s*<td[^>]*>[^<]*</td>\s*<td>campaign spring", page)
    r = c.post("/account/numbers/remove", {"csrf_token": token, "number": "+12125550000"})
    assert r.status == 409 and "+12125550000 cannot be removed: campaign(s) spring call with it" in r.text
    assert q(db, "SELECT COUNT(*) AS n FROM account_numbers WHERE number = '+12125550000'")[0]["n"] == 1
    # a free one goes, audited
    r = c.post("/account/numbers/remove", {"csrf_token": token, "number": "+12125550123"})
    assert r.status == 200 and "+12125550123 removed." in r.text
    assert not q(db, "SELECT id FROM account_numbers WHERE number = '+12125550123'")
    assert q(db, "SELECT actor FROM audit_log WHERE action = 'number.remove'")[0]["actor"].endswith("olive")


def test_another_accounts_numbers_and_trunks_answer_404(site):
    server, db, _ = site
    c = logged_in(server)  # acme's owner
    token = c.csrf("/account/trunks")
    missing = c.get("/account/trunks/no-such-trunk")
    assert missing.status == 404
    for method, path, data in (("GET", "/account/trunks/globex-carrier", None),
                               ("POST", "/account/trunks/globex-carrier/check", {}),
                               ("POST", "/account/trunks/globex-carrier/remove", {}),
                               ("POST", "/account/numbers/remove", {"number": "+1 303 555 0199"})):
        r = c.get(path) if method == "GET" else c.post(path, {"csrf_token": token, **data})
        assert r.status == 404, (path, r.status)
        assert r.text == missing.text  # the same page as a name that does not exist
    assert q(db, "SELECT t.name FROM trunks t JOIN accounts a ON a.id = t.account_id WHERE a.name = 'globex'")
    assert q(db, "SELECT number FROM account_numbers WHERE number = '+13035550199'")
    assert not q(db, "SELECT id FROM trunk_registrations")
    # and globex's pages show nothing of acme's
    g = logged_in(server, "globex", "gus")
    page = g.get("/account/numbers").text
    assert "+13035550199" in page and "+12125550000" not in page


def test_trunks_add_without_showing_the_password_and_csrf(site):
    server, db, _ = site
    c = logged_in(server)
    token = c.csrf("/account/trunks")
    form = {"name": "carrier-x", "proxy": "sip:10.0.0.7:5070", "username": XSS, "password": SECRET,
            "register": "yes", "cps": "12.5"}
    # no token, a wrong token, a foreign Origin: refused, nothing added
    assert c.post("/account/trunks", form).status == 403
    assert c.post("/account/trunks", {**form, "csrf_token": "x" * 43}).status == 403
    assert c.post("/account/trunks", {**form, "csrf_token": token},
                  headers={"Origin": "http://evil.example"}).status == 403
    assert not q(db, "SELECT id FROM trunks WHERE name = 'carrier-x'")
    # bad input: one message, the password not sent back
    r = c.post("/account/trunks", {**form, "csrf_token": token, "cps": "fast"})
    assert r.status == 400 and "cps &#39;fast&#39; is not a number" in r.text and SECRET not in r.text
    r = c.post("/account/trunks", {**form, "csrf_token": token})
    assert r.status == 303 and r.header("location") == "/account/trunks/carrier-x"
    for path in ("/account/trunks", "/account/trunks/carrier-x"):
        page = c.get(path).text
        assert "10.0.0.7:5070" in page and SECRET not in page
        assert XSS not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert q(db, "SELECT password FROM trunks WHERE name = 'carrier-x'")[0]["password"] == SECRET
    # removing: CSRF first, then gone
    assert c.post("/account/trunks/carrier-x/remove").status == 403
    r = c.post("/account/trunks/carrier-x/remove", {"csrf_token": token})
    assert r.status == 303 and not q(db, "SELECT id FROM trunks WHERE name = 'carrier-x'")


def test_a_trunk_that_does_not_register_has_nothing_to_check(site):
    server, db, _ = site
    c = logged_in(server)
    token = c.csrf("/account/trunks")
    assert c.post("/account/trunks", {"csrf_token": token, "name": "plain", "proxy": "10.0.0.8"}).status == 303
    r = c.post("/account/trunks/plain/check", {"csrf_token": token})
    assert r.status == 200 and "this trunk does not register" in r.text


def test_billing_overview(site):
    server, db, _ = site
    c = logged_in(server)
    page = c.get("/account/billing").text
    assert re.search(r'id="balance">\$[\d,.-]+<', page)
    assert 'id="floor">$100.000000' in page
    assert 'id="standing"' in page
    assert "A1-2026-11" in page and "A1-2026-10" in page
    assert re.search(r"A1-2026-11 · 2026-11 · <span class=\"state draft\">draft", page)
    assert re.search(r"A1-2026-10 · 2026-10 · <span class=\"state issued\">issued", page)
    assert "account fee" in page and "Amount due" in page
    # read only: no form on the page but the logout
    assert page.count("<form") == 1


# --------------------------------------------------------------------------------- over real SIP

def _registrar_args(user="trunk1", password="s3cret"):
    return ("-key", "user", user, "-key", "password", password)


def _add(c, token, name, proxy):
    r = c.post("/account/trunks", {"csrf_token": token, "name": name, "proxy": proxy, "username": "trunk1",
                                   "password": "s3cret", "register": "yes"})
    assert r.status == 303, r.text


@needs_sip
def test_check_registration_over_real_sip(site, sipp):
    """The button registers once from a SIP worker of the server's (its own reactor,
    not blocked meanwhile) against SIPp registrars: measured, recorded, the ALERT above
    100 ms, and the cause of a failure."""
    server, db, _ = site
    c = logged_in(server)
    token = c.csrf("/account/trunks")
    good = sipp("uas_registrar.xml", *_registrar_args(), calls=1)
    slow = sipp("uas_registrar_slow.xml", *_registrar_args(), calls=1)
    _add(c, token, "good", f"{IP}:{good.port}")
    _add(c, token, "slow", f"{IP}:{slow.port}")
    _add(c, token, "dead", f"{IP}:{free_udp_port()}")

    r = c.post("/account/trunks/good/check", {"csrf_token": token})
    assert r.status == 200, r.text
    ms = float(re.search(r'id="check-ms">([\d.]+)<', r.text).group(1))
    assert 0 < ms < 100 and 'id="check-alert"' not in r.text and "(within 100 ms)" in r.text
    reg = q(db, "SELECT r.code, r.ms, r.alert FROM trunk_registrations r JOIN trunks t ON t.id = r.trunk_id "
                "WHERE t.name = 'good'")
    assert reg == [{"code": 200, "ms": ms, "alert": 0}]

    r = c.post("/account/trunks/slow/check", {"csrf_token": token})
    ms_slow = float(re.search(r'id="check-ms">([\d.]+)<', r.text).group(1))
    assert 150 <= ms_slow < 1000 and 'id="check-alert">ALERT' in r.text
    assert "above the 100 ms the terms of service require" in r.text
    assert "ALERT" in c.get("/account/trunks").text  # the list shows the last measured registration

    # an unreachable proxy: the answer waits for the deadline (5 s), the server meanwhile serves
    box = {}
    t = threading.Thread(target=lambda: box.update(r=c.post("/account/trunks/dead/check", {"csrf_token": token})))
    t.start()
    other = Client(server)
    served = 0
    while t.is_alive():
        t0 = time.monotonic()
        assert other.get("/login").status == 200
        assert time.monotonic() - t0 < 1.0
        served += 1
    t.join()
    r = box["r"]
    assert served > 5
    assert r.status == 200 and 'id="check-failed"' in r.text
    assert "registration timed out after 5 s: proxy" in r.text and "unreachable?" in r.text
    assert q(db, "SELECT r.code FROM trunk_registrations r JOIN trunks t ON t.id = r.trunk_id "
                 "WHERE t.name = 'dead'") == [{"code": 408}]
    print(f"check registration over the web: {ms} ms (slow registrar: {ms_slow} ms)")

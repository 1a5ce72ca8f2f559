"""The owner's API tokens page in a real browser (headless Chromium, as
tests/test_web_browser.py): from the people page to the tokens page, a token made and
shown once, used against the JSON API, then revoked there (the API refuses it). The
screenshot is docs/screenshots/api-tokens.png."""

import json

from test_web_browser import browsers, by_id, login, pytestmark, shot, wait  # noqa: F401 (fixture, marks)
from web_harness import Client, Server, seed

import pytest


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    db = tmp_path_factory.mktemp("tokens-browser") / "dialer.db"
    seed(db)
    server = Server(db)
    yield server
    server.stop()


def test_owner_makes_uses_and_revokes_a_token(site, browsers):
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select
    server = site
    b = browsers()
    login(b, server, "acme", "olive")
    b.get(server.url + "/users")
    by_id(b, "tokens-link").click()
    wait(b, EC.presence_of_element_located(("id", "token-create")))
    by_id(b, "token-name").send_keys("crm-sync")
    Select(by_id(b, "token-role")).select_by_visible_text("manager")
    by_id(b, "token-create").click()
    secret = wait(b, EC.presence_of_element_located(("id", "secret"))).text
    assert secret.startswith("dk_")
    shot(b, "api-tokens")
    api = Client(server)
    me = api.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status == 200 and json.loads(me.body)["token"] == {"id": me.json()["token"]["id"], "name": "crm-sync",
                                                                "role": "manager"}
    b.get(server.url + "/tokens")  # shown once: not on the page any more
    assert secret not in b.page_source and "crm-sync" in b.page_source
    b.find_element("css selector", "button.revoke").click()
    wait(b, lambda d: "revoked" in d.find_element("id", "tokens").text)
    assert api.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"}).status == 401

"""The web application in a real browser: Debian's Chromium, headless, driven by
Selenium through chromedriver, against a ``dialer web`` process on a real database.

Log in; create a campaign and see why it cannot start; upload a list with bad rows
(progress shown), download its per-row report; the screening preview and the dry-run
chart; fix the caller ID and start the campaign; the owner's people screen; a second
login of the same user ends the first browser's session, which is told why.
Screenshots of each screen go to docs/screenshots/."""

import csv
import os
import pathlib
import shutil
import tempfile

import pytest

from web_harness import PASSWORD, ROOT, Server, seed

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), "/usr/bin/chromedriver"
try:
    import selenium  # noqa: F401
    HAVE_SELENIUM = True
except ImportError:
    HAVE_SELENIUM = False

pytestmark = [
    pytest.mark.skipif(not HAVE_SELENIUM, reason="selenium is not installed (pip install -e '.[test]')"),
    pytest.mark.skipif(CHROMIUM is None or not os.path.exists(CHROMEDRIVER),
                       reason="Debian's chromium and chromium-driver are not installed "
                              "(apt-get install chromium chromium-driver; scripts/test.sh does it)"),
    pytest.mark.timeout(300),
]

SHOTS = pathlib.Path(ROOT) / "docs" / "screenshots"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    db = tmp_path_factory.mktemp("browser") / "dialer.db"
    ids = seed(db)
    server = Server(db)
    yield server, db, ids
    server.stop()


@pytest.fixture
def browsers():
    """Headless Chromium instances, each with a fresh profile and a downloads folder."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    made = []

    def make():
        profile, downloads = tempfile.mkdtemp(prefix="chromium-"), tempfile.mkdtemp(prefix="downloads-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--no-proxy-server", "--window-size=1280,900",
                    f"--user-data-dir={profile}"):
            opts.add_argument(arg)
        opts.add_experimental_option("prefs", {"download.default_directory": downloads,
                                               "download.prompt_for_download": False})
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        driver.downloads = downloads
        made.append((driver, profile, downloads))
        return driver

    yield make
    for driver, profile, downloads in made:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(downloads, ignore_errors=True)


def wait(driver, condition, timeout=30, poll=0.05):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout, poll_frequency=poll).until(condition)


def shot(driver, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def by_id(driver, element_id):
    from selenium.webdriver.common.by import By
    return driver.find_element(By.ID, element_id)


def login(driver, server, account, user, password=PASSWORD, screenshot=None):
    from selenium.webdriver.support import expected_conditions as EC
    driver.get(server.url + "/login")
    by_id(driver, "account").send_keys(account)
    by_id(driver, "user").send_keys(user)
    by_id(driver, "password").send_keys(password)
    if screenshot:
        shot(driver, screenshot)
    by_id(driver, "login").click()
    wait(driver, EC.presence_of_element_located(("id", "who")))


def test_manager_path_in_a_browser(site, browsers, tmp_path):
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select
    server, db, ids = site
    b = browsers()
    login(b, server, "acme", "max", screenshot="01-login")
    assert b.current_url.endswith("/campaigns")
    shot(b, "02-campaigns")

    # a new campaign without its caller ID: the start is refused, and the page says why
    by_id(b, "new-campaign").click()
    wait(b, EC.presence_of_element_located(("id", "name")))
    by_id(b, "name").send_keys("winter")
    Select(by_id(b, "dial_mode")).select_by_visible_text("progressive")
    shot(b, "03-campaign-new")
    by_id(b, "save").click()
    wait(b, EC.presence_of_element_located(("id", "start")))
    by_id(b, "start").click()
    error = wait(b, EC.visibility_of_element_located(("id", "error")))
    assert "cannot start" in error.text and "caller ID" in error.text
    assert by_id(b, "state").text == "draft"
    shot(b, "04-campaign-start-refused")

    # a list with bad rows: progress while it imports, then its report
    rows = [("Mobile", "Who", "Note")] + [(f"212-555-{1000 + i:04d}", f"lead {i}", "") for i in range(400)]
    rows += [("555-CALL", "bad", ""), ("=HYPERLINK(1)", "bad", ""), ("212-555-1000", "dup", ""),
             ("305-555-0101", "<script>alert(1)</script>", "<b>custom</b>")]
    path = tmp_path / "winter-list.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    by_id(b, "upload-link").click()
    wait(b, EC.presence_of_element_located(("id", "drop")))
    by_id(b, "map").send_keys("phone=Mobile,name=Who")
    shot(b, "05-upload")
    by_id(b, "file").send_keys(str(path))
    wait(b, EC.visibility_of_element_located(("id", "progress")))
    shot(b, "06-upload-progress")
    wait(b, EC.url_contains("/imports/"))
    wait(b, EC.presence_of_element_located(("id", "import-status")))
    assert by_id(b, "imported").text == "401" and by_id(b, "rejected").text == "2"
    assert by_id(b, "duplicates").text == "1"
    shot(b, "07-import-done")
    by_id(b, "errors-csv").click()
    downloads = pathlib.Path(b.downloads)
    report = wait(b, lambda _: next((p for p in downloads.glob("*.csv")), None))
    lines = report.read_text().splitlines()
    assert lines[0] == "row,column,value,reason" and len(lines) == 4
    assert any(",'=HYPERLINK(1)," in line for line in lines)  # neutralised against formula injection

    # the screening preview, by outcome and reason
    by_id(b, "preview-link").click()
    wait(b, EC.presence_of_element_located(("id", "outcomes")))
    assert int(by_id(b, "campaign-wide").text) == 401  # no caller ID yet: every lead waits for it
    assert "<script>" not in b.page_source.replace('<script src="/static/', "")
    shot(b, "08-preview")

    # the caller ID given, the campaign starts
    camp_url = b.current_url.split("/preview")[0]
    b.get(camp_url + "/edit")
    wait(b, EC.presence_of_element_located(("id", "caller_id")))
    by_id(b, "caller_id").send_keys("+1 212 555 0000")
    shot(b, "10-campaign-edit")
    by_id(b, "save").click()
    wait(b, EC.text_to_be_present_in_element(("id", "caller-id"), "+12125550000"))
    by_id(b, "start").click()
    wait(b, EC.text_to_be_present_in_element(("id", "state"), "running"))
    shot(b, "11-campaign-running")

    # the dry run as a chart of dialable leads per hour (212 and 305: New York's and Florida's hours)
    b.get(camp_url + "/dry-run?from=2026-11-24T05:00Z&to=2026-11-25T05:00Z")
    wait(b, lambda d: by_id(d, "dryrun-chart").get_attribute("data-drawn") == "yes")
    cells = [r.text for r in b.find_elements("css selector", "#dryrun-table tbody tr td:nth-child(2)")]
    assert len(cells) == 24 and cells[0] == "0" and "401" in cells  # 00:00 in New York: nobody; midday: all
    shot(b, "09-dry-run")
    b.get(camp_url + "/results")
    wait(b, EC.presence_of_element_located(("id", "call-stats")))
    shot(b, "12-results")
    # the screens show the lead's markup as text, and the browser ran none of it
    assert b.execute_script("return document.querySelectorAll('script:not([src]):not([type])').length") == 0


def test_owner_people_screen(site, browsers):
    from selenium.webdriver.support import expected_conditions as EC
    server, db, ids = site
    b = browsers()
    login(b, server, "acme", "olive")
    b.get(server.url + "/users")
    by_id(b, "invite-name").send_keys("nora")
    by_id(b, "invite").click()
    otp = wait(b, EC.visibility_of_element_located(("id", "otp"))).text
    assert len(otp) == 16
    shot(b, "13-people")


def test_a_second_login_ends_the_first_session(site, browsers):
    from selenium.webdriver.support import expected_conditions as EC
    server, db, ids = site
    first, second = browsers(), browsers()
    login(first, server, "acme", "sue")
    login(second, server, "acme", "sue")
    # the first page asks whether its session is still open (every 15 s, and when it is
    # shown again): told without anyone clicking
    first.execute_script("document.dispatchEvent(new Event('visibilitychange'))")
    notice = wait(first, EC.visibility_of_element_located(("id", "ended")))
    assert "logged in elsewhere" in notice.text
    assert first.current_url.endswith("/login?ended=elsewhere")
    shot(first, "14-logged-in-elsewhere")
    second.refresh()
    assert second.current_url.endswith("/campaigns")


def test_the_live_channel_tells_the_first_browser_at_once(site, browsers):
    """The first page's WebSocket (live.js, to /live: allowed by the CSP's connect-src
    'self') hears that a second login ended its session, and the page goes to the login
    page saying why: nothing clicked, no event dispatched, and its /session/state poll
    made unable to answer, so only the socket can have told it."""
    from selenium.webdriver.support import expected_conditions as EC
    server, db, ids = site
    first, second = browsers(), browsers()
    login(first, server, "acme", "sue")
    wait(first, lambda d: d.execute_script("return window.dialer.live.connected()"))
    first.execute_script("""var f = window.fetch; window.fetch = function (url, opts) {
        if (String(url).indexOf('/session/state') >= 0) return new Promise(function () {});
        return f(url, opts); };""")
    login(second, server, "acme", "sue")
    notice = wait(first, EC.visibility_of_element_located(("id", "ended")), timeout=10)
    assert "logged in elsewhere" in notice.text
    assert first.current_url.endswith("/login?ended=elsewhere")
    assert wait(second, lambda d: d.execute_script("return window.dialer.live.connected()"))


def test_compliance_edit_a_rule_with_a_bad_value_then_a_good_one(site, browsers):
    """The operator account's compliance officer: a bad value gets one clear message
    naming the field and changes nothing; a good one shows its diff, is saved with its
    reason, and its audit entry is in the trail. Screenshots of the compliance screens."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from campaigns.store import add_user, set_operator
    from campaigns.users import set_password
    from core.store import Store
    from web_harness import NOW
    server, db, ids = site

    def us_version():
        s = Store(db)
        try:
            return s.query_one("SELECT MAX(version) AS v FROM rule_set_versions WHERE jurisdiction = 'US'")["v"]
        finally:
            s.close()

    s = Store(db)
    try:
        set_operator(s, "acme", NOW, "test")
        add_user(s, "acme", "carla", "compliance", NOW, "test")
        set_password(s, "acme", "carla", PASSWORD, NOW, "test")
    finally:
        s.close()
    b = browsers()
    login(b, server, "acme", "carla")
    by_id(b, "compliance-link").click()
    wait(b, EC.presence_of_element_located(("id", "rulesets")))
    shot(b, "compliance-rules")
    by_id(b, "ruleset-US").click()
    wait(b, EC.presence_of_element_located(("id", "windows")))
    v0 = us_version()
    assert by_id(b, "version").text == f"version {v0}"
    shot(b, "compliance-ruleset")

    # a bad value: above the legal 3 % abandon cap
    by_id(b, "rule-field").send_keys("rules.abandon.max_rate")
    by_id(b, "rule-value").send_keys("0.05")
    by_id(b, "rule-reason").send_keys("our own policy: 2 %")
    by_id(b, "rule-preview").click()
    error = wait(b, EC.visibility_of_element_located(("id", "error")))
    assert "rules.abandon.max_rate" in error.text and "at most 0.03" in error.text
    assert by_id(b, "version").text == f"version {v0}" and us_version() == v0  # nothing changed
    shot(b, "compliance-rule-bad-value")

    # a good one: the diff first, then saved with its reason
    value = by_id(b, "rule-value")
    value.clear()
    value.send_keys("0.02")
    by_id(b, "rule-preview").click()
    wait(b, EC.presence_of_element_located(("id", "diff")))
    cells = [td.text for td in b.find_elements(By.CSS_SELECTOR, "#diff tbody td")]
    assert cells == ["rules.abandon.max_rate", "0.03", "0.02"]
    assert by_id(b, "confirm-reason").text == "our own policy: 2 %" and us_version() == v0
    shot(b, "compliance-rule-diff")
    by_id(b, "rule-save").click()
    notice = wait(b, EC.visibility_of_element_located(("id", "notice")))
    assert f"version {v0 + 1}" in notice.text and by_id(b, "version").text == f"version {v0 + 1}"
    assert us_version() == v0 + 1
    shot(b, "compliance-rule-saved")

    # its audit entry, and the chain verified
    by_id(b, "nav-audit").click()
    wait(b, EC.presence_of_element_located(("id", "audit")))
    first = b.find_element(By.CSS_SELECTOR, "#audit tbody tr")
    assert "rules.version" in first.text and "our own policy: 2 %" in first.text and "web:acme/carla" in first.text
    by_id(b, "verify").click()
    assert wait(b, EC.visibility_of_element_located(("id", "chain-state"))).text == "The chain is intact."
    shot(b, "compliance-audit")

    # the account's own DNC list, and may this number be called
    by_id(b, "nav-dnc").click()
    wait(b, EC.presence_of_element_located(("id", "registries")))
    by_id(b, "dnc-add-numbers").send_keys("212-555-0142")
    by_id(b, "dnc-add-reason").send_keys("<b>asked not to be called</b>")
    by_id(b, "dnc-add").click()
    wait(b, EC.text_to_be_present_in_element(("id", "notice"), "Added 1"))
    assert "<b>asked not to be called</b>" in by_id(b, "dnc-entries").text  # markup shown as text
    shot(b, "compliance-dnc")
    by_id(b, "nav-check").click()
    by_id(b, "check-numbers").send_keys("212-555-0142")
    by_id(b, "check-at").send_keys("2026-11-24T17:00Z")
    by_id(b, "check").click()
    answer = wait(b, EC.visibility_of_element_located(("id", "answer-1")))
    assert answer.text == "may NOT be called" and "DNC" in by_id(b, "verdict-1").text.upper()
    assert by_id(b, "ruleset-1").text == f"US@{v0 + 1}"
    shot(b, "compliance-check")


def test_owner_webhooks_screen(site, browsers):
    """The owner adds a webhook (the secret shown once), sends a test event, and sees
    the server's worker's attempt in the delivery log (a .invalid host never resolves:
    the attempt's error and its next retry)."""
    from selenium.webdriver.support import expected_conditions as EC
    server, db, ids = site
    b = browsers()
    login(b, server, "acme", "olive")
    by_id(b, "webhooks-link").click()
    by_id(b, "webhook-url").send_keys("https://crm.example.invalid/hooks/dialer")
    by_id(b, "webhook-label").send_keys("<b>CRM</b>")
    by_id(b, "add-webhook-button").click()
    secret = wait(b, EC.visibility_of_element_located(("id", "secret"))).text
    assert secret.startswith("whsec_")
    assert "<b>CRM</b>" in by_id(b, "webhooks").text  # markup shown as text
    b.find_element("css selector", "#webhooks button.test").click()
    wait(b, EC.text_to_be_present_in_element(("id", "done"), "Test event"))

    def attempted(driver):
        driver.get(server.url + "/webhooks")  # the log is not live: load it until the worker's attempt is in it
        return "cannot resolve" in by_id(driver, "log").text
    wait(b, attempted, timeout=30, poll=0.5)
    assert secret not in b.page_source
    shot(b, "webhooks")


def test_owner_account_screens(site, browsers, sipp):
    """The owner's account page and its screens: a number added with a label (markup
    shown as text) and the campaign's caller ID refused removal with the reason; a trunk
    added and its registration checked over real SIP (a SIPp registrar: the measured ms;
    a slow one: the ALERT); the billing overview with the draft invoice's lines."""
    from selenium.webdriver.support import expected_conditions as EC
    from billing.invoices import run
    from core.store import Store
    from sip_harness import HAVE_PJSUA2, IP, SIPP
    from web_harness import NOW
    server, db, ids = site
    s = Store(db)
    try:
        s.execute("UPDATE campaigns SET caller_id = '+12125550000' WHERE id = ?", (ids["spring"],))
        run(s, "acme", "2026-11", NOW, "test")
    finally:
        s.close()
    b = browsers()
    login(b, server, "acme", "olive")
    by_id(b, "account-link").click()
    wait(b, EC.presence_of_element_located(("id", "account-facts")))
    shot(b, "account-1-account")

    by_id(b, "numbers-link").click()
    by_id(b, "number").send_keys("(212) 555-0142")
    by_id(b, "label").send_keys("<i>sales</i> line")
    by_id(b, "add-number").click()
    wait(b, EC.text_to_be_present_in_element(("id", "done"), "+12125550142 added."))
    assert "<i>sales</i> line" in by_id(b, "numbers").text  # markup shown as text
    row = next(r for r in b.find_elements("css selector", "#numbers tbody tr") if "+12125550000" in r.text)
    assert "campaign spring" in row.text
    row.find_element("css selector", "button.remove").click()
    error = wait(b, EC.visibility_of_element_located(("id", "error")))
    assert "+12125550000 cannot be removed: campaign(s) spring" in error.text
    shot(b, "account-2-numbers")

    b.get(server.url + "/account/trunks")
    sip = SIPP and HAVE_PJSUA2
    if sip:
        registrar = sipp("uas_registrar_slow.xml", "-key", "user", "trunk1", "-key", "password", "s3cret", calls=1)
        proxy = f"{IP}:{registrar.port}"
    else:
        proxy = "sip.carrier.example:5060"
    by_id(b, "name").send_keys("carrier-a")
    by_id(b, "proxy").send_keys(proxy)
    by_id(b, "username").send_keys("trunk1")
    by_id(b, "password").send_keys("s3cret")
    by_id(b, "register").click()
    shot(b, "account-3-trunks")
    by_id(b, "add-trunk").click()
    wait(b, EC.presence_of_element_located(("id", "trunk-facts")))
    assert "s3cret" not in b.page_source
    if sip:
        by_id(b, "check").click()
        result = wait(b, EC.visibility_of_element_located(("id", "check-result")), timeout=60)
        ms = float(by_id(b, "check-ms").text)
        assert ms > 100 and by_id(b, "check-alert").text == "ALERT" and "terms of service" in result.text
        assert "ALERT" in by_id(b, "registrations").text
    shot(b, "account-4-trunk-check")

    b.get(server.url + "/account/billing")
    wait(b, EC.presence_of_element_located(("id", "invoice-2026-11")))
    assert by_id(b, "floor").text.startswith("$100.000000")
    assert "account fee" in by_id(b, "invoice-2026-11").text and "draft" in by_id(b, "invoice-2026-11").text
    b.execute_script("arguments[0].scrollIntoView()", by_id(b, "ledger"))
    shot(b, "account-5-billing")

"""The web server as the tests meet it: ``dialer web --port 0`` in a child process on a
real database, and a small HTTP client with a cookie jar (http.client: no proxy)."""

import datetime as dt
import http.client
import json
import os
import pathlib
import re
import subprocess
import sys
import time
import urllib.parse

from campaigns.store import add_number, add_user, create_account, create_campaign
from campaigns.users import set_password
from core.store import Store

NOW = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.timezone.utc)
PASSWORD = "correct horse battery"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def seed(db_path):
    """Two accounts. acme: owner olive, manager max, supervisor sue, agent alan, a
    number, a campaign 'spring'. globex: owner gus and its own campaign 'rival'."""
    from rules.service import import_dnc
    from core.timeutil import system_now
    s = Store(db_path)
    try:
        reg = pathlib.Path(f"{db_path}.registry.txt")
        reg.write_text("212,5550199\n")  # a national registry copy as of today: dialing is not blocked for want of one
        today = system_now()
        import_dnc(s, reg, today, "test", source="national", as_of=today.date().isoformat())
        for acc, people in (("acme", (("olive", "owner"), ("max", "manager"), ("sue", "supervisor"),
                                      ("alan", "agent"))),
                            ("globex", (("gus", "owner"),))):
            create_account(s, acc, NOW, "test")
            for name, role in people:
                add_user(s, acc, name, role, NOW, "test")
                set_password(s, acc, name, PASSWORD, NOW, "test")
        add_number(s, "acme", "+1 212 555 0000", NOW, "test")
        spring = create_campaign(s, "spring", "acme", NOW, "test", dial_mode="progressive")
        rival = create_campaign(s, "rival", "globex", NOW, "test", dial_mode="progressive")
        return {"spring": spring["id"], "rival": rival["id"]}
    finally:
        s.close()


class Server:
    """``dialer --db DB web --port 0 [ARGS]``; ``url`` once it listens (``scheme``: what it prints)."""

    def __init__(self, db_path, args=(), scheme="http"):
        self.log_path = f"{db_path}.web.log"  # the server's log (twisted.logger), for a failing test
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import cli; cli.main()", "--db", str(db_path), "web", "--port", "0", *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()  # blocks until the server says where it listens
        m = re.search(rf"{scheme}://127\.0\.0\.1:(\d+)/", line)
        if not m:
            self.stop()
            raise RuntimeError(f"the web server did not start: {line!r}")
        self.port = int(m.group(1))
        self.url = f"{scheme}://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    @property
    def text(self):
        return self.body.decode("utf-8")

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        return self.headers.get(name.lower())


class Client:
    """One browser's worth of cookies; never follows redirects."""

    def __init__(self, server):
        self.server = server
        self.cookies = {}
        self.set_cookie_headers = []

    def request(self, method, path, body=None, headers=None):
        connect = getattr(self.server, "connect", None)  # a server over TLS makes its own connections
        conn = connect() if connect else http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        h = dict(headers or {})
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        body = r.read()
        hdrs = {}
        for k, v in r.getheaders():
            k = k.lower()
            if k == "set-cookie":
                self.set_cookie_headers.append(v)
                name, _, rest = v.partition("=")
                value = rest.split(";", 1)[0]
                if "max-age=0" in v.lower() or not value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = value
            hdrs[k] = v
        conn.close()
        return Response(r.status, hdrs, body)

    def get(self, path, headers=None):
        return self.request("GET", path, headers=headers)

    def post(self, path, data=None, headers=None, body=None):
        h = dict(headers or {})
        if data is not None:
            body = urllib.parse.urlencode(data)
            h.setdefault("Content-Type", "application/x-www-form-urlencoded")
        return self.request("POST", path, body=body, headers=h)

    def login_token(self):
        r = self.get("/login")
        return self.cookies["dialer_login"], r

    def login(self, account, user, password=PASSWORD):
        token, _ = self.login_token()
        return self.post("/login", {"login_csrf": token, "account": account, "user": user, "password": password})

    def csrf(self, path="/password"):
        """The session's CSRF token, read from a page's meta tag."""
        m = re.search(r'<meta name="csrf-token" content="([^"]+)"', self.get(path).text)
        return m.group(1)


def logged_in(server, account="acme", user="olive"):
    """A client logged in as ``user`` of ``account`` (the login answered 303)."""
    c = Client(server)
    r = c.login(account, user)
    assert r.status == 303, r.text
    return c


def query(db, sql, params=()):
    """Rows of ``sql`` on the database file, on a connection of its own."""
    s = Store(db)
    try:
        return s.query(sql, params)
    finally:
        s.close()


def until(predicate, timeout=30.0, every=0.05, what="a condition"):
    """Wait until ``predicate()`` is truthy (returns it); fail after ``timeout`` s."""
    end = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)

"""The README's main command works end to end on an empty data directory."""

import os
import pathlib
import re
import select
import signal
import socket
import subprocess
import sys
import time
import types

import pytest
from click.testing import CliRunner

from cli import main
from sip_harness import needs_sip
from web_harness import Client

EXE = pathlib.Path(sys.executable).with_name("dialer")


class Demo:
    """``dialer demo ARGS`` in a child process; its output read line by line as it comes
    (raw reads after select: nothing waits in a reader's buffer unseen)."""

    def __init__(self, tmp_path, *args):
        env = dict(os.environ, DIALER_DATA_DIR=str(tmp_path))
        self.err = open(tmp_path / "demo.stderr", "w")
        self.proc = subprocess.Popen([str(EXE), "demo", *args], env=env, stdout=subprocess.PIPE, stderr=self.err,
                                     bufsize=0)
        self.lines, self.partial = [], b""

    def _next_line(self, end):
        while b"\n" not in self.partial:
            left = end - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError("the demo ended:\n" + "".join(self.lines) + self.partial.decode())
                self.partial += chunk
        line, _, self.partial = self.partial.partition(b"\n")
        self.lines.append(line.decode() + "\n")
        return self.lines[-1]

    def until(self, pattern, timeout=180):
        """Read lines until one matches ``pattern`` (the match); fail after ``timeout`` s."""
        end = time.monotonic() + timeout
        while True:
            line = self._next_line(end)
            if line is None:
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n" + "".join(self.lines))
            m = re.search(pattern, line)
            if m:
                return m

    def web(self):
        """The URL's port and the printed logins {user: password}."""
        port = int(self.until(r"== web: http://127\.0\.0\.1:(\d+)/").group(1))
        logins = {}
        while len(logins) < 5:
            m = self.until(r"user (\S+)\s+password (\S+)  \((\w+)\)")
            assert m.group(1) == m.group(3)
            logins[m.group(1)] = m.group(2)
        return types.SimpleNamespace(port=port), logins

    def finish(self, timeout=180):
        out, _ = self.proc.communicate(timeout=timeout)
        self.err.close()
        return "".join(self.lines) + (self.partial + out).decode()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.err.close()


def test_demo_runs_on_a_fresh_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DIALER_DATA_DIR", str(tmp_path))
    r = CliRunner().invoke(main, ["demo", "--no-sip", "--no-web"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out = r.output
    assert "national DNC registry (sample): 5 numbers, 2 junk line(s)" in out
    assert "911                BLOCKED" in out and "emergency: 911 is or reaches an emergency number" in out
    assert "list import 1: 26 rows, 24 imported, 2 rejected" in out
    assert "preview: dialable now" in out and "dry run, next 24 h" in out
    # it ends with the demo account's balance and the draft invoice of the current period
    period = re.search(r"== billing: (\d{4}-\d{2}) rated with the sample rate deck", out).group(1)
    assert "balance of account demo: $0.000000" in out
    assert f"invoice A1-{period} (DRAFT), demo {period} (UTC)" in out and "account fee, " in out
    assert out.rstrip().splitlines()[-1].strip().startswith("amount due")
    # a second run starts fresh again
    r2 = CliRunner().invoke(main, ["demo", "--no-sip", "--no-web"], catch_exceptions=False)
    assert r2.exit_code == 0 and "list import 1:" in r2.output


@needs_sip
def test_demo_dials_over_sip(tmp_path):
    """The whole product on one machine: the live campaign over SIPp carriers and SIPp
    agents, through the installed console command (its own process and reactor), with
    the browser's pages served meanwhile: the owner sees the running campaign and checks
    the demo trunk's registration over SIP. Whatever the hour: ``--clock-offset auto``
    (a hidden option of the demo alone) runs the demo on a clock shifted as little as
    needs be for a demo zone to be inside calling hours (none is from about 09:00 to
    14:00 UTC)."""
    demo = Demo(tmp_path, "--seconds", "40", "--agents", "3", "--web-port", "0", "--clock-offset", "auto")
    try:
        shift = float(demo.until(r"== demo clock: ([-+][\d.e+]+) s from the wall clock").group(1))
        assert shift >= 0
        server, logins = demo.web()
        m = demo.until(r"agents logged in over SIP|live dialing skipped: no demo time zone")
        assert "skipped" not in m.group(0), "".join(demo.lines)
        owner = _logins_work(server, logins)
        assert "demo-live" in owner.get("/campaigns").text
        token = owner.csrf("/account/trunks")
        r = owner.post("/account/trunks/demo-carrier/check", {"csrf_token": token})
        assert r.status == 200 and 'id="check-ms"' in r.text, r.text
        out = demo.finish(timeout=240)
    finally:
        demo.kill()
    assert demo.proc.returncode == 0, out
    assert "3 agents logged in over SIP" in out and "== stopping (time)" in out
    m = re.search(r"dials (\d+), live answers (\d+), connected to agents (\d+)", out)
    assert m and int(m.group(1)) > 0, out
    cdrs = int(re.search(r"CDRs written (\d+)", out).group(1))
    assert cdrs == int(m.group(1))  # every dial became a CDR
    assert "blocked by rule (never dialled): " in out and "dnc" in out.split("blocked by rule")[1]
    # the calls are rated into the draft invoice of the period
    charged = int(re.search(r"== billing: \S+ rated with the sample rate deck: (\d+) calls charged", out).group(1))
    assert charged > 0 and "(DRAFT)" in out and "telecom +1 United States and Canada" in out

def _logins_work(server, logins):
    """Each printed login opens its role's pages over HTTP; a wrong password does not."""
    c = Client(server)
    assert c.get("/login").status == 200
    r = c.login("demo", "owner", logins["owner"])
    assert r.status == 303 and r.header("location") == "/campaigns"
    for path in ("/campaigns", "/account", "/account/trunks", "/account/billing", "/users"):
        assert c.get(path).status == 200, path
    for user, home in (("manager", "/campaigns"), ("compliance", "/campaigns"), ("supervisor", "/campaigns"),
                       ("agent", "/me")):
        r = Client(server).login("demo", user, logins[user])
        assert r.status == 303 and r.header("location") == home, user
    assert Client(server).login("demo", "owner", "not the password").status == 401
    return c


def test_demo_serves_the_web_with_its_logins_and_stops_at_seconds(tmp_path):
    demo = Demo(tmp_path, "--no-sip", "--web-port", "0", "--seconds", "20")
    try:
        server, logins = demo.web()
        assert all(len(p) == 16 for p in logins.values()) and len(set(logins.values())) == 5
        demo.until(r"Ctrl-C stops the demo \(or it stops after 20 s\)")
        t0 = time.monotonic()
        owner = _logins_work(server, logins)
        assert owner.get("/account/trunks").status == 200
        out = demo.finish(timeout=120)
        waited = time.monotonic() - t0
    finally:
        demo.kill()
    assert demo.proc.returncode == 0, out
    assert "== stopping (time)" in out and waited < 60
    # the demo's own outputs are all there: the steps before, the balance and draft invoice after
    assert "list import 1: 26 rows, 24 imported, 2 rejected" in out
    assert "balance of account demo: $0.000000" in out and "(DRAFT)" in out
    assert out.rstrip().splitlines()[-1].strip().startswith("amount due")
    with pytest.raises(OSError):  # the server is gone with the demo
        socket.create_connection(("127.0.0.1", server.port), timeout=2)
    from core.store import Store
    s = Store(tmp_path / "demo.db")
    try:  # the demo account is the installation's operator (its compliance officer edits rule sets)
        assert s.query_one("SELECT operator FROM accounts WHERE name = 'demo'")["operator"] == 1
    finally:
        s.close()


def test_demo_stops_at_ctrl_c(tmp_path):
    demo = Demo(tmp_path, "--no-sip", "--web-port", "0")
    try:
        server, logins = demo.web()
        demo.until(r"Ctrl-C stops the demo$")
        assert Client(server).login("demo", "manager", logins["manager"]).status == 303
        demo.proc.send_signal(signal.SIGINT)
        out = demo.finish(timeout=120)
    finally:
        demo.kill()
    assert demo.proc.returncode == 0, out
    assert "== stopping (signal)" in out and "amount due" in out


def test_demo_says_when_its_web_port_is_taken(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        env = dict(os.environ, DIALER_DATA_DIR=str(tmp_path))
        r = subprocess.run([str(EXE), "demo", "--no-sip", "--web-port", str(port), "--seconds", "5"], env=env,
                           capture_output=True, text=True, timeout=120)
    finally:
        taken.close()
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == (f"Error: the web server cannot listen on 127.0.0.1:{port} (Address already in "
                                         f"use): choose another port with --web-port PORT (0: any free port), or "
                                         f"--no-web")
    assert "Traceback" not in r.stdout + r.stderr

"""``dialer run``, the real service, as a user runs it: a configured database (account,
SIP trunk, agent with a PIN, a running campaign), the command started as a process,
an agent's SIP phone (SIPp) logging in, SIPp as the carrier behind the trunk, the
wrap-up disposition given with ``dialer agent dispose`` from another process, and a
SIGTERM that stops it cleanly with every CDR written."""

import datetime as _dt
import os
import signal
import subprocess
import sys
import time


from campaigns.store import add_number, add_user, change_state, create_account, create_campaign
from core.store import Store
from dialer.trunks import add_trunk
from rules import service
from sip_harness import ROOT, free_udp_port, needs_sip, write_tone
from test_engine_sip import setup_campaign, when_to_test

pytestmark = needs_sip


def wait_for(pred, timeout, what, proc=None):
    """Wait for ``pred()`` (a look at the database or a process), with a deadline."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"dialer run exited ({proc.returncode}) while waiting for {what}:\n"
                                 + proc.stderr.read().decode(errors="replace")[-3000:])
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def configure(tmp_path, now, numbers, proxy, register=False):
    """The engine tests' campaign (tests/test_engine_sip.setup_campaign), progressive,
    with a SIP trunk to ``proxy`` (registering with a wrong password if asked)."""
    store = setup_campaign(tmp_path, now, numbers, mode="progressive")
    add_trunk(store, "acme", "carrier", proxy, now, "t", **({"username": "acme", "password": "wrong",
                                                              "register": True} if register else {}))
    return store


def dialer(db, *args, offset_s=0, **kw):
    """``dialer ARGS`` as a process on ``db``; with ``offset_s``, on a clock shifted that
    far (tests/shifted_cli.py: the test's clock, test_engine_sip.when_to_test)."""
    env = dict(os.environ, DIALER_DB=str(db), PYTHONPATH=str(ROOT))
    cmd = [str(ROOT / "tests" / "shifted_cli.py"), str(offset_s)] if offset_s else [str(ROOT / "cli.py")]
    return subprocess.Popen([sys.executable, *cmd, *map(str, args)], env=env, cwd=str(ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_dialer_run_end_to_end(tmp_path, sipp):
    now, area, offset = when_to_test()
    carrier = sipp("uas_answer_hold.xml", "-d", "2000", echo=True)
    store = configure(tmp_path, now, [f"{area}5550142"], f"127.0.0.1:{carrier.port}")
    db = store.path
    port = free_udp_port()
    run = dialer(db, "run", "--sip-port", port, "--workers", 2, "--drain", 5, offset_s=offset)
    try:
        # the service is up when its worker answers: the agent's phone logs in
        phone = sipp("uac_agent.xml", f"127.0.0.1:{port}", echo=True, service="agent-alice-7391", calls=1,
                     timeout=120)
        assert phone
        wait_for(lambda: store.query_one("SELECT 1 AS x FROM agent_events WHERE state = 'wrap_up'"), 60,
                 "alice's call to end (wrap-up)", run)
        # the wrap-up's disposition from the CLI, while the dialer runs
        out = dialer(db, "agent", "dispose", "alice", "--account", "acme", "--disposition", "sale",
                     "--json", offset_s=offset).communicate(timeout=60)
        import json
        res = json.loads(out[0])
        assert res["done"] and res["result"] == "done: wrap-up ended with sale", out
        wait_for(lambda: store.query_one("SELECT 1 AS x FROM cdrs WHERE agent_disposition = 'sale'"), 20,
                 "the call's record", run)
        # a command for an agent no dialer has: refused after the wait, with the reason, exit 1
        add_user(store, "acme", "bob", "agent", now, "t")
        late = dialer(db, "agent", "pause", "bob", "--account", "acme", "--wait", "1", offset_s=offset)
        o, e = late.communicate(timeout=60)
        assert late.returncode == 1 and b"no running dialer has this agent logged in" in o
        run.send_signal(signal.SIGTERM)
        o, e = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0, e.decode()[-3000:]
    text = o.decode()
    assert "dialer running: c" in text and "stopping (signal)" in text
    cdr = store.query_one("SELECT * FROM cdrs")
    assert cdr["disposition"] == "connected" and cdr["trunk"] == "carrier" and cdr["sip_code"] == 200
    assert cdr["caller_id"] == "+12125559999" and cdr["ruleset"] == "US@1"
    states = [r["state"] for r in store.query("SELECT state FROM agent_events ORDER BY id")]
    assert states[:4] == ["ready", "on_call", "wrap_up", "ready"]
    assert states[-1] == "logged_out"  # the stop hung up the agent's phone
    assert not (db.parent / (db.name + ".dialer.journal")).read_text()


def test_a_trunk_refusing_registration_dials_nothing_and_the_service_runs_on(tmp_path, sipp):
    now, area, offset = when_to_test()
    registrar = sipp("uas_registrar.xml", "-key", "user", "acme", "-key", "password", "right", calls=10)
    store = configure(tmp_path, now, [f"{area}5550142"], f"127.0.0.1:{registrar.port}", register=True)
    db = store.path
    run = dialer(db, "run", "--sip-port", free_udp_port(), "--workers", 1, "--seconds", 4, "--drain", 0, "--json",
                 offset_s=offset)
    o, e = run.communicate(timeout=90)
    assert run.returncode == 0, e.decode()[-3000:]
    import json
    status = json.loads(o)
    assert status["campaigns"]["c"]["dials"] == 0
    assert status["trunks"]["carrier"]["registered"] is False
    errors = [ln for ln in e.decode().splitlines() if "trunk carrier:" in ln]
    assert len(errors) == 1 and "403" in errors[0], e.decode()[-2000:]
    rows = store.query("SELECT code, ms FROM trunk_registrations")
    assert rows and rows[0]["code"] == 403
    assert store.query_one("SELECT status FROM leads")["status"] == "new"  # never dialled, never burnt


def test_dialer_run_refuses_a_campaign_without_a_trunk(tmp_path):
    now = _dt.datetime.now(_dt.timezone.utc)
    db = tmp_path / "dialer.db"
    store = Store(db)
    service.ensure_defaults(store, now)
    create_account(store, "acme", now, "t")
    add_number(store, "acme", "212 555 9999", now, "t")
    create_campaign(store, "c", "acme", now, "t", caller_id="212-555-9999",
                    greeting=write_tone(tmp_path / "g.wav", seconds=1.0))
    run = dialer(db, "run", "--seconds", 1)
    o, e = run.communicate(timeout=60)
    assert run.returncode == 1 and e.decode().strip() == \
        "Error: no campaign is running: start one with 'dialer campaign start NAME'"
    change_state(store, "c", "start", now, "t")
    run = dialer(db, "run", "--seconds", 1)
    o, e = run.communicate(timeout=60)
    assert run.returncode == 1 and "campaign 'c' has no SIP trunk" in e.decode() and "Traceback" not in e.decode()


def test_a_campaign_started_while_the_dialer_runs_joins_it(tmp_path, sipp):
    now, area, offset = when_to_test()
    carrier = sipp("uas_busy.xml")
    store = configure(tmp_path, now, [f"{area}5550142"], f"127.0.0.1:{carrier.port}")
    db = store.path
    create_campaign(store, "late", "acme", now, "t", caller_id="212-555-9999",
                    greeting=write_tone(tmp_path / "g2.wav", seconds=1.0), dial_mode="progressive")
    run = dialer(db, "run", "--sip-port", free_udp_port(), "--workers", 1, "--seconds", 12, "--drain", 0,
                 offset_s=offset)
    try:
        first = run.stdout.readline().decode()
        assert first.startswith("== dialer running: c;"), first
        change_state(store, "late", "start", now, "t")
        o, e = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0, e.decode()[-2000:]
    assert "campaign late started: it joins the running dialer" in e.decode()
    assert "== late: dials 0" in o.decode()  # it joined (an empty list: nothing to dial)

"""The pjsua2 worker against real SIPp peers on loopback (subprocess + select, no sleeps)."""

import os
import time

import pytest

from dialer.sip import protocol
from sip_harness import PCAP, Worker, needs_sip, write_tone

pytestmark = needs_sip


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    assert w.shutdown() == 0


def dial_and_end(w, uri, key, **kw):
    w.send("dial", key=key, uri=uri, **kw)
    return w.wait_for("ended", key=key, timeout=15)


# -- one SIP outcome each --------------------------------------------------------


@pytest.mark.parametrize("scenario, extra, code, answered, disp", [
    ("uas_answer_hold.xml", ("-d", "300"), 200, True, "answered"),
    ("uas_quick_bye.xml", (), 200, True, "answered"),
    ("uas_busy.xml", (), 486, False, "busy"),
    ("uas_no_answer_480.xml", (), 480, False, "no-answer"),
    ("uas_not_found.xml", (), 404, False, "invalid"),
    ("uas_unavailable.xml", (), 503, False, "failed"),
])
def test_disposition_per_sip_outcome(worker, sipp, scenario, extra, code, answered, disp):
    s = sipp(scenario, *extra, calls=1)
    key = f"k-{scenario}"
    ended = dial_and_end(worker, s.uri, key, timeout_s=10)
    assert ended["code"] == code
    assert ended["reason"]                      # the raw reason phrase, e.g. "Busy Here"
    assert ended["answered"] is answered
    assert protocol.disposition(ended) == disp
    assert ended["started_ms"] <= ended["ended_ms"]
    if answered:
        assert ended["cause"] == "remote"       # the callee sent BYE
        assert ended["started_ms"] <= ended["answered_ms"] <= ended["ended_ms"]
        worker.wait_for("answered", key=key, timeout=1)
    else:
        assert ended["answered_ms"] is None
    assert s.wait(10) == 0                      # the peer saw a complete, correct dialog


def test_ring_timeout_counts_from_the_first_180(worker, sipp):
    """The phone rings from the 180 on: a carrier that sends it 1.5 s after the INVITE
    still gets the full ring time before the CANCEL (a rule set's ring minimum)."""
    s = sipp("uas_ring_late.xml", calls=1)
    worker.send("dial", key="late", uri=s.uri, timeout_s=3)  # the 180 comes 1.5 s in: 1.5 s to spare under load
    ringing = worker.wait_for("ringing", key="late", timeout=5)
    ended = worker.wait_for("ended", key="late", timeout=10)
    assert ended["cause"] == "ring timeout"
    assert (ended["ended_ms"] - ringing["ts"]) / 1000 >= 2.95
    assert (ended["ended_ms"] - ended["started_ms"]) / 1000 >= 4.4
    assert s.wait(10) == 0


def test_ring_timeout_cancels_with_487(worker, sipp):
    s = sipp("uas_ring_forever.xml", calls=1)
    worker.send("dial", key="rt", uri=s.uri, timeout_s=2)
    ringing = worker.wait_for("ringing", key="rt", timeout=5)
    assert ringing["code"] == 180
    ended = worker.wait_for("ended", key="rt", timeout=10)
    assert ended["code"] == 487 and ended["cause"] == "ring timeout"
    assert protocol.disposition(ended) == "no-answer"
    rang_for = (ended["ended_ms"] - ended["started_ms"]) / 1000
    assert 1.9 <= rang_for <= 3.5
    assert s.wait(10) == 0                      # CANCEL -> 200, 487 -> ACK: all seen


def test_concurrent_calls_each_get_their_own_dialog(worker, sipp):
    """8 answered + 8 ring-timeout calls at once: every BYE and 487 matches its own call."""
    hold = sipp("uas_answer_hold.xml", "-d", "300", calls=8)
    ring = sipp("uas_ring_forever.xml", calls=8)
    for i in range(8):
        worker.send("dial", key=f"h{i}", uri=hold.uri)
        worker.send("dial", key=f"n{i}", uri=ring.uri, timeout_s=1)
    for i in range(8):
        e = worker.wait_for("ended", key=f"h{i}")
        assert (e["code"], e["cause"]) == (200, "remote")
        e = worker.wait_for("ended", key=f"n{i}")
        assert (e["code"], e["cause"]) == (487, "ring timeout")
    assert hold.wait(10) == 0 and ring.wait(10) == 0


def test_hangup_while_ringing(worker, sipp):
    s = sipp("uas_ring_forever.xml", calls=1)
    worker.send("dial", key="hr", uri=s.uri)
    worker.wait_for("ringing", key="hr")
    worker.send("hangup", key="hr")
    ended = worker.wait_for("ended", key="hr")
    assert (ended["code"], ended["cause"], ended["answered"]) == (487, "hangup", False)


def test_malformed_commands_are_reported_and_the_worker_goes_on(worker):
    worker.send_raw(b"this is not json\n")
    assert "bad command" in worker.wait_for("error")["message"]
    worker.send_raw(b"[1, 2]\n")
    worker.wait_for("error")
    worker.send("warp", key="x")
    assert "unknown command" in worker.wait_for("error", key="x")["message"]
    worker.send("dial", key="nouri")
    assert "missing 'uri'" in worker.wait_for("error", key="nouri")["message"]
    worker.send("hangup", key="nobody")
    worker.wait_for("error", key="nobody")
    worker.send("bridge", a="nobody", b="else")
    worker.wait_for("error")
    # an unparsable URI fails the dial with an ended event, never a crash
    worker.send("dial", key="baduri", uri="not a uri")
    ended = worker.wait_for("ended", key="baduri")
    assert ended["cause"] == "dial failed" and protocol.disposition(ended) == "failed"
    assert worker.stats()["active"] == 0


def test_play_record_and_media(worker, sipp, tmp_path):
    s = sipp("uas_answer.xml", echo=True)
    tone = write_tone(tmp_path / "tone.wav", seconds=1.0)
    worker.send("dial", key="pr", uri=s.uri)
    media = worker.wait_for("media", key="pr")
    assert media["dir"] == "sendrecv"
    rec = str(tmp_path / "rec.wav")
    worker.send("record", key="pr", path=rec)
    worker.send("play", key="pr", wav=tone)
    worker.wait_for("play_done", key="pr", timeout=5)
    worker.send("stop_record", key="pr")
    done = worker.wait_for("recording_done", key="pr")
    assert done["path"] == rec and done["duration_s"] >= 0.8   # the echoed tone
    st = worker.stats()["calls"]["pr"]
    assert st["rtp_tx"] >= 40 and st["rtp_rx"] >= 40            # 50 packets/s each way
    worker.send("hangup", key="pr")
    assert worker.wait_for("ended", key="pr")["cause"] == "hangup"


def test_misbehaving_peer_that_never_answers_bye(sipp):
    """The peer answers, then ignores our BYE: the call is reported ended after the grace."""
    w = Worker(None, "--bye-grace", "1")
    try:
        s = sipp("uas_misbehave.xml", "-nd")
        w.send("dial", key="mb", uri=s.uri)
        w.wait_for("answered", key="mb")
        w.send("hangup", key="mb")
        ended = w.wait_for("ended", key="mb", timeout=5)
        assert ended["cause"] == "no answer to BYE" and ended["answered"] is True
        assert w.stats()["active"] == 1         # its sockets still count until pjsua lets go
    finally:
        assert w.shutdown(timeout=10) == 0      # exits even with the call still held


@pytest.mark.skipif(not PCAP.exists(), reason=f"{PCAP} (from sip-tester) is missing")
def test_two_calls_bridged_in_one_worker_carry_audio_both_ways(worker, sipp):
    # A talks (plays a recorded voice); B echoes what it hears. pjsua's VAD sends
    # (almost) nothing on a silent leg, so B's transmitted packets grow only if A's
    # audio crosses the bridge, and A's only if B's echo crosses back.
    talker = sipp("uas_answer_talk.xml")
    echo = sipp("uas_answer.xml", echo=True)
    worker.send("dial", key="A", uri=talker.uri)
    worker.send("dial", key="B", uri=echo.uri)
    worker.wait_for("media", key="A")
    worker.wait_for("media", key="B")
    worker.wait_stats(lambda st: st["calls"]["A"].get("rtp_rx", 0) >= 25)
    before = worker.stats()["calls"]
    worker.send("bridge", a="A", b="B")
    worker.wait_for("bridged", a="A", b="B")
    after = worker.wait_stats(
        lambda st: st["calls"]["B"]["rtp_tx"] - before["B"]["rtp_tx"] >= 50
        and st["calls"]["A"]["rtp_tx"] - before["A"]["rtp_tx"] >= 50, timeout=10)["calls"]
    assert after["B"]["rtp_rx"] - before["B"]["rtp_rx"] >= 40      # B's echo came back
    worker.send("unbridge", a="A", b="B")
    worker.wait_for("unbridged", a="A", b="B")
    for k in "AB":
        worker.send("hangup", key=k)
        worker.wait_for("ended", key=k)


@pytest.mark.skipif(not PCAP.exists(), reason=f"{PCAP} (from sip-tester) is missing")
def test_tie_bridges_a_customer_in_one_worker_to_an_agent_in_another(sipp):
    w1, w2 = Worker(), Worker()
    try:
        # the agent logs in to W2 and stays on the line, echoing what it hears
        sipp("uac_agent.xml", w2.uri_host, echo=True, service="agent-7-1234",
                     calls=1)
        inc = w2.wait_for("incoming", timeout=10)
        assert inc["to_user"] == "agent-7-1234" and inc["tie"] is None
        agent_key = inc["key"]
        w2.wait_for("media", key=agent_key)

        customer = sipp("uas_answer_talk.xml")
        w1.send("dial", key="cust", uri=customer.uri)
        w1.wait_for("answered", key="cust")
        w1.wait_for("media", key="cust")

        t0 = time.monotonic()
        w1.send("tie", key="tie1", uri=protocol.tie_uri("127.0.0.1", w2.port),
                agent=agent_key, bridge="cust")
        w1.wait_for("bridged", a="tie1", b="cust")
        connect_ms = (time.monotonic() - t0) * 1000
        tie_in = w2.wait_for("incoming")
        assert tie_in["tie"] == agent_key
        assert tie_in["headers"][protocol.TIE_HEADER.lower()] == agent_key
        w2.wait_for("bridged")
        print(f"tie connect time: {connect_ms:.1f} ms")
        assert connect_ms < 1000

        base2 = w2.stats()["calls"][agent_key]["rtp_tx"]
        base1 = w1.stats()["calls"]["cust"]["rtp_tx"]
        # the customer's voice reaches the agent, the agent's echo reaches the customer
        w2.wait_stats(lambda st: st["calls"][agent_key]["rtp_tx"] - base2 >= 50)
        w1.wait_stats(lambda st: st["calls"]["cust"]["rtp_tx"] - base1 >= 50)
        st2 = w2.stats()["calls"][tie_in["key"]]
        assert st2["rtp_rx"] >= 50 and st2["rtp_tx"] >= 50

        # the customer hangs up on our side: the tie leg goes, the agent stays logged in
        w1.send("hangup", key="cust")
        w1.wait_for("ended", key="cust")
        w1.send("hangup", key="tie1")
        w1.wait_for("ended", key="tie1")
        w2.wait_for("ended", key=tie_in["key"])
        assert agent_key in w2.stats()["calls"]
    finally:
        assert w1.shutdown() == 0
        assert w2.shutdown() == 0               # hangs the agent up (BYE answered)


def test_tie_to_an_unknown_agent_is_refused(worker):
    w2 = Worker()
    try:
        worker.send("tie", key="tx", uri=protocol.tie_uri("127.0.0.1", w2.port), agent="in-0-0")
        ended = worker.wait_for("ended", key="tx")
        assert ended["code"] == 404 and not ended["answered"]
        assert "unknown agent" in w2.wait_for("error")["message"]
    finally:
        w2.shutdown()


def test_dtmf_between_two_workers(worker):
    w2 = Worker()
    try:
        worker.send("dial", key="d1", uri=f"sip:agent-1-0000@127.0.0.1:{w2.port}")
        worker.wait_for("media", key="d1")
        inc = w2.wait_for("incoming")
        w2.wait_for("media", key=inc["key"])
        # The digits arrive in RTP and call the Python onDtmfDigit, which takes no GIL: RTP
        # must be read by the worker's own libHandleEvents, not by a pjsua media I/O thread
        # (medConfig.hasIoqueue). With media up, a worker has 3 threads: its own, pjsua's
        # media clock and event manager (4 with a media I/O thread).
        for w in (worker, w2):
            assert len(os.listdir(f"/proc/{w.proc.pid}/task")) <= 3
        worker.send("dtmf", key="d1", digits="19#")
        got = [w2.wait_for("dtmf", key=inc["key"])["digit"] for _ in range(3)]
        assert got == ["1", "9", "#"]
        worker.send("hangup", key="d1")
        worker.wait_for("ended", key="d1")
        w2.wait_for("ended", key=inc["key"])
    finally:
        assert w2.shutdown() == 0


def test_register_with_digest_auth(worker, sipp):
    s = sipp("uas_registrar.xml", "-key", "user", "trunk1", "-key", "password", "s3cret",
             calls=1)
    worker.send("register", account="t1", registrar=f"sip:127.0.0.1:{s.port}",
                user="trunk1", password="s3cret")
    reg = worker.wait_for("registered", account="t1")
    assert reg["code"] == 200 and reg["ms"] is not None and reg["ms"] < 1000
    bad = sipp("uas_registrar.xml", "-key", "user", "trunk1", "-key", "password", "s3cret",
               calls=1)
    worker.send("register", account="t2", registrar=f"sip:127.0.0.1:{bad.port}",
                user="trunk1", password="wrong")
    assert worker.wait_for("registered", account="t2")["code"] == 403
    for name in ("t1", "t2"):
        worker.send("unregister", account=name)
    assert worker.stats()["accounts"] == 1


def test_register_again_replaces_the_account_and_measures_again(worker, sipp):
    """A new attempt after a failure (pjsua does not retry): ``replace`` shuts the old
    account down and the new one is timed afresh, digest challenge included."""
    s = sipp("uas_registrar_401.xml", "-key", "user", "trunk1", "-key", "password", "s3cret")
    reg = dict(account="r1", registrar=f"sip:127.0.0.1:{s.port}", user="trunk1")
    worker.send("register", password="wrong", **reg)
    bad = worker.wait_for("registered", account="r1")
    assert (bad["code"], bad["reason"]) == (401, "Unauthorized") and bad["ms"] is not None
    worker.send("register", password="s3cret", **reg)
    assert "exists" in worker.wait_for("error")["message"]
    worker.send("register", password="s3cret", replace=True, **reg)
    good = worker.wait_for("registered", account="r1")
    assert good["code"] == 200 and good["ms"] is not None and good["expires"] == 300
    # an account that only answers INVITE challenges: no REGISTER, usable at once
    worker.send("register", account="r2", registrar="sip:127.0.0.1:9", user="u", password="p",
                register=False)
    r2 = worker.wait_for("registered", account="r2")
    assert (r2["code"], r2["ms"]) == (200, None)
    # an account pjsua cannot create is reported on the same event, code 0
    worker.send("register", account="r3", registrar="not a uri", user="u", password="p")
    r3 = worker.wait_for("registered", account="r3")
    assert r3["code"] == 0 and r3["reason"].startswith("cannot create the account")
    for name in ("r1", "r2"):
        worker.send("unregister", account=name)
    assert worker.stats()["accounts"] == 1


def test_admission_queues_beyond_the_socket_budget(sipp):
    """36 dials at once: 31 start (the SIP socket + 2 x 31 RTP/RTCP sockets = 63 of the I/O
    queue's 64 slots; a 32nd would need 65), 5 wait; no abort."""
    w = Worker()
    try:
        s = sipp("uas_answer.xml")
        n, room = 36, 31
        for i in range(n):
            w.send("dial", key=f"q{i}", uri=s.uri)
        for i in range(n):
            w.wait_for("admitted" if i < room else "queued", key=f"q{i}", timeout=10)
        for i in range(room):
            w.wait_for("answered", key=f"q{i}", timeout=15)
        st = w.stats()
        assert (st["active"], st["queued"]) == (room, n - room)
        # hanging up frees sockets ~0.6 s later; the queued dials then start
        for i in range(n - room):
            w.send("hangup", key=f"q{i}")
        for i in range(room, n):
            admitted = w.wait_for("admitted", key=f"q{i}", timeout=10)
            assert admitted["waited_ms"] >= 500
            w.wait_for("answered", key=f"q{i}", timeout=10)
        st = w.stats()
        assert st["active"] == room and st["queued"] == 0
        assert w.proc.poll() is None
        assert not [e for e in w.events if e["ev"] in ("error", "ended") and e.get("cause") != "hangup"]
    finally:
        assert w.shutdown(timeout=20) == 0      # hangs up 31 calls, all DISCONNECTED


def test_stdin_eof_shuts_the_worker_down(sipp):
    w = Worker()
    s = sipp("uas_answer.xml", calls=1)
    w.send("dial", key="e1", uri=s.uri)
    w.wait_for("answered", key="e1")
    t0 = time.monotonic()
    w.proc.stdin.close()                        # the parent vanished
    assert w.proc.wait(timeout=10) == 0
    took = time.monotonic() - t0
    ended = w.wait_for("ended", key="e1", timeout=1)    # the call was hung up on the way out
    assert (ended["cause"], ended["code"]) == ("shutdown", 200)
    assert w.wait_for("bye", timeout=1)["why"] == "stdin closed"
    w.shutdown()
    assert s.wait(10) == 0                      # the peer got the BYE
    assert took < 2.0                           # the exit grace bounds it; no libDestroy wait

"""Faults from the outside, against real SIP peers: a carrier in a 503 storm, malformed
SIP thrown at a worker, an agent hanging up mid-call. Each time the dialer keeps
running, says what happened in one log line, and loses no CDR."""

import datetime as _dt
import socket

from twisted.logger import formatEvent, globalLogPublisher

from campaigns.store import add_user
from dialer.agents import set_pin
from dialer.cdr import list_cdrs
from dialer.engine import CongestionBrake, Dialer
from dialer.sip.pool import WorkerPool
from core.timeutil import to_iso
from sip_harness import free_udp_port, needs_sip
from test_engine_sip import run, setup_campaign, shifted_now, until, when_to_test

pytestmark = needs_sip


class LogLines:
    """Twisted log lines while the test runs."""

    def __init__(self):
        self.lines = []

    def __call__(self, event):
        self.lines.append(formatEvent(event))

    def __enter__(self):
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc):
        globalLogPublisher.removeObserver(self)

    def matching(self, text):
        return [ln for ln in self.lines if text in ln]


def test_brake_engages_doubles_and_resets():
    b = CongestionBrake(threshold=3, pause_s=2.0, max_pause_s=5.0)
    assert [b.record(10.0, True) for _ in range(2)] == [None, None]
    assert b.record(10.0, True) == 2.0 and b.paused(11.9) and not b.paused(12.0)
    assert b.record(11.0, True) is None  # calls still ending during the pause do not stack it
    assert b.record(12.5, True) == 4.0  # the probe after the pause fails: twice as long
    assert b.record(17.0, True) == 5.0  # capped
    assert b.record(23.0, False) is None and not b.paused(23.0) and b.in_a_row == 0
    assert [b.record(24.0, True) for _ in range(3)][-1] == 2.0  # back to the first pause


def test_a_503_storm_rests_the_trunk_and_keeps_every_record(tmp_path, sipp):
    now, area, offset = when_to_test()
    numbers = [f"{area}555{1000 + 37 * i:04d}" for i in range(40)]
    store = setup_campaign(tmp_path, now, numbers, ratio="3")
    carrier = sipp("uas_unavailable.xml")
    dial_times, pauses = [], []

    async def body(reactor):
        ports = [free_udp_port() for _ in range(2)]
        holder = {}
        pool = WorkerPool(reactor, lambda ev: holder["d"].on_event(ev), ports, max_workers=2)
        brake = CongestionBrake(threshold=5, pause_s=1.5, max_pause_s=3.0)
        d = holder["d"] = Dialer(reactor, store, "c", pool,
                                 route=lambda number: f"sip:{number[1:]}@{carrier.uri.split('@')[1]}",
                                 tick=0.1, cps=10, brake=brake)
        dial = d._dial
        d._dial = lambda *a: (dial_times.append(reactor.seconds()), dial(*a))
        record = brake.record
        brake.record = lambda t, c: (lambda p: (p is not None and pauses.append((t, t + p)), p)[1])(record(t, c))
        pool.start(1)
        await until(reactor, lambda: any(w.ready for w in pool.workers.values()), 20, "a ready worker")
        sipp("uac_agent.xml", f"127.0.0.1:{next(iter(pool.workers))}", echo=True, service="agent-alice-7391",
             calls=1)
        await until(reactor, lambda: d.floor.counts(d.cid).agents == 1, 20, "the agent's login")
        d.start()
        await until(reactor, lambda: len(pauses) >= 2 and not d.legs, 40, "the brake to engage twice")
        assert d.loop.running
        d.stop()
        await until(reactor, lambda: not d.legs, 10, "the calls to end")
        await pool.stop()
        return d

    with LogLines() as log:
        d = run(body, offset_s=offset)
    # no call was placed while the trunk rested
    for start, end in pauses:
        assert not [t for t in dial_times if start < t < end - 0.05], (start, end, dial_times)
    assert pauses[1][1] - pauses[1][0] == 3.0  # the second rest is longer (doubled, capped at 3 s)
    assert len(log.matching("carrier congestion")) == len(pauses)
    rows = list_cdrs(store, campaign="c")
    assert len(rows) == d.stats.dials and all(r["sip_code"] == 503 and r["disposition"] == "congestion"
                                               for r in rows)
    # those leads wait for their retry time; the ones never dialled are still new
    later = to_iso(shifted_now(offset))
    statuses = store.query("SELECT status, next_attempt_at FROM leads WHERE attempts > 0")
    assert len(statuses) == len(rows)
    assert all(r["status"] == "retry" and r["next_attempt_at"] > later for r in statuses)
    assert len(rows) < len(numbers)


MALFORMED = [
    b"\x00\xff garbage \x13\x37" * 20,
    b"INVITE sip:x@127.0.0.1 SIP/2.0\r\n\r\n",  # no Via, From, To, Call-ID, CSeq
    b"INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\n"
    b"To: <sip:x@127.0.0.1>\r\nCall-ID: bad-1\r\nCSeq: 1 INVITE\r\nContent-Length: 5000\r\n\r\nv=0\r\n",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKnobody\r\nFrom: <sip:a@b>;tag=1\r\n"
    b"To: <sip:x@y>;tag=2\r\nCall-ID: nobody\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKy\r\n"
    + b"X-Long: " + b"a" * 60000 + b"\r\n\r\n",
    b"INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKz\r\nFrom: <sip:a@b>;tag=1\r\n"
    b"To: <sip:x@127.0.0.1>\r\nCall-ID: bad-2\r\nCSeq: notanumber INVITE\r\nContent-Length: 0\r\n\r\n",
]


def test_malformed_sip_does_not_hurt_a_worker(tmp_path, sipp):
    """Garbage, half messages, lies about lengths, a stray response and a 60 kB header,
    sent to the worker's port: the same worker (same pid) then places a normal call."""
    now, area, offset = when_to_test()
    store = setup_campaign(tmp_path, now, [f"{area}5550142"], mode="progressive")
    answer = sipp("uas_answer_hold.xml", "-d", "1000")

    async def body(reactor):
        port = free_udp_port()
        holder, seen = {}, []
        pool = WorkerPool(reactor, lambda ev: (seen.append(ev), holder["d"].on_event(ev)), [port], max_workers=1)
        d = holder["d"] = Dialer(reactor, store, "c", pool,
                                 route=lambda number: f"sip:{number[1:]}@{answer.uri.split('@')[1]}", tick=0.2,
                                 wrap_limit_s=0.5)
        pool.start(1)
        await until(reactor, lambda: any(w.ready for w in pool.workers.values()), 20, "a ready worker")
        worker = pool.workers[port]
        pid = worker.pid
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for msg in MALFORMED:
            s.sendto(msg, ("127.0.0.1", port))
        s.close()
        sipp("uac_agent.xml", f"127.0.0.1:{port}", echo=True, service="agent-alice-7391", calls=1)
        await until(reactor, lambda: d.floor.counts(d.cid).agents == 1, 20, "the agent's login")
        d.start()
        await until(reactor, lambda: d.stats.dispositions.get("connected") == 1 and not d.pending_cdr, 30,
                    "a normal call after the junk")
        assert pool.workers[port] is worker and worker.pid == pid and not worker.exited
        d.stop()
        await pool.stop()
        return seen

    seen = run(body, offset_s=offset)
    assert not [e for e in seen if e.get("ev") == "worker_died"]
    rows = list_cdrs(store, campaign="c")
    assert [r["disposition"] for r in rows] == ["connected"]


def test_an_agent_hanging_up_mid_call(tmp_path, sipp):
    """The agent's phone hangs up while talking: the customer's call ends too (by the
    agent), its record is written with the time talked, the agent is logged out, and
    the campaign goes on with the agent who is left."""
    now, area, offset = when_to_test()
    numbers = [f"{area}555{1000 + 37 * i:04d}" for i in range(3)]
    store = setup_campaign(tmp_path, now, numbers, mode="progressive")
    add_user(store, "acme", "bob", "agent", now, "t")
    set_pin(store, "acme", "bob", "8264", now, "t")
    answer = sipp("uas_answer_hold.xml", "-d", "8000", echo=True)

    async def body(reactor):
        port = free_udp_port()
        holder = {}
        pool = WorkerPool(reactor, lambda ev: holder["d"].on_event(ev), [port], max_workers=1)
        d = holder["d"] = Dialer(reactor, store, "c", pool,
                                 route=lambda number: f"sip:{number[1:]}@{answer.uri.split('@')[1]}", tick=0.2,
                                 wrap_limit_s=0.5, record_dir=tmp_path / "rec")
        pool.start(1)
        await until(reactor, lambda: any(w.ready for w in pool.workers.values()), 20, "a ready worker")
        sipp("uac_agent_hangup.xml", f"127.0.0.1:{port}", "-d", "3000", echo=True, service="agent-alice-7391",
             calls=1)
        await until(reactor, lambda: d.floor.counts(d.cid).agents == 1, 20, "alice's login")
        d.start()
        await until(reactor, lambda: d.stats.connects == 1, 20, "alice's call")
        alice = next(iter(d.agent_of_user))
        await until(reactor, lambda: d.floor.state_of(alice) == "logged_out", 20, "alice's phone to hang up")
        assert d.loop.running
        sipp("uac_agent.xml", f"127.0.0.1:{port}", echo=True, service="agent-bob-8264", calls=1)
        await until(reactor, lambda: d.stats.connects == 2, 20, "a call for bob")
        d.stop()
        await until(reactor, lambda: not d.legs, 20, "the calls to end")
        d.close_wrapups()
        await pool.stop()
        return d, alice

    d, alice = run(body, offset_s=offset)
    rows = {r["agent_id"]: r for r in list_cdrs(store, campaign="c") if r["disposition"] == "connected"}
    cut = rows[alice]
    assert cut["hangup_by"] == "agent" and 1 <= cut["billsec"] <= 4
    assert cut["agent_disposition"] == "other"
    assert cut["recording_path"] and cut["recording_ms"] > 500  # the talk until the agent left
    events = store.query("SELECT state, reason FROM agent_events WHERE user_id = ? ORDER BY id", (alice,))
    assert events[-1] == {"state": "logged_out", "reason": "phone hung up"}
    assert len(rows) == 2


def test_a_phone_that_never_acks_is_never_given_a_customer(tmp_path, sipp):
    """An agent's phone sends its INVITE (right PIN) but never the ACK of our 200 OK
    (a NAT in the way): it is not logged in; pjsua gives up after its ACK timer (~32 s)
    and one line says why. Customers go to the phone that works."""
    now, area, offset = when_to_test()
    store = setup_campaign(tmp_path, now, [f"{area}5550142"], mode="progressive")
    add_user(store, "acme", "bob", "agent", now, "t")
    set_pin(store, "acme", "bob", "8264", now, "t")
    answer = sipp("uas_answer_hold.xml", "-d", "1000")

    async def body(reactor):
        port = free_udp_port()
        holder = {}
        pool = WorkerPool(reactor, lambda ev: holder["d"].on_event(ev), [port], max_workers=1)
        d = holder["d"] = Dialer(reactor, store, "c", pool,
                                 route=lambda number: f"sip:{number[1:]}@{answer.uri.split('@')[1]}", tick=0.2,
                                 wrap_limit_s=0.5)
        pool.start(1)
        await until(reactor, lambda: any(w.ready for w in pool.workers.values()), 20, "a ready worker")
        d.start()
        sipp("uac_agent_no_ack.xml", f"127.0.0.1:{port}", service="agent-alice-7391", calls=1, timeout=90)
        await until(reactor, lambda: d.pending_login, 20, "alice's INVITE")
        assert d.floor.counts(d.cid).agents == 0 and d.stats.dials == 0  # not logged in: nothing dialled
        await until(reactor, lambda: not d.pending_login, 60, "pjsua to give up on the ACK")
        assert d.floor.counts(d.cid).agents == 0 and d.stats.dials == 0
        sipp("uac_agent.xml", f"127.0.0.1:{port}", echo=True, service="agent-bob-8264", calls=1)
        await until(reactor, lambda: d.stats.connects == 1, 20, "a call for bob")
        d.stop()
        await until(reactor, lambda: not d.legs, 20, "the calls to end")
        d.close_wrapups()
        await pool.stop()
        return d

    with LogLines() as log:
        run(body, timeout=150, offset_s=offset)
    assert len(log.matching("never confirmed its call (no ACK")) == 1
    bob = store.query_one("SELECT id FROM users WHERE name = 'bob'")["id"]
    assert [r["agent_id"] for r in list_cdrs(store, campaign="c")] == [bob]


def test_a_full_worker_refuses_more_agent_phones_instead_of_breaking(tmp_path, sipp):
    """Each agent phone may bring a tie call into its worker; a worker takes a bounded
    number of phones (here 2) and answers the next with 503, so the RTP socket budget
    that would abort the process is never reached. One log line names the phone."""
    now = _dt.datetime.now(_dt.timezone.utc)
    store = setup_campaign(tmp_path, now, ["2025550199"], mode="progressive")  # on the national DNC list
    for name, pin in (("bob", "8264"), ("carol", "5173")):
        add_user(store, "acme", name, "agent", now, "t")
        set_pin(store, "acme", name, pin, now, "t")

    async def body(reactor):
        port = free_udp_port()
        holder, seen = {}, []
        pool = WorkerPool(reactor, lambda ev: (seen.append(ev), holder["d"].on_event(ev)), [port], max_workers=1,
                          worker_args=["--max-agents", "2"])
        d = holder["d"] = Dialer(reactor, store, "c", pool, route=lambda n: "sip:nobody@127.0.0.1:9", tick=0.2)
        pool.start(1)
        await until(reactor, lambda: any(w.ready for w in pool.workers.values()), 20, "a ready worker")
        for who in ("agent-alice-7391", "agent-bob-8264"):
            sipp("uac_agent.xml", f"127.0.0.1:{port}", echo=True, service=who, calls=1)
        await until(reactor, lambda: d.floor.counts(d.cid).agents == 2, 20, "two logins")
        third = sipp("uac_agent.xml", f"127.0.0.1:{port}", echo=True, service="agent-carol-5173", calls=1)
        await until(reactor, lambda: [e for e in seen if e.get("ev") == "refused"], 20, "the third phone refused")
        assert d.floor.counts(d.cid).agents == 2 and not pool.workers[port].exited
        await pool.stop()
        return seen, third

    with LogLines() as log:
        seen, third = run(body)
    refused = [e for e in seen if e.get("ev") == "refused"]
    assert len(refused) == 1 and refused[0]["to_user"] == "agent-carol-5173"
    assert len(log.matching("agent phone agent-carol-5173 refused")) == 1
    assert "worker full" in log.matching("agent phone agent-carol-5173 refused")[0]

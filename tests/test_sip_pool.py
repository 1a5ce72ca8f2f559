"""WorkerPool on a real Twisted reactor with real workers and SIPp peers.

Each test runs a fresh reactor instance (not the global one) with a deadline; every
wait is on an event, never a sleep.
"""

import os
import signal
import time

import pytest
from twisted.internet import defer
from twisted.internet.epollreactor import EPollReactor
from twisted.logger import globalLogPublisher

from dialer.sip.pool import WorkerPool
from sip_harness import PCAP, free_udp_port, needs_sip

pytestmark = needs_sip


class Events:
    """Collects pool events; ``wait`` returns a Deferred for the first match."""

    def __init__(self, reactor):
        self.reactor = reactor
        self.seen = []
        self.waiters = []

    def __call__(self, ev):
        self.seen.append(ev)
        for w in list(self.waiters):
            name, match, d, timer = w
            if _matches(ev, name, match):
                self.waiters.remove(w)
                timer.cancel()
                d.callback(ev)
                return

    def wait(self, name, timeout=10, **match):
        for ev in self.seen:
            if _matches(ev, name, match) and not ev.get("_taken"):
                ev["_taken"] = True
                return defer.succeed(ev)
        d = defer.Deferred()

        def expire():
            self.waiters.remove(entry)
            d.errback(AssertionError(f"no {name} {match} within {timeout}s; last: {self.seen[-8:]}"))
        timer = self.reactor.callLater(timeout, expire)
        entry = (name, match, d, timer)
        self.waiters.append(entry)
        d.addCallback(_take)
        return d


def _take(ev):
    ev["_taken"] = True
    return ev


def _matches(ev, name, match):
    return ev.get("ev") == name and all(ev.get(k) == v for k, v in match.items())


def run(test, timeout=60):
    """Run ``test(reactor, events)`` (an inlineCallbacks function) on a fresh reactor."""
    reactor = EPollReactor()
    events = Events(reactor)
    outcome = {}

    def go():
        d = defer.ensureDeferred(test(reactor, events))
        d.addCallbacks(lambda r: outcome.setdefault("ok", r), lambda f: outcome.setdefault("fail", f))
        d.addBoth(lambda _: reactor.stop())
    reactor.callWhenRunning(go)
    deadline = reactor.callLater(timeout, lambda: (outcome.setdefault("timeout", True), reactor.stop()))
    reactor.run()
    if deadline.active():
        deadline.cancel()
    if "fail" in outcome:
        outcome["fail"].raiseException()
    assert "timeout" not in outcome, "the reactor test ran past its deadline"
    return outcome.get("ok")


@pytest.fixture
def log_lines():
    lines = []

    def observer(event):
        if event.get("log_namespace") == "dialer.sip.pool":
            from twisted.logger import formatEvent
            lines.append(formatEvent(event))
    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


def test_a_killed_worker_ends_its_calls_and_is_replaced(sipp, log_lines):
    carrier = sipp("uas_answer.xml", echo=True)
    ports = [free_udp_port(), free_udp_port()]

    @defer.inlineCallbacks
    def scenario(reactor, events):
        pool = WorkerPool(reactor, events, ports, max_workers=2, calls_per_worker=2)
        try:
            pool.start(1)
            first = yield events.wait("ready")
            # two calls fill the first worker; the third makes the pool add a worker
            placed = [pool.dial(f"c{i}", carrier.uri) for i in range(3)]
            assert placed[0] == placed[1] == first["worker"] and placed[2] != placed[0]
            for i in range(3):
                yield events.wait("answered", key=f"c{i}")
            victim = pool.workers[first["worker"]]
            os.kill(victim.pid, signal.SIGKILL)
            for key in ("c0", "c1"):
                ended = yield events.wait("ended", key=key)
                assert (ended["code"], ended["reason"], ended["answered"]) == (0, "worker died", True)
            died = yield events.wait("worker_died")
            assert died["calls"] == 2 and "signal 9" in died["why"]
            again = yield events.wait("ready", worker=first["worker"])
            assert again["pid"] != victim.pid
            # the survivor's call is untouched; a new dial goes to the fresh worker
            assert pool.worker_of("c2") == placed[2]
            assert pool.dial("c3", carrier.uri) == first["worker"]
            yield events.wait("answered", key="c3")
            pool.hangup("c2")
            ended = yield events.wait("ended", key="c2")
            assert ended["cause"] == "hangup" and ended["code"] == 200
        finally:
            yield pool.stop()
        # stopping hung up the last call cleanly (not a synthetic end)
        ended = yield events.wait("ended", key="c3")
        assert ended["cause"] == "shutdown"

    run(scenario)
    assert sum("died (signal 9)" in line for line in log_lines) == 1, log_lines


@pytest.mark.skipif(not PCAP.exists(), reason=f"{PCAP} (from sip-tester) is missing")
def test_connect_ties_a_customer_to_an_agent_in_another_worker(sipp):
    ports = [free_udp_port(), free_udp_port()]
    figures = {}

    @defer.inlineCallbacks
    def scenario(reactor, events):
        pool = WorkerPool(reactor, events, ports, max_workers=2, calls_per_worker=30)
        try:
            pool.start(2)
            yield events.wait("ready", worker=ports[0])
            yield events.wait("ready", worker=ports[1])
            uri = pool.agent_uri("7", "1234")          # least loaded: the first worker
            agent_port = int(uri.rsplit(":", 1)[1])
            sipp("uac_agent.xml", f"127.0.0.1:{agent_port}", echo=True,
                 service="agent-7-1234", calls=1)
            login = yield events.wait("incoming", worker=agent_port)
            assert login["to_user"] == "agent-7-1234"
            customer = sipp("uas_answer_talk.xml")
            assert pool.dial("cust", customer.uri) != agent_port   # the other, idle worker
            yield events.wait("media", key="cust")
            t0 = time.monotonic()
            assert pool.connect("cust", login["key"], tie_key="tie-cust") == "tie"
            yield events.wait("bridged", a="tie-cust", b="cust")
            figures["connect_ms"] = (time.monotonic() - t0) * 1000
            yield events.wait("bridged", b=login["key"], worker=agent_port)
            # the agent's worker dies: the agent's leg is reported ended, and the pool
            # hangs up the tie leg left bridged to the customer in the other worker
            os.kill(pool.workers[agent_port].pid, signal.SIGKILL)
            ended = yield events.wait("ended", key=login["key"])
            assert ended["reason"] == "worker died"
            ended = yield events.wait("ended", key="tie-cust")
            assert ended["cause"] == "hangup" and ended["answered"]
            assert pool.worker_of("cust") is not None       # the customer is still there
            pool.hangup("cust")
            yield events.wait("ended", key="cust")
        finally:
            yield pool.stop()

    run(scenario)
    print(f"pool tie connect time: {figures['connect_ms']:.1f} ms")
    assert figures["connect_ms"] < 1000


def test_dials_through_an_unknown_or_unregistered_account_are_refused():
    from dialer.sip.pool import NotRegistered
    pool = WorkerPool(EPollReactor(), lambda ev: None, [free_udp_port()])
    assert pool.room() == 0 and pool.room(account="t") == 0
    with pytest.raises(NotRegistered, match="not known to the SIP pool"):
        pool.dial("k", "sip:+12125550100@127.0.0.1", account="t")
    pool.registrations["t"] = {"cmd": "register", "account": "t"}     # known, registered nowhere
    with pytest.raises(NotRegistered, match="registered in no SIP worker yet"):
        pool.dial("k", "sip:+12125550100@127.0.0.1", account="t")
    assert pool.where == {} and pool.workers == {}

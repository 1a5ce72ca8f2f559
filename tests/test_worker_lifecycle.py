"""SIP workers end with their parent, and a restart never finds an old worker on its ports.

A real parent process (a Twisted reactor and a ``WorkerPool``, the script below) places
calls to a SIPp carrier that answers and holds until *we* hang up (``uas_answer.xml``
run with ``-m N``: SIPp exits 0 only once every call got our BYE and answered it). The
test SIGKILLs that parent and checks, with deadlines and no sleeps, that every worker
is gone, that the carrier saw a BYE for every call, and that the SIP ports are free at
once (a new pool starts on them with no worker failing to bind).
"""

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

import pytest
from twisted.internet import defer
from twisted.internet.epollreactor import EPollReactor
from twisted.logger import formatEvent, globalLogPublisher

from dialer.sip.pool import PortInUse, WorkerPool
from sip_harness import IP, ROOT, Worker, free_udp_port, needs_sip
from test_sip_pool import run

PARENT = r'''
import json, os, sys, time
from twisted.internet import reactor
from dialer.sip.pool import WorkerPool

cfg = json.loads(sys.argv[1])
ports, calls = cfg["ports"], cfg["calls"]

def out(**kw):
    print(json.dumps(kw), flush=True)

answered, dialed = set(), []

def pids():
    return {str(p): w.pid for p, w in pool.workers.items()}

def on_event(ev):
    name = ev["ev"]
    if name == "ready" and calls and not dialed and len(pool.workers) == len(ports) \
            and all(w.ready for w in pool.workers.values()):
        dialed.append(True)
        for i in range(calls):
            pool.dial(f"c{i}", cfg["uri"])
    elif name == "answered":
        answered.add(ev["key"])
        if len(answered) == calls:
            holder = None
            if cfg.get("fork_holder"):
                # another process that keeps every pipe end this one has (a fork without
                # exec): the workers' stdin never reaches EOF while it lives
                holder = os.fork()
                if holder == 0:
                    time.sleep(120)
                    os._exit(0)
            out(up=pids(), holder=holder)
    elif name in ("worker_died", "error"):
        out(**{name: ev})

pool = WorkerPool(reactor, on_event, ports, max_workers=len(ports),
                  calls_per_worker=max(1, -(-calls // len(ports))))

def go():
    pool.start(len(ports))
    out(started=pids(), parent=os.getpid())

reactor.callWhenRunning(go)
reactor.run()
'''


class Parent:
    """The parent script as a process; ``expect`` reads its JSON lines with a deadline."""

    def __init__(self, tmp_path, **cfg):
        script = tmp_path / "parent.py"
        script.write_text(PARENT)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([sys.executable, str(script), json.dumps(cfg)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env, cwd=str(tmp_path))
        self.buf = b""

    def expect(self, key, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                msg = json.loads(line)
                if key in msg:
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the parent printed no {key!r} within {timeout} s")
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                data = os.read(self.proc.stdout.fileno(), 65536)
                if not data:
                    raise AssertionError(f"the parent exited ({self.proc.wait()}) before printing {key!r}")
                self.buf += data

    def sigkill(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


def alive(pid):
    """True while any thread of ``pid`` runs. A zombie left for init to reap has ended,
    but its main thread turns zombie before the others are done (pjsua's media thread),
    and the process's sockets close with the last of them."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    return True
        except OSError:
            continue
    return False


def wait_gone(pids, timeout):
    """Seconds until every pid has ended (polled every 10 ms); fails at the deadline."""
    t0 = time.monotonic()
    left = set(pids)
    while left:
        left = {p for p in left if alive(p)}
        if not left:
            break
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"worker(s) {sorted(left)} still running {timeout} s after their parent died")
        select.select([], [], [], 0.01)     # a 10 ms poll step, not a wait for an outcome
    return time.monotonic() - t0


def bindable(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((IP, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def pipes(pid):
    """fd -> pipe inode of a process's pipe fds."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("pipe:"):
            out[int(fd)] = target
    return out


def restart_on(ports, timeout=30):
    """A new pool on ``ports``: every worker ready, none failing (port taken) on the way.
    Returns the seconds it took and the pool's log lines."""
    lines = []

    def observer(event):
        if event.get("log_namespace") == "dialer.sip.pool":
            lines.append(formatEvent(event))
    globalLogPublisher.addObserver(observer)
    figures = {}

    @defer.inlineCallbacks
    def scenario(reactor, events):
        t0 = time.monotonic()
        pool = WorkerPool(reactor, events, ports, max_workers=len(ports))
        try:
            pool.start(len(ports))
            for port in ports:
                yield events.wait("ready", worker=port, timeout=timeout)
            figures["ready_s"] = time.monotonic() - t0
            assert not [e for e in events.seen if e["ev"] == "worker_died"], events.seen
        finally:
            yield pool.stop()
    try:
        run(scenario, timeout=timeout + 20)
    finally:
        globalLogPublisher.removeObserver(observer)
    return figures["ready_s"], lines


@needs_sip
def test_a_sigkilled_parent_takes_its_workers_down_and_they_hang_up(tmp_path, sipp):
    n = 6
    carrier = sipp("uas_answer.xml", calls=n)
    ports = [free_udp_port() for _ in range(3)]
    parent = Parent(tmp_path, ports=ports, uri=carrier.uri, calls=n)
    try:
        up = parent.expect("up")["up"]
        pids = [int(p) for p in up.values()]
        assert sorted(map(int, up)) == sorted(ports)
        # each worker has its own four pipes (0-3) and no other: no sibling's pipe end
        # leaked into it, so its stdin reaches EOF when the parent goes
        seen = {}
        for pid in pids:
            fds = pipes(pid)
            assert set(fds) == {0, 1, 2, 3}, (pid, fds)
            for target in fds.values():
                assert target not in seen, f"pipe {target} shared by workers {seen[target]} and {pid}"
                seen[target] = pid
        parent.sigkill()
        gone_s = wait_gone(pids, timeout=5)
    finally:
        if parent.proc.poll() is None:
            parent.sigkill()
    assert carrier.wait(10) == 0, "the carrier did not get a BYE for every answered call"
    assert all(bindable(p) for p in ports)
    ready_s, lines = restart_on(ports)
    print(f"workers gone {gone_s * 1000:.0f} ms after the parent's SIGKILL; a new pool ready on the same "
          f"ports in {ready_s * 1000:.0f} ms")
    assert gone_s < 3.0


@needs_sip
def test_a_restart_right_after_the_kill_runs_on_the_same_ports(tmp_path, sipp):
    """The supervisor restarts at once: the new pool starts on the same ports while the
    old workers may still be hanging up. None of its workers may fail to bind."""
    n = 4
    carrier = sipp("uas_answer.xml", calls=n)
    ports = [free_udp_port() for _ in range(2)]
    parent = Parent(tmp_path, ports=ports, uri=carrier.uri, calls=n)
    try:
        pids = [int(p) for p in parent.expect("up")["up"].values()]
        parent.sigkill()
        ready_s, lines = restart_on(ports)  # at once: no wait for the old workers
    finally:
        if parent.proc.poll() is None:
            parent.sigkill()
    assert not any(alive(p) for p in pids)
    assert carrier.wait(10) == 0, "the carrier did not get a BYE for every answered call"
    print(f"restart right after the SIGKILL: new pool ready in {ready_s * 1000:.0f} ms; pool log: {lines}")


@needs_sip
def test_workers_end_with_their_parent_even_while_another_process_holds_their_pipes(tmp_path, sipp):
    """A process forked by the parent (no exec) keeps every pipe end the parent had: the
    workers' stdin never reaches EOF. The parent-death signal still takes them down."""
    n = 2
    carrier = sipp("uas_answer.xml", calls=n)
    ports = [free_udp_port() for _ in range(2)]
    parent = Parent(tmp_path, ports=ports, uri=carrier.uri, calls=n, fork_holder=True)
    holder = None
    try:
        msg = parent.expect("up")
        pids, holder = [int(p) for p in msg["up"].values()], msg["holder"]
        assert alive(holder)
        parent.sigkill()
        gone_s = wait_gone(pids, timeout=5)
        assert alive(holder)                 # the pipes were held open all along
    finally:
        if parent.proc.poll() is None:
            parent.sigkill()
        if holder:
            os.kill(holder, signal.SIGKILL)
    assert carrier.wait(10) == 0, "the carrier did not get a BYE for every answered call"
    assert all(bindable(p) for p in ports)
    print(f"workers gone {gone_s * 1000:.0f} ms after the parent's SIGKILL (pipes held elsewhere)")


@needs_sip
def test_a_parent_killed_while_its_workers_start(tmp_path):
    ports = [free_udp_port() for _ in range(3)]
    parent = Parent(tmp_path, ports=ports, calls=0)
    try:
        pids = [int(p) for p in parent.expect("started")["started"].values()]
        assert len(pids) == 3
        parent.sigkill()                     # the workers are still importing / binding
        gone_s = wait_gone(pids, timeout=5)
    finally:
        if parent.proc.poll() is None:
            parent.sigkill()
    assert all(bindable(p) for p in ports)
    print(f"workers killed mid-startup gone {gone_s * 1000:.0f} ms after their parent")
    restart_on(ports)


@needs_sip
def test_a_worker_whose_parent_is_already_gone_exits_at_once():
    """The race before the parent-death signal is set: a worker told it was started by
    a process that is not (or no longer) its parent exits before binding anything."""
    port = free_udp_port()
    r, w = os.pipe()
    not_my_parent = os.getppid()             # alive, but not the worker's parent
    proc = subprocess.Popen([sys.executable, "-m", "dialer.sip.worker", "--port", str(port), "--ip", IP,
                             "--events-fd", str(w), "--parent-pid", str(not_my_parent)],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            pass_fds=(w,), env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=str(ROOT))
    os.close(w)
    try:
        assert proc.wait(timeout=10) == 0
        assert b"parent" in proc.stderr.read()
        assert os.read(r, 65536) == b""      # never got to "ready"
    finally:
        os.close(r)
        proc.stdin.close()
        proc.stderr.close()
    assert bindable(port)


@needs_sip
def test_sigterm_hangs_up_and_exits_even_when_the_peer_never_answers(sipp):
    good = sipp("uas_answer.xml", calls=1)
    deaf = sipp("uas_misbehave.xml", "-nd")
    w = Worker(None, "--exit-grace", "1")
    try:
        w.send("dial", key="g", uri=good.uri)
        w.send("dial", key="d", uri=deaf.uri)
        w.wait_for("answered", key="g")
        w.wait_for("answered", key="d")
        t0 = time.monotonic()
        w.proc.send_signal(signal.SIGTERM)
        assert w.proc.wait(timeout=5) == 0
        took = time.monotonic() - t0
        ended = w.wait_for("ended", key="g", timeout=1)
        assert ended["cause"] == "shutdown" and ended["code"] == 200
        assert w.wait_for("bye", timeout=1)["why"] == "SIGTERM"
    finally:
        w.shutdown()
    assert good.wait(10) == 0                # the answering peer got its BYE
    print(f"SIGTERM to exit with a peer deaf to BYE: {took * 1000:.0f} ms (exit grace 1 s)")
    assert took < 3.0


@needs_sip
def test_a_pool_worker_ignores_sigint_its_parent_decides(sipp):
    """Ctrl-C reaches the whole foreground process group: ``dialer run`` drains its calls
    and then stops its workers, so a worker with a parent does not act on SIGINT."""
    s = sipp("uas_answer.xml", calls=1)
    w = Worker(None, "--parent-pid", os.getpid())
    try:
        w.send("dial", key="i", uri=s.uri)
        w.wait_for("answered", key="i")
        w.proc.send_signal(signal.SIGINT)
        assert w.stats()["calls"]["i"]["answered"]      # still up, call and all
        assert w.proc.poll() is None
    finally:
        assert w.shutdown() == 0
    assert s.wait(10) == 0


@needs_sip
@pytest.mark.parametrize("mode", ["stuck", "wakes", "stopped"])
def test_a_restart_reclaims_a_port_from_a_leftover_worker_of_an_earlier_run(tmp_path, sipp, mode):
    """The earlier run's worker outlived its parent and cannot act (stopped here, as a
    worker stuck in C code or an old version would be). It is provably ours (a dialer
    worker whose parent is gone), so the new pool tells it to go (SIGTERM) and waits:
    "stuck" never moves and is killed after ``reclaim_s``; "wakes" is let go on 0.3 s
    later and leaves by itself. Either way the new worker starts on the port, and a dial
    placed meanwhile goes out once it is up. "stopped": the pool is stopped while it
    waits; the dial ends (worker died) and no worker is started."""
    wakes = mode == "wakes"
    carrier = sipp("uas_answer.xml", calls=1)
    port = free_udp_port()
    parent = Parent(tmp_path, ports=[port], calls=0)
    stuck = None
    try:
        stuck = int(parent.expect("started")["started"][str(port)])
        deadline = time.monotonic() + 15
        while bindable(port):                # up (bound) before it is frozen
            assert time.monotonic() < deadline, "the worker never bound its port"
            select.select([], [], [], 0.02)
        os.kill(stuck, signal.SIGSTOP)
        parent.sigkill()
        assert alive(stuck) and not bindable(port)
        lines = []

        def observer(event):
            if event.get("log_namespace") == "dialer.sip.pool":
                lines.append(formatEvent(event))
        globalLogPublisher.addObserver(observer)
        figures = {}

        @defer.inlineCallbacks
        def scenario(reactor, events):
            t0 = time.monotonic()
            pool = WorkerPool(reactor, events, [port], max_workers=1, reclaim_s=1.0)
            try:
                pool.start(1)
                assert pool.workers[port].pid is None        # waiting for the port
                assert pool.dial("early", carrier.uri) == port
                if mode == "stopped":
                    yield pool.stop()
                    ended = yield events.wait("ended", key="early", timeout=1)
                    assert (ended["code"], ended["cause"]) == (0, "worker died")
                    assert pool.workers == {} and alive(stuck) and not bindable(port)
                    return
                if wakes:
                    reactor.callLater(0.3, os.kill, stuck, signal.SIGCONT)
                yield events.wait("ready", worker=port, timeout=15)
                figures["ready_s"] = time.monotonic() - t0
                yield events.wait("answered", key="early")
                pool.hangup("early")
                yield events.wait("ended", key="early")
                assert not [e for e in events.seen if e["ev"] == "worker_died"]
            finally:
                yield pool.stop()
        try:
            run(scenario, timeout=40)
        finally:
            globalLogPublisher.removeObserver(observer)
        if mode == "stopped":
            os.kill(stuck, signal.SIGKILL)
            wait_gone([stuck], timeout=5)
            return
        assert not alive(stuck)
        text = "\n".join(lines)
        assert f"SIP port {port}" in text and f"pid {stuck}" in text, text
        if wakes:
            assert "exited after" in text and "killed" not in text, text
        else:
            assert "killed" in text and figures["ready_s"] >= 1.0, text
        print(f"leftover ({'wakes' if wakes else 'stuck'}) gone, port {port} reused: "
              f"new worker ready in {figures['ready_s']:.2f} s")
    finally:
        if parent.proc.poll() is None:
            parent.sigkill()
        if stuck and alive(stuck):
            os.kill(stuck, signal.SIGKILL)
    if mode != "stopped":
        assert carrier.wait(10) == 0


def test_a_port_held_by_another_program_fails_the_start_with_its_name():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((IP, 0))
    port = s.getsockname()[1]
    try:
        pool = WorkerPool(EPollReactor(), lambda ev: None, [port])
        with pytest.raises(PortInUse) as e:
            pool.start(1)
        assert f"SIP port {IP}:{port}" in str(e.value) and f"pid {os.getpid()}" in str(e.value)
        assert pool.workers == {}
    finally:
        s.close()


@needs_sip
def test_a_port_held_by_a_worker_of_a_running_dialer_is_not_taken():
    other = Worker()                         # its parent (this process) is alive
    try:
        pool = WorkerPool(EPollReactor(), lambda ev: None, [other.port])
        with pytest.raises(PortInUse, match="another running dialer") as e:
            pool.start(1)
        assert f"pid {other.proc.pid}" in str(e.value)
        assert other.proc.poll() is None and pool.workers == {}
    finally:
        assert other.shutdown() == 0

"""The Twisted side of the SIP layer: worker processes and the pool that routes to them.

    pool = WorkerPool(reactor, on_event, ports=range(5070, 5080), max_workers=4)
    pool.start(1)                                  # one worker now, for agents to call
    pool.dial("call-42", "sip:+12125550100@carrier", timeout_s=30, caller_id="+12125550000")
    ...  on_event({"ev": "answered", "key": "call-42", "worker": 5070, ...})
    pool.connect("call-42", agent_key, tie_key="tie-42")   # bridge, across workers if need be
    pool.hangup("call-42")
    d = pool.stop()                                # Deferred: every worker has exited

Trunk accounts: ``pool.add_registration(name, registrar, user, password)`` is remembered
and sent to every worker once it is ready (workers spawned later and replacements
too). The pool follows each worker's ``registered`` events; ``pool.dial(key, uri,
account=name)`` goes only to a worker where that account is registered (code 200), and
``pool.room(account=name)`` says how many calls can be placed through it now.

Every event a worker sends reaches ``on_event`` as a dict with ``worker`` (its SIP port)
added. A worker's death is a normal event: each call it held gets a synthetic
``ended`` event (code 0, reason "worker died"), ``on_event`` gets
``{"ev": "worker_died", "worker", "pid", "calls", "why"}``, one log line says what
happened, and a replacement starts on the same port.

No global reactor here: the reactor is a parameter (spawnProcess, callLater), and its
clock is the pool's. A worker is another process: the instants in its events (``ts``,
``started_ms``, ``answered_ms``, ``ended_ms``: epoch ms) are read from the host's wall
clock. The pool puts them on the reactor's clock as they arrive (it adds the reactor's
``seconds()`` minus the wall clock's, 0 with a real reactor), so ``on_event`` gets every
instant on the clock the rest of the dialer reads (a reactor whose clock is shifted, see
``dialer.clock``, keeps a call's times in step with its rules checks and records). The
pool's own events (a dead worker's calls) take the reactor's clock. ``t`` (the worker's
monotonic seconds) is left as it is: only its differences mean anything.

Workers end with the pool's process: each is started with ``--parent-pid`` (this
process), arms a parent-death signal and takes end of file on its stdin as the parent's
death; then it hangs up its calls and exits within ``--exit-grace`` seconds (see
``dialer.sip.worker``). Each worker gets exactly its four pipes (``childFDs`` 0-3;
Twisted closes every other descriptor in the child), so no sibling holds a worker's stdin
open and the end of file is reliable.

A restart never runs beside an old worker on its ports. Before a worker is started on a
port, the pool binds the port itself for an instant; when that fails it finds the
processes holding the UDP port (``/proc/net/udp`` inodes matched to ``/proc/*/fd``; no
pid files, which go stale and outlive pid reuse: the socket table says who holds it now):

- a dialer worker (``-m dialer.sip.worker --port P``) whose parent is gone (its parent
  pid is no longer the ``--parent-pid`` it was started with, or it was re-parented to
  init) serves nobody, whatever its database: it is ours to end. The pool sends it
  SIGTERM (it hangs up its calls and exits), waits up to ``reclaim_s`` (5 s) for the port,
  then SIGKILLs it (after checking it is still that worker) and starts the new worker
  once the port is free (or after 2 s more, the worker then reports the port itself).
  One log line says so, with the port and the pid. A holder in the middle of its exit
  (main thread a zombie already: it lets go within milliseconds, but no longer shows what
  it was) is waited for the same way, never signalled.
- anything else (a worker of a dialer that is still running, another program, a process
  this user cannot see) is not ours: ``start()`` raises ``PortInUse`` naming the port and
  the holder, before starting any worker. (Workers started later, replacements after a
  death, just try: one that cannot bind reports the port and is retried with a growing
  delay.)
"""

import errno
import json
import os
import signal
import socket
import sys
import time

from twisted.internet import defer, error, protocol as tprotocol
from twisted.logger import Logger

from core.errors import DialerError
from core.retry import Backoff
from dialer.sip import protocol

log = Logger(namespace="dialer.sip.pool")

# Set on tie calls by the pool: the SIP port of the worker that placed the tie.
FROM_WORKER_HEADER = "X-Dialer-From-Worker"

# The instants (epoch ms, the worker's wall clock) in a worker's events: put on the reactor's clock.
WORKER_INSTANTS = ("ts", "started_ms", "answered_ms", "ended_ms")

# A worker that dies before it is ready is started again after 0.5 s, doubling to 30 s.
RESPAWN_BACKOFF = Backoff(0.5, 30.0)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class WorkerProcess(tprotocol.ProcessProtocol):
    """One worker: commands to its stdin, JSON events from fd 3, pjsua's log on fd 1."""

    def __init__(self, pool, port, rtp_port):
        self.pool = pool
        self.port = port
        self.rtp_port = rtp_port
        self.pid = None
        self.ready = False
        self.exited = False
        self.keys = {}                 # key -> {"answered": bool, "started_ms": int|None}
        self.accounts = {}             # trunk account -> {"code", "reason", "ms", "expires"}
                                       # (code None: REGISTER sent, no answer yet)
        self.queued = 0                # dials sent, not yet admitted (part of keys)
        self._events = b""
        self._stderr = b""
        self.last_stderr = ""
        self.ended_d = defer.Deferred()
        self.pending = []              # commands sent before the process is started
        self.reclaim_call = None       # IDelayedCall while the port is being reclaimed

    @property
    def load(self):
        return len(self.keys)

    @property
    def dial_load(self):
        """Calls held plus one slot kept for each agent phone here without its tie call
        yet: a customer answered in another worker reaches that agent through a tie call
        *into* this worker, and incoming calls cannot be refused once pjsua has their
        sockets (the budget would break)."""
        agents = sum(1 for info in self.keys.values() if info.get("agent"))
        ties_in = sum(1 for info in self.keys.values() if info.get("tie_in"))
        return len(self.keys) + max(0, agents - ties_in)

    def connectionMade(self):
        self.pid = self.transport.pid
        pending, self.pending = self.pending, []
        for cmd in pending:
            self.transport.write(protocol.encode(cmd))

    def send(self, cmd):
        if self.exited:
            return
        if self.transport is None:     # waiting for its port: sent once started
            self.pending.append(cmd)
        else:
            self.transport.write(protocol.encode(cmd))

    def childDataReceived(self, fd, data):
        if fd == 3:
            self._events += data
            *lines, self._events = self._events.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                try:
                    ev = json.loads(line)
                except ValueError:
                    log.warn("sip worker {port}: unreadable event {line!r}", port=self.port, line=line[:200])
                    continue
                self.pool._worker_event(self, ev)
        elif fd == 2:
            self._stderr += data
            *lines, self._stderr = self._stderr.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace").rstrip()
                if text:
                    self.last_stderr = text
                    log.warn("sip worker {port}: {text}", port=self.port, text=text)
        # fd 1 is pjsua's own log: dropped (run the worker by hand to see it)

    def processEnded(self, reason):
        self.exited = True
        self.pool._worker_ended(self, reason.value)
        self.ended_d.callback(None)


class WorkerPool:
    """Spawns workers on demand, routes commands by key, survives worker deaths."""

    def __init__(self, reactor, on_event, ports, max_workers=None, calls_per_worker=30,
                 ip="127.0.0.1", python=None, worker_args=(), rtp_base=20000, rtp_span=2000,
                 env=None, reclaim_s=5.0):
        self.reactor = reactor
        self.on_event = on_event
        self.ports = list(ports)
        if not self.ports:
            raise ValueError("WorkerPool needs at least one SIP port")
        self.max_workers = min(max_workers or len(self.ports), len(self.ports))
        self.calls_per_worker = calls_per_worker
        self.ip = ip
        self.python = python or sys.executable
        self.worker_args = [str(a) for a in worker_args]
        self.rtp_base, self.rtp_span = rtp_base, rtp_span
        self.env = env
        self.reclaim_s = reclaim_s     # how long a leftover worker of an earlier run gets to exit
        self.workers = {}              # port -> WorkerProcess (live or starting)
        self.where = {}                # key -> WorkerProcess
        self.ties = {}                 # tie key -> (customer's worker, agent's worker)
        self.failures = {}             # port -> consecutive deaths before ready
        self.stopping = False
        self._respawns = {}            # port -> IDelayedCall
        self.registrations = {}        # account -> register command (sent to every ready worker)
        self.listeners = {}            # account -> callable(event) (registering/registered/lost)

    # -- workers --------------------------------------------------------------

    def start(self, n=1):
        """Start ``n`` workers now (agents need a worker to call before any dial).

        Raises ``PortInUse`` (before starting any) when one of their ports is held by
        something that is not a leftover worker of an earlier run (see the module doc)."""
        ports = []
        for port in self.ports:
            if len(self.workers) + len(ports) >= min(n, self.max_workers):
                break
            if port not in self.workers and port not in self._respawns:
                ports.append(port)
        plans = {port: self._port_status(port) for port in ports}
        for port in ports:
            self._spawn(port, plans[port])

    def _free_port(self):
        for port in self.ports:
            if port not in self.workers and port not in self._respawns:
                return port
        return None

    def _spawn(self, port, leftovers=False):
        """A worker on ``port`` (in ``self.workers`` at once). ``leftovers``: what
        ``_port_status`` found (False: look now, without raising)."""
        slot = self.ports.index(port)
        rtp = self.rtp_base + slot * self.rtp_span
        w = WorkerProcess(self, port, rtp)
        self.workers[port] = w
        if leftovers is False:
            try:
                leftovers = self._port_status(port)
            except PortInUse:
                leftovers = None       # not ours: the worker tries, and reports the port
        if leftovers:
            self._reclaim(w, leftovers)
        else:
            self._launch(w)
        return w

    def _launch(self, w):
        args = [self.python, "-m", "dialer.sip.worker", "--port", str(w.port), "--ip", self.ip,
                "--events-fd", "3", "--rtp-port", str(w.rtp_port), "--parent-pid", str(os.getpid()),
                *self.worker_args]
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
        # Exactly these four descriptors: Twisted closes every other one in the child.
        self.reactor.spawnProcess(w, self.python, args, env=env,
                                  childFDs={0: "w", 1: "r", 2: "r", 3: "r"})

    # -- ports held by an earlier run -------------------------------------------

    def _port_status(self, port):
        """None when ``port`` is free; the leftover workers holding it when they are all
        ours to end (dialer workers whose parent is gone); else raises ``PortInUse``."""
        if port_free(self.ip, port):
            return None
        holders = [h for h in (describe_process(pid) for pid in udp_port_holders(port)) if h is not None]
        if not holders and port_free(self.ip, port):
            return None                # its holder just left
        if holders and all(h["exiting"] or (is_leftover_worker(h, port) and _may_signal(h["pid"]))
                           for h in holders):
            return holders
        raise PortInUse(self._busy_message(port, holders))

    def _busy_message(self, port, holders):
        where = f"SIP port {self.ip}:{port} is in use"
        for h in holders:
            if h["worker_port"] == port and not is_leftover_worker(h, port):
                return (f"{where} by a SIP worker (pid {h['pid']}) of another running dialer (pid {h['ppid']}): "
                        f"stop that dialer or choose other ports")
        for h in holders:
            if not is_leftover_worker(h, port) and not h["exiting"]:
                me = " (this process)" if h["pid"] == os.getpid() else ""
                cmd = " ".join(h["argv"])[:100] or "?"
                return f"{where} by pid {h['pid']}{me} ({cmd}): free the port or choose other ports"
        if holders:
            return (f"{where} by a leftover SIP worker (pid {holders[0]['pid']}) this user may not stop: "
                    f"free the port or choose other ports")
        return f"{where} by a process this user cannot inspect: free the port or choose other ports"

    def _reclaim(self, w, leftovers):
        """End the leftover workers holding ``w.port`` (SIGTERM, then SIGKILL after
        ``reclaim_s``) and start ``w`` once the port is free."""
        t0 = self.reactor.seconds()
        pids = [h["pid"] for h in leftovers]
        for h in leftovers:
            if is_leftover_worker(h, w.port):
                log.warn("SIP port {port}: a worker of an earlier run (pid {pid}, its parent {parent} gone) still "
                         "holds it; asking it to hang up and exit", port=w.port, pid=h["pid"],
                         parent=h["parent_pid"] or h["ppid"])
                _signal(h["pid"], signal.SIGTERM)
            else:
                log.info("SIP port {port}: held by pid {pid}, on its way out; waiting for it", port=w.port,
                         pid=h["pid"])
        state = {"killed": False}

        def check():
            w.reclaim_call = None
            if w.exited:
                return
            waited = self.reactor.seconds() - t0
            if port_free(self.ip, w.port):
                how = "killed" if state["killed"] else "exited"
                log.info("SIP port {port}: the earlier holder (pid {pids}) {how} after {s:.2f} s; "
                         "starting ours", port=w.port, pids=", ".join(map(str, pids)), how=how, s=waited)
                self._launch(w)
                return
            if not state["killed"] and waited >= self.reclaim_s:
                state["killed"] = True
                for pid in pids:
                    if is_leftover_worker(describe_process(pid), w.port):    # still that worker
                        _signal(pid, signal.SIGKILL)
                log.warn("SIP port {port}: the earlier run's worker (pid {pids}) did not exit within {s:g} s: "
                         "killed", port=w.port, pids=", ".join(map(str, pids)), s=self.reclaim_s)
                # (a process that was on its way out is never killed: it is not provably ours)
            if waited >= self.reclaim_s + 2.0:
                log.error("SIP port {port}: still in use {s:.1f} s after its leftover worker was told to go; "
                          "starting the worker anyway", port=w.port, s=waited)
                self._launch(w)
                return
            w.reclaim_call = self.reactor.callLater(0.05, check)
        check()

    def _pick(self, account=None):
        """The least loaded worker with room; a new one if all are full; else the least loaded.

        With ``account``: only workers where it is registered; when they are all full,
        the least loaded of them (it queues the dial) and a new worker is started for
        the next dials (it registers once ready)."""
        if account is not None:
            return self._pick_registered(account)
        live = [w for w in self.workers.values() if not w.exited]
        roomy = [w for w in live if w.dial_load < self.calls_per_worker]
        if roomy:
            return min(roomy, key=lambda w: (w.dial_load, not w.ready, w.port))
        port = self._free_port()
        if port is not None and len(self.workers) < self.max_workers:
            return self._spawn(port)
        if live:
            return min(live, key=lambda w: w.load)     # the worker queues beyond its budget
        raise RuntimeError("no SIP worker is running")

    def _registered_workers(self, account):
        return [w for w in self.workers.values()
                if w.ready and not w.exited and (w.accounts.get(account) or {}).get("code") == 200]

    def _pick_registered(self, account):
        regs = self._registered_workers(account)
        if not regs:
            if account not in self.registrations:
                raise NotRegistered(f"trunk account {account!r} is not known to the SIP pool")
            raise NotRegistered(f"trunk account {account!r} is registered in no SIP worker yet")
        roomy = [w for w in regs if w.dial_load < self.calls_per_worker]
        if not roomy:
            self._grow_for(account)
            return min(regs, key=lambda w: (w.dial_load, w.port))
        return min(roomy, key=lambda w: (w.dial_load, w.port))

    def _grow_for(self, account):
        """Start one more worker for ``account`` when every live worker has it registered
        and none is on its way (a worker whose registration failed would not help)."""
        live = [w for w in self.workers.values() if not w.exited]
        if any(not w.ready or (w.accounts.get(account) or {}).get("code") != 200 for w in live):
            return None
        port = self._free_port()
        if port is None or len(self.workers) >= self.max_workers:
            return None
        return self._spawn(port)

    def room(self, account=None):
        """Calls that can be placed now: free call slots over the ready workers (with
        ``account``: those where it is registered). When ``account``'s workers are all
        full and another worker may be started, one is started (it registers once ready)."""
        if account is None:
            ws = [w for w in self.workers.values() if w.ready and not w.exited]
        else:
            ws = self._registered_workers(account)
        free = sum(max(0, self.calls_per_worker - w.dial_load) for w in ws)
        if account is not None and free == 0 and account in self.registrations:
            self._grow_for(account)
        return free

    # -- commands -------------------------------------------------------------

    def dial(self, key, uri, **fields):
        """Place a call; returns the SIP port of the worker that took it.

        ``account=NAME`` dials through a trunk account (added with ``add_registration``):
        only a worker where it is registered takes the call; ``NotRegistered`` if none."""
        if key in self.where:
            raise ValueError(f"call key {key!r} is already in use")
        w = self._pick(fields.get("account"))
        self.where[key] = w
        w.keys[key] = {"answered": False, "started_ms": None}
        w.send(dict(fields, cmd="dial", key=key, uri=uri))
        return w.port

    def command(self, name, key, **fields):
        """Send a command about ``key`` to the worker holding it."""
        w = self.where.get(key)
        if w is None:
            raise KeyError(f"no call {key!r}")
        w.send(dict(fields, cmd=name, key=key))

    def hangup(self, key, code=None):
        self.command("hangup", key, **({"code": code} if code else {}))

    def play(self, key, wav, loop=False):
        self.command("play", key, wav=wav, loop=loop)

    def record(self, key, path):
        self.command("record", key, path=path)

    def connect(self, customer, agent, tie_key=None):
        """Bridge an answered customer call to an agent leg, wherever each lives.

        Same worker: a plain bridge. Different workers: the customer's worker places a
        tie call (``tie_key``) to the agent's worker, which joins it to the agent leg;
        the customer's worker joins it to the customer. Returns "bridge" or "tie".
        """
        wc, wa = self.where.get(customer), self.where.get(agent)
        if wc is None or wa is None:
            raise KeyError(f"no call {customer if wc is None else agent!r}")
        if wc is wa:
            wc.send({"cmd": "bridge", "a": customer, "b": agent})
            return "bridge"
        if not tie_key:
            raise ValueError("a tie key is needed to connect calls in two workers")
        self.where[tie_key] = wc
        self.ties[tie_key] = (wc, wa)
        wc.keys[tie_key] = {"answered": False, "started_ms": None}
        wc.send({"cmd": "tie", "key": tie_key, "uri": protocol.tie_uri(self.ip, wa.port),
                 "agent": agent, "bridge": customer,
                 "headers": {FROM_WORKER_HEADER: str(wc.port)}})
        return "tie"

    def agent_uri(self, user, pin):
        """Where an agent's phone should call to log in (the least loaded worker)."""
        return protocol.agent_uri(user, pin, self.ip, self._pick().port)

    def register(self, account, registrar, user, password, **fields):
        """Register a trunk account in every running worker (each has its own contact).
        Once only: prefer ``add_registration``, which workers started later get too."""
        for w in self.workers.values():
            w.send(dict(fields, cmd="register", account=account, registrar=registrar,
                        user=user, password=password))

    def add_registration(self, name, registrar, user, password, realm=None, expires=300,
                         register=True, listener=None):
        """Remember a trunk account and register it in every ready worker now, and in
        every worker that becomes ready later (new ones, replacements after a death).

        ``register=False``: the account only authenticates its INVITEs (no REGISTER).
        ``listener(ev)`` gets, for this account: ``{"ev": "registering", "account",
        "worker"}`` when a worker is asked to register, every ``registered`` event of
        the workers, and ``{"ev": "registration_lost", "account", "worker", "why"}``
        when a worker holding it dies. Adding a name again replaces the account."""
        cmd = {"cmd": "register", "account": name, "registrar": registrar, "user": user,
               "password": password or "", "expires": int(expires), "register": bool(register)}
        if realm:
            cmd["realm"] = realm
        self.registrations[name] = cmd
        if listener is not None:
            self.listeners[name] = listener
        for w in list(self.workers.values()):
            if w.ready and not w.exited:
                self._send_registration(w, name, replace=name in w.accounts)

    def reregister(self, name, all_workers=False):
        """Register ``name`` again (a new account, measured again) in the ready workers
        where it is not registered (or in all of them). Returns the ports asked."""
        if name not in self.registrations:
            raise KeyError(f"no registration {name!r}")
        asked = []
        for w in list(self.workers.values()):
            if not w.ready or w.exited:
                continue
            if all_workers or (w.accounts.get(name) or {}).get("code") != 200:
                self._send_registration(w, name, replace=True)
                asked.append(w.port)
        return asked

    def remove_registration(self, name):
        """Forget a trunk account and unregister it from every worker."""
        self.registrations.pop(name, None)
        self.listeners.pop(name, None)
        for w in list(self.workers.values()):
            if w.accounts.pop(name, None) is not None and not w.exited:
                w.send({"cmd": "unregister", "account": name})

    def registered_in(self, name):
        """Ports of the ready workers where ``name`` is registered (code 200)."""
        return sorted(w.port for w in self._registered_workers(name))

    def account_states(self, name):
        """port -> the last registration state of ``name`` in that worker."""
        return {w.port: dict(w.accounts[name]) for w in self.workers.values() if name in w.accounts}

    def _send_registration(self, w, name, replace=False):
        cmd = dict(self.registrations[name])
        if replace:
            cmd["replace"] = True
        w.accounts[name] = {"code": None, "reason": "registering", "ms": None, "expires": None}
        w.send(cmd)
        self._tell(name, {"ev": "registering", "account": name, "worker": w.port,
                          "t": round(time.monotonic(), 4), "ts": self._ms()})

    def _tell(self, name, ev):
        listener = self.listeners.get(name)
        if listener is None:
            return
        try:
            listener(ev)
        except Exception:                      # a consumer bug must not kill the pool
            log.failure("registration listener raised for {ev}", ev=ev.get("ev"))

    def stats(self):
        for w in self.workers.values():
            w.send({"cmd": "stats"})

    def worker_of(self, key):
        w = self.where.get(key)
        return w.port if w is not None else None

    def load(self):
        return {port: w.load for port, w in self.workers.items()}

    # -- events ---------------------------------------------------------------

    def _ms(self):
        """Now on the reactor's clock, epoch ms."""
        return int(round(self.reactor.seconds() * 1000))

    def _on_our_clock(self, ev):
        """A worker's instants (its wall clock) moved onto the reactor's clock."""
        shift = int(round((self.reactor.seconds() - time.time()) * 1000))
        if shift:
            for k in WORKER_INSTANTS:
                v = ev.get(k)
                if isinstance(v, int) and not isinstance(v, bool):
                    ev[k] = v + shift
        return ev

    def _worker_event(self, w, ev):
        self._on_our_clock(ev)
        ev["worker"] = w.port
        name = ev.get("ev")
        key = ev.get("key")
        if name == "ready":
            w.ready = True
            self.failures.pop(w.port, None)
            for account in list(self.registrations):
                self._send_registration(w, account)
        elif name == "registered" and ev.get("account") in self.registrations:
            account = ev["account"]
            w.accounts[account] = {k: ev.get(k) for k in ("code", "reason", "ms", "expires")}
            self._deliver(ev)
            self._tell(account, ev)
            return
        elif name == "incoming" and key:
            self.where[key] = w
            w.keys[key] = {"answered": True, "started_ms": ev.get("ts"), "agent": not ev.get("tie"),
                           "tie_in": bool(ev.get("tie"))}
            origin = (ev.get("headers") or {}).get(FROM_WORKER_HEADER.lower())
            if ev.get("tie") and origin:
                w.keys[key]["tie_from"] = int(origin)
        elif name == "admitted" and key in w.keys:
            w.keys[key]["started_ms"] = ev.get("ts")
        elif name == "answered" and key in w.keys:
            w.keys[key]["answered"] = True
        elif name == "ended" and key:
            w.keys.pop(key, None)
            self.ties.pop(key, None)
            if self.where.get(key) is w:
                del self.where[key]
        self._deliver(ev)

    def _deliver(self, ev):
        try:
            self.on_event(ev)
        except Exception:                      # a consumer bug must not kill the pool
            log.failure("on_event raised for {ev}", ev=ev.get("ev"))

    def _worker_ended(self, w, why):
        if self.workers.get(w.port) is w:
            del self.workers[w.port]
        if isinstance(why, error.ProcessTerminated):
            what = f"signal {why.signal}" if why.signal else f"exit code {why.exitCode}"
        else:
            what = "exit code 0"
        # Every call the worker still held ends here, as failed: never a lost CDR.
        keys = list(w.keys)
        now = self._ms()
        for key in keys:
            info = w.keys.pop(key)
            if self.where.get(key) is w:
                del self.where[key]
            self._deliver({"ev": "ended", "key": key, "worker": w.port, "code": 0,
                           "reason": "worker died", "cause": "worker died",
                           "answered": info["answered"], "started_ms": info["started_ms"],
                           "answered_ms": None, "ended_ms": now, "ts": now,
                           "t": round(time.monotonic(), 4)})
        if self.stopping:
            return
        for account in list(w.accounts):
            if account in self.registrations:
                self._tell(account, {"ev": "registration_lost", "account": account, "worker": w.port,
                                     "why": what, "ts": now, "t": round(time.monotonic(), 4)})
        w.accounts.clear()
        # The far ends of its tie calls live on in other workers, bridged to nothing
        # (the dead worker sent no BYE): hang them up.
        for tie_key, (wc, wa) in list(self.ties.items()):
            if wa is w and self.where.get(tie_key) is wc:
                wc.send({"cmd": "hangup", "key": tie_key})
            if wc is w or wa is w:
                del self.ties[tie_key]
        for other in self.workers.values():
            for key, info in other.keys.items():
                if info.get("tie_from") == w.port:
                    other.send({"cmd": "hangup", "key": key})
        # A worker that dies before it is ready (port taken, library missing) is
        # retried with a growing delay; one that ran is replaced at once.
        delay = 0.0
        if not w.ready:
            n = self.failures[w.port] = self.failures.get(w.port, 0) + 1
            delay = RESPAWN_BACKOFF.delay(n - 1)
        hint = f" ({w.last_stderr})" if w.last_stderr else ""
        log.warn("sip worker on port {port} (pid {pid}) died ({what}){hint}: {n} call(s) "
                 "ended as failed; replacement in {delay:.1f} s",
                 port=w.port, pid=w.pid, what=what, hint=hint, n=len(keys), delay=delay)
        self._deliver({"ev": "worker_died", "worker": w.port, "pid": w.pid, "calls": len(keys),
                       "why": what + hint, "ts": now, "t": round(time.monotonic(), 4)})
        self._respawns[w.port] = self.reactor.callLater(delay, self._respawn, w.port)

    def _respawn(self, port):
        self._respawns.pop(port, None)
        if not self.stopping and port not in self.workers:
            self._spawn(port)

    # -- stopping -------------------------------------------------------------

    def stop(self, timeout=15.0):
        """Shut every worker down (hang up, drain, exit); SIGKILL after ``timeout``.

        Returns a Deferred that fires once every worker process has exited.
        """
        self.stopping = True
        for call in self._respawns.values():
            if call.active():
                call.cancel()
        self._respawns.clear()
        waits = []
        for w in list(self.workers.values()):
            if w.exited:
                continue
            if w.transport is None:    # never started (its port was being reclaimed)
                if w.reclaim_call is not None and w.reclaim_call.active():
                    w.reclaim_call.cancel()
                w.processEnded(_NeverStarted())
                continue
            w.send({"cmd": "shutdown"})
            w.transport.closeStdin()
            killer = self.reactor.callLater(timeout, _kill, w)
            w.ended_d.addBoth(_cancel_timer, killer)
            waits.append(w.ended_d)
        return defer.DeferredList(waits)


class NotRegistered(RuntimeError):
    """A dial through a trunk account that no worker has registered."""


class PortInUse(DialerError):
    """A SIP port held by something that is not a leftover worker of an earlier run."""

    code = "port-in-use"


class _NeverStarted:
    value = error.ProcessDone(0)


# -- who holds a UDP port (Linux /proc) ---------------------------------------------


def port_free(ip, port):
    """True when a UDP socket can be bound on ``ip:port`` now (other bind errors, e.g. an
    address this host lacks, are left for the worker to report)."""
    s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((ip, port))
        return True
    except OSError as e:
        return e.errno != errno.EADDRINUSE
    finally:
        s.close()


def udp_port_holders(port):
    """Pids holding a UDP socket on ``port`` (any address): the sockets' inodes from
    ``/proc/net/udp[6]`` matched to ``/proc/*/fd``. Only processes this user may inspect."""
    inodes = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    pids = []
    if not inodes:
        return pids
    for name in os.listdir("/proc"):
        if name.isdigit() and any(_holds(d, inodes) for d in _fd_dirs(name)):
            pids.append(int(name))
    return sorted(pids)


def _fd_dirs(pid):
    """Where a process's descriptors are listed. A process on its way out may have its
    main thread a zombie already (its fd list empty) while another thread (pjsua's media
    thread) still holds the descriptors: then look at each thread's."""
    yield f"/proc/{pid}/fd"
    try:
        if os.listdir(f"/proc/{pid}/fd"):
            return
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tids:
        if tid != pid:
            yield f"/proc/{pid}/task/{tid}/fd"


def _holds(fd_dir, inodes):
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"{fd_dir}/{fd}") in inodes:
                return True
        except OSError:
            continue
    return False


def _cmdline(pid):
    """A process's argv; from another thread when the main one is a zombie already."""
    paths = [f"/proc/{pid}/cmdline"]
    try:
        paths += [f"/proc/{pid}/task/{tid}/cmdline" for tid in os.listdir(f"/proc/{pid}/task") if tid != str(pid)]
    except OSError:
        pass
    for path in paths:
        try:
            with open(path, "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if argv:
            return argv
    return []


PF_EXITING = 0x4


def describe_process(pid):
    """{pid, ppid, argv, exiting, worker_port, parent_pid} (the last two for a dialer
    worker, else None), or None when the process is gone or unreadable. ``exiting``: its
    main thread is a zombie or exiting already (a process in the middle of its exit may
    still hold sockets for a few milliseconds, and no longer shows its command line)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        exiting = fields[0] in ("Z", "X") or bool(int(fields[6]) & PF_EXITING)
    except (OSError, IndexError, ValueError):
        return None
    argv = _cmdline(pid)
    info = {"pid": pid, "ppid": int(fields[1]), "argv": argv, "exiting": exiting, "worker_port": None,
            "parent_pid": None}
    if any(a == "-m" and b == "dialer.sip.worker" for a, b in zip(argv, argv[1:])):
        info["worker_port"] = _int_arg(argv, "--port")
        info["parent_pid"] = _int_arg(argv, "--parent-pid")
    return info


def is_leftover_worker(info, port):
    """A dialer worker on ``port`` whose parent is gone: re-parented (to init or a
    subreaper) away from the ``--parent-pid`` it was started with. It serves nobody."""
    if info is None or info["worker_port"] != port:
        return False
    if info["parent_pid"] is not None:
        return info["ppid"] != info["parent_pid"]
    return info["ppid"] == 1


def _int_arg(argv, name):
    try:
        return int(argv[argv.index(name) + 1])
    except (ValueError, IndexError):
        return None


def _may_signal(pid):
    try:
        os.kill(pid, 0)
        return True
    except PermissionError:
        return False
    except ProcessLookupError:
        return True                    # gone already: nothing stands in the way


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(w):
    try:
        w.transport.signalProcess("KILL")
    except error.ProcessExitedAlready:
        pass


def _cancel_timer(result, call):
    if call.active():
        call.cancel()
    return result

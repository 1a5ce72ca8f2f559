"""A pjsua2 worker process: ``python -m dialer.sip.worker --port P [--ip IP] [--events-fd 3]
[--parent-pid PID] [--exit-grace S]``.

One Endpoint, one UDP transport, one local account (plus trunk accounts registered on
command), up to 32 calls. Commands arrive as JSON lines on stdin, events leave as JSON
lines on ``--events-fd`` (see ``dialer.sip.protocol``). pjsua's own log goes to stdout.

Rules this file follows (measured, see docs/pjsua2.md):

- one thread: ``threadCnt = 0`` for the SIP stack *and* the media I/O, and every
  callback runs inside our ``libHandleEvents`` call. The media I/O needs
  ``medConfig.hasIoqueue = False`` as well: with its own I/O queue pjsua raises the media
  ``threadCnt`` 0 to 1 and reads RTP on that thread, where RFC 2833 digits call
  ``onDtmfDigit`` (like every method of a Python subclass of a pjsua2 class, a SWIG
  director that takes no GIL): concurrent Python on two threads, a SIGSEGV now and then.
  Without its own queue, the RTP sockets share the SIP endpoint's (polled by
  ``libHandleEvents``). Callbacks pjsua fires from its media clock thread (a player's end
  of file) run without the GIL, so none is overridden: players are polled from the loop.
- a ``pj.Call`` lives in ``self.calls`` under the parent's key (never ``getId()``),
  is inserted before ``makeCall`` and loses its last reference in its own
  DISCONNECTED callback; none may outlive ``libDestroy``.
- a call starts only while ``2 * (active + ended in the last 0.6 s) + 2 + 1 <= 64``: the
  one I/O queue holds 64 sockets, the SIP transport takes one, a call two (RTP + RTCP);
  a closed socket's slot frees about 0.5 s later. So 31 calls at most.

Ending with the parent (a worker must never outlive it, holding its port and its calls):

- right at start the worker asks the kernel for SIGTERM when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``), then checks ``os.getppid()`` against ``--parent-pid``
  (the pool passes its own pid): a parent that died before that call is caught there and
  the worker exits before binding anything. The main loop checks ``getppid()`` again
  every 0.2 s (belt and braces, e.g. where prctl is missing).
- end of file on stdin without a ``shutdown`` command, a failed write of an event (the
  parent closed its end), the parent-death signal, any SIGTERM: all mean "the parent is
  gone or wants us gone now". The SIGTERM handler only sets a flag; the single-threaded
  main loop acts on it (pjsua2 is never called from a signal handler). The worker then
  hangs up every call (BYE, or CANCEL while ringing), refuses new ones (503), pumps
  ``libHandleEvents`` for the answers for at most ``--exit-grace`` seconds (2), closes its
  recordings and leaves with ``os._exit(0)``: no ``libDestroy`` (its fixed wait of about
  a second and the trunks' unregistration would only hold the port longer; the
  registrar's binding expires, and the replacement registers the same contact).
- a ``shutdown`` command (the pool's clean stop) waits longer: ``--bye-grace`` + 2 s for
  the BYE answers, then ``libDestroy`` when every call is gone.
- either way ``alarm()`` is armed when the stop begins: a worker stuck in C code during
  its stop is ended by SIGALRM a few seconds after its grace.
- SIGINT (Ctrl-C reaches the whole foreground process group) is ignored by a worker that
  has a ``--parent-pid``: ``dialer run`` drains its calls first and then stops the
  workers itself. Without a parent pid (run by hand) SIGINT acts like SIGTERM.
"""

import argparse
import collections
import ctypes
import json
import math
import os
import select
import signal
import sys
import time
import wave

from dialer.sip import protocol

try:
    import pjsua2 as pj
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    pj = None

MEDIA_DIRS = {0: "inactive", 1: "sendonly", 2: "recvonly", 3: "sendrecv"}
# Agent phones per worker: each takes a call slot and may bring a tie call (one more);
# 12 agents and their ties leave 8 of the 32 slots for customer calls placed here.
MAX_AGENTS = 12
# Seconds a worker whose parent is gone (or that got SIGTERM) waits for the answers to
# its BYEs/CANCELs before it exits.
EXIT_GRACE_S = 2.0
PARENT_CHECK_S = 0.2
PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig=signal.SIGTERM):
    """Linux: the kernel sends ``sig`` to this process when its parent dies (more exactly:
    when the thread that started it ends; the pool spawns from the reactor thread).
    True when armed."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def epoch_ms():
    return int(time.time() * 1000)


class Leg:
    """What the worker knows about one call, apart from the pjsua object."""

    def __init__(self, key, direction, uri=""):
        self.key = key
        self.direction = direction          # "out" | "in" | "tie"
        self.uri = uri
        self.started_ms = epoch_ms()
        self.answered_ms = None
        self.deadline = None                # monotonic ring deadline (outbound only)
        self.ring_s = None                  # ring timeout asked for (s)
        self.hangup_at = None               # monotonic time our hangup was sent
        self.cause = None                   # why *we* ended it, if we did
        self.ringing_codes = set()
        self.media_active = False
        self.audio_index = -1
        self.reported_ended = False         # ended already sent (zombie after a lost BYE)
        self.tie_agent = None               # incoming tie leg: key of the agent leg to join
        self.bridge_on_answer = None        # outgoing tie leg: local key to join once up


def _guarded(method):
    """A pjsua callback that reports a Python exception instead of raising it into C++
    (an exception crossing the SWIG director would abort the process)."""
    def callback(self, prm):
        try:
            method(self, prm)
        except Exception as e:
            self.worker.emit("error", message=f"in {method.__name__}: {type(e).__name__}: {e}")
    callback.__name__ = method.__name__
    return callback


if pj is not None:

    class WorkerCall(pj.Call):
        def __init__(self, worker, leg, acc, call_id=None):
            if call_id is None:
                super().__init__(acc)
            else:
                super().__init__(acc, call_id)
            self.worker = worker
            self.leg = leg

        @_guarded
        def onCallState(self, prm):
            self.worker.on_call_state(self)

        @_guarded
        def onCallMediaState(self, prm):
            self.worker.on_media_state(self)

        @_guarded
        def onDtmfDigit(self, prm):
            # RFC 2833 digits arrive with RTP; the RTP sockets are in the SIP endpoint's
            # I/O queue (medConfig.hasIoqueue = False, threadCnt = 0), polled by our
            # libHandleEvents, so this runs on our thread. SIP INFO digits too.
            self.worker.emit("dtmf", key=self.leg.key, digit=prm.digit)

    class LocalAccount(pj.Account):
        def __init__(self, worker):
            super().__init__()
            self.worker = worker

        @_guarded
        def onIncomingCall(self, prm):
            self.worker.on_incoming(self, prm)

    class TrunkAccount(LocalAccount):
        def __init__(self, worker, name):
            super().__init__(worker)
            self.name = name
            self.t0 = time.monotonic()

        @_guarded
        def onRegState(self, prm):
            ms = None
            if self.t0 is not None:
                ms = round((time.monotonic() - self.t0) * 1000, 2)
                self.t0 = None
            self.worker.emit("registered", account=self.name, code=prm.code,
                             reason=prm.reason, ms=ms, expires=prm.expiration)


def parse_headers(whole_msg):
    """Header name (lower case) -> value of a raw SIP message (first occurrence wins)."""
    head = whole_msg.replace("\r\n", "\n").split("\n\n", 1)[0]
    out = {}
    for line in head.split("\n")[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            out.setdefault(name.strip().lower(), value.strip())
    return out


def uri_user(value):
    """'"Bob" <sip:agent-7-1234@127.0.0.1:5070>;tag=x' -> 'agent-7-1234'."""
    start = value.find("sip:")
    if start < 0:
        return ""
    rest = value[start + 4:]
    end = len(rest)
    for stop in "@>;:":
        i = rest.find(stop)
        if 0 <= i < end:
            end = i
    return rest[:end] if "@" in rest else ""


def wav_seconds(path):
    try:
        with wave.open(path, "rb") as w:
            return w.getnframes() / float(w.getframerate())
    except (OSError, wave.Error, EOFError, ZeroDivisionError):
        return 0.0


class Worker:
    def __init__(self, ip, port, events_fd, bye_grace_s=4.0, rtp_port=0, max_agents=MAX_AGENTS,
                 parent_pid=None, exit_grace_s=EXIT_GRACE_S):
        self.max_agents = max_agents          # agent phones' legs this worker takes (each needs a tie too)
        self.ip = ip
        self.port = port
        self.events_fd = events_fd
        self.bye_grace_s = bye_grace_s
        self.rtp_port = rtp_port
        self.calls = {}                       # key -> WorkerCall (the only strong refs)
        self.zombies = {}                     # key -> WorkerCall whose ended was sent
        self.dials = collections.deque()      # (monotonic queued at, dial command)
        self.ended_at = collections.deque()   # monotonic end times, for the socket rule
        self.links = set()                    # frozenset({a, b}) bridges wanted
        self.players = {}                     # key -> [player, wav, loop, total_bytes, last_pos, last_change]
        self.recorders = {}                   # key -> (recorder, path)
        self.trunks = {}                      # name -> TrunkAccount
        self.incoming_seq = 0
        self.inbuf = b""
        self.running = True
        self.parent_gone = False
        self.parent_pid = parent_pid          # who started us (None: not checked)
        self.exit_grace_s = exit_grace_s
        self.stop_why = None                  # "shutdown" (the command) | "stdin closed" | "parent gone" | "SIGTERM"
        self.signalled = None                 # set by the signal handler only; acted on by the loop
        self._next_parent_check = 0.0

    # -- events ---------------------------------------------------------------

    def emit(self, ev, **fields):
        if self.parent_gone:
            return
        msg = {"ev": ev, "t": round(time.monotonic(), 4), "ts": epoch_ms()}
        msg.update(fields)
        data = protocol.encode(msg)
        try:
            while data:
                n = os.write(self.events_fd, data)
                data = data[n:]
        except OSError:
            # The parent closed its end: nobody to report to, wind down.
            self.parent_gone = True
            self.stop("parent gone")

    def stop(self, why):
        """Leave the main loop; the first reason wins (it decides how long the exit may take)."""
        if self.stop_why is None:
            self.stop_why = why
        self.running = False

    def on_signal(self, signum, frame):
        # A signal handler: set a flag and return. pjsua2 is not reentrant; the main loop acts.
        self.signalled = signal.Signals(signum).name

    def check_parent(self, now):
        """Act on a signal, and on a parent that is gone (re-parented: getppid changed)."""
        if self.signalled:
            self.stop(self.signalled)
        if self.parent_pid and now >= self._next_parent_check:
            self._next_parent_check = now + PARENT_CHECK_S
            if os.getppid() != self.parent_pid:
                self.parent_gone = True
                self.stop("parent gone")

    # -- life cycle -----------------------------------------------------------

    def start(self):
        ep = self.ep = pj.Endpoint()
        ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.maxCalls = protocol.MAX_CALLS
        cfg.uaConfig.userAgent = "dialer-worker"
        # RTP on our thread: the media sockets join the SIP endpoint's I/O queue, which
        # libHandleEvents polls. With hasIoqueue = True (the default) pjsua raises a media
        # threadCnt of 0 to 1 and reads RTP on a thread of its own; RFC 2833 digits then
        # reach onDtmfDigit (a Python director method) there, without the GIL: the
        # intermittent SIGSEGV of a worker receiving DTMF.
        cfg.medConfig.hasIoqueue = False
        cfg.medConfig.threadCnt = 0
        cfg.medConfig.clockRate = 8000
        cfg.medConfig.sndClockRate = 8000
        cfg.medConfig.quality = 4
        cfg.medConfig.ecTailLen = 0
        level = int(os.environ.get("DIALER_PJSUA_LOG", "2"))
        cfg.logConfig.level = level
        cfg.logConfig.consoleLevel = level
        ep.libInit(cfg)
        tcfg = pj.TransportConfig()
        tcfg.port = self.port
        tcfg.boundAddress = self.ip
        ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        ep.libStart()
        ep.audDevManager().setNullDev()
        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:dialer@{self.ip}:{self.port}"
        self._media_config(acfg)
        self.acc = LocalAccount(self)
        self.acc.create(acfg, True)
        self.emit("ready", port=self.port, pid=os.getpid())

    def _media_config(self, acfg):
        acfg.mediaConfig.transportConfig.boundAddress = self.ip
        if self.rtp_port:
            acfg.mediaConfig.transportConfig.port = self.rtp_port
            acfg.mediaConfig.transportConfig.portRange = 2000
        acfg.sipConfig.contactForced = f"<sip:dialer@{self.ip}:{self.port}>"

    def run(self):
        while self.running:
            self.ep.libHandleEvents(10)
            self.read_commands(0)
            self.housekeeping()
            self.check_parent(time.monotonic())
        self.shutdown()

    def shutdown(self):
        """Hang up everything and wait (bounded) for every DISCONNECTED. After the
        ``shutdown`` command: up to ``bye_grace + 2`` s, then destroy the library. When the
        parent is gone, stdin closed or a SIGTERM came: up to ``exit_grace`` s, then exit
        at once (``os._exit``)."""
        quick = self.stop_why != "shutdown"
        grace = self.exit_grace_s if quick else self.bye_grace_s + 2
        # The backstop: whatever happens below (a C call that never returns), SIGALRM's
        # default action ends the process a few seconds after the grace.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(int(math.ceil(grace)) + (3 if quick else 10))
        self.dials_cancelled("shutdown")
        for key in list(self.calls):
            # by key, never a loop variable holding a Call: a reference left in this
            # frame would outlive libDestroy and abort the process on exit
            if key in self.calls:
                self._hangup(self.calls[key], cause="shutdown")
        deadline = time.monotonic() + grace
        while (self.calls or self.zombies) and time.monotonic() < deadline:
            self.ep.libHandleEvents(10)
            self.housekeeping()
            if not quick:
                # a clean stop cut short: the parent died (or SIGTERM) meanwhile
                self.check_parent(time.monotonic())
                if self.signalled or self.parent_gone:
                    quick = True
                    deadline = min(deadline, time.monotonic() + self.exit_grace_s)
                    signal.alarm(int(math.ceil(self.exit_grace_s)) + 3)
        self.players.clear()
        for key in list(self.recorders):
            self.stop_record(key)
        self.emit("bye", why=self.stop_why)
        if quick or self.calls or self.zombies:
            # Parent gone (or told to go now): nothing to gain from libDestroy. A peer that
            # never answers our BYE/CANCEL: the Call objects cannot be dropped safely and
            # libDestroy would abort with them alive. Either way, exit as is.
            os._exit(0)
        for acc in list(self.trunks.values()) + [self.acc]:
            acc.shutdown()
        self.trunks.clear()
        self.acc = None
        self.ep.libDestroy()
        self.ep = None

    def dials_cancelled(self, cause):
        while self.dials:
            _, cmd = self.dials.popleft()
            self._emit_never_started(cmd["key"], cause)

    def _emit_never_started(self, key, cause, message=""):
        now = epoch_ms()
        self.emit("ended", key=key, code=0, reason=message or cause, answered=False,
                  started_ms=None, answered_ms=None, ended_ms=now, cause=cause)

    # -- stdin ----------------------------------------------------------------

    def read_commands(self, timeout):
        r, _, _ = select.select([0], [], [], timeout)
        if not r:
            return
        try:
            data = os.read(0, 65536)
        except BlockingIOError:
            return
        if not data:                          # stdin EOF without "shutdown": the parent is gone
            self.stop("stdin closed")
            return
        self.inbuf += data
        *lines, self.inbuf = self.inbuf.split(b"\n")
        for line in lines:
            if line.strip():
                self.handle_line(line)

    def handle_line(self, line):
        try:
            cmd = json.loads(line)
            if not isinstance(cmd, dict):
                raise ValueError("not a JSON object")
            name = cmd.get("cmd")
            handler = getattr(self, "cmd_" + str(name), None)
            if handler is None:
                raise ValueError(f"unknown command {name!r}")
            handler(cmd)
        except (ValueError, KeyError, TypeError) as e:
            self.emit("error", key=_key_of(line), message=f"bad command: {e}")
        except pj.Error as e:
            self.emit("error", key=_key_of(line), message=e.info().strip())
        except Exception as e:                # never let one command end the worker
            self.emit("error", key=_key_of(line), message=f"{type(e).__name__}: {e}")

    # -- commands -------------------------------------------------------------

    def cmd_dial(self, cmd):
        key = _need(cmd, "key")
        _need(cmd, "uri")
        if key in self.calls or any(c["key"] == key for _, c in self.dials):
            raise ValueError(f"key {key!r} already in use")
        self.dials.append((time.monotonic(), cmd))
        if not self._may_start() or len(self.dials) > 1:
            self.emit("queued", key=key, position=len(self.dials))
        self.admit()

    def cmd_tie(self, cmd):
        agent = _need(cmd, "agent")
        headers = dict(cmd.get("headers") or {})
        headers[protocol.TIE_HEADER] = agent
        dial = dict(cmd, headers=headers, direction="tie")
        self.cmd_dial(dial)

    def cmd_hangup(self, cmd):
        key = _need(cmd, "key")
        for i, (_, queued) in enumerate(self.dials):
            if queued["key"] == key:
                del self.dials[i]
                self._emit_never_started(key, "cancelled")
                return
        call = self.calls.get(key)
        if call is None:
            raise ValueError(f"no call {key!r}")
        self._hangup(call, cause="hangup", code=int(cmd.get("code") or 0))

    def cmd_bridge(self, cmd):
        a, b = _need(cmd, "a"), _need(cmd, "b")
        for k in (a, b):
            if k not in self.calls:
                raise ValueError(f"no call {k!r}")
        if a == b:
            raise ValueError("cannot bridge a call to itself")
        self.links.add(frozenset((a, b)))
        self._apply_link(a, b)

    def cmd_unbridge(self, cmd):
        a, b = _need(cmd, "a"), _need(cmd, "b")
        link = frozenset((a, b))
        if link not in self.links:
            raise ValueError(f"{a!r} and {b!r} are not bridged")
        self.links.discard(link)
        ma, mb = self._audio(a), self._audio(b)
        if ma is not None and mb is not None:
            ma.stopTransmit(mb)
            mb.stopTransmit(ma)
        self.emit("unbridged", a=a, b=b)

    def cmd_play(self, cmd):
        key, path = _need(cmd, "key"), _need(cmd, "wav")
        media = self._audio(key)
        if media is None:
            raise ValueError(f"no call {key!r} with active audio")
        if not os.path.isfile(path):
            raise ValueError(f"no such file: {path}")
        self.cmd_stop_play({"key": key}, quiet=True)
        loop = bool(cmd.get("loop"))
        player = pj.AudioMediaPlayer()
        player.createPlayer(path, 0 if loop else pj.PJMEDIA_FILE_NO_LOOP)
        player.startTransmit(media)
        try:
            with wave.open(path, "rb") as w:
                total = w.getnframes() * w.getsampwidth() * w.getnchannels()
        except (wave.Error, EOFError):
            total = 0
        self.players[key] = [player, path, loop, total, -1, time.monotonic()]

    def cmd_stop_play(self, cmd, quiet=False):
        key = _need(cmd, "key")
        entry = self.players.pop(key, None)
        if entry is None and not quiet:
            raise ValueError(f"nothing playing on {key!r}")
        # dropping the player destroys it, which disconnects it from the bridge

    def cmd_dtmf(self, cmd):
        key, digits = _need(cmd, "key"), _need(cmd, "digits")
        call = self.calls.get(key)
        if call is None or not call.leg.media_active:
            raise ValueError(f"no call {key!r} with active audio")
        call.dialDtmf(digits)                 # RFC 2833 events in the RTP stream

    def cmd_record(self, cmd):
        key, path = _need(cmd, "key"), _need(cmd, "path")
        media = self._audio(key)
        if media is None:
            raise ValueError(f"no call {key!r} with active audio")
        if key in self.recorders:
            raise ValueError(f"{key!r} is already recording")
        rec = pj.AudioMediaRecorder()
        rec.createRecorder(path)
        media.startTransmit(rec)
        # A bridged call's recording holds both parties.
        for other in self._linked(key):
            om = self._audio(other)
            if om is not None:
                om.startTransmit(rec)
        self.recorders[key] = (rec, path)

    def cmd_stop_record(self, cmd):
        key = _need(cmd, "key")
        if key not in self.recorders:
            raise ValueError(f"{key!r} is not recording")
        self.stop_record(key)

    def stop_record(self, key):
        rec, path = self.recorders.pop(key)
        del rec                               # destroying the recorder closes the WAV
        self.emit("recording_done", key=key, path=path, duration_s=round(wav_seconds(path), 3))

    def cmd_register(self, cmd):
        """A trunk account. ``replace``: an account of that name is shut down first (a new
        attempt after a failure: pjsua does not retry, and the new account measures again).
        ``register`` false: the account only answers digest challenges to its INVITEs
        (no REGISTER); it is reported ``registered`` at once with code 200, ms null.
        A failure to create the account is reported as ``registered`` with code 0."""
        name = _need(cmd, "account")
        registrar, user = _need(cmd, "registrar"), _need(cmd, "user")
        if name in self.trunks:
            if not cmd.get("replace"):
                raise ValueError(f"account {name!r} exists")
            self.trunks.pop(name).shutdown()
        if len(self.trunks) + 1 >= 8:          # pjsua: 8 accounts per process, 1 is local
            self.emit("registered", account=name, code=0, ms=None, expires=0,
                      reason="too many accounts in this worker (7 trunks at most)")
            return
        do_register = cmd.get("register", True) is not False
        domain = cmd.get("domain") or registrar.split("sip:", 1)[-1].split(";")[0]
        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:{user}@{domain}"
        if do_register:
            acfg.regConfig.registrarUri = registrar
        acfg.regConfig.timeoutSec = int(cmd.get("expires") or 300)
        acfg.regConfig.retryIntervalSec = 0   # report failures; the parent decides
        cred = pj.AuthCredInfo("digest", cmd.get("realm") or "*", user, 0,
                               str(cmd.get("password") or ""))
        acfg.sipConfig.authCreds.append(cred)
        self._media_config(acfg)
        acfg.sipConfig.contactForced = ""
        acc = TrunkAccount(self, name)        # t0: the measure starts here, REGISTER next
        self.trunks[name] = acc
        try:
            acc.create(acfg)
        except pj.Error as e:
            del self.trunks[name]
            self.emit("registered", account=name, code=0, ms=None, expires=0,
                      reason=f"cannot create the account: {e.info().strip().splitlines()[0]}")
            return
        if not do_register:
            acc.t0 = None
            self.emit("registered", account=name, code=200, reason="no registration (digest on INVITE only)",
                      ms=None, expires=0)

    def cmd_unregister(self, cmd):
        name = _need(cmd, "account")
        acc = self.trunks.pop(name, None)
        if acc is None:
            raise ValueError(f"no account {name!r}")
        acc.shutdown()

    def cmd_stats(self, cmd):
        now = time.monotonic()
        per_call = {}
        for key, c in self.calls.items():
            entry = {"state": None, "answered": c.leg.answered_ms is not None}
            try:
                entry["state"] = c.getInfo().stateText
                if c.leg.media_active and c.leg.audio_index >= 0:
                    st = c.getStreamStat(c.leg.audio_index).rtcp
                    entry.update(rtp_rx=st.rxStat.pkt, rtp_tx=st.txStat.pkt,
                                 rx_loss=st.rxStat.loss)
            except pj.Error:
                pass
            per_call[key] = entry
        self.emit("stats", active=len(self.calls) + len(self.zombies), queued=len(self.dials),
                  recent_ended=sum(1 for t in self.ended_at if now - t <= protocol.SOCKET_LINGER_S),
                  accounts=1 + len(self.trunks), calls=per_call)

    def cmd_shutdown(self, cmd):
        self.stop("shutdown")

    # -- admission, timers ----------------------------------------------------

    def _may_start(self):
        now = time.monotonic()
        while self.ended_at and now - self.ended_at[0] > protocol.SOCKET_LINGER_S:
            self.ended_at.popleft()
        active = len(self.calls) + len(self.zombies)
        return protocol.may_start(active, len(self.ended_at))

    def admit(self):
        while self.dials and self.running and self._may_start():
            queued_at, cmd = self.dials.popleft()
            self.start_dial(cmd, queued_at)

    def start_dial(self, cmd, queued_at):
        key = cmd["key"]
        acc = self.acc
        if cmd.get("account"):
            acc = self.trunks.get(cmd["account"])
            if acc is None:
                self._emit_never_started(key, "dial failed", f"no account {cmd['account']!r}")
                return
        leg = Leg(key, cmd.get("direction", "out"), cmd["uri"])
        if cmd.get("timeout_s"):
            # counted from the INVITE, and again from the first 180/183 (the phone rings
            # from then on: a rule set's ring minimum is ringing time, not dialling time)
            leg.ring_s = float(cmd["timeout_s"])
            leg.deadline = time.monotonic() + leg.ring_s
        leg.bridge_on_answer = cmd.get("bridge")
        call = WorkerCall(self, leg, acc)
        prm = pj.CallOpParam(True)
        prm.opt.audioCount = 1                # 0 aborts the process
        prm.opt.videoCount = 0
        headers = dict(cmd.get("headers") or {})
        if cmd.get("caller_id"):
            headers.setdefault("P-Asserted-Identity", _as_uri(cmd["caller_id"], self.ip))
        for name, value in headers.items():
            h = pj.SipHeader()
            h.hName, h.hValue = str(name), str(value)
            prm.txOption.headers.append(h)
        self.calls[key] = call                # before makeCall: it may fire DISCONNECTED
        self.emit("admitted", key=key, waited_ms=round((time.monotonic() - queued_at) * 1000, 1))
        try:
            call.makeCall(cmd["uri"], prm)
        except pj.Error as e:
            if self.calls.pop(key, None) is not None or not leg.reported_ended:
                self.ended_at.append(time.monotonic())
                self._emit_ended(leg, 0, e.info().strip().splitlines()[0], "dial failed")

    def housekeeping(self):
        now = time.monotonic()
        for c in list(self.calls.values()):
            leg = c.leg
            if leg.deadline is not None and leg.answered_ms is None and leg.hangup_at is None \
                    and now >= leg.deadline:
                self._hangup(c, cause="ring timeout")
            elif leg.hangup_at is not None and not leg.reported_ended \
                    and now - leg.hangup_at > self.bye_grace_s:
                # The peer does not answer our BYE/CANCEL. Report the call ended now
                # (it is, for the campaign) and keep the object until pjsua lets go.
                leg.reported_ended = True
                self.zombies[leg.key] = self.calls.pop(leg.key)
                self._emit_ended(leg, 408, "no answer to BYE/CANCEL", "no answer to BYE")
                self._drop_media(leg.key)
        self._poll_players(now)
        self.admit()

    def _poll_players(self, now):
        for key, entry in list(self.players.items()):
            player, path, loop, total, last_pos, last_change = entry
            if loop:
                continue
            try:
                pos = player.getPos()
            except pj.Error:
                pos = total
            if pos != last_pos:
                entry[4], entry[5] = pos, now
            # At end of file the position stops at the data size (or stops moving).
            if (total and pos >= total) or (last_pos == pos and now - last_change > 0.5):
                del self.players[key]
                self.emit("play_done", key=key, wav=path)

    # -- pjsua callbacks ------------------------------------------------------

    def on_call_state(self, call):
        ci = call.getInfo()
        leg = call.leg
        state = ci.state
        if state == pj.PJSIP_INV_STATE_EARLY and leg.direction != "in":
            code = ci.lastStatusCode
            if code not in leg.ringing_codes:
                if not leg.ringing_codes and leg.ring_s is not None:
                    leg.deadline = time.monotonic() + leg.ring_s
                leg.ringing_codes.add(code)
                self.emit("ringing", key=leg.key, code=code)
        elif state == pj.PJSIP_INV_STATE_CONFIRMED:
            leg.answered_ms = epoch_ms()
            if leg.direction != "in":
                self.emit("answered", key=leg.key, code=ci.lastStatusCode)
            else:  # the caller's ACK came: the call is really up (a phone behind a bad NAT never gets here)
                self.emit("confirmed", key=leg.key)
            self._apply_links(leg.key)
        elif state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.ended_at.append(time.monotonic())
            try:
                if not leg.reported_ended:
                    leg.reported_ended = True
                    cause = leg.cause or "remote"
                    self._emit_ended(leg, ci.lastStatusCode, ci.lastReason, cause)
                self._drop_media(leg.key)
            finally:
                # The last references: pjsua may reuse this call id for the next call.
                self.calls.pop(leg.key, None)
                self.zombies.pop(leg.key, None)

    def _emit_ended(self, leg, code, reason, cause):
        leg.reported_ended = True
        self.emit("ended", key=leg.key, code=code, reason=reason,
                  answered=leg.answered_ms is not None, started_ms=leg.started_ms,
                  answered_ms=leg.answered_ms, ended_ms=epoch_ms(), cause=cause)

    def _drop_media(self, key):
        self.players.pop(key, None)
        if key in self.recorders:
            self.stop_record(key)
        for link in [l for l in self.links if key in l]:
            self.links.discard(link)
            (other,) = link - {key}
            self.emit("unbridged", a=key, b=other)

    def on_media_state(self, call):
        ci = call.getInfo()
        leg = call.leg
        for i, m in enumerate(ci.media):
            if m.type == pj.PJMEDIA_TYPE_AUDIO:
                active = m.status == pj.PJSUA_CALL_MEDIA_ACTIVE
                leg.audio_index = i
                if active and not leg.media_active:
                    self.emit("media", key=leg.key, dir=MEDIA_DIRS.get(m.dir, str(m.dir)))
                leg.media_active = active
                break
        if not leg.media_active:
            return
        if leg.tie_agent is not None:
            self.links.add(frozenset((leg.key, leg.tie_agent)))
            leg.tie_agent = None
        if leg.bridge_on_answer is not None:
            if leg.bridge_on_answer in self.calls:
                self.links.add(frozenset((leg.key, leg.bridge_on_answer)))
            else:
                self.emit("error", key=leg.key,
                          message=f"cannot bridge: no call {leg.bridge_on_answer!r}")
            leg.bridge_on_answer = None
        self._apply_links(leg.key)

    def on_incoming(self, acc, prm):
        self.incoming_seq += 1
        key = f"in-{self.port}-{self.incoming_seq}"
        headers = parse_headers(prm.rdata.wholeMsg)
        leg = Leg(key, "in", headers.get("from", ""))
        call = WorkerCall(self, leg, acc, prm.callId)
        self.calls[key] = call
        extra = {name: value for name, value in headers.items() if name.startswith("x-")}
        tie = headers.get(protocol.TIE_HEADER.lower())
        answer = pj.CallOpParam()
        if not self.running:                  # on our way out: take no new call
            leg.cause = "rejected"
            leg.reported_ended = True         # the parent never heard of this leg
            answer.statusCode = 503
            answer.reason = "Shutting down"
            call.answer(answer)
            return
        if tie is not None and tie not in self.calls:
            self.emit("error", key=key, message=f"tie call for unknown agent leg {tie!r}")
            leg.cause = "rejected"
            leg.reported_ended = True         # the parent never heard of this leg
            answer.statusCode = 404
            answer.reason = "No such agent leg"
            call.answer(answer)
            return
        if tie is None:
            agents = sum(1 for c in self.calls.values() if c.leg.direction == "in" and c.leg.tie_agent is None
                         and c.leg.key != key)
            if agents >= self.max_agents:  # full: a phone more, and its tie calls, would break the budget
                self.emit("refused", key=key, to_user=uri_user(headers.get("to", "")),
                          reason=f"worker full: {agents} agent phones on port {self.port}")
                leg.cause = "rejected"
                leg.reported_ended = True
                answer.statusCode = 503
                answer.reason = "Worker full, log in at another port"
                call.answer(answer)
                return
        leg.tie_agent = tie
        # the phone's address (ip:port the request came from): the parent slows down
        # the addresses that send wrong PINs
        self.emit("incoming", key=key, **{"from": headers.get("from", "")},
                  to_user=uri_user(headers.get("to", "")), headers=extra, tie=tie, source=prm.rdata.srcAddress)
        answer.statusCode = 200
        call.answer(answer)

    # -- bridging -------------------------------------------------------------

    def _audio(self, key):
        c = self.calls.get(key)
        if c is None or not c.leg.media_active:
            return None
        try:
            return c.getAudioMedia(c.leg.audio_index)
        except pj.Error:
            return None

    def _linked(self, key):
        return [next(iter(link - {key})) for link in self.links if key in link]

    def _apply_links(self, key):
        for other in self._linked(key):
            self._apply_link(key, other)

    def _apply_link(self, a, b):
        ma, mb = self._audio(a), self._audio(b)
        if ma is None or mb is None:
            return                            # done when the other side's media is up
        ma.startTransmit(mb)
        mb.startTransmit(ma)
        for k, other_media in ((a, mb), (b, ma)):
            if k in self.recorders:
                other_media.startTransmit(self.recorders[k][0])
        self.emit("bridged", a=a, b=b)

    # -- hanging up -----------------------------------------------------------

    def _hangup(self, call, cause, code=0):
        leg = call.leg
        if leg.hangup_at is not None:
            return
        leg.hangup_at = time.monotonic()
        leg.cause = leg.cause or cause
        prm = pj.CallOpParam()
        if code:
            prm.statusCode = code
        try:
            call.hangup(prm)
        except pj.Error as e:
            self.emit("error", key=leg.key, message=e.info().strip())


def _need(cmd, field):
    value = cmd.get(field)
    if value is None or value == "":
        raise ValueError(f"{cmd.get('cmd')}: missing {field!r}")
    if not isinstance(value, str):
        raise ValueError(f"{cmd.get('cmd')}: {field!r} must be a string")
    return value


def _key_of(line):
    try:
        obj = json.loads(line)
        return obj.get("key") if isinstance(obj, dict) else None
    except ValueError:
        return None


def _as_uri(caller_id, ip):
    caller_id = str(caller_id)
    if caller_id.startswith(("sip:", "tel:", "<")):
        return caller_id
    return f"<sip:{caller_id}@{ip}>"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m dialer.sip.worker",
                                 description="pjsua2 worker: JSON commands on stdin, events on --events-fd")
    ap.add_argument("--port", type=int, required=True, help="SIP UDP port")
    ap.add_argument("--ip", default="127.0.0.1")
    ap.add_argument("--events-fd", type=int, default=3)
    ap.add_argument("--rtp-port", type=int, default=0, help="first RTP port (0: pjsua's default)")
    ap.add_argument("--bye-grace", type=float, default=4.0,
                    help="seconds to wait for a BYE/CANCEL answer before reporting the call ended")
    ap.add_argument("--max-agents", type=int, default=MAX_AGENTS,
                    help="agent phones this worker takes; more get 503 (each agent may need a tie call too)")
    ap.add_argument("--parent-pid", type=int, default=None,
                    help="pid of the process that started this worker: exit if it is not (or no longer) "
                         "our parent; SIGINT is then left to that parent")
    ap.add_argument("--exit-grace", type=float, default=EXIT_GRACE_S,
                    help="seconds to wait for BYE/CANCEL answers when the parent is gone or on SIGTERM")
    args = ap.parse_args(argv)
    w = Worker(args.ip, args.port, args.events_fd, args.bye_grace, args.rtp_port, args.max_agents,
               parent_pid=args.parent_pid, exit_grace_s=args.exit_grace)
    # First the handler (a flag), then the parent-death signal, then the race check: a
    # parent that died before prctl took effect has re-parented us already.
    signal.signal(signal.SIGTERM, w.on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN if args.parent_pid else w.on_signal)
    set_parent_death_signal(signal.SIGTERM)
    if args.parent_pid and os.getppid() != args.parent_pid:
        print(f"error: parent {args.parent_pid} is gone (parent now {os.getppid()}); exiting", file=sys.stderr)
        return 0
    try:
        os.fstat(args.events_fd)
    except OSError:
        print(f"error: events fd {args.events_fd} is not open", file=sys.stderr)
        return 2
    if pj is None:
        w.emit("error", message="pjsua2 is not installed (pjsua2-python==2.10.post6, "
                                "CPython 3.9-3.12 on Linux x86_64)")
        return 2
    try:
        w.start()
    except pj.Error as e:
        w.emit("error", message=f"cannot start on {args.ip}:{args.port}: {e.info().strip()}")
        print(f"error: cannot start on {args.ip}:{args.port}: {e.info().strip()}", file=sys.stderr)
        return 2
    w.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

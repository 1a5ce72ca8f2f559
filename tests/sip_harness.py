"""Helpers for the SIP tests: SIPp peers and workers driven over pipes, no sleeps.

Every wait is on an event (a JSON line from the worker, a process exit) with a deadline.
"""

import json
import os
import pathlib
import select
import shutil
import socket
import subprocess
import sys
import time
import wave

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "dialer" / "sip" / "scenarios"
PCAP = pathlib.Path("/usr/share/sip-tester/g711a.pcap")
IP = "127.0.0.1"

try:
    import pjsua2  # noqa: F401
    HAVE_PJSUA2 = True
except ImportError:
    HAVE_PJSUA2 = False

SIPP = shutil.which("sipp")
# DIALER_SIP_TEST_LOG=FILE appends every worker's pjsua log there (set DIALER_PJSUA_LOG=5 too)
LOG = os.environ.get("DIALER_SIP_TEST_LOG")

needs_sip = pytest.mark.skipif(
    not (SIPP and HAVE_PJSUA2),
    reason="needs SIPp (Debian package sip-tester) and pjsua2-python==2.10.post6"
           + ("" if SIPP else ": sipp missing") + ("" if HAVE_PJSUA2 else ": pjsua2 missing"))


def free_udp_port(span=1):
    """A UDP port p such that p .. p+span-1 are free on loopback (for SIPp's -p / -mp)."""
    for _ in range(200):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((IP, 0))
        port = s.getsockname()[1]
        s.close()
        if port + span >= 65535:
            continue
        ok = True
        for p in range(port, port + span):
            t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                t.bind((IP, p))
            except OSError:
                ok = False
            finally:
                t.close()
        if ok:
            return port
    raise RuntimeError("no free UDP port")


class Sipp:
    """One SIPp process on loopback. ``uas`` scenarios listen on ``self.port``."""

    def __init__(self, scenario, *extra, port=None, service=None, calls=None, timeout=60,
                 echo=False, tmp=None):
        self.port = port or free_udp_port()
        self.media_port = free_udp_port(4)
        self.uri = f"sip:{service or 'carrier'}@{IP}:{self.port}"
        args = [SIPP, "-sf", str(SCENARIOS / scenario), "-i", IP, "-p", str(self.port),
                "-mi", IP, "-mp", str(self.media_port), "-nostdin",
                "-timeout", f"{timeout}s", "-timeout_error"]
        if service:
            args += ["-s", service]
        if calls:
            args += ["-m", str(calls)]
        if echo:
            args.append("-rtp_echo")
        args += [str(a) for a in extra]
        # SIPp writes its screen and logs to the cwd: keep them out of the checkout.
        self.cwd = str(tmp) if tmp else None
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, cwd=self.cwd)

    def wait(self, timeout):
        return self.proc.wait(timeout=timeout)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Worker:
    """A worker process driven with subprocess + select (no reactor)."""

    def __init__(self, port=None, *extra):
        self.port = port or free_udp_port()
        r, w = os.pipe()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-X", "faulthandler", "-m", "dialer.sip.worker", "--port", str(self.port), "--ip", IP,
             "--events-fd", str(w), *map(str, extra)],
            stdin=subprocess.PIPE, stdout=open(f"{LOG}.{self.port}", "ab") if LOG else subprocess.DEVNULL, stderr=subprocess.PIPE,
            pass_fds=(w,), env=env, cwd=str(ROOT))
        os.close(w)
        self.events_fd = r
        self.buf = b""
        self.events = []          # every event seen, in order
        self.wait_for("ready", timeout=15)

    @property
    def uri_host(self):
        return f"{IP}:{self.port}"

    def send(self, cmd, **fields):
        obj = dict(fields, cmd=cmd)
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def send_raw(self, line):
        self.proc.stdin.write(line)
        self.proc.stdin.flush()

    def _read(self, timeout):
        r, _, _ = select.select([self.events_fd], [], [], max(0.0, timeout))
        if not r:
            return False
        data = os.read(self.events_fd, 65536)
        if not data:
            raise EOFError("worker closed its events fd")
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        self.events.extend(json.loads(line) for line in lines if line.strip())
        return True

    def wait_for(self, ev, timeout=10, **match):
        """The first event named ``ev`` whose fields equal ``match`` (consumed)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e["ev"] == ev and all(e.get(k) == v for k, v in match.items()):
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {ev} {match} within {timeout}s; seen: {self.events[-12:]}")
            self._read(left)

    def stats(self, timeout=5):
        self.send("stats")
        return self.wait_for("stats", timeout=timeout)

    def wait_stats(self, pred, timeout=10):
        """Poll ``stats`` until ``pred(stats)`` holds (each poll waits on the reply)."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats()
            if pred(st):
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"stats never matched: {st}")
            # wait a little for traffic, on the events fd (returns early on any event)
            self._read(0.2)

    def shutdown(self, timeout=15):
        if self.proc.poll() is None:
            try:
                self.send("shutdown")
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        try:
            while self._read(0):
                pass
        except (EOFError, OSError):
            pass
        os.close(self.events_fd)
        self.stderr = self.proc.stderr.read().decode(errors="replace")
        self.proc.stderr.close()
        if self.proc.returncode:
            sys.stderr.write(f"worker {self.port} exited {self.proc.returncode}:\n{self.stderr[-3000:]}\n")
        self.proc.stdin.close()
        return self.proc.returncode


def write_tone(path, freq=440.0, seconds=2.0, rate=8000, amplitude=8000):
    import math
    n = int(seconds * rate)
    frames = bytearray()
    for i in range(n):
        v = int(amplitude * math.sin(2 * math.pi * freq * i / rate))
        frames += v.to_bytes(2, "little", signed=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))
    return str(path)


def carrier_calls(message_file):
    """The calls a SIPp carrier saw, from its message trace (``-trace_msg -message_file
    FILE``): {Call-ID: {"number", "invites", "start", "end"}} with instants in epoch
    seconds. ``start``: the first INVITE received; ``end``: the first BYE or CANCEL
    either way, or a final non-2xx answer to the INVITE (None if the call never ended
    in the trace). Retransmissions count once (by Call-ID)."""
    import datetime as _dt
    import re
    calls = {}
    text = pathlib.Path(message_file).read_text(errors="replace") if pathlib.Path(message_file).exists() else ""
    for block in re.split(r"^-{20,} ", text, flags=re.M)[1:]:
        head, _, rest = block.partition("\n")
        try:
            t = _dt.datetime.strptime(head.strip(), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        except ValueError:
            continue
        direction = "in" if "received" in rest.split("\n", 1)[0] else "out"
        msg = rest.split("\n\n", 1)[1] if "\n\n" in rest else ""
        first = msg.split("\n", 1)[0]
        cid = re.search(r"^Call-ID:\s*(\S+)", msg, flags=re.M | re.I)
        if not cid:
            continue
        c = calls.setdefault(cid.group(1), {"number": None, "invites": 0, "start": None, "end": None})
        if first.startswith("INVITE ") and direction == "in":
            c["invites"] += 1
            if c["start"] is None:
                c["start"] = t
                m = re.match(r"INVITE sip:\+?([^@;]+)@", first)
                c["number"] = m.group(1) if m else None
        elif c["end"] is None and (first.startswith("BYE ") or first.startswith("CANCEL ")):
            c["end"] = t
        elif c["end"] is None and first.startswith("SIP/2.0 ") and direction == "out":
            code = int(first.split()[1])
            cseq = re.search(r"^CSeq:\s*\d+\s+(\w+)", msg, flags=re.M | re.I)
            if code >= 300 and cseq and cseq.group(1) == "INVITE":
                c["end"] = t
    return {k: v for k, v in calls.items() if v["start"] is not None}


def max_concurrent(calls, until=None):
    """The most calls in progress at once over ``carrier_calls`` (an unended call
    lasts until ``until``, else forever)."""
    edges = []
    for c in calls.values():
        edges.append((c["start"], 1))
        end = c["end"] if c["end"] is not None else until
        if end is not None:
            edges.append((end, -1))
    peak = cur = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        cur += step
        peak = max(peak, cur)
    return peak

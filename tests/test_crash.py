"""A killed dialer strands nothing (issue 10, problem 6), as a user runs it: ``dialer run``
as a process on a configured database, SIPp as the carrier (its message trace is the
witness of every INVITE that left) and as the agent's softphone; the dialer is
SIGKILLed five times at random moments mid-campaign and restarted on the same ports,
then stopped with SIGTERM. Afterwards: every call the carrier saw has exactly one CDR,
no lead is left ``dialing`` or ``reserved``, no call is left open, no SIP worker
outlived its parent, and the interrupted calls are recorded as failed."""

import collections
import os
import random
import select
import signal
import time

from core.store import Store
from sip_harness import carrier_calls, free_udp_port, needs_sip
from test_accounts_sip import account_with_two_campaigns
from test_engine_sip import when_to_test
from test_service import dialer

pytestmark = needs_sip


def worker_pids(ports):
    """SIP worker processes (``python -m dialer.sip.worker --port P``) on ``ports``."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if b"dialer.sip.worker" in args and b"--port" in args:
            port = args[args.index(b"--port") + 1]
            if port.isdigit() and int(port) in ports:
                out.append(int(pid))
    return out


def wait_until(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def read_line(proc, prefix, timeout):
    """The first stdout line of ``proc`` starting with ``prefix`` (the service says it runs)."""
    end = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < end:
        r, _, _ = select.select([proc.stdout], [], [], max(0.0, end - time.monotonic()))
        if not r:
            break
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        buf += chunk
        for line in buf.decode(errors="replace").splitlines():
            if line.startswith(prefix):
                return line
    raise AssertionError(f"no line {prefix!r} from dialer run within {timeout}s; got {buf[-2000:]!r}; stderr "
                         + (proc.stderr.read().decode(errors="replace")[-3000:] if proc.poll() is not None else ""))


def test_kill_the_dialer_five_times_and_every_call_has_one_cdr(tmp_path, sipp):
    now, area, offset = when_to_test()
    rng = random.Random(20261202)
    trace = tmp_path / "carrier-messages.log"
    carrier = sipp("uas_answer_hold.xml", "-d", "2500", "-trace_msg", "-message_file", trace, echo=True, timeout=600)
    numbers = [f"{area}555{1000 + 29 * i:04d}" for i in range(150)]
    store = account_with_two_campaigns(tmp_path, now, f"127.0.0.1:{carrier.port}", {"spring": numbers}, lines=10)
    store.execute("UPDATE campaigns SET state = 'paused' WHERE name = 'autumn'")
    db = store.path
    port = free_udp_port()
    ports = {port, port + 1}
    kills = 5
    for run_no in range(kills + 1):
        run = dialer(db, "run", "--sip-port", port, "--workers", 2, "--drain", 2, offset_s=offset)
        phone = None
        try:
            read_line(run, "== dialer running", 60)
            phone = sipp("uac_agent.xml", f"127.0.0.1:{port}", echo=True, service="agent-alice-7391", calls=1,
                         timeout=120)
            seen = len(carrier_calls(trace))
            more = rng.randint(1, 6)  # the kill lands after a random number of new calls ...
            wait_until(lambda: len(carrier_calls(trace)) >= seen + more or run.poll() is not None, 60,
                       f"{more} more calls at the carrier")
            time.sleep(rng.uniform(0.0, 1.5))  # ... and a random moment of their progress
            assert run.poll() is None, run.stderr.read().decode(errors="replace")[-3000:]
            workers = worker_pids(ports)
            assert len(workers) == 2
            if run_no < kills:
                run.send_signal(signal.SIGKILL)
                run.wait(timeout=10)
                # the workers end with their parent (and hang up their calls): none holds the ports
                wait_until(lambda: not worker_pids(ports), 15, "the SIP workers to end with their killed parent")
            else:
                run.send_signal(signal.SIGTERM)
                o, e = run.communicate(timeout=90)
                assert run.returncode == 0, e.decode(errors="replace")[-3000:]
        finally:
            if run.poll() is None:
                run.kill()
                run.communicate()
            if phone is not None:
                phone.stop()
    wait_until(lambda: not worker_pids(ports), 15, "no SIP worker left")
    carrier.stop()

    calls = carrier_calls(trace)
    st = Store(db)
    cdrs = st.query("SELECT call_id, destination, disposition, sip_reason FROM cdrs")
    by_number = collections.Counter(c["number"] for c in calls.values())
    cdr_numbers = collections.Counter(r["destination"][1:] for r in cdrs)
    stopped = [r for r in cdrs if r["sip_reason"] == "dialer stopped during the call"]
    print(f"carrier INVITEs {len(calls)}, CDRs {len(cdrs)}, interrupted by a kill {len(stopped)}")
    assert len(calls) >= 2 * kills
    assert not by_number - cdr_numbers  # every call the carrier saw has its CDR ...
    assert max(by_number.values()) == 1 and max(cdr_numbers.values()) == 1  # ... exactly one
    # a CDR without an INVITE at the carrier can only be a call journaled in the instant
    # before a kill, whose INVITE never left (recorded as failed: the safe side)
    extra = cdr_numbers - by_number
    assert all(n in {r["destination"][1:] for r in stopped} for n in extra), extra
    assert len({r["call_id"] for r in cdrs}) == len(cdrs)
    assert stopped and all(r["disposition"] == "failed" for r in stopped)
    assert st.query_one("SELECT COUNT(*) AS n FROM leads WHERE status IN ('dialing', 'reserved')")["n"] == 0
    assert not st.query("SELECT * FROM open_calls") and not st.query("SELECT * FROM cdr_conflicts")
    # each interrupted lead went back to its retry schedule
    for r in st.query("SELECT l.status, l.disposition FROM leads l JOIN cdrs c ON c.lead_id = l.id "
                      "WHERE c.sip_reason = 'dialer stopped during the call'"):
        assert (r["status"], r["disposition"]) in (("retry", "failed"), ("done", "failed"))

"""A clock shifted from the wall clock (dialer.clock), the least shift that puts a demo
area code inside calling hours (dialer.demo.callable_offset), and the SIP pool putting a
worker's instants (its wall clock) on the reactor's clock. No SIP needed."""

import datetime as _dt
import time

from twisted.internet import error, task
from twisted.internet.epollreactor import EPollReactor

from dialer.clock import ShiftedReactor
from dialer.demo import callable_area, callable_offset
from dialer.sip.pool import WorkerPool, WorkerProcess

UTC = _dt.timezone.utc


def test_a_shifted_reactor_shifts_its_clock_not_its_timers():
    real = task.Clock()
    real.advance(1000.0)
    clock = ShiftedReactor(real, 3600.0)
    assert clock.seconds() == 4600.0
    fired = []
    call = clock.callLater(2.0, fired.append, "x")
    assert call.getTime() == 4602.0 and call.active()  # on the shifted clock, as seconds() is
    assert clock.getDelayedCalls()[0].getTime() == 4602.0
    real.advance(1.9)
    assert not fired
    real.advance(0.1)
    assert fired == ["x"] and not call.active()
    later = clock.callLater(5.0, fired.append, "y")
    later.cancel()
    real.advance(10.0)
    assert fired == ["x"]
    assert clock.advance == real.advance  # everything else is the reactor's own


def test_the_least_shift_to_calling_hours():
    monday = _dt.datetime(2025, 6, 16, 12, 45, 12, tzinfo=UTC)  # New York 08:45: no demo zone is in 10-19 h
    assert callable_area(monday) is None
    shift = callable_offset(monday)
    assert shift == 14 * 3600 - (12 * 3600 + 45 * 60 + 12)  # to 14:00 UTC, New York 10:00 (EDT)
    assert callable_area(monday + _dt.timedelta(seconds=shift)) == "212"
    assert callable_area(monday + _dt.timedelta(seconds=shift - 3600)) is None
    evening = _dt.datetime(2025, 6, 16, 20, 0, tzinfo=UTC)  # New York 16:00: now
    assert callable_offset(evening) == 0
    for h in range(0, 24 * 7):  # every hour of a week in winter and in summer: at most some hours ahead
        for start in (_dt.datetime(2025, 1, 6, 0, 30, tzinfo=UTC), _dt.datetime(2025, 7, 7, 0, 30, tzinfo=UTC)):
            t = start + _dt.timedelta(hours=h)
            s = callable_offset(t)
            assert 0 <= s <= 6 * 3600 and callable_area(t + _dt.timedelta(seconds=s)) is not None


def _pool(offset_s):
    seen = []
    pool = WorkerPool(ShiftedReactor(EPollReactor(), offset_s), seen.append, [5999])
    w = WorkerProcess(pool, 5999, 20000)
    pool.workers[5999] = w
    return pool, w, seen


def test_the_pool_puts_a_workers_instants_on_the_reactors_clock():
    """A worker stamps its events with the host's wall clock; the dialer reads the
    reactor's. On a reactor an hour ahead every instant arrives an hour ahead, durations
    unchanged; on the real clock nothing moves."""
    pool, w, seen = _pool(3600.0)
    wall = int(time.time() * 1000)
    pool._worker_event(w, {"ev": "admitted", "key": "k", "t": 12.5, "ts": wall - 5000, "waited_ms": 1.5})
    pool._worker_event(w, {"ev": "ended", "key": "k", "t": 17.5, "ts": wall, "code": 200, "reason": "BYE",
                           "answered": True, "started_ms": wall - 5000, "answered_ms": wall - 3000, "ended_ms": wall,
                           "cause": "remote"})
    admitted, ended = seen
    assert admitted["ts"] == wall - 5000 + 3_600_000 and admitted["t"] == 12.5 and admitted["waited_ms"] == 1.5
    assert (ended["ts"], ended["started_ms"], ended["answered_ms"], ended["ended_ms"]) == \
        (wall + 3_600_000, wall - 5000 + 3_600_000, wall - 3000 + 3_600_000, wall + 3_600_000)
    pool, w, seen = _pool(0)
    pool._worker_event(w, {"ev": "ended", "key": "k", "ts": wall, "code": 486, "reason": "Busy", "answered": False,
                           "started_ms": wall - 900, "answered_ms": None, "ended_ms": wall})
    assert (seen[0]["started_ms"], seen[0]["answered_ms"], seen[0]["ended_ms"]) == (wall - 900, None, wall)


def test_a_dead_workers_calls_end_on_the_reactors_clock():
    pool, w, seen = _pool(7200.0)
    pool.stopping = True  # no replacement here
    wall = int(time.time() * 1000)
    w.keys["k"] = {"answered": False, "started_ms": None}  # dialled
    pool._worker_event(w, {"ev": "admitted", "key": "k", "ts": wall})  # its start, put on the reactor's clock
    pool._worker_ended(w, error.ProcessTerminated(signal=9))
    ended = seen[-1]
    assert ended["ev"] == "ended" and ended["reason"] == "worker died" and ended["started_ms"] == wall + 7_200_000
    now = pool.reactor.seconds() * 1000
    assert now - 2000 < ended["ended_ms"] <= now + 1 and ended["ts"] == ended["ended_ms"]


def test_only_the_demo_shifts_its_clock_and_only_when_asked():
    from click.testing import CliRunner
    from cli import main
    r = CliRunner().invoke(main, ["run", "--clock-offset", "3600"])
    assert r.exit_code == 2 and "No such option '--clock-offset'" in r.output  # dialer run: the wall clock
    help_text = CliRunner().invoke(main, ["demo", "--help"]).output
    assert "--clock-offset" not in help_text  # a test and demo aid, not a user's option
    r = CliRunner().invoke(main, ["demo", "--no-sip", "--no-web", "--clock-offset", "soon"])
    assert r.exit_code == 2 and "seconds, or auto" in r.output

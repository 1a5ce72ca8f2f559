"""Pacing policies: how many new calls to launch now, from what is observed.

Pure objects: no clock and no I/O. The driver (the live dialer or the simulator)
passes the instant in every observation and tells the policy what happened
(dial outcomes, handle times, abandons); the policy answers with a number of new
dials. The same objects run in the simulator and in the dialer.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class PacingState:
    """What the driver sees at one instant (seconds on its clock)."""

    now: float
    agents: int  # logged in and not paused
    ready: int  # of those, free for a call now
    busy: int  # talking or in wrap-up
    talking: int  # connected calls (busy minus those in wrap-up)
    dialing: int  # dials in flight (ringing, not answered yet)
    waiting: int  # answered by a person, waiting for an agent (inside the connect window)
    lines: int  # the account's line capacity
    lines_in_use: int  # dialing + waiting + connected calls

    @property
    def free_lines(self):
        return max(0, self.lines - self.lines_in_use)


class Policy:
    """Base: event hooks that learn nothing, and a capacity clamp."""

    name = "policy"
    tick = None  # seconds between periodic decisions the driver must offer (None: events only)

    def decide(self, s):
        raise NotImplementedError

    def on_dial_end(self, now, live, seconds):
        """A dial ended after ``seconds``: a live answer, or not."""

    def on_connect(self, now, waited):
        """A live answer reached an agent after ``waited`` seconds."""

    def on_abandon(self, now):
        """A live answer found no agent within the connect window."""

    def on_handle_end(self, now, seconds):
        """An agent finished a call (talk + wrap) that took ``seconds``."""

    @staticmethod
    def clamp(n, s):
        return max(0, min(int(n), s.free_lines))


class Preview(Policy):
    """The agent starts each call: the dialer never launches one by itself."""

    name = "preview"

    def decide(self, s):
        return 0


class Progressive(Policy):
    """One line per free agent: never more dials in flight than agents ready."""

    name = "progressive"

    def decide(self, s):
        return self.clamp(s.ready - s.dialing - s.waiting, s)


class Power(Policy):
    """A fixed ratio ``k`` of dials in flight per free agent."""

    name = "power"

    def __init__(self, k):
        if k < 1:
            raise ValueError("a power ratio is at least 1 line per free agent")
        self.k = float(k)
        self.name = f"power{self.k:g}"

    def decide(self, s):
        target = int(self.k * s.ready + 1e-9)
        return self.clamp(target - s.dialing - s.waiting, s)


class Vicidial(Policy):
    """A port of VICIdial's adaptive dial level (AST_VDadapt.pl / AST_VDauto_dial.pl),
    as described in the pacing reference, for comparison runs.

    Every second a sample; every 60 s the drop statistics; every 15 s the dial level;
    every 2.5 s origination of round(level x agents not paused) minus calls in progress
    (dialing, waiting and connected: a connected call keeps counting, as in VICIdial).
    Agents in wrap-up count as paused (VICIdial's disposition screen).
    ``mode``: HARD_LIMIT, AVERAGE or TAPERED; ``shift_end`` (seconds) for TAPERED.
    """

    tick = 0.5

    def __init__(self, mode="HARD_LIMIT", max_level=3.0, drop_pct=3.0, intensity=0.0, diff_target=0.0,
                 shift_end=None):
        if mode not in ("HARD_LIMIT", "AVERAGE", "TAPERED"):
            raise ValueError("mode is HARD_LIMIT, AVERAGE or TAPERED")
        self.mode, self.max_level, self.drop_pct = mode, max_level, drop_pct
        self.intensity, self.diff_target, self.shift_end = intensity / 100.0, diff_target, shift_end
        self.name = "vicidial-" + mode.lower()
        self.level = 1.0
        self.samples = []  # (total, ready, waiting), last 15
        self.next_sample = self.next_stats = self.next_level = self.next_orig = None
        self.answers = self.drops = 0  # since the start ("today")
        self.pct_today = 0.0
        self.minute = []  # (time, dropped) of calls ended, for the last-minute figures
        self.calls_min = self.drops_min = 0

    def on_dial_end(self, now, live, seconds):
        self.minute.append((now, False))
        if live:
            self.answers += 1

    def on_abandon(self, now):
        self.drops += 1
        self.minute.append((now, True))

    def decide(self, s):
        now = s.now
        if self.next_sample is None:
            self.next_sample = self.next_stats = self.next_level = self.next_orig = now
        while now >= self.next_sample:
            self.samples = (self.samples + [(s.agents, s.ready, s.waiting)])[-15:]
            self.next_sample += 1.0
        if now >= self.next_stats:
            self.minute = [(t, d) for t, d in self.minute if t > now - 60]
            self.calls_min = sum(1 for _, d in self.minute if not d)
            self.drops_min = sum(1 for _, d in self.minute if d)
            self.pct_today = 100.0 * self.drops / self.answers if self.answers else 0.0
            self.next_stats += 60.0
        if now >= self.next_level:
            self._update_level(now)
            self.next_level += 15.0
        if now < self.next_orig:
            return 0
        while self.next_orig <= now:
            self.next_orig += 2.5
        # agents in wrap-up sit in VICIdial's disposition screen, status PAUSED: not counted
        active = s.agents - (s.busy - s.talking)
        goal = int(self.level * active + 0.5)
        return self.clamp(goal - (s.dialing + s.waiting + s.talking), s)

    def _update_level(self, now):
        if not self.samples:
            return
        n = len(self.samples)
        avg_total = sum(x[0] for x in self.samples) / n
        if avg_total <= 0:
            return
        delta = sum(x[1] for x in self.samples) / n - sum(x[2] for x in self.samples) / n
        d = delta + self.diff_target
        m = d / avg_total if d and avg_total else 0.0
        g = 1 + self.intensity if m >= 0 else abs(self.intensity - 1)
        level = min(max(self.level * (1 + g * m), 1.0), self.max_level)
        if self.calls_min > 20 and self.calls_min and 100.0 * self.drops_min / self.calls_min > 50:
            level /= 2
        if self.answers > 50 and self.pct_today > self.drop_pct:
            if self.mode == "HARD_LIMIT":
                level = 1.0
            elif self.mode == "AVERAGE":
                level /= 2
            else:  # TAPERED: by the time left to the shift end, as raw HHMM numbers
                if self.shift_end is not None:
                    left = _hhmm(self.shift_end) - _hhmm(now)
                    if left < 0:
                        level = 1.0
                    elif left <= 1000:
                        level = level * left / 1000
        self.level = max(level, 1.0)


def _hhmm(seconds):
    seconds = int(seconds) % 86400
    return (seconds // 3600) * 100 + (seconds % 3600) // 60

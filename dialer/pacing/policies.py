"""Pacing policies: how many new calls to launch now, from what is observed.

Pure objects: no clock and no I/O. The driver (the live dialer or the simulator)
passes the instant in every observation and tells the policy what happened
(dial outcomes, handle times, abandons); the policy answers with a number of new
dials. The same objects run in the simulator and in the dialer.
"""

import bisect
import heapq
import math
from collections import deque
from dataclasses import dataclass

import numpy as np


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

    def on_live_hangup(self, now):
        """A live answer hung up while it waited for an agent (inside the connect
        window): a live answer that was not abandoned."""

    def on_handle_end(self, now, seconds):
        """An agent finished a call (talk + wrap) that took ``seconds``."""

    def not_placed(self, n):
        """``n`` of the dials the last decision asked for were not placed (no lead, the
        trunk's calls-per-second cap): the driver says so."""

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


# ---------------------------------------------------------------------------------
# predictive pacing
# ---------------------------------------------------------------------------------

def abandon_table(n, p, ring_live, dial_mean, handle, dmax, thresholds=None, window=0.0, low=0):
    """``P[b, d]``: the probability that the ``d``-th dial in flight is a live answer that
    finds no agent, when ``b`` of ``n`` agents are busy (``P[b, 0] = 0``), for the rows
    ``b >= low`` (rows below are left at 1: never dial beyond the free agents there).

    The model: busy agents free at rate 1/``handle`` each; the other dials in flight bring
    live answers at rate p/``dial_mean`` each (Little's law on the dial pipeline), and the
    pipeline follows the policy's own ``thresholds`` as agents fill and free (the
    constant pipeline ``d - 1`` when none are given); the new dial answers after an
    exponential time of mean ``ring_live``. Then P = p s L[P(all busy at t)](s),
    s = 1/ring_live: the Laplace transform of an Erlang-loss chain's transient
    distribution, i.e. one tridiagonal solve per (b, d), all done at once by the Thomas
    algorithm over the busy count. A live answer may wait ``window`` seconds for an
    agent (the 2-second rule): it is lost only if none frees meanwhile (factor
    exp(-n window / handle)).
    """
    mu, s = 1.0 / handle, 1.0 / ring_live
    per_dial = p / dial_mean
    low = max(0, min(int(low), n))
    bs = np.arange(low, n + 1)  # starting busy counts (rows)
    k = np.arange(n + 1)  # busy count along the chain
    others = np.maximum(np.arange(dmax + 1, dtype=float) - 1.0, 0.0)
    # inflight[b, k, d]: dials (other than ours) in flight when the chain is at k, from row b
    if thresholds is None:
        inflight = np.broadcast_to(others, (len(bs), n + 1, dmax + 1))
    else:
        t_k = np.asarray(thresholds, dtype=float)[None, :, None]
        left = np.maximum(others[None, None, :] - np.maximum(k[None, :] - bs[:, None], 0)[:, :, None], 0.0)
        inflight = np.maximum(t_k, left)
        inflight[np.arange(len(bs)), bs, :] = others
    lam = inflight * per_dial
    lam[:, n, :] = 0.0
    down = k * mu
    # (sI - Q)^T x = e_b: diagonal s + lam_k + k mu, below -lam_{k-1}, above -(k+1) mu
    c_prev = np.zeros((len(bs), dmax + 1))
    r_prev = np.zeros((len(bs), dmax + 1))
    for i in range(n + 1):
        diag = s + lam[:, i, :] + down[i]
        rhs = (bs == i).astype(float)[:, None]
        if i == 0:
            m = diag
            r_prev = rhs / m
        else:
            low_i = -lam[:, i - 1, :]
            m = diag - low_i * c_prev
            r_prev = (rhs - low_i * r_prev) / m
        c_prev = (-down[i + 1] / m) if i < n else None
    out = np.ones((n + 1, dmax + 1))
    out[low:] = p * s * r_prev  # the last component of the solve is P(all busy)
    out[:, 0] = 0.0
    if window > 0:
        out[low:] *= math.exp(-n * window / handle)
    return np.maximum.accumulate(out, axis=1)  # monotone in d (rounding noise aside)


def thresholds_from(table, theta):
    """T[b]: dials to keep in flight with b agents busy: the largest d whose abandon
    probability is at most ``theta``, and never fewer than the free agents."""
    n = table.shape[0] - 1
    t = [int(np.searchsorted(table[b], theta, side="right")) - 1 for b in range(n + 1)]
    return [max(x, n - b) for b, x in enumerate(t)]


def excess_answers(d, p, free):
    """E[(Binomial(d, p) - free)+]: live answers from ``d`` dials in flight beyond the
    ``free`` agents, were no agent to free up meanwhile: a pessimistic bound on the
    abandons those dials can still cause, which does not lean on the model.
    Computed as d p - free + sum_{k <= free} (free - k) P(X = k): a short sum."""
    if d <= free:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return float(d - free)
    if free > 50 and d * p * (1 - p) > 25:  # normal approximation
        mu, sd = d * p, math.sqrt(d * p * (1 - p))
        z = (free - mu) / sd
        return sd * math.exp(-z * z / 2) / math.sqrt(2 * math.pi) + (mu - free) * (1 - _CDF(z))
    q = 1.0 - p
    log_term = d * math.log(q)  # log P(X = 0)
    below = 0.0
    for k in range(min(free, d) + 1):
        below += (free - k) * math.exp(log_term)
        log_term += math.log((d - k) / (k + 1) * p / q) if k < d else 0.0
    return d * p - free + below


def poisson_room(k, eps):
    """The largest mean r of a Poisson count with P(count >= k) <= eps (0 for k <= 0):
    how many abandons a pipeline may be expected to cause when k of them would take
    the window over the cap."""
    if k <= 0:
        return 0.0

    def tail(r):
        term = total = math.exp(-r)
        for i in range(1, k):
            term *= r / i
            total += term
        return 1.0 - total
    lo, hi = 0.0, float(k)
    for _ in range(40):
        mid = (lo + hi) / 2
        if tail(mid) <= eps:
            lo = mid
        else:
            hi = mid
    return lo


def _CDF(z):
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def free_weights(n):
    """How much an extra dial is worth by busy count b: the share of agents free,
    (n - b + 1) / (n + 1). Dividing the abandon table by it before thresholding makes
    the policy take more risk while many agents sit idle and less when few do; with it
    the thresholds come within 0.0015 occupancy of the LP optimum over the reference
    grid (exact Markov evaluation, bench/optimum.py), against up to 0.008 without."""
    return ((n + 1.0 - np.arange(n + 1)) / (n + 1.0))[:, None]


class _Ewma:
    """A recent-weighted mean: plain mean over the first ``span`` values, then an
    exponential average with weight 1/``span``."""

    __slots__ = ("span", "n", "value")

    def __init__(self, span, prior):
        self.span, self.n, self.value = span, 0, prior

    def add(self, x):
        self.n += 1
        self.value += (x - self.value) / min(self.n, self.span)


class _Rate:
    """A live-answer rate that follows abrupt change: a slow recent-weighted mean
    (``span`` dials) for a steady estimate, and the last ``fast`` outcomes that watch
    it. When their mean differs from the slow one by more than ``z`` standard errors,
    the rate has moved: the most likely change point among those outcomes is found
    (the split of largest two-segment Bernoulli likelihood), and the slow mean restarts
    from the outcomes after it (as if it had seen only those, so it keeps adapting
    quickly); ``changes`` counts the events.

    The caller gives the outcomes in the order the dials were *placed* (see
    ``Predictive.on_dial_end``)."""

    __slots__ = ("slow", "recent", "hits", "fast", "z", "changes", "latest")

    def __init__(self, span, fast, prior, z=4.5):
        self.slow = _Ewma(span, prior)
        self.recent, self.hits = deque(maxlen=fast), 0
        self.fast, self.z, self.changes = fast, float(z), 0
        self.latest = deque(maxlen=self.SHORT)  # the last outcomes of the quick rise test (``rose``)

    @property
    def n(self):
        return self.slow.n

    @property
    def value(self):
        return self.slow.value

    def add(self, x):
        """Add an outcome (1 live, 0 not), in the order the dials were placed; True
        when a change was detected."""
        self.slow.add(x)
        return self._watch(1 if x else 0)

    def _watch(self, x):
        if len(self.recent) == self.fast:
            self.hits -= self.recent[0]
        self.recent.append(x)
        self.hits += x
        if self.slow.n < 2 * self.fast:
            return False
        p = min(max(self.slow.value, 1e-3), 0.999)
        if len(self.recent) < self.fast:
            return False
        if abs(self.hits / self.fast - p) <= self.z * math.sqrt(p * (1.0 - p) / self.fast):
            return False
        self._restart(self._after_change(list(self.recent)))
        return True

    def rose(self, x, share=1.0):
        """An early outcome (before ``add`` sees it): True when the last ``SHORT`` of
        them hold more answers than the rate makes plausible. A rise is the dangerous
        side (more answers than agents), so it is not left waiting for ``add``.
        ``share``: the chance that a live answer counts as one here (``Predictive``
        gives whether a dial answered within a ring age that most live answers reach,
        so the outcomes are Bernoulli(p x share) whatever the pace of the dials;
        outcomes in the order they *end* are not: after a lull of dials and a burst,
        the burst's answers end while the lull's no-answers would have, a run of
        answers at a steady p). The slow mean restarts from the answers after the
        change point."""
        share = min(max(float(share), 1e-3), 1.0)
        self.latest.append(1 if x else 0)
        if self.slow.n < 2 * self.fast or len(self.latest) < self.SHORT:
            return False
        if not self._sudden_rise(min(max(self.slow.value * share, 1e-3), 0.999), list(self.latest)):
            return False
        self._restart(self._after_change(list(self.latest)), share)
        self.latest.clear()
        return True

    def _restart(self, tail, share=1.0):
        before = self.slow.value
        # the new rate from the outcomes after the change. The change point is the one
        # that fits best, so the rate after it is biased away from the old one; an
        # underestimate is the dangerous side (more dials than answers can take), so a
        # fall is taken at the upper end of its confidence interval (2 standard
        # errors) and a rise at its mean; the slow mean then learns the rest quickly
        m = len(tail)
        q = min(sum(tail) / m / share, 0.999)
        if q < before:
            q = min(before, q + 2.0 * math.sqrt(max(q, 0.02) * (1.0 - q) / m))
        self.slow.value = q
        self.slow.n = m
        self.recent.clear()
        self.recent.extend(tail)
        self.hits = sum(tail)
        self.changes += 1

    SHORT = 30  # outcomes of the quick test for a rise
    RISE_P = 1e-5  # its level: the chance of so many answers at the old rate

    def _sudden_rise(self, p, last):
        """More answers among the ``last`` outcomes than the rate ``p`` makes plausible
        (binomial upper tail under ``RISE_P``): caught within a few dozen dials, not the
        ``fast`` the two-sided test needs."""
        h, n = sum(last), len(last)
        if h <= n * p + 3.0 * math.sqrt(n * p * (1.0 - p)):
            return False
        tail = sum(math.comb(n, k) * p ** k * (1.0 - p) ** (n - k) for k in range(h, n + 1))
        return tail < self.RISE_P

    def _after_change(self, outcomes):
        """The outcomes after the most likely change point (at least a quarter of them)."""
        xs = np.asarray(outcomes, dtype=float)
        m = len(xs)
        k = np.arange(1, m)  # split after k outcomes
        head = np.cumsum(xs)[:-1]
        tail = xs.sum() - head

        def ll(h, n):
            q = np.clip(h / n, 1e-9, 1 - 1e-9)
            return h * np.log(q) + (n - h) * np.log(1 - q)
        score = ll(head, k) + ll(tail, m - k)
        score[k > m - m // 4] = -np.inf
        j = int(k[int(np.argmax(score))])
        return list(outcomes)[j:]


class Predictive(Policy):
    """Adaptive predictive pacing that keeps the abandon rate under the campaign's cap.

    - Learns online, recent-weighted: the live-answer rate, the ring time of live
      answers, the length of all dials, and the handle time (talk + wrap; from busy
      time over completed calls, so calls still in progress count).
    - From that model, ``abandon_table`` gives the abandon probability of each extra
      dial in flight for every number of busy agents. The policy keeps in flight every
      dial whose abandon probability is at most ``theta``, and at least one per free
      agent.
    - ``theta`` = kappa p N^(2/3) (over the calibration factor, abandons seen /
      abandons predicted with a prior of a few abandons, when there is a connect
      window), kappa steered by a Robbins-Monro step per live answer so that the share
      of live answers abandoned meets the target: the cap minus a margin that shrinks
      as evidence (live answers in the compliance window) grows.
    - A budget guard: dials beyond the free agents are placed only while the abandons
      counted in the window plus those expected from the whole pipeline (the larger of
      D x the D-th dial's risk and the sum of the marginal risks) stay under the line's
      share of the window's live answers; early on a limited allowance over the line
      (at most the cap's share of the live answers seen). So it starts progressive (no
      evidence, no budget), backs off as the rate nears the cap, and is progressive at
      the cap.
    - Never more dials than free lines (``Policy.clamp``).

    ``history``: what the compliance window already holds when the campaign starts
    (from its CDRs), so a restart does not forget the window: by minute of call start,
    ``[(minute start in epoch seconds, live answers, abandons)]`` oldest first (they
    leave the window as time passes, as the dialer's ``PacingRules.minutes`` gives
    them), or a bare ``(live answers, abandons)`` kept for the whole run.
    """

    name = "predictive"

    def __init__(self, cap=0.03, window_hours=720.0, connect_window=0.0, z=0.5, min_margin=0.0015,
                 warmup_dials=40, warmup_lives=8, history=(0, 0), prior_p=0.3, prior_ring=15.0,
                 prior_dial=20.0, prior_handle=210.0, calibration_prior=20.0, guard_hours=1.0,
                 eta=0.1, backoff=1.0, guard_margin=0.0005, calibrate_theta=None, over_cap=0.02,
                 ages=True):
        if not 0 < cap < 1:
            raise ValueError("the abandon cap is a fraction between 0 and 1")
        self.last_agents = 0
        self.cap, self.window_s, self.connect_window = float(cap), float(window_hours) * 3600.0, float(connect_window)
        self.z, self.min_margin, self.calibration_prior = z, min_margin, calibration_prior
        self.warmup_dials, self.warmup_lives = warmup_dials, warmup_lives
        self.guard_hours = float(guard_hours)
        self.p = _Rate(2000, 200, prior_p)
        self.ended, self.seq = [], 0  # dials ended, not learned yet: (placed at, scrambled order, live, seconds)
        # the quick rise test (``_mature``): the dials placed, by instant, until they reach
        # the rise age, and the placement instants of the live answers within it
        self.pending = deque()
        self.early = []
        self.rise_age = (-1, 2.0 * prior_ring, 1.0)  # (live rings seen when computed, age, share of answers within)
        self.ring = _Ewma(1000, prior_ring)
        self.dial = _Ewma(2000, prior_dial)
        self.prior_handle = float(prior_handle)
        # handle time = busy time / completed handles, both decayed per completed handle
        self.busy_time, self.handles_done, self.last_now, self.last_busy = 0.0, 0.0, None, 0
        self.eta, self.backoff, self.guard_margin = float(eta), float(backoff), float(guard_margin)
        self.over_cap = float(over_cap)  # the chance the pipeline may take the window over the cap
        # theta is corrected by the calibration factor where the model is known to be
        # approximate: the connect window's factor exp(-n w / H) assumes exponential
        # handle times and ignores answers competing for the agent who frees. Without a
        # window the model is the exact-model family the thresholds were fitted on, and
        # the slowly drifting calibration only adds noise there (measured: worse)
        self.calibrate_theta = self.connect_window > 0 if calibrate_theta is None else bool(calibrate_theta)
        self.buckets = deque()  # [minute, lives, abandons] inside the window
        if history and not isinstance(history[0], (int, float)):
            # by minute of call start: these leave the window as time passes, like the run's own
            for start, lv, ab in history:
                self.buckets.append([int(start // 60), int(lv), int(ab)])
            history = (sum(b[1] for b in self.buckets), sum(b[2] for b in self.buckets))
        lives, abandons = history or (0, 0)
        self.lives, self.abandons = int(lives), int(abandons)  # in the window
        self.run_abandons = 0
        self.inflight = 0  # dials placed and not ended
        self.expected_inflight = 0.0  # expected abandons among them (raw model)
        self.predicted_done = 0.0  # expected abandons (raw model) of dials that ended, for calibration
        # theta = kappa * p * agents^(2/3): over the reference grid (exact evaluation) the
        # theta that meets a 2.5 % abandon rate has kappa between 0.029 and 0.040, so
        # steering kappa starts near its answer and follows agents logging in and out
        self.log_kappa = math.log(max(1.35 * self.target(), 1e-4))
        self.tables = {}  # agents -> (model used, abandon table)
        self.recomputes = 0
        # the dials in flight by the instant they were placed, and the recent lengths of
        # live and other dials: a dial's chance of still being a live answer depends on
        # how long it has been ringing (``live_share``)
        self.ages = bool(ages)
        self.flight = []  # sorted placement instants of the dials in flight
        self.live_len = deque(maxlen=1000)
        self.other_len = deque(maxlen=2000)
        self._sorted = None

    # --- what happened ----------------------------------------------------------
    def _bucket(self, now):
        minute = int(now // 60)
        if not self.buckets or self.buckets[-1][0] != minute:
            self.buckets.append([minute, 0, 0])
        while self.buckets and self.buckets[0][0] * 60 < now - self.window_s:
            _, lv, ab = self.buckets.popleft()
            self.lives -= lv
            self.abandons -= ab
        return self.buckets[-1]

    def on_dial_end(self, now, live, seconds):
        # learned later, in the order the dials were placed (``_learn``)
        self.seq += 1
        self._landed(now - seconds)
        heapq.heappush(self.ended, (now - seconds, (self.seq * 2654435761) % 4294967296, bool(live), float(seconds)))
        if live and seconds <= self.rise_age[1]:
            heapq.heappush(self.early, now - seconds)
        self._mature(now)
        self._learn(now)
        if self.inflight > 0:
            share = self.expected_inflight / self.inflight
            self.expected_inflight -= share
            self.predicted_done += share
            self.inflight -= 1

    def _learn(self, now):
        """Learn from the dials placed more than 3 mean dial lengths ago (by then they
        have most likely all ended), in the order they were placed. In the order they
        end, the first outcomes of a burst of dials (start-up, a crowd logging in) are
        the short ones: busy signals and live answers before the no-answer timeouts,
        which biases p, the ring and the dial length for a minute, and a burst ends as
        a run of answers then a run of misses, which looks like a change of p. Dials
        placed at the same instant are learned in a scrambled (fixed) order."""
        horizon = 3.0 * self.dial.value
        while self.ended and self.ended[0][0] < now - horizon:
            _, _, live, seconds = heapq.heappop(self.ended)
            if self.p.add(1.0 if live else 0.0):
                self._model_changed()
            self.dial.add(seconds)
            (self.live_len if live else self.other_len).append(seconds)
            self._sorted = None
            if live:
                self.ring.add(seconds)

    def _mature(self, now):
        """The quick test for a rise of p, on the dials placed at least the rise age A
        ago (about the 90th percentile of the live rings), in the order they were
        placed: each is a 1 if it answered within A, else a 0 (still ringing or ended
        otherwise). These are Bernoulli(p F(A)) at a steady p however the dials were
        paced, known A after the dial (not 3 mean dial lengths, as ``_learn``). In the
        order dials *end* they are not: answers end within 4-12 s and no-answers at
        20 s, so after a lull of dials followed by a burst (the policy tops up the
        pipeline in waves) a run of answers ends while the lull's no-answers would
        have: at N=100, p=0.15 that stream "rose" 7-11 times a shift at a steady p
        (p taken to 0.4-1.0, warm-up again, the calibration lost)."""
        count, age, share = self.rise_age
        if len(self.live_len) >= 50 and self.ring.n - count >= 50:
            live = np.sort(np.fromiter(self.live_len, float))
            age = float(live[int(0.9 * (len(live) - 1))])
            share = float(np.searchsorted(live, age, side="right")) / len(live)
            self.rise_age = (self.ring.n, age, share)
        cut = now - age
        n = 0
        while self.pending and self.pending[0] <= cut:
            self.pending.popleft()
            n += 1
        k = 0  # answers within A of the dials matured (an answer placed a little after its
        # decision instant, or within a grown A, may come with the next ones)
        while self.early and self.early[0] <= cut + 1e-6 and (k < n or not self.pending):
            heapq.heappop(self.early)
            k += 1
        k = min(k, n)
        for i in range(n):  # the answers spread evenly over the dials matured together
            x = (i + 1) * k // n - i * k // n
            if self.p.rose(x, share):
                # the outcomes not learned yet are mostly from before the rise: dropped,
                # or they would pull the new rate back towards the old one
                self.ended.clear()
                self._model_changed()
                break

    def _model_changed(self):
        """The live-answer rate moved abruptly: what the model predicted before says
        nothing about the new one, so the calibration starts again from its prior."""
        self.run_abandons, self.predicted_done = 0, 0.0

    def _live_outcome(self, now, abandoned):
        b = self._bucket(now)
        b[1] += 1
        self.lives += 1
        if abandoned:
            b[2] += 1
            self.abandons += 1
            self.run_abandons += 1
        if not self.warming_up():
            # steer theta by what happened (a Robbins-Monro step): it settles where the
            # share of live answers abandoned is the target
            self.log_kappa += self.eta * (self.target() - (1.0 if abandoned else 0.0))
            self.log_kappa = min(max(self.log_kappa, math.log(1e-4)), math.log(1.0))

    def on_connect(self, now, waited):
        self._live_outcome(now, False)

    def on_abandon(self, now):
        self._live_outcome(now, True)

    def on_live_hangup(self, now):
        self._live_outcome(now, False)

    def not_placed(self, n):
        del self.flight[max(0, len(self.flight) - int(n)):]
        for _ in range(min(int(n), len(self.pending))):
            self.pending.pop()
        n = min(int(n), self.inflight)
        if n > 0:
            self.expected_inflight -= self.expected_inflight * n / self.inflight
            self.inflight -= n

    def on_handle_end(self, now, seconds):
        self._observe_busy(now, None)
        keep = 1.0 - 1.0 / max(400.0, 20.0 * self.last_agents)
        self.busy_time *= keep
        self.handles_done = self.handles_done * keep + 1.0

    def _observe_busy(self, now, busy):
        if self.last_now is not None and now > self.last_now:
            self.busy_time += self.last_busy * (now - self.last_now)
        self.last_now = now
        if busy is not None:
            self.last_busy = busy

    # --- the model --------------------------------------------------------------
    def handle_mean(self):
        """Busy time over completed handles, with the prior worth two handles (so the
        first minutes, before anyone has finished a call, have a usable value)."""
        return (self.busy_time + 2.0 * self.prior_handle) / (self.handles_done + 2.0)

    def target(self):
        """The abandon rate aimed at: the cap minus a margin that shrinks with evidence,
        lowered further while the window's rate (counting the abandons expected from
        the dials in flight) runs above it, so the policy backs off smoothly before
        the guard has to act."""
        margin = max(self.min_margin, self.z * math.sqrt(self.cap * (1 - self.cap) / (self.lives + 50.0)))
        aim = max(0.0, self.cap - margin)
        if self.lives > 0:
            rate = (self.abandons + self.expected_inflight * self.calibration()) / self.lives
            if rate > aim:
                aim = max(0.0, aim - self.backoff * (rate - aim))
        return aim

    def early_allowance(self, target):
        """Early on (the window holds less than ``guard_hours`` of live answers) the rate
        is noise: going over the line is tolerated as far as that hour at the target
        rate would bring it back, and never by more than the cap's share of the live
        answers seen so far (so the allowance is not spent in one burst at start-up);
        it is gone once the hour is in the window."""
        line = self.cap - self.guard_margin
        hour = max(0.0, line - target) * max(0.0, self.lives_per_hour() * self.guard_hours - self.lives)
        return min(hour, self.cap * self.lives)

    def lives_per_hour(self):
        """Live answers an hour brings at full occupancy (an upper estimate)."""
        return self.last_agents * 3600.0 / self.handle_mean()

    def calibration(self):
        """Abandons seen / abandons the model predicted, shrunk towards 1 by a prior."""
        k = self.calibration_prior
        return min(4.0, max(0.25, (self.run_abandons + k) / (self.predicted_done + k)))

    @property
    def theta(self):
        n = max(self.last_agents, 1)
        scale = max(min(self.p.value, 0.999), 1e-3) * n ** (2.0 / 3.0)
        if self.connect_window > 0:  # the table is scaled by the same factor
            scale *= math.exp(-n * self.connect_window / self.handle_mean())
        return math.exp(self.log_kappa) * scale

    def warming_up(self):
        return (self.p.n < max(self.warmup_dials, 2 * self.last_agents)
                or self.ring.n < max(self.warmup_lives, self.last_agents // 4))

    def threshold(self):
        """The risk threshold the table's (weighted) risks are held to: theta, over the
        calibration factor when ``calibrate_theta`` (the model's risks corrected by the
        abandons seen against those it predicted: a model off by a steady factor, as
        with the 2-second rule and non-exponential times, is corrected by the
        calibration, and kappa's steering only makes up what is left)."""
        if not self.calibrate_theta:
            return self.theta
        return self.theta / self.calibration()

    def model(self):
        # counted as fresh dials (``effective_dialing``), the dials in flight bring live
        # answers at p / (mean ring of a live answer) each, not p / (mean dial length)
        dial = self.ring.value if self.ages else self.dial.value
        return (max(min(self.p.value, 0.999), 1e-3), self.ring.value, dial, self.handle_mean(),
                self.threshold())

    def table(self, n, b):
        """The abandon table for n agents on the learned model, with rows from a little
        below b busy agents; recomputed when the model has moved by more than a few per
        cent (theta: by more than 30 %) or b falls below the rows computed."""
        cur = self.model()
        have = self.tables.get(n)
        if have is not None:
            used, low, tab = have
            if (b >= low and all(abs(math.log(x / y)) < 0.05 for x, y in zip(cur[:4], used[:4]))
                    and abs(math.log(cur[4] / used[4])) < 0.3):
                return tab
        p, ring, dial, handle, theta = cur
        low = max(0, b - max(8, n // 5))
        dmax = int(min(4000, math.ceil(1.5 * n / p + 15)))
        args = (n, p, ring, dial, handle, dmax)
        w = free_weights(n)
        first = abandon_table(*args, window=self.connect_window, low=low)
        raw = abandon_table(*args, thresholds=thresholds_from(first / w, theta), window=self.connect_window, low=low)
        tab = (raw, raw / w)
        self.tables[n] = (cur, low, tab)
        self.recomputes += 1
        return tab

    # --- deciding ---------------------------------------------------------------
    def decide(self, s):
        self._observe_busy(s.now, s.busy)
        self._mature(s.now)
        self._learn(s.now)
        n = self.last_agents = s.agents
        free = max(0, s.ready - s.waiting)
        base = free - s.dialing  # one dial per free agent: no abandon can come of these
        if n <= 0:
            return 0
        if self.warming_up():
            n_new = self.clamp(base, s)
            self.inflight += n_new
            self._placed(s.now, n_new)
            return n_new
        b = min(n, n - free)
        dialing = self.effective_dialing(s)
        raw, weighted = self.table(n, b)
        row = raw[b]
        calib = self.calibration()
        target = self.target()
        want = min(max(int(np.searchsorted(weighted[b], self.threshold(), side="right")) - 1, free), len(row) - 1)
        # a sanity cap for states the stationary model hardly ever sees (the floor at
        # start-up, a crowd of agents logging in): expected answers in flight at most
        # 1.5 x the agents who can take them (free, or freeing within a ring) plus 3
        p = self.model()[0]
        freeing = (n - free) * (1.0 - math.exp(-self.ring.value / self.handle_mean()))
        want = min(want, max(free, int((1.5 * (free + freeing) + 3.0) / p)))
        start = max(dialing, free)
        extra = 0
        if want > start:
            # the budget guard: the expected abandons of the whole pipeline, topped up to D
            # dials, must fit the window's budget. The table gives each dial's own risk
            # with the dials before it in flight; once D are in flight each of them runs
            # the D-th dial's risk (they are alike), so D x row[D] is the pipeline's
            # expected abandons too, which the sum of marginal risks understates when
            # many dials are in flight for few free agents (start-up, a crowd logging in)
            # (the dials already placed count at least by a model-free bound)
            ds = np.arange(start + 1, want + 1)
            at_risk = max(self.expected_inflight * calib, excess_answers(dialing, p, free))
            risk = np.maximum(calib * ds * row[start + 1:want + 1], at_risk + calib * np.cumsum(row[start + 1:want + 1]))
            line = self.cap - self.guard_margin
            allowance = self.early_allowance(target)
            budget = line * self.lives - self.abandons + allowance
            extra = int(np.searchsorted(risk, budget, side="right"))
            if allowance <= 0.0:
                # abandons are whole: with k more the window is over the cap (a small
                # team's 600 live answers a shift: one abandon is 0.17 points), so the
                # pipeline's expected abandons stay where k or more are unlikely
                k = int(math.floor(self.cap * self.lives - self.abandons)) + 1
                extra = min(extra, int(np.searchsorted(risk, poisson_room(k, self.over_cap), side="right")))
        n_new = self.clamp(start + extra - dialing, s)
        if n_new:
            self.inflight += n_new
            self.expected_inflight += float(row[dialing + 1:dialing + n_new + 1].sum())
        self._placed(s.now, n_new)
        return n_new

    def _landed(self, placed):
        """A dial placed at ``placed`` ended: it leaves the dials in flight (the latest
        one placed at or before that instant: the driver may place a dial a little
        after the decision that asked for it)."""
        if self.flight:
            i = bisect.bisect_right(self.flight, placed + 1e-6) - 1
            del self.flight[max(i, 0)]

    def live_shares(self, now):
        """For each dial in flight, its chance of still becoming a live answer given
        how long it has rung (a: its age): p S_L(a) / (p S_L(a) + (1 - p) S_O(a)), with
        S_L, S_O the survival functions of the recent live-answer and other dial lengths
        (a half count of prior each, so an age beyond all seen keeps some chance). With
        exponential lengths of one mean (the validation model) every share is p; with a
        live answer after 4-12 s and no-answers at 20 s, a dial ringing for 13 s has
        none left."""
        p = max(min(self.p.value, 0.999), 1e-3)
        if self._sorted is None:
            self._sorted = (np.sort(np.fromiter(self.live_len, float)), np.sort(np.fromiter(self.other_len, float)))
        live, other = self._sorted
        age = now - np.asarray(self.flight, dtype=float)
        s_l = (len(live) - np.searchsorted(live, age, side="right") + 0.5) / (len(live) + 1.0)
        s_o = (len(other) - np.searchsorted(other, age, side="right") + 0.5) / (len(other) + 1.0)
        return p * s_l / (p * s_l + (1.0 - p) * s_o)

    def effective_dialing(self, s):
        """The dials in flight counted as fresh ones: the sum of their live shares over
        p (dials that have rung past every live answer count for almost nothing), plus
        any the policy did not see placed. Without ``ages``: the dials in flight."""
        if not self.ages or self.warming_up() or not self.flight:
            return s.dialing
        seen = min(len(self.flight), s.dialing)
        p = max(min(self.p.value, 0.999), 1e-3)
        shares = self.live_shares(s.now)
        eff = float(shares.sum()) / p * (seen / len(self.flight)) + (s.dialing - seen)
        return min(s.dialing, int(math.ceil(eff - 1e-9)))

    def _placed(self, now, n):
        """Remember the dials placed (their instant: ``live_shares``, ``_mature``)."""
        if n > 0:
            self.flight.extend([now] * n)  # decisions come in time order: still sorted
            self.pending.extend([now] * n)

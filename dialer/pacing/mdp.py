"""The pacing problem of the reference model as a Markov decision process.

N agents, each busy for an exponential handle time (mean ``handle``); dials last an
exponential time (mean ``dial``) and are live answers with probability ``p``; a live
answer finding every agent busy is abandoned. State: (busy agents b, dials in flight
d). At every event the policy may add dials; the optimal policy for a Lagrangian
reward (occupancy minus ``lam`` per abandon) is a threshold: keep at least T[b] dials
in flight. Bisection on ``lam`` gives the best deterministic threshold policy under an
abandon-rate target (the constrained optimum randomises between two of them).

numpy only, no I/O, no clock: usable by the live pacing policy and the benchmark.
Groundwork for the predictive policy (issue 4); not wired into a policy yet.
"""

import numpy as np


def _solve(n, p, dial, handle, lam, dmax, tol=1e-9, max_iter=50_000):
    """Relative value iteration on the uniformised chain -> thresholds T[b]."""
    mu, nu = 1.0 / handle, 1.0 / dial
    rate = n * mu + dmax * nu
    b = np.arange(n + 1)[:, None]
    d = np.arange(dmax + 1)[None, :]
    reward = b / n - lam * (b == n) * d * nu * p
    w = np.zeros((n + 1, dmax + 1))
    for _ in range(max_iter):
        v = np.maximum.accumulate(w[:, ::-1], axis=1)[:, ::-1]  # best over d' >= d
        v_done = np.vstack([v[:1], v[:-1]])  # an agent frees: (b-1, d)
        v_fail = np.hstack([v[:, :1], v[:, :-1]])  # a dial ends: (b, d-1)
        v_conn = np.where(b < n, np.vstack([v_fail[1:], v_fail[-1:]]), v_fail)  # live: (b+1, d-1) or abandon
        new = (reward + b * mu * v_done + d * nu * (p * v_conn + (1 - p) * v_fail)
               + (rate - b * mu - d * nu) * v) / rate
        new -= new[0, 0]
        if np.abs(new - w).max() < tol:
            w = new
            break
        w = new
    return np.argmax(w, axis=1)


def evaluate(n, p, dial, handle, thresholds, dmax, max_iter=400_000):
    """Long-run (occupancy, abandoned / live answers) of a threshold policy."""
    mu, nu = 1.0 / handle, 1.0 / dial
    rate = n * mu + dmax * nu
    b = np.arange(n + 1)[:, None]
    d = np.arange(dmax + 1)[None, :]
    pi = np.zeros((n + 1, dmax + 1))
    pi[0, thresholds[0]] = 1.0
    for k in range(max_iter):
        new = np.zeros_like(pi)
        new[:-1] += b[1:] * mu * pi[1:]
        flow = d * nu * pi
        new[1:, :-1] += p * flow[:-1, 1:]
        new[n, :-1] += p * flow[n, 1:]
        new[:, :-1] += (1 - p) * flow[:, 1:]
        new += (rate - b * mu - d * nu) * pi
        new /= rate
        for bb in range(n + 1):  # the decision: top up to T[b]
            t = thresholds[bb]
            new[bb, t] += new[bb, :t].sum()
            new[bb, :t] = 0.0
        done = k % 200 == 0 and np.abs(new - pi).max() < 1e-13
        pi = new
        if done:
            break
    occ = float((pi * b).sum() / n)
    live = float((pi * d * nu * p).sum())
    abandoned = float((pi[n] * np.arange(dmax + 1) * nu * p).sum())
    return occ, abandoned / live if live else 0.0


def thresholds_for(n, p, dial, handle, target, dmax=None):
    """The best deterministic threshold policy whose abandon rate is at most ``target``:
    (thresholds, occupancy, abandon rate)."""
    dmax = dmax or int(min(400, 3 * n / p + 20))
    lo, hi = 0.05, 5000.0
    best = None
    for _ in range(40):
        lam = (lo * hi) ** 0.5
        t = _solve(n, p, dial, handle, lam, dmax)
        occ, ab = evaluate(n, p, dial, handle, t, dmax)
        if ab > target:
            lo = lam
        else:
            hi = lam
            best = (t, occ, ab)
        if hi / lo < 1.02:
            break
    return best

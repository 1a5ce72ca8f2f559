"""The best any pacing policy can do in the reference model: a constrained Markov
decision process solved as a linear program over state-action frequencies (scipy's
HiGHS; a benchmark-only dependency).

Model (pacing reference): N agents, each busy for an exponential handle time (mean
``handle``); a dial lasts an exponential time (mean ``dial``) and is a live answer
with probability ``p``; a live answer that finds every agent busy is abandoned.
State (b busy agents, d dials in flight). At every event the policy may add dials;
adding one is an instantaneous action ``A`` (b, d) -> (b, d + 1), waiting for the next
event is action ``W``. This is a semi-Markov decision process whose actions have
sojourn 0 (A) or 1 / (b mu + d nu) (W); its LP:

    maximise   sum_s x_W(s) * (b / N) / R(s)                      (occupancy)
    subject to x_W(s) + x_A(s) = inflow(s)                        (balance, every s)
               sum_s x_W(s) / R(s) = 1                            (time adds up)
               sum_s x_W(s) * d nu p / R(s) * ([b = N] - alpha) <= 0   (abandons <= alpha lives)
               x >= 0

The optimum randomises in at most one state, so it is the upper boundary of what any
(history-dependent, even clairvoyant-free) policy reaches at a mean abandon rate alpha.

Run as a script: ``python bench/optimum.py N P [ALPHA ...]`` prints one JSON line per alpha.
"""

import json
import sys
import time

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix


class LPFailed(RuntimeError):
    pass


def dmax_for(n, p, b):
    """Truncation of dials in flight (the same at every b, so a live answer from
    (b, d) always lands inside the grid): above any useful threshold, the optimal ones
    sit below n / p; ``edge_time`` in the result (reported by the benchmark) shows
    whether it binds. n / p + 12 keeps the N=100, p=0.15 LP (68,680 states) to about
    100 s, where 1.3 n / p + 12 (89k states) did not finish in 15 minutes."""
    return int(np.ceil(n / p + 12))


def dmax_wide(n, p, b):
    """The wider truncation used before (1.3 n / p + 12): the fallback when HiGHS fails
    on the narrower LP (it reports a solve error at N=50, p=0.3 with n / p + 12)."""
    return int(np.ceil(1.3 * n / p + 12))


def solve(n, p, alpha, dial=20.0, handle=210.0, truncation=dmax_for, time_limit=None):
    """Optimal occupancy at mean abandon rate <= alpha. Returns a dict with occupancy,
    abandon rate, talk minutes per agent-hour (talk = handle - 30 s wrap in the reference),
    the share of time spent at the truncation edge, the LP size and the solve time."""
    mu, nu = 1.0 / handle, 1.0 / dial
    dm = [truncation(n, p, b) for b in range(n + 1)]
    index = {}
    for b in range(n + 1):
        for d in range(dm[b] + 1):
            index[(b, d)] = len(index)
    ns = len(index)
    # variables: W actions (not at (0, 0): nothing would ever happen), then A actions (d < dmax)
    w_states = [s for s in index if s != (0, 0)]
    a_states = [s for s in index if s[1] < dm[s[0]]]
    nw = len(w_states)
    rows, cols, vals = [], [], []
    obj = np.zeros(nw + len(a_states))
    time_row = np.zeros(nw + len(a_states))
    abandon_row = np.zeros(nw + len(a_states))
    for j, (b, d) in enumerate(w_states):
        r = b * mu + d * nu
        i = index[(b, d)]
        rows.append(i); cols.append(j); vals.append(1.0)  # leaves s
        if b > 0:  # an agent frees
            rows.append(index[(b - 1, d)]); cols.append(j); vals.append(-b * mu / r)
        if d > 0:
            live = d * nu * p / r
            to = (min(b + 1, n), d - 1)
            rows.append(index[to]); cols.append(j); vals.append(-live)
            rows.append(index[(b, d - 1)]); cols.append(j); vals.append(-d * nu * (1 - p) / r)
            abandon_row[j] = live * ((1.0 if b == n else 0.0) - alpha)
        obj[j] = -(b / n) / r
        time_row[j] = 1.0 / r
    for k, (b, d) in enumerate(a_states):
        j = nw + k
        rows.append(index[(b, d)]); cols.append(j); vals.append(1.0)
        rows.append(index[(b, d + 1)]); cols.append(j); vals.append(-1.0)
    a_eq = coo_matrix((vals, (rows, cols)), shape=(ns, nw + len(a_states))).tocsr()
    # the balance rows are linearly dependent (they sum to 0): the time row pins the scale
    from scipy.sparse import vstack, csr_matrix
    a_eq = vstack([a_eq, csr_matrix(time_row)])
    b_eq = np.zeros(ns + 1)
    b_eq[-1] = 1.0
    t0 = time.perf_counter()
    # HiGHS' default choice sometimes stops on a large instance with no status ("Not
    # Set", seen at N=100, p=0.15); then the dual simplex and the interior point
    # method are tried, within what is left of the time limit
    messages = []
    for method in ("highs", "highs-ds", "highs-ipm"):
        left = None if not time_limit else time_limit - (time.perf_counter() - t0)
        if left is not None and left <= 0:
            break
        res = linprog(obj, A_ub=csr_matrix(abandon_row), b_ub=[0.0], A_eq=a_eq, b_eq=b_eq, bounds=(0, None),
                      method=method, options={"time_limit": left} if left else None)
        if res.status == 0:
            break
        messages.append(f"{method}: {res.message}")
    secs = time.perf_counter() - t0
    if res.status != 0:
        if truncation is dmax_for and res.status == 4:  # a numerical failure: the other truncation
            left = None if not time_limit else time_limit - secs
            if left is None or left > 0:
                out = solve(n, p, alpha, dial, handle, dmax_wide, left)
                out["note"] = f"solved with the wider truncation after: {'; '.join(messages)}"
                return out
        raise LPFailed(f"LP not solved at N={n} p={p} alpha={alpha} ({ns} states): {'; '.join(messages)}")
    x = res.x
    xw = x[:nw]
    tw = xw * time_row[:nw]  # time fraction in each state
    lives = sum(xw[j] * w_states[j][1] * nu * p / (w_states[j][0] * mu + w_states[j][1] * nu)
                for j in range(nw) if w_states[j][1] > 0)
    abandons = sum(xw[j] * w_states[j][1] * nu * p / (n * mu + w_states[j][1] * nu)
                   for j in range(nw) if w_states[j][0] == n and w_states[j][1] > 0)
    edge = sum(tw[j] for j in range(nw) if w_states[j][1] == dm[w_states[j][0]])
    occ = -res.fun
    return {"n": n, "p": p, "alpha": alpha, "occupancy": occ,
            "talk_min_per_agent_hour": occ * 60 * (handle - 30) / handle,
            "abandon_rate": abandons / lives if lives else 0.0, "edge_time": float(edge),
            "states": ns, "variables": int(nw + len(a_states)), "seconds": secs}


if __name__ == "__main__":
    n, p = int(sys.argv[1]), float(sys.argv[2])
    for a in (sys.argv[3:] or ["0.03"]):
        print(json.dumps(solve(n, p, float(a))), flush=True)


def evaluate_thresholds(n, p, thresholds, dial=20.0, handle=210.0):
    """Exact long-run (occupancy, abandon rate) of the threshold policy "top the dials
    in flight up to thresholds[b]" in the reference model (sparse stationary solve)."""
    from scipy.sparse.linalg import spsolve
    mu, nu = 1.0 / handle, 1.0 / dial
    t = [int(x) for x in thresholds]
    dm = max(t) + 1
    index = {}
    for b in range(n + 1):
        for d in range(t[b], dm + 1):
            index[(b, d)] = len(index)

    def land(b, d):  # the decision right after an event: top up to T[b]
        return index[(b, max(d, t[b]))]
    rows, cols, vals = [], [], []
    for (b, d), i in index.items():
        out = 0.0
        for (bb, dd), r in (((b - 1, d), b * mu), ((min(b + 1, n), d - 1), d * nu * p), ((b, d - 1), d * nu * (1 - p))):
            if r > 0:
                j = land(bb, dd)
                if j != i:
                    rows.append(i); cols.append(j); vals.append(r)
                    out += r
        rows.append(i); cols.append(i); vals.append(-out)
    ns = len(index)
    q = coo_matrix((vals, (rows, cols)), shape=(ns, ns)).tocsr().T.tolil()
    q[0, :] = 1.0  # replace one balance equation by the normalisation
    rhs = np.zeros(ns)
    rhs[0] = 1.0
    pi = spsolve(q.tocsr(), rhs)
    occ = lives = abandons = 0.0
    for (b, d), i in index.items():
        occ += pi[i] * b / n
        lives += pi[i] * d * nu * p
        if b == n:
            abandons += pi[i] * d * nu * p
    return occ, (abandons / lives if lives else 0.0)

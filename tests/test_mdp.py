"""The MDP threshold solver against the optimum table of the pacing reference."""

import pytest

from dialer.pacing.mdp import evaluate, thresholds_for


def test_progressive_as_a_threshold_policy_matches_the_closed_form():
    # T[b] = N - b (one dial per free agent) is progressive: occupancy 210 / (210 + 20/p)
    n, p = 5, 0.3
    occ, ab = evaluate(n, p, 20, 210, [n - b for b in range(n + 1)], 40)
    assert occ == pytest.approx(210 / (210 + 20 / p), abs=1e-3) and ab == 0


def test_best_threshold_under_3_percent_is_near_the_optimum():
    # reference optimum at 3 %: N=5, p=0.3 -> 0.817; the best deterministic threshold
    # policy stays under 3 % and within 0.01 of it
    t, occ, ab = thresholds_for(5, 0.3, 20, 210, 0.03)
    assert ab <= 0.03 and 0.807 <= occ <= 0.817
    assert list(t) == sorted(t, reverse=True)  # more busy agents, fewer dials in flight

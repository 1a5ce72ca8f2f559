"""The simulator (the real Dialer on a virtual clock, with simulated callees and
agents) and the baseline pacing policies, checked against the exact Markov figures
of the pacing reference."""

import json

import pytest

from core.errors import InputError
from dialer.pacing.policies import PacingState, Power, Predictive, Preview, Progressive, Vicidial
from dialer.pacing.sim import REALISTIC, VALIDATION, load_scenario, make_dist, simulate


def mean(xs):
    return sum(xs) / len(xs)


@pytest.mark.parametrize("p", [0.15, 0.3, 0.5])
def test_progressive_matches_the_closed_form(p):
    sc = load_scenario({**VALIDATION, "agents": 20, "p_live": p})
    occ = mean([simulate(sc, Progressive(), seed).occupancy for seed in range(8)])
    assert occ == pytest.approx(210 / (210 + 20 / p), abs=0.005)
    assert all(simulate(sc, Progressive(), s).abandons == 0 for s in range(2))  # never more dials than agents


def test_power_ratio_matches_the_reference_simulation():
    # reference: N=20, p=0.3, k=2.0 -> .867 with 1.51 % abandoned (Markov: ~.868)
    sc = load_scenario({**VALIDATION, "agents": 20, "p_live": 0.3})
    runs = [simulate(sc, Power(2.0), seed) for seed in range(12)]
    assert mean([r.occupancy for r in runs]) == pytest.approx(0.867, abs=0.006)
    assert mean([r.abandon_rate for r in runs]) == pytest.approx(0.0151, abs=0.003)


def test_vicidial_hard_limit_lands_at_progressive_and_over_the_cap():
    # reference: N=20, p=0.3 -> occupancy .753, mean abandon 3.2 %
    sc = load_scenario({**VALIDATION, "agents": 20, "p_live": 0.3})
    runs = [simulate(sc, Vicidial("HARD_LIMIT"), seed) for seed in range(6)]
    assert mean([r.occupancy for r in runs]) == pytest.approx(0.753, abs=0.01)
    assert 0.028 < mean([r.abandon_rate for r in runs]) < 0.038


def test_same_seed_same_run_and_common_random_numbers():
    sc = load_scenario({**REALISTIC, "agents": 10, "p_live": 0.3, "shift_hours": 2})
    a, b = simulate(sc, Power(1.5), 7), simulate(sc, Power(1.5), 7)
    assert a == b
    assert simulate(sc, Power(1.5), 8) != a
    # paired: lead i answers (or not) the same way under both policies
    p1, p2 = simulate(sc, Progressive(), 3), simulate(sc, Power(2.0), 3)
    assert p2.dials > p1.dials and p2.live_answers > p1.live_answers


def test_a_policy_comparison_uses_common_random_numbers():
    """Lead i answers (or not) the same way and rings as long under either policy."""
    sc = load_scenario({**REALISTIC, "agents": 10, "p_live": 0.3, "shift_hours": 1})
    seen = []
    for policy in (Progressive(), Power(2.0)):
        cdrs = {}
        simulate(sc, policy, 5, record=lambda kind, p: kind == "cdr" and cdrs.__setitem__(p["cdr"]["lead_id"], p["cdr"]))
        seen.append(cdrs)
    common = set(seen[0]) & set(seen[1])
    assert len(common) > 50
    for lead in common:
        a, b = seen[0][lead], seen[1][lead]
        assert (a["answered_ms"] is None) == (b["answered_ms"] is None)
        if a["answered_ms"] is not None:
            assert abs(a["ring_ms"] - b["ring_ms"]) <= 1  # (the clock's milliseconds, rounded)
    assert sum(1 for lead in common if seen[0][lead]["answered_ms"] is not None) > 10


def test_the_dialer_counts_safe_harbor_legs_in_the_lines_in_use():
    """The old simulator left legs playing the safe-harbor message out of the lines in
    use; the Dialer's gate holds a line for every customer leg until it ends."""
    states = []

    class Watch(Power):
        def decide(self, s):
            states.append(s)
            return super().decide(s)

    sc = load_scenario({**REALISTIC, "agents": 10, "p_live": 0.5, "shift_hours": 1, "lines": 40})
    r = simulate(sc, Watch(4.0), 3)
    assert r.abandons > 5
    # safe-harbor legs: in use, yet neither dialling, waiting nor talking
    assert max(s.lines_in_use - s.dialing - s.waiting - s.talking for s in states) > 0
    assert min(s.lines_in_use - s.dialing - s.waiting - s.talking for s in states) >= 0
    assert max(s.lines_in_use for s in states) <= 40


def test_line_capacity_is_never_exceeded():
    seen = []

    class Greedy(Progressive):
        name = "greedy"

        def decide(self, s):
            seen.append(s.lines_in_use)
            return self.clamp(1000, s)

    sc = load_scenario({**VALIDATION, "agents": 20, "p_live": 0.3, "lines": 10, "shift_hours": 1})
    simulate(sc, Greedy(), 1)
    assert max(seen) <= 10


def test_agents_logging_in_and_out():
    seen = []

    class Watch(Progressive):
        def decide(self, s):
            seen.append((s.now, s.agents))
            return super().decide(s)

    sc = load_scenario({**VALIDATION, "agents": [[0, 10], [3600, 20], [7200, 5]], "p_live": 0.5, "shift_hours": 3})
    r = simulate(sc, Watch(), 1)
    assert 0.8 < r.occupancy < 0.9
    assert r.dials_per_agent_hour > 0 and r.leads_consumed == r.dials
    # the Dialer's floor follows the schedule: 10, then 20 at once, then down to 5 as
    # the agents leaving finish their calls (never below)
    assert {n for t, n in seen if t < 3600} == {10}
    assert {n for t, n in seen if 3600 <= t < 7200} == {20}
    late = [n for t, n in seen if t >= 7200]
    assert late == sorted(late, reverse=True) and late[-1] == 5


def test_same_seed_same_run_through_the_dialer():
    sc = load_scenario({**VALIDATION, "agents": 20, "p_live": 0.3, "shift_hours": 1})
    a, b = simulate(sc, Predictive(), 11), simulate(sc, Predictive(), 11)
    assert a == b and a.dials > 0 and a.live_answers > 0


def test_two_second_rule_lowers_abandons():
    base = {**REALISTIC, "agents": 20, "p_live": 0.3, "shift_hours": 4}
    strict = simulate(load_scenario({**base, "connect_window": 0.0}), Power(2.5), 2)
    rule = simulate(load_scenario({**base, "connect_window": 2.0}), Power(2.5), 2)
    assert rule.abandons < strict.abandons


def test_preview_dials_nothing_by_itself():
    sc = load_scenario({**VALIDATION, "agents": 5, "shift_hours": 1})
    assert simulate(sc, Preview(), 1).dials == 0


def test_distributions():
    assert make_dist({"type": "uniform", "low": 4, "high": 12})(0.5) == 8
    assert make_dist({"type": "constant", "value": 3})(0.9) == 3
    ln = make_dist({"type": "lognormal", "mean": 180, "cv": 1.0})
    assert mean([ln((i + 0.5) / 20000) for i in range(20000)]) == pytest.approx(180, rel=0.02)
    mix = make_dist({"type": "mixture", "parts": [{"weight": 3, "dist": {"type": "constant", "value": 20}},
                                                  {"weight": 1, "dist": {"type": "constant", "value": 4}}]})
    assert [mix(0.1), mix(0.74), mix(0.76), mix(0.99)] == [20, 20, 4, 4]
    assert make_dist({"type": "empirical", "values": [5, 1, 3]})(0.0) == 1


@pytest.mark.parametrize("bad,msg", [
    ({"talk": {"type": "gamma"}}, "unknown type"), ({"talk": {"type": "uniform", "low": 1}}, "bad uniform"),
    ({"agnets": 5}, "unknown field"), ({"agents": "many"}, "agents"),
    ({"handle_scale": [[0, 1.0], [3600, 0]]}, "positive"), ({"handle_scale": "x"}, "handle_scale"),
])
def test_bad_scenarios_are_refused(bad, msg):
    with pytest.raises(InputError, match=msg):
        load_scenario(bad)


def test_handle_times_follow_their_schedule():
    # talk and wrap x 2 from the second hour: each agent handles about half the calls
    sc = {**REALISTIC, "agents": 10, "p_live": 0.3, "shift_hours": 2}
    same = simulate(load_scenario(sc), Progressive(), 3)
    slow = simulate(load_scenario({**sc, "handle_scale": [[0, 1.0], [3600, 2.0]]}), Progressive(), 3)
    assert slow.live_answers < 0.85 * same.live_answers and slow.live_answers > 0.6 * same.live_answers
    assert slow.occupancy > same.occupancy  # longer calls, the same waits between them


def test_pacing_state_free_lines():
    s = PacingState(now=0, agents=5, ready=2, busy=3, talking=3, dialing=4, waiting=0, lines=10, lines_in_use=7)
    assert s.free_lines == 3 and Power(2).decide(s) == 0 and Progressive().decide(s) == 0
    s2 = PacingState(now=0, agents=5, ready=4, busy=1, talking=1, dialing=1, waiting=0, lines=10, lines_in_use=2)
    assert Power(2).decide(s2) == 7 and Progressive().decide(s2) == 3


def test_simulate_cli(tmp_path):
    from click.testing import CliRunner

    from cli import main
    sc = tmp_path / "s.json"
    sc.write_text(json.dumps({**VALIDATION, "agents": 10, "p_live": 0.3, "shift_hours": 1}))
    r = CliRunner().invoke(main, ["--db", str(tmp_path / "d.db"), "simulate", str(sc), "--policy", "power:1.5",
                                  "--seeds", "3", "--json"], catch_exceptions=False)
    out = json.loads(r.output)
    assert r.exit_code == 0 and out["policy"] == "power1.5" and out["seeds"] == 3 and 0 < out["occupancy"] < 1
    r = CliRunner().invoke(main, ["--db", str(tmp_path / "d.db"), "simulate", str(sc), "--policy", "turbo"])
    assert r.exit_code == 1 and r.output.startswith("Error: unknown policy 'turbo'")
    sc.write_text("{not json")
    r = CliRunner().invoke(main, ["--db", str(tmp_path / "d.db"), "simulate", str(sc)])
    assert r.exit_code == 1 and "is not JSON" in r.output

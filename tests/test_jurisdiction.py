"""The rule set's pacing fields in the live loop, and one abandon rate (issue 12), on a
``task.Clock`` with a recording stand-in for the SIP pool:

- a GB campaign's policy takes GB's abandon cap and its 24-hour window, and each call
  rings the ring minimum of the rule set its verdict names;
- a campaign restarted with CDRs in its window paces from their counts (and counts
  nothing older than the rule set's window);
- the policy's start-up window, the reports and the live summary count the same calls.
"""

import datetime as _dt

import pytest
from twisted.internet import task

from campaigns.leads import import_list
from campaigns.store import add_number, change_state, create_account, create_campaign
from core.store import Store
from core.timeutil import to_ms
from dialer import abandons
from dialer.calls import CallLeg
from dialer.cdr import Cdr, campaign_stats, write_cdr
from dialer.engine import Dialer
from dialer.pacing.policies import Predictive
from rules import service
from sip_harness import write_tone

T0 = _dt.datetime(2026, 11, 24, 15, 0, tzinfo=_dt.timezone.utc)  # 15:00 in London, 10:00 in New York, a Tuesday
T0_MS = to_ms(T0)


class FakePool:
    def __init__(self, clock):
        self.clock = clock
        self.dials = []  # (time, key, uri, timeout_s)

    def dial(self, key, uri, **fields):
        self.dials.append((self.clock.seconds(), key, uri, fields.get("timeout_s")))
        return 5060

    def hangup(self, key, code=None):
        pass


def gb_campaign(tmp_path, now, numbers=(), mode="predictive", target="0.03", extra_us=()):
    """Account acme with a London caller ID and a running campaign "gb" (region GB)
    whose list holds ``numbers`` (GB, national form) and ``extra_us`` (+1 numbers)."""
    store = Store(tmp_path / "d.db")
    service.ensure_defaults(store, now)
    tps = tmp_path / "tps.txt"
    tps.write_text("442079460001\n")
    service.import_dnc(store, tps, now, "t", source="national", as_of=(now - _dt.timedelta(days=2)).date().isoformat(),
                       jurisdiction="GB", region="GB")
    dnc = tmp_path / "dnc.txt"
    dnc.write_text("2125550199\n")
    service.import_dnc(store, dnc, now, "t", source="national", as_of=(now - _dt.timedelta(days=2)).date().isoformat())
    create_account(store, "acme", now, "t", connection="gshdsl", lines=10)
    add_number(store, "acme", "020 7946 0999", now, "t", region="GB")
    create_campaign(store, "gb", "acme", now, "t", region="GB", caller_id="020 7946 0999",
                    greeting=write_tone(tmp_path / "g.wav", seconds=1.0), dial_mode=mode, abandon_target=target)
    if numbers or extra_us:
        f = tmp_path / "list.csv"
        f.write_text("phone\n" + "\n".join(list(numbers) + list(extra_us)) + "\n")
        import_list(store, f, "gb", now, "t", region="GB")
    change_state(store, "gb", "start", now, "t")
    return store


def gb_numbers(n):
    return [f"020 7946 {100 + 7 * i:04d}" for i in range(n)]  # spaced: no multi-line runs


def dialer_on_clock(store, now, agents=0, **kw):
    clock = task.Clock()
    clock.advance(now.timestamp())
    pool = FakePool(clock)
    d = Dialer(clock, store, "gb", pool, route=lambda n: f"sip:{n[1:]}@carrier", tick=0.1, cps=100, **kw)
    for uid in range(1, agents + 1):  # agents ready on the floor directly: no SIP here
        d.floor.login(uid, d.cid, d.now())
    return d, clock, pool


# -- calls of every kind, as the loop ends them -----------------------------------------

def ended_leg(cid, call_id, kind, start_ms, account_id=1):
    leg = CallLeg(call_id, "+442079460555", now=start_ms, account_id=account_id, campaign_id=cid,
                  caller_id="+442079460999", verdict={"allowed": True, "ruleset": "GB@1"})
    if kind == "connected":
        leg.answered(now=start_ms + 4000)
        leg.agent_assigned(7, now=start_ms + 4500)
        leg.ended(200, "BYE", True, answered_ms=start_ms + 4000, ended_ms=start_ms + 60_000)
    elif kind == "abandoned":
        leg.answered(now=start_ms + 4000)
        leg.window_expired(now=start_ms + 6000)
        leg.ended(200, "BYE", True, answered_ms=start_ms + 4000, ended_ms=start_ms + 12_000)
    elif kind == "hung-up":  # the person hung up inside the connect window
        leg.answered(now=start_ms + 4000)
        leg.ended(200, "BYE", True, answered_ms=start_ms + 4000, ended_ms=start_ms + 5000)
    elif kind == "died-after-answer":  # the SIP worker died a second after the answer
        leg.answered(now=start_ms + 4000)
        leg.ended(0, "worker died", answered_ms=start_ms + 4000, ended_ms=start_ms + 5000)
    elif kind == "busy":
        leg.ringing(now=start_ms + 500)
        leg.ended(486, "Busy Here", ended_ms=start_ms + 2000)
    elif kind == "no-answer":
        leg.ringing(now=start_ms + 500)
        leg.ended(487, "Request Terminated", ended_ms=start_ms + 20_000)
    return leg


def store_calls(store, cid, calls):
    """Write CDRs: ``calls`` = [(kind, start_ms)]."""
    for i, (kind, start_ms) in enumerate(calls):
        write_cdr(store, Cdr.from_leg(ended_leg(cid, f"hist-{start_ms}-{i}", kind, start_ms)), T0)


# -- the one definition -------------------------------------------------------------------

def test_which_calls_are_live_answers_and_abandons():
    kinds = {k: ended_leg(1, k, k, T0_MS) for k in ("connected", "abandoned", "hung-up", "died-after-answer", "busy",
                                                     "no-answer")}
    assert {k for k, leg in kinds.items() if abandons.is_live(leg)} == {"connected", "abandoned", "hung-up",
                                                                        "died-after-answer"}
    assert {k for k, leg in kinds.items() if abandons.is_abandon(leg)} == {"abandoned"}
    # a CDR, and a CDR as the journal carries it, say the same as the leg
    from dialer.engine import cdr_payload
    for leg in kinds.values():
        cdr = Cdr.from_leg(leg)
        assert abandons.is_live(cdr) == abandons.is_live(cdr_payload(cdr)) == abandons.is_live(leg)
        assert abandons.is_abandon(cdr) == abandons.is_abandon(cdr_payload(cdr)) == abandons.is_abandon(leg)


def test_the_policy_the_reports_and_the_live_summary_count_the_same_calls(tmp_path):
    """The same calls through the three: the start-up window from the CDRs, the report
    (campaign_stats) and the live summary of a loop that saw them end."""
    store = gb_campaign(tmp_path, T0)
    cid = store.query_one("SELECT id FROM campaigns WHERE name = 'gb'")["id"]
    kinds = ["connected"] * 6 + ["abandoned"] * 2 + ["hung-up"] * 3 + ["died-after-answer", "busy", "no-answer"]
    calls = [(k, T0_MS - 3_600_000 + 60_000 * i) for i, k in enumerate(kinds)]
    store_calls(store, cid, calls)
    # a loop started now counts them from the CDRs ...
    d, clock, pool = dialer_on_clock(store, T0)
    assert d.policy.lives == 12 and d.policy.abandons == 2
    # ... the report over the same hour says the same ...
    s = campaign_stats(store, "gb", T0 - _dt.timedelta(hours=1))
    assert (s["live_answers"], s["abandons"]) == (12, 2)
    assert s["abandon_rate"] == abandons.rate_decimal(12, 2)
    st = d.stats.as_dict()
    assert (st["window_live_answers"], st["window_abandons"], st["abandon_window_hours"]) == (12, 2, 24.0)
    # ... and a loop that sees the same calls end counts them alike in memory
    from dialer.engine import Stats
    live = Stats(abandons.AbandonWindow(24.0), clock=lambda: T0.timestamp())
    for i, (kind, start_ms) in enumerate(calls):
        live.ended(ended_leg(cid, f"live-{i}", kind, start_ms))
    assert (live.as_dict()["window_live_answers"], live.as_dict()["window_abandons"]) == (12, 2)
    assert live.as_dict()["abandon_rate"] == pytest.approx(2 / 12)


def test_the_window_is_whole_minutes_in_memory_and_in_the_database(tmp_path):
    """A call leaves the window when the minute of its start is older than the window,
    at the same instant for the CDR count and the in-memory count."""
    store = gb_campaign(tmp_path, T0)
    cid = store.query_one("SELECT id FROM campaigns WHERE name = 'gb'")["id"]
    start = T0_MS - 24 * 3_600_000 + 30_000  # 30 s into the minute that is 24 h old at T0
    store_calls(store, cid, [("abandoned", start), ("connected", start + 60_000)])
    window = abandons.AbandonWindow(24.0, abandons.window_minutes(store, cid, T0, 24.0))
    for later_s in (0, 29, 30, 59, 60, 89, 119, 120):
        now = T0 + _dt.timedelta(seconds=later_s)
        in_db = abandons.window_counts(store, cid, now, 24.0)
        assert window.counts(now.timestamp()) == in_db, later_s
    assert abandons.window_counts(store, cid, T0 + _dt.timedelta(seconds=59), 24.0) == (2, 1)
    assert abandons.window_counts(store, cid, T0 + _dt.timedelta(seconds=60), 24.0) == (1, 0)
    assert abandons.window_counts(store, cid, T0 + _dt.timedelta(seconds=120), 24.0) == (0, 0)


# -- the GB campaign: cap, window, ring time ---------------------------------------------------

def test_a_gb_campaign_paces_with_gbs_cap_and_24_hour_window(tmp_path):
    store = gb_campaign(tmp_path, T0)
    # GB@2: a stricter cap than the campaign's 3 %, through the rules service
    service.set_rule(store, "GB", "rules.abandon.max_rate", "0.02", T0, "officer", "house policy: 2 %")
    d, _, _ = dialer_on_clock(store, T0)
    assert isinstance(d.policy, Predictive)
    assert d.policy.window_s == 24 * 3600.0  # Ofcom's 24 h, not the policy's 720 h default
    assert d.policy.cap == 0.02  # min(campaign 0.03, GB@2 0.02)
    assert d.pacing.ruleset == "GB@2"
    # a campaign target under the rule set's cap is kept
    store.execute("UPDATE campaigns SET abandon_target = '0.015' WHERE name = 'gb'")
    d, _, _ = dialer_on_clock(store, T0)
    assert d.policy.cap == 0.015


def test_a_rule_set_allowing_no_abandon_makes_a_predictive_campaign_progressive(tmp_path):
    from dialer.pacing.policies import Progressive
    store = gb_campaign(tmp_path, T0)
    service.set_rule(store, "GB", "rules.abandon.max_rate", "0", T0, "officer", "no abandoned call at all")
    d, _, _ = dialer_on_clock(store, T0)
    assert isinstance(d.policy, Progressive)


def test_each_call_rings_the_ring_minimum_of_the_rule_set_its_verdict_names(tmp_path):
    """GB@2 asks for 20 s of ringing (edited through the rules service); the dialer's
    own timeout is 15 s: GB leads ring 20 s, a US lead of the same campaign (US@1,
    15 s) rings 15 s, and a dialer timeout above both is kept."""
    store = gb_campaign(tmp_path, T0, gb_numbers(3), mode="progressive", extra_us=["+1 212 555 1037"])
    service.set_rule(store, "GB", "rules.ring.min_seconds", "20", T0, "officer", "ring longer")
    d, clock, pool = dialer_on_clock(store, T0, agents=4)
    d.start()
    clock.advance(0.1)
    got = {uri.split("@")[0][4:]: t for _, _, uri, t in pool.dials}
    assert len(got) == 4
    assert {n: t for n, t in got.items() if n.startswith("44")} == {n: 20.0 for n in got if n.startswith("44")}
    assert got["12125551037"] == 15.0
    assert {d.legs[k].ruleset for _, k, _, _ in pool.dials} == {"GB@2", "US@1"}
    # a rule set edited while the loop runs: the next GB call rings the new minimum,
    # read with the claim that brought the lead (the store's thread), not at the dial
    d.pacing.load = None  # a read at the dial would fail: the call would ring 300 s
    service.set_rule(store, "GB", "rules.ring.min_seconds", "25", T0, "officer", "ring longer still")
    f = tmp_path / "more.csv"
    f.write_text("phone\n020 7946 0900\n")
    import_list(store, f, "gb", T0, "t", region="GB")
    d.floor.login(5, d.cid, d.now())
    clock.advance(1.0)
    last = pool.dials[-1]
    assert "442079460900" in last[2] and last[3] == 25.0 and d.legs[last[1]].ruleset == "GB@3"


def test_a_dialer_ring_timeout_above_the_rule_sets_is_kept(tmp_path):
    store = gb_campaign(tmp_path, T0, gb_numbers(1), mode="progressive")
    d, clock, pool = dialer_on_clock(store, T0, agents=1, ring_timeout_s=40)
    d.start()
    clock.advance(0.1)
    assert [t for _, _, _, t in pool.dials] == [40.0]


# -- restart ---------------------------------------------------------------------------------

def warm(policy, t, dials=300, every=3):
    """The same learning for two policies: ``dials`` dial ends, one in ``every`` a live
    answer (10 s to answer, 25 s for the others); no live outcome in the window."""
    for i in range(dials):
        live = i % every == 0
        policy.on_dial_end(t + i * 0.1, live, 10.0 if live else 25.0)


def test_a_restarted_campaign_paces_from_its_window_in_the_cdrs(tmp_path):
    """Stopped at 30 abandons of 1000 live answers in the last 24 h (3.0 %, GB's cap),
    with an older bad hour (100 abandons of 200, 25 h ago: outside GB's window), the
    campaign starts again: its policy's window holds exactly 1000 and 30, and with a
    few fresh live answers it still dials no more calls than free agents, where a
    policy that forgot the window dials beyond them."""
    store = gb_campaign(tmp_path, T0, gb_numbers(40))
    cid = store.query_one("SELECT id FROM campaigns WHERE name = 'gb'")["id"]
    hour = 3_600_000
    recent = [("abandoned" if i < 30 else ("hung-up" if i % 10 == 0 else "connected"), T0_MS - 20 * hour + i * 60_000)
              for i in range(1000)]
    recent += [("busy", T0_MS - 2 * hour + i * 1000) for i in range(50)]  # not live answers
    old = [("abandoned" if i < 100 else "connected", T0_MS - 25 * hour + i * 1000) for i in range(200)]
    store_calls(store, cid, recent + old)
    store.execute("UPDATE accounts SET line_capacity = 40")  # lines are not what holds it back

    d, clock, pool = dialer_on_clock(store, T0, agents=10)
    assert (d.policy.lives, d.policy.abandons) == (1000, 30)
    assert d.pacing.history == (1000, 30) and d.policy.window_s == 24 * 3600.0
    assert d.stats.as_dict()["abandon_rate"] == pytest.approx(0.03)

    forgetful = Predictive(cap=0.03, connect_window=2.0, window_hours=24.0)  # the window empty at start
    t = clock.seconds()
    for policy in (d.policy, forgetful):
        warm(policy, t - 60)
        for i in range(10):  # ten fresh live answers, all connected
            policy.on_connect(t - 30 + i, 0.5)
    state = d.state()
    assert (state.agents, state.ready, state.dialing) == (10, 10, 0)
    assert forgetful.decide(state) > 10  # it would dial beyond the free agents ...
    d.start()
    clock.advance(0.1)
    assert len(pool.dials) == 10  # ... the restarted campaign does not: its window is at the cap


def test_the_window_drops_cdrs_older_than_the_rule_sets_window(tmp_path):
    """A CDR counts while its start is inside the window (GB: 24 h), for the policy at
    start and for the live summary as time goes on."""
    store = gb_campaign(tmp_path, T0)
    cid = store.query_one("SELECT id FROM campaigns WHERE name = 'gb'")["id"]
    hour = 3_600_000
    store_calls(store, cid, [("abandoned", T0_MS - 23 * hour), ("connected", T0_MS - 23 * hour + 1000),
                             ("connected", T0_MS - 2 * hour), ("abandoned", T0_MS - 25 * hour),
                             ("connected", T0_MS - 30 * hour)])
    d, clock, _ = dialer_on_clock(store, T0)
    assert (d.policy.lives, d.policy.abandons) == (3, 1)
    st = d.stats.as_dict()
    assert (st["window_live_answers"], st["window_abandons"]) == (3, 1)
    clock.advance(2 * 3600)  # the calls of 23 h ago are 25 h old now
    st = d.stats.as_dict()
    assert (st["window_live_answers"], st["window_abandons"]) == (1, 0)
    # a loop started now counts the same from the CDRs
    d2, _, _ = dialer_on_clock(store, T0 + _dt.timedelta(hours=2))
    assert (d2.policy.lives, d2.policy.abandons) == (1, 0)
    # a US rule set's 720 h window would have counted every one of them
    assert abandons.window_counts(store, cid, T0, 720.0) == (5, 2)


def test_the_policys_start_up_window_leaves_it_as_time_passes(tmp_path):
    """1000 clean live answers 20 h before a restart leave GB's 24-hour window 4 h later:
    kept, they would hold 29.5 abandons of room the law no longer gives."""
    store = gb_campaign(tmp_path, T0)
    cid = store.query_one("SELECT id FROM campaigns WHERE name = 'gb'")["id"]
    store_calls(store, cid, [("connected", T0_MS - 20 * 3_600_000 + i * 1000) for i in range(1000)])
    d, clock, _ = dialer_on_clock(store, T0)
    assert d.policy.lives == 1000
    t = T0.timestamp() + 5 * 3600
    d.policy.on_connect(t, 0.5)  # a live answer 5 h later: the window moves on
    assert d.stats.as_dict()["window_live_answers"] == 1000 and d.stats.window.counts(t) == (0, 0)
    assert d.policy.lives == 1

"""The engine's other rules: emergency/special/lifeline, number types, DNC, frequency,
multi-line, caller ID; and that every failing rule is listed."""

import datetime as dt

import pytest

from rules.engine import (CATEGORIES, CampaignRules, DncLists, Lead, Registry, evaluate, find_runs, screen)
from tests.conftest import FakeSet, local, make_ctx

AT = local("2026-11-24 12:00", "America/New_York")  # a Tuesday noon
NY = "+12125550100"


def cats(v):
    return set(v.categories)


def test_every_reason_uses_the_vocabulary(ctx):
    for n in ["911", "411", "abc", "1-800-222-1222", "+19005551234", NY]:
        for r in evaluate(n, AT, ctx).reasons:
            assert r.category in CATEGORIES and r.rule and r.detail


def test_emergency_special_lifeline(ctx):
    assert cats(evaluate("911", AT, ctx)) == {"emergency"}
    assert cats(evaluate("+1 411", AT, ctx)) == {"special"}
    assert cats(evaluate("911-555-1234", AT, ctx)) == {"emergency", "invalid"}
    ctx.lifeline = {"+18002221222": ("poison_control", "Poison Help"), "US:988": ("crisis", "988 Lifeline")}
    v = evaluate("1 (800) 222-1222", AT, ctx)
    assert {"lifeline", "toll_free", "timezone_unknown"} <= cats(v)
    assert cats(evaluate("988", AT, ctx)) == {"special", "lifeline"}
    assert cats(evaluate("999", AT, ctx)) == {"invalid"}  # not an emergency number in the US
    assert cats(evaluate(Lead("999", region="GB"), AT, ctx)) == {"emergency"}


def test_toll_free_and_premium(ctx):
    assert "toll_free" in cats(evaluate("+18885550100", AT, ctx))
    assert "premium" in cats(evaluate("+19005551234", AT, ctx))
    assert "premium" in cats(evaluate("+449098790000", AT, ctx))


def test_invalid_and_no_rule_set(ctx):
    v = evaluate("555-CALL-NOW", AT, ctx)
    assert cats(v) == {"invalid"} and v.number is None and "letters" in v.reasons[0].detail
    v = evaluate("+33 1 42 68 53 00", AT, ctx)  # France: no rule set shipped
    assert cats(v) == {"invalid"} and v.reasons[0].rule == "NO-RULESET"


def test_registry_missing_stale_and_waived(rulesets):
    v = evaluate(NY, AT, make_ctx(rulesets, registry_as_of=None))
    assert cats(v) == {"dnc"} and v.reasons[0].rule == "US-DNC-NAT-MISSING"
    # 31 days old is fine, 32 is not
    assert evaluate(NY, AT, make_ctx(rulesets, registry_as_of=dt.date(2026, 10, 24))).allowed
    v = evaluate(NY, AT, make_ctx(rulesets, registry_as_of=dt.date(2026, 10, 23)))
    assert v.reasons[0].rule == "US-DNC-NAT-STALE" and "32 days old" in v.reasons[0].detail
    camp = CampaignRules("c", registry_waived=frozenset({"US"}), caller_id="+12125559999",
                         own_numbers=frozenset({"+12125559999"}))
    assert evaluate(NY, AT, make_ctx(rulesets, registry_as_of=None, campaign=camp)).allowed
    # Turkey does not require a registry
    assert evaluate("+905321234567", local("2026-11-24 12:00", "Europe/Istanbul"),
                    make_ctx(rulesets, registry_as_of=None)).allowed


def test_dnc_sources(rulesets):
    ctx = make_ctx(rulesets, registry=[12125550100])
    v = evaluate(NY, AT, ctx)
    assert cats(v) == {"dnc"} and v.reasons[0].rule == "US-DNC-NAT"
    regs = {"US": Registry("US", dt.date(2026, 11, 20), FakeSet())}
    ctx = make_ctx(rulesets, dnc=DncLists(registries=regs, company=frozenset({12125550100}),
                                          company_prefixes=("1305",), campaign=frozenset({13125550100}),
                                          campaign_prefixes=("1415555",)))
    assert [r.rule for r in evaluate(NY, AT, ctx).reasons] == ["DNC-COMPANY"]
    assert [r.rule for r in evaluate("+13055550100", AT, ctx).reasons] == ["DNC-COMPANY-PREFIX"]
    assert [r.rule for r in evaluate("+13125550100", AT, ctx).reasons] == ["DNC-CAMPAIGN"]
    assert [r.rule for r in evaluate("+14155550123", AT, ctx).reasons] == ["DNC-CAMPAIGN-PREFIX"]
    assert evaluate("+12125550101", AT, ctx).allowed


def test_all_failing_rules_are_listed(rulesets):
    ctx = make_ctx(rulesets, registry=[13055550100])
    ctx.history = {13055550100: [(AT - dt.timedelta(hours=h), "no-answer") for h in (1, 2, 3)]}
    v = evaluate("+13055550100", local("2026-11-24 20:30", "America/New_York"), ctx)
    assert [r.category for r in v.reasons] == ["dnc", "hours", "frequency"]


def test_frequency_cap_florida_three_per_24h(rulesets):
    ctx = make_ctx(rulesets)
    fl = 13055550100
    ctx.history = {fl: [(AT - dt.timedelta(hours=h), "no-answer") for h in (23.9, 5, 1)]}
    v = evaluate("+13055550100", AT, ctx)
    assert cats(v) == {"frequency"} and v.reasons[0].rule == "US-FL-FREQ"
    ctx.history = {fl: [(AT - dt.timedelta(hours=h), "no-answer") for h in (24.1, 5, 1)]}
    assert evaluate("+13055550100", AT, ctx).allowed
    # New York has no cap
    ctx.history = {12125550100: [(AT - dt.timedelta(minutes=m), "no-answer") for m in range(1, 10)]}
    assert evaluate(NY, AT, ctx).allowed


def test_uk_abandon_lockout_72h_and_machine_24h(rulesets):
    at = local("2026-11-24 12:00", "Europe/London")
    ctx = make_ctx(rulesets)
    uk = 442079460000
    ctx.history = {uk: [(at - dt.timedelta(hours=71, minutes=59), "abandoned")]}
    v = evaluate("+442079460000", at, ctx)
    assert cats(v) == {"frequency"} and v.reasons[0].rule == "GB-ABANDON-LOCKOUT"
    ctx.history = {uk: [(at - dt.timedelta(hours=72, minutes=1), "abandoned")]}
    assert evaluate("+442079460000", at, ctx).allowed
    ctx.history = {uk: [(at - dt.timedelta(hours=23), "machine")]}
    assert evaluate("+442079460000", at, ctx).reasons[0].rule == "GB-AMD-LOCKOUT"
    # the US has no such lockout
    ctx.history = {12125550100: [(AT - dt.timedelta(hours=1), "abandoned")]}
    assert evaluate(NY, AT, ctx).allowed


def test_find_runs():
    base = 12125550000
    vals = [base + x for x in (1, 2, 3, 10, 11, 20, 22, 24, 26)]
    runs = find_runs(vals, stride=1, run_length=3)
    assert set(runs) == {base + 1, base + 2, base + 3}
    assert runs[base + 2] == (base + 1, base + 3, 3)
    runs = find_runs(vals, stride=2, run_length=3)
    assert set(runs) == {base + 1, base + 2, base + 3, base + 20, base + 22, base + 24, base + 26}
    # different exchanges never form a run
    assert find_runs([12125550100, 12125560101, 12125570102], 1, 3) == {}


def test_batch_flags_runs_and_business_groups(ctx):
    leads = [Lead("+12125550100"), Lead("+12125550101"), Lead("+12125550102"), Lead("+12125550200"),
             Lead("+13125550100", business="Acme Corp"), Lead("+14155550100", business="ACME  corp")]
    vs = screen(leads, AT, ctx)
    assert all(v.allowed for v in vs[:4])  # flagged, not blocked: one live call at a time
    assert [len(v.flags) for v in vs] == [1, 1, 1, 0, 1, 1]
    assert vs[0].groups == vs[1].groups == vs[2].groups == ("run:+12125550100",)
    assert vs[4].groups == vs[5].groups == ("business:acme corp",)
    assert all(f.category == "multiline" for v in vs for f in v.flags)


def test_dial_time_multiline_with_live_calls(rulesets):
    ctx = make_ctx(rulesets, live_numbers=frozenset({12125550101}), live_groups=frozenset({"business:acme corp"}))
    v = evaluate(NY, AT, ctx)  # 0100 is next to the live 0101
    assert cats(v) == {"multiline"} and "+12125550101" in v.reasons[0].detail
    assert cats(evaluate("+12125550101", AT, ctx)) == {"multiline"}  # same number live
    assert evaluate("+12125550103", AT, ctx).allowed  # two lines away: stride 1
    assert cats(evaluate(Lead("+13125550100", business="Acme Corp"), AT, ctx)) == {"multiline"}
    assert cats(evaluate(Lead("+13125550100", groups=("run:+13125550099",)), AT, ctx)) == set()
    ctx2 = make_ctx(rulesets, live_groups=frozenset({"run:+13125550099"}))
    assert cats(evaluate(Lead("+13125550100", groups=("run:+13125550099",)), AT, ctx2)) == {"multiline"}


@pytest.mark.parametrize("caller_id,own,expect", [
    ("+12125559999", {"+12125559999"}, []),
    ("+12125559999", set(), ["not one of the account's own numbers"]),
    (None, set(), ["no caller ID"]),
    ("12", set(), ["not a valid number"]),
    ("+19005551234", {"+19005551234"}, ["premium-rate"]),
])
def test_caller_id(rulesets, caller_id, own, expect):
    ctx = make_ctx(rulesets, campaign=CampaignRules("c", caller_id=caller_id, own_numbers=frozenset(own)))
    v = evaluate(NY, AT, ctx)
    got = [r.detail for r in v.reasons if r.category == "caller_id"]
    assert len(got) == len(expect)
    for g, e in zip(got, expect):
        assert e in g


def test_engine_is_pure_same_input_same_verdict(ctx):
    assert evaluate(NY, AT, ctx) == evaluate(NY, AT, ctx)

"""Calling hours in the callee's local time: boundaries, DST, split zones, states,
holidays, Sundays, campaign narrowing."""

import dataclasses

import pytest

from rules.engine import CampaignRules, Lead, evaluate
from rules.ruleset import compile_windows, _Errors
from tests.conftest import local, make_ctx

NY = "+12125550100"  # New York, America/New_York
FL = "+13055550100"  # Miami
RI = "+14015550100"
TX = "+12145550100"  # Dallas, America/Chicago
PA = "+12155550100"  # Philadelphia
UT = "+18015550100"  # Salt Lake City, America/Denver
AZ = "+16025550100"  # Phoenix (no DST)
ID = "+12085550100"
CID = "+12125559999"  # the account's own number  # Idaho: Boise (Mountain) and Los Angeles (Pacific)


def cats(v):
    return set(v.categories)


def check(num, when, zone, ctx, lead=None):
    return evaluate(lead or Lead(num), local(when, zone), ctx)


@pytest.mark.parametrize("when,ok", [
    ("2026-11-24 07:59", False), ("2026-11-24 08:00", True), ("2026-11-24 20:59", True), ("2026-11-24 21:00", False),
])
def test_federal_window_start_inclusive_end_exclusive(ctx, when, ok):
    v = check(NY, when, "America/New_York", ctx)
    assert v.allowed is ok, v.reasons
    if not ok:
        assert cats(v) == {"hours"}
        assert v.reasons[0].rule == "US-HOURS"


def test_florida_ends_at_2000(ctx):
    assert check(FL, "2026-11-24 19:59", "America/New_York", ctx).allowed
    v = check(FL, "2026-11-24 20:00", "America/New_York", ctx)
    assert cats(v) == {"hours"} and v.reasons[0].rule == "US-FL-HOURS"
    assert v.window[0]["windows"] == ["08:00-20:00"]


def test_rhode_island_weekday_saturday_sunday(ctx):
    z = "America/New_York"
    assert not check(RI, "2026-11-24 08:30", z, ctx).allowed  # Tuesday before 09:00
    assert check(RI, "2026-11-24 09:00", z, ctx).allowed
    assert not check(RI, "2026-11-24 18:00", z, ctx).allowed
    assert not check(RI, "2026-11-28 09:30", z, ctx).allowed  # Saturday: 10-17
    assert check(RI, "2026-11-28 10:00", z, ctx).allowed
    assert not check(RI, "2026-11-28 17:00", z, ctx).allowed
    v = check(RI, "2026-11-29 12:00", z, ctx)  # Sunday: none
    assert cats(v) == {"hours"} and "no calls on Sunday" in v.reasons[0].detail


def test_texas_sunday_noon(ctx):
    z = "America/Chicago"
    assert not check(TX, "2026-11-29 11:59", z, ctx).allowed
    assert check(TX, "2026-11-29 12:00", z, ctx).allowed
    assert check(TX, "2026-11-28 09:00", z, ctx).allowed  # Saturday
    assert not check(TX, "2026-11-28 08:59", z, ctx).allowed


def test_dst_start_in_march(ctx):
    # 2026-03-08: clocks go 02:00 EST -> 03:00 EDT. 08:00 EDT is 12:00 UTC (a week
    # earlier 08:00 EST was 13:00 UTC).
    import datetime as dt
    utc = dt.timezone.utc
    assert evaluate(NY, dt.datetime(2026, 3, 8, 12, 0, tzinfo=utc), ctx).allowed
    assert not evaluate(NY, dt.datetime(2026, 3, 8, 11, 59, tzinfo=utc), ctx).allowed
    assert not evaluate(NY, dt.datetime(2026, 3, 1, 12, 30, tzinfo=utc), ctx).allowed  # 07:30 EST
    # end of day: 21:00 EDT = 01:00 UTC next day
    assert evaluate(NY, dt.datetime(2026, 3, 9, 0, 59, tzinfo=utc), ctx).allowed
    assert not evaluate(NY, dt.datetime(2026, 3, 9, 1, 0, tzinfo=utc), ctx).allowed


def test_dst_end_in_november(ctx):
    # 2026-11-01: clocks go 02:00 EDT -> 01:00 EST. 08:00 EST is 13:00 UTC.
    import datetime as dt
    utc = dt.timezone.utc
    assert not evaluate(NY, dt.datetime(2026, 11, 1, 12, 30, tzinfo=utc), ctx).allowed  # 07:30 EST
    assert evaluate(NY, dt.datetime(2026, 10, 31, 12, 30, tzinfo=utc), ctx).allowed  # 08:30 EDT
    assert evaluate(NY, dt.datetime(2026, 11, 1, 13, 0, tzinfo=utc), ctx).allowed
    assert not evaluate(NY, dt.datetime(2026, 11, 2, 2, 0, tzinfo=utc), ctx).allowed  # 21:00 EST


def test_arizona_keeps_mountain_standard_time_all_year(ctx):
    import datetime as dt
    utc = dt.timezone.utc
    # 08:00 MST = 15:00 UTC in July and in January alike
    for month in (1, 7):
        assert not evaluate(AZ, dt.datetime(2026, month, 14, 14, 59, tzinfo=utc), ctx).allowed
        assert evaluate(AZ, dt.datetime(2026, month, 14, 15, 0, tzinfo=utc), ctx).allowed
    # Denver (same state time in winter) shifts in summer: 08:00 MDT = 14:00 UTC
    assert evaluate(UT, dt.datetime(2026, 7, 14, 14, 0, tzinfo=utc), ctx).allowed


def test_split_area_code_must_be_allowed_in_every_zone(ctx):
    # 208: Boise (Mountain) and Los Angeles (Pacific). 08:30 in Boise is 07:30 in LA.
    v = check(ID, "2026-11-24 08:30", "America/Boise", ctx)
    assert not v.allowed and cats(v) == {"hours"}
    assert {w["zone"] for w in v.window} == {"America/Boise", "America/Los_Angeles"}
    assert "America/Los_Angeles" in v.reasons[0].detail
    assert check(ID, "2026-11-24 09:00", "America/Boise", ctx).allowed
    # evening: 21:00 in Boise is 20:00 in LA: blocked in Boise
    assert not check(ID, "2026-11-24 21:00", "America/Boise", ctx).allowed


def test_panhandle_exchange_in_central_time(ctx):
    from rules.numbers import normalise
    central = next(f"+1850{nxx}0100" for nxx in range(200, 1000)
                   if normalise(f"+1850{nxx}0100").zones == ("America/Chicago",))
    # 20:30 Eastern = 19:30 Central: allowed under FL 08-20 in Central time
    assert check(central, "2026-11-24 20:30", "America/New_York", ctx).allowed
    assert not check(central, "2026-11-24 20:00", "America/Chicago", ctx).allowed


def test_state_holiday_bans(ctx):
    v = check(PA, "2026-11-26 12:00", "America/New_York", ctx)  # Thanksgiving
    assert cats(v) == {"holiday"} and v.reasons[0].rule == "US-PA-HOLIDAY"
    assert "Thanksgiving" in v.reasons[0].detail
    assert check(NY, "2026-11-26 12:00", "America/New_York", ctx).allowed  # no ban in NY
    v = check(UT, "2026-07-24 12:00", "America/Denver", ctx)  # Pioneer Day
    assert cats(v) == {"holiday"} and "Pioneer Day" in v.reasons[0].detail
    assert check(UT, "2026-07-23 12:00", "America/Denver", ctx).allowed


def test_sunday_bans(ctx):
    v = check("+16015550100", "2026-11-29 12:00", "America/Chicago", ctx)  # Mississippi
    assert cats(v) == {"hours"}
    assert check("+16015550100", "2026-11-28 12:00", "America/Chicago", ctx).allowed
    # Pennsylvania on Sunday: 13:30-21:00
    assert not check(PA, "2026-11-29 13:29", "America/New_York", ctx).allowed
    assert check(PA, "2026-11-29 13:30", "America/New_York", ctx).allowed


def test_lead_state_and_area_code_state_both_apply(ctx):
    # a New York number whose lead lives in Florida: FL's 20:00 end applies too
    lead = Lead(NY, state="FL")
    v = check(None, "2026-11-24 20:30", "America/New_York", ctx, lead)
    assert not v.allowed and v.reasons[0].rule == "US-FL-HOURS"
    assert check(NY, "2026-11-24 20:30", "America/New_York", ctx).allowed


def test_lead_zone_is_intersected(ctx):
    lead = Lead(NY, zone="America/Los_Angeles")
    v = check(None, "2026-11-24 10:30", "America/New_York", ctx, lead)  # 07:30 in LA
    assert not v.allowed and set(v.zones) == {"America/New_York", "America/Los_Angeles"}
    v = check(None, "2026-11-24 12:00", "America/New_York", ctx, Lead(NY, zone="Mars/Olympus"))
    assert cats(v) == {"timezone_unknown"}


def test_unknown_zone_is_blocked(ctx):
    v = check("+18002221222", "2026-11-24 12:00", "America/New_York", ctx)
    assert "timezone_unknown" in cats(v) and "toll_free" in cats(v)
    assert v.zones == ()


def test_campaign_hours_narrow_but_never_widen(rulesets):
    errs = _Errors({})
    narrow = compile_windows({"mon-fri": ["09:00-17:00"], "sat": [], "sun": []}, errs)
    wide = compile_windows({"daily": ["06:00-23:00"]}, errs)
    ctx = make_ctx(rulesets, campaign=CampaignRules("c1", hours=narrow, caller_id=CID, own_numbers=frozenset({CID})))
    assert not check(NY, "2026-11-24 08:30", "America/New_York", ctx).allowed
    assert check(NY, "2026-11-24 09:00", "America/New_York", ctx).allowed
    v = check(NY, "2026-11-28 12:00", "America/New_York", ctx)
    assert not v.allowed and "campaign c1" in v.reasons[0].detail
    ctx = make_ctx(rulesets, campaign=CampaignRules("c2", hours=wide, caller_id=CID, own_numbers=frozenset({CID})))
    assert not check(NY, "2026-11-24 07:00", "America/New_York", ctx).allowed
    assert not check(NY, "2026-11-24 22:00", "America/New_York", ctx).allowed


def test_uk_and_turkey_hours(ctx):
    assert check("+442079460000", "2026-11-24 08:00", "Europe/London", ctx).allowed
    assert not check("+442079460000", "2026-11-24 21:00", "Europe/London", ctx).allowed
    assert check("+905321234567", "2026-11-24 19:59", "Europe/Istanbul", ctx).allowed
    assert not check("+905321234567", "2026-11-24 20:00", "Europe/Istanbul", ctx).allowed


def test_verdict_names_the_rule_set_version(rulesets):
    rs = dataclasses.replace(rulesets["US"], version=7)
    ctx = make_ctx({**rulesets, "US": rs})
    assert check(NY, "2026-11-24 12:00", "America/New_York", ctx).ruleset == "US@7"

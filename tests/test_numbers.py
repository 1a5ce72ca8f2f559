import random

import pytest

from rules.numbers import facts_direct, normalise

N11 = frozenset({"211", "311", "411", "511", "611", "711", "811", "911", "988"})


@pytest.mark.parametrize("raw", [
    "(212) 555-0100", "212-555-0100", "212.555.0100", "2125550100", "1 212 555 0100", "+1 212 555 0100",
    "+1-212-555-0100", "0012125550100", "011 1 212 555 0100", " 212 555 0100 ",
])
def test_common_formats_normalise_to_e164(raw):
    f = normalise(raw, "US")
    assert f.e164 == "+12125550100"
    assert f.value == 12125550100
    assert f.region == "US" and f.state == "NY" and f.zones == ("America/New_York",)


@pytest.mark.parametrize("raw,why", [
    ("212-555-01OO", "letters"), ("1-800-FLOWERS", "letters"), ("", "empty"), ("   ", "empty"),
    ("555-0100", "digits"), ("212555010", "digits"), ("+999 1234567", "country code"),
    ("2125550100#", "unexpected"), ("+1 212 555 0100 99", "digits"),
])
def test_bad_input_is_invalid_never_a_crash(raw, why):
    f = normalise(raw, "US")
    assert f.e164 is None
    assert why in f.error


@pytest.mark.parametrize("raw", ["911", "1911", "1-911", "+1 911", "+1911", "112"])
def test_emergency_codes_with_or_without_1_prefix(raw):
    f = normalise(raw, "US", N11)
    assert f.emergency and f.e164 is None


@pytest.mark.parametrize("code", ["211", "311", "411", "511", "611", "711", "811", "988"])
@pytest.mark.parametrize("fmt", ["{}", "1{}", "1-{}", "+1{}", "+1 {}"])
def test_every_n11_and_988_is_a_short_code(code, fmt):
    f = normalise(fmt.format(code), "US", N11)
    assert f.short_code == code and f.e164 is None


def test_emergency_numbers_of_other_regions():
    assert normalise("999", "GB").emergency
    assert normalise("+44 999", "US").emergency  # the country code decides the region
    assert normalise("112", "TR").emergency and normalise("155", "TR").emergency


def test_numbers_that_reach_911_are_flagged_even_if_invalid():
    f = normalise("911-555-1234", "US")
    assert f.emergency and f.e164 is None


def test_number_types():
    assert normalise("1-800-222-1222", "US").kind == "toll_free"
    assert normalise("+1 900 555 1234", "US").kind == "premium_rate"
    assert normalise("+1 500 555 1234", "US").kind == "personal_number"
    assert normalise("+44 20 7946 0000", "US").kind == "fixed_line"


def test_toll_free_has_no_zone():
    assert normalise("1-800-222-1222", "US").zones == ()


def test_split_area_codes():
    assert normalise("+1 208 555 0100").zones == ("America/Boise", "America/Los_Angeles")
    assert set(normalise("+1 605 555 0100").zones) == {"America/Denver", "America/North_Dakota/Center"} or \
        "America/Denver" in normalise("+1 605 555 0100").zones
    # 850 (Florida panhandle) is split by exchange between Eastern and Central
    zones = {normalise(f"+1850{nxx}0000").zones for nxx in range(200, 1000)} - {()}
    assert ("America/Chicago",) in zones and ("America/New_York",) in zones
    assert normalise("+1 602 555 0100").zones == ("America/Phoenix",)
    assert normalise("+1 602 555 0100").state == "AZ"


def test_national_format_of_other_regions():
    f = normalise("020 7946 0000", "GB")
    assert f.e164 == "+442079460000" and f.zones == ("Europe/London",)
    assert normalise("0532 123 45 67", "TR").e164 == "+905321234567"


def test_exchange_cache_agrees_with_direct_computation():
    """Facts are cached per NANP exchange (+1 NPA NXX); they must equal the facts
    computed for each full number on its own."""
    rng = random.Random(7)
    for _ in range(3000):
        e164 = "+1%d%d%04d" % (rng.randint(200, 999), rng.randint(200, 999), rng.randint(0, 9999))
        cached = normalise(e164)
        direct = facts_direct(e164)
        assert (cached.e164 is None) == (direct.e164 is None), e164
        if cached.e164:
            assert (cached.kind, cached.zones, cached.state, cached.region, cached.emergency) == \
                (direct.kind, direct.zones, direct.state, direct.region, direct.emergency), e164

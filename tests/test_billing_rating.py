"""Rating: the reference's worked examples, the increment schemes, the one rounding rule."""

from decimal import ROUND_CEILING, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.money import from_micros, micros, parse_amount
from billing.rating import Tariff, billable_seconds, charged_seconds, cost, cost_micros
from core.errors import InputError

PRICE = micros(Decimal("0.0188"))


def tariff(scheme, **kw):
    initial, increment = (int(x) for x in scheme.split("/"))
    return Tariff(kw.pop("rate", PRICE), initial, increment, **kw)


# the reference's worked example at $0.0188/min, rounded up to 6 decimals
@pytest.mark.parametrize("scheme,billsec,expected", [
    ("1/1", 31, "0.009714"), ("6/6", 31, "0.011280"), ("30/6", 31, "0.011280"), ("60/60", 31, "0.018800"),
    ("1/1", 61, "0.019114"), ("6/6", 61, "0.020680"), ("30/6", 61, "0.020680"), ("60/60", 61, "0.037600"),
])
def test_worked_examples(scheme, billsec, expected):
    assert cost(billsec, tariff(scheme)) == Decimal(expected)
    assert isinstance(cost(billsec, tariff(scheme)), Decimal)


@pytest.mark.parametrize("scheme,billsec,charged", [
    ("60/60", 1, 60), ("60/60", 60, 60), ("60/60", 61, 120), ("60/60", 120, 120), ("60/60", 121, 180),
    ("30/6", 1, 30), ("30/6", 30, 30), ("30/6", 31, 36), ("30/6", 36, 36), ("30/6", 37, 42),
    ("6/6", 1, 6), ("6/6", 7, 12), ("1/1", 1, 1), ("1/1", 61, 61), ("0/6", 1, 6), ("0/6", 6, 6),
])
def test_charged_seconds(scheme, billsec, charged):
    initial, increment = (int(x) for x in scheme.split("/"))
    assert charged_seconds(billsec, initial, increment) == charged


def test_connect_fee_minimum_and_maximum():
    fee = micros(Decimal("0.05"))
    # 31 s at 6/6 = 0.011280, plus the connect fee
    assert cost(31, tariff("6/6", connect_micros=fee)) == Decimal("0.061280")
    # 31 s at 1/1 = 0.0097133.. exact; a minimum of 0.015 applies to the exact amount
    assert cost(31, tariff("1/1", min_micros=micros(Decimal("0.015")))) == Decimal("0.015000")
    # 61 s at 60/60 = 0.0376; a maximum of 0.03 caps it
    assert cost(61, tariff("60/60", max_micros=micros(Decimal("0.03")))) == Decimal("0.030000")
    # within the limits, they change nothing
    assert cost(61, tariff("1/1", min_micros=micros(Decimal("0.01")), max_micros=micros(Decimal("0.02")))) \
        == Decimal("0.019114")
    # the fee counts towards the maximum
    assert cost(61, tariff("60/60", connect_micros=fee, max_micros=micros(Decimal("0.08")))) == Decimal("0.080000")


def test_a_zero_second_call_costs_nothing_not_even_its_connect_fee_or_minimum():
    t = tariff("60/60", connect_micros=micros(Decimal("0.05")), min_micros=micros(Decimal("0.10")))
    assert cost_micros(0, t) == (0, 0)
    assert cost(1, t) == Decimal("0.100000")  # one billable second: the minimum


def test_billable_seconds_round_up_like_the_dialers_billsec():
    from dialer.calls import billable_seconds as dialer_billsec
    for ms in (0, 1, 999, 1000, 1001, 60_000, 60_001, 86_400_000):
        assert billable_seconds(ms) == dialer_billsec(ms)
    assert [billable_seconds(ms) for ms in (0, 1, 1000, 1001)] == [0, 1, 1, 2]


def test_the_rounding_rule_is_once_up_to_a_micro_unit_not_per_increment():
    # $0.0001/min over 61 s at 1/1: exact 0.000101666.. -> rounded once, up: 0.000102.
    # Rounding each one-second increment up first would give 61 x 0.000002 = 0.000122.
    t = tariff("1/1", rate=micros(Decimal("0.0001")))
    assert cost(61, t) == Decimal("0.000102")
    # an exact amount is not rounded at all
    assert cost(60, t) == Decimal("0.000100")
    # the float trap: 60 one-second increments of 0.0188/60 summed as floats is 0.018799999999999997
    assert sum([0.0188 / 60] * 60) != 0.0188
    assert cost(60, tariff("1/1")) == Decimal("0.018800")


def reference_cost(billsec, rate, initial, increment, connect, minimum, maximum):
    """The rule as written in billing/rating.py's docstring, in Decimal."""
    if billsec <= 0:
        return Decimal(0)
    charged = initial if billsec <= initial else initial + -(-(billsec - initial) // increment) * increment
    exact = connect + Decimal(charged) * rate / Decimal(60)
    if minimum is not None:
        exact = max(exact, minimum)
    if maximum is not None:
        exact = min(exact, maximum)
    return exact.quantize(Decimal("0.000001"), rounding=ROUND_CEILING)


money6 = st.integers(min_value=0, max_value=5_000_000).map(from_micros)


@settings(max_examples=400, deadline=None)
@given(billsec=st.integers(0, 86_400), rate=money6, initial=st.integers(0, 120), increment=st.integers(1, 120),
       connect=money6, minimum=st.one_of(st.none(), money6), maximum=st.one_of(st.none(), money6))
def test_integer_rating_equals_the_decimal_rule(billsec, rate, initial, increment, connect, minimum, maximum):
    if minimum is not None and maximum is not None and minimum > maximum:
        minimum, maximum = maximum, minimum
    t = Tariff(micros(rate), initial, increment, micros(connect), micros(minimum) if minimum is not None else None,
               micros(maximum) if maximum is not None else None)
    assert cost(billsec, t) == reference_cost(billsec, rate, initial, increment, connect, minimum, maximum)


def test_money_is_decimal_and_exact():
    assert micros(Decimal("0.0188")) == 18_800 and from_micros(18_800) == Decimal("0.018800")
    assert micros(Decimal("475")) == 475_000_000 and from_micros(475_000_000) == Decimal("475")
    with pytest.raises(TypeError):
        micros(0.0188)
    with pytest.raises(TypeError):
        from_micros(18800.0)
    with pytest.raises(ValueError):
        micros(Decimal("0.0000001"))
    with pytest.raises(TypeError):
        Tariff(18800.0, 60, 60)


@pytest.mark.parametrize("text,message", [
    ("-5", "is negative"), ("1e3", "is not a number"), ("NaN", "is not a number"), ("12,50", "is not a number"),
    ("0.0000001", "more than 6 decimal places"), ("", "is not a number"), ("2000000000", "above the most"),
])
def test_amounts_a_user_types(text, message):
    with pytest.raises(InputError, match=message):
        parse_amount(text, "top-up")
    assert parse_amount("$12.5") == Decimal("12.5") and parse_amount("0.000001") == Decimal("0.000001")
    with pytest.raises(InputError, match="more than 0"):
        parse_amount("0", allow_zero=False)


# rate_batch inlines PrefixIndex.lookup and cost_micros (it runs a million times a bill run):
# on any deck (effective-dated rows included) and any call it must give what they give
_deck_rows = st.lists(st.tuples(
    st.text("0123456789", min_size=1, max_size=4), st.integers(0, 200_000), st.integers(0, 90), st.integers(1, 90),
    st.integers(0, 100_000), st.sampled_from([None, "2026-03-10T00:00:00.000Z", "2026-03-20T00:00:00.000Z"]),
    st.sampled_from([None, "2026-03-15T00:00:00.000Z", "2026-03-25T00:00:00.000Z"])), max_size=30)
_calls = st.lists(st.tuples(st.text("0123456789", min_size=1, max_size=7), st.integers(1, 31),
                            st.integers(1, 7_200_000)), min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(deck_rows=_deck_rows, calls=_calls)
def test_rate_batch_agrees_with_the_lookup_and_cost_micros(deck_rows, calls):
    from billing.calls import rate_batch
    from billing.decks import PrefixIndex
    rows = [(p, f"d{p}", rate, ini, inc, fee, frm, to) for p, rate, ini, inc, fee, frm, to in deck_rows]
    index = PrefixIndex({"id": 1, "name": "x"}, rows)
    service = Tariff(PRICE, 30, 6, 1_000, 5_000, 900_000)  # a minimum and a maximum: cost_micros' other branch
    records = [(f"c{i}", "+" + digits, f"2026-03-{day:02d}T12:00:00.000Z", f"2026-03-{day:02d}T12:00:01.000Z",
                f"2026-03-{day:02d}T14:00:01.000Z", ms + 1000, ms) for i, (digits, day, ms) in enumerate(calls)]
    rated, free, refused = rate_batch(records, service, index)
    assert not free
    by_id = {r[0]: r for r in rated}
    assert len(by_id) + len(refused) == len(records)
    for call_id, dest, started, _a, _e, _d, ms in records:
        hit = index.lookup(dest[1:], started)
        if hit is None:
            assert call_id not in by_id
            continue
        billsec = billable_seconds(ms)
        s_sec, s_cost = cost_micros(billsec, service)
        t_sec, t_cost = cost_micros(billsec, hit[1][2])
        assert by_id[call_id] == (call_id, started, billsec, s_sec, s_cost, t_sec, t_cost, -(s_cost + t_cost), hit[0])


def test_rate_batch_prices_a_deck_tariff_with_a_minimum_by_cost_micros():
    from billing.calls import rate_batch

    class Index:  # a deck row whose tariff has a minimum and a maximum (decks have none today)
        deck = {"name": "x"}
        _lengths = [2]
        _index = {"44": ("", None, Tariff(PRICE, 60, 60, 0, 60_000, 70_000), "UK")}
    rec = ("c1", "+4420", "2026-03-01T12:00:00.000Z", "2026-03-01T12:00:01.000Z", "2026-03-01T12:03:01.000Z",
           181_000, 180_000)
    (row,), _, _ = rate_batch([rec], tariff("60/60"), Index())
    assert row[5:7] == (180, 60_000) == cost_micros(180, Index._index["44"][2])

"""core.retry.Backoff: the one back-off of the journal, the trunk registrar and the
congestion brake."""

import pytest

from core.errors import InputError
from core.retry import Backoff


def test_doubles_up_to_the_maximum():
    b = Backoff(0.25, 5.0)
    assert [b.next() for _ in range(8)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert b.tries == 8


def test_reset_starts_again_from_the_first_delay():
    b = Backoff(30, 300)
    assert [b.next() for _ in range(3)] == [30, 60, 120]
    b.reset()
    assert b.tries == 0
    assert [b.next() for _ in range(6)] == [30, 60, 120, 240, 300, 300]


def test_other_factor_and_a_flat_one():
    b = Backoff(1, 100, factor=3)
    assert [b.next() for _ in range(6)] == [1, 3, 9, 27, 81, 100]
    flat = Backoff(2.0, 2.0, factor=1)
    assert [flat.next() for _ in range(3)] == [2.0, 2.0, 2.0]


def test_same_delays_as_the_closed_form():
    """What trunks.py computed before: min(maximum, first * 2 ** n)."""
    b = Backoff(0.3, 1.0)
    assert [b.next() for _ in range(5)] == [min(1.0, 0.3 * 2 ** n) for n in range(5)]


@pytest.mark.parametrize("args,message", [
    ((0, 5), "first delay 0: a number of seconds above 0"),
    ((-1, 5), "first delay -1"),
    (("1", 5), "first delay '1'"),
    ((True, 5), "first delay True"),
    ((1, float("inf")), "maximum delay inf"),
    ((1, float("nan")), "maximum delay nan"),
    ((5, 1), "maximum delay 1 s is below the first delay 5 s"),
    ((1, 5, 0.5), "factor 0.5: a number of at least 1"),
    ((1, 5, None), "factor None"),
])
def test_bad_settings_are_refused_with_one_message(args, message):
    with pytest.raises(InputError, match=message.replace("(", "\\(")):
        Backoff(*args)


def test_the_nth_delay_for_callers_that_keep_their_own_count():
    """What gate.LoginGuard and sip.pool computed before: min(maximum, first * 2 ** n)."""
    b = Backoff(2.0, 300.0)
    assert [b.delay(n) for n in range(10)] == [min(300.0, 2.0 * 2 ** n) for n in range(10)]
    assert b.delay(-3) == 2.0
    assert b.tries == 0  # delay() counts nothing


def test_a_huge_count_is_the_maximum_not_an_overflow():
    b = Backoff(0.5, 30.0)
    assert b.delay(1100) == b.delay(10 ** 12) == 30.0  # 0.5 * 2.0 ** 1100 would overflow
    assert Backoff(1, 1).delay(10 ** 9) == 1
    assert Backoff(3, 7, factor=1).delay(50) == 3


def test_next_hands_out_the_nth_delays_in_turn():
    b = Backoff(0.3, 10.0, factor=3)
    assert [b.next() for _ in range(6)] == [b.delay(n) for n in range(6)]
    assert b.next() == 10.0

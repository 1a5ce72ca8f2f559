"""Money: Decimal in Python, integer micro-units in storage, never a float.

One micro-unit is $0.000001 (``MICRO``); every amount the store holds is an
INTEGER count of them (``*_micros`` columns), so SQL sums are exact integers. An
amount a user types (a top-up, a floor, a rate in a deck) is read by
:func:`parse_amount` as a plain decimal with at most 6 decimal places: anything
finer cannot be stored exactly and is refused, never rounded quietly. How a
computed cost is rounded to a micro-unit is ``billing.rating``'s one rule.
"""

import re
from decimal import Decimal

from core.errors import InputError
from core.timeutil import shown

MICRO = Decimal("0.000001")
MICROS_PER_UNIT = 1_000_000
PLACES = 6

_PLAIN = re.compile(r"[0-9]+(?:\.[0-9]+)?|\.[0-9]+")


def micros(amount):
    """An exact Decimal (or int) amount as integer micro-units; refuses an amount
    with more than 6 decimal places (ValueError: a programming error, not input)."""
    if isinstance(amount, bool) or not isinstance(amount, (int, Decimal)):
        raise TypeError(f"money must be Decimal or int, not {type(amount).__name__}")
    if isinstance(amount, int):
        return amount * MICROS_PER_UNIT
    if not amount.is_finite():
        raise ValueError(f"{amount} is not an amount")
    scaled = amount.scaleb(PLACES)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} has more than {PLACES} decimal places")
    return int(scaled)


def from_micros(n):
    """Integer micro-units as a Decimal with 6 places (None stays None)."""
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"micro-units must be an int, not {type(n).__name__}")
    return Decimal(n).scaleb(-PLACES).quantize(MICRO)


def parse_amount(text, what="amount", allow_zero=True, maximum=Decimal("1000000000")):
    """A non-negative amount a user wrote (``"12.5"``, ``"0.0188"``, an optional
    leading ``$``) as an exact Decimal, or InputError naming ``what``: negative,
    not a plain decimal number (``1e3``, ``NaN``, ``12,50``), more than 6 decimal
    places, zero when ``allow_zero`` is False, or above ``maximum``."""
    if isinstance(text, Decimal):
        raw = format(text, "f")
    elif isinstance(text, int) and not isinstance(text, bool):
        raw = str(text)
    elif isinstance(text, str):
        raw = text.strip()
    else:
        raise InputError(f"{what} must be a decimal number, not {type(text).__name__}")
    body = raw[1:].strip() if raw.startswith("$") else raw
    if body.startswith("-") and _PLAIN.fullmatch(body[1:].strip()):
        raise InputError(f"{what} {shown(raw)} is negative")
    if not _PLAIN.fullmatch(body):
        raise InputError(f"{what} {shown(raw)} is not a number (write a plain decimal such as 0.0188)")
    value = Decimal(body)
    if "." in body and len(body.split(".", 1)[1].rstrip("0")) > PLACES:
        raise InputError(f"{what} {shown(raw)} has more than {PLACES} decimal places "
                         f"(the smallest amount stored is {MICRO})")
    if value == 0 and not allow_zero:
        raise InputError(f"{what} must be more than 0")
    if value > maximum:
        raise InputError(f"{what} {shown(raw)} is above the most accepted ({maximum})")
    return value


def fmt(amount):
    """A Decimal amount for text output: ``$12.500000`` (6 places, as stored)."""
    sign = "-" if amount < 0 else ""
    return f"{sign}${abs(amount).quantize(MICRO)}"

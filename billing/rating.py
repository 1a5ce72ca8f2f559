"""Rating: what one call costs, exactly.

A call has two components, each priced by a :class:`Tariff` (a rate per minute,
an increment scheme ``initial/increment`` in seconds, a connect fee, and for the
account's service minutes an optional minimum and maximum cost):

* service minutes: the account's price ($0.0188 a minute unless set otherwise,
  ``billing.plans``);
* telecom: the rate-deck row of the destination's longest prefix in force at the
  call's start (``billing.decks``).

Billable seconds ``d`` are the whole seconds from answer to hang-up, rounded up
(0 ms -> 0, 1 ms -> 1, 1 001 ms -> 2; the dialer's ``billsec``). Charged seconds:
0 when ``d`` is 0; ``initial`` when ``d <= initial``; otherwise ``initial`` plus
``d - initial`` rounded up to a whole number of ``increment``s. A call of 0
billable seconds costs nothing: no connect fee, no minimum cost.

THE ROUNDING RULE (the only one): each component of a call is computed exactly,
``connect fee + charged seconds x rate per minute / 60``, clamped to its minimum
and maximum cost, and then rounded once, UP (towards +infinity), to a whole
micro-unit ($0.000001). Nothing is rounded before that (no per-increment or
per-minute rounding), the call's cost is the sum of its two rounded components,
and every sum after that (the ledger, a balance, a bill run's totals) adds whole
micro-units, so it is exact and rounds nothing. At $0.0188 a minute: 31 s is
$0.009714 at 1/1, $0.011280 at 6/6 and 30/6, $0.018800 at 60/60; 61 s is
$0.019114 at 1/1, $0.020680 at 6/6, $0.037600 at 60/60.

The arithmetic is on integers (micro-units x 60), which is the same exact
computation as Decimal's and needs no float; :func:`cost` gives the Decimal.
"""

from dataclasses import dataclass

from .money import from_micros

MAX_INCREMENT_S = 3600  # an initial block or an increment longer than an hour is a typo


@dataclass(frozen=True, slots=True)
class Tariff:
    """A price: micro-units per minute, ``initial``/``increment`` seconds, a connect
    fee, and optional minimum and maximum cost of a call (micro-units)."""

    rate_micros: int
    initial: int
    increment: int
    connect_micros: int = 0
    min_micros: object = None
    max_micros: object = None

    def __post_init__(self):
        for name in ("rate_micros", "initial", "increment", "connect_micros"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"Tariff.{name} must be an int, not {type(v).__name__}")
        for name in ("min_micros", "max_micros"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise TypeError(f"Tariff.{name} must be an int or None, not {type(v).__name__}")
        if self.rate_micros < 0 or self.connect_micros < 0 or self.initial < 0 or self.increment < 1:
            raise ValueError(f"invalid tariff {self}")
        if self.min_micros is not None and self.max_micros is not None and self.min_micros > self.max_micros:
            raise ValueError(f"tariff minimum above its maximum: {self}")

    @property
    def scheme(self):
        return f"{self.initial}/{self.increment}"


def billable_seconds(billable_ms):
    """Whole seconds from answer to hang-up, rounded up (0 ms -> 0, 1 ms -> 1,
    1 000 ms -> 1, 1 001 ms -> 2): the same as the dialer's ``billsec``."""
    if billable_ms <= 0:
        return 0
    return -(-billable_ms // 1000)


def charged_seconds(billsec, initial, increment):
    """Seconds charged for ``billsec`` billable seconds under ``initial/increment``
    (:func:`cost_micros` computes the same inline: it runs a million times a run)."""
    if billsec <= 0:
        return 0
    if billsec <= initial:
        return initial
    return initial + -(-(billsec - initial) // increment) * increment


def cost_micros(billsec, tariff):
    """(charged seconds, cost in micro-units) of one component of a call, by the
    rounding rule of this module's docstring."""
    if billsec <= 0:
        return 0, 0
    initial = tariff.initial
    s = initial if billsec <= initial else initial + -(-(billsec - initial) // tariff.increment) * tariff.increment
    sixty = tariff.connect_micros * 60 + s * tariff.rate_micros  # the exact cost x 60, in micro-units
    if tariff.min_micros is not None and sixty < tariff.min_micros * 60:
        sixty = tariff.min_micros * 60
    if tariff.max_micros is not None and sixty > tariff.max_micros * 60:
        sixty = tariff.max_micros * 60
    return s, -(-sixty // 60)  # rounded once, up, to a whole micro-unit


def cost(billsec, tariff):
    """The cost of one component as a Decimal with 6 places."""
    return from_micros(cost_micros(billsec, tariff)[1])

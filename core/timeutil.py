"""UTC in storage, local only at the edges. Parsing and formatting of instants."""

import datetime as _dt

UTC = _dt.timezone.utc

from .errors import InputError


def utc(dt):
    """Return ``dt`` as an aware UTC datetime (naive input is taken as UTC)."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def to_iso(dt):
    """Storage form: ISO 8601 UTC with milliseconds and a Z, which sorts as text."""
    dt = utc(dt)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (dt.microsecond // 1000)


# Instants a user may ask about (check --at, dry-run --from/--to): years outside are a
# typo, and the year 1 or 9999 overflows the first hour of arithmetic on them.
MIN_YEAR, MAX_YEAR = 2000, 2099


def shown(text, limit=60):
    """A user's value quoted for a one-line message (repr: no newline; long ones cut)."""
    text = str(text)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _out_of_range(text, what):
    return InputError(f"{what} {shown(text)} is out of range: give an instant between {MIN_YEAR}-01-01 and "
                      f"{MAX_YEAR}-12-31 (UTC)")


def check_instant(dt, what="time"):
    """``dt`` as an aware UTC datetime if it lies in years MIN_YEAR..MAX_YEAR (UTC);
    InputError naming ``what`` otherwise (a user's instant: never a traceback)."""
    try:
        u = utc(dt)
    except (OverflowError, ValueError):
        raise _out_of_range(str(dt), what) from None
    if not MIN_YEAR <= u.year <= MAX_YEAR:
        raise _out_of_range(u.strftime("%Y-%m-%dT%H:%M:%SZ") if u.year >= 1000 else str(dt), what)
    return u


def parse_instant(text, what="time", bounded=False):
    """Parse an ISO 8601 instant given by a user; naive means UTC. Raises InputError.
    ``bounded``: also refuse instants outside years MIN_YEAR..MAX_YEAR (UTC)."""
    if isinstance(text, _dt.datetime):
        return check_instant(text, what) if bounded else utc(text)
    s = str(text).strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        dt = _dt.datetime.fromisoformat(s)
    except (ValueError, OverflowError):
        raise InputError(
            f"{what} {shown(text)} is not an ISO 8601 time (e.g. 2026-11-27T18:30:00Z)"
        ) from None
    try:
        u = utc(dt)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first UTC instant
        raise _out_of_range(text, what) from None
    if bounded and not MIN_YEAR <= u.year <= MAX_YEAR:
        raise _out_of_range(text, what)
    return u


def parse_date(text, what="date"):
    if isinstance(text, _dt.date) and not isinstance(text, _dt.datetime):
        return text
    try:
        return _dt.date.fromisoformat(str(text).strip())
    except ValueError:
        raise InputError(f"{what} {shown(text)} is not a date (YYYY-MM-DD)") from None


def from_iso(text):
    """Read back a stored instant."""
    return parse_instant(text)


def system_now():
    """The wall clock. Only the edges (CLI, reactor wiring) call this; cores take ``now``."""
    return _dt.datetime.now(UTC)


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=UTC)
_MS = _dt.timedelta(milliseconds=1)


def to_ms(dt):
    """Epoch milliseconds (an int) of an instant; exact, no float on the way."""
    return (utc(dt) - _EPOCH) // _MS


def from_ms(ms):
    """The aware UTC datetime of epoch milliseconds; exact, no float on the way."""
    return _EPOCH + _dt.timedelta(milliseconds=int(ms))


def ms_to_iso(ms):
    """Storage form (ISO 8601 UTC with milliseconds) of epoch milliseconds; None stays None."""
    return None if ms is None else to_iso(from_ms(ms))

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


def parse_instant(text, what="time"):
    """Parse an ISO 8601 instant given by a user; naive means UTC. Raises InputError."""
    if isinstance(text, _dt.datetime):
        return utc(text)
    s = str(text).strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        dt = _dt.datetime.fromisoformat(s)
    except ValueError:
        raise InputError(
            f"{what} {text!r} is not an ISO 8601 time (e.g. 2026-11-27T18:30:00Z)"
        ) from None
    return utc(dt)


def parse_date(text, what="date"):
    if isinstance(text, _dt.date) and not isinstance(text, _dt.datetime):
        return text
    try:
        return _dt.date.fromisoformat(str(text).strip())
    except ValueError:
        raise InputError(f"{what} {text!r} is not a date (YYYY-MM-DD)") from None


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
